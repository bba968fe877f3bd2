//! Helpers shared by the chapter modules: guest-physical addresses, page-safe blocks and the
//! raw page behind every shared-memory helper.

use core::cell::UnsafeCell;
use core::sync::atomic::AtomicU32;

use pvabi_abi::convention::PAGE_SIZE;

/// The guest-physical address of `r`, **valid only when the guest runs identity-mapped**
/// (virtual address = guest-physical address), as the reference guests do.
///
/// A guest with any other mapping must translate the address itself; passing this value
/// then makes the host use the wrong memory. The pointer's provenance is exposed, so the
/// compiler assumes a hypercall given this address may read and write `*r`.
///
/// ```
/// let x = 5u64;
/// assert_eq!(pvabi_guest::gpa_of(&x), &x as *const u64 as usize as u64);
/// ```
#[inline]
pub fn gpa_of<T: ?Sized>(r: &T) -> u64 {
    (r as *const T).cast::<u8>() as usize as u64
}

/// A queue, ring or batch has no free slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Full;

impl core::fmt::Display for Full {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("no free slot")
    }
}

/// A memory block of at most 64 bytes, aligned to 64 so that it never crosses a 4 KiB page
/// (calls reject a block that does with CROSSES_PAGE). Use it for the structure blocks:
/// `VcpuStartState` (64 bytes) and `RingSetup` (32 bytes), e.g. on the stack.
///
/// ```
/// use pvabi_guest::{abi::vcpu::VcpuStartState, Block};
/// let state = Block::new(VcpuStartState { rip: 0x20_0000, ..Default::default() });
/// assert_eq!(pvabi_guest::gpa_of(&state) % 64, 0);
/// assert_eq!(state.0.rip, 0x20_0000);
/// ```
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Block<T>(pub T);

impl<T> Block<T> {
    const FITS: () = assert!(
        core::mem::size_of::<T>() <= 64,
        "a Block holds at most 64 bytes"
    );

    /// Wraps `value` (a compile-time error if `T` is larger than 64 bytes).
    pub const fn new(value: T) -> Self {
        #[allow(clippy::let_unit_value)]
        let () = Self::FITS;
        Block(value)
    }

    /// The block's guest-physical address under identity mapping (see [`gpa_of`]).
    pub fn gpa(&self) -> u64 {
        gpa_of(self)
    }
}

const PAGE: usize = PAGE_SIZE as usize;

/// One 4 KiB page the host may write at any time (once registered). All guest accesses go
/// through raw pointers, as atomics (indices, flags, sequence) or volatile accesses (entry
/// bodies), so no Rust reference ever claims the bytes are unchanging or exclusive.
#[repr(C, align(4096))]
pub(crate) struct RawPage(UnsafeCell<[u64; PAGE / 8]>);

// SAFETY: the page is only accessed through atomics and volatile accesses via raw pointers
// (never through references to its bytes). Methods that must not run concurrently with each
// other (a consumer's drain, a producer's push) take `&mut self` on the public wrapper types,
// which makes them exclusive on the guest side; the host is the only other party.
unsafe impl Sync for RawPage {}

impl RawPage {
    pub(crate) const fn new() -> Self {
        RawPage(UnsafeCell::new([0; PAGE / 8]))
    }

    /// The first byte of the page.
    pub(crate) const fn ptr(&self) -> *mut u8 {
        self.0.get().cast()
    }

    /// The `u32` at byte `offset` as an atomic.
    ///
    /// Panics (at compile time when inlined with a constant) unless `offset` is 4-aligned
    /// and inside the page.
    #[inline]
    pub(crate) fn atomic_u32(&self, offset: usize) -> &AtomicU32 {
        assert!(offset.is_multiple_of(4) && offset + 4 <= PAGE);
        // SAFETY: the pointer is in bounds and 4-aligned (the page is 4096-aligned), valid
        // for as long as `&self`, and the bytes live in an `UnsafeCell`. The guest accesses
        // header words only atomically (this fn is the only way to them); the host's writes
        // happen outside the Rust abstract machine, like another thread's atomic stores.
        unsafe { AtomicU32::from_ptr(self.ptr().add(offset).cast()) }
    }

    /// Volatile read of a `u32` at `offset`.
    #[inline]
    pub(crate) fn read_u32(&self, offset: usize) -> u32 {
        assert!(offset.is_multiple_of(4) && offset + 4 <= PAGE);
        // SAFETY: in bounds, aligned, initialised (the page starts zeroed); volatile because
        // the host may write it.
        unsafe { self.ptr().add(offset).cast::<u32>().read_volatile() }
    }

    /// Volatile read of a `u64` at `offset`.
    #[inline]
    pub(crate) fn read_u64(&self, offset: usize) -> u64 {
        assert!(offset.is_multiple_of(8) && offset + 8 <= PAGE);
        // SAFETY: in bounds, aligned, initialised; volatile because the host may write it.
        unsafe { self.ptr().add(offset).cast::<u64>().read_volatile() }
    }

    /// Volatile write of a `u32` at `offset`.
    #[inline]
    pub(crate) fn write_u32(&self, offset: usize, value: u32) {
        assert!(offset.is_multiple_of(4) && offset + 4 <= PAGE);
        // SAFETY: in bounds and aligned; the bytes are in an `UnsafeCell`, so writing through
        // a shared reference is allowed. Callers only write slots the protocol gives to the
        // guest at that moment (and hold `&mut` on the wrapper, so no other guest code does).
        unsafe { self.ptr().add(offset).cast::<u32>().write_volatile(value) }
    }

    /// Volatile write of a `u64` at `offset`.
    #[inline]
    pub(crate) fn write_u64(&self, offset: usize, value: u64) {
        assert!(offset.is_multiple_of(8) && offset + 8 <= PAGE);
        // SAFETY: as for `write_u32`.
        unsafe { self.ptr().add(offset).cast::<u64>().write_volatile(value) }
    }
}

/// The slot of free-running index `index` in a ring of `capacity` entries.
#[inline]
pub(crate) const fn slot(index: u32, capacity: u32) -> usize {
    (index % capacity) as usize
}

/// Where a call that must not return ended up after all: spins forever (the library has no
/// runtime to halt with; the `try_*` variants return the error instead).
pub(crate) fn hang() -> ! {
    loop {
        core::hint::spin_loop();
    }
}

/// The error of a call that does not return on success but did return.
pub(crate) fn returned(result: crate::Result<[u64; 4]>) -> crate::Error {
    match result {
        Err(e) => e,
        Ok(_) => crate::Error::UnexpectedResult(pvabi_abi::status::Status::Success.raw()),
    }
}
