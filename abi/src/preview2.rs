//! Major version 2, preview: what changes incompatibly in 2.0.
//!
//! pvabi 2.0 is not released. This module exists to show, and to test, how a major version
//! can change the ABI without breaking 1.x guests: a host serves 1.x and 2.0 side by side,
//! and each guest picks its major in NEGOTIATE. Everything not listed here is as in 1.1.
//!
//! The one incompatible change of the preview is the time page layout: [`TimePageV2`]
//! has a 64-bit sequence counter, wall-clock time as one 64-bit nanosecond count, and a
//! 64-bit TSC multiplier. A 1.x guest reading it would see the sequence's upper half as
//! `flags` and would misread every field, which is why a host writes the layout of the
//! major it accepted.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// 2.0 preview, not a released ABI: the shared time page in major version 2 (TIME_SET_PAGE
/// writes this layout, instead of `TimePage`'s, only when NEGOTIATE accepted major 2:
/// PVABI-COMPAT-003).
///
/// The sequence lock works as in 1.x, on a 64-bit counter. When `flags` has
/// [`TIME_PAGE_V2_TSC_VALID`], the monotonic time at TSC value `tsc` is, in C, for a
/// consistent snapshot `t` (a `const pvabi_v2_time_page *`): there is no shift, and the product
/// of the 64-bit delta and the 64-bit `tsc_mul` needs 128 bits.
///
/// ```c
/// uint64_t delta = tsc - t->tsc_timestamp;
/// uint64_t now_ns = t->monotonic_ns + (uint64_t)(((unsigned __int128)delta * t->tsc_mul) >> 32);
/// ```
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct TimePageV2 {
    /// Sequence lock: odd while the host updates the page.
    pub sequence: u64,
    /// Monotonic nanoseconds at `tsc_timestamp`.
    pub monotonic_ns: u64,
    /// Wall-clock nanoseconds since the Unix epoch at `tsc_timestamp`.
    pub wallclock_ns: u64,
    /// TSC value at the last update.
    pub tsc_timestamp: u64,
    /// Multiplier, in 2^-32 nanoseconds per TSC tick.
    pub tsc_mul: u64,
    /// `TIME_PAGE_V2_*` flags.
    pub flags: u32,
    /// Reserved, written as 0 by the host.
    pub reserved0: u32,
    /// Reserved, written as 0 by the host.
    pub reserved: [u64; 2],
}

/// 2.0 preview, not a released ABI: `TimePageV2::flags`, the TSC fields are valid.
pub const TIME_PAGE_V2_TSC_VALID: u32 = 1 << 0;

crate::abi_layout!(TimePageV2 as "pvabi_v2_time_page", size 64, align 8 {
    [0] sequence: u64,
    [8] monotonic_ns: u64,
    [16] wallclock_ns: u64,
    [24] tsc_timestamp: u64,
    [32] tsc_mul: u64,
    [40] flags: u32,
    [44] reserved0: u32,
    [48] reserved: [u64; 2],
});

/// The structures of the 2.0 preview that differ from 1.x.
pub const STRUCTS: &[&crate::layout::StructLayout] = &[&TimePageV2::ABI_LAYOUT];
