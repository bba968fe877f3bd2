//! Builds every bare-metal guest binary of `guest-ref/bare` (a separate cargo
//! workspace) with one nested `cargo build`, and hands their paths to this crate as
//! `PVABI_GUEST_<NAME>` environment variables (name upper-cased, `-` as `_`), e.g.
//! `env!("PVABI_GUEST_SMOKE")`.
//!
//! The nested build gets its own target directory under `OUT_DIR` and its own
//! rustflags (no SSE: ring-0 guest code is emulated on PVM hosts, and the emulator has
//! no SSE). Everything the outer cargo put into the environment that would change the
//! nested build (rustflags, target dir, wrappers such as clippy-driver, profile and
//! target overrides, build-script variables) is removed; the jobserver
//! (`CARGO_MAKEFLAGS`), `CARGO_HOME`, network/registry settings, `RUSTC` (same
//! toolchain) and `PATH` are kept.

use std::env;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

const GUEST_TARGET: &str = "x86_64-unknown-linux-gnu";
/// No SSE (see above); static relocations (linked at a fixed address); and no red zone:
/// the runtime takes interrupts at CPL0 on the interrupted code's own stack (its IDT has
/// no IST), and the CPU's interrupt frame would overwrite the 128 bytes below `rsp` that
/// the linux-gnu target otherwise lets leaf functions use without moving `rsp`.
const GUEST_RUSTFLAGS: &[&str] = &[
    "-Ctarget-feature=-sse,-sse2",
    "-Crelocation-model=static",
    "-Cno-redzone=yes",
];

/// Variables removed from the nested cargo's environment.
fn interferes(key: &str) -> bool {
    const EXACT: &[&str] = &[
        "RUSTFLAGS",
        "RUSTDOCFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_LINKER",
        "CLIPPY_ARGS",
        "CLIPPY_CONF_DIR",
        "TARGET",
        "HOST",
        "OUT_DIR",
        "PROFILE",
        "OPT_LEVEL",
        "DEBUG",
        "NUM_JOBS",
    ];
    // CARGO_* variables the nested build should inherit.
    const KEEP_CARGO: &[&str] = &[
        "CARGO_HOME",
        "CARGO_MAKEFLAGS",
        "CARGO_NET_",
        "CARGO_HTTP_",
        "CARGO_REGISTRIES_",
        "CARGO_REGISTRY_",
        "CARGO_TERM_",
        "CARGO_LOG",
        "CARGO_CACHE_",
    ];
    if EXACT.contains(&key) || key.starts_with("__CARGO") {
        return true;
    }
    // Everything else cargo-ish goes: CARGO_ENCODED_RUSTFLAGS, CARGO_TARGET_DIR,
    // CARGO_BUILD_*, CARGO_TARGET_<triple>_*, CARGO_PROFILE_*, CARGO_PKG_*,
    // CARGO_MANIFEST_*, CARGO_CFG_*, CARGO_FEATURE_*, CARGO_PRIMARY_PACKAGE, ...
    key.starts_with("CARGO_") && !KEEP_CARGO.iter().any(|k| key.starts_with(k))
}

fn rerun_if_changed(path: &Path) {
    println!("cargo:rerun-if-changed={}", path.display());
}

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let repo = manifest_dir
        .parent()
        .and_then(Path::parent)
        .expect("guest-ref/images lives inside the repository")
        .to_path_buf();
    let bare = repo.join("guest-ref").join("bare");
    let manifest = bare.join("Cargo.toml");

    println!("cargo:rerun-if-changed=build.rs");
    for path in [
        repo.join("guest-ref").join("src"),
        repo.join("guest-ref").join("Cargo.toml"),
        repo.join("abi").join("src"),
        repo.join("abi").join("Cargo.toml"),
        bare.join("Cargo.toml"),
        bare.join("Cargo.lock"),
    ] {
        rerun_if_changed(&path);
    }
    if !manifest.exists() {
        println!(
            "cargo:warning=no guest workspace at {}: no guest binaries built",
            bare.display()
        );
        return;
    }
    // Every member directory (not the bare workspace's own target directory, which a
    // developer's manual build creates and which changes on every build there).
    if let Ok(entries) = std::fs::read_dir(&bare) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if entry.path().is_dir() && name != "target" && !name.starts_with('.') {
                rerun_if_changed(&entry.path());
            }
        }
    }

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let target_dir = out_dir.join("guest-target");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));

    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--release")
        .arg("--locked")
        .arg("--message-format=json-render-diagnostics")
        .arg("--target")
        .arg(GUEST_TARGET)
        .arg("--target-dir")
        .arg(&target_dir)
        .arg("--manifest-path")
        .arg(&manifest)
        .current_dir(&bare);
    for (key, _) in env::vars_os() {
        if interferes(&key.to_string_lossy()) {
            cmd.env_remove(&key);
        }
    }
    cmd.env("CARGO_ENCODED_RUSTFLAGS", GUEST_RUSTFLAGS.join("\x1f"));

    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run cargo for the guest build: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        panic!(
            "building the bare-metal guests in {} failed ({}).\n{stderr}\n\
             If Cargo.lock there is out of date (a new member or dependency), refresh it with \
             `cargo generate-lockfile` in guest-ref/bare and commit it.",
            bare.display(),
            output.status
        );
    }

    // Binaries appear as compiler-artifact messages with a non-null "executable".
    let mut found = 0;
    for line in stdout.lines() {
        if !line.contains("\"reason\":\"compiler-artifact\"") {
            continue;
        }
        let Some(start) = line.find("\"executable\":\"") else {
            continue;
        };
        let rest = &line[start + "\"executable\":\"".len()..];
        let Some(end) = rest.find('"') else { continue };
        let path = PathBuf::from(&rest[..end]);
        let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            continue;
        };
        let var = format!("PVABI_GUEST_{}", name.to_uppercase().replace('-', "_"));
        println!("cargo:rustc-env={var}={}", path.display());
        found += 1;
    }
    if found == 0 {
        println!(
            "cargo:warning=the guest workspace {} built no binaries",
            bare.display()
        );
    }
}
