//! The call table: one machine-readable descriptor per call.
//!
//! A call code is `family << 8 | function`. Each family's module (one per spec chapter) holds
//! its descriptors; [`FAMILIES`] lists the families, and [`all`] walks every call in code
//! order. The spec's call tables, the C header's call codes, the ABI snapshots and the
//! conformance suite are all generated from these descriptors.

use zerocopy::{Immutable, IntoBytes, KnownLayout, TryFromBytes};

use crate::convention::{ARG_REGISTERS, RESULT_REGISTERS};
use crate::features::Features;
use crate::layout::StructLayout;
use crate::version::Version;

/// Every call code defined by this version.
#[repr(u32)]
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    TryFromBytes,
    IntoBytes,
    KnownLayout,
    Immutable,
)]
pub enum Call {
    /// Base: the spec versions served and negotiated.
    GetSpecVersion = 0x0000,
    /// Base: the implementation's identity.
    GetImplId = 0x0001,
    /// Base: the implementation's version.
    GetImplVersion = 0x0002,
    /// Base: whether a call is implemented and callable.
    ProbeCall = 0x0003,
    /// Base: offered and granted features.
    ProbeFeatures = 0x0004,
    /// Base: the version and feature handshake.
    Negotiate = 0x0005,
    /// Console: write up to 32 bytes passed in registers.
    ConsoleWriteRegs = 0x0100,
    /// Console: write a buffer in guest memory.
    ConsoleWrite = 0x0101,
    /// Time: monotonic nanoseconds.
    TimeMonotonic = 0x0200,
    /// Time: wall-clock time.
    TimeWallclock = 0x0201,
    /// Time: TSC frequency and timer resolution.
    TimeFrequency = 0x0202,
    /// Time: register the shared time page.
    TimeSetPage = 0x0203,
    /// Time: arm or cancel the one-shot timer.
    TimeSetTimer = 0x0204,
    /// Time: register the calling vCPU's steal-time page (since 1.1).
    TimeSetStealPage = 0x0205,
    /// Events: register the event queue.
    EventsSetQueue = 0x0300,
    /// Events: set the event mask.
    EventsSetMask = 0x0301,
    /// Events: send a user event to a vCPU.
    EventsSend = 0x0302,
    /// Memory: share pages with the host.
    MemShare = 0x0400,
    /// Memory: stop sharing pages.
    MemUnshare = 0x0401,
    /// Memory: give pages back to the host.
    MemBalloonRelease = 0x0402,
    /// Memory: take released pages back.
    MemBalloonReclaim = 0x0403,
    /// Memory: write a page-table entry.
    MemUpdatePte = 0x0404,
    /// Memory: flush the caller's TLB.
    MemFlushTlbLocal = 0x0405,
    /// Memory: flush a virtual range on every vCPU.
    MemFlushTlbRange = 0x0406,
    /// Memory: flush every vCPU's TLB.
    MemFlushTlbAll = 0x0407,
    /// vCPU: the caller's index and the vCPU count.
    VcpuInfo = 0x0500,
    /// vCPU: start a secondary vCPU.
    VcpuStart = 0x0501,
    /// vCPU: stop the calling vCPU.
    VcpuStop = 0x0502,
    /// vCPU: yield the physical CPU.
    VcpuYield = 0x0503,
    /// vCPU: halt until an event.
    VcpuHalt = 0x0504,
    /// vCPU: wake another vCPU.
    VcpuKick = 0x0505,
    /// System: power off.
    SystemShutdown = 0x0600,
    /// System: reboot.
    SystemReboot = 0x0601,
    /// System: report a crash with a message.
    SystemCrash = 0x0602,
    /// Batch: run a batch of calls.
    Multicall = 0x0700,
    /// Batch: register the deferred queue.
    DeferSetQueue = 0x0701,
    /// Batch: drain the deferred queue.
    DeferFlush = 0x0702,
    /// Batch: register the submission/completion rings.
    RingSetup = 0x0703,
    /// Batch: process the submission ring now.
    RingEnter = 0x0704,
    /// Batch: run a batch of calls whose entries are on a list of pages (since 1.3).
    MulticallPages = 0x0705,
}

impl Call {
    /// Decodes a call code as found in `rax`; `None` if this version defines no such call.
    ///
    /// ```
    /// use pvabi_abi::calls::Call;
    /// assert_eq!(Call::from_code(0x0101), Some(Call::ConsoleWrite));
    /// assert_eq!(Call::from_code(0x0101 | 1 << 32), None);
    /// assert_eq!(Call::from_code(0xffff), None);
    /// ```
    pub fn from_code(code: u64) -> Option<Call> {
        let code = u32::try_from(code).ok()?;
        Call::try_read_from_bytes(code.as_bytes()).ok()
    }

    /// The code as placed in `rax`.
    pub const fn code(self) -> u32 {
        self as u32
    }

    /// The family, from bits 15:8 of the code.
    pub const fn family(self) -> Family {
        FAMILIES[(self as u32 >> 8) as usize].family
    }

    /// The call's descriptor.
    pub fn descriptor(self) -> &'static CallDescriptor {
        let info = &FAMILIES[(self as u32 >> 8) as usize];
        let d = &info.calls[(self as u32 & 0xff) as usize];
        debug_assert_eq!(d.call, self);
        d
    }
}

/// A call family: one chapter of the spec.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// Base: always present, works before negotiation.
    Base = 0,
    /// Console output.
    Console = 1,
    /// Time.
    Time = 2,
    /// Events.
    Events = 3,
    /// Memory.
    Memory = 4,
    /// vCPU control.
    Vcpu = 5,
    /// System control.
    System = 6,
    /// Batching, deferral and rings.
    Batch = 7,
}

/// What the spec says about a family.
#[derive(Clone, Copy, Debug)]
pub struct FamilyInfo {
    /// The family.
    pub family: Family,
    /// Its name in the spec.
    pub name: &'static str,
    /// Its calls, dense in function order (`calls[f]` has function number `f`).
    pub calls: &'static [CallDescriptor],
}

/// Every family, indexed by family number.
pub const FAMILIES: [FamilyInfo; 8] = [
    FamilyInfo {
        family: Family::Base,
        name: "Base",
        calls: crate::base::CALLS,
    },
    FamilyInfo {
        family: Family::Console,
        name: "Console",
        calls: crate::console::CALLS,
    },
    FamilyInfo {
        family: Family::Time,
        name: "Time",
        calls: crate::time::CALLS,
    },
    FamilyInfo {
        family: Family::Events,
        name: "Events",
        calls: crate::events::CALLS,
    },
    FamilyInfo {
        family: Family::Memory,
        name: "Memory",
        calls: crate::memory::CALLS,
    },
    FamilyInfo {
        family: Family::Vcpu,
        name: "vCPU",
        calls: crate::vcpu::CALLS,
    },
    FamilyInfo {
        family: Family::System,
        name: "System",
        calls: crate::system::CALLS,
    },
    FamilyInfo {
        family: Family::Batch,
        name: "Batching, deferral and rings",
        calls: crate::batch::CALLS,
    },
];

/// Every call descriptor, in code order.
///
/// ```
/// let names: Vec<_> = pvabi_abi::calls::all().map(|d| d.name).take(2).collect();
/// assert_eq!(names, ["GET_SPEC_VERSION", "GET_IMPL_ID"]);
/// ```
pub fn all() -> impl Iterator<Item = &'static CallDescriptor> {
    FAMILIES.iter().flat_map(|f| f.calls.iter())
}

/// Which deferral class a call belongs to (which calls may wait in the deferred queue).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeferClass {
    /// The call may not be deferred.
    None,
    /// Page-table updates (VMI's DEFER_MMU).
    Mmu,
    /// Per-vCPU state such as the timer and the event mask (VMI's DEFER_CPU).
    Cpu,
}

impl DeferClass {
    /// The spec's name of the class.
    pub const fn name(self) -> &'static str {
        match self {
            DeferClass::None => "none",
            DeferClass::Mmu => "MMU",
            DeferClass::Cpu => "CPU",
        }
    }
}

/// How a host validates a register argument (check step 5 of the precedence order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ArgCheck {
    /// Any value.
    Any,
    /// A value in `min..=max`.
    Range {
        /// Smallest valid value.
        min: u64,
        /// Largest valid value.
        max: u64,
    },
    /// Only these bits may be set; the others are reserved and must be zero.
    Mask(u64),
    /// A vCPU index below the number of vCPUs.
    VcpuIndex,
}

impl ArgCheck {
    /// Whether `value` passes the check, given the number of vCPUs.
    pub const fn accepts(self, value: u64, vcpus: u32) -> bool {
        match self {
            ArgCheck::Any => true,
            ArgCheck::Range { min, max } => value >= min && value <= max,
            ArgCheck::Mask(mask) => value & !mask == 0,
            ArgCheck::VcpuIndex => value < vcpus as u64,
        }
    }
}

/// One argument of a call.
#[derive(Clone, Copy, Debug)]
pub struct ArgDesc {
    /// Name of the argument.
    pub name: &'static str,
    /// What makes it valid.
    pub check: ArgCheck,
    /// What it means.
    pub description: &'static str,
}

/// One result of a call.
#[derive(Clone, Copy, Debug)]
pub struct ResultDesc {
    /// Name of the result.
    pub name: &'static str,
    /// What it means.
    pub description: &'static str,
}

/// The memory block a call takes.
#[derive(Clone, Copy, Debug)]
pub struct BlockDesc {
    /// The argument that holds the block's guest-physical address.
    pub addr_arg: usize,
    /// Its required alignment in bytes.
    pub align: u64,
    /// What the block is.
    pub kind: BlockKind,
}

/// The kinds of memory block.
#[derive(Clone, Copy, Debug)]
pub enum BlockKind {
    /// One structure.
    Struct(&'static StructLayout),
    /// A byte buffer whose length is argument `len_arg`, at most `max` bytes.
    Bytes {
        /// The argument that holds the length.
        len_arg: usize,
        /// The largest length.
        max: u64,
    },
    /// An array of `elem_size`-byte elements whose count is argument `count_arg`.
    Array {
        /// The element type's name.
        elem: &'static str,
        /// The element size in bytes.
        elem_size: u64,
        /// The argument that holds the count.
        count_arg: usize,
        /// The largest count.
        max: u64,
    },
    /// One 64-bit word that the call writes (a page-table entry).
    Word,
    /// A whole 4 KiB page registered as a shared area, owned by the host from then on, that
    /// starts with `header`. Address 0 unregisters.
    SharedPage {
        /// The structure at the start of the page.
        header: &'static StructLayout,
    },
}

impl BlockDesc {
    /// The block's size in bytes for the given argument registers.
    pub fn size(&self, args: &[u64; 6]) -> u64 {
        match self.kind {
            BlockKind::Struct(l) => l.size as u64,
            BlockKind::Bytes { len_arg, .. } => args[len_arg],
            BlockKind::Array {
                elem_size,
                count_arg,
                ..
            } => elem_size.saturating_mul(args[count_arg]),
            BlockKind::Word => 8,
            BlockKind::SharedPage { .. } => crate::convention::PAGE_SIZE,
        }
    }
}

/// Everything the spec says about one call, in machine-readable form.
#[derive(Clone, Copy, Debug)]
pub struct CallDescriptor {
    /// The call.
    pub call: Call,
    /// Its name, as used after `PVABI_CALL_` in C.
    pub name: &'static str,
    /// The feature it needs; `None` for Base calls, which need none.
    pub feature: Option<Features>,
    /// The version that introduced it.
    pub since: Version,
    /// Arguments, in register order ([`ARG_REGISTERS`]).
    pub args: &'static [ArgDesc],
    /// Results, in register order ([`RESULT_REGISTERS`]).
    pub results: &'static [ResultDesc],
    /// The memory block it takes, if any.
    pub block: Option<BlockDesc>,
    /// Whether it may appear in a MULTICALL entry or a ring submission.
    pub batchable: bool,
    /// Whether, and in which class, it may be placed in the deferred queue.
    pub deferral: DeferClass,
    /// Whether the host drains the caller's deferred queue before handling it.
    pub sync_point: bool,
    /// Whether it returns to the caller on success (false for stop, shutdown, reboot, crash).
    pub returns: bool,
    /// One sentence on what it does.
    pub summary: &'static str,
}

impl CallDescriptor {
    /// The register of each argument, paired with its description.
    pub fn arg_registers(&self) -> impl Iterator<Item = (crate::convention::Register, &ArgDesc)> {
        ARG_REGISTERS.iter().copied().zip(self.args.iter())
    }

    /// The register of each result, paired with its description.
    pub fn result_registers(
        &self,
    ) -> impl Iterator<Item = (crate::convention::Register, &ResultDesc)> {
        RESULT_REGISTERS.iter().copied().zip(self.results.iter())
    }

    /// The family of the call.
    pub const fn family(&self) -> Family {
        self.call.family()
    }
}

/// Shorthand used by the family modules to write descriptors compactly.
pub(crate) const fn arg(name: &'static str, check: ArgCheck, description: &'static str) -> ArgDesc {
    ArgDesc {
        name,
        check,
        description,
    }
}

/// Shorthand used by the family modules to write descriptors compactly.
pub(crate) const fn res(name: &'static str, description: &'static str) -> ResultDesc {
    ResultDesc { name, description }
}

/// A descriptor with the defaults of a plain call: Base, 1.0, no block, not batchable, not
/// deferrable, not a sync point, returns. Family modules override fields with `..`.
pub(crate) const fn plain(call: Call, name: &'static str, summary: &'static str) -> CallDescriptor {
    CallDescriptor {
        call,
        name,
        feature: None,
        since: crate::version::V1_0,
        args: &[],
        results: &[],
        block: None,
        batchable: false,
        deferral: DeferClass::None,
        sync_point: false,
        returns: true,
        summary,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convention::{MAX_ARGS, MAX_RESULTS};
    use std::{format, string::String, vec::Vec};

    #[test]
    fn table_is_dense_and_matches_the_enum() {
        for (fi, fam) in FAMILIES.iter().enumerate() {
            assert_eq!(fam.family as usize, fi);
            for (i, d) in fam.calls.iter().enumerate() {
                assert_eq!(d.call.code(), ((fi as u32) << 8) | i as u32, "{}", d.name);
                assert_eq!(d.call.descriptor().name, d.name);
            }
        }
        // Every code the enum accepts has a descriptor, and no other code does.
        let described: std::collections::BTreeSet<u32> = all().map(|d| d.call.code()).collect();
        for code in 0..0x1_0000u32 {
            assert_eq!(
                Call::from_code(code.into()).is_some(),
                described.contains(&code),
                "{code:#x}"
            );
        }
    }

    #[test]
    fn descriptors_are_consistent() {
        for d in all() {
            assert!(d.args.len() <= MAX_ARGS, "{}", d.name);
            assert!(d.results.len() <= MAX_RESULTS, "{}", d.name);
            assert_eq!(
                d.feature.is_none(),
                d.family() == Family::Base,
                "{}",
                d.name
            );
            if let Some(f) = d.feature {
                assert_eq!(f.bits().count_ones(), 1, "{}", d.name);
            }
            if let Some(b) = d.block {
                assert!(b.addr_arg < d.args.len(), "{}", d.name);
                assert!(b.align.is_power_of_two(), "{}", d.name);
                match b.kind {
                    BlockKind::Bytes { len_arg, max } => {
                        assert!(len_arg < d.args.len() && max <= 4096)
                    }
                    BlockKind::Array {
                        count_arg,
                        elem_size,
                        max,
                        ..
                    } => {
                        assert!(
                            count_arg < d.args.len() && elem_size * max <= 4096,
                            "{}",
                            d.name
                        )
                    }
                    BlockKind::Struct(l) => assert_eq!(b.align, l.align as u64),
                    BlockKind::SharedPage { .. } => assert_eq!(b.align, 4096),
                    BlockKind::Word => assert_eq!(b.align, 8),
                }
            }
            // Deferred calls carry no results and at most three arguments (a deferred entry).
            if d.deferral != DeferClass::None {
                assert!(
                    d.results.is_empty() || d.call == Call::EventsSetMask,
                    "{}",
                    d.name
                );
                assert!(d.args.len() <= 3, "{}", d.name);
                assert!(!d.sync_point, "{}", d.name);
            }
            if !d.returns {
                assert!(!d.batchable && d.sync_point, "{}", d.name);
            }
            let mut names: Vec<&str> = d.args.iter().map(|a| a.name).collect();
            names.sort();
            names.dedup();
            assert_eq!(
                names.len(),
                d.args.len(),
                "{}: duplicate argument name",
                d.name
            );
        }
    }

    #[test]
    fn names_match_variants() {
        for d in all() {
            let debug = format!("{:?}", d.call);
            let snake: String = debug
                .chars()
                .enumerate()
                .flat_map(|(i, c)| {
                    let sep = (i > 0 && c.is_ascii_uppercase()).then_some('_');
                    sep.into_iter()
                        .chain(core::iter::once(c.to_ascii_uppercase()))
                })
                .collect();
            assert_eq!(snake, d.name);
        }
    }
}
