//! A fifth deliberately careless guest, for the step windows of `pvabi conform --guest` (the
//! checking host single-steps a vCPU's ring-0 code after DEFER_SET_QUEUE and RING_SETUP and
//! looks at the queue after each instruction): it queues two deferred calls and submits two
//! ring entries storing `tail` + 1 first and writing the entry after it (PVABI-DEFER-001,
//! PVABI-RING-001). By the time the host consumes them (DEFER_FLUSH, RING_ENTER) they are
//! complete, so nothing else goes wrong and no other rule is broken: only a look between the
//! two stores shows the order. Runs on vCPU 0 at CPL0.
#![no_std]
#![no_main]

use core::mem::offset_of;
use core::ptr::write_volatile;
use core::sync::atomic::{AtomicU32, Ordering};

use pvabi_guest::abi::batch::{
    DeferredEntry, DeferredQueueHeader, RingHeader, RingMode, SubmissionEntry,
    DEFERRED_ENTRIES_OFFSET, DEFERRED_QUEUE_CAPACITY, RING_ENTRIES_OFFSET, SQ_CAPACITY,
};
use pvabi_guest::abi::features::Features;
use pvabi_guest::base::NegotiateRequest;
use pvabi_guest::batch::{DeferredQueue, Rings};
use pvabi_guest::console::regs_args;
use pvabi_guest::discovery::discover;
use pvabi_guest::{Call, PortTransport, Pvabi};
use pvabi_guest_rt::{halt_forever, BootInfo};

/// The pages, given to the host for good; vCPU 0 alone produces into them.
struct Pages {
    queue: DeferredQueue,
    rings: Rings,
}

static mut PAGES: Pages = Pages {
    queue: DeferredQueue::new(),
    rings: Rings::new(),
};

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

fn main(_boot: &BootInfo) -> ! {
    let Some(found) = discover() else {
        halt_forever()
    };
    let pv = Pvabi::new(PortTransport::new(found.info.doorbell_port));
    let required = Features::CONSOLE | Features::SYSTEM | Features::DEFERRED | Features::RING;
    if pv
        .negotiate(NegotiateRequest::v1(required, Features::EVENTS))
        .is_err()
    {
        pv.shutdown(1)
    }
    let _ = pv.console_write_slice(b"careless-order: entries written after their tail\n");
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
    pages.rings.reap(|_| {});
    // Both ran as queued: the order was wrong, but the entries were complete in time.
    let ok = flushed.is_ok_and(|f| f.processed == 2 && f.failed == 0) && consumed == Ok(2);
    pv.shutdown(if ok { 0 } else { 4 })
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    halt_forever()
}

pvabi_guest_rt::entry!(main);
