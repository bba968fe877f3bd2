//! The suite's traceability data, kept in the repository next to the suite: what the reference
//! host's run of the suite checked ([`ReferenceRun`], `conformance/traceability.json`) and the
//! host and guest MUST rules that no test checks yet, each with its reason ([`Gap`],
//! `conformance/untested.txt`).
//!
//! The specification's traceability table (requirement → level → party → tests → verdict on the
//! reference host) is generated from the two files, and the build tests hold them to the spec:
//! a check that cites an ID the spec lacks fails, a host or guest MUST that no check cites and
//! that `untested.txt` does not list fails, and a listed rule that a check now cites fails too
//! (the list only shrinks). A KVM test reruns the suite and fails when `traceability.json`
//! no longer says what the run says.
//!
//! ```
//! use pvabi_conformance::traceability::{parse_gaps, ReferenceRun};
//!
//! let run = ReferenceRun::from_json(r#"{"spec_version": "1.2", "host": "pvabi-host",
//!     "tests": [{"test": "base", "verdict": "PASS",
//!                "checks": [{"check": "base.version", "verdict": "PASS",
//!                            "requirements": ["PVABI-BASE-001"]}]}]}"#).unwrap();
//! assert_eq!(run.cited("PVABI-BASE-001"), ["base/base.version"]);
//!
//! let gaps = parse_gaps("# comment\nPVABI-EVT-003  no test posts an event yet\n").unwrap();
//! assert_eq!(gaps[0].id, "PVABI-EVT-003");
//! assert_eq!(gaps[0].reason, "no test posts an event yet");
//! ```

use serde::{Deserialize, Serialize};

use crate::channel::{is_requirement_id, Check, RunEnd, TestResult};
use crate::verdict::Verdict;

/// Where the data lives, relative to the repository's root.
pub const REFERENCE_RUN_PATH: &str = "conformance/traceability.json";
/// Where the list of untested rules lives, relative to the repository's root.
pub const GAPS_PATH: &str = "conformance/untested.txt";

/// One check of the reference run: its name, verdict and the IDs it cites.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReferenceCheck {
    /// The check's name (`<test>.<check>`).
    pub check: String,
    /// Its verdict on the reference host.
    pub verdict: Verdict,
    /// The requirement IDs it cites.
    pub requirements: Vec<String>,
    /// Whether it was a warning (the channel's WARN: a SHOULD or MAY that did not hold).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub warning: bool,
    /// Whether it found its rules not applicable (the channel's N/A: a conditional rule whose
    /// condition the reference host does not meet).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub not_applicable: bool,
}

/// One test of the reference run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReferenceTest {
    /// The test's name.
    pub test: String,
    /// Its verdict on the reference host.
    pub verdict: Verdict,
    /// Its checks, in the order they were reported.
    pub checks: Vec<ReferenceCheck>,
}

/// The suite as the reference host ran it: which checks each test made, what each cites and
/// its verdict (messages, which hold measured values, are left out so that the data is stable
/// from run to run).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReferenceRun {
    /// The specification version the suite checked.
    pub spec_version: String,
    /// The host the run used.
    pub host: String,
    /// Every test, in the order they ran.
    pub tests: Vec<ReferenceTest>,
}

impl ReferenceRun {
    /// The data of a run of the suite.
    pub fn from_results(spec_version: &str, host: &str, results: &[TestResult]) -> ReferenceRun {
        ReferenceRun {
            spec_version: spec_version.to_owned(),
            host: host.to_owned(),
            tests: results
                .iter()
                .map(|r| ReferenceTest {
                    test: r.test.clone(),
                    verdict: r.verdict,
                    checks: r
                        .checks
                        .iter()
                        .map(|c| ReferenceCheck {
                            check: c.name.clone(),
                            verdict: c.verdict,
                            requirements: c.requirements.clone(),
                            warning: c.warning,
                            not_applicable: c.not_applicable,
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    /// Parses `conformance/traceability.json`.
    pub fn from_json(text: &str) -> Result<ReferenceRun, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The data as pretty JSON with a final newline (the file's form).
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("the data always serializes");
        s.push('\n');
        s
    }

    /// The run as results, for [`crate::report::trace`].
    pub fn to_results(&self) -> Vec<TestResult> {
        self.tests
            .iter()
            .map(|t| TestResult {
                test: t.test.clone(),
                verdict: t.verdict,
                checks: t
                    .checks
                    .iter()
                    .map(|c| Check {
                        name: c.check.clone(),
                        verdict: c.verdict,
                        requirements: c.requirements.clone(),
                        message: None,
                        warning: c.warning,
                        not_applicable: c.not_applicable,
                    })
                    .collect(),
                reason: None,
                end: RunEnd::Shutdown(t.verdict.exit_code()),
                info: Default::default(),
            })
            .collect()
    }

    /// The checks (`test/check`) that cite `id`.
    pub fn cited(&self, id: &str) -> Vec<String> {
        self.tests
            .iter()
            .flat_map(|t| {
                t.checks
                    .iter()
                    .filter(|c| c.requirements.iter().any(|r| r == id))
                    .map(move |c| format!("{}/{}", t.test, c.check))
            })
            .collect()
    }
}

/// A rule no test checks yet, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gap {
    /// The requirement ID.
    pub id: String,
    /// Why it has no test (what is missing, or why it cannot be observed).
    pub reason: String,
    /// Its line in the file (1-based).
    pub line: usize,
}

/// A malformed line of `conformance/untested.txt`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("conformance/untested.txt:{line}: {problem} (each line is `PVABI-<PREFIX>-<NNN>  reason`; `#` starts a comment)")]
pub struct GapError {
    /// The line (1-based).
    pub line: usize,
    /// What is wrong with it.
    pub problem: String,
}

/// Parses the list of untested rules: one `ID reason` per line; blank lines and lines that
/// start with `#` are ignored. Every rule needs a reason.
pub fn parse_gaps(text: &str) -> Result<Vec<Gap>, GapError> {
    let mut gaps = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (id, reason) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        if !is_requirement_id(id) {
            return Err(GapError {
                line: line_no,
                problem: format!("`{id}` is not a requirement ID"),
            });
        }
        let reason = reason.trim();
        if reason.is_empty() {
            return Err(GapError {
                line: line_no,
                problem: format!("{id} has no reason"),
            });
        }
        gaps.push(Gap {
            id: id.to_owned(),
            reason: reason.to_owned(),
            line: line_no,
        });
    }
    Ok(gaps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_need_an_id_and_a_reason() {
        assert_eq!(parse_gaps("PVABI-BASE-001").unwrap_err().line, 1);
        let e = parse_gaps("\n# c\nBASE-001 because").unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.to_string().contains("not a requirement ID"), "{e}");
        let g = parse_gaps("PVABI-BASE-001\tnot yet\n").unwrap();
        assert_eq!(g[0].reason, "not yet");
    }

    #[test]
    fn a_run_round_trips_without_messages() {
        let results = vec![TestResult {
            test: "t".into(),
            verdict: Verdict::Skip,
            checks: vec![Check {
                name: "t.a".into(),
                verdict: Verdict::Skip,
                requirements: vec!["PVABI-RING-001".into()],
                message: Some("RING not offered".into()),
                warning: false,
                not_applicable: false,
            }],
            reason: None,
            end: RunEnd::Shutdown(3),
            info: Default::default(),
        }];
        let run = ReferenceRun::from_results("1.2", "h", &results);
        let back = ReferenceRun::from_json(&run.to_json()).unwrap();
        assert_eq!(back, run);
        let again = back.to_results();
        assert_eq!(again[0].checks[0].message, None);
        assert_eq!(again[0].verdict, Verdict::Skip);
        assert_eq!(run.cited("PVABI-RING-001"), ["t/t.a"]);
        assert!(run.cited("PVABI-RING-002").is_empty());
    }
}
