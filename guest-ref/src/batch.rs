//! Spec chapter "Batching, deferral and rings".
//!
//! Three ways to make many calls with fewer exits:
//!
//! - **MULTICALL** runs an array of [`MulticallEntry`]s in one exit, with a status and results
//!   per entry. A host may preempt a long batch (INCOMPLETE with a resume index);
//!   [`Pvabi::multicall_all`] re-issues it until it is done. [`Multicall`] is a page-aligned
//!   entry array to build batches in.
//! - **MULTICALL_PAGES** (1.3, feature `MULTICALL_PAGES`) does the same for up to 4096
//!   entries in one exit, 42 to a page on a list of pages: build the batch in a
//!   [`PagedMulticall`] and run it with [`Pvabi::multicall_pages_batch`].
//! - The **deferred queue** ([`DeferredQueue`]) holds calls of a deferral class (page-table
//!   updates, timer, event mask). The host runs them on `DEFER_FLUSH` and before any sync-point
//!   call of the vCPU, in queue order, without an exit per entry.
//! - The **rings** ([`Rings`]) are a submission/completion ring pair: the guest submits
//!   without exiting and rings the doorbell (`RING_ENTER`, or the ring-notify port) only when
//!   needed; in host-polled mode only when the host says it went to sleep.
//!
//! # Memory ordering
//!
//! Producer side (deferred queue tail, submission ring tail): the entry is written with
//! volatile stores, then the producer index is published with a release store (an `xchg`,
//! a full barrier, for the submission ring: see [`Rings::need_wakeup`]). The consumer index
//! the other side publishes is loaded with acquire ordering before a slot is reused.
//! Consumer side (completion ring): the host's tail is loaded with acquire ordering before
//! the entries are read, and the guest's head is stored with release ordering after.
//! No `mfence`/`lfence` is used (hosts that emulate ring-0 code may not emulate them): full
//! barriers are locked instructions (`xchg`).

use core::mem::offset_of;
use core::sync::atomic::Ordering;

use pvabi_abi::batch::{
    multicall_pages_for, CompletionEntry, DeferredEntry, DeferredQueueHeader, MulticallEntry,
    MulticallPage, RingHeader, RingMode, RingSetup, SubmissionEntry, CQ_CAPACITY,
    DEFERRED_ENTRIES_OFFSET, DEFERRED_QUEUE_CAPACITY, MULTICALL_MAX_ENTRIES,
    MULTICALL_PAGES_MAX_PAGES, MULTICALL_PAGE_ENTRIES, MULTICALL_STOP_ON_ERROR,
    RING_ENTRIES_OFFSET, SQ_CAPACITY, SQ_NEED_WAKEUP,
};
use pvabi_abi::calls::{Call, DeferClass};
use pvabi_abi::convention::{ReservedU32, ReservedU64};
use pvabi_abi::status::Status;

use crate::error::{Error, Result};
use crate::shared::{gpa_of, slot, Block, Full, RawPage};
use crate::transport::Transport;
use crate::Pvabi;

// ---------------------------------------------------------------------------------------
// MULTICALL

/// One MULTICALL issue's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MulticallStep {
    /// The index after the last processed entry (`count` when all are done; less with
    /// STOP_ON_ERROR at a failing entry, or when preempted).
    pub next: u32,
    /// Entries processed by this issue.
    pub processed: u32,
    /// The host preempted the batch (status INCOMPLETE): re-issue with `start = next`.
    pub incomplete: bool,
}

/// A whole batch's outcome, over every re-issue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MulticallOutcome {
    /// The index after the last processed entry: `count` unless STOP_ON_ERROR stopped at the
    /// failing entry `next - 1`.
    pub next: u32,
    /// Entries processed over all issues.
    pub processed: u32,
    /// How many MULTICALL calls it took (1 + the number of INCOMPLETE answers).
    pub issues: u32,
}

/// A batch of up to `N` MULTICALL entries (`N` at most 32), page-aligned so the entry array
/// never crosses a page. Build it, run it with [`Pvabi::multicall_batch`], then read each
/// entry's outcome with [`result`](Self::result).
///
/// ```
/// use pvabi_guest::{batch::Multicall, Call};
/// let mut batch = Multicall::<4>::new();
/// assert_eq!(batch.push(Call::TimeMonotonic, [0; 6]), Ok(0));
/// assert_eq!(batch.push(Call::VcpuInfo, [0; 6]), Ok(1));
/// assert_eq!(batch.len(), 2);
/// assert_eq!(batch.gpa() % 4096, 0);
/// ```
#[repr(C, align(4096))]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Multicall<const N: usize> {
    entries: [MulticallEntry; N],
    len: usize,
}

const EMPTY_ENTRY: MulticallEntry = MulticallEntry {
    call: 0,
    status: 0,
    flags: ReservedU32::Zero,
    reserved: ReservedU32::Zero,
    args: [0; 6],
    results: [0; 4],
};

impl<const N: usize> Multicall<N> {
    const FITS: () = assert!(
        N >= 1 && N as u64 <= MULTICALL_MAX_ENTRIES,
        "a MULTICALL batch holds 1 to 32 entries"
    );

    /// An empty batch (a compile-time error unless `1 <= N <= 32`).
    pub const fn new() -> Self {
        #[allow(clippy::let_unit_value)]
        let () = Self::FITS;
        Multicall {
            entries: [EMPTY_ENTRY; N],
            len: 0,
        }
    }

    /// Appends a call; returns its index. The host answers NOT_ALLOWED_HERE in the entry's
    /// status for a call that is not batchable (see `CallDescriptor::batchable`).
    pub fn push(&mut self, call: Call, args: [u64; 6]) -> core::result::Result<usize, Full> {
        self.push_code(call.code(), args)
    }

    /// Appends any call code (including ones this crate does not know); returns its index.
    pub fn push_code(&mut self, code: u32, args: [u64; 6]) -> core::result::Result<usize, Full> {
        let index = self.len;
        let entry = self.entries.get_mut(index).ok_or(Full)?;
        *entry = MulticallEntry {
            call: code,
            args,
            ..EMPTY_ENTRY
        };
        self.len += 1;
        Ok(index)
    }

    /// The number of entries.
    pub const fn len(&self) -> usize {
        self.len
    }

    /// True when the batch has no entry.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Removes every entry.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// The entries (with the host's `status` and `results` after a run).
    pub fn entries(&self) -> &[MulticallEntry] {
        &self.entries[..self.len]
    }

    /// The entry array's guest-physical address under identity mapping (see [`gpa_of`]).
    pub fn gpa(&self) -> u64 {
        gpa_of(&self.entries)
    }

    /// Entry `index`'s outcome after a run: its results on SUCCESS (0 in the slots the call
    /// does not define), its error otherwise (the host does not write a failed entry's
    /// results). Entries the run did not reach keep status 0 and zero results, so check
    /// [`MulticallOutcome::next`] first. `None` if there is no such entry.
    pub fn result(&self, index: usize) -> Option<Result<[u64; 4]>> {
        self.entries()
            .get(index)
            .map(|e| Error::check(u64::from(e.status)).map(|()| e.results))
    }
}

impl<const N: usize> Default for Multicall<N> {
    fn default() -> Self {
        Multicall::new()
    }
}

// ---------------------------------------------------------------------------------------
// MULTICALL_PAGES

/// One entry page of a [`PagedMulticall`]: a [`MulticallPage`] at a 4096-aligned address.
#[repr(C, align(4096))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct EntryPage(MulticallPage);

/// The page list of a [`PagedMulticall`]: room for the largest list (98 addresses, 784 bytes),
/// aligned to 1024 so that it never crosses a page.
#[repr(C, align(1024))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PageList([u64; MULTICALL_PAGES_MAX_PAGES as usize]);

const PER_PAGE: usize = MULTICALL_PAGE_ENTRIES as usize;

const EMPTY_PAGE: EntryPage = EntryPage(MulticallPage {
    entries: [EMPTY_ENTRY; PER_PAGE],
    unused: [0; 64],
});

/// A MULTICALL_PAGES batch (pvabi 1.3) of up to `P * 42` entries on `P` pages (`P` from 1 to
/// 98: up to 4096 entries), with its page list. Build it with [`push`](Self::push), run it
/// with [`Pvabi::multicall_pages_batch`] (one exit for the whole batch, unless the host
/// preempts it), then read each entry's outcome with [`result`](Self::result).
///
/// Entry `i` lies on page `i / 42` at byte offset `96 * (i % 42)`; every page is 4096-aligned,
/// so no entry and no part of the list crosses a page. At 4 KiB a page it is large: put it in
/// a `static` (a bare-metal guest's `.bss`) rather than on a small stack.
///
/// ```
/// use pvabi_guest::{batch::PagedMulticall, Call};
/// let mut batch = Box::new(PagedMulticall::<25>::new()); // 25 pages: 1050 entries
/// assert_eq!(batch.capacity(), 1050);
/// for _ in 0..1024 {
///     batch.push(Call::VcpuInfo, [0; 6]).unwrap();
/// }
/// assert_eq!((batch.len(), batch.pages()), (1024, 25));
/// assert_eq!(batch.entry_gpa(42) % 4096, 0); // entry 42 starts the second page
/// ```
#[repr(C, align(4096))]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PagedMulticall<const P: usize> {
    pages: [EntryPage; P],
    list: PageList,
    len: usize,
}

impl<const P: usize> PagedMulticall<P> {
    const FITS: () = assert!(
        P >= 1 && P as u64 <= MULTICALL_PAGES_MAX_PAGES,
        "a MULTICALL_PAGES batch has 1 to 98 pages"
    );

    /// An empty batch (a compile-time error unless `1 <= P <= 98`).
    pub const fn new() -> Self {
        #[allow(clippy::let_unit_value)]
        let () = Self::FITS;
        PagedMulticall {
            pages: [EMPTY_PAGE; P],
            list: PageList([0; MULTICALL_PAGES_MAX_PAGES as usize]),
            len: 0,
        }
    }

    /// The most entries the batch holds: `42 * P`, at most 4096.
    pub const fn capacity(&self) -> usize {
        let c = P * PER_PAGE;
        let max = pvabi_abi::batch::MULTICALL_PAGES_MAX_ENTRIES as usize;
        if c < max {
            c
        } else {
            max
        }
    }

    /// Appends a call; returns its index. The host answers NOT_ALLOWED_HERE in the entry's
    /// status for a call that is not batchable (see `CallDescriptor::batchable`).
    pub fn push(&mut self, call: Call, args: [u64; 6]) -> core::result::Result<usize, Full> {
        self.push_code(call.code(), args)
    }

    /// Appends any call code (including ones this crate does not know); returns its index.
    pub fn push_code(&mut self, code: u32, args: [u64; 6]) -> core::result::Result<usize, Full> {
        let index = self.len;
        if index >= self.capacity() {
            return Err(Full);
        }
        let entry = self
            .pages
            .get_mut(index / PER_PAGE)
            .and_then(|p| p.0.entries.get_mut(index % PER_PAGE))
            .ok_or(Full)?;
        *entry = MulticallEntry {
            call: code,
            args,
            ..EMPTY_ENTRY
        };
        self.len += 1;
        Ok(index)
    }

    /// The number of entries.
    pub const fn len(&self) -> usize {
        self.len
    }

    /// True when the batch has no entry.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Removes every entry.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// The number of pages the entries fill (MULTICALL_PAGES's `pages` argument).
    pub const fn pages(&self) -> usize {
        multicall_pages_for(self.len as u64) as usize
    }

    /// Entry `index` (with the host's `status` and `results` after a run).
    pub fn entry(&self, index: usize) -> Option<&MulticallEntry> {
        if index >= self.len {
            return None;
        }
        self.pages
            .get(index / PER_PAGE)
            .and_then(|p| p.0.entries.get(index % PER_PAGE))
    }

    /// Entry `index`'s guest-physical address under identity mapping (see [`gpa_of`]).
    pub fn entry_gpa(&self, index: usize) -> u64 {
        gpa_of(&self.pages[index / PER_PAGE])
            + (index % PER_PAGE * size_of::<MulticallEntry>()) as u64
    }

    /// Entry `index`'s outcome after a run, as for [`Multicall::result`]: its results on
    /// SUCCESS, its error otherwise; entries the run did not reach keep status 0 and zero
    /// results. `None` if there is no such entry.
    pub fn result(&self, index: usize) -> Option<Result<[u64; 4]>> {
        self.entry(index)
            .map(|e| Error::check(u64::from(e.status)).map(|()| e.results))
    }

    /// Writes the page list for the current entries (the address of each page in use, under
    /// identity mapping) and returns `(list_gpa, pages)`, MULTICALL_PAGES's first two
    /// arguments.
    pub fn prepare_list(&mut self) -> (u64, u64) {
        let pages = self.pages();
        for k in 0..pages {
            self.list.0[k] = gpa_of(&self.pages[k]);
        }
        (gpa_of(&self.list), pages as u64)
    }
}

impl<const P: usize> Default for PagedMulticall<P> {
    fn default() -> Self {
        PagedMulticall::new()
    }
}

// ---------------------------------------------------------------------------------------
// Deferred queue

const DQ_HEAD: usize = offset_of!(DeferredQueueHeader, head);
const DQ_TAIL: usize = offset_of!(DeferredQueueHeader, tail);
const DQ_ERROR_COUNT: usize = offset_of!(DeferredQueueHeader, error_count);
const DQ_FIRST_ERROR_INDEX: usize = offset_of!(DeferredQueueHeader, first_error_index);
const DQ_FIRST_ERROR_STATUS: usize = offset_of!(DeferredQueueHeader, first_error_status);
const DQ_ENTRIES: usize = DEFERRED_ENTRIES_OFFSET as usize;
const DQ_ENTRY_SIZE: usize = core::mem::size_of::<DeferredEntry>();

/// Why a call could not be queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeferError {
    /// The queue is full: flush it (`DEFER_FLUSH`) and push again.
    Full,
    /// The call has no deferral class (the host would record NOT_ALLOWED_HERE).
    NotDeferrable(Call),
}

impl From<Full> for DeferError {
    fn from(_: Full) -> Self {
        DeferError::Full
    }
}

/// The failures the host recorded while running deferred entries (since registration).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DeferErrors {
    /// Entries that failed.
    pub count: u32,
    /// Free-running queue index (not slot) of the first entry that failed; for a queue the
    /// host found malformed (more than 64 entries waiting), the host's `head` at that drain.
    pub first_index: u32,
    /// Raw status of the first entry that failed.
    pub first_status: u32,
}

impl DeferErrors {
    /// The first failure's error; `None` when nothing failed.
    pub fn first_error(&self) -> Option<Error> {
        if self.count == 0 {
            None
        } else {
            Error::from_raw(u64::from(self.first_status))
        }
    }
}

/// DEFER_FLUSH's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DeferFlush {
    /// Entries run by this flush.
    pub processed: u32,
    /// Entries of this flush that failed (see [`DeferredQueue::errors`]).
    pub failed: u32,
}

/// A deferred-queue page: 4 KiB, 4 KiB-aligned, zeroed; register it with
/// [`Pvabi::defer_set_queue`]. The guest writes entries and `tail`; the host runs entries
/// `head..tail` on `DEFER_FLUSH` and when a sync-point call made directly by the vCPU has passed
/// its register checks (not for MULTICALL entries or ring submissions), so at most 64 entries
/// wait. A `tail` more than 64 ahead of `head` makes the host run nothing and count every
/// index as failed. Pushing fails with [`Full`] when 64 entries wait: flush, then push again
/// ([`Pvabi::defer`] does both).
///
/// ```
/// use pvabi_guest::batch::DeferredQueue;
/// let mut q = DeferredQueue::new();
/// for i in 0..64 {
///     q.push_set_timer(1_000 + i).unwrap();
/// }
/// assert_eq!(q.push_set_timer(0), Err(pvabi_guest::Full)); // flush first
/// assert_eq!(q.len(), 64);
/// ```
#[repr(C, align(4096))]
pub struct DeferredQueue {
    page: RawPage,
}

impl DeferredQueue {
    /// An empty queue page.
    pub const fn new() -> Self {
        DeferredQueue {
            page: RawPage::new(),
        }
    }

    /// The page's guest-physical address under identity mapping (see [`gpa_of`]).
    pub fn gpa(&self) -> u64 {
        gpa_of(self)
    }

    /// The page's first byte, for code that simulates the host (tests) or maps it elsewhere.
    pub const fn as_ptr(&self) -> *mut u8 {
        self.page.ptr()
    }

    /// Entries waiting to run (`tail - head`).
    pub fn len(&self) -> u32 {
        let tail = self.page.atomic_u32(DQ_TAIL).load(Ordering::Relaxed);
        tail.wrapping_sub(self.page.atomic_u32(DQ_HEAD).load(Ordering::Acquire))
    }

    /// True when no entry waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True when a push would fail with [`Full`].
    pub fn is_full(&self) -> bool {
        self.len() >= DEFERRED_QUEUE_CAPACITY
    }

    /// The failures the host recorded.
    pub fn errors(&self) -> DeferErrors {
        DeferErrors {
            count: self.page.atomic_u32(DQ_ERROR_COUNT).load(Ordering::Acquire),
            first_index: self.page.read_u32(DQ_FIRST_ERROR_INDEX),
            first_status: self.page.read_u32(DQ_FIRST_ERROR_STATUS),
        }
    }

    /// Queues a call of a deferral class (`MEM_UPDATE_PTE`, `TIME_SET_TIMER`,
    /// `EVENTS_SET_MASK`) with its three arguments.
    ///
    /// # Safety
    /// The host runs the entry at the vCPU's next flush or sync point, which safe code may
    /// trigger: the call must be sound to make then (see the call's wrapper, e.g.
    /// [`Pvabi::update_pte`]).
    pub unsafe fn push(
        &mut self,
        call: Call,
        args: [u64; 3],
    ) -> core::result::Result<(), DeferError> {
        if call.descriptor().deferral == DeferClass::None {
            return Err(DeferError::NotDeferrable(call));
        }
        let entry = DeferredEntry {
            call: call.code(),
            flags: ReservedU32::Zero,
            args,
        };
        // SAFETY: forwarded to the caller.
        unsafe { self.push_entry(entry) }.map_err(DeferError::from)
    }

    /// Queues any entry, without checking its deferral class (for conformance tests: the host
    /// records NOT_ALLOWED_HERE for a call that has none).
    ///
    /// # Safety
    /// As for [`push`](Self::push).
    pub unsafe fn push_entry(&mut self, entry: DeferredEntry) -> core::result::Result<(), Full> {
        let tail = self.page.atomic_u32(DQ_TAIL).load(Ordering::Relaxed);
        // Acquire: the host has finished reading the slots it consumed.
        let head = self.page.atomic_u32(DQ_HEAD).load(Ordering::Acquire);
        if tail.wrapping_sub(head) >= DEFERRED_QUEUE_CAPACITY {
            return Err(Full);
        }
        let at = DQ_ENTRIES + slot(tail, DEFERRED_QUEUE_CAPACITY) * DQ_ENTRY_SIZE;
        self.page
            .write_u32(at + offset_of!(DeferredEntry, call), entry.call);
        self.page
            .write_u32(at + offset_of!(DeferredEntry, flags), 0);
        for (i, arg) in entry.args.iter().enumerate() {
            self.page
                .write_u64(at + offset_of!(DeferredEntry, args) + 8 * i, *arg);
        }
        // Release: the entry is written before the host can see the new tail.
        self.page
            .atomic_u32(DQ_TAIL)
            .store(tail.wrapping_add(1), Ordering::Release);
        Ok(())
    }

    /// Queues `TIME_SET_TIMER(deadline_ns)` (no memory effect, so safe).
    pub fn push_set_timer(&mut self, deadline_ns: u64) -> core::result::Result<(), Full> {
        let entry = DeferredEntry {
            call: Call::TimeSetTimer.code(),
            flags: ReservedU32::Zero,
            args: [deadline_ns, 0, 0],
        };
        // SAFETY: TIME_SET_TIMER only changes the vCPU's timer.
        unsafe { self.push_entry(entry) }
    }

    /// Queues `EVENTS_SET_MASK(mask)` (no memory effect, so safe; the previous mask is
    /// discarded). Valid mask bits:
    /// [`EVENT_MASK_VALID`](pvabi_abi::events::EVENT_MASK_VALID); the host records
    /// INVALID_PARAMETER for others (see [`errors`](Self::errors)).
    pub fn push_set_mask(&mut self, mask: u64) -> core::result::Result<(), Full> {
        let entry = DeferredEntry {
            call: Call::EventsSetMask.code(),
            flags: ReservedU32::Zero,
            args: [mask, 0, 0],
        };
        // SAFETY: EVENTS_SET_MASK only changes the vCPU's event mask.
        unsafe { self.push_entry(entry) }
    }

    /// Queues `MEM_UPDATE_PTE(entry_gpa, value, level)`.
    ///
    /// # Safety
    /// As for [`Pvabi::update_pte`], at the time the host runs it (the next flush or sync
    /// point).
    pub unsafe fn push_update_pte(
        &mut self,
        entry_gpa: u64,
        value: u64,
        level: u8,
    ) -> core::result::Result<(), Full> {
        let entry = DeferredEntry {
            call: Call::MemUpdatePte.code(),
            flags: ReservedU32::Zero,
            args: [entry_gpa, value, u64::from(level)],
        };
        // SAFETY: forwarded to the caller.
        unsafe { self.push_entry(entry) }
    }
}

impl Default for DeferredQueue {
    fn default() -> Self {
        DeferredQueue::new()
    }
}

impl core::fmt::Debug for DeferredQueue {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("DeferredQueue")
            .field("gpa", &self.gpa())
            .field("len", &self.len())
            .field("errors", &self.errors())
            .finish()
    }
}

// ---------------------------------------------------------------------------------------
// Rings

const RING_HEAD: usize = offset_of!(RingHeader, head);
const RING_TAIL: usize = offset_of!(RingHeader, tail);
const RING_FLAGS: usize = offset_of!(RingHeader, flags);
const RING_DROPPED: usize = offset_of!(RingHeader, dropped);
const RING_ENTRIES: usize = RING_ENTRIES_OFFSET as usize;
const SQE_SIZE: usize = core::mem::size_of::<SubmissionEntry>();
const CQE_SIZE: usize = core::mem::size_of::<CompletionEntry>();

/// A submission/completion ring pair: two 4 KiB pages, 4 KiB-aligned (the submission ring
/// first), zeroed. Register them with [`Pvabi::ring_setup_rings`] (or build the block with
/// [`setup`](Self::setup)).
///
/// - [`submit`](Self::submit) appends a [`SubmissionEntry`]; [`Full`] when 32 wait.
/// - In DOORBELL mode, call `RING_ENTER` ([`Pvabi::ring_enter`]) or write the ring-notify
///   port ([`notify_ring`](crate::transport::notify_ring)) to have them processed.
///   In HOST_POLLED mode, do so only when [`need_wakeup`](Self::need_wakeup) says so.
/// - [`reap`](Self::reap) consumes completions. The host stops consuming submissions while
///   the completion ring is full, so reap regularly.
#[repr(C, align(4096))]
pub struct Rings {
    sq: RawPage,
    cq: RawPage,
}

impl Rings {
    /// A zeroed ring pair.
    pub const fn new() -> Self {
        Rings {
            sq: RawPage::new(),
            cq: RawPage::new(),
        }
    }

    /// The submission ring page's guest-physical address under identity mapping.
    pub fn sq_gpa(&self) -> u64 {
        gpa_of(&self.sq)
    }

    /// The completion ring page's guest-physical address under identity mapping.
    pub fn cq_gpa(&self) -> u64 {
        gpa_of(&self.cq)
    }

    /// The `RingSetup` block for these pages (identity mapping), with `mode` and `flags`
    /// (`RING_COMPLETION_EVENTS` to get a RING_COMPLETION event when completions arrive).
    pub fn setup(&self, mode: RingMode, flags: u32) -> RingSetup {
        RingSetup {
            sq_page: self.sq_gpa(),
            cq_page: self.cq_gpa(),
            mode,
            flags,
            reserved: ReservedU64::Zero,
        }
    }

    /// The submission ring page's first byte (for code that simulates the host).
    pub const fn sq_ptr(&self) -> *mut u8 {
        self.sq.ptr()
    }

    /// The completion ring page's first byte (for code that simulates the host).
    pub const fn cq_ptr(&self) -> *mut u8 {
        self.cq.ptr()
    }

    /// Submissions the host has not consumed yet.
    pub fn sq_len(&self) -> u32 {
        let tail = self.sq.atomic_u32(RING_TAIL).load(Ordering::Relaxed);
        tail.wrapping_sub(self.sq.atomic_u32(RING_HEAD).load(Ordering::Acquire))
    }

    /// Completions waiting to be reaped.
    pub fn cq_len(&self) -> u32 {
        let tail = self.cq.atomic_u32(RING_TAIL).load(Ordering::Acquire);
        tail.wrapping_sub(self.cq.atomic_u32(RING_HEAD).load(Ordering::Relaxed))
    }

    /// Submissions the host rejected as malformed.
    pub fn sq_dropped(&self) -> u32 {
        self.sq.atomic_u32(RING_DROPPED).load(Ordering::Relaxed)
    }

    /// Appends a submission; [`Full`] when 32 wait. The `flags` field is written as 0.
    ///
    /// The new tail is published with an `xchg` (a release store and a full barrier), so a
    /// following [`need_wakeup`](Self::need_wakeup) cannot read the flags before the host can
    /// see the submission.
    ///
    /// # Safety
    /// The host may run the call as soon as it sees it (host-polled mode), or at the next
    /// `RING_ENTER`/notify: the call must be sound to make then (see the call's wrapper).
    pub unsafe fn submit(&mut self, entry: SubmissionEntry) -> core::result::Result<(), Full> {
        let tail = self.sq.atomic_u32(RING_TAIL).load(Ordering::Relaxed);
        // Acquire: the host has finished reading the slots it consumed.
        let head = self.sq.atomic_u32(RING_HEAD).load(Ordering::Acquire);
        if tail.wrapping_sub(head) >= SQ_CAPACITY {
            return Err(Full);
        }
        let at = RING_ENTRIES + slot(tail, SQ_CAPACITY) * SQE_SIZE;
        self.sq
            .write_u64(at + offset_of!(SubmissionEntry, user_data), entry.user_data);
        self.sq
            .write_u32(at + offset_of!(SubmissionEntry, call), entry.call);
        self.sq
            .write_u32(at + offset_of!(SubmissionEntry, flags), 0);
        for (i, arg) in entry.args.iter().enumerate() {
            self.sq
                .write_u64(at + offset_of!(SubmissionEntry, args) + 8 * i, *arg);
        }
        self.sq
            .atomic_u32(RING_TAIL)
            .swap(tail.wrapping_add(1), Ordering::SeqCst);
        Ok(())
    }

    /// True when a host-polled host went to sleep (`SQ_NEED_WAKEUP`): ring the doorbell
    /// after submitting. Call it after [`submit`](Self::submit), whose full barrier orders the
    /// tail store before this load (the host sets the flag, then re-checks the tail before
    /// sleeping, so either it sees the submission or the guest sees the flag).
    pub fn need_wakeup(&self) -> bool {
        self.sq.atomic_u32(RING_FLAGS).load(Ordering::Acquire) & SQ_NEED_WAKEUP != 0
    }

    /// Consumes every waiting completion, calling `f` for each in order; returns how many.
    /// Each slot is released (by advancing the completion ring's head) before `f` runs on its
    /// copy.
    pub fn reap(&mut self, mut f: impl FnMut(CompletionEntry)) -> u32 {
        let mut head = self.cq.atomic_u32(RING_HEAD).load(Ordering::Relaxed);
        // Acquire: entries written before the host published `tail` are visible.
        let tail = self.cq.atomic_u32(RING_TAIL).load(Ordering::Acquire);
        if tail.wrapping_sub(head) > CQ_CAPACITY {
            // Impossible with a conforming host (it never overwrites an unconsumed entry).
            head = tail.wrapping_sub(CQ_CAPACITY);
        }
        let mut reaped = 0;
        while head != tail {
            let at = RING_ENTRIES + slot(head, CQ_CAPACITY) * CQE_SIZE;
            let results = [0, 1, 2, 3].map(|i| {
                self.cq
                    .read_u64(at + offset_of!(CompletionEntry, results) + 8 * i)
            });
            let entry = CompletionEntry {
                user_data: self
                    .cq
                    .read_u64(at + offset_of!(CompletionEntry, user_data)),
                status: self.cq.read_u32(at + offset_of!(CompletionEntry, status)),
                reserved: self.cq.read_u32(at + offset_of!(CompletionEntry, reserved)),
                results,
            };
            head = head.wrapping_add(1);
            // Release: the entry was copied before the host may reuse its slot.
            self.cq.atomic_u32(RING_HEAD).store(head, Ordering::Release);
            reaped += 1;
            f(entry);
        }
        reaped
    }
}

impl Default for Rings {
    fn default() -> Self {
        Rings::new()
    }
}

impl core::fmt::Debug for Rings {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Rings")
            .field("sq_gpa", &self.sq_gpa())
            .field("sq_len", &self.sq_len())
            .field("cq_len", &self.cq_len())
            .field("need_wakeup", &self.need_wakeup())
            .finish()
    }
}

/// A completion's outcome: its results on SUCCESS, its error otherwise.
pub fn completion_result(entry: &CompletionEntry) -> Result<[u64; 4]> {
    Error::check(u64::from(entry.status)).map(|()| entry.results)
}

// ---------------------------------------------------------------------------------------
// The calls

impl<T: Transport> Pvabi<T> {
    /// `MULTICALL`, one issue: runs entries `start..count` (count 1 to 32) of the
    /// `MulticallEntry` array at guest-physical `entries_gpa` (8-aligned, not crossing a
    /// page), with `flags` (`MULTICALL_STOP_ON_ERROR`). A preempted batch is not an error:
    /// it returns `incomplete: true` with the resume index in `next` (the host's INCOMPLETE
    /// status defines `r0`/`r1`).
    ///
    /// # Safety
    /// The host writes each entry's `status` and `results`, and runs each entry's call: the
    /// array must be guest memory the host may write during the call, and every entry's call
    /// must be sound to make (see its wrapper).
    #[doc(alias = "MULTICALL")]
    pub unsafe fn multicall(
        &self,
        entries_gpa: u64,
        count: u32,
        start: u32,
        flags: u64,
    ) -> Result<MulticallStep> {
        let args = [entries_gpa, u64::from(count), u64::from(start), flags, 0, 0];
        // SAFETY: the caller vouches for the array and its calls (see above).
        let raw = unsafe { self.transport().call(Call::Multicall.code(), args) };
        batch_step(raw, count, start, flags)
    }

    /// `MULTICALL_PAGES` (pvabi 1.3), one issue: runs entries `start..count` (count 1 to 4096)
    /// of the batch whose page list of `pages` page addresses is at guest-physical `list_gpa`
    /// (8-aligned, not crossing a page); entry `i` is on page `i / 42` at `96 * (i % 42)`, and
    /// `pages` must be the number of pages `count` entries fill. A preempted batch is not an
    /// error: it returns `incomplete: true` with the resume index in `next`.
    ///
    /// # Safety
    /// As for [`multicall`](Self::multicall): the host writes each processed entry's `status`
    /// and `results` on the pages the list names, and runs each entry's call.
    #[doc(alias = "MULTICALL_PAGES")]
    pub unsafe fn multicall_pages(
        &self,
        list_gpa: u64,
        pages: u64,
        count: u32,
        start: u32,
        flags: u64,
    ) -> Result<MulticallStep> {
        let args = [
            list_gpa,
            pages,
            u64::from(count),
            u64::from(start),
            flags,
            0,
        ];
        // SAFETY: the caller vouches for the list, its pages and their calls (see above).
        let raw = unsafe { self.transport().call(Call::MulticallPages.code(), args) };
        batch_step(raw, count, start, flags)
    }

    /// `MULTICALL_PAGES` until done: issues it from index 0 and re-issues with the resume
    /// index while the host answers INCOMPLETE (see [`multicall_all`](Self::multicall_all)).
    ///
    /// # Safety
    /// As for [`multicall_pages`](Self::multicall_pages).
    #[doc(alias = "MULTICALL_PAGES")]
    pub unsafe fn multicall_pages_all(
        &self,
        list_gpa: u64,
        pages: u64,
        count: u32,
        flags: u64,
    ) -> Result<MulticallOutcome> {
        // SAFETY: forwarded to the caller.
        reissue(|start| unsafe { self.multicall_pages(list_gpa, pages, count, start, flags) })
    }

    /// `MULTICALL_PAGES` of a [`PagedMulticall`] batch until done: writes its page list, then
    /// issues the call (one exit for the whole batch unless the host preempts it; `issues` in
    /// the outcome counts the exits). Afterwards [`PagedMulticall::result`] gives each entry's
    /// outcome. An empty batch makes no call. The same batch can be run again as it is: the
    /// host reads only the inputs of each entry and overwrites `status` and `results`.
    ///
    /// # Safety
    /// Every entry's call must be sound to make (see its wrapper), and the guest must run
    /// identity-mapped (the addresses come from [`gpa_of`]).
    #[doc(alias = "MULTICALL_PAGES")]
    pub unsafe fn multicall_pages_batch<const P: usize>(
        &self,
        batch: &mut PagedMulticall<P>,
        flags: u64,
    ) -> Result<MulticallOutcome> {
        if batch.is_empty() {
            return Ok(MulticallOutcome {
                next: 0,
                processed: 0,
                issues: 0,
            });
        }
        let (list, pages) = batch.prepare_list();
        // SAFETY: the batch is exclusively borrowed, so the host may write its entries during
        // the call; its calls and the mapping are the caller's promise.
        unsafe { self.multicall_pages_all(list, pages, batch.len as u32, flags) }
    }
}

/// Checks one MULTICALL or MULTICALL_PAGES answer against the rules of BATCH-006 to BATCH-008
/// and decodes it.
fn batch_step(
    raw: crate::transport::RawResult,
    count: u32,
    start: u32,
    flags: u64,
) -> Result<MulticallStep> {
    let incomplete = raw.status == Status::Incomplete.raw();
    if !incomplete {
        Error::check(raw.status)?;
    }
    let [next, processed, ..] = raw.results;
    let (count64, start64) = (u64::from(count), u64::from(start));
    if next > count64 || next < start64 {
        return Err(Error::UnexpectedResult(next));
    }
    // BATCH-006: `processed` is `next - start`.
    if processed != next - start64 {
        return Err(Error::UnexpectedResult(processed));
    }
    // BATCH-006/007/008: INCOMPLETE leaves entries (`next < count`) after progress; SUCCESS
    // with entries left is only a stop on error, which processed at least one entry.
    let stop_on_error = flags & MULTICALL_STOP_ON_ERROR != 0;
    let ended_early = next < count64;
    if (incomplete && (!ended_early || processed == 0))
        || (!incomplete && ended_early && (!stop_on_error || processed == 0))
    {
        return Err(Error::UnexpectedResult(next));
    }
    Ok(MulticallStep {
        next: next as u32,
        processed: processed as u32,
        incomplete,
    })
}

/// Issues a batch from index 0, and again from the resume index while the host answers
/// INCOMPLETE.
fn reissue(mut issue: impl FnMut(u32) -> Result<MulticallStep>) -> Result<MulticallOutcome> {
    let mut start = 0;
    let mut processed = 0u32;
    let mut issues = 0u32;
    loop {
        let step = issue(start)?;
        issues = issues.saturating_add(1);
        processed = processed.saturating_add(step.processed);
        if !step.incomplete {
            return Ok(MulticallOutcome {
                next: step.next,
                processed,
                issues,
            });
        }
        start = step.next;
    }
}

impl<T: Transport> Pvabi<T> {
    /// `MULTICALL` until done: issues it from index 0 and re-issues with the resume index
    /// while the host answers INCOMPLETE. A host that keeps preempting without progress keeps
    /// this looping (the spec allows preemption at any point).
    ///
    /// # Safety
    /// As for [`multicall`](Self::multicall).
    #[doc(alias = "MULTICALL")]
    pub unsafe fn multicall_all(
        &self,
        entries_gpa: u64,
        count: u32,
        flags: u64,
    ) -> Result<MulticallOutcome> {
        // SAFETY: forwarded to the caller.
        reissue(|start| unsafe { self.multicall(entries_gpa, count, start, flags) })
    }

    /// `MULTICALL` of a [`Multicall`] batch until done (see [`multicall_all`]); afterwards
    /// [`Multicall::result`] gives each entry's outcome. An empty batch makes no call.
    ///
    /// [`multicall_all`]: Self::multicall_all
    ///
    /// # Safety
    /// Every entry's call must be sound to make (see its wrapper), and the guest must run
    /// identity-mapped (the batch's address comes from [`gpa_of`]).
    #[doc(alias = "MULTICALL")]
    pub unsafe fn multicall_batch<const N: usize>(
        &self,
        batch: &mut Multicall<N>,
        flags: u64,
    ) -> Result<MulticallOutcome> {
        if batch.is_empty() {
            return Ok(MulticallOutcome {
                next: 0,
                processed: 0,
                issues: 0,
            });
        }
        let gpa = gpa_of(&batch.entries);
        // SAFETY: the batch is exclusively borrowed, so the host may write its entries during
        // the call; its calls and the mapping are the caller's promise.
        unsafe { self.multicall_all(gpa, batch.len as u32, flags) }
    }

    /// `DEFER_SET_QUEUE`: registers the 4 KiB-aligned page at guest-physical `gpa` as the
    /// calling vCPU's deferred queue (the old queue, if any, is drained first). For a
    /// [`DeferredQueue`] under identity mapping, pass [`DeferredQueue::gpa`].
    ///
    /// # Safety
    /// The page must be given to the host while registered (until
    /// [`defer_unset_queue`](Self::defer_unset_queue) succeeds, or forever) and only accessed
    /// by the guest through a [`DeferredQueue`] (e.g. a `'static` one).
    #[doc(alias = "DEFER_SET_QUEUE")]
    pub unsafe fn defer_set_queue(&self, gpa: u64) -> Result<()> {
        // SAFETY: the caller hands the page over (see above).
        unsafe { self.call_raw(Call::DeferSetQueue, [gpa, 0, 0, 0, 0, 0]) }.map(drop)
    }

    /// `DEFER_SET_QUEUE` with address 0: drains and unregisters the deferred queue.
    #[doc(alias = "DEFER_SET_QUEUE")]
    pub fn defer_unset_queue(&self) -> Result<()> {
        // SAFETY: the host runs the queued entries (vouched for when queued) and stops
        // touching the page.
        unsafe { self.call_raw(Call::DeferSetQueue, [0; 6]) }.map(drop)
    }

    /// `DEFER_FLUSH`: runs every entry of the calling vCPU's deferred queue now.
    #[doc(alias = "DEFER_FLUSH")]
    pub fn defer_flush(&self) -> Result<DeferFlush> {
        // SAFETY: the host runs the queued entries, each vouched for when it was queued.
        let r = unsafe { self.call_raw(Call::DeferFlush, [0; 6]) }?;
        let processed = u32::try_from(r[0]).map_err(|_| Error::UnexpectedResult(r[0]))?;
        let failed = u32::try_from(r[1]).map_err(|_| Error::UnexpectedResult(r[1]))?;
        Ok(DeferFlush { processed, failed })
    }

    /// Queues a deferrable call in `queue`, flushing it first (`DEFER_FLUSH`) when it is full.
    /// A call without a deferral class gives NOT_ALLOWED_HERE without reaching the host.
    ///
    /// # Safety
    /// As for [`DeferredQueue::push`]; `queue` must be the calling vCPU's registered queue.
    pub unsafe fn defer(
        &self,
        queue: &mut DeferredQueue,
        call: Call,
        args: [u64; 3],
    ) -> Result<()> {
        // SAFETY: forwarded to the caller.
        match unsafe { queue.push(call, args) } {
            Ok(()) => Ok(()),
            Err(DeferError::NotDeferrable(_)) => Err(Error::Status(Status::NotAllowedHere)),
            Err(DeferError::Full) => {
                self.defer_flush()?;
                // SAFETY: forwarded to the caller.
                unsafe { queue.push(call, args) }.map_err(|_| Error::Status(Status::Busy))
            }
        }
    }

    /// `RING_SETUP`: registers the calling vCPU's ring pair described by the `RingSetup`
    /// block at guest-physical `setup_gpa` (8-aligned, not crossing a page).
    ///
    /// # Safety
    /// Both ring pages become the host's for good (there is no unregistration): they must be
    /// `'static` memory the guest only accesses through a [`Rings`], and every submission
    /// must be sound (see [`Rings::submit`]).
    #[doc(alias = "RING_SETUP")]
    pub unsafe fn ring_setup(&self, setup_gpa: u64) -> Result<()> {
        // SAFETY: the caller hands the pages over (see above).
        unsafe { self.call_raw(Call::RingSetup, [setup_gpa, 0, 0, 0, 0, 0]) }.map(drop)
    }

    /// `RING_SETUP` for `rings`, with the block built by [`Rings::setup`] in a page-safe
    /// [`Block`] on the stack.
    ///
    /// # Safety
    /// As for [`ring_setup`](Self::ring_setup): `rings` must stay valid, and be accessed only
    /// through [`Rings`] methods, for the rest of the VM's life (a `static` is the natural
    /// place). The guest must run identity-mapped.
    #[doc(alias = "RING_SETUP")]
    pub unsafe fn ring_setup_rings(&self, rings: &Rings, mode: RingMode, flags: u32) -> Result<()> {
        let block = Block::new(rings.setup(mode, flags));
        // SAFETY: the block lives across the call; the rest is the caller's promise.
        unsafe { self.ring_setup(block.gpa()) }
    }

    /// `RING_ENTER`: processes the calling vCPU's submission ring now; returns the
    /// submissions consumed.
    #[doc(alias = "RING_ENTER")]
    pub fn ring_enter(&self) -> Result<u32> {
        // SAFETY: the host runs the submissions, each vouched for when submitted, and writes
        // completions into the registered completion ring.
        let r = unsafe { self.call_raw(Call::RingEnter, [0; 6]) }?;
        u32::try_from(r[0]).map_err(|_| Error::UnexpectedResult(r[0]))
    }
}
