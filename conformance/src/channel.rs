//! The verdict channel: how a test guest reports, and how its run becomes a [`TestResult`].
//!
//! A test guest writes lines to the pvabi console (CONSOLE_WRITE) and ends with
//! SYSTEM_SHUTDOWN. Lines that do not start with [`PREFIX`] are free-form log and ignored. The
//! others are, in this order:
//!
//! ```text
//! pvabi-conform: BEGIN <test>
//! pvabi-conform: <PASS|SKIP|ERROR|FAIL|WARN> <check> [<requirement ID> ...] [-- <message>]
//! pvabi-conform: INFO <key>=<value> ...
//! ...
//! pvabi-conform: END <test> <verdict>
//! ```
//!
//! INFO lines carry what the guest learnt about the implementation (its identity, the versions
//! and features it offers), for the runner to hold against the implementation's profile; they
//! are not checks.
//!
//! WARN is a check of a SHOULD (or MAY) rule that the implementation does not meet: it is
//! kept as a failed check, so that the rule's verdict in the report is a warning
//! ([`crate::report::RequirementVerdict::Warning`]), but it does not count towards the test's
//! verdict (a conforming host may leave a SHOULD unmet); its message starts with
//! [`WARNING`]. A WARN line cites SHOULD and MAY rules only.
//!
//! and then the guest shuts down with the END verdict's [exit code](Verdict::exit_code). The
//! runner trusts nothing it cannot cross-check ([`parse`]):
//!
//! - no BEGIN or no END line, or a VM that did not end with SYSTEM_SHUTDOWN before its END line
//!   (a fault, a crash report, a reboot, a time-out): **CRASH**;
//! - an END whose verdict is not the most severe of the checks, a shutdown code that is not the
//!   END verdict's, a malformed line, a check after END, a test name that differs, or a test
//!   with no check at all: **ERROR** (the test or the channel is broken, so nothing about the
//!   host may be concluded);
//! - otherwise the END verdict, which is the most severe check verdict.
//!
//! So a run that ends without its verdict is never a PASS.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::verdict::Verdict;

/// What starts every channel line.
pub const PREFIX: &str = "pvabi-conform: ";

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

/// How the message of a WARN check starts (see the module documentation).
pub const WARNING: &str = "warning: a SHOULD not met";

impl Check {
    /// Whether this is a WARN check: a SHOULD or MAY not met, which fails no test.
    pub fn is_warning(&self) -> bool {
        self.verdict == Verdict::Fail
            && self
                .message
                .as_deref()
                .is_some_and(|m| m.starts_with(WARNING))
    }
}

/// Parses one check line's body (after the prefix): `VERDICT name [IDs] [-- message]`.
fn parse_check(body: &str) -> Result<Check, String> {
    if let Some(rest) = body.strip_prefix("WARN ") {
        let mut c = parse_check(&format!("FAIL {rest}"))?;
        c.message = Some(match c.message {
            Some(m) => format!("{WARNING}: {m}"),
            None => WARNING.to_owned(),
        });
        return Ok(c);
    }
    let (words, message) = match body.split_once(" -- ") {
        Some((w, m)) => (w, Some(m.trim().to_owned())),
        None => (body, None),
    };
    let mut words = words.split_whitespace();
    let verdict: Verdict = words
        .next()
        .ok_or("an empty channel line")?
        .parse()
        .map_err(|e: crate::verdict::NotAVerdict| e.to_string())?;
    if matches!(verdict, Verdict::Crash | Verdict::KnownFailure) {
        return Err(format!("a guest cannot report {verdict}"));
    }
    let name = words.next().ok_or("a check line without a check name")?;
    let mut requirements = Vec::new();
    for w in words {
        if !is_requirement_id(w) {
            return Err(format!("`{w}` is not a requirement ID (PVABI-XXX-NNN)"));
        }
        requirements.push(w.to_owned());
    }
    Ok(Check {
        name: name.to_owned(),
        verdict,
        requirements,
        message,
    })
}

/// Turns the console output and the end of one run of `test` into its result.
pub fn parse(test: &str, console: &[u8], end: RunEnd) -> TestResult {
    let text = String::from_utf8_lossy(console);
    let mut checks = Vec::new();
    let mut begun = false;
    let mut ended: Option<Verdict> = None;
    let mut broken: Option<String> = None;
    let mut info = BTreeMap::new();
    for line in text.lines() {
        let Some(body) = line.strip_prefix(PREFIX) else {
            continue;
        };
        let mut note = |why: String| {
            broken.get_or_insert(why);
        };
        if let Some(name) = body.strip_prefix("BEGIN ") {
            if begun {
                note("a second BEGIN line".into());
            } else if name.trim() != test {
                note(format!("BEGIN names test `{}`, not `{test}`", name.trim()));
            }
            begun = true;
        } else if let Some(rest) = body.strip_prefix("END ") {
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
        } else if let Some(pairs) = body.strip_prefix("INFO ") {
            for pair in pairs.split_whitespace() {
                match pair.split_once('=') {
                    Some((k, v)) if !k.is_empty() => {
                        info.insert(k.to_owned(), v.to_owned());
                    }
                    _ => note(format!("an INFO item that is not key=value: `{line}`")),
                }
            }
        } else {
            match parse_check(body) {
                Ok(c) => checks.push(c),
                Err(why) => note(format!("{why}: `{line}`")),
            }
        }
    }
    let worst = Verdict::worst(checks.iter().filter(|c| !c.is_warning()).map(|c| c.verdict));
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
            } else {
                (v, None)
            }
        }
        (other, Some(_)) => (
            Verdict::Crash,
            Some(format!(
                "the guest reported its END but then did not shut down: {other:?}"
            )),
        ),
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
    fn a_warn_line_is_a_failed_check_that_fails_no_test() {
        let r = run(
            &[
                "BEGIN t",
                "PASS t.a PVABI-BASE-001",
                "WARN t.b PVABI-TIME-018 -- got 0x5, want 0x1",
                "END t PASS",
            ],
            RunEnd::Shutdown(0),
        );
        assert_eq!((r.verdict, r.reason.as_deref()), (Verdict::Pass, None));
        let warn = &r.checks[1];
        assert!(warn.is_warning(), "{warn:?}");
        assert_eq!(warn.verdict, Verdict::Fail);
        assert_eq!(
            warn.message.as_deref(),
            Some("warning: a SHOULD not met: got 0x5, want 0x1")
        );
        assert!(!r.checks[0].is_warning());
        // A warning is no excuse for an END that hides a real failure.
        let r = run(
            &[
                "BEGIN t",
                "WARN t.b PVABI-TIME-018",
                "FAIL t.c PVABI-TIME-001",
                "END t PASS",
            ],
            RunEnd::Shutdown(0),
        );
        assert_eq!(r.verdict, Verdict::Error, "{r:?}");
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
