//! Spec chapter "Status codes".
//!
//! Every call returns a [`Status`] in `rax`, zero-extended to 64 bits. Status codes are numbered
//! in the order of the checks a host makes ([`CHECK_ORDER`]): when several errors apply, the
//! first failing check decides, so the answer to a bad call is fully defined. On any status
//! other than [`Status::Success`] every result register is unspecified.

use zerocopy::{Immutable, IntoBytes, KnownLayout, TryFromBytes};

/// The status of a call (`rax` after the call; `status` fields in batch entries).
#[repr(u32)]
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, TryFromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub enum Status {
    /// The call completed.
    Success = 0,
    /// The call code is unknown, or this implementation does not implement the call.
    NotSupported = 1,
    /// A call outside the Base family was made before NEGOTIATE succeeded.
    NotNegotiated = 2,
    /// The feature the call belongs to was not granted by NEGOTIATE.
    NotGranted = 3,
    /// The call was made where its descriptor forbids it: a non-batchable call in a batch or a
    /// ring, a nested MULTICALL, or a call without a deferral class in the deferred queue.
    NotAllowedHere = 4,
    /// A register argument or a field of a memory block is out of range, or a reserved bit or
    /// field is not zero.
    InvalidParameter = 5,
    /// A memory block is not aligned to its required alignment.
    Misaligned = 6,
    /// A memory block crosses a 4 KiB page boundary.
    CrossesPage = 7,
    /// A memory block or a referenced guest-physical page is not guest RAM.
    InvalidAddress = 8,
    /// A memory block overlaps a page the host owns (a registered shared page).
    AccessDenied = 9,
    /// NEGOTIATE: the requested major version is not served, or its minimum minor is too high.
    VersionUnsupported = 10,
    /// NEGOTIATE: a required feature is not offered.
    FeatureUnavailable = 11,
    /// NEGOTIATE was already completed; the result is locked.
    Locked = 12,
    /// The call is not valid in the current state (for example, starting a running vCPU).
    InvalidState = 13,
    /// A queue or ring is full; the call may succeed if retried later.
    Busy = 14,
    /// The host lacks the resources to complete the call.
    NoResources = 15,
    /// A long call was preempted; re-issue it with the resume index it returned.
    Incomplete = 16,
}

impl Status {
    /// Every status code, in numeric (and precedence) order.
    ///
    /// cbindgen:ignore
    pub const ALL: [Status; 17] = [
        Status::Success,
        Status::NotSupported,
        Status::NotNegotiated,
        Status::NotGranted,
        Status::NotAllowedHere,
        Status::InvalidParameter,
        Status::Misaligned,
        Status::CrossesPage,
        Status::InvalidAddress,
        Status::AccessDenied,
        Status::VersionUnsupported,
        Status::FeatureUnavailable,
        Status::Locked,
        Status::InvalidState,
        Status::Busy,
        Status::NoResources,
        Status::Incomplete,
    ];

    /// Decodes a raw status as found in `rax`; `None` for a value no version defines.
    ///
    /// ```
    /// use pvabi_abi::status::Status;
    /// assert_eq!(Status::from_raw(5), Some(Status::InvalidParameter));
    /// assert_eq!(Status::from_raw(1 << 32), None);
    /// ```
    pub fn from_raw(raw: u64) -> Option<Status> {
        let raw = u32::try_from(raw).ok()?;
        Status::try_read_from_bytes(raw.as_bytes()).ok()
    }

    /// The value as placed in `rax`.
    pub const fn raw(self) -> u64 {
        self as u32 as u64
    }

    /// The specification's name, as used after `PVABI_STATUS_` in C.
    pub const fn name(self) -> &'static str {
        match self {
            Status::Success => "SUCCESS",
            Status::NotSupported => "NOT_SUPPORTED",
            Status::NotNegotiated => "NOT_NEGOTIATED",
            Status::NotGranted => "NOT_GRANTED",
            Status::NotAllowedHere => "NOT_ALLOWED_HERE",
            Status::InvalidParameter => "INVALID_PARAMETER",
            Status::Misaligned => "MISALIGNED",
            Status::CrossesPage => "CROSSES_PAGE",
            Status::InvalidAddress => "INVALID_ADDRESS",
            Status::AccessDenied => "ACCESS_DENIED",
            Status::VersionUnsupported => "VERSION_UNSUPPORTED",
            Status::FeatureUnavailable => "FEATURE_UNAVAILABLE",
            Status::Locked => "LOCKED",
            Status::InvalidState => "INVALID_STATE",
            Status::Busy => "BUSY",
            Status::NoResources => "NO_RESOURCES",
            Status::Incomplete => "INCOMPLETE",
        }
    }

    /// One sentence on what the status means.
    pub const fn description(self) -> &'static str {
        match self {
            Status::Success => "The call completed.",
            Status::NotSupported => "The call code is unknown, or the implementation does not implement the call.",
            Status::NotNegotiated => "A call outside the Base family was made before NEGOTIATE succeeded.",
            Status::NotGranted => "The feature the call belongs to was not granted by NEGOTIATE.",
            Status::NotAllowedHere => {
                "The call was made in a context its descriptor forbids (batch, ring, deferred queue, nesting)."
            }
            Status::InvalidParameter => {
                "A register argument or block field is out of range, or a reserved bit or field is not zero."
            }
            Status::Misaligned => "A memory block is not aligned to its required alignment.",
            Status::CrossesPage => "A memory block crosses a 4 KiB page boundary.",
            Status::InvalidAddress => "A memory block or referenced page is not guest RAM.",
            Status::AccessDenied => "A memory block overlaps a page the host owns.",
            Status::VersionUnsupported => "The requested major version is not served, or its minimum minor is too high.",
            Status::FeatureUnavailable => "A required feature is not offered.",
            Status::Locked => "NEGOTIATE already completed; its result is locked.",
            Status::InvalidState => "The call is not valid in the current state.",
            Status::Busy => "A queue or ring is full; retrying later may succeed.",
            Status::NoResources => "The host lacks the resources to complete the call.",
            Status::Incomplete => "The call was preempted; re-issue it with the returned resume index.",
        }
    }
}

impl core::fmt::Display for Status {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// One step of the order in which a host checks a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Check {
    /// What is checked.
    pub what: &'static str,
    /// The status returned when this check is the first to fail. `None` for the last step,
    /// whose statuses are call-specific.
    pub status: Option<Status>,
}

/// The total precedence order: a host makes these checks in this order and returns the status
/// of the first that fails. The call-specific step returns the lowest-numbered status among
/// those that apply.
pub const CHECK_ORDER: [Check; 11] = [
    Check {
        what: "The call code is known and implemented.",
        status: Some(Status::NotSupported),
    },
    Check {
        what: "NEGOTIATE has succeeded (Base calls are exempt).",
        status: Some(Status::NotNegotiated),
    },
    Check {
        what: "The call's feature was granted.",
        status: Some(Status::NotGranted),
    },
    Check {
        what: "The call is allowed in this context (direct, batch, ring or deferred queue).",
        status: Some(Status::NotAllowedHere),
    },
    Check {
        what: "Register arguments are in range and their reserved bits are zero.",
        status: Some(Status::InvalidParameter),
    },
    Check {
        what: "The memory block is aligned.",
        status: Some(Status::Misaligned),
    },
    Check {
        what: "The memory block does not cross a 4 KiB page boundary.",
        status: Some(Status::CrossesPage),
    },
    Check {
        what: "The memory block lies in guest RAM.",
        status: Some(Status::InvalidAddress),
    },
    Check {
        what: "The memory block does not overlap a host-owned page.",
        status: Some(Status::AccessDenied),
    },
    Check {
        what: "The fields of the (copied) memory block are in range and reserved fields are zero.",
        status: Some(Status::InvalidParameter),
    },
    Check {
        what: "Call-specific conditions; the lowest-numbered applicable status wins.",
        status: None,
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_dense_and_round_trip() {
        for (i, s) in Status::ALL.iter().enumerate() {
            assert_eq!(s.raw(), i as u64);
            assert_eq!(Status::from_raw(i as u64), Some(*s));
        }
        assert_eq!(Status::from_raw(Status::ALL.len() as u64), None);
        assert_eq!(Status::from_raw(u64::MAX), None);
    }

    #[test]
    fn check_order_follows_numbering() {
        let mut last = 0;
        for c in CHECK_ORDER.iter().filter_map(|c| c.status) {
            assert!(c as u32 >= last || c == Status::InvalidParameter);
            last = last.max(c as u32);
        }
    }

    #[test]
    fn names_are_unique_screaming_snake_case() {
        for (i, a) in Status::ALL.iter().enumerate() {
            assert!(a
                .name()
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b == b'_'));
            for b in &Status::ALL[i + 1..] {
                assert_ne!(a.name(), b.name());
            }
        }
    }
}
