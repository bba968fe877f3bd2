//! The ABI crate against the checked-in snapshots: `pvabi abi check` passes on main.

use pvabi_versioning::{
    changelog_markdown, check, default_snapshots_dir, diff, load_dir, AbiVersion, Snapshot,
};

#[test]
fn crate_matches_the_snapshot_of_its_version() {
    let current = Snapshot::current();
    let dir = default_snapshots_dir();
    let path = dir.join(current.version.file_name());
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}\nthe crate's version {} has no snapshot: run `cargo run -- abi snapshot`",
            path.display(),
            current.version
        )
    });
    let stored = Snapshot::from_json(&text, &path.display().to_string()).unwrap();
    if stored != current {
        let lines: Vec<String> = diff(&stored, &current)
            .iter()
            .map(|c| format!("  {} {c}", c.kind))
            .collect();
        panic!(
            "the ABI crate differs from its released snapshot {}:\n{}\n\
             Released snapshots are frozen. Undo the change; or, for additions, bump \
             VERSION_MINOR and run `cargo run -- abi snapshot`; for breaking changes, release a \
             new major. See `cargo run -- abi check`.",
            path.display(),
            lines.join("\n")
        );
    }
    // The file is in canonical form, so `pvabi abi snapshot` reproduces it byte for byte.
    assert_eq!(
        text,
        current.to_json(),
        "{} is not in canonical form",
        path.display()
    );
}

#[test]
fn check_passes_on_the_checked_in_snapshots() {
    let stored = load_dir(&default_snapshots_dir()).unwrap();
    assert!(
        stored
            .iter()
            .any(|s| s.snapshot.version == AbiVersion::new(1, 0)),
        "1.0 is released and must stay in versioning/snapshots"
    );
    let report = check(&Snapshot::current(), &stored);
    assert!(report.ok, "{}", report.to_text());
    assert!(report.to_text().contains("OK: "));
}

#[test]
fn snapshot_files_are_canonical_and_named_by_version() {
    for s in load_dir(&default_snapshots_dir()).unwrap() {
        assert_eq!(s.file, s.snapshot.version.file_name());
        let text = std::fs::read_to_string(default_snapshots_dir().join(&s.file)).unwrap();
        assert_eq!(text, s.snapshot.to_json(), "{} is not canonical", s.file);
    }
}

#[test]
fn changelog_starts_with_the_initial_release() {
    let md = changelog_markdown();
    let calls = pvabi_abi::calls::all()
        .filter(|c| c.since.major() == 1 && c.since.minor() == 0)
        .count();
    assert!(md.contains("## Version 1.0 {#changelog-1-0}"), "{md}");
    assert!(
        md.contains(&format!("Initial release: {calls} calls in 8 families")),
        "{md}"
    );
    assert!(md.contains("| BASE | `GET_SPEC_VERSION`"), "{md}");
}
