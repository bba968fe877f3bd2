//! Renders the whole book into a temporary directory, as `pvabi spec` does, and checks the HTML:
//! every internal link and anchor resolves, nothing is left unexpanded, and the pages carry the
//! generated tables.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use pvabi_abi::calls;
use pvabi_spec::links::check_links;
use pvabi_spec::render::{render, Rendered};

struct Book {
    _dir: tempfile::TempDir,
    rendered: Rendered,
}

fn book() -> &'static Book {
    static BOOK: OnceLock<Book> = OnceLock::new();
    BOOK.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("html");
        let rendered = render(&pvabi_spec::spec_dir(), &out)
            .unwrap_or_else(|e| panic!("rendering failed: {e:#}"));
        Book {
            _dir: dir,
            rendered,
        }
    })
}

fn out() -> &'static Path {
    &book().rendered.out_dir
}

fn page(name: &str) -> String {
    std::fs::read_to_string(out().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn html_pages() -> Vec<PathBuf> {
    let mut pages: Vec<PathBuf> = std::fs::read_dir(out())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "html"))
        .collect();
    pages.sort();
    pages
}

#[test]
fn every_internal_link_and_anchor_resolves() {
    let report = check_links(out()).unwrap();
    let broken: Vec<String> = report.broken.iter().map(|b| b.to_string()).collect();
    assert!(
        broken.is_empty(),
        "{} broken link(s) in the rendered spec:\n  {}",
        broken.len(),
        broken.join("\n  ")
    );
    assert!(
        report.pages >= pvabi_spec::chapters::CHAPTERS.len(),
        "only {} pages scanned",
        report.pages
    );
    assert!(report.links > 1000, "only {} links checked", report.links);
}

#[test]
fn index_exists_and_every_chapter_is_rendered() {
    let rendered = &book().rendered;
    assert!(
        rendered.index.is_file(),
        "{} missing",
        rendered.index.display()
    );
    assert_eq!(rendered.chapters, pvabi_spec::chapters::CHAPTERS.len());
    for c in pvabi_spec::chapters::CHAPTERS {
        let html = c.file.replace(".md", ".html");
        assert!(out().join(&html).is_file(), "{html} was not rendered");
    }
}

#[test]
fn call_table_is_rendered_with_every_call() {
    // The front page is the introduction; the call table has its own chapter, linked from it.
    let index = page("index.html");
    assert!(
        index.contains("Introduction"),
        "index.html is not the introduction"
    );
    assert!(
        index.contains("calls.html"),
        "index.html does not link the call table"
    );
    let calls_page = page("calls.html");
    assert!(calls_page.contains("<table>"), "calls.html has no table");
    for d in calls::all() {
        let code = format!("0x{:04x}", d.call.code());
        assert!(
            calls_page.contains(&code),
            "calls.html lacks the code of {}",
            d.name
        );
        assert!(
            calls_page.contains(&format!("PVABI_CALL_{}", d.name)),
            "calls.html lacks {}",
            d.name
        );
    }
}

#[test]
fn nothing_is_left_unexpanded() {
    for p in html_pages() {
        let html = std::fs::read_to_string(&p).unwrap();
        let name = p.file_name().unwrap().to_string_lossy();
        assert!(
            !html.contains("{{#"),
            "{name} contains an unexpanded mdBook directive"
        );
        assert!(
            !html.contains("{{pvabi:"),
            "{name} contains an unexpanded constant"
        );
        assert!(
            !html.contains("ANCHOR"),
            "{name} contains an include anchor"
        );
    }
}

#[test]
fn requirements_are_link_targets_and_indexed() {
    let index = page("requirements.html");
    for r in pvabi_spec::requirements() {
        let html = r.chapter.replace(".md", ".html");
        assert!(
            page(&html).contains(&format!("id=\"{}\"", r.id)),
            "{html} has no anchor for {}",
            r.id
        );
        assert!(
            index.contains(&format!("href=\"{html}#{}\"", r.id)),
            "requirements.html does not link {}",
            r.id
        );
    }
}

#[test]
fn rendering_refuses_a_foreign_non_empty_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("precious.txt"), "keep me").unwrap();
    let err = render(&pvabi_spec::spec_dir(), dir.path()).unwrap_err();
    assert!(format!("{err:#}").contains("refusing to render"), "{err:#}");
    assert!(dir.path().join("precious.txt").is_file());
}
