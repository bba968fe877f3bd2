//! Requirement IDs: parsing the normative rules out of the chapter sources.
//!
//! Every normative rule in the prose is one Markdown paragraph that starts, at column 0, with
//!
//! ```text
//! <a id="PVABI-BASE-001"></a>**PVABI-BASE-001** (MUST): A host MUST ...
//! ```
//!
//! The empty anchor gives the rule a stable link target, the bold ID is what a reader sees, and
//! the level in parentheses is one of `MUST`, `MUST NOT`, `SHOULD`, `SHOULD NOT` or `MAY`. The
//! rule's text runs to the end of the paragraph (the next blank line). IDs are
//! `PVABI-<PREFIX>-<NNN>`: the prefix names the chapter's subject and `NNN` is three digits.
//! An ID, once published, is never reused for a different rule.

use std::fmt;

use regex::Regex;

use crate::chapters::{Chapter, CHAPTERS};

/// The strength of a rule, as RFC 2119 defines the keywords.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Level {
    /// An absolute requirement.
    Must,
    /// An absolute prohibition.
    MustNot,
    /// A recommendation: there may be valid reasons to ignore it, with the implications understood.
    Should,
    /// A recommendation against.
    ShouldNot,
    /// Truly optional.
    May,
}

impl Level {
    /// Every level, strongest first.
    pub const ALL: [Level; 5] = [
        Level::Must,
        Level::MustNot,
        Level::Should,
        Level::ShouldNot,
        Level::May,
    ];

    /// The keyword as written in the spec.
    pub const fn keyword(self) -> &'static str {
        match self {
            Level::Must => "MUST",
            Level::MustNot => "MUST NOT",
            Level::Should => "SHOULD",
            Level::ShouldNot => "SHOULD NOT",
            Level::May => "MAY",
        }
    }

    /// Parses a keyword as written in the spec.
    pub fn from_keyword(keyword: &str) -> Option<Level> {
        Level::ALL.into_iter().find(|l| l.keyword() == keyword)
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.keyword())
    }
}

/// One normative rule of the specification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirement {
    /// The stable ID, such as `PVABI-BASE-001`.
    pub id: String,
    /// How strong the rule is.
    pub level: Level,
    /// The chapter's source file, relative to the book's source directory (`base.md`).
    pub chapter: &'static str,
    /// The chapter's title.
    pub chapter_title: &'static str,
    /// The rule's Markdown text, without the ID and level, joined onto one line.
    pub text: String,
    /// The 1-based line of the rule in its chapter's source.
    pub line: usize,
    /// Whom the rule binds, as read from its text.
    pub party: Party,
}

/// Whom a rule binds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Party {
    /// The host side.
    Host,
    /// The guest side.
    Guest,
    /// Both sides.
    Both,
    /// The specification itself and its maintainers.
    Spec,
    /// The text names no party before its keyword (the tests reject this).
    Unknown,
}

impl Party {
    /// The party's name in the requirements index.
    pub const fn name(self) -> &'static str {
        match self {
            Party::Host => "host",
            Party::Guest => "guest",
            Party::Both => "host and guest",
            Party::Spec => "specification",
            Party::Unknown => "?",
        }
    }

    fn join(self, other: Party) -> Party {
        match (self, other) {
            (Party::Unknown, p) | (p, Party::Unknown) => p,
            (a, b) if a == b => a,
            (Party::Spec, p) | (p, Party::Spec) => p,
            _ => Party::Both,
        }
    }
}

/// Whom the rule in `text` binds: for each RFC 2119 keyword, the last party named in the same
/// clause before it: "a host", "a guest", "a host and a guest" (rules name their subject with
/// the indefinite article, and the parties they act on with "the"), or the maintainers or a
/// version of the specification. A party followed by "that" is the subject of a relative
/// clause ("a host that lets a guest start vCPUs MUST"): the parties named inside that
/// clause are not.
pub fn party_of(text: &str) -> Party {
    let keyword = Regex::new(r"\b(MUST|SHOULD|MAY)\b").expect("valid regex");
    let subject = Regex::new(r"(?i)\b(?:a (host and a guest|host|guest)|(maintainers|version of this specification))\b(-)?")
        .expect("valid regex");
    let text = strip_code(text);
    let mut party = Party::Unknown;
    for k in keyword.find_iter(&text) {
        let before = &text[..k.start()];
        let clause_start = before.rfind(['.', ';', ':']).map_or(0, |i| i + 1);
        let clause = &before[clause_start..];
        let mut last = None;
        // Where the relative clause of the last party named ("a host that ...") began: the
        // parties named inside it, up to the comma that ends it, are not the subject.
        let mut relative_from = None;
        for c in subject.captures_iter(clause).filter(|c| c.get(3).is_none()) {
            let (start, end) = c.get(0).map_or((0, 0), |m| (m.start(), m.end()));
            if let Some(from) = relative_from {
                if !clause[from..start].contains(',') {
                    continue;
                }
            }
            relative_from = clause[end..]
                .trim_start()
                .starts_with("that ")
                .then_some(end);
            last = Some(c);
        }
        let found =
            last.map(
                |c| match c.get(1).map(|m| m.as_str().to_ascii_lowercase()).as_deref() {
                    Some("host") => Party::Host,
                    Some("guest") => Party::Guest,
                    Some(_) => Party::Both,
                    None => Party::Spec,
                },
            );
        party = party.join(found.unwrap_or(Party::Unknown));
    }
    party
}

impl Requirement {
    /// The ID's prefix (`BASE` in `PVABI-BASE-001`).
    pub fn prefix(&self) -> &str {
        self.id.split('-').nth(1).unwrap_or("")
    }

    /// The link to the rule, relative to the book's source directory (`base.md#PVABI-BASE-001`).
    pub fn href(&self) -> String {
        format!("{}#{}", self.chapter, self.id)
    }
}

/// A malformed requirement, or a normative keyword outside a requirement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequirementError {
    /// The chapter's source file.
    pub chapter: &'static str,
    /// The 1-based line.
    pub line: usize,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for RequirementError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "spec/text/{}:{}: {}",
            self.chapter, self.line, self.message
        )
    }
}

/// The syntax of a requirement's first line.
const HEAD: &str =
    r#"^<a id="(?P<id>[^"]*)"></a>\*\*(?P<shown>[^*]*)\*\* \((?P<level>[A-Z ]+)\): (?P<text>.*)$"#;
/// The syntax of an ID.
const ID: &str = r"^PVABI-(?P<prefix>[A-Z]+)-(?P<num>[0-9]{3})$";
/// RFC 2119 keywords that make a sentence normative.
const KEYWORDS: &str = r"\b(MUST|SHOULD|SHALL|REQUIRED|RECOMMENDED|MAY|OPTIONAL)\b";

/// Every requirement of the specification, in book order.
///
/// The sources are compiled in, so this works without a checkout. Panics if a requirement is
/// malformed; the crate's tests guarantee that none is.
pub fn requirements() -> Vec<Requirement> {
    let (reqs, errors) = parse_all(CHAPTERS.iter().map(|c| (c, c.source)));
    assert!(errors.is_empty(), "malformed requirements: {errors:?}");
    reqs
}

/// Parses the requirements of the given chapters (`(chapter, source text)` pairs), returning
/// the requirements and every problem found.
pub fn parse_all<'a>(
    chapters: impl IntoIterator<Item = (&'static Chapter, &'a str)>,
) -> (Vec<Requirement>, Vec<RequirementError>) {
    let mut reqs = Vec::new();
    let mut errors = Vec::new();
    for (chapter, source) in chapters {
        parse_chapter(chapter, source, &mut reqs, &mut errors);
    }
    (reqs, errors)
}

/// Blanks out code spans and fenced code so that keywords inside them do not count.
fn strip_code(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut in_code = false;
    for c in line.chars() {
        if c == '`' {
            in_code = !in_code;
            out.push(' ');
        } else if in_code {
            out.push(' ');
        } else {
            out.push(c);
        }
    }
    out
}

fn parse_chapter(
    chapter: &'static Chapter,
    source: &str,
    reqs: &mut Vec<Requirement>,
    errors: &mut Vec<RequirementError>,
) {
    let head = Regex::new(HEAD).expect("HEAD is a valid regex");
    let id_re = Regex::new(ID).expect("ID is a valid regex");
    let keyword_re = Regex::new(KEYWORDS).expect("KEYWORDS is a valid regex");
    let mut err = |line: usize, message: String| {
        errors.push(RequirementError {
            chapter: chapter.file,
            line,
            message,
        })
    };

    let lines: Vec<&str> = source.lines().collect();
    let mut i = 0;
    let mut in_fence = false;
    // Whether the current paragraph is a requirement (its keywords are accounted for).
    let mut in_requirement = false;
    while i < lines.len() {
        let line = lines[i];
        let lineno = i + 1;
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            i += 1;
            continue;
        }
        if in_fence {
            i += 1;
            continue;
        }
        if line.trim().is_empty() {
            in_requirement = false;
            i += 1;
            continue;
        }
        if let Some(caps) = head.captures(line) {
            let id = &caps["id"];
            if !id_re.is_match(id) {
                err(lineno, format!("requirement ID `{id}` is malformed: write PVABI-<PREFIX>-<NNN>, e.g. PVABI-BASE-001"));
            } else {
                let prefix = &id_re.captures(id).expect("matched")["prefix"];
                if !chapter.prefixes.contains(&prefix) {
                    err(
                        lineno,
                        format!(
                            "requirement {id} uses prefix {prefix}, but chapter {} owns {:?}; use one of those or add the prefix to the chapter's entry in spec/src/chapters.rs",
                            chapter.file, chapter.prefixes
                        ),
                    );
                }
            }
            if &caps["shown"] != id {
                err(lineno, format!("requirement anchor `{id}` and shown ID `{}` differ; write the same ID twice", &caps["shown"]));
            }
            let Some(level) = Level::from_keyword(&caps["level"]) else {
                err(
                    lineno,
                    format!("requirement {id}: level `({})` is not one of MUST, MUST NOT, SHOULD, SHOULD NOT, MAY", &caps["level"]),
                );
                i += 1;
                continue;
            };
            let mut text = caps["text"].trim().to_string();
            let mut j = i + 1;
            while j < lines.len() && !lines[j].trim().is_empty() {
                if lines[j].starts_with("<a id=\"PVABI-") {
                    break;
                }
                text.push(' ');
                text.push_str(lines[j].trim());
                j += 1;
            }
            if text.is_empty() {
                err(lineno, format!("requirement {id} has no text"));
            }
            if !contains_level_keyword(&strip_code(&text), level) {
                err(
                    lineno,
                    format!("requirement {id} is marked ({level}) but its text does not say {level}; state the rule with the keyword"),
                );
            }
            reqs.push(Requirement {
                id: id.to_string(),
                level,
                chapter: chapter.file,
                chapter_title: chapter.title,
                party: party_of(&text),
                text,
                line: lineno,
            });
            in_requirement = true;
            i = j;
            continue;
        }
        if line.contains("<a id=\"PVABI-") || line.trim_start().starts_with("**PVABI-") {
            err(
                lineno,
                "requirement does not follow the syntax: start a paragraph at column 0 with `<a id=\"PVABI-X-NNN\"></a>**PVABI-X-NNN** (LEVEL): text`".to_string(),
            );
        } else if chapter.normative && !in_requirement {
            let stripped = strip_code(line);
            if let Some(m) = keyword_re.find(&stripped) {
                err(
                    lineno,
                    format!(
                        "normative keyword `{}` outside a requirement: give the rule a requirement ID, or write the word in lower case (or as `code`) if it is not a rule",
                        m.as_str()
                    ),
                );
            }
        }
        i += 1;
    }
}

/// Whether `text` states `level` (for MUST and SHOULD, an occurrence not followed by NOT).
fn contains_level_keyword(text: &str, level: Level) -> bool {
    let kw = level.keyword();
    match level {
        Level::Must | Level::Should => text
            .match_indices(kw)
            .any(|(at, _)| !text[at + kw.len()..].starts_with(" NOT")),
        _ => text.contains(kw),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static TEST_CHAPTER: Chapter = Chapter {
        file: "test.md",
        title: "Test",
        prefixes: &["TEST"],
        family: None,
        normative: true,
        source: "",
    };

    fn parse(src: &str) -> (Vec<Requirement>, Vec<RequirementError>) {
        parse_all([(&TEST_CHAPTER, src)])
    }

    #[test]
    fn parses_a_multi_line_requirement() {
        let (reqs, errors) = parse(
            "Intro text.\n\n<a id=\"PVABI-TEST-001\"></a>**PVABI-TEST-001** (MUST NOT): A host MUST NOT\ndo this.\n\nMore.\n",
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(reqs.len(), 1);
        assert_eq!(reqs[0].id, "PVABI-TEST-001");
        assert_eq!(reqs[0].level, Level::MustNot);
        assert_eq!(reqs[0].text, "A host MUST NOT do this.");
        assert_eq!(reqs[0].line, 3);
        assert_eq!(reqs[0].href(), "test.md#PVABI-TEST-001");
        assert_eq!(reqs[0].party, Party::Host);
    }

    #[test]
    fn finds_the_party() {
        assert_eq!(party_of("A host MUST do x."), Party::Host);
        assert_eq!(
            party_of("A guest MUST align; a host MUST reject."),
            Party::Both
        );
        assert_eq!(party_of("A host and a guest MUST store."), Party::Both);
        assert_eq!(
            party_of("In host-polled mode, a guest MUST notify."),
            Party::Guest
        );
        assert_eq!(
            party_of("A host MUST stop the guest, and MUST report."),
            Party::Host
        );
        assert_eq!(party_of("A host-polled ring MUST x."), Party::Unknown);
        assert_eq!(
            party_of("A host that lets a guest start vCPUs MUST treat them as running."),
            Party::Host
        );
        assert_eq!(
            party_of("A guest that has negotiated it SHOULD NOT use INIT."),
            Party::Guest
        );
        assert_eq!(
            party_of("When a guest that has negotiated it calls, a host MUST answer."),
            Party::Host
        );
        assert_eq!(party_of("The maintainers MUST publish."), Party::Spec);
        assert_eq!(party_of("It MUST happen."), Party::Unknown);
    }

    #[test]
    fn rejects_malformed_requirements() {
        let cases = [
            "<a id=\"PVABI-TEST-1\"></a>**PVABI-TEST-1** (MUST): A host MUST.",
            "<a id=\"PVABI-TEST-001\"></a>**PVABI-TEST-002** (MUST): A host MUST.",
            "<a id=\"PVABI-TEST-001\"></a>**PVABI-TEST-001** (SHALL): A host SHALL.",
            "<a id=\"PVABI-TEST-001\"></a>**PVABI-TEST-001** (MUST): A host may.",
            "<a id=\"PVABI-TEST-001\"></a>**PVABI-TEST-001** (MUST): A host MUST NOT.",
            "<a id=\"PVABI-OTHER-001\"></a>**PVABI-OTHER-001** (MUST): A host MUST.",
            "- <a id=\"PVABI-TEST-001\"></a>**PVABI-TEST-001** (MUST): A host MUST.",
            "A host MUST do this, but without an ID.",
        ];
        for case in cases {
            let (_, errors) = parse(case);
            assert_eq!(errors.len(), 1, "{case}: {errors:?}");
        }
    }

    #[test]
    fn keywords_in_code_and_lower_case_are_not_rules() {
        let (reqs, errors) =
            parse("The keyword `MUST` is defined in RFC 2119; a host must...\n\n```\nMUST\n```\n");
        assert!(reqs.is_empty());
        assert!(errors.is_empty(), "{errors:?}");
    }
}
