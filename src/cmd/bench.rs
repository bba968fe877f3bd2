//! `pvabi bench`: measures, on this machine's KVM, what a pvabi call costs against the
//! exits it is made of, and what batching, rings, kernel-side doorbells, event coalescing,
//! the time page and a second vCPU save. The engine is [`crate::bench`]; this module parses
//! the arguments and prints the figures: a table (with progress on stderr while it runs)
//! and an SVG plot, or one JSON object.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::bench::{self, BenchConfig, BenchReport, PhaseResult};
use anyhow::Context;
use serde_json::{json, Value};

/// Where the SVG plot goes unless `--svg` says otherwise.
pub const DEFAULT_SVG: &str = "target/pvabi-bench.svg";

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

    /// Print the figures as one JSON object on stdout (progress still goes to stderr; no
    /// plot unless `--svg` is given).
    #[arg(long)]
    json: bool,

    /// Write the plot of nanoseconds per call against batch size here (default, without
    /// `--json`: target/pvabi-bench.svg under the current directory).
    #[arg(long, value_name = "PATH")]
    svg: Option<PathBuf>,

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
    let svg = match (&args.svg, args.json) {
        (Some(p), _) => Some(p.clone()),
        (None, false) => Some(PathBuf::from(DEFAULT_SVG)),
        (None, true) => None,
    };
    if let Some(path) = &svg {
        write_svg(path, &report)?;
    }
    if args.json {
        println!("{}", to_json(&report));
    } else {
        print!("{}", to_table(&report));
        if let Some(path) = &svg {
            println!(
                "\nplot of ns per call against batch size: {}",
                path.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn write_svg(path: &Path, report: &BenchReport) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating {} for the plot", dir.display()))?;
    }
    std::fs::write(path, to_svg(report))
        .with_context(|| format!("writing the plot to {}", path.display()))
}

/// A figure for JSON: NaN and infinities (not measurable) become `null`.
fn num(x: f64) -> Value {
    if x.is_finite() {
        json!(x)
    } else {
        Value::Null
    }
}

fn phase_detail(p: &PhaseResult) -> Value {
    json!({
        "phase": p.phase.name,
        "what": p.phase.what,
        "kvm_exits_per_op": num(p.kvm_exits_per_op),
        "kvm_vmm_exits_per_op": num(p.kvm_vmm_exits_per_op),
        "tsc_per_op": num(p.tsc_per_op),
        "rounds": p.samples.iter().map(|s| json!({
            "ops": s.ops,
            "chunks": s.chunks,
            "elapsed_ns": s.elapsed.as_nanos() as u64,
            "exits": s.exits(),
            "kvm_exits": s.kvm_exits(),
            "kvm_vmm_exits": s.kvm_vmm_exits(),
            "port_exits": s.counters.port_exits,
            "kernel_io": s.counters.kernel_io,
            "kvm_io_exits": s.counters.kvm.io_exits(),
            "vmm_exits_with_marks": s.counters.vmm_exits,
            "kvm_signal_exits": s.counters.kvm.get("signal_exits"),
            "kvm_irq_window_exits": s.counters.kvm.get("irq_window_exits"),
            "kvm_halt_exits": s.counters.kvm.get("halt_exits"),
            "kvm_irq_injections": s.counters.kvm.get("irq_injections"),
            "failed": s.failed,
            "extra": s.extra,
            "extra_count": s.extra_count,
        })).collect::<Vec<_>>(),
    })
}

fn phase_json(name: &str, p: &PhaseResult, ratio: f64) -> Value {
    let mut v = json!({
        "name": name,
        "available": true,
        "ns_per_op": num(p.ns_per_op),
        "exits_per_op": num(p.exits_per_op),
        "ring": p.phase.cpl,
        "ratio_vs_sync": num(ratio),
        "host_ns_per_op": num(p.host_ns_per_op),
        "host_ns_per_op_median": num(p.host_ns_per_op_median),
        "detail": phase_detail(p),
    });
    let extra = match p.phase.name {
        "events_coalesced" | "events_uncoalesced" => Some(("interrupts_per_event", p.extra_per_op)),
        "time_page" => Some(("tsc_interpolated", p.extra_per_count)),
        _ => None,
    };
    if let (Some((key, value)), Some(obj)) = (extra, v.as_object_mut()) {
        obj.insert(key.into(), num(value));
    }
    v
}

/// One target of the issue, judged on the figures.
struct Target {
    what: &'static str,
    value: f64,
    /// `None`: not measurable in this build.
    met: Option<bool>,
    note: String,
}

fn targets(r: &BenchReport) -> Vec<Target> {
    let ns = |n: &str| r.result(n).map_or(f64::NAN, |p| p.ns_per_op);
    let exits = |n: &str| r.result(n).map_or(f64::NAN, |p| p.exits_per_op);
    let judged = |what, value: f64, ok: bool, note: String| Target {
        what,
        value,
        met: value.is_finite().then_some(ok),
        note,
    };
    let unavailable = |what, name: &str| Target {
        what,
        value: f64::NAN,
        met: None,
        note: format!("{name} not measured"),
    };
    let sync = ns("sync_nop");
    let mut t = vec![];
    let v = sync / ns("out_roundtrip");
    t.push(judged(
        "sync_nop <= 1.03x out_roundtrip",
        v,
        v <= 1.03,
        format!("{v:.3}x"),
    ));
    for (what, name, want) in [
        (
            "multicall_256 >= 100x cheaper than sync_nop",
            "multicall_256",
            100.0,
        ),
        (
            "multicall_1024 >= 150x cheaper than sync_nop",
            "multicall_1024",
            150.0,
        ),
    ] {
        let v = sync / ns(name);
        if v.is_finite() {
            t.push(judged(what, v, v >= want, format!("{v:.0}x")));
        } else {
            t.push(unavailable(what, name));
        }
    }
    let e = exits("ring_polled");
    t.push(judged(
        "ring_polled: 0 exits per op",
        e,
        e == 0.0,
        format!("{e} exits/op"),
    ));
    let v = sync / ns("ring_polled");
    t.push(judged(
        "ring_polled >= 300x cheaper than sync_nop",
        v,
        v >= 300.0,
        format!("{v:.0}x"),
    ));
    let v = r.doorbell_ns() / ns("out_roundtrip");
    t.push(judged(
        "ring_doorbell's doorbell <= 0.4x out_roundtrip",
        v,
        v <= 0.4,
        format!("{:.0} ns, {v:.3}x", r.doorbell_ns()),
    ));
    let (c, u) = (exits("events_coalesced"), exits("events_uncoalesced"));
    t.push(judged(
        "events_coalesced <= 0.05 exits/event, events_uncoalesced >= 1",
        c,
        c <= 0.05 && u >= 1.0,
        format!("{c:.4} against {u:.2} exits/event"),
    ));
    let v = ns("time_call") / ns("time_page");
    let e = exits("time_page");
    t.push(judged(
        "time_page >= 500x cheaper than time_call, 0 exits",
        v,
        v >= 500.0 && e == 0.0,
        format!("{v:.0}x, {e} exits/op"),
    ));
    let v = r.smp_scaling();
    t.push(judged(
        "smp_2 >= 1.8x the throughput of smp_1",
        v,
        v >= 1.8,
        format!("{v:.2}x"),
    ));
    t
}

fn to_json(r: &BenchReport) -> String {
    let scenarios: Vec<Value> = r
        .scenarios
        .iter()
        .map(|s| match &s.result {
            Some(p) => phase_json(s.def.name, p, s.ratio_vs_sync),
            None => json!({
                "name": s.def.name,
                "available": false,
                "reason": "the phase gave no figures",
                "ns_per_op": null,
                "exits_per_op": null,
                "ring": 3,
                "ratio_vs_sync": null,
            }),
        })
        .collect();
    let sync = r.result("sync_nop").map_or(f64::NAN, |p| p.ns_per_op);
    let extra: Vec<Value> = r
        .extra
        .iter()
        .map(|p| phase_json(p.phase.name, p, p.ns_per_op / sync))
        .collect();
    let targets: Vec<Value> = targets(r)
        .iter()
        .map(|t| json!({"target": t.what, "value": num(t.value), "met": t.met, "note": t.note}))
        .collect();
    let report = json!({
        "scenarios": scenarios,
        "extra": extra,
        "targets": targets,
        "doorbell_ns": num(r.doorbell_ns()),
        "smp_scaling": num(r.smp_scaling()),
        "tsc_hz": r.tsc_hz,
        "kvm_stats": r.kvm_stats,
        "kernel_ring_notify": r.kernel_ring_notify,
        "config": {
            "iterations": r.config.iterations,
            "rounds": r.config.rounds,
            "vcpus": bench::BENCH_VCPUS,
        },
        "total_s": r.total.as_secs_f64(),
    });
    serde_json::to_string_pretty(&report).expect("a JSON value always serialises")
}

fn fmt_ns(x: f64) -> String {
    if !x.is_finite() {
        "-".into()
    } else if x >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

fn fmt_exits(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.4}")
    } else {
        "-".into()
    }
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
    let _ = writeln!(
        s,
        "exits: to the VMM, counted by the host; kvm: every exit into KVM (its `exits` statistic, \
         in-kernel ones included); host ns: the host's own work per operation (mean; median: the typical \
         port handler)\n"
    );
    let _ = writeln!(
        s,
        "{:<20} {:>4} {:>10} {:>9} {:>9} {:>9} {:>7} {:>9}  what",
        "scenario", "ring", "ns/op", "exits", "kvm", "host ns", "median", "vs sync"
    );
    let row = |s: &mut String, name: &str, p: &PhaseResult, ratio: f64| {
        let _ = writeln!(
            s,
            "{:<20} {:>4} {:>10} {:>9} {:>9} {:>9} {:>7} {:>8}x  {}",
            name,
            format!("CPL{}", p.phase.cpl),
            fmt_ns(p.ns_per_op),
            fmt_exits(p.exits_per_op),
            fmt_exits(p.kvm_exits_per_op),
            fmt_ns(p.host_ns_per_op),
            fmt_ns(p.host_ns_per_op_median),
            if ratio.is_finite() {
                format!("{ratio:.4}")
            } else {
                "-".into()
            },
            p.phase.what
        );
    };
    for sc in &r.scenarios {
        match &sc.result {
            Some(p) => row(&mut s, sc.def.name, p, sc.ratio_vs_sync),
            None => {
                let _ = writeln!(
                    s,
                    "{:<20} unavailable: the phase gave no figures",
                    sc.def.name
                );
            }
        }
    }
    let _ = writeln!(s, "\ndetail:");
    let sync = r.result("sync_nop").map_or(f64::NAN, |p| p.ns_per_op);
    for p in &r.extra {
        row(&mut s, p.phase.name, p, p.ns_per_op / sync);
    }
    let per = |n: &str| r.result(n).map_or(f64::NAN, |p| p.extra_per_op);
    let _ = writeln!(
        s,
        "\nring_doorbell's doorbell (the guest's TSC around the `out`): {} ns; \
         interrupts per event: {:.4} coalesced, {:.4} uncoalesced; smp_2 / smp_1: {:.2}x",
        fmt_ns(r.doorbell_ns()),
        per("events_coalesced"),
        per("events_uncoalesced"),
        r.smp_scaling()
    );
    let _ = writeln!(s, "\ntargets:");
    for t in targets(r) {
        let verdict = match t.met {
            Some(true) => "met   ",
            Some(false) => "MISSED",
            None => "n/a   ",
        };
        let _ = writeln!(s, "  {verdict} {:<62} {}", t.what, t.note);
    }
    s
}

/// The plot: nanoseconds per call (log scale) against calls per exit or notification (log
/// scale), one series per mode, the floors as horizontal lines.
fn to_svg(r: &BenchReport) -> String {
    const W: f64 = 760.0;
    const H: f64 = 480.0;
    const LEFT: f64 = 70.0;
    const RIGHT: f64 = 190.0;
    const TOP: f64 = 40.0;
    const BOTTOM: f64 = 50.0;
    let ns = |n: &str| r.result(n).map(|p| p.ns_per_op).filter(|x| *x > 0.0);
    let mut values: Vec<f64> = r
        .scenarios
        .iter()
        .filter_map(|s| s.result.as_ref().map(|p| p.ns_per_op))
        .filter(|x| x.is_finite() && *x > 0.0)
        .collect();
    values.push(1.0);
    let (lo, hi) = values
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    let (ylo, yhi) = (
        lo.log10().floor(),
        hi.log10().ceil().max(lo.log10().floor() + 1.0),
    );
    let (xlo, xhi) = (0.0f64, 1024f64.log2());
    let x = |batch: f64| LEFT + (batch.log2() - xlo) / (xhi - xlo) * (W - LEFT - RIGHT);
    let y = |v: f64| TOP + (yhi - v.log10()) / (yhi - ylo) * (H - TOP - BOTTOM);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="22" font-size="14">pvabi bench: ns per call against calls per exit (guest CPL3, {} ops x {} rounds)</text>"#,
        r.config.iterations, r.config.rounds
    );
    // Axes and grid.
    for k in 0..=10 {
        let b = f64::from(1u32 << k);
        let _ = writeln!(
            s,
            r##"<line x1="{0:.1}" y1="{TOP}" x2="{0:.1}" y2="{1}" stroke="#eee"/><text x="{0:.1}" y="{2}" text-anchor="middle">{3}</text>"##,
            x(b),
            H - BOTTOM,
            H - BOTTOM + 16.0,
            1u32 << k
        );
    }
    for e in (ylo as i32)..=(yhi as i32) {
        let v = 10f64.powi(e);
        let label = if e >= 3 {
            format!("{} µs", 10f64.powi(e - 3))
        } else {
            format!("{v} ns")
        };
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{0:.1}" x2="{1}" y2="{0:.1}" stroke="#eee"/><text x="{2}" y="{3:.1}" text-anchor="end">{label}</text>"##,
            y(v),
            W - RIGHT,
            LEFT - 6.0,
            y(v) + 4.0
        );
    }
    let _ = writeln!(
        s,
        r##"<rect x="{LEFT}" y="{TOP}" width="{}" height="{}" fill="none" stroke="#333"/>"##,
        W - LEFT - RIGHT,
        H - TOP - BOTTOM
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">calls per exit / per notification (batch size)</text>"#,
        (LEFT + W - RIGHT) / 2.0,
        H - 12.0
    );
    // Floors and batch-less modes: horizontal lines.
    let mut legend = 0;
    let mut label = |s: &mut String, color: &str, text: &str, dashed: bool| {
        let ly = TOP + 10.0 + f64::from(legend) * 18.0;
        legend += 1;
        let dash = if dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let _ = writeln!(
            s,
            r#"<line x1="{0}" y1="{1:.1}" x2="{2}" y2="{1:.1}" stroke="{color}" stroke-width="2"{dash}/><text x="{3}" y="{4:.1}">{text}</text>"#,
            W - RIGHT + 10.0,
            ly,
            W - RIGHT + 34.0,
            W - RIGHT + 40.0,
            ly + 4.0
        );
    };
    for (name, color, text) in [
        ("out_roundtrip", "#d62728", "floor: exit to the VMM"),
        ("out_ioeventfd", "#ff7f0e", "floor: ioeventfd exit"),
        ("ring_polled", "#2ca02c", "ring, host-polled"),
        ("time_page", "#9467bd", "time page read"),
    ] {
        if let Some(v) = ns(name) {
            let _ = writeln!(
                s,
                r#"<line x1="{LEFT}" y1="{0:.1}" x2="{1}" y2="{0:.1}" stroke="{color}" stroke-width="1.5" stroke-dasharray="6 4"/>"#,
                y(v),
                W - RIGHT
            );
            label(&mut s, color, text, true);
        }
    }
    // Modes with a batch size: points joined by lines.
    let series: [(&str, &str, &[&str]); 4] = [
        (
            "#1f77b4",
            "MULTICALL",
            &[
                "sync_nop",
                "multicall_1",
                "multicall_8",
                "multicall_32",
                "multicall_256",
                "multicall_1024",
            ],
        ),
        ("#8c564b", "deferred (64 per flush)", &["deferred"]),
        (
            "#17becf",
            "ring, doorbell (32 per write)",
            &["ring_doorbell"],
        ),
        ("#7f7f7f", "direct call", &["sync_nop"]),
    ];
    for (color, text, names) in series {
        let points: Vec<(f64, f64)> = names
            .iter()
            .filter_map(|n| {
                let sc = r.scenario(n)?;
                Some((x(f64::from(sc.def.batch?)), y(ns(n)?)))
            })
            .collect();
        if points.is_empty() {
            continue;
        }
        if points.len() > 1 {
            let path: Vec<String> = points
                .iter()
                .map(|(px, py)| format!("{px:.1},{py:.1}"))
                .collect();
            let _ = writeln!(
                s,
                r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"/>"#,
                path.join(" ")
            );
        }
        for (px, py) in &points {
            let _ = writeln!(
                s,
                r#"<circle cx="{px:.1}" cy="{py:.1}" r="4" fill="{color}"/>"#
            );
        }
        label(&mut s, color, text, false);
    }
    let missing: Vec<&str> = r
        .scenarios
        .iter()
        .filter(|sc| sc.result.is_none())
        .map(|sc| sc.def.name)
        .collect();
    if !missing.is_empty() {
        let _ = writeln!(
            s,
            r#"<text x="{LEFT}" y="{}" font-size="11">not measured in this build: {}</text>"#,
            TOP - 6.0,
            missing.join(", ")
        );
    }
    s.push_str("</svg>\n");
    s
}
