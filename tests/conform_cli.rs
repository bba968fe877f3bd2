//! `pvabi conform` end to end on a real `/dev/kvm`: the suite runs against the reference
//! host, and the JSON report traces every requirement of the spec.

use std::process::Command;

use pvabi_host::vm::testing::kvm_or_skip;

fn pvabi(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pvabi"))
        .args(args)
        .output()
        .expect("pvabi runs")
}

#[test]
fn list_and_filter() {
    let out = pvabi(&["conform", "--list"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("base "));
    let out = pvabi(&["conform", "--filter", "no-such-test"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--list"));
}

#[test]
fn the_json_report_traces_every_requirement() {
    if !kvm_or_skip("the_json_report_traces_every_requirement") {
        return;
    }
    let out = pvabi(&["conform", "--format", "json"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("JSON on stdout");
    for key in [
        "suite_version",
        "spec_version",
        "implementation",
        "profile",
        "requirements",
        "tests",
    ] {
        assert!(v.get(key).is_some(), "no {key}");
    }
    assert_eq!(v["verdict"], "PASS");
    let reqs = v["requirements"].as_array().unwrap();
    assert_eq!(reqs.len(), pvabi_spec::requirements().len());
    let base_001 = reqs.iter().find(|r| r["id"] == "PVABI-BASE-001").unwrap();
    assert_eq!(base_001["verdict"], "PASS", "{base_001}");
    assert!(!base_001["tests"].as_array().unwrap().is_empty());
    // Process rules are listed as not applicable.
    assert!(reqs.iter().any(|r| r["verdict"] == "NOT_APPLICABLE"));
    let test = &v["tests"][0];
    assert_eq!(
        (test["test"].as_str(), test["verdict"].as_str()),
        (Some("base"), Some("PASS"))
    );
    // Progress goes to stderr.
    assert!(String::from_utf8_lossy(&out.stderr).contains("] base ... PASS"));
}

#[test]
fn host_cmd_runs_the_images_under_an_external_vmm() {
    if !kvm_or_skip("host_cmd_runs_the_images_under_an_external_vmm") {
        return;
    }
    let bin = env!("CARGO_BIN_EXE_pvabi");
    // `pvabi run` as the external VMM: the same verdict as in-process.
    let vmm = format!("{bin} run --vcpus {{vcpus}} --exit-with-guest-code {{image}}");
    let out = pvabi(&["conform", "--host-cmd", &vmm, "--format", "json"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["verdict"], "PASS");
    assert_eq!(v["implementation"]["host_cmd"], vmm.as_str());
    // A "VMM" that prints nothing and exits 0: no verdict arrived, so CRASH, never PASS.
    let out = pvabi(&["conform", "--host-cmd", "true {image}"]);
    assert_eq!(
        out.status.code(),
        Some(6),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // A "VMM" that fakes the channel without running the guest: END PASS with no check is
    // an ERROR.
    let liar = "printf 'pvabi-conform: BEGIN base\\npvabi-conform: END base PASS\\n' # {image}";
    let out = pvabi(&["conform", "--filter", "base", "--host-cmd", liar]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn export_writes_a_suite_that_runs_without_the_toolchain() {
    if !kvm_or_skip("export_writes_a_suite_that_runs_without_the_toolchain") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("pvabi-export-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = pvabi(&["conform", "--export", dir.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    let test = &manifest["tests"][0];
    assert_eq!(test["test"], "base");
    assert!(dir.join(test["image"].as_str().unwrap()).exists());
    assert!(test["checks"].as_array().unwrap().len() >= 15);
    assert!(test["checks"][0]["requirements"][0]
        .as_str()
        .unwrap()
        .starts_with("PVABI-"));
    let run = |host_cmd: String| {
        Command::new(dir.join("run.sh"))
            .env("HOST_CMD", host_cmd)
            .output()
            .expect("run.sh runs")
    };
    let bin = env!("CARGO_BIN_EXE_pvabi");
    let out = run(format!(
        "{bin} run --vcpus {{vcpus}} --exit-with-guest-code {{image}}"
    ));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("PASS base"));
    let out = run("true {image}".into());
    assert_eq!(out.status.code(), Some(6));
    assert!(String::from_utf8_lossy(&out.stdout).contains("CRASH base"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The suite tests itself: against the reference host with each named fault injected, some
/// test must not PASS. (Only in builds with the `self-test` feature, which the README's test
/// command enables.)
#[cfg(feature = "self-test")]
#[test]
fn self_test_catches_every_injected_fault() {
    if !kvm_or_skip("self_test_catches_every_injected_fault") {
        return;
    }
    let out = pvabi(&["conform", "--self-test"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(!stdout.contains("MISSED"), "{stdout}");
    let caught = stdout.lines().filter(|l| l.starts_with("caught")).count();
    assert!(caught >= 35, "{stdout}");
}
