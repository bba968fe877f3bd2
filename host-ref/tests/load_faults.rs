//! Load and faults with the hostile guest (`guest-ref/bare/hostile`) on a real `/dev/kvm`.
//!
//! Load: 8 vCPUs (on however few host cores) issue mixed calls in every mode (direct,
//! MULTICALL, deferred, doorbell and host-polled rings, events between vCPUs) for a bounded
//! number of rounds; every completion is counted by the guest and by the host and the counts
//! must agree exactly; afterwards no VMM or dispatcher thread, no file descriptor and no
//! guest memory is left behind. Several VMs run at once in this process and stay isolated.
//!
//! Faults: a triple fault, a vCPU that never yields, an end in the middle of a batch and an
//! end while a host-polled ring is busy each end with the right report, while another VM
//! running next to it finishes normally, and leave no thread behind.
//!
//! The tests of this file run one at a time (they count the process's threads). The soak,
//! `hostile_load_soak`, is ignored by default: `scripts/soak.sh` runs it (longer, more
//! rounds).

mod hostile_support;

use std::sync::Mutex;
use std::thread;
use std::time::Duration;

use hostile_support::*;
use pvabi_abi::status::Status;
use pvabi_abi::Call;
use pvabi_host::vm::testing::kvm_or_skip;
use pvabi_host::vm::{Fault, VmEnd};

/// The tests of this file one at a time: they count threads and descriptors.
static SERIAL: Mutex<()> = Mutex::new(());

/// Rounds per vCPU of the load test (`PVABI_LOAD_ROUNDS` overrides).
fn load_rounds(default: u32) -> u32 {
    std::env::var("PVABI_LOAD_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What the process holds that a VM may leave behind.
#[derive(Debug, PartialEq, Eq)]
struct Held {
    threads: Vec<String>,
    fds: usize,
}

fn held() -> Held {
    Held {
        threads: vm_threads(),
        fds: open_fds(),
    }
}

/// Waits (bounded) for what a VM held to be gone: thread exits are asynchronous to `join`
/// only in `/proc`'s view, so give it a moment before judging.
fn assert_released(before: &Held, what: &str) {
    let mut now = held();
    for _ in 0..100 {
        if now == *before {
            break;
        }
        thread::sleep(Duration::from_millis(20));
        now = held();
    }
    assert_eq!(now, *before, "{what}: threads or descriptors left behind");
}

/// Boots a load VM: `vcpus` vCPUs, `rounds` rounds each, events tagged `tag`.
fn load_vm(vcpus: u32, rounds: u32, tag: u32) -> Run {
    boot(
        S_LOAD,
        Opts {
            vcpus,
            params: vec![rounds, tag],
            timeout: Duration::from_secs(300),
        },
    )
}

/// Checks a load run: every vCPU did every round without an error, and what the guest
/// counted equals what the host counted, call by call and mode by mode.
fn check_load(run: &Run, vcpus: u32, rounds: u32) {
    run.assert_alive();
    let n = vcpus as usize;
    let calls = run.all("load_calls");
    let rings = run.all("load_ring_events");
    let errors = run.all("load_errors");
    assert_eq!(
        (calls.len(), rings.len(), errors.len()),
        (n, n, n),
        "one set of counts per vCPU\n{}",
        run.dump()
    );
    assert!(run.all("vcpu_start_failed").is_empty(), "{}", run.dump());
    let r = u64::from(rounds);
    let (mut direct, mut mc, mut deferred, mut ring, mut sent, mut received, mut dropped) =
        (0, 0, 0, 0, 0, 0, 0);
    for c in calls {
        let v = rings.iter().find(|p| p.vcpu == c.vcpu).unwrap();
        let e = errors.iter().find(|p| p.vcpu == c.vcpu).unwrap();
        assert_eq!(c.st, u64::from(c.vcpu), "the reporting vCPU");
        assert_eq!(
            e.st, 0,
            "vCPU {}: errors (lost, duplicated or wrong answers)",
            c.vcpu
        );
        assert_eq!(
            (c.r0, c.r1, c.extra, v.st, v.r0),
            (r, 4 * r, 4 * r, 4 * r, r),
            "vCPU {}: direct, MULTICALL entries, deferred, ring completions, events sent",
            c.vcpu
        );
        direct += c.r0;
        mc += c.r1;
        deferred += c.extra;
        ring += v.st;
        sent += v.r0;
        received += v.r1;
        dropped += v.extra;
    }
    let rep = &run.report;
    let ok = |call| rep.count(call, Status::Success);
    assert_eq!(ok(Call::TimeMonotonic), direct, "direct calls");
    assert_eq!(rep.total(Call::TimeMonotonic), direct);
    assert_eq!((ok(Call::TimeFrequency), rep.multicall_entries), (mc, mc));
    assert_eq!(ok(Call::EventsSetMask), deferred + u64::from(vcpus));
    assert_eq!((rep.deferred_drained, rep.deferred_failed), (deferred, 0));
    assert_eq!(
        (ok(Call::TimeWallclock), rep.ring_submissions),
        (ring, ring)
    );
    assert_eq!((rep.ring_failed, rep.ring_malformed), (0, 0));
    assert_eq!(rep.total(Call::TimeWallclock), ring, "no completion twice");
    assert_eq!(ok(Call::EventsSend), sent);
    // Every event sent was received once or counted as dropped (the queue was full).
    assert_eq!(
        received + dropped,
        sent,
        "events: received + dropped = sent"
    );
    // The host saw the same, plus one Kick event per VCPU_KICK: vCPU 0 kicks each AP until
    // the kick is refused (the AP has stopped), so that every stop is in the report; a kick
    // that lands before the stop posts an event that no one receives (or is dropped).
    assert_eq!(
        rep.events_posted + rep.events_dropped,
        received + dropped + rep.kicks,
        "{}",
        run.dump()
    );
    assert!(
        rep.events_posted >= received && rep.events_dropped >= dropped,
        "{}",
        run.dump()
    );
    assert_eq!(rep.vcpu_stops.len(), n - 1);
}

#[test]
fn hostile_load_8_vcpus_mixed_modes() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !kvm_or_skip("hostile_load_8_vcpus_mixed_modes") {
        return;
    }
    let rounds = load_rounds(100);
    let before = held();
    let rss_before = rss_kib();
    let first = load_vm(8, rounds, 0x11);
    check_load(&first, 8, rounds);
    assert_released(&before, "after the first load VM");
    let rss_first = rss_kib();
    let second = load_vm(8, rounds, 0x12);
    check_load(&second, 8, rounds);
    assert_released(&before, "after the second load VM");
    let rss_second = rss_kib();
    // Host memory is stable: a second identical VM does not grow the process by anything
    // like a VM's RAM (64 MiB) or its captured state.
    assert!(
        rss_second <= rss_first + 16 * 1024,
        "RSS {rss_before} KiB before, {rss_first} KiB after one VM, {rss_second} KiB after two"
    );
    eprintln!(
        "hostile_load_8_vcpus_mixed_modes: 8 vCPUs x {rounds} rounds, {} calls in {:?} and {} \
         calls in {:?}; RSS {rss_before} -> {rss_first} -> {rss_second} KiB",
        first.report.calls.values().map(|c| c.total).sum::<u64>(),
        first.wall,
        second.report.calls.values().map(|c| c.total).sum::<u64>(),
        second.wall
    );
}

/// The longer load (`scripts/soak.sh`; `PVABI_SOAK_ROUNDS`, `PVABI_SOAK_RUNS`).
#[test]
#[ignore = "soak: minutes; run with scripts/soak.sh"]
fn hostile_load_soak() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !kvm_or_skip("hostile_load_soak") {
        return;
    }
    let var = |k: &str, d: u32| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let (rounds, runs) = (var("PVABI_SOAK_ROUNDS", 20000), var("PVABI_SOAK_RUNS", 5));
    let before = held();
    let mut rss = Vec::new();
    for i in 0..runs {
        let run = load_vm(8, rounds, 0x100 + i);
        check_load(&run, 8, rounds);
        assert_released(&before, "after a soak VM");
        rss.push(rss_kib());
        eprintln!(
            "soak run {i}: 8 vCPUs x {rounds} rounds in {:?}, RSS {} KiB",
            run.wall,
            rss.last().unwrap()
        );
    }
    assert!(
        rss.last().unwrap() <= &(rss[0] + 16 * 1024),
        "RSS grew: {rss:?}"
    );
}

#[test]
fn hostile_several_vms_stay_isolated() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !kvm_or_skip("hostile_several_vms_stay_isolated") {
        return;
    }
    let before = held();
    // Three VMs at once, each with its own dispatcher, rounds and event tag: each one's
    // counts must be exactly its own (a call or event of another VM would break them), and
    // its guest checked that every event it received carried its own tag.
    let vms = [(2u32, 12u32, 0x21u32), (3, 8, 0x22), (2, 16, 0x23)];
    let handles: Vec<_> = vms
        .iter()
        .map(|&(vcpus, rounds, tag)| thread::spawn(move || load_vm(vcpus, rounds, tag)))
        .collect();
    for (h, &(vcpus, rounds, _)) in handles.into_iter().zip(&vms) {
        let run = h.join().expect("the VM thread");
        check_load(&run, vcpus, rounds);
    }
    assert_released(&before, "after three VMs");
}

/// A VM that runs next to a faulting one and must finish normally.
fn companion() -> thread::JoinHandle<Run> {
    thread::spawn(|| load_vm(2, 10, 0x31))
}

fn fault_of(run: &Run) -> &Fault {
    match &run.end {
        VmEnd::Fault(report) => &report.fault,
        other => panic!("expected a fault, got {other}\n{}", run.dump()),
    }
}

#[test]
fn hostile_fault_triple_fault() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !kvm_or_skip("hostile_fault_triple_fault") {
        return;
    }
    let before = held();
    let other = companion();
    let run = boot(S_TRIPLE_FAULT, Opts::default());
    assert_eq!(fault_of(&run), &Fault::TripleFault, "{}", run.dump());
    run.expect("negotiate", Status::Success);
    assert_eq!(run.report.end, None, "no pvabi end was recorded");
    check_load(&other.join().unwrap(), 2, 10);
    assert_released(&before, "after a triple fault");
}

#[test]
fn hostile_fault_vcpu_that_never_yields() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !kvm_or_skip("hostile_fault_vcpu_that_never_yields") {
        return;
    }
    let before = held();
    let other = companion();
    // The only vCPU spins at CPL3 without an exit: the run's time limit ends it.
    let limit = Duration::from_secs(2);
    let run = boot(
        S_SPIN,
        Opts {
            timeout: limit,
            ..Opts::default()
        },
    );
    assert_eq!(fault_of(&run), &Fault::Timeout(limit), "{}", run.dump());
    assert!(run.all("alive").is_empty());
    // vCPU 1 spins the same way while vCPU 0 shuts down: the VM ends at once, spinner and
    // all.
    let run = boot(
        S_SPIN_AP,
        Opts {
            vcpus: 2,
            ..Opts::default()
        },
    );
    assert_eq!(run.end, VmEnd::Shutdown(5), "{}", run.dump());
    run.expect("start_ap", Status::Success);
    check_load(&other.join().unwrap(), 2, 10);
    assert_released(&before, "after spinning vCPUs");
}

#[test]
fn hostile_fault_end_in_the_middle_of_a_batch() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !kvm_or_skip("hostile_fault_end_in_the_middle_of_a_batch") {
        return;
    }
    let before = held();
    let other = companion();
    // vCPU 1 runs MULTICALLs of 32 page-sized console writes back to back; vCPU 0 ends the
    // VM while one is in progress: by SYSTEM_SHUTDOWN(6), then by a triple fault.
    for (how, expected) in [(0u32, Some(VmEnd::Shutdown(6))), (1, None)] {
        let run = boot(
            S_MID_BATCH,
            Opts {
                vcpus: 2,
                params: vec![how],
                ..Opts::default()
            },
        );
        match expected {
            Some(end) => assert_eq!(run.end, end, "{}", run.dump()),
            None => assert_eq!(fault_of(&run), &Fault::TripleFault, "{}", run.dump()),
        }
        run.expect("start_ap", Status::Success);
        let r = &run.report;
        assert!(r.multicall_entries >= 64, "two batches ran\n{}", run.dump());
        // Each entry that ran wrote its whole page; none ran twice or half.
        assert_eq!(
            r.console_bytes,
            4096 * r.count(Call::ConsoleWrite, Status::Success),
            "{}",
            run.dump()
        );
        assert_eq!(r.total(Call::ConsoleWrite), r.multicall_entries);
    }
    check_load(&other.join().unwrap(), 2, 10);
    assert_released(&before, "after ends in the middle of batches");
}

#[test]
fn hostile_fault_end_while_a_host_polled_ring_is_busy() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !kvm_or_skip("hostile_fault_end_while_a_host_polled_ring_is_busy") {
        return;
    }
    let before = held();
    let other = companion();
    let run = boot(
        S_RING_BUSY,
        Opts {
            vcpus: 2,
            ..Opts::default()
        },
    );
    assert_eq!(run.end, VmEnd::Shutdown(7), "{}", run.dump());
    run.expect("ring_setup", Status::Success);
    let done = run.get("ring_done").st;
    assert!(done >= 2000, "{}", run.dump());
    let r = &run.report;
    // Submissions the poller ran completed once each: the host ran at least what the guest
    // saw complete, and every one of them succeeded.
    assert!(r.ring_submissions >= done, "{}", run.dump());
    assert_eq!(r.ring_failed, 0);
    assert_eq!(
        r.count(Call::TimeMonotonic, Status::Success),
        r.ring_submissions
    );
    check_load(&other.join().unwrap(), 2, 10);
    // The poller thread ended with the VM.
    assert_released(&before, "after an end with a busy host-polled ring");
}
