//! What the host serves: versions, features, identity, limits and tunables, in one place.
//!
//! Everything the dispatcher answers about itself (GET_SPEC_VERSION, GET_IMPL_ID,
//! PROBE_FEATURES, NEGOTIATE, the CPUID leaves) comes from a [`HostConfig`], so one binary can
//! act as a 1.0, 1.1, 1.2 or 1.3 host, or serve a 2.0 preview beside 1.x, by configuration
//! alone.

use std::fmt;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use pvabi_abi::batch::{
    DEFERRED_QUEUE_CAPACITY, MULTICALL_MAX_ENTRIES, MULTICALL_PAGES_MAX_ENTRIES, SQ_CAPACITY,
};
use pvabi_abi::calls::Call;
use pvabi_abi::convention::{DOORBELL_PORT, RING_NOTIFY_PORT};
use pvabi_abi::discovery::{
    CpuidInfo, TransportFlags, CPUID_BASE_COUNT, CPUID_BASE_STRIDE, CPUID_FIRST_BASE,
};
use pvabi_abi::features::{Features, FEATURES};
use pvabi_abi::version::{Version, SPEC_VERSION};

/// One feature bit the host offers, and the version that introduced it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeatureOffer {
    /// The bit (exactly one).
    pub flag: Features,
    /// The version that introduced it: it is offered only when the accepted version is at
    /// least this one.
    pub since: Version,
}

/// The implementation's own version (GET_IMPL_VERSION: `major << 32 | minor << 16 | patch`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImplVersion {
    /// Major number (32 bits).
    pub major: u32,
    /// Minor number.
    pub minor: u16,
    /// Patch number.
    pub patch: u16,
}

impl ImplVersion {
    /// The value GET_IMPL_VERSION returns in `r0`.
    pub const fn packed(self) -> u64 {
        ((self.major as u64) << 32) | ((self.minor as u64) << 16) | self.patch as u64
    }

    /// This crate's version (from Cargo).
    pub fn of_this_crate() -> Self {
        ImplVersion {
            major: env!("CARGO_PKG_VERSION_MAJOR").parse().unwrap_or(0),
            minor: env!("CARGO_PKG_VERSION_MINOR").parse().unwrap_or(0),
            patch: env!("CARGO_PKG_VERSION_PATCH").parse().unwrap_or(0),
        }
    }
}

/// A console output function: `(vCPU, bytes)`.
pub type ConsoleFn = dyn Fn(u32, &[u8]) + Send + Sync;

/// Where console output (CONSOLE_WRITE, CONSOLE_WRITE_REGS) goes, besides the [`Report`].
///
/// [`Report`]: crate::Report
#[derive(Clone, Default)]
pub enum ConsoleSink {
    /// Nowhere (the report still records it).
    Discard,
    /// The host's standard output (control bytes escaped as `\xNN` when it is a terminal,
    /// unaltered otherwise: CON-004).
    #[default]
    Stdout,
    /// The host's standard error (escaped like [`Stdout`](Self::Stdout)).
    Stderr,
    /// A function of the embedding program.
    Custom(Arc<ConsoleFn>),
}

impl ConsoleSink {
    /// Hands `bytes` written by `vcpu` to the sink. Errors writing to stdout/stderr are
    /// ignored: the guest's call succeeded, and the report keeps the bytes.
    pub fn emit(&self, vcpu: u32, bytes: &[u8]) {
        match self {
            ConsoleSink::Discard => {}
            ConsoleSink::Stdout => {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(bytes);
                let _ = out.flush();
            }
            ConsoleSink::Stderr => {
                let _ = std::io::stderr().lock().write_all(bytes);
            }
            ConsoleSink::Custom(f) => f(vcpu, bytes),
        }
    }
}

impl fmt::Debug for ConsoleSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConsoleSink::Discard => "Discard",
            ConsoleSink::Stdout => "Stdout",
            ConsoleSink::Stderr => "Stderr",
            ConsoleSink::Custom(_) => "Custom(..)",
        })
    }
}

/// What the host serves and how it behaves. Build one with [`HostConfig::default`] (a 1.0
/// reference host with every feature) or [`HostConfig::acting_as`], then adjust fields.
#[derive(Clone, Debug)]
pub struct HostConfig {
    /// The lowest version served (GET_SPEC_VERSION `r1`, CPUID `B+1` ebx). Its major must be
    /// the major of `served[0]`.
    pub lowest: Version,
    /// For each major version served, the highest minor implemented, in ascending order
    /// (e.g. `[1.0]`, or `[1.1, 2.0]` for 1.x beside a 2.0 preview). NEGOTIATE accepts the
    /// entry of the requested major; the last entry is the highest version served.
    pub served: Vec<Version>,
    /// The feature bits offered, each with the version that introduced it.
    pub features: Vec<FeatureOffer>,
    /// Calls this host does not implement (NOT_SUPPORTED, PROBE_CALL says ABSENT).
    pub disabled_calls: Vec<Call>,
    /// GET_IMPL_ID `r0`.
    pub impl_id: u32,
    /// GET_IMPL_ID `r1`/`r2`: ASCII, NUL-padded.
    pub impl_name: [u8; 16],
    /// GET_IMPL_VERSION.
    pub impl_version: ImplVersion,
    /// Poison the result registers the guest must not read (all four on error, the ones a
    /// call does not define on success) with [`POISON`], to catch guests that read them.
    pub strict: bool,
    /// Perform doorbell calls made at any privilege level, against rule CONV-013 (by default
    /// a doorbell `out` from CPL 1-3 performs no call and gets NOT_SUPPORTED). Only for
    /// measurements on hosts that emulate ring-0 code, where loops must run in ring 3
    /// (`pvabi bench`); never for a guest whose user processes are not trusted.
    pub allow_user_mode_calls: bool,
    /// Check the guest (`pvabi conform --guest`): record every guest rule the host sees the
    /// guest break ([`Dispatcher::guest_check`](crate::Dispatcher::guest_check)), and leave
    /// the time page mid-update for a while at every refresh, so that a reader that ignores
    /// its sequence lock is caught ([`crate::guest_check`]). Off by default.
    pub check_guest: bool,
    /// The VMM marks every doorbell write that is an element of a string output (`rep outs`)
    /// as one ([`Doorbell::string_element`](crate::Doorbell::string_element)). Only then does
    /// a checking host count PVABI-CONV-030 as exercised: a VMM that cannot tell leaves it
    /// "not exercised", never passed. Off by default; the reference host's runner turns it
    /// on for a checking host, whose vCPU threads look for a `rep outs` at every doorbell exit.
    pub vmm_marks_string_outputs: bool,
    /// Record the effects of calls in the [`Report`](crate::Report) (console bytes, PTE
    /// writes, flushes, vCPU starts and stops, event and batch counters). Per-call status
    /// counts are always kept (per-vCPU atomics); the effect records take a lock per call
    /// that has one, so a VMM that never reads the report can turn them off.
    pub record_effects: bool,
    /// A defect to inject (feature `fault-injection` only), for proving that the conformance
    /// suite catches it.
    #[cfg(feature = "fault-injection")]
    pub inject: Option<crate::faults::InjectedFault>,
    /// Number of vCPUs (CPUID `B+3` edx, `VcpuIndex` checks). Must match the machine.
    pub vcpus: u32,
    /// How many MULTICALL entries one exit runs before the host preempts the batch with
    /// INCOMPLETE (1..=32). The CPUID limit (entries per MULTICALL) stays 32.
    pub max_multicall: u32,
    /// How many MULTICALL_PAGES entries one exit runs before the host preempts the batch with
    /// INCOMPLETE (1..=4096; default 4096, the whole of the largest batch). It is a knob of its
    /// own rather than [`max_multicall`](Self::max_multicall): a budget of 32 would turn a
    /// 1024-entry batch back into 32 exits.
    pub max_multicall_pages: u32,
    /// Where console output goes.
    pub console: ConsoleSink,
    /// TSC frequency reported by TIME_FREQUENCY (0 = unknown).
    pub tsc_hz: u64,
    /// Resolution of the one-shot timer reported by TIME_FREQUENCY, in nanoseconds. The
    /// reference host fires timers from a host thread; the conformance suite's `timer` test
    /// measured the best of five timers seen 96-144 µs after their deadlines (including the
    /// guest's exits to look), so the default is 1 ms (PVABI-TIME-018), not less.
    pub timer_resolution_ns: u64,
    /// How often a host thread refreshes the shared time page. Capped at 5 ms whatever the
    /// value, so that the page is never older than TIME-027's 10 ms.
    pub time_refresh: Duration,
    /// How long a HOST_POLLED ring poller spins without work before it sets
    /// `SQ_NEED_WAKEUP` and sleeps.
    pub poll_idle: Duration,
    /// Doorbell port (CPUID `B+2`).
    pub doorbell_port: u16,
    /// Ring-notify port (CPUID `B+2`).
    pub ring_notify_port: u16,
    /// Transport flags (CPUID `B+2` ebx).
    pub transport: TransportFlags,
    /// Where the pvabi CPUID leaves start: `0x4000_0000 + k * 0x100`.
    pub cpuid_base: u32,
    /// Extra CPUID leaves `(function, index, [eax, ebx, ecx, edx])` added to the pvabi ones
    /// (for tests: a foreign hypervisor signature at 0x4000_0000 in front of pvabi).
    pub extra_cpuid_leaves: Vec<(u32, u32, [u32; 4])>,
    /// What the VMM does when the guest calls SYSTEM_REBOOT (PVABI-SYS-003 allows either).
    /// The dispatcher ends the VM with [`End::Reboot`](crate::End::Reboot) both ways; a VMM
    /// that resets builds the next boot with
    /// [`Dispatcher::after_reset`](crate::Dispatcher::after_reset).
    pub on_reboot: OnReboot,
    /// The host events this host performs when a test guest asks for one over the verdict
    /// channel ([`crate::host_event`]): empty by default, so that a guest's console line never
    /// makes a plain host do anything. The VMM must be able to perform them
    /// ([`Machine::request_host_event`](crate::Machine::request_host_event)).
    pub host_events: Vec<crate::HostEvent>,
}

/// What a VMM does on SYSTEM_REBOOT ([`HostConfig::on_reboot`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnReboot {
    /// End the VM, reporting that the guest asked for a reboot (`pvabi run` exits 3); the
    /// operator starts a fresh VM. The default.
    #[default]
    End,
    /// Reset the VM as the System chapter's "What a reset restores" describes and boot it
    /// again, at most `limit` times; the reboot after the last reset ends the VM as
    /// [`End`](Self::End) does (so a guest that reboots forever cannot run forever).
    Reset {
        /// How many resets one run allows.
        limit: u32,
    },
}

/// The value strict mode writes into result registers the guest must not read.
pub const POISON: u64 = 0xdead_beef_dead_beef;

/// The name of the reference host, as GET_IMPL_ID returns it.
pub const IMPL_NAME_REFERENCE: [u8; 16] = *b"pvabi-ref\0\0\0\0\0\0\0";

impl Default for HostConfig {
    /// A reference host serving the current release of the spec.
    fn default() -> Self {
        HostConfig::acting_as(Version(SPEC_VERSION))
    }
}

impl HostConfig {
    /// A reference host serving several majors side by side (one version per major,
    /// ascending, e.g. `[1.1, 2.0]`): a guest picks its major in NEGOTIATE. It offers every
    /// feature the ABI crate defines up to the highest version.
    ///
    /// ```
    /// use pvabi_abi::version::{V1_1, V2_0_PREVIEW};
    /// use pvabi_dispatch::HostConfig;
    /// let c = HostConfig::serving(&[V1_1, V2_0_PREVIEW]);
    /// assert!(c.validate().is_ok());
    /// assert_eq!(c.served_major(1), Some(V1_1));
    /// ```
    pub fn serving(versions: &[Version]) -> Self {
        let highest = versions.last().copied().unwrap_or_default();
        HostConfig {
            lowest: Version::new(versions.first().map_or(0, |v| v.major()), 0),
            served: versions.to_vec(),
            ..HostConfig::acting_as(highest)
        }
    }

    /// A reference host serving exactly one version: `version`'s major up to its minor,
    /// offering every feature the ABI crate defines for it.
    pub fn acting_as(version: Version) -> Self {
        HostConfig {
            lowest: Version::new(version.major(), 0),
            served: vec![version],
            features: FEATURES
                .iter()
                .filter(|f| f.since <= version)
                .map(|f| FeatureOffer {
                    flag: f.flag,
                    since: f.since,
                })
                .collect(),
            disabled_calls: Vec::new(),
            impl_id: pvabi_abi::base::IMPL_ID_REFERENCE,
            impl_name: IMPL_NAME_REFERENCE,
            impl_version: ImplVersion::of_this_crate(),
            strict: false,
            allow_user_mode_calls: false,
            check_guest: false,
            vmm_marks_string_outputs: false,
            record_effects: true,
            #[cfg(feature = "fault-injection")]
            inject: None,
            vcpus: 1,
            max_multicall: MULTICALL_MAX_ENTRIES as u32,
            max_multicall_pages: MULTICALL_PAGES_MAX_ENTRIES as u32,
            console: ConsoleSink::default(),
            tsc_hz: 0,
            timer_resolution_ns: 1_000_000,
            time_refresh: Duration::from_millis(1),
            poll_idle: Duration::from_millis(2),
            doorbell_port: DOORBELL_PORT,
            ring_notify_port: RING_NOTIFY_PORT,
            transport: TransportFlags::PIO,
            cpuid_base: CPUID_FIRST_BASE,
            extra_cpuid_leaves: Vec::new(),
            on_reboot: OnReboot::End,
            host_events: Vec::new(),
        }
    }

    /// The highest version served.
    pub fn highest(&self) -> Version {
        self.served.last().copied().unwrap_or_default()
    }

    /// The highest version served for `major`, if that major is served.
    pub fn served_major(&self, major: u16) -> Option<Version> {
        self.served.iter().copied().find(|v| v.major() == major)
    }

    /// The features offered when `version` is the accepted (or, before NEGOTIATE, the
    /// highest) version: those introduced at or before it.
    pub fn offered_at(&self, version: Version) -> Features {
        self.features
            .iter()
            .filter(|f| f.since <= version)
            .fold(Features::empty(), |acc, f| acc | f.flag)
    }

    /// Whether this host implements `call` at all: it is not disabled, and some version the
    /// host serves defines it (a host acting as 1.0 does not implement a call of 1.1).
    pub fn implements(&self, call: Call) -> bool {
        let since = call.descriptor().since;
        !self.disabled_calls.contains(&call) && self.served.iter().any(|v| since <= *v)
    }

    /// The values of the pvabi CPUID leaves.
    pub fn cpuid_info(&self) -> CpuidInfo {
        CpuidInfo {
            highest_version: self.highest().0,
            lowest_version: self.lowest.0,
            offered_features: self.offered_at(self.highest()).bits(),
            doorbell_port: self.doorbell_port,
            ring_notify_port: self.ring_notify_port,
            transport: self.transport,
            max_multicall_entries: MULTICALL_MAX_ENTRIES as u32,
            deferred_capacity: DEFERRED_QUEUE_CAPACITY,
            ring_capacity: SQ_CAPACITY,
            vcpus: self.vcpus,
        }
    }

    /// The CPUID leaves to expose: the extra leaves, then the four pvabi leaves at
    /// [`cpuid_base`](Self::cpuid_base), as `(function, index, [eax, ebx, ecx, edx])`.
    pub fn cpuid_leaves(&self) -> Vec<(u32, u32, [u32; 4])> {
        let mut leaves = self.extra_cpuid_leaves.clone();
        let pvabi = self.cpuid_info().leaves(self.cpuid_base);
        leaves.extend(
            pvabi
                .iter()
                .enumerate()
                .map(|(i, regs)| (self.cpuid_base + i as u32, 0, *regs)),
        );
        leaves
    }

    /// Checks that the configuration is coherent.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad =
            |field: &'static str, problem: String| Err(ConfigError::Invalid { field, problem });
        let Some(first) = self.served.first() else {
            return bad(
                "served",
                "is empty: serve at least one version, e.g. 1.0".into(),
            );
        };
        if self.served.windows(2).any(|w| w[0].major() >= w[1].major()) {
            return bad(
                "served",
                format!(
                    "must list one version per major in ascending order, not {:?}",
                    self.served
                        .iter()
                        .map(|v| v.to_string())
                        .collect::<Vec<_>>()
                ),
            );
        }
        if self.lowest.major() != first.major() || self.lowest > *first {
            return bad(
                "lowest",
                format!(
                    "{} must be a version of the first served major, at most {first}",
                    self.lowest
                ),
            );
        }
        for f in &self.features {
            if f.flag.bits().count_ones() != 1 {
                return bad(
                    "features",
                    format!("offer {:?} is not exactly one bit", f.flag),
                );
            }
            if f.since > self.highest() {
                return bad(
                    "features",
                    format!(
                        "{:?} is introduced in {}, after the highest version served {}",
                        f.flag,
                        f.since,
                        self.highest()
                    ),
                );
            }
        }
        if self.vcpus == 0 || self.vcpus > 256 {
            return bad(
                "vcpus",
                format!("is {}: the dispatcher supports 1 to 256", self.vcpus),
            );
        }
        if self.max_multicall == 0 || u64::from(self.max_multicall) > MULTICALL_MAX_ENTRIES {
            return bad(
                "max_multicall",
                format!(
                    "{} is outside 1..={MULTICALL_MAX_ENTRIES}",
                    self.max_multicall
                ),
            );
        }
        if self.max_multicall_pages == 0
            || u64::from(self.max_multicall_pages) > MULTICALL_PAGES_MAX_ENTRIES
        {
            return bad(
                "max_multicall_pages",
                format!(
                    "{} is outside 1..={MULTICALL_PAGES_MAX_ENTRIES}",
                    self.max_multicall_pages
                ),
            );
        }
        let k = self.cpuid_base.wrapping_sub(CPUID_FIRST_BASE);
        if self.cpuid_base < CPUID_FIRST_BASE
            || !k.is_multiple_of(CPUID_BASE_STRIDE)
            || k / CPUID_BASE_STRIDE >= CPUID_BASE_COUNT
        {
            return bad(
                "cpuid_base",
                format!(
                    "{:#x} is not 0x40000000 + k * 0x100 with k in 0..=255",
                    self.cpuid_base
                ),
            );
        }
        if self.time_refresh.is_zero() {
            return bad("time_refresh", "must be longer than zero".into());
        }
        Ok(())
    }
}

/// A host configuration that cannot work (a host-side error, never guest-caused).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A field of [`HostConfig`] has a value the dispatcher cannot serve.
    #[error("invalid host configuration: `{field}` {problem}")]
    Invalid {
        /// The field's name.
        field: &'static str,
        /// What is wrong with its value.
        problem: String,
    },
    /// The configuration and the machine disagree on the number of vCPUs.
    #[error("the host configuration has {config} vCPUs but the machine has {machine}")]
    VcpuMismatch {
        /// `HostConfig::vcpus`.
        config: u32,
        /// `Machine::vcpu_count()`.
        machine: u32,
    },
}

#[cfg(test)]
mod tests {
    use crate::*;
    use pvabi_abi::version::{V1_0, V1_1, V1_2, V1_3};

    #[test]
    fn default_is_a_valid_host_of_the_current_release() {
        let c = HostConfig::default();
        c.validate().unwrap();
        assert_eq!(c.highest(), V1_3);
        assert_eq!(c.lowest, V1_0);
        let since_1_1 = Features::STEAL_TIME | Features::MULTICALL_PAGES;
        assert_eq!(c.offered_at(V1_0), Features::all() - since_1_1);
        assert_eq!(
            c.offered_at(V1_1),
            Features::all() - Features::MULTICALL_PAGES
        );
        assert_eq!(
            c.offered_at(V1_2),
            Features::all() - Features::MULTICALL_PAGES
        );
        assert_eq!(c.offered_at(V1_3), Features::all());
        let old = HostConfig::acting_as(V1_0);
        old.validate().unwrap();
        assert_eq!(old.offered_at(V1_3), Features::all() - since_1_1);
        assert!(!old.implements(Call::TimeSetStealPage));
        assert!(c.implements(Call::TimeSetStealPage));
        let v1_2 = HostConfig::acting_as(V1_2);
        assert!(!v1_2.implements(Call::MulticallPages));
        assert_eq!(
            v1_2.offered_at(V1_3),
            Features::all() - Features::MULTICALL_PAGES
        );
        assert!(c.implements(Call::MulticallPages));
    }

    #[test]
    fn invalid_configs_are_refused() {
        let mut c = HostConfig {
            served: vec![],
            ..HostConfig::default()
        };
        assert!(c.validate().is_err());
        c.served = vec![Version::new(2, 0), Version::new(1, 1)];
        assert!(c.validate().is_err());
        c = HostConfig {
            max_multicall: 33,
            ..HostConfig::default()
        };
        assert!(c.validate().is_err());
        c = HostConfig {
            max_multicall_pages: 0,
            ..HostConfig::default()
        };
        assert!(c.validate().is_err());
        c = HostConfig {
            max_multicall_pages: 4097,
            ..HostConfig::default()
        };
        assert!(c.validate().is_err());
        c = HostConfig {
            cpuid_base: 0x4000_0010,
            ..HostConfig::default()
        };
        assert!(c.validate().is_err());
        c = HostConfig {
            cpuid_base: 0x4000_ff00,
            ..HostConfig::default()
        };
        c.validate().unwrap();
    }

    #[test]
    fn cpuid_leaves_at_a_configured_base() {
        let c = HostConfig {
            cpuid_base: 0x4000_0100,
            vcpus: 3,
            ..HostConfig::acting_as(V1_0)
        };
        let leaves = c.cpuid_leaves();
        assert_eq!(leaves.len(), 4);
        assert_eq!(leaves[0].0, 0x4000_0100);
        assert_eq!(leaves[0].2[0], 0x4000_0103);
        assert_eq!(leaves[1].2, [0x0001_0000, 0x0001_0000, 0x1ff, 0]);
        assert_eq!(leaves[2].2[0], 0x5654_5650);
        assert_eq!(leaves[3].2, [32, 64, 32, 3]);
    }
}
