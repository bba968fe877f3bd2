//! Guest memory access, only through `vm_memory`: range checks, the one copy of a block, and
//! the atomic loads/stores of shared-page indices.
//!
//! Guest RAM never moves or shrinks while the VM exists, so once a range has been checked (or
//! a shared page registered after a check), accesses to it cannot fail; the write helpers
//! therefore report failure as `false` and callers that wrote to a checked page ignore it.

use std::sync::atomic::Ordering;

use pvabi_abi::convention::PAGE_SIZE;
use pvabi_abi::status::Status;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

/// Whether `[gpa, gpa + len)` is guest RAM (`len > 0`; no overflow).
pub(crate) fn in_ram(mem: &GuestMemoryMmap, gpa: u64, len: u64) -> bool {
    let Ok(len_usize) = usize::try_from(len) else {
        return false;
    };
    len > 0 && gpa.checked_add(len - 1).is_some() && mem.check_range(GuestAddress(gpa), len_usize)
}

/// Whether every page of `pages` pages from `gpa` is guest RAM.
pub(crate) fn pages_in_ram(mem: &GuestMemoryMmap, gpa: u64, pages: u64) -> bool {
    pages
        .checked_mul(PAGE_SIZE)
        .is_some_and(|len| in_ram(mem, gpa, len))
}

/// Copies `len` bytes from `gpa` once (the caller validates the copy, never guest memory).
pub(crate) fn copy_in(mem: &GuestMemoryMmap, gpa: u64, len: usize) -> Result<Vec<u8>, Status> {
    let mut buf = vec![0u8; len];
    mem.read_slice(&mut buf, GuestAddress(gpa))
        .map_err(|_| Status::InvalidAddress)?;
    Ok(buf)
}

/// Writes `bytes` at `gpa`.
pub(crate) fn write(mem: &GuestMemoryMmap, gpa: u64, bytes: &[u8]) -> bool {
    mem.write_slice(bytes, GuestAddress(gpa)).is_ok()
}

/// Atomically loads a `u32` that the guest writes (an index of a shared page).
pub(crate) fn load_u32(mem: &GuestMemoryMmap, gpa: u64) -> Option<u32> {
    mem.load(GuestAddress(gpa), Ordering::SeqCst).ok()
}

/// Atomically stores a `u32` into a shared page.
pub(crate) fn store_u32(mem: &GuestMemoryMmap, gpa: u64, value: u32) -> bool {
    mem.store(value, GuestAddress(gpa), Ordering::SeqCst)
        .is_ok()
}

/// Atomically stores a `u64` (a page-table entry: aligned, so one access).
pub(crate) fn store_u64(mem: &GuestMemoryMmap, gpa: u64, value: u64) -> bool {
    mem.store(value, GuestAddress(gpa), Ordering::SeqCst)
        .is_ok()
}
