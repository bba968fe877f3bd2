//! What every test guest but `base` shares: the start of a test (discovery and NEGOTIATE,
//! after which the verdict channel is live), raw volatile access to the pages a test gives
//! the host, and bounded waits. Not every test uses every item.
#![allow(dead_code)]

use core::cell::UnsafeCell;

use pvabi_guest::abi::features::Features;
use pvabi_guest::discovery::{discover, Discovery};
use pvabi_guest::{Call, PortTransport, Status};
use pvabi_guest_rt::halt_forever;

use crate::call::raw;
use crate::channel;

/// SUCCESS as the raw status word.
pub const SUCCESS: u64 = Status::Success as u64;
/// The size of a page.
pub const PAGE: u64 = 4096;
/// What a test writes where it expects the host not to write.
pub const SENTINEL: u64 = 0x5a5a_5a5a_5a5a_5a5a;
/// A 32-bit sentinel.
pub const SENTINEL32: u32 = 0x5a5a_5a5a;

/// Begins test `test`: BEGIN, discovery, NEGOTIATE of 1.0 requiring `features` (with CONSOLE
/// and SYSTEM, which the channel needs); from then on the channel writes to the console. A
/// host that cannot be discovered or negotiated with gets no verdict: the guest halts, and
/// the run is a CRASH.
pub fn start(test: &str, features: Features) -> (PortTransport, Discovery) {
    channel::begin(test);
    let Some(found) = discover() else {
        halt_forever()
    };
    channel::set_doorbell(found.info.doorbell_port);
    let t = PortTransport::new(found.info.doorbell_port);
    let required = (features | Features::CONSOLE | Features::SYSTEM).bits();
    if raw(&t, Call::Negotiate, &[0x0001_0000, required]).status != SUCCESS {
        halt_forever()
    }
    channel::go_live();
    (t, found)
}

/// [`start`], asking for `optional` features too; also returns the granted features.
pub fn start_optional(
    test: &str,
    required: Features,
    optional: Features,
) -> (PortTransport, Discovery, u64) {
    channel::begin(test);
    let Some(found) = discover() else {
        halt_forever()
    };
    channel::set_doorbell(found.info.doorbell_port);
    let t = PortTransport::new(found.info.doorbell_port);
    let required = (required | Features::CONSOLE | Features::SYSTEM).bits();
    let r = raw(
        &t,
        Call::Negotiate,
        &[0x0001_0000, required, optional.bits()],
    );
    if r.status != SUCCESS {
        halt_forever()
    }
    channel::go_live();
    (t, found, r.results[1])
}

/// `N` page-aligned pages in a static, owned by one test.
#[repr(C, align(4096))]
pub struct Pages<const N: usize>(UnsafeCell<[[u8; 4096]; N]>);

// SAFETY: the pages are only accessed through volatile reads and writes at addresses the
// test computes, by the vCPUs and host calls the test coordinates.
unsafe impl<const N: usize> Sync for Pages<N> {}

impl<const N: usize> Pages<N> {
    /// Zeroed pages.
    pub const fn new() -> Self {
        Pages(UnsafeCell::new([[0; 4096]; N]))
    }

    /// The guest-physical address of page `i` (the guests run identity mapped).
    pub fn page(&self, i: usize) -> u64 {
        self.0.get() as u64 + i as u64 * PAGE
    }
}

/// Writes the byte at `gpa`.
pub fn wr8(gpa: u64, value: u8) {
    // SAFETY: as in `rd32`.
    unsafe { (gpa as *mut u8).write_volatile(value) }
}

/// Reads the `u32` at `gpa` (volatile: the host may have written it).
pub fn rd32(gpa: u64) -> u32 {
    // SAFETY: the tests pass addresses inside their own `Pages` (identity mapped).
    unsafe { (gpa as *const u32).read_volatile() }
}

/// Writes the `u32` at `gpa`.
pub fn wr32(gpa: u64, value: u32) {
    // SAFETY: as in `rd32`.
    unsafe { (gpa as *mut u32).write_volatile(value) }
}

/// Reads the `u64` at `gpa`.
pub fn rd64(gpa: u64) -> u64 {
    // SAFETY: as in `rd32`.
    unsafe { (gpa as *const u64).read_volatile() }
}

/// Writes the `u64` at `gpa`.
pub fn wr64(gpa: u64, value: u64) {
    // SAFETY: as in `rd32`.
    unsafe { (gpa as *mut u64).write_volatile(value) }
}

/// Fills `len` bytes at `gpa` with `byte`.
pub fn fill(gpa: u64, len: u64, byte: u8) {
    let word = u64::from_ne_bytes([byte; 8]);
    let mut at = gpa;
    while at < gpa + len {
        wr64(at, word);
        at += 8;
    }
}

/// A full barrier (a guest's side of the shared-page protocols).
pub fn fence() {
    core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
}

/// Monotonic nanoseconds (TIME_MONOTONIC; needs `TIME` granted).
pub fn now_ns(t: &PortTransport) -> u64 {
    raw(t, Call::TimeMonotonic, &[]).results[0]
}

/// Waits up to `ms` milliseconds of monotonic time for `done`, sleeping in VCPU_HALT with
/// 1 ms timeouts between looks (an exit per look, never a spin of emulated ring-0 code; HALT
/// returns at once while an event is pending, so the bound is time, not looks). Needs `TIME`
/// and `VCPU` granted.
pub fn wait_ms(t: &PortTransport, ms: u64, mut done: impl FnMut() -> bool) -> bool {
    let end = now_ns(t) + ms * 1_000_000;
    loop {
        if done() {
            return true;
        }
        if now_ns(t) > end {
            return done();
        }
        raw(t, Call::VcpuHalt, &[1_000_000]);
    }
}
