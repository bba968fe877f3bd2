//! Checks of the spec's sources that need no rendering: the generated tables are current, the
//! requirement IDs are well formed, every family and call is documented, and the book's
//! structure matches `spec/src/chapters.rs`.

use std::collections::{BTreeMap, BTreeSet};

use pvabi_abi::calls::{self, FAMILIES};
use pvabi_abi::layout::STRUCTS;
use pvabi_spec::chapters::{family_chapter, CHAPTERS};
use pvabi_spec::generate::{family_slug, struct_chapter};
use pvabi_spec::{requirements, Drift, Level};
use regex::Regex;

const REGENERATE: &str = "run `cargo run -- spec --update` (or `PVABI_SPEC_UPDATE=1 cargo test -p pvabi-spec --test sources`) to update the checked-in tables";

/// The chapter's source without `{{#include}}` directives, so that a name found in it was
/// written by hand.
fn prose(source: &str) -> String {
    let include = Regex::new(r"\{\{#include [^}]*\}\}").unwrap();
    include.replace_all(source, "").into_owned()
}

#[test]
fn checked_in_generated_tables_are_current() {
    if std::env::var_os("PVABI_SPEC_UPDATE").is_some() {
        pvabi_spec::write_generated(&pvabi_spec::text_dir()).unwrap();
    }
    let drift = pvabi_spec::check_generated(&pvabi_spec::text_dir()).unwrap();
    let lines: Vec<String> = drift
        .iter()
        .map(|d| match d {
            Drift::Missing(p) => format!("missing: spec/text/{p}"),
            Drift::Changed(p) => format!("out of date: spec/text/{p}"),
            Drift::Stale(p) => format!("no longer generated: spec/text/{p}"),
        })
        .collect();
    assert!(
        lines.is_empty(),
        "generated tables differ from pvabi-abi:\n  {}\n{REGENERATE}",
        lines.join("\n  ")
    );
}

#[test]
fn generated_files_are_well_formed() {
    let files = pvabi_spec::generate();
    let mut paths = BTreeSet::new();
    let starts = Regex::new(r"ANCHOR: ([\w-]+)").unwrap();
    for (path, text) in &files {
        assert!(
            path.starts_with("generated/") && path.ends_with(".md"),
            "{path}"
        );
        assert!(paths.insert(path.clone()), "{path} generated twice");
        assert!(
            text.starts_with(pvabi_spec::generate::HEADER),
            "{path} lacks the generated-file header"
        );
        assert!(text.ends_with('\n'), "{path} does not end with a newline");
        // Anchors are balanced.
        for cap in starts.captures_iter(text) {
            assert!(
                text.contains(&format!("ANCHOR_END: {} ", &cap[1])),
                "{path}: anchor {} is not closed",
                &cap[1]
            );
        }
    }
    // Generating twice gives the same files (no hash-map order, no clock).
    assert_eq!(files, pvabi_spec::generate());
}

#[test]
fn requirement_ids_are_unique_and_well_formed() {
    pvabi_spec::check_requirements().unwrap();
    let reqs = requirements();
    let id = Regex::new(r"^PVABI-[A-Z]+-[0-9]{3}$").unwrap();
    let mut seen = BTreeSet::new();
    for r in &reqs {
        assert!(id.is_match(&r.id), "{}: malformed ID", r.id);
        assert!(seen.insert(r.id.clone()), "{} defined twice", r.id);
        assert!(Level::ALL.contains(&r.level));
        assert!(!r.text.trim().is_empty(), "{} has no text", r.id);
        assert!(
            r.party != pvabi_spec::Party::Unknown,
            "{} names no party: write \"A host ...\" or \"A guest ...\" before the keyword",
            r.id
        );
        let chapter = pvabi_spec::chapters::chapter(r.chapter).unwrap();
        assert!(
            chapter.prefixes.contains(&r.prefix()),
            "{} is in {}, which does not own its prefix",
            r.id,
            r.chapter
        );
    }
    assert!(reqs.len() >= 100, "only {} requirements", reqs.len());
}

#[test]
fn every_chapter_that_should_have_rules_has_them() {
    let reqs = requirements();
    for c in CHAPTERS.iter().filter(|c| !c.prefixes.is_empty()) {
        for prefix in c.prefixes {
            let n = reqs
                .iter()
                .filter(|r| r.chapter == c.file && r.prefix() == *prefix)
                .count();
            assert!(
                n > 0,
                "chapter {} has no requirement with prefix {prefix}",
                c.file
            );
        }
    }
    for c in CHAPTERS.iter().filter(|c| c.prefixes.is_empty()) {
        assert!(
            reqs.iter().all(|r| r.chapter != c.file),
            "{} should not define requirements",
            c.file
        );
    }
}

#[test]
fn requirement_ids_are_numbered_without_gaps_per_prefix() {
    let mut by_prefix: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for r in requirements() {
        let num: u32 = r.id.rsplit('-').next().unwrap().parse().unwrap();
        by_prefix
            .entry(r.prefix().to_string())
            .or_default()
            .push(num);
    }
    for (prefix, mut nums) in by_prefix {
        nums.sort_unstable();
        let expected: Vec<u32> = (1..=nums.len() as u32).collect();
        assert_eq!(nums, expected, "PVABI-{prefix}-* IDs are not 001, 002, ...: a retired ID must stay retired, so renumber only unpublished IDs");
    }
}

#[test]
fn references_to_requirements_resolve() {
    let reqs: BTreeSet<String> = requirements().into_iter().map(|r| r.id).collect();
    let reference = Regex::new(r"PVABI-[A-Z]+-[0-9]{3}").unwrap();
    for c in CHAPTERS {
        for m in reference.find_iter(c.source) {
            assert!(
                reqs.contains(m.as_str()),
                "{} mentions {}, which no chapter defines",
                c.file,
                m.as_str()
            );
        }
    }
}

#[test]
fn every_family_has_a_chapter_and_every_call_is_documented_in_it() {
    for fam in FAMILIES.iter() {
        let chapter = family_chapter(fam.family);
        let text = prose(chapter.source);
        let summary = format!(
            "{{{{#include generated/family-{}.md:summary}}}}",
            family_slug(fam.family)
        );
        assert!(
            chapter.source.contains(&summary),
            "{} does not include its summary table ({summary})",
            chapter.file
        );
        for d in fam.calls {
            assert!(
                text.contains(d.name),
                "{} never names {} in its prose",
                chapter.file,
                d.name
            );
            let heading = Regex::new(&format!(r"(?m)^#+ .*\{{#{}\}}\s*$", d.name)).unwrap();
            assert!(
                heading.is_match(chapter.source),
                "{} has no section `## {} {{#{}}}`",
                chapter.file,
                d.name,
                d.name
            );
            let card = format!(
                "{{{{#include generated/family-{}.md:{}}}}}",
                family_slug(fam.family),
                d.name
            );
            assert!(
                chapter.source.contains(&card),
                "{} does not include the table of {} ({card})",
                chapter.file,
                d.name
            );
        }
    }
    // And no chapter documents a family that does not exist.
    for c in CHAPTERS.iter().filter_map(|c| c.family) {
        assert!(FAMILIES.iter().any(|f| f.family == c));
    }
    assert_eq!(
        calls::all().count(),
        FAMILIES.iter().map(|f| f.calls.len()).sum::<usize>()
    );
}

#[test]
fn every_structure_is_documented_in_its_chapter() {
    for s in STRUCTS {
        let file = struct_chapter(s.name).unwrap();
        let chapter = pvabi_spec::chapters::chapter(file).unwrap();
        let include = format!("{{{{#include generated/structs.md:{}}}}}", s.name);
        assert!(
            chapter.source.contains(&include),
            "{file} does not include the table of {} ({include})",
            s.name
        );
        let heading = Regex::new(&format!(r"(?m)^#+ .*\{{#{}\}}\s*$", s.name)).unwrap();
        assert!(
            heading.is_match(chapter.source),
            "{file} has no section with id {}",
            s.name
        );
    }
}

#[test]
fn summary_lists_exactly_the_chapters_in_order() {
    let summary = std::fs::read_to_string(pvabi_spec::text_dir().join("SUMMARY.md")).unwrap();
    let link = Regex::new(r"\[([^\]]+)\]\(([^)]+\.md)\)").unwrap();
    let listed: Vec<(String, String)> = link
        .captures_iter(&summary)
        .map(|c| (c[1].to_string(), c[2].to_string()))
        .collect();
    let expected: Vec<(String, String)> = CHAPTERS
        .iter()
        .map(|c| (c.title.to_string(), c.file.to_string()))
        .collect();
    assert_eq!(
        listed, expected,
        "spec/text/SUMMARY.md and spec/src/chapters.rs disagree"
    );
    // Every Markdown file of the book is a chapter or generated.
    for entry in std::fs::read_dir(pvabi_spec::text_dir()).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".md") && name != "SUMMARY.md" {
            assert!(
                CHAPTERS.iter().any(|c| c.file == name),
                "spec/text/{name} is not in spec/src/chapters.rs"
            );
        }
    }
}

#[test]
fn every_constant_token_in_the_sources_resolves() {
    let token = Regex::new(pvabi_spec::constants::TOKEN).unwrap();
    let mut sources: Vec<(String, String)> = CHAPTERS
        .iter()
        .map(|c| (c.file.to_string(), c.source.to_string()))
        .collect();
    sources.extend(pvabi_spec::generate());
    for (file, text) in sources {
        for cap in token.captures_iter(&text) {
            assert!(
                pvabi_spec::constants::lookup(&cap[1]).is_some(),
                "{file}: unknown constant {{{{pvabi:{}}}}}",
                &cap[1]
            );
        }
    }
}

#[test]
fn prose_types_no_abi_numbers() {
    // Hexadecimal literals in prose are ABI numbers typed by hand: they must come from a
    // generated table or a `{{pvabi:NAME}}` token instead.
    let hex = Regex::new(r"\b0x[0-9a-fA-F]+\b").unwrap();
    for c in CHAPTERS {
        let text = prose(c.source);
        for (i, line) in text.lines().enumerate() {
            if line.contains("0x...") {
                continue;
            }
            assert!(
                !hex.is_match(line),
                "spec/text/{}:{}: typed number in `{line}`; use {{{{pvabi:NAME}}}}",
                c.file,
                i + 1
            );
        }
    }
}

#[test]
fn claims_the_prose_makes_about_descriptors_hold() {
    use pvabi_abi::calls::{BlockKind, Call, DeferClass, Family};
    let d = |c: Call| c.descriptor();
    // system.md: "None of its calls returns on success" and "All three calls are sync points".
    for c in FAMILIES[Family::System as usize].calls {
        assert!(!c.returns && c.sync_point, "system.md: {}", c.name);
    }
    // memory.md: the flush calls and the balloon/share calls are sync points.
    for c in [
        Call::MemFlushTlbLocal,
        Call::MemFlushTlbRange,
        Call::MemFlushTlbAll,
        Call::MemBalloonRelease,
    ] {
        assert!(d(c).sync_point, "memory.md: {}", d(c).name);
    }
    // memory.md, time.md, events.md: the deferral classes they name.
    assert_eq!(d(Call::MemUpdatePte).deferral, DeferClass::Mmu);
    assert_eq!(d(Call::TimeSetTimer).deferral, DeferClass::Cpu);
    assert_eq!(d(Call::EventsSetMask).deferral, DeferClass::Cpu);
    // vcpu.md and batching.md: VCPU_STOP, DEFER_SET_QUEUE and MULTICALL are sync points.
    for c in [Call::VcpuStop, Call::DeferSetQueue, Call::Multicall] {
        assert!(d(c).sync_point, "{}", d(c).name);
    }
    // batching.md: calls that do not return, calls that register shared pages and the batching
    // calls are never batchable; a deferred entry carries every argument of a deferrable call.
    for c in calls::all() {
        let registers = matches!(c.block.map(|b| b.kind), Some(BlockKind::SharedPage { .. }));
        if !c.returns || registers || c.family() == Family::Batch {
            assert!(
                !c.batchable,
                "batching.md: {} must not be batchable",
                c.name
            );
        }
        if c.deferral != DeferClass::None {
            assert!(
                c.args.len() <= 3,
                "batching.md: {} has more arguments than a deferred entry",
                c.name
            );
        }
    }
    // batching.md: RING_SETUP takes a RingSetup block; EVENTS_SET_QUEUE, TIME_SET_PAGE and
    // DEFER_SET_QUEUE register shared pages (convention.md lists them as host-owned pages).
    assert!(
        matches!(d(Call::RingSetup).block.map(|b| b.kind), Some(BlockKind::Struct(l)) if l.name == "RingSetup")
    );
    for c in [Call::TimeSetPage, Call::EventsSetQueue, Call::DeferSetQueue] {
        assert!(
            matches!(
                d(c).block.map(|b| b.kind),
                Some(BlockKind::SharedPage { .. })
            ),
            "{}",
            d(c).name
        );
    }
}

#[test]
fn every_requirement_has_exactly_one_level() {
    // A paragraph states one rule at one strength: a MUST rule that also says MAY (or MUST
    // NOT) is two rules, and gets two IDs.
    let keyword = Regex::new(r"\b(MUST NOT|MUST|SHOULD NOT|SHOULD|MAY)\b").unwrap();
    let code = Regex::new(r"`[^`]*`").unwrap();
    let mixed: Vec<String> = requirements()
        .iter()
        .filter_map(|r| {
            let text = code.replace_all(&r.text, "");
            let levels: BTreeSet<&str> = keyword.find_iter(&text).map(|m| m.as_str()).collect();
            (levels.iter().any(|k| *k != r.level.keyword()))
                .then(|| format!("{} ({}): also says {:?}", r.id, r.level, levels))
        })
        .collect();
    assert!(
        mixed.is_empty(),
        "requirements that mix levels (split each into one rule per level):\n{}",
        mixed.join("\n")
    );
}
