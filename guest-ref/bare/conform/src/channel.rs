//! The verdict channel, guest side (the format is the conformance suite's:
//! `conformance/src/channel.rs`): `pvabi-conform: BEGIN <test>`, one line per check,
//! `pvabi-conform: END <test> <verdict>`, then SYSTEM_SHUTDOWN with the verdict's code.
//!
//! Lines are built without `core::fmt` (ring-0 code stays SSE-free) in one page-aligned page,
//! and written with CONSOLE_WRITE once NEGOTIATE has granted CONSOLE; checks made before
//! NEGOTIATE wait in the page until then. A guest that cannot negotiate cannot report: it
//! halts, and the runner's verdict is CRASH, never PASS.

use core::cell::UnsafeCell;

use pvabi_guest::transport::Transport;
use pvabi_guest::{gpa_of, Call, PortTransport};
use pvabi_guest_rt::halt_forever;

/// A check's verdict, in the channel's order of severity. (ERROR joins when a test needs it;
/// the channel defines it.)
/// `Warn` is a check of a SHOULD or MAY rule that did not hold: it is reported (the line says
/// WARN) but ranks as a PASS, so it never fails the test.
/// `NotApplicable` is a check of a conditional rule whose condition the host, by what it
/// reported, does not meet (the line says N/A): it too ranks as a PASS.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    Pass,
    #[allow(dead_code)] // Constructed only by tests that have a SHOULD check.
    Warn,
    #[allow(dead_code)] // Constructed only by tests that check a conditional rule.
    NotApplicable,
    #[allow(dead_code)] // Constructed only by tests that have a check that can skip.
    Skip,
    Fail,
}

impl Verdict {
    const fn word(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Warn => "WARN",
            Verdict::NotApplicable => "N/A",
            Verdict::Skip => "SKIP",
            Verdict::Fail => "FAIL",
        }
    }

    /// The shutdown code for a run with this worst verdict.
    const fn exit_code(self) -> u64 {
        match self {
            Verdict::Pass | Verdict::Warn | Verdict::NotApplicable => 0,
            Verdict::Skip => 3,
            Verdict::Fail => 5,
        }
    }

    /// What the verdict counts as for the test's END verdict (a warning as a PASS).
    const fn rank(self) -> Verdict {
        match self {
            Verdict::Warn | Verdict::NotApplicable => Verdict::Pass,
            v => v,
        }
    }
}

#[repr(C, align(4096))]
struct Page {
    buf: [u8; 4096],
    len: usize,
    worst: Verdict,
    live: bool,
    port: u16,
}

struct Global(UnsafeCell<Page>);

// SAFETY: the test guests run on vCPU 0 only and never re-enter the channel.
unsafe impl Sync for Global {}

static OUT: Global = Global(UnsafeCell::new(Page {
    buf: [0; 4096],
    len: 0,
    worst: Verdict::Pass,
    live: false,
    port: pvabi_guest::abi::convention::DOORBELL_PORT,
}));

fn out() -> &'static mut Page {
    // SAFETY: one vCPU, no re-entrancy (see `Global`).
    unsafe { &mut *OUT.0.get() }
}

fn transport() -> PortTransport {
    PortTransport::new(out().port)
}

/// Uses the doorbell port discovery found.
pub fn set_doorbell(port: u16) {
    out().port = port;
}

/// Writes what is buffered (one CONSOLE_WRITE; the buffer is one page, so it never crosses).
fn flush() {
    let o = out();
    if o.live && o.len > 0 {
        // SAFETY: CONSOLE_WRITE only reads the buffer.
        unsafe {
            transport().call(
                Call::ConsoleWrite.code(),
                [gpa_of(&o.buf), o.len as u64, 0, 0, 0, 0],
            );
        }
        o.len = 0;
    }
}

fn push(bytes: &[u8]) {
    let o = out();
    if o.len + bytes.len() > o.buf.len() {
        flush();
    }
    let n = bytes.len().min(o.buf.len() - o.len);
    o.buf[o.len..o.len + n].copy_from_slice(&bytes[..n]);
    o.len += n;
}

fn hex(v: u64) {
    let mut digits = [0u8; 18];
    digits[0] = b'0';
    digits[1] = b'x';
    let mut n = 2;
    let mut started = false;
    for i in (0..16).rev() {
        let d = ((v >> (i * 4)) & 0xf) as u8;
        if d != 0 || started || i == 0 {
            started = true;
            digits[n] = if d < 10 { b'0' + d } else { b'a' + d - 10 };
            n += 1;
        }
    }
    push(&digits[..n]);
}

/// The start of a test.
pub fn begin(test: &str) {
    push(b"pvabi-conform: BEGIN ");
    push(test.as_bytes());
    push(b"\n");
}

/// One check: `ok` decides PASS or FAIL; on a FAIL the line says what was seen and expected.
#[allow(dead_code)] // The tests of how the VM ends report only with `fail`.
pub fn check(name: &str, requirements: &[&str], ok: bool, seen: u64, expected: u64) {
    let verdict = if ok { Verdict::Pass } else { Verdict::Fail };
    report(verdict, name, requirements);
    if !ok {
        push(b" -- got ");
        hex(seen);
        push(b", want ");
        hex(expected);
    }
    push(b"\n");
}

/// A check of a SHOULD (or SHOULD NOT) rule: PASS when `ok`, otherwise a warning (WARN, with
/// what was seen and expected), which the report shows as such and which never fails the test.
/// Cite only SHOULD and MAY rules: the runner takes a WARN of a MUST for a FAIL.
#[allow(dead_code)] // Not every test checks a SHOULD.
pub fn should(name: &str, requirements: &[&str], ok: bool, seen: u64, expected: u64) {
    let verdict = if ok { Verdict::Pass } else { Verdict::Warn };
    report(verdict, name, requirements);
    if !ok {
        push(b" -- got ");
        hex(seen);
        push(b", want ");
        hex(expected);
    }
    push(b"\n");
}

/// A MAY rule exercised: what the host did (`what` and a value) as a PASS line's message. A
/// host may do either, so this never fails.
#[allow(dead_code)] // Not every test exercises a MAY.
pub fn observe(name: &str, requirements: &[&str], what: &str, value: u64) {
    report(Verdict::Pass, name, requirements);
    push(b" -- ");
    push(what.as_bytes());
    push(b" ");
    hex(value);
    push(b"\n");
}

/// A check of a conditional rule (one that binds only a host that does something, such as
/// advertising a binding) on a host that, by what it reported, does not: `N/A <name> <IDs> --
/// <what the host reported> <value>`. The report shows the rules as not applicable, not as
/// passed. Use it only where the rule itself names the condition.
#[allow(dead_code)] // Not every test checks a conditional rule.
pub fn not_applicable(name: &str, requirements: &[&str], what: &str, value: u64) {
    report(Verdict::NotApplicable, name, requirements);
    push(b" -- ");
    push(what.as_bytes());
    push(b" ");
    hex(value);
    push(b"\n");
}

/// A check that does not apply here, with the reason (a SKIP never hides a FAIL: use it only
/// where the rule's condition does not hold, e.g. a flag the host leaves clear).
#[allow(dead_code)] // Not every test has a check that can skip.
pub fn skip(name: &str, requirements: &[&str], reason: &str) {
    report(Verdict::Skip, name, requirements);
    push(b" -- ");
    push(reason.as_bytes());
    push(b"\n");
}

/// Announces that the VM is to end by a guest fault at the next access (`EXPECT <name>
/// fault <IDs> -- <what> <value>`), and writes it out at once: the runner takes the check as
/// a PASS only if the VM then ends by a guest fault with no other line. A guest that survives
/// the access reports the same check itself, as a FAIL ([`check`] with `ok` false).
#[allow(dead_code)] // Only the tests whose proof is the VM's end announce one.
pub fn expect_fault(name: &str, requirements: &[&str], what: &str, value: u64) {
    push(b"pvabi-conform: EXPECT ");
    push(name.as_bytes());
    push(b" fault");
    for r in requirements {
        push(b" ");
        push(r.as_bytes());
    }
    push(b" -- ");
    push(what.as_bytes());
    push(b" ");
    hex(value);
    push(b"\n");
    flush();
}

/// Announces that the VM is to end by the next call (`EXPECT <name> <end> <value> <IDs> --
/// <what>`): `end` is `shutdown` (with `code`, in hex) or `crash` (with `message`, one word).
/// The runner takes the check as a PASS only if the VM then ends by that call with exactly
/// that code or message, with no other line. A guest whose call returns reports the same
/// check itself ([`fail`]).
#[allow(dead_code)] // Only the tests of how the VM ends announce one.
pub fn expect_end(
    name: &str,
    requirements: &[&str],
    end: &str,
    code: u64,
    message: Option<&str>,
    what: &str,
) {
    push(b"pvabi-conform: EXPECT ");
    push(name.as_bytes());
    push(b" ");
    push(end.as_bytes());
    push(b" ");
    match message {
        Some(m) => push(m.as_bytes()),
        None => hex(code),
    }
    for r in requirements {
        push(b" ");
        push(r.as_bytes());
    }
    push(b" -- ");
    push(what.as_bytes());
    push(b"\n");
    flush();
}

/// A FAIL with what happened (`what` and a value) as its message.
#[allow(dead_code)] // Not every test reports a FAIL this way.
pub fn fail(name: &str, requirements: &[&str], what: &str, value: u64) {
    report(Verdict::Fail, name, requirements);
    push(b" -- ");
    push(what.as_bytes());
    push(b" ");
    hex(value);
    push(b"\n");
}

/// What the test learnt about the implementation, for the runner to hold against its profile
/// (`INFO key=value`; not a check).
#[allow(dead_code)] // Only the base test reports the implementation's identity.
pub fn info(key: &str, value: u64) {
    push(b"pvabi-conform: INFO ");
    push(key.as_bytes());
    push(b"=");
    hex(value);
    push(b"\n");
}

fn report(verdict: Verdict, name: &str, requirements: &[&str]) {
    let o = out();
    o.worst = o.worst.max(verdict.rank());
    push(b"pvabi-conform: ");
    push(verdict.word().as_bytes());
    push(b" ");
    push(name.as_bytes());
    for r in requirements {
        push(b" ");
        push(r.as_bytes());
    }
}

/// From now on lines go to the console: NEGOTIATE granted CONSOLE.
pub fn go_live() {
    out().live = true;
    flush();
}

/// The end of the test: the END line, then SYSTEM_SHUTDOWN with the worst verdict's code.
pub fn end(test: &str) -> ! {
    let worst = out().worst;
    push(b"pvabi-conform: END ");
    push(test.as_bytes());
    push(b" ");
    push(worst.word().as_bytes());
    push(b"\n");
    flush();
    // SAFETY: SYSTEM_SHUTDOWN ends the VM.
    unsafe {
        transport().call(
            Call::SystemShutdown.code(),
            [worst.exit_code(), 0, 0, 0, 0, 0],
        );
    }
    halt_forever()
}

/// Sets a tripwire for check `name` (`TRAP <name>`, written out at once): the test then
/// overwrites a call's memory, after the call, with a `TRIPPED <name>` line that only a host
/// that reads that memory again puts on the console, which makes the check a FAIL whatever
/// the guest reports of it.
#[allow(dead_code)] // Only the tests of what a host does with memory after a call set one.
pub fn trap(name: &str) {
    push(b"pvabi-conform: TRAP ");
    push(name.as_bytes());
    push(b"\n");
    flush();
}

/// Sets a tripwire whose TRIPPED line names it `wire` (a few bytes, where the check's name
/// does not fit) and fails check `name`, citing `requirements`, when the host prints it.
#[allow(dead_code)] // Only the tests of what a host does with memory after a call set one.
pub fn trap_wire(name: &str, wire: &str, requirements: &[&str]) {
    push(b"pvabi-conform: TRAP ");
    push(name.as_bytes());
    push(b" ");
    push(wire.as_bytes());
    for r in requirements {
        push(b" ");
        push(r.as_bytes());
    }
    push(b"\n");
    flush();
}

/// Asks the host for a host event (`REQUEST <event>`: `migrate` or `tsc-offset`), written out
/// at once. A host that performs it does so before this vCPU runs guest code again, and
/// writes its own `DONE <event>` line; the guest cannot see that line, so its checks after
/// the request are valid whether or not the event happened, and the runner turns those that
/// cite only the event's rules into N/A or SKIP when the host did not perform it.
#[allow(dead_code)] // Only the tests of host events ask for one.
pub fn request(event: &str) {
    push(b"pvabi-conform: REQUEST ");
    push(event.as_bytes());
    push(b"\n");
    flush();
}
