//! Hostile probe guest for `host-ref/tests/hostile.rs`.
//!
//! It makes deliberately bad pvabi calls and reports, for each, the raw answer the host gave;
//! it never judges an answer (the host test does) and keeps going after every bad call. Each
//! scenario ends with a call that must succeed (`alive`) and SYSTEM_SHUTDOWN(0).
//!
//! Test protocol (besides the pvabi doorbell and ring-notify ports):
//!
//! | port | access | meaning |
//! | --- | --- | --- |
//! | 0x5670 | `out` 32-bit | report: `rdi` = address of the case name, `rsi` = its length, `r8` = raw status (`rax` after the call), `r9` = `r0`, `r10` = `r1`, `r11` = extra |
//! | 0x5671 | `out` 8-bit | raw console byte (panic messages) |
//! | 0x5672 | `in` 32-bit | the scenario to run |
//! | 0x5673 | `in` 32-bit | the next parameter (e.g. the sweep's seed) |
//!
//! Scenario numbers are the `S_*` constants below; the test file mirrors them.
#![no_std]
#![no_main]

use core::arch::asm;
use core::mem::offset_of;
use core::sync::atomic::{AtomicU64, Ordering};

use pvabi_guest::abi::batch::{
    CompletionEntry, DeferredEntry, DeferredQueueHeader, MulticallEntry, RingHeader, RingSetup,
    SubmissionEntry, DEFERRED_ENTRIES_OFFSET, MULTICALL_STOP_ON_ERROR, RING_ENTRIES_OFFSET,
};
use pvabi_guest::abi::calls::FAMILIES;
use pvabi_guest::abi::vcpu::VcpuStartState;
use pvabi_guest::{Call, Features};
use pvabi_guest_rt::cpu::{pause, rdtsc};
use pvabi_guest_rt::port::{inl, RawConsole};
use pvabi_guest_rt::{ap_launch, halt_forever, run_at_cpl3, BootInfo};
use pvabi_guest_testkit::{
    args, call, doorbell, notify_port, probe, raw_call, report, Arena, Ret, PAGE,
};

mod protocol;
use protocol::*;

/// A bound for ring-3 spins, in TSC ticks (seconds on any current CPU).
const SPIN_TICKS: u64 = 20_000_000_000;
/// Status sentinel written into MULTICALL entries before a run.
const SENTINEL: u32 = 0xEEEE_EEEE;

/// Makes a call with a raw code and reports it.
fn probe_code(name: &str, code: u64, a: &[u64]) -> Ret {
    let r = raw_call(code, args(a));
    report(name, r.st, r.r[0], r.r[1], r.r[2]);
    r
}

fn param() -> u64 {
    // SAFETY: the test host answers parameter reads.
    u64::from(unsafe { inl(PORT_PARAM) })
}

/// NEGOTIATE 1.x with CONSOLE and SYSTEM required and everything else optional.
fn negotiate_all() -> Ret {
    probe(
        "negotiate",
        Call::Negotiate,
        &[
            0x0001_0000,
            (Features::CONSOLE | Features::SYSTEM).bits(),
            u64::MAX,
        ],
    )
}

/// A call that must succeed, then SYSTEM_SHUTDOWN(0).
fn finish() -> ! {
    probe("alive", Call::GetSpecVersion, &[]);
    let r = call(Call::SystemShutdown, &[0]);
    report("shutdown_returned", r.st, 0, 0, 0);
    halt_forever()
}

// ---------------------------------------------------------------------------------------
// Memory the probe owns: an arena of pages (identity-mapped, so address = guest-physical)

const PAGES: usize = 24;

static ARENA: Arena<PAGES> = Arena::new();

const P_TIME: usize = 0;
const P_EVENTS: usize = 1;
const P_DEFER: usize = 2;
const P_SQ: usize = 3;
const P_CQ: usize = 4;
const P_BUF: usize = 5;
const P_BUF2: usize = 6;
const P_MC: usize = 7;
const P_MC2: usize = 8;
const P_SQ2: usize = 9;
const P_CQ2: usize = 10;
/// Pages from here on are the sweep's scratch area.
const P_SCRATCH: usize = 12;

fn page(i: usize) -> u64 {
    ARENA.page(i)
}

fn fill(addr: u64, len: u64, byte: u8) {
    let mut i = 0;
    while i < len {
        ARENA.w8(addr + i, byte);
        i += 1;
    }
}

fn write_bytes(addr: u64, bytes: &[u8]) {
    for (i, &b) in bytes.iter().enumerate() {
        ARENA.w8(addr + i as u64, b);
    }
}

/// Writes a raw word anywhere in guest RAM outside the arena (the last bytes of RAM).
fn poke_ram(addr: u64, bytes: &[u8]) {
    for (i, &b) in bytes.iter().enumerate() {
        // SAFETY: the caller passes RAM that no Rust object uses (the top of guest RAM, far
        // above the image); identity-mapped.
        unsafe { ((addr + i as u64) as *mut u8).write_volatile(b) }
    }
}

fn le(bytes: &[u8]) -> u64 {
    let mut v = 0u64;
    for (i, &b) in bytes.iter().enumerate().take(8) {
        v |= u64::from(b) << (8 * i);
    }
    v
}

// Structure offsets, from the ABI crate.
const MC_SIZE: u64 = core::mem::size_of::<MulticallEntry>() as u64;
const MC_CALL: u64 = offset_of!(MulticallEntry, call) as u64;
const MC_STATUS: u64 = offset_of!(MulticallEntry, status) as u64;
const MC_FLAGS: u64 = offset_of!(MulticallEntry, flags) as u64;
const MC_RESERVED: u64 = offset_of!(MulticallEntry, reserved) as u64;
const MC_ARGS: u64 = offset_of!(MulticallEntry, args) as u64;
const MC_RESULTS: u64 = offset_of!(MulticallEntry, results) as u64;
const DE_SIZE: u64 = core::mem::size_of::<DeferredEntry>() as u64;
const DE_FLAGS: u64 = offset_of!(DeferredEntry, flags) as u64;
const DE_ARGS: u64 = offset_of!(DeferredEntry, args) as u64;
const DQ_HEAD: u64 = offset_of!(DeferredQueueHeader, head) as u64;
const DQ_TAIL: u64 = offset_of!(DeferredQueueHeader, tail) as u64;
const DQ_ERRORS: u64 = offset_of!(DeferredQueueHeader, error_count) as u64;
const DQ_FIRST_INDEX: u64 = offset_of!(DeferredQueueHeader, first_error_index) as u64;
const DQ_FIRST_STATUS: u64 = offset_of!(DeferredQueueHeader, first_error_status) as u64;
const RH_HEAD: u64 = offset_of!(RingHeader, head) as u64;
const RH_TAIL: u64 = offset_of!(RingHeader, tail) as u64;
const RH_DROPPED: u64 = offset_of!(RingHeader, dropped) as u64;
const SQE_SIZE: u64 = core::mem::size_of::<SubmissionEntry>() as u64;
const SQE_CALL: u64 = offset_of!(SubmissionEntry, call) as u64;
const SQE_FLAGS: u64 = offset_of!(SubmissionEntry, flags) as u64;
const SQE_ARGS: u64 = offset_of!(SubmissionEntry, args) as u64;
const CQE_SIZE: u64 = core::mem::size_of::<CompletionEntry>() as u64;
const CQE_STATUS: u64 = offset_of!(CompletionEntry, status) as u64;
const VS_RIP: u64 = offset_of!(VcpuStartState, rip) as u64;
const VS_RSP: u64 = offset_of!(VcpuStartState, rsp) as u64;
const VS_ARG: u64 = offset_of!(VcpuStartState, arg) as u64;
const VS_CR3: u64 = offset_of!(VcpuStartState, cr3) as u64;
const VS_FLAGS: u64 = offset_of!(VcpuStartState, flags) as u64;
const VS_RESERVED: u64 = offset_of!(VcpuStartState, reserved) as u64;
const RS_SQ: u64 = offset_of!(RingSetup, sq_page) as u64;
const RS_CQ: u64 = offset_of!(RingSetup, cq_page) as u64;
const RS_MODE: u64 = offset_of!(RingSetup, mode) as u64;
const RS_FLAGS: u64 = offset_of!(RingSetup, flags) as u64;
const RS_RESERVED: u64 = offset_of!(RingSetup, reserved) as u64;
const SQ_CAP: u32 = 32;
const CQ_CAP: u32 = 64;

/// Writes MULTICALL entry `i` of the array at `base` (flags, reserved and results zeroed,
/// status set to the sentinel).
fn mc_entry(base: u64, i: u64, code: u32, a: &[u64]) {
    let e = base + i * MC_SIZE;
    fill(e, MC_SIZE, 0);
    ARENA.w32(e + MC_CALL, code);
    ARENA.w32(e + MC_STATUS, SENTINEL);
    for (k, v) in args(a).iter().enumerate() {
        ARENA.w64(e + MC_ARGS + 8 * k as u64, *v);
    }
}

fn mc_status(base: u64, i: u64) -> u32 {
    ARENA.r32(base + i * MC_SIZE + MC_STATUS)
}

/// Reports the status (and first result) MULTICALL left in entry `i`.
fn report_entry(name: &str, base: u64, i: u64) {
    let e = base + i * MC_SIZE;
    report(
        name,
        u64::from(ARENA.r32(e + MC_STATUS)),
        ARENA.r64(e + MC_RESULTS),
        ARENA.r64(e + MC_RESULTS + 8),
        0,
    );
}

/// Writes deferred-queue slot `index` of the queue page at `q`.
fn dq_entry(q: u64, index: u32, code: u32, a: [u64; 3], flags: u32) {
    let e = q + DEFERRED_ENTRIES_OFFSET + u64::from(index % 64) * DE_SIZE;
    ARENA.w32(e, code);
    ARENA.w32(e + DE_FLAGS, flags);
    for (k, v) in a.iter().enumerate() {
        ARENA.w64(e + DE_ARGS + 8 * k as u64, *v);
    }
}

fn report_dq_header(name: &str, q: u64) {
    report(
        name,
        u64::from(ARENA.r32(q + DQ_FIRST_STATUS)),
        u64::from(ARENA.r32(q + DQ_FIRST_INDEX)),
        u64::from(ARENA.r32(q + DQ_ERRORS)),
        u64::from(ARENA.r32(q + DQ_HEAD)),
    );
}

/// Writes submission slot `index` of the ring page at `sq`.
fn sqe(sq: u64, index: u32, user_data: u64, code: u32, a: &[u64], flags: u32) {
    let e = sq + RING_ENTRIES_OFFSET + u64::from(index % SQ_CAP) * SQE_SIZE;
    ARENA.w64(e, user_data);
    ARENA.w32(e + SQE_CALL, code);
    ARENA.w32(e + SQE_FLAGS, flags);
    for (k, v) in args(a).iter().enumerate() {
        ARENA.w64(e + SQE_ARGS + 8 * k as u64, *v);
    }
}

fn report_cqe(name: &str, cq: u64, index: u32) {
    let e = cq + RING_ENTRIES_OFFSET + u64::from(index % CQ_CAP) * CQE_SIZE;
    report(
        name,
        u64::from(ARENA.r32(e + CQE_STATUS)),
        ARENA.r64(e),
        ARENA.r64(e + 16),
        0,
    );
}

/// A `RingSetup` block at `at`.
fn ring_setup_block(at: u64, sq: u64, cq: u64, mode: u32, flags: u32, reserved: u64) {
    ARENA.w64(at + RS_SQ, sq);
    ARENA.w64(at + RS_CQ, cq);
    ARENA.w32(at + RS_MODE, mode);
    ARENA.w32(at + RS_FLAGS, flags);
    ARENA.w64(at + RS_RESERVED, reserved);
}

/// A `VcpuStartState` block at `at`.
fn start_state(at: u64, rip: u64, rsp: u64, arg: u64, cr3: u64) {
    fill(at, 64, 0);
    ARENA.w64(at + VS_RIP, rip);
    ARENA.w64(at + VS_RSP, rsp);
    ARENA.w64(at + VS_ARG, arg);
    ARENA.w64(at + VS_CR3, cr3);
}

/// Ring 3: spins until `flag` is non-zero (1) or the bound passes (0).
fn spin_until(flag: &'static AtomicU64) -> u64 {
    // The flag's address goes through a static: `run_at_cpl3` takes a plain fn.
    WAIT_FOR.store(flag as *const AtomicU64 as u64, Ordering::Relaxed);
    run_at_cpl3(
        |_| {
            // SAFETY: set just above to a `'static` AtomicU64.
            let flag = unsafe { &*(WAIT_FOR.load(Ordering::Relaxed) as *const AtomicU64) };
            let start = rdtsc();
            while flag.load(Ordering::Acquire) == 0 {
                if rdtsc().wrapping_sub(start) > SPIN_TICKS {
                    return 0;
                }
                pause();
            }
            1
        },
        0,
    )
}

static WAIT_FOR: AtomicU64 = AtomicU64::new(0);

// ---------------------------------------------------------------------------------------
// Scenarios

fn unknown_codes() -> ! {
    for (name, code) in [
        ("unknown_base_0x0006", 0x0006u64),
        ("unknown_console_0x0106", 0x0106),
        ("unknown_family_0x0800", 0x0800),
        ("unknown_0x07ff", 0x07ff),
        ("unknown_0xffff", 0xffff),
        ("unknown_0xffffffff", 0xffff_ffff),
        ("get_spec_version_with_bit_32", 1 << 32),
        ("console_write_regs_with_bit_63", (1 << 63) | 0x0100),
        ("all_ones", u64::MAX),
    ] {
        probe_code(name, code, &[1, 2, 3, 4, 5, 6]);
    }
    probe("probe_call_unknown_family", Call::ProbeCall, &[0x0800]);
    probe("probe_call_bit_32", Call::ProbeCall, &[1 << 32]);
    negotiate_all();
    probe_code("after_unknown_console_0x0107", 0x0107, &[]);
    probe_code(
        "after_console_write_regs_with_bit_32",
        (1 << 32) | 0x0100,
        &[2, le(b"no")],
    );
    finish()
}

fn before_negotiate() -> ! {
    write_bytes(page(P_BUF), b"oops");
    probe(
        "console_write_regs",
        Call::ConsoleWriteRegs,
        &[4, le(b"oops")],
    );
    probe("console_write", Call::ConsoleWrite, &[page(P_BUF), 4]);
    probe("time_monotonic", Call::TimeMonotonic, &[]);
    probe("system_shutdown", Call::SystemShutdown, &[0]);
    probe("system_reboot", Call::SystemReboot, &[]);
    probe("system_crash", Call::SystemCrash, &[page(P_BUF), 4]);
    probe("multicall", Call::Multicall, &[page(P_MC), 1, 0, 0]);
    probe("vcpu_stop", Call::VcpuStop, &[]);
    probe("ring_enter", Call::RingEnter, &[]);
    probe("defer_flush", Call::DeferFlush, &[]);
    probe("mem_flush_tlb_all", Call::MemFlushTlbAll, &[]);
    probe("get_spec_version", Call::GetSpecVersion, &[]);
    probe("probe_features", Call::ProbeFeatures, &[]);
    probe(
        "probe_call_console",
        Call::ProbeCall,
        &[u64::from(Call::ConsoleWriteRegs.code())],
    );
    negotiate_all();
    probe("console_after", Call::ConsoleWriteRegs, &[3, le(b"ok\n")]);
    finish()
}

fn not_granted() -> ! {
    probe(
        "negotiate",
        Call::Negotiate,
        &[
            0x0001_0000,
            (Features::CONSOLE | Features::SYSTEM).bits(),
            0,
        ],
    );
    probe("time_monotonic", Call::TimeMonotonic, &[]);
    probe("time_set_page", Call::TimeSetPage, &[page(P_TIME)]);
    probe("events_send", Call::EventsSend, &[0, 0]);
    probe("multicall", Call::Multicall, &[page(P_MC), 1, 0, 0]);
    probe("defer_flush", Call::DeferFlush, &[]);
    probe("ring_setup", Call::RingSetup, &[page(P_BUF)]);
    probe("mem_flush_tlb_all", Call::MemFlushTlbAll, &[]);
    probe("mem_update_pte", Call::MemUpdatePte, &[page(P_BUF), 1, 1]);
    probe("vcpu_info", Call::VcpuInfo, &[]);
    probe(
        "probe_call_time",
        Call::ProbeCall,
        &[u64::from(Call::TimeMonotonic.code())],
    );
    probe("console_after", Call::ConsoleWriteRegs, &[3, le(b"ok\n")]);
    finish()
}

fn reserved_regs() -> ! {
    let required = (Features::CONSOLE | Features::SYSTEM).bits();
    probe(
        "negotiate_flags",
        Call::Negotiate,
        &[0x0001_0000, required, u64::MAX, 1],
    );
    probe(
        "negotiate_requested_bit_32",
        Call::Negotiate,
        &[(1 << 32) | 0x0001_0000, required, u64::MAX, 0],
    );
    negotiate_all();
    probe("shutdown_code_bit_32", Call::SystemShutdown, &[1 << 32]);
    probe(
        "console_write_regs_len_33",
        Call::ConsoleWriteRegs,
        &[33, 1, 2, 3, 4],
    );
    probe(
        "console_write_len_4097",
        Call::ConsoleWrite,
        &[page(P_BUF), 4097],
    );
    probe(
        "multicall_flags_bit_1",
        Call::Multicall,
        &[page(P_MC), 1, 0, 2],
    );
    probe("multicall_count_0", Call::Multicall, &[page(P_MC), 0, 0, 0]);
    probe(
        "multicall_count_33",
        Call::Multicall,
        &[page(P_MC), 33, 0, 0],
    );
    probe(
        "multicall_start_after_count",
        Call::Multicall,
        &[page(P_MC), 1, 2, 0],
    );
    probe(
        "flush_tlb_range_unaligned",
        Call::MemFlushTlbRange,
        &[0x1001, 1],
    );
    probe(
        "flush_tlb_range_0_pages",
        Call::MemFlushTlbRange,
        &[0x1000, 0],
    );
    probe("events_set_mask_bit_63", Call::EventsSetMask, &[1 << 63]);
    probe(
        "events_set_queue_vector_31",
        Call::EventsSetQueue,
        &[page(P_EVENTS), 31],
    );
    probe(
        "events_set_queue_vector_256",
        Call::EventsSetQueue,
        &[page(P_EVENTS), 256],
    );
    probe("vcpu_kick_index_1_of_1", Call::VcpuKick, &[1]);
    probe("vcpu_kick_index_bit_32", Call::VcpuKick, &[1 << 32]);
    probe(
        "update_pte_level_0",
        Call::MemUpdatePte,
        &[page(P_BUF), 7, 0],
    );
    probe(
        "update_pte_level_5",
        Call::MemUpdatePte,
        &[page(P_BUF), 7, 5],
    );
    probe(
        "defer_set_queue_flags",
        Call::DeferSetQueue,
        &[page(P_DEFER), 1],
    );
    probe("time_set_page_after_bad_calls", Call::TimeSetPage, &[0]);
    // Registers a call does not define must not be read (CONV-003), bytes beyond `length`
    // must be ignored (CON-005).
    probe(
        "get_spec_version_garbage_args",
        Call::GetSpecVersion,
        &[u64::MAX; 6],
    );
    probe(
        "console_write_regs_garbage_unused",
        Call::ConsoleWriteRegs,
        &[2, le(b"ok??????"), u64::MAX, u64::MAX, u64::MAX, u64::MAX],
    );
    finish()
}

static AP_FLAG: AtomicU64 = AtomicU64::new(0);

/// A secondary vCPU that says hello and stops.
fn ap_hello(arg: u64) -> ! {
    AP_FLAG.store(arg, Ordering::Release);
    let r = call(Call::VcpuStop, &[]);
    report("ap_stop_returned", r.st, 0, 0, 0);
    halt_forever()
}

fn reserved_blocks() -> ! {
    negotiate_all();
    let ap = ap_launch(1, ap_hello, 1).expect("vCPU 1 within MAX_VCPUS");
    let vs = page(P_BUF);
    start_state(vs, ap.rip, ap.rsp, ap.rdi, 0);
    ARENA.w64(vs + VS_FLAGS, 1);
    probe("vcpu_start_flags", Call::VcpuStart, &[1, vs]);
    start_state(vs, ap.rip, ap.rsp, ap.rdi, 0);
    ARENA.w64(vs + VS_RESERVED + 16, 1);
    probe("vcpu_start_reserved", Call::VcpuStart, &[1, vs]);

    let rs = page(P_BUF2);
    ring_setup_block(rs, page(P_SQ), page(P_CQ), 0, 0, 1);
    probe("ring_setup_reserved", Call::RingSetup, &[rs]);
    ring_setup_block(rs, page(P_SQ), page(P_CQ), 2, 0, 0);
    probe("ring_setup_mode_2", Call::RingSetup, &[rs]);
    ring_setup_block(rs, page(P_SQ), page(P_CQ), 0, 0x100, 0);
    probe("ring_setup_flags", Call::RingSetup, &[rs]);
    ring_setup_block(rs, page(P_SQ), page(P_SQ), 0, 0, 0);
    probe("ring_setup_same_pages", Call::RingSetup, &[rs]);
    ring_setup_block(rs, page(P_SQ) + 8, page(P_CQ), 0, 0, 0);
    probe("ring_setup_page_unaligned", Call::RingSetup, &[rs]);
    probe("ring_enter_after_bad_setups", Call::RingEnter, &[]);

    let mc = page(P_MC);
    mc_entry(mc, 0, Call::ConsoleWriteRegs.code(), &[1, le(b"a")]);
    ARENA.w32(mc + MC_FLAGS, 1);
    mc_entry(mc, 1, Call::ConsoleWriteRegs.code(), &[1, le(b"b")]);
    ARENA.w32(mc + MC_SIZE + MC_RESERVED, 1);
    mc_entry(mc, 2, Call::ConsoleWriteRegs.code(), &[1, le(b"c")]);
    probe(
        "multicall_reserved_entries",
        Call::Multicall,
        &[mc, 3, 0, 0],
    );
    report_entry("mc_entry_flags", mc, 0);
    report_entry("mc_entry_reserved", mc, 1);
    report_entry("mc_entry_valid", mc, 2);

    let q = page(P_DEFER);
    probe("defer_set_queue", Call::DeferSetQueue, &[q]);
    dq_entry(q, 0, Call::TimeSetTimer.code(), [0, 0, 0], 1);
    dq_entry(q, 1, Call::TimeSetTimer.code(), [0, 0, 0], 0);
    ARENA.w32(q + DQ_TAIL, 2);
    probe("defer_flush", Call::DeferFlush, &[]);
    report_dq_header("defer_header", q);

    ring_setup_block(rs, page(P_SQ), page(P_CQ), 0, 0, 0);
    probe("ring_setup", Call::RingSetup, &[rs]);
    sqe(page(P_SQ), 0, 0x77, Call::GetSpecVersion.code(), &[], 1);
    ARENA.w32(page(P_SQ) + RH_TAIL, 1);
    probe("ring_enter", Call::RingEnter, &[]);
    report_cqe("cqe_flags", page(P_CQ), 0);
    finish()
}

fn vcpu_start_state() -> ! {
    negotiate_all();
    let ap = ap_launch(1, ap_hello, 0xA9).expect("vCPU 1 within MAX_VCPUS");
    let vs = page(P_BUF);
    start_state(vs, 0x8000_0000_0000_0000, ap.rsp, ap.rdi, 0);
    probe("rip_not_canonical", Call::VcpuStart, &[1, vs]);
    start_state(vs, ap.rip, 0x0000_8000_0000_0000, ap.rdi, 0);
    probe("rsp_not_canonical", Call::VcpuStart, &[1, vs]);
    start_state(vs, ap.rip, ap.rsp, ap.rdi, 1 << 62);
    probe("cr3_reserved_bit_62", Call::VcpuStart, &[1, vs]);
    start_state(vs, ap.rip, ap.rsp, ap.rdi, 0);
    probe("start_valid", Call::VcpuStart, &[1, vs]);
    report(
        "ap_ran",
        spin_until(&AP_FLAG),
        AP_FLAG.load(Ordering::Acquire),
        0,
        0,
    );
    probe("start_boot_vcpu", Call::VcpuStart, &[0, vs]);
    finish()
}

fn outside_ram(mem: u64) -> ! {
    negotiate_all();
    poke_ram(mem - 16, b"LAST-16-BYTES-OK");
    probe("console_at_ram_end", Call::ConsoleWrite, &[mem, 16]);
    probe(
        "console_above_ram_mapped",
        Call::ConsoleWrite,
        &[0x3000_0000, 16],
    );
    probe("console_at_4_gib", Call::ConsoleWrite, &[1 << 32, 16]);
    probe(
        "console_top_of_u64",
        Call::ConsoleWrite,
        &[u64::MAX - 15, 16],
    );
    probe("console_u64_max_1_byte", Call::ConsoleWrite, &[u64::MAX, 1]);
    probe(
        "console_u64_max_2_bytes_wraps",
        Call::ConsoleWrite,
        &[u64::MAX, 2],
    );
    probe(
        "console_straddles_ram_end",
        Call::ConsoleWrite,
        &[mem - 8, 16],
    );
    probe(
        "console_last_16_bytes_of_ram",
        Call::ConsoleWrite,
        &[mem - 16, 16],
    );
    probe(
        "console_zero_length_outside",
        Call::ConsoleWrite,
        &[u64::MAX, 0],
    );
    probe("vcpu_start_state_outside", Call::VcpuStart, &[0, mem]);
    probe(
        "update_pte_top_of_u64",
        Call::MemUpdatePte,
        &[u64::MAX - 7, 0, 1],
    );
    probe("update_pte_at_ram_end", Call::MemUpdatePte, &[mem, 0, 1]);
    probe("time_set_page_at_ram_end", Call::TimeSetPage, &[mem]);
    probe(
        "time_set_page_top_page",
        Call::TimeSetPage,
        &[0xFFFF_FFFF_FFFF_F000],
    );
    probe(
        "events_set_queue_outside",
        Call::EventsSetQueue,
        &[1 << 40, 32],
    );
    probe(
        "defer_set_queue_outside",
        Call::DeferSetQueue,
        &[mem + 0x10_0000],
    );
    probe("multicall_outside", Call::Multicall, &[1 << 40, 1, 0, 0]);
    probe(
        "multicall_top_of_u64",
        Call::Multicall,
        &[u64::MAX - 95, 1, 0, 0],
    );
    let rs = page(P_BUF2);
    ring_setup_block(rs, mem, page(P_CQ), 0, 0, 0);
    probe("ring_setup_sq_outside", Call::RingSetup, &[rs]);
    ring_setup_block(rs, page(P_SQ), 0xFFFF_FFFF_FFFF_F000, 0, 0, 0);
    probe("ring_setup_cq_top_page", Call::RingSetup, &[rs]);
    probe(
        "mem_share_straddles_ram_end",
        Call::MemShare,
        &[mem - PAGE, 2],
    );
    probe("mem_unshare_outside", Call::MemUnshare, &[mem, 1]);
    let list = page(P_BUF);
    ARENA.w64(list, mem / PAGE);
    probe(
        "balloon_release_pfn_at_ram_end",
        Call::MemBalloonRelease,
        &[list, 1],
    );
    ARENA.w64(list, u64::MAX);
    probe(
        "balloon_release_pfn_u64_max",
        Call::MemBalloonRelease,
        &[list, 1],
    );
    ARENA.w64(list, 1 << 52);
    probe(
        "balloon_reclaim_pfn_huge",
        Call::MemBalloonReclaim,
        &[list, 1],
    );
    probe("crash_message_outside", Call::SystemCrash, &[mem, 8]);
    finish()
}

fn misaligned() -> ! {
    negotiate_all();
    probe(
        "vcpu_start_state_plus_4",
        Call::VcpuStart,
        &[0, page(P_BUF) + 4],
    );
    probe(
        "multicall_entries_plus_4",
        Call::Multicall,
        &[page(P_MC) + 4, 1, 0, 0],
    );
    probe(
        "time_set_page_plus_8",
        Call::TimeSetPage,
        &[page(P_TIME) + 8],
    );
    probe(
        "events_set_queue_plus_1",
        Call::EventsSetQueue,
        &[page(P_EVENTS) + 1, 32],
    );
    probe(
        "defer_set_queue_half_page",
        Call::DeferSetQueue,
        &[page(P_DEFER) + 0x800],
    );
    probe(
        "update_pte_plus_4",
        Call::MemUpdatePte,
        &[page(P_BUF) + 4, 0, 1],
    );
    probe(
        "ring_setup_block_plus_4",
        Call::RingSetup,
        &[page(P_BUF2) + 4],
    );
    probe(
        "balloon_list_plus_4",
        Call::MemBalloonRelease,
        &[page(P_BUF) + 4, 1],
    );
    let rs = page(P_BUF2);
    ring_setup_block(rs, page(P_SQ) + 8, page(P_CQ), 0, 0, 0);
    probe("ring_setup_sq_page_plus_8", Call::RingSetup, &[rs]);
    // None of the pages above became host-owned.
    probe(
        "console_on_time_page",
        Call::ConsoleWrite,
        &[page(P_TIME), 0],
    );
    write_bytes(page(P_DEFER), b"free");
    probe(
        "console_on_deferred_page",
        Call::ConsoleWrite,
        &[page(P_DEFER), 4],
    );
    finish()
}

fn crosses_page() -> ! {
    negotiate_all();
    let b = page(P_BUF);
    fill(b, PAGE, b'.');
    probe("console_crosses", Call::ConsoleWrite, &[b + PAGE - 4, 8]);
    probe(
        "console_full_page_plus_1",
        Call::ConsoleWrite,
        &[b + 1, PAGE],
    );
    probe("console_full_page", Call::ConsoleWrite, &[b, PAGE]);
    probe("console_page_tail", Call::ConsoleWrite, &[b + PAGE - 8, 8]);
    probe(
        "multicall_crosses",
        Call::Multicall,
        &[page(P_MC) + PAGE - MC_SIZE, 2, 0, 0],
    );
    probe(
        "vcpu_start_state_crosses",
        Call::VcpuStart,
        &[0, b + PAGE - 32],
    );
    probe(
        "ring_setup_block_crosses",
        Call::RingSetup,
        &[b + PAGE - 16],
    );
    probe(
        "crash_message_crosses",
        Call::SystemCrash,
        &[b + PAGE - 6, 10],
    );
    probe(
        "balloon_list_crosses",
        Call::MemBalloonRelease,
        &[b + PAGE - 8, 2],
    );
    finish()
}

fn host_owned() -> ! {
    negotiate_all();
    let (t, e, d, sq, cq) = (
        page(P_TIME),
        page(P_EVENTS),
        page(P_DEFER),
        page(P_SQ),
        page(P_CQ),
    );
    probe("time_set_page", Call::TimeSetPage, &[t]);
    probe("events_set_queue", Call::EventsSetQueue, &[e, 0x40]);
    probe("defer_set_queue", Call::DeferSetQueue, &[d]);
    let rs = page(P_BUF2);
    ring_setup_block(rs, sq, cq, 0, 0, 0);
    probe("ring_setup", Call::RingSetup, &[rs]);

    write_bytes(t + 128, b"RELEASED");
    probe("console_in_time_page", Call::ConsoleWrite, &[t + 128, 8]);
    probe("console_in_event_queue", Call::ConsoleWrite, &[e + 64, 16]);
    probe(
        "console_in_deferred_queue",
        Call::ConsoleWrite,
        &[d + 4000, 8],
    );
    probe("console_in_submission_ring", Call::ConsoleWrite, &[sq, 64]);
    probe(
        "console_in_completion_ring",
        Call::ConsoleWrite,
        &[cq + PAGE - 1, 1],
    );
    probe(
        "multicall_in_deferred_queue",
        Call::Multicall,
        &[d + 64, 1, 0, 0],
    );
    probe(
        "vcpu_start_state_in_time_page",
        Call::VcpuStart,
        &[0, t + 64],
    );
    probe(
        "update_pte_in_event_queue",
        Call::MemUpdatePte,
        &[e + 8, 0xdead, 1],
    );
    probe(
        "ring_setup_block_in_completion_ring",
        Call::RingSetup,
        &[cq + 1024],
    );
    probe(
        "balloon_list_in_submission_ring",
        Call::MemBalloonRelease,
        &[sq + 512, 1],
    );
    probe(
        "crash_message_in_time_page",
        Call::SystemCrash,
        &[t + 128, 8],
    );
    probe(
        "events_set_queue_on_time_page",
        Call::EventsSetQueue,
        &[t, 0x40],
    );
    probe("time_set_page_on_deferred_queue", Call::TimeSetPage, &[d]);
    probe("time_set_page_again", Call::TimeSetPage, &[t]);
    probe(
        "defer_set_queue_on_completion_ring",
        Call::DeferSetQueue,
        &[cq],
    );
    ring_setup_block(rs, t, page(P_CQ2), 0, 0, 0);
    probe("ring_setup_sq_on_time_page", Call::RingSetup, &[rs]);
    probe("mem_share_over_event_queue", Call::MemShare, &[e - PAGE, 2]);
    ARENA.w64(page(P_BUF), t / PAGE);
    probe(
        "balloon_release_time_page",
        Call::MemBalloonRelease,
        &[page(P_BUF), 1],
    );
    probe("time_unset_page", Call::TimeSetPage, &[0]);
    probe(
        "console_in_released_time_page",
        Call::ConsoleWrite,
        &[t + 128, 8],
    );
    finish()
}

fn precedence(mem: u64) -> ! {
    let d = page(P_DEFER);
    // Before NEGOTIATE.
    probe_code(
        "unknown_code_with_bad_args",
        0x0107,
        &[u64::MAX, 0, 9, 9, 9, 9],
    );
    probe(
        "multicall_before_negotiate_bad_args",
        Call::Multicall,
        &[page(P_MC) + 4, 0, 5, 9],
    );
    probe(
        "negotiate_flags_and_bad_major",
        Call::Negotiate,
        &[0x0007_0000, 1 << 40, 0, 1],
    );
    probe(
        "negotiate_bad_major_and_feature",
        Call::Negotiate,
        &[0x0007_0000, 1 << 40, 0, 0],
    );
    probe(
        "negotiate_minor_and_feature",
        Call::Negotiate,
        &[0x0001_ffff, 1 << 40, 0, 0],
    );
    let all_but_time = !Features::TIME.bits();
    probe(
        "negotiate",
        Call::Negotiate,
        &[
            0x0001_0000,
            (Features::CONSOLE | Features::SYSTEM).bits(),
            all_but_time,
        ],
    );
    // Steps 3 and 4 before 5..9.
    probe(
        "not_granted_and_misaligned",
        Call::TimeSetPage,
        &[page(P_TIME) + 8],
    );
    let mc = page(P_MC);
    mc_entry(mc, 0, Call::Negotiate.code(), &[0x0001_0000, 0, 0, 1]);
    mc_entry(mc, 1, Call::TimeSetPage.code(), &[page(P_TIME) + 8]);
    mc_entry(mc, 2, Call::ConsoleWriteRegs.code(), &[33]);
    mc_entry(mc, 3, Call::VcpuStart.code(), &[7, 3]);
    mc_entry(mc, 4, 0x0999, &[]);
    probe("multicall", Call::Multicall, &[mc, 5, 0, 0]);
    report_entry("entry_not_batchable_and_bad_flags", mc, 0);
    report_entry("entry_not_granted_and_not_batchable", mc, 1);
    report_entry("entry_bad_length", mc, 2);
    report_entry("entry_not_batchable_and_bad_index", mc, 3);
    report_entry("entry_unknown", mc, 4);
    // Step 5 before 6..9.
    probe(
        "bad_length_and_outside",
        Call::ConsoleWrite,
        &[u64::MAX, 5000],
    );
    probe(
        "bad_index_and_misaligned",
        Call::VcpuStart,
        &[9, page(P_BUF) + 4],
    );
    probe(
        "bad_count_and_crossing",
        Call::Multicall,
        &[page(P_MC) + PAGE - 8, 40, 0, 0],
    );
    // Steps 6..9 in order.
    probe("misaligned_and_outside", Call::VcpuStart, &[0, mem + 4]);
    probe(
        "misaligned_and_crossing",
        Call::Multicall,
        &[page(P_MC) + PAGE - 4, 1, 0, 0],
    );
    probe(
        "crossing_and_outside",
        Call::Multicall,
        &[mem - MC_SIZE, 2, 0, 0],
    );
    probe("defer_set_queue", Call::DeferSetQueue, &[d]);
    probe("crossing_into_host_owned", Call::ConsoleWrite, &[d - 4, 8]);
    probe(
        "misaligned_page_outside",
        Call::EventsSetQueue,
        &[mem + 8, 32],
    );
    // Step 9 before 10, step 10 before 11.
    start_state(d + 128, 0x20_0000, 0x8000, 0, 0);
    ARENA.w64(d + 128 + VS_FLAGS, 1);
    probe(
        "host_owned_and_bad_contents",
        Call::VcpuStart,
        &[0, d + 128],
    );
    let vs = page(P_BUF);
    start_state(vs, 0x20_0000, 0x8000, 0, 0);
    ARENA.w64(vs + VS_FLAGS, 1);
    probe("bad_contents_and_running_target", Call::VcpuStart, &[0, vs]);
    start_state(vs, 0x20_0000, 0x8000, 0, 0);
    probe("running_target", Call::VcpuStart, &[0, vs]);
    let rs = page(P_BUF2);
    ring_setup_block(rs, mem, page(P_CQ), 0, 0, 1);
    probe("ring_setup_reserved_and_outside", Call::RingSetup, &[rs]);
    ring_setup_block(rs, mem, d, 0, 0, 0);
    probe("ring_setup_outside_and_host_owned", Call::RingSetup, &[rs]);
    let list = page(P_BUF);
    ARENA.w64(list, d / PAGE);
    ARENA.w64(list + 8, mem / PAGE);
    probe(
        "balloon_host_owned_and_outside",
        Call::MemBalloonRelease,
        &[list, 2],
    );
    ARENA.w64(list + 8, d / PAGE);
    probe(
        "balloon_duplicate_and_host_owned",
        Call::MemBalloonRelease,
        &[list, 2],
    );
    ARENA.w64(list, page(P_BUF2) / PAGE);
    ARENA.w64(list + 8, mem / PAGE);
    probe(
        "reclaim_not_released_and_outside",
        Call::MemBalloonReclaim,
        &[list, 2],
    );
    // NEGOTIATE after NEGOTIATE: LOCKED is the highest of its statuses.
    probe(
        "negotiate_again_bad_major",
        Call::Negotiate,
        &[0x0007_0000, 0, 0, 0],
    );
    probe(
        "negotiate_again_bad_feature",
        Call::Negotiate,
        &[0x0001_0000, 1 << 40, 0, 0],
    );
    probe(
        "negotiate_again_flags",
        Call::Negotiate,
        &[0x0001_0000, 0, 0, 1],
    );
    probe(
        "negotiate_again_valid",
        Call::Negotiate,
        &[0x0001_0000, 0, 0, 0],
    );
    finish()
}

fn nested_multicall() -> ! {
    negotiate_all();
    let (mc, inner) = (page(P_MC), page(P_MC2));
    mc_entry(inner, 0, Call::ConsoleWriteRegs.code(), &[5, le(b"INNER")]);
    let build = || {
        mc_entry(mc, 0, Call::GetSpecVersion.code(), &[]);
        mc_entry(mc, 1, Call::Multicall.code(), &[inner, 1, 0, 0]);
        mc_entry(mc, 2, Call::ConsoleWriteRegs.code(), &[5, le(b"OUTER")]);
        mc_entry(mc, 3, Call::SystemShutdown.code(), &[0]);
        mc_entry(mc, 4, Call::Negotiate.code(), &[0x0001_0000, 0, 0, 0]);
        mc_entry(mc, 5, Call::DeferFlush.code(), &[]);
        mc_entry(mc, 6, Call::VcpuInfo.code(), &[]);
    };
    build();
    probe("multicall", Call::Multicall, &[mc, 7, 0, 0]);
    for (i, name) in [
        "entry_get_spec_version",
        "entry_nested_multicall",
        "entry_console",
        "entry_shutdown",
        "entry_negotiate",
        "entry_defer_flush",
        "entry_vcpu_info",
    ]
    .iter()
    .enumerate()
    {
        report_entry(name, mc, i as u64);
    }
    report(
        "inner_entry_untouched",
        u64::from(mc_status(inner, 0)),
        0,
        0,
        0,
    );
    build();
    probe(
        "multicall_stop_on_error",
        Call::Multicall,
        &[mc, 7, 0, MULTICALL_STOP_ON_ERROR],
    );
    report_entry("stop_entry_nested_multicall", mc, 1);
    report_entry("stop_entry_after_stop", mc, 2);
    build();
    probe(
        "multicall_resume_at_2",
        Call::Multicall,
        &[mc, 7, 2, MULTICALL_STOP_ON_ERROR],
    );
    report_entry("resume_entry_before_start", mc, 1);
    report_entry("resume_entry_shutdown", mc, 3);
    finish()
}

fn defer_not_deferrable() -> ! {
    negotiate_all();
    let q = page(P_DEFER);
    probe("defer_set_queue", Call::DeferSetQueue, &[q]);
    let entries: [(u32, [u64; 3]); 8] = [
        (Call::SystemShutdown.code(), [0, 0, 0]),
        (Call::ConsoleWriteRegs.code(), [4, le(b"BAD!"), 0]),
        (Call::TimeSetTimer.code(), [0, 0, 0]),
        (0x0999, [0, 0, 0]),
        (Call::Multicall.code(), [page(P_MC), 1, 0]),
        (Call::Negotiate.code(), [0x0001_0000, 0, 0]),
        (Call::EventsSetMask.code(), [1 << 63, 0, 0]),
        (Call::VcpuStop.code(), [0, 0, 0]),
    ];
    for (i, (code, a)) in entries.iter().enumerate() {
        dq_entry(q, i as u32, *code, *a, 0);
    }
    ARENA.w32(q + DQ_TAIL, 8);
    probe("defer_flush", Call::DeferFlush, &[]);
    report_dq_header("header_after_flush", q);
    // A sync-point call drains the queue before its own block checks fail.
    dq_entry(q, 8, Call::SystemReboot.code(), [0, 0, 0], 0);
    ARENA.w32(q + DQ_TAIL, 9);
    probe("sync_point_with_bad_block", Call::DeferSetQueue, &[q]);
    report_dq_header("header_after_sync_point", q);
    // A tail far ahead of head.
    ARENA.w32(q + DQ_TAIL, 9 + 1000);
    probe("defer_flush_malformed_tail", Call::DeferFlush, &[]);
    report_dq_header("header_after_malformed", q);
    probe("defer_flush_empty", Call::DeferFlush, &[]);
    finish()
}

fn notify(width: u8, value: u32) {
    let port = notify_port();
    // SAFETY: writes to the ring-notify port; the host processes this vCPU's ring, whose
    // submissions the probe wrote.
    unsafe {
        match width {
            1 => asm!("out dx, al", in("dx") port, in("al") value as u8, options(nostack)),
            2 => asm!("out dx, ax", in("dx") port, in("ax") value as u16, options(nostack)),
            _ => asm!("out dx, eax", in("dx") port, in("eax") value, options(nostack)),
        }
    }
}

fn garbage_ring() -> ! {
    negotiate_all();
    let (sq, cq) = (page(P_SQ), page(P_CQ));
    probe("ring_enter_without_ring", Call::RingEnter, &[]);
    let rs = page(P_BUF2);
    ring_setup_block(rs, sq, cq, 0, 0, 0);
    probe("ring_setup", Call::RingSetup, &[rs]);
    // A tail 1000 ahead of head.
    ARENA.w32(sq + RH_TAIL, 1000);
    probe("ring_enter_malformed_tail", Call::RingEnter, &[]);
    report(
        "sq_after_malformed",
        u64::from(ARENA.r32(sq + RH_DROPPED)),
        u64::from(ARENA.r32(sq + RH_HEAD)),
        0,
        0,
    );
    // Garbage submissions.
    let gsv = Call::GetSpecVersion.code();
    sqe(sq, 1000, 0xA0, 0x0999, &[], 0);
    sqe(sq, 1001, 0xA1, gsv, &[], 1);
    sqe(sq, 1002, 0xA2, Call::Negotiate.code(), &[0x0001_0000], 0);
    sqe(sq, 1003, 0xA3, Call::SystemShutdown.code(), &[0], 0);
    sqe(sq, 1004, 0xA4, Call::Multicall.code(), &[page(P_MC), 1], 0);
    sqe(sq, 1005, 0xA5, gsv, &[], 0);
    ARENA.w32(sq + RH_TAIL, 1006);
    probe("ring_enter_garbage", Call::RingEnter, &[]);
    for (i, name) in [
        "cqe_unknown",
        "cqe_flags",
        "cqe_negotiate",
        "cqe_shutdown",
        "cqe_multicall",
        "cqe_valid",
    ]
    .iter()
    .enumerate()
    {
        report_cqe(name, cq, i as u32);
    }
    // A completion-ring head ahead of its tail leaves no room: nothing may be overwritten.
    ARENA.w32(cq + RH_HEAD, 6 + 7);
    sqe(sq, 1006, 0xB0, gsv, &[], 0);
    ARENA.w32(sq + RH_TAIL, 1007);
    probe("ring_enter_cq_head_ahead", Call::RingEnter, &[]);
    ARENA.w32(cq + RH_HEAD, 6);
    probe("ring_enter_cq_head_fixed", Call::RingEnter, &[]);
    // Notifications of other widths or for other vCPUs are ignored.
    sqe(sq, 1007, 0xB1, gsv, &[], 0);
    ARENA.w32(sq + RH_TAIL, 1008);
    notify(1, 0);
    notify(2, 0);
    notify(4, 0xFFFF_FFFF);
    notify(4, 1);
    report(
        "sq_head_after_bad_notifies",
        u64::from(ARENA.r32(sq + RH_HEAD)),
        0,
        0,
        0,
    );
    notify(4, 0);
    // The host may serve the write on another thread after it returns (PVABI-RING-021):
    // wait (bounded) for the head to move.
    let start = rdtsc();
    while ARENA.r32(sq + RH_HEAD) == 1007 && rdtsc().wrapping_sub(start) < SPIN_TICKS {
        pause();
    }
    report(
        "sq_head_after_notify",
        u64::from(ARENA.r32(sq + RH_HEAD)),
        0,
        0,
        0,
    );
    // A second ring pair while one is registered.
    ring_setup_block(rs, page(P_SQ2), page(P_CQ2), 0, 0, 0);
    probe("ring_setup_again", Call::RingSetup, &[rs]);
    ring_setup_block(rs, 0, 0, 0, 0, 0);
    probe("ring_unregister", Call::RingSetup, &[rs]);
    probe("ring_enter_after_unregister", Call::RingEnter, &[]);
    finish()
}

fn negotiate_twice() -> ! {
    let cs = (Features::CONSOLE | Features::SYSTEM).bits();
    probe("negotiate_first", Call::Negotiate, &[0x0001_0000, cs, 0]);
    probe(
        "negotiate_more_features",
        Call::Negotiate,
        &[0x0001_0000, cs | Features::TIME.bits(), u64::MAX],
    );
    probe(
        "negotiate_same_again",
        Call::Negotiate,
        &[0x0001_0000, cs, 0],
    );
    probe("probe_features", Call::ProbeFeatures, &[]);
    probe("time_after_locked", Call::TimeMonotonic, &[]);
    finish()
}

fn negotiate_version() -> ! {
    let cs = (Features::CONSOLE | Features::SYSTEM).bits();
    probe("major_0", Call::Negotiate, &[0x0000_0000, cs, 0]);
    probe("major_2", Call::Negotiate, &[0x0002_0000, cs, 0]);
    probe("major_0xffff", Call::Negotiate, &[0xffff_0000, cs, 0]);
    probe("min_minor_0xffff", Call::Negotiate, &[0x0001_ffff, cs, 0]);
    probe("get_spec_version", Call::GetSpecVersion, &[]);
    probe("negotiate_valid", Call::Negotiate, &[0x0001_0000, cs, 0]);
    finish()
}

fn negotiate_feature() -> ! {
    let cs = (Features::CONSOLE | Features::SYSTEM).bits();
    probe(
        "required_bit_40",
        Call::Negotiate,
        &[0x0001_0000, cs | (1 << 40), 0],
    );
    probe(
        "required_bit_63",
        Call::Negotiate,
        &[0x0001_0000, cs | (1 << 63), 0],
    );
    probe(
        "required_all_ones",
        Call::Negotiate,
        &[0x0001_0000, u64::MAX, 0],
    );
    probe("probe_features_before", Call::ProbeFeatures, &[]);
    probe(
        "optional_unknown_ignored",
        Call::Negotiate,
        &[0x0001_0000, cs, u64::MAX],
    );
    probe("probe_features_after", Call::ProbeFeatures, &[]);
    finish()
}

/// The values of `rax, rdi, rsi, r8, r9, r10, r11` after an `out` of `width` bytes to the
/// doorbell with these values before.
fn out_width(width: u8, regs: [u64; 7]) -> [u64; 7] {
    let (mut a, mut d, mut s, mut x8, mut x9, mut x10, mut x11) = (
        regs[0], regs[1], regs[2], regs[3], regs[4], regs[5], regs[6],
    );
    let port = doorbell();
    // SAFETY: a doorbell access of a width the binding does not define; the host must not
    // perform a call. Every convention register is an in/out operand, so whatever the host
    // does to them is observed.
    unsafe {
        match width {
            1 => asm!("out dx, al", inout("rax") a, inout("rdi") d, inout("rsi") s,
                      inout("r8") x8, inout("r9") x9, inout("r10") x10, inout("r11") x11,
                      in("dx") port, options(nostack)),
            _ => asm!("out dx, ax", inout("rax") a, inout("rdi") d, inout("rsi") s,
                      inout("r8") x8, inout("r9") x9, inout("r10") x10, inout("r11") x11,
                      in("dx") port, options(nostack)),
        }
    }
    [a, d, s, x8, x9, x10, x11]
}

/// `rax` after an `in` of `width` bytes from `port`, with `rax` = `before`.
fn in_width(port: u16, width: u8, before: u64) -> u64 {
    let mut a = before;
    // SAFETY: a read of a pvabi port; the host must not perform a call for it.
    unsafe {
        match width {
            1 => asm!("in al, dx", inout("rax") a, in("dx") port, options(nostack)),
            2 => asm!("in ax, dx", inout("rax") a, in("dx") port, options(nostack)),
            _ => asm!("in eax, dx", inout("rax") a, in("dx") port, options(nostack)),
        }
    }
    a
}

fn doorbell_width() -> ! {
    negotiate_all();
    let regs = |code: u64| [code, 0x42, 0x5151, 0x8888, 0x9999, 0x1010, 0x1111];
    for (name, width, code) in [
        ("out8_shutdown", 1u8, u64::from(Call::SystemShutdown.code())),
        ("out16_shutdown", 2, u64::from(Call::SystemShutdown.code())),
        (
            "out8_get_spec_version",
            1,
            u64::from(Call::GetSpecVersion.code()),
        ),
        ("out16_console", 2, u64::from(Call::ConsoleWriteRegs.code())),
    ] {
        let after = out_width(width, regs(code));
        let before = regs(code);
        // extra: a bitmask of the registers other than rax that changed.
        let mut changed = 0u64;
        for i in 1..7 {
            if after[i] != before[i] {
                changed |= 1 << i;
            }
        }
        report(name, after[0], after[1], after[6], changed);
    }
    let before = 0x1234_5678_9abc_def0u64;
    report("in8_doorbell", in_width(doorbell(), 1, before), 0, 0, 0);
    report("in16_doorbell", in_width(doorbell(), 2, before), 0, 0, 0);
    report("in32_doorbell", in_width(doorbell(), 4, before), 0, 0, 0);
    finish()
}

/// MULTICALL entries vCPU 1 rewrites while vCPU 0 submits them.
const RACE_ENTRIES: u64 = 32;
const RACE_ROUNDS: u64 = 256;
/// CONSOLE_WRITE_REGS length: valid, and out of range (> 32).
const RACE_GOOD_LEN: u8 = 8;
const RACE_BAD_LEN: u8 = 200;

static RACE_STOP: AtomicU64 = AtomicU64::new(0);
static RACE_RUNNING: AtomicU64 = AtomicU64::new(0);
static RACE_FLIPS: AtomicU64 = AtomicU64::new(0);
static RACE_DONE: AtomicU64 = AtomicU64::new(0);

/// Ring 3 on vCPU 1: flips the length byte of every entry until told to stop.
fn flipper(_: u64) -> u64 {
    let mc = page(P_MC);
    let mut flips = 0u64;
    let mut len = RACE_BAD_LEN;
    RACE_RUNNING.store(1, Ordering::Release);
    while RACE_STOP.load(Ordering::Acquire) == 0 {
        let mut i = 0;
        while i < RACE_ENTRIES {
            // SAFETY: the low byte of entry i's `length` argument inside the arena; the host
            // reads this array concurrently (the point of the test).
            unsafe { ((mc + i * MC_SIZE + MC_ARGS) as *mut u8).write_volatile(len) };
            i += 1;
        }
        len = if len == RACE_GOOD_LEN {
            RACE_BAD_LEN
        } else {
            RACE_GOOD_LEN
        };
        flips += 1;
    }
    flips
}

fn ap_flipper(_: u64) -> ! {
    let flips = run_at_cpl3(flipper, 0);
    RACE_FLIPS.store(flips, Ordering::Relaxed);
    RACE_DONE.store(1, Ordering::Release);
    let r = call(Call::VcpuStop, &[]);
    report("ap_stop_returned", r.st, 0, 0, 0);
    halt_forever()
}

fn double_fetch() -> ! {
    negotiate_all();
    let mc = page(P_MC);
    for i in 0..RACE_ENTRIES {
        mc_entry(
            mc,
            i,
            Call::ConsoleWriteRegs.code(),
            &[u64::from(RACE_GOOD_LEN), le(b"ABCDEFGH")],
        );
    }
    let ap = ap_launch(1, ap_flipper, 0).expect("vCPU 1 within MAX_VCPUS");
    let vs = page(P_BUF);
    start_state(vs, ap.rip, ap.rsp, ap.rdi, 0);
    probe("vcpu_start", Call::VcpuStart, &[1, vs]);
    report("flipper_running", spin_until(&RACE_RUNNING), 0, 0, 0);
    let (mut ok, mut bad, mut other, mut failed_calls) = (0u64, 0u64, 0u64, 0u64);
    for _ in 0..RACE_ROUNDS {
        let r = call(Call::Multicall, &[mc, RACE_ENTRIES, 0, 0]);
        if r.st != 0 {
            failed_calls += 1;
        }
        for i in 0..RACE_ENTRIES {
            match mc_status(mc, i) {
                0 => ok += 1,
                5 => bad += 1,
                _ => other += 1,
            }
        }
    }
    report("race_entry_counts", ok, bad, other, failed_calls);
    RACE_STOP.store(1, Ordering::Release);
    report(
        "flipper_done",
        spin_until(&RACE_DONE),
        RACE_FLIPS.load(Ordering::Relaxed),
        0,
        0,
    );
    finish()
}

/// xorshift64*.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn sweep(mem: u64) -> ! {
    let seed = param() | (param() << 32) | 1;
    let count = param();
    let mut rng = Rng(seed);
    // Scratch pages full of random bytes: blocks the random calls may point at.
    let scratch = page(P_SCRATCH);
    let scratch_len = (PAGES - P_SCRATCH) as u64 * PAGE;
    let mut off = 0;
    while off < scratch_len {
        ARENA.w64(scratch + off, rng.next());
        off += 8;
    }
    negotiate_all();
    for i in 0..count {
        let pick = rng.next();
        let mut code = match pick % 8 {
            // Codes in [0, 0x800), codes the table defines (so that random arguments reach
            // the handlers), and sometimes any 32-bit or 64-bit value.
            0 => rng.next() & 0xffff_ffff,
            1 => rng.next(),
            2..=4 => {
                let family = &FAMILIES[(rng.next() % FAMILIES.len() as u64) as usize];
                let d = &family.calls[(rng.next() % family.calls.len() as u64) as usize];
                u64::from(d.call.code())
            }
            _ => rng.next() % 0x800,
        };
        let mut a = [0u64; 6];
        for slot in a.iter_mut() {
            let r = rng.next();
            *slot = match r % 8 {
                0..=2 => rng.next(),
                3 => r >> 58,
                4 | 5 => scratch + (rng.next() % scratch_len),
                6 => (scratch + (rng.next() % scratch_len)) & !(PAGE - 1),
                _ => match r % 5 {
                    0 => mem - (r >> 60),
                    1 => u64::MAX - (r >> 60),
                    2 => mem,
                    3 => 0x10_0000,
                    _ => r >> 60,
                },
            };
        }
        // The calls that end the VM would end this test early, and a HALT without a timeout
        // waits for ever (legitimately): keep those out.
        let family = code & 0xffff_ff00;
        if family == 0x0600 && (code & 0xff) < 3 {
            code |= 0x80;
        }
        if code == u64::from(Call::VcpuHalt.code()) {
            a[0] = 1 + a[0] % 100_000;
        }
        let r = raw_call(code, a);
        report("sweep", r.st, code, a[0], i);
    }
    finish()
}

/// Ring 3: a user process of the guest rings the doorbell (the runtime's I/O bitmap lets it).
fn user_calls(_: u64) -> u64 {
    let r = call(Call::ConsoleWriteRegs, &[4, le(b"cpl3")]);
    report("cpl3_console_write_regs", r.st, r.r[0], 0, 0);
    let r = call(Call::SystemShutdown, &[0x33]);
    report("cpl3_system_shutdown", r.st, 0, 0, 0);
    0
}

fn cpl3_calls() -> ! {
    negotiate_all();
    run_at_cpl3(user_calls, 0);
    finish()
}

// ---------------------------------------------------------------------------------------

fn main(boot: &BootInfo) -> ! {
    // SAFETY: every call this guest makes passes addresses of memory it owns (its arena), of
    // nothing (outside RAM), or of pages it has given to the host; PORT_REPORT is the test
    // host's report port.
    if !unsafe { pvabi_guest_testkit::init(PORT_REPORT) } {
        halt_forever()
    }
    // SAFETY: the test host answers scenario reads.
    let scenario = unsafe { inl(PORT_SCENARIO) };
    let mem = boot.mem_bytes;
    match scenario {
        S_UNKNOWN => unknown_codes(),
        S_BEFORE_NEGOTIATE => before_negotiate(),
        S_NOT_GRANTED => not_granted(),
        S_RESERVED_REGS => reserved_regs(),
        S_RESERVED_BLOCKS => reserved_blocks(),
        S_OUTSIDE_RAM => outside_ram(mem),
        S_MISALIGNED => misaligned(),
        S_CROSSES_PAGE => crosses_page(),
        S_HOST_OWNED => host_owned(),
        S_PRECEDENCE => precedence(mem),
        S_NESTED_MULTICALL => nested_multicall(),
        S_DEFER_NOT_DEFERRABLE => defer_not_deferrable(),
        S_GARBAGE_RING => garbage_ring(),
        S_NEGOTIATE_TWICE => negotiate_twice(),
        S_NEGOTIATE_VERSION => negotiate_version(),
        S_NEGOTIATE_FEATURE => negotiate_feature(),
        S_DOORBELL_WIDTH => doorbell_width(),
        S_DOUBLE_FETCH => double_fetch(),
        S_SWEEP => sweep(mem),
        S_VCPU_START_STATE => vcpu_start_state(),
        S_CPL3 => cpl3_calls(),
        _ => {
            report("unknown_scenario", u64::from(scenario), 0, 0, 0);
            halt_forever()
        }
    }
}

pvabi_guest_rt::entry!(main);

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    // SAFETY: the test host treats bytes on this port as console output.
    unsafe { RawConsole::new(PORT_CONSOLE) }.report_panic("probe", info)
}
