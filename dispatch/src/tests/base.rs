//! Base family: versions, identity, probing, NEGOTIATE's version/feature matrix.

use pvabi_abi::base::CallState;
use pvabi_abi::calls::Call;
use pvabi_abi::features::Features;
use pvabi_abi::status::Status;
use pvabi_abi::version::Version;

use super::{config, H};
use crate::{FeatureOffer, HostConfig, ImplVersion};

const V1_0: u64 = 0x0001_0000;
/// A feature bit no version defines yet.
const FUTURE: Features = Features::from_bits_retain(1 << 9);

#[test]
fn get_spec_version_before_and_after_negotiate() {
    let h = H::new(1);
    assert_eq!(
        h.call(0, Call::GetSpecVersion, &[]),
        (Status::Success, [V1_0, V1_0, 0, 0])
    );
    h.negotiate(Features::CONSOLE);
    assert_eq!(
        h.call(0, Call::GetSpecVersion, &[]).1[..3],
        [V1_0, V1_0, V1_0]
    );
}

#[test]
fn get_impl_id_and_version() {
    let h = H::with(HostConfig {
        impl_version: ImplVersion {
            major: 3,
            minor: 4,
            patch: 5,
        },
        ..config(1)
    });
    let (s, r) = h.call(0, Call::GetImplId, &[]);
    assert_eq!(s, Status::Success);
    assert_eq!(r[0], 1);
    let mut name = r[1].to_le_bytes().to_vec();
    name.extend_from_slice(&r[2].to_le_bytes());
    assert_eq!(&name, b"pvabi-ref\0\0\0\0\0\0\0");
    assert_eq!(
        h.call(0, Call::GetImplVersion, &[]),
        (Status::Success, [3 << 32 | 4 << 16 | 5, 0, 0, 0])
    );
}

#[test]
fn probe_call_states() {
    let h = H::with(HostConfig {
        disabled_calls: vec![Call::VcpuYield],
        ..config(1)
    });
    let probe = |code: u64| {
        let (s, r) = h.call(0, Call::ProbeCall, &[code]);
        assert_eq!(s, Status::Success);
        (r[0], r[1])
    };
    let ready = CallState::Ready as u64;
    let available = CallState::Available as u64;
    let absent = CallState::Absent as u64;
    assert_eq!(probe(0x0000), (ready, 0));
    assert_eq!(probe(0x0101), (available, Features::CONSOLE.bits()));
    assert_eq!(probe(0x0099), (absent, 0));
    assert_eq!(probe(0x0800), (absent, 0));
    assert_eq!(probe(1 << 32 | 0x0101), (absent, 0));
    assert_eq!(probe(u64::MAX), (absent, 0));
    // Not implemented by this host.
    assert_eq!(probe(0x0503), (absent, 0));
    h.negotiate(Features::CONSOLE | Features::VCPU);
    assert_eq!(probe(0x0101), (ready, Features::CONSOLE.bits()));
    assert_eq!(probe(0x0200), (available, Features::TIME.bits()));
    assert_eq!(probe(0x0503), (absent, 0));
    assert_eq!(h.status(0, Call::VcpuYield, &[]), Status::NotSupported);
    assert_eq!(h.status(0, Call::VcpuInfo, &[]), Status::Success);
}

#[test]
fn probe_features_before_and_after() {
    let h = H::new(1);
    assert_eq!(h.call(0, Call::ProbeFeatures, &[]).1[..2], [0x1ff, 0]);
    h.negotiate(Features::TIME | Features::EVENTS);
    assert_eq!(h.call(0, Call::ProbeFeatures, &[]).1[..2], [0x1ff, 0b110]);
}

#[test]
fn negotiate_version_matrix() {
    let h = H::new(1);
    let neg = |requested: u64, required: u64, optional: u64, flags: u64| {
        h.call(0, Call::Negotiate, &[requested, required, optional, flags])
    };
    // Major not served.
    assert_eq!(neg(0x0002_0000, 0, 0, 0).0, Status::VersionUnsupported);
    assert_eq!(neg(0x0000_0000, 0, 0, 0).0, Status::VersionUnsupported);
    assert_eq!(neg(0xffff_0000, 0, 0, 0).0, Status::VersionUnsupported);
    // Minimum minor above the host's.
    assert_eq!(neg(0x0001_0001, 0, 0, 0).0, Status::VersionUnsupported);
    // Reserved bits of `requested` and `flags` (register checks come first).
    assert_eq!(neg(1 << 32 | V1_0, 0, 0, 0).0, Status::InvalidParameter);
    assert_eq!(neg(V1_0, 0, 0, 1).0, Status::InvalidParameter);
    assert_eq!(
        neg(1 << 40 | 0x0009_0000, 0, 0, 0).0,
        Status::InvalidParameter
    );
    // A required bit that is unknown, or known but not offered.
    assert_eq!(neg(V1_0, 1 << 40, 0, 0).0, Status::FeatureUnavailable);
    assert_eq!(neg(V1_0, FUTURE.bits(), 0, 0).0, Status::FeatureUnavailable);
    // A version error wins over a feature error (lowest status first).
    assert_eq!(
        neg(0x0002_0000, 1 << 40, 0, 0).0,
        Status::VersionUnsupported
    );
    // Failures do not lock; unknown optional bits are ignored and not granted.
    let (s, r) = neg(V1_0, Features::CONSOLE.bits(), u64::MAX, 0);
    assert_eq!(s, Status::Success);
    assert_eq!(r[..2], [V1_0, 0x1ff]);
    assert_eq!(
        h.d.negotiated(),
        Some((
            Version(0x0001_0000),
            Features::defined_in(pvabi_abi::version::V1_0)
        ))
    );
    // Locked, even for the very same request.
    assert_eq!(
        neg(V1_0, Features::CONSOLE.bits(), u64::MAX, 0).0,
        Status::Locked
    );
    assert_eq!(neg(V1_0, 0, 0, 0).0, Status::Locked);
    // The call-specific statuses keep their order after the lock (10 and 11 before 12).
    assert_eq!(neg(0x0002_0000, 0, 0, 0).0, Status::VersionUnsupported);
    assert_eq!(neg(V1_0, 1 << 40, 0, 0).0, Status::FeatureUnavailable);
    // The first result stays.
    assert_eq!(h.call(0, Call::ProbeFeatures, &[]).1[1], 0x1ff);
    let rep = h.d.report();
    assert_eq!(rep.count(Call::Negotiate, Status::Success), 1);
    assert_eq!(rep.count(Call::Negotiate, Status::Locked), 2);
}

#[test]
fn granted_is_required_plus_offered_optional() {
    let h = H::with(HostConfig {
        features: config(1)
            .features
            .into_iter()
            .filter(|f| f.flag != Features::RING)
            .collect(),
        ..config(1)
    });
    // RING is not offered: required fails, optional is dropped.
    assert_eq!(
        h.status(0, Call::Negotiate, &[V1_0, Features::RING.bits()]),
        Status::FeatureUnavailable
    );
    let (s, r) = h.call(
        0,
        Call::Negotiate,
        &[
            V1_0,
            Features::CONSOLE.bits(),
            (Features::RING | Features::TIME).bits(),
        ],
    );
    assert_eq!(s, Status::Success);
    assert_eq!(r[1], (Features::CONSOLE | Features::TIME).bits());
    assert_eq!(h.status(0, Call::RingEnter, &[]), Status::NotGranted);
}

#[test]
fn acting_as_a_higher_minor() {
    // A hypothetical 1.1 that adds feature bit 9.
    let mut c = HostConfig::acting_as(Version::new(1, 1));
    c.features.push(FeatureOffer {
        flag: FUTURE,
        since: Version::new(1, 1),
    });
    c.vcpus = 1;
    c.console = crate::ConsoleSink::Discard;
    let h = H::with(c);
    assert_eq!(
        h.call(0, Call::GetSpecVersion, &[]).1[..2],
        [0x0001_0001, V1_0]
    );
    assert_eq!(h.call(0, Call::ProbeFeatures, &[]).1[0], 0x3ff);
    assert_eq!(
        h.d.cpuid_leaves()[1].2[..3],
        [0x0001_0001, 0x0001_0000, 0x3ff]
    );
    // A 1.0 guest is accepted at the host's minor, 1.1, and may be granted bit 9.
    let (s, r) = h.call(0, Call::Negotiate, &[V1_0, FUTURE.bits()]);
    assert_eq!(s, Status::Success);
    assert_eq!(r[..2], [0x0001_0001, FUTURE.bits()]);

    // The same request to a 1.0 host: bit 9 is unknown there.
    let h10 = H::new(1);
    assert_eq!(
        h10.status(0, Call::Negotiate, &[0x0001_0001, 0]),
        Status::VersionUnsupported
    );
    assert_eq!(
        h10.status(0, Call::Negotiate, &[V1_0, FUTURE.bits()]),
        Status::FeatureUnavailable
    );
}

#[test]
fn offered_set_depends_on_the_accepted_version() {
    // 1.0 beside a 2.0 preview that adds bit 9: a 1.x guest is not offered bit 9.
    let mut c = HostConfig::acting_as(Version::new(2, 0));
    c.lowest = Version::new(1, 0);
    c.served = vec![Version::new(1, 0), Version::new(2, 0)];
    c.features.push(FeatureOffer {
        flag: FUTURE,
        since: Version::new(2, 0),
    });
    c.vcpus = 1;
    let h1 = H::with(c.clone());
    assert_eq!(
        h1.call(0, Call::GetSpecVersion, &[]).1[..2],
        [0x0002_0000, V1_0]
    );
    assert_eq!(
        h1.status(0, Call::Negotiate, &[V1_0, FUTURE.bits()]),
        Status::FeatureUnavailable
    );
    let (s, r) = h1.call(0, Call::Negotiate, &[V1_0, 0, u64::MAX]);
    assert_eq!(s, Status::Success);
    assert_eq!(r[..2], [V1_0, 0x1ff]);

    let h2 = H::with(c);
    let (s, r) = h2.call(0, Call::Negotiate, &[0x0002_0000, FUTURE.bits(), u64::MAX]);
    assert_eq!(s, Status::Success);
    // Every 1.x feature up to 1.3 (MULTICALL_PAGES, bit 10) is part of the 2.0 preview.
    assert_eq!(r[..2], [0x0002_0000, 0x7ff]);
    assert_eq!(h2.call(0, Call::GetSpecVersion, &[]).1[2], 0x0002_0000);
}

#[test]
fn base_calls_work_before_negotiate_and_other_families_do_not() {
    let h = H::new(1);
    for call in [
        Call::GetSpecVersion,
        Call::GetImplId,
        Call::GetImplVersion,
        Call::ProbeCall,
        Call::ProbeFeatures,
    ] {
        assert_eq!(h.status(0, call, &[]), Status::Success, "{call:?}");
    }
    // Every non-Base call of 1.0 is refused before NEGOTIATE; a call of a later minor is
    // not implemented by this 1.0 host at all.
    for d in pvabi_abi::calls::all().filter(|d| d.feature.is_some()) {
        let (s, _, _) = h.raw(0, u64::from(d.call.code()), &[u64::MAX; 6]);
        let expected = if d.since <= pvabi_abi::version::V1_0 {
            Status::NotNegotiated
        } else {
            Status::NotSupported
        };
        assert_eq!(s, expected, "{}", d.name);
    }
}

/// PVABI-BASE-007 and the meaning of "implements": a feature the host does not offer leaves
/// its calls known (AVAILABLE, NOT_GRANTED), unlike a call the host was configured to leave
/// out (ABSENT, NOT_SUPPORTED).
#[test]
fn calls_of_a_feature_not_offered_are_known_and_not_granted() {
    let mut c = config(1);
    c.features.retain(|f| f.flag != Features::TIME);
    c.disabled_calls = vec![Call::VcpuYield];
    let h = H::with(c);
    let probe = |code: Call| h.call(0, Call::ProbeCall, &[code as u64]).1;
    assert_eq!(
        h.call(0, Call::ProbeFeatures, &[]).1[0] & Features::TIME.bits(),
        0
    );
    assert_eq!(
        probe(Call::TimeMonotonic)[..2],
        [CallState::Available as u64, Features::TIME.bits()]
    );
    assert_eq!(probe(Call::VcpuYield)[..2], [CallState::Absent as u64, 0]);
    // Before NEGOTIATE: known, so NOT_NEGOTIATED (step 2), not NOT_SUPPORTED.
    assert_eq!(h.status(0, Call::TimeMonotonic, &[]), Status::NotNegotiated);
    assert_eq!(h.status(0, Call::VcpuYield, &[]), Status::NotSupported);
    // NEGOTIATE cannot grant it; optional asks are ignored.
    assert_eq!(
        h.status(0, Call::Negotiate, &[V1_0, Features::TIME.bits()]),
        Status::FeatureUnavailable
    );
    assert_eq!(
        h.call(
            0,
            Call::Negotiate,
            &[V1_0, Features::VCPU.bits(), Features::TIME.bits()]
        )
        .1[1],
        Features::VCPU.bits()
    );
    assert_eq!(h.status(0, Call::TimeMonotonic, &[]), Status::NotGranted);
    assert_eq!(
        probe(Call::TimeMonotonic)[..2],
        [CallState::Available as u64, Features::TIME.bits()]
    );
    assert_eq!(h.status(0, Call::VcpuYield, &[]), Status::NotSupported);
}

/// PVABI-BASE-008: `feature` is the mask of the call's feature (one bit set), 0 for Base;
/// CONSOLE's mask is 1, not 0.
#[test]
fn probe_call_feature_is_the_mask_of_one_bit() {
    let h = H::new(1);
    for d in pvabi_abi::calls::all() {
        if !h.d.config().implements(d.call) || d.since > pvabi_abi::version::V1_0 {
            continue;
        }
        let r = h.call(0, Call::ProbeCall, &[d.call as u64]).1;
        let want = d.feature.map_or(0, |f| f.bits());
        assert_eq!(r[1], want, "{:?}", d.call);
        if d.feature.is_some() {
            assert_eq!(r[1].count_ones(), 1, "{:?}", d.call);
        }
    }
    assert_eq!(
        h.call(0, Call::ProbeCall, &[Call::ConsoleWriteRegs as u64])
            .1[1],
        1
    );
    assert_eq!(
        h.call(0, Call::ProbeCall, &[Call::Negotiate as u64]).1[1],
        0
    );
}

/// PVABI-BASE-018: the packing of the implementation version, each number in its own bits.
#[test]
fn impl_version_packing() {
    let h = H::with(HostConfig {
        impl_version: ImplVersion {
            major: 7,
            minor: u16::MAX,
            patch: u16::MAX,
        },
        ..config(1)
    });
    assert_eq!(
        h.call(0, Call::GetImplVersion, &[]).1[0],
        7 << 32 | 0xffff << 16 | 0xffff
    );
}

/// PVABI-BASE-019 and PVABI-BASE-020: INVALID_PARAMETER (step 5) before any call-specific
/// condition, even after the lock; then VERSION_UNSUPPORTED < FEATURE_UNAVAILABLE < LOCKED.
#[test]
fn negotiate_check_order() {
    let h = H::new(1);
    let neg = |requested: u64, required: u64, flags: u64| {
        h.status(0, Call::Negotiate, &[requested, required, 0, flags])
    };
    assert_eq!(
        neg(1 << 63 | 0x0002_0000, 1 << 40, 0),
        Status::InvalidParameter
    );
    assert_eq!(neg(0x0002_0000, 1 << 40, 1 << 63), Status::InvalidParameter);
    assert_eq!(neg(0x0002_0000, 1 << 40, 0), Status::VersionUnsupported);
    assert_eq!(neg(V1_0, 1 << 40, 0), Status::FeatureUnavailable);
    h.negotiate(Features::CONSOLE);
    assert_eq!(neg(1 << 32 | V1_0, 0, 0), Status::InvalidParameter);
    assert_eq!(neg(V1_0, 0, 1), Status::InvalidParameter);
    assert_eq!(neg(0x0002_0000, 1 << 40, 0), Status::VersionUnsupported);
    assert_eq!(neg(V1_0, 1 << 40, 0), Status::FeatureUnavailable);
    assert_eq!(neg(V1_0, 0, 0), Status::Locked);
}
