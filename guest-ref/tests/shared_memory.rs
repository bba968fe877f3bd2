//! The shared-memory helpers on real pages, with the host simulated through raw pointers
//! (the test process plays an identity-mapped guest: `gpa_of` is the host address here).

mod common;

use std::mem::offset_of;
use std::ptr;

use common::{client, Mock};
use pvabi_guest::abi::batch::{
    CompletionEntry, DeferredEntry, DeferredQueueHeader, MulticallEntry, RingHeader, RingMode,
    RingSetup, SubmissionEntry, CQ_CAPACITY, DEFERRED_ENTRIES_OFFSET, DEFERRED_QUEUE_CAPACITY,
    MULTICALL_STOP_ON_ERROR, RING_COMPLETION_EVENTS, RING_ENTRIES_OFFSET, SQ_CAPACITY,
    SQ_NEED_WAKEUP,
};
use pvabi_guest::abi::convention::ReservedU32;
use pvabi_guest::abi::events::{Event, EventKind, EventQueueHeader, EVENT_QUEUE_ENTRIES_OFFSET};
use pvabi_guest::abi::time::{TimePage, TIME_PAGE_TSC_VALID};
use pvabi_guest::abi::{Call, Status};
use pvabi_guest::batch::{
    completion_result, DeferError, DeferredQueue, Multicall, PagedMulticall, Rings,
};
use pvabi_guest::events::{event_kind, EventQueue};
use pvabi_guest::time::SharedTimePage;
use pvabi_guest::transport::RawResult;
use pvabi_guest::{Error, Full};

/// Host-side volatile write of a `T` at `base + offset`.
fn put<T>(base: *mut u8, offset: usize, value: T) {
    // SAFETY: (test) in-page, naturally aligned offsets of a live page.
    unsafe { ptr::write_volatile(base.add(offset).cast::<T>(), value) }
}

/// Host-side volatile read of a `T` at `base + offset`.
fn get<T>(base: *mut u8, offset: usize) -> T {
    // SAFETY: (test) as for `put`.
    unsafe { ptr::read_volatile(base.add(offset).cast::<T>()) }
}

// --- Event queue -------------------------------------------------------------------------

/// The host appends `event` (and raises the interrupt if it was not pending).
fn host_post(q: &EventQueue, event: Event) {
    let p = q.as_ptr();
    let tail: u32 = get(p, offset_of!(EventQueueHeader, tail));
    let slot = (tail % 128) as usize;
    put(p, EVENT_QUEUE_ENTRIES_OFFSET as usize + slot * 16, event);
    put(p, offset_of!(EventQueueHeader, tail), tail.wrapping_add(1));
    put(p, offset_of!(EventQueueHeader, interrupt_pending), 1u32);
}

fn user(data: u64) -> Event {
    Event {
        kind: EventKind::User as u32,
        source: 2,
        data,
    }
}

#[test]
fn event_queue_drains_in_order_and_rearms() {
    let mut q = Box::new(EventQueue::new());
    assert_eq!(q.gpa() % 4096, 0);
    assert_eq!(std::mem::size_of::<EventQueue>(), 4096);
    for i in 0..3 {
        host_post(&q, user(i));
    }
    assert_eq!(q.len(), 3);
    assert!(q.interrupt_pending());
    let mut seen = Vec::new();
    assert_eq!(
        q.drain(|e| seen.push((event_kind(&e), e.source, e.data))),
        3
    );
    assert_eq!(
        seen,
        [0, 1, 2].map(|d| (Some(EventKind::User), 2, d)).to_vec()
    );
    assert!(!q.interrupt_pending(), "re-armed");
    assert!(q.is_empty());
    assert_eq!(q.head(), 3);
    assert_eq!(q.drain(|_| panic!("nothing left")), 0);
}

#[test]
fn event_queue_indices_wrap() {
    let mut q = Box::new(EventQueue::new());
    let start = u32::MAX - 1;
    put(q.as_ptr(), offset_of!(EventQueueHeader, head), start);
    put(q.as_ptr(), offset_of!(EventQueueHeader, tail), start);
    for i in 0..4 {
        host_post(&q, user(i));
    }
    let mut seen = Vec::new();
    assert_eq!(q.drain(|e| seen.push(e.data)), 4);
    assert_eq!(seen, [0, 1, 2, 3]);
    assert_eq!(q.head(), start.wrapping_add(4));
}

#[test]
fn event_queue_events_posted_during_drain_are_consumed() {
    let mut q = Box::new(EventQueue::new());
    host_post(&q, user(0));
    let page = q.as_ptr() as usize;
    let mut seen = Vec::new();
    let n = q.drain(|e| {
        seen.push(e.data);
        if e.data < 3 {
            // The host posts while the guest handles the previous event.
            let tail: u32 = get(page as *mut u8, offset_of!(EventQueueHeader, tail));
            let slot = (tail % 128) as usize;
            put(
                page as *mut u8,
                EVENT_QUEUE_ENTRIES_OFFSET as usize + slot * 16,
                user(e.data + 1),
            );
            put(
                page as *mut u8,
                offset_of!(EventQueueHeader, tail),
                tail + 1,
            );
        }
    });
    assert_eq!(n, 4);
    assert_eq!(seen, [0, 1, 2, 3]);
}

// --- Time page -------------------------------------------------------------------------------

fn host_write_time(page: &SharedTimePage, t: &TimePage) {
    let p = page.as_ptr();
    put(p, offset_of!(TimePage, sequence), t.sequence | 1);
    put(
        p,
        0,
        TimePage {
            sequence: t.sequence | 1,
            ..*t
        },
    );
    put(p, offset_of!(TimePage, sequence), t.sequence);
}

#[test]
fn time_page_reader_reads_a_consistent_copy() {
    let page = Box::new(SharedTimePage::new());
    assert_eq!(page.gpa() % 4096, 0);
    let t = TimePage {
        sequence: 8,
        flags: TIME_PAGE_TSC_VALID,
        monotonic_ns: 5_000_000,
        tsc_timestamp: 1_000,
        wallclock_sec: 1_700_000_000,
        wallclock_nsec: 500,
        tsc_shift: 0,
        tsc_mul: 1 << 31, // 2 GHz TSC: half a nanosecond per tick
        ..TimePage::default()
    };
    host_write_time(&page, &t);
    let reader = page.reader();
    let snap = reader.read();
    assert_eq!(snap.0, t);
    assert_eq!(reader.now_ns(3_000), Some(5_001_000));
    assert_eq!(
        snap.wallclock_at(3_000).map(|w| (w.seconds, w.nanoseconds)),
        Some((1_700_000_000, 1_500))
    );
    // Mid-update (odd sequence): a bounded read gives up.
    put(page.as_ptr(), offset_of!(TimePage, sequence), 9u32);
    assert_eq!(reader.try_read(100), None);
    put(page.as_ptr(), offset_of!(TimePage, sequence), 10u32);
    assert_eq!(reader.try_read(1).map(|s| s.0.sequence), Some(10));
}

// --- Deferred queue -------------------------------------------------------------------------

#[test]
fn deferred_queue_entries_and_full() {
    let mut q = Box::new(DeferredQueue::new());
    // SAFETY: no host runs these entries.
    unsafe { q.push(Call::MemUpdatePte, [0x1008, 0x2003, 1]) }.unwrap();
    q.push_set_timer(77).unwrap();
    q.push_set_mask(EventKind::Kick.mask_bit()).unwrap();
    let p = q.as_ptr();
    let entry = |i: usize| -> DeferredEntry {
        let at = DEFERRED_ENTRIES_OFFSET as usize + i * 32;
        DeferredEntry {
            call: get(p, at),
            flags: ReservedU32::Zero,
            args: [get(p, at + 8), get(p, at + 16), get(p, at + 24)],
        }
    };
    assert_eq!(entry(0).call, Call::MemUpdatePte.code());
    assert_eq!(entry(0).args, [0x1008, 0x2003, 1]);
    assert_eq!(
        get::<u32>(p, DEFERRED_ENTRIES_OFFSET as usize + 4),
        0,
        "flags written as 0"
    );
    assert_eq!(entry(1).call, Call::TimeSetTimer.code());
    assert_eq!(entry(1).args, [77, 0, 0]);
    assert_eq!(entry(2).call, Call::EventsSetMask.code());
    assert_eq!(get::<u32>(p, offset_of!(DeferredQueueHeader, tail)), 3);

    // SAFETY: as above.
    let r = unsafe { q.push(Call::VcpuInfo, [0; 3]) };
    assert_eq!(r, Err(DeferError::NotDeferrable(Call::VcpuInfo)));
    while !q.is_full() {
        q.push_set_timer(1).unwrap();
    }
    assert_eq!(q.len(), DEFERRED_QUEUE_CAPACITY);
    assert_eq!(q.push_set_timer(1), Err(Full));

    // The host records a failure.
    put(p, offset_of!(DeferredQueueHeader, error_count), 1u32);
    put(p, offset_of!(DeferredQueueHeader, first_error_index), 2u32);
    put(
        p,
        offset_of!(DeferredQueueHeader, first_error_status),
        Status::InvalidParameter as u32,
    );
    let errors = q.errors();
    assert_eq!(errors.first_index, 2);
    assert_eq!(
        errors.first_error(),
        Some(Error::Status(Status::InvalidParameter))
    );
}

#[test]
fn defer_flushes_a_full_queue_then_pushes() {
    let mut q = Box::new(DeferredQueue::new());
    while !q.is_full() {
        q.push_set_timer(1).unwrap();
    }
    let page = q.as_ptr() as usize;
    let flush = Call::DeferFlush.code();
    let pv = client(Mock::with(move |code, _| {
        assert_eq!(code, flush);
        // The host drains: head := tail.
        let p = page as *mut u8;
        let tail: u32 = get(p, offset_of!(DeferredQueueHeader, tail));
        let head: u32 = get(p, offset_of!(DeferredQueueHeader, head));
        put(p, offset_of!(DeferredQueueHeader, head), tail);
        RawResult::ok([u64::from(tail - head), 0, 0, 0])
    }));
    // SAFETY: the mock host only moves the queue's head.
    unsafe { pv.defer(&mut q, Call::TimeSetTimer, [9, 0, 0]) }.unwrap();
    assert_eq!(pv.transport().calls().len(), 1, "one DEFER_FLUSH");
    assert_eq!(q.len(), 1);
    // SAFETY: as above.
    let r = unsafe { pv.defer(&mut q, Call::VcpuYield, [0; 3]) };
    assert_eq!(r, Err(Error::Status(Status::NotAllowedHere)));
    assert_eq!(pv.transport().calls().len(), 1, "rejected without a call");
}

// --- Rings ----------------------------------------------------------------------------------------

#[test]
fn rings_submit_reap_and_wakeup() {
    let mut rings = Box::new(Rings::new());
    assert_eq!(rings.sq_gpa() % 4096, 0);
    assert_eq!(rings.cq_gpa(), rings.sq_gpa() + 4096);
    let setup = rings.setup(RingMode::HostPolled, RING_COMPLETION_EVENTS);
    assert_eq!(
        (setup.sq_page, setup.cq_page, setup.mode, setup.flags),
        (
            rings.sq_gpa(),
            rings.cq_gpa(),
            RingMode::HostPolled,
            RING_COMPLETION_EVENTS
        )
    );

    let sqe = |i: u64| SubmissionEntry {
        user_data: 100 + i,
        call: Call::EventsSend.code(),
        flags: ReservedU32::Zero,
        args: [1, i, 0, 0, 0, 0],
    };
    for i in 0..SQ_CAPACITY as u64 {
        // SAFETY: no host runs these submissions.
        unsafe { rings.submit(sqe(i)) }.unwrap();
    }
    // SAFETY: as above.
    assert_eq!(unsafe { rings.submit(sqe(99)) }, Err(Full));
    assert_eq!(rings.sq_len(), SQ_CAPACITY);
    let sq = rings.sq_ptr();
    let at = RING_ENTRIES_OFFSET as usize + 5 * 64;
    assert_eq!(get::<u64>(sq, at), 105);
    assert_eq!(get::<u32>(sq, at + 8), Call::EventsSend.code());
    assert_eq!(get::<u64>(sq, at + 24), 5);

    // The host consumes 3 submissions and completes them (one fails).
    put(sq, offset_of!(RingHeader, head), 3u32);
    let cq = rings.cq_ptr();
    for i in 0..3u32 {
        let status = if i == 1 {
            Status::InvalidParameter as u32
        } else {
            0
        };
        let cqe = CompletionEntry {
            user_data: 100 + u64::from(i),
            status,
            reserved: 0,
            results: [u64::from(i), 0, 0, 7],
        };
        put(cq, RING_ENTRIES_OFFSET as usize + i as usize * 48, cqe);
    }
    put(cq, offset_of!(RingHeader, tail), 3u32);
    assert_eq!(rings.cq_len(), 3);
    let mut done = Vec::new();
    assert_eq!(
        rings.reap(|c| done.push((c.user_data, completion_result(&c)))),
        3
    );
    assert_eq!(
        done,
        [
            (100, Ok([0, 0, 0, 7])),
            (101, Err(Error::Status(Status::InvalidParameter))),
            (102, Ok([2, 0, 0, 7])),
        ]
    );
    assert_eq!(get::<u32>(cq, offset_of!(RingHeader, head)), 3);
    assert_eq!(rings.cq_len(), 0);

    // Room again after the host consumed.
    // SAFETY: as above.
    unsafe { rings.submit(sqe(32)) }.unwrap();
    assert!(!rings.need_wakeup());
    put(sq, offset_of!(RingHeader, flags), SQ_NEED_WAKEUP);
    assert!(rings.need_wakeup());
    assert_eq!(CQ_CAPACITY, 64);
}

#[test]
fn ring_setup_rings_passes_a_page_safe_block() {
    let rings = Box::new(Rings::new());
    let (sq, cq) = (rings.sq_gpa(), rings.cq_gpa());
    let seen = std::rc::Rc::new(std::cell::Cell::new(None));
    let seen2 = seen.clone();
    let pv = client(Mock::with(move |_, a| {
        assert_eq!(a[0] % 32, 0, "aligned so that it cannot cross a page");
        let block = ptr::with_exposed_provenance::<RingSetup>(a[0] as usize);
        // SAFETY: (test) the guest's block is alive during the call.
        let s = unsafe { block.read() };
        seen2.set(Some((s.sq_page, s.cq_page, s.mode, s.flags)));
        RawResult::ok([0; 4])
    }));
    // SAFETY: the mock host only reads the block.
    unsafe { pv.ring_setup_rings(&rings, RingMode::Doorbell, 0) }.unwrap();
    assert_eq!(pv.transport().last().0, Call::RingSetup);
    assert_eq!(seen.get(), Some((sq, cq, RingMode::Doorbell, 0)));
}

// --- MULTICALL ----------------------------------------------------------------------------------

#[test]
fn multicall_reissues_on_incomplete() {
    let mut batch = Multicall::<4>::new();
    for i in 0..4 {
        batch.push(Call::EventsSend, [1, i, 0, 0, 0, 0]).unwrap();
    }
    // A host that preempts after two entries, then fails entry 3.
    let pv = client(Mock::with(|code, a| {
        assert_eq!(code, Call::Multicall.code());
        let (gpa, count, start) = (a[0] as usize, a[1] as usize, a[2] as usize);
        let entries = ptr::with_exposed_provenance_mut::<MulticallEntry>(gpa);
        let stop = if start == 0 { 2 } else { count };
        for i in start..stop {
            // SAFETY: (test) the guest's batch is exclusively lent to the call.
            let e = unsafe { &mut *entries.add(i) };
            assert_eq!(e.args[1], i as u64);
            if i == 3 {
                e.status = Status::InvalidParameter as u32;
            } else {
                e.results = [i as u64 * 10, 0, 0, 0];
            }
        }
        let results = [stop as u64, (stop - start) as u64, 0, 0];
        if stop < count {
            RawResult {
                status: Status::Incomplete.raw(),
                results,
            }
        } else {
            RawResult::ok(results)
        }
    }));
    // SAFETY: the entries' calls have no memory effects, and the mock host only writes the
    // batch.
    let outcome = unsafe { pv.multicall_batch(&mut batch, MULTICALL_STOP_ON_ERROR) }.unwrap();
    assert_eq!((outcome.next, outcome.processed, outcome.issues), (4, 4, 2));
    let starts: Vec<(u64, u64, u64)> = pv
        .transport()
        .calls()
        .iter()
        .map(|(_, a)| (a[1], a[2], a[3]))
        .collect();
    assert_eq!(
        starts,
        [
            (4, 0, MULTICALL_STOP_ON_ERROR),
            (4, 2, MULTICALL_STOP_ON_ERROR)
        ]
    );
    assert_eq!(pv.transport().calls()[0].1[0], batch.gpa());
    assert_eq!(batch.result(0), Some(Ok([0, 0, 0, 0])));
    assert_eq!(batch.result(2), Some(Ok([20, 0, 0, 0])));
    assert_eq!(
        batch.result(3),
        Some(Err(Error::Status(Status::InvalidParameter)))
    );
    assert_eq!(batch.result(4), None);
}

#[test]
fn multicall_batch_limits() {
    let mut batch = Multicall::<32>::new();
    assert_eq!(std::mem::align_of::<Multicall<32>>(), 4096);
    for _ in 0..32 {
        batch.push(Call::VcpuYield, [0; 6]).unwrap();
    }
    assert_eq!(batch.push(Call::VcpuYield, [0; 6]), Err(Full));
    assert_eq!(batch.entries().len(), 32);
    batch.clear();
    assert!(batch.is_empty());
    let pv = client(Mock::plausible());
    // SAFETY: an empty batch makes no call.
    let outcome = unsafe { pv.multicall_batch(&mut batch, 0) }.unwrap();
    assert_eq!(outcome.issues, 0);
    assert!(pv.transport().calls().is_empty());

    // The raw loop passes a hard error through, without re-issuing.
    let pv = client(Mock::with(|_, _| RawResult::error(Status::Misaligned)));
    // SAFETY: the mock host touches no memory.
    let r = unsafe { pv.multicall_all(0x1004, 2, 0) };
    assert_eq!(r, Err(Error::Status(Status::Misaligned)));
    assert_eq!(pv.transport().calls().len(), 1);
}

// --- MULTICALL_PAGES ----------------------------------------------------------------------------

/// A host that plays MULTICALL_PAGES on the guest's pages through raw pointers: reads the
/// list, checks each page's alignment, runs entries `start..count` (at most `budget` per
/// issue) by answering `results = [i, call, 0, 0]`, fails entry `fail`, and preempts.
fn paged_host(budget: u64, fail: u64) -> Mock {
    Mock::with(move |code, a| {
        assert_eq!(code, Call::MulticallPages.code());
        let (list, pages, count, start) = (a[0] as usize, a[1], a[2], a[3]);
        assert_eq!(list % 8, 0);
        assert_eq!(pages, count.div_ceil(42), "pages fits count");
        let list = ptr::with_exposed_provenance::<u64>(list);
        let stop = count.min(start + budget);
        for i in start..stop {
            // SAFETY: (test) the list and its pages are the guest's batch, lent to the call.
            let page = unsafe { list.add((i / 42) as usize).read() };
            assert_eq!(page % 4096, 0, "page {} aligned", i / 42);
            let e = ptr::with_exposed_provenance_mut::<MulticallEntry>(page as usize)
                .wrapping_add((i % 42) as usize);
            // SAFETY: (test) as above; each entry lies within its page.
            let e = unsafe { &mut *e };
            assert_eq!(e.args[0], i, "entry {i} where the guest put it");
            if i == fail {
                e.status = Status::NotAllowedHere as u32;
            } else {
                e.status = 0;
                e.results = [i, u64::from(e.call), 0, 0];
            }
        }
        let results = [stop, stop - start, 0, 0];
        if stop < count {
            RawResult {
                status: Status::Incomplete.raw(),
                results,
            }
        } else {
            RawResult::ok(results)
        }
    })
}

#[test]
fn paged_multicall_builds_pages_and_list_and_resumes() {
    let mut batch = Box::new(PagedMulticall::<25>::new());
    assert_eq!(std::mem::align_of::<PagedMulticall<25>>(), 4096);
    for i in 0..1024u64 {
        assert_eq!(
            batch.push(Call::VcpuInfo, [i, 0, 0, 0, 0, 0]),
            Ok(i as usize)
        );
    }
    assert_eq!(
        (batch.len(), batch.pages(), batch.capacity()),
        (1024, 25, 1050)
    );
    // The host preempts every 300 entries and fails entry 700.
    let pv = client(paged_host(300, 700));
    // SAFETY: the entries' calls have no memory effects, and the mock host only writes the
    // batch.
    let outcome = unsafe { pv.multicall_pages_batch(&mut batch, 0) }.unwrap();
    assert_eq!(
        (outcome.next, outcome.processed, outcome.issues),
        (1024, 1024, 4)
    );
    let starts: Vec<u64> = pv.transport().calls().iter().map(|(_, a)| a[3]).collect();
    assert_eq!(starts, [0, 300, 600, 900]);
    for i in [0usize, 41, 42, 699, 701, 1023] {
        assert_eq!(
            batch.result(i),
            Some(Ok([i as u64, u64::from(Call::VcpuInfo.code()), 0, 0]))
        );
    }
    assert_eq!(
        batch.result(700),
        Some(Err(Error::Status(Status::NotAllowedHere)))
    );
    assert_eq!(batch.result(1024), None);
    // Entry i is on page i / 42 at 96 * (i % 42); the pages are consecutive here but the
    // host reads them from the list.
    assert_eq!(batch.entry_gpa(42) - batch.entry_gpa(0), 4096);
    assert_eq!(batch.entry_gpa(43) - batch.entry_gpa(42), 96);

    // STOP_ON_ERROR: the host stops at the failing entry; a batch that fits in one issue is
    // one exit.
    let pv = client(Mock::with(|_, a| RawResult::ok([a[2], a[2] - a[3], 0, 0])));
    // SAFETY: the mock host touches no memory.
    let outcome = unsafe { pv.multicall_pages_batch(&mut batch, MULTICALL_STOP_ON_ERROR) }.unwrap();
    assert_eq!(outcome.issues, 1);
    assert_eq!(pv.transport().last().1[4], MULTICALL_STOP_ON_ERROR);
}

#[test]
fn paged_multicall_limits() {
    let mut batch = Box::new(PagedMulticall::<98>::new());
    assert_eq!(
        batch.capacity(),
        4096,
        "98 pages hold 4116 slots, the call takes 4096"
    );
    for _ in 0..4096 {
        batch.push(Call::VcpuYield, [0; 6]).unwrap();
    }
    assert_eq!(batch.push(Call::VcpuYield, [0; 6]), Err(Full));
    assert_eq!(batch.pages(), 98);
    let mut small = PagedMulticall::<1>::new();
    for _ in 0..42 {
        small.push(Call::VcpuYield, [0; 6]).unwrap();
    }
    assert_eq!(small.push_code(0x0fff, [0; 6]), Err(Full));
    small.clear();
    assert!(small.is_empty());
    let pv = client(Mock::plausible());
    // SAFETY: an empty batch makes no call.
    let outcome = unsafe { pv.multicall_pages_batch(&mut small, 0) }.unwrap();
    assert_eq!(outcome.issues, 0);
    assert!(pv.transport().calls().is_empty());
}

/// The steal-time page reader: a consistent copy, retried while the host holds the lock.
#[test]
fn steal_page_reader_returns_consistent_values() {
    use pvabi_guest::time::SharedStealPage;
    let page = Box::new(SharedStealPage::new());
    let base = page.gpa() as *mut u8;
    // SAFETY: the page is ours; this plays the host, writing the fields then an even sequence.
    unsafe {
        base.add(8).cast::<u64>().write_volatile(12_345);
        base.add(16).cast::<u64>().write_volatile(7);
        base.cast::<u32>().write_volatile(4);
    }
    let s = page.read();
    assert_eq!((s.sequence, s.steal_ns, s.preemptions), (4, 12_345, 7));
}
