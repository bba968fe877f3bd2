//! Results traced to the specification's requirements, and the report formats.
//!
//! Every check names the requirement IDs it checks; [`trace`] turns the results of a run into
//! one entry per requirement of the specification with the tests that check it and its
//! verdict, so that a MUST without a test is visible (and a build test can forbid it). Levels
//! decide what a failure means: a failed MUST or MUST NOT is a FAIL, a failed SHOULD or
//! SHOULD NOT is a warning, a MAY is only exercised; a rule that binds the specification's
//! maintainers (a process rule) is not applicable to an implementation.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::channel::TestResult;
use crate::traceability::Gap;
use crate::verdict::Verdict;

/// A requirement as the specification states it (the suite's input: IDs, levels, parties).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requirement {
    /// `PVABI-<PREFIX>-<NNN>`.
    pub id: String,
    /// `MUST`, `MUST NOT`, `SHOULD`, `SHOULD NOT` or `MAY`.
    pub level: String,
    /// `host`, `guest`, `host and guest` or `specification`.
    pub party: String,
}

impl Requirement {
    /// Whether a failure of this rule fails the implementation (MUST, MUST NOT).
    pub fn is_absolute(&self) -> bool {
        self.level.starts_with("MUST")
    }

    /// Whether the rule binds the specification's maintainers rather than an implementation.
    pub fn is_process_rule(&self) -> bool {
        self.party == "specification"
    }
}

/// What a run says about one requirement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RequirementVerdict {
    /// Every check of it passed.
    Pass,
    /// A check of a MUST or MUST NOT failed.
    Fail,
    /// A check of a SHOULD, SHOULD NOT or MAY failed: reported, not failed.
    Warning,
    /// A check of it failed, and the implementation's profile lists that failure as known
    /// (for this implementation id and version, with a reason).
    KnownFailure,
    /// Its checks were skipped.
    Skip,
    /// A check of it could not be made (ERROR or CRASH of its test).
    Error,
    /// No test of the run checks it.
    Untested,
    /// A process rule (it binds the specification, not an implementation), or a conditional
    /// rule whose condition the implementation does not meet: every check of it said N/A.
    NotApplicable,
}

/// One requirement's line of the report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TracedRequirement {
    /// The ID.
    pub id: String,
    /// Its level.
    pub level: String,
    /// Whom it binds.
    pub party: String,
    /// What the run says about it.
    pub verdict: RequirementVerdict,
    /// The checks (`test/check`) that cite it.
    pub tests: Vec<String>,
    /// For a host or guest MUST that no check of the suite cites: why (its line of
    /// `conformance/untested.txt`, [`explain_gaps`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub untested_reason: Option<String>,
    /// For such a rule: the reference implementation's own tests of it (`path::test`), which
    /// hold it for the reference implementation only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub implementation_tests: Vec<String>,
}

/// Says, for each rule of `traced` that no check cites, why, and which of the reference
/// implementation's own tests hold it ([`Gap`]).
pub fn explain_gaps(traced: &mut [TracedRequirement], gaps: &[Gap]) {
    for t in traced.iter_mut().filter(|t| t.tests.is_empty()) {
        if let Some(g) = gaps.iter().find(|g| g.id == t.id) {
            t.untested_reason = Some(g.reason.clone());
            t.implementation_tests = g
                .implementation_tests
                .iter()
                .map(|i| i.to_string())
                .collect();
        }
    }
}

/// Traces `results` to `requirements`, in the order of `requirements`. Check citations of IDs
/// that `requirements` lacks are returned as the second value (a test citing a rule that does
/// not exist is a bug in the suite).
pub fn trace(
    requirements: &[Requirement],
    results: &[TestResult],
) -> (Vec<TracedRequirement>, Vec<String>) {
    // Each citing check with its verdict, whether it was a warning (WARN) and whether it found
    // the rule not applicable (N/A).
    let mut cited: BTreeMap<&str, Vec<(String, Verdict, bool, bool)>> = BTreeMap::new();
    let mut unknown = Vec::new();
    for r in results {
        for c in &r.checks {
            // A check of a test that did not finish cleanly proves nothing.
            let (v, warning, not_applicable) = match r.verdict {
                Verdict::Error | Verdict::Crash => (r.verdict, false, false),
                _ => (c.verdict, c.warning, c.not_applicable),
            };
            for id in &c.requirements {
                if requirements.iter().any(|q| &q.id == id) {
                    cited.entry(id.as_str()).or_default().push((
                        format!("{}/{}", r.test, c.name),
                        v,
                        warning,
                        not_applicable,
                    ));
                } else {
                    unknown.push(format!("{}/{} cites {id}", r.test, c.name));
                }
            }
        }
    }
    let traced = requirements
        .iter()
        .map(|q| {
            let checks = cited.get(q.id.as_str()).cloned().unwrap_or_default();
            // A warning about a MUST is a failure of it: WARN excuses only SHOULD and MAY.
            // The checks that ran: an N/A check found nothing to check.
            let ran = || {
                checks
                    .iter()
                    .filter(|&&(_, _, _, not_applicable)| !not_applicable)
            };
            let worst = Verdict::worst(ran().map(|&(_, v, warning, _)| {
                if warning && q.is_absolute() {
                    Verdict::Fail
                } else {
                    v
                }
            }));
            let warned = ran().any(|&(_, _, warning, _)| warning);
            let verdict = if q.is_process_rule() {
                RequirementVerdict::NotApplicable
            } else if checks.is_empty() {
                RequirementVerdict::Untested
            } else if ran().next().is_none() {
                RequirementVerdict::NotApplicable
            } else {
                match worst {
                    Verdict::Pass if warned => RequirementVerdict::Warning,
                    Verdict::Pass => RequirementVerdict::Pass,
                    Verdict::Skip => RequirementVerdict::Skip,
                    Verdict::KnownFailure => RequirementVerdict::KnownFailure,
                    Verdict::Fail if q.is_absolute() => RequirementVerdict::Fail,
                    Verdict::Fail => RequirementVerdict::Warning,
                    Verdict::Error | Verdict::Crash => RequirementVerdict::Error,
                }
            };
            TracedRequirement {
                id: q.id.clone(),
                level: q.level.clone(),
                party: q.party.clone(),
                verdict,
                tests: checks.into_iter().map(|(t, _, _, _)| t).collect(),
                untested_reason: None,
                implementation_tests: Vec::new(),
            }
        })
        .collect();
    (traced, unknown)
}

/// The JSON report of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The suite's version.
    pub suite_version: String,
    /// The specification version the suite checks.
    pub spec_version: String,
    /// What the implementation said it is (GET_IMPL_ID, GET_IMPL_VERSION), if known.
    pub implementation: serde_json::Value,
    /// The profile the run used (what the implementation claims).
    pub profile: serde_json::Value,
    /// The run's verdict: the most severe test verdict.
    pub verdict: Verdict,
    /// One entry per requirement of the specification.
    pub requirements: Vec<TracedRequirement>,
    /// Every test with its verdict and checks.
    pub tests: Vec<TestResult>,
}

impl Report {
    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report always serializes")
    }
}

/// The results as TAP version 13: one test point per check, a test that ended badly as one
/// more failing point with its reason.
pub fn tap(results: &[TestResult]) -> String {
    let mut points = Vec::new();
    for r in results {
        for c in &r.checks {
            let ok = matches!(c.verdict, Verdict::Pass | Verdict::Skip);
            let directive = match (c.verdict, &c.message) {
                // A SHOULD or MAY that did not hold: a passing point that says so.
                (Verdict::Pass, m) if c.warning => {
                    format!(" # warning {}", m.as_deref().unwrap_or(""))
                }
                // Nothing to check: TAP's SKIP, saying why.
                (Verdict::Pass, m) if c.not_applicable => {
                    format!(" # SKIP not applicable: {}", m.as_deref().unwrap_or(""))
                }
                (Verdict::Skip, m) => format!(" # SKIP {}", m.as_deref().unwrap_or("")),
                // TAP's TODO: a failure that is expected, reported as one.
                (Verdict::KnownFailure, m) => format!(" # TODO {}", m.as_deref().unwrap_or("")),
                _ => String::new(),
            };
            points.push((
                ok,
                format!("{}/{}", r.test, c.name),
                directive,
                c.message.clone(),
            ));
        }
        if let Some(reason) = &r.reason {
            points.push((
                false,
                format!("{} ({})", r.test, r.verdict),
                String::new(),
                Some(reason.clone()),
            ));
        }
    }
    let mut s = format!("TAP version 13\n1..{}\n", points.len());
    for (i, (ok, name, directive, message)) in points.iter().enumerate() {
        let _ = writeln!(
            s,
            "{}ok {} - {name}{directive}",
            if *ok { "" } else { "not " },
            i + 1
        );
        if let (false, Some(m)) = (*ok, message) {
            let _ = writeln!(s, "  ---\n  message: {:?}\n  ...", m);
        }
    }
    s
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => {
                let _ = write!(out, "&#{};", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// The results as JUnit XML: one test suite per test, one test case per check.
pub fn junit(results: &[TestResult]) -> String {
    let mut s = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"pvabi-conform\">\n",
    );
    for r in results {
        let failures = r
            .checks
            .iter()
            .filter(|c| c.verdict == Verdict::Fail)
            .count();
        let errors = r
            .checks
            .iter()
            .filter(|c| c.verdict == Verdict::Error)
            .count()
            + usize::from(r.reason.is_some());
        let skipped = r
            .checks
            .iter()
            .filter(|c| c.verdict == Verdict::Skip || c.not_applicable)
            .count();
        let _ = writeln!(
            s,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"{skipped}\">",
            xml_escape(&r.test),
            r.checks.len() + usize::from(r.reason.is_some())
        );
        for c in &r.checks {
            let _ = write!(
                s,
                "    <testcase classname=\"{}\" name=\"{}\"",
                xml_escape(&r.test),
                xml_escape(&c.name)
            );
            let message = xml_escape(c.message.as_deref().unwrap_or(""));
            match c.verdict {
                Verdict::Pass if c.warning => {
                    let _ = writeln!(s, "><system-out>warning: {message}</system-out></testcase>");
                }
                Verdict::Pass if c.not_applicable => {
                    let _ = writeln!(
                        s,
                        "><skipped type=\"not-applicable\" message=\"{message}\"/></testcase>"
                    );
                }
                Verdict::Pass => s.push_str("/>\n"),
                Verdict::Skip => {
                    let _ = writeln!(s, "><skipped message=\"{message}\"/></testcase>");
                }
                // JUnit has no expected failure: a skip that says what it is.
                Verdict::KnownFailure => {
                    let _ = writeln!(
                        s,
                        "><skipped type=\"XFAIL\" message=\"{message}\"/></testcase>"
                    );
                }
                Verdict::Fail => {
                    let _ = writeln!(s, "><failure message=\"{message}\"/></testcase>");
                }
                Verdict::Error | Verdict::Crash => {
                    let _ = writeln!(s, "><error message=\"{message}\"/></testcase>");
                }
            }
        }
        if let Some(reason) = &r.reason {
            let _ = writeln!(
                s,
                "    <testcase classname=\"{0}\" name=\"{0}\"><error type=\"{1}\" message=\"{2}\"/></testcase>",
                xml_escape(&r.test),
                r.verdict,
                xml_escape(reason)
            );
        }
        s.push_str("  </testsuite>\n");
    }
    s.push_str("</testsuites>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::{parse, RunEnd, PREFIX};

    fn req(id: &str, level: &str, party: &str) -> Requirement {
        Requirement {
            id: id.into(),
            level: level.into(),
            party: party.into(),
        }
    }

    fn result(test: &str, lines: &[&str], code: u32) -> TestResult {
        let console: String = lines.iter().map(|l| format!("{PREFIX}{l}\n")).collect();
        parse(test, console.as_bytes(), RunEnd::Shutdown(code))
    }

    #[test]
    fn levels_decide_what_a_failure_means() {
        let reqs = [
            req("PVABI-A-001", "MUST", "host"),
            req("PVABI-A-002", "SHOULD", "host"),
            req("PVABI-A-003", "MUST NOT", "host"),
            req("PVABI-A-004", "MUST", "host"),
            req("PVABI-A-005", "MUST", "specification"),
        ];
        let r = result(
            "t",
            &[
                "BEGIN t",
                "FAIL t.a PVABI-A-001 PVABI-A-002",
                "PASS t.b PVABI-A-003 PVABI-A-009",
                "END t FAIL",
            ],
            5,
        );
        let (traced, unknown) = trace(&reqs, &[r]);
        let v: Vec<_> = traced.iter().map(|t| t.verdict).collect();
        use RequirementVerdict::*;
        assert_eq!(v, [Fail, Warning, Pass, Untested, NotApplicable]);
        assert_eq!(traced[0].tests, ["t/t.a"]);
        assert_eq!(unknown, ["t/t.b cites PVABI-A-009"]);
    }

    #[test]
    fn a_warning_warns_a_should_and_fails_a_must() {
        let reqs = [
            req("PVABI-A-001", "SHOULD", "host"),
            req("PVABI-A-002", "MAY", "host"),
            req("PVABI-A-003", "MUST", "host"),
        ];
        let r = result(
            "t",
            &[
                "BEGIN t",
                "WARN t.a PVABI-A-001 -- got 0x1, want 0x2",
                "PASS t.b PVABI-A-002",
                "WARN t.c PVABI-A-003",
                "END t PASS",
            ],
            0,
        );
        assert_eq!(r.verdict, Verdict::Pass);
        let (traced, _) = trace(&reqs, std::slice::from_ref(&r));
        let v: Vec<_> = traced.iter().map(|t| t.verdict).collect();
        use RequirementVerdict::*;
        assert_eq!(v, [Warning, Pass, Fail]);
        assert!(tap(std::slice::from_ref(&r)).contains("ok 1 - t/t.a # warning got 0x1, want 0x2"));
        assert!(junit(&[r]).contains("warning: got 0x1, want 0x2"));
    }

    #[test]
    fn a_rule_is_not_applicable_only_while_no_check_of_it_ran() {
        let reqs = [
            req("PVABI-A-001", "MUST", "host"),
            req("PVABI-A-002", "MUST", "host"),
            req("PVABI-A-003", "MUST", "host"),
        ];
        let r = result(
            "t",
            &[
                "BEGIN t",
                "N/A t.a PVABI-A-001 PVABI-A-002 -- no vmcall binding advertised",
                "FAIL t.b PVABI-A-002",
                "N/A t.c PVABI-A-003",
                "PASS t.d PVABI-A-003",
                "END t FAIL",
            ],
            5,
        );
        let (traced, _) = trace(&reqs, std::slice::from_ref(&r));
        let v: Vec<_> = traced.iter().map(|t| t.verdict).collect();
        use RequirementVerdict::*;
        assert_eq!(v, [NotApplicable, Fail, Pass]);
        assert_eq!(traced[0].tests, ["t/t.a"]);
        assert!(tap(std::slice::from_ref(&r))
            .contains("ok 1 - t/t.a # SKIP not applicable: no vmcall binding advertised"));
        assert!(junit(&[r]).contains("type=\"not-applicable\""));
    }

    #[test]
    fn checks_of_a_crashed_test_prove_nothing() {
        let reqs = [req("PVABI-A-001", "MUST", "host")];
        let console = format!("{PREFIX}BEGIN t\n{PREFIX}PASS t.a PVABI-A-001\n");
        let r = parse("t", console.as_bytes(), RunEnd::Fault("hang".into()));
        let (traced, _) = trace(&reqs, &[r]);
        assert_eq!(traced[0].verdict, RequirementVerdict::Error);
    }

    #[test]
    fn tap_and_junit_carry_every_check() {
        let rs = [
            result(
                "t",
                &[
                    "BEGIN t",
                    "PASS t.a PVABI-A-001",
                    "SKIP t.b -- not <offered> & \"so\"",
                    "FAIL t.c -- got 3",
                    "END t FAIL",
                ],
                5,
            ),
            result("u", &["BEGIN u", "PASS u.a", "END u PASS"], 1),
        ];
        let t = tap(&rs);
        assert!(t.starts_with("TAP version 13\n1..5\n"), "{t}");
        assert!(t.contains("ok 2 - t/t.b # SKIP not <offered>"), "{t}");
        assert!(t.contains("not ok 3 - t/t.c"), "{t}");
        assert!(t.contains("not ok 5 - u (ERROR)"), "{t}");
        let j = junit(&rs);
        assert!(
            j.contains("failures=\"1\" errors=\"0\" skipped=\"1\""),
            "{j}"
        );
        assert!(
            j.contains("not &lt;offered&gt; &amp; &quot;so&quot;"),
            "{j}"
        );
        assert!(j.contains("<error type=\"ERROR\""), "{j}");
    }

    #[test]
    fn the_json_report_has_the_promised_keys() {
        let reqs = [req("PVABI-A-001", "MUST", "host")];
        let rs = [result(
            "t",
            &["BEGIN t", "PASS t.a PVABI-A-001", "END t PASS"],
            0,
        )];
        let (requirements, _) = trace(&reqs, &rs);
        let report = Report {
            suite_version: "0.1.0".into(),
            spec_version: "1.2".into(),
            implementation: serde_json::json!({"id": 1}),
            profile: serde_json::json!({}),
            verdict: Verdict::worst(rs.iter().map(|r| r.verdict)),
            requirements,
            tests: rs.to_vec(),
        };
        let v: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        let r = &v["requirements"][0];
        for key in ["id", "level", "party", "verdict", "tests"] {
            assert!(r.get(key).is_some(), "{key}: {r}");
        }
        assert_eq!(v["tests"][0]["verdict"], "PASS");
        assert_eq!(v["verdict"], "PASS");
    }
}
