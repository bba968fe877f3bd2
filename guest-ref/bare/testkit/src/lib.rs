//! Raw pvabi calls and named reports to a test host, shared by the probe and hostile guests.
//!
//! Those guests make deliberately bad calls and report each raw answer to the host test that
//! drives them, which judges it; they never judge an answer themselves. What they share is
//! here:
//!
//! - [`init`] finds pvabi with CPUID and records its doorbell and ring-notify ports, and the
//!   port on which the test host takes reports; it is `unsafe`, because it is where a guest
//!   takes on the contract of every call it makes through this crate afterwards;
//! - [`raw_call`], [`call`] and [`probe`] make a call, with a full 64-bit `rax` where a test
//!   needs codes with bits 63:32 set, and [`Ret`] is what the call left in the registers;
//! - [`report`] sends a named record of four values to the test host;
//! - [`Arena`] is the guest's own memory for the calls' blocks and queues, read and written
//!   with bounds-checked volatile accesses.
//!
//! The report protocol: an `out` of 32 bits to the report port with `rdi` = the address of the
//! name, `rsi` = its length, and `r8` to `r11` = the four values (for a call: its raw status,
//! `r0`, `r1` and `r2`).
#![no_std]

use core::arch::asm;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU16, Ordering};

use pvabi_guest::abi::convention::{DOORBELL_PORT, RING_NOTIFY_PORT};
use pvabi_guest::discovery::discover;
use pvabi_guest::{Call, PortTransport};

static DOORBELL: AtomicU16 = AtomicU16::new(DOORBELL_PORT);
static NOTIFY: AtomicU16 = AtomicU16::new(RING_NOTIFY_PORT);
static REPORT: AtomicU16 = AtomicU16::new(0);
static READY: AtomicBool = AtomicBool::new(false);

/// Records `report_port` as the test host's report port, then finds pvabi with CPUID and
/// records its doorbell and ring-notify ports. Without pvabi it reports `no_pvabi` and returns
/// `false`.
///
/// # Safety
///
/// The calls of this crate ([`raw_call`], [`call`], [`probe`]) are safe functions because the
/// guest that calls `init` vouches for all of them: every address among their arguments, and
/// every address in the guest memory those point to, is memory the guest lets the host read or
/// write as the call defines (a test arena, pages given to the host), or memory outside the
/// guest's RAM, which the host must refuse. Link this crate only into test guests whose memory
/// holds nothing else a call could name. `report_port` must be a port on which the test host
/// takes reports as the crate documentation describes.
pub unsafe fn init(report_port: u16) -> bool {
    REPORT.store(report_port, Ordering::Relaxed);
    READY.store(true, Ordering::Release);
    match discover() {
        Some(d) => {
            DOORBELL.store(d.info.doorbell_port, Ordering::Relaxed);
            NOTIFY.store(d.info.ring_notify_port, Ordering::Relaxed);
            true
        }
        None => {
            report("no_pvabi", 0, 0, 0, 0);
            false
        }
    }
}

/// The doorbell port discovery gave (the reference platform's until [`init`] runs).
pub fn doorbell() -> u16 {
    DOORBELL.load(Ordering::Relaxed)
}

/// The ring-notify port discovery gave (the reference platform's until [`init`] runs).
pub fn notify_port() -> u16 {
    NOTIFY.load(Ordering::Relaxed)
}

/// What a call left in `rax` and the result registers.
#[derive(Clone, Copy, Debug)]
pub struct Ret {
    /// `rax` after the call: the raw status.
    pub st: u64,
    /// `r0` to `r3` after the call.
    pub r: [u64; 4],
}

/// A doorbell call with a full 64-bit `rax`, so that codes with bits 63:32 set can be made.
///
/// # Panics
///
/// If [`init`] has not run (it is where the guest vouches for the call's addresses).
#[inline(never)]
pub fn raw_call(rax: u64, a: [u64; 6]) -> Ret {
    assert!(
        READY.load(Ordering::Acquire),
        "pvabi-guest-testkit: call init first"
    );
    // SAFETY: the guest vouched for every address it passes when it called `init` (whose
    // contract this is), and `init` has run (asserted above).
    let r = unsafe { PortTransport::new(doorbell()).call_rax(rax, a) };
    Ret {
        st: r.status,
        r: r.results,
    }
}

/// The first six of `a` as argument registers, the rest zero.
pub fn args(a: &[u64]) -> [u64; 6] {
    let mut out = [0u64; 6];
    let mut i = 0;
    while i < a.len() && i < 6 {
        out[i] = a[i];
        i += 1;
    }
    out
}

/// Makes call `c` with the arguments `a` (missing ones zero), as [`raw_call`] does.
pub fn call(c: Call, a: &[u64]) -> Ret {
    raw_call(u64::from(c.code()), args(a))
}

/// Makes call `c` and reports its status and `r0` to `r2` under `name`.
pub fn probe(name: &str, c: Call, a: &[u64]) -> Ret {
    let r = call(c, a);
    report(name, r.st, r.r[0], r.r[1], r.r[2]);
    r
}

/// Sends the record `name`: `st`, `r0`, `r1`, `extra` to the test host's report port.
pub fn report(name: &str, st: u64, r0: u64, r1: u64, extra: u64) {
    // SAFETY: the test host reads `name` from guest memory and records the values; nothing in
    // the guest changes.
    unsafe {
        asm!("out dx, eax", in("dx") REPORT.load(Ordering::Relaxed), in("eax") 0u32,
             in("rdi") name.as_ptr() as u64, in("rsi") name.len() as u64,
             in("r8") st, in("r9") r0, in("r10") r1, in("r11") extra,
             options(nostack, preserves_flags, readonly));
    }
}

/// The size of a page of an [`Arena`].
pub const PAGE: u64 = 4096;

/// `N` page-aligned pages of guest memory (identity-mapped: an address is guest-physical),
/// which the guest, its other vCPUs and the host share. Every access is volatile, through a
/// raw pointer, and checked to lie inside the arena; no Rust reference to its bytes exists.
#[repr(C, align(4096))]
pub struct Arena<const N: usize>(UnsafeCell<[[u8; 4096]; N]>);

// SAFETY: the arena is only accessed through volatile raw-pointer accesses (the methods
// below); the host and the other vCPUs are the other parties, and no Rust reference to its
// bytes exists.
unsafe impl<const N: usize> Sync for Arena<N> {}

impl<const N: usize> Arena<N> {
    /// A zeroed arena.
    pub const fn new() -> Self {
        Arena(UnsafeCell::new([[0; 4096]; N]))
    }

    /// The address of page `i`.
    pub fn page(&self, i: usize) -> u64 {
        self.0.get() as u64 + i as u64 * PAGE
    }

    fn check(&self, addr: u64, len: u64) {
        let base = self.0.get() as u64;
        assert!(
            addr >= base && addr + len <= base + N as u64 * PAGE,
            "arena access"
        );
    }

    /// Writes a byte at `addr`.
    pub fn w8(&self, addr: u64, v: u8) {
        self.check(addr, 1);
        // SAFETY: inside the arena (checked); volatile because the host may read it any time.
        unsafe { (addr as *mut u8).write_volatile(v) }
    }

    /// Writes a 32-bit word at the 4-aligned `addr`.
    pub fn w32(&self, addr: u64, v: u32) {
        self.check(addr, 4);
        // SAFETY: as for `w8`; callers pass 4-aligned addresses.
        unsafe { (addr as *mut u32).write_volatile(v) }
    }

    /// Writes a 64-bit word at the 8-aligned `addr`.
    pub fn w64(&self, addr: u64, v: u64) {
        self.check(addr, 8);
        // SAFETY: as for `w8`; callers pass 8-aligned addresses.
        unsafe { (addr as *mut u64).write_volatile(v) }
    }

    /// Reads the 32-bit word at the 4-aligned `addr`.
    pub fn r32(&self, addr: u64) -> u32 {
        self.check(addr, 4);
        // SAFETY: inside the arena (checked), 4-aligned; volatile because the host may write it.
        unsafe { (addr as *const u32).read_volatile() }
    }

    /// Reads the 64-bit word at the 8-aligned `addr`.
    pub fn r64(&self, addr: u64) -> u64 {
        self.check(addr, 8);
        // SAFETY: inside the arena (checked), 8-aligned; volatile because the host may write it.
        unsafe { (addr as *const u64).read_volatile() }
    }
}

impl<const N: usize> Default for Arena<N> {
    fn default() -> Self {
        Arena::new()
    }
}
