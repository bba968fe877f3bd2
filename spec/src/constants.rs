//! The named constants the chapters may quote, with their values taken from `pvabi-abi`.
//!
//! A chapter writes `{{pvabi:NAME}}` where it needs a number; rendering replaces the token with
//! the constant's formatted value, so prose never types an ABI number. The same registry
//! renders the constants tables.

use std::fmt::Write as _;

use pvabi_abi::base::{
    CallState, IMPL_ID_REFERENCE, IMPL_ID_VENDOR_FIRST, NEGOTIATE_FLAGS_MASK,
    NEGOTIATE_REQUESTED_MASK,
};
use pvabi_abi::batch::{
    RingMode, CQ_CAPACITY, DEFERRED_ENTRIES_OFFSET, DEFERRED_QUEUE_CAPACITY, MULTICALL_FLAGS_VALID,
    MULTICALL_MAX_ENTRIES, MULTICALL_STOP_ON_ERROR, RING_COMPLETION_EVENTS, RING_ENTRIES_OFFSET,
    RING_FLAGS_VALID, SQ_CAPACITY, SQ_NEED_WAKEUP,
};
use pvabi_abi::console::{CONSOLE_REGS_MAX, CONSOLE_WRITE_MAX};
use pvabi_abi::convention::{
    DOORBELL_PORT, DOORBELL_WIDTH, MAX_ARGS, MAX_BLOCK_SIZE, MAX_RESULTS, PAGE_SIZE,
    RING_NOTIFY_PORT,
};
use pvabi_abi::discovery::{
    CPUID_BASE_COUNT, CPUID_BASE_STRIDE, CPUID_FIRST_BASE, CPUID_LEAF_LIMITS, CPUID_LEAF_MAX,
    CPUID_LEAF_SIGNATURE, CPUID_LEAF_TRANSPORT, CPUID_LEAF_VERSION, SIGNATURE, SIGNATURE_EBX,
    SIGNATURE_ECX, SIGNATURE_EDX, TRANSPORT_PIO, TRANSPORT_VMCALL, TRANSPORT_VMMCALL,
};
use pvabi_abi::events::{
    EventKind, EVENT_MASK_VALID, EVENT_QUEUE_CAPACITY, EVENT_QUEUE_ENTRIES_OFFSET,
    EVENT_VECTOR_MAX, EVENT_VECTOR_MIN,
};
use pvabi_abi::memory::{BALLOON_MAX_PFNS, FLUSH_RANGE_MAX_PAGES, SHARE_MAX_PAGES};
use pvabi_abi::system::CRASH_MESSAGE_MAX;
use pvabi_abi::time::TIME_PAGE_TSC_VALID;
use pvabi_abi::vcpu::WakeReason;
use pvabi_abi::version::{Version, SPEC_VERSION, VERSION_MAJOR, VERSION_MINOR};

/// How a constant's value is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Decimal: `128`.
    Dec,
    /// Hexadecimal: `0x5650`.
    Hex,
    /// A single-bit flag, by bit number: `bit 0`.
    Bit,
    /// A bit mask, by the bits it allows: `bits 4:1`.
    Mask,
    /// A version: `1.0`.
    Version,
    /// Text (a signature).
    Text(&'static str),
}

/// Which table a constant belongs to (one per chapter that quotes constants).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Group {
    /// Discovery: CPUID bases, leaves, signature, transport flags.
    Discovery,
    /// Calling convention: ports, register counts, block limits.
    Convention,
    /// Versioning: this release.
    Version,
    /// Base family.
    Base,
    /// Console family.
    Console,
    /// Time family.
    Time,
    /// Events family.
    Events,
    /// Memory family.
    Memory,
    /// vCPU family.
    Vcpu,
    /// System family.
    System,
    /// Batching, deferral and rings.
    Batch,
}

impl Group {
    /// Every group, in book order.
    pub const ALL: [Group; 11] = [
        Group::Discovery,
        Group::Convention,
        Group::Version,
        Group::Base,
        Group::Console,
        Group::Time,
        Group::Events,
        Group::Memory,
        Group::Vcpu,
        Group::System,
        Group::Batch,
    ];

    /// The group's anchor in `generated/constants.md`.
    pub const fn anchor(self) -> &'static str {
        match self {
            Group::Discovery => "discovery",
            Group::Convention => "convention",
            Group::Version => "version",
            Group::Base => "base",
            Group::Console => "console",
            Group::Time => "time",
            Group::Events => "events",
            Group::Memory => "memory",
            Group::Vcpu => "vcpu",
            Group::System => "system",
            Group::Batch => "batch",
        }
    }
}

/// One named constant.
#[derive(Clone, Debug)]
pub struct Constant {
    /// The name used in `{{pvabi:NAME}}` and in the tables (the `pvabi-abi` name; enumerators
    /// are written `Type::Variant`).
    pub name: &'static str,
    /// The value.
    pub value: u64,
    /// How to write it.
    pub format: Format,
    /// The table it belongs to.
    pub group: Group,
    /// What it is.
    pub meaning: &'static str,
}

impl Constant {
    /// The value as the spec writes it.
    pub fn text(&self) -> String {
        match self.format {
            Format::Dec => self.value.to_string(),
            Format::Hex => format!("0x{:x}", self.value),
            Format::Bit => format!("bit {}", self.value.trailing_zeros()),
            Format::Mask => mask_text(self.value),
            Format::Version => Version(self.value as u32).to_string(),
            Format::Text(t) => t.to_string(),
        }
    }
}

/// The bit ranges set in `mask`, high first: `bits 4:1`, `bit 0`, `bits 31:0`; `none` if 0.
pub fn mask_text(mask: u64) -> String {
    let ranges = bit_ranges(mask);
    if ranges.is_empty() {
        return "none".to_string();
    }
    let parts: Vec<String> = ranges
        .iter()
        .map(|&(hi, lo)| {
            if hi == lo {
                format!("bit {lo}")
            } else {
                format!("bits {hi}:{lo}")
            }
        })
        .collect();
    parts.join(", ")
}

/// The runs of set bits in `mask` as `(high, low)` pairs, highest run first.
pub fn bit_ranges(mask: u64) -> Vec<(u32, u32)> {
    let mut ranges = Vec::new();
    let mut bit = 0;
    while bit < 64 {
        if mask & (1 << bit) != 0 {
            let lo = bit;
            while bit < 64 && mask & (1 << bit) != 0 {
                bit += 1;
            }
            ranges.push((bit - 1, lo));
        } else {
            bit += 1;
        }
    }
    ranges.reverse();
    ranges
}

fn c(
    name: &'static str,
    value: u64,
    format: Format,
    group: Group,
    meaning: &'static str,
) -> Constant {
    Constant {
        name,
        value,
        format,
        group,
        meaning,
    }
}

/// Every constant the chapters may quote, grouped by chapter.
pub fn constants() -> Vec<Constant> {
    use Format::*;
    use Group as G;
    vec![
        c(
            "CPUID_FIRST_BASE",
            CPUID_FIRST_BASE.into(),
            Hex,
            G::Discovery,
            "The first candidate base leaf.",
        ),
        c(
            "CPUID_BASE_STRIDE",
            CPUID_BASE_STRIDE.into(),
            Hex,
            G::Discovery,
            "The distance between candidate bases.",
        ),
        c(
            "CPUID_BASE_COUNT",
            CPUID_BASE_COUNT.into(),
            Dec,
            G::Discovery,
            "The number of candidate bases.",
        ),
        c(
            "CPUID_LAST_BASE",
            u64::from(CPUID_FIRST_BASE + (CPUID_BASE_COUNT - 1) * CPUID_BASE_STRIDE),
            Hex,
            G::Discovery,
            "The last candidate base leaf.",
        ),
        c(
            "CPUID_LEAF_SIGNATURE",
            CPUID_LEAF_SIGNATURE.into(),
            Dec,
            G::Discovery,
            "Offset of the signature leaf from the base.",
        ),
        c(
            "CPUID_LEAF_VERSION",
            CPUID_LEAF_VERSION.into(),
            Dec,
            G::Discovery,
            "Offset of the version leaf.",
        ),
        c(
            "CPUID_LEAF_TRANSPORT",
            CPUID_LEAF_TRANSPORT.into(),
            Dec,
            G::Discovery,
            "Offset of the transport leaf.",
        ),
        c(
            "CPUID_LEAF_LIMITS",
            CPUID_LEAF_LIMITS.into(),
            Dec,
            G::Discovery,
            "Offset of the limits leaf.",
        ),
        c(
            "CPUID_LEAF_MAX",
            CPUID_LEAF_MAX.into(),
            Dec,
            G::Discovery,
            "The highest leaf offset this version defines.",
        ),
        c(
            "SIGNATURE",
            0,
            Text(signature()),
            G::Discovery,
            "The interface signature, in ebx, ecx, edx of the signature leaf.",
        ),
        c(
            "SIGNATURE_EBX",
            SIGNATURE_EBX.into(),
            Hex,
            G::Discovery,
            "Signature bytes 0 to 3, as read from ebx.",
        ),
        c(
            "SIGNATURE_ECX",
            SIGNATURE_ECX.into(),
            Hex,
            G::Discovery,
            "Signature bytes 4 to 7, as read from ecx.",
        ),
        c(
            "SIGNATURE_EDX",
            SIGNATURE_EDX.into(),
            Hex,
            G::Discovery,
            "Signature bytes 8 to 11, as read from edx.",
        ),
        c(
            "TRANSPORT_PIO",
            TRANSPORT_PIO.into(),
            Bit,
            G::Discovery,
            "Transport flag: the port-I/O doorbell binding (always set).",
        ),
        c(
            "TRANSPORT_VMCALL",
            TRANSPORT_VMCALL.into(),
            Bit,
            G::Discovery,
            "Transport flag: the vmcall binding.",
        ),
        c(
            "TRANSPORT_VMMCALL",
            TRANSPORT_VMMCALL.into(),
            Bit,
            G::Discovery,
            "Transport flag: the vmmcall binding.",
        ),
        c(
            "DOORBELL_PORT",
            DOORBELL_PORT.into(),
            Hex,
            G::Convention,
            "The default doorbell port.",
        ),
        c(
            "RING_NOTIFY_PORT",
            RING_NOTIFY_PORT.into(),
            Hex,
            G::Convention,
            "The default ring-notify port.",
        ),
        c(
            "DOORBELL_WIDTH",
            DOORBELL_WIDTH.into(),
            Dec,
            G::Convention,
            "The width of the doorbell access, in bytes.",
        ),
        c(
            "MAX_ARGS",
            MAX_ARGS as u64,
            Dec,
            G::Convention,
            "The number of argument registers.",
        ),
        c(
            "MAX_RESULTS",
            MAX_RESULTS as u64,
            Dec,
            G::Convention,
            "The number of result registers besides the status.",
        ),
        c(
            "PAGE_SIZE",
            PAGE_SIZE,
            Dec,
            G::Convention,
            "The page size, in bytes; the unit of the page-crossing rule.",
        ),
        c(
            "MAX_BLOCK_SIZE",
            MAX_BLOCK_SIZE,
            Dec,
            G::Convention,
            "The largest memory block a call takes, in bytes.",
        ),
        c(
            "SPEC_VERSION",
            SPEC_VERSION.into(),
            Version,
            G::Version,
            "This release of the specification.",
        ),
        c(
            "SPEC_VERSION_RAW",
            SPEC_VERSION.into(),
            Hex,
            G::Version,
            "This release, encoded as a version value.",
        ),
        c(
            "VERSION_MAJOR",
            VERSION_MAJOR.into(),
            Dec,
            G::Version,
            "The major number of this release.",
        ),
        c(
            "VERSION_MINOR",
            VERSION_MINOR.into(),
            Dec,
            G::Version,
            "The minor number of this release.",
        ),
        c(
            "IMPL_ID_REFERENCE",
            IMPL_ID_REFERENCE.into(),
            Hex,
            G::Base,
            "The implementation id of the pvabi reference host.",
        ),
        c(
            "IMPL_ID_VENDOR_FIRST",
            IMPL_ID_VENDOR_FIRST.into(),
            Hex,
            G::Base,
            "The first implementation id free for vendors.",
        ),
        c(
            "NEGOTIATE_REQUESTED_MASK",
            NEGOTIATE_REQUESTED_MASK,
            Mask,
            G::Base,
            "The bits of NEGOTIATE's requested argument that are defined.",
        ),
        c(
            "NEGOTIATE_FLAGS_MASK",
            NEGOTIATE_FLAGS_MASK,
            Mask,
            G::Base,
            "The NEGOTIATE flags defined by this version.",
        ),
        c(
            "CallState::Absent",
            CallState::Absent as u64,
            Dec,
            G::Base,
            "PROBE_CALL: the call is not implemented.",
        ),
        c(
            "CallState::Available",
            CallState::Available as u64,
            Dec,
            G::Base,
            "PROBE_CALL: implemented, but its feature is not granted (or NEGOTIATE has not run).",
        ),
        c(
            "CallState::Ready",
            CallState::Ready as u64,
            Dec,
            G::Base,
            "PROBE_CALL: the call may be made now.",
        ),
        c(
            "CONSOLE_REGS_MAX",
            CONSOLE_REGS_MAX,
            Dec,
            G::Console,
            "The most bytes CONSOLE_WRITE_REGS carries.",
        ),
        c(
            "CONSOLE_WRITE_MAX",
            CONSOLE_WRITE_MAX,
            Dec,
            G::Console,
            "The most bytes one CONSOLE_WRITE takes.",
        ),
        c(
            "TIME_PAGE_TSC_VALID",
            TIME_PAGE_TSC_VALID.into(),
            Bit,
            G::Time,
            "Time page flag: the TSC fields may be used to interpolate.",
        ),
        c(
            "EVENT_QUEUE_CAPACITY",
            EVENT_QUEUE_CAPACITY.into(),
            Dec,
            G::Events,
            "Entries in an event queue.",
        ),
        c(
            "EVENT_QUEUE_ENTRIES_OFFSET",
            EVENT_QUEUE_ENTRIES_OFFSET,
            Dec,
            G::Events,
            "Byte offset of the first entry in the queue page.",
        ),
        c(
            "EVENT_VECTOR_MIN",
            EVENT_VECTOR_MIN,
            Dec,
            G::Events,
            "The lowest interrupt vector a queue may use.",
        ),
        c(
            "EVENT_VECTOR_MAX",
            EVENT_VECTOR_MAX,
            Dec,
            G::Events,
            "The highest interrupt vector.",
        ),
        c(
            "EVENT_MASK_VALID",
            EVENT_MASK_VALID,
            Mask,
            G::Events,
            "The bits of an event mask that are defined.",
        ),
        c(
            "EventKind::Timer",
            EventKind::Timer as u64,
            Dec,
            G::Events,
            "The vCPU's one-shot timer expired; data is the deadline.",
        ),
        c(
            "EventKind::Kick",
            EventKind::Kick as u64,
            Dec,
            G::Events,
            "Another vCPU kicked this one; source is the kicker.",
        ),
        c(
            "EventKind::User",
            EventKind::User as u64,
            Dec,
            G::Events,
            "EVENTS_SEND from vCPU source, carrying data.",
        ),
        c(
            "EventKind::RingCompletion",
            EventKind::RingCompletion as u64,
            Dec,
            G::Events,
            "Ring completions are waiting; data is the completion-ring tail.",
        ),
        c(
            "SHARE_MAX_PAGES",
            SHARE_MAX_PAGES,
            Dec,
            G::Memory,
            "The most pages one MEM_SHARE or MEM_UNSHARE names.",
        ),
        c(
            "BALLOON_MAX_PFNS",
            BALLOON_MAX_PFNS,
            Dec,
            G::Memory,
            "The most page frame numbers one balloon call takes.",
        ),
        c(
            "FLUSH_RANGE_MAX_PAGES",
            FLUSH_RANGE_MAX_PAGES,
            Dec,
            G::Memory,
            "The most pages one MEM_FLUSH_TLB_RANGE names.",
        ),
        c(
            "WakeReason::Event",
            WakeReason::Event as u64,
            Dec,
            G::Vcpu,
            "VCPU_HALT returned because an event is pending.",
        ),
        c(
            "WakeReason::Timeout",
            WakeReason::Timeout as u64,
            Dec,
            G::Vcpu,
            "VCPU_HALT returned because its timeout passed.",
        ),
        c(
            "CRASH_MESSAGE_MAX",
            CRASH_MESSAGE_MAX,
            Dec,
            G::System,
            "The most bytes of a crash message.",
        ),
        c(
            "MULTICALL_MAX_ENTRIES",
            MULTICALL_MAX_ENTRIES,
            Dec,
            G::Batch,
            "The most entries one MULTICALL takes.",
        ),
        c(
            "MULTICALL_STOP_ON_ERROR",
            MULTICALL_STOP_ON_ERROR,
            Bit,
            G::Batch,
            "MULTICALL flag: stop at the first entry that fails.",
        ),
        c(
            "MULTICALL_FLAGS_VALID",
            MULTICALL_FLAGS_VALID,
            Mask,
            G::Batch,
            "The MULTICALL flags this version defines.",
        ),
        c(
            "DEFERRED_QUEUE_CAPACITY",
            DEFERRED_QUEUE_CAPACITY.into(),
            Dec,
            G::Batch,
            "Entries in a deferred queue.",
        ),
        c(
            "DEFERRED_ENTRIES_OFFSET",
            DEFERRED_ENTRIES_OFFSET,
            Dec,
            G::Batch,
            "Byte offset of the first entry in the deferred-queue page.",
        ),
        c(
            "SQ_CAPACITY",
            SQ_CAPACITY.into(),
            Dec,
            G::Batch,
            "Entries in a submission ring.",
        ),
        c(
            "CQ_CAPACITY",
            CQ_CAPACITY.into(),
            Dec,
            G::Batch,
            "Entries in a completion ring.",
        ),
        c(
            "RING_ENTRIES_OFFSET",
            RING_ENTRIES_OFFSET,
            Dec,
            G::Batch,
            "Byte offset of the first entry in a ring page.",
        ),
        c(
            "SQ_NEED_WAKEUP",
            SQ_NEED_WAKEUP.into(),
            Bit,
            G::Batch,
            "Submission-ring flag: the polling host sleeps; notify it.",
        ),
        c(
            "RING_COMPLETION_EVENTS",
            RING_COMPLETION_EVENTS.into(),
            Bit,
            G::Batch,
            "RingSetup flag: post RING_COMPLETION events.",
        ),
        c(
            "RING_FLAGS_VALID",
            RING_FLAGS_VALID.into(),
            Mask,
            G::Batch,
            "The RingSetup flags this version defines.",
        ),
        c(
            "RingMode::Doorbell",
            RingMode::Doorbell as u64,
            Dec,
            G::Batch,
            "The guest notifies the host of submissions.",
        ),
        c(
            "RingMode::HostPolled",
            RingMode::HostPolled as u64,
            Dec,
            G::Batch,
            "A host thread polls the submission ring.",
        ),
    ]
}

fn signature() -> &'static str {
    match std::str::from_utf8(&SIGNATURE) {
        Ok(s) => s,
        Err(_) => "(not ASCII)",
    }
}

/// Looks a constant up by name.
pub fn lookup(name: &str) -> Option<Constant> {
    constants().into_iter().find(|c| c.name == name)
}

/// The token pattern: `{{pvabi:NAME}}`.
pub const TOKEN: &str = r"\{\{pvabi:([A-Za-z0-9_:]+)\}\}";

/// Replaces every `{{pvabi:NAME}}` in `text` with the constant's value. Unknown names are
/// returned as errors (and left in place).
pub fn substitute(text: &str) -> (String, Vec<String>) {
    let re = regex::Regex::new(TOKEN).expect("valid regex");
    let all = constants();
    let mut unknown = Vec::new();
    let out = re.replace_all(text, |caps: &regex::Captures<'_>| {
        match all.iter().find(|c| c.name == &caps[1]) {
            Some(c) => c.text(),
            None => {
                unknown.push(caps[1].to_string());
                caps[0].to_string()
            }
        }
    });
    (out.into_owned(), unknown)
}

/// The constants table of one group, as Markdown.
pub fn table(group: Group) -> String {
    let mut out = String::from("| Constant | Value | Meaning |\n|---|---|---|\n");
    for k in constants().iter().filter(|k| k.group == group) {
        let _ = writeln!(out, "| `{}` | `{}` | {} |", k.name, k.text(), k.meaning);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(mask_text(0b1_1110), "bits 4:1");
        assert_eq!(mask_text(0xffff_ffff), "bits 31:0");
        assert_eq!(mask_text(0), "none");
        assert_eq!(mask_text(0b101), "bit 2, bit 0");
        assert_eq!(
            lookup("DOORBELL_PORT").unwrap().text(),
            format!("0x{DOORBELL_PORT:x}")
        );
        assert_eq!(lookup("SQ_NEED_WAKEUP").unwrap().text(), "bit 0");
    }

    #[test]
    fn names_are_unique() {
        let all = constants();
        for (i, a) in all.iter().enumerate() {
            assert!(
                all[i + 1..].iter().all(|b| b.name != a.name),
                "{} twice",
                a.name
            );
        }
    }

    #[test]
    fn substitutes_known_tokens() {
        let (text, unknown) = substitute("port {{pvabi:DOORBELL_PORT}}, {{pvabi:NOPE}}");
        assert_eq!(
            text,
            format!("port 0x{DOORBELL_PORT:x}, {{{{pvabi:NOPE}}}}")
        );
        assert_eq!(unknown, ["NOPE"]);
    }
}
