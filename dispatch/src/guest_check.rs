//! Guest checking ([`HostConfig::check_guest`](crate::HostConfig::check_guest)): the host
//! watches the guest's use of the interface and records every guest rule it sees broken,
//! for `pvabi conform --guest`.
//!
//! A host sees the guest's calls, their arguments and the answers it gave, so it checks the
//! guest rules that show in them:
//!
//! | rule | what the host sees |
//! |---|---|
//! | [`CONV_012`] | a doorbell call from outside 64-bit mode at CPL 0 |
//! | [`CONV_030`] | a doorbell call the VMM saw as an element of a string output ([`Doorbell::string_element`](crate::Doorbell::string_element): on the reference host, every element of a `rep outs`); an `outs` without `rep` reaches a VMM exactly like `out dx, eax` and is not seen |
//! | [`PLAT_008`] | an exit (any exit the VMM reports with [`Dispatcher::check_exit`](crate::Dispatcher::check_exit)) with RFLAGS.IF set while the IDTR's limit is 0, which is no IDT (the entry state); `sti` and `lidt` themselves cause no exit, so a guest that sets IF and clears it again between two exits is not seen |
//! | [`MEM_006`] | a guest write to a page MEM_BALLOON_RELEASE released, before MEM_BALLOON_RECLAIM took it back ([`Machine::guest_written_pages`](crate::Machine::guest_written_pages): KVM's dirty-page log on the reference host), looked at each release and reclaim and at the end of the run; reads cause no exit and are not seen (except that under shadow paging, as on PVM, a CPL3 read through a guest mapping whose dirty bit is set marks the page too: still an access) |
//! | [`CONV_001`] | a call code with bits 63:32 set |
//! | [`GEN_002`] | a reserved bit set in a register argument (the call table's masks) |
//! | [`DISC_006`] | a feature call before NEGOTIATE (answered NOT_NEGOTIATED) |
//! | [`BASE_016`] | a call of a feature NEGOTIATE did not grant (answered NOT_GRANTED) |
//! | [`BATCH_009`] | after INCOMPLETE, a MULTICALL of the same list that does not resume at `next` with the same `count` and `flags`, or a batch never resumed |
//! | [`BATCH_019`] | the same for MULTICALL_PAGES (the same `list`, `pages`, `count` and `flags`) |
//! | [`TIME_014`] | a time-page value read during an update: in checking mode the host leaves the page mid-update (odd `sequence`, a marked `monotonic_ns`) for a while at every refresh, so a reader that ignores the sequence lock picks up the mark and passes it on, as a TIME_SET_TIMER deadline |
//! | [`CONV_006`] | an argument holding [`POISON`], the value the checking host writes into every result register the guest must not read (all four after a failure, the undefined ones after SUCCESS): the guest passed on a result it must not rely on |
//! | [`TIME_025`] | TIME_SET_STEAL_PAGE answered NOT_SUPPORTED or NOT_GRANTED (NEGOTIATE accepted 1.0, or did not grant STEAL_TIME) |
//! | [`MEM_019`] | a call naming a page MEM_BALLOON_RELEASE released and no MEM_BALLOON_RECLAIM took back: its memory block, the page it registers, the entry of MEM_UPDATE_PTE (in any context), a page of a MEM_SHARE range |
//! | [`MEM_022`] | MEM_UPDATE_PTE of an entry in the PML5 table while the vCPU uses 5-level paging: EFER.LMA and CR4.LA57 set and the entry in the page CR3 names (bits 51:12; the PCID bits 11:0 are no part of it), in the paging state [`Dispatcher::check_exit`](crate::Dispatcher::check_exit) last reported for the vCPU the call runs for. For a direct call, a MULTICALL entry and a deferred entry (drained only at a call of the queue's owner) that is the state at the call's own exit; for a ring submission, the ring owner's state at its last exit, whichever vCPU notified (or the poller) |
//! | [`CONV_025`] | a host-owned field of the time page that differs, at the next refresh, from what the host last wrote there (`sequence`, `flags`, the TSC fields, the reserved words) |
//! | [`EVT_010`] | on the event queue's watched page (below): a store of `head` past an entry that no guest load had touched since the host wrote it, or a load of an entry after a store of `head` past it (before the host writes the slot again) |
//! | [`EVT_025`] | an event-queue `head` past `tail` (`tail - head` beyond the capacity) when the host posts an event |
//! | [`EVT_011`] | VCPU_HALT while `interrupt_pending` is 0 and an entry of an unmasked kind waits in the queue: the guest re-armed the interrupt without looking at `tail` again (read under the vCPU's event lock, so a post in flight is never mistaken for it) |
//! | [`DEFER_013`] | a deferred queue with `tail - head` beyond the capacity at a drain point |
//! | [`DEFER_002`] | a deferred queue whose `head` or error fields differ, at a drain point, from what the host last wrote |
//! | [`DEFER_001`] | in a step window (below), a deferred-queue entry that changed after `tail` had moved past it and before the host ran it |
//! | [`MEM_013`] | in a step window, an instruction that ran while a MEM_UPDATE_PTE waited in the vCPU's deferred queue (published, not yet run: at the looks before and after it) and whose fetch, memory operand, stack slot or string element walks, at any level of the vCPU's page tables, through that call's entry (module `queued_pte`, decoded with [`crate::x86`]: what is decoded, and what is not seen) |
//! | [`DEFER_008`] | the same access, where the entry in memory then differs from the value the queued call writes (the accessed and dirty bits aside): its outcome depended on the queued call's effect (the only dependence on a queued call that is looked for) |
//! | [`RING_028`] | a submission ring with `tail - head` beyond the capacity |
//! | [`RING_001`] | in a step window, a submission-ring entry that changed after `tail` had moved past it and before the host consumed it |
//! | [`RING_006`] | the same as EVT-010 for the completion ring's watched page and its completions |
//! | [`RING_029`] | a completion ring whose `head` is past its `tail` |
//! | [`RING_008`] | at the end of the run, a DOORBELL-mode ring with submissions waiting and completion room, whose submission `tail` or completion `head` moved after the guest's last notify |
//! | [`RING_010`] | the same for a HOST_POLLED ring whose poller sleeps (`SQ_NEED_WAKEUP` set) |
//! | [`VCPU_020`] | VCPU_START whose page tables (`cr3`, or the entry tables for 0) do not map `rip` or the word below `rsp` as present (walked in guest memory at the call, 4-level, with 1 GiB and 2 MiB pages) |
//! | [`VER_014`], [`COMPAT_001`] (SHOULD) | NEGOTIATE asking for a higher minor than the calls the guest made need, or requiring a feature it never used; requiring a feature a later minor than 1.0 introduced |
//! | [`SYS_007`] (SHOULD) | a SYSTEM_CRASH message that is not UTF-8 (which vCPU detected the failure does not show) |
//! | [`BASE_017`] (MAY) | after NEGOTIATE answered LOCKED, GET_SPEC_VERSION or PROBE_FEATURES on that vCPU |
//! | [`identity::BASE_005`] | across two runs (the runner's): a call, or a NEGOTIATE or PROBE_CALL argument tuple, made under one implementation identity and not under another ([`identity`]) |
//!
//! DEFER-001 and RING-001 are about the order of the guest's own stores between two exits,
//! which a host sees only if it looks between them: the VMM single-steps the vCPU in *step
//! windows* ([`Dispatcher::step_window_open`](crate::Dispatcher::step_window_open), one
//! [`Dispatcher::step_window_step`](crate::Dispatcher::step_window_step) per instruction,
//! [`Dispatcher::step_window_close`](crate::Dispatcher::step_window_close) at any other exit),
//! and the checker looks at the queue after each instruction (module `order`: what a look sees
//! and what it cannot). A watch starts when DEFER_SET_QUEUE or RING_SETUP registers a queue, and
//! a window is open from each port write of that vCPU to its next exit while the watch lasts: up
//! to [`WATCH_ENTRIES`] entries compared per registration, and at most [`STEP_BUDGET`] steps
//! or [`STEP_TIME_BUDGET`] of stepping per run. A VMM that cannot single-step leaves both
//! rules "not exercised".
//!
//! EVT-010 and RING-006 are about the order of the guest's own loads and stores, on the
//! pages the host produces into: the host asks the machine to *watch* the page of each event
//! queue (from EVENTS_SET_QUEUE) and completion ring (from RING_SETUP)
//! ([`Machine::watch_pages`](crate::Machine::watch_pages): the reference host takes it out
//! of the guest's memory map, so that every guest access to it exits), and the VMM reports
//! each access, in order ([`Dispatcher::watched_access`](crate::Dispatcher::watched_access));
//! the host itself marks each entry it writes before the `tail` store that publishes it
//! (module `consume`: what counts as reading an entry, and what cannot be seen). A watch
//! ends when the queue is unregistered or replaced, once it has checked
//! [`CONSUME_WATCH_ENTRIES`] entries, and for every queue once the run has had
//! [`ACCESS_BUDGET`] watched accesses (no new one starts then); a machine that cannot watch
//! pages leaves both rules "not exercised". An access to a watched page does not end a step
//! window.
//!
//! MEM-013 and DEFER-008 use the same windows (module `queued_pte`): the DEFER_SET_QUEUE that
//! starts the DEFER-001 watch also starts a watch of the queue's MEM_UPDATE_PTEs, which keeps
//! the vCPU's windows opening until it has seen [`WATCH_ENTRIES`] of them waiting across an
//! instruction. At each stop where one waits
//! ([`Dispatcher::step_window_wants_state`](crate::Dispatcher::step_window_wants_state)), the
//! VMM hands in the vCPU's registers
//! ([`Dispatcher::step_window_state`](crate::Dispatcher::step_window_state)); the checker
//! reads the instruction at RIP through the page tables, decodes it ([`crate::x86`]), takes it
//! as executed if the next stop's RIP and RSP fit it, and walks the page tables for each
//! access it made. A VMM that gives no state leaves both rules "not
//! exercised".
//!
//! The checking host is demanding but legal. Besides preempting every batch and leaving the
//! time page torn, it raises each registered event queue's interrupt spuriously (with no new
//! entry, following the `interrupt_pending` protocol, while no kind is masked and never at
//! EVENTS_SET_MASK), in bursts: every
//! [`SPURIOUS_PERIOD`] calls of a vCPU, at each of its next [`SPURIOUS_BURST`] calls. A guest
//! that counts interrupts instead of reading `tail` then shows as [`EVT_025`] (its `head` runs
//! past `tail`).
//!
//! Each rule also counts how often the guest exercised it, so that a report can say "not
//! exercised" rather than claim a pass for a rule the guest never came near.

use std::collections::BTreeMap;

mod consume;
pub mod identity;
mod order;
mod queued_pte;

pub use queued_pte::{PteSteps, StepState};

use pvabi_abi::batch::MULTICALL_FLAGS_VALID;
use pvabi_abi::calls::{ArgCheck, Call};
use pvabi_abi::status::Status;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use pvabi_abi::convention::PAGE_SIZE;
use pvabi_abi::discovery::CPUID_FIRST_BASE;
use pvabi_abi::features::Features;
use pvabi_abi::version::{Version, V1_0};

use crate::config::{FeatureOffer, HostConfig, POISON};
use crate::sync::lock;

/// CONV-012: calls in 64-bit mode at privilege level 0.
pub const CONV_012: &str = "PVABI-CONV-012";
/// CONV-030: doorbell calls with `out dx, eax`, not a string instruction.
pub const CONV_030: &str = "PVABI-CONV-030";
/// PLAT-008: an IDT loaded before the interrupt flag is set.
pub const PLAT_008: &str = "PVABI-PLAT-008";
/// MEM-006: no access to a released page until it is reclaimed.
pub const MEM_006: &str = "PVABI-MEM-006";
/// CONV-001: the call code in `rax` with bits 63:32 clear.
pub const CONV_001: &str = "PVABI-CONV-001";
/// GEN-002: 0 in every reserved bit.
pub const GEN_002: &str = "PVABI-GEN-002";
/// DISC-006: offered is not granted.
pub const DISC_006: &str = "PVABI-DISC-006";
/// BASE-016: only the granted features.
pub const BASE_016: &str = "PVABI-BASE-016";
/// BATCH-009: resuming after INCOMPLETE.
pub const BATCH_009: &str = "PVABI-BATCH-009";
/// BATCH-019: resuming MULTICALL_PAGES after INCOMPLETE.
pub const BATCH_019: &str = "PVABI-BATCH-019";
/// TIME-014: the time page's sequence lock.
pub const TIME_014: &str = "PVABI-TIME-014";

/// CONV-006: no reliance on undefined results.
pub const CONV_006: &str = "PVABI-CONV-006";
/// TIME-025: TIME_SET_STEAL_PAGE only at 1.1 or later with STEAL_TIME granted.
pub const TIME_025: &str = "PVABI-TIME-025";
/// MEM-019: no released page named in a call.
pub const MEM_019: &str = "PVABI-MEM-019";
/// MEM-022: no MEM_UPDATE_PTE of a PML5 entry.
pub const MEM_022: &str = "PVABI-MEM-022";
/// CONV-025: no guest write to the host's fields of a host-owned page.
pub const CONV_025: &str = "PVABI-CONV-025";
/// EVT-010: an event-queue entry read before `head` moves past it.
pub const EVT_010: &str = "PVABI-EVT-010";
/// EVT-025: the event queue's `head` never past `tail`.
pub const EVT_025: &str = "PVABI-EVT-025";
/// EVT-011: clear `interrupt_pending`, barrier, look at `tail` again.
pub const EVT_011: &str = "PVABI-EVT-011";
/// DEFER-013: no queuing into a full deferred queue.
pub const DEFER_013: &str = "PVABI-DEFER-013";
/// DEFER-002: the deferred queue's `head` and error fields are the host's.
pub const DEFER_002: &str = "PVABI-DEFER-002";
/// DEFER-001: the entry, then `tail` + 1 with release ordering.
pub const DEFER_001: &str = "PVABI-DEFER-001";
/// MEM-013: no access through a queued MEM_UPDATE_PTE's entry before a drain point.
pub const MEM_013: &str = "PVABI-MEM-013";
/// DEFER-008: nothing that depends on a queued call's effect before a drain point.
pub const DEFER_008: &str = "PVABI-DEFER-008";
/// RING-001: the submission, then `tail` + 1 with release ordering.
pub const RING_001: &str = "PVABI-RING-001";
/// RING-028: no submission into a full ring.
pub const RING_028: &str = "PVABI-RING-028";
/// RING-006: a completion read before the completion ring's `head` moves past it.
pub const RING_006: &str = "PVABI-RING-006";
/// RING-029: the completion ring's `head` never past its `tail`.
pub const RING_029: &str = "PVABI-RING-029";
/// RING-008: notify in DOORBELL mode.
pub const RING_008: &str = "PVABI-RING-008";
/// RING-010: notify a sleeping HOST_POLLED poller.
pub const RING_010: &str = "PVABI-RING-010";
/// VCPU-020: VCPU_START's `cr3` maps the started vCPU's first instructions and stack.
pub const VCPU_020: &str = "PVABI-VCPU-020";
/// VER-014 (SHOULD): the lowest minor needed, only the features needed as required.
pub const VER_014: &str = "PVABI-VER-014";
/// COMPAT-001 (SHOULD): later-minor features as optional.
pub const COMPAT_001: &str = "PVABI-COMPAT-001";
/// SYS-007 (SHOULD): a SYSTEM_CRASH message in UTF-8.
pub const SYS_007: &str = "PVABI-SYS-007";
/// BASE-017 (MAY): reading the locked result after LOCKED.
pub const BASE_017: &str = "PVABI-BASE-017";

/// Every rule the checker checks, in report order.
pub const RULES: [&str; 35] = [
    CONV_012, CONV_030, PLAT_008, MEM_006, CONV_001, GEN_002, DISC_006, BASE_016, BATCH_009,
    BATCH_019, TIME_014, CONV_006, TIME_025, MEM_019, MEM_022, CONV_025, EVT_010, EVT_025, EVT_011,
    DEFER_013, DEFER_002, DEFER_001, MEM_013, DEFER_008, RING_028, RING_006, RING_029, RING_001,
    RING_008, RING_010, VCPU_020, VER_014, COMPAT_001, SYS_007, BASE_017,
];

/// How many entries of one registered queue a watch compares between two looks before it
/// ends (each entry counted once): enough to see a guest's first batches, few enough that a
/// guest that keeps its queues for the whole run is not stepped for long.
pub const WATCH_ENTRIES: u32 = 4;
/// The most instructions the step windows of one run single-step, all vCPUs together (at
/// ~40-50 us a step on PVM, about a second).
pub const STEP_BUDGET: u64 = 20_000;
/// The most wall-clock time the step windows of one run stay open, all vCPUs together.
pub const STEP_TIME_BUDGET: Duration = Duration::from_secs(1);

/// How many entries of one registered event queue or completion ring a watch of its page
/// checks (a store of `head` moved past them) before it ends: enough for a guest's first
/// drains, few enough that a guest that keeps its queue for the whole run is not slowed for
/// long.
pub const CONSUME_WATCH_ENTRIES: u32 = 16;
/// The most guest accesses to watched pages one run reports, all pages together: then every
/// watch ends (at ~10 us an access from CPL0 and ~60 us from CPL3 on PVM, 0.2 to 1.2 s), so
/// that a guest that polls a ring at CPL3 is not slowed for the whole run.
pub const ACCESS_BUDGET: u64 = 20_000;

/// The rules of [`RULES`] whose level is SHOULD or MAY: a violation of one is a warning.
pub const ADVISORY: [&str; 4] = [VER_014, COMPAT_001, SYS_007, BASE_017];

/// How many calls of a vCPU apart the checking host's bursts of spurious event interrupts
/// start.
pub const SPURIOUS_PERIOD: u64 = 16;
/// How many calls in a row each burst of spurious event interrupts lasts.
pub const SPURIOUS_BURST: u64 = 3;

/// The mark of a time-page value written mid-update (in `monotonic_ns`'s top 16 bits, with
/// the low bits the true time): no real monotonic time comes near it (2^62 ns is 146 years).
pub const TORN_MARK: u64 = 0x7ead_0000_0000_0000;
/// The bits [`TORN_MARK`] occupies.
pub const TORN_MASK: u64 = 0xffff_0000_0000_0000;

/// A feature bit no version defines, which the checking host ([`HostConfig::checking`])
/// offers: a guest must not fail because of it (PVABI-VER-009).
pub const UNKNOWN_FEATURE: u64 = 1 << 47;

/// Where the checking host puts the pvabi CPUID leaves: one base up, behind
/// [`DECOY_SIGNATURE`] at the first base, so that a guest that does not scan the bases
/// (PVABI-DISC-002) does not find it.
pub const CHECKING_CPUID_BASE: u32 = 0x4000_0100;
/// The checking host's doorbell port: not the default, so that a guest that uses the default
/// ports instead of the transport leaf's (PVABI-DISC-008) shows it.
pub const CHECKING_DOORBELL_PORT: u16 = 0x5670;
/// The checking host's ring-notify port (see [`CHECKING_DOORBELL_PORT`]).
pub const CHECKING_RING_NOTIFY_PORT: u16 = 0x5674;
/// The leaf the checking host puts at the first base: `eax` = the leaf itself, and a
/// signature ("NotPvabiHost") that is not pvabi's.
pub const DECOY_SIGNATURE: [u32; 4] = [
    CPUID_FIRST_BASE,
    u32::from_le_bytes(*b"NotP"),
    u32::from_le_bytes(*b"vabi"),
    u32::from_le_bytes(*b"Host"),
];

impl HostConfig {
    /// A host that checks its guest ([`HostConfig::check_guest`]) and is demanding but legal,
    /// for `pvabi conform --guest`: it preempts every MULTICALL and MULTICALL_PAGES after each
    /// entry (INCOMPLETE at every index), poisons the result registers a call does not define, leaves the time
    /// page mid-update for a while at every refresh (every millisecond), lets host-polled
    /// rings sleep as soon as they are idle, serves the newest minor, offers a feature bit
    /// no version defines ([`UNKNOWN_FEATURE`]), raises spurious event interrupts in bursts
    /// ([`SPURIOUS_PERIOD`]), and puts its CPUID leaves one base up behind another signature
    /// and its ports off the defaults ([`CHECKING_CPUID_BASE`], [`CHECKING_DOORBELL_PORT`]).
    ///
    /// Eight guest rules need the VMM's help, which the reference host's runner gives a
    /// checking dispatcher (and no other): [`Doorbell::string_element`](crate::Doorbell) with
    /// [`HostConfig::vmm_marks_string_outputs`] for
    /// CONV-030, [`Dispatcher::check_exit`](crate::Dispatcher::check_exit) at every exit for
    /// PLAT-008 and MEM-022, [`Machine::guest_written_pages`](crate::Machine::guest_written_pages)
    /// (KVM's dirty-page log) for MEM-006, the step windows for DEFER-001 and RING-001, and
    /// [`Machine::watch_pages`](crate::Machine::watch_pages) with
    /// [`Dispatcher::watched_access`](crate::Dispatcher::watched_access) for EVT-010 and
    /// RING-006. A VMM that gives none of them leaves those rules "not exercised".
    pub fn checking() -> HostConfig {
        let base = HostConfig::default();
        let mut features = base.features.clone();
        features.push(FeatureOffer {
            flag: Features::from_bits_retain(UNKNOWN_FEATURE),
            since: V1_0,
        });
        HostConfig {
            check_guest: true,
            strict: true,
            cpuid_base: CHECKING_CPUID_BASE,
            doorbell_port: CHECKING_DOORBELL_PORT,
            ring_notify_port: CHECKING_RING_NOTIFY_PORT,
            extra_cpuid_leaves: vec![(CPUID_FIRST_BASE, 0, DECOY_SIGNATURE)],
            max_multicall: 1,
            max_multicall_pages: 1,
            time_refresh: Duration::from_millis(1),
            poll_idle: Duration::ZERO,
            features,
            ..base
        }
    }
}

/// One broken guest rule, as the host saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestViolation {
    /// The requirement ID.
    pub rule: &'static str,
    /// The vCPU that broke it.
    pub vcpu: u32,
    /// The call that showed it, if one did.
    pub call: Option<&'static str>,
    /// What happened, for the report.
    pub what: String,
}

/// What the checker saw in a run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GuestCheckReport {
    /// Every violation, in order (the first 64 of each rule; [`Self::counts`] has them all).
    pub violations: Vec<GuestViolation>,
    /// How many violations of each rule.
    pub counts: BTreeMap<&'static str, u64>,
    /// How often each rule was exercised (the guest did what the rule is about).
    pub exercised: BTreeMap<&'static str, u64>,
    /// Spurious event interrupts the checking host raised.
    pub spurious_interrupts: u64,
    /// What the guest's calls were, for comparing two runs ([`identity`], PVABI-BASE-005).
    pub calls: identity::CallsMade,
    /// The step windows (DEFER-001, RING-001): how many were opened, and the instructions
    /// they single-stepped.
    pub step_windows: (u64, u64),
    /// Guest accesses to watched pages reported (EVT-010, RING-006).
    pub watched_accesses: u64,
    /// The instructions of the step windows looked at for accesses through a queued
    /// MEM_UPDATE_PTE's entry (MEM-013, DEFER-008).
    pub pte_steps: PteSteps,
}

/// A batch (MULTICALL or MULTICALL_PAGES) the host preempted, waiting for the guest to
/// resume it.
#[derive(Clone, Copy, Debug)]
struct Preempted {
    call: Call,
    /// The arguments that name the batch and must stay the same (`start` left out).
    key: [u64; 4],
    next: u64,
}

impl Preempted {
    /// The batch arguments of a MULTICALL or MULTICALL_PAGES call: its key and `start`.
    fn of(call: Call, args: &[u64; 6]) -> Option<([u64; 4], u64)> {
        match call {
            // entries, count, start, flags
            Call::Multicall => Some((
                [args[0], args[1], args[3] & MULTICALL_FLAGS_VALID, 0],
                args[2],
            )),
            // list, pages, count, start, flags
            Call::MulticallPages => Some((
                [args[0], args[1], args[2], args[4] & MULTICALL_FLAGS_VALID],
                args[3],
            )),
            _ => None,
        }
    }

    fn rule(self) -> &'static str {
        if self.call == Call::Multicall {
            BATCH_009
        } else {
            BATCH_019
        }
    }

    fn describe(&self) -> String {
        let d = self.call.descriptor();
        let names: Vec<&str> = d
            .args
            .iter()
            .map(|a| a.name)
            .filter(|n| *n != "start")
            .collect();
        names
            .iter()
            .zip(self.key)
            .map(|(n, v)| format!("{n} {v:#x}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[derive(Debug, Default)]
struct State {
    report: GuestCheckReport,
    preempted: Vec<Option<Preempted>>,
    /// Per vCPU: calls made (for the spurious-interrupt bursts).
    calls: Vec<u64>,
    /// Per vCPU: NEGOTIATE answered LOCKED and the guest has not read the locked result yet.
    locked: Vec<bool>,
    /// Per vCPU: the ring's (submission `tail`, completion `head`) at the last notify.
    notified: Vec<Option<(u32, u32)>>,
    /// The successful NEGOTIATE: `(requested, required)`.
    negotiate: Option<(u64, u64)>,
    /// Features of the calls that succeeded, and the highest version that introduced one.
    used: (u64, Version),
}

/// One vCPU's watch of the queues it produces (DEFER-001, RING-001).
#[derive(Debug, Default)]
struct StepWatch {
    /// The deferred queue, keyed by its page.
    deferred: Option<order::QueueWatch>,
    /// The submission ring, keyed by its generation.
    ring: Option<order::QueueWatch>,
    /// The deferred queue's MEM_UPDATE_PTEs, keyed by its page (MEM-013, DEFER-008).
    pte: Option<queued_pte::PteWatch>,
    /// Since when a window is open.
    open: Option<std::time::Instant>,
    /// Instructions stepped in this vCPU's windows.
    steps: u64,
}

impl StepWatch {
    /// Whether a watch is armed: the vCPU's windows open.
    fn armed(&self) -> bool {
        self.deferred.is_some() || self.ring.is_some() || self.pte.is_some()
    }
}

/// The checker, one per dispatcher in checking mode.
#[derive(Debug)]
pub(crate) struct GuestChecker {
    state: std::sync::Mutex<State>,
    /// The calls made ([`identity`]).
    made: std::sync::Mutex<identity::CallsMade>,
    /// Per vCPU: the step watch (taken before a queue's lock, never while holding one).
    watches: Vec<std::sync::Mutex<StepWatch>>,
    /// Per vCPU: a watch is armed (a cheap test after every port write).
    watching: Vec<AtomicBool>,
    /// Step windows opened, instructions stepped and nanoseconds open, all vCPUs.
    windows: [AtomicU64; 3],
    /// Per vCPU: its CR3 and PML5 table at its last exit if it then used 5-level paging,
    /// `None` if it used 4-level paging (or was not in long mode, or has not exited yet)
    /// (MEM-022).
    pml5_tables: Vec<std::sync::Mutex<Option<(u64, u64)>>>,
    /// The watched pages of the queues the guest consumes (EVT-010, RING-006); taken before
    /// `state`, never while holding it.
    consumed: std::sync::Mutex<PageWatches>,
}

/// A queue the guest consumes and the host produces, watched page by page (EVT-010, RING-006).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Consumed {
    /// A vCPU's event queue.
    Events,
    /// A vCPU's completion ring.
    Completions,
}

impl Consumed {
    fn layout(self) -> consume::Layout {
        match self {
            Consumed::Events => consume::Layout {
                capacity: EVENT_QUEUE_CAPACITY,
                entry_size: EQ_EVENT_SIZE,
                entries_at: EVENT_QUEUE_ENTRIES_OFFSET,
                head_at: EQ_HEAD,
            },
            Consumed::Completions => consume::Layout {
                capacity: RING_CQ_CAPACITY,
                entry_size: std::mem::size_of::<pvabi_abi::batch::CompletionEntry>() as u64,
                entries_at: RING_ENTRIES_OFFSET,
                head_at: RING_HEAD,
            },
        }
    }

    /// The offset of `head` in the page.
    pub(crate) fn head_at(self) -> u64 {
        self.layout().head_at
    }

    fn rule(self) -> &'static str {
        match self {
            Consumed::Events => EVT_010,
            Consumed::Completions => RING_006,
        }
    }

    fn what(self) -> (&'static str, &'static str) {
        match self {
            Consumed::Events => ("event-queue entry", "the event queue's"),
            Consumed::Completions => ("completion", "the completion ring's"),
        }
    }
}

/// One watched page.
#[derive(Debug)]
struct PageWatch {
    vcpu: u32,
    queue: Consumed,
    watch: consume::ConsumeWatch,
}

/// Every watched page of the run.
#[derive(Debug, Default)]
struct PageWatches {
    pages: BTreeMap<u64, PageWatch>,
    /// Accesses reported, all pages together ([`ACCESS_BUDGET`]).
    accesses: u64,
}

const MAX_KEPT: u64 = 64;

/// The IDTR limit of "no IDT": what every vCPU of the reference platform starts with ("There
/// is no IDT at entry (its limit is 0)", the platform appendix). An IDTR with this limit
/// holds no gate, whatever its base, so a guest that loads one has loaded no IDT.
const NO_IDT_LIMIT: u16 = 0;

impl State {
    fn exercised(&mut self, rule: &'static str) {
        *self.report.exercised.entry(rule).or_default() += 1;
    }

    fn violated(&mut self, rule: &'static str, vcpu: u32, call: Option<Call>, what: String) {
        let n = self.report.counts.entry(rule).or_default();
        *n += 1;
        if *n <= MAX_KEPT {
            self.report.violations.push(GuestViolation {
                rule,
                vcpu,
                call: call.map(|c| c.descriptor().name),
                what,
            });
        }
    }
}

impl GuestChecker {
    pub(crate) fn new(vcpus: u32) -> GuestChecker {
        GuestChecker {
            state: std::sync::Mutex::new(State {
                report: GuestCheckReport::default(),
                preempted: vec![None; vcpus as usize],
                calls: vec![0; vcpus as usize],
                locked: vec![false; vcpus as usize],
                notified: vec![None; vcpus as usize],
                negotiate: None,
                used: (0, V1_0),
            }),
            made: Default::default(),
            watches: (0..vcpus).map(|_| Default::default()).collect(),
            watching: (0..vcpus).map(|_| AtomicBool::new(false)).collect(),
            windows: Default::default(),
            pml5_tables: (0..vcpus).map(|_| Default::default()).collect(),
            consumed: Default::default(),
        }
    }

    /// A doorbell access from `cpl`, in long mode or not (CONV-012), seen as an element of a
    /// string output or not (CONV-030).
    pub(crate) fn doorbell(
        &self,
        vcpu: u32,
        cpl: u8,
        long_mode: bool,
        string_element: Option<bool>,
    ) {
        let mut s = lock(&self.state);
        // Exercised only where the VMM tells string outputs apart (None: it cannot).
        if string_element.is_some() {
            s.exercised(CONV_030);
        }
        if string_element == Some(true) {
            s.violated(
                CONV_030,
                vcpu,
                None,
                "a doorbell call made by an element of a string output (`rep outs`): make each \
                 call with `out dx, eax`"
                    .to_owned(),
            );
        }
        s.exercised(CONV_012);
        if cpl != 0 || !long_mode {
            let mode = if long_mode {
                "64-bit mode"
            } else {
                "not in 64-bit mode"
            };
            s.violated(
                CONV_012,
                vcpu,
                None,
                format!(
                    "a doorbell call at CPL {cpl}, {mode}: calls are made in 64-bit mode at CPL 0"
                ),
            );
        }
    }

    /// A call `code` with `args`, answered `status` with `results`.
    pub(crate) fn call(
        &self,
        vcpu: u32,
        code: u64,
        args: &[u64; 6],
        status: Status,
        results: &[u64; 4],
    ) {
        let mut s = lock(&self.state);
        s.exercised(CONV_001);
        if code >> 32 != 0 {
            s.violated(
                CONV_001,
                vcpu,
                None,
                format!("call code {code:#x} has bits 63:32 set"),
            );
        }
        s.exercised(CONV_006);
        if let Some(i) = args.iter().position(|&a| a == POISON) {
            s.violated(
                CONV_006,
                vcpu,
                Call::from_code(code & 0xffff_ffff),
                format!(
                    "argument register {i} holds {POISON:#x}, the value the host wrote into a \
                     result register the guest must not read (one the call does not define, or \
                     any after a status other than SUCCESS): read only the status after a \
                     failure and only the defined results after SUCCESS"
                ),
            );
        }
        let Some(call) = Call::from_code(code & 0xffff_ffff) else {
            return;
        };
        let d = call.descriptor();
        let v = vcpu as usize;
        match call {
            Call::Negotiate if status == Status::Locked => {
                if let Some(l) = s.locked.get_mut(v) {
                    *l = true;
                }
            }
            Call::Negotiate if status == Status::Success => {
                s.negotiate = Some((args[0], args[1]));
            }
            Call::GetSpecVersion | Call::ProbeFeatures
                if s.locked.get(v).copied().unwrap_or(false) =>
            {
                s.exercised(BASE_017);
                s.locked[v] = false;
            }
            _ => {}
        }
        // Any attempt of a feature's call counts as a use of the feature (batched, queued and
        // ring entries are not seen here, only the calls that set them up or run them); a call
        // that succeeded shows which minor the guest needs.
        if let Some(f) = d.feature {
            s.used.0 |= f.bits();
        }
        if status == Status::Success && d.since > s.used.1 {
            s.used.1 = d.since;
        }
        if call == Call::TimeSetStealPage {
            s.exercised(TIME_025);
            if matches!(status, Status::NotSupported | Status::NotGranted) {
                s.violated(
                    TIME_025,
                    vcpu,
                    Some(call),
                    format!(
                        "TIME_SET_STEAL_PAGE answered {}: call it only after NEGOTIATE accepted \
                         1.1 or later and granted STEAL_TIME",
                        status.name()
                    ),
                );
            }
        }
        s.exercised(GEN_002);
        for (a, value) in d.args.iter().zip(args) {
            if let ArgCheck::Mask(valid) = a.check {
                if value & !valid != 0 {
                    s.violated(
                        GEN_002,
                        vcpu,
                        Some(call),
                        format!(
                            "argument `{}` is {value:#x}: reserved bits {:#x} are set",
                            a.name,
                            value & !valid
                        ),
                    );
                }
            }
        }
        if d.feature.is_some() {
            s.exercised(DISC_006);
            s.exercised(BASE_016);
        }
        match status {
            Status::NotNegotiated => s.violated(
                DISC_006,
                vcpu,
                Some(call),
                format!("{} before NEGOTIATE succeeded: an offered feature is not granted", d.name),
            ),
            Status::NotGranted => s.violated(
                BASE_016,
                vcpu,
                Some(call),
                format!(
                    "{} needs a feature NEGOTIATE did not grant: a guest uses only the granted features",
                    d.name
                ),
            ),
            _ => {}
        }
        if call == Call::TimeSetTimer {
            s.exercised(TIME_014);
            if args[0] & TORN_MASK == TORN_MARK {
                s.violated(
                    TIME_014,
                    vcpu,
                    Some(call),
                    format!(
                        "deadline {:#x} carries the mark the host writes into the time page while \
                         it updates it: the guest read the page without honouring its sequence \
                         lock (odd or changed `sequence`)",
                        args[0]
                    ),
                );
            }
        }
        if let Some((key, start)) = Preempted::of(call, args) {
            Self::batch(&mut s, vcpu, call, key, start, status, results);
        }
    }

    fn batch(
        s: &mut State,
        vcpu: u32,
        call: Call,
        key: [u64; 4],
        start: u64,
        status: Status,
        results: &[u64; 4],
    ) {
        let Some(slot) = s.preempted.get(vcpu as usize).copied() else {
            return;
        };
        if let Some(p) = slot {
            s.exercised(p.rule());
            if p.call == call && p.key[0] == key[0] {
                if start != p.next || key != p.key {
                    let now = Preempted {
                        call,
                        key,
                        next: start,
                    };
                    s.violated(
                        p.rule(),
                        vcpu,
                        Some(call),
                        format!(
                            "after INCOMPLETE (next {}), {} of the same batch with start {start} \
                             and {}: resume with start {} and {}",
                            p.next,
                            call.descriptor().name,
                            now.describe(),
                            p.next,
                            p.describe()
                        ),
                    );
                }
            } else {
                s.violated(
                    p.rule(),
                    vcpu,
                    Some(call),
                    format!(
                        "a new batch while the {} batch ({}) waits to be resumed at entry {}: its \
                         remaining entries never ran",
                        p.call.descriptor().name,
                        p.describe(),
                        p.next
                    ),
                );
            }
        }
        s.preempted[vcpu as usize] = (status == Status::Incomplete).then_some(Preempted {
            call,
            key,
            next: results[0],
        });
    }

    /// `vcpu`'s state at an exit: PLAT-008 (exercised where the guest had set its interrupt
    /// flag, broken if its IDTR was then still the entry state), and its paging state, which
    /// MEM-022 checks the MEM_UPDATE_PTE calls made for it against until its next exit.
    pub(crate) fn exit_state(&self, vcpu: u32, state: crate::ExitState) {
        if let Some(paging) = self.pml5_tables.get(vcpu as usize) {
            *lock(paging) = state.pml5_table().map(|table| (state.cr3, table));
        }
        if !state.interrupt_flag {
            return;
        }
        let no_idt = state.idt_limit == NO_IDT_LIMIT;
        self.saw(PLAT_008, vcpu, None, no_idt, || {
            format!(
                "an exit with RFLAGS.IF 1 while the IDTR's limit is 0 (base {:#x}): no IDT, as \
                 at entry; load an IDT (`lidt`) on a vCPU before setting its interrupt flag (an \
                 interrupt delivered now would be a triple fault)",
                state.idt_base
            )
        });
    }

    /// MEM_UPDATE_PTE of the entry at `gpa`, made for `vcpu` (MEM-022): exercised if `vcpu`
    /// used 5-level paging at its last exit, broken if the entry is then in its PML5 table.
    pub(crate) fn pte_update(&self, vcpu: u32, gpa: u64) {
        let Some((cr3, table)) = self
            .pml5_tables
            .get(vcpu as usize)
            .and_then(|paging| *lock(paging))
        else {
            return;
        };
        let in_pml5 = gpa & !(PAGE_SIZE - 1) == table;
        self.saw(MEM_022, vcpu, Some(Call::MemUpdatePte), in_pml5, || {
            format!(
                "MEM_UPDATE_PTE of the entry at {gpa:#x}, in the PML5 table at {table:#x} (CR3 \
                 {cr3:#x} with CR4.LA57 set at the vCPU's last exit): a guest that uses 5-level \
                 paging writes its PML5 entries itself (version 1.x has no `level` for them)"
            )
        });
    }

    /// Counts a call of `vcpu` and says whether the checking host raises a spurious event
    /// interrupt at it (a burst of [`SPURIOUS_BURST`] every [`SPURIOUS_PERIOD`] calls).
    pub(crate) fn spurious_due(&self, vcpu: u32) -> bool {
        let mut s = lock(&self.state);
        let Some(n) = s.calls.get_mut(vcpu as usize) else {
            return false;
        };
        *n += 1;
        *n % SPURIOUS_PERIOD < SPURIOUS_BURST
    }

    /// The checking host raised a spurious event interrupt.
    pub(crate) fn spurious_raised(&self) {
        lock(&self.state).report.spurious_interrupts += 1;
    }

    /// Records a violation of `rule` (or, with `broken` false, one clean exercise of it).
    pub(crate) fn saw(
        &self,
        rule: &'static str,
        vcpu: u32,
        call: Option<Call>,
        broken: bool,
        what: impl FnOnce() -> String,
    ) {
        let mut s = lock(&self.state);
        s.exercised(rule);
        if broken {
            s.violated(rule, vcpu, call, what());
        }
    }

    /// A notify of `vcpu`'s ring, which then held `indices` (submission `tail`, completion
    /// `head`).
    pub(crate) fn ring_notified(&self, vcpu: u32, indices: (u32, u32)) {
        if let Some(n) = lock(&self.state).notified.get_mut(vcpu as usize) {
            *n = Some(indices);
        }
    }

    /// A ring pass read the completion ring's `head` `head`; the host's `tail` is `tail`
    /// (RING-029).
    pub(crate) fn cq_head(&self, vcpu: u32, head: u32, tail: u32) {
        let behind = tail.wrapping_sub(head);
        self.saw(RING_029, vcpu, None, behind > RING_CQ_CAPACITY, || {
            format!(
                "the completion ring's `head` is {head} while its `tail` is {tail}: the guest \
                 moved `head` past `tail`; consume only up to `tail`"
            )
        });
    }

    /// A post to `vcpu`'s event queue read `head` `head`; the host's `tail` is `tail`
    /// (EVT-025).
    pub(crate) fn event_head(&self, vcpu: u32, head: u32, tail: u32) {
        let behind = tail.wrapping_sub(head);
        self.saw(EVT_025, vcpu, None, behind > EVENT_QUEUE_CAPACITY, || {
            format!(
                "the event queue's `head` is {head} while its `tail` is {tail}: the guest stored \
                 a `head` past `tail`; consume only the entries up to `tail` (an interrupt may \
                 announce none: the checking host raises spurious ones)"
            )
        });
    }

    /// SYSTEM_CRASH by `vcpu` with `message` (SYS-007).
    pub(crate) fn crash_message(&self, vcpu: u32, message: &[u8]) {
        let bad = std::str::from_utf8(message).err();
        self.saw(
            SYS_007,
            vcpu,
            Some(Call::SystemCrash),
            bad.is_some(),
            || {
                format!(
                    "the SYSTEM_CRASH message ({} bytes) is not UTF-8 (byte {} starts an invalid \
                 sequence): send UTF-8 text that identifies the failure",
                    message.len(),
                    bad.map_or(0, |e| e.valid_up_to())
                )
            },
        );
    }

    /// The indices of `vcpu`'s ring at its last notify.
    pub(crate) fn last_notify(&self, vcpu: u32) -> Option<(u32, u32)> {
        lock(&self.state)
            .notified
            .get(vcpu as usize)
            .copied()
            .flatten()
    }

    /// `vcpu` registered a deferred queue at `page` (`None`: unregistered it): its watches
    /// start anew (DEFER-001; MEM-013 and DEFER-008).
    pub(crate) fn watch_deferred(&self, vcpu: u32, page: Option<u64>) {
        self.watch(vcpu, |w| {
            w.deferred = page.map(|gpa| order::QueueWatch::new(gpa, DEFERRED_LAYOUT));
            w.pte = page.map(queued_pte::PteWatch::new);
        });
    }

    /// `vcpu` registered a ring pair of generation `generation` (`None`: unregistered it): the
    /// submission ring's watch starts anew (RING-001).
    pub(crate) fn watch_ring(&self, vcpu: u32, generation: Option<u64>) {
        self.watch(vcpu, |w| {
            w.ring = generation.map(|g| order::QueueWatch::new(g, SQ_LAYOUT));
        });
    }

    fn watch(&self, vcpu: u32, f: impl FnOnce(&mut StepWatch)) {
        let (Some(watch), Some(watching)) = (
            self.watches.get(vcpu as usize),
            self.watching.get(vcpu as usize),
        ) else {
            return;
        };
        let mut w = lock(watch);
        f(&mut w);
        watching.store(w.armed(), Ordering::SeqCst);
    }

    /// Whether the run's step windows may go on, with `open` the time the current one has
    /// been open.
    fn budget_left(&self, open: Duration) -> bool {
        let spent = Duration::from_nanos(self.windows[2].load(Ordering::Relaxed)) + open;
        self.windows[1].load(Ordering::Relaxed) < STEP_BUDGET && spent < STEP_TIME_BUDGET
    }

    /// Records what a look at `vcpu`'s queue saw: `compared` more entries compared (each an
    /// exercise of `rule`), and the entries that changed after their publication.
    fn looked(&self, vcpu: u32, rule: &'static str, compared: u32, changed: &[order::Changed]) {
        if compared == 0 && changed.is_empty() {
            return;
        }
        let mut s = lock(&self.state);
        for _ in 0..compared {
            s.exercised(rule);
        }
        let (queue, consumed) = if rule == DEFER_001 {
            ("deferred-queue", "ran it at a drain point")
        } else {
            ("submission-ring", "consumed it")
        };
        for c in changed {
            s.violated(
                rule,
                vcpu,
                None,
                format!(
                    "{queue} entry {} (slot {}) changed {} single-stepped instruction(s) after \
                     the host saw `tail` past it, and before the host {consumed}: the guest \
                     stored to the entry after the `tail` store that published it, so the host \
                     may consume it half written; write the whole entry first, then store \
                     `tail` + 1 with release ordering{}",
                    c.index,
                    c.slot,
                    c.seen.saturating_sub(c.published),
                    if rule == DEFER_001 {
                        " (and do not modify an entry between `head` and `tail`, PVABI-DEFER-002)"
                    } else {
                        ""
                    }
                ),
            );
        }
    }

    /// Ends the watch of `vcpu`'s `queue`, if one is armed: its page, which the caller
    /// unwatches.
    pub(crate) fn unwatch_consumed(&self, vcpu: u32, queue: Consumed) -> Option<u64> {
        let mut w = lock(&self.consumed);
        let page = w
            .pages
            .iter()
            .find(|(_, p)| p.vcpu == vcpu && p.queue == queue)
            .map(|(page, _)| *page)?;
        w.pages.remove(&page);
        Some(page)
    }

    /// Whether a new watch may start ([`ACCESS_BUDGET`] not spent).
    pub(crate) fn may_watch_consumed(&self) -> bool {
        lock(&self.consumed).accesses < ACCESS_BUDGET
    }

    /// Arms the watch of `page`, the machine now watching it, as `vcpu`'s `queue`, whose
    /// `head` is `head`.
    pub(crate) fn watch_consumed(&self, vcpu: u32, queue: Consumed, page: u64, head: u32) {
        lock(&self.consumed).pages.insert(
            page,
            PageWatch {
                vcpu,
                queue,
                watch: consume::ConsumeWatch::new(queue.layout(), head),
            },
        );
    }

    /// The host has written entries `from..to` (free-running indices) of `vcpu`'s `queue` and
    /// is about to store the `tail` that publishes them.
    pub(crate) fn consumed_published(&self, vcpu: u32, queue: Consumed, from: u32, to: u32) {
        let mut w = lock(&self.consumed);
        if let Some(p) = w
            .pages
            .values_mut()
            .find(|p| p.vcpu == vcpu && p.queue == queue)
        {
            let mut i = from;
            while i != to {
                p.watch.published(i);
                i = i.wrapping_add(1);
            }
        }
    }

    /// A guest access of `vcpu` to a watched page at `gpa` (a load that returned `data`, or a
    /// store of `data`): the pages whose watch ended with it (its queue had
    /// [`CONSUME_WATCH_ENTRIES`] entries checked, or the run's [`ACCESS_BUDGET`] is spent),
    /// which the caller unwatches.
    pub(crate) fn consumed_access(
        &self,
        vcpu: u32,
        gpa: u64,
        data: &[u8],
        write: bool,
    ) -> Vec<u64> {
        let page = gpa & !(PAGE_SIZE - 1);
        let mut w = lock(&self.consumed);
        w.accesses += 1;
        let mut ended = Vec::new();
        if let Some(p) = w.pages.get_mut(&page) {
            let before = p.watch.checked;
            let found = p.watch.access(gpa - page, data, write);
            self.consumed_seen(vcpu, p.queue, p.watch.checked - before, &found);
            if p.watch.checked >= CONSUME_WATCH_ENTRIES {
                ended.push(page);
            }
        }
        for p in &ended {
            w.pages.remove(p);
        }
        if w.accesses >= ACCESS_BUDGET {
            ended.extend(std::mem::take(&mut w.pages).into_keys());
        }
        ended
    }

    /// Records what an access to `queue` showed: `checked` entries checked (each an exercise of
    /// its rule) and what was wrong.
    fn consumed_seen(&self, vcpu: u32, queue: Consumed, checked: u32, found: &[consume::Finding]) {
        if checked == 0 && found.is_empty() {
            return;
        }
        let rule = queue.rule();
        let (entry, ring) = queue.what();
        let mut s = lock(&self.state);
        for _ in 0..checked {
            s.exercised(rule);
        }
        for f in found {
            let what = match *f {
                consume::Finding::Unread { index, slot, head } => format!(
                    "{entry} {index} (slot {slot}): the guest stored {head} to {ring} `head`, \
                     past the entry, without having read any of its bytes since the host wrote \
                     it (every access to the page watched): read the entry first, then store an \
                     index past it to `head` (with release ordering)"
                ),
                consume::Finding::ReadAfterRelease { index, slot } => format!(
                    "{entry} {index} (slot {slot}) read after the guest had stored to {ring} \
                     `head` an index past it: from that store on the host may write the next \
                     entry into the slot; copy all of the entry you need before storing `head`"
                ),
            };
            s.violated(rule, vcpu, None, what);
        }
    }

    /// The report so far; a batch still waiting to be resumed counts in it as abandoned
    /// (the guest may yet resume it: the count is of this moment).
    pub(crate) fn report(&self) -> GuestCheckReport {
        // `consumed` is taken before `state` (as `consumed_access` does), never while it is held.
        let watched_accesses = lock(&self.consumed).accesses;
        let s = lock(&self.state);
        let mut now = State {
            report: s.report.clone(),
            ..State::default()
        };
        now.report.calls = lock(&self.made).clone();
        now.report.step_windows = (
            self.windows[0].load(Ordering::Relaxed),
            self.windows[1].load(Ordering::Relaxed),
        );
        now.report.watched_accesses = watched_accesses;
        for (vcpu, p) in s.preempted.iter().enumerate() {
            if let Some(p) = p {
                now.violated(
                    p.rule(),
                    vcpu as u32,
                    Some(p.call),
                    format!(
                        "the {} batch ({}) was preempted (INCOMPLETE, next {}) and never resumed: \
                         its remaining entries never ran",
                        p.call.descriptor().name,
                        p.describe(),
                        p.next
                    ),
                );
            }
        }
        if let Some((requested, required)) = s.negotiate {
            let (used, needed) = s.used;
            let asked = Version(requested as u32);
            now.exercised(VER_014);
            now.exercised(COMPAT_001);
            if asked.minor() > needed.minor() && asked.major() == needed.major() {
                now.violated(
                    VER_014,
                    0,
                    Some(Call::Negotiate),
                    format!(
                        "NEGOTIATE asked for minor {} at least, but every call the guest made \
                         exists since {needed}: ask for the lowest minor you need",
                        asked.minor()
                    ),
                );
            }
            let unused = required & !used;
            if unused != 0 {
                now.violated(
                    VER_014,
                    0,
                    Some(Call::Negotiate),
                    format!(
                        "NEGOTIATE required features {unused:#x}, which no call of the guest used: require only what the guest cannot run without, ask for the \
                         rest as optional"
                    ),
                );
            }
            let later: u64 = crate::config::HostConfig::default()
                .features
                .iter()
                .filter(|f| f.since > V1_0 && required & f.flag.bits() != 0)
                .map(|f| f.flag.bits())
                .fold(0, |a, b| a | b);
            if later != 0 {
                now.violated(
                    COMPAT_001,
                    0,
                    Some(Call::Negotiate),
                    format!(
                        "NEGOTIATE required features {later:#x}, which a later minor than 1.0 \
                         introduced: put them in `optional` (and fall back without them) unless \
                         the guest cannot run without them"
                    ),
                );
            }
        }
        now.report
    }
}

/// The checks that need the dispatcher's state (called only in checking mode, from small
/// hooks in the families).
impl<M: crate::machine::Machine> crate::state::Inner<M> {
    /// Before a doorbell call of `vcpu` with code `code`: the checking host's spurious event
    /// interrupts, and EVT-011 at VCPU_HALT.
    pub(crate) fn check_before_call(&self, c: &GuestChecker, vcpu: u32, code: u64) {
        let Some(slot) = self.vcpus.get(vcpu as usize) else {
            return;
        };
        let spurious = c.spurious_due(vcpu);
        let halt = code == u64::from(Call::VcpuHalt.code());
        if !spurious && !halt {
            return;
        }
        let mem = self.machine.memory();
        // Under the vCPU's event lock: a post holds it from its `tail` store to its
        // `interrupt_pending` store, so no post is seen half done.
        let st = lock(&slot.state);
        let Some(q) = st.queue else {
            return;
        };
        let pending = crate::guest_mem::load_u32(mem, q.gpa + EQ_PENDING).unwrap_or(1);
        if halt {
            let head = crate::guest_mem::load_u32(mem, q.gpa + EQ_HEAD).unwrap_or(q.tail);
            let waiting = q.tail.wrapping_sub(head).min(EVENT_QUEUE_CAPACITY);
            let unmasked = (0..waiting).find_map(|i| {
                let index = head.wrapping_add(i) % EVENT_QUEUE_CAPACITY;
                let gpa = q.gpa + EVENT_QUEUE_ENTRIES_OFFSET + u64::from(index) * EQ_EVENT_SIZE;
                crate::guest_mem::load_u32(mem, gpa)
                    .filter(|&kind| kind < 64 && st.mask & (1 << kind) == 0)
            });
            c.saw(
                EVT_011,
                vcpu,
                Some(Call::VcpuHalt),
                pending == 0 && unmasked.is_some(),
                || {
                    format!(
                        "VCPU_HALT with `interrupt_pending` 0 while {waiting} event(s) wait in the \
                         queue (head {head}, tail {}; the first unmasked one of kind {}): after \
                         storing 0 to `interrupt_pending`, execute a full barrier, read `tail` \
                         again and drain again if it differs from `head`",
                        q.tail,
                        unmasked.unwrap_or(0)
                    )
                },
            );
        }
        // Only while no kind is masked and not at EVENTS_SET_MASK: an interrupt then could
        // not be mistaken for one raised for a masked event (EVT-007) or by a mask change
        // that unmasked nothing (EVT-023).
        let set_mask = code == u64::from(Call::EventsSetMask.code());
        if spurious && pending == 0 && st.mask == 0 && !set_mask {
            // An interrupt with nothing new to announce, by the coalescing protocol.
            crate::guest_mem::store_u32(mem, q.gpa + EQ_PENDING, 1);
            self.machine.raise_interrupt(vcpu, q.vector);
            c.spurious_raised();
        }
    }

    /// After a doorbell call: the checks of [`GuestChecker::call`], and MEM-019 for the
    /// pages the call names.
    pub(crate) fn check_after_call(
        &self,
        c: &GuestChecker,
        vcpu: u32,
        code: u64,
        args: &[u64; 6],
        status: Status,
        results: &[u64; 4],
    ) {
        c.call(vcpu, code, args, status, results);
        let Some(call) = Call::from_code(code & 0xffff_ffff).filter(|_| code >> 32 == 0) else {
            return;
        };
        if matches!(call, Call::MemBalloonRelease | Call::MemBalloonReclaim) {
            return;
        }
        let d = call.descriptor();
        let named = match (call, d.block) {
            (Call::MemShare | Call::MemUnshare, _) => Some((args[0], args[1].saturating_mul(4096))),
            (_, Some(b)) if args[b.addr_arg] != 0 => Some((args[b.addr_arg], b.size(args))),
            _ => None,
        };
        if let Some((start, len)) = named {
            self.check_not_released(c, vcpu, call, start, len);
        }
    }

    /// MEM-019: `call` named `len` bytes from `start`.
    pub(crate) fn check_not_released(
        &self,
        c: &GuestChecker,
        vcpu: u32,
        call: Call,
        start: u64,
        len: u64,
    ) {
        let first = start >> 12;
        let last = start.saturating_add(len.max(1) - 1) >> 12;
        let released = crate::sync::read_lock(&self.vm)
            .released
            .range(first..=last)
            .next()
            .copied();
        c.saw(MEM_019, vcpu, Some(call), released.is_some(), || {
            format!(
                "{} names page {:#x}, which MEM_BALLOON_RELEASE released and no \
                 MEM_BALLOON_RECLAIM took back: reclaim a page before naming it in a call",
                call.descriptor().name,
                released.unwrap_or(0) << 12
            )
        });
    }

    /// MEM-006: asks the machine which released pages the guest wrote since the last look,
    /// and reports each; `at` says when the host looked (for the report). A look also starts
    /// the next interval for every page, so it comes before a release adds pages (their
    /// writes before the release do not count) and before a reclaim removes them.
    pub(crate) fn check_released_writes(&self, c: &GuestChecker, vcpu: u32, at: &str) {
        let released: Vec<u64> = crate::sync::read_lock(&self.vm)
            .released
            .iter()
            .map(|pfn| pfn << 12)
            .collect();
        let Some(written) = self.machine.guest_written_pages(&released) else {
            return;
        };
        if released.is_empty() {
            return;
        }
        c.saw(MEM_006, vcpu, None, !written.is_empty(), || {
            let shown: Vec<String> = written.iter().take(4).map(|g| format!("{g:#x}")).collect();
            format!(
                "the guest wrote {} released page(s) ({}{}) after MEM_BALLOON_RELEASE released \
                 them and before MEM_BALLOON_RECLAIM took them back (KVM's dirty-page log, read \
                 {at}; it does not say which vCPU, and under shadow paging a CPL3 read through a \
                 mapping whose dirty bit is set shows too): do not access a released page until \
                 you have reclaimed it",
                written.len(),
                shown.join(", "),
                if written.len() > shown.len() {
                    ", ..."
                } else {
                    ""
                }
            )
        });
    }

    /// A ring notify of `vcpu` (RING-008, RING-010): remembers the ring's indices.
    pub(crate) fn check_ring_notify(&self, c: &GuestChecker, vcpu: u32, ring: &Ring) {
        let mem = self.machine.memory();
        let sq_tail = crate::guest_mem::load_u32(mem, ring.sq + RING_TAIL).unwrap_or(0);
        let cq_head = crate::guest_mem::load_u32(mem, ring.cq + RING_HEAD).unwrap_or(0);
        c.ring_notified(vcpu, (sq_tail, cq_head));
    }

    /// A pass over `vcpu`'s ring read submission `tail` `sq_tail` (RING-028).
    pub(crate) fn check_ring_indices(
        &self,
        c: &GuestChecker,
        vcpu: u32,
        ring: &Ring,
        sq_tail: u32,
    ) {
        let pending = sq_tail.wrapping_sub(ring.sq_head);
        c.saw(RING_028, vcpu, None, pending > RING_SQ_CAPACITY, || {
            format!(
                "the submission ring's `tail` is {sq_tail} while the host's `head` is {}: {pending} \
                 entries, more than its capacity {RING_SQ_CAPACITY}; submit only while `tail - \
                 head` is below the capacity",
                ring.sq_head
            )
        });
    }

    /// At a drain of `vcpu`'s deferred queue `q` (the host's copy), whose `tail` the guest set
    /// to `tail` (DEFER-013, DEFER-002).
    pub(crate) fn check_deferred(
        &self,
        c: &GuestChecker,
        vcpu: u32,
        q: &crate::state::DeferredQueue,
        tail: u32,
    ) {
        let pending = tail.wrapping_sub(q.head);
        c.saw(
            DEFER_013,
            vcpu,
            None,
            pending > DEFERRED_QUEUE_CAPACITY,
            || {
                format!(
                "the deferred queue's `tail` is {tail} while `head` is {}: {pending} entries, more \
                 than its capacity {DEFERRED_QUEUE_CAPACITY}; when `tail - head` equals the \
                 capacity, drain it (DEFER_FLUSH) before queuing",
                q.head
            )
            },
        );
        let mem = self.machine.memory();
        let word = |off: u64| crate::guest_mem::load_u32(mem, q.gpa + off);
        let (first_index, first_status) = q.first_error.unwrap_or((0, 0));
        let fields = [
            ("head", DQ_HEAD, q.head),
            ("error_count", DQ_ERROR_COUNT, q.error_count),
            ("first_error_index", DQ_FIRST_INDEX, first_index),
            ("first_error_status", DQ_FIRST_STATUS, first_status),
        ];
        let changed = fields
            .iter()
            .find(|(_, off, host)| word(*off).is_some_and(|g| g != *host));
        c.saw(DEFER_002, vcpu, None, changed.is_some(), || {
            let (name, off, host) = changed.copied().unwrap_or(("", 0, 0));
            format!(
                "the deferred queue's `{name}` holds {} where the host last wrote {host}: the \
                 guest wrote a field that is the host's; write only the entries and `tail`",
                word(off).unwrap_or(0)
            )
        });
    }

    /// Before a checking-mode refresh of the time page `reg` (1.x layout): CONV-025 for the
    /// fields the host wrote last time (the sequence, flags, TSC fields and reserved words;
    /// checking mode writes the page without `TIME_PAGE_TSC_VALID`, so they are all known).
    pub(crate) fn check_time_page(&self, c: &GuestChecker, reg: &crate::state::TimePageReg) {
        use pvabi_abi::time::TimePage;
        use std::mem::offset_of;
        let mem = self.machine.memory();
        let Ok(bytes) = crate::guest_mem::copy_in(mem, reg.gpa, std::mem::size_of::<TimePage>())
        else {
            return;
        };
        let at = |off: usize, n: usize| -> u64 {
            let mut b = [0u8; 8];
            b[..n].copy_from_slice(&bytes[off..off + n]);
            u64::from_le_bytes(b)
        };
        let fields = [
            (
                "sequence",
                offset_of!(TimePage, sequence),
                4,
                reg.seq & 0xffff_ffff,
            ),
            ("flags", offset_of!(TimePage, flags), 4, 0),
            ("tsc_timestamp", offset_of!(TimePage, tsc_timestamp), 8, 0),
            ("tsc_shift", offset_of!(TimePage, tsc_shift), 4, 0),
            ("tsc_mul", offset_of!(TimePage, tsc_mul), 4, 0),
            ("reserved0", offset_of!(TimePage, reserved0), 4, 0),
            ("reserved", offset_of!(TimePage, reserved), 8, 0),
            ("reserved", offset_of!(TimePage, reserved) + 8, 8, 0),
        ];
        let changed = fields
            .iter()
            .find(|(_, off, n, host)| at(*off, *n) != *host);
        c.saw(CONV_025, 0, None, changed.is_some(), || {
            let (name, off, n, host) = changed.copied().unwrap_or(("", 0, 4, 0));
            format!(
                "the time page's `{name}` holds {:#x} where the host last wrote {host:#x}: the \
                 guest wrote a field of a host-owned page that the host owns; only read it",
                at(off, n)
            )
        });
    }

    /// VCPU_START by `vcpu` of a vCPU at `rip` and `rsp` with page tables `cr3` (0: the entry
    /// tables, PML4_ADDR) (VCPU-020).
    pub(crate) fn check_vcpu_start(
        &self,
        c: &GuestChecker,
        vcpu: u32,
        rip: u64,
        rsp: u64,
        cr3: u64,
    ) {
        let root = if cr3 == 0 {
            pvabi_abi::platform::PML4_ADDR
        } else {
            cr3
        };
        let stack = rsp.wrapping_sub(8);
        let unmapped = [("rip", rip), ("the word below rsp", stack)]
            .into_iter()
            .find(|(_, va)| !self.maps(root, *va));
        c.saw(
            VCPU_020,
            vcpu,
            Some(Call::VcpuStart),
            unmapped.is_some(),
            || {
                let (what, va) = unmapped.unwrap_or(("", 0));
                format!(
                    "VCPU_START with cr3 {cr3:#x}: the page tables at {root:#x} do not map {what} \
                 ({va:#x}); pass in `cr3` the root of page tables that map the started vCPU's \
                 first instructions and stack"
                )
            },
        );
    }

    /// Whether the 4-level page tables at `root` map `va` (present at every level).
    fn maps(&self, root: u64, va: u64) -> bool {
        const PRESENT: u64 = 1;
        const PS: u64 = 1 << 7;
        const ADDR: u64 = 0x000f_ffff_ffff_f000;
        let mem = self.machine.memory();
        let mut table = root & ADDR;
        for level in (1..=4u32).rev() {
            let index = (va >> (12 + 9 * (level - 1))) & 0x1ff;
            let Ok(raw) = crate::guest_mem::copy_in(mem, table + index * 8, 8) else {
                return false;
            };
            let entry = u64::from_le_bytes(raw.as_slice().try_into().unwrap_or_default());
            if entry & PRESENT == 0 {
                return false;
            }
            if level == 1 || (level <= 3 && entry & PS != 0) {
                return true;
            }
            table = entry & ADDR;
        }
        true
    }

    /// RING-008 and RING-010 for `vcpu`'s ring `ring` as the guest leaves it (unregistered,
    /// or at the end of the run): submissions waiting with completion room, and ring indices
    /// moved after the guest's last notify, mean the guest left them without the notify that
    /// would have run them (for a HOST_POLLED ring, only while its poller sleeps).
    pub(crate) fn check_ring_left(&self, c: &GuestChecker, vcpu: u32, ring: &Ring, at_end: bool) {
        let mem = self.machine.memory();
        let load = |gpa| crate::guest_mem::load_u32(mem, gpa).unwrap_or(0);
        let (sq_tail, cq_head) = (load(ring.sq + RING_TAIL), load(ring.cq + RING_HEAD));
        let waiting = sq_tail.wrapping_sub(ring.sq_head);
        let room = ring.cq_tail.wrapping_sub(cq_head) < RING_CQ_CAPACITY;
        let moved = c.last_notify(vcpu) != Some((sq_tail, cq_head));
        let stuck = waiting > 0 && waiting <= RING_SQ_CAPACITY && room && moved;
        let (rule, how) = match ring.mode {
            RingMode::Doorbell => (RING_008, "write the vCPU's index to the ring-notify port"),
            RingMode::HostPolled => (
                RING_010,
                "execute a full barrier after the store, then notify if SQ_NEED_WAKEUP is set",
            ),
        };
        let asleep = ring.sq_flags & pvabi_abi::batch::SQ_NEED_WAKEUP != 0;
        let broken = stuck && (ring.mode == RingMode::Doorbell || asleep);
        c.saw(rule, vcpu, None, broken, || {
            format!(
                "{} submission(s) waited (`tail` {sq_tail}, host `head` {}) with completion \
                 room{}, and the guest had not notified since it last moved its submission \
                 `tail` or completion `head` (the ring was then {}): after submitting, or \
                 freeing completion space while submissions wait, {how}",
                waiting,
                ring.sq_head,
                if asleep {
                    " while the poller slept (SQ_NEED_WAKEUP set)"
                } else {
                    ""
                },
                if at_end {
                    "left at the end of the run"
                } else {
                    "unregistered"
                }
            )
        });
        if !at_end {
            // The next ring starts with no notify.
            if let Some(n) = lock(&c.state).notified.get_mut(vcpu as usize) {
                *n = None;
            }
        }
    }

    /// Opens a step window on `vcpu` if a watch of its queues is armed and the run's budget
    /// is not spent: takes the window's first look ([`crate::Dispatcher::step_window_open`]).
    pub(crate) fn step_window_open(&self, c: &GuestChecker, vcpu: u32) -> bool {
        let v = vcpu as usize;
        if !c.watching.get(v).is_some_and(|w| w.load(Ordering::SeqCst))
            || !c.budget_left(Duration::ZERO)
        {
            return false;
        }
        let mut w = lock(&c.watches[v]);
        if w.open.is_some() {
            return true;
        }
        w.open = Some(std::time::Instant::now());
        c.windows[0].fetch_add(1, Ordering::Relaxed);
        self.take_looks(c, vcpu, &mut w, queued_pte::Stop::Open);
        self.window_goes_on(c, vcpu, &mut w)
    }

    /// One instruction of `vcpu` later: a look; whether the window goes on
    /// ([`crate::Dispatcher::step_window_step`]).
    pub(crate) fn step_window_step(&self, c: &GuestChecker, vcpu: u32) -> bool {
        let Some(watch) = c.watches.get(vcpu as usize) else {
            return false;
        };
        let mut w = lock(watch);
        if w.open.is_none() {
            return false;
        }
        w.steps += 1;
        c.windows[1].fetch_add(1, Ordering::Relaxed);
        self.take_looks(c, vcpu, &mut w, queued_pte::Stop::Step);
        self.window_goes_on(c, vcpu, &mut w)
    }

    /// An exit of `vcpu` other than a step: the last look, and the window closes
    /// ([`crate::Dispatcher::step_window_close`]).
    pub(crate) fn step_window_close(&self, c: &GuestChecker, vcpu: u32) {
        let Some(watch) = c.watches.get(vcpu as usize) else {
            return;
        };
        let mut w = lock(watch);
        if w.open.is_some() {
            self.take_looks(c, vcpu, &mut w, queued_pte::Stop::Close);
            close_window(c, &mut w);
        }
    }

    /// Whether `vcpu`'s open window goes on (a queue still watched, budget left); if not, it
    /// is closed.
    fn window_goes_on(&self, c: &GuestChecker, vcpu: u32, w: &mut StepWatch) -> bool {
        let watched = w.armed();
        if let Some(watching) = c.watching.get(vcpu as usize) {
            watching.store(watched, Ordering::SeqCst);
        }
        let open = w.open.map_or(Duration::ZERO, |t| t.elapsed());
        let go_on = watched && c.budget_left(open);
        if !go_on {
            close_window(c, w);
        }
        go_on
    }

    /// Looks at `vcpu`'s watched queues, each under its lock (so no consumption is in
    /// progress): the host's own consumer index, then the guest's `tail`, then the slots.
    /// A queue no longer registered (or registered anew) ends its watch, and so does one that
    /// has had [`WATCH_ENTRIES`] entries compared. The deferred queue's look serves its
    /// MEM_UPDATE_PTE watch too (module `queued_pte`), at a stop of kind `at`.
    fn take_looks(&self, c: &GuestChecker, vcpu: u32, w: &mut StepWatch, at: queued_pte::Stop) {
        let Some(slot) = self.vcpus.get(vcpu as usize) else {
            return;
        };
        let mem = self.machine.memory();
        let step = w.steps;
        let read = |page: u64, tail_at: u64, entries_at: u64, layout: order::Layout| {
            let tail = crate::guest_mem::load_u32(mem, page + tail_at)?;
            let len = layout.capacity as usize * layout.entry_size;
            let slots = crate::guest_mem::copy_in(mem, page + entries_at, len).ok()?;
            Some((tail, slots))
        };
        let deferred_key = w.deferred.as_ref().map(|d| d.key);
        if let Some(key) = deferred_key.or(w.pte.as_ref().map(|p| p.key)) {
            let look = {
                let q = lock(&slot.deferred);
                q.filter(|q| q.gpa == key).and_then(|q| {
                    let (tail, slots) =
                        read(q.gpa, DQ_TAIL, DEFERRED_ENTRIES_OFFSET, DEFERRED_LAYOUT)?;
                    Some(order::Look {
                        head: q.head,
                        tail,
                        slots,
                        step,
                    })
                })
            };
            if w.pte.is_some() {
                queued_pte::look_at(&mut w.pte, at, look.as_ref());
            }
            if deferred_key.is_some() {
                look_at(c, vcpu, DEFER_001, &mut w.deferred, look);
            }
        }
        if let Some(watch) = w.ring.as_mut() {
            let look = {
                let ring = lock(&slot.ring);
                ring.filter(|r| r.generation == watch.key).and_then(|r| {
                    let (tail, slots) = read(r.sq, RING_TAIL, RING_ENTRIES_OFFSET, SQ_LAYOUT)?;
                    Some(order::Look {
                        head: r.sq_head,
                        tail,
                        slots,
                        step,
                    })
                })
            };
            look_at(c, vcpu, RING_001, &mut w.ring, look);
        }
    }

    /// `vcpu` registered `queue` at `page` (`None`: unregistered it, or the registration was
    /// undone): the watch of the old page ends, and one of the new page starts if the run's
    /// budget is not spent and the machine can watch pages (EVT-010, RING-006).
    pub(crate) fn watch_consumed_queue(
        &self,
        c: &GuestChecker,
        vcpu: u32,
        queue: Consumed,
        page: Option<u64>,
    ) {
        if let Some(old) = c.unwatch_consumed(vcpu, queue) {
            self.machine.unwatch_pages(old, 1);
        }
        let Some(page) = page else {
            return;
        };
        if c.may_watch_consumed() && self.machine.watch_pages(page, 1) {
            let head = crate::guest_mem::load_u32(self.machine.memory(), page + queue.head_at())
                .unwrap_or(0);
            c.watch_consumed(vcpu, queue, page, head);
        }
    }

    /// A guest access to a watched page ([`crate::Dispatcher::watched_access`]); ends the
    /// watches it ends.
    pub(crate) fn watched_access(
        &self,
        c: &GuestChecker,
        vcpu: u32,
        gpa: u64,
        data: &[u8],
        write: bool,
    ) {
        for page in c.consumed_access(vcpu, gpa, data, write) {
            self.machine.unwatch_pages(page, 1);
        }
    }

    /// The report, with the rings' state at this moment (RING-008, RING-010: see
    /// [`Self::check_ring_left`]).
    pub(crate) fn guest_check_report(&self, c: &GuestChecker) -> GuestCheckReport {
        self.check_released_writes(c, 0, "at the end of the run");
        for (vcpu, slot) in self.vcpus.iter().enumerate() {
            if let Some(ring) = *lock(&slot.ring) {
                self.check_ring_left(c, vcpu as u32, &ring, true);
            }
        }
        c.report()
    }
}

use pvabi_abi::batch::{
    DeferredEntry, DeferredQueueHeader, RingHeader, SubmissionEntry, DEFERRED_ENTRIES_OFFSET,
    DEFERRED_QUEUE_CAPACITY, RING_ENTRIES_OFFSET,
};
use pvabi_abi::events::{EventQueueHeader, EVENT_QUEUE_CAPACITY, EVENT_QUEUE_ENTRIES_OFFSET};

use crate::state::Ring;
use pvabi_abi::batch::RingMode;

const EQ_HEAD: u64 = std::mem::offset_of!(EventQueueHeader, head) as u64;
const EQ_PENDING: u64 = std::mem::offset_of!(EventQueueHeader, interrupt_pending) as u64;
const EQ_EVENT_SIZE: u64 = std::mem::size_of::<pvabi_abi::events::Event>() as u64;
const RING_HEAD: u64 = std::mem::offset_of!(RingHeader, head) as u64;
const RING_TAIL: u64 = std::mem::offset_of!(RingHeader, tail) as u64;
const RING_SQ_CAPACITY: u32 = pvabi_abi::batch::SQ_CAPACITY;
const RING_CQ_CAPACITY: u32 = pvabi_abi::batch::CQ_CAPACITY;
const DQ_HEAD: u64 = std::mem::offset_of!(DeferredQueueHeader, head) as u64;
const DQ_TAIL: u64 = std::mem::offset_of!(DeferredQueueHeader, tail) as u64;
const DEFERRED_LAYOUT: order::Layout = order::Layout {
    capacity: DEFERRED_QUEUE_CAPACITY,
    entry_size: std::mem::size_of::<DeferredEntry>(),
};
const SQ_LAYOUT: order::Layout = order::Layout {
    capacity: RING_SQ_CAPACITY,
    entry_size: std::mem::size_of::<SubmissionEntry>(),
};
const DQ_ERROR_COUNT: u64 = std::mem::offset_of!(DeferredQueueHeader, error_count) as u64;
const DQ_FIRST_INDEX: u64 = std::mem::offset_of!(DeferredQueueHeader, first_error_index) as u64;
const DQ_FIRST_STATUS: u64 = std::mem::offset_of!(DeferredQueueHeader, first_error_status) as u64;

/// Hands `look` (`None`: the queue is gone) to the watch in `watch`, of rule `rule`, and ends
/// the watch when the queue is gone or it has had [`WATCH_ENTRIES`] entries compared.
fn look_at(
    c: &GuestChecker,
    vcpu: u32,
    rule: &'static str,
    watch: &mut Option<order::QueueWatch>,
    look: Option<order::Look>,
) {
    let (Some(w), Some(look)) = (watch.as_mut(), look) else {
        *watch = None;
        return;
    };
    let before = w.compared;
    let changed = w.look(look);
    c.looked(vcpu, rule, w.compared - before, &changed);
    if w.compared >= WATCH_ENTRIES {
        *watch = None;
    }
}

/// Ends `w`'s open window, adding the time it was open to the run's.
fn close_window(c: &GuestChecker, w: &mut StepWatch) {
    if let Some(t) = w.open.take() {
        let ns = u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX);
        c.windows[2].fetch_add(ns, Ordering::Relaxed);
    }
}
