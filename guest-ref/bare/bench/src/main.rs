//! Benchmark guest for `pvabi bench` (`src/bench.rs` drives it; the port and phase numbers
//! are in `protocol.rs`, which the host includes).
//!
//! It runs a fixed list of phases, each `n` operations long, and marks the start and end of
//! each phase on a test port; the host timestamps the marks and counts the exits in between.
//! The guest also measures each phase with its TSC and counts calls that did not succeed.
//!
//! Test protocol (besides the pvabi ports):
//!
//! | port | access | meaning |
//! | --- | --- | --- |
//! | 0x5680 | `out` 32-bit | mark: `eax` = phase (bits 7:0), round (bits 23:8), end (bit 31); on an end mark `rdi` = operations, `rsi` = TSC ticks, `r8` = failed operations |
//! | 0x5681 | `in` 32-bit | the next parameter: operations per phase, rounds |
//! | 0x5682 | `out` 32-bit | a port nobody handles: the bare exit that a pvabi call is compared with |
//! | 0x5683 | `out` 8-bit | raw console byte (panic messages) |
//! | 0x5684 | `out` 32-bit | a port whose handler only changes `rdi`: a bare exit plus the write-back of the registers |
//!
//! Phases (the `PHASE_*` constants of `protocol.rs`): the same `out` loop to the bare
//! port, to the register-changing port and to the doorbell (GET_SPEC_VERSION) at CPL0 and at
//! CPL3, in rotating chunks
//! (several start/end mark pairs per phase and round; the host adds them up); then, at CPL3,
//! MEM_UPDATE_PTE of a scratch word made directly, in MULTICALL batches of 32, through the
//! deferred queue (flushed when full and at the end), and through the submission ring in
//! doorbell mode (RING_ENTER per 32) and in host-polled mode (a notification only when the
//! host asks for one); last the SMP pair: GET_SPEC_VERSION at CPL3 from vCPU 0 alone, and
//! from vCPUs 0 and 1 at the same time, in rotating chunks. Round 0 is a short warm-up.
//!
//! SMP: the VM has two vCPUs. After NEGOTIATE, vCPU 0 starts vCPU 1 with VCPU_START; vCPU 1
//! waits in VCPU_HALT for work. For a chunk of the two-vCPU phase vCPU 0 publishes a new
//! sequence number and kicks vCPU 1, which enters ring 3 and says it is ready; vCPU 0 (in
//! ring 3 too) marks the start, lets both go, makes its calls, waits until vCPU 1 is done
//! and marks the end, with `rdi` = the calls of both vCPUs. vCPU 1 stays in ring 3 until
//! that end mark, and vCPU 0 goes on only once vCPU 1 is on its way back into VCPU_HALT:
//! so a phase's window holds no exit but its calls, and vCPU 1 is halted in the host during
//! every one-vCPU chunk. All SMP marks come from vCPU 0 at CPL3.
#![no_std]
#![no_main]

use core::arch::asm;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU64, Ordering};

use pvabi_guest::abi::batch::{RingMode, SubmissionEntry};
use pvabi_guest::abi::vcpu::VcpuStartState;
use pvabi_guest::base::NegotiateRequest;
use pvabi_guest::batch::{completion_result, DeferredQueue, Multicall, PagedMulticall, Rings};
use pvabi_guest::discovery::discover;
use pvabi_guest::events::EventQueue;
use pvabi_guest::time::SharedTimePage;
use pvabi_guest::transport::notify_ring;
use pvabi_guest::{Block, Call, Features, PortTransport, Pvabi};
use pvabi_guest_rt::cpu::{pause, rdtsc};
use pvabi_guest_rt::port::{inl, RawConsole};
use pvabi_guest_rt::{
    ap_launch, disable_interrupts, enable_interrupts, halt_forever, run_at_cpl3,
    set_interrupt_handler, BootInfo, TrapFrame,
};

mod protocol;
use protocol::*;
/// MULTICALL batch size.
const BATCH: usize = 32;
/// Chunks the bare-exit and pvabi-call phases are cut into, alternately.
const CHUNKS: u64 = 32;
/// Chunks the two SMP phases are cut into, alternately (each two-vCPU chunk wakes vCPU 1).
const SMP_CHUNKS: u64 = 8;
/// A phase that makes no progress for this many TSC ticks gives up (seconds on any CPU).
const STALL_TICKS: u64 = 30_000_000_000;
/// An event queued this long (TSC ticks: about half a second) without an interrupt is
/// drained without one (see `events`).
const RESCUE_TICKS: u64 = 1_000_000_000;

/// A `static` the guest mutates through `&mut` obtained by hand: each is used by vCPU 0 only
/// (vCPU 1 touches nothing but the `SMP_*` atomics), never re-entrantly.
struct Global<T>(UnsafeCell<T>);

// SAFETY: see the type's documentation: one vCPU, no re-entrancy; the host is the only other
// party and the types themselves (queue, rings) access shared pages through atomics and
// volatile accesses.
unsafe impl<T> Sync for Global<T> {}

impl<T> Global<T> {
    const fn new(value: T) -> Self {
        Global(UnsafeCell::new(value))
    }

    /// # Safety
    /// No other reference to the value may be live.
    #[allow(clippy::mut_from_ref)]
    unsafe fn get(&self) -> &mut T {
        // SAFETY: the caller guarantees exclusivity.
        unsafe { &mut *self.0.get() }
    }
}

#[repr(C, align(4096))]
struct Page([u64; 512]);

static QUEUE: Global<DeferredQueue> = Global::new(DeferredQueue::new());
static RINGS: Global<Rings> = Global::new(Rings::new());
static BATCH_ENTRIES: Global<Multicall<BATCH>> = Global::new(Multicall::new());
/// MULTICALL_PAGES batches: 25 pages of 42 entries hold 1,050.
static PAGED: Global<PagedMulticall<25>> = Global::new(PagedMulticall::new());
/// The "page table" the PTE phases write (a scratch page; no CPU walks it).
static PTES: Global<Page> = Global::new(Page([0; 512]));

static EVENTS: Global<EventQueue> = Global::new(EventQueue::new());
static TIME: SharedTimePage = SharedTimePage::new();
/// Event interrupts taken (the handler only counts; the ring-3 loop drains).
static IRQS: AtomicU64 = AtomicU64::new(0);
/// [`IRQS`] just before an events phase's start mark.
static IRQS_AT_START: AtomicU64 = AtomicU64::new(0);
/// Set to 1 by `events` once its loop runs: the host's producer waits for it, so that no
/// event's interrupt rides on the start mark's exit.
static EVENTS_READY: AtomicU64 = AtomicU64::new(0);
/// Ring-3 loops that report a second figure (e.g. the doorbell's own TSC ticks) put it here.
static EXTRA: AtomicU64 = AtomicU64::new(0);
/// ... and how many of whatever [`EXTRA`] measures there were.
static EXTRA_COUNT: AtomicU64 = AtomicU64::new(0);

static DOORBELL: AtomicU64 = AtomicU64::new(0x5650);
static NOTIFY: AtomicU64 = AtomicU64::new(0x5654);
/// Operations of the current phase (ring-3 functions take one argument only).
static OPS: AtomicU64 = AtomicU64::new(0);
/// Failed operations of the current phase.
static FAILED: AtomicU64 = AtomicU64::new(0);

// The SMP handshake between vCPU 0 and vCPU 1, one sequence number per two-vCPU chunk.
/// The latest chunk vCPU 0 asked vCPU 1 to take part in (0: none yet).
static SMP_SEQ: AtomicU64 = AtomicU64::new(0);
/// Calls each vCPU makes in that chunk (written before `SMP_SEQ`).
static SMP_N: AtomicU64 = AtomicU64::new(0);
/// The chunk vCPU 1 is ready for (it is in ring 3, waiting for `SMP_GO`).
static SMP_READY: AtomicU64 = AtomicU64::new(0);
/// The chunk both vCPUs may start (vCPU 0 has marked its start).
static SMP_GO: AtomicU64 = AtomicU64::new(0);
/// The chunk vCPU 1 has finished (its failed calls are in `SMP_FAILED`).
static SMP_DONE: AtomicU64 = AtomicU64::new(0);
/// vCPU 1's failed calls in the chunk it finished last.
static SMP_FAILED: AtomicU64 = AtomicU64::new(0);
/// The chunk whose end vCPU 0 has marked (vCPU 1 may leave ring 3).
static SMP_ENDED: AtomicU64 = AtomicU64::new(0);
/// The chunk vCPU 1 saw last, stored just before each VCPU_HALT (`u64::MAX`: not up yet).
static SMP_IDLE: AtomicU64 = AtomicU64::new(u64::MAX);

fn pv() -> Pvabi<PortTransport> {
    Pvabi::new(PortTransport::new(DOORBELL.load(Ordering::Relaxed) as u16))
}

fn mark(phase: u32, round: u32, end: bool, ops: u64, ticks: u64, failed: u64) {
    mark_with(phase, round, end, [ops, ticks, failed, 0, 0]);
}

/// A mark with every register: `rdi` = operations, `rsi` = TSC ticks, `r8` = failed, `r9`
/// and `r10` = a phase's own figures (start marks: its parameters for the host).
fn mark_with(phase: u32, round: u32, end: bool, r: [u64; 5]) {
    let tag = phase | (round << 8) | if end { MARK_END } else { 0 };
    // SAFETY: the host records marks; no other effect.
    unsafe {
        asm!("out dx, eax", in("dx") PORT_MARK, in("eax") tag, in("rdi") r[0], in("rsi") r[1],
             in("r8") r[2], in("r9") r[3], in("r10") r[4], options(nomem, nostack, preserves_flags));
    }
}

fn param() -> u64 {
    // SAFETY: the host answers parameter reads.
    u64::from(unsafe { inl(PORT_PARAM) })
}

/// `n` identical `out dx, eax` with the registers of GET_SPEC_VERSION: to the doorbell this
/// is a pvabi call, to the bare port an exit nobody handles. Same instructions either way.
/// `arg` = `n | port << 48`; returns the TSC ticks the loop took. Never inlined, so that a
/// constant port cannot specialise the loop: every phase runs exactly these instructions
/// (at CPL0 each instruction is emulated on some hosts, so one more would show).
#[inline(never)]
fn out_loop(arg: u64) -> u64 {
    let arg = core::hint::black_box(arg);
    let port = (arg >> 48) as u16;
    let n = arg & 0xffff_ffff_ffff;
    let start = rdtsc();
    let mut failed = 0u64;
    for _ in 0..n {
        let status: u64;
        // SAFETY: GET_SPEC_VERSION (code 0) has no effect; the bare port is ignored by the
        // host. The result registers are clobbered.
        unsafe {
            asm!("out dx, eax",
                 inout("rax") 0u64 => status, inout("rdi") 0u64 => _, inout("rsi") 0u64 => _,
                 inout("r8") 0u64 => _, inout("r9") 0u64 => _, in("r10") 0u64, in("r11") 0u64,
                 in("dx") port, options(nostack));
        }
        // The bare ports leave rax (0) alone; a call answers SUCCESS (0).
        failed += u64::from(status != 0);
    }
    FAILED.store(failed, Ordering::Relaxed);
    rdtsc().wrapping_sub(start)
}

/// `n` GET_SPEC_VERSION calls through the doorbell (the same `out` as [`out_loop`]);
/// returns how many did not succeed. It writes no `static`, so that both vCPUs can run it
/// at once; both SMP phases use it, so that one vCPU calling and two run the same loop.
#[inline(never)]
fn call_loop(n: u64) -> u64 {
    let n = core::hint::black_box(n);
    let port = DOORBELL.load(Ordering::Relaxed) as u16;
    let mut failed = 0u64;
    for _ in 0..n {
        let status: u64;
        // SAFETY: GET_SPEC_VERSION (code 0) has no effect. The result registers are
        // clobbered.
        unsafe {
            asm!("out dx, eax",
                 inout("rax") 0u64 => status, inout("rdi") 0u64 => _, inout("rsi") 0u64 => _,
                 inout("r8") 0u64 => _, inout("r9") 0u64 => _, in("r10") 0u64, in("r11") 0u64,
                 in("dx") port, options(nostack));
        }
        failed += u64::from(status != 0);
    }
    failed
}

/// Spins (in ring 3: at native speed) until `value` holds `seq`; false after a stall.
fn wait_for(value: &AtomicU64, seq: u64) -> bool {
    let start = rdtsc();
    while value.load(Ordering::Acquire) != seq {
        if rdtsc().wrapping_sub(start) > STALL_TICKS {
            return false;
        }
        pause();
    }
    true
}

/// Ring 3, vCPU 0 alone (vCPU 1 is halted): `arg` = `n | round << 32`; a start mark, `n`
/// calls, an end mark. Returns 0.
fn smp_solo(arg: u64) -> u64 {
    let (n, round) = (arg & 0xffff_ffff, (arg >> 32) as u32);
    mark(PHASE_SMP_1, round, false, 0, 0, 0);
    let start = rdtsc();
    let failed = call_loop(n);
    let ticks = rdtsc().wrapping_sub(start);
    mark(PHASE_SMP_1, round, true, n, ticks, failed);
    0
}

/// Ring 3, vCPU 0 with vCPU 1 (`arg` as for [`smp_solo`]; chunk `SMP_SEQ`): waits until
/// vCPU 1 is ready, marks the start, lets both go, makes its `n` calls, waits until vCPU 1
/// has made its `n`, marks the end (operations: both vCPUs' calls), lets vCPU 1 go back and
/// waits until it is about to halt. Returns 0, or 1 when vCPU 1 did not take part.
fn smp_pair(arg: u64) -> u64 {
    let (n, round) = (arg & 0xffff_ffff, (arg >> 32) as u32);
    let seq = SMP_SEQ.load(Ordering::Relaxed);
    if !wait_for(&SMP_READY, seq) {
        return 1;
    }
    mark(PHASE_SMP_2, round, false, 0, 0, 0);
    let start = rdtsc();
    SMP_GO.store(seq, Ordering::Release);
    let mut failed = call_loop(n);
    if !wait_for(&SMP_DONE, seq) {
        return 1;
    }
    let ticks = rdtsc().wrapping_sub(start);
    failed += SMP_FAILED.load(Ordering::Relaxed);
    mark(PHASE_SMP_2, round, true, 2 * n, ticks, failed);
    SMP_ENDED.store(seq, Ordering::Release);
    u64::from(!wait_for(&SMP_IDLE, seq))
}

/// Ring 3, vCPU 0: waits until vCPU 1 is about to halt having seen chunk `seq`. Returns 0, or
/// 1 after a stall.
fn wait_idle(seq: u64) -> u64 {
    u64::from(!wait_for(&SMP_IDLE, seq))
}

/// Ring 3, vCPU 1: takes part in chunk `seq`: ready, wait for the go, `SMP_N` calls, done,
/// wait for the end mark (so that nothing vCPU 1 does afterwards falls into the window).
/// Returns 0, or 1 when the go or the end never came.
fn smp_worker(seq: u64) -> u64 {
    let n = SMP_N.load(Ordering::Relaxed);
    SMP_READY.store(seq, Ordering::Release);
    if !wait_for(&SMP_GO, seq) {
        return 1;
    }
    let failed = call_loop(n);
    SMP_FAILED.store(failed, Ordering::Relaxed);
    SMP_DONE.store(seq, Ordering::Release);
    u64::from(!wait_for(&SMP_ENDED, seq))
}

/// vCPU 1's entry: waits in VCPU_HALT (a kick wakes it; the host latches a kick that comes
/// before the halt) and runs each new chunk in ring 3. Before each halt it says which chunk
/// it saw last (`SMP_IDLE`).
fn vcpu1_main(_: u64) -> ! {
    let pv = pv();
    let mut seen = 0;
    loop {
        let seq = SMP_SEQ.load(Ordering::Acquire);
        if seq != seen {
            seen = seq;
            if run_at_cpl3(smp_worker, seq) != 0 {
                fail("vCPU 1 got no go or no end");
            }
        } else {
            SMP_IDLE.store(seen, Ordering::Release);
            if pv.vcpu_halt(0).is_err() {
                fail("VCPU_HALT failed on vCPU 1");
            }
        }
    }
}

/// Starts vCPU 1 in [`vcpu1_main`] and waits until it is up and about to halt.
fn start_vcpu1() {
    let Some(launch) = ap_launch(1, vcpu1_main, 0) else {
        fail("no AP launch record for vCPU 1")
    };
    let state = Block::new(VcpuStartState {
        rip: launch.rip,
        rsp: launch.rsp,
        arg: launch.rdi,
        cr3: 0,
        ..VcpuStartState::default()
    });
    // SAFETY: vCPU 1 runs the runtime's AP entry on its own stack with the boot page tables;
    // it only touches the `SMP_*` atomics and makes pvabi calls.
    if unsafe { pv().vcpu_start(1, state.gpa()) }.is_err() {
        fail("VCPU_START failed");
    }
    if run_at_cpl3(wait_idle, 0) != 0 {
        fail("vCPU 1 did not come up");
    }
}

/// One chunk of `n` calls per calling vCPU of an SMP phase.
fn run_smp_phase(phase: u32, round: u32, n: u64) {
    let arg = n | u64::from(round) << 32;
    if phase == PHASE_SMP_1 {
        run_at_cpl3(smp_solo, arg);
        return;
    }
    SMP_N.store(n, Ordering::Relaxed);
    let seq = SMP_SEQ.load(Ordering::Relaxed) + 1;
    SMP_SEQ.store(seq, Ordering::Release);
    if pv().vcpu_kick(1).is_err() {
        fail("VCPU_KICK failed");
    }
    if run_at_cpl3(smp_pair, arg) != 0 {
        fail("vCPU 1 did not take part");
    }
}

fn pte_gpa(i: u64) -> u64 {
    // SAFETY: only the address is taken.
    let base = unsafe { PTES.get() } as *mut Page as u64;
    base + (i % 512) * 8
}

/// Ring 3: `n` MEM_UPDATE_PTE calls made directly.
fn direct(n: u64) -> u64 {
    let pv = pv();
    let start = rdtsc();
    let mut failed = 0;
    for i in 0..n {
        // SAFETY: the entry is a word of the scratch page, which no CPU walks.
        if unsafe { pv.update_pte(pte_gpa(i), i | 1, 1) }.is_err() {
            failed += 1;
        }
    }
    FAILED.store(failed, Ordering::Relaxed);
    rdtsc().wrapping_sub(start)
}

/// The timed loop of [`multicall`] and [`multicall_pages`]: `n` MEM_UPDATE_PTE calls in
/// batches of up to `size` entries of `batch` (a `Multicall` or a `PagedMulticall`, which share
/// their method names), each batch run by `run`; stores the number of entries that failed in
/// `FAILED` and gives the TSC ticks the loop took. A macro, not a function: the two batch types
/// share no trait, and the loop is to stay exactly this tight.
macro_rules! pte_batches {
    ($n:expr, $size:expr, $batch:expr, $run:expr) => {{
        let (n, size, batch) = ($n, $size, $batch);
        let start = rdtsc();
        let mut failed = 0;
        let mut i = 0;
        while i < n {
            batch.clear();
            while i < n && batch.len() < size {
                let _ = batch.push(Call::MemUpdatePte, [pte_gpa(i), i | 1, 1, 0, 0, 0]);
                i += 1;
            }
            match ($run)(&mut *batch) {
                Ok(_) => {
                    failed += (0..batch.len())
                        .filter(|&k| batch.result(k).is_some_and(|r| r.is_err()))
                        .count() as u64
                }
                Err(_) => failed += batch.len() as u64,
            }
        }
        FAILED.store(failed, Ordering::Relaxed);
        rdtsc().wrapping_sub(start)
    }};
}

/// Ring 3: `n` MEM_UPDATE_PTE calls in MULTICALL batches of `size` (at most 32);
/// `arg` = `n | size << 48`.
fn multicall(arg: u64) -> u64 {
    let n = arg & 0xffff_ffff_ffff;
    let size = ((arg >> 48) as usize).clamp(1, BATCH);
    let pv = pv();
    // SAFETY: only this function uses the batch while it runs.
    let batch = unsafe { BATCH_ENTRIES.get() };
    pte_batches!(n, size, batch, |batch| {
        // SAFETY: every entry updates a word of the scratch page.
        unsafe { pv.multicall_batch(batch, 0) }
    })
}

/// Ring 3: `n` MEM_UPDATE_PTE calls in MULTICALL_PAGES batches of `arg >> 48` entries (one
/// exit each: the host runs a whole batch without preempting it by default).
fn multicall_pages(arg: u64) -> u64 {
    let n = arg & 0xffff_ffff_ffff;
    let pv = pv();
    // SAFETY: only this function uses the batch while it runs.
    let batch = unsafe { PAGED.get() };
    let size = ((arg >> 48) as usize).clamp(1, batch.capacity());
    pte_batches!(n, size, batch, |batch| {
        // SAFETY: every entry updates a word of the scratch page.
        unsafe { pv.multicall_pages_batch(batch, 0) }
    })
}

/// Ring 3: `n` MEM_UPDATE_PTE calls through the deferred queue: queued without an exit,
/// flushed (one exit) when the queue is full and once at the end.
fn deferred(n: u64) -> u64 {
    let pv = pv();
    // SAFETY: only this function uses the queue while it runs.
    let queue = unsafe { QUEUE.get() };
    let before = queue.errors().count;
    let start = rdtsc();
    for i in 0..n {
        // SAFETY: every entry updates a word of the scratch page.
        if unsafe { queue.push_update_pte(pte_gpa(i), i | 1, 1) }.is_err() {
            let _ = pv.defer_flush();
            // SAFETY: as above.
            let _ = unsafe { queue.push_update_pte(pte_gpa(i), i | 1, 1) };
        }
    }
    let _ = pv.defer_flush();
    let ticks = rdtsc().wrapping_sub(start);
    FAILED.store(u64::from(queue.errors().count - before), Ordering::Relaxed);
    ticks
}

/// How [`ring`] tells the host about submissions.
const RING_BY_ENTER: u64 = 0;
const RING_BY_NOTIFY: u64 = 1;
const RING_POLLED: u64 = 2;

/// Ring 3: `n` MEM_UPDATE_PTE submissions; `arg` = `n << 2 | how`. Doorbell mode: RING_ENTER
/// (`RING_BY_ENTER`) or a write to the ring-notify port (`RING_BY_NOTIFY`, whose TSC ticks
/// go to [`EXTRA`]) after each burst of up to 32. Host-polled mode: a notification only when
/// the host set `SQ_NEED_WAKEUP`. Completions are reaped as they come.
fn ring(arg: u64) -> u64 {
    let n = arg >> 2;
    let how = arg & 3;
    let polled = how == RING_POLLED;
    let (mut doorbell_ticks, mut doorbells) = (0u64, 0u64);
    let pv = pv();
    let notify = NOTIFY.load(Ordering::Relaxed) as u16;
    // SAFETY: only this function uses the rings while it runs.
    let rings = unsafe { RINGS.get() };
    let start = rdtsc();
    let (mut submitted, mut completed, mut failed) = (0u64, 0u64, 0u64);
    let mut last_progress = start;
    while completed < n {
        let mut burst = 0;
        while submitted < n {
            let entry = SubmissionEntry {
                user_data: submitted,
                call: Call::MemUpdatePte.code(),
                args: [pte_gpa(submitted), submitted | 1, 1, 0, 0, 0],
                ..Default::default()
            };
            // SAFETY: the entry updates a word of the scratch page.
            if unsafe { rings.submit(entry) }.is_err() {
                break;
            }
            submitted += 1;
            burst += 1;
        }
        if burst > 0 {
            if how == RING_BY_ENTER {
                let _ = pv.ring_enter();
            } else if how == RING_BY_NOTIFY {
                let t = rdtsc();
                // SAFETY: this vCPU's ring; every submission is sound (see above).
                unsafe { notify_ring(notify, 0) };
                doorbell_ticks += rdtsc().wrapping_sub(t);
                doorbells += 1;
            } else if rings.need_wakeup() {
                // SAFETY: this vCPU's ring; every submission is sound (see above).
                unsafe { notify_ring(notify, 0) };
            }
        }
        let reaped = rings.reap(|c| failed += u64::from(completion_result(&c).is_err()));
        completed += u64::from(reaped);
        let now = rdtsc();
        if reaped > 0 || burst > 0 {
            last_progress = now;
        } else if now.wrapping_sub(last_progress) > STALL_TICKS {
            break;
        } else {
            if polled && rings.need_wakeup() && rings.sq_len() > 0 {
                // SAFETY: as above.
                unsafe { notify_ring(notify, 0) };
            }
            pause();
        }
    }
    FAILED.store(failed + (n - completed), Ordering::Relaxed);
    EXTRA.store(doorbell_ticks, Ordering::Relaxed);
    EXTRA_COUNT.store(doorbells, Ordering::Relaxed);
    rdtsc().wrapping_sub(start)
}

/// The event interrupt: counts only (at CPL0 each instruction may be emulated); the ring-3
/// loop drains the queue.
fn on_event(_frame: &mut TrapFrame) {
    IRQS.fetch_add(1, Ordering::Release);
}

/// Ring 3: waits for `n` events the host posts (in bursts, or one at a time), draining the
/// queue after each interrupt with the coalescing protocol (drain, re-arm, look again).
/// Returns the TSC ticks; the interrupts taken go to [`EXTRA`], the drains without one to
/// [`EXTRA_COUNT`].
fn events(n: u64) -> u64 {
    // SAFETY: only this function drains the queue while it runs (the handler does not).
    let queue = unsafe { EVENTS.get() };
    let start = rdtsc();
    // Interrupts since just before the start mark (the first may arrive right after it,
    // before this loop runs).
    let irqs_before = IRQS_AT_START.load(Ordering::Relaxed);
    let mut seen = irqs_before;
    let (mut consumed, mut failed, mut rescues) = (0u64, 0u64, 0u64);
    let dropped_before = queue.dropped();
    let mut last_progress = start;
    EVENTS_READY.store(1, Ordering::Release);
    while consumed < n {
        let irqs = IRQS.load(Ordering::Acquire);
        let waited = rdtsc().wrapping_sub(last_progress);
        // An event waiting long without an interrupt is drained anyway (and counted), so
        // that a lost interrupt shows in the figures instead of stalling the bench.
        let rescue = waited > RESCUE_TICKS && !queue.is_empty();
        if irqs != seen || rescue {
            seen = irqs;
            rescues += u64::from(rescue);
            let got = queue.drain(|e| failed += u64::from(e.kind != 3));
            consumed += u64::from(got);
            last_progress = rdtsc();
        } else if waited > STALL_TICKS / 10 {
            break;
        } else {
            pause();
        }
    }
    let dropped = u64::from(queue.dropped().wrapping_sub(dropped_before));
    FAILED.store(failed + dropped + (n - consumed.min(n)), Ordering::Relaxed);
    EXTRA.store(seen - irqs_before, Ordering::Relaxed);
    EXTRA_COUNT.store(rescues, Ordering::Relaxed);
    rdtsc().wrapping_sub(start)
}

/// Ring 3: `n` TIME_MONOTONIC calls.
fn time_call(n: u64) -> u64 {
    let pv = pv();
    let start = rdtsc();
    let mut failed = 0;
    let mut last = 0;
    for _ in 0..n {
        match pv.time_monotonic() {
            Ok(t) if t >= last => last = t,
            _ => failed += 1,
        }
    }
    FAILED.store(failed, Ordering::Relaxed);
    rdtsc().wrapping_sub(start)
}

/// Ring 3: `n` reads of monotonic time from the time page (interpolated with the TSC when
/// the host set TSC_VALID, else the page's last `monotonic_ns`); [`EXTRA`] = 1 if the TSC
/// fields were valid.
fn time_page(n: u64) -> u64 {
    let reader = TIME.reader();
    let start = rdtsc();
    let mut failed = 0;
    let mut last = 0;
    let mut interpolated = 0;
    for _ in 0..n {
        let t = match reader.now() {
            Some(t) => {
                interpolated = 1;
                t
            }
            None => reader.read().0.monotonic_ns,
        };
        if t < last {
            failed += 1;
        }
        last = t;
    }
    FAILED.store(failed, Ordering::Relaxed);
    EXTRA.store(interpolated, Ordering::Relaxed);
    EXTRA_COUNT.store(1, Ordering::Relaxed);
    rdtsc().wrapping_sub(start)
}

fn set_rings(mode: Option<RingMode>) {
    let pv = pv();
    // SAFETY: the rings are a `static`, used only through `Rings` methods; an unregistration
    // (both pages 0) hands them back.
    let rings = unsafe { RINGS.get() };
    let unregister = pvabi_guest::Block::new(pvabi_guest::abi::batch::RingSetup {
        sq_page: 0,
        cq_page: 0,
        mode: RingMode::Doorbell,
        flags: 0,
        reserved: pvabi_guest::abi::convention::ReservedU64::Zero,
    });
    // SAFETY: unregistering gives the pages back; registering hands a `static` pair over.
    unsafe {
        let _ = pv.ring_setup(unregister.gpa());
        if let Some(mode) = mode {
            // A fresh registration starts from zeroed headers; clear what the guest wrote.
            core::ptr::write_bytes(rings.sq_ptr(), 0, 4096);
            core::ptr::write_bytes(rings.cq_ptr(), 0, 4096);
            if pv.ring_setup_rings(rings, mode, 0).is_err() {
                fail("RING_SETUP failed");
            }
        }
    }
}

fn fail(what: &str) -> ! {
    // SAFETY: the host treats bytes on this port as console output.
    let console = unsafe { RawConsole::new(PORT_CONSOLE) };
    console.write_str("bench: ");
    console.write_str(what);
    console.write_str("\n");
    halt_forever()
}

fn run_phase(phase: u32, round: u32, n: u64) {
    FAILED.store(0, Ordering::Relaxed);
    EXTRA.store(0, Ordering::Relaxed);
    EXTRA_COUNT.store(0, Ordering::Relaxed);
    OPS.store(n, Ordering::Relaxed);
    let (ticks, ops) = match phase {
        PHASE_CPL0_BARE => (out_loop(n | u64::from(PORT_BARE) << 48), n),
        PHASE_CPL0_CALL => (out_loop(n | DOORBELL.load(Ordering::Relaxed) << 48), n),
        PHASE_CPL3_BARE => (run_at_cpl3(out_loop, n | u64::from(PORT_BARE) << 48), n),
        PHASE_CPL0_REGS => (out_loop(n | u64::from(PORT_BARE_REGS) << 48), n),
        PHASE_CPL3_REGS => (
            run_at_cpl3(out_loop, n | u64::from(PORT_BARE_REGS) << 48),
            n,
        ),
        PHASE_CPL3_CALL => (
            run_at_cpl3(out_loop, n | DOORBELL.load(Ordering::Relaxed) << 48),
            n,
        ),
        PHASE_DIRECT => (run_at_cpl3(direct, n), n),
        PHASE_CPL3_IOEVENTFD => (
            run_at_cpl3(out_loop, n | u64::from(PORT_IOEVENTFD) << 48),
            n,
        ),
        PHASE_MULTICALL_1 => (run_at_cpl3(multicall, n | 1 << 48), n),
        PHASE_MULTICALL_8 => (run_at_cpl3(multicall, n | 8 << 48), n),
        PHASE_MULTICALL => (run_at_cpl3(multicall, n | (BATCH as u64) << 48), n),
        PHASE_MULTICALL_256 => (run_at_cpl3(multicall_pages, n | 256 << 48), n),
        PHASE_MULTICALL_1024 => (run_at_cpl3(multicall_pages, n | 1024 << 48), n),
        PHASE_DEFERRED => (run_at_cpl3(deferred, n), n),
        PHASE_RING_ENTER => (run_at_cpl3(ring, n << 2 | RING_BY_ENTER), n),
        PHASE_RING_DOORBELL => (run_at_cpl3(ring, n << 2 | RING_BY_NOTIFY), n),
        PHASE_RING_POLLED => (run_at_cpl3(ring, n << 2 | RING_POLLED), n),
        PHASE_EVENTS_COALESCED | PHASE_EVENTS_UNCOALESCED => (run_at_cpl3(events, n), n),
        PHASE_TIME_CALL => (run_at_cpl3(time_call, n), n),
        PHASE_TIME_PAGE => (
            run_at_cpl3(time_page, n * TIME_PAGE_FACTOR),
            n * TIME_PAGE_FACTOR,
        ),
        _ => fail("unknown phase"),
    };
    mark_with(
        phase,
        round,
        true,
        [
            ops,
            ticks,
            FAILED.load(Ordering::Relaxed),
            EXTRA.load(Ordering::Relaxed),
            EXTRA_COUNT.load(Ordering::Relaxed),
        ],
    );
}

fn main(boot: &BootInfo) -> ! {
    let Some(found) = discover() else {
        fail("no pvabi host")
    };
    if boot.vcpu_count < 2 {
        fail("the bench needs 2 vCPUs");
    }
    DOORBELL.store(u64::from(found.info.doorbell_port), Ordering::Relaxed);
    NOTIFY.store(u64::from(found.info.ring_notify_port), Ordering::Relaxed);
    let n = param().max(1);
    let rounds = param() as u32;
    let pv = pv();
    let need = Features::SYSTEM | Features::MEMORY | Features::MULTICALL | Features::VCPU;
    if pv
        .negotiate(NegotiateRequest::v1(
            need | Features::DEFERRED | Features::RING | Features::TIME | Features::EVENTS,
            Features::all(),
        ))
        .is_err()
    {
        fail("NEGOTIATE failed");
    }
    // SAFETY: the queue is a `static`, used only through `DeferredQueue` methods.
    if unsafe { pv.defer_set_queue(QUEUE.get().gpa()) }.is_err() {
        fail("DEFER_SET_QUEUE failed");
    }
    // SAFETY: the page is a `static` the guest only reads through the reader.
    if unsafe { pv.time_set_page(TIME.gpa()) }.is_err() {
        fail("TIME_SET_PAGE failed");
    }
    if set_interrupt_handler(EVENT_VECTOR, on_event).is_err() {
        fail("no event interrupt handler");
    }
    // SAFETY: the queue is a `static`, drained only by `events`.
    if unsafe { pv.events_set_queue(EVENTS.get().gpa(), EVENT_VECTOR) }.is_err() {
        fail("EVENTS_SET_QUEUE failed");
    }
    start_vcpu1();
    // Round 0 warms up (the host discards it).
    for round in 0..=rounds {
        let n = if round == 0 {
            (n / 10).max(BATCH as u64)
        } else {
            n
        };
        // The bare exit, the exit with a register write-back, the pvabi call (and at CPL3
        // the ioeventfd write) take turns in chunks (in rotating order), so that drift of
        // the machine's speed hits all alike. CPL0 loops are emulated on some hosts: a
        // tenth of the operations.
        let cpl0: &[u32] = &[PHASE_CPL0_BARE, PHASE_CPL0_REGS, PHASE_CPL0_CALL];
        let cpl3: &[u32] = &[
            PHASE_CPL3_BARE,
            PHASE_CPL3_REGS,
            PHASE_CPL3_CALL,
            PHASE_CPL3_IOEVENTFD,
        ];
        for (set, total) in [(cpl0, (n / 10).max(CHUNKS)), (cpl3, n)] {
            let chunk = (total / CHUNKS).max(1);
            let mut done = 0;
            let mut k = 0;
            while done < total {
                let ops = chunk.min(total - done);
                for j in 0..set.len() {
                    let phase = set[(k + j) % set.len()];
                    mark(phase, round, false, 0, 0, 0);
                    run_phase(phase, round, ops);
                }
                done += ops;
                k += 1;
            }
        }
        for phase in [
            PHASE_DIRECT,
            PHASE_MULTICALL_1,
            PHASE_MULTICALL_8,
            PHASE_MULTICALL,
            PHASE_MULTICALL_256,
            PHASE_MULTICALL_1024,
            PHASE_DEFERRED,
            PHASE_RING_ENTER,
            PHASE_RING_DOORBELL,
            PHASE_RING_POLLED,
            PHASE_TIME_CALL,
            PHASE_TIME_PAGE,
        ] {
            match phase {
                PHASE_RING_ENTER => set_rings(Some(RingMode::Doorbell)),
                PHASE_RING_POLLED => set_rings(Some(RingMode::HostPolled)),
                _ => {}
            }
            mark(phase, round, false, 0, 0, 0);
            run_phase(phase, round, n);
        }
        set_rings(None);
        // Events: the host's producer starts at the start mark (`rdi` = events, `r9` = the
        // queue) and posts them in bursts, or one at a time after each re-arm.
        enable_interrupts();
        for (phase, events) in [
            (PHASE_EVENTS_COALESCED, n),
            (PHASE_EVENTS_UNCOALESCED, (n / 20).max(8)),
        ] {
            // SAFETY: only the address is taken.
            let gpa = unsafe { EVENTS.get() }.gpa();
            IRQS_AT_START.store(IRQS.load(Ordering::Acquire), Ordering::Relaxed);
            EVENTS_READY.store(0, Ordering::Release);
            let ready = &EVENTS_READY as *const AtomicU64 as u64;
            mark_with(phase, round, false, [events, 0, 0, gpa, ready]);
            run_phase(phase, round, events);
        }
        disable_interrupts();
        // One vCPU calling and two at once take turns in chunks, in alternating order.
        let chunk = (n / SMP_CHUNKS).max(1);
        let mut done = 0;
        let mut k = 0;
        while done < n {
            let ops = chunk.min(n - done);
            let pair = if k % 2 == 0 {
                [PHASE_SMP_1, PHASE_SMP_2]
            } else {
                [PHASE_SMP_2, PHASE_SMP_1]
            };
            for phase in pair {
                run_smp_phase(phase, round, ops);
            }
            done += ops;
            k += 1;
        }
    }
    pv.shutdown(0)
}

pvabi_guest_rt::entry!(main);

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    // SAFETY: the host treats bytes on this port as console output.
    unsafe { RawConsole::new(PORT_CONSOLE) }.report_panic("bench", info)
}
