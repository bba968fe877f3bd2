//! Time family: clocks, the time page, the one-shot timer.

use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pvabi_abi::calls::Call;
use pvabi_abi::events::{Event, EventKind, EventQueueHeader};
use pvabi_abi::status::Status;
use pvabi_abi::time::TimePage;
use pvabi_abi::vcpu::WakeReason;

use super::{config, H, PAGE1, PAGE2, PAGE3};
use crate::dispatch::HostConfig;

#[test]
fn clocks() {
    let h = H::ready_with(HostConfig {
        tsc_hz: 2_500_000_000,
        timer_resolution_ns: 1234,
        ..config(1)
    });
    let t0 = h.call(0, Call::TimeMonotonic, &[]).1[0];
    thread::sleep(Duration::from_millis(2));
    let t1 = h.call(0, Call::TimeMonotonic, &[]).1[0];
    assert!(t1 >= t0 + 2_000_000, "{t0} {t1}");
    let (s, r) = h.call(0, Call::TimeWallclock, &[]);
    assert_eq!(s, Status::Success);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(r[0].abs_diff(now) <= 2);
    assert!(r[1] < 1_000_000_000);
    assert_eq!(
        h.call(0, Call::TimeFrequency, &[]).1[..2],
        [2_500_000_000, 1234]
    );
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "timed out waiting for {what}"
        );
        thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn time_page_is_written_and_refreshed_under_the_seqlock() {
    let h = H::ready(1);
    h.write(PAGE1, &[0xeeu8; 64]);
    assert_eq!(h.status(0, Call::TimeSetPage, &[PAGE1]), Status::Success);
    let p: TimePage = h.read(PAGE1);
    assert!(
        p.sequence >= 2 && p.sequence.is_multiple_of(2),
        "{}",
        p.sequence
    );
    assert_eq!(
        (p.flags, p.tsc_mul, p.reserved0, p.reserved),
        (0, 0, 0, [0; 2])
    );
    assert!(p.wallclock_nsec < 1_000_000_000);
    let first = p.monotonic_ns;
    wait_for("a refresh", || {
        let q: TimePage = h.read(PAGE1);
        q.sequence.is_multiple_of(2) && q.monotonic_ns > first + 2_000_000
    });
    assert!(h.d.report().time_page_updates >= 2);
    // Errors.
    assert_eq!(
        h.status(0, Call::TimeSetPage, &[PAGE1]),
        Status::AccessDenied
    );
    assert_eq!(
        h.status(0, Call::TimeSetPage, &[PAGE2 + 64]),
        Status::Misaligned
    );
    // Moving the page frees the old one and stops writing it.
    assert_eq!(h.status(0, Call::TimeSetPage, &[PAGE2]), Status::Success);
    assert_eq!(
        h.status(0, Call::ConsoleWrite, &[PAGE1, 8]),
        Status::Success
    );
    let old: TimePage = h.read(PAGE1);
    thread::sleep(Duration::from_millis(10));
    assert_eq!(h.read::<TimePage>(PAGE1), old);
    assert_eq!(h.status(0, Call::TimeSetPage, &[0]), Status::Success);
    let stopped: TimePage = h.read(PAGE2);
    thread::sleep(Duration::from_millis(10));
    assert_eq!(h.read::<TimePage>(PAGE2), stopped);
}

#[test]
fn the_one_shot_timer_posts_a_timer_event_and_wakes_halt() {
    let h = H::ready(2);
    assert_eq!(
        h.status(1, Call::EventsSetQueue, &[PAGE3, 50]),
        Status::Success
    );
    let now = h.call(1, Call::TimeMonotonic, &[]).1[0];
    let deadline = now + 3_000_000;
    assert_eq!(
        h.status(1, Call::TimeSetTimer, &[deadline]),
        Status::Success
    );
    let (s, r) = h.call(1, Call::VcpuHalt, &[5_000_000_000]);
    assert_eq!((s, r[0]), (Status::Success, WakeReason::Event as u64));
    assert!(h.call(1, Call::TimeMonotonic, &[]).1[0] >= deadline);
    let e: Event = h.read(PAGE3 + 64);
    assert_eq!(
        (e.kind, e.source, e.data),
        (EventKind::Timer as u32, 1, deadline)
    );
    assert_eq!(h.read::<EventQueueHeader>(PAGE3).tail, 1);
    assert_eq!(h.m.log().interrupts, [(1, 50)]);
    assert_eq!(h.d.report().timers_fired, 1);
}

#[test]
fn a_cancelled_timer_does_not_fire_and_a_past_one_fires_at_once() {
    let h = H::ready(1);
    let now = h.call(0, Call::TimeMonotonic, &[]).1[0];
    h.call(0, Call::TimeSetTimer, &[now + 10_000_000_000]);
    h.call(0, Call::TimeSetTimer, &[0]);
    assert_eq!(
        h.call(0, Call::VcpuHalt, &[20_000_000]).1[0],
        WakeReason::Timeout as u64
    );
    assert_eq!(h.d.report().timers_fired, 0);
    // Without a queue, the expired timer latches and wakes HALT.
    h.call(0, Call::TimeSetTimer, &[1]);
    assert_eq!(
        h.call(0, Call::VcpuHalt, &[5_000_000_000]).1[0],
        WakeReason::Event as u64
    );
    assert_eq!(h.d.report().timers_fired, 1);
}
