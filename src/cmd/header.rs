//! `pvabi header`: generates `include/pvabi.h` from the ABI crate with cbindgen.
//!
//! cbindgen reads `abi/src` with `abi/cbindgen.toml`; this module adds what the ABI crate's
//! tables know: the C name of every type (`pvabi_` + snake case) and a trailer of static
//! assertions of every structure's size and field offsets, so a C compiler checks the layout
//! the spec promises.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use pvabi_abi::layout::STRUCTS;

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
    s.push_str("#endif /* PVABI_H_LAYOUT_ASSERTIONS */\n");
    s
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
    for name in C_TYPES {
        config.export.include.push((*name).to_owned());
        config
            .export
            .rename
            .insert((*name).to_owned(), format!("pvabi_{}", snake_case(name)));
    }
    config.trailer = Some(layout_assertions());
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(abi.join("src/lib.rs"))
        .generate()
        .context("cbindgen could not generate the header from abi/src")?;
    let mut out = Vec::new();
    bindings.write(&mut out);
    Ok(String::from_utf8(out)?)
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
