//! The checked-in C header: up to date with the ABI crate, complete, and clean under real C
//! and C++ compilers.

use std::path::{Path, PathBuf};
use std::process::Command;

use pvabi_abi::layout::StructLayout;
use pvabi_abi::registry::{Format, CONSTANTS};
use pvabi_abi::{calls, features::FEATURES, layout::STRUCTS, preview2, status::Status};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every structure in the header: the released ABI's, then the 2.0 preview's.
fn all_structs() -> impl Iterator<Item = &'static StructLayout> {
    STRUCTS.iter().chain(preview2::STRUCTS).copied()
}

fn header_text() -> String {
    std::fs::read_to_string(root().join("include/pvabi.h"))
        .expect("include/pvabi.h is missing; run `cargo run -- header`")
}

#[test]
fn checked_in_header_matches_a_fresh_generation() {
    let out = Command::new(env!("CARGO_BIN_EXE_pvabi"))
        .args(["header", "--check", "-o"])
        .arg(root().join("include/pvabi.h"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "include/pvabi.h differs from the ABI crate; run `cargo run -- header`\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn header_names_every_call_status_feature_and_structure() {
    let h = header_text();
    for d in calls::all() {
        let name = format!("PVABI_CALL_{} = {},", d.name, d.call.code());
        assert!(h.contains(&name), "header lacks `{name}`");
    }
    for s in Status::ALL {
        let name = format!("PVABI_STATUS_{} = {},", s.name(), s.raw());
        assert!(h.contains(&name), "header lacks `{name}`");
    }
    for f in FEATURES {
        let name = format!(
            "#define PVABI_FEATURE_{} (1ull << {})",
            f.name,
            f.flag.bits().trailing_zeros()
        );
        assert!(h.contains(&name), "header lacks `{name}`");
    }
    for l in all_structs() {
        assert!(
            h.contains(&format!("typedef struct {} {{", l.c_name)),
            "header lacks struct {}",
            l.c_name
        );
        assert!(
            h.contains(&format!("sizeof({}) == {}", l.c_name, l.size)),
            "no size assertion for {}",
            l.c_name
        );
        for f in l.fields {
            assert!(h.contains(&format!(
                "offsetof({}, {}) == {}",
                l.c_name, f.name, f.offset
            )));
        }
    }
    for family in [
        "BASE", "CONSOLE", "TIME", "EVENTS", "MEMORY", "VCPU", "SYSTEM", "BATCH",
    ] {
        assert!(
            h.contains(&format!("PVABI_FAMILY_{family}")),
            "header lacks family {family}"
        );
    }
}

#[test]
fn every_c_identifier_is_prefixed() {
    let h = header_text();
    // Top-level declarations only (continuation lines are indented).
    for line in h.lines().filter(|l| !l.starts_with(char::is_whitespace)) {
        let words: Vec<&str> = line
            .trim_end_matches([';', '{', ' '])
            .split_whitespace()
            .collect();
        let ident = match words.as_slice() {
            ["#define", name, ..] => Some(name.split('(').next().unwrap()),
            ["typedef", "struct" | "enum", name] => Some(*name),
            ["typedef", .., name] => Some(*name),
            ["enum", name] => Some(*name),
            ["}", name] => Some(*name),
            _ => None,
        };
        if let Some(ident) = ident {
            assert!(
                ident.starts_with("PVABI_") || ident.starts_with("pvabi_"),
                "unprefixed C identifier `{ident}` in: {line}"
            );
        }
    }
}

/// A translation unit that includes the header and uses every structure.
fn test_unit(cxx: bool) -> String {
    let mut s = String::from("#include \"pvabi.h\"\n");
    s.push_str(
        "int pvabi_header_test(void);\nint pvabi_header_test(void) {\n  unsigned long total = 0;\n",
    );
    for l in all_structs() {
        let init = if cxx { "{}" } else { "{0}" };
        s.push_str(&format!(
            "  {{ {} v = {init}; total += sizeof v; (void)v; }}\n",
            l.c_name
        ));
    }
    s.push_str("  return (int)(total + PVABI_CALL_NEGOTIATE + PVABI_STATUS_SUCCESS);\n}\n");
    s
}

fn compile(compiler: &str, std: &str, cxx: bool) {
    let mut unit = test_unit(cxx);
    unit.push_str(&registry_assertions());
    compile_unit(compiler, std, cxx, "t", &unit);
}

/// Compiles `unit` (which may include `pvabi.h`) with `compiler -std=std -Wall -Wextra -Werror
/// -pedantic` to an object file.
fn compile_unit(compiler: &str, std: &str, cxx: bool, name: &str, unit: &str) {
    let dir = std::env::temp_dir().join(format!(
        "pvabi-header-{}-{name}-{compiler}-{std}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let src: PathBuf = dir.join(if cxx { "t.cpp" } else { "t.c" });
    std::fs::write(&src, unit).unwrap();
    let out = Command::new(compiler)
        .arg(format!("-std={std}"))
        .args(["-Wall", "-Wextra", "-Werror", "-pedantic", "-c", "-o"])
        .arg(dir.join("t.o"))
        .arg("-I")
        .arg(root().join("include"))
        .arg(&src)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run `{compiler}` ({e}): install it (Debian: `apt-get install -y gcc g++ clang`)")
        });
    assert!(
        out.status.success(),
        "{compiler} -std={std} rejected include/pvabi.h ({name}):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn header_compiles_with_gcc_c99_and_c11() {
    compile("gcc", "c99", false);
    compile("gcc", "c11", false);
}

#[test]
fn header_compiles_with_clang_c99_and_c11() {
    compile("clang", "c99", false);
    compile("clang", "c11", false);
}

#[test]
fn header_compiles_with_gxx_cxx17() {
    compile("g++", "c++17", true);
}

#[test]
fn a_wrong_layout_fails_the_static_assertions() {
    // The assertions are real: a header whose struct disagrees with them must not compile.
    let h = header_text().replace("uint32_t sequence;", "uint64_t sequence;");
    assert!(
        h.contains("uint64_t sequence;"),
        "the time page's first field moved; update this test"
    );
    let dir = std::env::temp_dir().join(format!("pvabi-header-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("pvabi.h"), h).unwrap();
    std::fs::write(dir.join("t.c"), "#include \"pvabi.h\"\n").unwrap();
    let out = Command::new("gcc")
        .args(["-std=c11", "-c", "-o"])
        .arg(dir.join("t.o"))
        .arg(dir.join("t.c"))
        .output()
        .unwrap();
    assert!(!out.status.success(), "a wrong layout compiled");
    assert!(String::from_utf8_lossy(&out.stderr).contains("pvabi_time_page"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Whether a registry entry belongs in the header: every ABI, quoted and preview constant, but
/// not the reference platform's (`Kind::Platform`: the reference host's boot contract, which
/// the spec's appendix documents and which is not part of the ABI).
fn in_header(c: &pvabi_abi::registry::Constant) -> bool {
    c.kind != pvabi_abi::registry::Kind::Platform
}

/// Registry entries that are deliberately not in the header, each with the reason.
const NOT_IN_HEADER: &[(&str, &str)] = &[(
    "SPEC_VERSION_RAW",
    "another spelling of SPEC_VERSION, which the header writes in hex (0x10001u)",
)];

/// The C name of a registry entry: `PVABI_` + the name, or for an enumerator `Type::Variant`
/// the enumerator's C name, `PVABI_TYPE_VARIANT`.
fn c_name(name: &str) -> String {
    fn screaming(s: &str) -> String {
        let mut out = String::new();
        for (i, ch) in s.chars().enumerate() {
            if ch.is_ascii_uppercase() && i > 0 {
                out.push('_');
            }
            out.push(ch.to_ascii_uppercase());
        }
        out
    }
    match name.split_once("::") {
        Some((ty, variant)) => format!("PVABI_{}_{}", screaming(ty), screaming(variant)),
        None => format!("PVABI_{name}"),
    }
}

/// The value of `#define NAME value` in the header, if the header defines `NAME`.
fn define_value<'h>(h: &'h str, c_name: &str) -> Option<&'h str> {
    let prefix = format!("#define {c_name} ");
    h.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .map(str::trim)
}

/// The value of a C integer literal such as `0x5650`, `0x62617670u`, `4096`, `0xffull`.
fn c_literal(text: &str) -> Option<u64> {
    let digits = text.trim_end_matches(['u', 'l', 'U', 'L']);
    match digits.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => digits.parse().ok(),
    }
}

/// Static assertions, at file scope, that every registry entry the header has (every entry
/// but [`NOT_IN_HEADER`]) has the registry's value in C.
fn registry_assertions() -> String {
    let mut s = String::from("\n/* The registry's values. */\n");
    for c in CONSTANTS.iter().filter(|c| in_header(c)) {
        if NOT_IN_HEADER.iter().any(|(n, _)| *n == c.name) {
            continue;
        }
        let name = c_name(c.name);
        match c.format {
            Format::Text(text) => s.push_str(&format!(
                "PVABI_STATIC_ASSERT(sizeof({name}) == {}, \"{name}\");\n",
                text.len() + 1
            )),
            _ => s.push_str(&format!(
                "PVABI_STATIC_ASSERT({name} == {:#x}ull, \"{name}\");\n",
                c.value
            )),
        }
    }
    s
}

#[test]
fn every_registry_constant_is_in_the_header_or_excluded_with_a_reason() {
    // The spec's constants tables are rendered from the registry (the tabulated modules), and
    // the chapters quote any entry; the header has them all, with the registry's values (the
    // compile tests assert each value in C, see `registry_assertions`).
    let h = header_text();
    let mut tabulated = 0;
    for c in CONSTANTS {
        let name = c_name(c.name);
        if !in_header(c) {
            assert!(
                define_value(&h, &name).is_none(),
                "{name} is a reference-platform constant, which stays out of the header"
            );
            continue;
        }
        let excluded = NOT_IN_HEADER.iter().find(|(n, _)| *n == c.name);
        let present = match c.format {
            Format::Text(text) => define_value(&h, &name) == Some(&format!("\"{text}\"")),
            _ if c.name.contains("::") => h.contains(&format!("  {name} = {},", c.value)),
            _ => define_value(&h, &name).is_some(),
        };
        if let Some((_, reason)) = excluded {
            assert!(!present, "{name} is in the header but excluded ({reason})");
        } else {
            assert!(present, "header lacks {name} (registry entry {})", c.name);
        }
        if pvabi_spec::constants::tabulated(c.module) {
            tabulated += 1;
        }
    }
    assert!(tabulated > 50, "only {tabulated} tabulated constants");
    for (n, _) in NOT_IN_HEADER {
        assert!(
            CONSTANTS.iter().any(|c| c.name == *n),
            "NOT_IN_HEADER names {n}, which the registry lacks"
        );
    }
    // The ones the issue found missing, by name.
    for name in [
        "PVABI_CPUID_LAST_BASE",
        "PVABI_VERSION_MAJOR",
        "PVABI_VERSION_MINOR",
        "PVABI_SIGNATURE",
    ] {
        assert!(define_value(&h, name).is_some(), "header lacks {name}");
    }
}

#[test]
fn constants_the_spec_writes_in_hex_are_hex_in_the_header() {
    let h = header_text();
    let mut hex = 0;
    for c in CONSTANTS {
        if NOT_IN_HEADER.iter().any(|(n, _)| *n == c.name) || c.name.contains("::") {
            continue;
        }
        let name = c_name(c.name);
        let Some(value) = define_value(&h, &name) else {
            continue; // the completeness test reports it
        };
        match c.format {
            // The spec writes `0x5650`: the header writes the same digits, with a C suffix.
            Format::Hex => {
                assert!(
                    value.starts_with("0x") && c_literal(value) == Some(c.value),
                    "{name} is `{value}` in the header, the spec writes {:#x}",
                    c.value
                );
                hex += 1;
            }
            // The spec writes bit ranges or `major.minor`: the header writes hex, or an
            // expression of other constants and bits, never a decimal number.
            Format::Mask | Format::Version => assert!(
                !value.bytes().all(|b| b.is_ascii_digit()),
                "{name} is the decimal `{value}` in the header"
            ),
            Format::Dec | Format::Bit | Format::Text(_) => {}
        }
    }
    assert!(hex >= 10, "only {hex} hex constants checked");
    // The examples of the issue.
    assert_eq!(define_value(&h, "PVABI_DOORBELL_PORT"), Some("0x5650"));
    assert_eq!(define_value(&h, "PVABI_SIGNATURE_EBX"), Some("0x62617670u"));
    assert_eq!(
        define_value(&h, "PVABI_NEGOTIATE_REQUESTED_MASK"),
        Some("0xffffffffull")
    );
}

/// The C code blocks (```` ```c ````) of the doc comment that precedes `typedef struct
/// {c_name}` in the header, comment markers stripped.
fn doc_c_blocks(h: &str, c_name: &str) -> Vec<String> {
    let at = h
        .find(&format!("typedef struct {c_name} {{"))
        .unwrap_or_else(|| panic!("header lacks struct {c_name}"));
    let comment = &h[h[..at].rfind("/**").expect("a doc comment")..at];
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in comment.lines() {
        let line = line.trim_start().trim_start_matches('*');
        let line = line.strip_prefix(' ').unwrap_or(line);
        match (&mut current, line.trim_end()) {
            (None, "```c") => current = Some(String::new()),
            (Some(_), "```") => blocks.push(current.take().unwrap()),
            (Some(block), code) => {
                block.push_str(code);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    assert!(
        current.is_none(),
        "unterminated code block in {c_name}'s comment"
    );
    blocks
}

/// Compiles `unit` (a hosted C program that includes `pvabi.h`) with `compiler`, runs it and
/// returns its standard output. `-std=c11 -Wall -Wextra -Werror`, without `-pedantic`: the
/// documented formula uses `unsigned __int128`, an extension of GCC and Clang.
fn compile_and_run(compiler: &str, name: &str, unit: &str) -> String {
    let dir = std::env::temp_dir().join(format!(
        "pvabi-header-run-{}-{name}-{compiler}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("t.c"), unit).unwrap();
    let out = Command::new(compiler)
        .args(["-std=c11", "-O1", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(dir.join("t"))
        .arg("-I")
        .arg(root().join("include"))
        .arg(dir.join("t.c"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{compiler}` ({e})"));
    assert!(
        out.status.success(),
        "{compiler} rejected the documented formula ({name}):\n{}\n{unit}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = Command::new(dir.join("t")).output().unwrap();
    assert!(run.status.success(), "{name} failed to run");
    let _ = std::fs::remove_dir_all(&dir);
    String::from_utf8(run.stdout).unwrap()
}

/// The documented formulas as C functions `formula0`, `formula1`, ... of `(const c_name *t,
/// uint64_t tsc)`, each returning the block's `now_ns`.
fn formula_functions(blocks: &[String], c_name: &str) -> String {
    let mut s = String::new();
    for (i, block) in blocks.iter().enumerate() {
        assert!(
            block.contains("uint64_t now_ns ="),
            "block {i} sets no now_ns:\n{block}"
        );
        s.push_str(&format!(
            "static uint64_t formula{i}(const {c_name} *t, uint64_t tsc) {{\n{block}    return now_ns;\n}}\n"
        ));
    }
    s
}

/// The reference of PVABI-TIME-015 in Rust: wrapping 64-bit delta, the shift on 64 bits, the
/// product in 128 bits, then `>> 32` and a wrapping add.
fn time_page_ns(p: &pvabi_abi::time::TimePage, tsc: u64) -> u64 {
    let delta = tsc.wrapping_sub(p.tsc_timestamp);
    let delta = if p.tsc_shift >= 0 {
        delta << p.tsc_shift
    } else {
        delta >> -p.tsc_shift
    };
    let product = u128::from(delta) * u128::from(p.tsc_mul);
    p.monotonic_ns.wrapping_add((product >> 32) as u64)
}

#[test]
fn the_documented_time_formula_is_c_that_agrees_with_the_reference() {
    use pvabi_abi::time::TimePage;
    let blocks = doc_c_blocks(&header_text(), "pvabi_time_page");
    assert_eq!(
        blocks.len(),
        2,
        "expected the __int128 and the split formula"
    );
    assert!(blocks[0].contains("unsigned __int128"));
    let m = u64::MAX;
    let stamps_tscs = [
        (0, 0),
        (100, m),                             // the largest delta
        (m - 5, 10),                          // the TSC wrapped: delta 16
        (10, 5),                              // tsc before the stamp: delta wraps
        (1 << 40, (1 << 40) + 3_000_000_000), // a second at 3 GHz
        (0, 1 << 63),
        (12345, 12345 + 0xffff_ffff),
    ];
    let shifts = [-63, -33, -32, -1, 0, 1, 31, 32, 63];
    let muls = [
        0,
        1,
        1 << 31,
        ((1u64 << 33) / 3) as u32,
        0xffff_fffe,
        0xffff_ffff,
    ];
    let bases = [0, 123_456_789, m - 1000];
    let mut pages = Vec::new();
    for &(stamp, tsc) in &stamps_tscs {
        for &shift in &shifts {
            for &mul in &muls {
                for &base in &bases {
                    let page = TimePage {
                        monotonic_ns: base,
                        tsc_timestamp: stamp,
                        tsc_shift: shift,
                        tsc_mul: mul,
                        ..TimePage::default()
                    };
                    pages.push((page, tsc));
                }
            }
        }
    }
    // The cases need the 96 bits: some products do not fit in 64.
    let wide = pages
        .iter()
        .filter(|(p, tsc)| {
            let d = tsc.wrapping_sub(p.tsc_timestamp);
            let d = if p.tsc_shift >= 0 {
                d << p.tsc_shift
            } else {
                d >> -p.tsc_shift
            };
            u128::from(d) * u128::from(p.tsc_mul) > u128::from(u64::MAX)
        })
        .count();
    assert!(wide > 100, "only {wide} cases need more than 64 bits");

    let mut unit =
        String::from("#include <inttypes.h>\n#include <stdio.h>\n#include \"pvabi.h\"\n\n");
    unit.push_str(&formula_functions(&blocks, "pvabi_time_page"));
    unit.push_str("\nstatic const struct { uint64_t base, stamp, tsc; int32_t shift; uint32_t mul; } cases[] = {\n");
    for (p, tsc) in &pages {
        unit.push_str(&format!(
            "    {{ {:#x}ull, {:#x}ull, {tsc:#x}ull, {}, {:#x}u }},\n",
            p.monotonic_ns, p.tsc_timestamp, p.tsc_shift, p.tsc_mul
        ));
    }
    unit.push_str(
        "};\n\nint main(void) {\n    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {\n        \
         pvabi_time_page page = {0};\n        page.flags = PVABI_TIME_PAGE_TSC_VALID;\n        \
         page.monotonic_ns = cases[i].base;\n        page.tsc_timestamp = cases[i].stamp;\n        \
         page.tsc_shift = cases[i].shift;\n        page.tsc_mul = cases[i].mul;\n        \
         printf(\"%\" PRIu64 \" %\" PRIu64 \"\\n\", formula0(&page, cases[i].tsc), formula1(&page, cases[i].tsc));\n    \
         }\n    return 0;\n}\n",
    );
    for compiler in ["gcc", "clang"] {
        let out = compile_and_run(compiler, "time-formula", &unit);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), pages.len());
        for ((p, tsc), line) in pages.iter().zip(lines) {
            let expected = time_page_ns(p, *tsc);
            let got: Vec<u64> = line.split(' ').map(|v| v.parse().unwrap()).collect();
            assert_eq!(
                got,
                [expected, expected],
                "{compiler}: the documented formulas (__int128, split) disagree with the \
                 reference for tsc {tsc:#x}, {p:?}"
            );
        }
    }
}

#[test]
fn the_2_0_preview_time_page_is_in_the_header_marked_as_the_preview() {
    let h = header_text();
    for l in preview2::STRUCTS {
        let at = h
            .find(&format!("typedef struct {} {{", l.c_name))
            .unwrap_or_else(|| panic!("header lacks {}", l.c_name));
        let comment = &h[h[..at].rfind("/**").unwrap()..at];
        assert!(
            comment.contains("2.0 preview, not a released ABI"),
            "{}'s comment does not mark it as the 2.0 preview",
            l.c_name
        );
        // Its assertions sit in the preview's block of the trailer.
        let block = h
            .find("/* The 2.0 preview (not a released ABI)")
            .expect("no preview block of assertions");
        let size = h
            .find(&format!("sizeof({}) == {}", l.c_name, l.size))
            .unwrap();
        assert!(
            size > block,
            "{}'s assertions are outside the preview block",
            l.c_name
        );
    }
    let flag = h
        .find("#define PVABI_TIME_PAGE_V2_TSC_VALID")
        .expect("no TIME_PAGE_V2_TSC_VALID");
    assert!(h[h[..flag].rfind("/**").unwrap()..flag].contains("2.0 preview"));
}

#[test]
fn the_documented_2_0_time_formula_is_c_that_agrees_with_the_reference() {
    use pvabi_abi::preview2::TimePageV2;
    let blocks = doc_c_blocks(&header_text(), "pvabi_v2_time_page");
    assert_eq!(blocks.len(), 1, "expected one formula for the 2.0 page");
    let m = u64::MAX;
    let mut pages = Vec::new();
    for (stamp, tsc) in [
        (0, 0),
        (100, m),
        (m - 5, 10),
        (10, 5),
        (1 << 40, (1 << 41) + 7),
    ] {
        for mul in [0, 1, 1 << 31, 0xffff_ffff, 1 << 32, (1 << 40) + 3, m - 1, m] {
            for base in [0, 123_456_789, m - 1000] {
                let page = TimePageV2 {
                    monotonic_ns: base,
                    tsc_timestamp: stamp,
                    tsc_mul: mul,
                    ..TimePageV2::default()
                };
                pages.push((page, tsc));
            }
        }
    }
    let mut unit =
        String::from("#include <inttypes.h>\n#include <stdio.h>\n#include \"pvabi.h\"\n\n");
    unit.push_str(&formula_functions(&blocks, "pvabi_v2_time_page"));
    unit.push_str("\nstatic const struct { uint64_t base, stamp, tsc, mul; } cases[] = {\n");
    for (p, tsc) in &pages {
        unit.push_str(&format!(
            "    {{ {:#x}ull, {:#x}ull, {tsc:#x}ull, {:#x}ull }},\n",
            p.monotonic_ns, p.tsc_timestamp, p.tsc_mul
        ));
    }
    unit.push_str(
        "};\n\nint main(void) {\n    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {\n        \
         pvabi_v2_time_page page = {0};\n        page.flags = PVABI_TIME_PAGE_V2_TSC_VALID;\n        \
         page.monotonic_ns = cases[i].base;\n        page.tsc_timestamp = cases[i].stamp;\n        \
         page.tsc_mul = cases[i].mul;\n        \
         printf(\"%\" PRIu64 \"\\n\", formula0(&page, cases[i].tsc));\n    }\n    return 0;\n}\n",
    );
    for compiler in ["gcc", "clang"] {
        let out = compile_and_run(compiler, "time-formula-v2", &unit);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), pages.len());
        for ((p, tsc), line) in pages.iter().zip(lines) {
            // The reference: wrapping 64-bit delta, 128-bit product, `>> 32`, wrapping add.
            let delta = tsc.wrapping_sub(p.tsc_timestamp);
            let product = u128::from(delta) * u128::from(p.tsc_mul);
            let expected = p.monotonic_ns.wrapping_add((product >> 32) as u64);
            assert_eq!(
                line.parse::<u64>().unwrap(),
                expected,
                "{compiler}: the documented 2.0 formula disagrees for tsc {tsc:#x}, {p:?}"
            );
        }
    }
}
