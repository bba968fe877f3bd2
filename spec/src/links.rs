//! Checks every internal link of a rendered book.
//!
//! For each HTML file under the book's root, every `href` and `src` that is not external must
//! name a file that exists inside the root, and every `#fragment` must name an `id` (or an
//! `<a name>`) present in the target file. Script bodies are skipped, and `<base href>` is
//! honoured (mdBook's 404 page uses one).

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result};
use regex::Regex;

/// A link that does not resolve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokenLink {
    /// The page holding the link, relative to the book's root.
    pub file: PathBuf,
    /// The link as written (after decoding HTML entities).
    pub href: String,
    /// Why it does not resolve.
    pub reason: String,
}

impl fmt::Display for BrokenLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: `{}`: {}",
            self.file.display(),
            self.href,
            self.reason
        )
    }
}

/// What a scan of a rendered book found.
#[derive(Debug, Default)]
pub struct LinkReport {
    /// Pages scanned.
    pub pages: usize,
    /// Internal links checked.
    pub links: usize,
    /// Links that do not resolve.
    pub broken: Vec<BrokenLink>,
}

struct Page {
    ids: BTreeSet<String>,
}

struct Scanner {
    root: PathBuf,
    attr: Regex,
    id: Regex,
    base: Regex,
    script: Regex,
    pages: HashMap<PathBuf, Page>,
}

/// Decodes the HTML character references that can appear in attribute values.
fn decode_entities(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let Some(end) = rest.find(';') else { break };
        let entity = &rest[1..end];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => {
                let num = entity.strip_prefix('#');
                num.and_then(|n| match n.strip_prefix(['x', 'X']) {
                    Some(hex) => u32::from_str_radix(hex, 16).ok(),
                    None => n.parse().ok(),
                })
                .and_then(char::from_u32)
            }
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Decodes `%XX` escapes (as UTF-8); invalid escapes are kept as written.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether a link leaves the book (has a scheme, or is protocol-relative).
fn is_external(href: &str) -> bool {
    if href.starts_with("//") {
        return true;
    }
    let end = href.find(['/', '?', '#']).unwrap_or(href.len());
    href[..end].contains(':')
}

/// Joins `rel` onto `dir` lexically; `None` if the result climbs above the root.
fn normalize(dir: &Path, rel: &str) -> Option<PathBuf> {
    let mut parts: Vec<String> = dir
        .components()
        .filter_map(|c| match c {
            Component::Normal(p) => Some(p.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect();
    for seg in rel.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            s => parts.push(s.to_string()),
        }
    }
    Some(parts.iter().collect())
}

impl Scanner {
    fn new(root: &Path) -> Scanner {
        Scanner {
            root: root.to_path_buf(),
            attr: Regex::new(r#"(?i)\s(href|src)\s*=\s*(?:"([^"]*)"|'([^']*)')"#)
                .expect("valid regex"),
            id: Regex::new(r#"(?i)\s(?:id|name)\s*=\s*(?:"([^"]*)"|'([^']*)')"#)
                .expect("valid regex"),
            base: Regex::new(r#"(?i)<base\s[^>]*href\s*=\s*"([^"]*)""#).expect("valid regex"),
            script: Regex::new(r"(?is)<script\b[^>]*>.*?</script>").expect("valid regex"),
            pages: HashMap::new(),
        }
    }

    fn strip_scripts(&self, html: &str) -> String {
        self.script
            .replace_all(html, "<script></script>")
            .into_owned()
    }

    fn ids(&mut self, rel: &Path) -> Result<&Page> {
        if !self.pages.contains_key(rel) {
            let html = std::fs::read_to_string(self.root.join(rel))
                .with_context(|| format!("reading {}", self.root.join(rel).display()))?;
            let html = self.strip_scripts(&html);
            let ids = self
                .id
                .captures_iter(&html)
                .map(|c| decode_entities(c.get(1).or(c.get(2)).map_or("", |m| m.as_str())))
                .collect();
            self.pages.insert(rel.to_path_buf(), Page { ids });
        }
        Ok(&self.pages[rel])
    }

    fn check_page(&mut self, rel: &Path, report: &mut LinkReport) -> Result<()> {
        let html = std::fs::read_to_string(self.root.join(rel))
            .with_context(|| format!("reading {}", self.root.join(rel).display()))?;
        let html = self.strip_scripts(&html);
        let page_dir = rel.parent().unwrap_or(Path::new("")).to_path_buf();
        let base_dir = match self.base.captures(&html) {
            Some(c) => {
                let b = decode_entities(&c[1]);
                if is_external(&b) {
                    return Ok(());
                }
                if let Some(abs) = b.strip_prefix('/') {
                    normalize(Path::new(""), abs).unwrap_or_default()
                } else {
                    normalize(&page_dir, &b).unwrap_or_default()
                }
            }
            None => page_dir,
        };
        let links: Vec<String> = self
            .attr
            .captures_iter(&html)
            .map(|c| decode_entities(c.get(2).or(c.get(3)).map_or("", |m| m.as_str())))
            .collect();
        for href in links {
            if href.is_empty() || is_external(&href) {
                continue;
            }
            report.links += 1;
            let mut broken = |reason: String| {
                report.broken.push(BrokenLink {
                    file: rel.to_path_buf(),
                    href: href.clone(),
                    reason,
                });
            };
            let (path_part, fragment) = match href.split_once('#') {
                Some((p, f)) => (p, Some(f)),
                None => (href.as_str(), None),
            };
            let path_part = path_part.split('?').next().unwrap_or("");
            let target = if path_part.is_empty() {
                rel.to_path_buf()
            } else {
                let decoded = percent_decode(path_part);
                let resolved = if let Some(abs) = decoded.strip_prefix('/') {
                    normalize(Path::new(""), abs)
                } else {
                    normalize(&base_dir, &decoded)
                };
                let Some(mut t) = resolved else {
                    broken("points outside the book".to_string());
                    continue;
                };
                if self.root.join(&t).is_dir() {
                    t.push("index.html");
                }
                if !self.root.join(&t).is_file() {
                    broken(format!("target file {} does not exist", t.display()));
                    continue;
                }
                t
            };
            let Some(fragment) = fragment.map(percent_decode).filter(|f| !f.is_empty()) else {
                continue;
            };
            if target.extension().is_some_and(|e| e == "html") {
                let target_ids = &self.ids(&target)?.ids;
                if !target_ids.contains(&fragment) {
                    report.broken.push(BrokenLink {
                        file: rel.to_path_buf(),
                        href: href.clone(),
                        reason: format!("no element with id `{fragment}` in {}", target.display()),
                    });
                }
            }
        }
        report.pages += 1;
        Ok(())
    }
}

fn html_files(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(root.join(dir))
        .with_context(|| format!("listing {}", root.join(dir).display()))?
        .collect::<std::io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let rel = dir.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            html_files(root, &rel, out)?;
        } else if rel.extension().is_some_and(|e| e == "html") {
            out.push(rel);
        }
    }
    Ok(())
}

/// Checks every internal link and fragment in the HTML files under `root`.
pub fn check_links(root: &Path) -> Result<LinkReport> {
    let mut files = Vec::new();
    html_files(root, Path::new(""), &mut files)?;
    let mut scanner = Scanner::new(root);
    let mut report = LinkReport::default();
    for file in files {
        scanner.check_page(&file, &mut report)?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_entities_and_escapes() {
        assert_eq!(
            decode_entities("a&amp;b&#39;c&#x41;&bogus;"),
            "a&b'cA&bogus;"
        );
        assert_eq!(percent_decode("a%20b%zz%4"), "a b%zz%4");
    }

    #[test]
    fn classifies_and_resolves_links() {
        assert!(is_external("https://example.invalid/x"));
        assert!(is_external("mailto:someone"));
        assert!(is_external("//cdn/x.js"));
        assert!(!is_external("base.html#a:b"));
        assert!(!is_external("../x.html"));
        assert_eq!(
            normalize(Path::new("a/b"), "../c.html"),
            Some(PathBuf::from("a/c.html"))
        );
        assert_eq!(normalize(Path::new(""), "../c.html"), None);
    }

    #[test]
    fn finds_broken_files_and_fragments() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(
            dir.path().join("index.html"),
            r##"<a id="top" href="sub/page.html#here">ok</a><a href="sub/page.html#gone">bad fragment</a>
            <a href="missing.html">bad file</a><a href="#top">self</a><a href="https://x.invalid/">ext</a>
            <script>var s = '<a href="nope.html">';</script><img src="sub/">"##,
        )
        .unwrap();
        std::fs::write(
            dir.path().join("sub/page.html"),
            r#"<h1 id="here">x</h1><a href="../index.html#top">up</a>"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("sub/index.html"), "").unwrap();
        let report = check_links(dir.path()).unwrap();
        let broken: Vec<String> = report.broken.iter().map(|b| b.href.clone()).collect();
        assert_eq!(broken, ["sub/page.html#gone", "missing.html"]);
        assert_eq!(report.pages, 3);
        assert_eq!(report.links, 6);
    }
}
