//! Console family: the register form (up to 32 bytes in four registers, no memory) and
//! the memory form (a buffer of up to 4096 bytes that does not cross a page).

use pvabi_guest::{Call, Status};

use crate::out::{expect_status, must, pv, section, Line};
use crate::Page;

/// Text for the register form: 62 bytes, so two CONSOLE_WRITE_REGS calls (32 + 30).
const REGS_TEXT: &[u8] = b"    (this line came in registers: CONSOLE_WRITE_REGS, 2 calls)\n";
/// Text for the memory form.
const MEM_TEXT: &[u8] = b"    (this line came from guest memory: one CONSOLE_WRITE)\n";

pub fn run() {
    section("console");
    let pv = pv();
    let n = must(
        "console",
        "CONSOLE_WRITE_REGS",
        pv.console_write_regs(REGS_TEXT),
    );
    Line::check("console", n == REGS_TEXT.len())
        .s("CONSOLE_WRITE_REGS wrote ")
        .dec(n as u64)
        .s(" of ")
        .dec(REGS_TEXT.len() as u64)
        .s(" bytes, 32 per call")
        .end();
    let n = must(
        "console",
        "CONSOLE_WRITE",
        pv.console_write(pvabi_guest::gpa_of(MEM_TEXT), MEM_TEXT.len() as u64),
    );
    Line::check("console", n == MEM_TEXT.len() as u64)
        .s("CONSOLE_WRITE wrote ")
        .dec(n)
        .s(" of ")
        .dec(MEM_TEXT.len() as u64)
        .s(" bytes from guest-physical ")
        .hex(pvabi_guest::gpa_of(MEM_TEXT))
        .end();
    let n = must("console", "CONSOLE_WRITE", pv.console_write(0, 0));
    Line::check("console", n == 0)
        .s("CONSOLE_WRITE of 0 bytes wrote ")
        .dec(n)
        .end();

    // The checks the host must make, in the spec's order.
    // SAFETY: only asks the host to print (or refuse) 33 bytes of register data.
    let r = unsafe { pv.call_raw(Call::ConsoleWriteRegs, [33, 0, 0, 0, 0, 0]) };
    expect_status(
        "console",
        "CONSOLE_WRITE_REGS of 33 bytes (max 32)",
        r,
        Status::InvalidParameter,
    );
    static TWO_PAGES: [Page; 2] = [Page::new(), Page::new()];
    let across = pvabi_guest::gpa_of(&TWO_PAGES[0]) + 4096 - 8;
    expect_status(
        "console",
        "CONSOLE_WRITE of 16 bytes across a page boundary",
        pv.console_write(across, 16),
        Status::CrossesPage,
    );
    expect_status(
        "console",
        "CONSOLE_WRITE of 5000 bytes (max 4096)",
        pv.console_write(pvabi_guest::gpa_of(&TWO_PAGES[0]), 5000),
        Status::InvalidParameter,
    );
    expect_status(
        "console",
        "CONSOLE_WRITE from an address beyond guest RAM",
        pv.console_write(1 << 40, 8),
        Status::InvalidAddress,
    );
}
