//! The body of the conformance tests `compat-1.x` and `compat-2.0`, which the suite runs
//! under a host serving 1.3 and the 2.0 preview: each negotiates one major and checks that
//! the time page, the one shared structure whose layout differs between the majors, is laid
//! out as that major defines it (PVABI-COMPAT-003). The wall clock the page carries is held
//! to TIME_WALLCLOCK's answer (registers, the same in both majors): in the other major's
//! layout the words there are the TSC timestamp and the multiplier, so a page in the wrong
//! layout fails. Runs on vCPU 0 at CPL0 with a handful of calls.

use pvabi_guest::abi::features::Features;
use pvabi_guest::abi::preview2::TIME_PAGE_V2_TSC_VALID;
use pvabi_guest::abi::time::TIME_PAGE_TSC_VALID;
use pvabi_guest::discovery::discover;
use pvabi_guest::{Call, PortTransport, Status};
use pvabi_guest_rt::halt_forever;

use crate::call::raw;
use crate::channel;
use crate::common::{fence, rd64, Pages, SUCCESS};

static PAGE: Pages<1> = Pages::new();

/// The time page's eight words, read under its sequence lock (`wide`: the 2.0 preview's
/// 64-bit sequence, else 1.x's 32-bit one); `None` if it never held still.
fn snapshot(gpa: u64, wide: bool) -> Option<[u64; 8]> {
    let seq = |w: u64| if wide { w } else { w & 0xffff_ffff };
    for _ in 0..1000 {
        let before = seq(rd64(gpa));
        fence();
        let mut w = [0u64; 8];
        for (i, word) in w.iter_mut().enumerate() {
            *word = rd64(gpa + 8 * i as u64);
        }
        fence();
        if before.is_multiple_of(2) && seq(rd64(gpa)) == before {
            return Some(w);
        }
    }
    None
}

/// Runs test `test`, negotiating major `major` (1 or 2).
pub fn run(test: &str, major: u64) -> ! {
    channel::begin(test);
    let Some(found) = discover() else {
        halt_forever()
    };
    channel::set_doorbell(found.info.doorbell_port);
    let t = PortTransport::new(found.info.doorbell_port);
    let required = (Features::CONSOLE | Features::SYSTEM | Features::TIME).bits();
    let (check, accepts) = if major == 2 {
        (
            "compat-2.0.time_page_in_the_layout_of_major_2",
            "compat-2.0.negotiate_accepts_the_requested_major",
        )
    } else {
        (
            "compat-1.x.time_page_in_the_layout_of_major_1",
            "compat-1.x.negotiate_accepts_the_requested_major",
        )
    };
    let r = raw(&t, Call::Negotiate, &[major << 16, required]);
    if r.status != SUCCESS {
        // A host that does not serve this major: the rule binds only a host that serves more
        // than one, and the test can still report once it has negotiated 1.x.
        if r.status != Status::VersionUnsupported as u64
            || raw(&t, Call::Negotiate, &[0x0001_0000, required]).status != SUCCESS
        {
            halt_forever()
        }
        channel::go_live();
        channel::skip(
            check,
            &["PVABI-COMPAT-003"],
            "the host does not serve this major: the rule binds only a host that serves more than one major",
        );
        channel::end(test)
    }
    channel::go_live();
    let accepted = r.results[0] >> 16;
    channel::check(
        accepts,
        &["PVABI-COMPAT-003"],
        accepted == major,
        accepted,
        major,
    );
    let gpa = PAGE.page(0);
    let set = raw(&t, Call::TimeSetPage, &[gpa]).status;
    let wall = raw(&t, Call::TimeWallclock, &[]);
    let sec = wall.results[0];
    let page = snapshot(gpa, major == 2);
    let (ok, seen) = match page {
        None => (false, 0),
        Some(w) if major == 2 => {
            // sequence u64 | monotonic_ns | wallclock_ns | tsc_timestamp | tsc_mul |
            // flags u32, reserved0 u32 | reserved[2]
            let wall_sec = w[2] / 1_000_000_000;
            let flags = w[5] & 0xffff_ffff;
            (
                w[0] > 0
                    && wall_sec.abs_diff(sec) <= 2
                    && flags & !u64::from(TIME_PAGE_V2_TSC_VALID) == 0
                    && w[5] >> 32 == 0
                    && w[6] == 0
                    && w[7] == 0,
                wall_sec,
            )
        }
        Some(w) => {
            // sequence u32, flags u32 | monotonic_ns | tsc_timestamp | wallclock_sec |
            // wallclock_nsec u32, tsc_shift i32 | tsc_mul u32, reserved0 u32 | reserved[2]
            let flags = w[0] >> 32;
            (
                w[0] & 0xffff_ffff > 0
                    && flags & !u64::from(TIME_PAGE_TSC_VALID) == 0
                    && w[3].abs_diff(sec) <= 2
                    && (w[4] & 0xffff_ffff) < 1_000_000_000
                    && w[5] >> 32 == 0
                    && w[6] == 0
                    && w[7] == 0,
                w[3],
            )
        }
    };
    channel::check(
        check,
        &["PVABI-COMPAT-003"],
        set == SUCCESS && wall.status == SUCCESS && ok,
        seen,
        sec,
    );
    // Unregister the page, so that the host stops writing it.
    let _ = raw(&t, Call::TimeSetPage, &[0]);
    channel::end(test)
}
