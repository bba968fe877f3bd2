//! The MULTICALL_PAGES (1.3) checks of the MULTICALL tests: run by `multicall` under the host as
//! it serves, and by `multicall-preempt` under a host that preempts every batch after each
//! entry, so that every index of a three-page list, and each page boundary, is a resumption
//! point. Every batch is resumed by the guest's rule (PVABI-BATCH-019) until it returns
//! SUCCESS, so the same checks hold whether or where the host preempts.
//!
//! The batch: 89 entries on three pages listed out of address order (42, 42 and 5 entries),
//! every byte of the pages a sentinel before the entries are written, so that any write
//! outside an entry's `status` and `results` shows. Entries are EVENTS_SEND calls to this
//! vCPU (their `data` says which entry ran), unknown codes, and one nested MULTICALL_PAGES.

use pvabi_guest::abi::batch::MULTICALL_PAGE_ENTRIES;
use pvabi_guest::abi::features::Features;
use pvabi_guest::{Call, PortTransport, Status};

use crate::call::raw;
use crate::channel::{check, observe, skip};
use crate::common::{fill, rd64, wr64, Pages, PAGE, SENTINEL, SENTINEL32, SUCCESS};
use crate::mc::{entry_at, result_at, resume, set_at, status_at, Queue, Run, UNKNOWN_CODE};

const PER_PAGE: u64 = MULTICALL_PAGE_ENTRIES;
/// Two full pages and five entries on the third.
const COUNT: u64 = 2 * PER_PAGE + 5;
/// The entry that is itself a MULTICALL_PAGES (on the second page).
const NESTED: u64 = PER_PAGE + 1;
/// Where the page list lies in its page (8-aligned, not at the start).
const LIST_AT: u64 = 256;
/// An address past the end of guest RAM (a test VM has far less than 64 TiB).
const OUTSIDE_RAM: u64 = 1 << 46;

const INCOMPLETE: u64 = Status::Incomplete as u64;
const NOT_SUPPORTED: u64 = Status::NotSupported as u64;
const NOT_ALLOWED_HERE: u64 = Status::NotAllowedHere as u64;
const INVALID_PARAMETER: u64 = Status::InvalidParameter as u64;
const MISALIGNED: u64 = Status::Misaligned as u64;
const CROSSES_PAGE: u64 = Status::CrossesPage as u64;
const INVALID_ADDRESS: u64 = Status::InvalidAddress as u64;
const ACCESS_DENIED: u64 = Status::AccessDenied as u64;

/// Pages 0-2: the batch's pages (listed as 2, 0, 1); 3: the page lists; 4-6: the pages of the
/// one-copy batch.
static PAGES: Pages<7> = Pages::new();

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Send,
    Unknown,
    Nested,
}

fn kind_of(i: u64) -> Kind {
    if i == NESTED {
        Kind::Nested
    } else if i % 3 == 2 {
        Kind::Unknown
    } else {
        Kind::Send
    }
}

fn send_data(i: u64) -> u64 {
    0x4000 + i
}

/// A page list: `pages` written at `at` (in the lists' page).
fn list(at: u64, pages: &[u64]) -> u64 {
    let base = PAGES.page(3) + at;
    for (k, &p) in pages.iter().enumerate() {
        wr64(base + 8 * k as u64, p);
    }
    base
}

/// Where entry `i` lies, for the list `pages`.
fn place(pages: &[u64], i: u64) -> u64 {
    entry_at(pages[(i / PER_PAGE) as usize], i % PER_PAGE)
}

fn run_pages(t: &PortTransport, pages: &[u64], l: u64, count: u64) -> Run {
    let n = pages.len() as u64;
    // After each return, entry `next` and the last entry still hold their sentinels.
    resume(
        count,
        |from| raw(t, Call::MulticallPages, &[l, n, count, from, 0]),
        |next| {
            next >= count
                || (status_at(place(pages, next)) == u64::from(SENTINEL32)
                    && status_at(place(pages, count - 1)) == u64::from(SENTINEL32))
        },
    )
}

/// Writes the 89 entries (and sentinels over the rest of their pages).
fn write_batch(pages: &[u64], l: u64) {
    for &p in pages {
        fill(p, PAGE, 0x5a);
    }
    for i in 0..COUNT {
        let e = place(pages, i);
        match kind_of(i) {
            Kind::Send => set_at(e, Call::EventsSend.code(), &[0, send_data(i)]),
            Kind::Unknown => set_at(e, UNKNOWN_CODE, &[]),
            // NOT_ALLOWED_HERE at step 4, before its arguments (no pages, no entries) are
            // checked at step 5: a host that ran it anyway could not recurse into this batch.
            Kind::Nested => set_at(e, Call::MulticallPages.code(), &[l, 0, 0, 0, 0]),
        }
    }
}

/// Whether every entry's status is still the sentinel (no entry was processed).
fn none_processed(pages: &[u64]) -> bool {
    (0..COUNT).all(|i| status_at(place(pages, i)) == u64::from(SENTINEL32))
}

/// Runs the checks, if MULTICALL_PAGES was granted (`granted` is NEGOTIATE's answer, which
/// asked for it as optional). `queue` is the test's event queue page, which the host owns.
pub fn run(t: &PortTransport, queue: &mut Queue, granted: u64) {
    if granted & Features::MULTICALL_PAGES.bits() == 0 {
        skip(
            "multicall.pages",
            &[
                "PVABI-BATCH-015",
                "PVABI-BATCH-016",
                "PVABI-BATCH-017",
                "PVABI-BATCH-018",
            ],
            "the host did not grant MULTICALL_PAGES (a host of 1.2 or earlier does not offer it)",
        );
        return;
    }
    let pages = [PAGES.page(2), PAGES.page(0), PAGES.page(1)];
    fill(PAGES.page(3), PAGE, 0x5a);
    let l = list(LIST_AT, &pages);
    write_batch(&pages, l);

    let run = run_pages(t, &pages, l, COUNT);
    check(
        "multicall.pages_resumed_until_success_by_the_rules",
        &["PVABI-BATCH-017"],
        run.protocol && run.status == SUCCESS && run.next == COUNT,
        run.status << 32 | run.next,
        COUNT,
    );
    observe(
        "multicall.pages_calls_for_the_batch",
        &["PVABI-BATCH-007"],
        "MULTICALL_PAGES calls the host took for 89 entries on 3 pages (1: no preemption):",
        run.calls,
    );
    check(
        "multicall.pages_entries_from_next_on_are_untouched",
        &["PVABI-BATCH-017"],
        run.untouched,
        run.calls,
        0,
    );
    let wrong = (0..COUNT).find(|&i| {
        let want = match kind_of(i) {
            Kind::Send => SUCCESS,
            Kind::Unknown => NOT_SUPPORTED,
            Kind::Nested => NOT_ALLOWED_HERE,
        };
        status_at(place(&pages, i)) != want
    });
    check(
        "multicall.pages_every_entry_has_its_status_at_its_place",
        &["PVABI-BATCH-017", "PVABI-BATCH-004"],
        wrong.is_none(),
        wrong.map_or(0, |i| i << 32 | status_at(place(&pages, i))),
        0,
    );
    let bad = (0..COUNT).find(|&i| {
        let e = place(&pages, i);
        let want = if kind_of(i) == Kind::Send {
            0
        } else {
            SENTINEL
        };
        (0..4).any(|k| result_at(e, k) != want)
    });
    check(
        "multicall.pages_results_written_on_success_only",
        &["PVABI-BATCH-017"],
        bad.is_none(),
        bad.unwrap_or(0),
        0,
    );
    let (ok, seen) = queue.holds_exactly(
        (0..COUNT)
            .filter(|&i| kind_of(i) == Kind::Send)
            .map(send_data),
    );
    check(
        "multicall.pages_entries_run_once_each_in_order",
        &["PVABI-BATCH-017"],
        ok,
        seen,
        0,
    );
    // Nothing but statuses and results: the list, each page's 64 unused bytes, and the slots
    // of the last page after the last entry keep their sentinels.
    let list_kept = (0..3).all(|k| rd64(l + 8 * k) == pages[k as usize])
        && (0..PAGE / 8)
            .filter(|&w| !(LIST_AT / 8..LIST_AT / 8 + 3).contains(&w))
            .all(|w| rd64(PAGES.page(3) + 8 * w) == SENTINEL);
    let unused_kept = pages
        .iter()
        .all(|&p| (4032..PAGE).step_by(8).all(|o| rd64(p + o) == SENTINEL));
    let tail_kept = (entry_at(pages[2], COUNT % PER_PAGE)..pages[2] + 4032)
        .step_by(8)
        .all(|a| rd64(a) == SENTINEL);
    check(
        "multicall.pages_no_write_to_the_list_the_unused_bytes_or_slots_after_count",
        &["PVABI-BATCH-018"],
        list_kept && unused_kept && tail_kept,
        u64::from(list_kept) | u64::from(unused_kept) << 1 | u64::from(tail_kept) << 2,
        7,
    );

    // Step 5: `pages` must be ceil(count / 42), `start` at most `count`.
    write_batch(&pages, l);
    wr64(l + 24, PAGES.page(4));
    let refusals = [
        raw(t, Call::MulticallPages, &[l, 2, COUNT, 0, 0]).status,
        raw(t, Call::MulticallPages, &[l, 4, COUNT, 0, 0]).status,
        raw(t, Call::MulticallPages, &[l, 3, COUNT, COUNT + 1, 0]).status,
        raw(t, Call::MulticallPages, &[l, 1, PER_PAGE + 1, 0, 0]).status,
    ];
    let (ok, seen) = queue.holds_exactly(core::iter::empty());
    let first_bad = refusals.iter().position(|&s| s != INVALID_PARAMETER);
    check(
        "multicall.pages_wrong_page_count_or_start_past_count_is_invalid_parameter",
        &["PVABI-BATCH-015"],
        first_bad.is_none() && ok && none_processed(&pages),
        first_bad.map_or(seen, |k| (k as u64) << 32 | refusals[k]),
        INVALID_PARAMETER,
    );
    let r = raw(t, Call::MulticallPages, &[l, 3, COUNT, COUNT, 0]);
    check(
        "multicall.pages_start_equal_to_count_processes_nothing",
        &["PVABI-BATCH-017"],
        r.status == SUCCESS && r.results[0] == COUNT && r.results[1] == 0 && none_processed(&pages),
        r.status << 32 | r.results[0] << 16 | r.results[1],
        COUNT << 16,
    );

    // Steps 6-9 on the list itself, then on each page it names, in list order, every page
    // before any entry runs, even a page that holds only entries before `start`.
    let owned = queue.page;
    let cases: [(u64, [u64; 3], u64, u64); 7] = [
        (LIST_AT, [pages[0], pages[1] + 8, pages[2]], 0, MISALIGNED),
        (
            LIST_AT,
            [pages[0], pages[1], OUTSIDE_RAM],
            0,
            INVALID_ADDRESS,
        ),
        (LIST_AT, [pages[0], owned, pages[2]], 0, ACCESS_DENIED),
        (
            LIST_AT,
            [OUTSIDE_RAM, pages[1] + 8, pages[2]],
            0,
            INVALID_ADDRESS,
        ),
        (
            LIST_AT,
            [pages[0] + 8, OUTSIDE_RAM, pages[2]],
            0,
            MISALIGNED,
        ),
        (
            LIST_AT,
            [owned, pages[1], pages[2]],
            2 * PER_PAGE,
            ACCESS_DENIED,
        ),
        (
            LIST_AT,
            [pages[0], pages[1] + 8, pages[2]],
            2 * PER_PAGE,
            MISALIGNED,
        ),
    ];
    let mut first_bad = None;
    for (k, (at, names, start, want)) in cases.iter().enumerate() {
        let l = list(*at, names);
        let s = raw(t, Call::MulticallPages, &[l, 3, COUNT, *start, 0]).status;
        if s != *want && first_bad.is_none() {
            first_bad = Some((k as u64) << 32 | s);
        }
    }
    let l = list(LIST_AT, &pages);
    let list_checks = [
        raw(t, Call::MulticallPages, &[l + 4, 3, COUNT, 0, 0]).status == MISALIGNED,
        raw(
            t,
            Call::MulticallPages,
            &[PAGES.page(3) + PAGE - 16, 3, COUNT, 0, 0],
        )
        .status
            == CROSSES_PAGE,
        raw(t, Call::MulticallPages, &[OUTSIDE_RAM, 3, COUNT, 0, 0]).status == INVALID_ADDRESS,
    ];
    let (ok, seen) = queue.holds_exactly(core::iter::empty());
    check(
        "multicall.pages_list_then_each_page_checked_in_list_order_before_any_entry",
        &["PVABI-BATCH-016"],
        first_bad.is_none() && list_checks.iter().all(|&c| c) && ok && none_processed(&pages),
        first_bad.unwrap_or(seen),
        0,
    );

    // The one copy of the list: entry 0 (on the first page) rewrites the list's second
    // address in guest memory to a third page. Entry 42 runs from the page of the list as it
    // was copied, and its status lands there, unless the host preempted the batch before
    // entry 42 (then the resumed call copies the list afresh, as it must).
    let (x, y, z) = (PAGES.page(4), PAGES.page(5), PAGES.page(6));
    for p in [x, y, z] {
        fill(p, PAGE, 0x5a);
    }
    let l2 = list(0, &[x, y]);
    set_at(entry_at(x, 0), Call::MemUpdatePte.code(), &[l2 + 8, z, 1]);
    set_at(entry_at(y, 0), Call::EventsSend.code(), &[0, 0x5111]);
    set_at(entry_at(z, 0), Call::EventsSend.code(), &[0, 0x5333]);
    let run = run_pages(t, &[x, y], l2, PER_PAGE + 1);
    let reread = run.first.0 == INCOMPLETE && run.first.1 <= PER_PAGE;
    let (want, ran, idle) = if reread {
        (0x5333, entry_at(z, 0), entry_at(y, 0))
    } else {
        (0x5111, entry_at(y, 0), entry_at(z, 0))
    };
    let (ok, seen) = queue.holds_exactly([want].into_iter());
    check(
        "multicall.pages_run_from_the_one_copy_of_the_list",
        &["PVABI-BATCH-017", "PVABI-BATCH-011", "PVABI-CONV-019"],
        run.status == SUCCESS
            && status_at(entry_at(x, 0)) == SUCCESS
            && status_at(ran) == SUCCESS
            && status_at(idle) == u64::from(SENTINEL32)
            && ok,
        seen,
        want,
    );
}
