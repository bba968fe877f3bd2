//! vCPU family.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use pvabi_abi::calls::Call;
use pvabi_abi::events::{Event, EventKind};
use pvabi_abi::status::Status;
use pvabi_abi::vcpu::{VcpuStartState, WakeReason};
use vm_memory::{Bytes, GuestAddress};

use super::{BUF, H, MEM, PAGE1};
use crate::Outcome;

fn state(rip: u64) -> VcpuStartState {
    VcpuStartState {
        rip,
        rsp: 0x8000,
        arg: 42,
        cr3: 0,
        ..Default::default()
    }
}

#[test]
fn info() {
    let h = H::ready(3);
    assert_eq!(
        h.call(2, Call::VcpuInfo, &[]),
        (Status::Success, [2, 3, 0, 0])
    );
    assert_eq!(h.status(0, Call::VcpuYield, &[]), Status::Success);
}

#[test]
fn start_stop_and_start_again() {
    let h = H::ready(3);
    h.write(BUF, &state(0x20_0000));
    assert_eq!(h.status(0, Call::VcpuStart, &[1, BUF]), Status::Success);
    assert_eq!(h.m.log().starts, [(1, state(0x20_0000))]);
    assert_eq!(
        h.status(0, Call::VcpuStart, &[1, BUF]),
        Status::InvalidState
    );
    assert_eq!(
        h.status(2, Call::VcpuStart, &[0, BUF]),
        Status::InvalidState
    );
    assert_eq!(
        h.status(0, Call::VcpuStart, &[3, BUF]),
        Status::InvalidParameter
    );
    // vCPU 0 cannot stop; vCPU 1 can, and can then be started again.
    assert_eq!(h.status(0, Call::VcpuStop, &[]), Status::InvalidState);
    assert_eq!(h.raw(1, 0x0502, &[]).2, Outcome::StopVcpu);
    assert_eq!(h.status(0, Call::VcpuStart, &[1, BUF]), Status::Success);
    let rep = h.d.report();
    assert_eq!(rep.vcpu_starts.len(), 2);
    assert_eq!(rep.vcpu_stops, [1]);
}

#[test]
fn start_state_is_validated() {
    let h = H::ready(2);
    let mut s = state(1);
    s.cr3 = 0x1234;
    h.write(BUF, &s);
    assert_eq!(
        h.status(0, Call::VcpuStart, &[1, BUF]),
        Status::InvalidParameter
    );
    s.cr3 = MEM;
    h.write(BUF, &s);
    assert_eq!(
        h.status(0, Call::VcpuStart, &[1, BUF]),
        Status::InvalidAddress
    );
    s.cr3 = 0x9000;
    h.write(BUF, &s);
    // Reserved `flags` and `reserved[2]` non-zero.
    h.write(BUF + 32, &1u64);
    assert_eq!(
        h.status(0, Call::VcpuStart, &[1, BUF]),
        Status::InvalidParameter
    );
    h.write(BUF + 32, &0u64);
    h.write(BUF + 56, &1u64);
    assert_eq!(
        h.status(0, Call::VcpuStart, &[1, BUF]),
        Status::InvalidParameter
    );
    h.write(BUF + 56, &0u64);
    assert_eq!(
        h.status(0, Call::VcpuStart, &[1, BUF + 4]),
        Status::Misaligned
    );
    assert!(h.m.log().starts.is_empty());
    // The machine's refusal is the guest's status, and the vCPU is not marked running.
    h.m.refuse_starts(Some(Status::InvalidParameter));
    assert_eq!(
        h.status(0, Call::VcpuStart, &[1, BUF]),
        Status::InvalidParameter
    );
    h.m.refuse_starts(None);
    assert_eq!(h.status(0, Call::VcpuStart, &[1, BUF]), Status::Success);
    assert_eq!(h.m.log().starts, [(1, s)]);
}

#[test]
fn start_uses_the_one_copy_even_if_the_guest_changes_the_block() {
    let h = H::ready(2);
    h.write(BUF, &state(0x1111));
    // While the host acts, "another vCPU" rewrites the block: new rip, reserved bits set.
    h.m.on_start(Box::new(|mem| {
        mem.write_slice(&[0xffu8; 64], GuestAddress(BUF)).unwrap();
    }));
    assert_eq!(h.status(0, Call::VcpuStart, &[1, BUF]), Status::Success);
    assert_eq!(h.m.log().starts, [(1, state(0x1111))]);
    assert_eq!(h.d.report().vcpu_starts, [(1, state(0x1111))]);
    assert_eq!(h.read::<u64>(BUF), u64::MAX);
}

#[test]
fn halt_times_out() {
    let h = H::ready(1);
    let t = Instant::now();
    assert_eq!(
        h.call(0, Call::VcpuHalt, &[15_000_000]).1[0],
        WakeReason::Timeout as u64
    );
    assert!(t.elapsed() >= Duration::from_millis(15));
    let rep = h.d.report();
    assert_eq!((rep.halts, rep.halt_timeouts), (1, 1));
}

#[test]
fn kick_wakes_a_halt_without_timeout_and_queues_a_kick_event() {
    let h = Arc::new(H::ready(2));
    h.start_vcpu_from(0, 1);
    assert_eq!(
        h.status(1, Call::EventsSetQueue, &[PAGE1, 33]),
        Status::Success
    );
    let halter = {
        let h = h.clone();
        thread::spawn(move || h.call(1, Call::VcpuHalt, &[0]))
    };
    thread::sleep(Duration::from_millis(20));
    assert_eq!(h.status(0, Call::VcpuKick, &[1]), Status::Success);
    assert_eq!(
        halter.join().unwrap(),
        (Status::Success, [WakeReason::Event as u64, 0, 0, 0])
    );
    let e: Event = h.read(PAGE1 + 64);
    assert_eq!((e.kind, e.source), (EventKind::Kick as u32, 0));
    // The queue is still not empty: HALT returns at once until the guest consumes it.
    assert_eq!(
        h.call(1, Call::VcpuHalt, &[0]).1[0],
        WakeReason::Event as u64
    );
    h.write(PAGE1, &1u32);
    assert_eq!(
        h.call(1, Call::VcpuHalt, &[1_000_000]).1[0],
        WakeReason::Timeout as u64
    );
    assert_eq!(h.status(0, Call::VcpuKick, &[2]), Status::InvalidParameter);
    assert_eq!(h.d.report().kicks, 1);
}

#[test]
fn shutdown_wakes_every_halt_and_later_halts_do_not_block() {
    let h = Arc::new(H::ready(3));
    let halters: Vec<_> = (0..3)
        .map(|v| {
            let h = h.clone();
            thread::spawn(move || h.call(v, Call::VcpuHalt, &[u64::MAX]))
        })
        .collect();
    thread::sleep(Duration::from_millis(20));
    h.d.shutdown();
    for t in halters {
        assert_eq!(t.join().unwrap().1[0], WakeReason::Timeout as u64);
    }
    assert!(h.d.is_shut_down());
    assert_eq!(
        h.call(0, Call::VcpuHalt, &[0]).1[0],
        WakeReason::Timeout as u64
    );
    // Calls that need a host thread say so.
    assert_eq!(h.status(0, Call::TimeSetTimer, &[1]), Status::NoResources);
}

#[test]
fn stop_releases_the_vcpus_shared_areas_and_disarms_its_timer() {
    use pvabi_abi::batch::RingSetup;
    use pvabi_abi::convention::ReservedU64;

    use super::{BUF2, PAGE2, PAGE3};

    let h = H::ready(2);
    h.write(BUF, &state(0x20_0000));
    assert_eq!(h.status(0, Call::VcpuStart, &[1, BUF]), Status::Success);
    // vCPU 1 registers an event queue, a deferred queue and a ring pair, masks USER and
    // arms its timer 5 ms ahead.
    assert_eq!(
        h.status(1, Call::EventsSetQueue, &[PAGE1, 0x40]),
        Status::Success
    );
    assert_eq!(
        h.status(1, Call::DeferSetQueue, &[PAGE2, 0]),
        Status::Success
    );
    let ring = RingSetup {
        sq_page: PAGE3,
        cq_page: PAGE3 + 0x1000,
        mode: pvabi_abi::batch::RingMode::Doorbell,
        flags: 0,
        reserved: ReservedU64::Zero,
    };
    h.write(BUF2, &ring);
    assert_eq!(h.status(1, Call::RingSetup, &[BUF2]), Status::Success);
    assert_eq!(
        h.status(1, Call::EventsSetMask, &[EventKind::User.mask_bit()]),
        Status::Success
    );
    let now = h.call(1, Call::TimeMonotonic, &[]).1[0];
    assert_eq!(
        h.status(1, Call::TimeSetTimer, &[now + 5_000_000]),
        Status::Success
    );
    assert_eq!(
        h.raw(1, Call::VcpuStop.code().into(), &[]).2,
        Outcome::StopVcpu
    );
    // Its pages are the guest's again (PVABI-VCPU-008): vCPU 0 may use them as blocks.
    for page in [PAGE1, PAGE2, PAGE3, PAGE3 + 0x1000] {
        assert_eq!(
            h.status(0, Call::ConsoleWrite, &[page, 1]),
            Status::Success,
            "page {page:#x} is still host-owned"
        );
    }
    // Started again, it has fresh pvabi state: the same pages register again, and the
    // mask is 0 (EVENTS_SET_MASK returns the previous mask).
    assert_eq!(h.status(0, Call::VcpuStart, &[1, BUF]), Status::Success);
    assert_eq!(
        h.status(1, Call::EventsSetQueue, &[PAGE1, 0x40]),
        Status::Success
    );
    assert_eq!(
        h.status(1, Call::DeferSetQueue, &[PAGE2, 0]),
        Status::Success
    );
    assert_eq!(h.status(1, Call::RingSetup, &[BUF2]), Status::Success);
    assert_eq!(
        h.call(1, Call::EventsSetMask, &[0]),
        (Status::Success, [0, 0, 0, 0])
    );
    // The disarmed timer never posts its event.
    thread::sleep(Duration::from_millis(20));
    let first: Event = h.read(PAGE1 + 64);
    assert_eq!(first.kind, 0);
    assert_eq!(h.d.report().timers_fired, 0);
}

#[test]
fn stop_releases_the_steal_page_and_a_restart_starts_without_one() {
    // PVABI-VCPU-008 (the steal-time page is one of the stopping vCPU's areas) and
    // PVABI-VCPU-016 (a started vCPU has none registered).
    use pvabi_abi::version::V1_1;
    let h = H::with(crate::HostConfig {
        vcpus: 2,
        console: crate::ConsoleSink::Discard,
        ..crate::HostConfig::acting_as(V1_1)
    });
    h.negotiate(pvabi_abi::features::Features::defined_in(V1_1));
    h.write(BUF, &state(0x20_0000));
    assert_eq!(h.status(0, Call::VcpuStart, &[1, BUF]), Status::Success);
    assert_eq!(
        h.status(1, Call::TimeSetStealPage, &[PAGE1]),
        Status::Success
    );
    assert_eq!(
        h.status(0, Call::ConsoleWrite, &[PAGE1, 1]),
        Status::AccessDenied,
        "host-owned while registered"
    );
    assert_eq!(
        h.raw(1, Call::VcpuStop.code().into(), &[]).2,
        Outcome::StopVcpu
    );
    assert_eq!(
        h.status(0, Call::ConsoleWrite, &[PAGE1, 1]),
        Status::Success,
        "the steal page is the guest's again"
    );
    assert_eq!(h.status(0, Call::VcpuStart, &[1, BUF]), Status::Success);
    // Fresh: the same page registers again (it would be ACCESS_DENIED if still owned).
    assert_eq!(
        h.status(1, Call::TimeSetStealPage, &[PAGE1]),
        Status::Success
    );
}

#[test]
fn a_start_block_whose_last_byte_wraps_the_address_space_crosses_a_page() {
    // PVABI-CONV-035: the last byte is computed without wrapping around.
    let h = H::ready(2);
    let size = std::mem::size_of::<VcpuStartState>() as u64;
    let last_page = 0u64.wrapping_sub(0x1000);
    // Ends at exactly 2^64 - 1: one page, but not RAM.
    assert_eq!(
        h.status(0, Call::VcpuStart, &[1, 0u64.wrapping_sub(size)]),
        Status::InvalidAddress
    );
    // Its last byte would be at 2^64 + 7: it does not fit the page it starts in.
    assert_eq!(
        h.status(0, Call::VcpuStart, &[1, 0u64.wrapping_sub(size) + 8]),
        Status::CrossesPage
    );
    assert!(last_page < 0u64.wrapping_sub(size));
    assert!(h.m.log().starts.is_empty());
}

#[test]
fn guest_ram_ends_where_the_platform_says() {
    // PVABI-CONV-033: the fake platform's RAM is [0, MEM); a block that ends at MEM is RAM,
    // one byte further is not.
    let h = H::ready(3);
    let size = std::mem::size_of::<VcpuStartState>() as u64;
    h.write(MEM - size, &state(0x20_0000));
    assert_eq!(
        h.status(0, Call::VcpuStart, &[1, MEM - size]),
        Status::Success
    );
    assert_eq!(
        h.status(0, Call::VcpuStart, &[2, MEM]),
        Status::InvalidAddress
    );
    assert_eq!(h.m.log().starts.len(), 1);
}

#[test]
fn failed_calls_leave_no_host_data_in_result_registers() {
    // PVABI-CONV-027: after an error, a result register holds what it held, or 0, or a
    // constant of the configuration (strict mode's poison): never a value of the host's.
    for strict in [false, true] {
        let h = H::ready_with(crate::HostConfig {
            strict,
            ..super::config(2)
        });
        h.write(BUF, &state(0x20_0000));
        let mut seen = Vec::new();
        for fill in [0x1111_2222_3333_4444u64, 0x5555_6666_7777_8888] {
            // VCPU_START of vCPU 0: INVALID_STATE at step 11, after the block was read.
            let mut regs = H::regs(Call::VcpuStart.code().into(), &[0, BUF, fill, fill]);
            regs.rdi = 0;
            regs.rsi = BUF;
            let before = regs.results();
            let _ = h.d.call(crate::Doorbell::ring0(0), &mut regs);
            assert_eq!(Status::from_raw(regs.rax), Some(Status::InvalidState));
            for (after, before) in regs.results().into_iter().zip(before) {
                assert!(
                    after == before || after == 0 || after == crate::config::POISON,
                    "strict={strict}: {after:#x} in a result register (was {before:#x})"
                );
            }
            seen.push(regs.results());
        }
        if strict {
            assert_eq!(seen[0], seen[1], "the poison does not depend on the call");
        }
    }
}

#[test]
fn results_are_full_64_bit_values() {
    // PVABI-CONV-028: VCPU_INFO's index and count are written whole, with bits 63:32 clear.
    let h = H::ready(3);
    let mut regs = H::regs(Call::VcpuInfo.code().into(), &[]);
    regs.rdi = u64::MAX;
    regs.rsi = u64::MAX;
    let _ = h.d.call(crate::Doorbell::ring0(2), &mut regs);
    assert_eq!(regs.rax, 0);
    assert_eq!((regs.rdi, regs.rsi), (2, 3));
}

#[test]
fn registering_the_page_that_already_is_the_queue_is_access_denied() {
    // PVABI-CONV-023: the vCPU's own current event queue is host-owned; registering it again
    // is ACCESS_DENIED (step 9) and keeps the registration.
    let h = H::ready(2);
    assert_eq!(
        h.status(0, Call::EventsSetQueue, &[PAGE1, 0x40]),
        Status::Success
    );
    assert_eq!(
        h.status(0, Call::EventsSetQueue, &[PAGE1, 0x41]),
        Status::AccessDenied
    );
    assert_eq!(
        h.status(0, Call::ConsoleWrite, &[PAGE1, 1]),
        Status::AccessDenied,
        "still registered"
    );
    // Misaligned wins over host-owned (step 6 before step 9).
    assert_eq!(
        h.status(0, Call::EventsSetQueue, &[PAGE1 + 8, 0x40]),
        Status::Misaligned
    );
}

#[test]
fn the_ports_after_the_doorbell_are_not_the_doorbell() {
    // PVABI-CONV-029: only the doorbell port itself performs calls; P+1..P+3 are not the
    // dispatcher's (a VMM then treats them as ports no device claims), and nothing changes.
    let h = H::ready(1);
    let p = h.d.config().doorbell_port;
    for port in [p + 1, p + 2, p + 3] {
        let mut regs = H::regs(Call::SystemShutdown.code().into(), &[7]);
        let before = regs;
        assert_eq!(
            h.d.port_out(crate::Caller::kernel(0), port, &[0; 4], &mut regs),
            None
        );
        assert_eq!(regs, before, "port {port:#x}");
        let mut data = [0u8; 4];
        assert!(!h.d.port_in(port, &mut data));
    }
    assert_eq!(h.d.report().end, None, "no call was made");
}
