//! The chapters of the book, with their sources compiled in.
//!
//! `spec/text/SUMMARY.md` decides the reading order; this table says, for each chapter, which
//! requirement-ID prefixes it owns, which call family it documents, and whether its prose is
//! normative. The crate's tests check that the two agree.

use pvabi_abi::calls::Family;

/// One chapter of the book.
#[derive(Debug)]
pub struct Chapter {
    /// The source file, relative to `spec/text`.
    pub file: &'static str,
    /// The title, as in `SUMMARY.md`.
    pub title: &'static str,
    /// The requirement-ID prefixes the chapter owns; empty for chapters without rules.
    pub prefixes: &'static [&'static str],
    /// The call family the chapter documents, if it documents one.
    pub family: Option<Family>,
    /// Whether RFC 2119 keywords in the chapter must sit inside requirements.
    pub normative: bool,
    /// The chapter's Markdown source.
    pub source: &'static str,
}

macro_rules! chapter {
    ($file:literal, $title:literal, [$($prefix:literal),*], $family:expr, $normative:literal) => {
        Chapter {
            file: $file,
            title: $title,
            prefixes: &[$($prefix),*],
            family: $family,
            normative: $normative,
            source: include_str!(concat!("../text/", $file)),
        }
    };
}

/// Every chapter, in book order.
pub static CHAPTERS: &[Chapter] = &[
    chapter!("introduction.md", "Introduction", ["GEN"], None, true),
    chapter!("discovery.md", "Discovery", ["DISC"], None, true),
    chapter!("convention.md", "Calling convention", ["CONV"], None, true),
    chapter!("status.md", "Status codes", ["STAT"], None, true),
    chapter!(
        "versioning.md",
        "Versioning and negotiation",
        ["VER"],
        None,
        true
    ),
    chapter!("base.md", "Base family", ["BASE"], Some(Family::Base), true),
    chapter!(
        "console.md",
        "Console family",
        ["CON"],
        Some(Family::Console),
        true
    ),
    chapter!("time.md", "Time family", ["TIME"], Some(Family::Time), true),
    chapter!(
        "events.md",
        "Events family",
        ["EVT"],
        Some(Family::Events),
        true
    ),
    chapter!(
        "memory.md",
        "Memory family",
        ["MEM"],
        Some(Family::Memory),
        true
    ),
    chapter!("vcpu.md", "vCPU family", ["VCPU"], Some(Family::Vcpu), true),
    chapter!(
        "system.md",
        "System family",
        ["SYS"],
        Some(Family::System),
        true
    ),
    chapter!(
        "batching.md",
        "Batching, deferral and rings",
        ["BATCH", "DEFER", "RING"],
        Some(Family::Batch),
        true
    ),
    chapter!("calls.md", "Call table", [], None, true),
    chapter!("structures.md", "Structures", [], None, true),
    chapter!("requirements.md", "Requirements index", [], None, false),
    chapter!(
        "traceability.md",
        "Conformance traceability",
        [],
        None,
        false
    ),
    chapter!(
        "compatibility.md",
        "Version compatibility",
        ["COMPAT"],
        None,
        true
    ),
    chapter!("changelog.md", "Changelog", [], None, false),
    chapter!(
        "reference-platform.md",
        "Appendix: the reference platform",
        ["PLAT"],
        None,
        true
    ),
    chapter!(
        "design-notes.md",
        "Design notes: how pvabi compares",
        [],
        None,
        false
    ),
];

/// The chapter that documents `family`.
pub fn family_chapter(family: Family) -> &'static Chapter {
    CHAPTERS
        .iter()
        .find(|c| c.family == Some(family))
        .unwrap_or_else(|| panic!("no chapter documents the {family:?} family"))
}

/// The chapter with the given source file.
pub fn chapter(file: &str) -> Option<&'static Chapter> {
    CHAPTERS.iter().find(|c| c.file == file)
}
