//! `pvabi bench`: measures, on this machine's KVM, what the reference host's dispatch costs
//! per call, what batching, deferral and rings save, and whether the host serialises the
//! calls of two vCPUs. The engine is
//! [`pvabi_host::bench`]; this module parses the arguments and prints the figures.

use std::fmt::Write as _;
use std::process::ExitCode;

use crate::bench::{self, BenchConfig, BenchReport, PhaseResult};
use anyhow::Context;
use serde_json::{json, Value};

/// Arguments of `pvabi bench`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Operations per phase and round.
    #[arg(long, value_name = "N", default_value_t = BenchConfig::default().iterations,
          value_parser = clap::value_parser!(u32).range(1..=100_000_000))]
    iterations: u32,

    /// Measured rounds per phase (after one warm-up round); the figures are their medians.
    #[arg(long, value_name = "R", default_value_t = BenchConfig::default().rounds,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    rounds: u32,

    /// Print the figures as JSON on stdout (progress still goes to stderr).
    #[arg(long)]
    json: bool,

    /// No progress lines on stderr.
    #[arg(long, short)]
    quiet: bool,
}

/// Runs `pvabi bench`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = BenchConfig {
        iterations: args.iterations,
        rounds: args.rounds,
    };
    let quiet = args.quiet;
    if !quiet {
        eprintln!(
            "pvabi bench: {} operations per phase, {} round(s) after a warm-up, on /dev/kvm",
            config.iterations, config.rounds
        );
    }
    let report = bench::run(&config, move |line| {
        if !quiet {
            eprintln!("  {line}");
        }
    })
    .context("running the bench guest")?;
    if args.json {
        println!("{}", to_json(&report));
    } else {
        print!("{}", to_table(&report));
    }
    Ok(ExitCode::SUCCESS)
}

fn ring(cpl: u8) -> String {
    format!("CPL{cpl}")
}

fn to_table(r: &BenchReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "pvabi bench: {} operations per phase, median of {} round(s) after a warm-up ({:.1} s)",
        r.config.iterations,
        r.config.rounds,
        r.total.as_secs_f64()
    );
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "(a) Exit cost: the same `out dx, eax` loop with GET_SPEC_VERSION's registers, to a port"
    );
    let _ = writeln!(
        s,
        "    nobody handles (bare exit), to a port whose handler changes one register (exit + the"
    );
    let _ = writeln!(
        s,
        "    register write-back every call with results needs) and to the doorbell (pvabi call),"
    );
    let _ = writeln!(
        s,
        "    taking turns in chunks. Host wall clock per operation; `call - bare` and `call / bare`"
    );
    let _ = writeln!(
        s,
        "    are medians over pairs of chunks that ran next to each other:"
    );
    let _ = writeln!(
        s,
        "    {:<6} {:>11} {:>14} {:>12} {:>13} {:>12}",
        "ring", "bare out", "+ write-back", "pvabi call", "call - bare", "call / bare"
    );
    for e in &r.exit_cost {
        let _ = writeln!(
            s,
            "    {:<6} {:>8.0} ns {:>11.0} ns {:>9.0} ns {:>10.0} ns {:>11.3}x",
            ring(e.cpl),
            e.bare_out_ns,
            e.regs_out_ns,
            e.pvabi_call_ns,
            e.dispatch_overhead_ns,
            e.ratio
        );
    }
    let _ = writeln!(
        s,
        "    Time in the host's port handler per exit (the host's own work, no exit included):"
    );
    let _ = writeln!(
        s,
        "    {:<6} {:>11} {:>14} {:>26}",
        "ring", "bare out", "pvabi call", "dispatch cost per call"
    );
    for e in &r.exit_cost {
        let _ = writeln!(
            s,
            "    {:<6} {:>8.0} ns {:>11.0} ns {:>23.0} ns",
            ring(e.cpl),
            e.handler_bare_ns,
            e.handler_call_ns,
            e.handler_call_ns - e.handler_bare_ns
        );
    }
    let _ = writeln!(
        s,
        "    (CPL0 code may be emulated instruction by instruction on this host; the loops run"
    );
    let _ = writeln!(
        s,
        "    identical instructions, so differences between them are still the host's costs.)"
    );
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "(b) {} x MEM_UPDATE_PTE (a scratch word), measured at CPL3. exits = port I/O exits to the",
        r.config.iterations
    );
    let _ = writeln!(
        s,
        "    VMM counted by the host; exits/op is the figure that carries over to other machines."
    );
    let _ = writeln!(
        s,
        "    {:<36} {:>10} {:>10} {:>12} {:>12}",
        "mode", "exits/op", "ns/op", "vs direct", "exits saved"
    );
    for b in &r.batching {
        let label = match b.phase.name {
            "direct" => "direct (one call each)",
            "multicall" => "MULTICALL, 32 per batch",
            "deferred" => "deferred queue, flushed when full",
            "ring_doorbell" => "ring, doorbell (RING_ENTER per 32)",
            "ring_host_polled" => "ring, host-polled",
            other => other,
        };
        let saved = if b.exit_reduction_vs_direct.is_finite() {
            format!("{:.0}x", b.exit_reduction_vs_direct)
        } else {
            "all".to_string()
        };
        let _ = writeln!(
            s,
            "    {:<36} {:>10.4} {:>10.0} {:>11.2}x {:>12}",
            label, b.exits_per_op, b.ns_per_op, b.speedup_vs_direct, saved
        );
    }
    let _ = writeln!(s);
    let m = &r.smp;
    let _ = writeln!(
        s,
        "(c) SMP: GET_SPEC_VERSION through the doorbell at CPL3 in a VM of {} vCPUs, from vCPU 0",
        m.vcpus
    );
    let _ = writeln!(
        s,
        "    alone and from vCPUs 0 and 1 at once (taking turns in chunks). calls/s counts the calls"
    );
    let _ = writeln!(
        s,
        "    of every calling vCPU over the wall-clock time between the marks (all ready, all done):"
    );
    let _ = writeln!(
        s,
        "    {:<24} {:>14} {:>10} {:>10} {:>10}",
        "vCPUs calling", "calls/s", "ns/call", "exits/op", "handler"
    );
    for (label, calls, p) in [
        ("1 (vCPU 0)", m.smp_1_calls_per_s, &m.solo),
        ("2 (vCPUs 0 and 1)", m.smp_2_calls_per_s, &m.pair),
    ] {
        let _ = writeln!(
            s,
            "    {:<24} {:>14.0} {:>10.0} {:>10.4} {:>10.0}",
            label, calls, p.ns_per_op, p.exits_per_op, p.handler_ns_per_op
        );
    }
    let _ = writeln!(
        s,
        "    scaling (2 vCPUs / 1 vCPU): {:.2}x (2.00x: no serialisation; 1.00x: fully serialised;",
        m.smp_scaling
    );
    let _ = writeln!(
        s,
        "    below 2x also when the machine has fewer than 2 idle cores for the two vCPU threads)"
    );
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "Every phase (medians; guest TSC ticks per operation as a second clock):"
    );
    let _ = writeln!(
        s,
        "    {:<18} {:<5} {:>10} {:>10} {:>10} {:>12}  what",
        "phase", "ring", "ns/op", "exits/op", "handler", "tsc/op"
    );
    for p in &r.phases {
        let _ = writeln!(
            s,
            "    {:<18} {:<5} {:>10.0} {:>10.4} {:>10.0} {:>12.0}  {}",
            p.phase.name,
            ring(p.phase.cpl),
            p.ns_per_op,
            p.exits_per_op,
            p.handler_ns_per_op,
            p.tsc_per_op,
            p.phase.what
        );
    }
    s
}

fn to_json(r: &BenchReport) -> String {
    let exit_cost: Vec<Value> = r
        .exit_cost
        .iter()
        .map(|e| {
            json!({
                "cpl": e.cpl,
                "bare_out_ns": e.bare_out_ns,
                "pvabi_call_ns": e.pvabi_call_ns,
                "dispatch_overhead_ns": e.dispatch_overhead_ns,
                "ratio": e.ratio,
                "regs_out_ns": e.regs_out_ns,
                "handler_bare_ns": e.handler_bare_ns,
                "handler_call_ns": e.handler_call_ns,
                "handler_dispatch_ns": e.handler_call_ns - e.handler_bare_ns,
            })
        })
        .collect();
    let batching: Vec<Value> = r
        .batching
        .iter()
        .map(|b| {
            json!({
                "mode": b.phase.name,
                "cpl": b.phase.cpl,
                "exits_per_op": b.exits_per_op,
                "ns_per_op": b.ns_per_op,
                "speedup_vs_direct": b.speedup_vs_direct,
                "exit_reduction_vs_direct": b.exit_reduction_vs_direct,
            })
        })
        .collect();
    let m = &r.smp;
    let report = json!({
        "iterations": r.config.iterations,
        "rounds": r.config.rounds,
        "clock": "host wall clock between guest marks",
        "exit_cost": exit_cost,
        "batching": batching,
        "phases": r.phases.iter().map(phase_json).collect::<Vec<_>>(),
        "smp": {
            "vcpus": m.vcpus,
            "cpl": m.pair.phase.cpl,
            "call": "GET_SPEC_VERSION",
            "smp_1_calls_per_s": m.smp_1_calls_per_s,
            "smp_2_calls_per_s": m.smp_2_calls_per_s,
            "smp_scaling": m.smp_scaling,
            "phases": [phase_json(&m.solo), phase_json(&m.pair)],
        },
        "host_pte_writes": r.host_pte_writes,
        "total_seconds": r.total.as_secs_f64(),
    });
    // Non-finite figures (a phase that did not run) become null.
    serde_json::to_string_pretty(&report).expect("a JSON value always serializes")
}

/// One phase as a JSON object.
fn phase_json(p: &PhaseResult) -> Value {
    let samples: Vec<Value> = p
        .samples
        .iter()
        .map(|x| {
            json!({
                "ops": x.ops,
                "exits": x.exits,
                "ns": x.elapsed.as_nanos() as u64,
                "handler_ns": x.handler.as_nanos() as u64,
                "tsc_ticks": x.tsc_ticks,
            })
        })
        .collect();
    json!({
        "name": p.phase.name,
        "cpl": p.phase.cpl,
        "what": p.phase.what,
        "ns_per_op": p.ns_per_op,
        "exits_per_op": p.exits_per_op,
        "tsc_per_op": p.tsc_per_op,
        "handler_ns_per_op": p.handler_ns_per_op,
        "samples": samples,
    })
}
