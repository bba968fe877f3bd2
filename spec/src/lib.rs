//! Generation and rendering of the pvabi specification.
//!
//! The specification is an mdBook whose sources live in `spec/text` (the chapters, written by
//! hand) and `spec/text/generated` (tables rendered from the `pvabi-abi` crate and checked in).
//! Chapters never type an ABI number: they `{{#include}}` generated tables, and they name
//! constants as `{{pvabi:NAME}}`, which rendering replaces with the crate's value.
//!
//! - [`generate`](generate()) renders every generated table.
//! - [`requirements`](mod@requirements) parses the normative rules (requirement IDs) out of the
//!   chapters.
//! - [`traceability`] joins them to the conformance suite's committed data (which checks cite
//!   each rule, and its verdict on the reference host).
//! - [`render::render`] stages the sources, writes fresh tables, and renders HTML with mdBook.
//! - [`links::check_links`] checks every internal link and anchor of a rendered book.
//!
//! ```
//! let files = pvabi_spec::generate();
//! assert!(files.iter().any(|(path, text)| path == "generated/calls.md" && text.contains("NEGOTIATE")));
//! ```

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

pub mod chapters;
pub mod constants;
mod fields;
pub mod generate;
pub mod links;
pub mod platform;
pub mod render;
pub mod requirements;
pub mod traceability;

pub use requirements::{requirements, Level, Party, Requirement};

/// The directory of generated tables, relative to the book's source directory.
pub const GENERATED_DIR: &str = "generated";

/// The spec crate's directory (`<workspace>/spec`), which holds `book.toml` and `text/`.
pub fn spec_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The book's source directory (`<workspace>/spec/text`).
pub fn text_dir() -> PathBuf {
    spec_dir().join("text")
}

/// The default output directory of `pvabi spec`: `spec-html` in the workspace's target
/// directory (`$CARGO_TARGET_DIR` if set, else `<workspace>/target`).
pub fn default_out_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| spec_dir().parent().unwrap_or(Path::new(".")).join("target"));
    target.join("spec-html")
}

/// Every generated file: `(path relative to spec/text, contents)`, in a stable order.
///
/// The tables come from the `pvabi-abi` crate; the requirements index comes from the chapter
/// sources compiled into this crate.
pub fn generate() -> Vec<(String, String)> {
    generate::all()
}

/// Checks the requirement syntax of every chapter, and the uniqueness of the IDs, with an
/// error that lists each problem and where it is.
pub fn check_requirements() -> Result<()> {
    let (reqs, mut errors) =
        requirements::parse_all(chapters::CHAPTERS.iter().map(|c| (c, c.source)));
    for (i, r) in reqs.iter().enumerate() {
        if let Some(first) = reqs[..i].iter().find(|o| o.id == r.id) {
            errors.push(requirements::RequirementError {
                chapter: r.chapter,
                line: r.line,
                message: format!(
                    "requirement ID {} is already used at spec/text/{}:{}",
                    r.id, first.chapter, first.line
                ),
            });
        }
    }
    if errors.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    anyhow::bail!(
        "{} problem(s) with requirements in the spec sources:\n  {}\n(the sources are compiled into pvabi-spec: rebuild after fixing them)",
        list.len(),
        list.join("\n  ")
    )
}

/// Writes every generated file under `text_dir` and removes generated files that are no longer
/// produced. Returns the paths written, relative to `text_dir`.
pub fn write_generated(text_dir: &Path) -> Result<Vec<String>> {
    check_requirements()?;
    let dir = text_dir.join(GENERATED_DIR);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let files = generate();
    for entry in std::fs::read_dir(&dir)? {
        let entry = entry?;
        let rel = format!("{GENERATED_DIR}/{}", entry.file_name().to_string_lossy());
        if entry.file_type()?.is_file() && !files.iter().any(|(p, _)| *p == rel) {
            std::fs::remove_file(entry.path())
                .with_context(|| format!("removing stale {}", entry.path().display()))?;
        }
    }
    for (rel, text) in &files {
        let path = text_dir.join(rel);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(files.into_iter().map(|(p, _)| p).collect())
}

/// A difference between the generated files in a source tree and a fresh [`generate()`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Drift {
    /// The file should exist but does not.
    Missing(String),
    /// The file exists but differs.
    Changed(String),
    /// The file exists in the generated directory but is no longer generated.
    Stale(String),
}

/// Compares the generated files under `text_dir` with a fresh [`generate()`].
pub fn check_generated(text_dir: &Path) -> Result<Vec<Drift>> {
    let files = generate();
    let mut drift = Vec::new();
    for (rel, text) in &files {
        match std::fs::read_to_string(text_dir.join(rel)) {
            Ok(on_disk) if on_disk == *text => {}
            Ok(_) => drift.push(Drift::Changed(rel.clone())),
            Err(_) => drift.push(Drift::Missing(rel.clone())),
        }
    }
    let dir = text_dir.join(GENERATED_DIR);
    if dir.is_dir() {
        let mut names: Vec<String> = std::fs::read_dir(&dir)?
            .filter_map(|e| e.ok())
            .map(|e| format!("{GENERATED_DIR}/{}", e.file_name().to_string_lossy()))
            .collect();
        names.sort();
        for rel in names {
            if !files.iter().any(|(p, _)| *p == rel) {
                drift.push(Drift::Stale(rel));
            }
        }
    }
    Ok(drift)
}
