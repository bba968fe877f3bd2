//! A deliberately careless guest, the negative case of `pvabi conform --guest`: it runs to a
//! clean SYSTEM_SHUTDOWN, but on the way it
//!
//! 1. calls TIME_SET_STEAL_PAGE although NEGOTIATE did not grant STEAL_TIME
//!    (PVABI-BASE-016, PVABI-TIME-025), and passes on a result register of that failed call
//!    (PVABI-CONV-006),
//! 2. takes MULTICALL's INCOMPLETE for done and never resumes the batch (PVABI-BATCH-009),
//! 3. reads the time page's `monotonic_ns` without its sequence lock, and arms timers from
//!    what it read (PVABI-TIME-014), after writing one of the page's host-owned fields
//!    (PVABI-CONV-025),
//! 4. names a page it released to the balloon in a CONSOLE_WRITE (PVABI-MEM-019), and
//!    writes to it before reclaiming it (PVABI-MEM-006),
//! 5. stores an event-queue `head` past `tail` (PVABI-EVT-025), and halts after clearing
//!    `interrupt_pending` without looking at `tail` again (PVABI-EVT-011),
//! 6. queues into a full deferred queue (PVABI-DEFER-013) and writes the queue's `head`
//!    (PVABI-DEFER-002),
//! 7. submits into a full ring (PVABI-RING-028), moves the completion ring's `head` past its
//!    `tail` (PVABI-RING-029), frees completion space while a submission waits without
//!    notifying (PVABI-RING-008), and submits to a HOST_POLLED ring whose poller sleeps
//!    without waking it (PVABI-RING-010),
//! 8. asks NEGOTIATE for minor 3 and requires MULTICALL_PAGES, a 1.3 feature, that it never
//!    uses (PVABI-VER-014, PVABI-COMPAT-001: SHOULD rules, warnings), and reads the locked
//!    result after a second NEGOTIATE answers LOCKED (PVABI-BASE-017, a MAY: exercised),
//! 9. on two vCPUs (`--vcpus 2`), starts vCPU 1 with page tables that do not map the stack it
//!    gives it (PVABI-VCPU-020),
//! 10. loads the entry state's IDTR (limit 0: no IDT) over the runtime's IDT and sets its
//!     interrupt flag (PVABI-PLAT-008), and makes its last call, SYSTEM_SHUTDOWN, with
//!     `rep outsd` of two elements instead of `out dx, eax` (PVABI-CONV-030; the `sti` shadow
//!     covers the first element, whose call ends the VM, so no interrupt can come).
//!
//! A checking host must report each of them. Runs on vCPU 0 at CPL0.
#![no_std]
#![no_main]

use core::cell::UnsafeCell;
use core::mem::offset_of;

use pvabi_guest::abi::batch::{
    DeferredQueueHeader, MulticallEntry, RingHeader, RingMode, DEFERRED_QUEUE_CAPACITY,
    RING_ENTRIES_OFFSET, SQ_CAPACITY, SQ_NEED_WAKEUP,
};
use pvabi_guest::abi::events::EventQueueHeader;
use pvabi_guest::abi::features::Features;
use pvabi_guest::abi::time::TimePage;
use pvabi_guest::discovery::discover;
use pvabi_guest::time::SharedTimePage;
use pvabi_guest::transport::{RawResult, Transport};
use pvabi_guest::{Call, PortTransport};
use pvabi_guest_rt::{halt_forever, BootInfo};

const HEAD: u64 = offset_of!(EventQueueHeader, head) as u64;
const PENDING: u64 = offset_of!(EventQueueHeader, interrupt_pending) as u64;
const DQ_HEAD: u64 = offset_of!(DeferredQueueHeader, head) as u64;
const DQ_TAIL: u64 = offset_of!(DeferredQueueHeader, tail) as u64;
const RING_HEAD: u64 = offset_of!(RingHeader, head) as u64;
const RING_TAIL: u64 = offset_of!(RingHeader, tail) as u64;
const RING_FLAGS: u64 = offset_of!(RingHeader, flags) as u64;

/// Entries in the batch (a checking host preempts after each).
const ENTRIES: usize = 4;
/// Time-page reads, each armed as a timer.
const READS: usize = 2000;

static PAGE: SharedTimePage = SharedTimePage::new();

/// Pages of this guest's own for the queues, rings and the balloon.
#[repr(C, align(4096))]
struct Pages([[u8; 4096]; 6]);

struct SharedPages(UnsafeCell<Pages>);

// SAFETY: one vCPU; the host writes these pages only while the calls made here run, or
// (the event queue and the rings) as the protocols allow, and the guest accesses them volatile.
unsafe impl Sync for SharedPages {}

static PAGES: SharedPages = SharedPages(UnsafeCell::new(Pages([[0; 4096]; 6])));
/// Page indices in [`PAGES`].
const STEAL: usize = 0;
const EVENTS: usize = 1;
const DEFERRED: usize = 2;
const SQ: usize = 3;
const CQ: usize = 4;
const BALLOON: usize = 5;

/// The guest-physical (identity-mapped) address of page `i` of [`PAGES`].
fn page(i: usize) -> u64 {
    PAGES.0.get() as u64 + (i as u64) * 4096
}

/// A volatile load of the word at byte `offset` of page `i`.
fn peek(i: usize, offset: u64) -> u32 {
    // SAFETY: inside this guest's own page `i`; volatile, as the host writes it.
    unsafe { ((page(i) + offset) as *const u32).read_volatile() }
}

/// How many times at most the guest looks for its poller's SQ_NEED_WAKEUP.
const POLLER_WAIT: usize = 400_000;
/// How many more looks the guest takes before it submits (some tens of milliseconds at CPL0,
/// where guest code is emulated on the project's machines).
const POLLER_SETTLE: usize = 20_000;

/// A volatile store of `value` at byte `offset` of page `i`.
fn poke(i: usize, offset: u64, value: u32) {
    // SAFETY: inside this guest's own page `i`; volatile, as the host reads it.
    unsafe { ((page(i) + offset) as *mut u32).write_volatile(value) }
}

#[repr(C, align(4096))]
struct Batch([MulticallEntry; ENTRIES]);

struct Shared(UnsafeCell<Batch>);

// SAFETY: one vCPU; the host writes the entries only during the MULTICALL made here.
unsafe impl Sync for Shared {}

static BATCH: Shared = Shared(UnsafeCell::new(Batch(
    [MulticallEntry {
        call: 0,
        status: 0,
        flags: pvabi_guest::abi::convention::ReservedU32::Zero,
        reserved: pvabi_guest::abi::convention::ReservedU32::Zero,
        args: [0; 6],
        results: [0; 4],
    }; ENTRIES],
)));

fn call(t: &PortTransport, call: Call, args: &[u64]) -> RawResult {
    let mut a = [0u64; 6];
    a[..args.len()].copy_from_slice(args);
    // SAFETY: the calls name only this guest's own statics (the batch and the time page).
    unsafe { t.call(call.code(), a) }
}

fn main(_boot: &BootInfo) -> ! {
    let Some(found) = discover() else {
        halt_forever()
    };
    let t = PortTransport::new(found.info.doorbell_port);
    let granted = Features::CONSOLE
        | Features::SYSTEM
        | Features::TIME
        | Features::MULTICALL
        | Features::MEMORY
        | Features::EVENTS
        | Features::VCPU
        | Features::DEFERRED
        | Features::RING
        | Features::MULTICALL_PAGES;
    // 8. Minor 3 and a required 1.3 feature it never uses; then LOCKED, and the locked result.
    let _ = call(&t, Call::Negotiate, &[0x0001_0003, granted.bits()]);
    let _ = call(&t, Call::Negotiate, &[0x0001_0000, 0]);
    let _ = call(&t, Call::GetSpecVersion, &[]);

    // 1. A call of a feature it did not ask for, and a result of that failed call used.
    let failed = call(&t, Call::TimeSetStealPage, &[page(STEAL)]);
    let _ = call(&t, Call::TimeSetTimer, &[failed.results[0]]);
    let _ = call(&t, Call::TimeSetTimer, &[0]);

    // 2. A batch whose INCOMPLETE it ignores.
    let batch = BATCH.0.get();
    // SAFETY: the batch is this guest's; no call is in flight.
    unsafe {
        for e in (*batch).0.iter_mut() {
            e.call = Call::GetSpecVersion.code();
        }
    }
    let _ = call(&t, Call::Multicall, &[batch as u64, ENTRIES as u64, 0, 0]);

    // 3. The time page read without the sequence lock.
    let _ = call(&t, Call::TimeSetPage, &[PAGE.gpa()]);
    // A host-owned field written at every read (`tsc_mul`, 0 on a page without TSC_VALID).
    let tsc_mul = (PAGE.as_ptr() as u64 + offset_of!(TimePage, tsc_mul) as u64) as *mut u32;
    let monotonic =
        (PAGE.as_ptr() as u64 + offset_of!(TimePage, monotonic_ns) as u64) as *const u64;
    for _ in 0..READS {
        // SAFETY: the registered time page, identity mapped; a volatile read of memory the
        // host writes (and, carelessly, without checking `sequence`).
        let now = unsafe { monotonic.read_volatile() };
        // SAFETY: the registered time page, identity mapped (the careless write is the point).
        unsafe { tsc_mul.write_volatile(1) };
        let _ = call(&t, Call::TimeSetTimer, &[now + 1_000_000]);
    }
    let _ = call(&t, Call::TimeSetTimer, &[0]);

    // 4. A released page named in a call.
    let pfn = page(BALLOON) >> 12;
    poke(STEAL, 0, pfn as u32);
    poke(STEAL, 4, (pfn >> 32) as u32);
    let _ = call(&t, Call::MemBalloonRelease, &[page(STEAL), 1]);
    let _ = call(&t, Call::ConsoleWrite, &[page(BALLOON), 1]);
    poke(BALLOON, 64, 1);
    let _ = call(&t, Call::MemBalloonReclaim, &[page(STEAL), 1]);

    // 5. An event-queue head past the tail; a halt without looking at the tail again.
    let _ = call(&t, Call::EventsSetQueue, &[page(EVENTS), 0x40]);
    poke(EVENTS, HEAD, 5);
    let _ = call(&t, Call::EventsSend, &[0, 7]);
    poke(EVENTS, HEAD, 0);
    let _ = call(&t, Call::EventsSend, &[0, 8]);
    poke(EVENTS, PENDING, 0);
    let _ = call(&t, Call::VcpuHalt, &[1_000_000]);
    let _ = call(&t, Call::EventsSetQueue, &[0, 0x40]);

    // 6. A full deferred queue queued into; the queue's head written.
    let _ = call(&t, Call::DeferSetQueue, &[page(DEFERRED)]);
    poke(DEFERRED, DQ_TAIL, DEFERRED_QUEUE_CAPACITY + 1);
    let _ = call(&t, Call::DeferFlush, &[]);
    poke(DEFERRED, DQ_HEAD, 0);
    let _ = call(&t, Call::DeferFlush, &[]);
    let _ = call(&t, Call::DeferSetQueue, &[0]);

    // 7. A full ring submitted into; the completion head past the tail; completion space
    //    freed while a submission waits, without a notify.
    let setup = page(BALLOON);
    poke(BALLOON, 0, page(SQ) as u32);
    poke(BALLOON, 4, (page(SQ) >> 32) as u32);
    poke(BALLOON, 8, page(CQ) as u32);
    poke(BALLOON, 12, (page(CQ) >> 32) as u32);
    let _ = call(&t, Call::RingSetup, &[setup]);
    poke(SQ, RING_TAIL, SQ_CAPACITY + 1);
    let _ = call(&t, Call::RingEnter, &[]);
    let slot = RING_ENTRIES_OFFSET + u64::from((SQ_CAPACITY + 1) % SQ_CAPACITY) * 64;
    poke(SQ, slot + 8, Call::GetSpecVersion.code());
    poke(SQ, RING_TAIL, SQ_CAPACITY + 2);
    poke(CQ, RING_HEAD, 5);
    let _ = call(&t, Call::RingEnter, &[]);
    poke(CQ, RING_HEAD, 0);
    // Unregistered (a block of zeros).
    let _ = call(&t, Call::RingSetup, &[page(STEAL) + 2048]);

    //    A HOST_POLLED ring whose sleeping poller it does not wake after submitting.
    poke(BALLOON, 16, RingMode::HostPolled as u32);
    let _ = call(&t, Call::RingSetup, &[setup]);
    for _ in 0..POLLER_WAIT {
        if peek(SQ, RING_FLAGS) & SQ_NEED_WAKEUP != 0 {
            break;
        }
    }
    // A while longer, so that the poller's last look after setting the flag is over and it
    // sleeps (the careless submission below then waits for a notify that never comes).
    for _ in 0..POLLER_SETTLE {
        let _ = peek(SQ, RING_FLAGS);
    }
    poke(SQ, RING_ENTRIES_OFFSET + 8, Call::GetSpecVersion.code());
    poke(SQ, RING_TAIL, 1);

    // 9. With a second vCPU (`--vcpus 2`): VCPU_START with page tables (the entry ones) that
    //    do not map the stack it passes. The vCPU's code spins without touching the stack.
    let vcpus = call(&t, Call::VcpuInfo, &[]).results[1];
    if vcpus >= 2 {
        let state = page(STEAL) + 1024;
        let rip = careless_spin as *const () as u64;
        for (i, word) in [rip, UNMAPPED_STACK, 0, 0].into_iter().enumerate() {
            poke(STEAL, 1024 + 8 * i as u64, word as u32);
            poke(STEAL, 1024 + 8 * i as u64 + 4, (word >> 32) as u32);
        }
        let _ = call(&t, Call::VcpuStart, &[1, state]);
    }

    // 10. No IDT (the entry state's IDTR over the runtime's), IF set, and the last call made
    //     by the first element of a `rep outsd` of two. The `sti` shadow covers that
    //     element, and its call ends the VM.
    let elements = [0u32; 2];
    let no_idt = [0u16; 5];
    // SAFETY: SYSTEM_SHUTDOWN does not return to the guest; `rsi` points at the two elements
    // the string output reads, and the `lidt` operand is a 10-byte IDTR (limit 0, base 0);
    // no interrupt can arrive between the `sti` and the first element's exit.
    unsafe {
        core::arch::asm!(
            "lidt [{idtr}]",
            "sti",
            "rep outsd",
            idtr = in(reg) no_idt.as_ptr(),
            in("dx") found.info.doorbell_port,
            in("rax") u64::from(Call::SystemShutdown.code()),
            in("rdi") 0u64,
            inout("rsi") elements.as_ptr() => _,
            inout("rcx") 2u64 => _,
            in("r8") 0u64,
            in("r9") 0u64,
            in("r10") 0u64,
            in("r11") 0u64,
            options(nostack, readonly),
        );
    }
    let _ = call(&t, Call::SystemShutdown, &[0]);
    halt_forever()
}

/// A canonical stack address far above what the entry page tables map (the first GiB).
const UNMAPPED_STACK: u64 = 0x7f00_0000_0000;

// The started vCPU's code: a loop that uses no stack.
core::arch::global_asm!(
    ".global careless_spin",
    "careless_spin:",
    "pause",
    "jmp careless_spin",
);

extern "C" {
    fn careless_spin();
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    halt_forever()
}

pvabi_guest_rt::entry!(main);
