//! PVABI-BASE-005's two-run comparison (`guest_check::identity`): what a run records, the
//! second run's host, and what `compare` counts as a difference.

use std::collections::{BTreeMap, BTreeSet};

use pvabi_abi::batch::MulticallEntry;
use pvabi_abi::calls::Call;
use pvabi_abi::features::Features;
use pvabi_abi::status::Status;

use super::{config, BUF, H};
use crate::guest_check::identity::{
    compare, describe, CallsMade, IdentityRun, MAX_DISTINCT, TWIN_IMPL_ID, TWIN_IMPL_NAME,
    TWIN_IMPL_VERSION,
};
use crate::HostConfig;

fn code(call: Call) -> u64 {
    u64::from(call.code())
}

/// A run that made `calls` (each on vCPU 0 with all-zero arguments).
fn made(calls: &[Call]) -> CallsMade {
    let mut m = CallsMade::default();
    for c in calls {
        m.record(0, code(*c), &[0; 6]);
    }
    m
}

fn run(calls: &CallsMade, complete: bool) -> IdentityRun<'_> {
    IdentityRun {
        calls,
        complete,
        identity: "id X".to_owned(),
    }
}

#[test]
fn every_call_is_recorded_in_every_context_with_its_vcpu() {
    let h = H::with(HostConfig {
        check_guest: true,
        ..config(2)
    });
    h.negotiate(Features::CONSOLE | Features::VCPU | Features::MULTICALL);
    assert_eq!(h.status(1, Call::GetImplId, &[]), Status::Success);
    assert_eq!(
        h.status(0, Call::ProbeCall, &[code(Call::VcpuKick)]),
        Status::Success
    );
    assert_eq!(
        h.status(0, Call::ConsoleWriteRegs, &[1, 0x41]),
        Status::Success
    );
    // A MULTICALL's entry is a call the guest makes too.
    let entry = MulticallEntry {
        call: Call::VcpuInfo.code(),
        ..Default::default()
    };
    h.write(BUF, [entry].as_slice());
    assert_eq!(
        h.status(1, Call::Multicall, &[BUF, 1, 0, 0]),
        Status::Success
    );
    let calls = h.d.guest_check().expect("checking mode").calls;
    let vcpus = |c: Call| calls.codes.get(&code(c)).cloned().unwrap_or_default();
    assert_eq!(vcpus(Call::GetImplId), BTreeSet::from([1]));
    assert_eq!(vcpus(Call::Multicall), BTreeSet::from([1]));
    assert_eq!(vcpus(Call::VcpuInfo), BTreeSet::from([1]), "{calls:?}");
    assert_eq!(vcpus(Call::Negotiate), BTreeSet::from([0]));
    // CONSOLE_WRITE_REGS counts as CONSOLE_WRITE.
    assert_eq!(vcpus(Call::ConsoleWrite), BTreeSet::from([0]));
    assert!(!calls.codes.contains_key(&code(Call::ConsoleWriteRegs)));
    // NEGOTIATE's and PROBE_CALL's arguments, no other call's.
    let probed = (code(Call::ProbeCall), [code(Call::VcpuKick), 0, 0, 0, 0, 0]);
    assert_eq!(calls.arguments.get(&probed), Some(&BTreeSet::from([0])));
    let with_args: BTreeSet<u64> = calls.arguments.keys().map(|(c, _)| *c).collect();
    assert_eq!(
        with_args,
        BTreeSet::from([code(Call::Negotiate), code(Call::ProbeCall)])
    );
    // Off by default.
    assert!(H::ready(1).d.guest_check().is_none());
}

#[test]
fn the_twin_host_differs_in_its_identity_only() {
    let host = HostConfig::checking();
    let twin = host.with_twin_identity();
    assert_eq!(twin.impl_id, TWIN_IMPL_ID);
    assert_eq!(twin.impl_name, TWIN_IMPL_NAME);
    assert_eq!(twin.impl_version, TWIN_IMPL_VERSION);
    assert_ne!(twin.impl_id, host.impl_id);
    assert_ne!(twin.impl_name, host.impl_name);
    assert_ne!(twin.impl_version, host.impl_version);
    assert!(twin.impl_id >= pvabi_abi::base::IMPL_ID_VENDOR_FIRST);
    let back = HostConfig {
        impl_id: host.impl_id,
        impl_name: host.impl_name,
        impl_version: host.impl_version,
        ..twin.clone()
    };
    assert_eq!(format!("{back:?}"), format!("{host:?}"));
    // A host that already has the twin identity gets yet another one.
    let again = twin.with_twin_identity();
    assert_ne!(again.impl_id, twin.impl_id);
    assert_ne!(again.impl_version, twin.impl_version);
}

#[test]
fn what_a_run_records_is_bounded_whatever_the_guest_calls() {
    let mut m = CallsMade::default();
    // Distinct unknown call codes and distinct PROBE_CALL arguments, far more than are kept.
    for i in 0..(2 * MAX_DISTINCT as u64) {
        m.record(0, 0x7000_0000 + i, &[0; 6]);
        m.record(0, code(Call::ProbeCall), &[i, 0, 0, 0, 0, 0]);
    }
    assert!(m.overflowed);
    assert_eq!(m.codes.len(), MAX_DISTINCT);
    assert_eq!(m.arguments.len(), MAX_DISTINCT);
    // Calls already recorded still gather vCPUs.
    m.record(1, 0x7000_0000, &[0; 6]);
    assert_eq!(m.codes[&0x7000_0000].len(), 2);
    assert!(!made(&[Call::GetSpecVersion]).overflowed);
}

#[test]
fn a_call_made_under_one_identity_only_is_a_difference() {
    let a = made(&[Call::GetImplId, Call::TimeFrequency, Call::SystemShutdown]);
    let b = made(&[
        Call::GetImplId,
        Call::SystemShutdown,
        Call::MemFlushTlbLocal,
    ]);
    let diffs = compare([&run(&a, true), &run(&b, true)]);
    let seen: Vec<(&str, usize)> = diffs.iter().map(|d| (d.call.as_str(), d.made_in)).collect();
    assert_eq!(seen, [("TIME_FREQUENCY", 0), ("MEM_FLUSH_TLB_LOCAL", 1)]);
    assert_eq!(diffs[0].vcpus, [0]);
    let text = describe(
        [
            &IdentityRun {
                identity: "id 0x1".to_owned(),
                ..run(&a, true)
            },
            &IdentityRun {
                identity: "id 0x80007e57".to_owned(),
                ..run(&b, true)
            },
        ],
        &diffs,
    );
    assert!(
        text.contains("under the host reporting id 0x1, the guest made TIME_FREQUENCY (vCPU 0)"),
        "{text}"
    );
    assert!(
        text.contains(
            "MEM_FLUSH_TLB_LOCAL (vCPU 0), which it did not make under the host reporting id 0x1"
        ),
        "{text}"
    );
    assert!(text.contains("never from GET_IMPL_ID"), "{text}");
    // The same calls: nothing.
    assert!(compare([&run(&a, true), &run(&a.clone(), true)]).is_empty());
}

#[test]
fn what_timing_alone_changes_is_not_a_difference() {
    // How often, on which vCPU, the waiting, waking and clock calls, and which console call.
    let mut a = made(&[
        Call::Negotiate,
        Call::VcpuHalt,
        Call::TimeMonotonic,
        Call::ConsoleWrite,
    ]);
    a.record(0, code(Call::TimeSetTimer), &[1234, 0, 0, 0, 0, 0]);
    let mut b = CallsMade::default();
    for _ in 0..3 {
        b.record(1, code(Call::Negotiate), &[0; 6]);
        b.record(1, code(Call::ConsoleWriteRegs), &[5, 1, 2, 3, 4, 5]);
    }
    for c in [
        Call::VcpuYield,
        Call::VcpuKick,
        Call::RingEnter,
        Call::TimeWallclock,
    ] {
        b.record(0, code(c), &[0; 6]);
    }
    b.record(1, code(Call::TimeSetTimer), &[98765, 0, 0, 0, 0, 0]);
    let diffs = compare([&run(&a, true), &run(&b, true)]);
    assert!(diffs.is_empty(), "{diffs:?}");
}

#[test]
fn negotiate_and_probe_call_arguments_are_compared() {
    let mut a = CallsMade::default();
    let mut b = CallsMade::default();
    a.record(0, code(Call::Negotiate), &[0x1_0000, 0x23, 0, 0, 0, 0]);
    b.record(0, code(Call::Negotiate), &[0x1_0000, 0x21, 0, 0, 0, 0]);
    a.record(0, code(Call::ProbeCall), &[0x0200, 0, 0, 0, 0, 0]);
    b.record(0, code(Call::ProbeCall), &[0x0200, 0, 0, 0, 0, 0]);
    let diffs = compare([&run(&a, true), &run(&b, true)]);
    let calls: Vec<&str> = diffs.iter().map(|d| d.call.as_str()).collect();
    assert_eq!(
        calls,
        [
            "NEGOTIATE(requested 0x10000, required 0x23, optional 0x0, flags 0x0)",
            "NEGOTIATE(requested 0x10000, required 0x21, optional 0x0, flags 0x0)",
        ]
    );
    // A call missing altogether is one difference, not one per argument tuple too.
    let mut c = made(&[Call::Negotiate]);
    c.record(0, code(Call::ProbeCall), &[7, 0, 0, 0, 0, 0]);
    let diffs = compare([&run(&c, true), &run(&made(&[Call::Negotiate]), true)]);
    let calls: Vec<&str> = diffs.iter().map(|d| d.call.as_str()).collect();
    assert_eq!(calls, ["PROBE_CALL"]);
}

#[test]
fn a_run_cut_short_counts_only_for_the_calls_it_made() {
    let full = made(&[Call::Negotiate, Call::TimeFrequency, Call::SystemShutdown]);
    let part = made(&[Call::Negotiate]);
    // The watchdog stopped the second run: what it did not get to is no evidence.
    assert!(compare([&run(&full, true), &run(&part, false)]).is_empty());
    // But a call it made that the complete run never made is.
    let odd = made(&[Call::Negotiate, Call::MemFlushTlbAll]);
    let diffs = compare([&run(&full, true), &run(&odd, false)]);
    let seen: Vec<(&str, usize)> = diffs.iter().map(|d| (d.call.as_str(), d.made_in)).collect();
    assert_eq!(seen, [("MEM_FLUSH_TLB_ALL", 1)]);
    // A code no version defines is named by its number.
    let mut unknown = CallsMade::default();
    unknown.record(0, 0x0fff, &[0; 6]);
    let diffs = compare([&run(&unknown, true), &run(&CallsMade::default(), true)]);
    assert_eq!(diffs[0].call, "call 0xfff");
    assert_eq!(
        CallsMade::default(),
        CallsMade {
            codes: BTreeMap::new(),
            arguments: BTreeMap::new(),
            overflowed: false,
        }
    );
}
