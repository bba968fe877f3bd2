//! Spec chapter "Events family": the per-vCPU event queue, masking and coalesced interrupts.
//!
//! Each vCPU registers an [`EventQueue`] page and an interrupt vector with
//! `EVENTS_SET_QUEUE`. The host appends [`Event`]s (TIMER, KICK, USER, RING_COMPLETION) at
//! `tail`; the guest consumes at `head`. The host raises the vector only when it appends an
//! unmasked event while `interrupt_pending` is 0, and then sets it to 1, so a burst costs one
//! interrupt. [`EventQueue::drain`] implements the guest's side: drain, write 0 to
//! `interrupt_pending`, re-check `tail`, drain again if it moved.
//!
//! # Memory ordering of the event queue
//!
//! - `tail` is loaded with acquire ordering, so the entries the host wrote before publishing
//!   `tail` are visible to the (volatile) entry loads that follow.
//! - `head` is stored with release ordering after the entry was copied, so the host cannot
//!   see the slot as free before the guest has read it.
//! - Re-arming is an atomic swap of `interrupt_pending` with sequentially consistent
//!   ordering (`xchg`, a full barrier on x86-64), so the re-check of `tail` that follows
//!   cannot be satisfied before the store of 0 is visible. This is the store-then-load
//!   pattern both sides need: the host stores `tail` and then loads `interrupt_pending`; the
//!   guest stores `interrupt_pending` and then loads `tail`. With a full barrier on each side
//!   at least one of them sees the other's store, so an event is never left without either
//!   an interrupt or the guest's re-check finding it.

use core::mem::offset_of;
use core::sync::atomic::Ordering;

use pvabi_abi::calls::Call;
use pvabi_abi::events::{
    Event, EventKind, EventQueueHeader, EVENT_QUEUE_CAPACITY, EVENT_QUEUE_ENTRIES_OFFSET,
    EVENT_VECTOR_MIN,
};

use crate::error::Result;
use crate::shared::{gpa_of, slot, RawPage};
use crate::transport::Transport;
use crate::Pvabi;

/// Decodes an event's `kind`; `None` for a kind this version does not define.
pub fn event_kind(event: &Event) -> Option<EventKind> {
    [
        EventKind::Timer,
        EventKind::Kick,
        EventKind::User,
        EventKind::RingCompletion,
    ]
    .into_iter()
    .find(|k| *k as u32 == event.kind)
}

impl<T: Transport> Pvabi<T> {
    /// `EVENTS_SET_QUEUE`: registers the 4 KiB-aligned page at guest-physical `gpa` as the
    /// calling vCPU's event queue, delivered on interrupt `vector` (32 to 255). For an
    /// [`EventQueue`] under identity mapping, pass [`EventQueue::gpa`].
    ///
    /// # Safety
    /// The page must be given to the host while registered (until
    /// [`events_unset_queue`](Self::events_unset_queue) succeeds, or forever), and the guest
    /// must only access it with volatile or atomic accesses, such as a `'static`
    /// [`EventQueue`]. The guest must be ready to take `vector` (an interrupt may arrive as
    /// soon as interrupts are enabled).
    #[doc(alias = "EVENTS_SET_QUEUE")]
    pub unsafe fn events_set_queue(&self, gpa: u64, vector: u8) -> Result<()> {
        // SAFETY: the caller hands the page over (see above).
        unsafe { self.call_raw(Call::EventsSetQueue, [gpa, u64::from(vector), 0, 0, 0, 0]) }
            .map(drop)
    }

    /// `EVENTS_SET_QUEUE` with address 0: unregisters the calling vCPU's event queue. The
    /// vector argument is still range-checked, so the lowest valid vector is passed.
    #[doc(alias = "EVENTS_SET_QUEUE")]
    pub fn events_unset_queue(&self) -> Result<()> {
        // SAFETY: address 0 only ends the host's writes to the registered page.
        unsafe { self.call_raw(Call::EventsSetQueue, [0, EVENT_VECTOR_MIN, 0, 0, 0, 0]) }.map(drop)
    }

    /// `EVENTS_SET_MASK`: bit `k` masks [`EventKind`] `k` (see [`EventKind::mask_bit`]);
    /// masked kinds are still queued but raise no interrupt. Returns the previous mask.
    /// Deferrable: see [`DeferredQueue::push_set_mask`].
    ///
    /// [`DeferredQueue::push_set_mask`]: crate::batch::DeferredQueue::push_set_mask
    #[doc(alias = "EVENTS_SET_MASK")]
    pub fn events_set_mask(&self, mask: u64) -> Result<u64> {
        // SAFETY: EVENTS_SET_MASK only changes this vCPU's event mask (possibly raising the
        // queue's interrupt, which the guest accepted when it registered the queue).
        let r = unsafe { self.call_raw(Call::EventsSetMask, [mask, 0, 0, 0, 0, 0]) }?;
        Ok(r[0])
    }

    /// `EVENTS_SEND`: posts a USER event carrying `data` to vCPU `vcpu`.
    #[doc(alias = "EVENTS_SEND")]
    pub fn events_send(&self, vcpu: u32, data: u64) -> Result<()> {
        // SAFETY: the host writes the event into the target's registered queue page, which
        // its owner handed over; no other guest memory is touched.
        unsafe { self.call_raw(Call::EventsSend, [u64::from(vcpu), data, 0, 0, 0, 0]) }.map(drop)
    }
}

const HEAD: usize = offset_of!(EventQueueHeader, head);
const TAIL: usize = offset_of!(EventQueueHeader, tail);
const CAPACITY: usize = offset_of!(EventQueueHeader, capacity);
const INTERRUPT_PENDING: usize = offset_of!(EventQueueHeader, interrupt_pending);
const DROPPED: usize = offset_of!(EventQueueHeader, dropped);
const ENTRIES: usize = EVENT_QUEUE_ENTRIES_OFFSET as usize;
const ENTRY_SIZE: usize = core::mem::size_of::<Event>();

/// An event-queue page: 4 KiB, 4 KiB-aligned, zeroed, owned by the guest and written by the
/// host once registered with `EVENTS_SET_QUEUE` (header, then 128 entries at offset 64).
///
/// Reading methods take `&self`; [`drain`](Self::drain), the only consumer, takes `&mut self`
/// so that two drains cannot run at once on the guest side (drain from the owning vCPU's
/// interrupt handler, or with that interrupt disabled).
///
/// ```
/// use pvabi_guest::events::EventQueue;
/// static mut QUEUE: EventQueue = EventQueue::new();
/// // SAFETY: only this code touches QUEUE.
/// let q = unsafe { &mut *core::ptr::addr_of_mut!(QUEUE) };
/// assert_eq!(q.gpa() % 4096, 0);
/// assert_eq!(q.drain(|_event| {}), 0);
/// ```
#[repr(C, align(4096))]
pub struct EventQueue {
    page: RawPage,
}

impl EventQueue {
    /// A zeroed queue page.
    pub const fn new() -> Self {
        EventQueue {
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

    /// The guest's consumer index.
    pub fn head(&self) -> u32 {
        self.page.atomic_u32(HEAD).load(Ordering::Relaxed)
    }

    /// The host's producer index.
    pub fn tail(&self) -> u32 {
        self.page.atomic_u32(TAIL).load(Ordering::Acquire)
    }

    /// Events waiting (`tail - head`).
    pub fn len(&self) -> u32 {
        self.tail().wrapping_sub(self.head())
    }

    /// True when no event is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The capacity the host wrote at registration (128; 0 before registration).
    pub fn capacity(&self) -> u32 {
        self.page.atomic_u32(CAPACITY).load(Ordering::Relaxed)
    }

    /// Events the host dropped because the queue was full.
    pub fn dropped(&self) -> u32 {
        self.page.atomic_u32(DROPPED).load(Ordering::Relaxed)
    }

    /// True after the host raised the interrupt and before the guest re-armed it.
    pub fn interrupt_pending(&self) -> bool {
        self.page
            .atomic_u32(INTERRUPT_PENDING)
            .load(Ordering::Acquire)
            != 0
    }

    /// Consumes every waiting event, calling `f` for each in queue order, with the coalescing
    /// protocol: drain, write `interrupt_pending = 0`, re-check `tail`, and drain again until
    /// the re-check finds nothing. Returns the number of events consumed.
    ///
    /// Each slot is released (by advancing `head`) before `f` runs on its copy.
    pub fn drain(&mut self, mut f: impl FnMut(Event)) -> u32 {
        drain_ring(&PageRing(&self.page), &mut f)
    }
}

impl Default for EventQueue {
    fn default() -> Self {
        EventQueue::new()
    }
}

impl core::fmt::Debug for EventQueue {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("EventQueue")
            .field("gpa", &self.gpa())
            .field("head", &self.head())
            .field("tail", &self.tail())
            .field("interrupt_pending", &self.interrupt_pending())
            .field("dropped", &self.dropped())
            .finish()
    }
}

/// The queue accesses the drain protocol needs (a fake implements it in tests, to post
/// events at exact points of the protocol).
pub(crate) trait EventRing {
    /// The guest's head (guest-owned: relaxed).
    fn head(&self) -> u32;
    /// The host's tail (acquire).
    fn tail(&self) -> u32;
    /// A copy of entry `index` (free-running).
    fn entry(&self, index: u32) -> Event;
    /// Publishes the guest's head (release).
    fn set_head(&self, head: u32);
    /// Writes `interrupt_pending = 0` with a full barrier.
    fn rearm(&self);
}

struct PageRing<'a>(&'a RawPage);

impl EventRing for PageRing<'_> {
    fn head(&self) -> u32 {
        self.0.atomic_u32(HEAD).load(Ordering::Relaxed)
    }

    fn tail(&self) -> u32 {
        self.0.atomic_u32(TAIL).load(Ordering::Acquire)
    }

    fn entry(&self, index: u32) -> Event {
        let at = ENTRIES + slot(index, EVENT_QUEUE_CAPACITY) * ENTRY_SIZE;
        Event {
            kind: self.0.read_u32(at + offset_of!(Event, kind)),
            source: self.0.read_u32(at + offset_of!(Event, source)),
            data: self.0.read_u64(at + offset_of!(Event, data)),
        }
    }

    fn set_head(&self, head: u32) {
        self.0.atomic_u32(HEAD).store(head, Ordering::Release);
    }

    fn rearm(&self) {
        self.0
            .atomic_u32(INTERRUPT_PENDING)
            .swap(0, Ordering::SeqCst);
    }
}

/// The guest's side of the coalescing protocol (see [`EventQueue::drain`]).
pub(crate) fn drain_ring<R: EventRing + ?Sized>(ring: &R, f: &mut dyn FnMut(Event)) -> u32 {
    let mut consumed = 0u32;
    let mut head = ring.head();
    loop {
        let tail = ring.tail();
        if tail.wrapping_sub(head) > EVENT_QUEUE_CAPACITY {
            // Impossible with a conforming host (it drops events when full); skip the slots
            // it overwrote rather than replay stale ones.
            head = tail.wrapping_sub(EVENT_QUEUE_CAPACITY);
        }
        while head != tail {
            let event = ring.entry(head);
            head = head.wrapping_add(1);
            ring.set_head(head);
            consumed = consumed.wrapping_add(1);
            f(event);
        }
        ring.rearm();
        if ring.tail() == head {
            return consumed;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::cell::{Cell, RefCell};
    use std::vec::Vec;

    /// A fake queue: `entries[i]` is event index `i`; `post_on_rearm` events are appended
    /// by the "host" just before the guest's re-arm store lands (the host saw
    /// interrupt_pending == 1, so it raised no interrupt).
    struct Fake {
        head: Cell<u32>,
        entries: RefCell<Vec<Event>>,
        pending: Cell<u32>,
        post_on_rearm: RefCell<Vec<Event>>,
        rearms: Cell<u32>,
    }

    impl EventRing for Fake {
        fn head(&self) -> u32 {
            self.head.get()
        }
        fn tail(&self) -> u32 {
            self.entries.borrow().len() as u32
        }
        fn entry(&self, index: u32) -> Event {
            self.entries.borrow()[index as usize]
        }
        fn set_head(&self, head: u32) {
            self.head.set(head);
        }
        fn rearm(&self) {
            if let Some(e) = self.post_on_rearm.borrow_mut().pop() {
                assert_eq!(
                    self.pending.get(),
                    1,
                    "host posts while the interrupt is pending"
                );
                self.entries.borrow_mut().push(e);
            }
            self.pending.set(0);
            self.rearms.set(self.rearms.get() + 1);
        }
    }

    fn user(data: u64) -> Event {
        Event {
            kind: EventKind::User as u32,
            source: 1,
            data,
        }
    }

    #[test]
    fn drain_rechecks_after_rearm() {
        let fake = Fake {
            head: Cell::new(0),
            entries: RefCell::new(Vec::from([user(1), user(2)])),
            pending: Cell::new(1),
            post_on_rearm: RefCell::new(Vec::from([user(3)])),
            rearms: Cell::new(0),
        };
        let mut seen = Vec::new();
        let n = drain_ring(&fake, &mut |e| seen.push(e.data));
        assert_eq!(
            seen,
            [1, 2, 3],
            "the event posted between drain and re-arm is consumed"
        );
        assert_eq!(n, 3);
        assert_eq!(fake.head.get(), 3);
        assert_eq!(fake.rearms.get(), 2, "re-armed after each pass");
        assert_eq!(fake.pending.get(), 0);
    }

    #[test]
    fn drain_skips_overwritten_slots() {
        let entries: Vec<Event> = (0..EVENT_QUEUE_CAPACITY as u64 + 5).map(user).collect();
        let fake = Fake {
            head: Cell::new(0),
            entries: RefCell::new(entries),
            pending: Cell::new(0),
            post_on_rearm: RefCell::new(Vec::new()),
            rearms: Cell::new(0),
        };
        let mut first = None;
        let n = drain_ring(&fake, &mut |e| {
            first.get_or_insert(e.data);
        });
        assert_eq!(n, EVENT_QUEUE_CAPACITY);
        assert_eq!(first, Some(5));
    }

    #[test]
    fn kinds_decode() {
        for k in [
            EventKind::Timer,
            EventKind::Kick,
            EventKind::User,
            EventKind::RingCompletion,
        ] {
            let e = Event {
                kind: k as u32,
                ..Event::default()
            };
            assert_eq!(event_kind(&e), Some(k));
        }
        assert_eq!(event_kind(&Event::default()), None);
    }
}
