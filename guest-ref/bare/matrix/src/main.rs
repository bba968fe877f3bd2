//! The cross-version matrix guest (`host-ref/tests/matrix.rs`).
//!
//! It reads a guest profile from the test port, presents it to NEGOTIATE, and reports what
//! happened on one console line:
//!
//! ```text
//! matrix negotiate=<status> accepted=<version> granted=<features> steal=<status|-> pages=<status|-|BAD> timepage=<v1|v2|-|BAD>
//! ```
//!
//! | port | access | meaning |
//! | --- | --- | --- |
//! | 0x565D | `in` 32-bit, four times | `requested`, `required`, `optional`, flags (bit 0: try TIME_SET_STEAL_PAGE; bit 1: try MULTICALL_PAGES) |
//!
//! With flag bit 1 the guest builds a MULTICALL_PAGES batch of 1024 entries on 25 pages
//! (TIME_MONOTONIC, GET_SPEC_VERSION and PROBE_CALL in turn) and submits it in one call. It
//! reports `pages=SUCCESS` only if the batch ran in one exit and every entry succeeded with the
//! results its call gives: monotonic time that never goes back from one entry to the next (the
//! entries ran in order), the accepted version, and MULTICALL_PAGES ready. Any other outcome of a
//! successful call is `pages=BAD`; a refused call reports its status.
//!
//! When NEGOTIATE refuses the profile, the guest negotiates plain 1.0 (a refused NEGOTIATE
//! locks nothing), so it can still report and shut down cleanly, as a real guest that degrades
//! would. After a successful NEGOTIATE it registers the time page and checks it in the layout
//! of the accepted major: the 1.x page, or the 2.0 preview's, whose 64-bit sequence and
//! single wall-clock count a 1.x reader would misread.
#![no_std]
#![no_main]

use pvabi_guest::abi::base::CallState;
use pvabi_guest::abi::preview2::TimePageV2;
use pvabi_guest::base::NegotiateRequest;
use pvabi_guest::batch::PagedMulticall;
use pvabi_guest::time::{SharedStealPage, SharedTimePage};
use pvabi_guest::{Call, Error, Features};
use pvabi_guest_rt::port::inl;
use pvabi_guest_rt::{halt_forever, BootInfo};

const PORT_PARAM: u16 = 0x565D;
/// 2020-01-01 and 2100-01-01 in seconds since the epoch: a plausible wall clock.
const PLAUSIBLE_WALLCLOCK: core::ops::Range<u64> = 1_577_836_800..4_102_444_800;

static TIME_PAGE: SharedTimePage = SharedTimePage::new();
static STEAL_PAGE: SharedStealPage = SharedStealPage::new();
/// 25 pages of entries: room for 1050, of which the guest uses 1024.
static mut BATCH: PagedMulticall<25> = PagedMulticall::new();
/// The entries of the MULTICALL_PAGES batch.
const BATCH_ENTRIES: u64 = 1024;

/// A console line built without `core::fmt`.
struct Line {
    buf: [u8; 160],
    len: usize,
}

impl Line {
    const fn new() -> Self {
        Line {
            buf: [0; 160],
            len: 0,
        }
    }

    fn str(&mut self, s: &str) -> &mut Self {
        for &b in s.as_bytes() {
            if self.len < self.buf.len() {
                self.buf[self.len] = b;
                self.len += 1;
            }
        }
        self
    }

    fn hex(&mut self, v: u64) -> &mut Self {
        self.str("0x");
        let digits = if v == 0 {
            1
        } else {
            (67 - v.leading_zeros() as usize) / 4
        };
        for i in (0..digits).rev() {
            let d = ((v >> (i * 4)) & 0xf) as u8;
            let c = if d < 10 { b'0' + d } else { b'a' + d - 10 };
            if self.len < self.buf.len() {
                self.buf[self.len] = c;
                self.len += 1;
            }
        }
        self
    }

    fn status(&mut self, r: Result<(), Error>) -> &mut Self {
        match r {
            Ok(()) => self.str("SUCCESS"),
            Err(e) => match e.status() {
                Some(s) => self.str(s.name()),
                None => self.str("UNKNOWN"),
            },
        }
    }
}

/// Checks the registered time page in the layout of `major`.
fn time_page_ok(major: u16) -> bool {
    if major == 2 {
        let page = TIME_PAGE.as_ptr().cast::<TimePageV2>();
        // SAFETY: the page is 4096-aligned and ours; the host writes it under the sequence
        // lock; the fields are read with volatile loads and checked against the sequence.
        let (seq, wall, mono) = unsafe {
            let seq = core::ptr::addr_of!((*page).sequence).read_volatile();
            let wall = core::ptr::addr_of!((*page).wallclock_ns).read_volatile();
            let mono = core::ptr::addr_of!((*page).monotonic_ns).read_volatile();
            (seq, wall, mono)
        };
        seq != 0
            && seq & 1 == 0
            && PLAUSIBLE_WALLCLOCK.contains(&(wall / 1_000_000_000))
            && mono > 0
    } else {
        let snap = TIME_PAGE.reader().read().0;
        snap.sequence != 0
            && PLAUSIBLE_WALLCLOCK.contains(&snap.wallclock_sec)
            && snap.wallclock_nsec < 1_000_000_000
    }
}

/// Runs the 1024-entry MULTICALL_PAGES batch; `Ok(true)` if it ran in one exit with every
/// entry's expected results, `Ok(false)` if it succeeded otherwise.
fn paged_batch<T: pvabi_guest::Transport>(
    pv: &pvabi_guest::Pvabi<T>,
    accepted: u64,
) -> Result<bool, Error> {
    // SAFETY: the guest runs one vCPU and this is the only place that touches BATCH, once.
    let batch = unsafe { &mut *core::ptr::addr_of_mut!(BATCH) };
    let probe = u64::from(Call::MulticallPages.code());
    for i in 0..BATCH_ENTRIES {
        let (call, arg) = match i % 3 {
            0 => (Call::TimeMonotonic, 0),
            1 => (Call::GetSpecVersion, 0),
            _ => (Call::ProbeCall, probe),
        };
        if batch.push(call, [arg, 0, 0, 0, 0, 0]).is_err() {
            return Ok(false);
        }
    }
    // SAFETY: the entries' calls read clocks and versions and touch no memory; the guest runs
    // identity-mapped; the batch is a static the host may write during the call.
    let outcome = unsafe { pv.multicall_pages_batch(batch, 0) }?;
    if outcome.issues != 1
        || u64::from(outcome.processed) != BATCH_ENTRIES
        || u64::from(outcome.next) != BATCH_ENTRIES
    {
        return Ok(false);
    }
    let mut last_ns = 0;
    for i in 0..BATCH_ENTRIES as usize {
        let Some(Ok(r)) = batch.result(i) else {
            return Ok(false);
        };
        let good = match i % 3 {
            0 => {
                let ok = r[0] >= last_ns && r[1..] == [0, 0, 0];
                last_ns = r[0];
                ok
            }
            1 => r[2] == accepted && r[3] == 0,
            _ => r[0] == CallState::Ready as u64 && r[2..] == [0, 0],
        };
        if !good {
            return Ok(false);
        }
    }
    Ok(true)
}

fn main(_boot: &BootInfo) -> ! {
    let Some(found) = pvabi_guest::discovery::discover() else {
        halt_forever()
    };
    let pv = found.pvabi();
    // SAFETY: the test host answers these reads; reading a port has no other effect.
    let [requested, required, optional, flags] = [(); 4].map(|()| unsafe { inl(PORT_PARAM) });
    let args = [
        u64::from(requested),
        u64::from(required),
        u64::from(optional),
        0,
        0,
        0,
    ];
    // SAFETY: NEGOTIATE touches no guest memory.
    let first = unsafe { pv.call_raw(Call::Negotiate, args) };

    let mut line = Line::new();
    line.str("matrix negotiate=").status(first.map(drop));
    match first {
        Ok(r) => {
            let major = (r[0] >> 16) as u16;
            let granted = Features::from_bits_retain(r[1]);
            line.str(" accepted=").hex(r[0]).str(" granted=").hex(r[1]);
            line.str(" steal=");
            if flags & 1 != 0 {
                // SAFETY: the page is ours and stays reserved for the host from now on.
                let steal = unsafe { pv.time_set_steal_page(STEAL_PAGE.gpa()) };
                line.status(steal);
                if steal.is_ok() {
                    // A few exits, each of which the host must charge to this vCPU.
                    for _ in 0..4 {
                        let _ = pv.time_monotonic();
                    }
                    if STEAL_PAGE.read().preemptions < 4 {
                        line.str(" STEAL-NOT-COUNTED");
                    }
                }
            } else {
                line.str("-");
            }
            line.str(" pages=");
            if flags & 2 != 0 {
                match paged_batch(&pv, r[0]) {
                    Ok(true) => line.str("SUCCESS"),
                    Ok(false) => line.str("BAD"),
                    Err(e) => line.status(Err(e)),
                };
            } else {
                line.str("-");
            }
            line.str(" timepage=");
            if granted.contains(Features::TIME) {
                // SAFETY: as above, the page is handed to the host.
                let set = unsafe { pv.time_set_page(TIME_PAGE.gpa()) };
                let ok = set.is_ok() && time_page_ok(major);
                line.str(match (ok, major) {
                    (false, _) => "BAD",
                    (true, 2) => "v2",
                    (true, _) => "v1",
                });
            } else {
                line.str("-");
            }
        }
        Err(_) => {
            line.str(" accepted=- granted=- steal=- pages=- timepage=-");
            // Degrade: a refused NEGOTIATE locks nothing, so plain 1.0 must still work.
            let fallback =
                NegotiateRequest::v1(Features::CONSOLE | Features::SYSTEM, Features::empty());
            if pv.negotiate(fallback).is_err() {
                halt_forever()
            }
        }
    }
    line.str("\n");
    let _ = pv.console_write_regs(&line.buf[..line.len]);
    let _ = pv.try_shutdown(0);
    halt_forever()
}

pvabi_guest_rt::entry!(main);

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    halt_forever()
}
