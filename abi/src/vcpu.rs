//! Spec chapter "vCPU family": starting, stopping, yielding, halting and kicking vCPUs.

use zerocopy::{Immutable, IntoBytes, KnownLayout, TryFromBytes};

use crate::calls::{arg, plain, res, ArgCheck, BlockDesc, BlockKind, Call, CallDescriptor};
use crate::convention::ReservedU64;
use crate::features::Features;

/// Why VCPU_HALT returned.
#[repr(u32)]
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, TryFromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub enum WakeReason {
    /// An event is pending for the vCPU (in its queue, or latched when it has none).
    Event = 1,
    /// The timeout passed.
    Timeout = 2,
}

/// The state a secondary vCPU starts in (VCPU_START's memory block). The vCPU starts in
/// 64-bit mode with the boot segments, at `rip`, with `rsp`, `rdi = arg`, interrupts disabled.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, TryFromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct VcpuStartState {
    /// Instruction pointer.
    pub rip: u64,
    /// Stack pointer.
    pub rsp: u64,
    /// Value of `rdi` at entry.
    pub arg: u64,
    /// Page-table root; 0 = the page tables the boot vCPU started with.
    pub cr3: u64,
    /// Reserved, must be 0.
    pub flags: ReservedU64,
    /// Reserved, must be 0.
    pub reserved: [ReservedU64; 3],
}

crate::abi_layout!(VcpuStartState as "pvabi_vcpu_start_state", size 64, align 8 {
    [0] rip: u64,
    [8] rsp: u64,
    [16] arg: u64,
    [24] cr3: u64,
    [32] flags: ReservedU64,
    [40] reserved: [ReservedU64; 3],
});

/// The vCPU family's calls.
pub const CALLS: &[CallDescriptor] = &[
    CallDescriptor {
        feature: Some(Features::VCPU),
        results: &[
            res("index", "The calling vCPU's index."),
            res("count", "The number of vCPUs."),
        ],
        batchable: true,
        ..plain(
            Call::VcpuInfo,
            "VCPU_INFO",
            "Returns the caller's vCPU index and the number of vCPUs.",
        )
    },
    CallDescriptor {
        feature: Some(Features::VCPU),
        args: &[
            arg("vcpu", ArgCheck::VcpuIndex, "The vCPU to start."),
            arg(
                "state",
                ArgCheck::Any,
                "Guest-physical address of a VcpuStartState.",
            ),
        ],
        block: Some(BlockDesc {
            addr_arg: 1,
            align: 8,
            kind: BlockKind::Struct(&VcpuStartState::ABI_LAYOUT),
        }),
        sync_point: true,
        ..plain(
            Call::VcpuStart,
            "VCPU_START",
            "Starts a secondary vCPU; INVALID_STATE if it is running.",
        )
    },
    CallDescriptor {
        feature: Some(Features::VCPU),
        sync_point: true,
        returns: false,
        ..plain(
            Call::VcpuStop,
            "VCPU_STOP",
            "Stops the calling vCPU; vCPU 0 cannot stop (INVALID_STATE).",
        )
    },
    CallDescriptor {
        feature: Some(Features::VCPU),
        batchable: true,
        ..plain(
            Call::VcpuYield,
            "VCPU_YIELD",
            "Gives up the physical CPU for a while.",
        )
    },
    CallDescriptor {
        feature: Some(Features::VCPU),
        args: &[arg(
            "timeout_ns",
            ArgCheck::Any,
            "Relative timeout in nanoseconds; 0 waits without a timeout.",
        )],
        results: &[res(
            "reason",
            "WakeReason: 1 an event is pending, 2 the timeout passed.",
        )],
        sync_point: true,
        ..plain(
            Call::VcpuHalt,
            "VCPU_HALT",
            "Halts the caller until an event is pending for it, or the timeout.",
        )
    },
    CallDescriptor {
        feature: Some(Features::VCPU),
        args: &[arg("vcpu", ArgCheck::VcpuIndex, "The vCPU to kick.")],
        batchable: true,
        sync_point: true,
        ..plain(
            Call::VcpuKick,
            "VCPU_KICK",
            "Posts a KICK event to a vCPU and wakes it if halted.",
        )
    },
];
