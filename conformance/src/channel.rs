//! The verdict channel: how a test guest reports, and how its run becomes a [`TestResult`].
//!
//! A test guest writes lines to the pvabi console (CONSOLE_WRITE) and ends with
//! SYSTEM_SHUTDOWN. Lines that do not start with [`PREFIX`] are free-form log and ignored. The
//! others are, in this order:
//!
//! ```text
//! pvabi-conform: BEGIN <test>
//! pvabi-conform: <PASS|SKIP|ERROR|FAIL|WARN|N/A> <check> [<requirement ID> ...] [-- <message>]
//! pvabi-conform: INFO <key>=<value> ...
//! ...
//! pvabi-conform: END <test> <verdict>
//! ```
//!
//! A test whose proof is that the VM ends (a rule that says an access is a fault of the guest
//! that ends the VM) announces it as its last line before the access:
//!
//! ```text
//! pvabi-conform: EXPECT <check> fault [<requirement ID> ...] [-- <what>]
//! ```
//!
//! and then makes the access. If the VM then ends by a guest fault ([`RunEnd::GuestFault`])
//! with no line after the EXPECT, the check is a PASS and the test's verdict is the most severe
//! of its checks (there is no END line and no shutdown code to cross-check). A guest that
//! survives the access reports the same check itself, in a line with the same name that
//! replaces the EXPECT (a FAIL where the rule requires the fault; its own verdict where the
//! rule only allows one, as PVABI-MEM-007 does for a read of a released page), and ends as
//! usual. Any other end after an EXPECT (a time-out, a
//! SYSTEM_SHUTDOWN, a reboot, a crash report, a VMM error) is a CRASH; an external VMM whose exit
//! status nobody has said means "the VM faulted" ([`RunEnd::Undetermined`]) makes the check a
//! SKIP that says so. An EXPECT followed by another check or by END, or a second EXPECT, is an
//! ERROR.
//!
//! Two more ends can be announced, for the rules about how the System calls end the VM:
//!
//! ```text
//! pvabi-conform: EXPECT <check> shutdown <code> [<requirement ID> ...] [-- <what>]
//! pvabi-conform: EXPECT <check> crash <message> [<requirement ID> ...] [-- <what>]
//! ```
//!
//! `<code>` is a 32-bit code (`0x` and hex digits, or decimal) and `<message>` one word of
//! printable ASCII. The check is a PASS only if the VM then ends by SYSTEM_SHUTDOWN with
//! exactly that code ([`RunEnd::Shutdown`]: all 32 bits, so a host that reports fewer fails)
//! or by SYSTEM_CRASH with exactly that message ([`RunEnd::Crash`]), with no line after the
//! EXPECT; a FAIL if it ends by the announced call with another code or message; a guest whose
//! call returned reports the check itself, as with `fault`; any other end is a CRASH. An
//! external VMM's exit status cannot carry 32 bits or a message ([`RunEnd::Undetermined`]):
//! the check is a SKIP that says so.
//!
//! WARN is a check of a SHOULD, SHOULD NOT or MAY rule that did not hold: a warning, which
//! counts as a PASS for the test's verdict (it cannot fail the implementation) and makes each
//! rule it cites a warning in the report; a WARN that cites a MUST or MUST NOT rule is taken
//! as a FAIL of that rule (see [`Check::warning`]).
//!
//! N/A is a check of a conditional rule (one that binds only an implementation that does
//! something, such as advertising a binding) whose condition the implementation, by what it
//! reported, does not meet: the check was ready to run and had nothing to check. It counts as a
//! PASS for the test's verdict and makes each rule it cites not applicable in the report,
//! unless another check of the rule ran (see [`Check::not_applicable`]). The message says what
//! the implementation reported.
//!
//! A test of a rule that binds a host only after an event a guest cannot cause (a migration,
//! a change of the time-stamp counters' offset) asks the host for it:
//!
//! ```text
//! pvabi-conform: REQUEST <event>
//! ```
//!
//! where `<event>` is one of [`HOST_EVENTS`] (`migrate`, `tsc-offset`), written as the last line of
//! one CONSOLE_WRITE. A host that performs the event on request does so before that vCPU runs
//! guest code again and, before any vCPU runs guest code again, writes to the same console
//! the line
//!
//! ```text
//! pvabi-conform: DONE <event>
//! ```
//!
//! (so it comes right after the REQUEST, before any line of the guest). A host that does not
//! perform it writes nothing and the guest goes on. The guest cannot see the DONE line, so
//! every check it reports after a request is one that holds whether or not the event
//! happened; the runner knows, and for a request without its DONE line turns each check made
//! after it (up to the next request) that cites only the event's rules into N/A, whatever the
//! check's verdict: its premise, the event, did not hold, and those rules (or their clauses
//! about the event) bind only a host that performs it: PVABI-VER-013 a host that migrates,
//! PVABI-TIME-010's clauses a host that migrates or changes the counters' offset. The result's INFO carries
//! `host_event.<event>=1` or `=0`, which a profile that claims the event holds against it. A
//! DONE line without the REQUEST just before it is an ERROR.
//!
//! A test of a rule about what the host does with guest memory after a call returns (a host
//! that emits a console buffer later, from guest memory, rather than the copy it took during
//! the call; one that emits more bytes than the call names) sets a tripwire: it declares one,
//! written out at once,
//!
//! ```text
//! pvabi-conform: TRAP <check> [<wire>] [<requirement ID> ...]
//! ```
//!
//! and then puts in the call's memory, where only a faulty host would take it from (in the
//! buffer once the call has returned, in the register bytes past the length), the line
//!
//! ```text
//! pvabi-conform: TRIPPED <wire> [<requirement ID> ...] [-- <what>]
//! ```
//!
//! `<wire>` names the tripwire in a few bytes, where the check's name does not fit (32 bytes of
//! registers); without it, the wire is the check's name. The guest reports `<check>` itself as
//! it saw it, if it can (it cannot see the console); a TRIPPED line after its TRAP, anywhere in
//! the run (also after END: a host may emit it late), makes the check a FAIL citing the TRAP's
//! and the line's requirements, with the line's message, and the test's verdict at least a
//! FAIL. The guest's END is held against its own checks only, as the guest knows no more. A
//! TRIPPED line with no TRAP of its wire before it is an ERROR.
//!
//! INFO lines carry what the guest learnt about the implementation (its identity, the versions
//! and features it offers), for the runner to hold against the implementation's profile; they
//! are not checks.
//!
//! and then the guest shuts down with the END verdict's [exit code](Verdict::exit_code). The
//! runner trusts nothing it cannot cross-check ([`parse`]):
//!
//! - no BEGIN or no END line, or a VM that did not end with SYSTEM_SHUTDOWN before its END line
//!   (a fault, a crash report, a reboot, a time-out): **CRASH** (except after an open EXPECT,
//!   above);
//! - an END whose verdict is not the most severe of the checks, a shutdown code that is not the
//!   END verdict's, a malformed line, a check after END, a test name that differs, or a test
//!   with no check at all: **ERROR** (the test or the channel is broken, so nothing about the
//!   host may be concluded);
//! - otherwise the END verdict, which is the most severe check verdict.
//!
//! So a run that ends without its verdict is never a PASS, except exactly where the test
//! announced before the access or the call, with EXPECT, how the VM is to end (a guest fault,
//! SYSTEM_SHUTDOWN with a code, SYSTEM_CRASH with a message), and it ended so.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::verdict::Verdict;

/// What starts every channel line.
pub const PREFIX: &str = "pvabi-conform: ";

/// The host events a test guest can ask for (see the module documentation): the event's
/// name and the rules that (in a clause about the event) bind only a host that performs it:
/// their checks after a request become N/A when the host did not perform it.
pub const HOST_EVENTS: &[(&str, &[&str])] = &[
    ("migrate", &["PVABI-VER-013", "PVABI-TIME-010"]),
    ("tsc-offset", &["PVABI-TIME-010"]),
];

/// What a guest can see of a performed host event, to hold a host's DONE line against: the
/// event, the INFO key under which the guest reports what it saw after the request, the least
/// value that shows the event happened, the check the runner adds, and the rule it cites. A
/// check in the guest could not do it (it cannot see the DONE line, and every check after a
/// request must hold whether or not the event happened), so the runner does: a DONE with the
/// INFO value below the least is a FAIL; without a DONE the value says nothing.
pub const HOST_EVENT_WITNESSES: &[(&str, &str, u64, &str, &str)] = &[(
    "tsc-offset",
    "tsc_offset_moved",
    1 << 32,
    "host_event_tsc_offset_moved_the_counters",
    "PVABI-TIME-010",
)];

/// A request of the run: the event, whether the host said DONE, and the indices of the checks
/// reported after it (up to the next request).
struct Request {
    event: String,
    done: bool,
    checks: Vec<usize>,
}

/// Applies what the host did with the run's requests to `checks` (see the module
/// documentation) and records each in `info`.
fn resolve_requests(
    test: &str,
    requests: &[Request],
    checks: &mut Vec<Check>,
    info: &mut BTreeMap<String, String>,
) {
    // An event counts as performed only if every request of it was (a profile that claims it
    // fails on one that was not).
    for r in requests {
        let key = format!("host_event.{}", r.event);
        let done = r.done && info.get(&key).is_none_or(|v| v == "1");
        info.insert(key, u8::from(done).to_string());
    }
    for &(event, key, least, name, rule) in HOST_EVENT_WITNESSES {
        if !requests.iter().any(|r| r.event == event && r.done) {
            continue;
        }
        let seen = info
            .get(key)
            .and_then(|v| u64::from_str_radix(v.trim_start_matches("0x"), 16).ok());
        let (verdict, message) = match seen {
            Some(v) if v >= least => (Verdict::Pass, None),
            Some(v) => (
                Verdict::Fail,
                Some(format!(
                    "the host wrote DONE {event}, but the guest saw {key} = {v:#x}, less than {least:#x}: the event did not happen as the host said"
                )),
            ),
            None => (
                Verdict::Fail,
                Some(format!(
                    "the host wrote DONE {event}, but the guest reported no INFO {key} to hold it against"
                )),
            ),
        };
        checks.push(Check::new(
            format!("{test}.{name}"),
            verdict,
            &[rule],
            message,
        ));
    }
    for r in requests {
        if r.done {
            continue;
        }
        let Some(&(_, binds)) = HOST_EVENTS.iter().find(|(e, _)| *e == r.event) else {
            continue;
        };
        for &i in &r.checks {
            let c = &mut checks[i];
            if c.requirements.is_empty()
                || !c.requirements.iter().all(|id| binds.contains(&id.as_str()))
            {
                continue;
            }
            let before = c
                .message
                .take()
                .map_or(String::new(), |m| format!(" ({m})"));
            c.verdict = Verdict::Pass;
            c.not_applicable = true;
            c.warning = false;
            c.message = Some(format!(
                "the host did not perform the requested `{}` (no DONE line): the rule's clause about it binds only a host that does{before}",
                r.event
            ));
        }
    }
}

/// How the VM of a test run ended, as the runner saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunEnd {
    /// SYSTEM_SHUTDOWN with this code.
    Shutdown(u32),
    /// SYSTEM_REBOOT.
    Reboot,
    /// SYSTEM_CRASH with this message.
    Crash(String),
    /// The VMM ended it: a fault, a time-out, a VMM that exited without a report.
    Fault(String),
    /// The host ended the VM because of a fault of the guest (an access outside guest RAM, a
    /// triple fault): the one end that meets an EXPECT (see the module documentation). Never
    /// a time-out or an error of the VMM itself.
    GuestFault(String),
    /// The host refused to start the image: no instruction of it ran (PVABI-PLAT-005).
    Refused(String),
    /// An external VMM exited with a status that nothing says the meaning of (no profile
    /// names the status of a guest fault): after an EXPECT the check is a SKIP, otherwise
    /// the run is a CRASH.
    Undetermined(String),
}

/// One check a test made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// Its name, `<test>.<check>` by convention.
    pub name: String,
    /// Its verdict.
    pub verdict: Verdict,
    /// The requirement IDs it checks.
    pub requirements: Vec<String>,
    /// What the guest said about it (a FAIL's observed and expected values, a SKIP's reason).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// A check of a SHOULD or MAY rule that did not hold (the channel's WARN): its `verdict`
    /// is PASS, so that it does not fail the test, and the report shows each rule it cites as
    /// a warning; a MUST or MUST NOT it cites is a FAIL all the same.
    #[serde(default, skip_serializing_if = "is_false")]
    pub warning: bool,
    /// A check of a conditional rule whose condition the implementation does not meet, by what
    /// it reported (the channel's N/A): its `verdict` is PASS, so that it does not change the
    /// test's verdict, and the report shows each rule it cites as not applicable unless another
    /// check of that rule ran.
    #[serde(default, skip_serializing_if = "is_false")]
    pub not_applicable: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Check {
    /// A check with this verdict of the rules `requirements`, with what was seen (`message`);
    /// neither a warning nor not applicable (set [`warning`](Self::warning) or
    /// [`not_applicable`](Self::not_applicable) for those).
    ///
    /// ```
    /// use pvabi_conformance::{Check, Verdict};
    ///
    /// let c = Check::new("base.spec_version", Verdict::Pass, &["PVABI-BASE-001"], None);
    /// assert_eq!(c.requirements, ["PVABI-BASE-001"]);
    /// assert!(!c.warning && !c.not_applicable);
    /// ```
    pub fn new(
        name: impl Into<String>,
        verdict: Verdict,
        requirements: &[&str],
        message: Option<String>,
    ) -> Check {
        Check {
            name: name.into(),
            verdict,
            requirements: requirements.iter().map(|&r| r.to_owned()).collect(),
            message,
            warning: false,
            not_applicable: false,
        }
    }
}

/// The result of one test run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestResult {
    /// The test's name.
    pub test: String,
    /// Its verdict (see the module documentation for how it is decided).
    pub verdict: Verdict,
    /// Every check it reported, in order.
    pub checks: Vec<Check>,
    /// Why the verdict is not simply the guest's END verdict (CRASH and ERROR), if so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// How the VM ended.
    pub end: RunEnd,
    /// What the test's INFO lines said about the implementation (`key` → `value`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub info: BTreeMap<String, String>,
}

/// A requirement ID: `PVABI-<PREFIX>-<NNN>`.
pub fn is_requirement_id(word: &str) -> bool {
    let mut parts = word.split('-');
    matches!(
        (parts.next(), parts.next(), parts.next(), parts.next()),
        (Some("PVABI"), Some(prefix), Some(num), None)
            if !prefix.is_empty()
                && prefix.bytes().all(|b| b.is_ascii_uppercase())
                && num.len() == 3
                && num.bytes().all(|b| b.is_ascii_digit())
    )
}

/// Parses one check line's body (after the prefix): `VERDICT name [IDs] [-- message]`.
fn parse_check(body: &str) -> Result<Check, String> {
    let (words, message) = match body.split_once(" -- ") {
        Some((w, m)) => (w, Some(m.trim().to_owned())),
        None => (body, None),
    };
    let mut words = words.split_whitespace();
    let word = words.next().ok_or("an empty channel line")?;
    let warning = word == "WARN";
    let not_applicable = word == "N/A";
    let verdict: Verdict = if warning || not_applicable {
        Verdict::Pass
    } else {
        word.parse()
            .map_err(|e: crate::verdict::NotAVerdict| e.to_string())?
    };
    if matches!(verdict, Verdict::Crash | Verdict::KnownFailure) {
        return Err(format!("a guest cannot report {verdict}"));
    }
    let name = words.next().ok_or("a check line without a check name")?;
    let requirements = requirement_ids(words)?;
    Ok(Check {
        name: name.to_owned(),
        verdict,
        requirements,
        message,
        warning,
        not_applicable,
    })
}

/// The rest of a line's words, each a requirement ID.
fn requirement_ids<'a>(words: impl Iterator<Item = &'a str>) -> Result<Vec<String>, String> {
    words
        .map(|w| {
            is_requirement_id(w)
                .then(|| w.to_owned())
                .ok_or_else(|| format!("`{w}` is not a requirement ID (PVABI-XXX-NNN)"))
        })
        .collect()
}

/// A tripwire a TRAP line declares (see the module documentation).
struct Trap {
    /// The check it fails.
    check: String,
    /// Its name in TRIPPED lines.
    wire: String,
    /// The rules the check cites.
    requirements: Vec<String>,
}

/// `<check> [<wire>] [<requirement ID> ...]`.
fn parse_trap(rest: &str) -> Result<Trap, String> {
    let mut words = rest.split_whitespace().peekable();
    let check = words.next().ok_or("a TRAP line without a check name")?;
    let wire = match words.peek() {
        Some(w) if !is_requirement_id(w) => words.next().unwrap_or(check),
        _ => check,
    };
    let requirements = requirement_ids(words)?;
    Ok(Trap {
        check: check.to_owned(),
        wire: wire.to_owned(),
        requirements,
    })
}

/// The end of the VM an EXPECT line announces (see the module documentation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExpectedEnd {
    /// `fault`: the host ends the VM because of a fault of the guest ([`RunEnd::GuestFault`]).
    Fault,
    /// `shutdown <code>`: SYSTEM_SHUTDOWN with exactly this 32-bit code ([`RunEnd::Shutdown`]).
    Shutdown(u32),
    /// `crash <message>`: SYSTEM_CRASH with exactly this message, one word of printable
    /// ASCII ([`RunEnd::Crash`]).
    Crash(String),
}

/// A 32-bit code as an EXPECT line writes it: `0x` and hex digits, or decimal.
fn parse_code(word: &str) -> Option<u32> {
    match word.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => word.parse().ok(),
    }
}

/// Parses an EXPECT line's body (after `EXPECT `): `name fault [IDs] [-- what]`,
/// `name shutdown <code> [IDs] [-- what]` or `name crash <message> [IDs] [-- what]`, as a
/// check whose verdict is CRASH until the VM's end decides it, and the end it announces.
fn parse_expect(body: &str) -> Result<(Check, ExpectedEnd), String> {
    let (words, message) = match body.split_once(" -- ") {
        Some((w, m)) => (w, Some(m.trim().to_owned())),
        None => (body, None),
    };
    let mut words = words.split_whitespace();
    let name = words.next().ok_or("an EXPECT line without a check name")?;
    let expected = match words.next() {
        Some("fault") => ExpectedEnd::Fault,
        Some("shutdown") => {
            let word = words.next().ok_or("an EXPECT shutdown without its code")?;
            ExpectedEnd::Shutdown(
                parse_code(word).ok_or_else(|| format!("`{word}` is not a 32-bit code"))?,
            )
        }
        Some("crash") => {
            let word = words.next().ok_or("an EXPECT crash without its message")?;
            ExpectedEnd::Crash(word.to_owned())
        }
        Some(other) => {
            return Err(format!(
                "`{other}` is not an expected end (only `fault`, `shutdown` and `crash` are)"
            ))
        }
        None => return Err("an EXPECT line without the end it expects".into()),
    };
    let requirements = requirement_ids(words)?;
    Ok((
        Check {
            name: name.to_owned(),
            verdict: Verdict::Crash,
            requirements,
            message,
            warning: false,
            not_applicable: false,
        },
        expected,
    ))
}

/// The result of a run whose last channel line is the EXPECT of `checks[i]`, announcing
/// `expected`: PASS for that check only if the VM ended so (a guest fault; SYSTEM_SHUTDOWN
/// with exactly the code; SYSTEM_CRASH with exactly the message), FAIL if it ended by the
/// announced call with another code or message, SKIP if the end cannot be told, CRASH
/// otherwise; the test's verdict is then the most severe check's.
fn expected_end(
    test: &str,
    mut checks: Vec<Check>,
    i: usize,
    expected: &ExpectedEnd,
    broken: Option<String>,
    end: RunEnd,
    info: BTreeMap<String, String>,
) -> TestResult {
    let default = match expected {
        ExpectedEnd::Fault => "the access",
        ExpectedEnd::Shutdown(_) => "SYSTEM_SHUTDOWN",
        ExpectedEnd::Crash(_) => "SYSTEM_CRASH",
    };
    let what = checks[i].message.clone().unwrap_or_else(|| default.into());
    let (verdict, message, reason) = match (expected, &end) {
        (ExpectedEnd::Fault, RunEnd::GuestFault(how)) => (
            Verdict::Pass,
            format!("{what}: the VM ended by a guest fault, as announced ({how})"),
            None,
        ),
        (ExpectedEnd::Shutdown(want), RunEnd::Shutdown(got)) if got == want => (
            Verdict::Pass,
            format!("{what}: the VM ended by SYSTEM_SHUTDOWN with code {got:#x}, as announced"),
            None,
        ),
        (ExpectedEnd::Shutdown(want), RunEnd::Shutdown(got)) => (
            Verdict::Fail,
            format!("{what}: the host reported SYSTEM_SHUTDOWN's code as {got:#x}, want {want:#x}"),
            None,
        ),
        (ExpectedEnd::Crash(want), RunEnd::Crash(got)) if got == want => (
            Verdict::Pass,
            format!("{what}: the VM ended by SYSTEM_CRASH with message `{got}`, as announced"),
            None,
        ),
        (ExpectedEnd::Crash(want), RunEnd::Crash(got)) => (
            Verdict::Fail,
            format!("{what}: the host reported the crash message as {got:?}, want {want:?}"),
            None,
        ),
        (ExpectedEnd::Fault, RunEnd::Undetermined(how)) => (
            Verdict::Skip,
            format!(
                "{what}: the VM ended ({how}), and nothing says whether that is a guest fault: \
                 name the exit status of a guest fault in the profile (fault_exit_status)"
            ),
            None,
        ),
        (ExpectedEnd::Shutdown(_), RunEnd::Undetermined(how)) => (
            Verdict::Skip,
            format!(
                "{what}: the VM ended ({how}), and an exit status cannot carry all 32 bits of \
                 SYSTEM_SHUTDOWN's code"
            ),
            None,
        ),
        (ExpectedEnd::Crash(_), RunEnd::Undetermined(how)) => (
            Verdict::Skip,
            format!(
                "{what}: the VM ended ({how}), and an exit status cannot carry SYSTEM_CRASH's \
                 message"
            ),
            None,
        ),
        (expected, other) => {
            let announced = match expected {
                ExpectedEnd::Fault => "by a guest fault".to_owned(),
                ExpectedEnd::Shutdown(code) => format!("by SYSTEM_SHUTDOWN with code {code:#x}"),
                ExpectedEnd::Crash(m) => format!("by SYSTEM_CRASH with message `{m}`"),
            };
            (
                Verdict::Crash,
                format!("{what}: the guest announced it expects the VM to end {announced}"),
                Some(format!(
                    "the guest expected the VM to end {announced}, but it ended with {other:?}"
                )),
            )
        }
    };
    checks[i].verdict = verdict;
    checks[i].message = Some(message);
    let (verdict, reason) = match (broken, reason) {
        (_, Some(why)) => (Verdict::Crash, Some(why)),
        (Some(why), None) => (Verdict::Error, Some(why)),
        (None, None) => (Verdict::worst(checks.iter().map(|c| c.verdict)), None),
    };
    TestResult {
        test: test.to_owned(),
        verdict,
        checks,
        reason,
        end,
        info,
    }
}

/// The end the last channel line of `console` announces: `None` if that line is no EXPECT
/// (a malformed EXPECT counts as [`ExpectedEnd::Fault`]; [`parse`] makes it an ERROR).
pub fn expected_end_of(console: &[u8]) -> Option<ExpectedEnd> {
    let text = String::from_utf8_lossy(console);
    let body = last_guest_line(&text)?.strip_prefix("EXPECT ")?;
    Some(
        parse_expect(body)
            .map(|(_, e)| e)
            .unwrap_or(ExpectedEnd::Fault),
    )
}

/// Whether the last channel line of `console` is an EXPECT: the run's end is then what the
/// test is about, and an external runner must say whether its VMM's exit status is a guest
/// fault ([`RunEnd::GuestFault`]) or cannot tell ([`RunEnd::Undetermined`]).
pub fn awaits_end(console: &[u8]) -> bool {
    last_guest_line(&String::from_utf8_lossy(console)).is_some_and(|b| b.starts_with("EXPECT "))
}

/// The body of the last channel line the guest wrote: a TRIPPED line is the host's, and may
/// land after the guest's last line (after an EXPECT, too).
fn last_guest_line(text: &str) -> Option<&str> {
    text.lines()
        .rev()
        .filter_map(|l| l.strip_prefix(PREFIX))
        .find(|body| !body.starts_with("TRIPPED "))
}

/// Turns the console output and the end of one run of `test` into its result.
pub fn parse(test: &str, console: &[u8], end: RunEnd) -> TestResult {
    let (mut result, tripped) = parse_lines(test, console, end);
    for wire in tripped {
        match result.checks.iter_mut().find(|c| c.name == wire.name) {
            Some(check) => {
                check.verdict = Verdict::Fail;
                check.message = wire.message;
                check.warning = false;
                check.not_applicable = false;
                for r in wire.requirements {
                    if !check.requirements.contains(&r) {
                        check.requirements.push(r);
                    }
                }
            }
            None => result.checks.push(wire),
        }
        result.verdict = result.verdict.max(Verdict::Fail);
    }
    result
}

/// [`parse`] but for the tripwires: the result as the guest's own lines give it, and the
/// checks (as FAIL) whose tripwire the console shows.
fn parse_lines(test: &str, console: &[u8], end: RunEnd) -> (TestResult, Vec<Check>) {
    let text = String::from_utf8_lossy(console);
    let mut checks = Vec::new();
    let mut begun = false;
    let mut ended: Option<Verdict> = None;
    let mut broken: Option<String> = None;
    let mut info = BTreeMap::new();
    // The EXPECT line still open: the index of its check in `checks`, and the end it expects.
    let mut expecting: Option<(usize, ExpectedEnd)> = None;
    let mut expected_before = false;
    let mut requests: Vec<Request> = Vec::new();
    let mut traps: Vec<Trap> = Vec::new();
    let mut tripped: Vec<Check> = Vec::new();
    for line in text.lines() {
        let Some(body) = line.strip_prefix(PREFIX) else {
            continue;
        };
        let mut note = |why: String| {
            broken.get_or_insert(why);
        };
        if let Some(rest) = body.strip_prefix("TRIPPED ") {
            // The host's doing, not the guest's: valid wherever it lands after its TRAP.
            match parse_check(&format!("FAIL {rest}")) {
                Ok(c) => match traps.iter().find(|t| t.wire == c.name) {
                    Some(trap) if !tripped.iter().any(|t| t.name == trap.check) => {
                        let mut requirements = trap.requirements.clone();
                        requirements.extend(
                            c.requirements
                                .into_iter()
                                .filter(|r| !trap.requirements.contains(r)),
                        );
                        tripped.push(Check {
                            name: trap.check.clone(),
                            requirements,
                            message: Some(c.message.unwrap_or_else(|| {
                                format!("the host set off the tripwire `{}`", trap.wire)
                            })),
                            ..c
                        });
                    }
                    Some(_) => {}
                    None => note(format!(
                        "a TRIPPED line without its TRAP before it: `{line}`"
                    )),
                },
                Err(why) => note(format!("{why}: `{line}`")),
            }
        } else if let Some(name) = body.strip_prefix("BEGIN ") {
            if begun {
                note("a second BEGIN line".into());
            } else if name.trim() != test {
                note(format!("BEGIN names test `{}`, not `{test}`", name.trim()));
            }
            begun = true;
        } else if let Some(rest) = body.strip_prefix("END ") {
            if expecting.take().is_some() {
                note(format!(
                    "END after an EXPECT the guest did not resolve: `{line}`"
                ));
            }
            let mut words = rest.split_whitespace();
            match (words.next(), words.next().map(str::parse::<Verdict>)) {
                _ if ended.is_some() => note("a second END line".into()),
                (_, Some(Ok(v @ (Verdict::Crash | Verdict::KnownFailure)))) => {
                    note(format!("a guest cannot end with {v}: `{line}`"))
                }
                (Some(name), Some(Ok(v))) if name == test => ended = Some(v),
                (Some(name), Some(Ok(_))) => note(format!("END names test `{name}`, not `{test}`")),
                _ => note(format!("a malformed END line: `{line}`")),
            }
        } else if !begun {
            note(format!("a check before BEGIN: `{line}`"));
        } else if ended.is_some() {
            note(format!("a check after END: `{line}`"));
        } else if let Some(event) = body.strip_prefix("REQUEST ") {
            let event = event.trim();
            if HOST_EVENTS.iter().any(|(e, _)| *e == event) {
                requests.push(Request {
                    event: event.to_owned(),
                    done: false,
                    checks: Vec::new(),
                });
            } else {
                note(format!("a request of an unknown host event: `{line}`"));
            }
        } else if let Some(event) = body.strip_prefix("DONE ") {
            match requests.last_mut() {
                Some(r) if r.event == event.trim() && !r.done && r.checks.is_empty() => {
                    r.done = true
                }
                _ => note(format!(
                    "a DONE line that does not answer the request just before it: `{line}`"
                )),
            }
        } else if let Some(rest) = body.strip_prefix("TRAP ") {
            match parse_trap(rest) {
                Ok(trap) => traps.push(trap),
                Err(why) => note(format!("{why}: `{line}`")),
            }
        } else if let Some(pairs) = body.strip_prefix("INFO ") {
            for pair in pairs.split_whitespace() {
                match pair.split_once('=') {
                    Some((k, v)) if !k.is_empty() => {
                        info.insert(k.to_owned(), v.to_owned());
                    }
                    _ => note(format!("an INFO item that is not key=value: `{line}`")),
                }
            }
        } else if let Some(rest) = body.strip_prefix("EXPECT ") {
            if expected_before {
                note(format!("a second EXPECT: `{line}`"));
            }
            expected_before = true;
            match parse_expect(rest) {
                Ok((c, e)) => {
                    expecting = Some((checks.len(), e));
                    checks.push(c);
                }
                Err(why) => note(format!("{why}: `{line}`")),
            }
        } else {
            match parse_check(body) {
                Ok(c) => match expecting.take() {
                    // The guest survived the access and says how it went.
                    Some((i, _)) if checks[i].name == c.name => checks[i] = c,
                    Some(_) => note(format!(
                        "a check after an EXPECT the guest did not resolve: `{line}`"
                    )),
                    None => {
                        if let Some(r) = requests.last_mut() {
                            r.checks.push(checks.len());
                        }
                        checks.push(c)
                    }
                },
                Err(why) => note(format!("{why}: `{line}`")),
            }
        }
    }
    if let (Some((i, expected)), None) = (expecting, ended) {
        return (
            expected_end(test, checks, i, &expected, broken, end, info),
            tripped,
        );
    }
    let worst = Verdict::worst(checks.iter().map(|c| c.verdict));
    let (verdict, reason) = match (&end, ended) {
        (_, None) => (
            Verdict::Crash,
            Some(match &end {
                RunEnd::Shutdown(code) => {
                    format!("the guest shut down (code {code}) without its END line")
                }
                other => format!("no END line; the VM ended with {other:?}"),
            }),
        ),
        (RunEnd::Shutdown(code), Some(v)) => {
            if let Some(why) = broken {
                (Verdict::Error, Some(why))
            } else if checks.is_empty() {
                (Verdict::Error, Some("the test reported no check".into()))
            } else if v != worst {
                (
                    Verdict::Error,
                    Some(format!("END says {v} but the most severe check is {worst}")),
                )
            } else if *code != v.exit_code() {
                (
                    Verdict::Error,
                    Some(format!(
                        "END says {v} but the guest shut down with code {code}, not {}",
                        v.exit_code()
                    )),
                )
            } else if requests.is_empty() {
                (v, None)
            } else {
                // The guest's END agreed with its checks; what the host did with its requests
                // decides the checks made after them, and the verdict is theirs.
                resolve_requests(test, &requests, &mut checks, &mut info);
                (Verdict::worst(checks.iter().map(|c| c.verdict)), None)
            }
        }
        (other, Some(_)) => (
            Verdict::Crash,
            Some(format!(
                "the guest reported its END but then did not shut down: {other:?}"
            )),
        ),
    };
    let result = TestResult {
        test: test.to_owned(),
        verdict,
        checks,
        reason,
        end,
        info,
    };
    (result, tripped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(lines: &[&str], end: RunEnd) -> TestResult {
        let mut console = String::from("boot log that is not part of the channel\n");
        for l in lines {
            console.push_str(PREFIX);
            console.push_str(l);
            console.push('\n');
        }
        parse("t", console.as_bytes(), end)
    }

    #[test]
    fn a_clean_run_has_the_worst_check_verdict() {
        let r = run(
            &[
                "BEGIN t",
                "PASS t.a PVABI-BASE-001 PVABI-BASE-002",
                "SKIP t.b PVABI-RING-001 -- RING not offered",
                "END t SKIP",
            ],
            RunEnd::Shutdown(3),
        );
        assert_eq!((r.verdict, r.reason.as_deref()), (Verdict::Skip, None));
        assert_eq!(r.checks.len(), 2);
        assert_eq!(r.checks[1].message.as_deref(), Some("RING not offered"));
        assert_eq!(
            r.checks[0].requirements,
            ["PVABI-BASE-001", "PVABI-BASE-002"]
        );
    }

    #[test]
    fn no_end_is_a_crash_whatever_the_vm_did() {
        for end in [
            RunEnd::Shutdown(0),
            RunEnd::Fault("time-out".into()),
            RunEnd::Crash("panic".into()),
            RunEnd::Reboot,
        ] {
            let r = run(&["BEGIN t", "PASS t.a PVABI-BASE-001"], end);
            assert_eq!(r.verdict, Verdict::Crash, "{r:?}");
        }
        // Silence is a crash too, never a pass.
        assert_eq!(parse("t", b"", RunEnd::Shutdown(0)).verdict, Verdict::Crash);
    }

    #[test]
    fn an_end_without_a_clean_shutdown_is_a_crash() {
        let r = run(
            &["BEGIN t", "PASS t.a PVABI-BASE-001", "END t PASS"],
            RunEnd::Fault("triple fault".into()),
        );
        assert_eq!(r.verdict, Verdict::Crash);
    }

    #[test]
    fn an_inconsistent_channel_is_an_error_not_a_pass() {
        let cases: &[(&[&str], u32)] = &[
            // END claims PASS over a FAIL.
            (&["BEGIN t", "FAIL t.a PVABI-BASE-001", "END t PASS"], 0),
            // The shutdown code disagrees with END.
            (&["BEGIN t", "PASS t.a PVABI-BASE-001", "END t PASS"], 5),
            // No check at all.
            (&["BEGIN t", "END t PASS"], 0),
            // A malformed requirement ID.
            (&["BEGIN t", "PASS t.a BASE-1", "END t PASS"], 0),
            // An unknown verdict word, and a guest-claimed CRASH.
            (&["BEGIN t", "MAYBE t.a", "END t PASS"], 0),
            (&["BEGIN t", "CRASH t.a", "END t PASS"], 0),
            // A check after END, another test's name.
            (&["BEGIN t", "PASS t.a", "END t PASS", "FAIL t.b"], 0),
            (&["BEGIN u", "PASS t.a", "END t PASS"], 0),
            (&["PASS t.a", "BEGIN t", "END t PASS"], 0),
        ];
        for (lines, code) in cases {
            let r = run(lines, RunEnd::Shutdown(*code));
            assert_eq!(r.verdict, Verdict::Error, "{lines:?}: {r:?}");
            assert!(r.reason.is_some());
        }
    }

    #[test]
    fn a_failing_test_fails() {
        let r = run(
            &[
                "BEGIN t",
                "PASS t.a PVABI-BASE-001",
                "FAIL t.b PVABI-STAT-001 -- rax = 0x3, want 0x1",
                "END t FAIL",
            ],
            RunEnd::Shutdown(5),
        );
        assert_eq!((r.verdict, r.reason), (Verdict::Fail, None));
    }

    #[test]
    fn a_warning_does_not_fail_the_test() {
        let r = run(
            &[
                "BEGIN t",
                "PASS t.a PVABI-BASE-001",
                "WARN t.b PVABI-DISC-009 -- doorbell at 0x600, want 0x510",
                "END t PASS",
            ],
            RunEnd::Shutdown(0),
        );
        assert_eq!((r.verdict, r.reason.as_deref()), (Verdict::Pass, None));
        assert!(!r.checks[0].warning);
        assert!(r.checks[1].warning);
        assert_eq!(r.checks[1].verdict, Verdict::Pass);
        assert_eq!(r.checks[1].requirements, ["PVABI-DISC-009"]);
        // WARN is not a test verdict: an END with it is no END, never a PASS.
        let r = run(
            &["BEGIN t", "WARN t.b PVABI-DISC-009", "END t WARN"],
            RunEnd::Shutdown(0),
        );
        assert_eq!(r.verdict, Verdict::Crash);
    }

    #[test]
    fn a_rule_that_does_not_apply_passes_the_test_and_is_marked() {
        let r = run(
            &[
                "BEGIN t",
                "PASS t.a PVABI-BASE-001",
                "N/A t.b PVABI-CONV-011 -- the transport leaf advertises no vmcall binding",
                "END t PASS",
            ],
            RunEnd::Shutdown(0),
        );
        assert_eq!((r.verdict, r.reason.as_deref()), (Verdict::Pass, None));
        assert!(!r.checks[0].not_applicable);
        assert!(r.checks[1].not_applicable && !r.checks[1].warning);
        assert_eq!(r.checks[1].verdict, Verdict::Pass);
        assert_eq!(r.checks[1].requirements, ["PVABI-CONV-011"]);
        // N/A is not a test verdict either.
        let r = run(
            &["BEGIN t", "N/A t.b PVABI-CONV-011", "END t N/A"],
            RunEnd::Shutdown(0),
        );
        assert_eq!(r.verdict, Verdict::Crash);
    }

    const EXPECTING: &[&str] = &[
        "BEGIN t",
        "PASS t.a PVABI-BASE-001",
        "EXPECT t.beyond_ram fault PVABI-PLAT-003 -- a read of 0x4000000",
    ];

    #[test]
    fn an_announced_fault_passes_only_if_the_vm_ends_by_a_guest_fault() {
        let r = run(
            EXPECTING,
            RunEnd::GuestFault("MMIO read of 0x4000000".into()),
        );
        assert_eq!(
            (r.verdict, r.reason.as_deref()),
            (Verdict::Pass, None),
            "{r:?}"
        );
        assert_eq!(r.checks.len(), 2);
        assert_eq!(r.checks[1].name, "t.beyond_ram");
        assert_eq!(r.checks[1].verdict, Verdict::Pass);
        assert_eq!(r.checks[1].requirements, ["PVABI-PLAT-003"]);
        // The other checks still count: the worst wins.
        let mut failing = EXPECTING.to_vec();
        failing[1] = "FAIL t.a PVABI-BASE-001";
        let r = run(&failing, RunEnd::GuestFault("triple fault".into()));
        assert_eq!(r.verdict, Verdict::Fail, "{r:?}");
        // Every other end after the EXPECT is a CRASH: a host that hangs, shuts down,
        // reboots, reports a crash or fails itself has not ended the VM by a guest fault.
        for end in [
            RunEnd::Fault("timeout: the guest was still running after 60.0 s".into()),
            RunEnd::Shutdown(0),
            RunEnd::Reboot,
            RunEnd::Crash("panic".into()),
            RunEnd::Fault("`vmm` was killed by a signal".into()),
        ] {
            let r = run(EXPECTING, end.clone());
            assert_eq!(r.verdict, Verdict::Crash, "{end:?}: {r:?}");
            assert_eq!(r.checks[1].verdict, Verdict::Crash, "{end:?}");
            assert!(r.reason.is_some());
        }
        // An end nobody can classify (an external VMM's unmapped status) is a SKIP, never a PASS.
        let r = run(EXPECTING, RunEnd::Undetermined("exit status 133".into()));
        assert_eq!(r.verdict, Verdict::Skip, "{r:?}");
        assert!(r.checks[1]
            .message
            .as_deref()
            .unwrap()
            .contains("fault_exit_status"));
    }

    #[test]
    fn a_guest_fault_without_an_announcement_is_still_a_crash() {
        for lines in [
            &["BEGIN t", "PASS t.a PVABI-BASE-001"][..],
            &["BEGIN t", "PASS t.a PVABI-BASE-001", "END t PASS"][..],
            // An EXPECT the guest resolved is no longer open.
            &[
                "BEGIN t",
                "EXPECT t.b fault PVABI-PLAT-003",
                "PASS t.b PVABI-PLAT-003",
            ][..],
            &[],
        ] {
            for end in [
                RunEnd::GuestFault("triple fault".into()),
                RunEnd::Undetermined("exit status 133".into()),
            ] {
                let r = run(lines, end);
                assert_eq!(r.verdict, Verdict::Crash, "{lines:?}: {r:?}");
            }
        }
    }

    #[test]
    fn a_guest_that_survives_the_access_fails_itself() {
        let r = run(
            &[
                "BEGIN t",
                "PASS t.a PVABI-BASE-001",
                "EXPECT t.beyond_ram fault PVABI-PLAT-003",
                "FAIL t.beyond_ram PVABI-PLAT-003 -- got 0x0, want the VM ended",
                "END t FAIL",
            ],
            RunEnd::Shutdown(5),
        );
        assert_eq!(
            (r.verdict, r.reason.as_deref()),
            (Verdict::Fail, None),
            "{r:?}"
        );
        assert_eq!(r.checks.len(), 2);
        assert_eq!(r.checks[1].verdict, Verdict::Fail);
    }

    #[test]
    fn a_broken_expectation_is_an_error() {
        let cases: &[&[&str]] = &[
            // Another check, or END, while the EXPECT is open.
            &["BEGIN t", "EXPECT t.b fault", "PASS t.c", "END t PASS"],
            &["BEGIN t", "PASS t.a", "EXPECT t.b fault", "END t PASS"],
            // An unknown end, a malformed ID, a second EXPECT.
            &["BEGIN t", "PASS t.a", "EXPECT t.b reboot", "END t PASS"],
            &[
                "BEGIN t",
                "PASS t.a",
                "EXPECT t.b fault PLAT-3",
                "END t PASS",
            ],
            &[
                "BEGIN t",
                "EXPECT t.b fault",
                "FAIL t.b",
                "EXPECT t.b fault",
                "FAIL t.b",
                "END t FAIL",
            ],
        ];
        for lines in cases {
            let r = run(lines, RunEnd::Shutdown(0));
            assert_eq!(r.verdict, Verdict::Error, "{lines:?}: {r:?}");
        }
        // A malformed line before an open EXPECT is an ERROR even when the VM faulted.
        let r = run(
            &["BEGIN t", "MAYBE t.a", "EXPECT t.b fault"],
            RunEnd::GuestFault("triple fault".into()),
        );
        assert_eq!(r.verdict, Verdict::Error, "{r:?}");
        assert!(awaits_end(
            b"pvabi-conform: BEGIN t\npvabi-conform: EXPECT t.b fault\n"
        ));
        assert!(!awaits_end(
            b"pvabi-conform: EXPECT t.b fault\npvabi-conform: FAIL t.b\n"
        ));
    }

    const SHUTTING_DOWN: &[&str] = &[
        "BEGIN t",
        "PASS t.a PVABI-BASE-001",
        "EXPECT t.shutdown shutdown 0x5eed0007 PVABI-SYS-001 -- SYSTEM_SHUTDOWN(0x5eed0007)",
    ];
    const CRASHING: &[&str] = &[
        "BEGIN t",
        "PASS t.a PVABI-BASE-001",
        "EXPECT t.crash crash conform-crash-5eed PVABI-SYS-005",
    ];

    #[test]
    fn an_announced_shutdown_passes_only_with_all_32_bits_of_its_code() {
        let r = run(SHUTTING_DOWN, RunEnd::Shutdown(0x5eed_0007));
        assert_eq!(
            (r.verdict, r.reason.as_deref()),
            (Verdict::Pass, None),
            "{r:?}"
        );
        assert_eq!(r.checks[1].verdict, Verdict::Pass);
        assert_eq!(r.checks[1].requirements, ["PVABI-SYS-001"]);
        // The same code in decimal.
        let mut decimal = SHUTTING_DOWN.to_vec();
        decimal[2] = "EXPECT t.shutdown shutdown 1592590343 PVABI-SYS-001";
        assert_eq!(
            run(&decimal, RunEnd::Shutdown(0x5eed_0007)).verdict,
            Verdict::Pass
        );
        // A wrong code, a code truncated to its low 8 or 16 bits: a FAIL that names both.
        for got in [0x5eed_0008, 0x07, 0x0007, 0x5eed, 0] {
            let r = run(SHUTTING_DOWN, RunEnd::Shutdown(got));
            assert_eq!(r.verdict, Verdict::Fail, "{got:#x}: {r:?}");
            assert_eq!(r.checks[1].verdict, Verdict::Fail);
            assert!(r.checks[1]
                .message
                .as_deref()
                .unwrap()
                .contains("0x5eed0007"));
        }
        // Any other end: a crash report instead, a reboot, a time-out, a guest fault.
        for end in [
            RunEnd::Crash("0x5eed0007".into()),
            RunEnd::Reboot,
            RunEnd::Fault("timeout: the guest was still running after 60.0 s".into()),
            RunEnd::GuestFault("triple fault".into()),
        ] {
            let r = run(SHUTTING_DOWN, end.clone());
            assert_eq!(r.verdict, Verdict::Crash, "{end:?}: {r:?}");
            assert_eq!(r.checks[1].verdict, Verdict::Crash);
        }
        // An external VMM's exit status: a SKIP that says why, never a PASS.
        let r = run(SHUTTING_DOWN, RunEnd::Undetermined("exit status 7".into()));
        assert_eq!(r.verdict, Verdict::Skip, "{r:?}");
        assert!(r.checks[1].message.as_deref().unwrap().contains("32 bits"));
        // A guest whose SYSTEM_SHUTDOWN returned reports the check itself.
        let mut returned = SHUTTING_DOWN.to_vec();
        returned.extend([
            "FAIL t.shutdown PVABI-SYS-001 -- SYSTEM_SHUTDOWN returned",
            "END t FAIL",
        ]);
        let r = run(&returned, RunEnd::Shutdown(5));
        assert_eq!(
            (r.verdict, r.reason.as_deref()),
            (Verdict::Fail, None),
            "{r:?}"
        );
        // Any other channel line after the EXPECT is not a PASS, whatever the end.
        let mut more = SHUTTING_DOWN.to_vec();
        more.push("PASS t.other");
        let r = run(&more, RunEnd::Shutdown(0x5eed_0007));
        assert_ne!(r.verdict, Verdict::Pass, "{r:?}");
    }

    /// A run that sets a tripwire for `t.copy`, with `tripped` (the host's bytes) at `at`.
    fn trap_run(tripped: &str, at: usize) -> TestResult {
        let mut lines = vec![
            "BEGIN t",
            "TRAP t.copy",
            "PASS t.copy PVABI-CON-006",
            "PASS t.other PVABI-CON-001",
            "END t PASS",
        ];
        lines.insert(at, tripped);
        run(&lines, RunEnd::Shutdown(0))
    }

    #[test]
    fn an_untripped_wire_leaves_the_guests_verdicts() {
        let r = run(
            &[
                "BEGIN t",
                "TRAP t.copy",
                "PASS t.copy PVABI-CON-006",
                "END t PASS",
            ],
            RunEnd::Shutdown(0),
        );
        assert_eq!((r.verdict, r.reason.as_deref()), (Verdict::Pass, None));
        assert_eq!(r.checks.len(), 1);
    }

    #[test]
    fn a_tripped_wire_fails_its_check_and_the_test_wherever_it_lands() {
        let wire = "TRIPPED t.copy PVABI-CON-006 -- emitted after the call";
        // Before the guest's own line of the check, after it, and after END (a late host).
        for at in [2, 3, 4, 5] {
            let r = trap_run(wire, at);
            assert_eq!(
                (r.verdict, r.reason.as_deref()),
                (Verdict::Fail, None),
                "at {at}"
            );
            assert_eq!(r.checks.len(), 2, "at {at}");
            let copy = &r.checks[0];
            assert_eq!(
                (copy.name.as_str(), copy.verdict, copy.message.as_deref()),
                ("t.copy", Verdict::Fail, Some("emitted after the call")),
                "at {at}"
            );
            assert_eq!(copy.requirements, ["PVABI-CON-006"]);
            assert_eq!(r.checks[1].verdict, Verdict::Pass);
        }
    }

    #[test]
    fn a_tripped_wire_without_its_trap_is_an_error() {
        // Before its TRAP, and for a check no TRAP declared.
        for (wire, at) in [
            ("TRIPPED t.copy PVABI-CON-006", 1),
            ("TRIPPED t.other PVABI-CON-001", 3),
        ] {
            let r = trap_run(wire, at);
            assert_eq!(r.verdict, Verdict::Error, "{wire} at {at}");
            assert!(
                r.reason.as_deref().unwrap().contains("without its TRAP"),
                "{:?}",
                r.reason
            );
        }
        let r = trap_run("TRAP t.x wire not-an-id", 2);
        assert_eq!(r.verdict, Verdict::Error);
    }

    #[test]
    fn a_tripped_wire_after_an_expect_leaves_the_expect_the_last_line() {
        let console = format!(
            "{PREFIX}BEGIN t\n{PREFIX}TRAP t.copy\n{PREFIX}EXPECT t.end fault PVABI-PLAT-003\n\
             {PREFIX}TRIPPED t.copy\n"
        );
        assert!(awaits_end(console.as_bytes()));
        assert_eq!(
            expected_end_of(console.as_bytes()),
            Some(ExpectedEnd::Fault)
        );
        let r = parse("t", console.as_bytes(), RunEnd::GuestFault("#PF".into()));
        assert_eq!(r.verdict, Verdict::Fail, "{r:?}");
        assert_eq!(r.checks[0].verdict, Verdict::Pass, "the EXPECT held");
    }

    #[test]
    fn a_short_wire_fails_its_check_with_the_traps_requirements() {
        // The check's own line never arrived (the host's extra bytes broke it up).
        let r = run(
            &[
                "BEGIN t",
                "TRAP t.regs_emit_only_length r PVABI-CON-005 PVABI-CON-002",
                "TRIPPED r",
                "TRIPPED r",
                "PASS t.other PVABI-CON-001",
                "END t PASS",
            ],
            RunEnd::Shutdown(0),
        );
        assert_eq!((r.verdict, r.reason.as_deref()), (Verdict::Fail, None));
        assert_eq!(r.checks.len(), 2, "{:?}", r.checks);
        let regs = &r.checks[1];
        assert_eq!(
            (regs.name.as_str(), regs.verdict, regs.message.as_deref()),
            (
                "t.regs_emit_only_length",
                Verdict::Fail,
                Some("the host set off the tripwire `r`")
            )
        );
        assert_eq!(regs.requirements, ["PVABI-CON-005", "PVABI-CON-002"]);
    }

    #[test]
    fn an_announced_crash_passes_only_with_exactly_its_message() {
        let r = run(CRASHING, RunEnd::Crash("conform-crash-5eed".into()));
        assert_eq!(
            (r.verdict, r.reason.as_deref()),
            (Verdict::Pass, None),
            "{r:?}"
        );
        assert_eq!(r.checks[1].verdict, Verdict::Pass);
        assert_eq!(r.checks[1].requirements, ["PVABI-SYS-005"]);
        // A wrong, cut, or padded message: a FAIL.
        for got in [
            "conform-crash-5eee",
            "conform-",
            "",
            "conform-crash-5eed\0",
            "conform-crash-5eed\n",
        ] {
            let r = run(CRASHING, RunEnd::Crash(got.into()));
            assert_eq!(r.verdict, Verdict::Fail, "{got:?}: {r:?}");
        }
        // A shutdown instead of the crash report, a reboot, a time-out: CRASH.
        for end in [
            RunEnd::Shutdown(0),
            RunEnd::Shutdown(6),
            RunEnd::Reboot,
            RunEnd::Fault("timeout: the guest was still running after 60.0 s".into()),
            RunEnd::GuestFault("triple fault".into()),
        ] {
            let r = run(CRASHING, end.clone());
            assert_eq!(r.verdict, Verdict::Crash, "{end:?}: {r:?}");
        }
        let r = run(CRASHING, RunEnd::Undetermined("exit status 134".into()));
        assert_eq!(r.verdict, Verdict::Skip, "{r:?}");
        assert!(r.checks[1].message.as_deref().unwrap().contains("message"));
    }

    #[test]
    fn malformed_shutdown_and_crash_expectations_are_errors() {
        for lines in [
            &["BEGIN t", "PASS t.a", "EXPECT t.b shutdown"][..],
            &["BEGIN t", "PASS t.a", "EXPECT t.b shutdown 0x1_0000_0000"][..],
            &["BEGIN t", "PASS t.a", "EXPECT t.b shutdown 0x100000000"][..],
            &["BEGIN t", "PASS t.a", "EXPECT t.b shutdown seven"][..],
            &["BEGIN t", "PASS t.a", "EXPECT t.b crash"][..],
        ] {
            let r = run(lines, RunEnd::Shutdown(0));
            assert_eq!(r.verdict, Verdict::Crash, "{lines:?}: {r:?}");
            let mut ended = lines.to_vec();
            ended.push("END t PASS");
            let r = run(&ended, RunEnd::Shutdown(0));
            assert_eq!(r.verdict, Verdict::Error, "{lines:?}: {r:?}");
        }
        assert_eq!(
            expected_end_of(b"pvabi-conform: EXPECT t.b shutdown 0x5eed0007 PVABI-SYS-001\n"),
            Some(ExpectedEnd::Shutdown(0x5eed_0007))
        );
        assert_eq!(
            expected_end_of(b"pvabi-conform: EXPECT t.b crash boom -- what\n"),
            Some(ExpectedEnd::Crash("boom".into()))
        );
        assert_eq!(
            expected_end_of(b"pvabi-conform: EXPECT t.b fault\n"),
            Some(ExpectedEnd::Fault)
        );
        assert_eq!(expected_end_of(b"pvabi-conform: PASS t.b\n"), None);
    }

    #[test]
    fn a_request_the_host_did_not_perform_leaves_its_rules_not_applicable() {
        let lines: &[&str] = &[
            "BEGIN t",
            "PASS t.before PVABI-VER-013",
            "REQUEST migrate",
            "PASS t.kept PVABI-VER-013",
            "FAIL t.page PVABI-TIME-010 -- got 0x1, want 0x2",
            "PASS t.other PVABI-TIME-027 PVABI-TIME-010",
            "END t FAIL",
        ];
        // Not performed: the VER-013 and TIME-010 checks after the request are N/A (whatever
        // the guest saw), the checks before it and those citing other rules stay.
        let r = run(lines, RunEnd::Shutdown(5));
        assert_eq!(
            (r.verdict, r.reason.as_deref()),
            (Verdict::Pass, None),
            "{r:#?}"
        );
        assert!(!r.checks[0].not_applicable);
        assert!(r.checks[1].not_applicable && r.checks[1].verdict == Verdict::Pass);
        assert!(r.checks[2].not_applicable && r.checks[2].verdict == Verdict::Pass);
        assert!(r.checks[2].message.as_deref().unwrap().contains("got 0x1"));
        assert_eq!(r.checks[3].verdict, Verdict::Pass);
        assert_eq!(r.info["host_event.migrate"], "0");
        // Performed: the checks stand, the FAIL fails.
        let mut done = lines.to_vec();
        done.insert(3, "DONE migrate");
        let r = run(&done, RunEnd::Shutdown(5));
        assert_eq!(
            (r.verdict, r.reason.as_deref()),
            (Verdict::Fail, None),
            "{r:#?}"
        );
        assert_eq!(r.info["host_event.migrate"], "1");
        assert!(!r.checks[1].not_applicable);
        // Two requests of one event, one of them unanswered: not performed.
        let mut twice = done.clone();
        twice.insert(6, "REQUEST migrate");
        let r = run(&twice, RunEnd::Shutdown(5));
        assert_eq!(r.info["host_event.migrate"], "0", "{r:#?}");
        // A DONE held against what the guest saw: the runner adds the witness's check.
        for (moved, want) in [("0x100000000", Verdict::Pass), ("0x10", Verdict::Fail)] {
            let info = format!("INFO tsc_offset_moved={moved}");
            let lines = [
                "BEGIN t",
                "REQUEST tsc-offset",
                "DONE tsc-offset",
                &info,
                "PASS t.page PVABI-TIME-010",
                "END t PASS",
            ];
            let r = run(&lines, RunEnd::Shutdown(0));
            let c = r.checks.last().unwrap();
            assert_eq!(c.name, "t.host_event_tsc_offset_moved_the_counters");
            assert_eq!((c.verdict, r.verdict), (want, want), "{r:#?}");
        }
        // Without the DONE, what the guest saw says nothing: no check is added.
        let lines = [
            "BEGIN t",
            "REQUEST tsc-offset",
            "INFO tsc_offset_moved=0x10",
            "PASS t.page PVABI-TIME-010",
            "END t PASS",
        ];
        let r = run(&lines, RunEnd::Shutdown(0));
        assert_eq!(r.checks.len(), 1, "{r:#?}");
        assert_eq!(r.verdict, Verdict::Pass);
        // A DONE that answers no request just before it, an unknown event: ERROR.
        for bad in [
            &["BEGIN t", "DONE migrate", "PASS t.a", "END t PASS"][..],
            &[
                "BEGIN t",
                "REQUEST migrate",
                "PASS t.a",
                "DONE migrate",
                "END t PASS",
            ],
            &[
                "BEGIN t",
                "REQUEST tsc-offset",
                "DONE migrate",
                "PASS t.a",
                "END t PASS",
            ],
            &["BEGIN t", "REQUEST reboot", "PASS t.a", "END t PASS"],
        ] {
            let r = run(bad, RunEnd::Shutdown(0));
            assert_eq!(r.verdict, Verdict::Error, "{bad:?}: {r:#?}");
        }
    }

    #[test]
    fn requirement_ids() {
        assert!(is_requirement_id("PVABI-BASE-001"));
        assert!(is_requirement_id("PVABI-X-999"));
        for bad in [
            "PVABI-base-001",
            "PVABI-BASE-01",
            "PVABI--001",
            "BASE-001",
            "PVABI-BASE-001-2",
        ] {
            assert!(!is_requirement_id(bad), "{bad}");
        }
    }
}
