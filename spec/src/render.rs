//! Rendering the book to HTML with mdBook, from a staged copy of the sources.
//!
//! The sources are never rendered in place: `book.toml` and `text/` are copied to a temporary
//! directory, the generated tables there are replaced by a fresh [`generate`](crate::generate())
//! (so a stale checked-in table cannot reach the HTML), every `{{#include}}` is checked, and
//! mdBook builds into the output directory. The result's links are then checked.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use mdbook_driver::book::BookItem;
use mdbook_driver::config::Config;
use mdbook_driver::MDBook;
use regex::Regex;

use crate::links::check_links;

/// The file that marks a directory as holding a rendered pvabi spec (so that re-rendering may
/// replace its contents).
pub const MARKER: &str = ".pvabi-spec";

/// What [`render`] produced.
#[derive(Debug)]
pub struct Rendered {
    /// The output directory.
    pub out_dir: PathBuf,
    /// The book's front page.
    pub index: PathBuf,
    /// The number of chapters rendered.
    pub chapters: usize,
    /// The number of internal links checked.
    pub links: usize,
}

/// Copies `from` into `to` recursively.
fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for entry in std::fs::read_dir(from).with_context(|| format!("listing {}", from.display()))? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target).with_context(|| {
                format!("copying {} to {}", entry.path().display(), target.display())
            })?;
        }
    }
    Ok(())
}

/// Refuses to let mdBook empty a directory that is not ours: mdBook deletes the contents of
/// its output directory before it writes.
fn check_out_dir(out_dir: &Path, source: &Path) -> Result<()> {
    if out_dir.exists() && !out_dir.is_dir() {
        bail!(
            "cannot render into {}: it is a file; pass a directory with -o",
            out_dir.display()
        );
    }
    let out_abs = std::path::absolute(out_dir)?;
    let src_abs = std::path::absolute(source)?;
    if src_abs.starts_with(&out_abs) || out_abs.starts_with(src_abs.join("text")) {
        bail!(
            "cannot render into {}: it overlaps the spec sources in {}; pass another directory with -o",
            out_dir.display(),
            source.display()
        );
    }
    if out_dir.is_dir() {
        let mut entries = std::fs::read_dir(out_dir)?;
        if entries.next().is_some() && !out_dir.join(MARKER).exists() {
            bail!(
                "refusing to render into {}: it is not empty and holds no earlier pvabi spec rendering \
                 (rendering replaces the directory's contents); pass a new or empty directory with -o",
                out_dir.display()
            );
        }
    }
    Ok(())
}

/// Checks every `{{#include path[:anchor]}}` of the staged sources: mdBook itself only logs a
/// missing file or anchor and renders on.
pub fn check_includes(text_dir: &Path) -> Result<usize> {
    let include =
        Regex::new(r"\{\{#include\s+([^}:\s]+)(?::([^}\s]*))?\s*\}\}").expect("valid regex");
    let mut problems = Vec::new();
    let mut count = 0;
    let mut stack = vec![text_dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))?
        {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "md") {
                continue;
            }
            let text = std::fs::read_to_string(&path)?;
            for caps in include.captures_iter(&text) {
                count += 1;
                let rel = path
                    .strip_prefix(text_dir)
                    .unwrap_or(&path)
                    .display()
                    .to_string();
                let target = path.parent().unwrap_or(text_dir).join(&caps[1]);
                let Ok(body) = std::fs::read_to_string(&target) else {
                    problems.push(format!(
                        "{rel}: `{}` includes {}, which does not exist",
                        &caps[0], &caps[1]
                    ));
                    continue;
                };
                if let Some(anchor) = caps.get(2).map(|m| m.as_str()).filter(|a| !a.is_empty()) {
                    if anchor.parse::<usize>().is_err() && !anchor.contains("..") {
                        let marker = |kind: &str| {
                            Regex::new(&format!(r"{kind}:\s*{}(?:[^\w-]|$)", regex::escape(anchor)))
                                .expect("valid regex")
                                .is_match(&body)
                        };
                        if !marker("ANCHOR") || !marker("ANCHOR_END") {
                            problems.push(format!(
                                "{rel}: `{}`: {} has no anchor `{anchor}`",
                                &caps[0], &caps[1]
                            ));
                        }
                    }
                }
            }
        }
    }
    if !problems.is_empty() {
        bail!(
            "broken includes in the spec sources:\n  {}\nfix the include, or run `cargo run -- spec --update` if a generated table is missing",
            problems.join("\n  ")
        );
    }
    Ok(count)
}

/// Replaces every `{{pvabi:NAME}}` in the staged Markdown files with the constant's value.
pub fn substitute_constants(text_dir: &Path) -> Result<()> {
    let mut unknown = Vec::new();
    let mut stack = vec![text_dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))?
        {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                let text = std::fs::read_to_string(&path)?;
                let (new, missing) = crate::constants::substitute(&text);
                let rel = path
                    .strip_prefix(text_dir)
                    .unwrap_or(&path)
                    .display()
                    .to_string();
                unknown.extend(
                    missing
                        .into_iter()
                        .map(|m| format!("{rel}: {{{{pvabi:{m}}}}}")),
                );
                if new != text {
                    std::fs::write(&path, new)?;
                }
            }
        }
    }
    if !unknown.is_empty() {
        bail!(
            "unknown constants in the spec sources:\n  {}\nuse a name from the ABI crate's constant registry, abi/src/registry.rs (or add the constant there)",
            unknown.join("\n  ")
        );
    }
    Ok(())
}

fn count_chapters(items: &[BookItem]) -> usize {
    items
        .iter()
        .map(|item| match item {
            BookItem::Chapter(c) => usize::from(c.path.is_some()) + count_chapters(&c.sub_items),
            _ => 0,
        })
        .sum()
}

/// Renders the book whose `book.toml` and `text/` live in `source` into `out_dir`.
pub fn render(source: &Path, out_dir: &Path) -> Result<Rendered> {
    let book_toml = source.join("book.toml");
    let text = source.join("text");
    if !book_toml.is_file() || !text.join("SUMMARY.md").is_file() {
        bail!(
            "no spec sources in {}: expected book.toml and text/SUMMARY.md there; \
             run from a pvabi checkout or pass --source <pvabi>/spec",
            source.display()
        );
    }
    check_out_dir(out_dir, source)?;

    let stage = tempfile::Builder::new()
        .prefix("pvabi-spec-")
        .tempdir()
        .context("creating a staging directory")?;
    std::fs::copy(&book_toml, stage.path().join("book.toml")).context("staging book.toml")?;
    let staged_text = stage.path().join("text");
    copy_dir(&text, &staged_text).context("staging spec/text")?;
    let generated = staged_text.join(crate::GENERATED_DIR);
    if generated.exists() {
        std::fs::remove_dir_all(&generated).context("clearing the staged generated tables")?;
    }
    crate::write_generated(&staged_text).context("writing fresh generated tables")?;
    check_includes(&staged_text)?;
    substitute_constants(&staged_text)?;

    let mut config = Config::from_disk(stage.path().join("book.toml"))
        .with_context(|| format!("reading {}", book_toml.display()))?;
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let out_dir = out_dir.canonicalize()?;
    config.build.build_dir = out_dir.clone();
    config.build.create_missing = false;
    let book = MDBook::load_with_config(stage.path(), config)
        .map_err(|e| anyhow::anyhow!("{e:#}"))
        .context("loading the book (check spec/text/SUMMARY.md and the chapter files it names)")?;
    let chapters = count_chapters(&book.book.items);
    book.build()
        .map_err(|e| anyhow::anyhow!("{e:#}"))
        .context("rendering the book with mdBook")?;
    std::fs::write(
        out_dir.join(MARKER),
        "This directory holds a rendered pvabi spec; `pvabi spec` replaces it.\n",
    )?;

    let report = check_links(&out_dir)?;
    if !report.broken.is_empty() {
        let list: Vec<String> = report.broken.iter().map(|b| b.to_string()).collect();
        bail!(
            "the rendered spec has {} broken internal link(s):\n  {}\nfix the links in spec/text (or the generator in spec/src)",
            list.len(),
            list.join("\n  ")
        );
    }
    let index = out_dir.join("index.html");
    Ok(Rendered {
        out_dir,
        index,
        chapters,
        links: report.links,
    })
}
