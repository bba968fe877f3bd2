//! The body of the MULTICALL tests (`multicall`, and `multicall-preempt`, which the suite runs
//! under a host that preempts every batch after each entry, so that every index is a
//! resumption point). Every batch is resumed by the guest's rule (PVABI-BATCH-009) until it
//! returns SUCCESS, and each return is checked against the resumption rules; so the same
//! checks hold whether or where the host preempts.
//!
//! The effects of entries are EVENTS_SEND calls to this vCPU, whose `data` says which entry
//! ran: the event queue shows whether each ran once, in order.

use pvabi_guest::abi::batch::MULTICALL_STOP_ON_ERROR;
use pvabi_guest::abi::events::{EventKind, EVENT_MASK_VALID};
use pvabi_guest::abi::features::Features;
use pvabi_guest::transport::RawResult;
use pvabi_guest::{Call, PortTransport, Status};

use crate::call::raw;
use crate::channel::{self, check};
use crate::common::{rd32, rd64, start_optional, wr32, wr64, Pages, SENTINEL, SENTINEL32, SUCCESS};

const E_STATUS: u64 = 4;
const E_FLAGS: u64 = 8;
const E_RESERVED: u64 = 12;
const E_ARGS: u64 = 16;
const E_RESULTS: u64 = 64;
const E_SIZE: u64 = 96;
const COUNT: u64 = 32;
pub const UNKNOWN_CODE: u32 = 0xffff;
const VECTOR: u64 = 0x40;

const INCOMPLETE: u64 = Status::Incomplete as u64;
const NOT_SUPPORTED: u64 = Status::NotSupported as u64;
const INVALID_PARAMETER: u64 = Status::InvalidParameter as u64;
const NOT_ALLOWED_HERE: u64 = Status::NotAllowedHere as u64;
const NOT_GRANTED: u64 = Status::NotGranted as u64;

/// Page 0: the 32-entry batch; 1: the event queue; 2: small batches; 3: a page for the
/// calls that must not run (never registered).
static PAGES: Pages<4> = Pages::new();

fn entry(array: u64, i: u64) -> u64 {
    array + i * E_SIZE
}

/// Writes entry `i`: the call, flags and reserved as given, the arguments, and sentinels in
/// `status` and `results` (which the host writes only when it processes the entry).
fn set(array: u64, i: u64, code: u32, flags: u32, reserved: u32, args: &[u64]) {
    let e = entry(array, i);
    wr32(e, code);
    wr32(e + E_STATUS, SENTINEL32);
    wr32(e + E_FLAGS, flags);
    wr32(e + E_RESERVED, reserved);
    for k in 0..6 {
        wr64(
            e + E_ARGS + 8 * k,
            args.get(k as usize).copied().unwrap_or(0),
        );
    }
    for k in 0..4 {
        wr64(e + E_RESULTS + 8 * k, SENTINEL);
    }
}

/// The entry of slot `slot` of the entries at `page`.
pub fn entry_at(page: u64, slot: u64) -> u64 {
    page + slot * E_SIZE
}

/// Writes the entry at `e`: the call, flags and reserved 0, the arguments, and sentinels in
/// `status` and `results`.
pub fn set_at(e: u64, code: u32, args: &[u64]) {
    set(e, 0, code, 0, 0, args);
}

/// The status of the entry at `e`.
pub fn status_at(e: u64) -> u64 {
    u64::from(rd32(e + E_STATUS))
}

/// Result `k` of the entry at `e`.
pub fn result_at(e: u64, k: u64) -> u64 {
    rd64(e + E_RESULTS + 8 * k)
}

fn status_of(array: u64, i: u64) -> u64 {
    u64::from(rd32(entry(array, i) + E_STATUS))
}

fn result_of(array: u64, i: u64, k: u64) -> u64 {
    rd64(entry(array, i) + E_RESULTS + 8 * k)
}

/// How a batch went, resumed until it ended (MULTICALL or MULTICALL_PAGES).
pub struct Run {
    /// Calls made.
    pub calls: u64,
    /// Every return obeyed the resumption rules (BATCH-006, -007, -008; BATCH-017 for pages).
    pub protocol: bool,
    /// After every return, the entries from `next` on were untouched (BATCH-010).
    pub untouched: bool,
    /// The first return: `(status, next)`.
    pub first: (u64, u64),
    /// The last return's status and `next`.
    pub status: u64,
    /// The last return's `next`.
    pub next: u64,
}

/// Issues a batch of `count` entries with `issue(from)` and resumes it at each INCOMPLETE's
/// `next` until it ends (at most `2 * count` calls), checking each return's resumption rules
/// and, with `untouched(next)`, that the entries from `next` on were not written.
pub fn resume(
    count: u64,
    mut issue: impl FnMut(u64) -> RawResult,
    untouched: impl Fn(u64) -> bool,
) -> Run {
    let mut run = Run {
        calls: 0,
        protocol: true,
        untouched: true,
        first: (0, 0),
        status: 0,
        next: 0,
    };
    let mut from = 0;
    while run.calls <= 2 * count {
        let r = issue(from);
        let (next, processed) = (r.results[0], r.results[1]);
        if run.calls == 0 {
            run.first = (r.status, next);
        }
        run.calls += 1;
        run.status = r.status;
        run.next = next;
        let incomplete = r.status == INCOMPLETE;
        if r.status != SUCCESS && !incomplete {
            run.protocol = false;
            return run;
        }
        if next != from.wrapping_add(processed)
            || next > count
            || (incomplete && (processed == 0 || next >= count))
        {
            run.protocol = false;
        }
        if !untouched(next) {
            run.untouched = false;
        }
        if !incomplete || !run.protocol || next <= from {
            return run;
        }
        from = next;
    }
    run.protocol = false;
    run
}

fn run_batch(t: &PortTransport, array: u64, count: u64, flags: u64) -> Run {
    resume(
        count,
        |from| raw(t, Call::Multicall, &[array, count, from, flags]),
        |next| (next..count).all(|i| status_of(array, i) == u64::from(SENTINEL32)),
    )
}

/// The event queue, consumed by this guest: `head` is its own.
pub struct Queue {
    /// The queue's page (host-owned while registered).
    pub page: u64,
    head: u32,
}

impl Queue {
    fn tail(&self) -> u32 {
        rd32(self.page + 4)
    }

    /// The next event `(kind, source, data)`, if any, consumed.
    fn pop(&mut self) -> Option<(u32, u32, u64)> {
        if self.head == self.tail() {
            return None;
        }
        let slot = self.page + 64 + u64::from(self.head % 128) * 16;
        let event = (rd32(slot), rd32(slot + 4), rd64(slot + 8));
        self.head = self.head.wrapping_add(1);
        wr32(self.page, self.head);
        Some(event)
    }

    /// Whether the next events are exactly USER events from vCPU 0 with `data`, and no more.
    pub fn holds_exactly(&mut self, data: impl Iterator<Item = u64>) -> (bool, u64) {
        let mut ok = true;
        let mut seen = 0;
        for want in data {
            match self.pop() {
                Some((kind, 0, got)) if kind == EventKind::User as u32 && got == want => {}
                Some((_, _, got)) => {
                    ok = false;
                    seen = got;
                }
                None => {
                    ok = false;
                    seen = u64::MAX;
                }
            }
        }
        while let Some((_, _, got)) = self.pop() {
            ok = false;
            seen = got;
        }
        (ok, seen)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// GET_SPEC_VERSION: SUCCESS with the direct call's results.
    Spec,
    /// EVENTS_SEND to this vCPU: SUCCESS with no results.
    Send,
    /// Fails with the status given; its results stay as the guest wrote them.
    Fail(u64),
}

fn kind_of(i: u64) -> Kind {
    match i % 8 {
        0 => Kind::Spec,
        1 | 2 | 4 | 6 => Kind::Send,
        3 => Kind::Fail(NOT_SUPPORTED),
        5 => Kind::Fail(INVALID_PARAMETER),
        _ if i == 23 => Kind::Fail(NOT_GRANTED),
        _ => Kind::Fail(NOT_ALLOWED_HERE),
    }
}

fn send_data(i: u64) -> u64 {
    0x1000 + i
}

/// Runs the test named `test` and ends it.
pub fn run(test: &str) -> ! {
    // TIME is left out on purpose: an entry of an ungranted call checks the precedence of
    // NOT_GRANTED (step 3) over NOT_ALLOWED_HERE (step 4).
    let features = Features::MULTICALL | Features::EVENTS | Features::MEMORY;
    let (t, _, granted) = start_optional(test, features, Features::MULTICALL_PAGES);
    let (a, q, b, spare) = (PAGES.page(0), PAGES.page(1), PAGES.page(2), PAGES.page(3));
    // The queue records the entries' EVENTS_SEND; every kind masked, so no interrupt.
    // (If either fails, the checks of the entries' events fail.)
    raw(&t, Call::EventsSetQueue, &[q, VECTOR]);
    raw(&t, Call::EventsSetMask, &[EVENT_MASK_VALID]);
    let mut queue = Queue { page: q, head: 0 };

    // One batch of 32 entries, of every kind, in a pattern.
    for i in 0..COUNT {
        match kind_of(i) {
            Kind::Spec => set(a, i, Call::GetSpecVersion.code(), 0, 0, &[]),
            Kind::Send => set(a, i, Call::EventsSend.code(), 0, 0, &[0, send_data(i)]),
            Kind::Fail(NOT_SUPPORTED) => set(a, i, UNKNOWN_CODE, 0, 0, &[]),
            Kind::Fail(INVALID_PARAMETER) => {
                // An entry check comes before the call's own checks: an unknown code with
                // `reserved` set, a valid call with `flags` set.
                if i == 13 {
                    set(a, i, UNKNOWN_CODE, 0, 1, &[]);
                } else {
                    set(a, i, Call::GetSpecVersion.code(), 1 << (i % 32), 0, &[]);
                }
            }
            Kind::Fail(_) => match i {
                7 => set(
                    a,
                    i,
                    Call::Negotiate.code(),
                    0,
                    0,
                    &[0x0001_0000, features.bits()],
                ),
                15 => set(a, i, Call::Multicall.code(), 0, 0, &[b, 1, 0, 0]),
                23 => set(a, i, Call::TimeSetPage.code(), 0, 0, &[spare]),
                _ => set(a, i, Call::EventsSetQueue.code(), 0, 0, &[spare, VECTOR]),
            },
        }
    }
    let direct = raw(&t, Call::GetSpecVersion, &[]);
    let defined = Call::GetSpecVersion.descriptor().results.len() as u64;
    let run = run_batch(&t, a, COUNT, 0);
    check(
        "multicall.resumed_until_success_by_the_rules",
        &["PVABI-BATCH-006", "PVABI-BATCH-008"],
        run.protocol && run.status == SUCCESS && run.next == COUNT,
        run.status << 32 | run.next,
        COUNT,
    );
    check(
        "multicall.entries_from_next_on_are_untouched",
        &["PVABI-BATCH-010"],
        run.untouched,
        run.calls,
        0,
    );
    let mismatch = (0..COUNT).find(|&i| {
        let want = match kind_of(i) {
            Kind::Spec | Kind::Send => SUCCESS,
            Kind::Fail(s) => s,
        };
        status_of(a, i) != want
    });
    check(
        "multicall.every_entry_has_its_own_status",
        &["PVABI-BATCH-002", "PVABI-BATCH-005"],
        mismatch.is_none(),
        mismatch.map_or(0, |i| i << 32 | status_of(a, i)),
        0,
    );
    let bad_results = (0..COUNT).find(|&i| match kind_of(i) {
        Kind::Spec => (0..4).any(|k| {
            let want = if k < defined {
                direct.results[k as usize]
            } else {
                0
            };
            result_of(a, i, k) != want
        }),
        Kind::Send => (0..4).any(|k| result_of(a, i, k) != 0),
        Kind::Fail(_) => false,
    });
    check(
        "multicall.success_writes_the_results_and_zero_in_undefined_slots",
        &["PVABI-BATCH-003"],
        bad_results.is_none(),
        bad_results.unwrap_or(0),
        0,
    );
    let written = (0..COUNT).find(|&i| {
        matches!(kind_of(i), Kind::Fail(_)) && (0..4).any(|k| result_of(a, i, k) != SENTINEL)
    });
    check(
        "multicall.failed_entry_results_are_not_written",
        &["PVABI-BATCH-010"],
        written.is_none(),
        written.unwrap_or(0),
        0,
    );
    let entry_check = [5, 13, 21, 29]
        .iter()
        .all(|&i| status_of(a, i) == INVALID_PARAMETER);
    check(
        "multicall.entry_flags_or_reserved_set_is_invalid_parameter",
        &["PVABI-BATCH-004", "PVABI-STAT-011"],
        entry_check,
        status_of(a, 13),
        INVALID_PARAMETER,
    );
    let refused = [7, 15, 31]
        .iter()
        .all(|&i| status_of(a, i) == NOT_ALLOWED_HERE);
    check(
        "multicall.non_batchable_entry_is_not_allowed_here",
        &["PVABI-BATCH-004", "PVABI-STAT-004"],
        refused,
        status_of(a, 7) << 32 | status_of(a, 15),
        NOT_ALLOWED_HERE << 32 | NOT_ALLOWED_HERE,
    );
    check(
        "multicall.ungranted_entry_is_not_granted_before_its_context",
        &["PVABI-STAT-001"],
        status_of(a, 23) == NOT_GRANTED,
        status_of(a, 23),
        NOT_GRANTED,
    );
    let (ok, seen) = queue.holds_exactly(
        (0..COUNT)
            .filter(|&i| kind_of(i) == Kind::Send)
            .map(send_data),
    );
    check(
        "multicall.entries_run_once_each_in_order",
        &["PVABI-BATCH-002", "PVABI-BATCH-011"],
        ok,
        seen,
        0,
    );

    // `start` past `count`, and `start` equal to `count`.
    set(b, 0, Call::EventsSend.code(), 0, 0, &[0, 0x2000]);
    set(b, 1, Call::EventsSend.code(), 0, 0, &[0, 0x2001]);
    let r = raw(&t, Call::Multicall, &[b, 2, 3, 0]);
    check(
        "multicall.start_past_count_is_invalid_parameter",
        &["PVABI-BATCH-001"],
        r.status == INVALID_PARAMETER && status_of(b, 0) == u64::from(SENTINEL32),
        r.status,
        INVALID_PARAMETER,
    );
    let r = raw(&t, Call::Multicall, &[b, 2, 2, 0]);
    check(
        "multicall.start_equal_to_count_processes_nothing",
        &["PVABI-BATCH-006"],
        r.status == SUCCESS
            && r.results[0] == 2
            && r.results[1] == 0
            && status_of(b, 1) == u64::from(SENTINEL32),
        r.status << 32 | r.results[0] << 16 | r.results[1],
        2 << 16,
    );
    let r = raw(&t, Call::Multicall, &[b, 2, 0, 2]);
    check(
        "multicall.undefined_flag_is_invalid_parameter",
        &["PVABI-STAT-001"],
        r.status == INVALID_PARAMETER && status_of(b, 0) == u64::from(SENTINEL32),
        r.status,
        INVALID_PARAMETER,
    );
    let (ok, seen) = queue.holds_exactly(core::iter::empty());
    check(
        "multicall.a_refused_batch_runs_no_entry",
        &["PVABI-STAT-005"],
        ok,
        seen,
        0,
    );

    // STOP_ON_ERROR: the batch ends at the first failing entry, with SUCCESS.
    set(b, 0, Call::EventsSend.code(), 0, 0, &[0, 0x2000]);
    set(b, 1, UNKNOWN_CODE, 0, 0, &[]);
    set(b, 2, Call::EventsSend.code(), 0, 0, &[0, 0x2002]);
    set(b, 3, Call::EventsSend.code(), 0, 0, &[0, 0x2003]);
    let run = run_batch(&t, b, 4, MULTICALL_STOP_ON_ERROR);
    let (ran, seen) = queue.holds_exactly([0x2000].into_iter());
    check(
        "multicall.stop_on_error_ends_after_the_failing_entry",
        &["PVABI-BATCH-005", "PVABI-BATCH-006"],
        run.protocol
            && run.status == SUCCESS
            && run.next == 2
            && status_of(b, 1) == NOT_SUPPORTED
            && status_of(b, 2) == u64::from(SENTINEL32)
            && ran,
        run.status << 32 | run.next << 16 | seen,
        2 << 16,
    );

    // The one copy: entry 0 rewrites entry 1's data in guest memory. Entry 1 runs with the
    // data copied before entry 0 ran, unless the host preempted the batch between the two
    // (then the resumed MULTICALL copies entry 1 afresh).
    let patched = entry(b, 1) + E_ARGS + 8;
    set(b, 0, Call::MemUpdatePte.code(), 0, 0, &[patched, 0x3333, 1]);
    set(b, 1, Call::EventsSend.code(), 0, 0, &[0, 0x3111]);
    let run = run_batch(&t, b, 2, 0);
    let want = if run.first == (INCOMPLETE, 1) {
        0x3333
    } else {
        0x3111
    };
    let (ok, seen) = queue.holds_exactly([want].into_iter());
    check(
        "multicall.entries_run_from_the_one_copy",
        &["PVABI-BATCH-011"],
        run.protocol && status_of(b, 0) == SUCCESS && ok,
        seen,
        want,
    );
    crate::mc_pages::run(&t, &mut queue, granted);
    channel::end(test)
}
