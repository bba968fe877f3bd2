//! The guest's side of the event queue: one queue page per vCPU, one interrupt vector,
//! and a handler that drains with the coalesced-interrupt protocol
//! ([`EventQueue::drain`]: drain, store 0 to `interrupt_pending`, re-check `tail`).
//!
//! The handler counts what it saw per vCPU in [`SEEN`]; the demo's checks read the
//! counters. Waiting for an event ([`wait_for`]) is paravirtual: VCPU_HALT until an event
//! is pending, then `sti; hlt` only when the host has raised the interrupt
//! (`interrupt_pending` = 1), so that the guest never halts waiting for an interrupt that
//! will not come.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use pvabi_guest::abi::events::{Event, EventKind};
use pvabi_guest::abi::vcpu::WakeReason;
use pvabi_guest::events::{event_kind, EventQueue};
use pvabi_guest_rt::{current_vcpu, disable_interrupts, wait_for_interrupt, TrapFrame};

use crate::out::pv;
use crate::Global;

/// The interrupt vector of every vCPU's event queue.
pub const EVENT_VECTOR: u8 = 0x40;
/// vCPUs with an event queue (the SMP demo uses two).
pub const QUEUES: usize = 2;

/// What the handler saw on one vCPU.
pub struct Seen {
    /// Interrupts taken on the event vector that found at least one new event.
    pub interrupts: AtomicU32,
    /// Interrupts taken on the event vector that found none (spurious).
    pub spurious: AtomicU32,
    /// TIMER events.
    pub timer: AtomicU32,
    /// KICK events.
    pub kick: AtomicU32,
    /// USER events.
    pub user: AtomicU32,
    /// RING_COMPLETION events.
    pub ring: AtomicU32,
    /// Events of a kind this guest does not know.
    pub unknown: AtomicU32,
    /// Data of the last TIMER event (its deadline).
    pub timer_data: AtomicU64,
    /// Source vCPU of the last KICK.
    pub kick_source: AtomicU32,
    /// Data and source of the last USER event.
    pub user_data: AtomicU64,
    /// Source of the last USER event.
    pub user_source: AtomicU32,
    /// Sum of the data of every USER event (to check bursts arrive whole).
    pub user_sum: AtomicU64,
}

impl Seen {
    const fn new() -> Self {
        Seen {
            interrupts: AtomicU32::new(0),
            spurious: AtomicU32::new(0),
            timer: AtomicU32::new(0),
            kick: AtomicU32::new(0),
            user: AtomicU32::new(0),
            ring: AtomicU32::new(0),
            unknown: AtomicU32::new(0),
            timer_data: AtomicU64::new(0),
            kick_source: AtomicU32::new(0),
            user_data: AtomicU64::new(0),
            user_source: AtomicU32::new(0),
            user_sum: AtomicU64::new(0),
        }
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU32) -> u32 {
        counter.load(Ordering::Acquire)
    }
}

/// Per-vCPU counters.
pub static SEEN: [Seen; QUEUES] = [const { Seen::new() }; QUEUES];

// Queue `n` belongs to vCPU `n`. After registration only the host and that vCPU's
// interrupt handler touch it (the handler runs with interrupts disabled, so drains never
// nest); other code reads its header through raw pointers.
static QUEUE_PAGES: [Global<EventQueue>; QUEUES] =
    [const { Global::new(EventQueue::new()) }; QUEUES];

/// The guest-physical address of vCPU `cpu`'s queue page (identity-mapped).
pub fn queue_gpa(cpu: usize) -> u64 {
    QUEUE_PAGES[cpu].get() as u64
}

fn queue(cpu: usize) -> &'static EventQueue {
    // SAFETY: a shared view for header reads (atomics inside); the handler's exclusive
    // drain never overlaps these reads on the owning vCPU (it runs with IF=0, and the
    // readers run with IF=0 too).
    unsafe { &*QUEUE_PAGES[cpu].get() }
}

/// Events waiting in vCPU `cpu`'s queue.
pub fn queued(cpu: usize) -> u32 {
    queue(cpu).len()
}

/// Whether the host raised `cpu`'s interrupt and the handler has not re-armed it yet.
pub fn interrupt_pending(cpu: usize) -> bool {
    queue(cpu).interrupt_pending()
}

/// The capacity the host wrote into `cpu`'s queue header at registration.
pub fn capacity(cpu: usize) -> u32 {
    queue(cpu).capacity()
}

/// Installs the handler (for every vCPU).
pub fn install() {
    // The vector is above 31, so this cannot fail.
    let _ = pvabi_guest_rt::set_interrupt_handler(EVENT_VECTOR, on_event_interrupt);
}

/// EVENTS_SET_QUEUE for the calling vCPU's page.
pub fn register(cpu: usize) -> pvabi_guest::Result<()> {
    // SAFETY: the page is a static given to the host for good; the guest only reads its
    // header with atomics and drains it in the handler, as `EventQueue` requires.
    unsafe { pv().events_set_queue(queue_gpa(cpu), EVENT_VECTOR) }
}

fn on_event_interrupt(_frame: &mut TrapFrame) {
    let cpu = current_vcpu() as usize;
    if cpu >= QUEUES {
        return;
    }
    let seen = &SEEN[cpu];
    // SAFETY: this vCPU's queue; handlers do not nest (interrupt gate, IF=0), and no other
    // code holds a reference into the page while the handler runs (see QUEUE_PAGES).
    let q = unsafe { &mut *QUEUE_PAGES[cpu].get() };
    // An interrupt is a hint to look at `tail`, not a count of events: one that announces
    // nothing new (a host may raise it spuriously; the checking host of `pvabi conform
    // --guest` does) is counted apart, so that the coalescing checks count the interrupts
    // that brought events.
    let mut found = false;
    q.drain(|e: Event| {
        found = true;
        on_event(seen, &e);
    });
    if found {
        seen.interrupts.fetch_add(1, Ordering::AcqRel);
    } else {
        seen.spurious.fetch_add(1, Ordering::AcqRel);
    }
}

/// One event drained by the handler.
fn on_event(seen: &Seen, e: &Event) {
    match event_kind(e) {
        Some(EventKind::Timer) => {
            seen.timer_data.store(e.data, Ordering::Relaxed);
            seen.timer.fetch_add(1, Ordering::AcqRel);
        }
        Some(EventKind::Kick) => {
            seen.kick_source.store(e.source, Ordering::Relaxed);
            seen.kick.fetch_add(1, Ordering::AcqRel);
        }
        Some(EventKind::User) => {
            seen.user_data.store(e.data, Ordering::Relaxed);
            seen.user_source.store(e.source, Ordering::Relaxed);
            seen.user_sum.fetch_add(e.data, Ordering::Relaxed);
            seen.user.fetch_add(1, Ordering::AcqRel);
        }
        Some(EventKind::RingCompletion) => {
            seen.ring.fetch_add(1, Ordering::AcqRel);
        }
        None => {
            seen.unknown.fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// Waits until `done()` holds, for at most about `timeout_ns` per wait: VCPU_HALT while
/// nothing is pending, `sti; hlt` while the host's interrupt is on its way. Returns false
/// on a timeout (or a host that keeps waking the vCPU without progress). Interrupts are
/// disabled again on return.
pub fn wait_for(cpu: usize, timeout_ns: u64, mut done: impl FnMut() -> bool) -> bool {
    const MAX_ROUNDS: u32 = 200;
    for _ in 0..MAX_ROUNDS {
        disable_interrupts();
        if done() {
            return true;
        }
        if interrupt_pending(cpu) {
            // The host raised the vector: it is delivered as soon as IF=1 (`sti; hlt`
            // cannot miss it: the interrupt shadow of `sti` covers the `hlt`).
            wait_for_interrupt();
            continue;
        }
        match pv().vcpu_halt(timeout_ns) {
            Ok(WakeReason::Event) => {}
            Ok(WakeReason::Timeout) | Err(_) => {
                disable_interrupts();
                return done();
            }
        }
    }
    disable_interrupts();
    done()
}
