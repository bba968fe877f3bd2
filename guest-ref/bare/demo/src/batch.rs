//! Batching: MULTICALL (per-entry status, one entry failing on purpose, STOP_ON_ERROR),
//! the deferred queue (PTE updates that take effect at the next sync point or
//! DEFER_FLUSH), and the SQ/CQ ring in doorbell mode (RING_ENTER and the ring-notify port).

use pvabi_guest::abi::batch::{
    CompletionEntry, DeferredEntry, RingMode, SubmissionEntry, MULTICALL_STOP_ON_ERROR,
};
use pvabi_guest::abi::convention::ReservedU32;
use pvabi_guest::batch::{completion_result, DeferredQueue, Multicall, Rings};
use pvabi_guest::console::regs_args;
use pvabi_guest::{Call, Status};

use crate::memory::{self, magic, pte, pte_gpa, read_window, target_gpa, FLAGS, VA_WINDOW};
use crate::out::{must, pv, section, Line};
use crate::Global;

/// Entries of the first MULTICALL (one fails on purpose).
pub const MULTICALL_ENTRIES: usize = 6;
/// Printed by a MULTICALL entry (CONSOLE_WRITE_REGS: at most 32 bytes).
const MC_TEXT: &[u8] = b"    (from a MULTICALL entry)\n";
/// Printed by a ring submission (CONSOLE_WRITE_REGS: at most 32 bytes).
const RING_TEXT: &[u8] = b"    (from a ring submission)\n";
const _: () = assert!(MC_TEXT.len() <= 32 && RING_TEXT.len() <= 32);
/// How long to wait for the completions of a ring-notify write (TSC ticks: seconds).
const NOTIFY_WAIT_TICKS: u64 = 10_000_000_000;

// vCPU 0 only.
static BATCH: Global<Multicall<MULTICALL_ENTRIES>> = Global::new(Multicall::new());
static SHORT: Global<Multicall<3>> = Global::new(Multicall::new());
// Given to the host for good (deferred queue, ring pages); vCPU 0 only.
static DEFERRED: Global<DeferredQueue> = Global::new(DeferredQueue::new());
static RINGS: Global<Rings> = Global::new(Rings::new());

pub fn run() {
    multicall();
    deferred();
    ring();
}

fn status_of(r: Option<pvabi_guest::Result<[u64; 4]>>) -> Option<Status> {
    match r {
        Some(Ok(_)) => Some(Status::Success),
        Some(Err(e)) => e.status(),
        None => None,
    }
}

fn multicall() {
    section("batch: MULTICALL");
    let pv = pv();
    // SAFETY: vCPU 0 alone uses the batch.
    let batch = unsafe { &mut *BATCH.get() };
    batch.clear();
    let console = regs_args(MC_TEXT).unwrap_or_default();
    let entries: [(Call, [u64; 6]); MULTICALL_ENTRIES] = [
        (Call::VcpuInfo, [0; 6]),
        (Call::TimeMonotonic, [0; 6]),
        (Call::ConsoleWriteRegs, console),
        // NEGOTIATE is not batchable: this entry fails on purpose with NOT_ALLOWED_HERE.
        (Call::Negotiate, [0x1_0000, 0, 0, 0, 0, 0]),
        (Call::EventsSetMask, [0; 6]),
        (Call::GetSpecVersion, [0; 6]),
    ];
    for (call, args) in entries {
        let _ = batch.push(call, args);
    }
    // SAFETY: every entry's call only returns registers or prints (NEGOTIATE is refused).
    let outcome = must("batch", "MULTICALL", unsafe {
        pv.multicall_batch(batch, 0)
    });
    let info = batch.result(0).and_then(Result::ok).unwrap_or_default();
    let time = batch.result(1).and_then(Result::ok).unwrap_or_default();
    let text = batch.result(2).and_then(Result::ok).unwrap_or_default();
    let refused = status_of(batch.result(3));
    let mask = batch.result(4).and_then(Result::ok);
    let spec = batch.result(5).and_then(Result::ok).unwrap_or_default();
    let all_ok = [0, 1, 2, 4, 5]
        .iter()
        .all(|&i| status_of(batch.result(i)) == Some(Status::Success));
    // A host may preempt a batch (INCOMPLETE with a resume index); multicall_batch
    // re-issues it, so `issues` is the number of exits it took.
    Line::check(
        "batch",
        outcome.next == MULTICALL_ENTRIES as u32
            && outcome.processed == MULTICALL_ENTRIES as u32
            && outcome.issues >= 1,
    )
    .s("MULTICALL of ")
    .dec(MULTICALL_ENTRIES as u64)
    .s(" entries: ")
    .dec(u64::from(outcome.processed))
    .s(" processed in ")
    .dec(u64::from(outcome.issues))
    .s(if outcome.issues == 1 {
        " exit"
    } else {
        " exits (the host preempted it)"
    })
    .end();
    Line::check(
        "batch",
        all_ok
            && info[0] == 0
            && time[0] > 0
            && text[0] == MC_TEXT.len() as u64
            && mask == Some([0; 4])
            && spec[2] != 0,
    )
    .s("entries 0,1,2,4,5 SUCCESS: VCPU_INFO index ")
    .dec(info[0])
    .s(", TIME_MONOTONIC ")
    .dec(time[0])
    .s(" ns, CONSOLE_WRITE_REGS ")
    .dec(text[0])
    .s(" bytes, EVENTS_SET_MASK, GET_SPEC_VERSION")
    .end();
    Line::check("batch", refused == Some(Status::NotAllowedHere))
        .s("entry 3 (NEGOTIATE, not batchable) -> ")
        .s(refused.map_or("no status", Status::name))
        .s(", and the entries after it still ran")
        .end();

    // STOP_ON_ERROR: the batch stops at the failing entry.
    // SAFETY: vCPU 0 alone uses the batch.
    let short = unsafe { &mut *SHORT.get() };
    short.clear();
    let _ = short.push(Call::TimeMonotonic, [0; 6]);
    let _ = short.push(Call::MemFlushTlbRange, [VA_WINDOW, 0, 0, 0, 0, 0]); // 0 pages: invalid
    let _ = short.push(Call::VcpuInfo, [0; 6]);
    // SAFETY: TIME_MONOTONIC and VCPU_INFO return registers; the flush is refused.
    let outcome = must("batch", "MULTICALL", unsafe {
        pv.multicall_batch(short, MULTICALL_STOP_ON_ERROR)
    });
    let second = status_of(short.result(1));
    let untouched = short.entries()[2].status == 0;
    Line::check(
        "batch",
        outcome.next == 2
            && outcome.processed == 2
            && second == Some(Status::InvalidParameter)
            && untouched,
    )
    .s("MULTICALL with STOP_ON_ERROR: stopped after entry 1 (")
    .s(second.map_or("no status", Status::name))
    .s("), next = ")
    .dec(u64::from(outcome.next))
    .s(", entry 2 not run")
    .end();
}

fn deferred() {
    section("batch: deferred queue");
    let pv = pv();
    // SAFETY: a static page given to the host for good; vCPU 0 alone pushes to it.
    let queue = unsafe { &mut *DEFERRED.get() };
    // SAFETY: as above.
    must("batch", "DEFER_SET_QUEUE", unsafe {
        pv.defer_set_queue(queue.gpa())
    });
    // Two PTE updates wait in the queue: no exit, not in effect yet.
    // SAFETY: the entries map window pages 1 and 2 to integer pages; the guest does not
    // use them before the sync point below (PVABI-MEM-013).
    unsafe {
        let _ = queue.push_update_pte(pte_gpa(1), target_gpa(2) | FLAGS, 1);
        let _ = queue.push_update_pte(pte_gpa(2), target_gpa(3) | FLAGS, 1);
    }
    let waiting = queue.len();
    let before = (pte(1), pte(2));
    Line::check("batch", waiting == 2 && before == (0, 0))
        .s("DEFER_SET_QUEUE at ")
        .hex(queue.gpa())
        .s(", 2 MEM_UPDATE_PTEs queued without an exit: ")
        .dec(u64::from(waiting))
        .s(" waiting, PTEs 1 and 2 still empty")
        .end();
    // A sync point: the host drains the queue before the flush.
    must(
        "batch",
        "MEM_FLUSH_TLB_RANGE",
        pv.flush_tlb_range(VA_WINDOW + 4096, 2),
    );
    let (a, b) = (read_window(1), read_window(2));
    Line::check(
        "batch",
        queue.is_empty() && a == magic(2) && b == magic(3),
    )
    .s("MEM_FLUSH_TLB_RANGE is a sync point: the queue drained first, window pages 1 and 2 read ")
    .hex(a)
    .s(", ")
    .hex(b)
    .end();

    // DEFER_FLUSH, with one entry that may not be deferred.
    let _ = queue.push_set_mask(0);
    // SAFETY: unmaps window pages 1 and 2 (nothing uses them after this point).
    unsafe {
        let _ = queue.push_update_pte(pte_gpa(1), 0, 1);
        let _ = queue.push_update_pte(pte_gpa(2), 0, 1);
    }
    let args = regs_args(b"x").unwrap_or_default();
    let bad = DeferredEntry {
        call: Call::ConsoleWriteRegs.code(),
        flags: ReservedU32::Zero,
        args: [args[0], args[1], args[2]],
    };
    // SAFETY: the host refuses the entry (CONSOLE_WRITE_REGS has no deferral class).
    let _ = unsafe { queue.push_entry(bad) };
    let flushed = must("batch", "DEFER_FLUSH", pv.defer_flush());
    let errors = queue.errors();
    Line::check(
        "batch",
        flushed.processed == 4
            && flushed.failed == 1
            && errors.count == 1
            && errors.first_index == 5
            && errors
                .first_error()
                .is_some_and(|e| e.is(Status::NotAllowedHere))
            && pte(1) == 0
            && pte(2) == 0,
    )
    .s("DEFER_FLUSH: ")
    .dec(u64::from(flushed.processed))
    .s(" entries run, ")
    .dec(u64::from(flushed.failed))
    .s(" failed (entry ")
    .dec(u64::from(errors.first_index))
    .s(", CONSOLE_WRITE_REGS is not deferrable: ")
    .s(errors
        .first_error()
        .and_then(|e| e.status())
        .map_or("?", Status::name))
    .s(")")
    .end();
    must("batch", "DEFER_SET_QUEUE", pv.defer_unset_queue());

    // Unlink the window: PTE 0, then the PML4 slot, then flush everywhere.
    // SAFETY: nothing uses the window any more.
    unsafe {
        must("memory", "MEM_UPDATE_PTE", pv.update_pte(pte_gpa(0), 0, 1));
        must(
            "memory",
            "MEM_UPDATE_PTE",
            pv.update_pte(memory::pml4_slot_gpa(), 0, 4),
        );
    }
    must("memory", "MEM_FLUSH_TLB_ALL", pv.flush_tlb_all());
    Line::check("memory", pte(0) == 0)
        .s("window unlinked again (MEM_UPDATE_PTE x2, MEM_FLUSH_TLB_ALL)")
        .end();
}

fn ring() {
    section("batch: submission/completion ring");
    let pv = pv();
    // SAFETY: static pages given to the host for good; vCPU 0 alone submits and reaps.
    let rings = unsafe { &mut *RINGS.get() };
    // SAFETY: as above; every submission below is a call that returns registers or prints.
    must("batch", "RING_SETUP", unsafe {
        pv.ring_setup_rings(rings, RingMode::Doorbell, 0)
    });
    let sqe = |user_data: u64, call: Call, args: [u64; 6]| SubmissionEntry {
        user_data,
        call: call.code(),
        flags: ReservedU32::Zero,
        args,
    };
    let subs = [
        sqe(1, Call::TimeMonotonic, [0; 6]),
        sqe(2, Call::VcpuInfo, [0; 6]),
        sqe(
            3,
            Call::ConsoleWriteRegs,
            regs_args(RING_TEXT).unwrap_or_default(),
        ),
        // Not batchable: fails on purpose.
        sqe(4, Call::Negotiate, [0x1_0000, 0, 0, 0, 0, 0]),
    ];
    for s in subs {
        // SAFETY: see RING_SETUP above.
        let _ = unsafe { rings.submit(s) };
    }
    let queued = rings.sq_len();
    let consumed = must("batch", "RING_ENTER", pv.ring_enter());
    let mut got = [CompletionEntry::default(); 4];
    let mut n = 0usize;
    rings.reap(|c| {
        if n < got.len() {
            got[n] = c;
        }
        n += 1;
    });
    let ok = |c: &CompletionEntry, ud: u64| c.user_data == ud && completion_result(c).is_ok();
    let refused = completion_result(&got[3]).err().and_then(|e| e.status());
    Line::check(
        "batch",
        queued == 4
            && consumed == 4
            && n == 4
            && ok(&got[0], 1)
            && got[0].results[0] > 0
            && ok(&got[1], 2)
            && got[1].results[0] == 0
            && ok(&got[2], 3)
            && got[2].results[0] == RING_TEXT.len() as u64
            && got[3].user_data == 4
            && refused == Some(Status::NotAllowedHere),
    )
    .s("RING_SETUP (doorbell mode), 4 submissions without an exit, RING_ENTER consumed ")
    .dec(u64::from(consumed))
    .s(", ")
    .dec(n as u64)
    .s(" completions in order; #4 (NEGOTIATE) -> ")
    .s(refused.map_or("?", Status::name))
    .end();

    // Two more, announced through the ring-notify port instead of RING_ENTER.
    let port = crate::out::ring_notify_port();
    // SAFETY: see RING_SETUP above.
    unsafe {
        let _ = rings.submit(sqe(5, Call::TimeMonotonic, [0; 6]));
        let _ = rings.submit(sqe(6, Call::VcpuYield, [0; 6]));
        pvabi_guest::transport::notify_ring(port, 0);
    }
    let mut ids = [0u64; 2];
    let mut m = 0usize;
    let mut all_ok = true;
    // The write may return before the host has run the submissions (PVABI-RING-021: the
    // reference host serves it on a worker thread, without an exit): wait for them, bounded.
    let start = pvabi_guest_rt::cpu::rdtsc();
    while m < ids.len() && pvabi_guest_rt::cpu::rdtsc().wrapping_sub(start) < NOTIFY_WAIT_TICKS {
        rings.reap(|c| {
            if m < ids.len() {
                ids[m] = c.user_data;
            }
            all_ok &= completion_result(&c).is_ok();
            m += 1;
        });
        pvabi_guest_rt::cpu::pause();
    }
    Line::check("batch", m == 2 && ids == [5, 6] && all_ok)
        .s("2 more submissions, then a write of vCPU 0 to the ring-notify port ")
        .hex(u64::from(port))
        .s(": ")
        .dec(m as u64)
        .s(" completions")
        .end();
    expect_status_unit(
        "RING_SETUP again for the same pages (host-owned)",
        // SAFETY: the host refuses; nothing changes.
        unsafe { pv.ring_setup_rings(rings, RingMode::Doorbell, 0) },
        Status::AccessDenied,
    );
}

fn expect_status_unit(what: &str, r: pvabi_guest::Result<()>, want: Status) {
    crate::out::expect_status("batch", what, r, want);
}
