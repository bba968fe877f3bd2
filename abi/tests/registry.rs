//! The constant registry cannot miss a constant of the ABI crate, nor list one twice.
//!
//! What counts (see `pvabi_abi::registry`): every `pub const NAME: <integer type>` of the
//! crate's sources, and every flag of a `bitflags!` type, which must be defined by a registered
//! constant.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pvabi_abi::registry::{Kind, Module, CONSTANTS};

const INTEGER_TYPES: &[&str] = &[
    "u8", "u16", "u32", "u64", "u128", "usize", "i8", "i16", "i32", "i64", "i128", "isize",
];

/// Every `.rs` file under `abi/src`, sorted.
fn sources() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut out);
    out.sort();
    assert!(out.len() > 10, "found only {} source files", out.len());
    out
}

/// The module a source file belongs to: its file stem (`mod.rs`: its directory).
fn module_of(path: &Path) -> String {
    let stem = path.file_stem().unwrap().to_str().unwrap();
    if stem == "mod" {
        let dir = path.parent().unwrap().file_name().unwrap();
        dir.to_str().unwrap().to_owned()
    } else {
        stem.to_owned()
    }
}

/// `pub const NAME: TYPE` declarations of a source text: (line number, name, type).
fn pub_consts(text: &str) -> Vec<(usize, String, String)> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let Some(rest) = line.trim_start().strip_prefix("pub const ") else {
            continue;
        };
        if rest.starts_with("fn ") {
            continue;
        }
        let Some((name, rest)) = rest.split_once(':') else {
            continue;
        };
        let ty = rest
            .trim_start()
            .split([' ', '=', ';'])
            .next()
            .unwrap_or("");
        out.push((i + 1, name.trim().to_owned(), ty.to_owned()));
    }
    out
}

fn registered(name: &str) -> Vec<&'static pvabi_abi::registry::Constant> {
    CONSTANTS
        .iter()
        .filter(|c| c.name == name || c.name.rsplit("::").next() == Some(name))
        .collect()
}

#[test]
fn every_integer_constant_of_the_sources_is_registered_under_its_module() {
    let mut found = 0;
    let mut problems = Vec::new();
    for file in sources() {
        let module = module_of(&file);
        let text = std::fs::read_to_string(&file).unwrap();
        for (line, name, ty) in pub_consts(&text) {
            if !INTEGER_TYPES.contains(&ty.as_str()) {
                continue;
            }
            found += 1;
            let at = format!("{}:{line}: {name}", file.display());
            match registered(&name).as_slice() {
                [] => problems.push(format!("{at} is not in the registry")),
                [c] if c.module.name() != module => problems.push(format!(
                    "{at} is registered under module {}, but {module} defines it",
                    c.module.name()
                )),
                [_] => {}
                more => problems.push(format!("{at} matches {} entries", more.len())),
            }
        }
    }
    assert!(
        found > 60,
        "found only {found} integer constants in abi/src"
    );
    assert!(
        problems.is_empty(),
        "every integer constant of abi/src needs one entry in CONSTANTS (abi/src/registry.rs), \
         under its module; the spec and the ABI snapshots read that list:\n  {}",
        problems.join("\n  ")
    );
}

/// `const FLAG = EXPR;` lines inside `bitflags!` blocks: (file, line, flag, expression).
fn bitflags_flags() -> Vec<(String, usize, String, String)> {
    let mut out = Vec::new();
    for file in sources() {
        let text = std::fs::read_to_string(&file).unwrap();
        let mut inside = false;
        for (i, line) in text.lines().enumerate() {
            if line.contains("bitflags!") {
                inside = true;
                continue;
            }
            if inside && line.starts_with('}') {
                inside = false;
            }
            if !inside {
                continue;
            }
            let Some(rest) = line.trim_start().strip_prefix("const ") else {
                continue;
            };
            let Some((flag, expr)) = rest.split_once('=') else {
                continue;
            };
            out.push((
                file.display().to_string(),
                i + 1,
                flag.trim().to_owned(),
                expr.trim().trim_end_matches(';').trim().to_owned(),
            ));
        }
    }
    out
}

#[test]
fn every_bitflags_flag_is_a_registered_constant() {
    let flags = bitflags_flags();
    assert!(
        flags.len() > 10,
        "found only {} bitflags flags",
        flags.len()
    );
    let mut problems = Vec::new();
    for (file, line, flag, expr) in flags {
        if flag == "_" {
            continue; // `const _ = !0;`: keep unknown bits
        }
        match registered(&expr).as_slice() {
            [c] if matches!(c.kind, Kind::Abi(_) | Kind::Preview) => {}
            _ => problems.push(format!(
                "{file}:{line}: flag {flag} = {expr}: define the bit as a `pub const` and \
                 register it, then write `const {flag} = THAT_CONSTANT;`"
            )),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn no_name_is_registered_twice() {
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for c in CONSTANTS {
        *seen.entry(c.name).or_default() += 1;
    }
    let twice: Vec<String> = seen
        .iter()
        .filter(|(_, &n)| n > 1)
        .map(|(name, n)| format!("{name} ({n} times)"))
        .collect();
    assert!(twice.is_empty(), "registered more than once: {twice:?}");
}

/// Every ABI and preview entry names a `pub const` of its module's file, every enumerator a
/// variant of an enum of that file, and only the preview module holds preview entries.
#[test]
fn every_entry_is_defined_where_it_says() {
    let mut consts: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut texts: BTreeMap<String, String> = BTreeMap::new();
    for file in sources() {
        let module = module_of(&file);
        let text = std::fs::read_to_string(&file).unwrap();
        for (_, name, _) in pub_consts(&text) {
            consts.entry(module.clone()).or_default().push(name);
        }
        texts.insert(module, text);
    }
    let mut problems = Vec::new();
    for c in CONSTANTS {
        let module = c.module.name();
        if (c.kind == Kind::Preview) != (c.module == Module::Preview2) {
            problems.push(format!(
                "{}: preview entries, and only they, belong to module preview2",
                c.name
            ));
        }
        if (c.kind == Kind::Platform) != (c.module == Module::Platform) {
            problems.push(format!(
                "{}: platform entries, and only they, belong to module platform (not the ABI)",
                c.name
            ));
        }
        let text = texts.get(module).map(String::as_str).unwrap_or("");
        match (c.kind, c.name.split_once("::")) {
            (Kind::Quoted, Some((ty, variant))) => {
                let decl = format!("pub enum {ty} {{");
                let Some(start) = text.find(&decl) else {
                    problems.push(format!("{}: no `{decl}` in {module}", c.name));
                    continue;
                };
                let body = &text[start..start + text[start..].find("\n}").unwrap_or(0)];
                if !body
                    .lines()
                    .any(|l| l.trim_start().starts_with(&format!("{variant} ")))
                {
                    problems.push(format!("{}: {ty} has no variant {variant}", c.name));
                }
            }
            (Kind::Quoted, None) => {} // derived values and other spellings
            (Kind::Abi(_) | Kind::Preview | Kind::Platform, _) => {
                if !consts
                    .get(module)
                    .is_some_and(|names| names.iter().any(|n| n == c.name))
                {
                    problems.push(format!("{}: no `pub const {}` in {module}", c.name, c.name));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn entries_are_grouped_by_module_in_book_order() {
    let names: Vec<&str> = Module::ALL.iter().map(|m| m.name()).collect();
    for (i, n) in names.iter().enumerate() {
        assert!(!names[i + 1..].contains(n), "Module::ALL lists {n} twice");
    }
    let order: Vec<usize> = CONSTANTS
        .iter()
        .map(|c| {
            Module::ALL
                .iter()
                .position(|&m| m == c.module)
                .unwrap_or_else(|| panic!("{:?} is missing from Module::ALL", c.module))
        })
        .collect();
    assert!(
        order.windows(2).all(|w| w[0] <= w[1]),
        "CONSTANTS is not grouped by module in the order of Module::ALL"
    );
}
