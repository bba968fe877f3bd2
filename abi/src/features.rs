//! Spec chapter "Versioning and negotiation": feature bits.
//!
//! Every optional call family sits behind one bit of a 64-bit feature mask. The Base family has
//! no bit: it is always present. Unknown bits are kept, never silently dropped: build masks
//! from raw values with [`Features::from_bits_retain`].

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::version::{Version, V1_0, V1_1, V1_3};

/// The console family (debug console output).
pub const FEATURE_CONSOLE: u64 = 1u64 << 0;
/// The time family (clocks, shared time page, one-shot timer).
pub const FEATURE_TIME: u64 = 1u64 << 1;
/// The events family (shared event queue, masking, coalesced interrupts).
pub const FEATURE_EVENTS: u64 = 1u64 << 2;
/// The memory family (sharing, ballooning, page-table updates, TLB flushes).
pub const FEATURE_MEMORY: u64 = 1u64 << 3;
/// The vCPU family (start, stop, yield, halt, kick).
pub const FEATURE_VCPU: u64 = 1u64 << 4;
/// The system family (shutdown, reboot, crash report).
pub const FEATURE_SYSTEM: u64 = 1u64 << 5;
/// MULTICALL: batches of calls with per-entry status.
pub const FEATURE_MULTICALL: u64 = 1u64 << 6;
/// The per-vCPU deferred queue.
pub const FEATURE_DEFERRED: u64 = 1u64 << 7;
/// The exitless submission/completion ring pair.
pub const FEATURE_RING: u64 = 1u64 << 8;
/// The per-vCPU steal-time page (since 1.1).
pub const FEATURE_STEAL_TIME: u64 = 1u64 << 9;
/// MULTICALL_PAGES: batches of up to 4096 entries given as a list of pages (since 1.3).
pub const FEATURE_MULTICALL_PAGES: u64 = 1u64 << 10;

/// A set of feature bits.
///
/// ```
/// use pvabi_abi::features::Features;
/// // Bit 40 is unknown to this version, and it is kept.
/// let f = Features::from_bits_retain((1 << 40) | 1);
/// assert!(f.contains(Features::CONSOLE));
/// assert_eq!(f.bits() >> 40, 1);
/// assert_eq!(f.unknown().bits(), 1 << 40);
/// ```
#[repr(transparent)]
#[derive(
    Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct Features(u64);

bitflags::bitflags! {
    impl Features: u64 {
        /// The console family.
        const CONSOLE = FEATURE_CONSOLE;
        /// The time family.
        const TIME = FEATURE_TIME;
        /// The events family.
        const EVENTS = FEATURE_EVENTS;
        /// The memory family.
        const MEMORY = FEATURE_MEMORY;
        /// The vCPU family.
        const VCPU = FEATURE_VCPU;
        /// The system family.
        const SYSTEM = FEATURE_SYSTEM;
        /// MULTICALL.
        const MULTICALL = FEATURE_MULTICALL;
        /// The deferred queue.
        const DEFERRED = FEATURE_DEFERRED;
        /// The submission/completion rings.
        const RING = FEATURE_RING;
        /// The steal-time page.
        const STEAL_TIME = FEATURE_STEAL_TIME;
        /// MULTICALL_PAGES.
        const MULTICALL_PAGES = FEATURE_MULTICALL_PAGES;
    }
}

impl Features {
    /// The bits this version of the crate does not define.
    pub const fn unknown(self) -> Features {
        Features::from_bits_retain(self.bits() & !Features::all().bits())
    }

    /// The features defined by every version up to and including `version`.
    pub fn defined_in(version: Version) -> Features {
        FEATURES
            .iter()
            .filter(|f| f.since <= version)
            .fold(Features::empty(), |acc, f| acc | f.flag)
    }
}

impl core::fmt::Debug for Features {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Features({:#x}", self.bits())?;
        for info in FEATURES.iter().filter(|i| self.contains(i.flag)) {
            write!(f, " {}", info.name)?;
        }
        if !self.unknown().is_empty() {
            write!(f, " unknown:{:#x}", self.unknown().bits())?;
        }
        f.write_str(")")
    }
}

/// What the specification says about one feature bit.
#[derive(Clone, Copy, Debug)]
pub struct FeatureInfo {
    /// The bit.
    pub flag: Features,
    /// The name, as used after `PVABI_FEATURE_` in C.
    pub name: &'static str,
    /// The version that introduced it.
    pub since: Version,
    /// What granting it enables.
    pub description: &'static str,
}

/// Every defined feature bit, in bit order.
pub const FEATURES: &[FeatureInfo] = &[
    FeatureInfo { flag: Features::CONSOLE, name: "CONSOLE", since: V1_0, description: "Console output (register and memory forms)." },
    FeatureInfo {
        flag: Features::TIME,
        name: "TIME",
        since: V1_0,
        description: "Monotonic and wall-clock time, timer frequency, the shared time page, the one-shot timer.",
    },
    FeatureInfo {
        flag: Features::EVENTS,
        name: "EVENTS",
        since: V1_0,
        description: "The per-vCPU shared event queue, event masking and coalesced interrupts.",
    },
    FeatureInfo {
        flag: Features::MEMORY,
        name: "MEMORY",
        since: V1_0,
        description: "Sharing, balloon release and reclaim, page-table entry updates, TLB flushes.",
    },
    FeatureInfo {
        flag: Features::VCPU,
        name: "VCPU",
        since: V1_0,
        description: "Starting, stopping, yielding, halting and kicking vCPUs.",
    },
    FeatureInfo { flag: Features::SYSTEM, name: "SYSTEM", since: V1_0, description: "Shutdown, reboot and crash report." },
    FeatureInfo {
        flag: Features::MULTICALL,
        name: "MULTICALL",
        since: V1_0,
        description: "Batches of calls with per-entry status and a resume index.",
    },
    FeatureInfo {
        flag: Features::DEFERRED,
        name: "DEFERRED",
        since: V1_0,
        description: "The per-vCPU deferred queue, drained on flush and before sync points.",
    },
    FeatureInfo {
        flag: Features::RING,
        name: "RING",
        since: V1_0,
        description: "The exitless submission/completion ring pair, doorbell or host-polled.",
    },
    FeatureInfo {
        flag: Features::STEAL_TIME,
        name: "STEAL_TIME",
        since: V1_1,
        description: "The per-vCPU steal-time page: time the vCPU was ready but the host ran something else.",
    },
    FeatureInfo {
        flag: Features::MULTICALL_PAGES,
        name: "MULTICALL_PAGES",
        since: V1_3,
        description: "MULTICALL_PAGES: a batch of up to 4096 entries in one exit, its entries on a list of pages.",
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_covers_every_flag_once_in_bit_order() {
        let mut seen = Features::empty();
        let mut last = 0u64;
        for f in FEATURES {
            assert_eq!(f.flag.bits().count_ones(), 1, "{}", f.name);
            assert!(f.flag.bits() > last, "{} out of order", f.name);
            assert!(!seen.intersects(f.flag));
            seen |= f.flag;
            last = f.flag.bits();
        }
        assert_eq!(seen, Features::all());
    }

    #[test]
    fn unknown_bits_are_retained() {
        let raw = u64::MAX;
        let f = Features::from_bits_retain(raw);
        assert_eq!(f.bits(), raw);
        assert_eq!(Features::from_bits(raw), None);
        assert_eq!(f.unknown().bits(), raw & !Features::all().bits());
    }

    #[test]
    fn constants_have_spec_values() {
        assert_eq!(FEATURE_CONSOLE, 0x1);
        assert_eq!(FEATURE_RING, 0x100);
        assert_eq!(FEATURE_STEAL_TIME, 0x200);
        assert_eq!(FEATURE_MULTICALL_PAGES, 0x400);
        assert_eq!(
            Features::defined_in(V1_0),
            Features::all() - Features::STEAL_TIME - Features::MULTICALL_PAGES
        );
        assert_eq!(
            Features::defined_in(V1_1),
            Features::all() - Features::MULTICALL_PAGES
        );
        assert_eq!(
            Features::defined_in(crate::version::V1_2),
            Features::all() - Features::MULTICALL_PAGES
        );
        assert_eq!(Features::defined_in(V1_3), Features::all());
    }
}
