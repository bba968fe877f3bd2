//! A fifth deliberately careless guest, for the order checks of `pvabi conform --guest`. It
//! queues two deferred calls and submits two ring entries storing `tail` + 1 first and writing
//! the entry after it (PVABI-DEFER-001, PVABI-RING-001: the checking host single-steps a vCPU's
//! ring-0 code after DEFER_SET_QUEUE and RING_SETUP and looks at the queue after each
//! instruction), and it consumes two events and the two completions by storing `head` past
//! them first and reading them after (PVABI-EVT-010, PVABI-RING-006: the checking host takes
//! the event queue's and the completion ring's pages out of the guest's memory map, so that it
//! sees every access to them). By the time the host consumes the entries (DEFER_FLUSH,
//! RING_ENTER) they are complete, and nothing overwrites the events and completions before
//! the late reads, so nothing else goes wrong and no other rule is broken: only the order of
//! the accesses shows. Runs on vCPU 0 at CPL0, interrupts disabled.
#![no_std]
#![no_main]

use core::mem::offset_of;
use core::ptr::{read_volatile, write_volatile};
use core::sync::atomic::{AtomicU32, Ordering};

use pvabi_guest::abi::batch::{
    CompletionEntry, DeferredEntry, DeferredQueueHeader, RingHeader, RingMode, SubmissionEntry,
    CQ_CAPACITY, DEFERRED_ENTRIES_OFFSET, DEFERRED_QUEUE_CAPACITY, RING_ENTRIES_OFFSET,
    SQ_CAPACITY,
};
use pvabi_guest::abi::events::{
    Event, EventQueueHeader, EVENT_MASK_VALID, EVENT_QUEUE_CAPACITY, EVENT_QUEUE_ENTRIES_OFFSET,
};
use pvabi_guest::abi::features::Features;
use pvabi_guest::base::NegotiateRequest;
use pvabi_guest::batch::{DeferredQueue, Rings};
use pvabi_guest::console::regs_args;
use pvabi_guest::discovery::discover;
use pvabi_guest::events::EventQueue;
use pvabi_guest::{Call, PortTransport, Pvabi};
use pvabi_guest_rt::{halt_forever, BootInfo};

/// The pages, given to the host for good; vCPU 0 alone produces into them.
struct Pages {
    queue: DeferredQueue,
    rings: Rings,
    events: EventQueue,
}

static mut PAGES: Pages = Pages {
    queue: DeferredQueue::new(),
    rings: Rings::new(),
    events: EventQueue::new(),
};

/// The vector the event queue is registered with (every kind masked: it is never raised).
const VECTOR: u8 = 0x40;

/// Printed by the ring submissions (CONSOLE_WRITE_REGS).
const TEXT: &[u8] = b"careless-order: from the ring\n";

/// The mistake: publishes slot `tail` by storing `tail` + 1 first, and only then writes the
/// entry there (`write` gets the slot's address).
///
/// # Safety
/// `page` is a registered queue page of this vCPU with its `tail` at `tail_at`, entries of
/// `size` bytes at `entries_at`, `capacity` of them, and room for one more.
unsafe fn publish_then_write(
    page: *mut u8,
    tail_at: usize,
    entries_at: usize,
    capacity: u32,
    size: usize,
    write: impl FnOnce(*mut u8),
) {
    // SAFETY: the caller's page; `tail` is a 4-byte aligned u32 of it.
    let tail = unsafe { &*page.add(tail_at).cast::<AtomicU32>() };
    let t = tail.load(Ordering::Relaxed);
    tail.store(t.wrapping_add(1), Ordering::Release);
    // SAFETY: slot `t mod capacity` lies within the page.
    write(unsafe { page.add(entries_at + (t % capacity) as usize * size) });
}

/// The mistake: consumes what waits in a queue the host produces (`head` up to `tail`) by
/// storing `tail` to `head` first, and only then reading each entry (`read` gets the index
/// and the slot's address). Returns how many it consumed.
///
/// # Safety
/// `page` is a registered queue page of this vCPU with `head` at `head_at`, `tail` at
/// `tail_at`, entries of `size` bytes at `entries_at`, `capacity` of them.
unsafe fn release_then_read(
    page: *mut u8,
    (head_at, tail_at): (usize, usize),
    entries_at: usize,
    capacity: u32,
    size: usize,
    mut read: impl FnMut(u32, *const u8),
) -> u32 {
    // SAFETY: the caller's page; `head` and `tail` are 4-byte aligned u32s of it.
    let (head, tail) = unsafe {
        (
            &*page.add(head_at).cast::<AtomicU32>(),
            &*page.add(tail_at).cast::<AtomicU32>(),
        )
    };
    let (h, t) = (head.load(Ordering::Relaxed), tail.load(Ordering::Acquire));
    head.store(t, Ordering::Release);
    let mut i = h;
    while i != t {
        // SAFETY: slot `i mod capacity` lies within the page.
        read(i, unsafe {
            page.add(entries_at + (i % capacity) as usize * size)
        });
        i = i.wrapping_add(1);
    }
    t.wrapping_sub(h)
}

fn main(_boot: &BootInfo) -> ! {
    let Some(found) = discover() else {
        halt_forever()
    };
    let pv = Pvabi::new(PortTransport::new(found.info.doorbell_port));
    let required = Features::CONSOLE
        | Features::SYSTEM
        | Features::DEFERRED
        | Features::RING
        | Features::EVENTS;
    if pv
        .negotiate(NegotiateRequest::v1(required, Features::empty()))
        .is_err()
    {
        pv.shutdown(1)
    }
    let _ = pv.console_write_slice(
        b"careless-order: entries written after their tail, read after their head\n",
    );
    // SAFETY: the only reference to the pages, taken once on the only vCPU that runs.
    let pages = unsafe { &mut *core::ptr::addr_of_mut!(PAGES) };

    // The deferred queue: two EVENTS_SET_MASK(0) entries, each published before it is written.
    // SAFETY: a static page handed to the host for good.
    if unsafe { pv.defer_set_queue(pages.queue.gpa()) }.is_err() {
        pv.shutdown(2)
    }
    for _ in 0..2 {
        // SAFETY: the registered queue (empty, so there is room), laid out as the ABI says;
        // each field is written with a volatile store inside its slot.
        unsafe {
            publish_then_write(
                pages.queue.as_ptr(),
                offset_of!(DeferredQueueHeader, tail),
                DEFERRED_ENTRIES_OFFSET as usize,
                DEFERRED_QUEUE_CAPACITY,
                size_of::<DeferredEntry>(),
                |at| {
                    write_volatile(
                        at.add(offset_of!(DeferredEntry, call)).cast::<u32>(),
                        Call::EventsSetMask.code(),
                    );
                    write_volatile(at.add(offset_of!(DeferredEntry, flags)).cast::<u32>(), 0);
                    for i in 0..3 {
                        write_volatile(
                            at.add(offset_of!(DeferredEntry, args) + 8 * i)
                                .cast::<u64>(),
                            0,
                        );
                    }
                },
            );
        }
    }
    let flushed = pv.defer_flush();

    // The submission ring (doorbell mode): two CONSOLE_WRITE_REGS, each published first.
    // SAFETY: static pages handed to the host for good; the submissions only print.
    if unsafe { pv.ring_setup_rings(&pages.rings, RingMode::Doorbell, 0) }.is_err() {
        pv.shutdown(3)
    }
    let args = regs_args(TEXT).unwrap_or_default();
    for user_data in 1..=2u64 {
        // SAFETY: the registered submission ring (empty, so there is room), as for the queue.
        unsafe {
            publish_then_write(
                pages.rings.sq_ptr(),
                offset_of!(RingHeader, tail),
                RING_ENTRIES_OFFSET as usize,
                SQ_CAPACITY,
                size_of::<SubmissionEntry>(),
                |at| {
                    write_volatile(
                        at.add(offset_of!(SubmissionEntry, user_data)).cast::<u64>(),
                        user_data,
                    );
                    write_volatile(
                        at.add(offset_of!(SubmissionEntry, call)).cast::<u32>(),
                        Call::ConsoleWriteRegs.code(),
                    );
                    write_volatile(at.add(offset_of!(SubmissionEntry, flags)).cast::<u32>(), 0);
                    for (i, a) in args.iter().enumerate() {
                        write_volatile(
                            at.add(offset_of!(SubmissionEntry, args) + 8 * i)
                                .cast::<u64>(),
                            *a,
                        );
                    }
                },
            );
        }
    }
    let consumed = pv.ring_enter();
    // The completions: `head` past both first, then their `user_data`.
    let mut user_data = 0;
    // SAFETY: the registered completion ring, laid out as the ABI says; each read is a
    // volatile load inside its slot.
    let reaped = unsafe {
        release_then_read(
            pages.rings.cq_ptr(),
            (offset_of!(RingHeader, head), offset_of!(RingHeader, tail)),
            RING_ENTRIES_OFFSET as usize,
            CQ_CAPACITY,
            size_of::<CompletionEntry>(),
            |_, at| {
                user_data +=
                    read_volatile(at.add(offset_of!(CompletionEntry, user_data)).cast::<u64>())
            },
        )
    };

    // The event queue, every kind masked (no interrupt), two USER events sent to itself, and
    // both consumed with `head` stored past them first.
    // SAFETY: a static page handed to the host for good; no interrupt is raised (all masked,
    // and interrupts stay disabled).
    let events_ok = pv.events_set_mask(EVENT_MASK_VALID).is_ok()
        && unsafe { pv.events_set_queue(pages.events.gpa(), VECTOR) }.is_ok()
        && pv.events_send(0, 40).is_ok()
        && pv.events_send(0, 2).is_ok();
    let mut sum = 0;
    // SAFETY: the registered event queue, laid out as the ABI says; each read is a volatile
    // load inside its slot.
    let drained = unsafe {
        release_then_read(
            pages.events.as_ptr(),
            (
                offset_of!(EventQueueHeader, head),
                offset_of!(EventQueueHeader, tail),
            ),
            EVENT_QUEUE_ENTRIES_OFFSET as usize,
            EVENT_QUEUE_CAPACITY,
            size_of::<Event>(),
            |_, at| sum += read_volatile(at.add(offset_of!(Event, data)).cast::<u64>()),
        )
    };
    // Everything ran as queued and every entry was read whole: the order was wrong, but
    // nothing overwrote what was read late.
    let ok = flushed.is_ok_and(|f| f.processed == 2 && f.failed == 0)
        && consumed == Ok(2)
        && (reaped, user_data) == (2, 3)
        && events_ok
        && (drained, sum) == (2, 42);
    pv.shutdown(if ok { 0 } else { 4 })
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    halt_forever()
}

pvabi_guest_rt::entry!(main);
