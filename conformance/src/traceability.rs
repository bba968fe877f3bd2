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

/// A rule no check of the suite cites, and why: the suite cannot observe it on any host (or
/// guest) from the outside, or it has no check yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gap {
    /// The requirement ID.
    pub id: String,
    /// Why the suite has no check of it (what is missing, or why it cannot be observed).
    pub reason: String,
    /// Its line in the file (1-based).
    pub line: usize,
    /// The reference implementation's own tests that hold the rule for it (its
    /// `tested in:` lines): what the suite cannot see from outside a host or a guest, a test
    /// with the implementation's inside in reach can (a test double, a memory-order race, the
    /// guest library's arithmetic). They vouch for the reference implementation only.
    pub implementation_tests: Vec<ImplementationTest>,
}

/// A test of the reference implementation itself (`pvabi-dispatch`, `pvabi-host` or
/// `pvabi-guest`), run by `cargo test` and not by the suite: `path name` on a `tested in:`
/// line of `conformance/untested.txt`. A build test holds each to the source: the file has a
/// `#[test]` function of that name that names the rule it is listed for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImplementationTest {
    /// The test's source file, relative to the repository's root.
    pub path: String,
    /// The test function's name.
    pub name: String,
}

impl std::fmt::Display for ImplementationTest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}::{}", self.path, self.name)
    }
}

impl ImplementationTest {
    /// Checks the test against `source`, the text of its file: a `#[test]` function of its
    /// name whose doc comment or body names `id` (as `PVABI-XXX-NNN` or `XXX-NNN`). Returns
    /// what is wrong.
    ///
    /// ```
    /// use pvabi_conformance::traceability::ImplementationTest;
    ///
    /// let t = ImplementationTest { path: "x.rs".into(), name: "holds".into() };
    /// let src = "/// PVABI-MEM-012: no flush.\n#[test]\nfn holds() {\n    assert!(true);\n}\n";
    /// assert_eq!(t.check(src, "PVABI-MEM-012"), Ok(()));
    /// assert!(t.check(src, "PVABI-MEM-016").unwrap_err().contains("does not name"));
    /// assert!(t.check("fn other() {}", "PVABI-MEM-012").unwrap_err().contains("no test"));
    /// let ignored = "/// MEM-012\n#[test]\n#[ignore]\nfn holds() {}\n";
    /// assert!(t.check(ignored, "PVABI-MEM-012").unwrap_err().contains("does not run"));
    /// ```
    pub fn check(&self, source: &str, id: &str) -> Result<(), String> {
        let lines: Vec<&str> = source.lines().collect();
        let head = format!("fn {}(", self.name);
        let Some(at) = lines.iter().position(|l| l.trim_start().starts_with(&head)) else {
            return Err(format!("{self}: no test `{}` in the file", self.name));
        };
        // Its attributes and doc comment: the lines right above it.
        let above = lines[..at]
            .iter()
            .rev()
            .take_while(|l| {
                let t = l.trim_start();
                t.starts_with("///") || t.starts_with("#[")
            })
            .collect::<Vec<_>>();
        if !above.iter().any(|l| l.trim_start().starts_with("#[test]")) {
            return Err(format!("{self}: `{}` is not a #[test] function", self.name));
        }
        // A test that does not run by default vouches for nothing.
        if let Some(attr) = above.iter().map(|l| l.trim_start()).find(|t| {
            t.starts_with("#[ignore") || t.starts_with("#[cfg(") || t.starts_with("#[cfg_attr(")
        }) {
            return Err(format!(
                "{self}: `{}` does not run in every `cargo test` (`{attr}`): list a test that does",
                self.name
            ));
        }
        // Its body: up to the closing brace at the function's indentation.
        let indent = |l: &str| l.len() - l.trim_start().len();
        let end = lines[at..]
            .iter()
            .position(|l| l.trim() == "}" && indent(l) == indent(lines[at]))
            .map_or(lines.len(), |n| at + n + 1);
        let short = id.strip_prefix("PVABI-").unwrap_or(id);
        let names_it = above
            .iter()
            .copied()
            .chain(&lines[at..end])
            .any(|l| l.contains(short));
        if names_it {
            Ok(())
        } else {
            Err(format!(
                "{self} does not name {id} in its doc comment or body: say which rule it holds"
            ))
        }
    }
}

/// A malformed line of `conformance/untested.txt`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("conformance/untested.txt:{line}: {problem} (each rule is a line `PVABI-<PREFIX>-<NNN>  reason`, optionally followed by indented `tested in: PATH TEST` lines; `#` starts a comment)")]
pub struct GapError {
    /// The line (1-based).
    pub line: usize,
    /// What is wrong with it.
    pub problem: String,
}

/// Parses the list of untested rules: one `ID reason` per line, each optionally followed by
/// indented `tested in: PATH TEST` lines (the reference implementation's own tests of it);
/// blank lines and lines that start with `#` are ignored. Every rule needs a reason.
pub fn parse_gaps(text: &str) -> Result<Vec<Gap>, GapError> {
    let mut gaps: Vec<Gap> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if raw.starts_with(char::is_whitespace) {
            let err = |problem: String| GapError {
                line: line_no,
                problem,
            };
            let spec = line.strip_prefix("tested in:").ok_or_else(|| {
                err(format!(
                    "an indented line must be `tested in: PATH TEST`, not `{line}`"
                ))
            })?;
            let gap = gaps
                .last_mut()
                .ok_or_else(|| err("`tested in:` comes before any rule".to_owned()))?;
            let mut words = spec.split_whitespace();
            match (words.next(), words.next(), words.next()) {
                (Some(path), Some(name), None) => {
                    gap.implementation_tests.push(ImplementationTest {
                        path: path.to_owned(),
                        name: name.to_owned(),
                    })
                }
                _ => {
                    return Err(err(format!(
                        "`tested in:` takes a file and a test name, not `{}`",
                        spec.trim()
                    )))
                }
            }
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
            implementation_tests: Vec::new(),
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
        assert!(g[0].implementation_tests.is_empty());
    }

    #[test]
    fn tested_in_lines_belong_to_the_rule_above() {
        let g = parse_gaps(
            "PVABI-MEM-012  not observable\n  tested in: dispatch/src/tests/memory.rs no_flush\n\
             \t tested in: host-ref/tests/e2e.rs other\nPVABI-MEM-016  neither\n",
        )
        .unwrap();
        assert_eq!(g.len(), 2);
        assert_eq!(
            g[0].implementation_tests,
            [
                ImplementationTest {
                    path: "dispatch/src/tests/memory.rs".into(),
                    name: "no_flush".into()
                },
                ImplementationTest {
                    path: "host-ref/tests/e2e.rs".into(),
                    name: "other".into()
                }
            ]
        );
        assert!(g[1].implementation_tests.is_empty());
        let before = parse_gaps("  tested in: a.rs t\n").unwrap_err();
        assert!(before.problem.contains("before any rule"), "{before}");
        let bad = parse_gaps("PVABI-MEM-012  r\n  tested by a.rs\n").unwrap_err();
        assert_eq!(bad.line, 2);
        let words = parse_gaps("PVABI-MEM-012  r\n  tested in: a.rs\n").unwrap_err();
        assert!(words.problem.contains("a file and a test name"), "{words}");
    }

    #[test]
    fn a_run_round_trips_without_messages() {
        let results = vec![TestResult {
            test: "t".into(),
            verdict: Verdict::Skip,
            checks: vec![Check::new(
                "t.a",
                Verdict::Skip,
                &["PVABI-RING-001"],
                Some("RING not offered".into()),
            )],
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
