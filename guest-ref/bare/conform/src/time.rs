//! Conformance test `time`: the clocks and the shared time page, checked against the rules
//! they cite and reported over the verdict channel ([`channel`]). Runs on vCPU 0 at CPL0.
#![no_std]
#![no_main]

mod call;
mod channel;

use core::mem::size_of;

use pvabi_guest::abi::features::Features;
use pvabi_guest::abi::time::{TimePage, TIME_PAGE_TSC_VALID};
use pvabi_guest::discovery::discover;
use pvabi_guest::time::SharedTimePage;
use pvabi_guest::{Call, PortTransport, Status};
use pvabi_guest_rt::{halt_forever, BootInfo};

use call::raw;
use channel::check;

const TEST: &str = "time";
const SUCCESS: u64 = Status::Success as u64;
/// Longer than the 10 ms within which TIME-027 requires a refresh.
const WAIT_NS: u64 = 25_000_000;
/// How long an unregistered page is watched for writes.
const UNREGISTERED_WAIT_NS: u64 = 100_000_000;

static PAGE: SharedTimePage = SharedTimePage::new();

fn monotonic(t: &PortTransport) -> u64 {
    raw(t, Call::TimeMonotonic, &[]).results[0]
}

/// Spins with TIME_MONOTONIC calls until `ns` have passed (bounded).
fn wait(t: &PortTransport, ns: u64) {
    let start = monotonic(t);
    for _ in 0..100_000 {
        if monotonic(t).wrapping_sub(start) >= ns {
            return;
        }
    }
}

fn snapshot() -> TimePage {
    PAGE.reader().read().0
}

fn main(_boot: &BootInfo) -> ! {
    channel::begin(TEST);
    let Some(found) = discover() else {
        halt_forever()
    };
    channel::set_doorbell(found.info.doorbell_port);
    let t = PortTransport::new(found.info.doorbell_port);
    let required = (Features::CONSOLE | Features::SYSTEM | Features::TIME).bits();
    if raw(&t, Call::Negotiate, &[0x0001_0000, required]).status != SUCCESS {
        halt_forever()
    }
    channel::go_live();

    // The clocks.
    let mut previous = 0;
    let mut decreased = 0;
    for _ in 0..64 {
        let now = monotonic(&t);
        if now < previous {
            decreased = now;
        }
        previous = now;
    }
    check(
        "time.monotonic_never_decreases",
        &["PVABI-TIME-001"],
        decreased == 0,
        decreased,
        previous,
    );
    let wall = raw(&t, Call::TimeWallclock, &[]);
    check(
        "time.wallclock_nanoseconds_below_one_second",
        &["PVABI-TIME-004"],
        wall.status == SUCCESS && wall.results[1] < 1_000_000_000,
        wall.results[1],
        999_999_999,
    );

    // The time page: registered over garbage, it must come back initialised.
    let base = PAGE.as_ptr();
    for i in 0..4096 {
        // SAFETY: `PAGE` is 4096 bytes and not yet registered.
        unsafe { base.add(i).write_volatile(0xff) };
    }
    let set = raw(&t, Call::TimeSetPage, &[PAGE.gpa()]);
    check(
        "time.set_page_succeeds",
        &["PVABI-TIME-008"],
        set.status == SUCCESS,
        set.status,
        SUCCESS,
    );
    let mut dirty = 0u64;
    for i in size_of::<TimePage>()..4096 {
        // SAFETY: within `PAGE`; a volatile read of memory the host writes.
        if unsafe { base.add(i).read_volatile() } != 0 {
            dirty += 1;
        }
    }
    check(
        "time.set_page_zeroes_the_rest_of_the_page",
        &["PVABI-TIME-008"],
        dirty == 0,
        dirty,
        0,
    );
    let first = snapshot();
    check(
        "time.page_sequence_is_even",
        &["PVABI-TIME-008", "PVABI-TIME-009"],
        first.sequence.is_multiple_of(2),
        u64::from(first.sequence),
        0,
    );
    let after = monotonic(&t);
    check(
        "time.page_is_not_ahead_of_a_later_time_monotonic",
        &["PVABI-TIME-028"],
        first.monotonic_ns <= after,
        first.monotonic_ns,
        after,
    );
    check(
        "time.page_wallclock_nanoseconds_below_one_second",
        &["PVABI-TIME-029"],
        first.wallclock_nsec < 1_000_000_000,
        u64::from(first.wallclock_nsec),
        999_999_999,
    );
    // TIME-026 without TSC_VALID (TSC fields 0), TIME-030 with it (a usable shift).
    let tsc_ok = if first.flags & TIME_PAGE_TSC_VALID == 0 {
        first.tsc_timestamp | u64::from(first.tsc_mul) | first.tsc_shift as u64 == 0
    } else {
        (-63..=63).contains(&first.tsc_shift) && first.tsc_mul != 0
    };
    check(
        "time.page_tsc_fields_agree_with_tsc_valid",
        &["PVABI-TIME-026", "PVABI-TIME-030"],
        tsc_ok,
        u64::from(first.flags),
        u64::from(first.flags),
    );
    wait(&t, WAIT_NS);
    // TIME-027: a snapshot read after a TIME_MONOTONIC call that returned `t0` is at most
    // 10 ms older than `t0`.
    let t0 = monotonic(&t);
    let later = snapshot();
    let age = t0.saturating_sub(later.monotonic_ns);
    check(
        "time.page_is_refreshed_within_10_ms",
        &["PVABI-TIME-027"],
        later.flags & TIME_PAGE_TSC_VALID != 0 || age <= 10_000_000,
        age,
        10_000_000,
    );
    check(
        "time.page_monotonic_never_decreases",
        &["PVABI-TIME-012"],
        later.monotonic_ns >= first.monotonic_ns,
        later.monotonic_ns,
        first.monotonic_ns,
    );
    let again = raw(&t, Call::TimeSetPage, &[PAGE.gpa()]);
    check(
        "time.registering_the_page_again_is_access_denied",
        &["PVABI-CONV-023"],
        again.status == Status::AccessDenied as u64,
        again.status,
        Status::AccessDenied as u64,
    );
    let unset = raw(&t, Call::TimeSetPage, &[0]);
    let seq = snapshot().sequence;
    // Long enough that a host which went on writing the page would have written it even with
    // its refresh thread starved on a loaded machine (a TSC-valid page is rewritten at least
    // every few milliseconds of the thread's own time).
    wait(&t, UNREGISTERED_WAIT_NS);
    let still = snapshot().sequence;
    check(
        "time.an_unregistered_page_is_not_written",
        &["PVABI-TIME-007", "PVABI-CONV-039"],
        unset.status == SUCCESS && still == seq,
        u64::from(still),
        u64::from(seq),
    );
    channel::end(TEST)
}

pvabi_guest_rt::entry!(main);

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    halt_forever()
}
