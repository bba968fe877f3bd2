//! Events family: the per-vCPU event queue, masking, and coalesced interrupts.
//!
//! Posting appends at the host's own `tail` (never read back from guest memory), reading the
//! guest's `head` once as a copied value; a full (or nonsensical) queue drops the event and
//! counts it. The interrupt is raised only for an unmasked kind while `interrupt_pending` is
//! 0, and the host then sets it to 1: a burst costs one interrupt. Without a queue, events
//! latch a flag that wakes VCPU_HALT.

use std::mem::offset_of;

use pvabi_abi::calls::Call;
use pvabi_abi::events::{
    Event, EventKind, EventQueueHeader, EVENT_QUEUE_CAPACITY, EVENT_QUEUE_ENTRIES_OFFSET,
};
use pvabi_abi::status::Status;
use zerocopy::IntoBytes;

use crate::faults::injected;
use crate::guest_check::Consumed;
use crate::guest_mem;
use crate::machine::Machine;
use crate::state::{EventQueue, Inner, Owner, VcpuState};
use crate::sync::{lock, write_lock};
use crate::{done, Reply, Req};

const HEAD: u64 = offset_of!(EventQueueHeader, head) as u64;
const TAIL: u64 = offset_of!(EventQueueHeader, tail) as u64;
const PENDING: u64 = offset_of!(EventQueueHeader, interrupt_pending) as u64;
const DROPPED: u64 = offset_of!(EventQueueHeader, dropped) as u64;
const EVENT_SIZE: u64 = size_of::<Event>() as u64;

pub(crate) fn handle<M: Machine>(h: &Inner<M>, r: &Req) -> Result<Reply, Status> {
    match r.call {
        // `vector` is 32..=255 (check 5).
        Call::EventsSetQueue => set_queue(h, r.vcpu, r.block.page_arg(), r.args[1] as u8),
        Call::EventsSetMask => set_mask(h, r.vcpu, r.args[0]),
        Call::EventsSend => {
            // `vcpu` is a valid index (check 5); a stopped target is refused (EVT-019).
            let target = r.args[0] as u32;
            if !h.is_running(target) {
                return Err(Status::InvalidState);
            }
            h.post_event(target, EventKind::User, r.vcpu, r.args[1]);
            done(&[])
        }
        _ => Err(Status::NotSupported),
    }
}

fn set_queue<M: Machine>(
    h: &Inner<M>,
    vcpu: u32,
    page: Option<u64>,
    vector: u8,
) -> Result<Reply, Status> {
    let owner = Owner::EventQueue(vcpu);
    let new = match page {
        Some(gpa) => {
            write_lock(&h.vm).claim(&[(gpa, owner)])?;
            let header = EventQueueHeader {
                capacity: EVENT_QUEUE_CAPACITY,
                ..Default::default()
            };
            guest_mem::write(h.machine.memory(), gpa, header.as_bytes());
            Some(EventQueue {
                gpa,
                vector,
                tail: 0,
                dropped: 0,
            })
        }
        None => None,
    };
    let slot = &h.vcpus[vcpu as usize];
    let old = {
        let mut st = lock(&slot.state);
        if new.is_some() {
            // From now on pending events are the queue's entries.
            st.latched = false;
        }
        std::mem::replace(&mut st.queue, new)
    };
    if let Some(old) = old {
        write_lock(&h.vm).release(old.gpa, owner);
    }
    if let Some(c) = &h.checker {
        // The checking host watches every access to the new page (EVT-010).
        h.watch_consumed_queue(c, vcpu, Consumed::Events, page);
    }
    done(&[])
}

fn set_mask<M: Machine>(h: &Inner<M>, vcpu: u32, mask: u64) -> Result<Reply, Status> {
    let vcpu = if injected!(h, EventMaskSharedByAllVcpus) {
        0
    } else {
        vcpu
    };
    let slot = &h.vcpus[vcpu as usize];
    let mut st = lock(&slot.state);
    let previous = std::mem::replace(&mut st.mask, mask);
    let unmasked = previous & !mask;
    if unmasked != 0 {
        if let Some(q) = st.queue {
            if h.queued_kind_in(&q, unmasked) && h.raise_if_idle(vcpu, &q) {
                h.record(|r| r.interrupts_raised += 1);
            }
        }
    }
    done(&[previous])
}

impl<M: Machine> Inner<M> {
    /// Whether `vcpu` is running (started and not stopped); false for an index out of range.
    pub(crate) fn is_running(&self, vcpu: u32) -> bool {
        self.vcpus
            .get(vcpu as usize)
            .is_some_and(|slot| lock(&slot.state).running)
    }

    /// Posts an event to `target` (ignored for an index out of range) and wakes its HALT.
    pub(crate) fn post_event(&self, target: u32, kind: EventKind, source: u32, data: u64) {
        let Some(slot) = self.vcpus.get(target as usize) else {
            return;
        };
        let mem = self.machine.memory();
        let (mut posted, mut dropped, mut latched, mut raised) = (0, 0, 0, 0);
        {
            let mut st = lock(&slot.state);
            let masked =
                st.mask & kind.mask_bit() != 0 && !injected!(self, MaskedEventRaisesInterrupt);
            match st.queue.as_mut() {
                None => {
                    st.latched = true;
                    latched = 1;
                }
                Some(q) => {
                    // The guest's head, read once; a head "ahead" of the tail looks full.
                    let head = guest_mem::load_u32(mem, q.gpa + HEAD).unwrap_or(q.tail);
                    if let Some(c) = &self.checker {
                        c.event_head(target, head, q.tail);
                    }
                    let full = q.tail.wrapping_sub(head) >= EVENT_QUEUE_CAPACITY;
                    if full && !injected!(self, EventsFullQueueOverwrites) {
                        q.dropped = q.dropped.wrapping_add(1);
                        guest_mem::store_u32(mem, q.gpa + DROPPED, q.dropped);
                        dropped = 1;
                    } else {
                        let event = Event {
                            kind: kind as u32,
                            source,
                            data,
                        };
                        let slot_gpa = q.gpa
                            + EVENT_QUEUE_ENTRIES_OFFSET
                            + u64::from(q.tail % EVENT_QUEUE_CAPACITY) * EVENT_SIZE;
                        guest_mem::write(mem, slot_gpa, event.as_bytes());
                        if let Some(c) = &self.checker {
                            c.consumed_published(
                                target,
                                Consumed::Events,
                                q.tail,
                                q.tail.wrapping_add(1),
                            );
                        }
                        q.tail = q.tail.wrapping_add(1);
                        posted = 1;
                        let header = GuestHeader { mem, gpa: q.gpa };
                        let coalesce = !injected!(self, EventsNotCoalesced);
                        if publish_and_arm(&header, q.tail, !masked, coalesce) {
                            self.machine.raise_interrupt(target, q.vector);
                            raised = 1;
                        }
                    }
                }
            }
            // Counted before anyone can be woken by the event.
            self.record(|r| {
                r.events_posted += posted;
                r.events_dropped += dropped;
                r.events_latched += latched;
                r.interrupts_raised += raised;
            });
        }
        slot.wake.notify_all();
    }

    /// Raises the queue's interrupt unless one is pending (`interrupt_pending` != 0); sets
    /// `interrupt_pending` to 1 first. Returns whether it raised. For an event queued earlier,
    /// whose `tail` store (and the barrier after it) is long done.
    fn raise_if_idle(&self, vcpu: u32, q: &EventQueue) -> bool {
        let header = GuestHeader {
            mem: self.machine.memory(),
            gpa: q.gpa,
        };
        let raise = arm(&header, !injected!(self, EventsNotCoalesced));
        if raise {
            self.machine.raise_interrupt(vcpu, q.vector);
        }
        raise
    }

    /// Whether an unconsumed entry of the queue has a kind in `kinds` (a mask).
    fn queued_kind_in(&self, q: &EventQueue, kinds: u64) -> bool {
        let mem = self.machine.memory();
        let head = guest_mem::load_u32(mem, q.gpa + HEAD).unwrap_or(q.tail);
        let queued = q.tail.wrapping_sub(head).min(EVENT_QUEUE_CAPACITY);
        (0..queued).any(|i| {
            let index = head.wrapping_add(i) % EVENT_QUEUE_CAPACITY;
            let gpa = q.gpa + EVENT_QUEUE_ENTRIES_OFFSET + u64::from(index) * EVENT_SIZE;
            guest_mem::load_u32(mem, gpa).is_some_and(|kind| kind < 64 && kinds & (1 << kind) != 0)
        })
    }

    /// Whether an event is pending for HALT: queue not empty, or (without a queue) the
    /// latched flag, which this consumes.
    pub(crate) fn take_pending(&self, st: &mut VcpuState) -> bool {
        match &st.queue {
            Some(q) => guest_mem::load_u32(self.machine.memory(), q.gpa + HEAD)
                .is_some_and(|head| head != q.tail),
            None => std::mem::take(&mut st.latched),
        }
    }
}

/// The words of an event queue's header that posting touches, as the post protocol
/// ([`publish_and_arm`]) sees them: guest memory in the dispatcher ([`GuestHeader`]), a
/// model's atomics in the test that runs the protocol against every interleaving the memory
/// model allows (PVABI-EVT-006).
pub(crate) trait HeaderWords {
    /// Stores `tail` with release ordering: the entry it publishes, written before, is
    /// visible to a reader that sees it.
    fn publish_tail(&self, tail: u32);
    /// A full barrier: every store before it is visible before any load after it.
    fn full_barrier(&self);
    /// Loads `interrupt_pending` (`None`: it cannot be read, which counts as pending).
    fn load_pending(&self) -> Option<u32>;
    /// Stores `interrupt_pending`.
    fn store_pending(&self, value: u32);
}

/// An event queue's header in guest memory.
struct GuestHeader<'a, G> {
    mem: &'a G,
    gpa: u64,
}

impl<G: vm_memory::GuestMemoryBackend> HeaderWords for GuestHeader<'_, G> {
    fn publish_tail(&self, tail: u32) {
        guest_mem::publish_u32(self.mem, self.gpa + TAIL, tail);
    }

    fn full_barrier(&self) {
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
    }

    fn load_pending(&self) -> Option<u32> {
        guest_mem::load_u32(self.mem, self.gpa + PENDING)
    }

    fn store_pending(&self, value: u32) {
        guest_mem::store_u32(self.mem, self.gpa + PENDING, value);
    }
}

/// Publishes a new `tail` (its entry already written) and, if the event's kind is unmasked
/// (`unmasked`), arms the queue's interrupt ([`arm`]). Returns whether the caller must raise
/// it now.
///
/// The barrier between the `tail` store and the `interrupt_pending` load is PVABI-EVT-006:
/// a guest re-arming the interrupt stores 0 to `interrupt_pending`, executes a full barrier
/// and reads `tail` (PVABI-EVT-011). With both barriers, either the guest sees the new tail
/// or the host sees the 0 and raises; without the host's, both can read the old values (a
/// store-buffering reordering) and the event waits with no interrupt.
pub(crate) fn publish_and_arm(
    header: &impl HeaderWords,
    tail: u32,
    unmasked: bool,
    coalesce: bool,
) -> bool {
    header.publish_tail(tail);
    if !unmasked {
        return false;
    }
    header.full_barrier();
    arm(header, coalesce)
}

/// The coalescing half of PVABI-EVT-005: reads `interrupt_pending` and, if it is 0 (or
/// `coalesce` is false, an injected fault), sets it to 1. Returns whether to raise.
pub(crate) fn arm(header: &impl HeaderWords, coalesce: bool) -> bool {
    let pending = header.load_pending().unwrap_or(1);
    if pending != 0 && coalesce {
        return false;
    }
    header.store_pending(1);
    true
}
