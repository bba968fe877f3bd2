//! Conformance test `system`: the console and system calls, as far as a guest can observe
//! them without ending the VM: CONSOLE_WRITE and CONSOLE_WRITE_REGS (the length written, that
//! CONSOLE_WRITE emits its copy and not the buffer as the guest rewrites it after the call, the
//! bounds, a zero-length block, and that only `length` bytes of the registers are emitted),
//! and SYSTEM_SHUTDOWN and SYSTEM_CRASH refusing bad arguments (and so not ending the VM).
//! The end itself, SYSTEM_SHUTDOWN with the verdict's code, is the channel's. Runs on vCPU 0
//! at CPL0.
#![no_std]
#![no_main]

mod call;
mod channel;
mod common;

use pvabi_guest::abi::features::Features;
use pvabi_guest::{Call, PortTransport, Status};
use pvabi_guest_rt::{halt_forever, BootInfo};

use call::raw;
use channel::check;
use common::{start, Pages, PAGE, SUCCESS};

const TEST: &str = "system";
const INVALID_PARAMETER: u64 = Status::InvalidParameter as u64;
const CROSSES_PAGE: u64 = Status::CrossesPage as u64;
const INVALID_ADDRESS: u64 = Status::InvalidAddress as u64;

/// The line CONSOLE_WRITE_REGS emits, a few bytes per call: a verdict line of the channel.
const REGS_LINE: &[u8] =
    b"pvabi-conform: PASS system.console_write_regs_emits_only_length_bytes PVABI-CON-005 PVABI-CON-001 PVABI-CON-002\n";
/// The check REGS_LINE passes, whose tripwire (`r`) fills the register bytes past `length`.
const REGS_CHECK: &str = "system.console_write_regs_emits_only_length_bytes";
/// What fills the register bytes past `length`: the tripwire's line, which only a host that
/// emitted them would put on the console (and which fails REGS_CHECK for PVABI-CON-005).
const PAST_LENGTH: &[u8] = b"\npvabi-conform: TRIPPED r\n";
/// Bytes of REGS_LINE per call (what PAST_LENGTH leaves of the 32).
const PIECE: usize = 32 - PAST_LENGTH.len();

/// CON-006's check, and the tripwire that replaces its bytes once CONSOLE_WRITE has returned:
/// only a host that reads the buffer again after the call (an emitter that keeps the guest's
/// address instead of its copy) puts it on the console.
const COPY_CHECK: &str = "system.console_emits_the_copy_it_took_during_the_call";
const COPY_WIRE: &[u8] = b"pvabi-conform: TRIPPED system.console_emits_the_copy_it_took_during_the_call PVABI-CON-006 -- the console showed bytes the guest wrote to the buffer after CONSOLE_WRITE had returned\n";
/// What the call emits: a note, padded with spaces to the wire's length.
const COPY_NOTE: &[u8] = b"(pvabi-conform system: the bytes CONSOLE_WRITE copied during the call)";

/// Page 0: console bytes; page 1: a message for SYSTEM_CRASH.
static PAGES: Pages<2> = Pages::new();

fn write_regs(t: &PortTransport, bytes: &[u8]) -> (u64, u64) {
    let mut buf = [0u8; 32];
    buf[..bytes.len()].copy_from_slice(bytes);
    let rest = (32 - bytes.len()).min(PAST_LENGTH.len());
    buf[bytes.len()..bytes.len() + rest].copy_from_slice(&PAST_LENGTH[..rest]);
    let word = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&buf[8 * i..8 * i + 8]);
        u64::from_le_bytes(w)
    };
    let r = raw(
        t,
        Call::ConsoleWriteRegs,
        &[bytes.len() as u64, word(0), word(1), word(2), word(3)],
    );
    (r.status, r.results[0])
}

fn main(boot: &BootInfo) -> ! {
    let (t, _) = start(TEST, Features::empty());
    let (buf, msg) = (PAGES.page(0), PAGES.page(1));
    let note = b"(pvabi-conform system: a console note)\n";
    for (i, b) in note.iter().enumerate() {
        common::wr8(buf + 64 + i as u64, *b);
    }
    let r = raw(&t, Call::ConsoleWrite, &[buf + 64, note.len() as u64]);
    check(
        "system.console_write_returns_the_length",
        &["PVABI-CON-001"],
        r.status == SUCCESS && r.results[0] == note.len() as u64,
        r.status << 32 | r.results[0],
        note.len() as u64,
    );
    // CON-006: what is emitted is the copy taken during the call, not the buffer as it is
    // later. The buffer holds the note while the call runs and the tripwire once it returns.
    channel::trap(COPY_CHECK);
    let wire = buf + 2048;
    for i in 0..COPY_WIRE.len() {
        let b = match COPY_NOTE.get(i) {
            Some(&b) => b,
            None if i + 1 == COPY_WIRE.len() => b'\n',
            None => b' ',
        };
        common::wr8(wire + i as u64, b);
    }
    let r = raw(&t, Call::ConsoleWrite, &[wire, COPY_WIRE.len() as u64]);
    for (i, b) in COPY_WIRE.iter().enumerate() {
        common::wr8(wire + i as u64, *b);
    }
    check(
        COPY_CHECK,
        &["PVABI-CON-006"],
        r.status == SUCCESS && r.results[0] == COPY_WIRE.len() as u64,
        r.status << 32 | r.results[0],
        COPY_WIRE.len() as u64,
    );
    let r = raw(&t, Call::ConsoleWrite, &[boot.mem_bytes + 3 * PAGE - 1, 0]);
    check(
        "system.console_write_of_no_bytes_touches_no_memory",
        &["PVABI-CONV-018"],
        r.status == SUCCESS && r.results[0] == 0,
        r.status << 32 | r.results[0],
        0,
    );
    let long = raw(&t, Call::ConsoleWrite, &[buf, 4097]).status;
    let regs = raw(&t, Call::ConsoleWriteRegs, &[33, 0, 0, 0, 0]).status;
    check(
        "system.console_lengths_past_the_limit_are_invalid_parameter",
        &["PVABI-STAT-001"],
        long == INVALID_PARAMETER && regs == INVALID_PARAMETER,
        long << 32 | regs,
        INVALID_PARAMETER << 32 | INVALID_PARAMETER,
    );
    let across = raw(&t, Call::ConsoleWrite, &[buf + PAGE - 4, 8]).status;
    let outside = raw(&t, Call::ConsoleWrite, &[boot.mem_bytes, 8]).status;
    check(
        "system.console_buffer_across_a_page_or_outside_ram_is_refused",
        &["PVABI-STAT-001"],
        across == CROSSES_PAGE && outside == INVALID_ADDRESS,
        across << 32 | outside,
        CROSSES_PAGE << 32 | INVALID_ADDRESS,
    );
    // A verdict line through CONSOLE_WRITE_REGS; the register bytes past `length` hold a
    // tripwire that only a host that emits them would print.
    channel::trap_wire(REGS_CHECK, "r", &["PVABI-CON-005"]);
    let mut all = true;
    for piece in REGS_LINE.chunks(PIECE) {
        let (s, written) = write_regs(&t, piece);
        all &= s == SUCCESS && written == piece.len() as u64;
    }
    check(
        "system.console_write_regs_returns_the_length",
        &["PVABI-CON-001"],
        all,
        0,
        0,
    );

    // Refused system calls do not end the VM (the checks after them are the evidence).
    let s = raw(&t, Call::SystemShutdown, &[1 << 32]).status;
    check(
        "system.shutdown_with_reserved_code_bits_is_invalid_parameter",
        &["PVABI-STAT-001", "PVABI-STAT-005"],
        s == INVALID_PARAMETER,
        s,
        INVALID_PARAMETER,
    );
    let long = raw(&t, Call::SystemCrash, &[msg, 4097]).status;
    let across = raw(&t, Call::SystemCrash, &[msg + PAGE - 2, 4]).status;
    check(
        "system.crash_with_a_bad_message_is_refused",
        &["PVABI-STAT-001", "PVABI-STAT-005"],
        long == INVALID_PARAMETER && across == CROSSES_PAGE,
        long << 32 | across,
        INVALID_PARAMETER << 32 | CROSSES_PAGE,
    );
    channel::end(TEST)
}

pvabi_guest_rt::entry!(main);

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    halt_forever()
}
