//! Spec chapter "Time family": clocks, the shared time page and the one-shot timer.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::calls::{
    arg, plain, res, ArgCheck, BlockDesc, BlockKind, Call, CallDescriptor, DeferClass,
};
use crate::features::Features;

/// `TimePage::flags`: the TSC fields are valid and may be used to interpolate. A host sets it
/// only while every vCPU's TSC advances at one constant rate from a common origin
/// (PVABI-TIME-011), with a `tsc_timestamp` the counters had reached before the update and
/// fresh values at least every 10 ms (PVABI-TIME-036, PVABI-TIME-037).
pub const TIME_PAGE_TSC_VALID: u32 = 1 << 0;

/// The shared time page, at offset 0 of the page registered with TIME_SET_PAGE.
///
/// The host updates it under a sequence lock: it makes `sequence` odd, writes the other
/// fields, then makes `sequence` even again. A reader retries while `sequence` is odd or
/// changed during its read (PVABI-TIME-014).
///
/// When `flags` has [`TIME_PAGE_TSC_VALID`], the monotonic time at TSC value `tsc` is, in C,
/// for a consistent snapshot `t` (a `const pvabi_time_page *`): the TSC delta wraps at 64 bits
/// and the product of the shifted delta and `tsc_mul` keeps 96 bits (PVABI-TIME-015). The
/// shifts are defined C for `tsc_shift` from -63 to 63.
///
/// ```c
/// uint64_t delta = tsc - t->tsc_timestamp;
/// delta = t->tsc_shift >= 0 ? delta << t->tsc_shift : delta >> -t->tsc_shift;
/// uint64_t now_ns = t->monotonic_ns + (uint64_t)(((unsigned __int128)delta * t->tsc_mul) >> 32);
/// ```
///
/// Without `unsigned __int128`, the same 96-bit product from two 64-bit ones:
///
/// ```c
/// uint64_t delta = tsc - t->tsc_timestamp;
/// delta = t->tsc_shift >= 0 ? delta << t->tsc_shift : delta >> -t->tsc_shift;
/// uint64_t now_ns = t->monotonic_ns + (delta >> 32) * t->tsc_mul
///                   + (((delta & 0xffffffffu) * t->tsc_mul) >> 32);
/// ```
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct TimePage {
    /// Sequence lock: odd while the host updates the page.
    pub sequence: u32,
    /// `TIME_PAGE_*` flags.
    pub flags: u32,
    /// Monotonic nanoseconds at `tsc_timestamp`.
    pub monotonic_ns: u64,
    /// TSC value at the last update.
    pub tsc_timestamp: u64,
    /// Wall-clock seconds since the Unix epoch at `tsc_timestamp`.
    pub wallclock_sec: u64,
    /// Nanoseconds part of the wall clock (0 to 999 999 999).
    pub wallclock_nsec: u32,
    /// Shift applied to a TSC delta before `tsc_mul` (negative: right shift).
    pub tsc_shift: i32,
    /// Multiplier, in 2^-32 nanoseconds per (shifted) TSC tick.
    pub tsc_mul: u32,
    /// Reserved, written as 0 by the host.
    pub reserved0: u32,
    /// Reserved, written as 0 by the host.
    pub reserved: [u64; 2],
}

crate::abi_layout!(TimePage as "pvabi_time_page", size 64, align 8 {
    [0] sequence: u32,
    [4] flags: u32,
    [8] monotonic_ns: u64,
    [16] tsc_timestamp: u64,
    [24] wallclock_sec: u64,
    [32] wallclock_nsec: u32,
    [36] tsc_shift: i32,
    [40] tsc_mul: u32,
    [44] reserved0: u32,
    [48] reserved: [u64; 2],
});

/// The steal-time page, at offset 0 of the page a vCPU registers with TIME_SET_STEAL_PAGE
/// (since 1.1). The host updates it under the same sequence lock as [`TimePage`].
///
/// `steal_ns` counts the nanoseconds the vCPU was ready to run guest code but the host was
/// doing something else for it or for others. The guest did not ask for that time: it
/// excludes VCPU_HALT, VCPU_YIELD and the other calls that wait on the guest's behalf.
/// It never decreases.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct StealTimePage {
    /// Sequence lock: odd while the host updates the page.
    pub sequence: u32,
    /// Reserved, written as 0 by the host.
    pub flags: u32,
    /// Nanoseconds stolen from this vCPU since the page was registered.
    pub steal_ns: u64,
    /// Number of times the vCPU was held up (each exit the host handled for it).
    pub preemptions: u64,
    /// Reserved, written as 0 by the host.
    pub reserved: [u64; 5],
}

crate::abi_layout!(StealTimePage as "pvabi_steal_time_page", size 64, align 8 {
    [0] sequence: u32,
    [4] flags: u32,
    [8] steal_ns: u64,
    [16] preemptions: u64,
    [24] reserved: [u64; 5],
});

/// The Time family's calls.
pub const CALLS: &[CallDescriptor] = &[
    CallDescriptor {
        feature: Some(Features::TIME),
        results: &[res(
            "ns",
            "Nanoseconds since the VM started; never decreases.",
        )],
        batchable: true,
        ..plain(
            Call::TimeMonotonic,
            "TIME_MONOTONIC",
            "Returns monotonic time in nanoseconds.",
        )
    },
    CallDescriptor {
        feature: Some(Features::TIME),
        results: &[
            res("seconds", "Seconds since the Unix epoch."),
            res("nanoseconds", "Nanoseconds, 0 to 999 999 999."),
        ],
        batchable: true,
        ..plain(
            Call::TimeWallclock,
            "TIME_WALLCLOCK",
            "Returns wall-clock time.",
        )
    },
    CallDescriptor {
        feature: Some(Features::TIME),
        results: &[
            res("tsc_hz", "TSC frequency in Hz, or 0 if unknown."),
            res(
                "resolution_ns",
                "Resolution of the one-shot timer in nanoseconds.",
            ),
        ],
        batchable: true,
        ..plain(
            Call::TimeFrequency,
            "TIME_FREQUENCY",
            "Returns the TSC frequency and the timer resolution.",
        )
    },
    CallDescriptor {
        feature: Some(Features::TIME),
        args: &[arg(
            "page",
            ArgCheck::Any,
            "Guest-physical address of a 4 KiB-aligned page, or 0 to unregister.",
        )],
        block: Some(BlockDesc {
            addr_arg: 0,
            align: 4096,
            kind: BlockKind::SharedPage {
                header: &TimePage::ABI_LAYOUT,
            },
        }),
        ..plain(
            Call::TimeSetPage,
            "TIME_SET_PAGE",
            "Registers (or unregisters) the shared time page.",
        )
    },
    CallDescriptor {
        feature: Some(Features::TIME),
        args: &[arg(
            "deadline_ns",
            ArgCheck::Any,
            "Monotonic deadline in nanoseconds; 0 cancels the timer.",
        )],
        batchable: true,
        deferral: DeferClass::Cpu,
        ..plain(
            Call::TimeSetTimer,
            "TIME_SET_TIMER",
            "Arms or cancels the calling vCPU's one-shot timer.",
        )
    },
    CallDescriptor {
        feature: Some(Features::STEAL_TIME),
        since: crate::version::V1_1,
        args: &[arg(
            "page",
            ArgCheck::Any,
            "Guest-physical address of a 4 KiB-aligned page, or 0 to unregister.",
        )],
        block: Some(BlockDesc {
            addr_arg: 0,
            align: 4096,
            kind: BlockKind::SharedPage {
                header: &StealTimePage::ABI_LAYOUT,
            },
        }),
        ..plain(
            Call::TimeSetStealPage,
            "TIME_SET_STEAL_PAGE",
            "Registers (or unregisters) the calling vCPU's steal-time page.",
        )
    },
];
