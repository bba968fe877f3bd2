//! End-to-end tests on a real `/dev/kvm`: the reference host ([`PvabiPorts`] over the VM
//! layer, booted by [`runner`]) runs the demo guest (`guest-ref/bare/demo`), and each test
//! checks one family from both sides: what the guest observed (its `ok ...` lines; a
//! failed check prints `FAIL: ...` and shuts down with code 1) and what the host recorded
//! (the dispatcher's [`Report`]). The expected numbers follow the demo's script (see its
//! sections); a host that answers, posts, coalesces, writes or counts differently fails.
//!
//! The full demo runs once per vCPU count and the family tests share that run. Scenarios
//! (crash, reboot, ...) are picked through the demo's test port ([`SCENARIO_PORT`]),
//! answered by a device on the bus.
//!
//! [`PvabiPorts`]: pvabi_host::PvabiPorts

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use pvabi_abi::calls::{self, Call};
use pvabi_abi::features::Features;
use pvabi_abi::status::Status;
use pvabi_host::bus::{PortAccess, PortBus, PortDevice, PortFeed};
use pvabi_host::dispatch::report::TlbFlush;
use pvabi_host::dispatch::{CallRegs, Outcome};
use pvabi_host::dispatch::{ConsoleSink, End, HostConfig, Report};
use pvabi_host::runner::{self, RunConfig, RunOutcome};
use pvabi_host::vm::testing::kvm_or_skip;
use pvabi_host::vm::{VmConfig, VmEnd};
use pvabi_host::KvmDispatcher;

/// The demo's scenario port and scenarios (mirrors `guest-ref/bare/demo/src/main.rs`).
const SCENARIO_PORT: u16 = 0x5640;
const SCENARIO_CRASH: u32 = 1;
const SCENARIO_REBOOT: u32 = 2;
const SCENARIO_EXIT_CODE: u32 = 3;
const SCENARIO_EXCEPTION: u32 = 4;
const CRASH_MESSAGE: &str = "demo guest: deliberate crash report (test scenario 1)";
/// The demo's page-table window (PML4 slot 1).
const VA_WINDOW: u64 = 0x80_0000_0000;
/// A run that takes longer has hung (the demo takes well under a second).
const TIME_LIMIT: Duration = Duration::from_secs(30);

/// Boots the demo guest with `vcpus` vCPUs in `scenario` on `host`, with the devices `add`
/// attaches.
fn boot_with(
    vcpus: u32,
    scenario: u32,
    host: HostConfig,
    mut add: impl FnMut(&mut PortBus, &Arc<KvmDispatcher>),
) -> RunOutcome {
    let config = RunConfig {
        host: HostConfig {
            console: ConsoleSink::Discard,
            ..host
        },
        vm: VmConfig {
            vcpus,
            ..VmConfig::default()
        },
        timeout: Some(TIME_LIMIT),
    };
    runner::run_with(pvabi_guest_images::demo(), config, |bus, dispatcher| {
        bus.attach(
            SCENARIO_PORT..=SCENARIO_PORT,
            Arc::new(PortFeed::new([scenario])),
        );
        add(bus, dispatcher);
    })
    .expect("the VM runs")
}

fn boot(vcpus: u32, scenario: u32) -> RunOutcome {
    boot_with(vcpus, scenario, HostConfig::default(), |_, _| {})
}

/// Set when the host could not link the guest's TSC to its own (the reason is printed).
static TSC_UNAVAILABLE: AtomicBool = AtomicBool::new(false);

/// The full demo with `vcpus` vCPUs, run once and shared by the tests; `None` (after a
/// loud SKIP) without KVM.
fn demo(vcpus: u32, test: &str) -> Option<&'static RunOutcome> {
    static ONE: OnceLock<RunOutcome> = OnceLock::new();
    static TWO: OnceLock<RunOutcome> = OnceLock::new();
    if !kvm_or_skip(test) {
        return None;
    }
    let cell = if vcpus == 1 { &ONE } else { &TWO };
    Some(cell.get_or_init(|| {
        boot_with(vcpus, 0, HostConfig::default(), |_, d| {
            if let Some(why) = d.machine().ctl().tsc_unavailable() {
                eprintln!("note: no TSC interpolation in the time page: {why}");
                TSC_UNAVAILABLE.store(true, Ordering::Relaxed);
            }
        })
    }))
}

/// The guest's console, for failure messages.
fn dump(o: &RunOutcome) -> String {
    format!(
        "the VM ended: {}\n--- guest console ---\n{}---",
        o.end,
        o.console_text()
    )
}

/// The demo ran to its end: shutdown(0), no FAIL line, the summary with as many passed
/// checks as `ok` lines.
fn assert_clean(o: &RunOutcome) {
    let text = o.console_text();
    assert_eq!(o.end, VmEnd::Shutdown(0), "{}", dump(o));
    assert_eq!(o.report.end, Some(End::Shutdown(0)), "{}", dump(o));
    assert!(!text.contains("FAIL"), "{}", dump(o));
    let oks = text.lines().filter(|l| l.starts_with("ok  ")).count();
    let summary = line(o, "demo: ").to_string();
    let passed: usize = summary
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no check count in {summary:?}\n{}", dump(o)));
    assert!(passed > 50, "{}", dump(o));
    assert_eq!(passed, oks, "every ok line is counted\n{}", dump(o));
}

/// The first line starting with `prefix` (a panic with the console if there is none).
fn line<'a>(o: &'a RunOutcome, prefix: &str) -> &'a str {
    let text = std::str::from_utf8(&o.console).expect("the demo prints ASCII");
    text.lines()
        .find(|l| l.starts_with(prefix) && !l.contains("event interrupts"))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?}\n{}", dump(o)))
}

/// The guest's check line `ok  <family>: <what>...`.
fn ok_line<'a>(o: &'a RunOutcome, family_what: &str) -> &'a str {
    line(o, &format!("ok  {family_what}"))
}

/// What the guest's handler took, per vCPU (its totals line).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Taken {
    interrupts: u64,
    events: u64,
    timers: u64,
}

/// The guest's totals line, per vCPU.
fn guest_totals(o: &RunOutcome) -> Vec<Taken> {
    let text = o.console_text();
    let totals = text
        .lines()
        .find(|l| l.starts_with("demo: event interrupts taken:"))
        .unwrap_or_else(|| panic!("no totals line\n{}", dump(o)))
        .to_string();
    totals
        .trim_start_matches("demo: event interrupts taken:")
        .split(',')
        .map(|part| {
            // "vCPU 0 5 for 19 events (1 TIMER)"
            let words: Vec<&str> = part.split_whitespace().collect();
            let n = |i: usize| -> u64 {
                words
                    .get(i)
                    .and_then(|w| w.trim_start_matches('(').parse().ok())
                    .unwrap_or_else(|| panic!("bad totals line {totals:?}"))
            };
            Taken {
                interrupts: n(2),
                events: n(4),
                timers: n(6),
            }
        })
        .collect()
}

/// Calls made one exit each (not inside a MULTICALL, the deferred queue or a ring).
fn direct_calls(r: &Report) -> u64 {
    let all: u64 = r.calls.values().map(|c| c.total).sum();
    all - r.multicall_entries - r.deferred_drained - r.ring_submissions
}

const V1_0_FEATURES: Features = Features::CONSOLE
    .union(Features::TIME)
    .union(Features::EVENTS)
    .union(Features::MEMORY)
    .union(Features::VCPU)
    .union(Features::SYSTEM)
    .union(Features::MULTICALL)
    .union(Features::DEFERRED)
    .union(Features::RING);

#[test]
fn demo_runs_every_family_to_a_clean_shutdown() {
    let Some(o) = demo(1, "demo_runs_every_family_to_a_clean_shutdown") else {
        return;
    };
    assert_clean(o);
    for section in [
        "-- discovery",
        "-- base",
        "-- console",
        "-- time",
        "-- events",
        "-- memory",
        "-- vcpu",
        "-- batch: MULTICALL",
        "-- batch: deferred",
        "-- batch: submission",
        "-- system",
    ] {
        line(o, section);
    }
    line(o, "demo: SYSTEM_SHUTDOWN(0)");
    // Console: the host emitted exactly what the guest wrote, and recorded it all.
    assert_eq!(o.report.console_bytes, o.console.len() as u64);
    assert_eq!(o.report.console, o.console);
    // Every doorbell exit is one direct call; the scenario read is the only `in`.
    assert_eq!(o.exits.doorbell, direct_calls(&o.report), "{:?}", o.exits);
    assert_eq!(o.exits.port_in, 1);
    assert_eq!(o.exits.other_out, 0);
    assert!(o.wall < TIME_LIMIT);
}

#[test]
fn discovery_and_base_negotiate_1_0_families() {
    let Some(o) = demo(1, "discovery_and_base_negotiate_1_0_families") else {
        return;
    };
    assert_clean(o);
    let host = HostConfig::default();
    ok_line(
        o,
        "discovery: signature \"pvabi-x86-64\" at CPUID leaf 0x40000000",
    );
    ok_line(o, "discovery: limits: 32 MULTICALL entries");
    ok_line(o, "base: GET_IMPL_ID: id 1, name \"pvabi-ref\"");
    ok_line(o, "base: a second NEGOTIATE -> LOCKED");
    let accepted = host.served_major(1).expect("the default host serves 1.x");
    let r = &o.report;
    assert_eq!(r.negotiated, Some((accepted, V1_0_FEATURES)));
    assert!(ok_line(o, "base: NEGOTIATE").contains(&format!("-> version {accepted}")));
    assert_eq!(r.count(Call::Negotiate, Status::Success), 1);
    assert_eq!(r.count(Call::Negotiate, Status::Locked), 1);
    // Once in the MULTICALL and once in the ring, on purpose.
    assert_eq!(r.count(Call::Negotiate, Status::NotAllowedHere), 2);
    // A model guest makes no feature call before NEGOTIATE (DISC-006): the conformance suite
    // provokes NOT_NEGOTIATED, not the demo.
    assert_eq!(r.count(Call::ConsoleWriteRegs, Status::NotNegotiated), 0);
    // PROBE_CALL: once before NEGOTIATE, once per call after, once for an unknown code.
    assert_eq!(
        r.count(Call::ProbeCall, Status::Success),
        calls::all().count() as u64 + 2
    );
    let unknown = r.calls.get(&0x7f42).expect("the unknown code was called");
    assert_eq!(
        (unknown.total, unknown.status(Status::NotSupported)),
        (1, 1)
    );
    assert_eq!(r.count(Call::GetImplId, Status::Success), 1);
    assert_eq!(r.count(Call::GetImplVersion, Status::Success), 1);
    assert!(r.count(Call::GetSpecVersion, Status::Success) >= 2);
}

#[test]
fn console_register_and_memory_forms() {
    let Some(o) = demo(1, "console_register_and_memory_forms") else {
        return;
    };
    assert_clean(o);
    line(
        o,
        "    (this line came in registers: CONSOLE_WRITE_REGS, 2 calls)",
    );
    line(
        o,
        "    (this line came from guest memory: one CONSOLE_WRITE)",
    );
    line(o, "    (from a MULTICALL entry)");
    line(o, "    (from a ring submission)");
    ok_line(o, "console: CONSOLE_WRITE_REGS wrote 63 of 63 bytes");
    ok_line(o, "console: CONSOLE_WRITE wrote 58 of 58 bytes");
    let r = &o.report;
    // The 63-byte line (2 calls), one MULTICALL entry, one ring submission.
    assert_eq!(r.count(Call::ConsoleWriteRegs, Status::Success), 4);
    assert_eq!(r.count(Call::ConsoleWriteRegs, Status::InvalidParameter), 1);
    // Refused in the deferred queue (no deferral class).
    assert_eq!(r.count(Call::ConsoleWriteRegs, Status::NotAllowedHere), 1);
    assert_eq!(r.count(Call::ConsoleWrite, Status::CrossesPage), 1);
    assert_eq!(r.count(Call::ConsoleWrite, Status::InvalidParameter), 1);
    assert_eq!(r.count(Call::ConsoleWrite, Status::InvalidAddress), 1);
    // The lines printed before NEGOTIATE went out in one CONSOLE_WRITE; after it, every
    // line is one CONSOLE_WRITE, except the three above that came in registers; and one
    // CONSOLE_WRITE of 0 bytes.
    assert_eq!(r.console_bytes, o.console.len() as u64);
    let text = o.console_text();
    let lines: Vec<&str> = text.lines().collect();
    let early = lines
        .iter()
        .position(|l| l.starts_with("ok  base: NEGOTIATE("))
        .expect("the NEGOTIATE line") as u64;
    let expected = 1 + (lines.len() as u64 - early - 3) + 1;
    assert_eq!(
        r.count(Call::ConsoleWrite, Status::Success),
        expected,
        "{}",
        dump(o)
    );
}

#[test]
fn time_clocks_page_and_timer_interrupt() {
    let Some(o) = demo(1, "time_clocks_page_and_timer_interrupt") else {
        return;
    };
    assert_clean(o);
    ok_line(o, "time: TIME_MONOTONIC = ");
    ok_line(o, "time: TIME_WALLCLOCK = ");
    ok_line(o, "time: TIME_SET_PAGE at ");
    let later = ok_line(o, "time: a few ms later the page says sequence");
    // With a guest TSC the host can read (this project's KVM), the page interpolates: the
    // demo checks it against TIME_MONOTONIC brackets at CPL0 and for continuity at CPL3.
    assert_eq!(
        later.ends_with("TSC interpolation valid"),
        !TSC_UNAVAILABLE.load(Ordering::Relaxed),
        "the page sets TSC_VALID exactly when the host can read the guest's TSC: {later}"
    );
    if later.ends_with("TSC interpolation valid") {
        let bracket = ok_line(o, "time: page time (TSC interpolated, CPL0) between two");
        let outside = number_after(bracket, "at most ");
        assert!(outside <= 100_000, "TIME-013's resolution_ns: {bracket}");
        let cpl3 = ok_line(o, "time: page time at CPL3: ");
        assert!(cpl3.contains("never back (0 ns)"), "{cpl3}");
        let jump = number_after(cpl3, "largest step at an update ");
        assert!(jump <= 10_000, "{cpl3}");
        println!("{bracket}\n{cpl3}");
    }
    let timer = ok_line(o, "time: TIME_SET_TIMER(now + 2.000 ms): TIMER event");
    assert!(timer.contains("taken as 1 interrupt"), "{timer}");
    ok_line(
        o,
        "time: a timer cancelled with TIME_SET_TIMER(0) does not fire",
    );
    let r = &o.report;
    // One timer fired; the cancelled one never did. (A busy host may be too slow to cancel
    // before the deadline: the guest then tries again and that timer may have fired.)
    let cancel = ok_line(
        o,
        "time: a timer cancelled with TIME_SET_TIMER(0) does not fire",
    );
    let attempts: u64 = cancel
        .rsplit_once(", attempt ")
        .map_or(1, |(_, n)| n.parse().expect("an attempt number"));
    let timers = guest_totals(o)[0].timers;
    assert!((1..=attempts).contains(&timers), "{}", dump(o));
    assert_eq!(r.timers_fired, timers, "{}", dump(o));
    assert_eq!(
        r.count(Call::TimeSetTimer, Status::Success),
        1 + 2 * attempts
    );
    assert_eq!(r.count(Call::TimeSetPage, Status::Success), 1);
    assert_eq!(r.count(Call::TimeSetPage, Status::AccessDenied), 1);
    assert_eq!(r.count(Call::TimeSetPage, Status::Misaligned), 1);
    // The guest saw the sequence move: the host refreshed the page at least twice.
    assert!(r.time_page_updates >= 2, "{}", r.time_page_updates);
    assert!(r.count(Call::TimeMonotonic, Status::Success) >= 6);
    assert_eq!(r.count(Call::TimeWallclock, Status::Success), 1);
    assert_eq!(r.count(Call::TimeFrequency, Status::Success), 1);
}

#[test]
fn events_each_burst_costs_one_interrupt() {
    let Some(o) = demo(1, "events_each_burst_costs_one_interrupt") else {
        return;
    };
    assert_clean(o);
    ok_line(o, "events: EVENTS_SET_QUEUE: vCPU 0's queue page at ");
    ok_line(
        o,
        "events: EVENTS_SEND(vCPU 0, 0xfeed0001): USER event from vCPU 0",
    );
    ok_line(o, "events: 8 EVENTS_SENDs with interrupts off: 8 queued, interrupt_pending = 1; 8 drained by 1 interrupt");
    ok_line(
        o,
        "events: 8 EVENTS_SENDs while USER is masked: 8 events queued, interrupt_pending = 0",
    );
    ok_line(
        o,
        "events: EVENTS_SET_MASK(0): 8 events drained by 1 interrupt (coalesced)",
    );
    let r = &o.report;
    // TIMER, the single USER, two bursts of 8 USER, the KICK to itself: 19 events,
    // 5 interrupts (each burst coalesced into one). A host that raised the vector for
    // every event would count more here even where the guest took one.
    let taken = guest_totals(o);
    let extra = taken[0].timers - 1; // timers that fired too early to cancel
    let expected = Taken {
        interrupts: 5 + extra,
        events: 19 + extra,
        timers: 1 + extra,
    };
    assert_eq!(taken, [expected], "{}", dump(o));
    assert_eq!(r.events_posted, expected.events);
    assert_eq!(r.interrupts_raised, expected.interrupts);
    assert_eq!(r.events_dropped, 0);
    assert_eq!(r.events_latched, 0);
    assert_eq!(r.count(Call::EventsSend, Status::Success), 17);
    assert_eq!(r.count(Call::EventsSend, Status::InvalidParameter), 1);
    // Two direct, one in the MULTICALL, one in the deferred queue.
    assert_eq!(r.count(Call::EventsSetMask, Status::Success), 4);
    // Nor does it set a reserved bit (GEN-002).
    assert_eq!(r.count(Call::EventsSetMask, Status::InvalidParameter), 0);
    assert_eq!(r.count(Call::EventsSetQueue, Status::Success), 1);
    assert_eq!(r.count(Call::EventsSetQueue, Status::InvalidParameter), 1);
}

#[test]
fn memory_share_balloon_pte_and_flushes() {
    let Some(o) = demo(1, "memory_share_balloon_pte_and_flushes") else {
        return;
    };
    assert_clean(o);
    ok_line(o, "memory: MEM_SHARE of 4 pages at ");
    ok_line(o, "memory: MEM_BALLOON_RELEASE of 4 pages");
    ok_line(
        o,
        "memory: MEM_BALLOON_RECLAIM -> 4 reclaimed, and they came back zeroed",
    );
    ok_line(o, "memory: MEM_UPDATE_PTE linked the guest's PDPT/PD/PT");
    ok_line(o, "memory: PTE 0 -> page ");
    ok_line(o, "memory: window unlinked again");
    let r = &o.report;
    // Sharing: 4 pages shared, the last 2 unshared.
    assert_eq!(r.shared_ranges.len(), 1, "{:?}", r.shared_ranges);
    assert_eq!(r.shared_ranges[0].1, 2);
    assert_eq!(r.count(Call::MemShare, Status::AccessDenied), 1);
    assert_eq!(r.count(Call::MemShare, Status::InvalidAddress), 1);
    // Balloon: all 4 back, and the refused list (with a host-owned page) changed nothing.
    assert_eq!(
        (
            r.balloon_released,
            r.balloon_reclaimed,
            r.balloon_outstanding
        ),
        (4, 4, 0)
    );
    assert_eq!(r.count(Call::MemBalloonReclaim, Status::InvalidState), 1);
    assert_eq!(r.count(Call::MemBalloonRelease, Status::AccessDenied), 1);
    // PTE writes: link (L4), three remaps of PTE 0, four deferred, unlink PTE 0 and L4.
    let levels: Vec<u8> = r.pte_writes.iter().map(|w| w.level).collect();
    assert_eq!(levels, [4, 1, 1, 1, 1, 1, 1, 1, 1, 4], "{:?}", r.pte_writes);
    assert_eq!(r.pte_write_count, 10);
    let (link, unlink) = (r.pte_writes[0], r.pte_writes[9]);
    assert_eq!(link.gpa, unlink.gpa, "the same PML4 slot");
    assert_eq!(link.gpa % 4096, 8, "PML4 slot 1");
    assert_ne!(link.value, 0);
    assert_eq!(unlink.value, 0);
    assert_eq!(
        r.tlb_flushes,
        [
            TlbFlush::Local(0),
            TlbFlush::Range(VA_WINDOW, 1),
            TlbFlush::All,
            TlbFlush::Range(VA_WINDOW + 4096, 2),
            TlbFlush::All,
        ]
    );
    assert_eq!(r.count(Call::MemUpdatePte, Status::Misaligned), 1);
    assert_eq!(r.count(Call::MemUpdatePte, Status::InvalidParameter), 1);
    // One direct, one in the STOP_ON_ERROR MULTICALL.
    assert_eq!(r.count(Call::MemFlushTlbRange, Status::InvalidParameter), 2);
}

#[test]
fn vcpu_info_yield_halt_kick_on_one_vcpu() {
    let Some(o) = demo(1, "vcpu_info_yield_halt_kick_on_one_vcpu") else {
        return;
    };
    assert_clean(o);
    ok_line(o, "vcpu: VCPU_INFO: this is vCPU 0 of 1");
    ok_line(o, "vcpu: VCPU_HALT(1 ms) with nothing pending -> TIMEOUT");
    ok_line(
        o,
        "vcpu: VCPU_KICK(0) to itself: VCPU_HALT returns EVENT at once",
    );
    ok_line(o, "vcpu: VCPU_STOP on vCPU 0 -> INVALID_STATE");
    line(o, "    (SMP demo skipped: 1 vCPU");
    let r = &o.report;
    assert_eq!(r.kicks, 1);
    // Time page (3 ms, maybe more), cancelled timer, VCPU_HALT(1 ms).
    assert!(r.halt_timeouts >= 3, "{}", r.halt_timeouts);
    // The kick to itself (the timer's event may arrive before the guest halts for it).
    assert!(r.halt_events >= 1, "{}", r.halt_events);
    assert_eq!(r.halts, r.halt_events + r.halt_timeouts);
    assert!(r.vcpu_starts.is_empty());
    assert!(r.vcpu_stops.is_empty());
    assert_eq!(r.count(Call::VcpuStop, Status::InvalidState), 1);
    assert_eq!(r.count(Call::VcpuStart, Status::InvalidParameter), 1);
    assert_eq!(r.count(Call::VcpuStart, Status::InvalidState), 1);
    // One direct, one in the ring.
    assert_eq!(r.count(Call::VcpuYield, Status::Success), 2);
}

#[test]
fn smp_start_kick_halt_stop_restart_on_two_vcpus() {
    let Some(o) = demo(2, "smp_start_kick_halt_stop_restart_on_two_vcpus") else {
        return;
    };
    assert_clean(o);
    ok_line(o, "vcpu: VCPU_INFO: this is vCPU 0 of 2");
    ok_line(
        o,
        "vcpu1: started by VCPU_START: VCPU_INFO says vCPU 1, EVENTS_SET_QUEUE -> SUCCESS",
    );
    ok_line(o, "vcpu: vCPU 0 woke with a USER event from vCPU 1 (hello)");
    ok_line(
        o,
        "vcpu1: sent hello to vCPU 0, halted, woke with a KICK from vCPU 0",
    );
    ok_line(o, "vcpu: vCPU 1 said goodbye before VCPU_STOP");
    // Restarted with fresh pvabi state: its queue page was released by VCPU_STOP.
    ok_line(
        o,
        "vcpu1: started again: VCPU_INFO says vCPU 1, EVENTS_SET_QUEUE -> SUCCESS",
    );
    ok_line(o, "vcpu: VCPU_START(1) again after VCPU_STOP");
    let r = &o.report;
    assert_eq!(r.vcpu_starts.len(), 2, "{:?}", r.vcpu_starts);
    assert!(r.vcpu_starts.iter().all(|(v, s)| *v == 1 && s.cr3 == 0));
    assert_eq!(r.vcpu_starts[0].1.rip, r.vcpu_starts[1].1.rip);
    // The second stop may come after vCPU 0 shut the VM down.
    assert!(
        matches!(r.vcpu_stops.as_slice(), [1] | [1, 1]),
        "{:?}",
        r.vcpu_stops
    );
    // Self, 0 -> 1, 1 -> 0.
    assert_eq!(r.kicks, 3);
    assert_eq!(r.count(Call::EventsSetQueue, Status::Success), 3);
    // What the guests took is what the host raised and posted.
    let taken = guest_totals(o);
    assert_eq!(taken.len(), 2, "{}", dump(o));
    let interrupts: u64 = taken.iter().map(|t| t.interrupts).sum();
    let events: u64 = taken.iter().map(|t| t.events).sum();
    assert_eq!(r.interrupts_raised, interrupts, "{}", dump(o));
    assert_eq!(r.events_posted, events, "{}", dump(o));
    assert_eq!(r.timers_fired, taken[0].timers, "{}", dump(o));
    // vCPU 0: the 19 of the one-vCPU run, hello, bye and vCPU 1's kick; vCPU 1: one kick.
    assert_eq!(taken[0].events, 21 + taken[0].timers, "{}", dump(o));
    let one_kick = Taken {
        interrupts: 1,
        events: 1,
        timers: 0,
    };
    assert_eq!(taken[1], one_kick, "{}", dump(o));
    assert_eq!(o.exits.doorbell, direct_calls(r));
}

#[test]
fn batch_multicall_deferred_queue_and_ring() {
    let Some(o) = demo(1, "batch_multicall_deferred_queue_and_ring") else {
        return;
    };
    assert_clean(o);
    ok_line(o, "batch: MULTICALL of 6 entries: 6 processed in 1 exit");
    ok_line(
        o,
        "batch: entry 3 (NEGOTIATE, not batchable) -> NOT_ALLOWED_HERE",
    );
    ok_line(
        o,
        "batch: MULTICALL with STOP_ON_ERROR: stopped after entry 1 (INVALID_PARAMETER), next = 2",
    );
    ok_line(
        o,
        "batch: MEM_FLUSH_TLB_RANGE is a sync point: the queue drained first",
    );
    ok_line(o, "batch: DEFER_FLUSH: 4 entries run, 1 failed (entry 5");
    ok_line(
        o,
        "batch: RING_SETUP (doorbell mode), 4 submissions without an exit, RING_ENTER consumed 4",
    );
    ok_line(o, "batch: 2 more submissions, then a write of vCPU 0 to the ring-notify port 0x5654: 2 completions");
    let r = &o.report;
    // MULTICALL: 6 entries, then 2 of 3 (STOP_ON_ERROR), in two exits.
    assert_eq!(r.count(Call::Multicall, Status::Success), 2);
    assert_eq!(r.multicall_entries, 8);
    assert_eq!(r.multicall_preemptions, 0);
    // Deferred: 2 drained at the sync point, 4 by DEFER_FLUSH (one refused).
    assert_eq!(r.deferred_drained, 6);
    assert_eq!(r.deferred_failed, 1);
    assert_eq!(r.count(Call::DeferFlush, Status::Success), 1);
    assert_eq!(r.count(Call::DeferSetQueue, Status::Success), 2);
    // Ring: 4 by RING_ENTER, 2 by the notify port; NEGOTIATE refused.
    assert_eq!(r.ring_submissions, 6);
    assert_eq!(r.ring_failed, 1);
    assert_eq!(r.ring_notifies, 1);
    // The write of vCPU 0's index is served inside the kernel (an ioeventfd and the
    // host's worker thread), not by an exit to the VMM.
    assert_eq!(o.exits.ring_notify_kernel, 1, "{:?}", o.exits);
    assert_eq!(o.exits.ring_notify, 0, "{:?}", o.exits);
    assert_eq!(r.count(Call::RingEnter, Status::Success), 1);
    assert_eq!(r.count(Call::RingSetup, Status::Success), 1);
    assert_eq!(r.count(Call::RingSetup, Status::AccessDenied), 1);
    // Batched calls ran without their own exits.
    assert_eq!(o.exits.doorbell, direct_calls(r));
    assert!(r.count(Call::TimeMonotonic, Status::Success) > o.exits.doorbell / 100);
}

#[test]
fn crash_report_ends_the_vm_with_the_message() {
    if !kvm_or_skip("crash_report_ends_the_vm_with_the_message") {
        return;
    }
    let o = boot(1, SCENARIO_CRASH);
    assert_eq!(o.end, VmEnd::Crash(CRASH_MESSAGE.into()), "{}", dump(&o));
    assert_eq!(o.report.end, Some(End::Crash(CRASH_MESSAGE.into())));
    assert_eq!(o.report.count(Call::SystemCrash, Status::Success), 1);
    line(&o, "demo: test scenario 1: SYSTEM_CRASH");
}

#[test]
fn reboot_and_exit_code_end_the_vm() {
    if !kvm_or_skip("reboot_and_exit_code_end_the_vm") {
        return;
    }
    let o = boot(1, SCENARIO_REBOOT);
    assert_eq!(o.end, VmEnd::Reboot, "{}", dump(&o));
    assert_eq!(o.report.end, Some(End::Reboot));
    let o = boot(1, SCENARIO_EXIT_CODE);
    assert_eq!(o.end, VmEnd::Shutdown(7), "{}", dump(&o));
    assert_eq!(o.report.end, Some(End::Shutdown(7)));
}

/// Devices added with `run_with` serve every boot: after each reset the new boot's bus gets
/// them again (here the demo's scenario port, so every boot reboots again, up to the limit;
/// a boot without it would run the demo to a clean shutdown).
#[test]
fn devices_are_added_again_after_a_reset() {
    if !kvm_or_skip("devices_are_added_again_after_a_reset") {
        return;
    }
    let mut boots = Vec::new();
    let host = HostConfig {
        on_reboot: pvabi_host::dispatch::OnReboot::Reset { limit: 2 },
        ..HostConfig::default()
    };
    let o = boot_with(1, SCENARIO_REBOOT, host, |_, d| boots.push(d.clone()));
    assert_eq!(o.end, VmEnd::Reboot, "{}", dump(&o));
    assert_eq!(boots.len(), 3, "one call per boot");
    assert!(
        !Arc::ptr_eq(&boots[0], &boots[1]) && !Arc::ptr_eq(&boots[1], &boots[2]),
        "each boot has its own dispatcher"
    );
    let said = o
        .console_text()
        .matches("demo: test scenario 2: SYSTEM_REBOOT")
        .count();
    assert_eq!(said, 3, "{}", dump(&o));
}

#[test]
fn guest_exception_becomes_a_crash_report() {
    if !kvm_or_skip("guest_exception_becomes_a_crash_report") {
        return;
    }
    let o = boot(1, SCENARIO_EXCEPTION);
    match &o.end {
        VmEnd::Crash(message) => assert!(
            message.starts_with("demo guest: CPU exception 13 at rip 0x"),
            "{message}"
        ),
        other => panic!("expected a crash report, got {other}\n{}", dump(&o)),
    }
}

#[test]
fn a_host_missing_a_call_fails_the_demo() {
    if !kvm_or_skip("a_host_missing_a_call_fails_the_demo") {
        return;
    }
    let host = HostConfig {
        disabled_calls: vec![Call::MemFlushTlbAll],
        ..HostConfig::default()
    };
    let o = boot_with(1, 0, host, |_, _| {});
    assert_eq!(o.end, VmEnd::Shutdown(1), "{}", dump(&o));
    let fail = line(&o, "FAIL: ");
    assert!(fail.contains("MEM_FLUSH_TLB_ALL"), "{fail}");
    line(&o, "demo: FAILED after ");
}

/// Answers TIME_MONOTONIC with a clock that runs backwards: a device on the doorbell port
/// in front of the pvabi ports, that changes only that call's answer.
struct BackwardsClock {
    dispatcher: Arc<KvmDispatcher>,
    next: std::sync::Mutex<u64>,
}

impl PortDevice for BackwardsClock {
    fn write(&self, access: &PortAccess, data: &[u8], regs: &mut CallRegs) -> Option<Outcome> {
        let code = regs.rax;
        let outcome = self
            .dispatcher
            .port_out(access.caller(), access.port, data, regs)?;
        if code == u64::from(Call::TimeMonotonic.code()) && regs.rax == 0 {
            let mut t = self.next.lock().unwrap();
            *t -= 1_000_000;
            regs.rdi = *t;
        }
        Some(outcome)
    }
}

#[test]
fn a_host_whose_clock_runs_backwards_fails_the_demo() {
    if !kvm_or_skip("a_host_whose_clock_runs_backwards_fails_the_demo") {
        return;
    }
    let o = boot_with(1, 0, HostConfig::default(), |bus, dispatcher| {
        let port = dispatcher.config().doorbell_port;
        let clock = BackwardsClock {
            dispatcher: dispatcher.clone(),
            next: std::sync::Mutex::new(1 << 40),
        };
        bus.attach(port..=port, Arc::new(clock));
    });
    assert_eq!(o.end, VmEnd::Shutdown(1), "{}", dump(&o));
    assert!(line(&o, "FAIL: ").starts_with("FAIL: time: TIME_MONOTONIC = "));
}

#[test]
fn demo_passes_on_a_strict_host_that_preempts_multicalls() {
    if !kvm_or_skip("demo_passes_on_a_strict_host_that_preempts_multicalls") {
        return;
    }
    // Strict: result registers the guest must not read are poisoned. Preempting: at most
    // 2 MULTICALL entries per exit, so the guest must resume with the index it is given.
    let host = HostConfig {
        strict: true,
        max_multicall: 2,
        ..HostConfig::default()
    };
    let o = boot_with(1, 0, host, |_, _| {});
    assert_clean(&o);
    ok_line(
        &o,
        "batch: MULTICALL of 6 entries: 6 processed in 3 exits (the host preempted it)",
    );
    let r = &o.report;
    // 6 entries in 3 issues (2 preempted), then 2 of 3 with STOP_ON_ERROR in one.
    assert_eq!(r.multicall_preemptions, 2);
    assert_eq!(r.count(Call::Multicall, Status::Incomplete), 2);
    assert_eq!(r.multicall_entries, 8);
}

#[test]
fn demo_negotiates_1_0_on_a_host_acting_as_1_0() {
    if !kvm_or_skip("demo_negotiates_1_0_on_a_host_acting_as_1_0") {
        return;
    }
    let v1_0 = pvabi_abi::version::V1_0;
    let o = boot_with(1, 0, HostConfig::acting_as(v1_0), |_, _| {});
    assert_clean(&o);
    assert_eq!(o.report.negotiated, Some((v1_0, V1_0_FEATURES)));
    ok_line(&o, "base: NEGOTIATE(1.0 or later, required 0x1ff");
    ok_line(&o, "discovery: host serves versions 1.0 to 1.0");
    // Calls newer than 1.0 are absent on this host.
    let newer = calls::all().filter(|d| d.since > v1_0).count();
    let probe = ok_line(&o, "base: PROBE_CALL of every call: ");
    assert!(
        probe.contains(&format!("{newer} ABSENT (newer than 1.0)")),
        "{probe}"
    );
}

/// The decimal number right after `prefix` in `line`.
fn number_after(line: &str, prefix: &str) -> u64 {
    let rest = line
        .split_once(prefix)
        .unwrap_or_else(|| panic!("no {prefix:?} in {line:?}"))
        .1;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("no number after {prefix:?} in {line:?}"))
}
