//! Guest memory access, only through `vm_memory`: range checks, the one copy of a block, the
//! atomic loads/stores of shared-page indices, and the one seqlock writer of shared pages.
//!
//! Guest RAM never moves or shrinks while the VM exists, so once a range has been checked (or
//! a shared page registered after a check), accesses to it cannot fail; the write helpers
//! therefore report failure as `false` and callers that wrote to a checked page ignore it.

use std::sync::atomic::{fence, Ordering};

use pvabi_abi::convention::PAGE_SIZE;
use pvabi_abi::status::Status;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

/// Whether `[gpa, gpa + len)` is guest RAM (`len > 0`; no overflow).
pub(crate) fn in_ram<G: GuestMemoryBackend>(mem: &G, gpa: u64, len: u64) -> bool {
    let Ok(len_usize) = usize::try_from(len) else {
        return false;
    };
    len > 0 && gpa.checked_add(len - 1).is_some() && mem.check_range(GuestAddress(gpa), len_usize)
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
    mem.read_slice(&mut buf, GuestAddress(gpa))
        .map_err(|_| Status::InvalidAddress)?;
    Ok(buf)
}

/// Writes `bytes` at `gpa`.
pub(crate) fn write<G: GuestMemoryBackend>(mem: &G, gpa: u64, bytes: &[u8]) -> bool {
    mem.write_slice(bytes, GuestAddress(gpa)).is_ok()
}

/// Atomically loads a `u32` that the guest writes (an index of a shared page).
pub(crate) fn load_u32<G: GuestMemoryBackend>(mem: &G, gpa: u64) -> Option<u32> {
    mem.load(GuestAddress(gpa), Ordering::SeqCst).ok()
}

/// Atomically stores a `u32` into a shared page.
pub(crate) fn store_u32<G: GuestMemoryBackend>(mem: &G, gpa: u64, value: u32) -> bool {
    mem.store(value, GuestAddress(gpa), Ordering::SeqCst)
        .is_ok()
}

/// Atomically stores a `u64` (a page-table entry: aligned, so one access).
pub(crate) fn store_u64<G: GuestMemoryBackend>(mem: &G, gpa: u64, value: u64) -> bool {
    mem.store(value, GuestAddress(gpa), Ordering::SeqCst)
        .is_ok()
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
