//! Conformance test `vcpu`: VCPU_INFO, YIELD, HALT with a timeout, KICK, STOP and START and
//! their refusals, and with two vCPUs: a started vCPU's entry and fresh pvabi state (mask,
//! deferred queue, wake latch), per-vCPU queues that do not leak between vCPUs, events
//! between vCPUs, KICK waking a halted vCPU, VCPU_STOP unregistering a vCPU's pages, and
//! KICK and EVENTS_SEND refusing a stopped vCPU. vCPU 0 reports; vCPU 1 writes what it saw
//! into a shared record (the channel is vCPU 0's) and makes only calls. Both run at CPL0;
//! waits sleep in VCPU_HALT.
#![no_std]
#![no_main]

mod call;
mod channel;
mod common;

use core::arch::global_asm;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU64, Ordering};

use pvabi_guest::abi::events::{EventKind, EVENT_MASK_VALID};
use pvabi_guest::abi::features::Features;
use pvabi_guest::abi::platform::{BOOT_APIC_BASE, BOOT_CR0, BOOT_CR4, BOOT_EFER, PML4_ADDR};
use pvabi_guest::abi::vcpu::WakeReason;
use pvabi_guest::{Call, PortTransport, Status};
use pvabi_guest_rt::{ap_launch, halt_forever, run_at_cpl3, BootInfo};

use call::raw;
use channel::{check, skip};
use common::{now_ns, rd32, rd64, start, wait_ms, wr64, Pages, SUCCESS};

const TEST: &str = "vcpu";
const VECTOR: u64 = 0x40;
const PATIENCE_MS: u64 = 5000;
const USER: u64 = 1 << EventKind::User as u64;
const EVENT: u64 = WakeReason::Event as u64;
const TIMEOUT: u64 = WakeReason::Timeout as u64;
const INVALID_PARAMETER: u64 = Status::InvalidParameter as u64;
const INVALID_STATE: u64 = Status::InvalidState as u64;
const ACCESS_DENIED: u64 = Status::AccessDenied as u64;
/// What vCPU 0 stores before VCPU_START, for vCPU 1 to read (PVABI-VCPU-006).
const HANDSHAKE: u64 = 0x0123_4567_89ab_cdef;

/// Page 0: vCPU 0's event queue; 1: vCPU 1's; 2: vCPU 0's deferred queue; 3: the word its
/// deferred call writes, and the VcpuStartState block.
static PAGES: Pages<4> = Pages::new();

/// What vCPU 1 saw, by slot.
static SEEN: [AtomicU64; 21] = [const { AtomicU64::new(u64::MAX) }; 21];
/// vCPU 0 to vCPU 1: its deferred call is queued.
static GO: AtomicU64 = AtomicU64::new(0);
/// vCPU 0's store before VCPU_START.
static BEFORE_START: AtomicU64 = AtomicU64::new(0);

// Slots of SEEN.
const INFO: usize = 0;
const MASK_PREVIOUS: usize = 1;
const FLUSH: usize = 2;
const OTHER_QUEUE: usize = 3;
const OWN_QUEUE: usize = 4;
const SEND: usize = 5;
const READY: usize = 6;
const HALT: usize = 7;
const KICK_EVENT: usize = 8;
const DONE: usize = 9;
const STOP_RETURNED: usize = 10;
const HANDSHAKE_SEEN: usize = 11;
const AGAIN_MASK: usize = 12;
const AGAIN_QUEUE: usize = 13;
const AGAIN_HALT: usize = 14;
const AGAIN_DONE: usize = 15;
const NEGOTIATED: usize = 16;
const RENEGOTIATE: usize = 17;
const RACE_READS: usize = 18;
const RACE_TORN: usize = 19;
const RACE_DONE: usize = 20;

/// The word MEM_UPDATE_PTE flips while vCPU 1 reads it, between two values that differ in
/// every byte.
static mut RACE_WORD: u64 = RACE_A;
const RACE_A: u64 = 0xa5a5_a5a5_a5a5_a5a5;
const RACE_B: u64 = 0x5a5a_5a5a_5a5a_5a5a;
const RACE_UPDATES: u64 = 2000;
/// vCPU 0 to vCPU 1: stop reading.
static RACE_STOP: AtomicU64 = AtomicU64::new(0);

fn seen(slot: usize) -> u64 {
    SEEN[slot].load(Ordering::Acquire)
}

fn record(slot: usize, value: u64) {
    SEEN[slot].store(value, Ordering::Release);
}

/// VCPU_HALT: the reason, or the status in the high half if it failed.
fn halt(t: &PortTransport, ns: u64) -> u64 {
    let r = raw(t, Call::VcpuHalt, &[ns]);
    if r.status == SUCCESS {
        r.results[0]
    } else {
        r.status << 32
    }
}

fn state_block() -> u64 {
    PAGES.page(3) + 2048
}

/// VCPU_START of vCPU `target` with `rip`, `rsp`, `arg` and `cr3` in the block.
fn start_vcpu(t: &PortTransport, target: u64, rip: u64, rsp: u64, arg: u64, cr3: u64) -> u64 {
    let b = state_block();
    for (k, v) in [rip, rsp, arg, cr3, 0, 0, 0, 0].iter().enumerate() {
        wr64(b + 8 * k as u64, *v);
    }
    raw(t, Call::VcpuStart, &[target, b]).status
}

/// What a started vCPU held at its first instruction (see `conform_vcpu_entry`), by slot:
/// 0-15 the general-purpose registers (rax, rbx, rcx, rdx, rsi, rdi, rbp, rsp, r8-r15), 16-23
/// the 8 words below `rsp` (which nothing of the guest has written since vCPU 0 filled them),
/// 24-28 cr0, cr2, cr3, cr4, cr8, 29-37 the MSRs EFER, IA32_APIC_BASE, FS.base,
/// GS.base, KERNEL_GS_BASE, STAR, LSTAR, CSTAR and SFMASK, 38 rflags.
#[repr(C, align(64))]
struct EntrySave(UnsafeCell<[u64; ENTRY_SLOTS]>);

// SAFETY: written only by the started vCPU's entry stub before it runs anything else, and
// read by vCPU 0 after the vCPU has reported (an Acquire load of SEEN orders the reads).
unsafe impl Sync for EntrySave {}

const ENTRY_SLOTS: usize = 40;
const E_RSP: usize = 7;
const E_RDI: usize = 5;
const E_BELOW: usize = 16;
const E_CR: usize = 24;
const E_MSR: usize = 29;
const E_RFLAGS: usize = 38;

static ENTRY: EntrySave = EntrySave(UnsafeCell::new([0; ENTRY_SLOTS]));
/// Where the stub goes on: the runtime's secondary-vCPU entry.
static ENTRY_TARGET: AtomicU64 = AtomicU64::new(0);

// The entry of a started vCPU: records every register it began with (and the words below its
// stack pointer) before anything can change them, then enters the runtime as its own entry
// would have (rdi and rsp as the host set them).
global_asm!(
    ".section .text.conform_vcpu_entry, \"ax\", @progbits",
    ".global conform_vcpu_entry",
    "conform_vcpu_entry:",
    "    mov qword ptr [rip + {save} + 0], rax",
    "    mov qword ptr [rip + {save} + 8], rbx",
    "    mov qword ptr [rip + {save} + 16], rcx",
    "    mov qword ptr [rip + {save} + 24], rdx",
    "    mov qword ptr [rip + {save} + 32], rsi",
    "    mov qword ptr [rip + {save} + 40], rdi",
    "    mov qword ptr [rip + {save} + 48], rbp",
    "    mov qword ptr [rip + {save} + 56], rsp",
    "    mov qword ptr [rip + {save} + 64], r8",
    "    mov qword ptr [rip + {save} + 72], r9",
    "    mov qword ptr [rip + {save} + 80], r10",
    "    mov qword ptr [rip + {save} + 88], r11",
    "    mov qword ptr [rip + {save} + 96], r12",
    "    mov qword ptr [rip + {save} + 104], r13",
    "    mov qword ptr [rip + {save} + 112], r14",
    "    mov qword ptr [rip + {save} + 120], r15",
    "    mov rax, qword ptr [rsp - 8]",
    "    mov qword ptr [rip + {save} + 128], rax",
    "    mov rax, qword ptr [rsp - 16]",
    "    mov qword ptr [rip + {save} + 136], rax",
    "    mov rax, qword ptr [rsp - 24]",
    "    mov qword ptr [rip + {save} + 144], rax",
    "    mov rax, qword ptr [rsp - 32]",
    "    mov qword ptr [rip + {save} + 152], rax",
    "    mov rax, qword ptr [rsp - 40]",
    "    mov qword ptr [rip + {save} + 160], rax",
    "    mov rax, qword ptr [rsp - 48]",
    "    mov qword ptr [rip + {save} + 168], rax",
    "    mov rax, qword ptr [rsp - 56]",
    "    mov qword ptr [rip + {save} + 176], rax",
    "    mov rax, qword ptr [rsp - 64]",
    "    mov qword ptr [rip + {save} + 184], rax",
    "    pushfq", // rflags first: the arithmetic below changes them
    "    pop rax",
    "    mov qword ptr [rip + {save} + 304], rax",
    "    mov rax, cr0",
    "    mov qword ptr [rip + {save} + 192], rax",
    "    mov rax, cr2",
    "    mov qword ptr [rip + {save} + 200], rax",
    "    mov rax, cr3",
    "    mov qword ptr [rip + {save} + 208], rax",
    "    mov rax, cr4",
    "    mov qword ptr [rip + {save} + 216], rax",
    "    mov rax, cr8",
    "    mov qword ptr [rip + {save} + 224], rax",
    "    mov ecx, 0xc0000080",
    "    rdmsr",
    "    shl rdx, 32",
    "    or rax, rdx",
    "    mov qword ptr [rip + {save} + 232], rax",
    "    mov ecx, 0x1b",
    "    rdmsr",
    "    shl rdx, 32",
    "    or rax, rdx",
    "    mov qword ptr [rip + {save} + 240], rax",
    "    mov ecx, 0xc0000100",
    "    rdmsr",
    "    shl rdx, 32",
    "    or rax, rdx",
    "    mov qword ptr [rip + {save} + 248], rax",
    "    mov ecx, 0xc0000101",
    "    rdmsr",
    "    shl rdx, 32",
    "    or rax, rdx",
    "    mov qword ptr [rip + {save} + 256], rax",
    "    mov ecx, 0xc0000102",
    "    rdmsr",
    "    shl rdx, 32",
    "    or rax, rdx",
    "    mov qword ptr [rip + {save} + 264], rax",
    "    mov ecx, 0xc0000081",
    "    rdmsr",
    "    shl rdx, 32",
    "    or rax, rdx",
    "    mov qword ptr [rip + {save} + 272], rax",
    "    mov ecx, 0xc0000082",
    "    rdmsr",
    "    shl rdx, 32",
    "    or rax, rdx",
    "    mov qword ptr [rip + {save} + 280], rax",
    "    mov ecx, 0xc0000083",
    "    rdmsr",
    "    shl rdx, 32",
    "    or rax, rdx",
    "    mov qword ptr [rip + {save} + 288], rax",
    "    mov ecx, 0xc0000084",
    "    rdmsr",
    "    shl rdx, 32",
    "    or rax, rdx",
    "    mov qword ptr [rip + {save} + 296], rax",
    "    jmp qword ptr [rip + {target}]",
    save = sym ENTRY,
    target = sym ENTRY_TARGET,
);

extern "C" {
    fn conform_vcpu_entry();
}

fn entry_slot(i: usize) -> u64 {
    // SAFETY: in bounds; see `EntrySave`.
    unsafe { (ENTRY.0.get() as *const u64).add(i).read_volatile() }
}

/// Whether the started vCPU began in the entry state of the platform's started column
/// (`rip` aside, which its running shows): the first slot that differs, if any, as
/// `slot << 56 | value`.
fn entry_state_wrong(rsp: u64, arg: u64) -> Option<u64> {
    let mut want = [0u64; ENTRY_SLOTS];
    want[E_RSP] = rsp;
    want[E_RDI] = arg;
    want[E_CR..E_CR + 5].copy_from_slice(&[BOOT_CR0, 0, PML4_ADDR, BOOT_CR4, 0]);
    want[E_MSR] = BOOT_EFER;
    want[E_MSR + 1] = BOOT_APIC_BASE;
    want[E_RFLAGS] = 0x2;
    (0..=E_RFLAGS)
        .filter(|i| !(E_BELOW..E_CR).contains(i))
        .find(|&i| entry_slot(i) != want[i])
        .map(|i| (i as u64) << 56 | (entry_slot(i) & ((1 << 56) - 1)))
}

/// Whether the words below the started vCPU's stack pointer were as vCPU 0 left them when
/// it began (a host that pushed a frame or wrote a trampoline there would show), and its
/// VcpuStartState block as vCPU 0 wrote it: the first that differs, if any.
fn start_wrote_memory(rip: u64, rsp: u64, arg: u64) -> Option<u64> {
    let below = (E_BELOW..E_CR).find(|&i| entry_slot(i) != STACK_SENTINEL);
    let b = state_block();
    let block = [rip, rsp, arg, 0, 0, 0, 0, 0];
    let written = (0..8).find(|&k| rd64(b + 8 * k as u64) != block[k]);
    below
        .map(|i| i as u64)
        .or(written.map(|k| 0x100 + k as u64))
}

/// What fills the words below a started vCPU's stack pointer before VCPU_START.
const STACK_SENTINEL: u64 = 0x5a5a_5a5a_5a5a_5a5a;

/// VCPU_START of vCPU 1 running `vcpu1` in `phase`, retried while it is still stopping; it
/// enters through `conform_vcpu_entry`. Returns the status and the `rsp` and `arg` it passed.
fn start_vcpu1(t: &PortTransport, phase: u64, port: u16) -> (u64, u64, u64) {
    let Some(launch) = ap_launch(1, vcpu1, phase | u64::from(port) << 8) else {
        return (u64::MAX, 0, 0);
    };
    ENTRY_TARGET.store(launch.rip, Ordering::Relaxed);
    for i in 0..ENTRY_SLOTS {
        // SAFETY: in bounds; vCPU 1 is not running (see `EntrySave`).
        unsafe { (ENTRY.0.get() as *mut u64).add(i).write_volatile(u64::MAX) };
    }
    let mut status = INVALID_STATE;
    wait_ms(t, PATIENCE_MS, || {
        // Stopping, vCPU 1 may still be on its stack: fill the words below its stack pointer
        // at each try.
        for k in 1..=8 {
            wr64(launch.rsp - 8 * k, STACK_SENTINEL);
        }
        common::fence();
        status = start_vcpu(
            t,
            1,
            conform_vcpu_entry as *const () as usize as u64,
            launch.rsp,
            launch.rdi,
            0,
        );
        status != INVALID_STATE
    });
    (status, launch.rsp, launch.rdi)
}

/// The last event of the queue at `q`: `(kind, source, data)`.
fn last_event(q: u64) -> (u32, u32, u64) {
    let tail = rd32(q + 4);
    let e = q + 64 + u64::from(tail.wrapping_sub(1) % 128) * 16;
    (rd32(e), rd32(e + 4), rd64(e + 8))
}

/// The timeout of the HALT whose length is checked.
const HALT_NS: u64 = 50_000_000;
/// How many TSC ticks vCPU 0 looks for vCPU 1's READY, at CPL3, before it gives up (several
/// seconds at any TSC rate a host has).
const SPIN_LIMIT: u64 = 20_000_000_000;

/// At CPL3: spins until vCPU 1 is READY (1) or `limit` TSC ticks have passed (0).
fn spin_until_ready(limit: u64) -> u64 {
    // SAFETY: rdtsc reads the time-stamp counter; it has no other effect.
    let start = unsafe { core::arch::x86_64::_rdtsc() };
    loop {
        if seen(READY) == 1 {
            return 1;
        }
        // SAFETY: as above.
        if unsafe { core::arch::x86_64::_rdtsc() }.wrapping_sub(start) > limit {
            return 0;
        }
        core::hint::spin_loop();
    }
}

fn main(boot: &BootInfo) -> ! {
    let features =
        Features::VCPU | Features::EVENTS | Features::DEFERRED | Features::MEMORY | Features::TIME;
    let (t, found) = start(TEST, features);
    let port = found.info.doorbell_port;

    let info = raw(&t, Call::VcpuInfo, &[]);
    let count = info.results[1];
    check(
        "vcpu.info_reports_the_index_and_the_count",
        &["PVABI-VCPU-002", "PVABI-VCPU-001"],
        info.status == SUCCESS
            && info.results[0] == 0
            && count == u64::from(found.info.vcpus)
            && count == u64::from(boot.vcpu_count),
        info.results[0] << 32 | count,
        u64::from(boot.vcpu_count),
    );
    let s = raw(&t, Call::VcpuYield, &[]).status;
    check(
        "vcpu.yield_succeeds",
        &["PVABI-VCPU-023"],
        s == SUCCESS,
        s,
        SUCCESS,
    );
    let t0 = now_ns(&t);
    let reason = halt(&t, HALT_NS);
    let waited = now_ns(&t) - t0;
    check(
        "vcpu.halt_times_out_no_earlier_than_asked",
        &["PVABI-VCPU-011", "PVABI-VCPU-012"],
        reason == TIMEOUT && waited >= HALT_NS,
        waited,
        HALT_NS,
    );
    let s = raw(&t, Call::VcpuKick, &[0]).status;
    let first = halt(&t, 1_000_000_000);
    let second = halt(&t, 1_000_000);
    check(
        "vcpu.a_kick_of_itself_ends_the_next_halt",
        &["PVABI-VCPU-014", "PVABI-VCPU-010", "PVABI-EVT-017"],
        s == SUCCESS && first == EVENT,
        s << 32 | first,
        EVENT,
    );
    check(
        "vcpu.halt_clears_the_wake_latch",
        &["PVABI-VCPU-013"],
        second == TIMEOUT,
        second,
        TIMEOUT,
    );
    let s = raw(&t, Call::VcpuStop, &[]).status;
    check(
        "vcpu.stop_of_vcpu_0_is_invalid_state",
        &["PVABI-VCPU-007"],
        s == INVALID_STATE,
        s,
        INVALID_STATE,
    );
    let s0 = start_vcpu(&t, 0, 0x20_0000, 0x30_0000, 0, 0);
    let sn = start_vcpu(&t, count, 0x20_0000, 0x30_0000, 0, 0);
    check(
        "vcpu.start_of_a_running_or_absent_vcpu_is_refused",
        &["PVABI-VCPU-003"],
        s0 == INVALID_STATE && sn == INVALID_PARAMETER,
        s0 << 32 | sn,
        INVALID_STATE << 32 | INVALID_PARAMETER,
    );

    const SMP: [&str; 9] = [
        "vcpu.kick_or_send_to_a_stopped_vcpu_is_invalid_state",
        "vcpu.start_refuses_a_non_canonical_or_reserved_state",
        "vcpu.a_started_vcpu_runs_with_its_index_and_the_starters_stores",
        "vcpu.a_started_vcpu_has_fresh_state",
        "vcpu.deferred_queues_are_per_vcpu",
        "vcpu.events_carry_the_sending_vcpu",
        "vcpu.a_kick_wakes_a_halted_vcpu",
        "vcpu.a_stopping_vcpu_stops",
        "vcpu.a_restarted_vcpu_has_fresh_state",
    ];
    if count < 2 {
        for name in SMP {
            skip(
                name,
                &["PVABI-VCPU-005"],
                "one vCPU: run the test with two or more",
            );
        }
        channel::end(TEST)
    }

    let kick = raw(&t, Call::VcpuKick, &[1]).status;
    let send = raw(&t, Call::EventsSend, &[1, 0x5e]).status;
    check(
        SMP[0],
        &["PVABI-VCPU-015", "PVABI-EVT-019"],
        kick == INVALID_STATE && send == INVALID_STATE,
        kick << 32 | send,
        INVALID_STATE << 32 | INVALID_STATE,
    );
    let stack = 0x30_0000;
    let bad_rip = start_vcpu(&t, 1, 0x0000_8000_0000_0000, stack, 0, 0);
    let bad_rsp = start_vcpu(&t, 1, 0x20_0000, 0xffff_0000_0000_0000, 0, 0);
    let bad_cr3 = start_vcpu(&t, 1, 0x20_0000, stack, 0, 1 << 63);
    check(
        SMP[1],
        &["PVABI-VCPU-004"],
        bad_rip == INVALID_PARAMETER
            && bad_rsp == INVALID_PARAMETER
            && bad_cr3 == INVALID_PARAMETER,
        bad_rip << 16 | bad_rsp << 8 | bad_cr3,
        INVALID_PARAMETER << 16 | INVALID_PARAMETER << 8 | INVALID_PARAMETER,
    );

    // vCPU 0's own state: a queue, everything masked, a deferred queue.
    let (q0, q1, d0, word) = (PAGES.page(0), PAGES.page(1), PAGES.page(2), PAGES.page(3));
    raw(&t, Call::EventsSetQueue, &[q0, VECTOR]);
    raw(&t, Call::EventsSetMask, &[EVENT_MASK_VALID]);
    raw(&t, Call::DeferSetQueue, &[d0, 0]);
    BEFORE_START.store(HANDSHAKE, Ordering::Relaxed);
    let (s, rsp1, arg1) = start_vcpu1(&t, 1, port);
    // Queue a call in vCPU 0's deferred queue (no exit); vCPU 1's DEFER_FLUSH must not run it.
    let entry = d0 + 64;
    common::wr32(entry, Call::MemUpdatePte.code());
    common::wr32(entry + 4, 0);
    wr64(entry + 8, word);
    wr64(entry + 16, 0xd0);
    wr64(entry + 24, 1);
    common::fence();
    common::wr32(d0 + 4, 1);
    GO.store(1, Ordering::Release);
    // Wait without an exit (at CPL3, natively): a host may drain a vCPU's queue on any exit
    // of that vCPU (PVABI-DEFER-004), so vCPU 0 makes none until it has read the word.
    let ready = run_at_cpl3(spin_until_ready, SPIN_LIMIT) == 1;
    let untouched = rd64(word);
    let flush = raw(&t, Call::DeferFlush, &[]);
    check(
        SMP[2],
        &["PVABI-VCPU-005", "PVABI-VCPU-006", "PVABI-VCPU-002"],
        s == SUCCESS && ready && seen(INFO) == 1 << 32 | count && seen(HANDSHAKE_SEEN) == HANDSHAKE,
        s << 32 | seen(INFO),
        1 << 32 | count,
    );
    check(
        SMP[3],
        &["PVABI-VCPU-016", "PVABI-EVT-021"],
        seen(MASK_PREVIOUS) == 0,
        seen(MASK_PREVIOUS),
        0,
    );
    check(
        SMP[4],
        &["PVABI-DEFER-011", "PVABI-VCPU-016", "PVABI-CONV-023"],
        seen(FLUSH) == 0
            && untouched == 0
            && flush.results[0] == 1
            && rd64(word) == 0xd0
            && seen(OTHER_QUEUE) == ACCESS_DENIED
            && seen(OWN_QUEUE) == SUCCESS,
        seen(FLUSH) << 32 | untouched,
        0,
    );
    let entry = conform_vcpu_entry as *const () as usize as u64;
    let wrong = entry_state_wrong(rsp1, arg1);
    check(
        "vcpu.a_started_vcpu_begins_in_the_entry_state",
        &["PVABI-VCPU-018", "PVABI-PLAT-007"],
        ready && wrong.is_none(),
        wrong.unwrap_or(0),
        0,
    );
    let wrote = start_wrote_memory(entry, rsp1, arg1);
    check(
        "vcpu.starting_a_vcpu_writes_no_guest_memory",
        &["PVABI-VCPU-019"],
        ready && wrote.is_none(),
        wrote.unwrap_or(0),
        0,
    );
    check(
        "vcpu.a_started_vcpu_has_the_accepted_version_and_the_lock",
        &["PVABI-BASE-015"],
        seen(NEGOTIATED) == raw(&t, Call::GetSpecVersion, &[]).results[2]
            && seen(NEGOTIATED) != 0
            && seen(RENEGOTIATE) == Status::Locked as u64,
        seen(NEGOTIATED) << 16 | seen(RENEGOTIATE),
        Status::Locked as u64,
    );
    let from1 = last_event(q0);
    check(
        SMP[5],
        &["PVABI-EVT-016"],
        seen(SEND) == SUCCESS && from1 == (EventKind::User as u32, 1, 0xb1),
        u64::from(from1.1) << 32 | from1.2,
        1 << 32 | 0xb1,
    );
    let s = raw(&t, Call::VcpuKick, &[1]).status;
    let woke = wait_ms(&t, PATIENCE_MS, || seen(DONE) == 1);
    check(
        SMP[6],
        &["PVABI-VCPU-014", "PVABI-VCPU-010", "PVABI-EVT-022"],
        s == SUCCESS
            && woke
            && seen(HALT) == EVENT
            && seen(KICK_EVENT) == u64::from(EventKind::Kick as u32) << 32,
        seen(HALT) << 32 | seen(KICK_EVENT),
        EVENT << 32 | u64::from(EventKind::Kick as u32) << 32,
    );
    // Once vCPU 1 has stopped, KICK and EVENTS_SEND to it are refused.
    let mut kick = SUCCESS;
    let stopped = wait_ms(&t, PATIENCE_MS, || {
        kick = raw(&t, Call::VcpuKick, &[1]).status;
        kick == INVALID_STATE
    });
    let send = raw(&t, Call::EventsSend, &[1, 0x5e]).status;
    check(
        SMP[7],
        &["PVABI-VCPU-008", "PVABI-VCPU-015", "PVABI-EVT-019"],
        stopped && send == INVALID_STATE && seen(STOP_RETURNED) == u64::MAX,
        kick << 32 | send,
        INVALID_STATE << 32 | INVALID_STATE,
    );
    // Started again: fresh state, and its old queue page is free.
    let (s, rsp1, arg1) = start_vcpu1(&t, 2, port);
    let done = wait_ms(&t, PATIENCE_MS, || seen(AGAIN_DONE) == 1);
    // It had left FS.base, KERNEL_GS_BASE and the TPR (cr8) changed when it stopped.
    let wrong = entry_state_wrong(rsp1, arg1);
    check(
        "vcpu.a_restarted_vcpu_begins_in_the_entry_state_whatever_it_left",
        &["PVABI-VCPU-018", "PVABI-PLAT-007"],
        done && wrong.is_none(),
        wrong.unwrap_or(0),
        0,
    );
    let wrote = start_wrote_memory(entry, rsp1, arg1);
    check(
        "vcpu.restarting_a_vcpu_writes_no_guest_memory",
        &["PVABI-VCPU-019"],
        done && wrote.is_none(),
        wrote.unwrap_or(0),
        0,
    );
    check(
        SMP[8],
        &["PVABI-VCPU-016", "PVABI-VCPU-008", "PVABI-VCPU-005"],
        s == SUCCESS
            && done
            && seen(AGAIN_MASK) == 0
            && seen(AGAIN_QUEUE) == SUCCESS
            && seen(AGAIN_HALT) == TIMEOUT,
        seen(AGAIN_MASK) << 32 | seen(AGAIN_QUEUE) << 16 | seen(AGAIN_HALT),
        TIMEOUT,
    );
    let _ = q1;

    // MEM_UPDATE_PTE is one atomic 64-bit store: vCPU 1 reads the word at CPL3 (natively,
    // as fast as it can) while vCPU 0 has the host flip it between two values that differ in
    // every byte; a read that is neither is a torn store.
    let mut stopped = false;
    wait_ms(&t, PATIENCE_MS, || {
        stopped = raw(&t, Call::VcpuKick, &[1]).status == INVALID_STATE;
        stopped
    });
    RACE_STOP.store(0, Ordering::Release);
    let (s, _, _) = start_vcpu1(&t, 3, port);
    let reading = wait_ms(&t, PATIENCE_MS, || seen(RACE_READS) == 0);
    let word = core::ptr::addr_of!(RACE_WORD) as u64;
    let mut updated = 0u64;
    for i in 0..RACE_UPDATES {
        let value = if i % 2 == 0 { RACE_B } else { RACE_A };
        if raw(&t, Call::MemUpdatePte, &[word, value, 1]).status == SUCCESS {
            updated += 1;
        }
    }
    RACE_STOP.store(1, Ordering::Release);
    let finished = wait_ms(&t, PATIENCE_MS, || seen(RACE_DONE) == 1);
    let (reads, torn) = (seen(RACE_READS), seen(RACE_TORN));
    check(
        "vcpu.update_pte_is_one_atomic_store_to_a_concurrent_reader",
        &["PVABI-MEM-011"],
        stopped
            && s == SUCCESS
            && reading
            && finished
            && updated == RACE_UPDATES
            && reads > 0
            && torn == 0,
        torn << 32 | updated,
        RACE_UPDATES,
    );
    channel::end(TEST)
}

/// vCPU 1 (`arg`: the phase in bits 7:0, the doorbell port above).
/// At CPL3: reads RACE_WORD until RACE_STOP, counting the reads and the values that are
/// neither RACE_A nor RACE_B; returns `torn << 32 | reads` (reads capped at 2^32 - 1).
fn race_reader(_: u64) -> u64 {
    let (mut reads, mut torn) = (0u64, 0u64);
    while RACE_STOP.load(Ordering::Acquire) == 0 {
        // SAFETY: a volatile read of a word the host writes with MEM_UPDATE_PTE.
        let v = unsafe { core::ptr::addr_of!(RACE_WORD).read_volatile() };
        if v != RACE_A && v != RACE_B {
            torn += 1;
        }
        reads = (reads + 1).min(u32::MAX as u64);
    }
    torn << 32 | reads
}

fn vcpu1(arg: u64) -> ! {
    let t = PortTransport::new((arg >> 8) as u16);
    let q1 = PAGES.page(1);
    if arg & 0xff == 3 {
        record(RACE_READS, 0);
        let r = run_at_cpl3(race_reader, 0);
        record(RACE_TORN, r >> 32);
        record(RACE_READS, r & 0xffff_ffff);
        record(RACE_DONE, 1);
    } else if arg & 0xff == 1 {
        record(HANDSHAKE_SEEN, BEFORE_START.load(Ordering::Relaxed));
        let info = raw(&t, Call::VcpuInfo, &[]);
        record(INFO, info.results[0] << 32 | info.results[1]);
        record(
            MASK_PREVIOUS,
            raw(&t, Call::EventsSetMask, &[USER]).results[0],
        );
        wait_ms(&t, PATIENCE_MS, || GO.load(Ordering::Acquire) == 1);
        let flush = raw(&t, Call::DeferFlush, &[]);
        record(
            FLUSH,
            flush.status << 40 | flush.results[0] << 20 | flush.results[1],
        );
        record(
            OTHER_QUEUE,
            raw(&t, Call::EventsSetQueue, &[PAGES.page(0), VECTOR]).status,
        );
        record(
            OWN_QUEUE,
            raw(&t, Call::EventsSetQueue, &[q1, VECTOR]).status,
        );
        record(SEND, raw(&t, Call::EventsSend, &[0, 0xb1]).status);
        record(NEGOTIATED, raw(&t, Call::GetSpecVersion, &[]).results[2]);
        record(
            RENEGOTIATE,
            raw(
                &t,
                Call::Negotiate,
                &[0x0001_0000, Features::CONSOLE.bits()],
            )
            .status,
        );
        record(READY, 1);
        record(HALT, halt(&t, 0));
        let (kind, source, data) = last_event(q1);
        record(
            KICK_EVENT,
            u64::from(kind) << 32 | u64::from(source) << 16 | data,
        );
        // State for the restart to clear (PVABI-PLAT-007): FS.base, KERNEL_GS_BASE, TPR.
        // SAFETY: writing these MSRs and cr8 at CPL0 affects only this vCPU, which stops next.
        unsafe {
            pvabi_guest_rt::cpu::wrmsr(0xc000_0100, 0x1234_5000);
            pvabi_guest_rt::cpu::wrmsr(0xc000_0102, 0x5678_9000);
            core::arch::asm!("mov cr8, {}", in(reg) 2u64, options(nomem, nostack));
        }
        record(DONE, 1);
    } else {
        record(AGAIN_MASK, raw(&t, Call::EventsSetMask, &[0]).results[0]);
        record(
            AGAIN_QUEUE,
            raw(&t, Call::EventsSetQueue, &[q1, VECTOR]).status,
        );
        record(AGAIN_HALT, halt(&t, 1_000_000));
        record(AGAIN_DONE, 1);
    }
    raw(&t, Call::VcpuStop, &[]);
    record(STOP_RETURNED, 1);
    halt_forever()
}

pvabi_guest_rt::entry!(main);

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    halt_forever()
}
