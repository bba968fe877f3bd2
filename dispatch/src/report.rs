//! What the host recorded: per-call statuses and the effects end-to-end tests check.

use std::collections::BTreeMap;

use pvabi_abi::calls::Call;
use pvabi_abi::features::Features;
use pvabi_abi::status::Status;
use pvabi_abi::vcpu::VcpuStartState;
use pvabi_abi::version::Version;

use crate::End;

/// Lists in the report keep at most this many entries (their counters keep counting).
pub const MAX_RECORDS: usize = 4096;
/// The report keeps at most this many console bytes (`console_bytes` keeps counting).
pub const MAX_CONSOLE_BYTES: usize = 1 << 20;

/// How often one call code was made, by status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallCount {
    /// Times the code was made (directly, in a batch, deferred or in a ring).
    pub total: u64,
    /// Times per status, indexed by the status value.
    pub by_status: [u64; Status::ALL.len()],
}

impl CallCount {
    /// Times the call returned `status`.
    pub fn status(&self, status: Status) -> u64 {
        self.by_status[status as usize]
    }
}

/// One MEM_UPDATE_PTE that was carried out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PteWrite {
    /// The calling vCPU.
    pub vcpu: u32,
    /// Guest-physical address of the entry.
    pub gpa: u64,
    /// The value written.
    pub value: u64,
    /// The page-table level (1..=4).
    pub level: u8,
}

/// One TLB flush a call asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlbFlush {
    /// MEM_FLUSH_TLB_LOCAL of this vCPU.
    Local(u32),
    /// MEM_FLUSH_TLB_RANGE: `(start, pages)`.
    Range(u64, u64),
    /// MEM_FLUSH_TLB_ALL.
    All,
}

/// Everything the host recorded. Read it with
/// [`Dispatcher::report`](crate::Dispatcher::report), typically after the VM has ended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Per raw call code (`rax` as the guest passed it; unknown codes included).
    pub calls: BTreeMap<u64, CallCount>,
    /// Console output (the first [`MAX_CONSOLE_BYTES`]).
    pub console: Vec<u8>,
    /// Console bytes written in total.
    pub console_bytes: u64,
    /// The version and features NEGOTIATE settled on.
    pub negotiated: Option<(Version, Features)>,
    /// Events appended to event queues.
    pub events_posted: u64,
    /// Events dropped because a queue was full.
    pub events_dropped: u64,
    /// Events latched for a vCPU without a queue.
    pub events_latched: u64,
    /// Interrupts raised for event queues.
    pub interrupts_raised: u64,
    /// One-shot timers that expired.
    pub timers_fired: u64,
    /// Time-page updates written.
    pub time_page_updates: u64,
    /// VCPU_HALT calls, and how they ended.
    pub halts: u64,
    /// VCPU_HALT calls that returned EVENT.
    pub halt_events: u64,
    /// VCPU_HALT calls that returned TIMEOUT.
    pub halt_timeouts: u64,
    /// Successful VCPU_KICKs.
    pub kicks: u64,
    /// Successful VCPU_STARTs: `(vCPU, state)`.
    pub vcpu_starts: Vec<(u32, VcpuStartState)>,
    /// vCPUs that stopped with VCPU_STOP.
    pub vcpu_stops: Vec<u32>,
    /// MEM_UPDATE_PTE writes (the first [`MAX_RECORDS`]).
    pub pte_writes: Vec<PteWrite>,
    /// MEM_UPDATE_PTE writes in total.
    pub pte_write_count: u64,
    /// TLB flushes (the first [`MAX_RECORDS`]).
    pub tlb_flushes: Vec<TlbFlush>,
    /// TLB flushes in total.
    pub tlb_flush_count: u64,
    /// Pages released by MEM_BALLOON_RELEASE in total.
    pub balloon_released: u64,
    /// Pages reclaimed by MEM_BALLOON_RECLAIM in total.
    pub balloon_reclaimed: u64,
    /// Pages released and not reclaimed, at the time of the report.
    pub balloon_outstanding: u64,
    /// Shared ranges `(start gpa, pages)` at the time of the report.
    pub shared_ranges: Vec<(u64, u64)>,
    /// MULTICALL entries run (any status).
    pub multicall_entries: u64,
    /// MULTICALLs preempted with INCOMPLETE.
    pub multicall_preemptions: u64,
    /// Deferred entries run (any status).
    pub deferred_drained: u64,
    /// Deferred entries that failed (plus malformed queue states).
    pub deferred_failed: u64,
    /// Ring submissions consumed.
    pub ring_submissions: u64,
    /// Ring submissions whose status was not SUCCESS.
    pub ring_failed: u64,
    /// Times a submission ring was found malformed (`tail - head > capacity`).
    pub ring_malformed: u64,
    /// Writes to the ring-notify port (and RING_ENTERs are not counted here).
    pub ring_notifies: u64,
    /// How the guest ended the VM, if it did (SHUTDOWN, REBOOT, CRASH).
    pub end: Option<End>,
}

impl Report {
    /// Times `call` returned `status`.
    pub fn count(&self, call: Call, status: Status) -> u64 {
        self.calls
            .get(&u64::from(call.code()))
            .map_or(0, |c| c.status(status))
    }

    /// Times `call` was made, any status.
    pub fn total(&self, call: Call) -> u64 {
        self.calls
            .get(&u64::from(call.code()))
            .map_or(0, |c| c.total)
    }

    /// The console output as (lossy) UTF-8.
    pub fn console_text(&self) -> String {
        String::from_utf8_lossy(&self.console).into_owned()
    }

    pub(crate) fn push_capped<T>(list: &mut Vec<T>, item: T) {
        if list.len() < MAX_RECORDS {
            list.push(item);
        }
    }
}
