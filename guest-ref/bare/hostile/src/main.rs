//! Hostile guest for `host-ref/tests/hostile_kvm.rs` and `host-ref/tests/load_faults.rs`.
//!
//! Where the probe guest (`../probe`) makes hand-picked bad calls, this one makes every
//! malformed input of a class, generated from the call table (`inputs.rs`, shared with the
//! host tests, which regenerate the list and check it input by input). It logs each input and
//! the host's raw answer into a buffer and hands the buffer to the test host over a port; it
//! never judges an answer. It also runs the double-fetch races (a second vCPU at CPL3
//! rewrites what the host is processing), the load scenario (every vCPU issues mixed calls in
//! every mode, counting what completed) and the fault scenarios (triple fault, spinning
//! vCPUs, an end in the middle of a batch or while a host-polled ring is busy).
//!
//! The test ports are in `protocol.rs`. Hot loops (flippers, spinners, the ring flood) run at
//! CPL3, where this host runs guest code natively; pvabi calls are made at CPL0.
#![no_std]
#![no_main]

use core::arch::asm;
use core::cell::UnsafeCell;
use core::mem::offset_of;
use core::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

use pvabi_guest::abi;
use pvabi_guest::abi::batch::{
    CompletionEntry, DeferredEntry, DeferredQueueHeader, MulticallEntry, RingHeader, RingSetup,
    SubmissionEntry, DEFERRED_ENTRIES_OFFSET, RING_ENTRIES_OFFSET, SQ_NEED_WAKEUP,
};
use pvabi_guest::abi::events::{Event, EventQueueHeader, EVENT_QUEUE_ENTRIES_OFFSET};
use pvabi_guest::abi::vcpu::VcpuStartState;
use pvabi_guest::{Call, Features};
use pvabi_guest_rt::cpu::pause;
use pvabi_guest_rt::port::{inl, RawConsole};
use pvabi_guest_rt::{ap_launch, current_vcpu, halt_forever, run_at_cpl3, BootInfo};
use pvabi_guest_testkit::{args, call, notify_port, probe, raw_call, report, Arena, Ret, PAGE};

mod protocol;
use protocol::*;

#[allow(dead_code)]
mod inputs {
    use super::abi;
    include!("inputs.rs");
}
use inputs::*;

/// Asks the test host to snapshot `len` bytes at `addr` under `tag`.
fn snapshot(tag: u64, addr: u64, len: u64) {
    // SAFETY: the test host copies guest memory; nothing here changes.
    unsafe {
        asm!("out dx, eax", in("dx") PORT_SNAP, in("eax") 0u32,
             in("rdi") addr, in("rsi") len, in("r8") tag,
             options(nostack, preserves_flags, readonly));
    }
}

/// Asks the test host to compare the memory of snapshot `tag` with what it holds now.
fn compare(tag: u64) {
    // SAFETY: as for `snapshot`.
    unsafe {
        asm!("out dx, eax", in("dx") PORT_CHECK, in("eax") 0u32, in("rdi") tag,
             options(nostack, preserves_flags, readonly));
    }
}

fn param() -> u64 {
    // SAFETY: the test host answers parameter reads.
    u64::from(unsafe { inl(PORT_PARAM) })
}

/// NEGOTIATE's registers: 1.x (minimum minor 0), CONSOLE and SYSTEM required, all optional.
const NEGOTIATE_ARGS: [u64; 4] = [
    0x0001_0000,
    Features::CONSOLE.bits() | Features::SYSTEM.bits(),
    u64::MAX,
    0,
];

fn negotiate() -> Ret {
    probe("negotiate", Call::Negotiate, &NEGOTIATE_ARGS)
}

/// A call that must succeed, then SYSTEM_SHUTDOWN(0).
fn finish() -> ! {
    flush_log();
    probe("alive", Call::GetSpecVersion, &[]);
    let r = call(Call::SystemShutdown, &[0]);
    report("shutdown_returned", r.st, 0, 0, 0);
    halt_forever()
}

// ---------------------------------------------------------------------------------------
// The input log: records, handed to the test host when full and at the end

const LOG_RECS: usize = 256;

#[repr(C, align(64))]
struct Log(UnsafeCell<[Rec; LOG_RECS]>);

// SAFETY: only vCPU 0 logs (the other vCPUs report counts), so accesses never race; the test
// host reads the buffer while vCPU 0 is stopped in the `out` that hands it over.
unsafe impl Sync for Log {}

static LOG: Log = Log(UnsafeCell::new(
    [Rec {
        class: 0,
        sub: 0,
        code: 0,
        args: [0; 6],
        st: 0,
        r: [0; 2],
    }; LOG_RECS],
));
static LOG_LEN: AtomicU64 = AtomicU64::new(0);

fn flush_log() {
    let n = LOG_LEN.swap(0, Ordering::Relaxed);
    if n == 0 {
        return;
    }
    // SAFETY: the test host reads `n` records from the buffer.
    unsafe {
        asm!("out dx, eax", in("dx") PORT_LOG, in("eax") 0u32,
             in("rdi") LOG.0.get() as u64, in("rsi") n,
             options(nostack, preserves_flags, readonly));
    }
}

fn log(rec: Rec) {
    let n = LOG_LEN.load(Ordering::Relaxed) as usize;
    // SAFETY: `n < LOG_RECS` (flushed at the limit below); only vCPU 0 logs.
    unsafe { (*LOG.0.get())[n] = rec };
    LOG_LEN.store(n as u64 + 1, Ordering::Relaxed);
    if n + 1 == LOG_RECS {
        flush_log();
    }
}

/// Makes the call `code` with `a` and logs it under `class`/`sub`.
fn try_call(class: u32, sub: u32, code: u64, a: [u64; 6]) -> Ret {
    let r = raw_call(code, a);
    log(Rec {
        class,
        sub,
        code,
        args: a,
        st: r.st,
        r: [r.r[0], r.r[1]],
    });
    r
}

// ---------------------------------------------------------------------------------------
// Memory the guest owns: an arena of pages (identity-mapped, so address = guest-physical)

const PAGES: usize = 64;

static ARENA: Arena<PAGES> = Arena::new();

// Pages of the classes scenario (vCPU 0) ...
const P_TIME: usize = 0;
const P_EVQ: usize = 1;
const P_DQ: usize = 2;
const P_SQ: usize = 3;
const P_CQ: usize = 4;
const P_SCRATCH: usize = 5; // and 6: two adjacent guest-owned pages
const P_MC: usize = 7;
const P_BLOCK: usize = 8;
// ... and, from here, five pages per vCPU for the load scenario (queue, deferred queue, SQ,
// CQ, MULTICALL array).
const P_PER_VCPU: usize = 10;
const PER_VCPU: usize = 5;

fn page(i: usize) -> u64 {
    assert!(i < PAGES, "arena page");
    ARENA.page(i)
}

fn vpage(vcpu: u32, k: usize) -> u64 {
    page(P_PER_VCPU + vcpu as usize * PER_VCPU + k)
}

fn zero(addr: u64, len: u64) {
    let mut i = 0;
    while i < len {
        ARENA.w64(addr + i, 0);
        i += 8;
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
const DE_SIZE: u64 = core::mem::size_of::<DeferredEntry>() as u64;
const DE_CALL: u64 = offset_of!(DeferredEntry, call) as u64;
const DE_FLAGS: u64 = offset_of!(DeferredEntry, flags) as u64;
const DE_ARGS: u64 = offset_of!(DeferredEntry, args) as u64;
const DQ_HEAD: u64 = offset_of!(DeferredQueueHeader, head) as u64;
const DQ_TAIL: u64 = offset_of!(DeferredQueueHeader, tail) as u64;
const DQ_ERRORS: u64 = offset_of!(DeferredQueueHeader, error_count) as u64;
const DQ_CAP: u32 = 64;
const RH_HEAD: u64 = offset_of!(RingHeader, head) as u64;
const RH_TAIL: u64 = offset_of!(RingHeader, tail) as u64;
const RH_FLAGS: u64 = offset_of!(RingHeader, flags) as u64;
const RH_DROPPED: u64 = offset_of!(RingHeader, dropped) as u64;
const SQE_SIZE: u64 = core::mem::size_of::<SubmissionEntry>() as u64;
const SQE_CALL: u64 = offset_of!(SubmissionEntry, call) as u64;
const SQE_FLAGS: u64 = offset_of!(SubmissionEntry, flags) as u64;
const SQE_ARGS: u64 = offset_of!(SubmissionEntry, args) as u64;
const CQE_SIZE: u64 = core::mem::size_of::<CompletionEntry>() as u64;
const CQE_STATUS: u64 = offset_of!(CompletionEntry, status) as u64;
const EQ_HEAD: u64 = offset_of!(EventQueueHeader, head) as u64;
const EQ_TAIL: u64 = offset_of!(EventQueueHeader, tail) as u64;
const EQ_DROPPED: u64 = offset_of!(EventQueueHeader, dropped) as u64;
const EV_SIZE: u64 = core::mem::size_of::<Event>() as u64;
const EV_KIND: u64 = offset_of!(Event, kind) as u64;
const EV_SOURCE: u64 = offset_of!(Event, source) as u64;
const EV_DATA: u64 = offset_of!(Event, data) as u64;
const EQ_CAP: u32 = 128;
const VS_RIP: u64 = offset_of!(VcpuStartState, rip) as u64;
const VS_RSP: u64 = offset_of!(VcpuStartState, rsp) as u64;
const VS_ARG: u64 = offset_of!(VcpuStartState, arg) as u64;
const RS_SQ: u64 = offset_of!(RingSetup, sq_page) as u64;
const RS_CQ: u64 = offset_of!(RingSetup, cq_page) as u64;
const RS_MODE: u64 = offset_of!(RingSetup, mode) as u64;
const SQ_CAP: u32 = 32;
const CQ_CAP: u32 = 64;
const NOT_ALLOWED_HERE: u64 = abi::Status::NotAllowedHere as u64;
const VECTOR: u64 = 0x40;
const MASK_ALL: u64 = abi::events::EVENT_MASK_VALID;
const KIND_USER: u32 = abi::events::EventKind::User as u32;

fn mc_entry(base: u64, i: u64, code: u32, a: &[u64]) {
    let e = base + i * MC_SIZE;
    zero(e, MC_SIZE);
    ARENA.w32(e + MC_CALL, code);
    for (k, v) in args(a).iter().enumerate() {
        ARENA.w64(e + MC_ARGS + 8 * k as u64, *v);
    }
}

fn mc_status(base: u64, i: u64) -> u32 {
    ARENA.r32(base + i * MC_SIZE + MC_STATUS)
}

fn de_addr(q: u64, index: u32) -> u64 {
    q + DEFERRED_ENTRIES_OFFSET + u64::from(index % DQ_CAP) * DE_SIZE
}

fn dq_entry(q: u64, index: u32, code: u32, a: [u64; 3], flags: u32) {
    let e = de_addr(q, index);
    ARENA.w32(e + DE_CALL, code);
    ARENA.w32(e + DE_FLAGS, flags);
    for (k, v) in a.iter().enumerate() {
        ARENA.w64(e + DE_ARGS + 8 * k as u64, *v);
    }
}

fn sqe_addr(sq: u64, index: u32) -> u64 {
    sq + RING_ENTRIES_OFFSET + u64::from(index % SQ_CAP) * SQE_SIZE
}

fn sqe(sq: u64, index: u32, user_data: u64, code: u32, a: &[u64], flags: u32) {
    let e = sqe_addr(sq, index);
    ARENA.w64(e, user_data);
    ARENA.w32(e + SQE_CALL, code);
    ARENA.w32(e + SQE_FLAGS, flags);
    for (k, v) in args(a).iter().enumerate() {
        ARENA.w64(e + SQE_ARGS + 8 * k as u64, *v);
    }
}

fn cqe_addr(cq: u64, index: u32) -> u64 {
    cq + RING_ENTRIES_OFFSET + u64::from(index % CQ_CAP) * CQE_SIZE
}

fn ring_setup_block(at: u64, sq: u64, cq: u64, mode: u32) {
    zero(at, 32);
    ARENA.w64(at + RS_SQ, sq);
    ARENA.w64(at + RS_CQ, cq);
    ARENA.w32(at + RS_MODE, mode);
}

/// Tells the host to look at this vCPU's ring (the value written is the vCPU's index).
fn ring_notify() {
    let port = notify_port();
    let vcpu = current_vcpu();
    // SAFETY: a write to the ring-notify port: the host looks at this vCPU's ring.
    unsafe { asm!("out dx, eax", in("dx") port, in("eax") vcpu, options(nostack)) };
}

/// Starts vCPU `vcpu` running `entry(arg)`, with a start-state block at `at`.
fn start_vcpu(vcpu: u32, entry: fn(u64) -> !, arg: u64, at: u64) -> Ret {
    let ap = ap_launch(vcpu, entry, arg).expect("vCPU within MAX_VCPUS");
    zero(at, 64);
    ARENA.w64(at + VS_RIP, ap.rip);
    ARENA.w64(at + VS_RSP, ap.rsp);
    ARENA.w64(at + VS_ARG, ap.rdi);
    call(Call::VcpuStart, &[u64::from(vcpu), at])
}

/// Ends this (secondary) vCPU.
fn stop() -> ! {
    let r = call(Call::VcpuStop, &[]);
    report("ap_stop_returned", r.st, 0, 0, 0);
    halt_forever()
}

/// Waits (yielding to the host) until `flag` reaches `value`.
fn wait_for(flag: &AtomicU64, value: u64) {
    while flag.load(Ordering::Acquire) < value {
        call(Call::VcpuYield, &[]);
    }
}

// ---------------------------------------------------------------------------------------
// S_CLASSES: every input class, one after the other

fn classes(mem: u64) -> ! {
    let n = negotiate();
    report("granted", n.r[1], 0, 0, 0);
    // The host-owned pages: time page, event queue, deferred queue, ring pair.
    let (time, evq, dq, sq, cq) = (
        page(P_TIME),
        page(P_EVQ),
        page(P_DQ),
        page(P_SQ),
        page(P_CQ),
    );
    let scratch = page(P_SCRATCH);
    report("arena", scratch, time, evq, dq);
    report("arena_rings", sq, cq, 0, 0);

    let mut unused = |code| {
        try_call(C_UNUSED_CODE, 0, code, [1, 2, 3, 4, 5, 6]);
    };
    for_each_unused_code(&mut unused);
    for_each_reserved_arg(1, &mut |d, i, a| {
        try_call(C_RESERVED_ARG, i as u32, u64::from(d.call.code()), a);
    });
    for_each_outside_ram(mem, &mut |d, a| {
        try_call(C_OUTSIDE_RAM, 0, u64::from(d.call.code()), a);
    });
    for_each_crossing(scratch, &mut |d, a| {
        try_call(C_CROSSES_PAGE, 0, u64::from(d.call.code()), a);
    });
    for_each_wrap(&mut |d, a| {
        try_call(C_WRAPS, 0, u64::from(d.call.code()), a);
    });
    flush_log();

    probe("time_set_page", Call::TimeSetPage, &[time]);
    probe("events_set_queue", Call::EventsSetQueue, &[evq, VECTOR]);
    probe("events_set_mask", Call::EventsSetMask, &[MASK_ALL]);
    probe("defer_set_queue", Call::DeferSetQueue, &[dq, 0]);
    let rs = page(P_BLOCK);
    ring_setup_block(rs, sq, cq, 0);
    probe("ring_setup", Call::RingSetup, &[rs]);
    // The host owns these now; it must not change the queue and ring pages while the guest
    // only points blocks at them (the time page it updates on its own).
    for (tag, p) in [(1, evq), (2, dq), (3, sq), (4, cq)] {
        snapshot(tag, p, PAGE);
    }
    for_each_host_owned(&[time, evq, dq, sq, cq], &mut |d, a| {
        try_call(C_HOST_OWNED, 0, u64::from(d.call.code()), a);
    });
    flush_log();
    for tag in 1..=4 {
        compare(tag);
    }

    block_fields(scratch);
    entry_fields(dq, sq, cq);
    contexts(dq, sq, cq);
    ring_indices(sq, cq);
    dq_indices(dq);
    event_acks(evq);
    finish()
}

/// C_BLOCK_FIELD: a reserved bit in a structure block that is valid otherwise. (The vCPU
/// already has rings and VCPU_START targets the running vCPU 0, so without the bad field the
/// calls would fail at step 11 with INVALID_STATE, after the contents check of step 10.)
fn block_fields(scratch: u64) {
    let blk = page(P_BLOCK);
    for_each_block_field(&mut |d, offset, width, value| {
        let a = match d.call {
            Call::VcpuStart => {
                zero(blk, 64);
                ARENA.w64(blk + VS_RIP, 0x20_0000);
                ARENA.w64(blk + VS_RSP, 0x30_0000);
                [0, blk, 0, 0, 0, 0]
            }
            _ => {
                ring_setup_block(blk, scratch, scratch + PAGE, 0);
                [blk, 0, 0, 0, 0, 0]
            }
        };
        let at = blk + u64::from(offset);
        if width == 8 {
            ARENA.w64(at, value);
        } else {
            ARENA.w32(at, value as u32);
        }
        let r = raw_call(u64::from(d.call.code()), a);
        log(Rec {
            class: C_BLOCK_FIELD,
            sub: offset,
            code: u64::from(d.call.code()),
            args: a,
            st: r.st,
            r: [value, u64::from(width)],
        });
    });
    flush_log();
}

/// C_ENTRY_FIELD: a reserved bit in each batch entry field; every entry is a valid
/// CONSOLE_WRITE_REGS of "X" (so a host that ignored the field would write it).
fn entry_fields(dq: u64, sq: u64, cq: u64) {
    let x = [1, le(b"X")];
    let console = Call::ConsoleWriteRegs.code();
    let mc = page(P_MC);
    for (field, off) in [(F_MC_FLAGS, MC_FLAGS), (F_MC_RESERVED, MC_RESERVED)] {
        for bit in 0..32u64 {
            mc_entry(mc, bit, console, &x);
            ARENA.w32(mc + bit * MC_SIZE + off, 1 << bit);
        }
        let r = call(Call::Multicall, &[mc, 32, 0, 0]);
        for bit in 0..32u64 {
            log(Rec {
                class: C_ENTRY_FIELD,
                sub: field,
                code: bit,
                args: [0; 6],
                st: u64::from(mc_status(mc, bit)),
                r: [r.st, r.r[1]],
            });
        }
    }
    // One deferred entry per flush: DEFER_FLUSH says how many ran and failed.
    for bit in 0..32u32 {
        let tail = ARENA.r32(dq + DQ_TAIL);
        let errors = ARENA.r32(dq + DQ_ERRORS);
        dq_entry(
            dq,
            tail,
            Call::EventsSetMask.code(),
            [MASK_ALL, 0, 0],
            1 << bit,
        );
        ARENA.w32(dq + DQ_TAIL, tail.wrapping_add(1));
        let r = call(Call::DeferFlush, &[]);
        log(Rec {
            class: C_ENTRY_FIELD,
            sub: F_DE_FLAGS,
            code: u64::from(bit),
            args: [r.r[0], r.r[1], 0, 0, 0, 0],
            st: r.st,
            r: [
                u64::from(ARENA.r32(dq + DQ_ERRORS).wrapping_sub(errors)),
                u64::from(ARENA.r32(dq + DQ_HEAD).wrapping_sub(tail)),
            ],
        });
    }
    // 32 submissions at once (the SQ's capacity), then their completions.
    let head = ARENA.r32(sq + RH_TAIL);
    for bit in 0..32u32 {
        sqe(
            sq,
            head.wrapping_add(bit),
            0x100 + u64::from(bit),
            console,
            &x,
            1 << bit,
        );
    }
    ARENA.w32(sq + RH_TAIL, head.wrapping_add(32));
    let r = call(Call::RingEnter, &[]);
    report("entry_fields_ring_enter", r.st, r.r[0], 0, 0);
    let cq_head = ARENA.r32(cq + RH_HEAD);
    for bit in 0..32u32 {
        let e = cqe_addr(cq, cq_head.wrapping_add(bit));
        log(Rec {
            class: C_ENTRY_FIELD,
            sub: F_SQE_FLAGS,
            code: u64::from(bit),
            args: [0; 6],
            st: u64::from(ARENA.r32(e + CQE_STATUS)),
            r: [ARENA.r64(e), 0],
        });
    }
    ARENA.w32(cq + RH_HEAD, ARENA.r32(cq + RH_TAIL));
    flush_log();
}

/// C_CONTEXT: calls where they are not allowed, one per batch, submission or flush.
fn contexts(dq: u64, sq: u64, cq: u64) {
    let mc = page(P_MC);
    for_each_context(&mut |d, ctx| {
        let a = base_args(d);
        let code = d.call.code();
        let (st, r0, r1) = match ctx {
            CTX_MULTICALL => {
                mc_entry(mc, 0, code, &a);
                let r = call(Call::Multicall, &[mc, 1, 0, 0]);
                (u64::from(mc_status(mc, 0)), r.st, r.r[1])
            }
            CTX_RING => {
                let s = ARENA.r32(sq + RH_TAIL);
                sqe(sq, s, 0x300, code, &a, 0);
                ARENA.w32(sq + RH_TAIL, s.wrapping_add(1));
                let r = call(Call::RingEnter, &[]);
                let e = cqe_addr(cq, ARENA.r32(cq + RH_HEAD));
                let st = u64::from(ARENA.r32(e + CQE_STATUS));
                ARENA.w32(cq + RH_HEAD, ARENA.r32(cq + RH_TAIL));
                (st, r.st, r.r[0])
            }
            _ => {
                let t = ARENA.r32(dq + DQ_TAIL);
                dq_entry(dq, t, code, [a[0], a[1], a[2]], 0);
                ARENA.w32(dq + DQ_TAIL, t.wrapping_add(1));
                let r = call(Call::DeferFlush, &[]);
                (r.r[1], r.st, r.r[0])
            }
        };
        log(Rec {
            class: C_CONTEXT,
            sub: ctx,
            code: u64::from(code),
            args: a,
            st,
            r: [r0, r1],
        });
    });
    flush_log();
}

/// C_SQ_INDEX and C_CQ_INDEX: ring indices beyond the ring.
fn ring_indices(sq: u64, cq: u64) {
    for diff in BAD_OCCUPANCY {
        let head = ARENA.r32(sq + RH_HEAD);
        let dropped = ARENA.r32(sq + RH_DROPPED);
        let tail = head.wrapping_add(diff);
        ARENA.w32(sq + RH_TAIL, tail);
        let r = call(Call::RingEnter, &[]);
        log(Rec {
            class: C_SQ_INDEX,
            sub: 0,
            code: u64::from(diff),
            args: [0; 6],
            st: r.st,
            r: [
                r.r[0],
                u64::from(ARENA.r32(sq + RH_DROPPED).wrapping_sub(dropped)) << 32
                    | u64::from(ARENA.r32(sq + RH_HEAD) == tail),
            ],
        });
    }
    // A completion ring whose head is ahead of its tail has no room: one valid submission
    // waits; with the head put back it runs.
    let console = Call::ConsoleWriteRegs.code();
    for ahead in CQ_HEAD_AHEAD {
        let tail = ARENA.r32(cq + RH_TAIL);
        ARENA.w32(cq + RH_HEAD, tail.wrapping_add(ahead));
        let s = ARENA.r32(sq + RH_TAIL);
        sqe(sq, s, 0x200, console, &[1, le(b"c")], 0);
        ARENA.w32(sq + RH_TAIL, s.wrapping_add(1));
        let stuck = call(Call::RingEnter, &[]);
        let cq_tail_stuck = ARENA.r32(cq + RH_TAIL);
        ARENA.w32(cq + RH_HEAD, tail);
        let ran = call(Call::RingEnter, &[]);
        let e = cqe_addr(cq, tail);
        log(Rec {
            class: C_CQ_INDEX,
            sub: 0,
            code: u64::from(ahead),
            args: [
                stuck.st,
                stuck.r[0],
                u64::from(cq_tail_stuck.wrapping_sub(tail)),
                ran.st,
                ran.r[0],
                u64::from(ARENA.r32(sq + RH_HEAD).wrapping_sub(s)),
            ],
            st: u64::from(ARENA.r32(e + CQE_STATUS)),
            r: [
                ARENA.r64(e),
                u64::from(ARENA.r32(cq + RH_TAIL).wrapping_sub(tail)),
            ],
        });
        ARENA.w32(cq + RH_HEAD, ARENA.r32(cq + RH_TAIL));
    }
    flush_log();
}

/// C_DQ_INDEX: a deferred queue tail beyond head + capacity.
fn dq_indices(dq: u64) {
    for diff in BAD_OCCUPANCY {
        let head = ARENA.r32(dq + DQ_HEAD);
        let errors = ARENA.r32(dq + DQ_ERRORS);
        let tail = head.wrapping_add(diff);
        ARENA.w32(dq + DQ_TAIL, tail);
        let r = call(Call::DeferFlush, &[]);
        log(Rec {
            class: C_DQ_INDEX,
            sub: 0,
            code: u64::from(diff),
            args: [r.r[0], r.r[1], 0, 0, 0, 0],
            st: r.st,
            r: [
                u64::from(ARENA.r32(dq + DQ_ERRORS).wrapping_sub(errors)),
                u64::from(ARENA.r32(dq + DQ_HEAD) == tail),
            ],
        });
    }
    flush_log();
}

/// C_EVENT_ACK: the guest acknowledges an event more than once (its `head` passes `tail`):
/// the host must treat the queue as full, drop what it would post and leave the entries
/// alone; with `head` put back, events arrive again.
fn event_acks(evq: u64) {
    let entries = evq + EVENT_QUEUE_ENTRIES_OFFSET;
    for (k, extra) in EXTRA_ACKS.into_iter().enumerate() {
        let tail = ARENA.r32(evq + EQ_TAIL);
        ARENA.w32(evq + EQ_HEAD, tail);
        call(Call::EventsSend, &[0, 0xA000 + k as u64]);
        // Consume it once (correct) ...
        let t1 = tail.wrapping_add(1);
        ARENA.w32(evq + EQ_HEAD, t1);
        // ... and again, `extra` times.
        ARENA.w32(evq + EQ_HEAD, t1.wrapping_add(extra));
        let dropped = ARENA.r32(evq + EQ_DROPPED);
        snapshot(10 + k as u64, entries, u64::from(EQ_CAP) * EV_SIZE);
        let mut worst = 0;
        for i in 0..3 {
            let r = call(Call::EventsSend, &[0, 0xB000 + i]);
            worst = worst.max(r.st);
        }
        let tail_full = ARENA.r32(evq + EQ_TAIL);
        let dropped_full = ARENA.r32(evq + EQ_DROPPED);
        compare(10 + k as u64);
        // Put head back: the next event is appended.
        ARENA.w32(evq + EQ_HEAD, t1);
        let again = call(Call::EventsSend, &[0, 0xC000 + k as u64]);
        let e = entries + u64::from(t1 % EQ_CAP) * EV_SIZE;
        log(Rec {
            class: C_EVENT_ACK,
            sub: k as u32,
            code: u64::from(extra),
            args: [
                worst,
                u64::from(tail_full.wrapping_sub(t1)),
                u64::from(dropped_full.wrapping_sub(dropped)),
                again.st,
                u64::from(ARENA.r32(evq + EQ_TAIL).wrapping_sub(t1)),
                u64::from(ARENA.r32(e + EV_KIND)) << 32 | u64::from(ARENA.r32(e + EV_SOURCE)),
            ],
            st: ARENA.r64(e + EV_DATA),
            r: [0, 0],
        });
        ARENA.w32(evq + EQ_HEAD, ARENA.r32(evq + EQ_TAIL));
    }
    flush_log();
}

// ---------------------------------------------------------------------------------------
// S_NEGOTIATE_RACE

const NEGOTIATE_ROUNDS: u32 = 12;
static RACE_GO: AtomicU64 = AtomicU64::new(0);
static RACE_DONE: AtomicU64 = AtomicU64::new(0);
/// vCPU 1's answers: NEGOTIATE_ROUNDS x NEGOTIATE_VARIANTS statuses, one byte each.
static AP_STATUSES: [AtomicU32; (NEGOTIATE_ROUNDS * NEGOTIATE_VARIANTS) as usize] =
    [const { AtomicU32::new(0) }; (NEGOTIATE_ROUNDS * NEGOTIATE_VARIANTS) as usize];

fn negotiate_rounds(ap: bool) {
    for round in 0..NEGOTIATE_ROUNDS {
        for v in 0..NEGOTIATE_VARIANTS {
            let a = negotiate_variant(v, NEGOTIATE_ARGS);
            let r = raw_call(u64::from(Call::Negotiate.code()), a);
            if ap {
                AP_STATUSES[(round * NEGOTIATE_VARIANTS + v) as usize]
                    .store(r.st as u32, Ordering::Relaxed);
            } else {
                log(Rec {
                    class: C_NEGOTIATE,
                    sub: v,
                    code: 0,
                    args: a,
                    st: r.st,
                    r: [0, 0],
                });
            }
        }
    }
}

fn ap_negotiate(_: u64) -> ! {
    RACE_GO.store(1, Ordering::Release);
    negotiate_rounds(true);
    RACE_DONE.store(1, Ordering::Release);
    stop()
}

fn negotiate_race() -> ! {
    let first = negotiate();
    let p = call(Call::ProbeFeatures, &[]);
    report("probe_features_first", p.r[0], p.r[1], 0, 0);
    let r = start_vcpu(1, ap_negotiate, 0, page(P_BLOCK));
    report("start_ap", r.st, 0, 0, 0);
    wait_for(&RACE_GO, 1);
    negotiate_rounds(false);
    wait_for(&RACE_DONE, 1);
    for round in 0..NEGOTIATE_ROUNDS {
        for v in 0..NEGOTIATE_VARIANTS {
            let st = AP_STATUSES[(round * NEGOTIATE_VARIANTS + v) as usize].load(Ordering::Relaxed);
            log(Rec {
                class: C_NEGOTIATE,
                sub: v,
                code: 1,
                args: negotiate_variant(v, NEGOTIATE_ARGS),
                st: u64::from(st),
                r: [0, 0],
            });
        }
    }
    let p = call(Call::ProbeFeatures, &[]);
    report("probe_features_after", p.r[1], first.r[1], 0, 0);
    let v = call(Call::GetSpecVersion, &[]);
    report("spec_version_after", v.st, v.r[0], v.r[2], first.r[0]);
    finish()
}

// ---------------------------------------------------------------------------------------
// Double fetch: vCPU 1 flips a u32 at `FLIP_ADDR + i * FLIP_STRIDE` (i < FLIP_COUNT) between
// FLIP_A and FLIP_B at CPL3 while vCPU 0 has the host process it.

static FLIP_ADDR: AtomicU64 = AtomicU64::new(0);
static FLIP_STRIDE: AtomicU64 = AtomicU64::new(0);
static FLIP_COUNT: AtomicU64 = AtomicU64::new(0);
static FLIP_A: AtomicU64 = AtomicU64::new(0);
static FLIP_B: AtomicU64 = AtomicU64::new(0);
static FLIP_STOP: AtomicU64 = AtomicU64::new(0);
static FLIP_RUNNING: AtomicU64 = AtomicU64::new(0);
static FLIPS: AtomicU64 = AtomicU64::new(0);
static FLIP_DONE: AtomicU64 = AtomicU64::new(0);

fn flipper(_: u64) -> u64 {
    let addr = FLIP_ADDR.load(Ordering::Relaxed);
    let stride = FLIP_STRIDE.load(Ordering::Relaxed);
    let count = FLIP_COUNT.load(Ordering::Relaxed);
    let (a, b) = (
        FLIP_A.load(Ordering::Relaxed) as u32,
        FLIP_B.load(Ordering::Relaxed) as u32,
    );
    let mut flips = 0u64;
    let mut v = b;
    loop {
        for i in 0..count {
            // SAFETY: a u32 field inside the arena (set up by vCPU 0); the host reads it
            // concurrently, which is the point of the test.
            unsafe { ((addr + i * stride) as *mut u32).write_volatile(v) };
        }
        v = if v == a { b } else { a };
        flips += 1;
        // vCPU 0 starts once a first pass is done, so every race has at least one flip.
        FLIP_RUNNING.store(1, Ordering::Release);
        if FLIP_STOP.load(Ordering::Acquire) != 0 {
            return flips;
        }
    }
}

fn ap_flipper(_: u64) -> ! {
    let flips = run_at_cpl3(flipper, 0);
    FLIPS.store(flips, Ordering::Relaxed);
    FLIP_DONE.store(1, Ordering::Release);
    stop()
}

fn start_flipper(addr: u64, stride: u64, count: u64, a: u32, b: u32) {
    start_flipper_on(1, addr, stride, count, a, b);
}

fn start_flipper_on(vcpu: u32, addr: u64, stride: u64, count: u64, a: u32, b: u32) {
    FLIP_ADDR.store(addr, Ordering::Relaxed);
    FLIP_STRIDE.store(stride, Ordering::Relaxed);
    FLIP_COUNT.store(count, Ordering::Relaxed);
    FLIP_A.store(u64::from(a), Ordering::Relaxed);
    FLIP_B.store(u64::from(b), Ordering::Relaxed);
    let r = start_vcpu(vcpu, ap_flipper, 0, page(P_BLOCK + 1));
    report("vcpu_start", r.st, 0, 0, 0);
    wait_for(&FLIP_RUNNING, 1);
}

fn stop_flipper() {
    FLIP_STOP.store(1, Ordering::Release);
    wait_for(&FLIP_DONE, 1);
    report("flips", FLIPS.load(Ordering::Relaxed), 0, 0, 0);
}

const DF_ROUNDS: u32 = 48;
const SHUTDOWN: u32 = Call::SystemShutdown.code();
const CONSOLE: u32 = Call::ConsoleWriteRegs.code();
/// One register serves both versions: CONSOLE_WRITE_REGS's length 8 and SYSTEM_SHUTDOWN's
/// code 8 (a host that ran the shutdown would end the VM with code 8).
const DF_ARGS: [u64; 2] = [8, 0x4847_4645_4443_4241]; // "ABCDEFGH"

/// Counts of a race: entries that succeeded, were refused as not allowed here, or other.
fn report_race(ok: u64, refused: u64, other: u64, failed_calls: u64) {
    report("race", ok, refused, other, failed_calls);
}

fn df_multicall() -> ! {
    negotiate();
    let mc = page(P_MC);
    for i in 0..32 {
        mc_entry(mc, i, CONSOLE, &DF_ARGS);
    }
    start_flipper(mc + MC_CALL, MC_SIZE, 32, CONSOLE, SHUTDOWN);
    let (mut ok, mut refused, mut other, mut failed) = (0, 0, 0, 0);
    for _ in 0..DF_ROUNDS {
        let r = call(Call::Multicall, &[mc, 32, 0, 0]);
        if r.st != 0 || r.r[1] != 32 {
            failed += 1;
        }
        for i in 0..32 {
            match u64::from(mc_status(mc, i)) {
                0 => ok += 1,
                NOT_ALLOWED_HERE => refused += 1,
                _ => other += 1,
            }
        }
    }
    stop_flipper();
    report_race(ok, refused, other, failed);
    finish()
}

fn df_defer() -> ! {
    negotiate();
    let dq = page(P_DQ);
    probe("defer_set_queue", Call::DeferSetQueue, &[dq, 0]);
    for i in 0..DQ_CAP {
        // EVENTS_SET_MASK(8) or SYSTEM_SHUTDOWN(8).
        dq_entry(dq, i, Call::EventsSetMask.code(), [8, 0, 0], 0);
    }
    start_flipper(
        dq + DEFERRED_ENTRIES_OFFSET + DE_CALL,
        DE_SIZE,
        64,
        Call::EventsSetMask.code(),
        SHUTDOWN,
    );
    let (mut ok, mut refused, mut failed) = (0, 0, 0);
    for _ in 0..DF_ROUNDS {
        let tail = ARENA.r32(dq + DQ_TAIL);
        ARENA.w32(dq + DQ_TAIL, tail.wrapping_add(16));
        let r = call(Call::DeferFlush, &[]);
        if r.st != 0 || r.r[0] != 16 {
            failed += 1;
        }
        ok += r.r[0] - r.r[1];
        refused += r.r[1];
    }
    stop_flipper();
    report_race(ok, refused, 0, failed);
    finish()
}

fn df_ring() -> ! {
    negotiate();
    let (sq, cq) = (page(P_SQ), page(P_CQ));
    let rs = page(P_BLOCK);
    ring_setup_block(rs, sq, cq, 0);
    probe("ring_setup", Call::RingSetup, &[rs]);
    for i in 0..SQ_CAP {
        sqe(sq, i, u64::from(i), CONSOLE, &DF_ARGS, 0);
    }
    start_flipper(
        sq + RING_ENTRIES_OFFSET + SQE_CALL,
        SQE_SIZE,
        32,
        CONSOLE,
        SHUTDOWN,
    );
    let (mut ok, mut refused, mut other, mut failed) = (0, 0, 0, 0);
    for _ in 0..DF_ROUNDS {
        let tail = ARENA.r32(sq + RH_TAIL);
        ARENA.w32(sq + RH_TAIL, tail.wrapping_add(16));
        let r = call(Call::RingEnter, &[]);
        if r.st != 0 || r.r[0] != 16 {
            failed += 1;
        }
        let head = ARENA.r32(cq + RH_HEAD);
        let ctail = ARENA.r32(cq + RH_TAIL);
        let mut i = head;
        while i != ctail {
            let e = cqe_addr(cq, i);
            let user = ARENA.r64(e);
            match u64::from(ARENA.r32(e + CQE_STATUS)) {
                0 => ok += 1,
                NOT_ALLOWED_HERE => refused += 1,
                _ => other += 1,
            }
            if user != u64::from(i % SQ_CAP) {
                other += 1 << 32;
            }
            i = i.wrapping_add(1);
        }
        ARENA.w32(cq + RH_HEAD, ctail);
    }
    stop_flipper();
    report_race(ok, refused, other, failed);
    finish()
}

/// The RING_SETUP block's `sq_page` flips between a valid page and the completion page (the
/// same page twice: INVALID_PARAMETER). On SUCCESS the ring must work with the valid SQ.
fn df_setup() -> ! {
    negotiate();
    let (sq, cq) = (page(P_SQ), page(P_CQ));
    let rs = page(P_BLOCK);
    let off = page(P_BLOCK + 2);
    ring_setup_block(rs, sq, cq, 0);
    ring_setup_block(off, 0, 0, 0);
    start_flipper(rs + RS_SQ, 8, 1, sq as u32, cq as u32);
    let (mut ok, mut refused, mut other, mut failed) = (0, 0, 0, 0);
    for _ in 0..DF_ROUNDS * 4 {
        let r = call(Call::RingSetup, &[rs]);
        match r.st {
            0 => {
                ok += 1;
                // The ring the host registered: a submission in `sq` completes in `cq`.
                sqe(sq, 0, 0x5e7, CONSOLE, &[1, le(b"R")], 0);
                ARENA.w32(sq + RH_TAIL, 1);
                let e = call(Call::RingEnter, &[]);
                if e.st != 0
                    || e.r[0] != 1
                    || ARENA.r32(cq + RH_TAIL) != 1
                    || ARENA.r64(cqe_addr(cq, 0)) != 0x5e7
                    || ARENA.r32(cqe_addr(cq, 0) + CQE_STATUS) != 0
                {
                    failed += 1;
                }
                if call(Call::RingSetup, &[off]).st != 0 {
                    failed += 1;
                }
            }
            5 => refused += 1,
            _ => other += 1,
        }
    }
    stop_flipper();
    report_race(ok, refused, other, failed);
    finish()
}

static AP_RUNS: AtomicU64 = AtomicU64::new(0);

fn ap_count(_: u64) -> ! {
    AP_RUNS.fetch_add(1, Ordering::AcqRel);
    stop()
}

/// The VcpuStartState block's `rip` flips between the valid entry point and a non-canonical
/// address (bit 47 set: INVALID_PARAMETER) while vCPU 0 starts vCPU 1 with it again and
/// again (vCPU 1 counts a run and stops; vCPU 2 flips). A host that checked one `rip` and
/// started another would start vCPU 1 at a non-canonical address.
fn df_start() -> ! {
    negotiate();
    let blk = page(P_BLOCK + 3);
    let ap = ap_launch(1, ap_count, 0).expect("vCPU 1 within MAX_VCPUS");
    zero(blk, 64);
    ARENA.w64(blk + VS_RIP, ap.rip);
    ARENA.w64(blk + VS_RSP, ap.rsp);
    ARENA.w64(blk + VS_ARG, ap.rdi);
    report("ap_rip", ap.rip, 0, 0, 0);
    // Once without the race: the block is valid.
    probe("first_start", Call::VcpuStart, &[1, blk]);
    wait_for(&AP_RUNS, 1);
    start_flipper_on(2, blk + VS_RIP + 4, 0, 1, (ap.rip >> 32) as u32, 0x8000);
    let (mut ok, mut refused, mut busy, mut other) = (0, 0, 0, 0);
    for _ in 0..DF_ROUNDS * 4 {
        let r = call(Call::VcpuStart, &[1, blk]);
        match r.st {
            0 => {
                ok += 1;
                wait_for(&AP_RUNS, ok + 1);
            }
            5 => refused += 1,
            13 => busy += 1,
            _ => other += 1,
        }
    }
    stop_flipper();
    report("race", ok, refused, other, 0);
    report("busy", busy, AP_RUNS.load(Ordering::Acquire) - 1, 0, 0);
    finish()
}

// ---------------------------------------------------------------------------------------
// S_LOAD: every vCPU runs `rounds` rounds of mixed calls in every mode

/// Per-vCPU counts, reported at the end: [direct, multicall entries, deferred, ring,
/// events sent, events received, events dropped (own queue), errors].
static COUNTS: [[AtomicU64; 8]; 16] = [const { [const { AtomicU64::new(0) }; 8] }; 16];
static LOAD_ROUNDS: AtomicU64 = AtomicU64::new(0);
static LOAD_TAG: AtomicU64 = AtomicU64::new(0);
static LOAD_VCPUS: AtomicU64 = AtomicU64::new(1);
static LOAD_STARTED: AtomicU64 = AtomicU64::new(0);
static LOAD_DONE: AtomicU64 = AtomicU64::new(0);
static LOAD_SENT_DONE: AtomicU64 = AtomicU64::new(0);

fn count(vcpu: u32, k: usize, n: u64) {
    COUNTS[vcpu as usize][k].fetch_add(n, Ordering::Relaxed);
}

/// Drains this vCPU's event queue; every event must be a USER event from the previous vCPU
/// carrying this VM's tag and the next sequence number (gaps only where the queue was full).
fn drain_events(vcpu: u32, evq: u64, next_seq: &mut u64) {
    let n = LOAD_VCPUS.load(Ordering::Relaxed) as u32;
    let tag = LOAD_TAG.load(Ordering::Relaxed);
    let from = (vcpu + n - 1) % n;
    let mut head = ARENA.r32(evq + EQ_HEAD);
    let tail = ARENA.r32(evq + EQ_TAIL);
    while head != tail {
        let e = evq + EVENT_QUEUE_ENTRIES_OFFSET + u64::from(head % EQ_CAP) * EV_SIZE;
        let (kind, source, data) = (
            ARENA.r32(e + EV_KIND),
            ARENA.r32(e + EV_SOURCE),
            ARENA.r64(e + EV_DATA),
        );
        let seq = data & 0xffff_ffff;
        if kind != KIND_USER || source != from || data >> 48 != tag || seq < *next_seq {
            count(vcpu, 7, 1);
        }
        *next_seq = seq + 1;
        count(vcpu, 5, 1);
        head = head.wrapping_add(1);
        ARENA.w32(evq + EQ_HEAD, head);
    }
}

fn load_vcpu(vcpu: u32) {
    let n = LOAD_VCPUS.load(Ordering::Relaxed) as u32;
    let rounds = LOAD_ROUNDS.load(Ordering::Relaxed);
    let tag = LOAD_TAG.load(Ordering::Relaxed);
    let (evq, dq, sq, cq, mc) = (
        vpage(vcpu, 0),
        vpage(vcpu, 1),
        vpage(vcpu, 2),
        vpage(vcpu, 3),
        vpage(vcpu, 4),
    );
    let err = |ok: bool| {
        if !ok {
            count(vcpu, 7, 1);
        }
    };
    err(call(Call::EventsSetQueue, &[evq, VECTOR]).st == 0);
    err(call(Call::EventsSetMask, &[MASK_ALL]).st == 0);
    err(call(Call::DeferSetQueue, &[dq, 0]).st == 0);
    // Even vCPUs: a doorbell ring; odd ones: a host-polled ring.
    let polled = vcpu % 2 == 1;
    let rs = mc + 2048;
    ring_setup_block(rs, sq, cq, u32::from(polled));
    err(call(Call::RingSetup, &[rs]).st == 0);
    for i in 0..4 {
        mc_entry(mc, i, Call::TimeFrequency.code(), &[]);
    }
    LOAD_STARTED.fetch_add(1, Ordering::AcqRel);
    wait_for(&LOAD_STARTED, u64::from(n));

    let mut next_seq = 0u64;
    let mut user = 0u64;
    for round in 0..rounds {
        // Direct.
        err(call(Call::TimeMonotonic, &[]).st == 0);
        count(vcpu, 0, 1);
        // MULTICALL of 4.
        let r = call(Call::Multicall, &[mc, 4, 0, 0]);
        err(r.st == 0 && r.r[1] == 4);
        for i in 0..4 {
            err(mc_status(mc, i) == 0);
        }
        count(vcpu, 1, r.r[1]);
        // Deferred: 4 EVENTS_SET_MASK entries, then a flush.
        let t = ARENA.r32(dq + DQ_TAIL);
        for i in 0..4 {
            dq_entry(
                dq,
                t.wrapping_add(i),
                Call::EventsSetMask.code(),
                [MASK_ALL, 0, 0],
                0,
            );
        }
        ARENA.w32(dq + DQ_TAIL, t.wrapping_add(4));
        let r = call(Call::DeferFlush, &[]);
        err(r.st == 0 && r.r[0] == 4 && r.r[1] == 0);
        count(vcpu, 2, r.r[0]);
        // Ring: 4 submissions, then wait for exactly their 4 completions, in order.
        let s = ARENA.r32(sq + RH_TAIL);
        for i in 0..4u32 {
            sqe(
                sq,
                s.wrapping_add(i),
                user + u64::from(i),
                Call::TimeWallclock.code(),
                &[],
                0,
            );
        }
        fence(Ordering::SeqCst);
        ARENA.w32(sq + RH_TAIL, s.wrapping_add(4));
        fence(Ordering::SeqCst);
        if polled {
            if ARENA.r32(sq + RH_FLAGS) & SQ_NEED_WAKEUP != 0 {
                ring_notify();
            }
        } else {
            err(call(Call::RingEnter, &[]).st == 0);
        }
        let ch = ARENA.r32(cq + RH_HEAD);
        let mut spins = 0u64;
        while ARENA.r32(cq + RH_TAIL).wrapping_sub(ch) < 4 {
            spins += 1;
            if polled && ARENA.r32(sq + RH_FLAGS) & SQ_NEED_WAKEUP != 0 {
                ring_notify();
            }
            call(Call::VcpuYield, &[]);
            if spins > 1_000_000 {
                count(vcpu, 7, 1 << 32);
                break;
            }
        }
        let got = ARENA.r32(cq + RH_TAIL).wrapping_sub(ch);
        err(got == 4);
        for i in 0..got {
            let e = cqe_addr(cq, ch.wrapping_add(i));
            err(ARENA.r64(e) == user + u64::from(i) && ARENA.r32(e + CQE_STATUS) == 0);
        }
        ARENA.w32(cq + RH_HEAD, ch.wrapping_add(got));
        count(vcpu, 3, u64::from(got));
        user += 4;
        // An event to the next vCPU, then whatever arrived here.
        let data = tag << 48 | round;
        err(call(Call::EventsSend, &[u64::from((vcpu + 1) % n), data]).st == 0);
        count(vcpu, 4, 1);
        drain_events(vcpu, evq, &mut next_seq);
    }
    // Every vCPU has sent everything: a last drain, then the queue's drop count.
    LOAD_SENT_DONE.fetch_add(1, Ordering::AcqRel);
    wait_for(&LOAD_SENT_DONE, u64::from(n));
    drain_events(vcpu, evq, &mut next_seq);
    count(vcpu, 6, u64::from(ARENA.r32(evq + EQ_DROPPED)));
    // The polled ring's poller ends with the ring.
    let off = mc + 3072;
    ring_setup_block(off, 0, 0, 0);
    err(call(Call::RingSetup, &[off]).st == 0);
    let c = &COUNTS[vcpu as usize];
    let v = |k: usize| c[k].load(Ordering::Relaxed);
    report("load_calls", u64::from(vcpu), v(0), v(1), v(2));
    report("load_ring_events", v(3), v(4), v(5), v(6));
    report("load_errors", v(7), 0, 0, 0);
}

fn ap_load(vcpu: u64) -> ! {
    load_vcpu(vcpu as u32);
    LOAD_DONE.fetch_add(1, Ordering::AcqRel);
    stop()
}

fn load(boot: &BootInfo) -> ! {
    LOAD_ROUNDS.store(param(), Ordering::Relaxed);
    LOAD_TAG.store(param() & 0xffff, Ordering::Relaxed);
    let n = boot.vcpu_count.min(16);
    LOAD_VCPUS.store(u64::from(n), Ordering::Relaxed);
    negotiate();
    for v in 1..n {
        let r = start_vcpu(v, ap_load, u64::from(v), page(P_BLOCK + v as usize % 2));
        if r.st != 0 {
            report("vcpu_start_failed", r.st, u64::from(v), 0, 0);
        }
    }
    load_vcpu(0);
    wait_for(&LOAD_DONE, u64::from(n - 1));
    // Each AP counts itself done just before its VCPU_STOP: wait until the host has stopped
    // it (a kick of a stopped vCPU is INVALID_STATE), so that the test sees every stop.
    for v in 1..n {
        while call(Call::VcpuKick, &[u64::from(v)]).st != abi::Status::InvalidState as u64 {
            call(Call::VcpuYield, &[]);
        }
    }
    finish()
}

// ---------------------------------------------------------------------------------------
// Faults

#[repr(C, packed)]
struct NullIdt {
    limit: u16,
    base: u64,
}

/// Loads an empty IDT and raises an exception: #UD cannot be delivered, nor the #GP or #DF
/// that follow. The CPU shuts down (a triple fault).
fn triple_fault() -> ! {
    let idt = NullIdt { limit: 0, base: 0 };
    // SAFETY: deliberately fatal; nothing runs after it.
    unsafe {
        asm!("lidt [{}]", "ud2", in(reg) &idt, options(noreturn));
    }
}

static SPIN_RUNNING: AtomicU64 = AtomicU64::new(0);
static BATCHES: AtomicU64 = AtomicU64::new(0);
static RING_DONE: AtomicU64 = AtomicU64::new(0);

/// Ring 3: never yields, never exits.
fn spin(_: u64) -> u64 {
    SPIN_RUNNING.store(1, Ordering::Release);
    loop {
        pause();
    }
}

fn ap_spin(_: u64) -> ! {
    run_at_cpl3(spin, 0);
    stop()
}

fn spin_ap() -> ! {
    negotiate();
    report(
        "start_ap",
        start_vcpu(1, ap_spin, 0, page(P_BLOCK)).st,
        0,
        0,
        0,
    );
    wait_for(&SPIN_RUNNING, 1);
    call(Call::SystemShutdown, &[5]);
    halt_forever()
}

/// vCPU 1: MULTICALLs of 32 full-page console writes, for ever.
fn ap_batches(_: u64) -> ! {
    let mc = page(P_MC);
    let buf = page(P_SCRATCH);
    for i in 0..32 {
        mc_entry(mc, i, Call::ConsoleWrite.code(), &[buf, PAGE]);
    }
    loop {
        call(Call::Multicall, &[mc, 32, 0, 0]);
        BATCHES.fetch_add(1, Ordering::Release);
    }
}

fn mid_batch() -> ! {
    let how = param();
    negotiate();
    let buf = page(P_SCRATCH);
    for i in 0..PAGE / 8 {
        ARENA.w64(buf + 8 * i, le(b"batch..\n"));
    }
    report(
        "start_ap",
        start_vcpu(1, ap_batches, 0, page(P_BLOCK)).st,
        0,
        0,
        0,
    );
    wait_for(&BATCHES, 2);
    if how == 1 {
        triple_fault();
    }
    call(Call::SystemShutdown, &[6]);
    halt_forever()
}

/// Ring 3 on vCPU 1: keeps its host-polled ring full of submissions and consumes every
/// completion, returning to ring 0 only when the poller sleeps (to notify it).
fn flood(_: u64) -> u64 {
    let (sq, cq) = (page(P_SQ), page(P_CQ));
    loop {
        let rd = |a: u64| {
            // SAFETY: a u32 field of a ring page inside the arena (4-aligned), shared with
            // the host's poller.
            unsafe { (a as *const u32).read_volatile() }
        };
        let wr = |a: u64, v: u32| {
            // SAFETY: as for `rd`.
            unsafe { (a as *mut u32).write_volatile(v) }
        };
        let (head, tail) = (rd(sq + RH_HEAD), rd(sq + RH_TAIL));
        let (ch, ct) = (rd(cq + RH_HEAD), rd(cq + RH_TAIL));
        if ct != ch {
            RING_DONE.fetch_add(u64::from(ct.wrapping_sub(ch)), Ordering::Relaxed);
            wr(cq + RH_HEAD, ct);
        }
        // Submissions are pre-written; only `tail` moves. Keep the completions in flight
        // below the CQ's capacity.
        let in_flight = tail.wrapping_sub(ct);
        if tail.wrapping_sub(head) < SQ_CAP && in_flight < CQ_CAP - 8 {
            fence(Ordering::SeqCst);
            wr(sq + RH_TAIL, tail.wrapping_add(1));
            fence(Ordering::SeqCst);
        }
        if rd(sq + RH_FLAGS) & SQ_NEED_WAKEUP != 0 {
            return 0;
        }
    }
}

fn ap_flood(_: u64) -> ! {
    let (sq, cq) = (page(P_SQ), page(P_CQ));
    let rs = page(P_BLOCK + 1);
    ring_setup_block(rs, sq, cq, 1);
    let r = call(Call::RingSetup, &[rs]);
    report("ring_setup", r.st, 0, 0, 0);
    for i in 0..SQ_CAP {
        sqe(sq, i, u64::from(i), Call::TimeMonotonic.code(), &[], 0);
    }
    loop {
        run_at_cpl3(flood, 0);
        ring_notify();
    }
}

fn ring_busy() -> ! {
    negotiate();
    report(
        "start_ap",
        start_vcpu(1, ap_flood, 0, page(P_BLOCK)).st,
        0,
        0,
        0,
    );
    wait_for(&RING_DONE, 2000);
    report("ring_done", RING_DONE.load(Ordering::Relaxed), 0, 0, 0);
    call(Call::SystemShutdown, &[7]);
    halt_forever()
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
    match scenario {
        S_CLASSES => classes(boot.mem_bytes),
        S_NEGOTIATE_RACE => negotiate_race(),
        S_DF_MULTICALL => df_multicall(),
        S_DF_DEFER => df_defer(),
        S_DF_RING => df_ring(),
        S_DF_SETUP => df_setup(),
        S_DF_START => df_start(),
        S_LOAD => load(boot),
        S_TRIPLE_FAULT => {
            negotiate();
            triple_fault()
        }
        S_SPIN => {
            negotiate();
            run_at_cpl3(spin, 0);
            finish()
        }
        S_SPIN_AP => spin_ap(),
        S_MID_BATCH => mid_batch(),
        S_RING_BUSY => ring_busy(),
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
    unsafe { RawConsole::new(PORT_CONSOLE) }.report_panic("hostile", info)
}
