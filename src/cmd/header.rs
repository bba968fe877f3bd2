//! `pvabi header`: generates `include/pvabi.h` from the ABI crate with cbindgen.
//!
//! cbindgen reads `abi/src` with `abi/cbindgen.toml`; this module adds what the ABI crate's
//! tables know:
//!
//! - the C name of every type (`pvabi_` + snake case), the 2.0 preview's structures
//!   (`pvabi_v2_...`, marked as the preview in their comments) included;
//! - each constant written as the spec writes it: the registry
//!   ([`pvabi_abi::registry::CONSTANTS`]) gives every constant a [`Format`], and a constant the
//!   spec writes in hex (a [`Format::Hex`], [`Format::Mask`] or [`Format::Version`] entry) is
//!   written in hex here too, with the C suffix of its Rust type (`0x5650`, `0x62617670u`,
//!   `0xffffffffull`), where cbindgen would write the decimal `22096`;
//! - the registry's [`Format::Text`] entries (the signature), which are not integers and so
//!   not constants cbindgen can translate, as string macros;
//! - a trailer of static assertions of every structure's size and field offsets, so a C
//!   compiler checks the layout the spec promises (the preview's in a block of their own).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use pvabi_abi::layout::{StructLayout, STRUCTS};
use pvabi_abi::registry::{Format, CONSTANTS};

/// Arguments of `pvabi header`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where to write the header (`-` for standard output).
    #[arg(short, long, default_value = "include/pvabi.h")]
    output: PathBuf,
    /// Do not write; exit non-zero if the file differs from a fresh generation.
    #[arg(long)]
    check: bool,
}

/// The ABI crate's enums and transparent newtypes that appear in the header, by Rust name.
const C_TYPES: &[&str] = &[
    "Call",
    "CallState",
    "EventKind",
    "Family",
    "Features",
    "RingMode",
    "Status",
    "Version",
    "WakeReason",
];

/// The workspace root (where `abi/` and `include/` live).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn snake_case(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// The static assertions appended to the header.
fn layout_assertions() -> String {
    let mut s = String::from(
        "\n/* Layout assertions, generated from the ABI crate's layout table. */\n\
         #ifndef PVABI_H_LAYOUT_ASSERTIONS\n\
         #define PVABI_H_LAYOUT_ASSERTIONS\n\
         #if defined(__cplusplus)\n\
         #define PVABI_STATIC_ASSERT(cond, msg) static_assert(cond, msg)\n\
         #elif defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L\n\
         #define PVABI_STATIC_ASSERT(cond, msg) _Static_assert(cond, msg)\n\
         #else\n\
         #define PVABI_STATIC_ASSERT_CAT2(a, b) a##b\n\
         #define PVABI_STATIC_ASSERT_CAT(a, b) PVABI_STATIC_ASSERT_CAT2(a, b)\n\
         #define PVABI_STATIC_ASSERT(cond, msg) \\\n  \
         typedef char PVABI_STATIC_ASSERT_CAT(pvabi_static_assert_, __LINE__)[(cond) ? 1 : -1]\n\
         #endif\n\n",
    );
    for layout in STRUCTS.iter() {
        struct_assertions(&mut s, layout);
    }
    s.push_str(
        "\n/* The 2.0 preview (not a released ABI): a host writes these layouts only for a guest\n \
         * whose NEGOTIATE accepted major 2 (PVABI-COMPAT-003). */\n",
    );
    for layout in pvabi_abi::preview2::STRUCTS.iter() {
        struct_assertions(&mut s, layout);
    }
    s.push_str("#endif /* PVABI_H_LAYOUT_ASSERTIONS */\n");
    s
}

/// The static assertions of one structure's size and field offsets.
fn struct_assertions(s: &mut String, layout: &StructLayout) {
    let c = layout.c_name;
    let _ = writeln!(
        s,
        "PVABI_STATIC_ASSERT(sizeof({c}) == {}, \"size of {c}\");",
        layout.size
    );
    for f in layout.fields {
        let _ = writeln!(
            s,
            "PVABI_STATIC_ASSERT(offsetof({c}, {}) == {}, \"offset of {c}.{}\");",
            f.name, f.offset, f.name
        );
    }
}

/// The Rust type of every `pub const NAME: TYPE` in `src` (one file of the ABI crate).
fn const_types(src: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in src.lines() {
        let Some(rest) = line.trim_start().strip_prefix("pub const ") else {
            continue;
        };
        let Some((name, rest)) = rest.split_once(':') else {
            continue;
        };
        let ty = rest
            .trim_start()
            .split([' ', '=', ';'])
            .next()
            .unwrap_or("");
        out.push((name.trim().to_owned(), ty.to_owned()));
    }
    out
}

/// The C suffix that gives a hexadecimal literal the type of the Rust constant (after C's
/// integer promotions, under which `u8` and `u16` become `int`).
fn c_suffix(rust_type: &str) -> anyhow::Result<&'static str> {
    Ok(match rust_type {
        "u8" | "u16" | "i8" | "i16" | "i32" => "",
        "u32" => "u",
        "u64" | "usize" => "ull",
        "i64" | "isize" => "ll",
        _ => anyhow::bail!("no C suffix for a constant of Rust type `{rust_type}`"),
    })
}

/// Whether the spec writes a constant of this format in hexadecimal (masks and versions are
/// written as bit ranges and `major.minor` in the spec, and in C as the hex that shows them).
fn hex_format(format: Format) -> bool {
    matches!(format, Format::Hex | Format::Mask | Format::Version)
}

/// Rewrites cbindgen's decimal `#define PVABI_NAME 22096` of every registry constant the spec
/// writes in hex as `#define PVABI_NAME 0x5650` (with the suffix of its Rust type). A value
/// cbindgen writes as an expression (`(1 << 0)`, another constant's name) is left alone.
fn registry_formats(header: &str, abi_src: &Path) -> anyhow::Result<String> {
    let mut types = std::collections::HashMap::new();
    let mut out = String::with_capacity(header.len() + 256);
    for line in header.split_inclusive('\n') {
        let rewritten = (|| {
            let rest = line.strip_prefix("#define PVABI_")?;
            let (name, value) = rest.trim_end().split_once(' ')?;
            let c = CONSTANTS.iter().find(|c| c.name == name)?;
            if !hex_format(c.format) || !value.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            Some((c, value))
        })();
        let Some((c, value)) = rewritten else {
            out.push_str(line);
            continue;
        };
        anyhow::ensure!(
            value.parse::<u64>().ok() == Some(c.value),
            "cbindgen wrote PVABI_{} as {value}, the registry has {}",
            c.name,
            c.value
        );
        let file = abi_src.join(format!("{}.rs", c.module.name()));
        if !types.contains_key(&file) {
            let src = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            types.insert(file.clone(), const_types(&src));
        }
        let ty = types[&file]
            .iter()
            .find(|(n, _)| n == c.name)
            .map(|(_, t)| t.as_str())
            .with_context(|| format!("no `pub const {}` in {}", c.name, file.display()))?;
        let _ = writeln!(
            out,
            "#define PVABI_{} 0x{:x}{}",
            c.name,
            c.value,
            c_suffix(ty)?
        );
    }
    Ok(out)
}

/// The registry's [`Format::Text`] entries as string macros (after the includes).
fn text_constants() -> anyhow::Result<String> {
    let mut s = String::new();
    for c in CONSTANTS {
        let Format::Text(text) = c.format else {
            continue;
        };
        anyhow::ensure!(
            text.bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\'),
            "{} is not plain ASCII text",
            c.name
        );
        let _ = write!(
            s,
            "\n/**\n * {}\n * As a string literal: its {} characters, then the NUL that the registers \
             do not hold.\n */\n#define PVABI_{} \"{text}\"",
            c.doc,
            text.len(),
            c.name,
        );
    }
    Ok(s)
}

/// Generates the header text from the ABI crate's sources.
pub fn generate() -> anyhow::Result<String> {
    let root = workspace_root();
    let abi = root.join("abi");
    let mut config = cbindgen::Config::from_file(abi.join("cbindgen.toml"))
        .map_err(|e| anyhow::anyhow!("cannot read abi/cbindgen.toml: {e}"))?;
    // cbindgen exports only what functions use or what is listed; an ABI crate has no
    // functions, so every type is listed, with its C name.
    for layout in STRUCTS {
        config.export.include.push(layout.name.to_owned());
        config
            .export
            .rename
            .insert(layout.name.to_owned(), layout.c_name.to_owned());
    }
    // The 2.0 preview's structures, under their own C names (`pvabi_v2_...`).
    for layout in pvabi_abi::preview2::STRUCTS {
        config.export.include.push(layout.name.to_owned());
        config
            .export
            .rename
            .insert(layout.name.to_owned(), layout.c_name.to_owned());
    }
    for name in C_TYPES {
        config.export.include.push((*name).to_owned());
        config
            .export
            .rename
            .insert((*name).to_owned(), format!("pvabi_{}", snake_case(name)));
    }
    config.after_includes = Some(text_constants()?);
    config.trailer = Some(layout_assertions());
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(abi.join("src/lib.rs"))
        .generate()
        .context("cbindgen could not generate the header from abi/src")?;
    let mut out = Vec::new();
    bindings.write(&mut out);
    registry_formats(&String::from_utf8(out)?, &abi.join("src"))
}

/// Runs `pvabi header`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let text = generate()?;
    if args.check {
        let current = std::fs::read_to_string(&args.output)
            .with_context(|| format!("cannot read {}", args.output.display()))?;
        if current != text {
            eprintln!(
                "{} is out of date with the ABI crate; run `cargo run -- header -o {}`",
                args.output.display(),
                args.output.display()
            );
            return Ok(ExitCode::FAILURE);
        }
        eprintln!("{} is up to date", args.output.display());
    } else if args.output == Path::new("-") {
        print!("{text}");
    } else {
        if let Some(dir) = args.output.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        std::fs::write(&args.output, &text)
            .with_context(|| format!("cannot write {}", args.output.display()))?;
        eprintln!(
            "wrote {} ({} lines)",
            args.output.display(),
            text.lines().count()
        );
    }
    Ok(ExitCode::SUCCESS)
}
