//! PVABI-BASE-005 across two runs: a guest must make the same calls with the same arguments
//! under two hosts that differ only in what GET_IMPL_ID and GET_IMPL_VERSION return. No single
//! run shows that, so the checker records what each run's calls were ([`CallsMade`]), the
//! runner runs the guest a second time under [`HostConfig::with_twin_identity`] (the same
//! checking host with another implementation id, name and version) and [`compare`] says what
//! differs.
//!
//! # What is compared, and why not more
//!
//! Two runs of a correct guest under the same host already differ: clock reads and deadlines,
//! how often a loop that waits for time or for another vCPU goes round, which vCPU gets to a
//! piece of shared work first, where the checking host's spurious interrupts land (every
//! [`SPURIOUS_PERIOD`](super::SPURIOUS_PERIOD) calls of a vCPU, so they move when the number
//! of calls moves), and what a guest writes to its log (which may include the identity: the
//! rule allows it). Only what none of that can change is compared:
//!
//! - **which calls were made at all**, in the whole VM (directly, as MULTICALL or
//!   MULTICALL_PAGES entries, from the deferred queue or as ring submissions), not how often
//!   and not by which vCPU (the report names the vCPUs). Left out are the calls a correct
//!   guest makes or skips depending only on whether something has already happened, which is
//!   timing: the waiting and waking calls (VCPU_HALT, VCPU_YIELD, VCPU_KICK, RING_ENTER) and
//!   the clock reads (TIME_MONOTONIC, TIME_WALLCLOCK; a guest may fall back to them when it
//!   finds the time page mid-update, as the checking host leaves it). CONSOLE_WRITE and
//!   CONSOLE_WRITE_REGS count as one call, since a logged identity may change a message's
//!   length and a guest may pick one of them by length;
//! - **the arguments of NEGOTIATE and PROBE_CALL** (every distinct argument tuple): what a
//!   guest asks for and what it probes are the choices the rule is mostly about, and no
//!   clock, interleaving or log line can change them in a correct guest. Other calls'
//!   arguments are left out: they carry times (TIME_SET_TIMER), log bytes (the console
//!   calls), guest addresses (which move when a guest allocates room for a logged name) and
//!   counts of batched work.
//!
//! A run that ended by the watchdog's timeout stopped at a moment that depends on timing: the
//! calls it made are a part of what it would have made, so a call that only the other run
//! made is no evidence against it. Such a run's calls count only where it made one the
//! other did not.
//!
//! Not seen: a difference in how often a call is made, in which vCPU makes it, in a left-out
//! call or argument, or in what the guest does with a result without making a call. A
//! workaround for a defect known in one implementation version is allowed by the rule; the
//! checking host's two identities are the reference host's and a vendor id no implementation
//! uses, neither with a defect a guest needs to work around, so a difference here is a
//! violation.

use std::collections::{BTreeMap, BTreeSet};

use pvabi_abi::calls::Call;

use crate::config::{HostConfig, ImplVersion};

/// BASE-005: no choice of calls, arguments or result use from the implementation's identity.
pub const BASE_005: &str = "PVABI-BASE-005";

/// The implementation id of the checking host's second run: a vendor id
/// (`IMPL_ID_VENDOR_FIRST` and up, free for anyone), which no implementation reports.
pub const TWIN_IMPL_ID: u32 = pvabi_abi::base::IMPL_ID_VENDOR_FIRST + 0x7e57;
/// The name the checking host's second run reports, as long as the reference host's.
pub const TWIN_IMPL_NAME: [u8; 16] = *b"pvabi-twn\0\0\0\0\0\0\0";
/// The version the checking host's second run reports: every part differs from any version
/// the reference host has had.
pub const TWIN_IMPL_VERSION: ImplVersion = ImplVersion {
    major: 9,
    minor: 87,
    patch: 654,
};

/// The calls whose presence [`compare`] ignores: a correct guest makes or skips them
/// depending on timing alone (see the module documentation).
pub const UNCOMPARED: [Call; 6] = [
    Call::VcpuHalt,
    Call::VcpuYield,
    Call::VcpuKick,
    Call::RingEnter,
    Call::TimeMonotonic,
    Call::TimeWallclock,
];

/// The calls whose arguments [`compare`] compares.
pub const ARGUMENTS_COMPARED: [Call; 2] = [Call::Negotiate, Call::ProbeCall];

impl HostConfig {
    /// The same host with another implementation identity (GET_IMPL_ID's id and name,
    /// GET_IMPL_VERSION's version; [`TWIN_IMPL_ID`], [`TWIN_IMPL_NAME`],
    /// [`TWIN_IMPL_VERSION`], or the next id if this host already has that one) and nothing
    /// else changed: the second run of [`BASE_005`]'s comparison. Everything else the checking
    /// host chooses (preemption at every batch entry, where its spurious interrupts go, where
    /// its CPUID leaves and ports are) follows from its configuration and the guest's calls,
    /// never from chance, so it is the same in both runs.
    pub fn with_twin_identity(&self) -> HostConfig {
        let mut twin = self.clone();
        twin.impl_id = if self.impl_id == TWIN_IMPL_ID {
            TWIN_IMPL_ID + 1
        } else {
            TWIN_IMPL_ID
        };
        twin.impl_name = TWIN_IMPL_NAME;
        twin.impl_version = TWIN_IMPL_VERSION;
        if self.impl_version == TWIN_IMPL_VERSION {
            twin.impl_version.patch += 1;
        }
        twin
    }
}

/// What a run's calls were, as far as [`compare`] compares them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallsMade {
    /// Every call code made (in any context; CONSOLE_WRITE_REGS recorded as CONSOLE_WRITE),
    /// with the vCPUs that made it.
    pub codes: BTreeMap<u64, BTreeSet<u32>>,
    /// Every distinct argument tuple of the calls of [`ARGUMENTS_COMPARED`], with the vCPUs
    /// that passed it.
    pub arguments: BTreeMap<(u64, [u64; 6]), BTreeSet<u32>>,
    /// Whether the guest made more than [`MAX_DISTINCT`] distinct calls or argument tuples:
    /// the rest were not recorded (the guest chooses how many; the host's memory is bounded),
    /// so the two runs cannot be compared.
    pub overflowed: bool,
}

/// How many distinct call codes, and distinct argument tuples, one run records at most.
pub const MAX_DISTINCT: usize = 4096;

impl CallsMade {
    /// `vcpu` made the call `code` with `args` (in any context).
    pub fn record(&mut self, vcpu: u32, code: u64, args: &[u64; 6]) {
        let call = Call::from_code(code);
        if call.is_some_and(|c| ARGUMENTS_COMPARED.contains(&c)) {
            let key = (code, *args);
            if self.arguments.len() < MAX_DISTINCT || self.arguments.contains_key(&key) {
                self.arguments.entry(key).or_default().insert(vcpu);
            } else {
                self.overflowed = true;
            }
        }
        let code = if call == Some(Call::ConsoleWriteRegs) {
            u64::from(Call::ConsoleWrite.code())
        } else {
            code
        };
        if self.codes.len() < MAX_DISTINCT || self.codes.contains_key(&code) {
            self.codes.entry(code).or_default().insert(vcpu);
        } else {
            self.overflowed = true;
        }
    }
}

/// One run of the two [`compare`] compares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityRun<'a> {
    /// What the run's calls were.
    pub calls: &'a CallsMade,
    /// Whether the guest ended the run itself (shutdown, reboot, crash report, a fault of its
    /// own): false when the watchdog stopped it, so that its calls may be a part of the
    /// run's.
    pub complete: bool,
    /// The identity the host reported, for the report (e.g. `id 0x1 "pvabi-ref" version
    /// 0.1.0`).
    pub identity: String,
}

/// A call (or a NEGOTIATE or PROBE_CALL argument tuple) one run made and the other did not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityDifference {
    /// The call, by name (or code, for one no version defines), with its arguments where
    /// they are compared.
    pub call: String,
    /// Which run made it: 0 the first, 1 the second.
    pub made_in: usize,
    /// The vCPUs that made it there.
    pub vcpus: Vec<u32>,
}

fn name(code: u64) -> String {
    Call::from_code(code).map_or_else(
        || format!("call {code:#x}"),
        |c| c.descriptor().name.to_owned(),
    )
}

/// What differs between two runs of a guest under hosts that differ only in their identity,
/// as far as a difference cannot come from timing (see the module documentation). Empty
/// when nothing does.
pub fn compare(runs: [&IdentityRun<'_>; 2]) -> Vec<IdentityDifference> {
    let uncompared = |code: u64| UNCOMPARED.iter().any(|c| u64::from(c.code()) == code);
    let mut out = Vec::new();
    for (made_in, (this, other)) in [(runs[0], runs[1]), (runs[1], runs[0])]
        .into_iter()
        .enumerate()
    {
        // A call the other run did not make counts only if the other run was not cut short.
        if !other.complete {
            continue;
        }
        for (code, vcpus) in &this.calls.codes {
            if !uncompared(*code) && !other.calls.codes.contains_key(code) {
                out.push(IdentityDifference {
                    call: name(*code),
                    made_in,
                    vcpus: vcpus.iter().copied().collect(),
                });
            }
        }
        for ((code, args), vcpus) in &this.calls.arguments {
            // A call missing altogether is reported above.
            let made = other.calls.codes.contains_key(code);
            if made && !other.calls.arguments.contains_key(&(*code, *args)) {
                let d = Call::from_code(*code).map(Call::descriptor);
                let shown: Vec<String> = d
                    .map_or(&[][..], |d| d.args)
                    .iter()
                    .zip(args)
                    .map(|(a, v)| format!("{} {v:#x}", a.name))
                    .collect();
                out.push(IdentityDifference {
                    call: format!("{}({})", name(*code), shown.join(", ")),
                    made_in,
                    vcpus: vcpus.iter().copied().collect(),
                });
            }
        }
    }
    out
}

/// The report of [`compare`]'s differences `diffs` between `runs`, naming each call and
/// the fix.
pub fn describe(runs: [&IdentityRun<'_>; 2], diffs: &[IdentityDifference]) -> String {
    let list = |made_in: usize| -> String {
        diffs
            .iter()
            .filter(|d| d.made_in == made_in)
            .map(|d| {
                let vcpus: Vec<String> = d.vcpus.iter().map(u32::to_string).collect();
                format!("{} (vCPU {})", d.call, vcpus.join(", "))
            })
            .collect::<Vec<_>>()
            .join(" and ")
    };
    let mut parts = Vec::new();
    for (i, other) in [(0, 1), (1, 0)] {
        let calls = list(i);
        if !calls.is_empty() {
            parts.push(format!(
                "under the host reporting {}, the guest made {calls}, which it did not make \
                 under the host reporting {}",
                runs[i].identity, runs[other].identity
            ));
        }
    }
    format!(
        "{}: choose calls and arguments from GET_SPEC_VERSION, PROBE_FEATURES, PROBE_CALL and \
         NEGOTIATE, never from GET_IMPL_ID or GET_IMPL_VERSION (write the identity to a log if \
         you like; only a workaround for a defect known in one implementation version may \
         depend on it, and neither identity has one)",
        parts.join("; ")
    )
}

impl super::GuestChecker {
    /// `vcpu` made the call `code` with `args`, in any context ([`CallsMade`]).
    pub(crate) fn made(&self, vcpu: u32, code: u64, args: &[u64; 6]) {
        crate::sync::lock(&self.made).record(vcpu, code, args);
    }
}
