//! `pvabi bench` on a real `/dev/kvm`, with a handful of iterations: `--json` prints one
//! object whose `scenarios` are exactly the named list with the required keys, and the
//! figures keep the invariants that could fail (exits per op where they are exact, the
//! host's exit count against KVM's statistics, ratios that are what they say); without
//! `--json` a table and the SVG plot. No timing is asserted.

use std::process::Command;

use pvabi_host::vm::testing::kvm_or_skip;
use serde_json::Value;

const SCENARIOS: [&str; 17] = [
    "out_roundtrip",
    "out_ioeventfd",
    "sync_nop",
    "multicall_1",
    "multicall_8",
    "multicall_32",
    "multicall_256",
    "multicall_1024",
    "deferred",
    "ring_doorbell",
    "ring_polled",
    "events_coalesced",
    "events_uncoalesced",
    "time_call",
    "time_page",
    "smp_1",
    "smp_2",
];

fn pvabi() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pvabi"))
}

fn num(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("`{key}` is not a number in {v}"))
}

fn u(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("`{key}` is not an unsigned integer in {v}"))
}

#[test]
fn bench_json_has_the_scenarios_and_their_invariants() {
    if !kvm_or_skip("bench_json_has_the_scenarios_and_their_invariants") {
        return;
    }
    let out = pvabi()
        .args([
            "bench",
            "--iterations",
            "64",
            "--rounds",
            "1",
            "--json",
            "-q",
        ])
        .output()
        .expect("pvabi runs");
    assert!(
        out.status.success(),
        "pvabi bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    let scenarios = v["scenarios"].as_array().expect("a scenarios array");
    let names: Vec<&str> = scenarios
        .iter()
        .map(|s| s["name"].as_str().expect("a name"))
        .collect();
    assert_eq!(names, SCENARIOS);
    let by = |name: &str| {
        scenarios
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no {name}"))
    };
    for s in scenarios {
        for key in [
            "ns_per_op",
            "exits_per_op",
            "ring",
            "ratio_vs_sync",
            "available",
        ] {
            assert!(s.get(key).is_some(), "`{key}` missing in {s}");
        }
        if s["available"] == false {
            // Not fake numbers: nulls and a reason.
            assert!(
                s["ns_per_op"].is_null() && s["exits_per_op"].is_null(),
                "{s}"
            );
            assert!(!s["reason"].as_str().unwrap_or("").is_empty(), "{s}");
            continue;
        }
        assert_eq!(s["ring"], 3, "measured loops run at CPL3: {s}");
        assert!(num(s, "ns_per_op") > 0.0, "{s}");
        assert!(num(s, "exits_per_op") >= 0.0, "{s}");
        let ratio = num(s, "ratio_vs_sync");
        let expect = num(s, "ns_per_op") / num(by("sync_nop"), "ns_per_op");
        assert!((ratio - expect).abs() <= 1e-9 * expect, "{s}");
        // The host's exits against KVM's statistics, round by round: KVM's `exits` count
        // every exit into KVM, so they are at least the exits to the VMM plus the writes KVM
        // answered with an ioeventfd. (The VMM may also count a return from KVM_RUN that never
        // entered the guest, a kick just before entry: at most one per interrupt, and only the
        // events scenarios raise interrupts.)
        for r in s["detail"]["rounds"].as_array().expect("rounds") {
            if let Some(kvm) = r["kvm_exits"].as_u64() {
                let slack = if s["name"].as_str().unwrap().starts_with("events_") {
                    u(r, "extra")
                } else {
                    0
                };
                assert!(
                    kvm + slack >= u(r, "exits") + u(r, "kernel_io"),
                    "{}: {r}",
                    s["name"]
                );
            }
            if let Some(vmm) = r["kvm_vmm_exits"].as_u64() {
                assert_eq!(vmm, u(r, "exits"), "{}: {r}", s["name"]);
            }
        }
    }
    // The multi-page batches (1.3's MULTICALL_PAGES) take no more exits per call than
    // MULTICALL's 32 (with few iterations a round is one batch, smaller than the size).
    for name in ["multicall_256", "multicall_1024"] {
        assert_eq!(by(name)["available"], true, "{name}");
        assert!(
            num(by(name), "exits_per_op") <= num(by("multicall_32"), "exits_per_op"),
            "{name}"
        );
    }
    // Exact exit counts: one per direct call or bare out, none for the kernel-side floor,
    // the rings (the notifications are ioeventfd writes) and the time page.
    for name in ["out_roundtrip", "sync_nop", "time_call", "multicall_1"] {
        assert_eq!(num(by(name), "exits_per_op"), 1.0, "{name}");
    }
    for name in ["out_ioeventfd", "ring_doorbell", "ring_polled", "time_page"] {
        assert_eq!(num(by(name), "exits_per_op"), 0.0, "{name}");
    }
    assert_eq!(num(by("multicall_8"), "exits_per_op"), 1.0 / 8.0);
    assert_eq!(num(by("multicall_32"), "exits_per_op"), 2.0 / 64.0);
    assert_eq!(num(by("sync_nop"), "ratio_vs_sync"), 1.0);
    // Events: every uncoalesced event raised its own interrupt; coalesced ones shared.
    assert_eq!(num(by("events_uncoalesced"), "interrupts_per_event"), 1.0);
    assert!(num(by("events_uncoalesced"), "exits_per_op") >= 1.0);
    let coalesced = num(by("events_coalesced"), "interrupts_per_event");
    assert!(coalesced > 0.0 && coalesced < 1.0, "{coalesced}");
    // The targets are judged, each with a note.
    let targets = v["targets"].as_array().expect("targets");
    assert_eq!(targets.len(), 9);
    for t in targets {
        assert!(t["met"].is_boolean() || t["met"].is_null(), "{t}");
        assert!(!t["note"].as_str().unwrap_or("").is_empty(), "{t}");
    }
    assert_eq!(v["kernel_ring_notify"], true);
    assert!(num(&v, "doorbell_ns") > 0.0);
}

#[test]
fn bench_without_json_prints_a_table_and_writes_the_plot() {
    if !kvm_or_skip("bench_without_json_prints_a_table_and_writes_the_plot") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("pvabi-bench-cli-{}", std::process::id()));
    let svg = dir.join("plot.svg");
    let out = pvabi()
        .args(["bench", "--iterations", "32", "--rounds", "1", "--svg"])
        .arg(&svg)
        .output()
        .expect("pvabi runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    for name in SCENARIOS {
        assert!(stdout.contains(name), "{name} in the table:\n{stdout}");
    }
    assert!(stdout.contains("targets:"), "{stdout}");
    assert!(stdout.contains(&svg.display().to_string()), "{stdout}");
    assert!(
        stderr.contains("round 1/1"),
        "progress while it runs: {stderr}"
    );
    let plot = std::fs::read_to_string(&svg).expect("the plot was written");
    assert!(plot.starts_with("<svg") && plot.trim_end().ends_with("</svg>"));
    for label in [
        "floor: exit to the VMM",
        "floor: ioeventfd exit",
        "MULTICALL",
    ] {
        assert!(plot.contains(label), "{label} in the plot");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bench_rejects_bad_arguments() {
    let out = pvabi()
        .args(["bench", "--iterations", "0"])
        .output()
        .expect("pvabi runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("iterations"));
}
