//! The bench engine ([`pvabi_host::bench::run`]) on a real `/dev/kvm`, with a handful of
//! iterations: every phase is measured, and the SMP figures (one vCPU calling against two)
//! are there and sane. No timing is asserted.

use pvabi_host::bench::{self, BenchConfig, BENCH_VCPUS, PHASES, SMP_PHASES};
use pvabi_host::vm::testing::kvm_or_skip;

#[test]
fn bench_reports_the_smp_scenario_beside_the_existing_phases() {
    if !kvm_or_skip("bench_reports_the_smp_scenario_beside_the_existing_phases") {
        return;
    }
    let config = BenchConfig {
        iterations: 48,
        rounds: 2,
    };
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let sink = lines.clone();
    let r = bench::run(&config, move |l| sink.lock().unwrap().push(l.to_string()))
        .unwrap_or_else(|e| panic!("the bench failed: {e}"));

    // The existing phases are all there, in their order, and the SMP ones are not among them.
    let names: Vec<&str> = r.phases.iter().map(|p| p.phase.name).collect();
    let expected: Vec<&str> = PHASES.iter().map(|p| p.name).collect();
    assert_eq!(names, expected);

    let smp = &r.smp;
    assert_eq!(smp.vcpus, BENCH_VCPUS);
    assert_eq!(smp.solo.phase, SMP_PHASES[0]);
    assert_eq!(smp.pair.phase, SMP_PHASES[1]);
    for (what, v) in [
        ("smp_1_calls_per_s", smp.smp_1_calls_per_s),
        ("smp_2_calls_per_s", smp.smp_2_calls_per_s),
        ("smp_scaling", smp.smp_scaling),
    ] {
        assert!(v.is_finite() && v > 0.0, "{what} = {v}: {smp:?}");
    }
    let ratio = smp.smp_2_calls_per_s / smp.smp_1_calls_per_s;
    assert!((smp.smp_scaling - ratio).abs() <= 1e-9 * ratio, "{smp:?}");
    // Every round: each calling vCPU made `iterations` calls, none failed, one exit each
    // (in smp_1 vCPU 1's VCPU_HALT, entered just before, may still fall into a chunk on a
    // loaded host: at most one per chunk, 8 chunks).
    for (p, vcpus_calling) in [(&smp.solo, 1), (&smp.pair, 2)] {
        assert_eq!(p.samples.len(), 2, "{p:?}");
        for s in &p.samples {
            assert_eq!(s.ops, 48 * vcpus_calling, "{p:?}");
            assert_eq!(s.failed, 0, "{p:?}");
            if vcpus_calling == 2 {
                assert_eq!(s.exits, s.ops, "one doorbell exit per call: {p:?}");
            } else {
                assert!(s.exits >= s.ops && s.exits <= s.ops + 8, "{p:?}");
            }
            assert!(s.elapsed.as_nanos() > 0 && s.tsc_ticks > 0, "{p:?}");
        }
        assert!(p.ns_per_op.is_finite() && p.ns_per_op > 0.0, "{p:?}");
    }
    let lines = lines.lock().unwrap();
    for name in ["smp_1", "smp_2"] {
        assert!(
            lines
                .iter()
                .any(|l| l.contains("round 2/2") && l.contains(name)),
            "a progress line for {name}: {lines:?}"
        );
    }
}
