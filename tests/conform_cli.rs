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
    assert!(String::from_utf8_lossy(&out.stderr).contains("[1/1] base ... PASS"));
}
