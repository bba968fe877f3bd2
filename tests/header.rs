//! The checked-in C header: up to date with the ABI crate, complete, and clean under real C
//! and C++ compilers.

use std::path::{Path, PathBuf};
use std::process::Command;

use pvabi_abi::{calls, features::FEATURES, layout::STRUCTS, status::Status};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
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
    for l in STRUCTS {
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
    for l in STRUCTS {
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
    let dir = std::env::temp_dir().join(format!(
        "pvabi-header-{}-{compiler}-{std}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let src: PathBuf = dir.join(if cxx { "t.cpp" } else { "t.c" });
    std::fs::write(&src, test_unit(cxx)).unwrap();
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
        "{compiler} -std={std} rejected include/pvabi.h:\n{}",
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
