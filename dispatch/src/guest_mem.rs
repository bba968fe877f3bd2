//! Guest memory access, only through `vm_memory`: range checks, the one copy of a block, the
//! atomic loads/stores of shared-page indices, and the one seqlock writer of shared pages.
//!
//! Guest RAM never moves or shrinks while the VM exists, so once a range has been checked (or
//! a shared page registered after a check), accesses to it cannot fail; the write helpers
//! therefore report failure as `false` and callers that wrote to a checked page ignore it.
//!
//! Every access first asks for the one [`VolatileSlice`](vm_memory::VolatileSlice) that
//! holds it (`GuestMemoryBackend::get_slice`: one region lookup, then plain loads, stores and
//! copies with the region's dirty tracking), and only a range that spans two regions takes
//! `vm_memory`'s general path (an iterator over regions, several lookups per access). The
//! blocks and entries the dispatcher touches lie within one page, and regions are whole
//! pages, so the general path is for completeness; on the hot path it was the largest single
//! cost of a trivial call (measured with `dispatch/examples/hot_path.rs`).

use std::sync::atomic::{fence, Ordering};

use pvabi_abi::convention::PAGE_SIZE;
use pvabi_abi::status::Status;
use vm_memory::bitmap::MS;
use vm_memory::{AtomicAccess, Bytes, GuestAddress, GuestMemoryBackend, VolatileSlice};

/// A range of guest memory looked up once for several accesses (a ring's or a queue's page
/// for one pass, a MULTICALL entry's status and results): offsets are relative to its start
/// and bounds-checked by `vm_memory`. A range that is not in one region (or not RAM) falls
/// back to the per-access helpers below, which answer as they always do.
pub(crate) struct Area<'a, G: GuestMemoryBackend> {
    mem: &'a G,
    gpa: u64,
    slice: Option<VolatileSlice<'a, MS<'a, G>>>,
}

impl<'a, G: GuestMemoryBackend> Area<'a, G> {
    /// `[gpa, gpa + len)`.
    pub fn new(mem: &'a G, gpa: u64, len: usize) -> Self {
        Area {
            mem,
            gpa,
            slice: mem.get_slice(GuestAddress(gpa), len).ok(),
        }
    }

    /// Writes `bytes` at `offset`.
    pub fn write(&self, offset: u64, bytes: &[u8]) -> bool {
        match (&self.slice, usize::try_from(offset)) {
            (Some(s), Ok(at)) => s.write_slice(bytes, at).is_ok(),
            _ => write(self.mem, self.gpa.wrapping_add(offset), bytes),
        }
    }

    /// Atomically loads the `u32` at `offset`.
    pub fn load_u32(&self, offset: u64) -> Option<u32> {
        match (&self.slice, usize::try_from(offset)) {
            (Some(s), Ok(at)) => s.load(at, Ordering::SeqCst).ok(),
            _ => load_u32(self.mem, self.gpa.wrapping_add(offset)),
        }
    }

    /// Atomically stores a `u32` at `offset`.
    pub fn store_u32(&self, offset: u64, value: u32) -> bool {
        match (&self.slice, usize::try_from(offset)) {
            (Some(s), Ok(at)) => s.store(value, at, Ordering::SeqCst).is_ok(),
            _ => store_u32(self.mem, self.gpa.wrapping_add(offset), value),
        }
    }

    /// Stores a `u32` at `offset` with release ordering: every write before it is visible
    /// to a reader that sees it (a ring index that publishes entries; no full barrier, so a
    /// store to a line the guest is reading does not stall the host).
    pub fn publish_u32(&self, offset: u64, value: u32) -> bool {
        match (&self.slice, usize::try_from(offset)) {
            (Some(s), Ok(at)) => s.store(value, at, Ordering::Release).is_ok(),
            _ => store_u32(self.mem, self.gpa.wrapping_add(offset), value),
        }
    }

    /// Hints the CPU to fetch the cache lines of `[offset, offset + len)` now (to read them,
    /// or to write them if `write`), so that the misses of a ring's entries overlap instead
    /// of coming one after another. No access to guest memory in the program's sense: a
    /// prefetch cannot fault, change memory or be observed by the guest.
    pub fn prefetch(&self, offset: u64, len: usize, write: bool) {
        #[cfg(target_arch = "x86_64")]
        if let (Some(s), Ok(at)) = (&self.slice, usize::try_from(offset)) {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_ET0, _MM_HINT_T0};
            let end = at.saturating_add(len).min(s.len());
            let base = s.ptr_guard().as_ptr();
            for line in (at..end).step_by(64) {
                let p = base.wrapping_add(line).cast::<i8>();
                // SAFETY: SSE is part of x86-64, so `prefetcht0`/`prefetchw` exist; a prefetch
                // is a hint that never faults and reads or writes nothing, and `p` points
                // into the slice, which this area borrows.
                unsafe {
                    if write {
                        _mm_prefetch::<_MM_HINT_ET0>(p);
                    } else {
                        _mm_prefetch::<_MM_HINT_T0>(p);
                    }
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (offset, len, write);
    }

    /// Copies `N` bytes at `offset` once (see [`copy_array`]).
    pub fn copy_array<const N: usize>(&self, offset: u64) -> Result<[u8; N], Status> {
        match (&self.slice, usize::try_from(offset)) {
            (Some(s), Ok(at)) => {
                let mut buf = [0u8; N];
                s.read_slice(&mut buf, at)
                    .map_err(|_| Status::InvalidAddress)?;
                Ok(buf)
            }
            _ => copy_array(self.mem, self.gpa.wrapping_add(offset)),
        }
    }
}

/// Whether `[gpa, gpa + len)` is guest RAM (`len > 0`; no overflow).
pub(crate) fn in_ram<G: GuestMemoryBackend>(mem: &G, gpa: u64, len: u64) -> bool {
    let Ok(len_usize) = usize::try_from(len) else {
        return false;
    };
    len > 0
        && gpa.checked_add(len - 1).is_some()
        && (mem.get_slice(GuestAddress(gpa), len_usize).is_ok()
            || mem.check_range(GuestAddress(gpa), len_usize))
}

/// Whether every page of `pages` pages from `gpa` is guest RAM.
pub(crate) fn pages_in_ram<G: GuestMemoryBackend>(mem: &G, gpa: u64, pages: u64) -> bool {
    pages
        .checked_mul(PAGE_SIZE)
        .is_some_and(|len| in_ram(mem, gpa, len))
}

/// Copies `len` bytes from `gpa` once (the caller validates the copy, never guest memory).
pub(crate) fn copy_in<G: GuestMemoryBackend>(
    mem: &G,
    gpa: u64,
    len: usize,
) -> Result<Vec<u8>, Status> {
    let mut buf = vec![0u8; len];
    read_into(mem, gpa, &mut buf)?;
    Ok(buf)
}

/// Copies `N` bytes from `gpa` once into an array on the stack (an entry of a queue or ring:
/// no allocation per entry).
pub(crate) fn copy_array<const N: usize, G: GuestMemoryBackend>(
    mem: &G,
    gpa: u64,
) -> Result<[u8; N], Status> {
    let mut buf = [0u8; N];
    read_into(mem, gpa, &mut buf)?;
    Ok(buf)
}

/// Copies `buf.len()` bytes from `gpa` into `buf`.
fn read_into<G: GuestMemoryBackend>(mem: &G, gpa: u64, buf: &mut [u8]) -> Result<(), Status> {
    match mem.get_slice(GuestAddress(gpa), buf.len()) {
        // The slice is exactly `buf.len()` bytes long, so this copies all of them.
        Ok(slice) if slice.copy_to(buf) == buf.len() => Ok(()),
        _ => mem
            .read_slice(buf, GuestAddress(gpa))
            .map_err(|_| Status::InvalidAddress),
    }
}

/// Writes `bytes` at `gpa`.
pub(crate) fn write<G: GuestMemoryBackend>(mem: &G, gpa: u64, bytes: &[u8]) -> bool {
    match mem.get_slice(GuestAddress(gpa), bytes.len()) {
        Ok(slice) => slice.write_slice(bytes, 0).is_ok(),
        Err(_) => mem.write_slice(bytes, GuestAddress(gpa)).is_ok(),
    }
}

/// An atomic store of `value` at `gpa` (aligned: one access), sequentially consistent.
fn store<T: AtomicAccess, G: GuestMemoryBackend>(mem: &G, gpa: u64, value: T) -> bool {
    match mem.get_slice(GuestAddress(gpa), size_of::<T>()) {
        Ok(slice) => slice.store(value, 0, Ordering::SeqCst).is_ok(),
        Err(_) => mem
            .store(value, GuestAddress(gpa), Ordering::SeqCst)
            .is_ok(),
    }
}

/// Atomically loads a `u32` that the guest writes (an index of a shared page).
pub(crate) fn load_u32<G: GuestMemoryBackend>(mem: &G, gpa: u64) -> Option<u32> {
    match mem.get_slice(GuestAddress(gpa), size_of::<u32>()) {
        Ok(slice) => slice.load(0, Ordering::SeqCst).ok(),
        Err(_) => mem.load(GuestAddress(gpa), Ordering::SeqCst).ok(),
    }
}

/// Atomically stores a `u32` into a shared page.
pub(crate) fn store_u32<G: GuestMemoryBackend>(mem: &G, gpa: u64, value: u32) -> bool {
    store(mem, gpa, value)
}

/// Stores a `u32` into a shared page with release ordering: every write before it is
/// visible to a reader that sees it (an index that publishes entries).
pub(crate) fn publish_u32<G: GuestMemoryBackend>(mem: &G, gpa: u64, value: u32) -> bool {
    match mem.get_slice(GuestAddress(gpa), size_of::<u32>()) {
        Ok(slice) => slice.store(value, 0, Ordering::Release).is_ok(),
        Err(_) => mem
            .store(value, GuestAddress(gpa), Ordering::Release)
            .is_ok(),
    }
}

/// Atomically stores a `u64` (a page-table entry: aligned, so one access).
pub(crate) fn store_u64<G: GuestMemoryBackend>(mem: &G, gpa: u64, value: u64) -> bool {
    store(mem, gpa, value)
}

/// The width of a shared page's sequence counter (at offset 0 of the page).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SeqWidth {
    /// A 32-bit sequence (the 1.x time page and the steal-time page).
    U32,
    /// A 64-bit sequence (the 2.0 preview's time page).
    U64,
}

/// Writes `body` at `gpa + offset` under the page's sequence lock, the writer's half of the
/// seqlock protocol the spec gives readers: make the sequence odd, fence, write the body,
/// fence, make it even again. `seq` is the host's own copy of the counter (never read back
/// from guest memory); the value written is its low 32 bits for [`SeqWidth::U32`].
pub(crate) fn seqlock_write<G: GuestMemoryBackend>(
    mem: &G,
    gpa: u64,
    seq: &mut u64,
    width: SeqWidth,
    offset: usize,
    body: &[u8],
) {
    let store = |value: u64| match width {
        SeqWidth::U32 => store_u32(mem, gpa, value as u32),
        SeqWidth::U64 => store_u64(mem, gpa, value),
    };
    *seq = seq.wrapping_add(1) | 1;
    store(*seq);
    // The odd sequence is visible before any field changes.
    fence(Ordering::Release);
    write(mem, gpa + offset as u64, body);
    fence(Ordering::Release);
    *seq = seq.wrapping_add(1);
    store(*seq);
}
