//! MULTICALL and the deferred queue.

use pvabi_abi::batch::{
    DeferredEntry, DeferredQueueHeader, MulticallEntry, DEFERRED_QUEUE_CAPACITY,
};
use pvabi_abi::calls::Call;
use pvabi_abi::convention::ReservedU32;
use pvabi_abi::events::EventKind;
use pvabi_abi::features::Features;
use pvabi_abi::status::Status;
use zerocopy::IntoBytes;

use super::{config, BUF, BUF2, H, PAGE1, PAGE2};
use crate::HostConfig;

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

/// BATCH-010, STAT-012: a failed entry's `results` are not written, strict or not.
#[test]
fn failed_entries_keep_their_results_even_when_strict() {
    for strict in [false, true] {
        let h = H::ready_with(HostConfig {
            strict,
            ..config(1)
        });
        h.write(
            BUF,
            &[
                entry(Call::ConsoleWriteRegs, &[99]),
                entry(Call::Negotiate, &[0x10000]),
            ],
        );
        assert_eq!(h.call(0, Call::Multicall, &[BUF, 2, 0, 0]).1[..2], [2, 2]);
        assert_eq!(status_of(&h, BUF, 0), Status::InvalidParameter as u32);
        assert_eq!(results_of(&h, BUF, 0), [SENTINEL; 4], "strict: {strict}");
        assert_eq!(results_of(&h, BUF, 1), [SENTINEL; 4], "strict: {strict}");
    }
}

/// BATCH-003: on SUCCESS all four slots are written, 0 where the call defines no result.
#[test]
fn undefined_result_slots_of_a_successful_entry_are_zero() {
    let h = H::ready(2);
    h.write(
        BUF,
        &[
            entry(Call::VcpuInfo, &[]),
            entry(Call::VcpuYield, &[]),
            entry(Call::TimeMonotonic, &[]),
        ],
    );
    assert_eq!(h.call(1, Call::Multicall, &[BUF, 3, 0, 0]).1[..2], [3, 3]);
    assert_eq!(results_of(&h, BUF, 0), [1, 2, 0, 0]);
    assert_eq!(results_of(&h, BUF, 1), [0; 4]);
    assert_eq!(results_of(&h, BUF, 2)[1..], [0; 3]);
}

/// BATCH-006, BATCH-007: a batch that ends (last entry, or a stop on error) is SUCCESS even
/// where the host's budget would preempt it; INCOMPLETE only with entries left.
#[test]
fn a_batch_that_ends_at_the_budget_is_success_not_incomplete() {
    let h = H::ready_with(HostConfig {
        max_multicall: 2,
        ..config(1)
    });
    let entries = [
        entry(Call::VcpuYield, &[]),
        entry(Call::ConsoleWriteRegs, &[99]),
        entry(Call::VcpuYield, &[]),
        entry(Call::VcpuYield, &[]),
    ];
    h.write(BUF, &entries);
    // STOP_ON_ERROR stops at entry 1, which is also where the budget ends.
    let (s, r) = h.call(0, Call::Multicall, &[BUF, 4, 0, 1]);
    assert_eq!((s, r[0], r[1]), (Status::Success, 2, 2));
    // Without STOP_ON_ERROR the same point is a preemption: entries remain.
    h.write(BUF, &entries);
    let (s, r) = h.call(0, Call::Multicall, &[BUF, 4, 0, 0]);
    assert_eq!((s, r[0], r[1]), (Status::Incomplete, 2, 2));
    // The last entry at the budget's end: SUCCESS.
    let (s, r) = h.call(0, Call::Multicall, &[BUF, 4, 2, 0]);
    assert_eq!((s, r[0], r[1]), (Status::Success, 4, 2));
    // start == count: SUCCESS, nothing processed.
    let (s, r) = h.call(0, Call::Multicall, &[BUF, 4, 4, 0]);
    assert_eq!((s, r[0], r[1]), (Status::Success, 4, 0));
}

/// STAT-011, BATCH-004: an entry's own fields are checked before step 1 of its call.
#[test]
fn multicall_entry_fields_are_checked_before_the_call() {
    let h = H::ready(1);
    let bad = [
        MulticallEntry {
            call: 0x0fff, // unknown: NOT_SUPPORTED at step 1 otherwise
            ..entry(Call::VcpuInfo, &[])
        },
        entry(Call::Negotiate, &[0x10000]), // not batchable: step 4 otherwise
        entry(Call::ConsoleWriteRegs, &[99]), // bad argument: step 5 otherwise
    ];
    for (field, value) in [(8u64, 1u32), (12, 1), (12, 0x8000_0000)] {
        h.write(BUF, &bad);
        for i in 0..3u64 {
            h.write(BUF + 96 * i + field, &value);
        }
        assert_eq!(h.call(0, Call::Multicall, &[BUF, 3, 0, 0]).1[..2], [3, 3]);
        for i in 0..3 {
            assert_eq!(
                status_of(&h, BUF, i),
                Status::InvalidParameter as u32,
                "entry {i}, field at {field}"
            );
        }
    }
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

/// BATCH-013, DEFER-012: a `tail` more than a capacity ahead of the host's `head` is
/// malformed: nothing runs, the occupancy is counted as failures, `head` moves to `tail`.
#[test]
fn malformed_deferred_queue_runs_nothing_and_resynchronises() {
    let h = with_deferred();
    for e in 0..64u64 {
        h.write(
            PAGE1 + 64 + e * 32,
            &dentry(Call::MemUpdatePte, [BUF, e + 1, 1]),
        );
    }
    h.write(PAGE1 + 4, &1000u32);
    assert_eq!(h.call(0, Call::DeferFlush, &[]).1[..2], [0, 0]);
    assert_eq!(h.read::<u64>(BUF), 0, "no entry of a malformed queue runs");
    let q = dq(&h, PAGE1);
    assert_eq!(q.head, 1000);
    assert_eq!(
        (q.error_count, q.first_error_index, q.first_error_status),
        (1000, 0, Status::InvalidParameter as u32)
    );
    // Usable again from the new head.
    push(&h, PAGE1, &[dentry(Call::MemUpdatePte, [BUF, 5, 1])]);
    assert_eq!(h.call(0, Call::DeferFlush, &[]).1[..2], [1, 0]);
    assert_eq!(h.read::<u64>(BUF), 5);
    // Tail behind head (a huge occupancy): malformed too.
    h.write(PAGE1 + 4, &0u32);
    assert_eq!(h.call(0, Call::DeferFlush, &[]).1[..2], [0, 0]);
    let q = dq(&h, PAGE1);
    assert_eq!((q.head, q.error_count), (0, u32::MAX));
    // Exactly a capacity is not malformed.
    push(&h, PAGE1, &[dentry(Call::MemUpdatePte, [BUF, 7, 1]); 64]);
    assert_eq!(h.call(0, Call::DeferFlush, &[]).1[..2], [64, 0]);
    assert_eq!(h.d.report().deferred_drained, 65);
}

/// BATCH-012: the host acts on its own copies of `head` and the error record, never on what
/// the guest wrote over them.
#[test]
fn host_written_deferred_fields_are_never_read_back() {
    let h = with_deferred();
    push(&h, PAGE1, &[dentry(Call::ConsoleWriteRegs, [0; 3])]);
    assert_eq!(h.call(0, Call::DeferFlush, &[]).1[..2], [1, 1]);
    // The guest scribbles over every host-written field.
    h.write(PAGE1, &77u32); // head
    h.write(PAGE1 + 12, &[500u32, 9, 9]); // error_count, first_error_*
    push(
        &h,
        PAGE1,
        &[
            dentry(Call::MemUpdatePte, [BUF, 3, 1]),
            dentry(Call::ConsoleWriteRegs, [0; 3]),
        ],
    );
    // tail is 3 (written from the guest's tail 1 + 2): the host runs from its own head 1.
    assert_eq!(h.u32_at(PAGE1 + 4), 3);
    assert_eq!(h.call(0, Call::DeferFlush, &[]).1[..2], [2, 1]);
    let q = dq(&h, PAGE1);
    assert_eq!(
        (
            q.head,
            q.error_count,
            q.first_error_index,
            q.first_error_status
        ),
        (3, 2, 0, Status::NotAllowedHere as u32)
    );
    assert_eq!(h.read::<u64>(BUF), 3);
}

/// DEFER-007: `first_error_index` is the free-running queue index, not the slot.
#[test]
fn first_error_index_is_the_free_running_index() {
    let h = with_deferred();
    let mask = |m: u64| dentry(Call::EventsSetMask, [m, 0, 0]);
    push(&h, PAGE1, &[mask(0); 64]);
    assert_eq!(h.call(0, Call::DeferFlush, &[]).1[..2], [64, 0]);
    push(&h, PAGE1, &[mask(0), mask(0), mask(1)]);
    assert_eq!(h.call(0, Call::DeferFlush, &[]).1[..2], [3, 1]);
    let q = dq(&h, PAGE1);
    assert_eq!(
        (q.error_count, q.first_error_index, q.first_error_status),
        (1, 66, Status::InvalidParameter as u32)
    );
}

/// Capacities are powers of two: the slot sequence runs on across the 2^32 wrap.
#[test]
fn deferred_indices_wrap_without_a_jump() {
    assert!(DEFERRED_QUEUE_CAPACITY.is_power_of_two());
    let h = with_deferred();
    // Resynchronise the host's head just below the wrap (a malformed tail), then queue across it.
    let start = u32::MAX - 9;
    h.write(PAGE1 + 4, &start);
    h.call(0, Call::DeferFlush, &[]);
    assert_eq!(dq(&h, PAGE1).head, start);
    let entries: Vec<_> = (0..20u64)
        .map(|i| dentry(Call::MemUpdatePte, [BUF, 100 + i, 1]))
        .collect();
    push(&h, PAGE1, &entries);
    assert_eq!(h.u32_at(PAGE1 + 4), 10);
    assert_eq!(h.call(0, Call::DeferFlush, &[]).1[..2], [20, 0]);
    assert_eq!(dq(&h, PAGE1).head, 10);
    let values: Vec<u64> = h.d.report().pte_writes.iter().map(|w| w.value).collect();
    assert_eq!(values, (100..120).collect::<Vec<_>>());
}

/// STAT-011, DEFER-006: a deferred entry's `flags` are checked before step 1 of its call.
#[test]
fn deferred_entry_flags_are_checked_before_the_call() {
    let h = with_deferred();
    let raw = |code: u32| {
        let mut b = [0u8; 32];
        b[..4].copy_from_slice(code.as_bytes());
        b[4] = 1;
        b
    };
    for (i, code) in [0x0fffu32, Call::VcpuInfo.code(), Call::MemUpdatePte.code()]
        .into_iter()
        .enumerate()
    {
        h.write(PAGE1 + 64 + i as u64 * 32, &raw(code));
    }
    h.write(PAGE1 + 4, &3u32);
    assert_eq!(h.call(0, Call::DeferFlush, &[]).1[..2], [3, 3]);
    let q = dq(&h, PAGE1);
    assert_eq!(
        (q.error_count, q.first_error_index, q.first_error_status),
        (3, 0, Status::InvalidParameter as u32)
    );
}

/// DEFER-003: a direct sync-point call that passed step 5 drains, whatever it returns next.
#[test]
fn a_sync_point_call_that_fails_after_step_5_still_drains() {
    let h = with_deferred();
    let cases: [(Call, Vec<u64>, Status); 4] = [
        // step 6
        (Call::DeferSetQueue, vec![PAGE2 + 8, 0], Status::Misaligned),
        (Call::Multicall, vec![BUF + 4, 1, 0, 0], Status::Misaligned),
        // step 10 (RingSetup contents)
        (Call::RingSetup, vec![BUF2], Status::InvalidParameter),
        // step 11: NEGOTIATE is locked
        (Call::Negotiate, vec![0x10000], Status::Locked),
    ];
    h.write(BUF2, &[0xffu8; 32]);
    for (n, (call, args, want)) in cases.into_iter().enumerate() {
        let value = 10 + n as u64;
        push(&h, PAGE1, &[dentry(Call::MemUpdatePte, [BUF, value, 1])]);
        assert_eq!(h.status(0, call, &args), want, "{call:?}");
        assert_eq!(h.read::<u64>(BUF), value, "{call:?} drained");
        assert_eq!(dq(&h, PAGE1).head, n as u32 + 1);
    }
}

/// DEFER-003: a sync-point call rejected at steps 1 to 5 does not drain (the reference
/// host drains nowhere else, DEFER-011).
#[test]
fn a_sync_point_call_that_fails_at_steps_1_to_5_does_not_drain() {
    let h = H::new(1);
    // DEFERRED and EVENTS granted, MEMORY not.
    h.negotiate(Features::DEFERRED | Features::EVENTS);
    assert_eq!(
        h.status(0, Call::DeferSetQueue, &[PAGE1, 0]),
        Status::Success
    );
    push(&h, PAGE1, &[dentry(Call::EventsSetMask, [0b10, 0, 0])]);
    let cases: [(Call, Vec<u64>, Status); 4] = [
        // step 3 (VCPU is not granted either)
        (Call::MemFlushTlbAll, vec![], Status::NotGranted),
        // step 5
        (
            Call::DeferSetQueue,
            vec![PAGE2, 1],
            Status::InvalidParameter,
        ),
        (
            Call::Negotiate,
            vec![0x10000, 0, 0, 1 << 63],
            Status::InvalidParameter,
        ),
        (Call::VcpuStop, vec![], Status::NotGranted),
    ];
    for (call, args, want) in cases {
        let (s, _, _) = h.raw(0, u64::from(call.code()), &args);
        assert_eq!(s, want, "{call:?}");
        assert_eq!(dq(&h, PAGE1).head, 0, "{call:?} must not drain");
    }
    // An unknown code (step 1) names no sync point; it drains nothing either.
    assert_eq!(h.raw(0, 0x0fff, &[]).0, Status::NotSupported);
    assert_eq!(dq(&h, PAGE1).head, 0);
    assert_eq!(h.call(0, Call::DeferFlush, &[]).1[..2], [1, 0]);
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

#[test]
fn the_same_deferrable_calls_agree_direct_and_deferred() {
    // Deferrable calls (MMU and CPU classes), some of them failing.
    let calls: Vec<(Call, [u64; 3])> = (0..24u64)
        .map(|i| match i % 4 {
            0 => (Call::MemUpdatePte, [BUF2 + 8 * i, (0x1000 * i) | 1, 1]),
            1 => (Call::EventsSetMask, [i & 0b111, 0, 0]),
            2 => (Call::EventsSetMask, [1 << 40, 0, 0]),
            _ => (Call::MemUpdatePte, [BUF2 + 8 * i + 4, 1, 1]),
        })
        .collect();
    let direct = H::ready(1);
    let statuses: Vec<Status> = calls.iter().map(|(c, a)| direct.status(0, *c, a)).collect();
    let failed: Vec<(usize, Status)> = statuses
        .iter()
        .enumerate()
        .filter(|(_, s)| **s != Status::Success)
        .map(|(i, s)| (i, *s))
        .collect();
    assert!(!failed.is_empty() && failed.len() < calls.len());
    // The same calls queued (the queue holds 64) and drained by one DEFER_FLUSH.
    let h = with_deferred();
    let entries: Vec<DeferredEntry> = calls.iter().map(|(c, a)| dentry(*c, *a)).collect();
    push(&h, PAGE1, &entries);
    assert_eq!(h.status(0, Call::DeferFlush, &[]), Status::Success);
    let q = dq(&h, PAGE1);
    assert_eq!(q.head, calls.len() as u32, "every entry consumed");
    assert_eq!(q.error_count, failed.len() as u32);
    assert_eq!(
        (q.first_error_index, q.first_error_status),
        (failed[0].0 as u32, failed[0].1 as u32)
    );
    // The same effects: the page-table words the updates wrote.
    assert_eq!(h.read_bytes(BUF2, 4096), direct.read_bytes(BUF2, 4096));
    assert!(h.read_bytes(BUF2, 4096).iter().any(|&b| b != 0));
}

/// PVABI-MEM-012: MEM_UPDATE_PTE flushes no translation, whether it is called directly, from a
/// MULTICALL entry or from the deferred queue (the guest flushes, as it would after writing
/// the entry itself). The machine's flush log is empty after every update, and a
/// MEM_FLUSH_TLB_ALL at the end shows that the log does record flushes.
#[test]
fn update_pte_flushes_nothing_in_any_context() {
    let h = with_deferred();
    assert_eq!(
        h.status(0, Call::MemUpdatePte, &[BUF2, 0x1003, 1]),
        Status::Success
    );
    h.write(
        BUF,
        &[
            entry(Call::MemUpdatePte, &[BUF2 + 8, 0x2003, 1]),
            entry(Call::MemUpdatePte, &[BUF2 + 16, 0x3003, 2]),
        ],
    );
    assert_eq!(h.call(0, Call::Multicall, &[BUF, 2, 0, 0]).1[..2], [2, 2]);
    push(
        &h,
        PAGE1,
        &[
            dentry(Call::MemUpdatePte, [BUF2 + 24, 0x4003, 1]),
            dentry(Call::MemUpdatePte, [BUF2 + 32, 0x5003, 4]),
        ],
    );
    assert_eq!(h.call(0, Call::DeferFlush, &[]).1[..2], [2, 0]);
    assert_eq!(
        h.read::<[u64; 5]>(BUF2),
        [0x1003, 0x2003, 0x3003, 0x4003, 0x5003],
        "every update was made"
    );
    assert_eq!(h.d.report().pte_write_count, 5);
    assert_eq!(h.m.log().flushes, [], "an update flushed translations");
    assert_eq!(h.status(0, Call::MemFlushTlbAll, &[]), Status::Success);
    assert_eq!(h.m.log().flushes, [None]);
}
