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
    // Two at a time: the report keeps the catalogue's order all the same.
    let out = pvabi(&["conform", "--format", "json", "-j", "2"]);
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
    for t in v["tests"].as_array().unwrap() {
        assert_eq!(t["verdict"], "PASS", "{t:#}");
    }
    let reqs = v["requirements"].as_array().unwrap();
    assert_eq!(reqs.len(), pvabi_spec::requirements().len());
    let base_001 = reqs.iter().find(|r| r["id"] == "PVABI-BASE-001").unwrap();
    assert_eq!(base_001["verdict"], "PASS", "{base_001}");
    assert!(!base_001["tests"].as_array().unwrap().is_empty());
    // Process rules are listed as not applicable.
    assert!(reqs.iter().any(|r| r["verdict"] == "NOT_APPLICABLE"));
    // A MUST no check can observe says why, and names the reference implementation's own
    // tests of it; a checked rule carries neither.
    let mem_012 = reqs.iter().find(|r| r["id"] == "PVABI-MEM-012").unwrap();
    assert_eq!(mem_012["verdict"], "UNTESTED", "{mem_012}");
    assert!(mem_012["untested_reason"]
        .as_str()
        .is_some_and(|r| r.contains("flush")));
    assert_eq!(
        mem_012["implementation_tests"][0],
        "dispatch/src/tests/batch.rs::update_pte_flushes_nothing_in_any_context"
    );
    assert!(
        base_001.get("untested_reason").is_none() && base_001.get("implementation_tests").is_none()
    );
    let test = &v["tests"][0];
    assert_eq!(
        (test["test"].as_str(), test["verdict"].as_str()),
        (Some("base"), Some("PASS"))
    );
    let listed = String::from_utf8(pvabi(&["conform", "--list"]).stdout).unwrap();
    let catalogue: Vec<&str> = listed
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let reported: Vec<&str> = v["tests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["test"].as_str().unwrap())
        .collect();
    assert_eq!(reported, catalogue);
    // Progress goes to stderr, one line per finished test.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("2 at a time"), "{stderr}");
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("] base") && l.contains("PASS")),
        "{stderr}"
    );
}

#[test]
fn host_cmd_runs_the_images_under_an_external_vmm() {
    if !kvm_or_skip("host_cmd_runs_the_images_under_an_external_vmm") {
        return;
    }
    let bin = env!("CARGO_BIN_EXE_pvabi");
    // `pvabi run` as the external VMM, resetting on SYSTEM_REBOOT as the reference host does
    // for the reset test: the same verdict as in-process. (Ending the VM instead makes the
    // reset test a SKIP: see the reset test's own tests in src/conform.rs.)
    let vmm =
        format!("{bin} run --vcpus {{vcpus}} --on-reboot reset --exit-with-guest-code {{image}}");
    // The reference profile says which exit statuses are a guest fault and a refused image.
    let profile = format!(
        "{}/conformance/profiles/pvabi-host.toml",
        env!("CARGO_MANIFEST_DIR")
    );
    let out = pvabi(&[
        "conform",
        "--host-cmd",
        &vmm,
        "--profile",
        &profile,
        "--format",
        "json",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    // The same verdicts as in-process, but for compat-2.0: this `pvabi run` serves one major
    // (1.x), so the rule about hosts of two majors does not bind it (SKIP); and for the tests
    // of SYSTEM_SHUTDOWN's 32-bit code and SYSTEM_CRASH's message, which no exit status
    // carries (SKIP, whatever the profile says).
    for t in v["tests"].as_array().unwrap() {
        let want = if ["compat-2.0", "system-shutdown", "system-crash"]
            .contains(&t["test"].as_str().unwrap())
        {
            "SKIP"
        } else {
            "PASS"
        };
        assert_eq!(t["verdict"], want, "{t:#}");
    }
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    // Serving 1.3 and the 2.0 preview, it passes the compat tests.
    let both = format!("{bin} run --serve 1.3,2.0 --exit-with-guest-code {{image}}");
    let out = pvabi(&["conform", "--host-cmd", &both, "--filter", "compat"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // A VMM whose console prints the system test's buffer again after the call (here: the
    // line the guest wrote there once CONSOLE_WRITE had returned, printed at the VM's end, as
    // an asynchronous console that kept the guest's address would): the tripwire makes its
    // check a FAIL (PVABI-CON-006), though the guest reported it as passed.
    let late = format!(
        "{vmm}; c=$?; case {{image}} in */system.elf) echo 'pvabi-conform: TRIPPED \
         system.console_emits_the_copy_it_took_during_the_call PVABI-CON-006 -- printed late';; \
         esac; exit $c"
    );
    let out = pvabi(&[
        "conform",
        "--host-cmd",
        &late,
        "--filter",
        "system",
        "--format",
        "json",
    ]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(5), "{report:#}");
    // The verdict of the entry of `list` whose `key` is `name`.
    let verdict = |list: &str, key: &str, name: &str| {
        report[list]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e[key] == name)
            .map(|e| e["verdict"].clone())
    };
    assert_eq!(verdict("tests", "test", "system"), Some("FAIL".into()));
    assert_eq!(
        verdict("requirements", "id", "PVABI-CON-006"),
        Some("FAIL".into())
    );
    // Without them the tests about how the VM ends cannot tell: SKIP, never PASS.
    let out = pvabi(&["conform", "--host-cmd", &vmm, "--filter", "platform-fault"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(v["implementation"]["host_cmd"], vmm.as_str());
    // The external host's identity, as the base test learnt it (GET_IMPL_ID, the CPUID leaves).
    assert_eq!(v["implementation"]["reported"]["impl_id"], 1, "{v:#}");
    assert!(
        v["implementation"]["reported"]["offered_features"]
            .as_u64()
            .unwrap()
            != 0
    );
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
            .env("FAULT_STATUS", "133")
            .env("REFUSAL_STATUS", "134")
            .output()
            .expect("run.sh runs")
    };
    let bin = env!("CARGO_BIN_EXE_pvabi");
    let out = run(format!(
        "{bin} run --vcpus {{vcpus}} --on-reboot reset --exit-with-guest-code {{image}}"
    ));
    let stdout = String::from_utf8_lossy(&out.stdout);
    // SKIP: compat-2.0 binds only a host serving two majors.
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    assert!(stdout.contains("SKIP compat-2.0\n"), "{stdout}");
    // No exit status carries SYSTEM_SHUTDOWN's 32-bit code or SYSTEM_CRASH's message.
    for test in ["system-shutdown", "system-crash"] {
        assert!(stdout.contains(&format!("SKIP {test}\n")), "{stdout}");
    }
    for test in [
        "base",
        "platform-fault",
        "image-below-min-addr",
        "image-beyond-ram",
    ] {
        assert!(stdout.contains(&format!("PASS {test}\n")), "{stdout}");
    }
    // Without the statuses, the tests about how the VM ends SKIP.
    let out = Command::new(dir.join("run.sh"))
        .env(
            "HOST_CMD",
            format!("{bin} run --vcpus {{vcpus}} --exit-with-guest-code {{image}}"),
        )
        .output()
        .expect("run.sh runs");
    assert_eq!(out.status.code(), Some(3));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for test in ["platform-fault", "image-below-min-addr", "image-beyond-ram"] {
        assert!(stdout.contains(&format!("SKIP {test}\n")), "{stdout}");
    }
    // A tripwire the VMM set off (see host_cmd_runs_the_images_under_an_external_vmm) is a
    // FAIL in run.sh too.
    let out = run(format!(
        "{bin} run --exit-with-guest-code {{image}}; c=$?; case {{image}} in */system.elf) echo \
         'pvabi-conform: TRIPPED system.console_emits_the_copy_it_took_during_the_call';; esac; \
         exit $c"
    ));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("FAIL system\n"), "{stdout}");
    assert!(
        stdout.contains("    pvabi-conform: TRIPPED system."),
        "{stdout}"
    );
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

#[test]
fn a_profile_is_held_to_the_host_and_known_failures_are_shown_as_such() {
    if !kvm_or_skip("a_profile_is_held_to_the_host_and_known_failures_are_shown_as_such") {
        return;
    }
    let root = env!("CARGO_MANIFEST_DIR");
    // The reference host meets its own profile.
    let reference = format!("{root}/conformance/profiles/pvabi-host.toml");
    let out = pvabi(&["conform", "--filter", "base", "--profile", &reference]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("PASS   profile"), "{stdout}");

    // A host acting as 1.0 does not offer STEAL_TIME (1.1): claiming it is a FAIL, not a SKIP.
    let dir = tempfile::tempdir().unwrap();
    let vmm = format!(
        "{} run --serve 1.0 --exit-with-guest-code {{image}}",
        env!("CARGO_BIN_EXE_pvabi")
    );
    let claim = "[versions]\nlowest = \"1.0\"\nhighest = \"1.0\"\n\
                 [features]\noffered = [\"CONSOLE\", \"STEAL_TIME\"]\n";
    let path = dir.path().join("claims.toml");
    std::fs::write(&path, claim).unwrap();
    let profile = path.to_str().unwrap();
    let run = |profile: &str| {
        pvabi(&[
            "conform",
            "--filter",
            "base",
            "--host-cmd",
            &vmm,
            "--profile",
            profile,
            "--format",
            "json",
        ])
    };
    let out = run(profile);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
    assert_eq!(out.status.code(), Some(5), "{v:#}");
    let checks = &v["tests"][1]["checks"];
    let verdict = |name: &str| {
        checks
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .map(|c| c["verdict"].clone())
    };
    assert_eq!(
        verdict("profile.offers_steal_time"),
        Some("FAIL".into()),
        "{v:#}"
    );
    assert_eq!(
        verdict("profile.offers_console"),
        Some("PASS".into()),
        "{v:#}"
    );
    assert_eq!(v["profile"]["features"]["offered"][1], "STEAL_TIME");

    // Listed as a known failure of this implementation id and version: XFAIL (exit 7), never
    // PASS; for another version it is a FAIL again.
    let version = env!("CARGO_PKG_VERSION");
    for (listed, code, want) in [(version, 7, "XFAIL"), ("9.9.9", 5, "FAIL")] {
        let known = format!(
            "{claim}[[known_failure]]\ncheck = \"profile.offers_steal_time\"\nid = 1\n\
             version = \"{listed}\"\nreason = \"steal time comes in 1.1\"\n"
        );
        std::fs::write(&path, known).unwrap();
        let out = run(profile);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(out.status.code(), Some(code), "{v:#}");
        let c = v["tests"][1]["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "profile.offers_steal_time")
            .unwrap()
            .clone();
        assert_eq!(c["verdict"], want, "{c:#}");
    }

    // A profile with a typo is refused before anything runs, naming the fix.
    std::fs::write(&path, "[features]\noffered = [\"STEALTIME\"]\n").unwrap();
    let out = pvabi(&["conform", "--profile", profile]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("the features are CONSOLE, TIME"),
        "{stderr}"
    );
}

/// One `pvabi conform --guest ... --format json` run: its exit code and its checks as
/// (name, verdict, message), a SHOULD that did not hold as the verdict `WARN`.
struct GuestRun {
    code: Option<i32>,
    checks: Vec<(String, String, String)>,
    report: serde_json::Value,
}

impl GuestRun {
    fn of(args: &[&str]) -> GuestRun {
        let mut all = vec!["conform", "--guest"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--format", "json"]);
        let out = pvabi(&all);
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
        let checks = report["tests"][0]["checks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                // A check of a SHOULD that did not hold is a PASS with `warning` set.
                let verdict = if c["warning"] == true {
                    "WARN"
                } else {
                    c["verdict"].as_str().unwrap()
                };
                (
                    c["name"].as_str().unwrap().to_owned(),
                    verdict.to_owned(),
                    c["message"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect();
        GuestRun {
            code: out.status.code(),
            checks,
            report,
        }
    }

    /// The names of the checks with this verdict, in order.
    fn with(&self, verdict: &str) -> Vec<&str> {
        self.checks
            .iter()
            .filter(|(_, v, _)| v == verdict)
            .map(|(n, _, _)| n.as_str())
            .collect()
    }

    fn check(&self, name: &str) -> &(String, String, String) {
        self.checks
            .iter()
            .find(|(n, _, _)| n == name)
            .unwrap_or_else(|| panic!("no check {name}: {:#?}", self.checks))
    }

    fn verdict(&self, name: &str) -> &str {
        &self.check(name).1
    }

    fn message(&self, name: &str) -> &str {
        &self.check(name).2
    }

    /// The verdict of requirement `id` in the report.
    fn requirement(&self, id: &str) -> Option<String> {
        self.report["requirements"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .map(|r| r["verdict"].as_str().unwrap().to_owned())
    }
}

#[test]
fn guest_conformance_passes_the_demo_guest_and_fails_a_careless_one_clearly() {
    if !kvm_or_skip("guest_conformance_passes_the_demo_guest_and_fails_a_careless_one_clearly") {
        return;
    }
    // The demo guest, on two vCPUs, under the demanding host: every rule it exercises kept;
    // the rules of what it never does are "not exercised" (SKIP, exit 3), not a PASS. (Its
    // second vCPU negotiates again, is answered LOCKED and reads the locked result: the MAY
    // rule PVABI-BASE-017, exercised.)
    let demo = GuestRun::of(&["demo", "--vcpus", "2"]);
    assert_eq!(demo.code, Some(3), "{:#?}", demo.checks);
    assert!(demo.checks.len() >= 30, "{:#?}", demo.checks);
    // (It keeps the platform's 4-level paging, so its MEM_UPDATE_PTE calls, which it makes,
    // come under no PML5 check: PVABI-MEM-022 binds a guest that uses 5-level paging.)
    let never = [
        "guest.resumes_preempted_page_batches",
        "guest.steal_page_only_when_granted",
        "guest.sleeping_pollers_woken",
        "guest.crash_message_in_utf8",
        "guest.no_pml5_entry_updated_with_mem_update_pte",
    ];
    for (name, verdict, message) in &demo.checks {
        if never.contains(&name.as_str()) {
            assert_eq!(verdict, "SKIP", "{name}: {message}");
            assert!(message.starts_with("not exercised"), "{message}");
        } else {
            assert_eq!(verdict, "PASS", "{name}: {message}");
        }
    }

    // The careless guest: exactly its mistakes, each named with what the host saw; the two
    // SHOULD rules it breaks are warnings (WARN checks, "warning" requirements).
    // On two vCPUs, so that it can start vCPU 1 badly too.
    let careless = GuestRun::of(&["careless", "--vcpus", "2"]);
    assert_eq!(careless.code, Some(5), "{:#?}", careless.checks);
    assert_eq!(
        careless.with("FAIL"),
        [
            "guest.doorbell_calls_with_out_not_a_string_output",
            "guest.idt_loaded_before_interrupts_enabled",
            "guest.released_pages_not_written_until_reclaimed",
            "guest.only_granted_features",
            "guest.resumes_preempted_batches",
            "guest.time_page_sequence_lock",
            "guest.no_reliance_on_undefined_results",
            "guest.steal_page_only_when_granted",
            "guest.no_released_page_in_a_call",
            "guest.host_fields_of_host_pages_left_alone",
            "guest.event_head_never_past_tail",
            "guest.event_interrupt_rearmed_then_tail_reread",
            "guest.no_queuing_into_a_full_deferred_queue",
            "guest.deferred_head_and_errors_left_to_the_host",
            "guest.no_submission_into_a_full_ring",
            "guest.completion_head_never_past_tail",
            "guest.doorbell_rings_notified",
            "guest.sleeping_pollers_woken",
            "guest.started_vcpus_mapped_by_their_cr3",
        ],
        "{:#?}",
        careless.checks
    );
    assert_eq!(
        careless.with("WARN"),
        [
            "guest.lowest_minor_and_needed_features_requested",
            "guest.later_minor_features_optional",
        ],
        "{:#?}",
        careless.checks
    );
    for (name, part) in [
        (
            "guest.doorbell_calls_with_out_not_a_string_output",
            "rep outs",
        ),
        ("guest.idt_loaded_before_interrupts_enabled", "limit is 0"),
        (
            "guest.released_pages_not_written_until_reclaimed",
            "dirty-page log",
        ),
        ("guest.only_granted_features", "TIME_SET_STEAL_PAGE"),
        ("guest.resumes_preempted_batches", "never resumed"),
        ("guest.time_page_sequence_lock", "sequence lock"),
        (
            "guest.no_reliance_on_undefined_results",
            "0xdeadbeefdeadbeef",
        ),
        ("guest.no_released_page_in_a_call", "CONSOLE_WRITE"),
        ("guest.host_fields_of_host_pages_left_alone", "tsc_mul"),
        ("guest.event_head_never_past_tail", "head` is 5"),
        (
            "guest.event_interrupt_rearmed_then_tail_reread",
            "read `tail` again",
        ),
        ("guest.no_queuing_into_a_full_deferred_queue", "65 entries"),
        ("guest.deferred_head_and_errors_left_to_the_host", "`head`"),
        ("guest.no_submission_into_a_full_ring", "33 entries"),
        ("guest.completion_head_never_past_tail", "past `tail`"),
        ("guest.doorbell_rings_notified", "ring-notify port"),
        ("guest.sleeping_pollers_woken", "SQ_NEED_WAKEUP set"),
        ("guest.started_vcpus_mapped_by_their_cr3", "below rsp"),
        ("guest.later_minor_features_optional", "0x400"),
    ] {
        let m = careless.message(name);
        assert!(m.contains(part), "{name}: {part:?} not in {m}");
    }
    // The MAY rule it exercises passes; it found pvabi where the checking host moved it.
    for name in [
        "guest.locked_result_read_after_locked",
        "guest.finds_pvabi_at_a_later_base",
        "guest.uses_the_transport_leaf_ports",
        "guest.image_placed_at_or_above_image_min_addr",
    ] {
        assert_eq!(
            careless.verdict(name),
            "PASS",
            "{name}: {:#?}",
            careless.checks
        );
    }
    assert_eq!(
        careless.requirement("PVABI-VER-014").as_deref(),
        Some("WARNING")
    );
    assert_eq!(
        careless.requirement("PVABI-RING-008").as_deref(),
        Some("FAIL")
    );
    // The rules that do not bind on the reference platform are not applicable, not passed.
    assert_eq!(
        careless.requirement("PVABI-EVT-009").as_deref(),
        Some("NOT_APPLICABLE")
    );

    // The second careless guest skips discovery and calls at the default port: the checking
    // host, which moved its leaves and ports, sees both; the guest still runs to its end, a
    // SYSTEM_CRASH whose message is not UTF-8 (a SHOULD: a warning).
    let disc = GuestRun::of(&["careless-discovery"]);
    assert_eq!(disc.code, Some(5), "{:#?}", disc.checks);
    assert_eq!(
        disc.with("FAIL"),
        [
            "guest.finds_pvabi_at_a_later_base",
            "guest.uses_the_transport_leaf_ports",
            "guest.runs_under_a_host_offering_more_than_it_knows",
        ],
        "{:#?}",
        disc.checks
    );
    assert_eq!(
        disc.with("WARN"),
        [
            "guest.lowest_minor_and_needed_features_requested",
            "guest.crash_message_in_utf8",
        ],
        "{:#?}",
        disc.checks
    );
    assert!(disc
        .message("guest.finds_pvabi_at_a_later_base")
        .contains("0x40000100"));
    assert!(disc
        .message("guest.uses_the_transport_leaf_ports")
        .contains("0x5650"));
    assert!(disc
        .message("guest.crash_message_in_utf8")
        .contains("not UTF-8"));

    // The third careless guest negotiates TIME and calls TIME_FREQUENCY only when GET_IMPL_ID
    // names the reference host: no single run shows it, the second run under another identity
    // does (PVABI-BASE-005), and that is all that fails; its log of the identity is allowed.
    let ident = GuestRun::of(&["careless-identity"]);
    assert_eq!(ident.code, Some(5), "{:#?}", ident.checks);
    assert_eq!(
        ident.with("FAIL"),
        ["guest.same_calls_under_another_identity"],
        "{:#?}",
        ident.checks
    );
    assert!(ident.with("WARN").is_empty(), "{:#?}", ident.checks);
    let message = ident.message("guest.same_calls_under_another_identity");
    for part in [
        "under the host reporting id 0x1 \"pvabi-ref\"",
        "the guest made TIME_FREQUENCY (vCPU 0) and NEGOTIATE(requested 0x10000, required 0x23",
        "id 0x80007e57 \"pvabi-twn\" version 9.87.654, the guest made NEGOTIATE(requested 0x10000, required 0x21",
        "never from GET_IMPL_ID",
    ] {
        assert!(message.contains(part), "{part:?} not in {message}");
    }
    // The careful guests (the demo above; the careless ones, whose mistakes do not depend on
    // the identity) make the same calls under both identities.
    for (name, run) in [
        ("demo", &demo),
        ("careless", &careless),
        ("careless-discovery", &disc),
    ] {
        let check = "guest.same_calls_under_another_identity";
        assert_eq!(run.verdict(check), "PASS", "{name}: {}", run.message(check));
    }

    // The fourth careless guest reads the pvabi leaf above the signature leaf's eax and then
    // executes vmcall, both before its first call: KVM answers them without an exit, the
    // checking host's discovery trace (vCPU 0 single-stepped up to its first port write)
    // sees both and ends the VM at the vmcall; so it also made no call and did not shut down.
    let cpuid = GuestRun::of(&["careless-cpuid"]);
    assert_eq!(cpuid.code, Some(5), "{:#?}", cpuid.checks);
    assert_eq!(
        cpuid.with("FAIL"),
        [
            "guest.finds_pvabi_at_a_later_base",
            "guest.reads_no_pvabi_leaf_above_the_signature_leaf_eax",
            "guest.no_unadvertised_hypercall_instruction",
            "guest.runs_under_a_host_offering_more_than_it_knows",
        ],
        "{:#?}",
        cpuid.checks
    );
    assert!(
        cpuid
            .message("guest.reads_no_pvabi_leaf_above_the_signature_leaf_eax")
            .contains("CPUID leaf 0x40000104"),
        "{:#?}",
        cpuid.checks
    );
    assert!(
        cpuid
            .message("guest.no_unadvertised_hypercall_instruction")
            .contains("vmcall at rip"),
        "{:#?}",
        cpuid.checks
    );
    // The other guests keep both rules; the one that skips discovery reads no pvabi leaf.
    for (name, run, disc_004) in [
        ("demo", &demo, "PASS"),
        ("careless", &careless, "PASS"),
        ("careless-identity", &ident, "PASS"),
        ("careless-discovery", &disc, "SKIP"),
    ] {
        assert_eq!(
            run.verdict("guest.reads_no_pvabi_leaf_above_the_signature_leaf_eax"),
            disc_004,
            "{name}"
        );
        assert_eq!(
            run.verdict("guest.no_unadvertised_hypercall_instruction"),
            "PASS",
            "{name}"
        );
    }

    // The fifth careless guest stores the deferred queue's and the submission ring's `tail`
    // before it writes the entry there, at CPL0: the checking host's step windows (it
    // single-steps the vCPU after DEFER_SET_QUEUE and RING_SETUP) see each entry change after
    // its publication. It also stores the completion ring's and the event queue's `head` past
    // two entries before it reads them: the checking host, which watches those pages (every
    // guest access to them exits), sees both entries released unread and then read late.
    // Everything else it does right, and every entry is complete by the time it is consumed
    // (and not overwritten before the late reads), so it still shuts down with 0.
    let order = GuestRun::of(&["careless-order"]);
    assert_eq!(order.code, Some(5), "{:#?}", order.checks);
    assert_eq!(
        order.with("FAIL"),
        [
            "guest.events_read_before_head_moves_past_them",
            "guest.deferred_entries_written_before_tail",
            "guest.completions_read_before_head_moves_past_them",
            "guest.submissions_written_before_tail",
        ],
        "{:#?}",
        order.checks
    );
    for (name, entry, ring) in [
        (
            "guest.events_read_before_head_moves_past_them",
            "event-queue entry 0 (slot 0)",
            "the event queue's",
        ),
        (
            "guest.completions_read_before_head_moves_past_them",
            "completion 0 (slot 0)",
            "the completion ring's",
        ),
    ] {
        let m = order.message(name);
        assert!(
            m.contains(&format!("{entry}: the guest stored 2 to {ring} `head`, past the entry, without having read any of its bytes"))
                && m.contains("(4 times)"),
            "{m}"
        );
    }
    for (name, queue) in [
        (
            "guest.deferred_entries_written_before_tail",
            "deferred-queue",
        ),
        ("guest.submissions_written_before_tail", "submission-ring"),
    ] {
        let m = order.message(name);
        assert!(
            m.contains(&format!("{queue} entry 0 (slot 0) changed"))
                && m.contains("then store `tail` + 1")
                && m.contains("(2 times)"),
            "{m}"
        );
    }
    // The demo guest (on one vCPU too) writes its entries first and reads its events and
    // completions before storing `head`: the four rules PASS, exercised.
    let one = GuestRun::of(&["demo"]);
    for name in [
        "guest.deferred_entries_written_before_tail",
        "guest.submissions_written_before_tail",
        "guest.events_read_before_head_moves_past_them",
        "guest.completions_read_before_head_moves_past_them",
    ] {
        assert_eq!(one.verdict(name), "PASS", "{name}: {:#?}", one.checks);
    }

    // The text summary names the rules; a missing image names the built-in guests.
    let out = pvabi(&["conform", "--guest", "careless"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("FAIL guest.only_granted_features PVABI-BASE-016"),
        "{text}"
    );
    let out = pvabi(&["conform", "--guest", "/no/such.elf"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("careless") && stderr.contains("demo"),
        "{stderr}"
    );
}

#[test]
fn guest_conformance_sees_a_read_through_a_queued_pte() {
    if !kvm_or_skip("guest_conformance_sees_a_read_through_a_queued_pte") {
        return;
    }
    // The sixth careless guest queues MEM_UPDATE_PTE to remap a page of its own page tables and
    // reads through the entry at CPL0 before DEFER_FLUSH: the checking host's step windows
    // (single-stepping the vCPU's ring-0 code after DEFER_SET_QUEUE, decoding each instruction
    // while a MEM_UPDATE_PTE waits and walking the page tables for its accesses) see the read
    // go through the queued entry, whose value the queued call changes. That is all it does
    // wrong: it reads the old page, drains, reads the new one and shuts down with 0.
    let pte = GuestRun::of(&["careless-pte"]);
    assert_eq!(pte.code, Some(5), "{:#?}", pte.checks);
    assert_eq!(
        pte.with("FAIL"),
        [
            "guest.no_access_through_a_queued_pte",
            "guest.nothing_relies_on_an_undrained_deferred_call",
        ],
        "{:#?}",
        pte.checks
    );
    assert_eq!(pte.requirement("PVABI-MEM-013").as_deref(), Some("FAIL"));
    assert_eq!(pte.requirement("PVABI-DEFER-008").as_deref(), Some("FAIL"));
    for name in [
        "guest.no_access_through_a_queued_pte",
        "guest.nothing_relies_on_an_undrained_deferred_call",
    ] {
        let m = pte.message(name);
        // The address read (the guest's window, PML4 slot 1), the entry (PTE 0 of its own page
        // table, at level 1 of the walk) and the queued call.
        for part in [
            "a read of 8 byte(s) at 0x8000000000",
            "went through the page-table entry at 0x",
            "(read at level 1 of the walk from CR3 0x",
            "while MEM_UPDATE_PTE of that entry (value 0x",
            "waited in the vCPU's deferred queue (index 0)",
        ] {
            assert!(m.contains(part), "{name}: {part:?} not in {m}");
        }
    }
    assert!(pte
        .message("guest.no_access_through_a_queued_pte")
        .contains("only after the vCPU has reached a drain point"));
    assert!(pte
        .message("guest.nothing_relies_on_an_undrained_deferred_call")
        .contains("the access's outcome depended on the queued call's effect"));
    // The guest ran to its end: the careless read saw the old page, the one after the drain
    // the new one.
    assert_eq!(
        pte.verdict("guest.runs_under_a_host_offering_more_than_it_knows"),
        "PASS"
    );
    // The demo guest queues two MEM_UPDATE_PTEs and reads the window only after the sync point
    // that drains them: both rules exercised, and kept. (The C guest registers no queue: its
    // checking-host test, host-ref/tests/c_guest.rs, asserts both not exercised.)
    let demo = GuestRun::of(&["demo"]);
    for name in [
        "guest.no_access_through_a_queued_pte",
        "guest.nothing_relies_on_an_undrained_deferred_call",
    ] {
        assert_eq!(demo.verdict(name), "PASS", "{name}: {:#?}", demo.checks);
    }
}
