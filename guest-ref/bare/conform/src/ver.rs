//! The body of the conformance tests `version` and `version-1.0` (the suite runs the latter under a
//! host acting as release 1.0): versions, features and discovery across NEGOTIATE, call by call
//! over the ABI's call table: before NEGOTIATE every feature call is NOT_NEGOTIATED and every
//! defined call known; the majors in the reported range are served (told apart from the others
//! without locking, by the order of NEGOTIATE's conditions); the offered features are defined
//! and the limits leaf matches them; after NEGOTIATE (with unknown optional bits) every call of
//! a feature not granted is NOT_GRANTED, PROBE_CALL agrees with the grant, the Base calls are
//! still served, and the CPUID leaves have not changed. Runs on vCPU 0 at CPL0 (a few calls
//! per defined call).
use pvabi_guest::abi::base::{CallState, IMPL_ID_REFERENCE, IMPL_ID_VENDOR_FIRST};
use pvabi_guest::abi::batch::{DEFERRED_QUEUE_CAPACITY, MULTICALL_MAX_ENTRIES, SQ_CAPACITY};
use pvabi_guest::abi::calls::{self, CallDescriptor};
use pvabi_guest::abi::discovery::{
    is_signature, CPUID_BASE_COUNT, CPUID_BASE_STRIDE, CPUID_FIRST_BASE, CPUID_LEAF_LIMITS,
    CPUID_LEAF_MAX, CPUID_LEAF_TRANSPORT, TRANSPORT_PIO, TRANSPORT_VMCALL, TRANSPORT_VMMCALL,
};
use pvabi_guest::abi::features::Features;
use pvabi_guest::abi::version::SPEC_VERSION;
use pvabi_guest::discovery::discover;
use pvabi_guest::{Call, PortTransport, Status};
use pvabi_guest_rt::cpu::cpuid;
use pvabi_guest_rt::{halt_forever, BootInfo};

use crate::call::raw;
use crate::channel::{self, check};

const SUCCESS: u64 = Status::Success as u64;
/// A required feature bit no version defines: NEGOTIATE of a served major fails with
/// FEATURE_UNAVAILABLE, of an unserved one with VERSION_UNSUPPORTED, and locks nothing.
const UNKNOWN_FEATURE: u64 = 1 << 61;

/// The pvabi leaves, raw.
fn leaves(base: u32) -> [[u32; 4]; (CPUID_LEAF_MAX + 1) as usize] {
    let mut l = [[0; 4]; (CPUID_LEAF_MAX + 1) as usize];
    for (i, leaf) in l.iter_mut().enumerate() {
        *leaf = cpuid(base + i as u32, 0);
    }
    l
}

/// The first defined call (at or below `version`) for which `bad` holds, as its code.
fn first_bad(version: u32, mut bad: impl FnMut(&CallDescriptor) -> bool) -> Option<u64> {
    calls::all()
        .filter(|d| d.since.0 <= version)
        .find(|d| bad(d))
        .map(|d| u64::from(d.call.code()))
}

/// The calls of later minors of `version`'s major that this test knows: `None` if there
/// are none, else the first for which `bad` holds, as its code.
fn later(version: u32, mut bad: impl FnMut(&CallDescriptor) -> bool) -> Option<Option<u64>> {
    let mut later = calls::all()
        .filter(|d| d.since.0 > version && d.since.0 >> 16 == version >> 16)
        .peekable();
    later.peek()?;
    Some(later.find(|d| bad(d)).map(|d| u64::from(d.call.code())))
}

/// Runs the test named `test` and ends it.
pub fn run(test: &str, boot: &BootInfo) -> ! {
    channel::begin(test);
    let Some(found) = discover() else {
        halt_forever()
    };
    channel::set_doorbell(found.info.doorbell_port);
    let t = PortTransport::new(found.info.doorbell_port);
    let before = leaves(found.base);
    let highest = found.info.highest_version;
    let lowest = found.info.lowest_version;
    let offered = found.info.offered_features;
    let status = |call: Call, args: &[u64]| raw(&t, call, args).status;
    let probe = |code: u32| {
        let r = raw(&t, Call::ProbeCall, &[u64::from(code)]);
        (r.status, r.results[0], r.results[1])
    };
    let mask = |d: &CallDescriptor| d.feature.map_or(0, |f| f.bits());

    // Discovery: the signature at exactly one candidate base; the transport leaf's reserved
    // registers and undefined flags 0.
    let mut bases = 0u32;
    for k in 0..CPUID_BASE_COUNT {
        let l = cpuid(CPUID_FIRST_BASE + k * CPUID_BASE_STRIDE, 0);
        if is_signature(l[1], l[2], l[3]) {
            bases += 1;
        }
    }
    check(
        "version.signature_at_exactly_one_base",
        &["PVABI-DISC-001"],
        bases == 1,
        u64::from(bases),
        1,
    );
    let transport = before[CPUID_LEAF_TRANSPORT as usize];
    let defined = TRANSPORT_PIO | TRANSPORT_VMCALL | TRANSPORT_VMMCALL;
    check(
        "version.transport_leaf_reserved_registers_and_flags_are_0",
        &["PVABI-DISC-007"],
        transport[1] & !defined == 0 && transport[2] == 0 && transport[3] == 0,
        u64::from(transport[1] & !defined) | u64::from(transport[2] | transport[3]) << 32,
        0,
    );

    // Before NEGOTIATE.
    let bad = first_bad(highest, |d| {
        d.feature.is_some() && status(d.call, &[]) != Status::NotNegotiated as u64
    });
    check(
        "version.every_feature_call_before_negotiate_is_not_negotiated",
        &["PVABI-VER-010"],
        bad.is_none(),
        bad.unwrap_or(0),
        0,
    );
    let bad = first_bad(highest, |d| {
        let want = if d.feature.is_some() {
            CallState::Available
        } else {
            CallState::Ready
        };
        probe(d.call.code()) != (SUCCESS, want as u64, mask(d))
    });
    check(
        "version.every_defined_call_is_known_before_negotiate",
        &[
            "PVABI-VER-001",
            "PVABI-STAT-003",
            "PVABI-BASE-007",
            "PVABI-BASE-008",
        ],
        bad.is_none(),
        bad.unwrap_or(0),
        0,
    );
    let bad = first_bad(highest, |d| {
        d.feature.is_some_and(|f| f.bits() & offered != 0)
            && probe(d.call.code()).1 == CallState::Absent as u64
    });
    check(
        "version.every_call_of_an_offered_feature_is_implemented",
        &["PVABI-VER-006"],
        bad.is_none(),
        bad.unwrap_or(0),
        0,
    );
    // A host acting as an earlier minor than this test knows: the later minors' calls are
    // unknown (checked only where there are such calls).
    let unknown = |d: &CallDescriptor| {
        status(d.call, &[]) != Status::NotSupported as u64
            || probe(d.call.code()) != (SUCCESS, CallState::Absent as u64, 0)
    };
    if let Some(bad) = later(highest, unknown) {
        check(
            "version.calls_of_later_minors_are_unknown_before_negotiate",
            &["PVABI-COMPAT-002", "PVABI-STAT-003"],
            bad.is_none(),
            bad.unwrap_or(0),
            0,
        );
    }
    if highest <= SPEC_VERSION {
        let defined = Features::defined_in(pvabi_guest::Version(highest)).bits();
        check(
            "version.offered_features_are_defined_by_the_highest_version",
            &["PVABI-VER-007"],
            offered & !defined == 0,
            offered & !defined,
            0,
        );
    } else {
        channel::skip(
            "version.offered_features_are_defined_by_the_highest_version",
            &["PVABI-VER-007"],
            "the host serves a version newer than this test knows",
        );
    }
    // Every major of the reported range is served: NEGOTIATE of it fails only for the
    // unknown required feature; the majors around the range are not.
    let (low_major, high_major) = (lowest >> 16, highest >> 16);
    let mut bad = None;
    for major in low_major..=high_major {
        let s = status(Call::Negotiate, &[u64::from(major) << 16, UNKNOWN_FEATURE]);
        if s != Status::FeatureUnavailable as u64 {
            bad.get_or_insert(u64::from(major));
        }
    }
    check(
        "version.every_major_of_the_reported_range_is_served",
        &["PVABI-BASE-002"],
        bad.is_none(),
        bad.unwrap_or(0),
        0,
    );
    let above = status(
        Call::Negotiate,
        &[u64::from(high_major + 1) << 16, UNKNOWN_FEATURE],
    );
    check(
        "version.the_major_above_the_range_is_not_served",
        &["PVABI-COMPAT-004", "PVABI-BASE-010"],
        above == Status::VersionUnsupported as u64,
        above,
        Status::VersionUnsupported as u64,
    );
    let id = raw(&t, Call::GetImplId, &[]).results[0];
    check(
        "version.impl_id_is_assigned_or_a_vendor_id",
        &["PVABI-BASE-003"],
        id >= u64::from(IMPL_ID_VENDOR_FIRST) || id == u64::from(IMPL_ID_REFERENCE),
        id,
        u64::from(IMPL_ID_REFERENCE),
    );
    // The limits leaf: the fixed value for an offered feature, 0 for one not offered, and
    // the vCPU count the platform gave the boot vCPU.
    let limits = before[CPUID_LEAF_LIMITS as usize];
    let want = |f: Features, value: u32| if offered & f.bits() != 0 { value } else { 0 };
    let want_limits = [
        want(Features::MULTICALL, MULTICALL_MAX_ENTRIES as u32),
        want(Features::DEFERRED, DEFERRED_QUEUE_CAPACITY),
        want(Features::RING, SQ_CAPACITY),
        boot.vcpu_count,
    ];
    check(
        "version.limits_leaf_matches_the_offered_features",
        &["PVABI-DISC-010", "PVABI-DISC-011"],
        limits == want_limits,
        u64::from(limits[0]) | u64::from(limits[1]) << 16 | u64::from(limits[2]) << 32,
        u64::from(want_limits[0])
            | u64::from(want_limits[1]) << 16
            | u64::from(want_limits[2]) << 32,
    );

    // NEGOTIATE: CONSOLE and SYSTEM required; VCPU and TIME optional, with bits no version
    // defines and every feature the host does not offer.
    let required = (Features::CONSOLE | Features::SYSTEM).bits();
    let optional = (Features::VCPU | Features::TIME).bits() | (1 << 63) | (1 << 60) | !offered;
    let n = raw(&t, Call::Negotiate, &[0x0001_0000, required, optional]);
    if n.status != SUCCESS {
        halt_forever()
    }
    channel::go_live();
    let granted = n.results[1];
    let want_granted = required | (optional & offered);
    check(
        "version.unknown_and_unoffered_optional_bits_are_not_refused_nor_granted",
        &["PVABI-BASE-013", "PVABI-VER-008"],
        granted == want_granted,
        granted,
        want_granted,
    );
    let accepted = n.results[0] as u32;

    // After NEGOTIATE.
    let bad = first_bad(accepted, |d| {
        d.feature.is_some_and(|f| f.bits() & granted == 0)
            && status(d.call, &[]) != Status::NotGranted as u64
    });
    check(
        "version.every_call_of_a_feature_not_granted_is_not_granted",
        &["PVABI-VER-011"],
        bad.is_none(),
        bad.unwrap_or(0),
        0,
    );
    let bad = first_bad(accepted, |d| {
        let ready = d.feature.is_none_or(|f| f.bits() & granted != 0);
        let want = if ready {
            CallState::Ready
        } else {
            CallState::Available
        };
        probe(d.call.code()) != (SUCCESS, want as u64, mask(d))
    });
    check(
        "version.probe_call_after_negotiate_follows_the_grant",
        &["PVABI-BASE-007", "PVABI-BASE-008", "PVABI-STAT-003"],
        bad.is_none(),
        bad.unwrap_or(0),
        0,
    );
    if let Some(bad) = later(accepted, unknown) {
        check(
            "version.calls_of_later_minors_are_unknown_after_negotiate",
            &["PVABI-COMPAT-002", "PVABI-STAT-003", "PVABI-VER-012"],
            bad.is_none(),
            bad.unwrap_or(0),
            0,
        );
    }
    let base = [
        Call::GetSpecVersion,
        Call::GetImplId,
        Call::GetImplVersion,
        Call::ProbeCall,
        Call::ProbeFeatures,
    ];
    let bad = base.iter().find(|c| status(**c, &[]) != SUCCESS);
    let again = status(Call::Negotiate, &[0x0001_0000, required]);
    check(
        "version.base_calls_are_served_after_negotiate",
        &["PVABI-VER-005"],
        bad.is_none() && again == Status::Locked as u64,
        bad.map_or(again, |c| u64::from(c.code())),
        Status::Locked as u64,
    );
    if granted & Features::VCPU.bits() != 0 {
        let info = raw(&t, Call::VcpuInfo, &[]);
        check(
            "version.limits_leaf_vcpus_is_vcpu_info_count",
            &["PVABI-DISC-010"],
            info.status == SUCCESS && info.results[1] == u64::from(limits[3]),
            info.results[1],
            u64::from(limits[3]),
        );
    }
    // The accepted version holds to the end: GET_SPEC_VERSION still reports it, the same
    // highest version is served, and the lock still refuses a NEGOTIATE of the lowest minor.
    let spec = raw(&t, Call::GetSpecVersion, &[]);
    let again = status(
        Call::Negotiate,
        &[u64::from(lowest & 0xffff_0000), required],
    );
    check(
        "version.accepted_version_holds_for_the_rest_of_the_run",
        &["PVABI-VER-012", "PVABI-BASE-015"],
        spec.status == SUCCESS
            && spec.results[2] == u64::from(accepted)
            && spec.results[0] == u64::from(highest)
            && again == Status::Locked as u64,
        spec.results[2],
        u64::from(accepted),
    );
    let after = leaves(found.base);
    let changed = (0..before.len()).find(|i| before[*i] != after[*i]);
    check(
        "version.cpuid_leaves_do_not_change_with_negotiate",
        &["PVABI-DISC-012"],
        changed.is_none(),
        changed.map_or(0, |i| i as u64),
        0,
    );
    channel::end(test)
}
