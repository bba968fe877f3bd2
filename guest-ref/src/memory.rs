//! Spec chapter "Memory family": sharing, ballooning, page-table updates and TLB flushes.
//!
//! Every call here that changes what guest memory holds or maps is an `unsafe fn`: the
//! compiler cannot know that a page went away, came back zeroed, or was remapped.

use pvabi_abi::calls::Call;

use crate::error::{Error, Result};
use crate::transport::Transport;
use crate::Pvabi;

impl<T: Transport> Pvabi<T> {
    /// `MEM_SHARE`: marks `pages` guest pages from guest-physical `gpa` (4 KiB-aligned) as
    /// shared with the host.
    ///
    /// # Safety
    /// The host may read and write shared pages at any time: until they are unshared, the
    /// guest must only access them in ways that tolerate that (volatile or atomic accesses,
    /// no Rust references that assume exclusive or unchanging contents).
    #[doc(alias = "MEM_SHARE")]
    pub unsafe fn mem_share(&self, gpa: u64, pages: u64) -> Result<()> {
        // SAFETY: the caller accepts the host's access to the pages (see above).
        unsafe { self.call_raw(Call::MemShare, [gpa, pages, 0, 0, 0, 0]) }.map(drop)
    }

    /// `MEM_UNSHARE`: ends the sharing of `pages` pages from guest-physical `gpa`.
    ///
    /// # Safety
    /// As for [`mem_share`](Self::mem_share): the pages' contents after unsharing are what the
    /// host left there; the guest must not rely on anything else.
    #[doc(alias = "MEM_UNSHARE")]
    pub unsafe fn mem_unshare(&self, gpa: u64, pages: u64) -> Result<()> {
        // SAFETY: see above.
        unsafe { self.call_raw(Call::MemUnshare, [gpa, pages, 0, 0, 0, 0]) }.map(drop)
    }

    /// `MEM_BALLOON_RELEASE`: gives `count` pages (1 to 512) back to the host; `list_gpa` is
    /// the guest-physical address of an 8-aligned `u64` array of page frame numbers that does
    /// not cross a page. All or nothing: the whole list is checked first. Returns the pages
    /// released.
    ///
    /// # Safety
    /// The released pages' contents are lost and their memory is no longer guest RAM until
    /// reclaimed: nothing may use them (no live Rust object, stack or page table in them).
    #[doc(alias = "MEM_BALLOON_RELEASE")]
    pub unsafe fn balloon_release(&self, list_gpa: u64, count: u64) -> Result<u64> {
        // SAFETY: the caller vouches that the listed pages are unused (see above).
        let r = unsafe { self.call_raw(Call::MemBalloonRelease, [list_gpa, count, 0, 0, 0, 0]) }?;
        at_most(r[0], count)
    }

    /// `MEM_BALLOON_RECLAIM`: takes back `count` released pages listed at `list_gpa` (as for
    /// release); they come back zeroed. A page that was not released gives INVALID_STATE.
    /// Returns the pages reclaimed.
    ///
    /// # Safety
    /// The reclaimed pages are zeroed by the host: nothing may rely on their previous contents
    /// (they should be unused since their release).
    #[doc(alias = "MEM_BALLOON_RECLAIM")]
    pub unsafe fn balloon_reclaim(&self, list_gpa: u64, count: u64) -> Result<u64> {
        // SAFETY: see above.
        let r = unsafe { self.call_raw(Call::MemBalloonReclaim, [list_gpa, count, 0, 0, 0, 0]) }?;
        at_most(r[0], count)
    }

    /// `MEM_UPDATE_PTE`: writes `value` atomically to the 8-aligned page-table entry at
    /// guest-physical `entry_gpa`, at level `level` (1 = PTE to 4 = PML4E, with 4-level and
    /// 5-level paging alike). The host writes `value` as given, whatever its bits
    /// (PVABI-MEM-021). There is no level for a PML5 entry: with 5-level paging, write PML5
    /// entries directly (PVABI-MEM-022). The entry must not be on a released page
    /// (PVABI-MEM-019). Deferrable: see [`DeferredQueue::push_update_pte`].
    ///
    /// [`DeferredQueue::push_update_pte`]: crate::batch::DeferredQueue::push_update_pte
    ///
    /// # Safety
    /// Changing a mapping changes what memory every address means: the new entry must keep
    /// every mapping that Rust code relies on valid (and the TLB must be flushed as needed).
    #[doc(alias = "MEM_UPDATE_PTE")]
    pub unsafe fn update_pte(&self, entry_gpa: u64, value: u64, level: u8) -> Result<()> {
        let args = [entry_gpa, value, u64::from(level), 0, 0, 0];
        // SAFETY: the caller vouches for the new mapping (see above).
        unsafe { self.call_raw(Call::MemUpdatePte, args) }.map(drop)
    }

    /// `MEM_FLUSH_TLB_LOCAL`: flushes the calling vCPU's TLB.
    #[doc(alias = "MEM_FLUSH_TLB_LOCAL")]
    pub fn flush_tlb_local(&self) -> Result<()> {
        // SAFETY: flushing a TLB only drops cached translations.
        unsafe { self.call_raw(Call::MemFlushTlbLocal, [0; 6]) }.map(drop)
    }

    /// `MEM_FLUSH_TLB_RANGE`: flushes `pages` (1 to 512) virtual pages from `va`
    /// (4 KiB-aligned) on every vCPU.
    #[doc(alias = "MEM_FLUSH_TLB_RANGE")]
    pub fn flush_tlb_range(&self, va: u64, pages: u64) -> Result<()> {
        // SAFETY: flushing TLBs only drops cached translations.
        unsafe { self.call_raw(Call::MemFlushTlbRange, [va, pages, 0, 0, 0, 0]) }.map(drop)
    }

    /// `MEM_FLUSH_TLB_ALL`: flushes every vCPU's whole TLB.
    #[doc(alias = "MEM_FLUSH_TLB_ALL")]
    pub fn flush_tlb_all(&self) -> Result<()> {
        // SAFETY: flushing TLBs only drops cached translations.
        unsafe { self.call_raw(Call::MemFlushTlbAll, [0; 6]) }.map(drop)
    }
}

/// A count result, which cannot exceed what was asked.
fn at_most(got: u64, asked: u64) -> Result<u64> {
    if got <= asked {
        Ok(got)
    } else {
        Err(Error::UnexpectedResult(got))
    }
}
