//! MULTICALL and the deferred queue.

use pvabi_abi::batch::{DeferredEntry, DeferredQueueHeader, MulticallEntry};
use pvabi_abi::calls::Call;
use pvabi_abi::convention::ReservedU32;
use pvabi_abi::events::EventKind;
use pvabi_abi::status::Status;
use zerocopy::IntoBytes;

use super::{config, BUF, BUF2, H, PAGE1, PAGE2};
use crate::{HostConfig, POISON};

const SENTINEL: u64 = 0x5a5a_5a5a_5a5a_5a5a;

fn entry(call: Call, args: &[u64]) -> MulticallEntry {
    let mut a = [0u64; 6];
    a[..args.len()].copy_from_slice(args);
    MulticallEntry {
        call: call.code(),
        status: 0xffff,
        args: a,
        results: [SENTINEL; 4],
        ..Default::default()
    }
}

fn status_of(h: &H, base: u64, i: u64) -> u32 {
    h.u32_at(base + 96 * i + 4)
}

fn results_of(h: &H, base: u64, i: u64) -> [u64; 4] {
    h.read(base + 96 * i + 64)
}

#[test]
fn multicall_runs_every_entry() {
    let h = H::ready(2);
    h.write(
        BUF,
        &[
            entry(Call::VcpuInfo, &[]),
            entry(
                Call::ConsoleWriteRegs,
                &[2, u64::from_le_bytes(*b"ok\0\0\0\0\0\0")],
            ),
            entry(Call::GetSpecVersion, &[]),
        ],
    );
    assert_eq!(h.call(1, Call::Multicall, &[BUF, 3, 0, 0]).1[..2], [3, 3]);
    assert_eq!([0, 1, 2].map(|i| status_of(&h, BUF, i)), [0, 0, 0]);
    assert_eq!(results_of(&h, BUF, 0), [1, 2, 0, 0]);
    assert_eq!(results_of(&h, BUF, 1)[0], 2);
    assert_eq!(results_of(&h, BUF, 2)[..3], [0x10000, 0x10000, 0x10000]);
    // Input fields are not written back.
    let e: [u8; 96] = h.read(BUF);
    assert_eq!(&e[..4], Call::VcpuInfo.code().as_bytes());
    let rep = h.d.report();
    assert_eq!(rep.console_text(), "ok");
    assert_eq!(rep.multicall_entries, 3);
    assert_eq!(rep.count(Call::VcpuInfo, Status::Success), 1);
}

#[test]
fn multicall_entry_errors_and_stop_on_error() {
    let h = H::ready(1);
    let entries = [
        entry(Call::VcpuInfo, &[]),
        entry(Call::Multicall, &[BUF2, 1, 0, 0]),
        entry(Call::Negotiate, &[0x10000]),
        entry(Call::VcpuInfo, &[]),
        MulticallEntry {
            call: 0x0fff,
            ..entry(Call::VcpuInfo, &[])
        },
        entry(Call::ConsoleWriteRegs, &[99]),
        entry(Call::TimeMonotonic, &[]),
    ];
    h.write(BUF, &entries);
    // Reserved `flags` of entry 3, written raw (the type cannot hold it).
    h.write(BUF + 96 * 3 + 8, &1u32);
    assert_eq!(h.call(0, Call::Multicall, &[BUF, 7, 0, 0]).1[..2], [7, 7]);
    let want = [
        Status::Success,
        Status::NotAllowedHere,
        Status::NotAllowedHere,
        Status::InvalidParameter,
        Status::NotSupported,
        Status::InvalidParameter,
        Status::Success,
    ];
    for (i, s) in want.iter().enumerate() {
        assert_eq!(status_of(&h, BUF, i as u64), *s as u32, "entry {i}");
    }
    // Results of failed entries are left alone (not strict).
    for i in 1..6 {
        assert_eq!(results_of(&h, BUF, i), [SENTINEL; 4]);
    }
    // STOP_ON_ERROR: stops after entry 1; r0 is the index after it.
    h.write(BUF, &entries);
    assert_eq!(h.call(0, Call::Multicall, &[BUF, 7, 0, 1]).1[..2], [2, 2]);
    assert_eq!(status_of(&h, BUF, 1), Status::NotAllowedHere as u32);
    assert_eq!(status_of(&h, BUF, 2), 0xffff);
    // Resuming after the failure.
    assert_eq!(h.call(0, Call::Multicall, &[BUF, 7, 2, 1]).1[..2], [3, 1]);
}

#[test]
fn multicall_arguments() {
    let h = H::ready(1);
    h.write(BUF, &[entry(Call::VcpuInfo, &[]); 4]);
    assert_eq!(
        h.status(0, Call::Multicall, &[BUF, 2, 3, 0]),
        Status::InvalidParameter
    );
    assert_eq!(
        h.status(0, Call::Multicall, &[BUF, 0, 0, 0]),
        Status::InvalidParameter
    );
    assert_eq!(
        h.status(0, Call::Multicall, &[BUF, 33, 0, 0]),
        Status::InvalidParameter
    );
    assert_eq!(
        h.status(0, Call::Multicall, &[BUF, 2, 0, 2]),
        Status::InvalidParameter
    );
    assert_eq!(
        h.status(0, Call::Multicall, &[BUF + 4, 2, 0, 0]),
        Status::Misaligned
    );
    assert_eq!(
        h.status(0, Call::Multicall, &[BUF + 4096 - 96, 2, 0, 0]),
        Status::CrossesPage
    );
    // start == count: nothing to do.
    assert_eq!(h.call(0, Call::Multicall, &[BUF, 2, 2, 0]).1[..2], [2, 0]);
    // The largest batch: 32 entries, one page.
    h.write(BUF, &[entry(Call::VcpuInfo, &[]); 32]);
    assert_eq!(
        h.call(0, Call::Multicall, &[BUF, 32, 0, 0]).1[..2],
        [32, 32]
    );
    assert_eq!(h.d.report().multicall_entries, 32);
}

#[test]
fn multicall_preemption_and_resume() {
    let h = H::ready_with(HostConfig {
        max_multicall: 2,
        ..config(1)
    });
    h.write(BUF, &[entry(Call::TimeMonotonic, &[]); 5]);
    let mc = |start: u64| {
        let (s, r) = h.call(0, Call::Multicall, &[BUF, 5, start, 0]);
        (s, r[0], r[1])
    };
    assert_eq!(mc(0), (Status::Incomplete, 2, 2));
    assert_eq!(status_of(&h, BUF, 2), 0xffff);
    assert_eq!(mc(2), (Status::Incomplete, 4, 2));
    assert_eq!(mc(4), (Status::Success, 5, 1));
    assert_eq!([0, 1, 2, 3, 4].map(|i| status_of(&h, BUF, i)), [0; 5]);
    let rep = h.d.report();
    assert_eq!((rep.multicall_entries, rep.multicall_preemptions), (5, 2));
    assert_eq!(rep.count(Call::Multicall, Status::Incomplete), 2);
    // A budget that ends exactly at the count is SUCCESS.
    let (s, r) = h.call(0, Call::Multicall, &[BUF, 4, 2, 0]);
    assert_eq!((s, r[0], r[1]), (Status::Success, 4, 2));
}

#[test]
fn multicall_strict_poisons_failed_entries() {
    let h = H::ready_with(HostConfig {
        strict: true,
        ..config(1)
    });
    h.write(BUF, &[entry(Call::ConsoleWriteRegs, &[99])]);
    h.call(0, Call::Multicall, &[BUF, 1, 0, 0]);
    assert_eq!(results_of(&h, BUF, 0), [POISON; 4]);
}

#[test]
fn multicall_entries_run_from_the_one_copy() {
    let h = H::ready(1);
    // Entry 0 overwrites entry 1's `call` and `flags` in guest memory with garbage: a
    // reserved flag set and a non-batchable call. Entry 1 still runs as copied.
    let garbage = u64::from(Call::SystemShutdown.code()) | (1 << 32);
    h.write(
        BUF,
        &[
            entry(Call::MemUpdatePte, &[BUF + 96, garbage, 1]),
            entry(
                Call::ConsoleWriteRegs,
                &[2, u64::from_le_bytes(*b"ok\0\0\0\0\0\0")],
            ),
        ],
    );
    assert_eq!(h.call(0, Call::Multicall, &[BUF, 2, 0, 0]).1[..2], [2, 2]);
    assert_eq!(status_of(&h, BUF, 1), 0);
    assert_eq!(h.d.report().console_text(), "ok");
    assert_eq!(h.u32_at(BUF + 96), Call::SystemShutdown.code());
    assert_eq!(
        h.u32_at(BUF + 96 + 8),
        0,
        "host wrote only status and results"
    );
}

// ---- deferred queue -------------------------------------------------------------------

fn dentry(call: Call, args: [u64; 3]) -> DeferredEntry {
    DeferredEntry {
        call: call.code(),
        flags: ReservedU32::Zero,
        args,
    }
}

/// Appends entries at the queue's guest tail.
fn push(h: &H, page: u64, entries: &[DeferredEntry]) {
    let mut tail: u32 = h.u32_at(page + 4);
    for e in entries {
        h.write(page + 64 + u64::from(tail % 64) * 32, e);
        tail = tail.wrapping_add(1);
    }
    h.write(page + 4, &tail);
}

fn dq(h: &H, page: u64) -> DeferredQueueHeader {
    h.read(page)
}

fn with_deferred() -> H {
    let h = H::ready(1);
    h.write(PAGE1, &[0xeeu8; 4096]);
    assert_eq!(
        h.status(0, Call::DeferSetQueue, &[PAGE1, 0]),
        Status::Success
    );
    h
}

#[test]
fn defer_set_queue_initialises_and_checks() {
    let h = with_deferred();
    let q = dq(&h, PAGE1);
    assert_eq!((q.head, q.tail, q.capacity, q.error_count), (0, 0, 64, 0));
    assert_eq!(
        h.status(0, Call::DeferSetQueue, &[PAGE2, 1]),
        Status::InvalidParameter
    );
    assert_eq!(
        h.status(0, Call::DeferSetQueue, &[PAGE2 + 8, 0]),
        Status::Misaligned
    );
    assert_eq!(h.call(0, Call::DeferFlush, &[]).1[..2], [0, 0]);
    // Without a queue, a flush has nothing to do.
    assert_eq!(h.status(0, Call::DeferSetQueue, &[0, 0]), Status::Success);
    assert_eq!(h.call(0, Call::DeferFlush, &[]), (Status::Success, [0; 4]));
    assert_eq!(
        h.status(0, Call::ConsoleWrite, &[PAGE1, 4]),
        Status::Success
    );
}

#[test]
fn deferred_entries_run_in_order_on_flush() {
    let h = with_deferred();
    push(
        &h,
        PAGE1,
        &[
            dentry(Call::MemUpdatePte, [BUF, 1, 1]),
            dentry(Call::MemUpdatePte, [BUF, 2, 1]),
            dentry(Call::EventsSetMask, [EventKind::User.mask_bit(), 0, 0]),
        ],
    );
    // A non-sync call does not drain.
    h.call(0, Call::TimeMonotonic, &[]);
    assert_eq!(h.read::<u64>(BUF), 0);
    assert_eq!(h.call(0, Call::DeferFlush, &[]).1[..2], [3, 0]);
    assert_eq!(h.read::<u64>(BUF), 2);
    assert_eq!(dq(&h, PAGE1).head, 3);
    // The mask was set by the deferred entry.
    assert_eq!(
        h.call(0, Call::EventsSetMask, &[0]).1[0],
        EventKind::User.mask_bit()
    );
    let rep = h.d.report();
    assert_eq!(rep.deferred_drained, 3);
    assert_eq!(
        rep.pte_writes.iter().map(|w| w.value).collect::<Vec<_>>(),
        [1, 2]
    );
}

#[test]
fn deferred_failures_are_recorded() {
    let h = with_deferred();
    let mut bad = [0u8; 32];
    bad[..4].copy_from_slice(Call::MemUpdatePte.code().as_bytes());
    bad[4] = 1; // reserved flags
    push(
        &h,
        PAGE1,
        &[
            dentry(Call::MemUpdatePte, [BUF, 1, 1]),
            dentry(Call::ConsoleWriteRegs, [0, 0, 0]),
            dentry(Call::MemUpdatePte, [BUF + 1, 2, 1]),
        ],
    );
    h.write(PAGE1 + 64 + 3 * 32, &bad);
    h.write(PAGE1 + 4, &4u32);
    assert_eq!(h.call(0, Call::DeferFlush, &[]).1[..2], [4, 3]);
    let q = dq(&h, PAGE1);
    assert_eq!(
        (q.error_count, q.first_error_index, q.first_error_status),
        (3, 1, Status::NotAllowedHere as u32)
    );
    // Errors accumulate; the first one stays.
    push(&h, PAGE1, &[dentry(Call::VcpuYield, [0; 3])]);
    assert_eq!(h.call(0, Call::DeferFlush, &[]).1[..2], [1, 1]);
    let q = dq(&h, PAGE1);
    assert_eq!((q.error_count, q.first_error_index, q.head), (4, 1, 5));
    assert_eq!(h.read::<u64>(BUF), 1);
}

#[test]
fn sync_points_drain_first_and_before_their_block_is_copied() {
    let h = H::ready(2);
    assert_eq!(
        h.status(1, Call::DeferSetQueue, &[PAGE1, 0]),
        Status::Success
    );
    // vCPU 1 defers a write into the message its SYSTEM_CRASH (a sync point) then reports:
    // the queue drains before the block is copied, so the message is the new one.
    h.write(BUF, b"before!!");
    push(
        &h,
        PAGE1,
        &[dentry(
            Call::MemUpdatePte,
            [BUF, u64::from_le_bytes(*b"after!!!"), 1],
        )],
    );
    let crash = h.raw(1, u64::from(Call::SystemCrash.code()), &[BUF, 8]).2;
    assert_eq!(
        crash,
        crate::Outcome::End(crate::End::Crash("after!!!".into()))
    );
    // A flush sync point (MEM_FLUSH_TLB_ALL) drains too.
    push(&h, PAGE1, &[dentry(Call::MemUpdatePte, [BUF2, 9, 1])]);
    assert_eq!(h.status(1, Call::MemFlushTlbAll, &[]), Status::Success);
    assert_eq!(h.read::<u64>(BUF2), 9);
    assert_eq!(h.call(1, Call::DeferFlush, &[]).1[0], 0);
    // Another vCPU's sync point does not drain vCPU 1's queue.
    push(&h, PAGE1, &[dentry(Call::MemUpdatePte, [BUF2, 10, 1])]);
    assert_eq!(h.status(0, Call::MemFlushTlbAll, &[]), Status::Success);
    assert_eq!(h.read::<u64>(BUF2), 9);
    assert_eq!(h.call(1, Call::DeferFlush, &[]).1[0], 1);
}

#[test]
fn garbage_deferred_indices_are_bounded() {
    let h = with_deferred();
    for e in 0..64u64 {
        h.write(
            PAGE1 + 64 + e * 32,
            &dentry(Call::MemUpdatePte, [BUF, e, 1]),
        );
    }
    // tail - head = 1000: at most a capacity of entries run, INVALID_PARAMETER recorded.
    h.write(PAGE1 + 4, &1000u32);
    assert_eq!(h.call(0, Call::DeferFlush, &[]).1[..2], [64, 0]);
    let q = dq(&h, PAGE1);
    assert_eq!(q.head, 1000);
    assert_eq!(
        (q.error_count, q.first_error_index, q.first_error_status),
        (1, 64, Status::InvalidParameter as u32)
    );
    // The host keeps its own head: a garbage head written by the guest is ignored.
    h.write(PAGE1, &u32::MAX);
    h.write(PAGE1 + 4, &1001u32);
    assert_eq!(h.call(0, Call::DeferFlush, &[]).1[..2], [1, 0]);
    // Tail behind head (wraps to a huge count).
    h.write(PAGE1 + 4, &0u32);
    assert_eq!(h.call(0, Call::DeferFlush, &[]).1[0], 64);
    assert_eq!(dq(&h, PAGE1).head, 0);
    assert_eq!(h.d.report().deferred_drained, 129);
}

#[test]
fn re_registering_drains_the_old_queue() {
    let h = with_deferred();
    push(&h, PAGE1, &[dentry(Call::MemUpdatePte, [BUF, 77, 1])]);
    assert_eq!(
        h.status(0, Call::DeferSetQueue, &[PAGE2, 0]),
        Status::Success
    );
    assert_eq!(h.read::<u64>(BUF), 77);
    // The old page is the guest's again, the new one is owned.
    assert_eq!(
        h.status(0, Call::ConsoleWrite, &[PAGE1, 4]),
        Status::Success
    );
    assert_eq!(
        h.status(0, Call::ConsoleWrite, &[PAGE2, 4]),
        Status::AccessDenied
    );
}
