//! Conformance test `timer`: TIME_FREQUENCY and TIME_MONOTONIC against the time-stamp
//! counter, the one-shot timer (replace, disarm, never early, one event with the vCPU and the
//! deadline, waking a halted vCPU, promptness), and the steal-time page (its first write, its
//! sequence lock, no decrease, waits not counted, exits counted); with two vCPUs, a vCPU that
//! stops loses its timer and its steal-time page. vCPU 0 reports; vCPU 1 writes what it saw
//! into a shared record. Waits sleep in VCPU_HALT.
#![no_std]
#![no_main]

mod call;
mod channel;
mod common;

use core::sync::atomic::{AtomicU64, Ordering};

use pvabi_guest::abi::events::EventKind;
use pvabi_guest::abi::features::Features;
use pvabi_guest::abi::vcpu::WakeReason;
use pvabi_guest::discovery::discover;
use pvabi_guest::{Call, PortTransport, Status};
use pvabi_guest_rt::{ap_launch, halt_forever, BootInfo};

use call::raw;
use channel::{check, should, skip};
use common::{fill, now_ns, rd32, rd64, wait_ms, wr64, Pages, SUCCESS};

const TEST: &str = "timer";
const VECTOR: u64 = 0x40;
const PATIENCE_MS: u64 = 5000;
const TIMER: u32 = EventKind::Timer as u32;
const EVENT: u64 = WakeReason::Event as u64;
const TIMEOUT: u64 = WakeReason::Timeout as u64;
const INVALID_STATE: u64 = Status::InvalidState as u64;
const MS: u64 = 1_000_000;

/// Page 0: vCPU 0's event queue; 1: vCPU 0's steal-time page; 2: vCPU 1's queue; 3: vCPU 1's
/// steal-time page; 4: the VcpuStartState block; 5: the PFN lists of the race (vCPU 0's at
/// 0, vCPU 1's at 2048); 6: the page both vCPUs release at once.
static PAGES: Pages<7> = Pages::new();
/// The race: the round vCPU 0 has started (0: none; u64::MAX: stop), and vCPU 1's status of
/// each round (round << 32 | status).
static ROUND: AtomicU64 = AtomicU64::new(0);
static RACED: AtomicU64 = AtomicU64::new(0);
/// Rounds of the race.
const ROUNDS: u64 = 16;

/// What vCPU 1 saw, by slot.
static SEEN: [AtomicU64; 8] = [const { AtomicU64::new(u64::MAX) }; 8];
const ARMED: usize = 0;
const STEAL_FIRST: usize = 1;
const AGAIN_STEAL: usize = 2;
const AGAIN_PREEMPTIONS: usize = 3;
const AGAIN_TAIL: usize = 4;
const AGAIN_HALT: usize = 5;
const AGAIN_DONE: usize = 6;

fn seen(slot: usize) -> u64 {
    SEEN[slot].load(Ordering::Acquire)
}

fn record(slot: usize, value: u64) {
    SEEN[slot].store(value, Ordering::Release);
}

fn rdtsc() -> u64 {
    // SAFETY: rdtsc reads the time-stamp counter; it has no other effect.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// The queue's tail (how many events the host has posted to it).
fn tail(q: u64) -> u32 {
    rd32(q + 4)
}

/// Consumes every event of the queue at `q` (head to the tail, interrupt re-armed), so that
/// no event is pending and VCPU_HALT sleeps again.
fn consume(q: u64) {
    common::wr32(q, tail(q));
    common::wr32(q + 12, 0);
    common::fence();
}

/// Event `i` of the queue at `q`: `(kind, source, data)`.
fn event(q: u64, i: u32) -> (u32, u32, u64) {
    let e = q + 64 + u64::from(i % 128) * 16;
    (rd32(e), rd32(e + 4), rd64(e + 8))
}

/// A steal-time page snapshot under its sequence lock: `(sequence, steal_ns, preemptions,
/// flags | reserved words or'ed together)`, or `None` if it stayed odd or changing.
fn steal(page: u64) -> Option<(u32, u64, u64, u64)> {
    for _ in 0..1000 {
        let s1 = rd32(page);
        if s1 & 1 == 1 {
            continue;
        }
        common::fence();
        let other =
            u64::from(rd32(page + 4)) | (0..5).fold(0, |acc, k| acc | rd64(page + 24 + 8 * k));
        let (ns, pre) = (rd64(page + 8), rd64(page + 16));
        common::fence();
        if rd32(page) == s1 {
            return Some((s1, ns, pre, other));
        }
    }
    None
}

/// VCPU_HALT: the reason, or the status in the high half if it failed.
fn halt(t: &PortTransport, ns: u64) -> u64 {
    let r = raw(t, Call::VcpuHalt, &[ns]);
    if r.status == SUCCESS {
        r.results[0]
    } else {
        r.status << 32
    }
}

fn main(boot: &BootInfo) -> ! {
    let tsc_at_start = rdtsc();
    channel::begin(TEST);
    let Some(found) = discover() else {
        halt_forever()
    };
    let port = found.info.doorbell_port;
    channel::set_doorbell(port);
    let t = PortTransport::new(port);
    let required = Features::CONSOLE
        | Features::SYSTEM
        | Features::TIME
        | Features::EVENTS
        | Features::VCPU
        | Features::MEMORY;
    let n = raw(
        &t,
        Call::Negotiate,
        &[0x0001_0000, required.bits(), Features::STEAL_TIME.bits()],
    );
    if n.status != SUCCESS {
        halt_forever()
    }
    channel::go_live();
    let granted = Features::from_bits_retain(n.results[1]);

    // TIME_FREQUENCY, and TIME_MONOTONIC against the counter it describes.
    let f = raw(&t, Call::TimeFrequency, &[]);
    let (hz, resolution) = (f.results[0], f.results[1]);
    let (m0, c0) = (now_ns(&t), rdtsc());
    halt(&t, 20 * MS);
    let (c1, m1) = (rdtsc(), now_ns(&t));
    // The counter's rate over the wait, in Hz, against the one reported (within 5 %). (64-bit
    // arithmetic only: ticks times 10^6 over microseconds.)
    let measured = (c1 - c0).saturating_mul(1_000_000) / ((m1 - m0) / 1000).max(1);
    check(
        "timer.frequency_reports_the_tsc_rate_and_a_resolution",
        &["PVABI-TIME-006"],
        f.status == SUCCESS && resolution != 0 && (hz == 0 || measured.abs_diff(hz) <= hz / 20),
        measured,
        hz,
    );
    // Nanoseconds since the VM first started: at least the counter's time since this guest's
    // first instruction, and advancing with it.
    let since_start = if hz == 0 {
        0
    } else {
        (c1 - tsc_at_start).saturating_mul(1000) / (hz / 1_000_000).max(1)
    };
    check(
        "timer.monotonic_counts_nanoseconds_since_the_vm_started",
        &["PVABI-TIME-003"],
        m1 > m0 && m1 - m0 >= 20 * MS && m1 >= since_start - since_start / 20,
        m1,
        since_start,
    );

    // The timer: arming replaces, 0 disarms, the event comes once, not early, to this vCPU
    // with the deadline, and wakes HALT.
    let q = PAGES.page(0);
    raw(&t, Call::EventsSetQueue, &[q, VECTOR]);
    let start = now_ns(&t);
    raw(&t, Call::TimeSetTimer, &[start + 100 * MS]);
    let deadline = now_ns(&t) + 15 * MS;
    raw(&t, Call::TimeSetTimer, &[deadline]);
    // Until just before the deadline, no event.
    let mut early = 0;
    while now_ns(&t) + 2 * MS < deadline {
        if tail(q) != 0 {
            early = tail(q);
            break;
        }
        halt(&t, MS);
    }
    let mut woke = 0;
    let mut fired_at = 0;
    for _ in 0..4 {
        woke = halt(&t, 1_000 * MS);
        fired_at = now_ns(&t);
        if tail(q) != 0 {
            break;
        }
    }
    check(
        "timer.never_fires_before_its_deadline",
        &["PVABI-TIME-017"],
        early == 0 && tail(q) != 0 && fired_at >= deadline,
        fired_at,
        deadline,
    );
    // Past the first deadline too: the replaced one must not fire.
    wait_ms(&t, PATIENCE_MS, || now_ns(&t) > start + 120 * MS);
    let (kind, source, data) = event(q, 0);
    check(
        "timer.one_timer_event_with_the_vcpu_and_the_deadline",
        &["PVABI-TIME-019", "PVABI-TIME-016"],
        tail(q) == 1 && kind == TIMER && source == 0 && data == deadline,
        u64::from(tail(q)) << 48 | u64::from(kind) << 32 | data,
        1 << 48 | u64::from(TIMER) << 32 | deadline,
    );
    check(
        "timer.expiry_wakes_a_halted_vcpu",
        &["PVABI-TIME-019"],
        woke == EVENT,
        woke,
        EVENT,
    );
    consume(q);
    // Disarmed with 0: nothing comes. A trial counts only if the disarm returned before the
    // deadline (a vCPU thread the host preempts between the two calls lets the timer expire
    // first, legitimately).
    let (mut s, mut posted, mut valid) = (SUCCESS, 0, false);
    for _ in 0..5 {
        let before = tail(q);
        let d = now_ns(&t) + 20 * MS;
        raw(&t, Call::TimeSetTimer, &[d]);
        s = raw(&t, Call::TimeSetTimer, &[0]).status;
        if now_ns(&t) >= d {
            continue;
        }
        valid = true;
        wait_ms(&t, PATIENCE_MS, || now_ns(&t) > d + 20 * MS);
        posted = tail(q) - before;
        break;
    }
    check(
        "timer.deadline_0_disarms_without_an_event",
        &["PVABI-TIME-016"],
        s == SUCCESS && valid && posted == 0,
        u64::from(valid) << 32 | u64::from(posted),
        1 << 32,
    );
    // Promptness (SHOULD): of five timers, one fires within resolution_ns of its deadline
    // (one, not all: a loaded host delays a wake-up now and then, and the rule is a SHOULD).
    let mut best = u64::MAX;
    for k in 0..5 {
        let before = tail(q);
        let d = now_ns(&t) + 2 * MS + k * 100_000;
        raw(&t, Call::TimeSetTimer, &[d]);
        for _ in 0..4 {
            halt(&t, 1_000 * MS);
            if tail(q) != before {
                break;
            }
        }
        if tail(q) != before {
            best = best.min(now_ns(&t).saturating_sub(d));
        }
        consume(q);
    }
    should(
        "timer.fires_within_the_resolution",
        &["PVABI-TIME-018"],
        best < resolution,
        best,
        resolution,
    );

    // The steal-time page.
    let sp = PAGES.page(1);
    if granted.contains(Features::STEAL_TIME) {
        fill(sp, 4096, 0xff);
        let t0 = now_ns(&t);
        let s = raw(&t, Call::TimeSetStealPage, &[sp]).status;
        let t1 = now_ns(&t);
        let first = steal(sp);
        check(
            "timer.steal_page_starts_consistent_at_zero",
            &["PVABI-TIME-021"],
            s == SUCCESS
                && first.is_some_and(|(_, ns, pre, other)| other == 0 && pre <= 1 && ns <= t1 - t0),
            first.map_or(u64::MAX, |(_, ns, pre, _)| ns << 16 | pre),
            0,
        );
        // Every call is an exit: each one counted before the next (SHOULD), never a decrease,
        // and every snapshot even.
        let mut prev = first.unwrap_or_default();
        let mut ok = true;
        let mut counted = true;
        for _ in 0..32 {
            // Not VCPU_YIELD: its wait is the guest's, and not counted (TIME-023).
            raw(&t, Call::GetSpecVersion, &[]);
            match steal(sp) {
                Some(now) => {
                    ok &= now.1 >= prev.1 && now.2 >= prev.2 && now.0 >= prev.0;
                    counted &= now.2 > prev.2;
                    prev = now;
                }
                None => ok = false,
            }
        }
        check(
            "timer.steal_page_never_decreases_under_its_sequence_lock",
            &["PVABI-TIME-022", "PVABI-TIME-023"],
            ok,
            prev.2,
            32,
        );
        should(
            "timer.steal_page_counts_each_exit_before_the_vcpu_runs_again",
            &["PVABI-TIME-024"],
            counted,
            prev.2,
            32,
        );
        // A wait the guest asked for is not stolen.
        let before = steal(sp).unwrap_or_default();
        let h0 = now_ns(&t);
        halt(&t, 20 * MS);
        let h1 = now_ns(&t);
        let after = steal(sp).unwrap_or_default();
        check(
            "timer.a_halt_is_not_counted_as_stolen",
            &["PVABI-TIME-023"],
            after.1 - before.1 < h1 - h0,
            after.1 - before.1,
            h1 - h0,
        );
    } else {
        for name in [
            "timer.steal_page_starts_consistent_at_zero",
            "timer.steal_page_never_decreases_under_its_sequence_lock",
            "timer.a_halt_is_not_counted_as_stolen",
        ] {
            skip(name, &["PVABI-TIME-021"], "STEAL_TIME not offered");
        }
    }

    // A vCPU that stops loses its timer and its steal-time page.
    const STOP: [&str; 2] = [
        "timer.a_stopped_vcpus_timer_is_disarmed",
        "timer.a_stopped_vcpus_steal_page_is_unregistered",
    ];
    if boot.vcpu_count < 2 {
        skip(
            STOP[0],
            &["PVABI-TIME-020"],
            "one vCPU: run the test with two",
        );
        skip(
            STOP[1],
            &["PVABI-TIME-033"],
            "one vCPU: run the test with two",
        );
        channel::end(TEST)
    }
    let steal_on = granted.contains(Features::STEAL_TIME);
    let s = start_vcpu1(&t, 1 | u64::from(steal_on) << 1, port);
    // Once vCPU 1 has stopped, start it again.
    let stopped = wait_ms(&t, PATIENCE_MS, || {
        seen(ARMED) != u64::MAX && raw(&t, Call::VcpuKick, &[1]).status == INVALID_STATE
    });
    let again = start_vcpu1(&t, 2 | u64::from(steal_on) << 1, port);
    let done = wait_ms(&t, PATIENCE_MS, || seen(AGAIN_DONE) == 1);
    check(
        STOP[0],
        &["PVABI-TIME-020", "PVABI-VCPU-016"],
        s == SUCCESS
            && stopped
            && again == SUCCESS
            && done
            && seen(AGAIN_TAIL) == 0
            && seen(AGAIN_HALT) == TIMEOUT,
        seen(AGAIN_TAIL) << 32 | seen(AGAIN_HALT),
        TIMEOUT,
    );
    race(&t, port);
    if steal_on {
        check(
            STOP[1],
            &["PVABI-TIME-033", "PVABI-VCPU-016"],
            done && seen(STEAL_FIRST) == SUCCESS
                && seen(AGAIN_STEAL) == SUCCESS
                && seen(AGAIN_PREEMPTIONS) <= 1,
            seen(AGAIN_STEAL) << 32 | seen(AGAIN_PREEMPTIONS),
            SUCCESS << 32,
        );
    } else {
        skip(STOP[1], &["PVABI-TIME-033"], "STEAL_TIME not offered");
    }
    channel::end(TEST)
}

/// PVABI-GEN-006 with calls that conflict: each round, vCPU 0 and vCPU 1 release the same
/// page to the balloon at once. In any order of the two calls one succeeds and the other finds
/// the page released (INVALID_STATE); then vCPU 0 reclaims it.
fn race(t: &PortTransport, port: u16) {
    let target = PAGES.page(6);
    let mine = PAGES.page(5);
    wr64(mine, target / 4096);
    wr64(mine + 2048, target / 4096);
    let started = start_vcpu1(t, 4, port);
    let mut bad = 0;
    let mut last = 0;
    for k in 1..=ROUNDS {
        ROUND.store(k, Ordering::Release);
        let s0 = raw(t, Call::MemBalloonRelease, &[mine, 1]).status;
        let mut s1 = u64::MAX;
        wait_ms(t, PATIENCE_MS, || {
            let r = RACED.load(Ordering::Acquire);
            s1 = if r >> 32 == k {
                r & 0xffff_ffff
            } else {
                u64::MAX
            };
            s1 != u64::MAX
        });
        let one = (s0 == SUCCESS && s1 == INVALID_STATE) || (s1 == SUCCESS && s0 == INVALID_STATE);
        if !one {
            bad += 1;
            last = s0 << 32 | s1;
        }
        raw(t, Call::MemBalloonReclaim, &[mine, 1]);
    }
    ROUND.store(u64::MAX, Ordering::Release);
    check(
        "timer.conflicting_calls_on_two_vcpus_act_in_some_order",
        &["PVABI-GEN-006"],
        started == SUCCESS && bad == 0,
        last,
        SUCCESS << 32 | INVALID_STATE,
    );
}

/// VCPU_START of vCPU 1 running `vcpu1` in `phase`, retried while it is still stopping.
fn start_vcpu1(t: &PortTransport, phase: u64, port: u16) -> u64 {
    let Some(launch) = ap_launch(1, vcpu1, phase | u64::from(port) << 8) else {
        return u64::MAX;
    };
    let b = PAGES.page(4);
    for (k, v) in [launch.rip, launch.rsp, launch.rdi, 0, 0, 0, 0, 0]
        .iter()
        .enumerate()
    {
        wr64(b + 8 * k as u64, *v);
    }
    let mut status = INVALID_STATE;
    wait_ms(t, PATIENCE_MS, || {
        status = raw(t, Call::VcpuStart, &[1, b]).status;
        status != INVALID_STATE
    });
    status
}

/// vCPU 1 (`arg`: bit 0 phase 1, bit 1 register a steal-time page; the doorbell port from
/// bit 8). Phase 1 arms a timer 100 ms ahead and stops; phase 2 waits past that deadline.
fn vcpu1(arg: u64) -> ! {
    let t = PortTransport::new((arg >> 8) as u16);
    let (q1, sp1) = (PAGES.page(2), PAGES.page(3));
    let with_steal = arg & 2 != 0;
    if arg & 4 != 0 {
        // The race: release the page as soon as vCPU 0 starts a round.
        let list = PAGES.page(5) + 2048;
        let mut done = 0;
        loop {
            let k = ROUND.load(Ordering::Acquire);
            if k == u64::MAX {
                break;
            }
            if k > done {
                let s = raw(&t, Call::MemBalloonRelease, &[list, 1]).status;
                RACED.store(k << 32 | s, Ordering::Release);
                done = k;
            }
            core::hint::spin_loop();
        }
    } else if arg & 1 == 1 {
        if with_steal {
            record(STEAL_FIRST, raw(&t, Call::TimeSetStealPage, &[sp1]).status);
            for _ in 0..8 {
                raw(&t, Call::GetSpecVersion, &[]);
            }
        }
        let deadline = now_ns(&t) + 100 * MS;
        raw(&t, Call::TimeSetTimer, &[deadline]);
        record(ARMED, deadline);
    } else {
        let s = if with_steal {
            raw(&t, Call::TimeSetStealPage, &[sp1]).status
        } else {
            SUCCESS
        };
        record(AGAIN_STEAL, s);
        record(
            AGAIN_PREEMPTIONS,
            if with_steal { rd64(sp1 + 16) } else { 0 },
        );
        raw(&t, Call::EventsSetQueue, &[q1, VECTOR]);
        let deadline = seen(ARMED);
        wait_ms(&t, PATIENCE_MS, || now_ns(&t) > deadline + 20 * MS);
        record(AGAIN_TAIL, u64::from(tail(q1)));
        record(AGAIN_HALT, halt(&t, MS));
        record(AGAIN_DONE, 1);
    }
    raw(&t, Call::VcpuStop, &[]);
    halt_forever()
}

pvabi_guest_rt::entry!(main);

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    halt_forever()
}
