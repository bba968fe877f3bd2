//! Console output and checks, without `core::fmt`.
//!
//! Ring-0 code must stay SSE-free, and the precompiled `core::fmt` may contain SSE
//! instructions, so lines are built by hand in a [`Line`]: a 256-byte, 256-aligned buffer
//! (so it never crosses a 4 KiB page, as CONSOLE_WRITE requires) with `s` (text), `dec`,
//! `hex`, `ver`, ... appenders. [`Line::print`] sends it with one CONSOLE_WRITE.
//!
//! Every check is one line: `ok  family: what happened` or `FAIL: family: what happened`.
//! A failed check ends the demo: [`fail_exit`] prints a summary and shuts the VM down with
//! [`EXIT_CHECK_FAILED`], so a broken host fails the run.
//!
//! Before NEGOTIATE the console family is not available (NOT_NEGOTIATED), so lines printed
//! then are kept in a page-sized buffer and sent with one CONSOLE_WRITE by [`flush_early`].

use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use pvabi_guest::{Error, Features, PortTransport, Pvabi, Status, Version};
use pvabi_guest_rt::halt_forever;

use crate::Global;

/// Shutdown code when a check fails.
pub const EXIT_CHECK_FAILED: u32 = 1;

/// The doorbell port (from discovery; the default until then).
static DOORBELL: AtomicU32 = AtomicU32::new(pvabi_guest::abi::convention::DOORBELL_PORT as u32);
/// The ring-notify port (from discovery; the default until then).
static RING_NOTIFY: AtomicU32 =
    AtomicU32::new(pvabi_guest::abi::convention::RING_NOTIFY_PORT as u32);
/// True once NEGOTIATE granted CONSOLE: lines go straight to the host.
static LIVE: AtomicBool = AtomicBool::new(false);
/// Checks passed so far (all vCPUs).
static PASSED: AtomicU32 = AtomicU32::new(0);

/// The pvabi client on the discovered doorbell port.
pub fn pv() -> Pvabi<PortTransport> {
    Pvabi::new(PortTransport::new(DOORBELL.load(Ordering::Relaxed) as u16))
}

/// Uses the ports discovery found from now on.
pub fn set_ports(doorbell: u16, ring_notify: u16) {
    DOORBELL.store(u32::from(doorbell), Ordering::Relaxed);
    RING_NOTIFY.store(u32::from(ring_notify), Ordering::Relaxed);
}

/// The ring-notify port.
pub fn ring_notify_port() -> u16 {
    RING_NOTIFY.load(Ordering::Relaxed) as u16
}

/// Checks passed so far.
pub fn passed() -> u32 {
    PASSED.load(Ordering::Relaxed)
}

#[repr(C, align(4096))]
struct Early {
    buf: [u8; 4096],
    len: usize,
}

// Only vCPU 0 prints before NEGOTIATE (the others are not started yet).
static EARLY: Global<Early> = Global::new(Early {
    buf: [0; 4096],
    len: 0,
});

/// Sends the lines kept before NEGOTIATE (one CONSOLE_WRITE) and prints directly from now on.
pub fn flush_early() {
    LIVE.store(true, Ordering::Release);
    // SAFETY: vCPU 0 alone uses the buffer, and only before this point.
    let early = unsafe { &*EARLY.get() };
    if early.len > 0 {
        let _ = pv().console_write(pvabi_guest::gpa_of(&early.buf), early.len as u64);
    }
}

fn emit(bytes: &[u8]) {
    if LIVE.load(Ordering::Acquire) {
        // A failing console cannot be reported on the console; the check that follows
        // (or the host's report) will show it.
        let _ = pv().console_write(pvabi_guest::gpa_of(bytes), bytes.len() as u64);
        return;
    }
    // SAFETY: before NEGOTIATE only vCPU 0 runs, and only it appends.
    let early = unsafe { &mut *EARLY.get() };
    let room = early.buf.len() - early.len;
    let n = bytes.len().min(room);
    early.buf[early.len..early.len + n].copy_from_slice(&bytes[..n]);
    early.len += n;
}

const LINE_CAP: usize = 248;

/// One line of output, built by appending. 256-aligned and 256 bytes long, so its text
/// never crosses a page.
#[repr(C, align(256))]
pub struct Line {
    buf: [u8; LINE_CAP],
    len: u16,
    failed: bool,
    check: bool,
}

impl Line {
    /// An empty line.
    pub fn new() -> Self {
        Line {
            buf: [0; LINE_CAP],
            len: 0,
            failed: false,
            check: false,
        }
    }

    /// An indented informational line.
    pub fn info() -> Self {
        let mut l = Line::new();
        l.s("    ");
        l
    }

    /// A check line: `ok  family: ` when `passed`, `FAIL: family: ` otherwise. End it with
    /// [`end`](Self::end).
    pub fn check(family: &str, passed: bool) -> Self {
        let mut l = Line::new();
        l.check = true;
        l.failed = !passed;
        l.s(if passed { "ok  " } else { "FAIL: " })
            .s(family)
            .s(": ");
        l
    }

    /// Appends bytes (cut at the line's capacity).
    pub fn b(&mut self, bytes: &[u8]) -> &mut Self {
        let len = usize::from(self.len);
        let n = bytes.len().min(LINE_CAP - 1 - len);
        self.buf[len..len + n].copy_from_slice(&bytes[..n]);
        self.len = (len + n) as u16;
        self
    }

    /// Appends text.
    pub fn s(&mut self, text: &str) -> &mut Self {
        self.b(text.as_bytes())
    }

    /// Appends printable ASCII from `bytes` up to the first NUL (others as `?`).
    pub fn ascii(&mut self, bytes: &[u8]) -> &mut Self {
        for &c in bytes {
            if c == 0 {
                break;
            }
            let c = if (0x20..0x7f).contains(&c) { c } else { b'?' };
            self.b(&[c]);
        }
        self
    }

    /// Appends `v` in decimal.
    pub fn dec(&mut self, mut v: u64) -> &mut Self {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.b(&digits[i..])
    }

    /// Appends `v` as `0x` and hex digits (no leading zeros).
    pub fn hex(&mut self, v: u64) -> &mut Self {
        let mut digits = [0u8; 16];
        let mut i = digits.len();
        let mut v = v;
        loop {
            i -= 1;
            let nibble = (v & 0xf) as u8;
            digits[i] = if nibble < 10 {
                b'0' + nibble
            } else {
                b'a' + nibble - 10
            };
            v >>= 4;
            if v == 0 {
                break;
            }
        }
        self.s("0x").b(&digits[i..])
    }

    /// Appends a duration in nanoseconds as milliseconds with three decimals.
    pub fn ms(&mut self, ns: u64) -> &mut Self {
        let us = ns / 1000;
        self.dec(us / 1000).s(".");
        let frac = us % 1000;
        if frac < 100 {
            self.s("0");
        }
        if frac < 10 {
            self.s("0");
        }
        self.dec(frac).s(" ms")
    }

    /// Appends a version as `major.minor`.
    pub fn ver(&mut self, v: Version) -> &mut Self {
        self.dec(u64::from(v.major()))
            .s(".")
            .dec(u64::from(v.minor()))
    }

    /// Appends a feature set: its bits in hex and the names of the bits this guest knows.
    pub fn features(&mut self, f: Features) -> &mut Self {
        self.hex(f.bits());
        let mut first = true;
        let mut known = Features::empty();
        for info in pvabi_guest::abi::features::FEATURES {
            known |= info.flag;
            if f.contains(info.flag) {
                self.s(if first { " (" } else { " " }).s(info.name);
                first = false;
            }
        }
        let rest = f.bits() & !known.bits();
        if rest != 0 {
            self.s(if first { " (" } else { " " })
                .s("unknown ")
                .hex(rest);
            first = false;
        }
        if !first {
            self.s(")");
        }
        self
    }

    /// Appends a call's error: the status name.
    pub fn err(&mut self, e: Error) -> &mut Self {
        match e {
            Error::Status(s) => self.s(s.name()),
            Error::UnknownStatus(raw) => self.s("unknown status ").hex(raw),
            Error::UnexpectedResult(v) => self.s("unexpected result ").hex(v),
            _ => self.s("unknown error"),
        }
    }

    /// Appends a call's outcome: `SUCCESS` or the status name.
    pub fn outcome<T>(&mut self, r: &pvabi_guest::Result<T>) -> &mut Self {
        match r {
            Ok(_) => self.s("SUCCESS"),
            Err(e) => self.err(*e),
        }
    }

    /// The text so far.
    pub fn text(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }

    /// Ends the line with `\n` and prints it.
    pub fn print(&mut self) {
        let len = usize::from(self.len);
        self.buf[len] = b'\n';
        emit(&self.buf[..=len]);
    }

    /// Prints a check line; a failed check ends the demo.
    pub fn end(&mut self) {
        self.print();
        if self.failed {
            fail_exit();
        }
        if self.check {
            PASSED.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Prints a plain line.
pub fn say(text: &str) {
    Line::new().s(text).print();
}

/// A section header.
pub fn section(title: &str) {
    Line::new().s("-- ").s(title).s(" --").print();
}

/// The value of a call that must succeed; a FAIL line and the end of the demo otherwise.
pub fn must<T>(family: &str, what: &str, r: pvabi_guest::Result<T>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => {
            Line::check(family, false)
                .s(what)
                .s(": ")
                .err(e)
                .s(" (expected SUCCESS)")
                .end();
            fail_exit()
        }
    }
}

/// Checks that a call failed with exactly `want`, which a conforming host must answer.
pub fn expect_status<T>(family: &str, what: &str, r: pvabi_guest::Result<T>, want: Status) {
    let good = matches!(&r, Err(e) if e.is(want));
    let mut l = Line::check(family, good);
    l.s(what).s(" -> ").outcome(&r);
    if !good {
        l.s(" (expected ").s(want.name()).s(")");
    }
    l.end();
}

/// Ends the demo after a failed check: a summary line, then SYSTEM_SHUTDOWN with
/// [`EXIT_CHECK_FAILED`].
pub fn fail_exit() -> ! {
    Line::new()
        .s("demo: FAILED after ")
        .dec(u64::from(passed()))
        .s(" checks passed")
        .print();
    let _ = pv().try_shutdown(EXIT_CHECK_FAILED);
    halt_forever()
}
