//! The ring pair: setup, doorbell processing, backpressure, garbage, host polling.

use std::thread;
use std::time::Duration;

use pvabi_abi::batch::{
    CompletionEntry, DeferredEntry, MulticallEntry, RingHeader, RingMode, RingSetup,
    SubmissionEntry, CQ_CAPACITY, SQ_CAPACITY, SQ_NEED_WAKEUP,
};
use pvabi_abi::calls::Call;
use pvabi_abi::convention::{ReservedU32, ReservedU64};
use pvabi_abi::events::{Event, EventKind};
use pvabi_abi::features::Features;
use pvabi_abi::status::Status;
use zerocopy::IntoBytes;

use super::{config, wait_for, BUF, BUF2, H, MEM, PAGE1, PAGE2, PAGE3};
use crate::HostConfig;

const SQ: u64 = PAGE1;
const CQ: u64 = PAGE2;

fn setup(h: &H, vcpu: u32, mode: RingMode, flags: u32) -> Status {
    h.write(
        BUF,
        &RingSetup {
            sq_page: SQ,
            cq_page: CQ,
            mode,
            flags,
            reserved: ReservedU64::Zero,
        },
    );
    h.status(vcpu, Call::RingSetup, &[BUF])
}

fn sqe(user_data: u64, call: Call, args: &[u64]) -> SubmissionEntry {
    let mut a = [0u64; 6];
    a[..args.len()].copy_from_slice(args);
    SubmissionEntry {
        user_data,
        call: call.code(),
        flags: ReservedU32::Zero,
        args: a,
    }
}

/// Appends submissions at the guest's SQ tail.
fn submit(h: &H, entries: &[SubmissionEntry]) {
    let mut tail = h.u32_at(SQ + 4);
    for e in entries {
        h.write(SQ + 64 + u64::from(tail % 32) * 64, e);
        tail = tail.wrapping_add(1);
    }
    h.write(SQ + 4, &tail);
}

fn cqe(h: &H, index: u32) -> CompletionEntry {
    h.read(CQ + 64 + u64::from(index % 64) * 48)
}

fn hdr(h: &H, page: u64) -> RingHeader {
    h.read(page)
}

#[test]
fn setup_and_doorbell_processing() {
    let h = H::ready(2);
    assert_eq!(setup(&h, 1, RingMode::Doorbell, 0), Status::Success);
    assert_eq!((hdr(&h, SQ).capacity, hdr(&h, CQ).capacity), (32, 64));
    submit(
        &h,
        &[
            sqe(0xa, Call::VcpuInfo, &[]),
            sqe(0xb, Call::ConsoleWriteRegs, &[1, u64::from(b'r')]),
            sqe(0xc, Call::Negotiate, &[0x10000]),
        ],
    );
    assert_eq!(
        h.call(1, Call::RingEnter, &[]),
        (Status::Success, [3, 0, 0, 0])
    );
    assert_eq!((hdr(&h, SQ).head, hdr(&h, CQ).tail), (3, 3));
    let c: Vec<_> = (0..3).map(|i| cqe(&h, i)).collect();
    assert_eq!(
        (c[0].user_data, c[0].status, c[0].results),
        (0xa, 0, [1, 2, 0, 0])
    );
    assert_eq!((c[1].user_data, c[1].status, c[1].results[0]), (0xb, 0, 1));
    assert_eq!(
        (c[2].user_data, c[2].status),
        (0xc, Status::NotAllowedHere as u32)
    );
    assert_eq!(h.call(1, Call::RingEnter, &[]).1[0], 0);
    // The notify port does the same, for the vCPU it names.
    submit(&h, &[sqe(0xd, Call::TimeMonotonic, &[])]);
    h.d.ring_notify(0);
    h.d.ring_notify(99);
    assert_eq!(hdr(&h, CQ).tail, 3);
    h.d.ring_notify(1);
    assert_eq!(hdr(&h, CQ).tail, 4);
    assert_eq!(cqe(&h, 3).user_data, 0xd);
    let rep = h.d.report();
    assert_eq!(
        (rep.ring_submissions, rep.ring_failed, rep.ring_notifies),
        (4, 1, 3)
    );
}

#[test]
fn setup_is_validated() {
    let h = H::ready(1);
    let raw = |sq: u64, cq: u64, mode: u32, flags: u32, reserved: u64| {
        let mut b = Vec::new();
        b.extend_from_slice(sq.as_bytes());
        b.extend_from_slice(cq.as_bytes());
        b.extend_from_slice(mode.as_bytes());
        b.extend_from_slice(flags.as_bytes());
        b.extend_from_slice(reserved.as_bytes());
        h.write(BUF, b.as_slice());
        h.status(0, Call::RingSetup, &[BUF])
    };
    assert_eq!(raw(SQ, CQ, 2, 0, 0), Status::InvalidParameter);
    assert_eq!(raw(SQ, CQ, 0, 2, 0), Status::InvalidParameter);
    assert_eq!(raw(SQ, CQ, 0, 0, 1), Status::InvalidParameter);
    assert_eq!(raw(SQ + 8, CQ, 0, 0, 0), Status::InvalidParameter);
    assert_eq!(raw(SQ, SQ, 0, 0, 0), Status::InvalidParameter);
    assert_eq!(raw(SQ, 0, 0, 0, 0), Status::InvalidParameter);
    assert_eq!(raw(MEM, CQ, 0, 0, 0), Status::InvalidAddress);
    assert_eq!(raw(SQ, u64::MAX - 0xfff, 0, 0, 0), Status::InvalidAddress);
    assert_eq!(h.status(0, Call::RingSetup, &[BUF + 4]), Status::Misaligned);
    assert_eq!(h.status(0, Call::RingEnter, &[]), Status::InvalidState);
    assert_eq!(h.status(0, Call::TimeSetPage, &[CQ]), Status::Success);
    assert_eq!(raw(SQ, CQ, 0, 0, 0), Status::AccessDenied);
    // Nothing was claimed by the failed setup.
    assert_eq!(h.status(0, Call::ConsoleWrite, &[SQ, 4]), Status::Success);
    assert_eq!(raw(SQ, PAGE3, 0, 0, 0), Status::Success);
    assert_eq!(raw(SQ, PAGE3, 0, 0, 0), Status::AccessDenied);
    // Both pages 0 unregisters.
    assert_eq!(raw(0, 0, 0, 0, 0), Status::Success);
    assert_eq!(h.status(0, Call::ConsoleWrite, &[SQ, 4]), Status::Success);
    assert_eq!(h.status(0, Call::RingEnter, &[]), Status::InvalidState);
}

#[test]
fn a_full_completion_ring_stops_consumption() {
    let h = H::ready(1);
    assert_eq!(setup(&h, 0, RingMode::Doorbell, 0), Status::Success);
    let batch = |base: u64| -> Vec<_> {
        (0..32)
            .map(|i| sqe(base + i, Call::VcpuYield, &[]))
            .collect()
    };
    submit(&h, &batch(0));
    assert_eq!(h.call(0, Call::RingEnter, &[]).1[0], 32);
    submit(&h, &batch(32));
    assert_eq!(h.call(0, Call::RingEnter, &[]).1[0], 32);
    // The CQ holds 64 unconsumed completions: nothing more is consumed.
    submit(&h, &batch(64)[..10]);
    assert_eq!(h.call(0, Call::RingEnter, &[]).1[0], 0);
    assert_eq!((hdr(&h, SQ).head, hdr(&h, CQ).tail), (64, 64));
    assert_eq!(cqe(&h, 0).user_data, 0);
    // The guest consumes 5 completions: 5 more submissions go through.
    h.write(CQ, &5u32);
    assert_eq!(h.call(0, Call::RingEnter, &[]).1[0], 5);
    assert_eq!(cqe(&h, 64).user_data, 64);
    assert_eq!(cqe(&h, 5).user_data, 5);
    h.write(CQ, &69u32);
    assert_eq!(h.call(0, Call::RingEnter, &[]).1[0], 5);
}

#[test]
fn garbage_ring_indices() {
    let h = H::ready(1);
    assert_eq!(setup(&h, 0, RingMode::Doorbell, 0), Status::Success);
    // SQ tail 1000 ahead of head: malformed, nothing runs, head jumps to tail.
    h.write(SQ + 4, &1000u32);
    assert_eq!(h.call(0, Call::RingEnter, &[]).1[0], 0);
    let sq = hdr(&h, SQ);
    assert_eq!((sq.head, sq.dropped), (1000, 1000));
    assert_eq!(hdr(&h, CQ).tail, 0);
    assert_eq!(h.d.report().ring_malformed, 1);
    // A guest-written SQ head is ignored: the host keeps its own.
    h.write(SQ, &5u32);
    submit(&h, &[sqe(1, Call::VcpuYield, &[])]);
    assert_eq!(h.call(0, Call::RingEnter, &[]).1[0], 1);
    // A CQ head ahead of the CQ tail leaves no room: nothing is overwritten.
    h.write(CQ, &7u32);
    submit(&h, &[sqe(2, Call::VcpuYield, &[])]);
    assert_eq!(h.call(0, Call::RingEnter, &[]).1[0], 0);
    h.write(CQ, &1u32);
    assert_eq!(h.call(0, Call::RingEnter, &[]).1[0], 1);
    // A submission with reserved flags completes with INVALID_PARAMETER and its user_data.
    let mut bad = sqe(0x77, Call::VcpuYield, &[]);
    bad.flags = ReservedU32::Zero;
    submit(&h, &[bad]);
    let tail = h.u32_at(SQ + 4);
    h.write(SQ + 64 + u64::from((tail - 1) % 32) * 64 + 12, &3u32);
    assert_eq!(h.call(0, Call::RingEnter, &[]).1[0], 1);
    let c = cqe(&h, 2);
    assert_eq!(
        (c.user_data, c.status),
        (0x77, Status::InvalidParameter as u32)
    );
}

#[test]
fn completion_events() {
    let h = H::ready(1);
    assert_eq!(
        h.status(0, Call::EventsSetQueue, &[PAGE3, 99]),
        Status::Success
    );
    assert_eq!(setup(&h, 0, RingMode::Doorbell, 1), Status::Success);
    submit(
        &h,
        &[sqe(1, Call::VcpuYield, &[]), sqe(2, Call::VcpuYield, &[])],
    );
    assert_eq!(h.call(0, Call::RingEnter, &[]).1[0], 2);
    let e: Event = h.read(PAGE3 + 64);
    assert_eq!((e.kind, e.data), (EventKind::RingCompletion as u32, 2));
    assert_eq!(h.m.log().interrupts, [(0, 99)]);
}

#[test]
fn host_polled_ring_sleeps_with_need_wakeup_and_wakes_on_notify() {
    let h = H::ready_with(HostConfig {
        poll_idle: Duration::from_millis(5),
        ..config(1)
    });
    assert_eq!(setup(&h, 0, RingMode::HostPolled, 0), Status::Success);
    submit(&h, &[sqe(1, Call::TimeMonotonic, &[])]);
    wait_for("the poller to consume", || hdr(&h, CQ).tail == 1);
    assert_eq!(cqe(&h, 0).status, 0);
    wait_for("the poller to sleep", || {
        hdr(&h, SQ).flags & SQ_NEED_WAKEUP != 0
    });
    // Asleep: a new submission waits for a notify.
    submit(&h, &[sqe(2, Call::VcpuYield, &[])]);
    thread::sleep(Duration::from_millis(30));
    assert_eq!(hdr(&h, CQ).tail, 1);
    h.d.ring_notify(0);
    wait_for("the poller to wake", || hdr(&h, CQ).tail == 2);
    assert_eq!(cqe(&h, 1).user_data, 2);
    // RING_ENTER also works in this mode.
    submit(&h, &[sqe(3, Call::VcpuYield, &[])]);
    wait_for("the third completion", || {
        hdr(&h, CQ).tail == 3 || {
            h.call(0, Call::RingEnter, &[]);
            hdr(&h, CQ).tail == 3
        }
    });
    // Replacing the ring stops the old poller; shutdown stops the rest.
    assert_eq!(
        h.status(0, Call::RingSetup, &[BUF + 0x100]),
        Status::Success
    );
    h.d.shutdown();
}

/// A `RingSetup` block with both page addresses 0 and the given mode, flags and reserved.
fn raw_setup(h: &H, sq: u64, cq: u64, mode: u32, flags: u32, reserved: u64) -> Status {
    let mut b = Vec::new();
    b.extend_from_slice(sq.as_bytes());
    b.extend_from_slice(cq.as_bytes());
    b.extend_from_slice(mode.as_bytes());
    b.extend_from_slice(flags.as_bytes());
    b.extend_from_slice(reserved.as_bytes());
    h.write(BUF, b.as_slice());
    h.status(0, Call::RingSetup, &[BUF])
}

/// RING-026, RING-012: both addresses 0 unregisters (or does nothing), but the block's other
/// fields are still checked at step 10; RING-013's conditions do not apply.
#[test]
fn unregistering_rings() {
    let h = H::ready(1);
    // No rings: SUCCESS, nothing to do.
    assert_eq!(raw_setup(&h, 0, 0, 0, 0, 0), Status::Success);
    assert_eq!(raw_setup(&h, 0, 0, 1, 1, 0), Status::Success);
    // Step 10 holds whatever the addresses.
    assert_eq!(raw_setup(&h, 0, 0, 2, 0, 0), Status::InvalidParameter);
    assert_eq!(raw_setup(&h, 0, 0, 0, 2, 0), Status::InvalidParameter);
    assert_eq!(raw_setup(&h, 0, 0, 0, 0, 1), Status::InvalidParameter);
    // With rings: unregistering is not INVALID_STATE, and frees both pages.
    assert_eq!(setup(&h, 0, RingMode::Doorbell, 0), Status::Success);
    assert_eq!(raw_setup(&h, 0, 0, 0, 0, 0), Status::Success);
    assert_eq!(h.status(0, Call::ConsoleWrite, &[SQ, 4]), Status::Success);
    assert_eq!(h.status(0, Call::ConsoleWrite, &[CQ, 4]), Status::Success);
    assert_eq!(h.status(0, Call::RingEnter, &[]), Status::InvalidState);
    // And a new pair can be registered.
    assert_eq!(setup(&h, 0, RingMode::Doorbell, 0), Status::Success);
}

/// RING-012, RING-013, CONV-022/023 for ring pages: page fields are step 10
/// (INVALID_PARAMETER, never MISALIGNED); RAM, ownership and state are step 11, lowest wins.
#[test]
fn ring_page_checks_sit_at_steps_10_and_11() {
    let h = H::ready(1);
    // Not page-aligned: INVALID_PARAMETER, even with the other page outside RAM.
    assert_eq!(
        raw_setup(&h, SQ + 8, MEM, 0, 0, 0),
        Status::InvalidParameter
    );
    assert_eq!(
        raw_setup(&h, SQ, CQ + 0x800, 0, 0, 0),
        Status::InvalidParameter
    );
    // Step 10 beats step 11: bad flags with a host-owned page.
    assert_eq!(h.status(0, Call::TimeSetPage, &[PAGE3]), Status::Success);
    assert_eq!(raw_setup(&h, SQ, PAGE3, 0, 2, 0), Status::InvalidParameter);
    // Step 11: INVALID_ADDRESS (8) < ACCESS_DENIED (9) < INVALID_STATE (13).
    assert_eq!(raw_setup(&h, MEM, PAGE3, 0, 0, 0), Status::InvalidAddress);
    assert_eq!(raw_setup(&h, SQ, PAGE3, 0, 0, 0), Status::AccessDenied);
    assert_eq!(raw_setup(&h, SQ, CQ, 0, 0, 0), Status::Success);
    assert_eq!(raw_setup(&h, SQ, CQ, 0, 0, 0), Status::AccessDenied);
    assert_eq!(raw_setup(&h, BUF2, PAGE3, 0, 0, 0), Status::AccessDenied);
    assert_eq!(raw_setup(&h, BUF2, MEM, 0, 0, 0), Status::InvalidAddress);
    assert_eq!(
        raw_setup(&h, BUF2, BUF2 + 0x1000, 0, 0, 0),
        Status::InvalidState
    );
}

/// RING-016, RING-025, VCPU-008: after the unregistering call returns, nothing of the old
/// pair is consumed or written, by RING_SETUP or by VCPU_STOP.
#[test]
fn nothing_runs_after_rings_are_unregistered() {
    let h = H::ready(2);
    assert_eq!(setup(&h, 1, RingMode::Doorbell, 0), Status::Success);
    submit(&h, &[sqe(1, Call::VcpuYield, &[])]);
    assert_eq!(h.call(1, Call::RingSetup, &[BUF2]).0, Status::Success); // BUF2 is all 0
    h.d.ring_notify(1);
    assert_eq!((hdr(&h, SQ).head, hdr(&h, CQ).tail), (0, 0));
    assert_eq!(h.status(1, Call::RingEnter, &[]), Status::InvalidState);
    // VCPU_STOP unregisters too.
    assert_eq!(setup(&h, 1, RingMode::Doorbell, 0), Status::Success);
    submit(&h, &[sqe(2, Call::VcpuYield, &[])]);
    assert_eq!(
        h.raw(1, u64::from(Call::VcpuStop.code()), &[]).2,
        crate::Outcome::StopVcpu
    );
    h.d.ring_notify(1);
    assert_eq!((hdr(&h, SQ).head, hdr(&h, CQ).tail), (0, 0));
    assert_eq!(h.status(0, Call::ConsoleWrite, &[SQ, 4]), Status::Success);
}

/// RING-023, RING-027: once a system call that ends the VM is handled, no ring consumes, on
/// any path (RING_ENTER, a notify, the poller, which exits), whichever of the three calls it
/// is and whether the poller was polling or asleep.
#[test]
fn no_submission_is_consumed_after_the_vm_ends() {
    let ends: [(Call, &[u64], crate::End); 3] = [
        (Call::SystemShutdown, &[3], crate::End::Shutdown(3)),
        (Call::SystemReboot, &[], crate::End::Reboot),
        (
            Call::SystemCrash,
            &[BUF2, 0],
            crate::End::Crash(String::new()),
        ),
    ];
    for (mode, idle) in [
        (RingMode::Doorbell, 60_000),
        (RingMode::HostPolled, 60_000),
        (RingMode::HostPolled, 1),
    ] {
        for (call, args, want) in &ends {
            let h = H::ready_with(HostConfig {
                poll_idle: Duration::from_millis(idle),
                ..config(2)
            });
            assert_eq!(setup(&h, 1, mode, 0), Status::Success);
            submit(&h, &[sqe(1, Call::VcpuYield, &[])]);
            if mode == RingMode::Doorbell {
                assert_eq!(h.call(1, Call::RingEnter, &[]).1[0], 1);
            } else {
                wait_for("the poller", || hdr(&h, CQ).tail == 1);
            }
            if idle == 1 {
                wait_for("the poller to sleep", || {
                    hdr(&h, SQ).flags & SQ_NEED_WAKEUP != 0
                });
            }
            let end = h.raw(0, u64::from(call.code()), args).2;
            assert_eq!(end, crate::Outcome::End(want.clone()));
            // The poller exits (it is the only worker here).
            wait_for("the poller to exit", || {
                crate::sync::lock(&h.d.inner.workers)
                    .handles
                    .iter()
                    .all(|w| w.is_finished())
            });
            submit(&h, &[sqe(2, Call::MemUpdatePte, &[PAGE3, 0x77, 1])]);
            h.d.ring_notify(1);
            assert_eq!(h.call(1, Call::RingEnter, &[]), (Status::Success, [0; 4]));
            thread::sleep(Duration::from_millis(20));
            assert_eq!(
                (hdr(&h, SQ).head, hdr(&h, CQ).tail, h.read::<u64>(PAGE3)),
                (1, 1, 0),
                "{mode:?}, idle {idle} ms, {call:?}"
            );
            h.d.shutdown();
        }
    }
}

/// RING-023, RING-027: a pass in progress when a system call that ends the VM is handled
/// (a notify's, held inside its first submission by a console that blocks) finishes that
/// submission, its effect and its completion, before the call returns its end, and consumes
/// no later submission, then or afterwards.
#[test]
fn a_pass_in_progress_when_the_vm_ends_completes_and_consumes_no_more() {
    use std::sync::{mpsc, Arc, Mutex};
    let (entered_tx, entered_rx) = mpsc::channel::<Vec<u8>>();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let (entered_tx, release_rx) = (Mutex::new(entered_tx), Mutex::new(release_rx));
    let console = crate::ConsoleSink::Custom(Arc::new(move |_, bytes: &[u8]| {
        let _ = crate::sync::lock(&entered_tx).send(bytes.to_vec());
        let _ = crate::sync::lock(&release_rx).recv_timeout(Duration::from_secs(10));
    }));
    let h = H::ready_with(HostConfig {
        console,
        ..config(2)
    });
    assert_eq!(setup(&h, 1, RingMode::Doorbell, 0), Status::Success);
    h.write(BUF2, b"in flight");
    submit(
        &h,
        &[
            sqe(1, Call::ConsoleWrite, &[BUF2, 9]),
            sqe(2, Call::MemUpdatePte, &[PAGE3, 0x1234, 1]),
        ],
    );
    thread::scope(|s| {
        let notify = s.spawn(|| h.d.ring_notify(1));
        let written = entered_rx.recv_timeout(Duration::from_secs(5));
        assert_eq!(
            written.as_deref(),
            Ok(&b"in flight"[..]),
            "the pass has begun"
        );
        let end = s.spawn(|| {
            let outcome = h.raw(0, u64::from(Call::SystemReboot.code()), &[]).2;
            // Read as soon as the call returns.
            (outcome, hdr(&h, SQ).head, hdr(&h, CQ).tail)
        });
        wait_for("SYSTEM_REBOOT to stop the rings", || {
            h.d.inner
                .rings_stopped
                .load(std::sync::atomic::Ordering::SeqCst)
        });
        release_tx.send(()).expect("the console waits");
        notify.join().expect("the notify returns");
        let (outcome, head, tail) = end.join().expect("the call returns");
        assert_eq!(outcome, crate::Outcome::End(crate::End::Reboot));
        assert_eq!(
            (head, tail),
            (1, 1),
            "when SYSTEM_REBOOT returned: the submission in progress complete, no other consumed"
        );
    });
    let c = cqe(&h, 0);
    assert_eq!((c.user_data, c.status), (1, 0));
    h.d.ring_notify(1);
    assert_eq!(h.call(1, Call::RingEnter, &[]), (Status::Success, [0; 4]));
    assert_eq!((hdr(&h, SQ).head, hdr(&h, CQ).tail), (1, 1));
    assert_eq!(h.read::<u64>(PAGE3), 0, "the second submission never ran");
    h.d.shutdown();
}

/// The injected faults of the rings' end: `RingsRunWithoutCompletionsAtEnd` consumes what is
/// queued at the end without completions; `RingsCarriedOverReset` serves the old rings after
/// a reset.
#[cfg(feature = "fault-injection")]
#[test]
fn the_ring_end_faults_consume_what_they_must_not() {
    use crate::faults::InjectedFault;
    use std::sync::Arc;
    let h = H::ready_with(HostConfig {
        inject: Some(InjectedFault::RingsRunWithoutCompletionsAtEnd),
        ..config(1)
    });
    assert_eq!(setup(&h, 0, RingMode::Doorbell, 0), Status::Success);
    submit(&h, &[sqe(1, Call::MemUpdatePte, &[PAGE3, 0x55, 1])]);
    h.raw(0, u64::from(Call::SystemShutdown.code()), &[0]);
    assert_eq!((hdr(&h, SQ).head, hdr(&h, CQ).tail), (1, 0));
    assert_eq!(h.read::<u64>(PAGE3), 0x55);
    h.d.shutdown();

    let h = H::ready_with(HostConfig {
        inject: Some(InjectedFault::RingsCarriedOverReset),
        poll_idle: Duration::from_secs(60),
        ..config(1)
    });
    assert_eq!(setup(&h, 0, RingMode::HostPolled, 0), Status::Success);
    h.raw(0, u64::from(Call::SystemReboot.code()), &[]);
    h.d.shutdown();
    let d = h.d.after_reset(Arc::clone(&h.m)).expect("same vCPU count");
    let h = H { d, m: h.m };
    submit(&h, &[sqe(7, Call::VcpuYield, &[])]);
    wait_for("the carried-over poller", || hdr(&h, CQ).tail == 1);
    h.d.shutdown();
}

/// RING-017: RING_ENTER alongside a polling thread consumes whatever the poller did not;
/// every submission is consumed once, in order, and `consumed` counts the call's own.
#[test]
fn ring_enter_alongside_the_poller() {
    let h = H::ready_with(HostConfig {
        poll_idle: Duration::from_secs(60),
        ..config(1)
    });
    assert_eq!(setup(&h, 0, RingMode::HostPolled, 0), Status::Success);
    let mut consumed = 0;
    for round in 0..20u64 {
        let entries: Vec<_> = (0..32)
            .map(|i| sqe(round * 32 + i, Call::VcpuYield, &[]))
            .collect();
        submit(&h, &entries);
        let (s, r) = h.call(0, Call::RingEnter, &[]);
        assert_eq!(s, Status::Success);
        consumed += r[0];
        // Everything submitted before the call is consumed when it returns (the CQ had room).
        let tail = hdr(&h, SQ).tail;
        assert_eq!(hdr(&h, SQ).head, tail);
        for i in 0..32 {
            let c = cqe(&h, (round * 32 + i) as u32);
            assert_eq!((c.user_data, c.status), (round * 32 + i, 0));
        }
        // The guest consumes the completions.
        h.write(CQ, &hdr(&h, CQ).tail);
    }
    assert!(consumed <= 640);
    assert_eq!(hdr(&h, CQ).tail, 640);
    h.d.shutdown();
}

/// RING-022, RING-024: other writes to the notify port do nothing; reads return all ones,
/// whether or not RING is offered.
#[test]
fn notify_port_writes_and_reads() {
    let no_ring = HostConfig {
        features: config(1)
            .features
            .into_iter()
            .filter(|f| f.flag != Features::RING)
            .collect(),
        ..config(1)
    };
    for cfg in [config(1), no_ring] {
        let h = H::with(cfg);
        h.negotiate(Features::defined_in(pvabi_abi::version::V1_0) - Features::RING);
        let port = h.d.config().ring_notify_port;
        for width in [1usize, 2, 4] {
            let mut data = vec![0u8; width];
            assert!(h.d.port_in(port, &mut data));
            assert!(data.iter().all(|&b| b == 0xff), "width {width}");
        }
        // A write naming a vCPU without rings, or out of range: nothing happens.
        let mut regs = crate::CallRegs::default();
        for data in [
            &0u32.to_le_bytes()[..],
            &[0u8][..],
            &[0, 0][..],
            &99u32.to_le_bytes()[..],
        ] {
            assert_eq!(
                h.d.port_out(crate::Caller::kernel(0), port, data, &mut regs),
                Some(crate::Outcome::Resume)
            );
        }
        assert_eq!(regs, crate::CallRegs::default());
    }
    // With rings, a write of another width does not process them.
    let h = H::ready(1);
    let port = h.d.config().ring_notify_port;
    assert_eq!(setup(&h, 0, RingMode::Doorbell, 0), Status::Success);
    submit(&h, &[sqe(1, Call::VcpuYield, &[])]);
    let mut regs = crate::CallRegs::default();
    h.d.port_out(crate::Caller::kernel(0), port, &[0, 0], &mut regs);
    h.d.port_out(
        crate::Caller::kernel(0),
        port,
        &0u64.to_le_bytes(),
        &mut regs,
    );
    assert_eq!(hdr(&h, CQ).tail, 0);
    h.d.port_out(
        crate::Caller::kernel(0),
        port,
        &0u32.to_le_bytes(),
        &mut regs,
    );
    assert_eq!(hdr(&h, CQ).tail, 1);
}

/// RING-019: a failed submission's completion has 0 in every result (strict or not); a
/// successful one has 0 in the slots its call does not define; `reserved` is 0.
#[test]
fn completion_results_are_zero_where_undefined() {
    for strict in [false, true] {
        let h = H::ready_with(HostConfig {
            strict,
            ..config(1)
        });
        assert_eq!(setup(&h, 0, RingMode::Doorbell, 0), Status::Success);
        // Garbage in the CQ slots the host will write.
        h.write(CQ + 64, &[0xeeu8; 3 * 48]);
        submit(
            &h,
            &[
                sqe(1, Call::ConsoleWriteRegs, &[99]),
                sqe(2, Call::VcpuInfo, &[]),
                sqe(3, Call::VcpuYield, &[]),
            ],
        );
        assert_eq!(h.call(0, Call::RingEnter, &[]).1[0], 3);
        let c: Vec<_> = (0..3).map(|i| cqe(&h, i)).collect();
        assert_eq!(c[0].status, Status::InvalidParameter as u32);
        assert_eq!(c[0].results, [0; 4], "strict: {strict}");
        assert_eq!(c[1].results, [0, 1, 0, 0]);
        assert_eq!(c[2].results, [0; 4]);
        assert!(c.iter().all(|c| c.reserved == 0));
    }
}

/// RING-020: submissions run as calls of the ring's owner, whoever notifies.
#[test]
fn submissions_run_as_the_owner() {
    let h = H::ready(3);
    assert_eq!(setup(&h, 2, RingMode::Doorbell, 0), Status::Success);
    submit(&h, &[sqe(1, Call::VcpuInfo, &[])]);
    let mut regs = crate::CallRegs::default();
    let port = h.d.config().ring_notify_port;
    h.d.port_out(
        crate::Caller::kernel(0),
        port,
        &2u32.to_le_bytes(),
        &mut regs,
    );
    assert_eq!(cqe(&h, 0).results[..2], [2, 3]);
}

/// STAT-011, RING-002: a submission's `flags` are checked before step 1 of its call.
#[test]
fn submission_flags_are_checked_before_the_call() {
    let h = H::ready(1);
    assert_eq!(setup(&h, 0, RingMode::Doorbell, 0), Status::Success);
    let entries = [
        SubmissionEntry {
            call: 0x0fff,
            ..sqe(1, Call::VcpuYield, &[])
        },
        sqe(2, Call::Negotiate, &[0x10000]),
        sqe(3, Call::ConsoleWriteRegs, &[99]),
    ];
    submit(&h, &entries);
    for i in 0..3u64 {
        h.write(SQ + 64 + i * 64 + 12, &1u32);
    }
    assert_eq!(h.call(0, Call::RingEnter, &[]).1[0], 3);
    for i in 0..3 {
        let c = cqe(&h, i);
        assert_eq!(
            (c.user_data, c.status),
            (u64::from(i) + 1, Status::InvalidParameter as u32)
        );
    }
}

/// BATCH-014: a completion-ring head more than a capacity behind (or ahead of) the host's
/// tail makes the ring full: nothing is consumed or overwritten, and the host keeps its tail.
/// BATCH-012: guest writes over the host's SQ head, CQ tail and `dropped` change nothing.
#[test]
fn corrupt_completion_head_and_host_fields() {
    let h = H::ready(1);
    assert_eq!(setup(&h, 0, RingMode::Doorbell, 0), Status::Success);
    submit(&h, &[sqe(1, Call::VcpuYield, &[])]);
    assert_eq!(h.call(0, Call::RingEnter, &[]).1[0], 1);
    // Head far behind the tail: occupancy 1 + 1000 > 64.
    h.write(CQ, &0u32.wrapping_sub(1000));
    submit(&h, &[sqe(2, Call::VcpuYield, &[])]);
    assert_eq!(h.call(0, Call::RingEnter, &[]).1[0], 0);
    assert_eq!((hdr(&h, SQ).head, hdr(&h, CQ).tail), (1, 1));
    // The guest scribbles over host-written fields; a valid head resumes the ring.
    h.write(SQ, &40u32);
    h.write(CQ + 4, &50u32);
    h.write(SQ + 16, &60u32);
    h.write(CQ, &1u32);
    assert_eq!(h.call(0, Call::RingEnter, &[]).1[0], 1);
    assert_eq!((hdr(&h, SQ).head, hdr(&h, CQ).tail), (2, 2));
    assert_eq!(cqe(&h, 1).user_data, 2);
    // A malformed SQ counts from the host's `dropped` (0), not the guest's 60.
    h.write(SQ + 4, &200u32);
    h.call(0, Call::RingEnter, &[]);
    assert_eq!((hdr(&h, SQ).head, hdr(&h, SQ).dropped), (200, 198));
}

/// Capacities are powers of two: a ring's slot sequence runs on across the 2^32 wrap.
#[test]
fn ring_indices_wrap_without_a_jump() {
    assert!(SQ_CAPACITY.is_power_of_two() && CQ_CAPACITY.is_power_of_two());
    let h = H::ready(1);
    assert_eq!(setup(&h, 0, RingMode::Doorbell, 0), Status::Success);
    let start = u32::MAX - 9;
    h.write(SQ + 4, &start); // malformed: the host's head jumps to it
    h.call(0, Call::RingEnter, &[]);
    assert_eq!(hdr(&h, SQ).head, start);
    let entries: Vec<_> = (0..20).map(|i| sqe(i, Call::VcpuYield, &[])).collect();
    submit(&h, &entries);
    assert_eq!(hdr(&h, SQ).tail, 10);
    assert_eq!(h.call(0, Call::RingEnter, &[]).1[0], 20);
    assert_eq!(hdr(&h, SQ).head, 10);
    assert_eq!(
        (0..20).map(|i| cqe(&h, i).user_data).collect::<Vec<_>>(),
        (0..20).collect::<Vec<_>>()
    );
}

/// DEFER-011: ring submissions never drain the owner's deferred queue, even sync points,
/// in doorbell mode (RING_ENTER, notify) and from the polling thread.
#[test]
fn ring_submissions_do_not_drain_the_deferred_queue() {
    for mode in [RingMode::Doorbell, RingMode::HostPolled] {
        let h = H::ready_with(HostConfig {
            poll_idle: Duration::from_secs(60),
            ..config(1)
        });
        const DQ: u64 = 0x20_3000;
        assert_eq!(h.status(0, Call::DeferSetQueue, &[DQ, 0]), Status::Success);
        let entry = DeferredEntry {
            call: Call::MemUpdatePte.code(),
            flags: ReservedU32::Zero,
            args: [BUF2, 9, 1],
        };
        // RING_SETUP is a sync point itself: queue after it.
        assert_eq!(setup(&h, 0, mode, 0), Status::Success);
        h.write(DQ + 64, &entry);
        h.write(DQ + 4, &1u32);
        submit(
            &h,
            &[
                sqe(1, Call::MemFlushTlbAll, &[]),
                sqe(2, Call::MemShare, &[BUF2, 1]),
            ],
        );
        if mode == RingMode::Doorbell {
            assert_eq!(h.call(0, Call::RingEnter, &[]).1[0], 2);
        } else {
            wait_for("the poller", || hdr(&h, CQ).tail == 2);
        }
        assert_eq!((cqe(&h, 0).status, cqe(&h, 1).status), (0, 0));
        assert_eq!(h.read::<u64>(BUF2), 0, "{mode:?}: not drained");
        assert_eq!(h.u32_at(DQ), 0);
        assert_eq!(h.call(0, Call::DeferFlush, &[]).1[0], 1);
        h.d.shutdown();
    }
}

/// One call sequence of batchable calls (successes and failures, with results and effects on
/// guest memory and the console), as (code, arguments).
fn mode_sequence() -> Vec<(u32, [u64; 6])> {
    (0..30u64)
        .map(|i| {
            let (call, args): (u32, &[u64]) = match i % 9 {
                0 => (Call::VcpuInfo.code(), &[]),
                1 => (
                    Call::ConsoleWriteRegs.code(),
                    &[1, u64::from(b'a' + i as u8)],
                ),
                2 => (
                    Call::MemUpdatePte.code(),
                    &[BUF2 + 8 * i, (0x1000 * i) | 1, 1],
                ),
                3 => (Call::EventsSetMask.code(), &[i & 0b111]),
                4 => (Call::ConsoleWriteRegs.code(), &[99]),
                5 => (
                    Call::ProbeCall.code(),
                    &[u64::from(Call::TimeMonotonic.code())],
                ),
                6 => (0x0fff, &[]),
                7 => (Call::TimeFrequency.code(), &[]),
                _ => (Call::GetSpecVersion.code(), &[]),
            };
            let mut a = [0u64; 6];
            a[..args.len()].copy_from_slice(args);
            (call, a)
        })
        .collect()
}

/// What one mode made of the sequence: each call's status and, on SUCCESS, the results the
/// call defines (a direct call leaves the other result registers undefined, a batch writes 0
/// there); the console output; the page the PTE updates wrote.
type ModeOutcome = (Vec<(u32, Option<Vec<u64>>)>, String, Vec<u8>);

fn outcome_of(h: &H, calls: &[(u32, [u64; 6])], answers: Vec<(u32, [u64; 4])>) -> ModeOutcome {
    let answers = calls
        .iter()
        .zip(answers)
        .map(|(&(code, _), (s, r))| {
            let defined =
                Call::from_code(u64::from(code)).map_or(0, |c| c.descriptor().results.len());
            (s, (s == 0).then(|| r[..defined].to_vec()))
        })
        .collect();
    (
        answers,
        h.d.report().console_text(),
        h.read_bytes(BUF2, 4096),
    )
}

#[test]
fn the_same_calls_agree_in_sync_multicall_and_ring_mode() {
    let calls = mode_sequence();
    // Direct calls, one exit each.
    let h = H::ready(1);
    let answers = calls
        .iter()
        .map(|(code, a)| {
            let (s, r, _) = h.raw(0, u64::from(*code), a);
            (s as u32, r)
        })
        .collect();
    let sync = outcome_of(&h, &calls, answers);
    // One MULTICALL of all of them.
    let h = H::ready(1);
    let entries: Vec<MulticallEntry> = calls
        .iter()
        .map(|&(call, args)| MulticallEntry {
            call,
            status: 0xffff,
            args,
            results: [0x5a; 4],
            ..Default::default()
        })
        .collect();
    h.write(PAGE3, entries.as_slice());
    let n = calls.len() as u64;
    assert_eq!(
        h.call(0, Call::Multicall, &[PAGE3, n, 0, 0]),
        (Status::Success, [n, n, 0, 0])
    );
    let answers = (0..n)
        .map(|i| {
            let e = PAGE3 + 96 * i;
            (h.u32_at(e + 4), h.read::<[u64; 4]>(e + 64))
        })
        .collect();
    let multicall = outcome_of(&h, &calls, answers);
    // Submitted to a doorbell-mode ring (in two rounds: the ring holds 32), consumed by
    // RING_ENTER.
    let h = H::ready(1);
    assert_eq!(setup(&h, 0, RingMode::Doorbell, 0), Status::Success);
    let mut answers = Vec::new();
    for (round, chunk) in calls.chunks(16).enumerate() {
        let sqes: Vec<SubmissionEntry> = chunk
            .iter()
            .enumerate()
            .map(|(k, &(call, args))| SubmissionEntry {
                user_data: (round * 16 + k) as u64,
                call,
                flags: ReservedU32::Zero,
                args,
            })
            .collect();
        submit(&h, &sqes);
        let done = chunk.len() as u64;
        assert_eq!(
            h.call(0, Call::RingEnter, &[]),
            (Status::Success, [done, 0, 0, 0])
        );
        for k in 0..chunk.len() {
            let c = cqe(&h, (round * 16 + k) as u32);
            assert_eq!(c.user_data, (round * 16 + k) as u64, "in submission order");
            answers.push((c.status, c.results));
        }
    }
    let ring = outcome_of(&h, &calls, answers);
    assert_eq!(sync, multicall, "sync and MULTICALL");
    assert_eq!(sync, ring, "sync and ring");
    // The sequence is not trivial: it has successes with results, failures and effects.
    let statuses: Vec<u32> = sync.0.iter().map(|(s, _)| *s).collect();
    assert!(statuses.contains(&0) && statuses.contains(&(Status::InvalidParameter as u32)));
    assert!(statuses.contains(&(Status::NotSupported as u32)));
    assert!(!sync.1.is_empty() && sync.2.iter().any(|&b| b != 0));
}
