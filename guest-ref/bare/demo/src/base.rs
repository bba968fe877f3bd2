//! Discovery (the CPUID scan) and the Base family: versions, identity, probing, NEGOTIATE.

use pvabi_guest::abi::base::CallState;
use pvabi_guest::abi::calls;
use pvabi_guest::abi::discovery::TransportFlags;
use pvabi_guest::base::NegotiateRequest;
use pvabi_guest::discovery::discover;
use pvabi_guest::{Call, Features, Status, Version};
use pvabi_guest_rt::{halt_forever, BootInfo};

use crate::out::{expect_status, must, pv, section, set_ports, Line};
use crate::V1_0_FEATURES;

/// A call code no version defines (family 0x7f).
const UNKNOWN_CALL: u32 = 0x7f42;

/// Discovery, Base calls before and after NEGOTIATE. Returns the negotiated version.
pub fn run(boot: &BootInfo) -> Version {
    section("discovery (CPUID)");
    let Some(found) = discover() else {
        // No pvabi host: nothing can be printed (the console is a pvabi call). The host
        // sees a vCPU halted with interrupts disabled and reports it with the registers.
        halt_forever()
    };
    set_ports(found.info.doorbell_port, found.info.ring_notify_port);
    let info = found.info;
    Line::check("discovery", true)
        .s("signature \"pvabi-x86-64\" at CPUID leaf ")
        .hex(u64::from(found.base))
        .s(", highest leaf ")
        .hex(u64::from(found.max_leaf))
        .end();
    let (lowest, highest) = (found.lowest_version(), found.highest_version());
    Line::check(
        "discovery",
        highest.major() >= 1 && lowest <= highest && lowest.major() <= 1,
    )
    .s("host serves versions ")
    .ver(lowest)
    .s(" to ")
    .ver(highest)
    .s(", offers ")
    .features(found.offered_features())
    .end();
    let flags = found.transport_flags();
    Line::check("discovery", flags.contains(TransportFlags::PIO))
        .s("doorbell port ")
        .hex(u64::from(info.doorbell_port))
        .s(", ring-notify port ")
        .hex(u64::from(info.ring_notify_port))
        .s(", transport flags ")
        .hex(u64::from(flags.bits()))
        .s(if flags.contains(TransportFlags::PIO) {
            " (port I/O doorbell)"
        } else {
            " (no port I/O doorbell!)"
        })
        .end();
    Line::check("discovery", info.vcpus == boot.vcpu_count)
        .s("limits: ")
        .dec(u64::from(info.max_multicall_entries))
        .s(" MULTICALL entries, ")
        .dec(u64::from(info.deferred_capacity))
        .s(" deferred entries, ")
        .dec(u64::from(info.ring_capacity))
        .s(" ring slots, vCPU count ")
        .dec(u64::from(info.vcpus))
        .s(" (the VM has ")
        .dec(u64::from(boot.vcpu_count))
        .s(")")
        .end();

    section("base (before NEGOTIATE)");
    let pv = pv();
    let spec = must("base", "GET_SPEC_VERSION", pv.get_spec_version());
    Line::check(
        "base",
        spec.highest == highest && spec.lowest == lowest && spec.negotiated.is_none(),
    )
    .s("GET_SPEC_VERSION: highest ")
    .ver(spec.highest)
    .s(", lowest ")
    .ver(spec.lowest)
    .s(", negotiated none")
    .end();
    let id = must("base", "GET_IMPL_ID", pv.get_impl_id());
    Line::check("base", id.name[0] != 0)
        .s("GET_IMPL_ID: id ")
        .dec(u64::from(id.id))
        .s(", name \"")
        .ascii(&id.name)
        .s("\"")
        .end();
    let iv = must("base", "GET_IMPL_VERSION", pv.get_impl_version());
    Line::check("base", true)
        .s("GET_IMPL_VERSION: ")
        .dec(u64::from(iv.major))
        .s(".")
        .dec(u64::from(iv.minor))
        .s(".")
        .dec(u64::from(iv.patch))
        .end();
    let sets = must("base", "PROBE_FEATURES", pv.probe_features());
    Line::check(
        "base",
        sets.granted.is_empty() && sets.offered.contains(V1_0_FEATURES),
    )
    .s("PROBE_FEATURES: offered ")
    .features(sets.offered)
    .s(", granted none yet")
    .end();
    let probe = must(
        "base",
        "PROBE_CALL",
        pv.probe_call_code(Call::ConsoleWrite.code()),
    );
    Line::check(
        "base",
        probe.state == CallState::Available && probe.feature == Features::CONSOLE,
    )
    .s("PROBE_CALL(CONSOLE_WRITE) = ")
    .s(state_name(probe.state))
    .s(", needs ")
    .features(probe.feature)
    .end();
    // No feature call before NEGOTIATE: an offered feature is not granted (DISC-006). The
    // host's NOT_NEGOTIATED answer is the conformance suite's to check (`pvabi conform`), not
    // a model guest's to provoke.

    section("base: NEGOTIATE");
    // pvabi 1.x with at least minor 0, every 1.0 family required.
    let request = NegotiateRequest {
        major: 1,
        min_minor: 0,
        required: V1_0_FEATURES,
        optional: Features::empty(),
    };
    let done = must("base", "NEGOTIATE", pv.negotiate(request));
    // The console works from here on: print what was kept.
    crate::out::flush_early();
    Line::check(
        "base",
        done.version.major() == 1 && done.granted.contains(V1_0_FEATURES),
    )
    .s("NEGOTIATE(1.0 or later, required ")
    .features(V1_0_FEATURES)
    .s(") -> version ")
    .ver(done.version)
    .s(", granted ")
    .features(done.granted)
    .end();
    expect_status(
        "base",
        "a second NEGOTIATE",
        pv.negotiate(request),
        Status::Locked,
    );
    let spec = must("base", "GET_SPEC_VERSION", pv.get_spec_version());
    Line::check("base", spec.negotiated == Some(done.version))
        .s("GET_SPEC_VERSION now says negotiated ")
        .ver(spec.negotiated.unwrap_or_default())
        .end();
    let sets = must("base", "PROBE_FEATURES", pv.probe_features());
    Line::check("base", sets.granted == done.granted)
        .s("PROBE_FEATURES: granted ")
        .features(sets.granted)
        .end();

    // PROBE_CALL for every call this guest knows: READY if the negotiated version has it
    // and its feature is granted, AVAILABLE if its feature was not asked for, ABSENT if it
    // is newer than the negotiated version.
    let (mut ready, mut available, mut absent, mut wrong) = (0u64, 0u64, 0u64, 0u64);
    let mut first_wrong = "";
    for d in calls::all() {
        let want = if d.since > done.version {
            CallState::Absent
        } else if d.feature.is_none_or(|f| done.granted.contains(f)) {
            CallState::Ready
        } else {
            CallState::Available
        };
        match pv.probe_call(d.call) {
            Ok(s) if s == want => match s {
                CallState::Ready => ready += 1,
                CallState::Available => available += 1,
                CallState::Absent => absent += 1,
            },
            _ => {
                wrong += 1;
                if first_wrong.is_empty() {
                    first_wrong = d.name;
                }
            }
        }
    }
    let mut l = Line::check("base", wrong == 0 && ready > 0);
    l.s("PROBE_CALL of every call: ")
        .dec(ready)
        .s(" READY, ")
        .dec(available)
        .s(" AVAILABLE (feature not requested), ")
        .dec(absent)
        .s(" ABSENT (newer than ")
        .ver(done.version)
        .s(")");
    if wrong != 0 {
        l.s(", ").dec(wrong).s(" wrong, first ").s(first_wrong);
    }
    l.end();
    let unknown = must("base", "PROBE_CALL", pv.probe_call_code(UNKNOWN_CALL));
    Line::check("base", unknown.state == CallState::Absent)
        .s("PROBE_CALL(")
        .hex(u64::from(UNKNOWN_CALL))
        .s(", no such call) = ")
        .s(state_name(unknown.state))
        .end();
    // SAFETY: an unknown code: the host only answers NOT_SUPPORTED.
    let r = unsafe { pv.transport_call(UNKNOWN_CALL) };
    expect_status("base", "calling an unknown code", r, Status::NotSupported);
    done.version
}

fn state_name(s: CallState) -> &'static str {
    match s {
        CallState::Absent => "ABSENT",
        CallState::Available => "AVAILABLE",
        CallState::Ready => "READY",
    }
}

/// A raw call by code, for codes this guest has no `Call` for.
trait RawCode {
    /// Makes call `code` with zero arguments.
    ///
    /// # Safety
    /// As for `Transport::call`.
    unsafe fn transport_call(&self, code: u32) -> pvabi_guest::Result<[u64; 4]>;
}

impl RawCode for pvabi_guest::Pvabi<pvabi_guest::PortTransport> {
    unsafe fn transport_call(&self, code: u32) -> pvabi_guest::Result<[u64; 4]> {
        use pvabi_guest::Transport;
        // SAFETY: forwarded to the caller.
        unsafe { self.transport().call(code, [0; 6]) }.into_result()
    }
}
