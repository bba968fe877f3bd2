//! Events family: the queue, coalescing, masking, full and garbage queues, latching.

use std::sync::Arc;
use std::thread;

use pvabi_abi::calls::Call;
use pvabi_abi::events::{Event, EventKind, EventQueueHeader};
use pvabi_abi::status::Status;

use super::{H, PAGE1, PAGE2};

const VECTOR: u64 = 0x40;

fn header(h: &H, page: u64) -> EventQueueHeader {
    h.read(page)
}

fn event(h: &H, page: u64, index: u32) -> Event {
    h.read(page + 64 + u64::from(index % 128) * 16)
}

/// vCPU 1 with a queue at PAGE1.
fn with_queue() -> H {
    let h = H::ready(2);
    h.start_vcpu_from(0, 1);
    h.write(PAGE1, &[0xffu8; 4096]);
    assert_eq!(
        h.status(1, Call::EventsSetQueue, &[PAGE1, VECTOR]),
        Status::Success
    );
    h
}

#[test]
fn set_queue_initialises_the_header_and_checks_arguments() {
    let h = with_queue();
    let hd = header(&h, PAGE1);
    assert_eq!(
        (
            hd.head,
            hd.tail,
            hd.capacity,
            hd.interrupt_pending,
            hd.dropped
        ),
        (0, 0, 128, 0, 0)
    );
    assert_eq!(hd.reserved, [0; 11]);
    assert_eq!(
        h.status(0, Call::EventsSetQueue, &[PAGE2, 31]),
        Status::InvalidParameter
    );
    assert_eq!(
        h.status(0, Call::EventsSetQueue, &[PAGE2, 256]),
        Status::InvalidParameter
    );
    assert_eq!(
        h.status(0, Call::EventsSetQueue, &[PAGE2 + 8, 32]),
        Status::Misaligned
    );
    // Another vCPU cannot take the page; unregistering (vector still checked) frees it.
    assert_eq!(
        h.status(0, Call::EventsSetQueue, &[PAGE1, 32]),
        Status::AccessDenied
    );
    assert_eq!(
        h.status(1, Call::EventsSetQueue, &[0, 0]),
        Status::InvalidParameter
    );
    assert_eq!(h.status(1, Call::EventsSetQueue, &[0, 32]), Status::Success);
    assert_eq!(
        h.status(0, Call::EventsSetQueue, &[PAGE1, 255]),
        Status::Success
    );
}

#[test]
fn a_burst_of_ten_events_raises_one_interrupt() {
    let h = with_queue();
    for i in 0..10 {
        assert_eq!(
            h.status(0, Call::EventsSend, &[1, 100 + i]),
            Status::Success
        );
    }
    let hd = header(&h, PAGE1);
    assert_eq!((hd.tail, hd.interrupt_pending), (10, 1));
    assert_eq!(h.m.log().interrupts, [(1, VECTOR as u8)]);
    for i in 0..10 {
        let e = event(&h, PAGE1, i);
        assert_eq!(
            (e.kind, e.source, e.data),
            (EventKind::User as u32, 0, 100 + u64::from(i))
        );
    }
    // The guest drains and re-arms: the next event raises again.
    h.write(PAGE1, &10u32);
    h.write(PAGE1 + 12, &0u32);
    h.call(0, Call::EventsSend, &[1, 7]);
    assert_eq!(h.m.log().interrupts.len(), 2);
    assert_eq!(header(&h, PAGE1).interrupt_pending, 1);
    // Re-arming without draining also raises on the next event.
    h.write(PAGE1 + 12, &0u32);
    h.call(1, Call::EventsSend, &[1, 8]);
    assert_eq!(h.m.log().interrupts.len(), 3);
    let rep = h.d.report();
    assert_eq!((rep.events_posted, rep.interrupts_raised), (12, 3));
}

#[test]
fn masked_kinds_queue_without_interrupt_and_unmasking_raises_one() {
    let h = with_queue();
    let user = EventKind::User.mask_bit();
    let kick = EventKind::Kick.mask_bit();
    assert_eq!(
        h.call(1, Call::EventsSetMask, &[user | kick]),
        (Status::Success, [0; 4])
    );
    for _ in 0..3 {
        h.call(0, Call::EventsSend, &[1, 0]);
    }
    h.call(0, Call::VcpuKick, &[1]);
    assert_eq!(header(&h, PAGE1).tail, 4);
    assert!(h.m.log().interrupts.is_empty());
    // Unmasking TIMER: none queued, nothing raised.
    let timer = EventKind::Timer.mask_bit();
    assert_eq!(
        h.call(1, Call::EventsSetMask, &[user | kick | timer]).1[0],
        user | kick
    );
    assert_eq!(
        h.call(1, Call::EventsSetMask, &[user | kick]).1[0],
        user | kick | timer
    );
    assert!(h.m.log().interrupts.is_empty());
    // Unmasking USER with USER entries queued: one interrupt.
    h.call(1, Call::EventsSetMask, &[kick]);
    assert_eq!(h.m.log().interrupts, [(1, VECTOR as u8)]);
    // Invalid mask bits (bit 0 and kinds beyond 4).
    assert_eq!(
        h.status(1, Call::EventsSetMask, &[1]),
        Status::InvalidParameter
    );
    assert_eq!(
        h.status(1, Call::EventsSetMask, &[1 << 5]),
        Status::InvalidParameter
    );
}

#[test]
fn a_full_queue_drops_and_counts() {
    let h = with_queue();
    for i in 0..130 {
        h.call(0, Call::EventsSend, &[1, i]);
    }
    let hd = header(&h, PAGE1);
    assert_eq!((hd.tail, hd.dropped), (128, 2));
    assert_eq!(event(&h, PAGE1, 0).data, 0);
    // The guest consumes one: there is room for one more.
    h.write(PAGE1, &1u32);
    h.call(0, Call::EventsSend, &[1, 999]);
    h.call(0, Call::EventsSend, &[1, 1000]);
    let hd = header(&h, PAGE1);
    assert_eq!((hd.tail, hd.dropped), (129, 3));
    assert_eq!(event(&h, PAGE1, 128).data, 999);
    let rep = h.d.report();
    assert_eq!((rep.events_posted, rep.events_dropped), (129, 3));
}

#[test]
fn a_garbage_head_cannot_make_the_host_overwrite() {
    let h = with_queue();
    h.call(0, Call::EventsSend, &[1, 1]);
    // Head "ahead" of the tail, and a garbage tail the host must ignore.
    h.write(PAGE1, &[50u32, 7777]);
    h.call(0, Call::EventsSend, &[1, 2]);
    let hd = header(&h, PAGE1);
    assert_eq!((hd.head, hd.tail, hd.dropped), (50, 7777, 1));
    assert_eq!(event(&h, PAGE1, 1).data, u64::MAX, "nothing written");
    // A sane head again: the host appends at its own tail, 1.
    h.write(PAGE1, &1u32);
    h.call(0, Call::EventsSend, &[1, 3]);
    assert_eq!(header(&h, PAGE1).tail, 2);
    assert_eq!(event(&h, PAGE1, 1).data, 3);
}

#[test]
fn send_checks_the_target() {
    let h = H::ready(2);
    h.start_vcpu_from(0, 1);
    assert_eq!(
        h.status(0, Call::EventsSend, &[2, 0]),
        Status::InvalidParameter
    );
    assert_eq!(
        h.status(0, Call::EventsSend, &[u64::MAX, 0]),
        Status::InvalidParameter
    );
}

#[test]
fn without_a_queue_events_latch_and_wake_halt_once() {
    let h = H::ready(2);
    h.start_vcpu_from(0, 1);
    h.call(0, Call::EventsSend, &[1, 5]);
    assert_eq!(h.call(1, Call::VcpuHalt, &[1_000_000_000]).1[0], 1);
    assert_eq!(h.call(1, Call::VcpuHalt, &[1_000_000]).1[0], 2);
    let rep = h.d.report();
    assert_eq!((rep.events_latched, rep.events_posted), (1, 0));
}

#[test]
fn concurrent_senders_lose_nothing() {
    let h = Arc::new(with_queue());
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let h = h.clone();
            thread::spawn(move || {
                for i in 0..100 {
                    assert_eq!(h.status(0, Call::EventsSend, &[1, i]), Status::Success);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let hd = header(&h, PAGE1);
    assert_eq!(hd.tail, 128);
    assert_eq!(hd.dropped, 400 - 128);
    assert_eq!(h.m.log().interrupts.len(), 1);
}

/// PVABI-EVT-015 and PVABI-EVT-023: unmasking raises only for queued entries of the kinds the
/// call unmasks, and only while `interrupt_pending` is 0.
#[test]
fn unmasking_raises_only_for_queued_entries_of_the_unmasked_kinds() {
    let h = with_queue();
    let user = EventKind::User.mask_bit();
    let kick = EventKind::Kick.mask_bit();
    h.call(1, Call::EventsSetMask, &[user | kick]);
    h.call(0, Call::VcpuKick, &[1]);
    assert_eq!(header(&h, PAGE1).tail, 1);
    // Unmasking USER with only a KICK queued: nothing.
    h.call(1, Call::EventsSetMask, &[kick]);
    assert!(h.m.log().interrupts.is_empty());
    // An unmasked USER event raises as it is posted; the queue now holds KICK, USER.
    h.call(0, Call::EventsSend, &[1, 1]);
    assert_eq!(h.m.log().interrupts.len(), 1);
    // The guest re-arms without draining; masking and unmasking USER again (USER queued)
    // raises, although USER was not the only kind queued.
    h.write(PAGE1 + 12, &0u32);
    h.call(1, Call::EventsSetMask, &[user | kick]);
    h.call(1, Call::EventsSetMask, &[kick]);
    assert_eq!(h.m.log().interrupts.len(), 2);
    // With `interrupt_pending` 1, unmasking KICK (queued) raises nothing.
    h.call(1, Call::EventsSetMask, &[0]);
    assert_eq!(h.m.log().interrupts.len(), 2);
    // Entries the guest consumed do not count: head past both, KICK masked and unmasked.
    h.write(PAGE1, &2u32);
    h.write(PAGE1 + 12, &0u32);
    h.call(1, Call::EventsSetMask, &[kick]);
    h.call(1, Call::EventsSetMask, &[0]);
    assert_eq!(h.m.log().interrupts.len(), 2);
    assert_eq!(header(&h, PAGE1).interrupt_pending, 0);
}

/// PVABI-EVT-020: registering the page that already is the caller's queue fails with
/// ACCESS_DENIED and leaves the queue as it was.
#[test]
fn registering_the_current_queue_again_is_denied_and_changes_nothing() {
    let h = with_queue();
    h.call(0, Call::EventsSend, &[1, 11]);
    let before: [u8; 4096] = h.read(PAGE1);
    assert_eq!(
        h.status(1, Call::EventsSetQueue, &[PAGE1, 0x41]),
        Status::AccessDenied
    );
    assert_eq!(h.read::<[u8; 4096]>(PAGE1), before);
    // Still the queue, same vector, appending at the host's tail.
    h.write(PAGE1 + 12, &0u32);
    h.call(0, Call::EventsSend, &[1, 12]);
    let hd = header(&h, PAGE1);
    assert_eq!(hd.tail, 2);
    assert_eq!(event(&h, PAGE1, 1).data, 12);
    assert_eq!(h.m.log().interrupts.last(), Some(&(1, VECTOR as u8)));
}

/// PVABI-EVT-021: every vCPU starts with the mask 0, and a stopped vCPU's mask is 0 again.
#[test]
fn the_initial_mask_is_zero() {
    let h = H::ready(2);
    h.start_vcpu_from(0, 1);
    assert_eq!(h.call(0, Call::EventsSetMask, &[0b10]).1[0], 0);
    assert_eq!(h.call(1, Call::EventsSetMask, &[0b100]).1[0], 0);
    assert_eq!(h.call(0, Call::EventsSetMask, &[0]).1[0], 0b10);
    h.call(1, Call::EventsSetMask, &[0b1000]);
    let _ = h.raw(1, Call::VcpuStop as u64, &[]);
    h.start_vcpu_from(0, 1);
    assert_eq!(h.call(1, Call::EventsSetMask, &[0]).1[0], 0);
}

/// PVABI-EVT-022: a KICK event carries the kicker's index and data 0.
#[test]
fn a_kick_event_has_the_kicker_as_source_and_data_zero() {
    let h = with_queue();
    h.write(PAGE1 + 64, &[0xffu8; 16]);
    assert_eq!(h.status(0, Call::VcpuKick, &[1]), Status::Success);
    let e = event(&h, PAGE1, 0);
    assert_eq!((e.kind, e.source, e.data), (EventKind::Kick as u32, 0, 0));
}

/// PVABI-EVT-004: an event is in the queue when the call that posts it returns, so calls made
/// one after the other post in that order, whichever vCPU makes them.
#[test]
fn events_of_successive_calls_are_posted_in_call_order() {
    let h = with_queue();
    h.call(0, Call::EventsSend, &[1, 1]);
    assert_eq!(header(&h, PAGE1).tail, 1, "posted before the call returned");
    h.call(1, Call::VcpuKick, &[1]);
    h.call(0, Call::EventsSend, &[1, 3]);
    let kinds: Vec<_> = (0..3).map(|i| event(&h, PAGE1, i)).collect();
    assert_eq!(
        kinds
            .iter()
            .map(|e| (e.kind, e.source, e.data))
            .collect::<Vec<_>>(),
        [
            (EventKind::User as u32, 0, 1),
            (EventKind::Kick as u32, 1, 0),
            (EventKind::User as u32, 0, 3)
        ]
    );
}

/// PVABI-EVT-026 and PVABI-EVT-018: an event posted without a queue only sets the latch; a
/// queue registered afterwards starts empty, and registering clears the latch.
#[test]
fn an_event_without_a_queue_is_not_kept_for_a_later_queue() {
    let h = H::ready(2);
    h.start_vcpu_from(0, 1);
    h.call(0, Call::EventsSend, &[1, 77]);
    h.write(PAGE1, &[0xffu8; 4096]);
    assert_eq!(
        h.status(1, Call::EventsSetQueue, &[PAGE1, VECTOR]),
        Status::Success
    );
    let hd = header(&h, PAGE1);
    assert_eq!((hd.head, hd.tail, hd.dropped), (0, 0, 0));
    assert!(h.m.log().interrupts.is_empty());
    // The latch is gone with the registration: HALT waits for its timeout.
    assert_eq!(
        h.call(1, Call::VcpuHalt, &[1_000_000]).1[0],
        pvabi_abi::vcpu::WakeReason::Timeout as u64
    );
}

/// PVABI-EVT-027: the host computes `tail` and `dropped` from its own copies, whatever the
/// guest wrote over them.
#[test]
fn host_written_queue_fields_come_from_the_hosts_copies() {
    let h = with_queue();
    for i in 0..128 {
        h.call(0, Call::EventsSend, &[1, i]);
    }
    h.call(0, Call::EventsSend, &[1, 128]); // full: dropped 1
                                            // The guest scribbles over the host's fields (head stays 0: still full).
    h.write(PAGE1 + 4, &9999u32); // tail
    h.write(PAGE1 + 16, &5555u32); // dropped
    h.call(0, Call::EventsSend, &[1, 129]); // full again: dropped 2
    let hd = header(&h, PAGE1);
    assert_eq!(hd.dropped, 2, "dropped counts from the host's copy");
    // Room for one: the host appends at its own tail, 128, and publishes 129.
    h.write(PAGE1, &1u32);
    h.call(0, Call::EventsSend, &[1, 130]);
    let hd = header(&h, PAGE1);
    assert_eq!(hd.tail, 129, "tail counts from the host's copy");
    assert_eq!(event(&h, PAGE1, 128).data, 130);
}

/// EVT-019, VCPU-015: EVENTS_SEND and VCPU_KICK to a stopped vCPU are INVALID_STATE and post
/// nothing; once it runs, both succeed.
#[test]
fn send_and_kick_to_a_stopped_vcpu_are_invalid_state() {
    let h = H::ready(2);
    assert_eq!(
        h.status(1, Call::EventsSetQueue, &[PAGE1, VECTOR]),
        Status::Success
    );
    assert_eq!(h.status(0, Call::EventsSend, &[1, 7]), Status::InvalidState);
    assert_eq!(h.status(0, Call::VcpuKick, &[1]), Status::InvalidState);
    assert_eq!(header(&h, PAGE1).tail, 0);
    h.start_vcpu_from(0, 1);
    assert_eq!(h.status(0, Call::EventsSend, &[1, 7]), Status::Success);
    assert_eq!(h.status(0, Call::VcpuKick, &[1]), Status::Success);
    assert_eq!(header(&h, PAGE1).tail, 2);
}

/// The event queue's header words in a `loom` model: the same orderings as
/// `GuestHeader`'s (a release store of `tail`, a sequentially consistent fence, load and
/// store of `interrupt_pending`), or no fence at all when `barrier` is false.
struct ModelHeader {
    tail: loom::sync::atomic::AtomicU32,
    pending: loom::sync::atomic::AtomicU32,
    barrier: bool,
}

impl crate::events::HeaderWords for ModelHeader {
    fn publish_tail(&self, tail: u32) {
        self.tail.store(tail, std::sync::atomic::Ordering::Release);
    }

    fn full_barrier(&self) {
        if self.barrier {
            loom::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        }
    }

    fn load_pending(&self) -> Option<u32> {
        Some(self.pending.load(std::sync::atomic::Ordering::SeqCst))
    }

    fn store_pending(&self, value: u32) {
        self.pending
            .store(value, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Runs, in every interleaving and every reordering of the C++/Rust memory model that `loom`
/// explores, the dispatcher's post protocol (`publish_and_arm`, the code the dispatcher runs)
/// against a guest re-arming the interrupt as PVABI-EVT-011 says: the guest has drained the
/// queue (head = tail = 0) while an earlier interrupt is pending, and stores 0 to
/// `interrupt_pending`, executes a full barrier and reads `tail` once more, while the host
/// posts the entry at index 0. Panics (inside `loom::model`) in any execution where the guest
/// sees no new entry and the host raises no interrupt: the lost interrupt.
fn lost_interrupt_model(barrier: bool) {
    use loom::sync::atomic::{fence, AtomicU32};
    use loom::sync::Arc;
    use std::sync::atomic::Ordering::SeqCst;
    loom::model(move || {
        let header = Arc::new(ModelHeader {
            tail: AtomicU32::new(0),
            pending: AtomicU32::new(1),
            barrier,
        });
        let guest = {
            let header = Arc::clone(&header);
            loom::thread::spawn(move || {
                header.pending.store(0, SeqCst);
                fence(SeqCst);
                header.tail.load(SeqCst)
            })
        };
        let raised = crate::events::publish_and_arm(&*header, 1, true, true);
        let tail_seen = guest.join().unwrap();
        assert!(
            tail_seen == 1 || raised,
            "lost interrupt: the guest re-armed and saw tail 0, the host saw interrupt_pending 1"
        );
    });
}

/// PVABI-EVT-006: the host's full barrier between its store to `tail` and its load of
/// `interrupt_pending` means no interleaving loses the interrupt; and the model is strong
/// enough to tell: with the barrier taken out, `loom` finds the execution that loses it.
#[test]
fn the_tail_store_is_fenced_before_the_pending_load_so_no_interrupt_is_lost() {
    lost_interrupt_model(true);
    let without = std::panic::catch_unwind(|| lost_interrupt_model(false));
    let payload = without.expect_err("without the barrier, some execution must lose the interrupt");
    let message = payload
        .downcast_ref::<&str>()
        .map(|m| (*m).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    assert!(message.contains("lost interrupt"), "{message}");
}
