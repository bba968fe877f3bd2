//! The spec's changelog chapter, generated from the released snapshots.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::diff::{diff, ChangeKind};
use crate::model::Snapshot;

/// The changelog in Markdown for these snapshots (any order; they are sorted by version).
///
/// One `##` section per version, oldest first: the first is the initial release, with what it
/// defines; each later minor lists its additions to the previous snapshot; a new major lists
/// its breaking changes and additions against the last snapshot of the previous major.
/// Differences without ABI effect are left out.
pub fn changelog_markdown_from(snapshots: &[Snapshot]) -> String {
    let mut sorted: Vec<&Snapshot> = snapshots.iter().collect();
    sorted.sort_by_key(|s| s.version);
    let mut out = String::from(
        "Every released version of the interface is frozen in a machine-readable snapshot,\n\
         `versioning/snapshots/<major>.<minor>.json`, and `pvabi abi check` compares the ABI\n\
         crate with the snapshots of its major version. This chapter is generated from those\n\
         snapshots.\n",
    );
    let mut previous: Option<&Snapshot> = None;
    for s in sorted {
        let v = s.version;
        let _ = write!(
            out,
            "\n## Version {v} {{#changelog-{}-{}}}\n\n",
            v.major, v.minor
        );
        match previous {
            None => initial(&mut out, s),
            Some(p) => {
                let changes = diff(p, s);
                let additions: Vec<_> = changes
                    .iter()
                    .filter(|c| c.kind == ChangeKind::Addition)
                    .collect();
                let breaking: Vec<_> = changes
                    .iter()
                    .filter(|c| c.kind == ChangeKind::Breaking)
                    .collect();
                if p.version.major != v.major {
                    let _ = writeln!(
                        out,
                        "A new major version. Compared with {}, it makes {} breaking change(s) \
                         and {} addition(s).",
                        p.version,
                        breaking.len(),
                        additions.len()
                    );
                    if !breaking.is_empty() {
                        out.push_str("\nBreaking changes:\n\n");
                        for c in &breaking {
                            let _ = writeln!(out, "- `{}`: {}", c.path, c.explanation);
                        }
                    }
                } else if additions.is_empty() {
                    let _ = writeln!(
                        out,
                        "A minor version with no change to the ABI since {}.",
                        p.version
                    );
                } else {
                    let _ = writeln!(
                        out,
                        "A minor version: it adds to {} and changes nothing that {} defines.",
                        p.version, p.version
                    );
                }
                if !additions.is_empty() {
                    out.push_str("\nAdditions:\n\n");
                    for c in &additions {
                        let _ = writeln!(out, "- `{}`: {}", c.path, c.explanation);
                    }
                }
            }
        }
        previous = Some(s);
    }
    out
}

fn initial(out: &mut String, s: &Snapshot) {
    let mut families: BTreeMap<u64, (String, Vec<&str>)> = BTreeMap::new();
    let family_values = s.enums.get("Family");
    for c in &s.calls {
        let order = family_values
            .and_then(|f| f.iter().find(|v| v.name == c.family))
            .map_or(u64::MAX, |v| v.value);
        families
            .entry(order)
            .or_insert_with(|| (c.family.clone(), Vec::new()))
            .1
            .push(&c.name);
    }
    let _ = writeln!(
        out,
        "Initial release: {} calls in {} families, {} structures, {} status codes, {} feature \
         bits, {} enumerations, {} constants and {} CPUID leaves.",
        s.calls.len(),
        families.len(),
        s.structs.len(),
        s.statuses.len(),
        s.features.len(),
        s.enums.len(),
        s.constants.len(),
        s.cpuid.leaves.len()
    );
    out.push_str("\n| Family | Calls |\n|---|---|\n");
    for (family, calls) in families.values() {
        let calls: Vec<String> = calls.iter().map(|c| format!("`{c}`")).collect();
        let _ = writeln!(out, "| {family} | {} |", calls.join(", "));
    }
    let features: Vec<String> = s
        .features
        .iter()
        .map(|f| format!("`{}` (bit {})", f.name, f.bit))
        .collect();
    let _ = writeln!(out, "\nFeature bits: {}.", features.join(", "));
    let structs: Vec<String> = s
        .structs
        .iter()
        .map(|st| format!("`{}` ({} bytes)", st.c_name, st.size))
        .collect();
    let _ = writeln!(out, "\nStructures: {}.", structs.join(", "));
}
