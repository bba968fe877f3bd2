//! Base family: versions, identity, probing and NEGOTIATE.

use pvabi_abi::base::CallState;
use pvabi_abi::calls::Call;
use pvabi_abi::features::Features;
use pvabi_abi::status::Status;
use pvabi_abi::version::Version;

use crate::faults::injected;
use crate::machine::Machine;
use crate::state::{Inner, Negotiated};
use crate::{done, Reply, Req};

pub(crate) fn handle<M: Machine>(h: &Inner<M>, r: &Req) -> Result<Reply, Status> {
    let c = &h.config;
    match r.call {
        Call::GetSpecVersion => {
            let negotiated = h.negotiated().map_or(0, |n| n.version.0);
            let negotiated = if injected!(h, SpecVersionForgetsNegotiated) {
                0
            } else {
                negotiated
            };
            done(&[
                u64::from(c.highest().0),
                u64::from(c.lowest.0),
                u64::from(negotiated),
            ])
        }
        Call::GetImplId => {
            let (lo, hi) = c.impl_name.split_at(8);
            let garbage = if injected!(h, ImplNameNotPadded) {
                0x41 << 56
            } else {
                0
            };
            done(&[
                u64::from(c.impl_id),
                u64::from_le_bytes(lo.try_into().unwrap_or_default()),
                u64::from_le_bytes(hi.try_into().unwrap_or_default()) | garbage,
            ])
        }
        Call::GetImplVersion => {
            let v = &c.impl_version;
            if injected!(h, ImplVersionPackedAsSpecVersion) {
                done(&[u64::from(v.major) << 16 | u64::from(v.minor)])
            } else {
                done(&[v.packed()])
            }
        }
        Call::ProbeCall => probe_call(h, r.args[0]),
        Call::ProbeFeatures => {
            let granted = match h.negotiated() {
                None if injected!(h, ProbeFeaturesGrantsBeforeNegotiate) => {
                    c.offered_at(c.highest()).bits()
                }
                n => n.map_or(0, |n| n.granted.bits()),
            };
            done(&[c.offered_at(c.highest()).bits(), granted])
        }
        Call::Negotiate => negotiate(h, &r.args),
        _ => Err(Status::NotSupported),
    }
}

/// PROBE_CALL: ABSENT (not implemented for the served or negotiated version), AVAILABLE
/// (implemented; its feature is not granted, or NEGOTIATE has not happened), READY.
fn probe_call<M: Machine>(h: &Inner<M>, code: u64) -> Result<Reply, Status> {
    let negotiated = h.negotiated();
    let Some(d) = h.known(code, negotiated.map(|n| n.version)) else {
        if injected!(h, ProbeCallUnknownIsAvailable) {
            return done(&[CallState::Available as u64, 0]);
        }
        return done(&[CallState::Absent as u64, 0]);
    };
    let ready = match d.feature {
        None => true,
        Some(f) => negotiated.is_some_and(|n| n.granted.contains(f)),
    };
    let state = if ready {
        CallState::Ready
    } else {
        CallState::Available
    };
    done(&[state as u64, d.feature.map_or(0, |f| f.bits())])
}

/// NEGOTIATE. Register checks (reserved bits of `requested`, `flags`) are done; the
/// call-specific conditions are checked lowest status first: VERSION_UNSUPPORTED,
/// FEATURE_UNAVAILABLE, then LOCKED.
fn negotiate<M: Machine>(h: &Inner<M>, args: &[u64; 6]) -> Result<Reply, Status> {
    let major = (args[0] >> 16) as u16;
    let min_minor = args[0] as u16;
    let required = Features::from_bits_retain(args[1]);
    let optional = Features::from_bits_retain(args[2]);

    let accepted: Version = h
        .config
        .served_major(major)
        .filter(|v| v.minor() >= min_minor)
        .ok_or(Status::VersionUnsupported)?;
    let accepted = if injected!(h, NegotiateAcceptsTheMinimumMinor) {
        Version::new(major, min_minor)
    } else {
        accepted
    };
    let offered = h.config.offered_at(accepted);
    // Unknown required bits are never offered, so they fail here too.
    if !offered.contains(required) {
        return Err(Status::FeatureUnavailable);
    }
    let granted = if injected!(h, NegotiateGrantsEverythingOffered) {
        required | offered
    } else {
        required | (optional & offered)
    };
    // Set once, then read by every call without a lock.
    let set = h.negotiated.set(Negotiated {
        version: accepted,
        granted,
    });
    if set.is_err() {
        if injected!(h, NegotiateNotLocked) {
            return done(&[u64::from(accepted.0), granted.bits()]);
        }
        return Err(Status::Locked);
    }
    h.record(|rep| rep.negotiated = Some((accepted, granted)));
    done(&[u64::from(accepted.0), granted.bits()])
}
