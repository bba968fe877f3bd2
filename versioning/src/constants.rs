//! The table of every numeric constant of the ABI crate, with how each may evolve.
//!
//! The ABI crate's constants live in its chapter modules; this table lists each one once, by
//! path, so the compiler reads the value from the crate. Two tests keep the table complete:
//! every `#define PVABI_<NAME> <value>` of the generated C header must be here with the same
//! value, and every top-level integer `pub const` of `abi/src` must be here.

use pvabi_abi::{base, batch, console, convention, discovery, events, features, memory, system};
use pvabi_abi::{time, version};

use crate::model::ConstRule;

/// One constant of the ABI crate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConstDef {
    /// The Rust name (the C name is `PVABI_` + this).
    pub name: &'static str,
    /// The value, widened to 64 bits.
    pub value: u64,
    /// How it may evolve within (and across) major versions.
    pub rule: ConstRule,
}

macro_rules! consts {
    ($($module:ident :: $name:ident => $rule:ident),+ $(,)?) => {
        &[$(ConstDef {
            name: stringify!($name),
            value: $module::$name as u64,
            rule: ConstRule::$rule,
        }),+]
    };
}

/// Every numeric constant of the ABI crate, by chapter.
///
/// Rules: `Exact` values never change within a major; `ValidBits` masks of defined bits may
/// gain bits in a minor (a reserved bit taking a meaning); `Grows` maxima may rise in a minor
/// (a new CPUID leaf); `Version` constants are the version itself; `Forever` constants are
/// part of discovery and never change, not even across majors (PVABI-VER-004).
pub const CONSTANTS: &[ConstDef] = consts![
    // Discovery.
    discovery::CPUID_FIRST_BASE => Forever,
    discovery::CPUID_BASE_STRIDE => Forever,
    discovery::CPUID_BASE_COUNT => Forever,
    discovery::CPUID_LEAF_SIGNATURE => Forever,
    discovery::CPUID_LEAF_VERSION => Forever,
    discovery::CPUID_LEAF_TRANSPORT => Exact,
    discovery::CPUID_LEAF_LIMITS => Exact,
    discovery::CPUID_LEAF_MAX => Grows,
    discovery::SIGNATURE_EBX => Forever,
    discovery::SIGNATURE_ECX => Forever,
    discovery::SIGNATURE_EDX => Forever,
    discovery::TRANSPORT_PIO => Exact,
    discovery::TRANSPORT_VMCALL => Exact,
    discovery::TRANSPORT_VMMCALL => Exact,
    // Calling convention.
    convention::DOORBELL_PORT => Exact,
    convention::RING_NOTIFY_PORT => Exact,
    convention::DOORBELL_WIDTH => Exact,
    convention::MAX_ARGS => Exact,
    convention::MAX_RESULTS => Exact,
    convention::PAGE_SIZE => Exact,
    convention::MAX_BLOCK_SIZE => Exact,
    // Versions and features.
    version::VERSION_MAJOR => Version,
    version::VERSION_MINOR => Version,
    version::SPEC_VERSION => Version,
    features::FEATURE_CONSOLE => Exact,
    features::FEATURE_TIME => Exact,
    features::FEATURE_EVENTS => Exact,
    features::FEATURE_MEMORY => Exact,
    features::FEATURE_VCPU => Exact,
    features::FEATURE_SYSTEM => Exact,
    features::FEATURE_MULTICALL => Exact,
    features::FEATURE_DEFERRED => Exact,
    features::FEATURE_RING => Exact,
    features::FEATURE_STEAL_TIME => Exact,
    // Base.
    base::IMPL_ID_REFERENCE => Forever,
    base::IMPL_ID_VENDOR_FIRST => Forever,
    base::NEGOTIATE_REQUESTED_MASK => ValidBits,
    base::NEGOTIATE_FLAGS_MASK => ValidBits,
    // Console.
    console::CONSOLE_REGS_MAX => Exact,
    console::CONSOLE_WRITE_MAX => Exact,
    // Time.
    time::TIME_PAGE_TSC_VALID => Exact,
    // Events.
    events::EVENT_QUEUE_CAPACITY => Exact,
    events::EVENT_QUEUE_ENTRIES_OFFSET => Exact,
    events::EVENT_VECTOR_MIN => Exact,
    events::EVENT_VECTOR_MAX => Exact,
    events::EVENT_MASK_VALID => ValidBits,
    // Memory.
    memory::BALLOON_MAX_PFNS => Exact,
    memory::FLUSH_RANGE_MAX_PAGES => Exact,
    memory::SHARE_MAX_PAGES => Exact,
    // System.
    system::CRASH_MESSAGE_MAX => Exact,
    // Batching, deferral and rings.
    batch::MULTICALL_MAX_ENTRIES => Exact,
    batch::MULTICALL_STOP_ON_ERROR => Exact,
    batch::MULTICALL_FLAGS_VALID => ValidBits,
    batch::DEFERRED_QUEUE_CAPACITY => Exact,
    batch::DEFERRED_ENTRIES_OFFSET => Exact,
    batch::SQ_CAPACITY => Exact,
    batch::CQ_CAPACITY => Exact,
    batch::RING_ENTRIES_OFFSET => Exact,
    batch::SQ_NEED_WAKEUP => Exact,
    batch::RING_COMPLETION_EVENTS => Exact,
    batch::RING_FLAGS_VALID => ValidBits,
];

/// The constant with this name.
pub fn constant(name: &str) -> Option<&'static ConstDef> {
    CONSTANTS.iter().find(|c| c.name == name)
}
