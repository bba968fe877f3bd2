//! `pvabi bench`'s engine: the cost of the host's own dispatch per call, and what batching,
//! deferral and rings save, measured on this machine's KVM with the bench guest
//! (`guest-ref/bare/bench`).
//!
//! The guest runs a list of phases of `iterations` operations each and marks the start and
//! end of every phase on a test port. The host takes the wall-clock time of each mark and
//! counts the exits to the VMM (port I/O that reaches the host) in between; the guest adds
//! its TSC ticks and the number of operations that failed. Every phase runs `rounds` times
//! after a short warm-up round; the figures are the medians over the rounds.
//!
//! - **Exit cost**: the same `out dx, eax` loop with the registers of GET_SPEC_VERSION, once
//!   to a port nobody handles (a bare exit to the VMM and back) and once to the doorbell (a
//!   pvabi call through the [`Dispatcher`](pvabi_host::dispatch::Dispatcher)), at CPL0 and at
//!   CPL3, in alternating chunks. The difference is the host's own dispatch overhead per
//!   call. Exits cost tens of microseconds on some hosts and vary by more than that
//!   overhead, so the host also times its port handler itself (the work between the exit
//!   and the resume, without the exit): the handler time of a call minus that of a bare
//!   exit is the dispatch overhead without the exit's noise.
//! - **Batching** (at CPL3): MEM_UPDATE_PTE of a scratch word made directly, in MULTICALL
//!   batches of 32, through the deferred queue (flushed when full and at the end), and
//!   through the submission ring in doorbell mode (RING_ENTER per 32 submissions) and in
//!   host-polled mode (a notification only when the host asks). "Exits per operation" is the
//!   figure that carries over to other machines; nanoseconds depend on this one.
//! - **SMP** (at CPL3): whether the dispatcher serialises vCPUs. The VM has two vCPUs; vCPU 1
//!   is started by the guest with VCPU_START and waits in VCPU_HALT. GET_SPEC_VERSION through
//!   the doorbell from vCPU 0 alone (`smp_1`), and from vCPUs 0 and 1 at the same time
//!   (`smp_2`: both start together after one start mark, and the end mark comes when both
//!   are done), in alternating chunks. The figures are aggregate calls per second (the calls
//!   of every calling vCPU over the wall-clock time between the marks) and their ratio: 2
//!   means no serialisation at all, 1 means the vCPUs' calls do not overlap.
//!
//! Ring-0 guest code may be emulated instruction by instruction (PVM hosts), so loops that
//! must be fast run at CPL3; each figure says which ring it was measured in. Calls from
//! ring 3 break rule CONV-013 (a host must not perform them), so the bench's host is built
//! with [`HostConfig::allow_user_mode_calls`]; the exit and the dispatch work are the same
//! as for a call from ring 0.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pvabi_host::bus::{PortAccess, PortDevice};
use pvabi_host::dispatch::sync::lock;
use pvabi_host::dispatch::{CallRegs, ConsoleSink, HostConfig, Outcome};
use pvabi_host::runner::{self, RunConfig, RunError};
use pvabi_host::vm::{VmConfig, VmEnd};
use pvabi_host::KvmDispatcher;

/// The bench guest's ELF image.
pub fn bench_guest() -> &'static [u8] {
    pvabi_guest_images::bench()
}

/// The bench guest's test protocol, shared with the guest.
#[allow(dead_code)]
mod protocol {
    include!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/guest-ref/bare/bench/src/protocol.rs"
    ));
}
use protocol::*;
/// vCPUs of the bench VM: vCPU 1 calls in the SMP phase only.
pub const BENCH_VCPUS: u32 = 2;

/// How long one bench VM may run before it is stopped as hung.
const DEADLINE: Duration = Duration::from_secs(600);

/// One phase of the bench guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PhaseInfo {
    /// Its number in the guest's protocol.
    pub id: u32,
    /// A short machine-readable name.
    pub name: &'static str,
    /// The privilege level the measured loop runs at.
    pub cpl: u8,
    /// What one operation is.
    pub what: &'static str,
}

/// The phases, in the order they are reported.
pub const PHASES: [PhaseInfo; 11] = [
    PhaseInfo {
        id: PHASE_CPL0_BARE,
        name: "bare_out_cpl0",
        cpl: 0,
        what: "out to a port nobody handles",
    },
    PhaseInfo {
        id: PHASE_CPL0_REGS,
        name: "regs_out_cpl0",
        cpl: 0,
        what: "out to a port whose handler changes rdi (registers written back)",
    },
    PhaseInfo {
        id: PHASE_CPL0_CALL,
        name: "pvabi_call_cpl0",
        cpl: 0,
        what: "GET_SPEC_VERSION through the doorbell",
    },
    PhaseInfo {
        id: PHASE_CPL3_BARE,
        name: "bare_out_cpl3",
        cpl: 3,
        what: "out to a port nobody handles",
    },
    PhaseInfo {
        id: PHASE_CPL3_REGS,
        name: "regs_out_cpl3",
        cpl: 3,
        what: "out to a port whose handler changes rdi (registers written back)",
    },
    PhaseInfo {
        id: PHASE_CPL3_CALL,
        name: "pvabi_call_cpl3",
        cpl: 3,
        what: "GET_SPEC_VERSION through the doorbell",
    },
    PhaseInfo {
        id: PHASE_DIRECT,
        name: "direct",
        cpl: 3,
        what: "MEM_UPDATE_PTE, one doorbell call each",
    },
    PhaseInfo {
        id: PHASE_MULTICALL,
        name: "multicall",
        cpl: 3,
        what: "MEM_UPDATE_PTE in MULTICALL batches of 32",
    },
    PhaseInfo {
        id: PHASE_DEFERRED,
        name: "deferred",
        cpl: 3,
        what: "MEM_UPDATE_PTE through the deferred queue (64 entries per flush)",
    },
    PhaseInfo {
        id: PHASE_RING_DOORBELL,
        name: "ring_doorbell",
        cpl: 3,
        what: "MEM_UPDATE_PTE through the ring, RING_ENTER per 32 submissions",
    },
    PhaseInfo {
        id: PHASE_RING_POLLED,
        name: "ring_host_polled",
        cpl: 3,
        what: "MEM_UPDATE_PTE through the ring, host-polled (notify only on SQ_NEED_WAKEUP)",
    },
];

/// The SMP phases (reported in [`BenchReport::smp`], not in [`BenchReport::phases`]): one
/// operation is one call, whichever vCPU made it.
pub const SMP_PHASES: [PhaseInfo; 2] = [
    PhaseInfo {
        id: PHASE_SMP_1,
        name: "smp_1",
        cpl: 3,
        what: "GET_SPEC_VERSION through the doorbell, vCPU 0 alone (vCPU 1 halted)",
    },
    PhaseInfo {
        id: PHASE_SMP_2,
        name: "smp_2",
        cpl: 3,
        what: "GET_SPEC_VERSION through the doorbell, vCPUs 0 and 1 at the same time",
    },
];

/// What to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BenchConfig {
    /// Operations per phase and round.
    pub iterations: u32,
    /// Measured rounds (after one warm-up round).
    pub rounds: u32,
}

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig {
            iterations: 10_000,
            rounds: 3,
        }
    }
}

/// One phase of one round (the sum over its chunks).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    /// Operations the guest made.
    pub ops: u64,
    /// Exits to the VMM during the phase (port I/O the host saw; marks excluded).
    pub exits: u64,
    /// Wall-clock time between the phase's marks, as the host saw them.
    pub elapsed: Duration,
    /// Time the host spent inside its port handler (the dispatcher) for those exits: the
    /// host's own work, without the exit itself.
    pub handler: Duration,
    /// The guest's TSC ticks for the phase's loop.
    pub tsc_ticks: u64,
    /// Operations that did not succeed (a valid bench has none).
    pub failed: u64,
}

/// One phase's figures: the medians over the measured rounds.
#[derive(Clone, Debug, PartialEq)]
pub struct PhaseResult {
    /// The phase.
    pub phase: PhaseInfo,
    /// Every measured round.
    pub samples: Vec<Sample>,
    /// Median wall-clock nanoseconds per operation.
    pub ns_per_op: f64,
    /// Median exits to the VMM per operation.
    pub exits_per_op: f64,
    /// Median guest TSC ticks per operation.
    pub tsc_per_op: f64,
    /// Median nanoseconds per operation spent in the host's port handler.
    pub handler_ns_per_op: f64,
    /// Wall-clock nanoseconds per operation of every chunk of every measured round, in the
    /// order they ran (one chunk per round for phases that are not cut into chunks).
    pub chunk_ns_per_op: Vec<f64>,
}

/// The exit cost at one privilege level.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ExitCost {
    /// The ring.
    pub cpl: u8,
    /// A bare `out` round trip to the VMM, ns.
    pub bare_out_ns: f64,
    /// A no-op pvabi call (GET_SPEC_VERSION), ns.
    pub pvabi_call_ns: f64,
    /// The host's dispatch overhead per call, end to end: the median over chunk pairs (a
    /// chunk of calls and the chunk of bare exits next to it in time) of the difference of
    /// their ns/op.
    pub dispatch_overhead_ns: f64,
    /// The median over the same chunk pairs of call ns/op divided by bare ns/op.
    pub ratio: f64,
    /// A bare `out` whose handler changes one register, so that the registers are written
    /// back before the vCPU resumes (as after any call that returns results), ns.
    pub regs_out_ns: f64,
    /// Time in the host's port handler per bare exit, ns.
    pub handler_bare_ns: f64,
    /// Time in the host's port handler per pvabi call (the dispatcher's work), ns.
    pub handler_call_ns: f64,
}

/// A batching mode compared with direct calls.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchMode {
    /// The phase.
    pub phase: PhaseInfo,
    /// Exits to the VMM per operation.
    pub exits_per_op: f64,
    /// Nanoseconds per operation.
    pub ns_per_op: f64,
    /// Direct ns/op divided by this mode's ns/op.
    pub speedup_vs_direct: f64,
    /// Direct exits/op divided by this mode's exits/op (infinite without exits).
    pub exit_reduction_vs_direct: f64,
}

/// Aggregate call rates with one and with two vCPUs calling at once.
#[derive(Clone, Debug, PartialEq)]
pub struct SmpResult {
    /// vCPUs in the VM.
    pub vcpus: u32,
    /// vCPU 0 alone (`ns_per_op` is per call).
    pub solo: PhaseResult,
    /// vCPUs 0 and 1 at once (operations are the calls of both; `ns_per_op` is wall-clock
    /// time per call of either).
    pub pair: PhaseResult,
    /// Median over the rounds of the calls per second with vCPU 0 alone.
    pub smp_1_calls_per_s: f64,
    /// Median over the rounds of the calls per second of both vCPUs together.
    pub smp_2_calls_per_s: f64,
    /// `smp_2_calls_per_s / smp_1_calls_per_s`: 2 when the host runs both vCPUs' calls in
    /// parallel, 1 when it serialises them.
    pub smp_scaling: f64,
}

/// Everything `pvabi bench` measured.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchReport {
    /// What was asked for.
    pub config: BenchConfig,
    /// Every phase.
    pub phases: Vec<PhaseResult>,
    /// CPL0 and CPL3.
    pub exit_cost: Vec<ExitCost>,
    /// Direct, MULTICALL, deferred, ring (doorbell), ring (host-polled).
    pub batching: Vec<BatchMode>,
    /// One vCPU calling against two (the SMP phases).
    pub smp: SmpResult,
    /// MEM_UPDATE_PTE calls that succeeded, as the host counted them (all rounds, warm-up
    /// included).
    pub host_pte_writes: u64,
    /// Wall-clock time of the whole run, VM creation included.
    pub total: Duration,
}

/// Why the bench could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The VM could not be created or run (no KVM, a refused configuration, ...).
    #[error(transparent)]
    Run(#[from] RunError),
    /// The guest did not finish cleanly.
    #[error("the bench guest did not finish: {end}{console}")]
    Guest {
        /// How the VM ended.
        end: String,
        /// The guest's raw console output, if any.
        console: String,
    },
    /// The guest's marks do not make sense, or operations failed.
    #[error("the bench is invalid: {0}")]
    Invalid(String),
}

#[derive(Clone, Copy, Debug)]
struct Mark {
    phase: u32,
    round: u32,
    end: bool,
    at: Instant,
    exits: u64,
    handler_ns: u64,
    ops: u64,
    tsc: u64,
    failed: u64,
}

type Progress = Box<dyn Fn(&str) + Send + Sync>;

/// The bench guest's test ports, in front of the pvabi ports on every port: it counts the
/// exits and times the handlers of the pvabi ports and the bare ports.
struct BenchHost {
    pv: Arc<KvmDispatcher>,
    params: Mutex<VecDeque<u32>>,
    exits: AtomicU64,
    handler_ns: AtomicU64,
    marks: Mutex<Vec<Mark>>,
    console: Mutex<Vec<u8>>,
    rounds: u32,
    progress: Progress,
    /// The group of phases and the round the last mark belonged to (locked after `marks`).
    progress_group: Mutex<Option<(u32, u32)>>,
}

impl BenchHost {
    fn add_handler_time(&self, start: Instant) {
        let ns = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.handler_ns.fetch_add(ns, Ordering::Relaxed);
    }

    fn mark(&self, regs: &CallRegs) {
        let at = Instant::now();
        let tag = regs.rax as u32;
        let mark = Mark {
            phase: tag & 0xff,
            round: (tag >> 8) & 0xffff,
            end: tag & MARK_END != 0,
            at,
            exits: self.exits.load(Ordering::Relaxed),
            handler_ns: self.handler_ns.load(Ordering::Relaxed),
            ops: regs.rdi,
            tsc: regs.rsi,
            failed: regs.r8,
        };
        let mut marks = lock(&self.marks);
        marks.push(mark);
        // Progress: one line per phase and round, once the group of phases that take turns
        // in chunks (or the single phase) is over, that is, when another group begins.
        let key = (group(mark.phase), mark.round);
        let mut current = lock(&self.progress_group);
        if *current != Some(key) {
            if let Some(done) = current.replace(key) {
                self.report_group(&marks, done);
            }
        }
    }

    /// Prints the progress lines of a finished group of phases in one round.
    fn report_group(&self, marks: &[Mark], (group_id, round): (u32, u32)) {
        for info in all_phases().filter(|p| group(p.id) == group_id) {
            let (mut ops, mut ns) = (0u64, 0u128);
            let mut start = None;
            for m in marks
                .iter()
                .filter(|m| m.phase == info.id && m.round == round)
            {
                match (m.end, start.take()) {
                    (false, _) => start = Some(m.at),
                    (true, Some(a)) => {
                        ops += m.ops;
                        ns += m.at.duration_since(a).as_nanos();
                    }
                    (true, None) => {}
                }
            }
            if ops == 0 {
                continue;
            }
            let what = if round == 0 {
                "warm-up".to_string()
            } else {
                format!("round {round}/{}", self.rounds)
            };
            (self.progress)(&format!(
                "{what}: {:<17} {:>8} ops, {:>9.0} ns/op",
                info.name,
                ops,
                ns as f64 / ops as f64
            ));
        }
    }
}

/// The group a phase belongs to: the phases that take turns in chunks share one (named by
/// its first phase, plus 100).
fn group(phase: u32) -> u32 {
    match phase {
        PHASE_CPL0_BARE | PHASE_CPL0_CALL | PHASE_CPL0_REGS => 100 + PHASE_CPL0_BARE,
        PHASE_CPL3_BARE | PHASE_CPL3_CALL | PHASE_CPL3_REGS => 100 + PHASE_CPL3_BARE,
        PHASE_SMP_1 | PHASE_SMP_2 => 100 + PHASE_SMP_1,
        other => other,
    }
}

/// Every phase the guest runs, SMP ones included.
fn all_phases() -> impl Iterator<Item = &'static PhaseInfo> {
    PHASES.iter().chain(SMP_PHASES.iter())
}

impl PortDevice for BenchHost {
    fn write(&self, access: &PortAccess, data: &[u8], regs: &mut CallRegs) -> Option<Outcome> {
        match access.port {
            PORT_MARK => self.mark(regs),
            PORT_BARE_REGS => {
                // A bare exit whose handler changes a register, so that the VM layer writes
                // the registers back before the vCPU resumes, as after every pvabi call.
                self.exits.fetch_add(1, Ordering::Relaxed);
                let start = Instant::now();
                regs.rdi = !regs.rdi;
                self.add_handler_time(start);
            }
            PORT_CONSOLE => lock(&self.console).extend_from_slice(data),
            port => {
                // The pvabi ports, and the bare port nobody answers.
                self.exits.fetch_add(1, Ordering::Relaxed);
                let start = Instant::now();
                let outcome = self.pv.port_out(access.caller(), port, data, regs);
                self.add_handler_time(start);
                return Some(outcome.unwrap_or(Outcome::Resume));
            }
        }
        Some(Outcome::Resume)
    }

    fn read(&self, access: &PortAccess, data: &mut [u8]) -> Option<Outcome> {
        if access.port == PORT_PARAM {
            let value = lock(&self.params).pop_front().unwrap_or(0);
            let n = data.len().min(4);
            data[..n].copy_from_slice(&value.to_le_bytes()[..n]);
            return Some(Outcome::Resume);
        }
        self.exits.fetch_add(1, Ordering::Relaxed);
        let start = Instant::now();
        self.pv.port_in(access.port, data);
        self.add_handler_time(start);
        Some(Outcome::Resume)
    }

    fn vm_ending(&self) {
        let marks = lock(&self.marks);
        let last = lock(&self.progress_group).take();
        if let Some(done) = last {
            self.report_group(&marks, done);
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Runs the bench guest once and computes the figures. `progress` gets one line per phase
/// and round.
pub fn run(
    config: &BenchConfig,
    progress: impl Fn(&str) + Send + Sync + 'static,
) -> Result<BenchReport, BenchError> {
    let started = Instant::now();
    let host_config = HostConfig {
        console: ConsoleSink::Discard,
        vcpus: BENCH_VCPUS,
        // The loops run in ring 3 (see the module docs), which CONV-013 forbids for real
        // guests: this host is told to perform such calls anyway.
        allow_user_mode_calls: true,
        // Nobody reads the effects: count calls only, as an embedding VMM would.
        record_effects: false,
        ..HostConfig::default()
    };
    let run_config = RunConfig {
        host: host_config,
        vm: VmConfig {
            vcpus: BENCH_VCPUS,
            ..VmConfig::default()
        },
        timeout: Some(DEADLINE),
    };
    let progress: Progress = Box::new(progress);
    let mut bench_host = None;
    let outcome = runner::run_with(bench_guest(), run_config, |bus, dispatcher| {
        let host = Arc::new(BenchHost {
            pv: dispatcher.clone(),
            params: Mutex::new([config.iterations.max(1), config.rounds.max(1)].into()),
            exits: AtomicU64::new(0),
            handler_ns: AtomicU64::new(0),
            marks: Mutex::new(Vec::new()),
            console: Mutex::new(Vec::new()),
            rounds: config.rounds.max(1),
            progress,
            progress_group: Mutex::new(None),
        });
        bus.attach(0..=u16::MAX, host.clone());
        bench_host = Some(host);
    })?;
    let host = bench_host.expect("the bench device was attached");
    let end = outcome.end;
    let console = String::from_utf8_lossy(&lock(&host.console)).into_owned();
    if end != VmEnd::Shutdown(0) {
        return Err(BenchError::Guest {
            end: end.to_string(),
            console: if console.is_empty() {
                String::new()
            } else {
                format!("\nguest console: {console}")
            },
        });
    }
    let marks = lock(&host.marks).clone();
    let rounds = config.rounds.max(1);
    let phases = PHASES
        .iter()
        .map(|&info| summarise(&marks, info, rounds))
        .collect::<Result<Vec<_>, _>>()?;
    let by_name = |name: &str| {
        phases
            .iter()
            .find(|p| p.phase.name == name)
            .expect("every phase is measured")
    };
    let exit_cost = [0u8, 3]
        .iter()
        .map(|&cpl| {
            let bare = by_name(&format!("bare_out_cpl{cpl}"));
            let call = by_name(&format!("pvabi_call_cpl{cpl}"));
            let regs = by_name(&format!("regs_out_cpl{cpl}"));
            let pairs = || {
                bare.chunk_ns_per_op
                    .iter()
                    .zip(&call.chunk_ns_per_op)
                    .map(|(&b, &c)| (b, c))
            };
            ExitCost {
                cpl,
                bare_out_ns: bare.ns_per_op,
                pvabi_call_ns: call.ns_per_op,
                dispatch_overhead_ns: median(pairs().map(|(b, c)| c - b).collect()),
                ratio: median(pairs().map(|(b, c)| c / b).collect()),
                regs_out_ns: regs.ns_per_op,
                handler_bare_ns: bare.handler_ns_per_op,
                handler_call_ns: call.handler_ns_per_op,
            }
        })
        .collect();
    let direct = by_name("direct");
    let batching = [
        "direct",
        "multicall",
        "deferred",
        "ring_doorbell",
        "ring_host_polled",
    ]
    .iter()
    .map(|&name| {
        let p = by_name(name);
        BatchMode {
            phase: p.phase,
            exits_per_op: p.exits_per_op,
            ns_per_op: p.ns_per_op,
            speedup_vs_direct: direct.ns_per_op / p.ns_per_op,
            exit_reduction_vs_direct: direct.exits_per_op / p.exits_per_op,
        }
    })
    .collect();
    let smp = smp_result(
        summarise(&marks, SMP_PHASES[0], rounds)?,
        summarise(&marks, SMP_PHASES[1], rounds)?,
    );
    Ok(BenchReport {
        config: *config,
        phases,
        exit_cost,
        batching,
        smp,
        host_pte_writes: host.pv.report().count(
            pvabi_abi::calls::Call::MemUpdatePte,
            pvabi_abi::status::Status::Success,
        ),
        total: started.elapsed(),
    })
}

/// The SMP figures from the two SMP phases' results.
fn smp_result(solo: PhaseResult, pair: PhaseResult) -> SmpResult {
    let calls_per_s = |p: &PhaseResult| {
        median(
            p.samples
                .iter()
                .map(|s| s.ops as f64 / s.elapsed.as_secs_f64())
                .collect(),
        )
    };
    let smp_1_calls_per_s = calls_per_s(&solo);
    let smp_2_calls_per_s = calls_per_s(&pair);
    SmpResult {
        vcpus: BENCH_VCPUS,
        solo,
        pair,
        smp_1_calls_per_s,
        smp_2_calls_per_s,
        smp_scaling: smp_2_calls_per_s / smp_1_calls_per_s,
    }
}

/// One phase's figures from the marks of every measured round (`1..=rounds`): each round's
/// (start, end) pairs are added up, and the figures are the medians over the rounds.
fn summarise(marks: &[Mark], info: PhaseInfo, rounds: u32) -> Result<PhaseResult, BenchError> {
    let mut samples = Vec::new();
    let mut chunk_ns_per_op = Vec::new();
    for round in 1..=rounds {
        // Every (start, end) pair of the phase in this round, in order: one per chunk.
        let mut sum = Sample {
            ops: 0,
            exits: 0,
            elapsed: Duration::ZERO,
            handler: Duration::ZERO,
            tsc_ticks: 0,
            failed: 0,
        };
        let mut start: Option<Mark> = None;
        for m in marks
            .iter()
            .filter(|m| m.phase == info.id && m.round == round)
        {
            match (m.end, start.take()) {
                (false, None) => start = Some(*m),
                (true, Some(a)) => {
                    let ns = m.at.duration_since(a.at).as_nanos() as f64;
                    chunk_ns_per_op.push(ns / m.ops.max(1) as f64);
                    sum.ops += m.ops;
                    sum.exits += m.exits - a.exits;
                    sum.elapsed += m.at.duration_since(a.at);
                    sum.handler += Duration::from_nanos(m.handler_ns - a.handler_ns);
                    sum.tsc_ticks += m.tsc;
                    sum.failed += m.failed;
                }
                _ => {
                    return Err(BenchError::Invalid(format!(
                        "unpaired marks for phase {} in round {round}",
                        info.name
                    )))
                }
            }
        }
        if sum.ops == 0 || start.is_some() {
            return Err(BenchError::Invalid(format!(
                "no complete marks for phase {} in round {round}",
                info.name
            )));
        }
        if sum.failed > 0 {
            return Err(BenchError::Invalid(format!(
                "phase {} round {round}: {} of {} operations failed",
                info.name, sum.failed, sum.ops
            )));
        }
        samples.push(sum);
    }
    let per =
        |f: &dyn Fn(&Sample) -> f64| median(samples.iter().map(|s| f(s) / s.ops as f64).collect());
    Ok(PhaseResult {
        phase: info,
        ns_per_op: per(&|s| s.elapsed.as_nanos() as f64),
        exits_per_op: per(&|s| s.exits as f64),
        tsc_per_op: per(&|s| s.tsc_ticks as f64),
        handler_ns_per_op: per(&|s| s.handler.as_nanos() as f64),
        chunk_ns_per_op,
        samples,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A start mark at `start_us` and an end mark at `end_us` (µs after `t0`) with `ops`.
    fn pair(
        t0: Instant,
        phase: u32,
        round: u32,
        start_us: u64,
        end_us: u64,
        ops: u64,
    ) -> [Mark; 2] {
        let mark = |end: bool, us: u64, ops: u64| Mark {
            phase,
            round,
            end,
            at: t0 + Duration::from_micros(us),
            exits: us,
            handler_ns: us * 100,
            ops,
            tsc: if end { ops * 1000 } else { 0 },
            failed: 0,
        };
        [mark(false, start_us, 0), mark(true, end_us, ops)]
    }

    #[test]
    fn smp_figures_are_aggregate_calls_per_second_and_their_ratio() {
        let t0 = Instant::now();
        let mut marks = Vec::new();
        // Warm-up (round 0) is ignored; round 1: two chunks each of 100 calls in 1 ms alone
        // and 200 calls (both vCPUs) in 1.25 ms.
        marks.extend(pair(t0, 11, 0, 0, 10_000, 100));
        marks.extend(pair(t0, 11, 1, 20_000, 21_000, 100));
        marks.extend(pair(t0, 12, 1, 22_000, 23_250, 200));
        marks.extend(pair(t0, 12, 1, 24_000, 25_250, 200));
        marks.extend(pair(t0, 11, 1, 26_000, 27_000, 100));
        let solo = summarise(&marks, SMP_PHASES[0], 1).unwrap();
        let both = summarise(&marks, SMP_PHASES[1], 1).unwrap();
        assert_eq!(solo.samples[0].ops, 200);
        assert_eq!(both.samples[0].ops, 400);
        assert_eq!(solo.chunk_ns_per_op, [10_000.0, 10_000.0]);
        let smp = smp_result(solo, both);
        assert_eq!(smp.vcpus, 2);
        assert!((smp.smp_1_calls_per_s - 100_000.0).abs() < 1e-6, "{smp:?}");
        assert!((smp.smp_2_calls_per_s - 160_000.0).abs() < 1e-6, "{smp:?}");
        assert!((smp.smp_scaling - 1.6).abs() < 1e-9, "{smp:?}");
        assert!((smp.pair.ns_per_op - 6_250.0).abs() < 1e-9, "{smp:?}");
    }

    #[test]
    fn smp_figures_are_medians_over_rounds() {
        let t0 = Instant::now();
        let mut marks = Vec::new();
        for (round, solo_us, pair_us) in [(1, 1_000, 1_000), (2, 2_000, 1_000), (3, 1_000, 500)] {
            let at = 10_000 * u64::from(round);
            marks.extend(pair(t0, 11, round, at, at + solo_us, 100));
            marks.extend(pair(t0, 12, round, at + 4_000, at + 4_000 + pair_us, 200));
        }
        let smp = smp_result(
            summarise(&marks, SMP_PHASES[0], 3).unwrap(),
            summarise(&marks, SMP_PHASES[1], 3).unwrap(),
        );
        // Solo: 100k, 50k, 100k calls/s; pair: 200k, 200k, 400k.
        assert!((smp.smp_1_calls_per_s - 100_000.0).abs() < 1e-6, "{smp:?}");
        assert!((smp.smp_2_calls_per_s - 200_000.0).abs() < 1e-6, "{smp:?}");
        assert!((smp.smp_scaling - 2.0).abs() < 1e-9, "{smp:?}");
    }

    #[test]
    fn a_phase_without_complete_marks_is_invalid() {
        let t0 = Instant::now();
        let mut marks = pair(t0, 12, 1, 0, 1_000, 200).to_vec();
        assert!(
            summarise(&marks, SMP_PHASES[0], 1).is_err(),
            "no smp_1 marks"
        );
        marks.push(marks[0]);
        assert!(
            summarise(&marks, SMP_PHASES[1], 1).is_err(),
            "a start without an end"
        );
        let mut failed = pair(t0, 11, 1, 0, 1_000, 100);
        failed[1].failed = 1;
        assert!(
            summarise(&failed, SMP_PHASES[0], 1).is_err(),
            "a failed call"
        );
    }

    #[test]
    fn smp_phases_have_their_own_ids_and_a_progress_group() {
        for p in SMP_PHASES {
            assert!(PHASES.iter().all(|q| q.id != p.id && q.name != p.name));
            assert_eq!(group(p.id), 100 + PHASE_SMP_1);
            assert_eq!(p.cpl, 3);
        }
    }
}

/// The engine on a real `/dev/kvm`, with a handful of iterations: every phase is measured,
/// and the SMP figures (one vCPU calling against two) are there and sane. No timing is
/// asserted.
#[cfg(test)]
mod on_kvm {
    use super::{BenchConfig, BENCH_VCPUS, PHASES, SMP_PHASES};
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
        let r = super::run(&config, move |l| sink.lock().unwrap().push(l.to_string()))
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
}
