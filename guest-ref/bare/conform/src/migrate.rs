//! Conformance test `migrate`: host events a guest cannot cause itself, asked for over the
//! verdict channel (`REQUEST tsc-offset`, then `REQUEST migrate`), and what must hold after
//! each: the time page up to date (PVABI-TIME-010) and, after a migration, the negotiated
//! version and granted features kept (PVABI-VER-013). Every check is valid whether or not the
//! host performed the event; the runner knows from the host's DONE line whether it did, and
//! turns the checks of an event that did not happen into N/A (those rules bind only a host
//! that performs it). TIME-010's third clause, after a step of the host's wall clock, is no
//! host event a guest can ask for, and this test does not cover it.
//! Runs on vCPU 0 at CPL0; vCPU 1 stays parked (it migrates too).
#![no_std]
#![no_main]

mod call;
mod channel;
mod common;

use pvabi_guest::abi::features::Features;
use pvabi_guest::abi::time::{TimePage, TIME_PAGE_TSC_VALID};
use pvabi_guest::time::{rdtsc, SharedTimePage, TimeSnapshot};
use pvabi_guest::{Call, PortTransport, Status};
use pvabi_guest_rt::{halt_forever, BootInfo};

use call::raw;
use channel::check;
use common::{now_ns as monotonic, SUCCESS};

const TEST: &str = "migrate";
/// How far a time computed from the page may be from TIME_MONOTONIC around the read: far
/// more than any host's error in pairing the counter with monotonic time, far less than a
/// change of the counters by 2^32 ticks (over a second at 4 GHz) that the page ignores.
const SLACK_NS: u64 = 100_000_000;
/// Longer than the 10 ms within which TIME-027 requires a refresh.
const WAIT_NS: u64 = 25_000_000;

static PAGE: SharedTimePage = SharedTimePage::new();

/// A consistent snapshot of the page and a TSC read inside it (retried while the host
/// writes it; `None` if it never held still).
fn snapshot() -> Option<(TimePage, u64)> {
    let p = PAGE.as_ptr() as *const TimePage;
    for _ in 0..1000 {
        // SAFETY: PAGE is the registered time page; volatile reads of memory the host writes,
        // in program order (x86 keeps loads in order).
        unsafe {
            let s1 = core::ptr::addr_of!((*p).sequence).read_volatile();
            if s1 & 1 == 1 {
                continue;
            }
            let page = p.read_volatile();
            let tsc = rdtsc();
            if core::ptr::addr_of!((*p).sequence).read_volatile() == s1 && page.sequence == s1 {
                return Some((page, tsc));
            }
        }
    }
    None
}

/// The time the page gives at `tsc`: with TSC_VALID the reader's formula (guest-ref's
/// [`TimeSnapshot::now_ns`]), without it `monotonic_ns`.
fn page_time(p: &TimePage, tsc: u64) -> u64 {
    TimeSnapshot(*p).now_ns(tsc).unwrap_or(p.monotonic_ns)
}

/// TIME-010 right after a host event: the first snapshot the guest reads once it runs again
/// (between TIME_MONOTONIC before the request, `t0`, and after the read, `t1`) is consistent
/// and gives a time in `[t0 - SLACK_NS, t1 + SLACK_NS]` (from its TSC fields if it has
/// TSC_VALID, else its `monotonic_ns`, which must not be older than the request: the host
/// wrote the page for the event). Returns the snapshot.
fn current_after_event(t: &PortTransport, name: &str, t0: u64) -> Option<TimePage> {
    let read = snapshot();
    let t1 = monotonic(t);
    let Some((p, tsc)) = read else {
        channel::fail(
            name,
            &["PVABI-TIME-010"],
            "no consistent snapshot; sequence",
            1,
        );
        return None;
    };
    let at = page_time(&p, tsc);
    let low = if p.flags & TIME_PAGE_TSC_VALID == 0 {
        t0
    } else {
        t0.saturating_sub(SLACK_NS)
    };
    check(
        name,
        &["PVABI-TIME-010"],
        at >= low && at <= t1 + SLACK_NS,
        at,
        t0,
    );
    Some(p)
}

fn main(_boot: &BootInfo) -> ! {
    // EVENTS is left out on purpose: its calls must stay NOT_GRANTED across a migration.
    let (t, _) = common::start(TEST, Features::TIME | Features::VCPU);
    // What `common::start` required, for the NEGOTIATE that must answer LOCKED.
    let required = (Features::CONSOLE | Features::SYSTEM | Features::TIME | Features::VCPU).bits();
    let version = raw(&t, Call::GetSpecVersion, &[]).results[2];
    let granted = raw(&t, Call::ProbeFeatures, &[]).results[1];
    let hz = raw(&t, Call::TimeFrequency, &[]).results[0];
    let set = raw(&t, Call::TimeSetPage, &[PAGE.gpa()]);
    if set.status != SUCCESS {
        channel::fail(
            "migrate.set_page_succeeds",
            &["PVABI-TIME-008"],
            "status",
            set.status,
        );
        channel::end(TEST)
    }
    // A TSC-valid page if the host writes one (bounded: 200 ms of monotonic time).
    let start = monotonic(&t);
    while snapshot().is_some_and(|(p, _)| p.flags & TIME_PAGE_TSC_VALID == 0)
        && monotonic(&t).wrapping_sub(start) < 200_000_000
    {}

    // `tsc-offset`: the host is to move the counters by at least 2^32 ticks against monotonic
    // time.
    let (t0, c0) = (monotonic(&t), rdtsc());
    channel::request("tsc-offset");
    let (c1, t1) = (rdtsc(), monotonic(&t));
    current_after_event(
        &t,
        "migrate.time_page_current_after_a_tsc_offset_change",
        t0,
    );
    // The ticks that passed, less those monotonic time accounts for (0 without a rate).
    let expected = ((u128::from(t1.wrapping_sub(t0)) * u128::from(hz)) / 1_000_000_000) as u64;
    let moved = c1.wrapping_sub(c0).wrapping_sub(expected);
    let moved = moved.min(moved.wrapping_neg());
    // Whether the counters moved holds only if the host performed the event, which the guest
    // cannot tell: it reports what it saw, and the runner holds the host's DONE line against
    // it (pvabi_conformance::channel::HOST_EVENT_WITNESSES: at least 2^32 ticks).
    channel::info("tsc_offset_moved", if hz != 0 { moved } else { 0 });

    // `migrate`.
    let t0 = monotonic(&t);
    channel::request("migrate");
    let after = current_after_event(&t, "migrate.time_page_current_after_migration", t0);
    let now_version = raw(&t, Call::GetSpecVersion, &[]).results[2];
    check(
        "migrate.negotiated_version_kept",
        &["PVABI-VER-013"],
        now_version == version && version != 0,
        now_version,
        version,
    );
    let now_granted = raw(&t, Call::ProbeFeatures, &[]);
    check(
        "migrate.granted_features_kept",
        &["PVABI-VER-013"],
        now_granted.status == SUCCESS && now_granted.results[1] == granted,
        now_granted.results[1],
        granted,
    );
    let granted_call = raw(&t, Call::TimeWallclock, &[]);
    check(
        "migrate.a_granted_call_still_succeeds",
        &["PVABI-VER-013"],
        granted_call.status == SUCCESS,
        granted_call.status,
        SUCCESS,
    );
    let ungranted = raw(&t, Call::EventsSetMask, &[0]);
    let not_granted = Status::NotGranted as u64;
    check(
        "migrate.an_ungranted_call_is_still_not_granted",
        &["PVABI-VER-013"],
        ungranted.status == not_granted,
        ungranted.status,
        not_granted,
    );
    let again = raw(&t, Call::Negotiate, &[0x0001_0000, required]);
    let locked = Status::Locked as u64;
    check(
        "migrate.negotiate_is_still_locked",
        &["PVABI-VER-013"],
        again.status == locked,
        again.status,
        locked,
    );
    // The target keeps the page current afterwards: an update without TSC_VALID is followed
    // by another within 10 ms of monotonic time (TIME-027); waited for with TIME_MONOTONIC.
    if let Some(first) = after {
        let start = monotonic(&t);
        while monotonic(&t).wrapping_sub(start) < WAIT_NS {}
        let later = snapshot().map(|(p, _)| p);
        let kept = first.flags & TIME_PAGE_TSC_VALID != 0
            || later.is_some_and(|l| l.sequence != first.sequence);
        check(
            "migrate.time_page_refreshed_after_migration",
            &["PVABI-TIME-010", "PVABI-TIME-027"],
            kept,
            u64::from(later.map_or(u32::MAX, |l| l.sequence)),
            u64::from(first.sequence),
        );
    }
    channel::end(TEST)
}

pvabi_guest_rt::entry!(main);

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    halt_forever()
}
