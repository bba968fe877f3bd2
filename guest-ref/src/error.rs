//! Spec chapter "Status codes": a call's status as a Rust error.
//!
//! Every call returns a status in `rax`. [`Status::Success`] becomes `Ok`; every other
//! defined status becomes [`Error::Status`], and a value this version of the ABI does not
//! define becomes [`Error::UnknownStatus`] (a guest must cope with a newer host's codes).

use pvabi_abi::status::Status;

/// Why a call failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Error {
    /// The host answered with this status (never [`Status::Success`]).
    Status(Status),
    /// The host answered with a status value this version of the ABI does not define.
    UnknownStatus(u64),
    /// The host answered SUCCESS but a result could not be decoded (for example a
    /// `CallState` or `WakeReason` value this version does not define, or a count larger
    /// than what was asked), or a call that never returns on success returned SUCCESS. The
    /// value is the offending result. A conforming host never causes this.
    UnexpectedResult(u64),
}

/// The result of a pvabi call.
pub type Result<T> = core::result::Result<T, Error>;

impl Error {
    /// Decodes the raw status of `rax`: `None` for SUCCESS, the error otherwise.
    ///
    /// ```
    /// use pvabi_guest::{Error, Status};
    /// assert_eq!(Error::from_raw(0), None);
    /// assert_eq!(Error::from_raw(3), Some(Error::Status(Status::NotGranted)));
    /// assert_eq!(Error::from_raw(1 << 40), Some(Error::UnknownStatus(1 << 40)));
    /// ```
    pub fn from_raw(raw: u64) -> Option<Error> {
        match Status::from_raw(raw) {
            Some(Status::Success) => None,
            Some(status) => Some(Error::Status(status)),
            None => Some(Error::UnknownStatus(raw)),
        }
    }

    /// `Ok(())` for SUCCESS, the error otherwise.
    pub fn check(raw: u64) -> Result<()> {
        match Error::from_raw(raw) {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }

    /// The status, when the host sent a defined one.
    pub const fn status(&self) -> Option<Status> {
        match self {
            Error::Status(s) => Some(*s),
            _ => None,
        }
    }

    /// True when the host answered exactly `status`.
    pub fn is(&self, status: Status) -> bool {
        self.status() == Some(status)
    }
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Error::Status(s) => write!(
                f,
                "pvabi status {} ({}): {}",
                s.name(),
                s.raw(),
                s.description()
            ),
            Error::UnknownStatus(raw) => write!(f, "pvabi status {raw:#x}, unknown to this guest"),
            Error::UnexpectedResult(v) => {
                write!(f, "pvabi call returned an unexpected result {v:#x}")
            }
        }
    }
}

impl core::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every defined status decodes to itself, and a status this guest does not know is a
    /// failure of the call, never a success (PVABI-STAT-008): `check` gives `Err`, so no result
    /// of such a call reaches the caller.
    #[test]
    fn every_status_maps() {
        for s in Status::ALL {
            let e = Error::from_raw(s.raw());
            if s == Status::Success {
                assert_eq!(e, None);
            } else {
                assert_eq!(e, Some(Error::Status(s)));
                assert!(e.unwrap().is(s));
            }
        }
        let past = Status::ALL.len() as u64;
        assert_eq!(Error::from_raw(past), Some(Error::UnknownStatus(past)));
        assert_eq!(Error::check(u64::MAX), Err(Error::UnknownStatus(u64::MAX)));
        assert_eq!(Error::check(0), Ok(()));
    }
}
