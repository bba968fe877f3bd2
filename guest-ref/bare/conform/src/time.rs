//! Conformance test `time`: the clocks and the shared time page, checked against the rules
//! they cite and reported over the verdict channel ([`channel`]). Runs on vCPU 0 at CPL0.
#![no_std]
#![no_main]

mod call;
mod channel;

use core::mem::size_of;
use core::sync::atomic::{AtomicU64, Ordering};

use pvabi_guest::abi::features::Features;
use pvabi_guest::abi::time::{TimePage, TIME_PAGE_TSC_VALID};
use pvabi_guest::discovery::discover;
use pvabi_guest::time::SharedTimePage;
use pvabi_guest::{Call, PortTransport, Status};
use pvabi_guest_rt::{ap_launch, halt_forever, run_at_cpl3, BootInfo};

use call::raw;
use channel::{check, should, skip};

const TEST: &str = "time";
const SUCCESS: u64 = Status::Success as u64;
/// Longer than the 10 ms within which TIME-027 requires a refresh.
const WAIT_NS: u64 = 25_000_000;

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

/// A second time page, for replacing the first.
static PAGE2: SharedTimePage = SharedTimePage::new();

/// The raw sequence word of `page`.
fn sequence(page: &SharedTimePage) -> u32 {
    // SAFETY: within the page; a volatile read of memory the host may write.
    unsafe { (page.as_ptr() as *const u32).read_volatile() }
}

/// Whether the host updates `page` (just registered) again: its sequence moves on from what
/// TIME_SET_PAGE left, within 2 s of monotonic time (bounded by calls, not by a spin).
fn refreshed(t: &PortTransport, page: &SharedTimePage) -> bool {
    let first = sequence(page);
    let start = monotonic(t);
    for _ in 0..1_000_000 {
        let now = sequence(page);
        if now != first && now.is_multiple_of(2) {
            return true;
        }
        if monotonic(t).wrapping_sub(start) > 2_000_000_000 {
            break;
        }
    }
    false
}

/// TIME-007's check: the old page's sequence did not move once the host was seen updating
/// the new page; a SKIP (not a PASS) if the host never updated the new page.
fn silent_check(name: &str, calls_ok: bool, refreshed: bool, still: u32, old: u32) {
    if calls_ok && !refreshed {
        skip(
            name,
            &["PVABI-TIME-007", "PVABI-CONV-039"],
            "the host did not update the new page within 2 s, so the old page's silence proves nothing",
        );
    } else {
        check(
            name,
            &["PVABI-TIME-007", "PVABI-CONV-039"],
            calls_ok && still == old,
            u64::from(still),
            u64::from(old),
        );
    }
}

/// A third time page, registered over and over while vCPU 1 watches it.
static PAGE3: SharedTimePage = SharedTimePage::new();
/// How many times PAGE3 is registered.
const REGISTRATIONS: u64 = 2000;
/// vCPU 0 to vCPU 1: the registration under way (written after PAGE3's odd sequence).
static GENERATION: AtomicU64 = AtomicU64::new(0);
/// vCPU 0 to vCPU 1: stop watching.
static STOP: AtomicU64 = AtomicU64::new(0);
/// vCPU 1 to vCPU 0: its count of torn snapshots, once it stops (`u64::MAX` until then).
static TORN: AtomicU64 = AtomicU64::new(u64::MAX);

/// Registers PAGE3 REGISTRATIONS times (replacing PAGE, then PAGE back) while vCPU 1 watches
/// it; returns vCPU 1's count of torn snapshots (`u64::MAX`: vCPU 1 did not report).
fn registrations(t: &PortTransport, port: u16) -> u64 {
    let Some(launch) = ap_launch(1, vcpu1, u64::from(port)) else {
        return u64::MAX;
    };
    let state = START_BLOCK.0.get() as u64;
    for (k, v) in [launch.rip, launch.rsp, launch.rdi, 0, 0, 0, 0, 0]
        .iter()
        .enumerate()
    {
        // SAFETY: within START_BLOCK, which only this vCPU writes.
        unsafe { (state as *mut u64).add(k).write_volatile(*v) };
    }
    if raw(t, Call::VcpuStart, &[1, state]).status != SUCCESS {
        return u64::MAX;
    }
    let seq = PAGE3.as_ptr() as *mut u32;
    for k in 1..=REGISTRATIONS {
        // SAFETY: PAGE3 is not registered here (PAGE is); the guest's store of an odd
        // sequence, then the generation, in that order (x86 keeps stores in order).
        unsafe { seq.write_volatile(u32::MAX) };
        GENERATION.store(k, Ordering::Release);
        raw(t, Call::TimeSetPage, &[PAGE3.gpa()]);
        raw(t, Call::TimeSetPage, &[PAGE.gpa()]);
    }
    STOP.store(1, Ordering::Release);
    let start = monotonic(t);
    while TORN.load(Ordering::Acquire) == u64::MAX
        && monotonic(t).wrapping_sub(start) < 5_000_000_000
    {}
    TORN.load(Ordering::Acquire)
}

/// The VcpuStartState block for vCPU 1.
#[repr(C, align(64))]
struct StartBlock(core::cell::UnsafeCell<[u64; 8]>);
// SAFETY: written by vCPU 0 before VCPU_START only.
unsafe impl Sync for StartBlock {}
static START_BLOCK: StartBlock = StartBlock(core::cell::UnsafeCell::new([0; 8]));

fn vcpu1(port: u64) -> ! {
    TORN.store(run_at_cpl3(watch_registrations, 0), Ordering::Release);
    raw(&PortTransport::new(port as u16), Call::VcpuStop, &[]);
    halt_forever()
}

/// At CPL3 on vCPU 1: snapshots of PAGE3, each between two reads of the generation; two of
/// one generation with the same even sequence other than 0 must hold the same fields.
fn watch_registrations(_: u64) -> u64 {
    let mut last: Option<(u64, u32, Fields)> = None;
    let mut torn = 0;
    while STOP.load(Ordering::Acquire) == 0 {
        let g = GENERATION.load(Ordering::Acquire);
        let Some((seq, f, _)) = read_page(PAGE3.gpa()) else {
            continue;
        };
        if GENERATION.load(Ordering::Acquire) != g || seq == 0 {
            continue;
        }
        if let Some((lg, ls, lf)) = last {
            if lg == g && ls == seq && lf != f {
                torn += 1;
            }
        }
        last = Some((g, seq, f));
    }
    torn
}

/// How many updates the CPL3 reader watches.
const OBSERVED_UPDATES: u32 = 200;
/// Updates per window of the TIME-037 measure.
const WINDOW: u32 = 20;

fn rdtsc() -> u64 {
    // SAFETY: rdtsc reads the time-stamp counter; it has no other effect.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// The fields a consistent snapshot holds (everything but `sequence` and the reserved words).
#[derive(Clone, Copy, PartialEq, Eq)]
struct Fields {
    flags: u32,
    monotonic_ns: u64,
    tsc_timestamp: u64,
    wallclock_sec: u64,
    wallclock_nsec: u32,
    tsc_shift: i32,
    tsc_mul: u32,
}

impl Fields {
    /// The reader's formula at `tsc` (wrapping delta, 96-bit product).
    fn at(&self, tsc: u64) -> u64 {
        let delta = tsc.wrapping_sub(self.tsc_timestamp);
        let delta = if self.tsc_shift >= 0 {
            delta << self.tsc_shift
        } else {
            delta >> -self.tsc_shift
        };
        self.monotonic_ns
            .wrapping_add(((u128::from(delta) * u128::from(self.tsc_mul)) >> 32) as u64)
    }
}

/// A consistent snapshot of the page at `gpa` and a TSC read inside it, or `None` while the
/// host writes it. Volatile reads, in program order (x86 keeps loads in order).
fn read_page(gpa: u64) -> Option<(u32, Fields, u64)> {
    let p = gpa as *const TimePage;
    // SAFETY: `gpa` is a registered time page (identity mapped); volatile reads of memory
    // the host writes.
    unsafe {
        let s1 = core::ptr::addr_of!((*p).sequence).read_volatile();
        if s1 & 1 == 1 {
            return None;
        }
        let f = Fields {
            flags: core::ptr::addr_of!((*p).flags).read_volatile(),
            monotonic_ns: core::ptr::addr_of!((*p).monotonic_ns).read_volatile(),
            tsc_timestamp: core::ptr::addr_of!((*p).tsc_timestamp).read_volatile(),
            wallclock_sec: core::ptr::addr_of!((*p).wallclock_sec).read_volatile(),
            wallclock_nsec: core::ptr::addr_of!((*p).wallclock_nsec).read_volatile(),
            tsc_shift: core::ptr::addr_of!((*p).tsc_shift).read_volatile(),
            tsc_mul: core::ptr::addr_of!((*p).tsc_mul).read_volatile(),
        };
        let tsc = rdtsc();
        let s2 = core::ptr::addr_of!((*p).sequence).read_volatile();
        (s1 == s2).then_some((s1, f, tsc))
    }
}

/// At CPL3: reads the page at `gpa` until it has seen OBSERVED_UPDATES updates (or about
/// ten seconds of TSC ticks at 3 GHz pass). Returns, packed: bits 63:48 the snapshots whose
/// fields differ from an earlier snapshot with the same sequence (TIME-009), 47:32 the
/// updates seen, 31:16 the best window's longest gap between TSC-valid updates in
/// microseconds of page time (0xffff: none measured), 15:0 the TSC-valid snapshots whose
/// delta does not fit or went back (TIME-031, TIME-036).
fn watch(gpa: u64) -> u64 {
    let limit = 30_000_000_000u64;
    let start = rdtsc();
    let mut last: Option<(u32, Fields)> = None;
    let (mut torn, mut updates, mut tsc_errors) = (0u64, 0u32, 0u64);
    let (mut window_max, mut best) = (0u64, u64::MAX);
    while updates < OBSERVED_UPDATES && rdtsc().wrapping_sub(start) < limit {
        let Some((seq, f, tsc)) = read_page(gpa) else {
            continue;
        };
        let valid = f.flags & TIME_PAGE_TSC_VALID != 0;
        if valid {
            let delta = tsc.wrapping_sub(f.tsc_timestamp);
            let fits = delta < 1 << 62
                && (f.tsc_shift <= 0 || delta.leading_zeros() >= f.tsc_shift as u32);
            tsc_errors += u64::from(!fits) << 8;
        }
        match last {
            Some((s, old)) if s == seq => torn += u64::from(old != f),
            Some((s, old)) => {
                updates += 1;
                let both = valid && old.flags & TIME_PAGE_TSC_VALID != 0;
                // TIME-036: never below what the previous update gives at the new stamp (the
                // update just before: one that skipped some compares with a rounding of its
                // own at each step between).
                if both && seq == s.wrapping_add(2) {
                    tsc_errors += u64::from(f.monotonic_ns < old.at(f.tsc_timestamp));
                }
                if both {
                    window_max = window_max.max(f.monotonic_ns.saturating_sub(old.monotonic_ns));
                }
                if updates.is_multiple_of(WINDOW) {
                    if window_max > 0 {
                        best = best.min(window_max);
                    }
                    window_max = 0;
                }
            }
            None => {}
        }
        last = Some((seq, f));
    }
    let best_us = if best == u64::MAX {
        0xffff
    } else {
        (best / 1000).min(0xfffe)
    };
    torn.min(0xffff) << 48 | u64::from(updates) << 32 | best_us << 16 | tsc_errors.min(0xffff)
}

/// TIME-011 and TIME-013 on a TSC-valid page, at CPL0 (a few reads: ring-0 code is
/// emulated on some hosts).
fn tsc_checks(t: &PortTransport) {
    let f = raw(t, Call::TimeFrequency, &[]);
    let (hz, resolution) = (f.results[0], f.results[1]);
    // A TSC-valid snapshot: the host may write updates without the flag now and then (a
    // loaded host that cannot take a clean TSC sample does), so look for up to a second.
    let start = monotonic(t);
    let mut p = snapshot();
    while p.flags & TIME_PAGE_TSC_VALID == 0 && monotonic(t).wrapping_sub(start) < 1_000_000_000 {
        p = snapshot();
    }
    if p.flags & TIME_PAGE_TSC_VALID == 0 {
        skip(
            "time.tsc_valid_only_with_a_constant_rate",
            &["PVABI-TIME-011"],
            "the page was TSC-valid before, but no update in a second was",
        );
        return;
    }
    // The page's nanoseconds per tick, against TIME_FREQUENCY's rate (within 1 %).
    let ns_per_gtick = if p.tsc_shift >= 0 {
        ((u128::from(p.tsc_mul) << p.tsc_shift) * 1_000_000_000) >> 32
    } else {
        ((u128::from(p.tsc_mul) >> -p.tsc_shift) * 1_000_000_000) >> 32
    };
    // 10^18 / hz in 64 bits (the bare guests keep to 64-bit division).
    let want = u128::from(1_000_000_000_000_000_000u64.checked_div(hz).unwrap_or(0));
    check(
        "time.tsc_valid_only_with_a_constant_rate",
        &["PVABI-TIME-011"],
        hz != 0 && ns_per_gtick.abs_diff(want) <= want / 100,
        ns_per_gtick as u64,
        want as u64,
    );
    let mut outside = 0;
    for _ in 0..32 {
        let t0 = monotonic(t);
        // Retried while the host writes the page (reads at CPL0 are slow on some hosts).
        let read = (0..100).find_map(|_| read_page(PAGE.gpa()));
        let t1 = monotonic(t);
        // Only snapshots with TSC_VALID: the rule binds the host's TSC fields.
        match read {
            Some((_, f, tsc)) if f.flags & TIME_PAGE_TSC_VALID != 0 => {
                let n = f.at(tsc);
                if n + resolution < t0 || n > t1 + resolution {
                    outside += 1;
                }
            }
            Some(_) => {}
            None => outside += 1,
        }
    }
    should(
        "time.page_time_lies_between_time_monotonic_calls",
        &["PVABI-TIME-013"],
        outside == 0,
        outside,
        0,
    );
}

fn main(boot: &BootInfo) -> ! {
    channel::begin(TEST);
    let Some(found) = discover() else {
        halt_forever()
    };
    channel::set_doorbell(found.info.doorbell_port);
    let port = found.info.doorbell_port;
    let t = PortTransport::new(port);
    let required = (Features::CONSOLE | Features::SYSTEM | Features::TIME | Features::VCPU).bits();
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
    // TIME-007, without a clock: after the page is replaced by PAGE2, and once the host has
    // provably updated PAGE2 (its sequence moved on), PAGE must still hold the sequence it had
    // when the replacement returned; then the same after PAGE2 is unregistered (address 0) and
    // PAGE registered again. However starved the host's refresh is, it is seen to run.
    let replaced = raw(&t, Call::TimeSetPage, &[PAGE2.gpa()]);
    let old = sequence(&PAGE);
    let seen_new = refreshed(&t, &PAGE2);
    let still = sequence(&PAGE);
    silent_check(
        "time.a_replaced_page_is_not_written",
        replaced.status == SUCCESS,
        seen_new,
        still,
        old,
    );
    let unset = raw(&t, Call::TimeSetPage, &[0]);
    let old = sequence(&PAGE2);
    let again = raw(&t, Call::TimeSetPage, &[PAGE.gpa()]);
    let seen_again = refreshed(&t, &PAGE);
    let still = sequence(&PAGE2);
    silent_check(
        "time.an_unregistered_page_is_not_written",
        unset.status == SUCCESS && again.status == SUCCESS,
        seen_again,
        still,
        old,
    );

    // TIME-009's order, seen by a reader at CPL3 (no exit: natively, at full speed) over
    // OBSERVED_UPDATES updates of the page: two consistent snapshots with the same even
    // sequence must hold the same fields. A host that makes the sequence even before it
    // writes the fields shows, in the window between, a snapshot of the old fields under
    // the new sequence, and then the new fields under it.
    let tsc_valid = snapshot().flags & TIME_PAGE_TSC_VALID != 0;
    let seen = run_at_cpl3(watch, PAGE.gpa());
    let (torn, updates) = (seen >> 48, (seen >> 32) & 0xffff);
    // With two vCPUs, also the writes TIME_SET_PAGE makes while vCPU 1 watches from CPL3:
    // REGISTRATIONS registrations of PAGE3, each made while the page holds an odd sequence
    // (the guest's, written before), so that a snapshot with an even sequence other than 0
    // comes from that registration's update, which must then be complete.
    let torn_at_registration = if boot.vcpu_count >= 2 {
        registrations(&t, port)
    } else {
        0
    };
    check(
        "time.fields_never_change_under_an_even_sequence",
        &["PVABI-TIME-009"],
        torn == 0 && torn_at_registration == 0,
        torn << 32 | torn_at_registration,
        0,
    );
    // The same reader's view of the TSC fields (TIME-031, TIME-036), and of how often a
    // TSC-valid page is updated (TIME-037, a SHOULD: the best of several windows of updates).
    let tsc_errors = seen & 0xffff;
    let best_gap_us = (seen >> 16) & 0xffff;
    if tsc_valid {
        check(
            "time.tsc_fields_give_a_delta_that_fits_and_never_goes_back",
            &["PVABI-TIME-031", "PVABI-TIME-036"],
            tsc_errors == 0,
            tsc_errors,
            0,
        );
        should(
            "time.a_tsc_valid_page_is_updated_every_10_ms",
            &["PVABI-TIME-037"],
            updates >= u64::from(WINDOW) && best_gap_us <= 10_000,
            best_gap_us,
            10_000,
        );
        tsc_checks(&t);
    } else {
        for (name, rule) in [
            (
                "time.tsc_fields_give_a_delta_that_fits_and_never_goes_back",
                "PVABI-TIME-031",
            ),
            (
                "time.a_tsc_valid_page_is_updated_every_10_ms",
                "PVABI-TIME-037",
            ),
            ("time.tsc_valid_only_with_a_constant_rate", "PVABI-TIME-011"),
            (
                "time.page_time_lies_between_time_monotonic_calls",
                "PVABI-TIME-013",
            ),
        ] {
            skip(name, &[rule], "the host leaves TIME_PAGE_TSC_VALID clear");
        }
    }
    let wall = raw(&t, Call::TimeWallclock, &[]);
    // For the runner, which holds it against its own clock (TIME-005).
    channel::info("wallclock_sec", wall.results[0]);
    channel::end(TEST)
}

pvabi_guest_rt::entry!(main);

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    halt_forever()
}
