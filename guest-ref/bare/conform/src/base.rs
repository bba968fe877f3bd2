//! Conformance test `base`: discovery and the Base family, checked with raw calls against the
//! rules they cite, reported over the verdict channel ([`channel`]). Runs on vCPU 0 at CPL0
//! (a handful of calls: ring-0 code is emulated on some hosts).
//!
//! Before NEGOTIATE the console is not available, so the checks of that phase wait in the
//! channel's buffer; NEGOTIATE itself is checked, and once it has granted CONSOLE and SYSTEM
//! everything is written and the guest shuts down with its verdict's code.
#![no_std]
#![no_main]

mod call;
mod channel;

use pvabi_guest::abi::base::CallState;
use pvabi_guest::abi::convention::{DOORBELL_PORT, RING_NOTIFY_PORT};
use pvabi_guest::abi::discovery::{CPUID_LEAF_MAX, CPUID_LEAF_TRANSPORT};
use pvabi_guest::abi::features::Features;
use pvabi_guest::discovery::discover;
use pvabi_guest::transport::RawResult;
use pvabi_guest::{Call, PortTransport, Status};
use pvabi_guest_rt::cpu::cpuid;
use pvabi_guest_rt::{halt_forever, BootInfo};

use call::{raw, raw_code};
use channel::{check, observe, should};

const TEST: &str = "base";
/// A code no version defines (family 0x7f).
const UNKNOWN_CODE: u32 = 0x7f42;

const SUCCESS: u64 = Status::Success as u64;

/// A log line in one page (64-byte aligned, shorter than 64 bytes).
#[repr(C, align(64))]
struct LogLine([u8; 26]);
static LOG_LINE: LogLine = LogLine(*b"base: console write probe\n");

fn status_is(r: &RawResult, s: Status) -> bool {
    r.status == s as u64
}

fn main(_boot: &BootInfo) -> ! {
    channel::begin(TEST);
    let Some(found) = discover() else {
        // No pvabi host: nothing can be reported (the console is a pvabi call).
        halt_forever()
    };
    channel::set_doorbell(found.info.doorbell_port);
    let t = PortTransport::new(found.info.doorbell_port);

    // Discovery.
    let ports = u64::from(found.info.doorbell_port) << 16 | u64::from(found.info.ring_notify_port);
    should(
        "base.the_default_ports_are_used",
        &["PVABI-DISC-009"],
        found.info.doorbell_port == DOORBELL_PORT
            && found.info.ring_notify_port == RING_NOTIFY_PORT,
        ports,
        u64::from(DOORBELL_PORT) << 16 | u64::from(RING_NOTIFY_PORT),
    );
    let leaf0 = cpuid(found.base, 0);
    check(
        "base.cpuid_signature_and_max_leaf",
        &["PVABI-DISC-001"],
        leaf0[0] == found.base + CPUID_LEAF_MAX,
        u64::from(leaf0[0]),
        u64::from(found.base + CPUID_LEAF_MAX),
    );
    let hv = cpuid(1, 0)[2] >> 31;
    check(
        "base.cpuid_hypervisor_bit",
        &["PVABI-DISC-013"],
        hv == 1,
        u64::from(hv),
        1,
    );
    let transport = cpuid(found.base + CPUID_LEAF_TRANSPORT, 0);
    check(
        "base.cpuid_transport_pio",
        &["PVABI-DISC-007"],
        transport[1] & 1 == 1,
        u64::from(transport[1]),
        1,
    );

    // Base before NEGOTIATE.
    let spec = raw(&t, Call::GetSpecVersion, &[]);
    let (highest, lowest) = (found.info.highest_version, found.info.lowest_version);
    check(
        "base.spec_version_before_negotiate",
        &["PVABI-BASE-001", "PVABI-DISC-005"],
        spec.status == SUCCESS
            && spec.results[0] == u64::from(highest)
            && spec.results[1] == u64::from(lowest)
            && spec.results[2] == 0,
        spec.results[2],
        0,
    );
    let probe = raw(&t, Call::ProbeFeatures, &[]);
    check(
        "base.probe_features_before_negotiate",
        &["PVABI-BASE-009", "PVABI-DISC-005"],
        probe.status == SUCCESS
            && probe.results[0] == found.info.offered_features
            && probe.results[1] == 0,
        probe.results[0],
        found.info.offered_features,
    );
    let offered = Features::from_bits_retain(probe.results[0]);
    let unknown = raw_code(&t, UNKNOWN_CODE, &[]);
    check(
        "base.unknown_code_is_not_supported",
        &["PVABI-STAT-001", "PVABI-STAT-003"],
        status_is(&unknown, Status::NotSupported),
        unknown.status,
        Status::NotSupported as u64,
    );
    let probed = raw(&t, Call::ProbeCall, &[u64::from(UNKNOWN_CODE)]);
    check(
        "base.probe_call_of_an_unknown_code_is_absent",
        &["PVABI-BASE-007"],
        probed.status == SUCCESS && probed.results[0] == CallState::Absent as u64,
        probed.results[0],
        CallState::Absent as u64,
    );
    // A feature call with no visible effect (the console would garble the channel).
    let early = raw(&t, Call::TimeMonotonic, &[]);
    check(
        "base.feature_calls_before_negotiate_are_not_negotiated",
        &["PVABI-STAT-001"],
        status_is(&early, Status::NotNegotiated),
        early.status,
        Status::NotNegotiated as u64,
    );
    let id = raw(&t, Call::GetImplId, &[]);
    let name = [id.results[1], id.results[2]];
    let mut printable = id.status == SUCCESS;
    let mut ended = false;
    for byte in name.iter().flat_map(|w| w.to_le_bytes()) {
        match byte {
            0 => ended = true,
            0x20..=0x7e if !ended => {}
            _ => printable = false,
        }
    }
    check(
        "base.impl_name_is_printable_ascii_padded_with_nul",
        &["PVABI-BASE-004"],
        printable,
        name[0],
        0,
    );
    // Who the implementation says it is, and what it offers, for the runner's profile.
    let version = raw(&t, Call::GetImplVersion, &[]);
    channel::info("impl_id", id.results[0]);
    channel::info("impl_version", version.results[0]);
    channel::info("highest_version", u64::from(highest));
    channel::info("lowest_version", u64::from(lowest));
    channel::info("offered_features", offered.bits());
    channel::info(
        "max_multicall_entries",
        u64::from(found.info.max_multicall_entries),
    );
    channel::info("deferred_capacity", u64::from(found.info.deferred_capacity));
    channel::info("ring_capacity", u64::from(found.info.ring_capacity));
    channel::info("vcpus", u64::from(found.info.vcpus));

    // NEGOTIATE refusals, each before any success.
    let required = (Features::CONSOLE | Features::SYSTEM).bits();
    let reserved = raw(&t, Call::Negotiate, &[(1 << 40) | 0x0001_0000, required]);
    check(
        "base.negotiate_reserved_bits_are_invalid_parameter",
        &["PVABI-BASE-019"],
        status_is(&reserved, Status::InvalidParameter),
        reserved.status,
        Status::InvalidParameter as u64,
    );
    let major = raw(&t, Call::Negotiate, &[0x0063_0000, required]);
    check(
        "base.negotiate_unserved_major_is_version_unsupported",
        &["PVABI-BASE-010"],
        status_is(&major, Status::VersionUnsupported),
        major.status,
        Status::VersionUnsupported as u64,
    );
    let feature = raw(&t, Call::Negotiate, &[0x0001_0000, required | (1 << 60)]);
    check(
        "base.negotiate_unknown_required_bit_is_feature_unavailable",
        &["PVABI-BASE-011"],
        status_is(&feature, Status::FeatureUnavailable),
        feature.status,
        Status::FeatureUnavailable as u64,
    );

    // NEGOTIATE 1.0 or later, CONSOLE and SYSTEM required, TIME optional.
    let optional = Features::TIME.bits();
    let n = raw(&t, Call::Negotiate, &[0x0001_0000, required, optional]);
    if n.status != SUCCESS {
        // Without CONSOLE and SYSTEM nothing can be reported: the runner sees no verdict.
        halt_forever()
    }
    channel::go_live();
    // A free-form log line (not a channel line): a host may answer BUSY, having appended
    // nothing, when it cannot take output (CON-003); what it did is reported.
    let log = &LOG_LINE.0;
    let w = raw(
        &t,
        Call::ConsoleWrite,
        &[pvabi_guest::gpa_of(log), log.len() as u64],
    );
    observe(
        "base.console_write_of_a_log_line",
        &["PVABI-CON-003"],
        "CONSOLE_WRITE status (0 SUCCESS, 14 BUSY having appended nothing):",
        w.status,
    );
    let want_version = if highest >> 16 == 1 {
        highest
    } else {
        0x0001_0000
    };
    check(
        "base.negotiate_accepts_the_highest_minor_of_the_major",
        &["PVABI-BASE-014"],
        n.results[0] == u64::from(want_version) || highest >> 16 != 1,
        n.results[0],
        u64::from(want_version),
    );
    let want_granted = required | (optional & offered.bits());
    check(
        "base.negotiate_grants_required_and_offered_optional",
        &["PVABI-BASE-014"],
        n.results[1] == want_granted,
        n.results[1],
        want_granted,
    );
    let again = raw(&t, Call::Negotiate, &[0x0001_0000, required]);
    check(
        "base.second_negotiate_is_locked",
        &["PVABI-BASE-012"],
        status_is(&again, Status::Locked),
        again.status,
        Status::Locked as u64,
    );
    let spec = raw(&t, Call::GetSpecVersion, &[]);
    check(
        "base.spec_version_reports_the_negotiated_version",
        &["PVABI-BASE-001"],
        spec.status == SUCCESS && spec.results[2] == n.results[0],
        spec.results[2],
        n.results[0],
    );
    let probe = raw(&t, Call::ProbeFeatures, &[]);
    check(
        "base.probe_features_reports_the_granted_features",
        &["PVABI-BASE-009"],
        probe.status == SUCCESS && probe.results[1] == n.results[1],
        probe.results[1],
        n.results[1],
    );
    channel::end(TEST)
}

pvabi_guest_rt::entry!(main);

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    // No verdict: the runner reports CRASH.
    halt_forever()
}
