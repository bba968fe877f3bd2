//! ABI snapshots per released pvabi version, and the checker that enforces the major/minor
//! rules by machine.
//!
//! `versioning/snapshots/<major>.<minor>.json` holds one [`Snapshot`] per released version:
//! every call and its descriptor, structure sizes, field offsets and types, status and enum
//! values, constants, feature bits and the CPUID layout. [`diff()`] classifies every difference
//! between two snapshots as a compatible addition (a minor version), a breaking change (a major
//! version) or neither, and [`check()`] applies the rules to the ABI crate against every stored
//! snapshot (see the [`check`](mod@check) module for the rules). `pvabi abi check` and
//! `pvabi abi snapshot` are the command-line front end.
//!
//! This complements cargo-semver-checks, which compares Rust APIs but not the byte layout or
//! the constant values that cross the hypercall boundary.
//!
//! ```
//! use pvabi_versioning::{check, diff, ChangeKind, Snapshot};
//! let released = Snapshot::current();
//! let mut next = released.clone();
//! next.calls.iter_mut().find(|c| c.name == "CONSOLE_WRITE").unwrap().code = 0x0105;
//! let changes = diff(&released, &next);
//! assert_eq!(changes[0].kind, ChangeKind::Breaking);
//! assert_eq!(changes[0].path, "calls.CONSOLE_WRITE.code");
//! ```

use std::path::{Path, PathBuf};

pub mod changelog;
pub mod check;
pub mod constants;
pub mod diff;
pub mod matrix;
pub mod model;

pub use changelog::changelog_markdown_from;
pub use check::{check, Problem, ProblemKind, Report, StoredSnapshot};
pub use diff::{diff, Change, ChangeKind};
pub use model::{AbiVersion, Error, Snapshot};

/// The directory of the released snapshots in this checkout (`versioning/snapshots`).
pub fn default_snapshots_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("snapshots")
}

/// Reads every `*.json` snapshot of a directory, sorted by version. Other files are ignored.
pub fn load_dir(dir: &Path) -> Result<Vec<StoredSnapshot>, Error> {
    let io = |source| Error::Io {
        path: dir.display().to_string(),
        source,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") || !path.is_file() {
            continue;
        }
        out.push(load_file(&path)?);
    }
    out.sort_by(|a, b| (a.snapshot.version, &a.file).cmp(&(b.snapshot.version, &b.file)));
    Ok(out)
}

/// Reads one snapshot file.
pub fn load_file(path: &Path) -> Result<StoredSnapshot, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })?;
    let snapshot = Snapshot::from_json(&text, &path.display().to_string())?;
    let file = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(StoredSnapshot { file, snapshot })
}

/// The changelog chapter of the spec, in Markdown, generated from the snapshots in
/// [`default_snapshots_dir`]: one `##` section per released version.
///
/// # Panics
///
/// If the snapshots cannot be read: they are part of the source tree.
pub fn changelog_markdown() -> String {
    let dir = default_snapshots_dir();
    let stored = load_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read the ABI snapshots in {}: {e}", dir.display()));
    let snapshots: Vec<Snapshot> = stored.into_iter().map(|s| s.snapshot).collect();
    changelog_markdown_from(&snapshots)
}
