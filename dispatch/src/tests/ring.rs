//! The ring pair: setup, doorbell processing, backpressure, garbage, host polling.

use std::thread;
use std::time::{Duration, Instant};

use pvabi_abi::batch::{
    CompletionEntry, RingHeader, RingMode, RingSetup, SubmissionEntry, SQ_NEED_WAKEUP,
};
use pvabi_abi::calls::Call;
use pvabi_abi::convention::{ReservedU32, ReservedU64};
use pvabi_abi::events::{Event, EventKind};
use pvabi_abi::status::Status;
use zerocopy::IntoBytes;

use super::{config, BUF, H, MEM, PAGE1, PAGE2, PAGE3};
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
