//! Conformance test `deferred`: the deferred queue. Its header, drain points (DEFER_FLUSH, a
//! sync-point call, a failed sync-point call, MULTICALL, DEFER_SET_QUEUE), order, failure
//! records, the host's own `head`, a malformed `tail`, and indices that wrap past 2^32. The
//! queued calls are MEM_UPDATE_PTE writes of words in a page of this guest, so what ran, and
//! in which order, is in memory. Runs on vCPU 0 at CPL0.
#![no_std]
#![no_main]

mod call;
mod channel;
mod common;

use pvabi_guest::abi::features::Features;
use pvabi_guest::{Call, PortTransport, Status};
use pvabi_guest_rt::{halt_forever, BootInfo};

use call::raw;
use channel::{check, observe};
use common::{fill, rd32, rd64, start, wr32, wr64, Pages, SUCCESS};

const TEST: &str = "deferred";
const CAPACITY: u32 = 64;
const INVALID_PARAMETER: u64 = Status::InvalidParameter as u64;
const LOCKED: u64 = Status::Locked as u64;

// Header fields.
const HEAD: u64 = 0;
const TAIL: u64 = 4;
const CAP: u64 = 8;
const ERRORS: u64 = 12;
const FIRST_INDEX: u64 = 16;
const FIRST_STATUS: u64 = 20;

/// Page 0 and 3: deferred queues; 1: the words the queued calls write; 2: a MULTICALL array.
static PAGES: Pages<4> = Pages::new();

/// A deferred queue this guest produces into (its `tail` is the guest's own).
struct Queue {
    page: u64,
    tail: u32,
}

impl Queue {
    /// Queues `code(args)` with entry flags `flags` (PVABI-DEFER-001: the entry, then `tail`).
    fn push(&mut self, code: u32, flags: u32, args: [u64; 3]) {
        let slot = self.page + 64 + u64::from(self.tail % CAPACITY) * 32;
        wr32(slot, code);
        wr32(slot + 4, flags);
        for (k, a) in args.iter().enumerate() {
            wr64(slot + 8 + 8 * k as u64, *a);
        }
        self.tail = self.tail.wrapping_add(1);
        common::fence();
        wr32(self.page + TAIL, self.tail);
    }

    /// Queues MEM_UPDATE_PTE of `word` to `value`.
    fn write(&mut self, word: u64, value: u64) {
        self.push(Call::MemUpdatePte.code(), 0, [word, value, 1]);
    }

    /// Sets `tail` to `tail` (a guest that breaks the protocol, for the malformed case).
    fn set_tail(&mut self, tail: u32) {
        self.tail = tail;
        wr32(self.page + TAIL, tail);
    }

    fn field(&self, offset: u64) -> u32 {
        rd32(self.page + offset)
    }
}

/// DEFER_FLUSH: `(status, processed, failed)`.
fn flush(t: &PortTransport) -> (u64, u64, u64) {
    let r = raw(t, Call::DeferFlush, &[]);
    (r.status, r.results[0], r.results[1])
}

fn main(_boot: &BootInfo) -> ! {
    let features = Features::DEFERRED | Features::MEMORY | Features::MULTICALL | Features::EVENTS;
    let (t, _) = start(TEST, features);
    let (d, words, mc, d2) = (PAGES.page(0), PAGES.page(1), PAGES.page(2), PAGES.page(3));
    let w = |i: u64| words + 8 * i;

    // The header DEFER_SET_QUEUE writes, over a page full of garbage.
    fill(d, 4096, 0xa5);
    let s = raw(&t, Call::DeferSetQueue, &[d, 0]).status;
    let reserved_zero = (24..64).step_by(4).all(|o| rd32(d + o) == 0);
    let fresh = s == SUCCESS
        && [HEAD, TAIL, ERRORS, FIRST_INDEX, FIRST_STATUS]
            .iter()
            .all(|&f| rd32(d + f) == 0)
        && rd32(d + CAP) == CAPACITY
        && reserved_zero;
    check(
        "deferred.set_queue_writes_a_fresh_header",
        &["PVABI-DEFER-009"],
        fresh,
        s << 32 | u64::from(rd32(d + CAP)),
        u64::from(CAPACITY),
    );
    let mut q = Queue { page: d, tail: 0 };

    // Three writes of one word: only the last one's value shows that they ran in order.
    q.write(w(0), 1);
    q.write(w(0), 2);
    q.write(w(0), 3);
    let before = rd64(w(0));
    check(
        "deferred.queued_calls_do_not_run_while_the_guest_runs",
        &["PVABI-DEFER-011"],
        before == 0,
        before,
        0,
    );
    let (s, processed, failed) = flush(&t);
    let after = rd64(w(0));
    check(
        "deferred.flush_runs_the_queue_in_order_and_counts",
        &["PVABI-DEFER-003", "PVABI-DEFER-005", "PVABI-DEFER-010"],
        s == SUCCESS && processed == 3 && failed == 0 && after == 3 && q.field(HEAD) == q.tail,
        processed << 32 | after,
        3 << 32 | 3,
    );

    // A host may drain at other exits of the vCPU too (never while it runs guest code):
    // whether a call that is no sync point drained the queue is reported.
    q.write(w(0), 0x44);
    raw(&t, Call::GetSpecVersion, &[]);
    let drained = rd64(w(0)) == 0x44;
    observe(
        "deferred.a_call_that_is_no_sync_point_may_drain",
        &["PVABI-DEFER-004"],
        "GET_SPEC_VERSION (no sync point) drained the queue (1) or left it queued (0):",
        u64::from(drained),
    );
    flush(&t);

    // Drain points: a sync-point call made directly, even one that then fails.
    q.write(w(0), 4);
    let s = raw(&t, Call::MemFlushTlbLocal, &[]).status;
    let after = rd64(w(0));
    check(
        "deferred.a_sync_point_call_drains_the_queue",
        &["PVABI-DEFER-003"],
        s == SUCCESS && after == 4,
        after,
        4,
    );
    q.write(w(0), 5);
    let s = raw(&t, Call::Negotiate, &[0x0001_0000, features.bits()]).status;
    let after = rd64(w(0));
    check(
        "deferred.a_sync_point_call_that_fails_after_step_5_still_drains",
        &["PVABI-DEFER-003", "PVABI-STAT-005"],
        s == LOCKED && after == 5,
        s << 32 | after,
        LOCKED << 32 | 5,
    );

    // MULTICALL is a sync point: the queue drains before its entries run.
    q.write(w(0), 6);
    wr32(mc, Call::MemUpdatePte.code());
    for (k, v) in [w(0), 7, 1, 0, 0, 0].iter().enumerate() {
        wr64(mc + 16 + 8 * k as u64, *v);
    }
    let r = raw(&t, Call::Multicall, &[mc, 1, 0, 0]);
    let after = rd64(w(0));
    check(
        "deferred.multicall_drains_the_queue_before_its_entries",
        &["PVABI-DEFER-003"],
        r.status == SUCCESS && rd32(mc + 4) == 0 && after == 7 && q.field(HEAD) == q.tail,
        after,
        7,
    );

    // Entries that fail: an entry check, a call without a deferral class; recorded with
    // the free-running index of the first.
    let first_bad = q.tail.wrapping_add(1);
    q.write(w(1), 8);
    q.push(Call::MemUpdatePte.code(), 1, [w(1), 0xbad, 1]);
    q.push(Call::GetSpecVersion.code(), 0, [0; 3]);
    q.write(w(1), 9);
    let (s, processed, failed) = flush(&t);
    check(
        "deferred.flush_counts_what_failed",
        &["PVABI-DEFER-010", "PVABI-DEFER-006"],
        s == SUCCESS && processed == 4 && failed == 2 && rd64(w(1)) == 9,
        processed << 32 | failed,
        4 << 32 | 2,
    );
    check(
        "deferred.the_first_failure_is_recorded",
        &["PVABI-DEFER-007", "PVABI-STAT-011"],
        q.field(ERRORS) == 2
            && q.field(FIRST_INDEX) == first_bad
            && u64::from(q.field(FIRST_STATUS)) == INVALID_PARAMETER,
        u64::from(q.field(FIRST_INDEX)) << 32 | u64::from(q.field(FIRST_STATUS)),
        u64::from(first_bad) << 32 | INVALID_PARAMETER,
    );

    // A CPU-class call takes effect when the queue drains; its results are discarded.
    q.push(Call::EventsSetMask.code(), 0, [1 << 3, 0, 0]);
    let (s, processed, _) = flush(&t);
    let previous = raw(&t, Call::EventsSetMask, &[0]);
    check(
        "deferred.a_cpu_class_call_takes_effect_when_drained",
        &["PVABI-DEFER-006", "PVABI-EVT-014"],
        s == SUCCESS
            && processed == 1
            && previous.status == SUCCESS
            && previous.results[0] == 1 << 3,
        previous.results[0],
        1 << 3,
    );

    // The host keeps its own head: a guest that scribbles on it changes nothing.
    wr32(d + HEAD, q.tail.wrapping_add(20));
    q.write(w(1), 10);
    let (s, processed, _) = flush(&t);
    check(
        "deferred.the_host_keeps_its_own_head",
        &["PVABI-BATCH-012"],
        s == SUCCESS && processed == 1 && rd64(w(1)) == 10 && q.field(HEAD) == q.tail,
        processed << 32 | rd64(w(1)),
        1 << 32 | 10,
    );

    // DEFER_SET_QUEUE drains the old queue before it replaces it.
    q.write(w(1), 77);
    let s = raw(&t, Call::DeferSetQueue, &[d2, 0]).status;
    check(
        "deferred.set_queue_drains_the_old_queue",
        &["PVABI-DEFER-003"],
        s == SUCCESS && rd64(w(1)) == 77,
        s << 32 | rd64(w(1)),
        77,
    );
    let mut q = Queue { page: d2, tail: 0 };

    // A malformed tail (occupancy 65): nothing runs, the count and the first error say so,
    // and head jumps to tail.
    for _ in 0..CAPACITY {
        q.write(w(2), 11);
    }
    q.set_tail(CAPACITY + 1);
    let (s, processed, failed) = flush(&t);
    check(
        "deferred.a_malformed_tail_runs_nothing",
        &["PVABI-BATCH-013"],
        s == SUCCESS && processed == 0 && failed == 0 && rd64(w(2)) == 0,
        processed << 32 | rd64(w(2)),
        0,
    );
    check(
        "deferred.a_malformed_tail_is_counted_and_resynchronised",
        &["PVABI-BATCH-013", "PVABI-DEFER-012"],
        q.field(HEAD) == CAPACITY + 1
            && q.field(ERRORS) == CAPACITY + 1
            && q.field(FIRST_INDEX) == 0
            && u64::from(q.field(FIRST_STATUS)) == INVALID_PARAMETER,
        u64::from(q.field(HEAD)) << 32 | u64::from(q.field(ERRORS)),
        u64::from(CAPACITY + 1) << 32 | u64::from(CAPACITY + 1),
    );
    q.write(w(2), 12);
    let (s, processed, _) = flush(&t);
    check(
        "deferred.the_queue_works_again_after_resynchronising",
        &["PVABI-BATCH-013"],
        s == SUCCESS && processed == 1 && rd64(w(2)) == 12,
        processed << 32 | rd64(w(2)),
        1 << 32 | 12,
    );

    // Indices that wrap: resynchronise head just below 2^32, then queue 32 calls across it.
    q.set_tail(0xffff_fff0);
    flush(&t);
    let resynced = q.field(HEAD) == 0xffff_fff0;
    for i in 0..32 {
        q.write(w(3), 100 + i);
    }
    let (s, processed, failed) = flush(&t);
    check(
        "deferred.indices_wrap_past_2_32",
        &["PVABI-DEFER-005", "PVABI-BATCH-013"],
        resynced
            && s == SUCCESS
            && processed == 32
            && failed == 0
            && rd64(w(3)) == 131
            && q.field(HEAD) == 0x10,
        processed << 32 | rd64(w(3)),
        32 << 32 | 131,
    );

    // Without a queue, DEFER_FLUSH succeeds with nothing to do.
    let s = raw(&t, Call::DeferSetQueue, &[0, 0]).status;
    let (s2, processed, failed) = flush(&t);
    check(
        "deferred.flush_without_a_queue_succeeds_with_nothing",
        &["PVABI-DEFER-010"],
        s == SUCCESS && s2 == SUCCESS && processed == 0 && failed == 0,
        s2 << 32 | processed,
        0,
    );
    channel::end(TEST)
}

pvabi_guest_rt::entry!(main);

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    halt_forever()
}
