//! `pvabi abi`: the real binary passes on the checked-in snapshots, fails (exit 1) naming the
//! change when a released snapshot disagrees with the crate, and refuses to overwrite a frozen
//! snapshot.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use pvabi_versioning::{default_snapshots_dir, AbiVersion, Report, Snapshot};

fn pvabi(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pvabi"))
        .args(args)
        .output()
        .expect("runs pvabi")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn show(o: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}--- stderr\n{}",
        o.status.code(),
        stdout(o),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A fresh, empty directory under the target directory.
fn temp_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("abi-cli-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The checked-in 1.0 snapshot, as a model.
fn released_1_0() -> Snapshot {
    let path = default_snapshots_dir().join("1.0.json");
    Snapshot::from_json(&std::fs::read_to_string(&path).unwrap(), "1.0.json").unwrap()
}

#[test]
fn check_passes_on_main() {
    let out = pvabi(&["abi", "check"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let text = stdout(&out);
    assert!(text.contains("OK: "), "{text}");
    assert!(text.contains("matches its snapshot"), "{text}");
}

#[test]
fn check_json_reports_ok() {
    let out = pvabi(&["abi", "check", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let text = stdout(&out);
    assert!(text.contains("\"ok\": true"), "{text}");
    let report = Report::from_json(&text).expect("--json prints a report");
    assert!(report.ok);
    assert!(report.errors.is_empty());
    assert_eq!(report.crate_version, AbiVersion::of_crate());
    assert!(report
        .snapshots
        .iter()
        .any(|s| s.version == AbiVersion::new(1, 0)));
}

#[test]
fn check_fails_on_a_mutated_snapshot_and_names_the_change() {
    let dir = temp_dir("mutated");
    let mut snap = released_1_0();
    snap.calls
        .iter_mut()
        .find(|c| c.name == "CONSOLE_WRITE")
        .unwrap()
        .code = 0x0105;
    std::fs::write(dir.join("1.0.json"), snap.to_json()).unwrap();
    // Later snapshots of the crate's version are needed for the crate to pass; copy them.
    for entry in std::fs::read_dir(default_snapshots_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap() != "1.0.json" {
            std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
        }
    }
    let dir_arg = dir.to_str().unwrap();
    let out = pvabi(&["abi", "check", "--snapshots", dir_arg]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let text = stdout(&out);
    assert!(text.contains("calls.CONSOLE_WRITE.code"), "{text}");
    assert!(text.contains("breaking change within major 1"), "{text}");
    assert!(text.contains("fix: "), "{text}");

    let out = pvabi(&["abi", "check", "--json", "--snapshots", dir_arg]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let report = Report::from_json(&stdout(&out)).unwrap();
    assert!(!report.ok);
    assert!(report
        .errors
        .iter()
        .any(|e| e.path.as_deref() == Some("calls.CONSOLE_WRITE.code")));
}

#[test]
fn check_without_snapshots_dir_is_a_usage_error() {
    let missing = Path::new(env!("CARGO_TARGET_TMPDIR")).join("abi-cli-no-such-dir");
    let _ = std::fs::remove_dir_all(&missing);
    let out = pvabi(&["abi", "check", "--snapshots", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let out = pvabi(&["abi", "frobnicate"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
}

#[test]
fn check_with_an_empty_dir_reports_the_missing_snapshot() {
    let dir = temp_dir("empty");
    let out = pvabi(&["abi", "check", "--snapshots", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(stdout(&out).contains("has no snapshot"), "{}", show(&out));
    assert!(
        stdout(&out).contains("pvabi abi snapshot"),
        "{}",
        show(&out)
    );
}

#[test]
fn snapshot_writes_once_and_refuses_to_overwrite() {
    let dir = temp_dir("write");
    let dir_arg = dir.to_str().unwrap();
    let file = dir.join(AbiVersion::of_crate().file_name());
    let out = pvabi(&["abi", "snapshot", "--snapshots", dir_arg]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        Snapshot::current().to_json()
    );
    // Identical: nothing to do.
    let out = pvabi(&["abi", "snapshot", "--snapshots", dir_arg]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(stdout(&out).contains("up to date"));
    // Different: frozen.
    let mut other = Snapshot::current();
    other.structs.pop();
    std::fs::write(&file, other.to_json()).unwrap();
    let out = pvabi(&["abi", "snapshot", "--snapshots", dir_arg]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("frozen"),
        "{}",
        show(&out)
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), other.to_json());
    let out = pvabi(&["abi", "snapshot", "--force", "--snapshots", dir_arg]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        Snapshot::current().to_json()
    );
}

#[test]
fn diff_exit_status_follows_abidiff_bits() {
    let dir = temp_dir("diff");
    let base = released_1_0();
    let mut added = base.clone();
    added.version = AbiVersion::new(1, 1);
    added.constants.push(pvabi_versioning::model::ConstEntry {
        name: "NEW_LIMIT".to_owned(),
        value: 7,
        rule: pvabi_versioning::model::ConstRule::Exact,
    });
    let mut broken = base.clone();
    broken.version = AbiVersion::new(1, 1);
    broken.statuses.pop();
    let write = |name: &str, s: &Snapshot| {
        let p = dir.join(name);
        std::fs::write(&p, s.to_json()).unwrap();
        p.to_str().unwrap().to_owned()
    };
    let (a, b, c) = (
        write("a.json", &base),
        write("b.json", &added),
        write("c.json", &broken),
    );
    assert_eq!(pvabi(&["abi", "diff", &a, &a]).status.code(), Some(0));
    let out = pvabi(&["abi", "diff", &a, &b]);
    assert_eq!(out.status.code(), Some(4), "{}", show(&out));
    assert!(stdout(&out).contains("constants.NEW_LIMIT"));
    let out = pvabi(&["abi", "diff", &a, &c, "--json"]);
    assert_eq!(out.status.code(), Some(12), "{}", show(&out));
    assert!(stdout(&out).contains("\"kind\": \"breaking\""));
}

#[test]
fn show_and_changelog_print() {
    let out = pvabi(&["abi", "show", "1.0"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(stdout(&out), released_1_0().to_json());
    let out = pvabi(&["abi", "changelog"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(stdout(&out).contains("## Version 1.0"));
}
