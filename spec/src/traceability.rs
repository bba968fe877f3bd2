//! `generated/traceability.md`: every requirement with its level, the party it binds, the
//! conformance checks that cite it and its verdict on the reference host, generated from the
//! suite's committed data (`conformance/traceability.json`, `conformance/untested.txt`; see
//! [`pvabi_conformance::traceability`]).

use std::fmt::Write as _;

use pvabi_conformance::report::{self, RequirementVerdict};
use pvabi_conformance::traceability::{parse_gaps, Gap, ReferenceRun};

use crate::requirements::{requirements, Party};

/// The generated file's second line: where this table comes from.
const SOURCE: &str = "<!-- This table comes from conformance/traceability.json and conformance/untested.txt: after a change to the suite, run `pvabi conform --write-trace conformance/traceability.json` first. -->\n";

/// The reference host's run of the suite, as committed.
pub fn reference_run() -> ReferenceRun {
    ReferenceRun::from_json(include_str!("../../conformance/traceability.json"))
        .unwrap_or_else(|e| panic!("conformance/traceability.json: {e} (rewrite it with `pvabi conform --write-trace conformance/traceability.json`)"))
}

/// The rules without a test, and why, as committed.
pub fn gaps() -> Vec<Gap> {
    parse_gaps(include_str!("../../conformance/untested.txt")).unwrap_or_else(|e| panic!("{e}"))
}

/// The suite's view of the spec's requirements.
pub fn suite_requirements() -> Vec<report::Requirement> {
    requirements()
        .into_iter()
        .map(|r| report::Requirement {
            id: r.id,
            level: r.level.keyword().to_owned(),
            party: r.party.name().to_owned(),
        })
        .collect()
}

fn verdict_text(v: RequirementVerdict) -> &'static str {
    match v {
        RequirementVerdict::Pass => "PASS",
        RequirementVerdict::Fail => "FAIL",
        RequirementVerdict::Warning => "WARNING",
        RequirementVerdict::Skip => "SKIP",
        RequirementVerdict::KnownFailure => "XFAIL",
        RequirementVerdict::Error => "ERROR",
        RequirementVerdict::Untested => "untested",
        RequirementVerdict::NotApplicable => "not applicable",
    }
}

/// The generated page.
pub(crate) fn traceability_file() -> String {
    let run = reference_run();
    let gaps = gaps();
    let reqs = requirements();
    let (traced, _) = report::trace(&suite_requirements(), &run.to_results());
    let mut out = String::from(crate::generate::HEADER);
    out.push_str(SOURCE);
    out.push('\n');
    out.push_str("<!-- ANCHOR: counts -->\n\n");
    out.push_str("| Binds | Level | Rules | Checked | Passed on the reference host | Not applicable to it | Without a check | Of those, held by the reference implementation's own tests |\n|---|---|---|---|---|---|---|---|\n");
    for party in [Party::Host, Party::Guest, Party::Both] {
        for absolute in [true, false] {
            let rows: Vec<_> = reqs
                .iter()
                .zip(&traced)
                .filter(|(r, _)| {
                    r.party == party && r.level.keyword().starts_with("MUST") == absolute
                })
                .collect();
            if rows.is_empty() {
                continue;
            }
            let checked = rows.iter().filter(|(_, t)| !t.tests.is_empty()).count();
            let passed = rows
                .iter()
                .filter(|(_, t)| t.verdict == RequirementVerdict::Pass)
                .count();
            let not_applicable = rows
                .iter()
                .filter(|(_, t)| t.verdict == RequirementVerdict::NotApplicable)
                .count();
            let held = rows
                .iter()
                .filter(|(r, t)| {
                    t.tests.is_empty()
                        && gaps
                            .iter()
                            .any(|g| g.id == r.id && !g.implementation_tests.is_empty())
                })
                .count();
            let _ = writeln!(
                out,
                "| {} | {} | {} | {checked} | {passed} | {not_applicable} | {} | {held} |",
                party.name(),
                if absolute {
                    "MUST, MUST NOT"
                } else {
                    "SHOULD, SHOULD NOT, MAY"
                },
                rows.len(),
                rows.len() - checked
            );
        }
    }
    let process = reqs.iter().filter(|r| r.party == Party::Spec).count();
    let _ = writeln!(
        out,
        "| specification (process rules) | any | {process} | | | {process} | | |"
    );
    let checks: usize = run.tests.iter().map(|t| t.checks.len()).sum();
    let _ = writeln!(
        out,
        "\nFrom a run of {} tests ({checks} checks) on {}, against specification {}.",
        run.tests.len(),
        run.host,
        run.spec_version
    );
    out.push_str("\n<!-- ANCHOR_END: counts -->\n\n<!-- ANCHOR: list -->\n\n");
    out.push_str(
        "| ID | Level | Binds | Checks | On the reference host |\n|---|---|---|---|---|\n",
    );
    for (r, t) in reqs.iter().zip(&traced) {
        let checks = if t.tests.is_empty() {
            "—".to_owned()
        } else {
            t.tests
                .iter()
                .map(|c| {
                    format!(
                        "`{}`",
                        c.split_once('/').map_or(c.as_str(), |(_, check)| check)
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let verdict = match (t.verdict, gaps.iter().find(|g| g.id == r.id)) {
            (RequirementVerdict::Untested, Some(g)) => {
                let mut text = format!("untested: {}", g.reason.replace('|', "\\|"));
                if !g.implementation_tests.is_empty() {
                    let tests: Vec<String> = g
                        .implementation_tests
                        .iter()
                        .map(|t| format!("`{}` in `{}`", t.name, t.path))
                        .collect();
                    let _ = write!(
                        text,
                        ". The reference implementation's own tests hold it for the reference \
                         implementation: {}",
                        tests.join(", ")
                    );
                }
                text
            }
            (v, _) => verdict_text(v).to_owned(),
        };
        let _ = writeln!(
            out,
            "| [{}]({}) | {} | {} | {checks} | {verdict} |",
            r.id,
            r.href(),
            r.level,
            r.party.name()
        );
    }
    out.push_str("\n<!-- ANCHOR_END: list -->\n");
    out
}
