//! The conformance suite's traceability, held to the specification (no KVM needed): every
//! check cites rules that exist, every host or guest MUST is cited by a check or listed in
//! `conformance/untested.txt` with its reason, and the list only shrinks. (A KVM test in
//! `src/conform.rs` holds `conformance/traceability.json` to a fresh run of the suite.)

use std::collections::BTreeSet;

use pvabi_conformance::report;
use pvabi_spec::traceability::{gaps, reference_run, suite_requirements};

#[test]
fn every_cited_id_exists() {
    let (_, unknown) = report::trace(&suite_requirements(), &reference_run().to_results());
    assert!(
        unknown.is_empty(),
        "checks cite requirement IDs the spec lacks:\n  {}",
        unknown.join("\n  ")
    );
}

#[test]
fn every_host_and_guest_must_has_a_test_or_a_stated_reason() {
    let run = reference_run();
    let listed: BTreeSet<String> = gaps().into_iter().map(|g| g.id).collect();
    let missing: Vec<String> = suite_requirements()
        .into_iter()
        .filter(|r| r.is_absolute() && !r.is_process_rule())
        .filter(|r| run.cited(&r.id).is_empty() && !listed.contains(&r.id))
        .map(|r| format!("{} ({} {})", r.id, r.party, r.level))
        .collect();
    assert!(
        missing.is_empty(),
        "{} MUST rule(s) have no conformance check: add a check that cites each (then \
         `pvabi conform --write-trace conformance/traceability.json` and `pvabi spec --update`), \
         or, if it cannot be checked yet, list it in conformance/untested.txt with the reason:\n  {}",
        missing.len(),
        missing.join("\n  ")
    );
}

#[test]
fn the_untested_list_only_names_untested_musts() {
    let run = reference_run();
    let reqs = suite_requirements();
    let mut seen = BTreeSet::new();
    let mut problems = Vec::new();
    for g in gaps() {
        let at = format!("conformance/untested.txt:{}: {}", g.line, g.id);
        if !seen.insert(g.id.clone()) {
            problems.push(format!("{at} is listed twice"));
        }
        match reqs.iter().find(|r| r.id == g.id) {
            None => problems.push(format!("{at} is not a requirement of the spec")),
            Some(r) if !r.is_absolute() || r.is_process_rule() => problems.push(format!(
                "{at} is a {} rule binding the {}: only host and guest MUSTs are listed",
                r.level, r.party
            )),
            Some(_) => {}
        }
        let cited = run.cited(&g.id);
        if !cited.is_empty() {
            problems.push(format!(
                "{at} is checked by {}: remove it from the list",
                cited.join(", ")
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    let musts = reqs
        .iter()
        .filter(|r| r.is_absolute() && !r.is_process_rule())
        .count();
    eprintln!(
        "traceability: {} of {musts} host and guest MUST rules have a conformance check; {} listed as untested",
        musts - seen.len(),
        seen.len()
    );
}

/// Each `tested in:` line of `conformance/untested.txt` names a `#[test]` function that exists
/// in the named file and says which rule it holds, so that the list cannot vouch for a test that
/// was renamed, removed or never was about the rule.
#[test]
fn every_implementation_test_exists_and_names_its_rule() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut problems = Vec::new();
    let mut count = 0;
    for g in gaps() {
        for t in &g.implementation_tests {
            count += 1;
            let at = format!("conformance/untested.txt:{}: {}", g.line, g.id);
            match std::fs::read_to_string(root.join(&t.path)) {
                Err(e) => problems.push(format!("{at}: {}: {e}", t.path)),
                Ok(source) => {
                    if let Err(problem) = t.check(&source, &g.id) {
                        problems.push(format!("{at}: {problem}"));
                    }
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    eprintln!("traceability: {count} implementation tests hold rules the suite cannot observe");
}
