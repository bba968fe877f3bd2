//! The generic checks: precedence (the first failing check wins) and hostile inputs.

use std::sync::Arc;

use pvabi_abi::batch::MulticallEntry;
use pvabi_abi::calls::Call;
use pvabi_abi::features::Features;
use pvabi_abi::status::Status;
use pvabi_abi::vcpu::VcpuStartState;

use zerocopy::IntoBytes;

use super::{config, BUF, BUF2, H, MEM, PAGE1, PAGE2, PAGE3};
use crate::Doorbell;
use crate::HostConfig;
use crate::{Dispatcher, FakeMachine, Outcome};

#[test]
fn unknown_call_before_negotiate_is_not_supported() {
    let h = H::new(1);
    for code in [0x0006, 0x0099, 0x0108, 0x0800, 0xffff, 1 << 32, u64::MAX] {
        assert_eq!(h.raw(0, code, &[]).0, Status::NotSupported, "{code:#x}");
    }
}

#[test]
fn not_negotiated_beats_bad_arguments() {
    let h = H::new(1);
    // Length 99 is out of range, but the call is not negotiated yet.
    assert_eq!(
        h.status(0, Call::ConsoleWriteRegs, &[99]),
        Status::NotNegotiated
    );
    assert_eq!(
        h.status(0, Call::ConsoleWrite, &[u64::MAX, 5000]),
        Status::NotNegotiated
    );
}

#[test]
fn not_granted_beats_block_errors() {
    let h = H::new(1);
    h.negotiate(Features::CONSOLE);
    assert_eq!(
        h.status(0, Call::TimeSetPage, &[0x1234]),
        Status::NotGranted
    );
    assert_eq!(
        h.status(0, Call::MemUpdatePte, &[1, 0, 9]),
        Status::NotGranted
    );
    assert_eq!(h.status(0, Call::ConsoleWriteRegs, &[5]), Status::Success);
}

#[test]
fn misaligned_beats_crossing() {
    let h = H::ready(2);
    // An 8-aligned structure at ...ffc: misaligned and crossing the page.
    assert_eq!(
        h.status(0, Call::VcpuStart, &[1, BUF + 0xffc]),
        Status::Misaligned
    );
    assert_eq!(
        h.status(0, Call::MemBalloonRelease, &[BUF + 0xffc, 2]),
        Status::Misaligned
    );
}

#[test]
fn crossing_beats_outside_ram() {
    let h = H::ready(2);
    // Straddles the end of RAM, which is page-aligned.
    assert_eq!(
        h.status(0, Call::ConsoleWrite, &[MEM - 8, 16]),
        Status::CrossesPage
    );
    // Entirely outside RAM and crossing.
    assert_eq!(
        h.status(0, Call::ConsoleWrite, &[MEM + 0xff8, 16]),
        Status::CrossesPage
    );
    assert_eq!(
        h.status(0, Call::VcpuStart, &[1, MEM + 0xfe0]),
        Status::CrossesPage
    );
}

#[test]
fn reserved_register_bits_beat_a_bad_block() {
    let h = H::ready(2);
    // MULTICALL flags bit 1 is reserved; the array is misaligned, crossing, outside RAM.
    assert_eq!(
        h.status(0, Call::Multicall, &[u64::MAX - 2, 32, 0, 2]),
        Status::InvalidParameter
    );
    // CRASH length too long, message outside RAM.
    assert_eq!(
        h.status(0, Call::SystemCrash, &[u64::MAX, 4097]),
        Status::InvalidParameter
    );
    // VCPU_START index out of range, state misaligned.
    assert_eq!(
        h.status(0, Call::VcpuStart, &[2, BUF + 1]),
        Status::InvalidParameter
    );
}

#[test]
fn access_denied_beats_bad_contents_and_contents_beat_state() {
    let h = H::ready(2);
    assert_eq!(h.status(0, Call::TimeSetPage, &[PAGE1]), Status::Success);
    // Reserved fields non-zero, on a host-owned page: the owner check comes first.
    h.write(PAGE1 + 0x100, &[1u64; 8]);
    assert_eq!(
        h.status(0, Call::VcpuStart, &[1, PAGE1 + 0x100]),
        Status::AccessDenied
    );
    // Bad contents and a call-specific error (vCPU 0 is running): contents first.
    h.write(BUF, &[1u64; 8]);
    assert_eq!(
        h.status(0, Call::VcpuStart, &[0, BUF]),
        Status::InvalidParameter
    );
    h.write(BUF, &VcpuStartState::default());
    assert_eq!(
        h.status(0, Call::VcpuStart, &[0, BUF]),
        Status::InvalidState
    );
}

#[test]
fn blocks_outside_ram_and_at_the_top_of_the_address_space() {
    let h = H::ready(2);
    let cases: &[(Call, &[u64], Status)] = &[
        (Call::ConsoleWrite, &[MEM, 1], Status::InvalidAddress),
        (
            Call::ConsoleWrite,
            &[MEM + 0x1000, 4096],
            Status::InvalidAddress,
        ),
        (Call::ConsoleWrite, &[u64::MAX, 1], Status::InvalidAddress),
        (Call::ConsoleWrite, &[u64::MAX, 2], Status::CrossesPage),
        (
            Call::ConsoleWrite,
            &[u64::MAX - 4095, 4096],
            Status::InvalidAddress,
        ),
        (
            Call::ConsoleWrite,
            &[u64::MAX - 4094, 4096],
            Status::CrossesPage,
        ),
        // An empty buffer touches no memory.
        (Call::ConsoleWrite, &[u64::MAX, 0], Status::Success),
        (Call::VcpuStart, &[1, u64::MAX - 7], Status::CrossesPage),
        (
            Call::VcpuStart,
            &[1, u64::MAX - 0xfff],
            Status::InvalidAddress,
        ),
        (
            Call::MemUpdatePte,
            &[u64::MAX - 7, 0, 1],
            Status::InvalidAddress,
        ),
        (Call::MemUpdatePte, &[u64::MAX, 0, 1], Status::Misaligned),
        (
            Call::MemBalloonRelease,
            &[u64::MAX - 7, 1],
            Status::InvalidAddress,
        ),
        (
            Call::MemBalloonRelease,
            &[u64::MAX - 7, 2],
            Status::CrossesPage,
        ),
        (
            Call::MemShare,
            &[u64::MAX - 0xfff, 1 << 20],
            Status::InvalidAddress,
        ),
        (Call::MemShare, &[MEM - 0x1000, 2], Status::InvalidAddress),
        (
            Call::MemUnshare,
            &[u64::MAX - 0xfff, 1],
            Status::InvalidAddress,
        ),
        (
            Call::TimeSetPage,
            &[u64::MAX - 0xfff],
            Status::InvalidAddress,
        ),
        (Call::TimeSetPage, &[u64::MAX], Status::Misaligned),
        (Call::EventsSetQueue, &[MEM, 32], Status::InvalidAddress),
        (
            Call::DeferSetQueue,
            &[MEM + 0x5000, 0],
            Status::InvalidAddress,
        ),
        (Call::RingSetup, &[u64::MAX - 7], Status::CrossesPage),
        (
            Call::Multicall,
            &[u64::MAX - 7, 1, 0, 0],
            Status::CrossesPage,
        ),
        (Call::Multicall, &[MEM - 96, 1, 0, 0], Status::Success),
        (Call::Multicall, &[MEM, 1, 0, 0], Status::InvalidAddress),
        (Call::SystemCrash, &[MEM, 1], Status::InvalidAddress),
    ];
    for &(call, args, want) in cases {
        assert_eq!(h.status(0, call, args), want, "{call:?} {args:x?}");
    }
    assert!(h.m.log().starts.is_empty());
    assert!(h.d.report().pte_writes.is_empty());
}

#[test]
fn a_block_straddling_the_end_of_ram_within_one_page() {
    // RAM that ends in the middle of a page.
    let m = Arc::new(FakeMachine::new((MEM + 0x800) as usize, 1));
    let d = Dispatcher::new(config(1), m.clone()).expect("config");
    let h = H { d, m };
    h.negotiate(Features::defined_in(pvabi_abi::version::V1_0));
    let mut regs = H::regs(0x0101, &[MEM + 0x7f8, 16]);
    assert_eq!(h.d.call(Doorbell::ring0(0), &mut regs), Outcome::Resume);
    assert_eq!(regs.rax, Status::InvalidAddress.raw());
    let mut regs = H::regs(0x0101, &[MEM + 0x7f0, 16]);
    h.d.call(Doorbell::ring0(0), &mut regs);
    assert_eq!(regs.rax, Status::Success.raw());
}

#[test]
fn host_owned_pages_are_off_limits() {
    let h = H::ready(2);
    assert_eq!(h.status(0, Call::TimeSetPage, &[PAGE1]), Status::Success);
    let denied: &[(Call, &[u64])] = &[
        (Call::ConsoleWrite, &[PAGE1 + 10, 5]),
        (Call::ConsoleWrite, &[PAGE1 + 0xfff, 1]),
        (Call::VcpuStart, &[1, PAGE1 + 0x40]),
        (Call::MemUpdatePte, &[PAGE1 + 8, 0, 1]),
        (Call::MemBalloonRelease, &[PAGE1, 1]),
        (Call::MemShare, &[PAGE1 - 0x3000, 8]),
        (Call::MemUnshare, &[PAGE1, 1]),
        (Call::Multicall, &[PAGE1, 1, 0, 0]),
        (Call::SystemCrash, &[PAGE1, 3]),
        // Registering an owned page again, as any kind of shared area.
        (Call::TimeSetPage, &[PAGE1]),
        (Call::EventsSetQueue, &[PAGE1, 40]),
        (Call::DeferSetQueue, &[PAGE1, 0]),
    ];
    for &(call, args) in denied {
        assert_eq!(h.status(0, call, args), Status::AccessDenied, "{call:?}");
    }
    // A balloon list elsewhere naming the owned page.
    h.write(BUF, &(PAGE1 / 4096));
    assert_eq!(
        h.status(0, Call::MemBalloonRelease, &[BUF, 1]),
        Status::AccessDenied
    );
    // The neighbours are fine.
    assert_eq!(
        h.status(0, Call::ConsoleWrite, &[PAGE1 - 5, 5]),
        Status::Success
    );
    assert_eq!(
        h.status(0, Call::ConsoleWrite, &[PAGE2, 5]),
        Status::Success
    );
    // Unregistering gives the page back.
    assert_eq!(h.status(0, Call::TimeSetPage, &[0]), Status::Success);
    assert_eq!(
        h.status(0, Call::ConsoleWrite, &[PAGE1 + 10, 5]),
        Status::Success
    );
    assert_eq!(
        h.status(0, Call::EventsSetQueue, &[PAGE1, 40]),
        Status::Success
    );
}

#[test]
fn every_call_survives_hostile_registers() {
    // A deterministic sweep: every code (and some unknown ones) with extreme arguments must
    // give a defined status, never a panic. HALT is left out: without a timeout it waits.
    let h = H::ready(2);
    let patterns: [u64; 10] = [
        0,
        1,
        7,
        BUF,
        BUF + 0xff9,
        MEM - 1,
        MEM,
        0x7fff_ffff_ffff_f000,
        u64::MAX - 7,
        u64::MAX,
    ];
    let mut codes: Vec<u64> = pvabi_abi::calls::all()
        .map(|d| u64::from(d.call.code()))
        .filter(|&c| c != u64::from(Call::VcpuHalt.code()))
        .collect();
    codes.extend([0x0006, 0x0708, 0x0900, 1 << 32, u64::MAX]);
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for &code in &codes {
        for _ in 0..200 {
            let args: Vec<u64> = (0..6)
                .map(|_| patterns[(next() % patterns.len() as u64) as usize])
                .collect();
            let (status, _, _) = h.raw(0, code, &args);
            if code == u64::from(Call::Negotiate.code()) {
                assert_ne!(status, Status::Success);
            }
        }
    }
    // Garbage that landed in guest memory must not have broken the dispatcher.
    assert_eq!(h.status(0, Call::VcpuInfo, &[]), Status::Success);
}

#[test]
fn multicall_context_checks_come_in_order() {
    let h = H::new(1);
    h.negotiate(Features::MULTICALL | Features::CONSOLE);
    let entry = |call: Call, args: [u64; 6]| MulticallEntry {
        call: call.code(),
        args,
        ..Default::default()
    };
    let entries = [
        // Not granted beats not allowed here (TIME_SET_PAGE is also not batchable).
        entry(Call::TimeSetPage, [1, 0, 0, 0, 0, 0]),
        // Not allowed here beats bad arguments.
        entry(Call::Negotiate, [u64::MAX, 0, 0, 9, 0, 0]),
        // Bad arguments.
        entry(Call::ConsoleWriteRegs, [33, 0, 0, 0, 0, 0]),
        // Unknown.
        MulticallEntry {
            call: 0x0777,
            ..Default::default()
        },
    ];
    h.write(BUF, &entries);
    assert_eq!(h.call(0, Call::Multicall, &[BUF, 4, 0, 0]).1[..2], [4, 4]);
    let statuses: Vec<u32> = (0..4).map(|i| h.u32_at(BUF + 96 * i + 4)).collect();
    assert_eq!(
        statuses,
        [
            Status::NotGranted as u32,
            Status::NotAllowedHere as u32,
            Status::InvalidParameter as u32,
            Status::NotSupported as u32
        ]
    );
}

/// STAT-003: "known" is "implemented" (served and not left out), whatever the features
/// offered: a call of a feature not offered is known and fails NOT_NEGOTIATED / NOT_GRANTED.
#[test]
fn known_means_implemented_whatever_is_offered() {
    let v11 = pvabi_abi::version::V1_1;
    let base = HostConfig {
        vcpus: 1,
        console: crate::ConsoleSink::Discard,
        ..HostConfig::acting_as(v11)
    };
    let h = H::with(HostConfig {
        features: base
            .features
            .iter()
            .copied()
            .filter(|f| f.flag != Features::RING)
            .collect(),
        disabled_calls: vec![Call::VcpuYield],
        ..base.clone()
    });
    // Before NEGOTIATE, against the highest version served (1.1).
    assert_eq!(h.status(0, Call::RingEnter, &[]), Status::NotNegotiated);
    assert_eq!(
        h.status(0, Call::TimeSetStealPage, &[0]),
        Status::NotNegotiated
    );
    assert_eq!(h.status(0, Call::VcpuYield, &[]), Status::NotSupported);
    h.negotiate(Features::VCPU);
    assert_eq!(h.status(0, Call::RingEnter, &[]), Status::NotGranted);
    assert_eq!(
        h.status(0, Call::TimeSetStealPage, &[0]),
        Status::NotGranted
    );
    assert_eq!(h.status(0, Call::VcpuYield, &[]), Status::NotSupported);
    // A 1.0 host does not implement a 1.1 call.
    let h = H::ready(1);
    assert_eq!(
        h.status(0, Call::TimeSetStealPage, &[0]),
        Status::NotSupported
    );
}

/// STAT-007: before NEGOTIATE, only statuses every served version defines (all of 1.x's are
/// 1.0's): a host serving 1.0 and 1.1 answers every code with one of them.
#[test]
fn statuses_before_negotiate_are_common_to_every_served_version() {
    // Serves 1.0 and 1.1 (one version per major; `lowest` is 1.0).
    let h = H::with(HostConfig {
        vcpus: 1,
        console: crate::ConsoleSink::Discard,
        ..HostConfig::acting_as(pvabi_abi::version::V1_1)
    });
    assert_eq!(h.d.config().lowest, pvabi_abi::version::V1_0);
    for code in 0..0x0a00u64 {
        let mut regs = crate::CallRegs::raw(code, &[BUF, 1, 0, 0, 0, 0]);
        if matches!(
            pvabi_abi::calls::Call::from_code(code).map(|c| c.descriptor().returns),
            Some(false)
        ) {
            continue;
        }
        h.d.call(crate::Doorbell::ring0(0), &mut regs);
        let status = Status::from_raw(regs.rax).expect("a defined status");
        assert!(
            status.raw() <= Status::Incomplete.raw(),
            "{code:#x}: {status:?}"
        );
    }
}

/// STAT-012: a failed call leaves its memory block as it was, even in strict mode.
#[test]
fn a_failed_call_does_not_write_its_block() {
    let h = H::ready_with(HostConfig {
        strict: true,
        ..config(1)
    });
    // RING_SETUP fails at step 11 (INVALID_STATE): its block is untouched.
    let setup = |sq: u64, cq: u64| {
        let mut b = Vec::new();
        b.extend_from_slice(sq.as_bytes());
        b.extend_from_slice(cq.as_bytes());
        b.extend_from_slice(&[0u8; 16]);
        h.write(BUF, b.as_slice());
        h.status(0, Call::RingSetup, &[BUF])
    };
    assert_eq!(setup(PAGE1, PAGE2), Status::Success);
    assert_eq!(setup(BUF2, PAGE3), Status::InvalidState);
    let mut want = Vec::new();
    want.extend_from_slice(BUF2.as_bytes());
    want.extend_from_slice(PAGE3.as_bytes());
    want.extend_from_slice(&[0u8; 16]);
    assert_eq!(h.read_bytes(BUF, 32), want);
    // MEM_UPDATE_PTE rejected at step 5 leaves the entry it names alone.
    h.write(BUF2, &0x1234u64);
    assert_eq!(
        h.status(0, Call::MemUpdatePte, &[BUF2, 0xdead, 5]),
        Status::InvalidParameter
    );
    assert_eq!(h.read::<u64>(BUF2), 0x1234);
}
