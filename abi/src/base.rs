//! Spec chapter "Base family": discovery of versions, implementation and features, and the
//! NEGOTIATE handshake. The Base family needs no feature bit, works before negotiation and is
//! never absent.

use zerocopy::{Immutable, IntoBytes, KnownLayout, TryFromBytes};

use crate::calls::{arg, plain, res, ArgCheck, Call, CallDescriptor};

/// The implementation id of the pvabi reference host.
pub const IMPL_ID_REFERENCE: u32 = 1;
/// Implementation ids from this value up are free for vendors to choose.
pub const IMPL_ID_VENDOR_FIRST: u32 = 0x8000_0000;

/// The bits of NEGOTIATE's `requested` argument that carry a version; bits 63:32 are reserved.
pub const NEGOTIATE_REQUESTED_MASK: u64 = 0xffff_ffff;
/// NEGOTIATE defines no flag in this version: `flags` must be zero.
pub const NEGOTIATE_FLAGS_MASK: u64 = 0;

/// What PROBE_CALL reports about a call.
#[repr(u32)]
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, TryFromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub enum CallState {
    /// The implementation does not implement the call.
    Absent = 0,
    /// Implemented, but not callable now: NEGOTIATE has not granted its feature.
    Available = 1,
    /// Callable now.
    Ready = 2,
}

/// The Base family's calls.
pub const CALLS: &[CallDescriptor] = &[
    CallDescriptor {
        results: &[
            res("highest", "Highest version served (major << 16 | minor)."),
            res("lowest", "Lowest version served."),
            res(
                "negotiated",
                "The version NEGOTIATE accepted, or 0 before NEGOTIATE.",
            ),
        ],
        batchable: true,
        ..plain(
            Call::GetSpecVersion,
            "GET_SPEC_VERSION",
            "Returns the spec versions the host serves and the negotiated one.",
        )
    },
    CallDescriptor {
        results: &[
            res(
                "id",
                "Implementation id (1 = pvabi reference host; 0x80000000 and up = vendor).",
            ),
            res(
                "name_lo",
                "Bytes 0..8 of the 16-byte ASCII implementation name, NUL-padded.",
            ),
            res("name_hi", "Bytes 8..16 of the name."),
        ],
        batchable: true,
        ..plain(
            Call::GetImplId,
            "GET_IMPL_ID",
            "Returns the implementation's id and name.",
        )
    },
    CallDescriptor {
        results: &[res(
            "version",
            "Implementation version: major << 32 | minor << 16 | patch.",
        )],
        batchable: true,
        ..plain(
            Call::GetImplVersion,
            "GET_IMPL_VERSION",
            "Returns the implementation's own version.",
        )
    },
    CallDescriptor {
        args: &[arg("code", ArgCheck::Any, "The call code to probe.")],
        results: &[
            res(
                "state",
                "CallState: 0 absent, 1 available after NEGOTIATE grants its feature, 2 ready.",
            ),
            res(
                "feature",
                "The mask of the feature the call needs (one bit set); 0 for Base calls and absent ones.",
            ),
        ],
        batchable: true,
        ..plain(
            Call::ProbeCall,
            "PROBE_CALL",
            "Reports whether a call is implemented and callable now.",
        )
    },
    CallDescriptor {
        results: &[
            res(
                "offered",
                "Features the host offers at its highest version.",
            ),
            res("granted", "Features granted by NEGOTIATE (0 before)."),
        ],
        batchable: true,
        ..plain(
            Call::ProbeFeatures,
            "PROBE_FEATURES",
            "Returns the offered and granted feature masks.",
        )
    },
    CallDescriptor {
        args: &[
            arg(
                "requested",
                ArgCheck::Mask(NEGOTIATE_REQUESTED_MASK),
                "Bits 31:16 the major version, bits 15:0 the minimum minor; bits 63:32 reserved.",
            ),
            arg(
                "required",
                ArgCheck::Any,
                "Features the guest cannot run without.",
            ),
            arg(
                "optional",
                ArgCheck::Any,
                "Features the guest uses if granted; unknown bits are ignored.",
            ),
            arg(
                "flags",
                ArgCheck::Mask(NEGOTIATE_FLAGS_MASK),
                "Reserved, must be 0.",
            ),
        ],
        results: &[
            res(
                "accepted",
                "The accepted version: the requested major and the host's highest minor of it.",
            ),
            res(
                "granted",
                "required | (optional & offered); locked from now on.",
            ),
        ],
        sync_point: true,
        ..plain(
            Call::Negotiate,
            "NEGOTIATE",
            "Agrees on a version and a feature set, once, for the whole VM.",
        )
    },
];
