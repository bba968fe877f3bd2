//! The snapshot cannot silently miss part of the ABI: every constant and enumeration value of
//! the generated C header, and every integer constant of the ABI crate's sources, must be in
//! `Snapshot::current()` with the same value.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pvabi_versioning::Snapshot;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("versioning/ sits in the workspace")
        .to_path_buf()
}

fn header() -> String {
    let path = workspace().join("include/pvabi.h");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run `cargo run -- header`", path.display()))
}

/// Object-like `#define PVABI_<NAME> <expr>` lines: (name without the prefix, expression).
/// Include guards (no value) and function-like macros are skipped.
fn defines(h: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in h.lines() {
        let Some(rest) = line.trim_start().strip_prefix("#define PVABI_") else {
            continue;
        };
        let name_len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let (name, value) = rest.split_at(name_len);
        if value.starts_with('(') && !value.starts_with(" (") {
            continue; // function-like macro
        }
        let value = value.trim();
        if value.is_empty() {
            continue; // include guard
        }
        out.push((name.to_owned(), value.to_owned()));
    }
    out
}

/// Evaluates the C constant expressions cbindgen writes: integer literals (with `u`/`l`
/// suffixes), other `PVABI_` macros, parentheses, `<<` and `|`.
struct Eval<'a> {
    tokens: Vec<String>,
    pos: usize,
    defines: &'a BTreeMap<String, String>,
    depth: usize,
}

fn tokenize(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(chars[start..i].iter().collect());
        } else if c == '<' && chars.get(i + 1) == Some(&'<') {
            out.push("<<".to_owned());
            i += 2;
        } else {
            out.push(c.to_string());
            i += 1;
        }
    }
    out
}

impl Eval<'_> {
    fn value(text: &str, defines: &BTreeMap<String, String>, depth: usize) -> u64 {
        assert!(depth < 16, "macro recursion too deep in `{text}`");
        let mut e = Eval {
            tokens: tokenize(text),
            pos: 0,
            defines,
            depth,
        };
        let v = e.or();
        assert_eq!(e.pos, e.tokens.len(), "cannot evaluate `{text}`");
        v
    }

    fn next(&mut self) -> Option<String> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn peek(&self) -> Option<&str> {
        self.tokens.get(self.pos).map(String::as_str)
    }

    fn or(&mut self) -> u64 {
        let mut v = self.shift();
        while self.peek() == Some("|") {
            self.pos += 1;
            v |= self.shift();
        }
        v
    }

    fn shift(&mut self) -> u64 {
        let mut v = self.atom();
        while self.peek() == Some("<<") {
            self.pos += 1;
            v <<= self.atom();
        }
        v
    }

    fn atom(&mut self) -> u64 {
        let t = self.next().expect("expression ends early");
        if t == "(" {
            let v = self.or();
            assert_eq!(self.next().as_deref(), Some(")"), "unbalanced parentheses");
            return v;
        }
        if let Some(name) = t.strip_prefix("PVABI_") {
            let text = self
                .defines
                .get(name)
                .unwrap_or_else(|| panic!("{t} is not defined"));
            return Eval::value(text, self.defines, self.depth + 1);
        }
        let digits = t.trim_end_matches(['u', 'U', 'l', 'L']);
        match digits
            .strip_prefix("0x")
            .or_else(|| digits.strip_prefix("0X"))
        {
            Some(hex) => u64::from_str_radix(hex, 16),
            None => digits.parse(),
        }
        .unwrap_or_else(|_| panic!("`{t}` is not an integer"))
    }
}

/// Whether the registry says that no snapshot records the constant `name`: a
/// [`Kind::Quoted`](pvabi_abi::registry::Kind::Quoted) value (derived from other constants,
/// such as `CPUID_LAST_BASE`, or text, such as `SIGNATURE`) or a
/// [`Kind::Preview`](pvabi_abi::registry::Kind::Preview) constant of the 2.0 preview. The
/// header has them; the snapshot, by design, does not.
fn not_recorded(name: &str) -> bool {
    use pvabi_abi::registry::{get, Kind};
    get(name).is_some_and(|c| matches!(c.kind, Kind::Quoted | Kind::Preview))
}

#[test]
fn every_header_constant_is_in_the_snapshot_with_its_value() {
    let h = header();
    let defs: BTreeMap<String, String> = defines(&h).into_iter().collect();
    assert!(
        defs.len() > 40,
        "found only {} defines in the header",
        defs.len()
    );
    let snap = Snapshot::current();
    let table: BTreeMap<&str, u64> = snap
        .constants
        .iter()
        .map(|c| (c.name.as_str(), c.value))
        .collect();
    let mut missing = Vec::new();
    for (name, text) in &defs {
        if not_recorded(name) {
            continue;
        }
        let value = Eval::value(text, &defs, 0);
        match table.get(name.as_str()) {
            None => missing.push(format!("PVABI_{name} = {value:#x}")),
            Some(&v) => assert_eq!(
                v, value,
                "PVABI_{name} is {value:#x} in the header but {v:#x} in the snapshot"
            ),
        }
    }
    assert!(
        missing.is_empty(),
        "constants in include/pvabi.h but missing from the snapshot's constants table \
         (add them to versioning/src/constants.rs): {missing:?}"
    );
}

/// `enum pvabi_<name> { PVABI_<NAME>_<VARIANT> = <value>, ... }` blocks: C enum name -> values.
fn header_enums(h: &str) -> BTreeMap<String, Vec<(String, u64)>> {
    let mut out: BTreeMap<String, Vec<(String, u64)>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in h.lines() {
        if let Some(name) = line.strip_prefix("enum pvabi_") {
            current = Some(name.trim().to_owned());
            out.entry(name.trim().to_owned()).or_default();
            continue;
        }
        let Some(name) = &current else { continue };
        if line.starts_with("};") {
            current = None;
            continue;
        }
        let t = line.trim().trim_end_matches(',');
        if let Some((variant, value)) = t.split_once(" = ") {
            if variant.starts_with("PVABI_") {
                let v = value
                    .parse()
                    .unwrap_or_else(|_| panic!("bad enum value in `{line}`"));
                out.get_mut(name)
                    .expect("entry exists")
                    .push((variant.to_owned(), v));
            }
        }
    }
    out
}

fn camel(snake: &str) -> String {
    snake
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

#[test]
fn every_header_enum_value_is_in_the_snapshot() {
    let h = header();
    let enums = header_enums(&h);
    for expected in [
        "call",
        "status",
        "ring_mode",
        "call_state",
        "event_kind",
        "family",
        "wake_reason",
    ] {
        assert!(
            enums.get(expected).is_some_and(|v| !v.is_empty()),
            "no values found for enum pvabi_{expected} in the header"
        );
    }
    let snap = Snapshot::current();
    let mut missing = Vec::new();
    let mut seen = 0;
    for (c_enum, values) in &enums {
        let prefix = format!("PVABI_{}_", c_enum.to_ascii_uppercase());
        let in_snapshot: BTreeMap<String, u64> = match c_enum.as_str() {
            "call" => snap
                .calls
                .iter()
                .map(|c| (c.name.clone(), u64::from(c.code)))
                .collect(),
            "status" => snap
                .statuses
                .iter()
                .map(|s| (s.name.clone(), s.value))
                .collect(),
            other => snap
                .enums
                .get(&camel(other))
                .unwrap_or_else(|| {
                    panic!(
                        "the header has enum pvabi_{other}, the snapshot has no enum {} \
                         (add it to `enums()` in versioning/src/model.rs)",
                        camel(other)
                    )
                })
                .iter()
                .map(|v| (v.name.clone(), v.value))
                .collect(),
        };
        for (variant, value) in values {
            seen += 1;
            let name = variant
                .strip_prefix(&prefix)
                .unwrap_or_else(|| panic!("{variant} lacks the prefix {prefix}"));
            match in_snapshot.get(name) {
                Some(&v) => assert_eq!(v, *value, "{variant}: header {value}, snapshot {v}"),
                None => missing.push(variant.clone()),
            }
        }
        assert_eq!(
            values.len(),
            in_snapshot.len(),
            "pvabi_{c_enum}: the header and the snapshot list different numbers of values"
        );
    }
    assert!(seen > 60, "only {seen} enum values found in the header");
    assert!(
        missing.is_empty(),
        "enum values in include/pvabi.h but not in the snapshot: {missing:?}"
    );
}

/// Top-level `pub const NAME: <integer type>` items of the ABI crate's sources, including
/// those cbindgen does not export.
#[test]
fn every_integer_constant_of_the_abi_sources_is_in_the_table() {
    let dir = workspace().join("abi/src");
    let snap = Snapshot::current();
    let mut found = 0;
    let mut missing = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        // The 2.0 preview is not part of any released 1.x ABI, and the reference platform
        // (`pvabi_abi::platform`) is not part of the ABI at all.
        .filter(|p| !p.ends_with("preview2.rs") && !p.ends_with("platform.rs"))
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("pub const ") else {
                continue;
            };
            let Some((name, rest)) = rest.split_once(':') else {
                continue;
            };
            let ty = rest.trim_start().split([' ', '=']).next().unwrap_or("");
            if !matches!(
                ty,
                "u8" | "u16" | "u32" | "u64" | "usize" | "i8" | "i16" | "i32" | "i64"
            ) {
                continue;
            }
            found += 1;
            if !not_recorded(name) && !snap.constants.iter().any(|c| c.name == name) {
                missing.push(format!("{}: {name}", file.display()));
            }
        }
    }
    assert!(
        found > 40,
        "found only {found} integer constants in abi/src"
    );
    assert!(
        missing.is_empty(),
        "integer constants of the ABI crate missing from versioning/src/constants.rs: {missing:?}"
    );
}

#[test]
fn snapshot_lists_every_call_structure_status_and_feature() {
    let snap = Snapshot::current();
    assert_eq!(snap.calls.len(), pvabi_abi::calls::all().count());
    assert_eq!(snap.structs.len(), pvabi_abi::layout::STRUCTS.len());
    assert_eq!(snap.statuses.len(), pvabi_abi::status::Status::ALL.len());
    assert_eq!(snap.features.len(), pvabi_abi::features::FEATURES.len());
    // Every CpuidInfo bit lands in exactly one register bit.
    assert!(snap.cpuid.fields.iter().all(|f| f.leaf.is_some()));
    let bits: usize = snap
        .cpuid
        .fields
        .iter()
        .map(|f| {
            let (hi, lo) = f.bits.split_once(':').unwrap_or((&f.bits, &f.bits));
            hi.parse::<usize>().unwrap() - lo.parse::<usize>().unwrap() + 1
        })
        .sum();
    assert_eq!(bits, 32 * 7 + 64 + 16 * 2);
}
