//! The versioning rules, applied to the ABI crate and the released snapshots.
//!
//! Let `cur` be the crate's version (`VERSION_MAJOR.VERSION_MINOR`). [`check`] reports a
//! problem when:
//!
//! 1. the crate differs from any snapshot of its own major at or below `cur` by a breaking
//!    change ("breaking change within major 1 ... needs major 2");
//! 2. the crate differs from the snapshot of `cur` itself by an addition ("addition without a
//!    minor bump ... bump VERSION_MINOR");
//! 3. no snapshot exists for `cur` ("version 1.1 has no snapshot ... run `pvabi abi
//!    snapshot`");
//! 4. a snapshot of the crate's major is newer than `cur` (a released version cannot be
//!    withdrawn);
//! 5. a snapshot file's `version` does not match its file name, or two files hold one version;
//! 6. a call's or feature's `since` is above `cur`, or a call or feature that is new since the
//!    previous snapshot of the major does not say it is new (`since` at or below that
//!    snapshot's version);
//! 7. released snapshots contradict each other: a later snapshot of a major breaks an earlier
//!    one;
//! 8. any change, against a snapshot of any major, that breaks a rule holding across majors:
//!    a reused call code, status value or feature bit (PVABI-VER-003), or a change of the Base
//!    family or of discovery (PVABI-VER-004).
//!
//! Differences from snapshots of other majors are otherwise reported for information only:
//! a new major may break anything else.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::diff::{diff, Change, ChangeKind};
use crate::model::{AbiVersion, Snapshot};

/// A snapshot as stored on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredSnapshot {
    /// The file name (`1.0.json`).
    pub file: String,
    /// Its contents.
    pub snapshot: Snapshot,
}

/// How a stored snapshot relates to the crate's version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Relation {
    /// The snapshot of the crate's own version.
    Current,
    /// An earlier minor of the crate's major.
    EarlierMinor,
    /// A later minor of the crate's major (a problem).
    Newer,
    /// Another major version (information only).
    OtherMajor,
}

/// One stored snapshot in a report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    /// Its version.
    pub version: AbiVersion,
    /// Its file name.
    pub file: String,
    /// How it relates to the crate's version.
    pub relation: Relation,
    /// Differences from it to the crate, by class.
    pub additions: usize,
    /// Breaking differences.
    pub breaking: usize,
    /// Differences with no ABI effect.
    pub neutral: usize,
}

/// A difference between a snapshot and the crate (or between two snapshots), in a report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportedChange {
    /// The older side.
    pub from: String,
    /// The newer side (`crate 1.1`, or a snapshot version).
    pub to: String,
    /// Whether the rules apply to it (false: another major, information only).
    pub enforced: bool,
    /// The difference.
    #[serde(flatten)]
    pub change: Change,
}

/// What kind of rule a problem breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// A breaking change against a snapshot of the same major.
    BreakingWithinMajor,
    /// An addition against the snapshot of the crate's own version.
    AdditionWithoutBump,
    /// The crate's version has no snapshot.
    MissingSnapshot,
    /// A snapshot of the crate's major is newer than the crate.
    NewerSnapshot,
    /// A snapshot file's name and `version` disagree, or two files hold one version.
    SnapshotName,
    /// A `since` value is wrong.
    Since,
    /// A released snapshot breaks an earlier one of its major.
    InconsistentSnapshots,
    /// A change breaks a rule that holds across majors.
    CrossMajor,
}

/// One problem found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// Which rule.
    pub kind: ProblemKind,
    /// The snapshot path it concerns, if any.
    pub path: Option<String>,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub fix: String,
}

/// The result of [`check`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The crate's version.
    pub crate_version: AbiVersion,
    /// The stored snapshots, in version order.
    pub snapshots: Vec<SnapshotInfo>,
    /// Every difference found, enforced or not.
    pub changes: Vec<ReportedChange>,
    /// The problems; empty when `ok`.
    pub errors: Vec<Problem>,
    /// Remarks that need no action.
    pub notes: Vec<String>,
    /// Whether the crate satisfies every rule.
    pub ok: bool,
}

impl Report {
    /// The report as pretty JSON with a trailing newline.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("a report always serializes");
        s.push('\n');
        s
    }

    /// Parses a report printed by `pvabi abi check --json`.
    pub fn from_json(text: &str) -> Result<Report, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The human-readable report.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let versions: Vec<String> = self
            .snapshots
            .iter()
            .map(|i| i.version.to_string())
            .collect();
        let _ = writeln!(
            s,
            "ABI crate version {}; snapshots: {}",
            self.crate_version,
            if versions.is_empty() {
                "none".to_owned()
            } else {
                versions.join(", ")
            }
        );
        for info in &self.snapshots {
            let what = match info.relation {
                Relation::Current => "this version's snapshot",
                Relation::EarlierMinor => "earlier minor, same major",
                Relation::Newer => "newer than the crate",
                Relation::OtherMajor => "other major, information only",
            };
            let to = format!("crate {}", self.crate_version);
            let changes: Vec<&ReportedChange> = self
                .changes
                .iter()
                .filter(|c| c.from == info.version.to_string() && c.to == to)
                .collect();
            let counts = if changes.is_empty() {
                "no differences".to_owned()
            } else {
                format!(
                    "{} breaking, {} additions, {} without ABI effect",
                    info.breaking, info.additions, info.neutral
                )
            };
            let _ = writeln!(s, "\n{} ({what}): {counts}", info.version);
            for c in changes {
                let _ = writeln!(s, "  {:<9} {}", c.change.kind.to_string(), c.change.path);
                let _ = writeln!(s, "            {}", c.change.explanation);
                if !c.change.violates.is_empty() {
                    let _ = writeln!(s, "            violates {}", c.change.violates.join(", "));
                }
            }
        }
        let between: Vec<&ReportedChange> = self
            .changes
            .iter()
            .filter(|c| !c.to.starts_with("crate "))
            .collect();
        if !between.is_empty() {
            let _ = writeln!(s, "\nBetween released snapshots:");
            for c in between {
                let _ = writeln!(
                    s,
                    "  {} -> {}: {:<9} {}: {}",
                    c.from,
                    c.to,
                    c.change.kind.to_string(),
                    c.change.path,
                    c.change.explanation
                );
            }
        }
        for n in &self.notes {
            let _ = writeln!(s, "\nnote: {n}");
        }
        if self.ok {
            let _ = writeln!(s, "\nOK: {}", self.summary());
        } else {
            let _ = writeln!(s, "\n{} problem(s):", self.errors.len());
            for e in &self.errors {
                let _ = writeln!(s, "  error: {}", e.message);
                let _ = writeln!(s, "    fix: {}", e.fix);
            }
            let _ = writeln!(
                s,
                "\nFAILED: the ABI crate breaks the versioning rules ({} problem(s)).",
                self.errors.len()
            );
        }
        s
    }

    /// One line saying what was verified (when `ok`).
    pub fn summary(&self) -> String {
        let cur = self.crate_version;
        let mut parts = vec![format!("{cur} matches its snapshot")];
        let earlier: Vec<String> = self
            .snapshots
            .iter()
            .filter(|i| i.relation == Relation::EarlierMinor)
            .map(|i| format!("{} ({} additions)", i.version, i.additions))
            .collect();
        if !earlier.is_empty() {
            parts.push(format!("compatible with {}", earlier.join(", ")));
        }
        let others = self
            .snapshots
            .iter()
            .filter(|i| i.relation == Relation::OtherMajor)
            .count();
        if others > 0 {
            parts.push(format!(
                "{others} snapshot(s) of other majors checked for reuse and Base changes"
            ));
        }
        parts.join("; ")
    }
}

fn problem(kind: ProblemKind, path: Option<&str>, message: String, fix: String) -> Problem {
    Problem {
        kind,
        path: path.map(str::to_owned),
        message,
        fix,
    }
}

fn cross_major_problem(c: &Change, from: &str, to: &str) -> Problem {
    let what = c
        .violates
        .iter()
        .map(|r| match r.as_str() {
            crate::diff::VER_NO_REUSE => {
                format!("{r}: a call code, status value or feature bit is never reused")
            }
            crate::diff::VER_BASE_FROZEN => {
                format!("{r}: the Base family and discovery never change")
            }
            other => other.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("; ");
    problem(
        ProblemKind::CrossMajor,
        Some(&c.path),
        format!(
            "change not allowed even in a new major ({from} -> {to}): {}: {} ({what})",
            c.path, c.explanation
        ),
        "undo it: use a new code, value or bit, and leave the Base family and discovery as \
         released"
            .to_owned(),
    )
}

/// Applies the versioning rules to `current` (normally [`Snapshot::current`]) and the stored
/// snapshots.
pub fn check(current: &Snapshot, stored: &[StoredSnapshot]) -> Report {
    let cur = current.version;
    let crate_side = format!("crate {cur}");
    let mut stored: Vec<&StoredSnapshot> = stored.iter().collect();
    stored.sort_by(|a, b| (a.snapshot.version, &a.file).cmp(&(b.snapshot.version, &b.file)));
    let mut errors = Vec::new();
    let mut notes = Vec::new();
    let mut changes = Vec::new();
    let mut infos = Vec::new();

    // Rule 5: file names and duplicates.
    let mut seen = BTreeSet::new();
    for s in &stored {
        let v = s.snapshot.version;
        if s.file != v.file_name() {
            errors.push(problem(
                ProblemKind::SnapshotName,
                None,
                format!("snapshot file {} says it is version {v}", s.file),
                format!(
                    "name the file {} (or restore its `version` field)",
                    v.file_name()
                ),
            ));
        }
        if !seen.insert(v) {
            errors.push(problem(
                ProblemKind::SnapshotName,
                None,
                format!(
                    "more than one snapshot file holds version {v} (one is {})",
                    s.file
                ),
                "keep one snapshot per version".to_owned(),
            ));
        }
    }

    // Rule 7 and 8 between released snapshots. `reported` keys a change by (newer side,
    // path); `cross_seen` keeps one cross-major problem per (older side, path, explanation),
    // since the crate usually equals its own snapshot.
    let mut reported: BTreeSet<(String, String)> = BTreeSet::new();
    let mut cross_seen: BTreeSet<(String, String, String)> = BTreeSet::new();
    for (i, a) in stored.iter().enumerate() {
        for b in &stored[i + 1..] {
            let (va, vb) = (a.snapshot.version, b.snapshot.version);
            if va == vb {
                continue;
            }
            let same = va.major == vb.major;
            for c in diff(&a.snapshot, &b.snapshot) {
                let enforced = (same && c.kind == ChangeKind::Breaking) || !c.violates.is_empty();
                if !enforced {
                    continue;
                }
                if reported.insert((vb.to_string(), c.path.clone())) {
                    if same {
                        errors.push(problem(
                            ProblemKind::InconsistentSnapshots,
                            Some(&c.path),
                            format!(
                                "released snapshot {vb} breaks released snapshot {va}: {}: {}",
                                c.path, c.explanation
                            ),
                            format!(
                                "released snapshots are frozen: restore {} from version control",
                                b.file
                            ),
                        ));
                    } else if cross_seen.insert((
                        va.to_string(),
                        c.path.clone(),
                        c.explanation.clone(),
                    )) {
                        errors.push(cross_major_problem(&c, &va.to_string(), &vb.to_string()));
                    }
                    changes.push(ReportedChange {
                        from: va.to_string(),
                        to: vb.to_string(),
                        enforced: true,
                        change: c,
                    });
                }
            }
        }
    }

    // The crate against each snapshot.
    let latest_of_major = |major: u16| {
        stored
            .iter()
            .filter(|s| s.snapshot.version.major == major)
            .map(|s| s.snapshot.version)
            .max()
    };
    let mut breaking_seen: BTreeSet<(String, String)> = BTreeSet::new();
    for s in &stored {
        let v = s.snapshot.version;
        let relation = if v.major != cur.major {
            Relation::OtherMajor
        } else if v == cur {
            Relation::Current
        } else if v < cur {
            Relation::EarlierMinor
        } else {
            Relation::Newer
        };
        let found = diff(&s.snapshot, current);
        let count = |k| found.iter().filter(|c| c.kind == k).count();
        infos.push(SnapshotInfo {
            version: v,
            file: s.file.clone(),
            relation,
            additions: count(ChangeKind::Addition),
            breaking: count(ChangeKind::Breaking),
            neutral: count(ChangeKind::Neutral),
        });
        let enforced = matches!(relation, Relation::Current | Relation::EarlierMinor);
        // Other majors: list the differences from the latest snapshot of that major only.
        let listed = enforced || relation == Relation::Newer || latest_of_major(v.major) == Some(v);
        for c in &found {
            match relation {
                Relation::Current | Relation::EarlierMinor => {
                    if c.kind == ChangeKind::Breaking
                        && breaking_seen.insert((c.path.clone(), c.explanation.clone()))
                    {
                        errors.push(problem(
                            ProblemKind::BreakingWithinMajor,
                            Some(&c.path),
                            format!(
                                "breaking change within major {} (against {v}), needs major \
                                 {}: {}: {}{}",
                                cur.major,
                                cur.major + 1,
                                c.path,
                                c.explanation,
                                if c.violates.is_empty() {
                                    String::new()
                                } else {
                                    format!(" (also violates {})", c.violates.join(", "))
                                }
                            ),
                            format!(
                                "undo the change, or make it in a new major: set VERSION_MAJOR \
                                 to {} and VERSION_MINOR to 0, then run `pvabi abi snapshot`",
                                cur.major + 1
                            ),
                        ));
                    }
                    if relation == Relation::Current && c.kind == ChangeKind::Addition {
                        errors.push(problem(
                            ProblemKind::AdditionWithoutBump,
                            Some(&c.path),
                            format!(
                                "addition without a minor bump: {}: {} ({cur} is released and \
                                 frozen)",
                                c.path, c.explanation
                            ),
                            format!(
                                "bump VERSION_MINOR to {} (and SPEC_VERSION), give new items \
                                 `since` {}.{}, and run `pvabi abi snapshot`",
                                cur.minor + 1,
                                cur.major,
                                cur.minor + 1
                            ),
                        ));
                    }
                }
                Relation::Newer => {}
                Relation::OtherMajor => {
                    if !c.violates.is_empty()
                        && cross_seen.insert((v.to_string(), c.path.clone(), c.explanation.clone()))
                    {
                        errors.push(cross_major_problem(c, &v.to_string(), &crate_side));
                    }
                }
            }
            if listed || !c.violates.is_empty() {
                changes.push(ReportedChange {
                    from: v.to_string(),
                    to: crate_side.clone(),
                    enforced: enforced || !c.violates.is_empty(),
                    change: c.clone(),
                });
            }
        }
        match relation {
            Relation::Newer => errors.push(problem(
                ProblemKind::NewerSnapshot,
                None,
                format!(
                    "snapshot {v} is newer than the crate version {cur}: a released version \
                     cannot be withdrawn"
                ),
                format!("restore VERSION_MINOR to at least {}", v.minor),
            )),
            Relation::Current => {
                let neutral = count(ChangeKind::Neutral);
                if neutral > 0 && count(ChangeKind::Addition) + count(ChangeKind::Breaking) == 0 {
                    notes.push(format!(
                        "{neutral} difference(s) from snapshot {v} have no ABI effect (names or \
                         descriptions); the released snapshot stays as it is"
                    ));
                }
            }
            Relation::EarlierMinor | Relation::OtherMajor => {}
        }
    }

    // Rule 3: the crate's version needs a snapshot.
    if !stored.iter().any(|s| s.snapshot.version == cur) {
        let latest = latest_of_major(cur.major);
        let message = match latest {
            Some(l) if l < cur => {
                format!(
                    "version {cur} has no snapshot (the latest of major {} is {l})",
                    cur.major
                )
            }
            _ => format!("version {cur} has no snapshot"),
        };
        errors.push(problem(
            ProblemKind::MissingSnapshot,
            None,
            message,
            format!(
                "run `pvabi abi snapshot` to freeze {cur} as {}",
                cur.file_name()
            ),
        ));
    }

    // Rule 6: `since` values.
    let since_items = current
        .calls
        .iter()
        .map(|c| ("calls", &c.name, c.since))
        .chain(
            current
                .features
                .iter()
                .map(|f| ("features", &f.name, f.since)),
        );
    let previous = stored
        .iter()
        .map(|s| &s.snapshot)
        .filter(|s| s.version.major == cur.major && s.version < cur)
        .max_by_key(|s| s.version);
    for (section, name, since) in since_items {
        let path = format!("{section}.{name}.since");
        if since > cur {
            errors.push(problem(
                ProblemKind::Since,
                Some(&path),
                format!("{path} is {since}, above the crate version {cur}"),
                format!("set it to {cur} or lower"),
            ));
            continue;
        }
        let Some(prev) = previous else { continue };
        let known = match section {
            "calls" => prev.calls.iter().any(|c| &c.name == name),
            _ => prev.features.iter().any(|f| &f.name == name),
        };
        if !known && since <= prev.version {
            errors.push(problem(
                ProblemKind::Since,
                Some(&path),
                format!(
                    "{path} is {since}, but {name} is not in snapshot {}: it is new",
                    prev.version
                ),
                format!("set it to {cur}"),
            ));
        }
    }

    let ok = errors.is_empty();
    Report {
        crate_version: cur,
        snapshots: infos,
        changes,
        errors,
        notes,
        ok,
    }
}
