//! The dispatcher's state: VM-wide (negotiation, host-owned pages, sharing, balloon) and
//! per vCPU (run state, event queue, deferred queue, ring), plus its worker threads.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, RwLock, Weak};
use std::thread::{self, JoinHandle};
use std::time::Instant;

use pvabi_abi::batch::RingMode;
use pvabi_abi::convention::PAGE_SIZE;
use pvabi_abi::features::Features;
use pvabi_abi::status::Status;
use pvabi_abi::version::Version;

use crate::faults::injected;

use crate::call_table::{CallCounters, CallTable};
use crate::config::HostConfig;
use crate::machine::Machine;
use crate::report::Report;
use crate::sync::{lock, read_lock};
use crate::End;

/// Who a host-owned page belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Owner {
    /// The VM's shared time page.
    TimePage,
    /// A vCPU's event queue.
    EventQueue(u32),
    /// A vCPU's deferred queue.
    DeferredQueue(u32),
    /// A vCPU's submission ring.
    SubmissionRing(u32),
    /// A vCPU's completion ring.
    CompletionRing(u32),
    /// A vCPU's steal-time page (since 1.1).
    StealPage(u32),
}

/// The result of NEGOTIATE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Negotiated {
    /// The accepted version.
    pub version: Version,
    /// The granted features.
    pub granted: Features,
}

/// Bits per word of an [`OwnedFilter`], and its words.
const FILTER_WORD_BITS: u64 = 64;
const FILTER_WORDS: usize = 64;

/// A lock-free filter over the host-owned pages, so that check 9 ("block not host-owned")
/// takes no lock for the blocks of trivial calls: one bit per page frame modulo 4096, set
/// while a page with that frame number modulo 4096 is host-owned. A clear bit proves the
/// page is not owned; a set bit sends the check to the exact map under the read lock.
///
/// Only [`VmState`]'s methods change it, under the write lock, in the same critical section
/// as the map: a claim sets the page's bit, a release stores the exact value of the page's
/// word computed from the remaining owned pages (a bit of a page still owned is never
/// cleared, not even for an instant). A check that races with a claim sees the bit set or
/// clear, as it would have seen the map before or after the claim behind the lock.
#[derive(Debug)]
pub(crate) struct OwnedFilter {
    words: [AtomicU64; FILTER_WORDS],
}

impl Default for OwnedFilter {
    fn default() -> Self {
        OwnedFilter {
            words: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl OwnedFilter {
    /// The word index and bit of page frame `pfn`.
    fn slot(pfn: u64) -> (usize, u64) {
        let bit = pfn % (FILTER_WORD_BITS * FILTER_WORDS as u64);
        (
            (bit / FILTER_WORD_BITS) as usize,
            1 << (bit % FILTER_WORD_BITS),
        )
    }

    /// Whether `[gpa, gpa + len)` (`len > 0`, no overflow) may overlap a host-owned page:
    /// false only if none of its pages can be owned.
    pub fn may_overlap(&self, gpa: u64, len: u64) -> bool {
        let first = gpa / PAGE_SIZE;
        let last = gpa.saturating_add(len.saturating_sub(1)) / PAGE_SIZE;
        if last - first >= FILTER_WORD_BITS {
            // A long range: let the exact check decide.
            return true;
        }
        (first..=last).any(|pfn| {
            let (word, bit) = Self::slot(pfn);
            self.words[word].load(Ordering::Acquire) & bit != 0
        })
    }

    fn set(&self, pfn: u64) {
        let (word, bit) = Self::slot(pfn);
        self.words[word].fetch_or(bit, Ordering::SeqCst);
    }

    /// Recomputes the word of `pfn` from `owned` (after a page left it).
    fn refresh(&self, pfn: u64, owned: &BTreeMap<u64, Owner>) {
        let (word, _) = Self::slot(pfn);
        let value = owned
            .keys()
            .map(|&gpa| Self::slot(gpa / PAGE_SIZE))
            .filter(|&(w, _)| w == word)
            .fold(0, |acc, (_, bit)| acc | bit);
        self.words[word].store(value, Ordering::SeqCst);
    }
}

/// VM-wide state that calls change (behind a read-write lock: the hot path only reads it).
#[derive(Debug, Default)]
pub(crate) struct VmState {
    /// Host-owned pages (4 KiB-aligned guest-physical address -> owner). Changed only by
    /// [`claim`](Self::claim) and [`release`](Self::release), which keep `filter` in step.
    owned: BTreeMap<u64, Owner>,
    /// The lock-free filter over `owned` (shared with [`Inner::owned_filter`]).
    filter: Arc<OwnedFilter>,
    /// Shared ranges, as disjoint, merged page-frame ranges `start -> end` (exclusive).
    pub shared: BTreeMap<u64, u64>,
    /// Page frames released by the balloon and not reclaimed.
    pub released: BTreeSet<u64>,
}

impl VmState {
    /// The lock-free filter over the owned pages (for tests of it).
    #[cfg(test)]
    pub fn filter(&self) -> &OwnedFilter {
        &self.filter
    }

    /// Whether `[gpa, gpa + len)` (`len > 0`, no overflow) overlaps a host-owned page.
    pub fn overlaps_owned(&self, gpa: u64, len: u64) -> bool {
        let first = gpa & !(PAGE_SIZE - 1);
        let last = gpa.saturating_add(len.saturating_sub(1)) & !(PAGE_SIZE - 1);
        self.owned.range(first..=last).next().is_some()
    }

    /// Makes each page host-owned by its owner, all or none: ACCESS_DENIED if one is owned.
    pub fn claim(&mut self, pages: &[(u64, Owner)]) -> Result<(), Status> {
        if pages.iter().any(|(p, _)| self.owned.contains_key(p)) {
            return Err(Status::AccessDenied);
        }
        for &(p, owner) in pages {
            self.owned.insert(p, owner);
            self.filter.set(p / PAGE_SIZE);
        }
        Ok(())
    }

    /// Gives `page` back to the guest, if `owner` owns it.
    pub fn release(&mut self, page: u64, owner: Owner) {
        if self.owned.get(&page) == Some(&owner) {
            self.owned.remove(&page);
            self.filter.refresh(page / PAGE_SIZE, &self.owned);
        }
    }

    /// Adds page frames `[start, end)` to the shared set.
    pub fn share(&mut self, mut start: u64, mut end: u64) {
        let touching: Vec<(u64, u64)> = self
            .shared
            .range(..=end)
            .filter(|(_, &e)| e >= start)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in touching {
            self.shared.remove(&s);
            start = start.min(s);
            end = end.max(e);
        }
        self.shared.insert(start, end);
    }

    /// Removes page frames `[start, end)` from the shared set.
    pub fn unshare(&mut self, start: u64, end: u64) {
        let overlapping: Vec<(u64, u64)> = self
            .shared
            .range(..end)
            .filter(|(_, &e)| e > start)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in overlapping {
            self.shared.remove(&s);
            if s < start {
                self.shared.insert(s, start);
            }
            if e > end {
                self.shared.insert(end, e);
            }
        }
    }
}

/// A registered event queue (the host's copies of the host-written fields).
#[derive(Clone, Copy, Debug)]
pub(crate) struct EventQueue {
    /// The page.
    pub gpa: u64,
    /// Its interrupt vector.
    pub vector: u8,
    /// Next index the host writes (never read back from guest memory).
    pub tail: u32,
    /// Events dropped.
    pub dropped: u32,
}

/// A vCPU's state that events, HALT and the vCPU calls share.
#[derive(Debug, Default)]
pub(crate) struct VcpuState {
    /// Running (vCPU 0 from the start; others after VCPU_START until VCPU_STOP).
    pub running: bool,
    /// The event queue, if registered.
    pub queue: Option<EventQueue>,
    /// The event mask (bit k masks kind k).
    pub mask: u64,
    /// An event arrived while no queue was registered; HALT consumes it.
    pub latched: bool,
    /// The buffer (address, length) of the vCPU's last CONSOLE_WRITE, which the injected
    /// fault `ConsoleEmitsTheBufferLater` emits, read again, at the start of the vCPU's next call.
    #[cfg(feature = "fault-injection")]
    pub console_later: Option<(u64, usize)>,
}

/// A registered deferred queue.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DeferredQueue {
    /// The page.
    pub gpa: u64,
    /// Next index the host runs (never read back from guest memory).
    pub head: u32,
    /// Failures since registration.
    pub error_count: u32,
    /// `(index, status)` of the first failure.
    pub first_error: Option<(u32, u32)>,
}

/// A registered ring pair.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ring {
    /// Submission-ring page.
    pub sq: u64,
    /// Completion-ring page.
    pub cq: u64,
    /// How the host learns of submissions.
    pub mode: RingMode,
    /// Post RING_COMPLETION events.
    pub completion_events: bool,
    /// Next submission the host consumes.
    pub sq_head: u32,
    /// Next completion the host writes.
    pub cq_tail: u32,
    /// SQ header flags (`SQ_NEED_WAKEUP`).
    pub sq_flags: u32,
    /// Malformed-ring count (SQ header `dropped`).
    pub dropped: u32,
    /// A notify arrived for the poller.
    pub notified: bool,
    /// Tells a poller thread whether this is still its ring.
    pub generation: u64,
}

/// One vCPU's slot.
#[derive(Debug, Default)]
pub(crate) struct VcpuSlot {
    /// Run state and events.
    pub state: Mutex<VcpuState>,
    /// Signalled when an event arrives (HALT waits on it with `state`).
    pub wake: Condvar,
    /// The deferred queue (held while it drains).
    pub deferred: Mutex<Option<DeferredQueue>>,
    /// The ring pair (held while the SQ is processed).
    pub ring: Mutex<Option<Ring>>,
    /// Signalled on a notify for the poller (with `ring`).
    pub ring_wake: Condvar,
    /// The steal-time page, if registered (since 1.1).
    pub steal: Mutex<Option<StealPageReg>>,
    /// Whether `steal` holds a page (set under its lock): a direct call is timed for the
    /// steal page only then, which keeps two clock reads off every other call.
    pub steal_on: std::sync::atomic::AtomicBool,
}

/// A registered steal-time page and the host's own copy of what it reports.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StealPageReg {
    /// The page.
    pub gpa: u64,
    /// The host's sequence counter (never read back from guest memory; the page holds its
    /// low 32 bits).
    pub seq: u64,
    /// Nanoseconds stolen since registration.
    pub steal_ns: u64,
    /// Exits handled for the vCPU since registration.
    pub preemptions: u64,
}

/// The shared time page registration.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TimePageReg {
    /// The page.
    pub gpa: u64,
    /// The host's sequence counter (never read back from guest memory; 64-bit for the 2.0
    /// layout, whose low 32 bits are the 1.x sequence).
    pub seq: u64,
    /// Fault injection only (`TimePageWrittenAfterUnregister`): the page (and its sequence)
    /// that this registration replaced, which the refresh thread goes on writing.
    #[cfg(feature = "fault-injection")]
    pub ghost: Option<(u64, u64)>,
}

/// Worker threads and which singletons have started.
#[derive(Debug, Default)]
pub(crate) struct Workers {
    pub handles: Vec<JoinHandle<()>>,
    pub timer_started: bool,
    pub time_page_started: bool,
}

/// Everything behind a [`Dispatcher`](crate::Dispatcher).
pub(crate) struct Inner<M: Machine> {
    pub config: HostConfig,
    /// The configuration compiled into per-call lookups.
    pub calls: CallTable,
    pub machine: Arc<M>,
    /// Monotonic time 0.
    pub epoch: Instant,
    /// A weak reference to this `Inner`, to hand to worker threads.
    pub me: Weak<Inner<M>>,
    /// NEGOTIATE's result: set once, read by every call without a lock.
    pub negotiated: OnceLock<Negotiated>,
    pub vm: RwLock<VmState>,
    /// The lock-free filter over the host-owned pages of `vm` (check 9's fast path).
    pub owned_filter: Arc<OwnedFilter>,
    pub vcpus: Vec<VcpuSlot>,
    /// Per-vCPU call counters (indexed like `vcpus`).
    pub counters: Vec<CallCounters>,
    /// Effects recorded when `config.record_effects` is set.
    pub report: Mutex<Report>,
    /// One-shot timer deadline of each vCPU (monotonic ns).
    pub timers: Mutex<Vec<Option<u64>>>,
    pub timers_cv: Condvar,
    pub time_page: Mutex<Option<TimePageReg>>,
    /// The monotonic time of the last update of a time page without `TIME_PAGE_TSC_VALID` (0:
    /// no page; `u64::MAX`: the page is TSC-valid), read without a lock by TIME_MONOTONIC to
    /// catch a page the refresh thread has not kept up with.
    pub time_page_written_ns: AtomicU64,
    pub time_cv: Condvar,
    /// Incremented by every host event after which the time-stamp counters may have moved
    /// (a migration, a change of their offset): the refresh thread then starts its TSC
    /// calibration afresh (PVABI-TIME-010).
    pub tsc_generation: AtomicU64,
    /// Migrations performed so far ([`crate::Dispatcher::host_event_performed`]).
    pub migrations: AtomicU64,
    pub ring_generation: AtomicU64,
    /// Set when the VM ends (a system call took effect): no ring consumes any more.
    pub rings_stopped: AtomicBool,
    /// Ring passes that consumed submissions, the submissions, and the nanoseconds those
    /// passes took (host work per ring entry, for benchmarks).
    pub ring_work: [AtomicU64; 3],
    pub stopping: AtomicBool,
    pub workers: Mutex<Workers>,
    /// The guest checker, in checking mode (`config.check_guest`).
    pub checker: Option<crate::guest_check::GuestChecker>,
}

impl<M: Machine> Inner<M> {
    /// A fresh state serving `config` over `machine`, whose monotonic time 0 is `epoch`.
    pub fn new(config: HostConfig, machine: Arc<M>, epoch: Instant) -> Arc<Inner<M>> {
        let n = config.vcpus as usize;
        let calls = CallTable::new(&config);
        let config_check = config.check_guest;
        let vm = VmState::default();
        let owned_filter = vm.filter.clone();
        Arc::new_cyclic(|me| {
            let vcpus: Vec<VcpuSlot> = (0..n).map(|_| VcpuSlot::default()).collect();
            lock(&vcpus[0].state).running = true;
            Inner {
                counters: (0..n).map(|_| CallCounters::new(&calls)).collect(),
                calls,
                config,
                machine,
                epoch,
                me: me.clone(),
                negotiated: OnceLock::new(),
                vm: RwLock::new(vm),
                owned_filter,
                vcpus,
                report: Mutex::new(Report::default()),
                timers: Mutex::new(vec![None; n]),
                timers_cv: Condvar::new(),
                time_page: Mutex::new(None),
                time_page_written_ns: AtomicU64::new(0),
                time_cv: Condvar::new(),
                tsc_generation: AtomicU64::new(0),
                migrations: AtomicU64::new(0),
                ring_generation: AtomicU64::new(0),
                rings_stopped: AtomicBool::new(false),
                ring_work: Default::default(),
                stopping: AtomicBool::new(false),
                workers: Mutex::new(Workers::default()),
                checker: config_check.then(|| crate::guest_check::GuestChecker::new(n as u32)),
            }
        })
    }

    /// Check 9: whether `[gpa, gpa + len)` (`len > 0`, no overflow) overlaps a host-owned
    /// page. The lock-free filter answers most blocks; the others take the read lock.
    pub fn overlaps_owned(&self, gpa: u64, len: u64) -> bool {
        self.owned_filter.may_overlap(gpa, len) && read_lock(&self.vm).overlaps_owned(gpa, len)
    }

    pub fn vcpu_count(&self) -> u32 {
        self.vcpus.len() as u32
    }

    pub fn negotiated(&self) -> Option<Negotiated> {
        let n = self.negotiated.get().copied();
        if injected!(self, MigrationGrantsEverythingOffered)
            && self.migrations.load(Ordering::Relaxed) > 0
        {
            // The fault: the migration target re-derives the grant from what it offers.
            return n.map(|n| Negotiated {
                granted: n.granted | self.config.offered_at(n.version),
                ..n
            });
        }
        n
    }

    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Nanoseconds since the dispatcher was created (never decreases).
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Updates the report, if effects are recorded (`config.record_effects`).
    pub fn record(&self, f: impl FnOnce(&mut Report)) {
        if self.config.record_effects {
            f(&mut lock(&self.report));
        }
    }

    /// Counts one call (or entry) of `code` made for `vcpu` that ended with `status`.
    #[inline]
    pub fn count_call(&self, vcpu: u32, code: u64, status: Status) {
        if let Some(c) = self.counters.get(vcpu as usize) {
            c.count(&self.calls, code, status);
        }
    }

    pub fn record_end(&self, end: &End) {
        self.record(|r| r.end = Some(end.clone()));
    }

    /// Starts a worker thread (unless the dispatcher is stopping). `mark` runs under the
    /// workers lock and decides whether to start (it returns false if already started).
    pub fn spawn_worker(
        &self,
        name: &str,
        mark: impl FnOnce(&mut Workers) -> bool,
        body: impl FnOnce(Arc<Inner<M>>) + Send + 'static,
    ) -> Result<(), Status> {
        let mut workers = lock(&self.workers);
        if self.stopping() {
            return Err(Status::NoResources);
        }
        let me = self.me.upgrade().ok_or(Status::NoResources)?;
        workers.handles.retain(|h| !h.is_finished());
        if !mark(&mut workers) {
            return Ok(());
        }
        let handle = thread::Builder::new()
            .name(name.to_string())
            .spawn(move || body(me))
            .map_err(|_| Status::NoResources)?;
        workers.handles.push(handle);
        Ok(())
    }

    pub fn shutdown(&self) {
        let handles = {
            let mut workers = lock(&self.workers);
            self.stopping.store(true, Ordering::SeqCst);
            std::mem::take(&mut workers.handles)
        };
        // Wake every waiter; taking each lock first means no waiter can miss the flag.
        for slot in &self.vcpus {
            drop(lock(&slot.state));
            slot.wake.notify_all();
            drop(lock(&slot.ring));
            slot.ring_wake.notify_all();
        }
        drop(lock(&self.timers));
        self.timers_cv.notify_all();
        drop(lock(&self.time_page));
        self.time_cv.notify_all();
        let current = thread::current().id();
        for h in handles {
            if h.thread().id() != current {
                // A worker that panicked has nothing more to tell.
                let _ = h.join();
            }
        }
    }

    pub fn report_snapshot(&self) -> Report {
        let (shared, outstanding) = {
            let vm = read_lock(&self.vm);
            let shared = vm
                .shared
                .iter()
                .map(|(&s, &e)| (s * PAGE_SIZE, e - s))
                .collect::<Vec<_>>();
            (shared, vm.released.len() as u64)
        };
        let mut r = lock(&self.report).clone();
        for c in &self.counters {
            c.add_to(&self.calls, &mut r.calls);
        }
        r.negotiated = self.negotiated().map(|n| (n.version, n.granted));
        r.shared_ranges = shared;
        r.balloon_outstanding = outstanding;
        r
    }
}
