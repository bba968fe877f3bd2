//! Spec chapter "Base family": versions, implementation identity, probing and NEGOTIATE.
//!
//! Base calls need no feature bit and work before NEGOTIATE. A guest typically calls
//! [`Pvabi::get_spec_version`] (or reads the CPUID version leaf), then
//! [`Pvabi::negotiate`] once for the whole VM, then uses the granted families.

use pvabi_abi::base::CallState;
use pvabi_abi::calls::Call;
use pvabi_abi::features::Features;
use pvabi_abi::version::{Version, VERSION_MAJOR};

use crate::error::{Error, Result};
use crate::transport::Transport;
use crate::Pvabi;

/// GET_SPEC_VERSION's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SpecVersions {
    /// The highest version the host serves.
    pub highest: Version,
    /// The lowest version the host serves.
    pub lowest: Version,
    /// The version NEGOTIATE accepted; `None` before NEGOTIATE.
    pub negotiated: Option<Version>,
}

/// GET_IMPL_ID's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ImplId {
    /// The implementation id (`IMPL_ID_REFERENCE` = 1 for the pvabi reference host,
    /// `IMPL_ID_VENDOR_FIRST` and up for vendors).
    pub id: u32,
    /// The 16-byte ASCII name, NUL-padded.
    pub name: [u8; 16],
}

impl ImplId {
    /// The name without its NUL padding; `None` if it is not ASCII.
    pub fn name_str(&self) -> Option<&str> {
        let len = self.name.iter().position(|&b| b == 0).unwrap_or(16);
        let name = &self.name[..len];
        if name.is_ascii() {
            core::str::from_utf8(name).ok()
        } else {
            None
        }
    }
}

/// GET_IMPL_VERSION's answer: the implementation's own version (not the spec's).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImplVersion {
    /// Bits 63:32.
    pub major: u32,
    /// Bits 31:16.
    pub minor: u16,
    /// Bits 15:0.
    pub patch: u16,
}

impl ImplVersion {
    /// Decodes `major << 32 | minor << 16 | patch`.
    pub const fn from_raw(raw: u64) -> Self {
        ImplVersion {
            major: (raw >> 32) as u32,
            minor: (raw >> 16) as u16,
            patch: raw as u16,
        }
    }
}

/// PROBE_CALL's full answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CallProbe {
    /// Whether the call is absent, available after NEGOTIATE grants its feature, or ready.
    pub state: CallState,
    /// The feature bit the call needs (empty for Base calls; unknown bits kept).
    pub feature: Features,
}

/// PROBE_FEATURES's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FeatureSets {
    /// The features the host offers (at its highest version). Unknown bits are kept.
    pub offered: Features,
    /// The features NEGOTIATE granted (empty before NEGOTIATE).
    pub granted: Features,
}

/// What a guest asks NEGOTIATE for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NegotiateRequest {
    /// The major version.
    pub major: u16,
    /// The lowest minor version of that major the guest accepts.
    pub min_minor: u16,
    /// Features the guest cannot run without: NEGOTIATE fails with FEATURE_UNAVAILABLE if
    /// one is not offered.
    pub required: Features,
    /// Features the guest uses if offered (unknown bits are ignored by the host).
    pub optional: Features,
}

impl NegotiateRequest {
    /// A request for major version 1, any minor (1.0 or later), with these features.
    ///
    /// Features a later minor introduced are gated by their own bits, so a guest needs a
    /// higher minimum minor only when it relies on behaviour a later minor defined; put
    /// such features in `optional` to run on older hosts too. Asking for this crate's own
    /// minor here would make every guest built with a newer crate refuse older hosts.
    pub const fn v1(required: Features, optional: Features) -> Self {
        NegotiateRequest::at_least(VERSION_MAJOR, 0, required, optional)
    }

    /// A request for `major`, minor `min_minor` or later, with these features.
    pub const fn at_least(
        major: u16,
        min_minor: u16,
        required: Features,
        optional: Features,
    ) -> Self {
        NegotiateRequest {
            major,
            min_minor,
            required,
            optional,
        }
    }

    /// The `requested` argument: `major << 16 | min_minor`.
    pub const fn requested(&self) -> u64 {
        Version::new(self.major, self.min_minor).0 as u64
    }
}

/// NEGOTIATE's answer, locked for the whole VM from then on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Negotiated {
    /// The accepted version: the requested major and the host's highest minor of it.
    pub version: Version,
    /// The granted features: `required | (optional & offered)`.
    pub granted: Features,
}

/// Decodes a `CallState` result.
fn call_state(raw: u64) -> Result<CallState> {
    const ABSENT: u64 = CallState::Absent as u64;
    const AVAILABLE: u64 = CallState::Available as u64;
    const READY: u64 = CallState::Ready as u64;
    match raw {
        ABSENT => Ok(CallState::Absent),
        AVAILABLE => Ok(CallState::Available),
        READY => Ok(CallState::Ready),
        other => Err(Error::UnexpectedResult(other)),
    }
}

impl<T: Transport> Pvabi<T> {
    /// `GET_SPEC_VERSION`: the versions the host serves and the negotiated one.
    #[doc(alias = "GET_SPEC_VERSION")]
    pub fn get_spec_version(&self) -> Result<SpecVersions> {
        // SAFETY: GET_SPEC_VERSION takes no argument and only returns registers.
        let r = unsafe { self.call_raw(Call::GetSpecVersion, [0; 6]) }?;
        Ok(SpecVersions {
            highest: Version(r[0] as u32),
            lowest: Version(r[1] as u32),
            negotiated: match r[2] as u32 {
                0 => None,
                v => Some(Version(v)),
            },
        })
    }

    /// `GET_IMPL_ID`: the implementation id and its 16-byte name.
    #[doc(alias = "GET_IMPL_ID")]
    pub fn get_impl_id(&self) -> Result<ImplId> {
        // SAFETY: GET_IMPL_ID takes no argument and only returns registers.
        let r = unsafe { self.call_raw(Call::GetImplId, [0; 6]) }?;
        let mut name = [0u8; 16];
        name[..8].copy_from_slice(&r[1].to_le_bytes());
        name[8..].copy_from_slice(&r[2].to_le_bytes());
        Ok(ImplId {
            id: r[0] as u32,
            name,
        })
    }

    /// `GET_IMPL_VERSION`: the implementation's own version.
    #[doc(alias = "GET_IMPL_VERSION")]
    pub fn get_impl_version(&self) -> Result<ImplVersion> {
        // SAFETY: GET_IMPL_VERSION takes no argument and only returns registers.
        let r = unsafe { self.call_raw(Call::GetImplVersion, [0; 6]) }?;
        Ok(ImplVersion::from_raw(r[0]))
    }

    /// `PROBE_CALL`: whether `call` is absent, available after NEGOTIATE, or ready now.
    #[doc(alias = "PROBE_CALL")]
    pub fn probe_call(&self, call: Call) -> Result<CallState> {
        self.probe_call_code(call.code()).map(|p| p.state)
    }

    /// `PROBE_CALL` for any code (including codes of newer versions this crate does not
    /// know), with the feature bit the call needs.
    #[doc(alias = "PROBE_CALL")]
    pub fn probe_call_code(&self, code: u32) -> Result<CallProbe> {
        // SAFETY: PROBE_CALL only inspects the code it is given; it does not run the call.
        let r = unsafe { self.call_raw(Call::ProbeCall, [u64::from(code), 0, 0, 0, 0, 0]) }?;
        Ok(CallProbe {
            state: call_state(r[0])?,
            feature: Features::from_bits_retain(r[1]),
        })
    }

    /// `PROBE_FEATURES`: the offered and granted features.
    #[doc(alias = "PROBE_FEATURES")]
    pub fn probe_features(&self) -> Result<FeatureSets> {
        // SAFETY: PROBE_FEATURES takes no argument and only returns registers.
        let r = unsafe { self.call_raw(Call::ProbeFeatures, [0; 6]) }?;
        Ok(FeatureSets {
            offered: Features::from_bits_retain(r[0]),
            granted: Features::from_bits_retain(r[1]),
        })
    }

    /// `NEGOTIATE`: agrees on a version and a feature set, once for the whole VM (a second
    /// NEGOTIATE fails with LOCKED). Fails with VERSION_UNSUPPORTED when the major is not
    /// served or its minor is below `min_minor`, and FEATURE_UNAVAILABLE when a required
    /// feature is not offered.
    #[doc(alias = "NEGOTIATE")]
    pub fn negotiate(&self, request: NegotiateRequest) -> Result<Negotiated> {
        let args = [
            request.requested(),
            request.required.bits(),
            request.optional.bits(),
            0, // flags: reserved
            0,
            0,
        ];
        // SAFETY: NEGOTIATE takes no memory block; it only changes which calls are
        // accepted from now on.
        let r = unsafe { self.call_raw(Call::Negotiate, args) }?;
        Ok(Negotiated {
            version: Version(r[0] as u32),
            granted: Features::from_bits_retain(r[1]),
        })
    }
}
