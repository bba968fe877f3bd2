//! `pvabi bench`'s engine: what a pvabi call costs against the exits it is made of, and
//! what batching, deferral, rings, kernel-side doorbells, event coalescing and the time page
//! save, measured on this machine's KVM with the bench guest (`guest-ref/bare/bench`).
//!
//! The guest runs a list of phases of `iterations` operations each and marks the start and
//! end of every phase on a test port. At every mark the host takes the wall-clock time and
//! reads its counters: exits to the VMM (every return from `KVM_RUN`, counted by the VM
//! layer), KVM's own per-vCPU statistics from the binary stats fd (`io_exits`, `exits`,
//! `signal_exits`, ...), writes KVM answered with an ioeventfd, the time the host spent in
//! its port handler and in ring passes, and the events its producer posted. The guest adds
//! its TSC ticks, its failed operations and a figure of the phase's own. Every phase runs
//! `rounds` times after a short warm-up round; the figures are the medians over the rounds.
//!
//! The output is a list of [`SCENARIOS`] with fixed names (a scenario whose phase gave no
//! figures is listed as unavailable), and [`EXTRA_PHASES`] for detail (the CPL0 loops, a call's register write-back,
//! RING_ENTER).
//!
//! - **Floors** (CPL3): the same `out dx, eax` loop with the registers of GET_SPEC_VERSION
//!   to a port nobody handles (`out_roundtrip`: a bare exit to the VMM and back), to a port
//!   bound to an ioeventfd (`out_ioeventfd`: KVM signals an eventfd and resumes the vCPU
//!   without returning to the VMM) and to the doorbell (`sync_nop`: a pvabi call), in
//!   rotating chunks so that drift hits all alike.
//! - **Batching** (CPL3): MEM_UPDATE_PTE of a scratch word in MULTICALL batches of 1, 8 and
//!   32, through the deferred queue, through the submission ring with a ring-notify write
//!   per 32 submissions (`ring_doorbell`; the write is an ioeventfd served by a host worker
//!   thread, and the guest times the `out` itself: [`BenchReport::doorbell_ns`]) and in
//!   host-polled mode (`ring_polled`: a notification only when the poller asks).
//! - **Events** (CPL3 loop, CPL0 handler): a host-side producer thread posts events to vCPU
//!   0's queue, in bursts of up to the queue's capacity (`events_coalesced`: the
//!   `interrupt_pending` protocol raises one interrupt per burst) or one at a time, each once
//!   the guest has drained and re-armed (`events_uncoalesced`: one interrupt per event). The
//!   guest's handler only counts; the ring-3 loop drains. Its figure: interrupts taken.
//! - **Time** (CPL3): TIME_MONOTONIC calls against reads of the time page.
//! - **SMP** (CPL3): GET_SPEC_VERSION through the doorbell from vCPU 0 alone (`smp_1`), and
//!   from vCPUs 0 and 1 at the same time (`smp_2`), in alternating chunks; `ns_per_op` is
//!   wall-clock time per call of either vCPU, so aggregate calls per second are its inverse.
//!
//! "Exits per operation" (to the VMM) is the figure that carries over to other machines;
//! nanoseconds depend on this one. It is counted by the host (every return from `KVM_RUN`)
//! and cross-checked against KVM's statistics: `kvm_exits_per_op` is KVM's `exits`, every
//! exit into KVM, so it is at least the host's count plus the writes KVM answered with an
//! ioeventfd, and the rest are exits KVM handled without the VMM (host interrupts and the
//! like); where KVM maintains `io_exits` (PVM does not), `kvm_vmm_exits_per_op` derives the
//! VMM's count itself. Ring-0 guest code may be emulated instruction by instruction (PVM
//! hosts), so loops that must be fast run at CPL3; each figure says which ring it was
//! measured in. Calls from ring 3 break rule CONV-013 (a host must not perform them), so
//! the bench's host is built with [`HostConfig::allow_user_mode_calls`]; the exit and the
//! dispatch work are the same as for a call from ring 0.

use std::collections::VecDeque;
use std::mem::offset_of;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pvabi_abi::events::{EventKind, EventQueueHeader};
use pvabi_host::bus::{PortAccess, PortDevice};
use pvabi_host::dispatch::sync::lock;
use pvabi_host::dispatch::{CallRegs, ConsoleSink, HostConfig, Outcome};
use pvabi_host::machine::ServedCounter;
use pvabi_host::runner::{self, RunConfig, RunError};
use pvabi_host::vm::{KvmExitStats, VmConfig, VmCtl, VmEnd};
use pvabi_host::KvmDispatcher;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

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
/// Events each burst of the coalesced events phase holds at most (the queue's capacity).
const EVENT_BURST: u64 = pvabi_abi::events::EVENT_QUEUE_CAPACITY as u64;
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

const fn phase(id: u32, name: &'static str, cpl: u8, what: &'static str) -> PhaseInfo {
    PhaseInfo {
        id,
        name,
        cpl,
        what,
    }
}

/// Every phase the guest runs, in the order they are reported.
pub const PHASES: [PhaseInfo; 23] = [
    phase(
        PHASE_CPL0_BARE,
        "bare_out_cpl0",
        0,
        "out to a port nobody handles",
    ),
    phase(
        PHASE_CPL0_REGS,
        "regs_out_cpl0",
        0,
        "out to a port whose handler changes rdi (registers written back)",
    ),
    phase(
        PHASE_CPL0_CALL,
        "pvabi_call_cpl0",
        0,
        "GET_SPEC_VERSION through the doorbell",
    ),
    phase(
        PHASE_CPL3_BARE,
        "bare_out_cpl3",
        3,
        "out to a port nobody handles",
    ),
    phase(
        PHASE_CPL3_REGS,
        "regs_out_cpl3",
        3,
        "out to a port whose handler changes rdi (registers written back)",
    ),
    phase(
        PHASE_CPL3_CALL,
        "pvabi_call_cpl3",
        3,
        "GET_SPEC_VERSION through the doorbell",
    ),
    phase(
        PHASE_CPL3_IOEVENTFD,
        "ioeventfd_out_cpl3",
        3,
        "out to a port bound to an ioeventfd (KVM signals it; no exit to the VMM)",
    ),
    phase(
        PHASE_DIRECT,
        "direct",
        3,
        "MEM_UPDATE_PTE, one doorbell call each",
    ),
    phase(
        PHASE_MULTICALL_1,
        "multicall_1",
        3,
        "MEM_UPDATE_PTE in MULTICALL batches of 1",
    ),
    phase(
        PHASE_MULTICALL_8,
        "multicall_8",
        3,
        "MEM_UPDATE_PTE in MULTICALL batches of 8",
    ),
    phase(
        PHASE_MULTICALL,
        "multicall",
        3,
        "MEM_UPDATE_PTE in MULTICALL batches of 32",
    ),
    phase(
        PHASE_MULTICALL_256,
        "multicall_256",
        3,
        "MEM_UPDATE_PTE in MULTICALL_PAGES batches of 256 (7 pages)",
    ),
    phase(
        PHASE_MULTICALL_1024,
        "multicall_1024",
        3,
        "MEM_UPDATE_PTE in MULTICALL_PAGES batches of 1024 (25 pages)",
    ),
    phase(
        PHASE_DEFERRED,
        "deferred",
        3,
        "MEM_UPDATE_PTE through the deferred queue (64 entries per flush)",
    ),
    phase(
        PHASE_RING_ENTER,
        "ring_enter",
        3,
        "MEM_UPDATE_PTE through the ring, RING_ENTER per 32 submissions",
    ),
    phase(
        PHASE_RING_DOORBELL,
        "ring_doorbell",
        3,
        "MEM_UPDATE_PTE through the ring, a ring-notify write (ioeventfd) per 32 submissions",
    ),
    phase(
        PHASE_RING_POLLED,
        "ring_host_polled",
        3,
        "MEM_UPDATE_PTE through the ring, host-polled (notify only on SQ_NEED_WAKEUP)",
    ),
    phase(
        PHASE_TIME_CALL,
        "time_call",
        3,
        "TIME_MONOTONIC through the doorbell",
    ),
    phase(
        PHASE_TIME_PAGE,
        "time_page",
        3,
        "monotonic time read from the time page",
    ),
    phase(
        PHASE_EVENTS_COALESCED,
        "events_coalesced",
        3,
        "an event from a host producer posting bursts of up to 128 (one interrupt per burst)",
    ),
    phase(
        PHASE_EVENTS_UNCOALESCED,
        "events_uncoalesced",
        3,
        "an event from a host producer posting each only after the guest re-armed",
    ),
    phase(
        PHASE_SMP_1,
        "smp_1",
        3,
        "GET_SPEC_VERSION through the doorbell, vCPU 0 alone (vCPU 1 halted)",
    ),
    phase(
        PHASE_SMP_2,
        "smp_2",
        3,
        "GET_SPEC_VERSION through the doorbell, vCPUs 0 and 1 at the same time",
    ),
];

/// The phases the guest runs.
fn guest_phases() -> impl Iterator<Item = &'static PhaseInfo> {
    PHASES.iter()
}

#[cfg(test)]
fn phase_by_id(id: u32) -> PhaseInfo {
    *PHASES.iter().find(|p| p.id == id).expect("a listed phase")
}

/// Where a scenario's figures come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// A phase of the bench guest.
    Phase(u32),
}

/// A scenario of `pvabi bench`, by its exact name (the list is data: a scenario that becomes
/// measurable changes its [`Source`] only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScenarioDef {
    /// The scenario's name in the output.
    pub name: &'static str,
    /// Its figures.
    pub source: Source,
    /// Operations per call batch where that means something (the x axis of the plot).
    pub batch: Option<u32>,
}

/// Every scenario, in the order they are reported.
pub const SCENARIOS: [ScenarioDef; 17] = [
    scenario("out_roundtrip", PHASE_CPL3_BARE, None),
    scenario("out_ioeventfd", PHASE_CPL3_IOEVENTFD, None),
    scenario("sync_nop", PHASE_CPL3_CALL, Some(1)),
    scenario("multicall_1", PHASE_MULTICALL_1, Some(1)),
    scenario("multicall_8", PHASE_MULTICALL_8, Some(8)),
    scenario("multicall_32", PHASE_MULTICALL, Some(32)),
    scenario("multicall_256", PHASE_MULTICALL_256, Some(256)),
    scenario("multicall_1024", PHASE_MULTICALL_1024, Some(1024)),
    scenario("deferred", PHASE_DEFERRED, Some(64)),
    scenario("ring_doorbell", PHASE_RING_DOORBELL, Some(32)),
    scenario("ring_polled", PHASE_RING_POLLED, None),
    scenario("events_coalesced", PHASE_EVENTS_COALESCED, None),
    scenario("events_uncoalesced", PHASE_EVENTS_UNCOALESCED, None),
    scenario("time_call", PHASE_TIME_CALL, None),
    scenario("time_page", PHASE_TIME_PAGE, None),
    scenario("smp_1", PHASE_SMP_1, None),
    scenario("smp_2", PHASE_SMP_2, None),
];

const fn scenario(name: &'static str, id: u32, batch: Option<u32>) -> ScenarioDef {
    ScenarioDef {
        name,
        source: Source::Phase(id),
        batch,
    }
}

/// Phases reported beside the scenarios (detail: other rings, other variants).
pub const EXTRA_PHASES: [u32; 6] = [
    PHASE_CPL0_BARE,
    PHASE_CPL0_REGS,
    PHASE_CPL0_CALL,
    PHASE_CPL3_REGS,
    PHASE_DIRECT,
    PHASE_RING_ENTER,
];

/// What to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BenchConfig {
    /// Operations per phase and round (CPL0 phases run a tenth, the uncoalesced events
    /// phase a twentieth, the time page ten times as many).
    pub iterations: u32,
    /// Measured rounds (after one warm-up round).
    pub rounds: u32,
}

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig {
            iterations: 4_000,
            rounds: 3,
        }
    }
}

/// Buckets of [`Histogram`]: 16 of 1 ns, then 4 per power of two up to 2^31 ns.
const BUCKETS: usize = 16 + 4 * 28;

/// Port handler times, bucketed, so that a phase's typical handler time (the median) can
/// be told from the mean, which a loaded host's preemptions inflate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Histogram(pub [u64; BUCKETS]);

impl Default for Histogram {
    fn default() -> Self {
        Histogram([0; BUCKETS])
    }
}

fn bucket(ns: u64) -> usize {
    if ns < 16 {
        return ns as usize;
    }
    let log = 63 - ns.leading_zeros() as usize; // >= 4
    (16 + (log - 4) * 4 + ((ns >> (log - 2)) & 3) as usize).min(BUCKETS - 1)
}

/// The middle of bucket `b`, in ns.
fn bucket_mid(b: usize) -> f64 {
    if b < 16 {
        return b as f64;
    }
    let (log, quarter) = (4 + (b - 16) / 4, (b - 16) % 4);
    let lo = (1u64 << log) + (quarter as u64) * (1u64 << (log - 2));
    lo as f64 + (1u64 << (log - 2)) as f64 / 2.0
}

impl Histogram {
    fn since(&self, a: &Histogram) -> Histogram {
        let mut h = *self;
        for (v, o) in h.0.iter_mut().zip(a.0) {
            *v -= o;
        }
        h
    }

    fn add(&mut self, d: &Histogram) {
        for (v, o) in self.0.iter_mut().zip(d.0) {
            *v += o;
        }
    }

    /// Handler invocations counted.
    pub fn count(&self) -> u64 {
        self.0.iter().sum()
    }

    /// The median handler time (ns, to a quarter of its power of two), NaN if empty.
    pub fn median(&self) -> f64 {
        let n = self.count();
        if n == 0 {
            return f64::NAN;
        }
        let mut seen = 0;
        for (b, &c) in self.0.iter().enumerate() {
            seen += c;
            if 2 * seen >= n {
                return bucket_mid(b);
            }
        }
        f64::NAN
    }
}

/// Counters the host reads at every mark; a phase's figures are differences of two.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Counters {
    /// Exits to the VMM (returns from `KVM_RUN`) of every vCPU, as the VM layer counts them.
    pub vmm_exits: u64,
    /// Port exits the bench's port device saw (marks and parameters excluded).
    pub port_exits: u64,
    /// Nanoseconds spent in the host's port handler (the dispatcher) for those exits.
    pub handler_ns: u64,
    /// KVM's own counters, summed over the vCPUs.
    pub kvm: KvmExitStats,
    /// `out`s KVM answered with an ioeventfd (the bench's port and the ring-notify port).
    pub kernel_io: u64,
    /// Ring submissions consumed by the host, and the nanoseconds of those passes.
    pub ring_entries: u64,
    /// See [`ring_entries`](Self::ring_entries).
    pub ring_ns: u64,
    /// Events the bench's producer posted, and the nanoseconds its posts took.
    pub produced: u64,
    /// See [`produced`](Self::produced).
    pub produce_ns: u64,
    /// The port handler times behind `handler_ns`, one per handled exit.
    pub handler_hist: Histogram,
}

impl Counters {
    fn since(&self, a: &Counters) -> Counters {
        Counters {
            vmm_exits: self.vmm_exits - a.vmm_exits,
            port_exits: self.port_exits - a.port_exits,
            handler_ns: self.handler_ns - a.handler_ns,
            kvm: self.kvm.since(&a.kvm),
            kernel_io: self.kernel_io - a.kernel_io,
            ring_entries: self.ring_entries - a.ring_entries,
            ring_ns: self.ring_ns - a.ring_ns,
            produced: self.produced - a.produced,
            produce_ns: self.produce_ns - a.produce_ns,
            handler_hist: self.handler_hist.since(&a.handler_hist),
        }
    }

    fn add(&mut self, d: &Counters) {
        self.vmm_exits += d.vmm_exits;
        self.port_exits += d.port_exits;
        self.handler_ns += d.handler_ns;
        self.kvm = self.kvm.add(&d.kvm);
        self.kernel_io += d.kernel_io;
        self.ring_entries += d.ring_entries;
        self.ring_ns += d.ring_ns;
        self.produced += d.produced;
        self.produce_ns += d.produce_ns;
        self.handler_hist.add(&d.handler_hist);
    }
}

/// One phase of one round (the sum over its chunks).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    /// Operations the guest made.
    pub ops: u64,
    /// Chunks (start/end mark pairs) the phase was cut into.
    pub chunks: u64,
    /// Wall-clock time between the phase's marks, as the host saw them.
    pub elapsed: Duration,
    /// The guest's TSC ticks for the phase's loop.
    pub tsc_ticks: u64,
    /// Operations that did not succeed (a valid bench has none).
    pub failed: u64,
    /// The phase's own figure from the guest (doorbell TSC ticks, interrupts taken, ...).
    pub extra: u64,
    /// What `extra` counts over (doorbells, ...).
    pub extra_count: u64,
    /// Counter differences between the marks; the end marks' own exits are included
    /// (one per chunk in `vmm_exits` and KVM's `io_exits` and `exits`).
    pub counters: Counters,
}

impl Sample {
    /// Exits to the VMM during the loops, the end marks' own exits taken off.
    pub fn exits(&self) -> u64 {
        self.counters.vmm_exits.saturating_sub(self.chunks)
    }

    /// The same figure from KVM's statistics: port I/O exits not answered inside the kernel,
    /// plus the exits for signals (kicks), interrupt windows and halts, the end marks taken
    /// off. `None` when this KVM lacks one of those statistics, or does not maintain
    /// `io_exits` (PVM does not: it stays 0 while the VMM handles port exits).
    pub fn kvm_vmm_exits(&self) -> Option<u64> {
        let k = &self.counters.kvm;
        let io = k.io_exits()?;
        // Every end mark is a port exit to the VMM: fewer I/O exits than marks means the
        // statistic is not kept.
        if io < self.chunks {
            return None;
        }
        let sum = io + k.get("signal_exits")? + k.get("irq_window_exits")? + k.get("halt_exits")?;
        Some(sum.saturating_sub(self.counters.kernel_io + self.chunks))
    }

    /// Every exit into KVM (its `exits` statistic), the end marks taken off: the exits to
    /// the VMM and those KVM handled itself (an ioeventfd write, a host interrupt, ...).
    pub fn kvm_exits(&self) -> Option<u64> {
        Some(self.counters.kvm.exits()?.saturating_sub(self.chunks))
    }
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
    /// Median exits to the VMM per operation (the VM layer's count).
    pub exits_per_op: f64,
    /// Median exits into KVM of any kind per operation (KVM's `exits` statistic: those to
    /// the VMM and those the kernel handles itself, such as an ioeventfd write; NaN without
    /// binary stats).
    pub kvm_exits_per_op: f64,
    /// Median exits to the VMM per operation as KVM's statistics tell them apart
    /// ([`Sample::kvm_vmm_exits`]; NaN where this KVM does not maintain `io_exits`).
    pub kvm_vmm_exits_per_op: f64,
    /// Median guest TSC ticks per operation.
    pub tsc_per_op: f64,
    /// Median host nanoseconds of work per operation: port handler time (direct calls and
    /// batches), ring pass time (rings), post time (events); NaN where the host does no
    /// work per operation that the bench can time.
    pub host_ns_per_op: f64,
    /// The typical host work per operation where it is port handler time: the median
    /// handler invocation over the measured rounds, divided by the operations per
    /// invocation (NaN elsewhere). Unlike [`host_ns_per_op`](Self::host_ns_per_op), a
    /// mean, it is not inflated by the preemptions of a loaded host.
    pub host_ns_per_op_median: f64,
    /// Median of the phase's own figure per operation (see [`Sample::extra`]).
    pub extra_per_op: f64,
    /// Median of `extra / extra_count` (NaN when the count is 0).
    pub extra_per_count: f64,
    /// Wall-clock nanoseconds per operation of every chunk of every measured round, in the
    /// order they ran.
    pub chunk_ns_per_op: Vec<f64>,
}

/// One scenario's figures.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    /// Its definition.
    pub def: ScenarioDef,
    /// Its phase's figures (`None`: unavailable, see the definition's source).
    pub result: Option<PhaseResult>,
    /// `ns_per_op` divided by that of `sync_nop` (below 1: cheaper than a direct call).
    pub ratio_vs_sync: f64,
}

/// Everything `pvabi bench` measured.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchReport {
    /// What was asked for.
    pub config: BenchConfig,
    /// The scenarios, in [`SCENARIOS`] order.
    pub scenarios: Vec<Scenario>,
    /// The phases of [`EXTRA_PHASES`].
    pub extra: Vec<PhaseResult>,
    /// The guest's TSC frequency (Hz), when the host knows it.
    pub tsc_hz: Option<u64>,
    /// Whether KVM's binary statistics were available for the cross-check.
    pub kvm_stats: bool,
    /// Whether the ring-notify port was served inside the kernel (an ioeventfd).
    pub kernel_ring_notify: bool,
    /// Wall-clock time of the whole run, VM creation included.
    pub total: Duration,
}

impl BenchReport {
    /// The scenario named `name`.
    pub fn scenario(&self, name: &str) -> Option<&Scenario> {
        self.scenarios.iter().find(|s| s.def.name == name)
    }

    /// The measured figures of scenario `name`, if it is available.
    pub fn result(&self, name: &str) -> Option<&PhaseResult> {
        self.scenario(name)?.result.as_ref()
    }

    /// `smp_2`'s aggregate calls per second over `smp_1`'s.
    pub fn smp_scaling(&self) -> f64 {
        match (self.result("smp_1"), self.result("smp_2")) {
            (Some(a), Some(b)) => calls_per_s(b) / calls_per_s(a),
            _ => f64::NAN,
        }
    }

    /// The ring-notify doorbell's own cost in `ring_doorbell` (guest TSC ticks around the
    /// `out`), in ns.
    pub fn doorbell_ns(&self) -> f64 {
        match (self.result("ring_doorbell"), self.tsc_hz) {
            (Some(r), Some(hz)) => r.extra_per_count * 1e9 / hz as f64,
            _ => f64::NAN,
        }
    }
}

/// The median over the rounds of calls (operations) per second.
pub fn calls_per_s(p: &PhaseResult) -> f64 {
    median(
        p.samples
            .iter()
            .map(|s| s.ops as f64 / s.elapsed.as_secs_f64())
            .collect(),
    )
}

/// Why the bench could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The VM could not be created or run (no KVM, a refused configuration, ...).
    #[error(transparent)]
    Run(#[from] RunError),
    /// The bench's ioeventfd port could not be bound.
    #[error("cannot bind the bench's ioeventfd port: {0}")]
    Ioeventfd(String),
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
    counters: Counters,
    ops: u64,
    tsc: u64,
    failed: u64,
    extra: u64,
    extra_count: u64,
}

type Progress = Arc<dyn Fn(&str) + Send + Sync>;

/// The event producer's state, shared with its thread.
#[derive(Default)]
struct Producer {
    /// Set by the phase's end mark: the producer gives up (the guest stopped waiting).
    stop: AtomicBool,
    posted: AtomicU64,
    post_ns: AtomicU64,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// The bench guest's test ports, in front of the pvabi ports on every port: it counts the
/// exits and times the handlers of the pvabi ports and the bare ports.
struct BenchHost {
    pv: Arc<KvmDispatcher>,
    ctl: VmCtl,
    params: Mutex<VecDeque<u32>>,
    exits: AtomicU64,
    handler_ns: AtomicU64,
    handler_hist: [AtomicU64; BUCKETS],
    /// The bench port's ioeventfd, and the writes it counted so far.
    ioeventfd: EventFd,
    ioeventfd_hits: AtomicU64,
    notify_served: Option<ServedCounter>,
    producer: Arc<Producer>,
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
        self.handler_hist[bucket(ns)].fetch_add(1, Ordering::Relaxed);
    }

    fn counters(&self) -> Counters {
        let vcpus = self.ctl.vcpu_count();
        let mut kvm = KvmExitStats::default();
        let mut first = true;
        for v in 0..vcpus {
            let s = self.ctl.kvm_exit_stats(v).unwrap_or_default();
            kvm = if first { s } else { kvm.add(&s) };
            first = false;
        }
        // The eventfd counter resets on each read: accumulate.
        if let Ok(n) = self.ioeventfd.read() {
            self.ioeventfd_hits.fetch_add(n, Ordering::Relaxed);
        }
        let work = self.pv.ring_work();
        Counters {
            vmm_exits: (0..vcpus).map(|v| self.ctl.vmm_exits(v)).sum(),
            port_exits: self.exits.load(Ordering::Relaxed),
            handler_ns: self.handler_ns.load(Ordering::Relaxed),
            kvm,
            kernel_io: self.ioeventfd_hits.load(Ordering::Relaxed)
                + self.notify_served.as_ref().map_or(0, ServedCounter::get),
            ring_entries: work.entries,
            ring_ns: u64::try_from(work.time.as_nanos()).unwrap_or(u64::MAX),
            produced: self.producer.posted.load(Ordering::Relaxed),
            produce_ns: self.producer.post_ns.load(Ordering::Relaxed),
            handler_hist: Histogram(std::array::from_fn(|b| {
                self.handler_hist[b].load(Ordering::Relaxed)
            })),
        }
    }

    fn mark(&self, regs: &CallRegs) {
        let tag = regs.rax as u32;
        let end = tag & MARK_END != 0;
        // The window between the marks holds the loop, not the counters' reads.
        let (at, counters) = if end {
            let at = Instant::now();
            (at, self.counters())
        } else {
            let c = self.counters();
            (Instant::now(), c)
        };
        let mark = Mark {
            phase: tag & 0xff,
            round: (tag >> 8) & 0xffff,
            end,
            at,
            counters,
            ops: regs.rdi,
            tsc: regs.rsi,
            failed: regs.r8,
            extra: regs.r9,
            extra_count: regs.r10,
        };
        if end {
            self.producer.stop.store(true, Ordering::SeqCst);
            let producer = lock(&self.producer.thread).take();
            if let Some(t) = producer {
                let _ = t.join();
            }
        } else if matches!(
            mark.phase,
            PHASE_EVENTS_COALESCED | PHASE_EVENTS_UNCOALESCED
        ) {
            self.start_producer(
                [regs.r9, regs.r10],
                regs.rdi,
                mark.phase == PHASE_EVENTS_COALESCED,
            );
        }
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

    /// Starts the host-side producer of `n` events for vCPU 0's queue at `gpa`, once the
    /// guest's loop has set the word at `ready_gpa` (so that no interrupt rides on the start
    /// mark's exit): in bursts of up to the queue's capacity, each once the guest has
    /// drained the last (`coalesced`), or one at a time, each once the guest has drained the
    /// last and re-armed the interrupt (so that every event raises one).
    fn start_producer(&self, [gpa, ready_gpa]: [u64; 2], n: u64, coalesced: bool) {
        self.producer.stop.store(false, Ordering::SeqCst);
        let (pv, ctl, producer) = (self.pv.clone(), self.ctl.clone(), self.producer.clone());
        let thread = std::thread::spawn(move || {
            let mem = ctl.memory();
            let word = |off: usize| -> Option<u32> {
                mem.load::<u32>(GuestAddress(gpa + off as u64), Ordering::Acquire)
                    .ok()
            };
            let (head, tail, pending) = (
                offset_of!(EventQueueHeader, head),
                offset_of!(EventQueueHeader, tail),
                offset_of!(EventQueueHeader, interrupt_pending),
            );
            let mut posted = 0u64;
            while mem
                .load::<u64>(GuestAddress(ready_gpa), Ordering::Acquire)
                .ok()
                != Some(1)
            {
                if ctl.is_ended() || producer.stop.load(Ordering::Relaxed) {
                    return;
                }
                std::hint::spin_loop();
            }
            while posted < n {
                // Wait until the guest has drained the queue (and, uncoalesced, re-armed).
                let ready = || {
                    let drained = word(head) == word(tail);
                    drained && (coalesced || word(pending) == Some(0))
                };
                while !ready() {
                    if ctl.is_ended() || producer.stop.load(Ordering::Relaxed) {
                        return;
                    }
                    std::hint::spin_loop();
                }
                let burst = if coalesced {
                    (n - posted).min(EVENT_BURST)
                } else {
                    1
                };
                let start = Instant::now();
                for _ in 0..burst {
                    posted += 1;
                    pv.post_event(0, EventKind::User, 0, posted);
                }
                let ns = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
                producer.post_ns.fetch_add(ns, Ordering::Relaxed);
                producer.posted.fetch_add(burst, Ordering::Relaxed);
            }
        });
        *lock(&self.producer.thread) = Some(thread);
    }

    /// Prints the progress lines of a finished group of phases in one round.
    fn report_group(&self, marks: &[Mark], (group_id, round): (u32, u32)) {
        for info in guest_phases().filter(|p| group(p.id) == group_id) {
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
                "{what}: {:<19} {:>8} ops, {:>9.0} ns/op",
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
        PHASE_CPL3_BARE | PHASE_CPL3_CALL | PHASE_CPL3_REGS | PHASE_CPL3_IOEVENTFD => {
            100 + PHASE_CPL3_BARE
        }
        PHASE_SMP_1 | PHASE_SMP_2 => 100 + PHASE_SMP_1,
        other => other,
    }
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
    v.retain(|x| !x.is_nan());
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
    let progress: Progress = Arc::new(progress);
    let mut bench_host = None;
    let mut setup_error = None;
    let outcome = runner::run_with_notify(bench_guest(), run_config, |bus, dispatcher, served| {
        let ctl = dispatcher.machine().ctl().clone();
        let ioeventfd = match ctl.ioeventfd(PORT_IOEVENTFD, None) {
            Ok(fd) => fd,
            Err(e) => {
                setup_error = Some(e.to_string());
                ctl.end(VmEnd::Shutdown(1));
                return;
            }
        };
        let host = Arc::new(BenchHost {
            pv: dispatcher.clone(),
            ctl,
            params: Mutex::new([config.iterations.max(1), config.rounds.max(1)].into()),
            exits: AtomicU64::new(0),
            handler_ns: AtomicU64::new(0),
            handler_hist: std::array::from_fn(|_| AtomicU64::new(0)),
            ioeventfd,
            ioeventfd_hits: AtomicU64::new(0),
            notify_served: served.cloned(),
            producer: Arc::default(),
            marks: Mutex::new(Vec::new()),
            console: Mutex::new(Vec::new()),
            rounds: config.rounds.max(1),
            progress: progress.clone(),
            progress_group: Mutex::new(None),
        });
        bus.attach(0..=u16::MAX, host.clone());
        bench_host = Some(host);
    })?;
    if let Some(e) = setup_error {
        return Err(BenchError::Ioeventfd(e));
    }
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
    let mut results = Vec::new();
    for info in guest_phases() {
        results.push(summarise(&marks, *info, rounds)?);
    }
    let find = |id: u32| results.iter().find(|r| r.phase.id == id).cloned();
    let sync_ns = find(PHASE_CPL3_CALL).map_or(f64::NAN, |r| r.ns_per_op);
    let scenarios = SCENARIOS
        .iter()
        .map(|&def| {
            let result = match def.source {
                Source::Phase(id) => find(id),
            };
            Scenario {
                def,
                ratio_vs_sync: result.as_ref().map_or(f64::NAN, |r| r.ns_per_op / sync_ns),
                result,
            }
        })
        .collect();
    let extra = EXTRA_PHASES.iter().filter_map(|&id| find(id)).collect();
    Ok(BenchReport {
        config: *config,
        scenarios,
        extra,
        tsc_hz: host.ctl.tsc().map(|t| t.hz),
        kvm_stats: host
            .ctl
            .kvm_exit_stats(0)
            .is_some_and(|s| s.exits().is_some()),
        kernel_ring_notify: host.notify_served.is_some(),
        total: started.elapsed(),
    })
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
            chunks: 0,
            elapsed: Duration::ZERO,
            tsc_ticks: 0,
            failed: 0,
            extra: 0,
            extra_count: 0,
            counters: Counters {
                kvm: KvmExitStats::zero(),
                ..Counters::default()
            },
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
                    sum.chunks += 1;
                    sum.elapsed += m.at.duration_since(a.at);
                    sum.tsc_ticks += m.tsc;
                    sum.failed += m.failed;
                    sum.extra += m.extra;
                    sum.extra_count += m.extra_count;
                    sum.counters.add(&m.counters.since(&a.counters));
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
        // Events the guest gave up waiting for are reported (`failed`), not fatal: they are
        // what the phase measures going wrong (a lost interrupt), and the rest still counts.
        let events = matches!(info.id, PHASE_EVENTS_COALESCED | PHASE_EVENTS_UNCOALESCED);
        if sum.failed > 0 && !events {
            return Err(BenchError::Invalid(format!(
                "phase {} round {round}: {} of {} operations failed",
                info.name, sum.failed, sum.ops
            )));
        }
        samples.push(sum);
    }
    let per =
        |f: &dyn Fn(&Sample) -> f64| median(samples.iter().map(|s| f(s) / s.ops as f64).collect());
    let host_ns = |s: &Sample| -> f64 {
        let c = &s.counters;
        match info.id {
            PHASE_RING_DOORBELL | PHASE_RING_POLLED | PHASE_RING_ENTER => c.ring_ns as f64,
            PHASE_EVENTS_COALESCED | PHASE_EVENTS_UNCOALESCED => c.produce_ns as f64,
            // No host work per operation the bench can time.
            PHASE_CPL3_IOEVENTFD | PHASE_TIME_PAGE => f64::NAN,
            _ => c.handler_ns as f64,
        }
    };
    Ok(PhaseResult {
        phase: info,
        ns_per_op: per(&|s| s.elapsed.as_nanos() as f64),
        exits_per_op: per(&|s| s.exits() as f64),
        kvm_exits_per_op: per(&|s| s.kvm_exits().map_or(f64::NAN, |k| k as f64)),
        kvm_vmm_exits_per_op: per(&|s| s.kvm_vmm_exits().map_or(f64::NAN, |k| k as f64)),
        tsc_per_op: per(&|s| s.tsc_ticks as f64),
        host_ns_per_op: per(&host_ns),
        host_ns_per_op_median: {
            let mut all = Histogram::default();
            let (mut ops, mut calls) = (0u64, 0u64);
            for s in &samples {
                all.add(&s.counters.handler_hist);
                ops += s.ops;
                calls += s.counters.handler_hist.count();
            }
            let handler_phase = host_ns(&samples[0]).is_finite()
                && !matches!(
                    info.id,
                    PHASE_RING_DOORBELL
                        | PHASE_RING_POLLED
                        | PHASE_RING_ENTER
                        | PHASE_EVENTS_COALESCED
                        | PHASE_EVENTS_UNCOALESCED
                );
            if handler_phase && ops > 0 {
                all.median() * calls as f64 / ops as f64
            } else {
                f64::NAN
            }
        },
        extra_per_op: per(&|s| s.extra as f64),
        extra_per_count: median(
            samples
                .iter()
                .map(|s| {
                    if s.extra_count == 0 {
                        f64::NAN
                    } else {
                        s.extra as f64 / s.extra_count as f64
                    }
                })
                .collect(),
        ),
        chunk_ns_per_op,
        samples,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters(vmm_exits: u64, port_exits: u64, kvm_exits: u64, io_exits: u64) -> Counters {
        let mut kvm = KvmExitStats::zero();
        kvm.values[0] = Some(kvm_exits);
        kvm.values[1] = Some(io_exits);
        Counters {
            vmm_exits,
            port_exits,
            kvm,
            ..Counters::default()
        }
    }

    /// A start mark at `start_us` and an end mark at `end_us` (µs after `t0`) with `ops`;
    /// the counters at the end are `c` (zero at the start).
    fn pair(
        t0: Instant,
        phase: u32,
        round: u32,
        us: (u64, u64),
        ops: u64,
        c: Counters,
    ) -> [Mark; 2] {
        let mark = |end: bool, at: u64, ops: u64, counters: Counters| Mark {
            phase,
            round,
            end,
            at: t0 + Duration::from_micros(at),
            counters,
            ops,
            tsc: if end { ops * 1000 } else { 0 },
            failed: 0,
            extra: 0,
            extra_count: 0,
        };
        let zero = counters(0, 0, 0, 0);
        [mark(false, us.0, 0, zero), mark(true, us.1, ops, c)]
    }

    #[test]
    fn the_scenarios_are_the_named_list_each_from_a_phase() {
        let names: Vec<&str> = SCENARIOS.iter().map(|s| s.name).collect();
        assert_eq!(
            names,
            [
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
                "smp_2"
            ]
        );
        for s in SCENARIOS {
            let Source::Phase(id) = s.source;
            assert!(PHASES.iter().any(|p| p.id == id), "{s:?}");
        }
        for id in EXTRA_PHASES {
            assert!(PHASES.iter().any(|p| p.id == id));
        }
        // Phase ids and names are unique, and every phase measured at CPL3 but the CPL0 ones.
        for (i, p) in PHASES.iter().enumerate() {
            assert!(PHASES[i + 1..]
                .iter()
                .all(|q| q.id != p.id && q.name != p.name));
            assert_eq!(p.cpl == 0, p.name.ends_with("_cpl0"), "{p:?}");
        }
    }

    #[test]
    fn exits_are_the_vmm_exits_without_the_end_marks_and_kvm_is_cross_checked() {
        let t0 = Instant::now();
        let mut marks = Vec::new();
        // Two chunks of 100 calls: 101 VMM exits each (the end mark's own included); KVM saw
        // 103 exits in all and 101 I/O exits in each.
        marks.extend(pair(
            t0,
            PHASE_CPL3_CALL,
            1,
            (0, 1_000),
            100,
            counters(101, 100, 103, 101),
        ));
        marks.extend(pair(
            t0,
            PHASE_CPL3_CALL,
            1,
            (2_000, 3_000),
            100,
            counters(101, 100, 103, 101),
        ));
        let r = summarise(&marks, phase_by_id(PHASE_CPL3_CALL), 1).unwrap();
        let s = &r.samples[0];
        assert_eq!((s.ops, s.chunks, s.exits()), (200, 2, 200));
        assert_eq!(s.kvm_exits(), Some(204));
        assert_eq!(s.kvm_vmm_exits(), Some(200));
        assert!((r.exits_per_op - 1.0).abs() < 1e-12);
        assert!((r.kvm_exits_per_op - 1.02).abs() < 1e-12);
        assert!((r.ns_per_op - 10_000.0).abs() < 1e-9);
        // A KVM that keeps io_exits at 0 (PVM) while the VMM handles port exits: no derived
        // count.
        let marks = pair(
            t0,
            PHASE_CPL3_CALL,
            1,
            (0, 1_000),
            100,
            counters(101, 100, 130, 0),
        );
        let r = summarise(&marks, phase_by_id(PHASE_CPL3_CALL), 1).unwrap();
        assert_eq!(r.samples[0].kvm_vmm_exits(), None);
        assert!(r.kvm_vmm_exits_per_op.is_nan());
        assert!((r.kvm_exits_per_op - 1.29).abs() < 1e-12);
    }

    #[test]
    fn figures_are_medians_over_rounds_and_failures_are_fatal_but_for_events() {
        let t0 = Instant::now();
        let mut marks = Vec::new();
        for (round, us) in [(1, 1_000), (2, 3_000), (3, 2_000)] {
            let at = 10_000 * u64::from(round);
            marks.extend(pair(
                t0,
                PHASE_SMP_1,
                round,
                (at, at + us),
                100,
                counters(101, 100, 101, 0),
            ));
        }
        let r = summarise(&marks, phase_by_id(PHASE_SMP_1), 3).unwrap();
        assert!((r.ns_per_op - 20_000.0).abs() < 1e-9, "{r:?}");
        assert!((calls_per_s(&r) - 50_000.0).abs() < 1e-6);
        assert!(
            summarise(&marks, phase_by_id(PHASE_SMP_2), 3).is_err(),
            "no smp_2 marks"
        );
        let mut failed = pair(
            t0,
            PHASE_DIRECT,
            1,
            (0, 1_000),
            100,
            counters(101, 100, 101, 0),
        );
        failed[1].failed = 1;
        assert!(summarise(&failed, phase_by_id(PHASE_DIRECT), 1).is_err());
        for m in &mut failed {
            m.phase = PHASE_EVENTS_UNCOALESCED;
        }
        let r = summarise(&failed, phase_by_id(PHASE_EVENTS_UNCOALESCED), 1).unwrap();
        assert_eq!(r.samples[0].failed, 1);
        let mut unpaired = marks.clone();
        unpaired.push(unpaired[0]);
        assert!(summarise(&unpaired, phase_by_id(PHASE_SMP_1), 3).is_err());
    }

    #[test]
    fn the_handler_histogram_finds_the_median() {
        for ns in [0u64, 15, 16, 17, 100, 1_000, 65_535, 1 << 40] {
            let b = bucket(ns);
            assert!(b < BUCKETS);
            if ns < 1 << 31 {
                // The bucket's middle is within a quarter power of two of the value.
                let mid = bucket_mid(b);
                assert!(
                    (mid - ns as f64).abs() <= (ns as f64 / 4.0).max(0.5),
                    "{ns} {mid}"
                );
            }
        }
        let mut h = Histogram::default();
        for ns in [40u64, 41, 42, 43, 1_000_000] {
            h.0[bucket(ns)] += 1;
        }
        assert_eq!(h.count(), 5);
        assert!((h.median() - 42.0).abs() <= 4.0, "{}", h.median());
        assert!(Histogram::default().median().is_nan());
    }

    #[test]
    fn phases_that_take_turns_share_a_progress_group() {
        assert_eq!(group(PHASE_CPL3_IOEVENTFD), group(PHASE_CPL3_BARE));
        assert_eq!(group(PHASE_SMP_1), group(PHASE_SMP_2));
        assert_ne!(group(PHASE_CPL0_BARE), group(PHASE_CPL3_BARE));
        assert_eq!(group(PHASE_RING_POLLED), PHASE_RING_POLLED);
    }
}

/// The engine on a real `/dev/kvm`, with a handful of iterations: every scenario is
/// measured (or says why not), the kernel-side paths are taken (the ioeventfd port and the
/// ring-notify worker), and the host's exit counts agree with KVM's. No timing is asserted.
#[cfg(test)]
mod on_kvm {
    use super::*;
    use pvabi_host::vm::testing::kvm_or_skip;

    #[test]
    fn bench_measures_every_scenario_and_the_kernel_side_paths() {
        if !kvm_or_skip("bench_measures_every_scenario_and_the_kernel_side_paths") {
            return;
        }
        let config = BenchConfig {
            iterations: 64,
            rounds: 2,
        };
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let sink = lines.clone();
        let r = run(&config, move |l| sink.lock().unwrap().push(l.to_string()))
            .unwrap_or_else(|e| panic!("the bench failed: {e}"));
        let names: Vec<&str> = r.scenarios.iter().map(|s| s.def.name).collect();
        let expected: Vec<&str> = SCENARIOS.iter().map(|s| s.name).collect();
        assert_eq!(names, expected);
        assert!(
            r.kernel_ring_notify,
            "the ring-notify port is bound to ioeventfds"
        );
        for sc in &r.scenarios {
            let p = sc
                .result
                .as_ref()
                .unwrap_or_else(|| panic!("no figures: {sc:?}"));
            assert_eq!(p.samples.len(), 2, "{sc:?}");
            assert_eq!(p.phase.cpl, 3, "measured loops run at CPL3: {sc:?}");
            for s in &p.samples {
                assert!(s.ops > 0 && s.elapsed > Duration::ZERO, "{sc:?}");
                // The host's count against KVM's: KVM sees every exit to the VMM and every
                // ioeventfd write, so its `exits` are at least their sum. The VMM may count
                // returns from KVM_RUN that never entered the guest (a kick just before
                // entry), which KVM does not: at most one per interrupt raised.
                if let Some(kvm) = s.kvm_exits() {
                    let kicks = if sc.def.name.starts_with("events_") {
                        s.extra
                    } else {
                        0
                    };
                    assert!(
                        kvm + kicks >= s.exits() + s.counters.kernel_io,
                        "{}: KVM counted {kvm} exits, the host {} to the VMM and {} in the \
                         kernel: {s:?}",
                        sc.def.name,
                        s.exits(),
                        s.counters.kernel_io
                    );
                }
                if let Some(vmm) = s.kvm_vmm_exits() {
                    assert_eq!(vmm, s.exits(), "{}: {s:?}", sc.def.name);
                }
            }
        }
        let sample = |name: &str| r.result(name).unwrap().samples.clone();
        let n = u64::from(config.iterations);
        for s in sample("out_ioeventfd") {
            // Every write went to the eventfd, none to the VMM.
            assert_eq!((s.exits(), s.counters.kernel_io), (0, s.ops), "{s:?}");
        }
        for name in ["ring_doorbell", "ring_polled"] {
            for s in sample(name) {
                // The notifications never exit to the VMM; the host consumed every submission
                // (on the notify worker or the poller), and all completed (failed == 0).
                assert_eq!(s.exits(), 0, "{name}: {s:?}");
                assert_eq!(s.counters.ring_entries, n, "{name}: {s:?}");
                if name == "ring_doorbell" {
                    // One ring-notify write per burst of at most 32, each served by the worker.
                    assert!(s.counters.kernel_io >= n.div_ceil(32), "{s:?}");
                    assert_eq!(s.extra_count, s.counters.kernel_io, "{s:?}");
                }
            }
        }
        for s in sample("sync_nop") {
            assert_eq!(s.exits(), s.ops, "one exit per direct call: {s:?}");
        }
        for s in sample("time_page") {
            assert_eq!(s.exits(), 0, "{s:?}");
        }
        for s in sample("events_coalesced") {
            assert_eq!((s.ops, s.counters.produced), (n, n), "{s:?}");
            assert!(
                s.extra >= 1 && s.extra < s.ops,
                "some interrupts, coalesced: {s:?}"
            );
        }
        for s in sample("events_uncoalesced") {
            assert_eq!(s.counters.produced, s.ops, "{s:?}");
            // One interrupt per event. (How many drains came before their interrupt,
            // `extra_count`, depends on how loaded the host is: not asserted.)
            assert_eq!(s.extra, s.ops, "{s:?}");
        }
        let smp = r.smp_scaling();
        assert!(smp.is_finite() && smp > 0.0, "{smp}");
        let lines = lines.lock().unwrap();
        for name in ["smp_2", "events_uncoalesced", "ioeventfd_out_cpl3"] {
            assert!(
                lines
                    .iter()
                    .any(|l| l.contains("round 2/2") && l.contains(name)),
                "a progress line for {name}: {lines:?}"
            );
        }
    }
}
