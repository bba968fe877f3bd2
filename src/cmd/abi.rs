//! `pvabi abi`: checks the ABI crate against the released snapshots, or writes a snapshot.
//!
//! - `pvabi abi check [--json]` applies the versioning rules (see `pvabi_versioning::check`):
//!   exit 0 when they hold, 1 when a problem is found, 2 on a usage or I/O error.
//! - `pvabi abi snapshot [--force]` freezes the crate's version as
//!   `versioning/snapshots/<major>.<minor>.json`; a released snapshot is never overwritten
//!   without `--force`.
//! - `pvabi abi show [VERSION]` prints a snapshot (the crate's by default).
//! - `pvabi abi diff OLD NEW [--json]` classifies the differences between two versions; its
//!   exit status follows libabigail's `abidiff` bits: 0 none, 4 compatible additions only,
//!   12 (4 | 8) breaking changes, 2 usage or I/O error.
//! - `pvabi abi changelog` prints the changelog chapter generated from the snapshots.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use pvabi_versioning::{
    changelog_markdown_from, check, diff, load_dir, load_file, AbiVersion, ChangeKind, Snapshot,
    StoredSnapshot,
};

/// Exit status of `check` when a rule is broken.
const EXIT_PROBLEMS: u8 = 1;
/// Exit status on a usage or I/O error.
const EXIT_USAGE: u8 = 2;
/// `diff`: the ABI changed (abidiff's ABI_CHANGE bit).
const DIFF_CHANGED: u8 = 4;
/// `diff`: the change is incompatible (abidiff's ABI_INCOMPATIBLE_CHANGE bit).
const DIFF_INCOMPATIBLE: u8 = 8;

/// Arguments of `pvabi abi`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Sub,
    /// The directory of released snapshots (default: this checkout's `versioning/snapshots`).
    #[arg(long, value_name = "DIR", global = true)]
    snapshots: Option<PathBuf>,
}

#[derive(Debug, clap::Subcommand)]
enum Sub {
    /// Compare the ABI crate with every snapshot and enforce the major/minor rules.
    Check {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write the snapshot of the crate's version (`<major>.<minor>.json`).
    Snapshot {
        /// Overwrite an existing snapshot (only for one that was never released).
        #[arg(long)]
        force: bool,
    },
    /// Print a snapshot as JSON: the crate's, or a stored version's.
    Show {
        /// A version in the snapshots directory, a snapshot file, or `current`.
        #[arg(default_value = "current")]
        version: String,
    },
    /// Classify the differences between two versions (exit 0 none, 4 additions, 12 breaking).
    Diff {
        /// The older side: a version, a snapshot file, or `current`.
        old: String,
        /// The newer side (default: the crate).
        #[arg(default_value = "current")]
        new: String,
        /// Print the differences as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the changelog chapter generated from the snapshots (Markdown).
    Changelog,
}

/// Runs `pvabi abi`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let dir = args
        .snapshots
        .unwrap_or_else(pvabi_versioning::default_snapshots_dir);
    let result = match args.command {
        Sub::Check { json } => run_check(&dir, json),
        Sub::Snapshot { force } => run_snapshot(&dir, force),
        Sub::Show { version } => resolve(&dir, &version).map(|s| {
            print!("{}", s.to_json());
            ExitCode::SUCCESS
        }),
        Sub::Diff { old, new, json } => run_diff(&dir, &old, &new, json),
        Sub::Changelog => load(&dir).map(|stored| {
            let snaps: Vec<Snapshot> = stored.into_iter().map(|s| s.snapshot).collect();
            print!("{}", changelog_markdown_from(&snaps));
            ExitCode::SUCCESS
        }),
    };
    Ok(result.unwrap_or_else(|message| {
        eprintln!("pvabi abi: error: {message}");
        ExitCode::from(EXIT_USAGE)
    }))
}

fn load(dir: &Path) -> Result<Vec<StoredSnapshot>, String> {
    if !dir.is_dir() {
        return Err(format!(
            "snapshot directory {} does not exist (pass --snapshots DIR)",
            dir.display()
        ));
    }
    load_dir(dir).map_err(|e| e.to_string())
}

fn run_check(dir: &Path, json: bool) -> Result<ExitCode, String> {
    let stored = load(dir)?;
    let report = check(&Snapshot::current(), &stored);
    if json {
        print!("{}", report.to_json());
    } else {
        println!("snapshots directory: {}", dir.display());
        print!("{}", report.to_text());
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_PROBLEMS)
    })
}

fn run_snapshot(dir: &Path, force: bool) -> Result<ExitCode, String> {
    let current = Snapshot::current();
    let path = dir.join(current.version.file_name());
    let text = current.to_json();
    if path.exists() {
        let existing = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if existing == text {
            println!("{} is up to date", path.display());
            return Ok(ExitCode::SUCCESS);
        }
        if !force {
            eprintln!(
                "pvabi abi snapshot: {} already exists and differs from the crate.\n\
                 Released snapshots are frozen: a change to a released version needs a new \
                 version. Bump VERSION_MINOR (additions) or VERSION_MAJOR (breaking changes) in \
                 abi/src/version.rs, then run `pvabi abi snapshot` again. Use --force only for a \
                 snapshot that was never released.",
                path.display()
            );
            return Ok(ExitCode::from(EXIT_PROBLEMS));
        }
    }
    // Freezing a version that breaks its major would release the breakage: refuse unless
    // forced.
    if !force && dir.is_dir() {
        let stored = load(dir)?;
        let breaking: Vec<String> = stored
            .iter()
            .filter(|s| {
                s.snapshot.version.major == current.version.major
                    && s.snapshot.version < current.version
            })
            .flat_map(|s| {
                diff(&s.snapshot, &current)
                    .into_iter()
                    .filter(|c| c.kind == ChangeKind::Breaking)
                    .map(move |c| format!("  against {}: {c}", s.snapshot.version))
            })
            .collect();
        if !breaking.is_empty() {
            eprintln!(
                "pvabi abi snapshot: refusing to freeze {}: it breaks earlier snapshots of major \
                 {}:\n{}\nRelease the change as major {} instead (or pass --force).",
                current.version,
                current.version.major,
                breaking.join("\n"),
                current.version.major + 1
            );
            return Ok(ExitCode::from(EXIT_PROBLEMS));
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    std::fs::write(&path, &text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    println!(
        "wrote {} ({} calls, {} structures); it is frozen from now on",
        path.display(),
        current.calls.len(),
        current.structs.len()
    );
    Ok(ExitCode::SUCCESS)
}

/// A version in the directory, a snapshot file, or `current`.
fn resolve(dir: &Path, which: &str) -> Result<Snapshot, String> {
    if which == "current" || which == "crate" {
        return Ok(Snapshot::current());
    }
    if let Ok(v) = which.parse::<AbiVersion>() {
        let path = dir.join(v.file_name());
        if !path.is_file() {
            return Err(format!("no snapshot of version {v} ({})", path.display()));
        }
        return load_file(&path)
            .map(|s| s.snapshot)
            .map_err(|e| e.to_string());
    }
    let path = Path::new(which);
    if path.is_file() {
        return load_file(path)
            .map(|s| s.snapshot)
            .map_err(|e| e.to_string());
    }
    Err(format!(
        "`{which}` is neither `current`, a version (MAJOR.MINOR) nor a snapshot file"
    ))
}

fn run_diff(dir: &Path, old: &str, new: &str, json: bool) -> Result<ExitCode, String> {
    let (a, b) = (resolve(dir, old)?, resolve(dir, new)?);
    let changes = diff(&a, &b);
    if json {
        print!("{}", pvabi_versioning::diff::changes_to_json(&changes));
    } else if changes.is_empty() {
        println!("{} -> {}: no differences", a.version, b.version);
    } else {
        println!("{} -> {}:", a.version, b.version);
        for c in &changes {
            println!("  {:<9} {}", c.kind.to_string(), c.path);
            println!("            {}", c.explanation);
        }
    }
    let has = |k| changes.iter().any(|c| c.kind == k);
    let code = if has(ChangeKind::Breaking) {
        DIFF_CHANGED | DIFF_INCOMPATIBLE
    } else if has(ChangeKind::Addition) {
        DIFF_CHANGED
    } else {
        0
    };
    Ok(ExitCode::from(code))
}
