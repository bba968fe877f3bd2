//! The conformance engine behind `pvabi conform`: the catalogue of test images, running each
//! under the reference host, and tracing the results to the specification's requirements.
//!
//! A test is a guest image that reports over the verdict channel
//! ([`pvabi_conformance::channel`]); the engine only boots it and hands the console and the
//! VM's end to the channel's parser, so nothing here can turn a run without its verdict into
//! a PASS.

use std::time::Duration;

use pvabi_conformance::channel::{self, RunEnd, TestResult};
use pvabi_conformance::report::{self, Report, Requirement};
use pvabi_conformance::Verdict;
use pvabi_host::dispatch::{ConsoleSink, HostConfig};
use pvabi_host::runner::{self, RunConfig};
use pvabi_host::vm::{VmConfig, VmEnd};

/// One test of the suite.
#[derive(Clone, Copy, Debug)]
pub struct TestInfo {
    /// Its name (the one its BEGIN and END lines carry).
    pub name: &'static str,
    /// What it checks.
    pub what: &'static str,
    /// Its image.
    pub image: fn() -> &'static [u8],
}

/// Every test, in the order they run.
pub const TESTS: &[TestInfo] = &[TestInfo {
    name: "base",
    what: "discovery (CPUID leaves) and the Base family: versions, identity, probing, NEGOTIATE and its refusals",
    image: pvabi_guest_images::conform_base,
}];

/// How long one test VM may run before it is ended (its verdict is then CRASH).
pub const TEST_TIMEOUT: Duration = Duration::from_secs(60);

/// How the runner's view of a VM's end maps onto the channel's.
fn run_end(end: &VmEnd) -> RunEnd {
    match end {
        VmEnd::Shutdown(code) => RunEnd::Shutdown(*code),
        VmEnd::Reboot => RunEnd::Reboot,
        VmEnd::Crash(message) => RunEnd::Crash(message.clone()),
        VmEnd::Fault(report) => RunEnd::Fault(report.to_string()),
    }
}

/// Runs `test` under the reference host serving `host`.
pub fn run_test(test: &TestInfo, host: &HostConfig) -> TestResult {
    let config = RunConfig {
        host: HostConfig {
            console: ConsoleSink::Discard,
            ..host.clone()
        },
        vm: VmConfig::default(),
        timeout: Some(TEST_TIMEOUT),
    };
    match runner::run((test.image)(), config) {
        Ok(outcome) => channel::parse(test.name, &outcome.console, run_end(&outcome.end)),
        // The VM could not run: the environment is at fault, not the host under test.
        Err(e) => TestResult {
            test: test.name.to_owned(),
            verdict: Verdict::Error,
            checks: Vec::new(),
            reason: Some(format!("the test VM could not run: {e}")),
            end: RunEnd::Fault(e.to_string()),
        },
    }
}

/// The specification's requirements, as the suite traces them.
pub fn requirements() -> Vec<Requirement> {
    pvabi_spec::requirements()
        .into_iter()
        .map(|r| Requirement {
            id: r.id,
            level: r.level.keyword().to_owned(),
            party: r.party.name().to_owned(),
        })
        .collect()
}

/// The report of a run.
pub fn report(results: Vec<TestResult>, host: &HostConfig) -> Report {
    let (requirements, _) = report::trace(&requirements(), &results);
    let name_len = host.impl_name.iter().position(|&b| b == 0).unwrap_or(16);
    Report {
        suite_version: env!("CARGO_PKG_VERSION").to_owned(),
        spec_version: pvabi_abi::version::Version(pvabi_abi::version::SPEC_VERSION).to_string(),
        implementation: serde_json::json!({
            "id": host.impl_id,
            "name": String::from_utf8_lossy(&host.impl_name[..name_len]),
            "version": host.impl_version.packed(),
            "host": "reference host (pvabi-host)",
        }),
        profile: serde_json::json!({
            "serves": host.served.iter().map(|v| v.to_string()).collect::<Vec<_>>(),
        }),
        verdict: Verdict::worst(results.iter().map(|r| r.verdict)),
        requirements,
        tests: results,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pvabi_abi::calls::Call;
    use pvabi_host::vm::testing::kvm_or_skip;

    #[test]
    fn every_check_cites_requirements_that_exist() {
        // Without KVM this still checks the catalogue; the citations are checked on KVM.
        assert!(!TESTS.is_empty());
        if !kvm_or_skip("every_check_cites_requirements_that_exist") {
            return;
        }
        let results: Vec<_> = TESTS
            .iter()
            .map(|t| run_test(t, &HostConfig::default()))
            .collect();
        let (_, unknown) = report::trace(&requirements(), &results);
        assert!(unknown.is_empty(), "{unknown:?}");
    }

    #[test]
    fn the_reference_host_passes_and_a_host_that_lacks_a_call_fails() {
        if !kvm_or_skip("the_reference_host_passes_and_a_host_that_lacks_a_call_fails") {
            return;
        }
        let base = &TESTS[0];
        let good = run_test(base, &HostConfig::default());
        assert_eq!(good.verdict, Verdict::Pass, "{good:#?}");
        assert!(good.checks.len() >= 15, "{good:#?}");
        // A host that leaves out PROBE_FEATURES breaks BASE-009: the suite must say FAIL, and
        // name the checks.
        let broken = HostConfig {
            disabled_calls: vec![Call::ProbeFeatures],
            ..HostConfig::default()
        };
        let bad = run_test(base, &broken);
        assert_eq!(bad.verdict, Verdict::Fail, "{bad:#?}");
        let failed: Vec<_> = bad
            .checks
            .iter()
            .filter(|c| c.verdict == Verdict::Fail)
            .map(|c| c.name.as_str())
            .collect();
        assert!(
            failed.contains(&"base.probe_features_before_negotiate"),
            "{failed:?}"
        );
    }

    #[test]
    fn a_guest_that_never_reports_is_a_crash() {
        if !kvm_or_skip("a_guest_that_never_reports_is_a_crash") {
            return;
        }
        // The demo guest knows nothing of the channel: however well it ends, no verdict.
        let demo = TestInfo {
            name: "base",
            what: "not a conformance test",
            image: pvabi_guest_images::demo,
        };
        let r = run_test(&demo, &HostConfig::default());
        assert_eq!(r.verdict, Verdict::Crash, "{r:#?}");
    }
}
