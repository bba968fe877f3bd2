//! Every typed wrapper sends the right code and arguments and decodes its results.
//! Expected codes come from `Call::code()`, never from literals.

mod common;

use std::collections::BTreeSet;

use common::{client, Mock};
use pvabi_guest::abi::base::CallState;
use pvabi_guest::abi::batch::MULTICALL_STOP_ON_ERROR;
use pvabi_guest::abi::events::{EventKind, EVENT_VECTOR_MIN};
use pvabi_guest::abi::vcpu::WakeReason;
use pvabi_guest::abi::{calls, Call, Features, Status, Version};
use pvabi_guest::base::{ImplVersion, NegotiateRequest};
use pvabi_guest::time::{Frequency, WallClock};
use pvabi_guest::transport::RawResult;
use pvabi_guest::vcpu::VcpuInfo;
use pvabi_guest::Error;

#[test]
fn every_call_in_the_table_has_a_wrapper() {
    let pv = client(Mock::plausible());
    // SAFETY: the mock host touches no memory, so none of these calls has an effect.
    unsafe {
        pv.get_spec_version().unwrap();
        pv.get_impl_id().unwrap();
        pv.get_impl_version().unwrap();
        pv.probe_call(Call::ConsoleWrite).unwrap();
        pv.probe_features().unwrap();
        pv.negotiate(NegotiateRequest::v1(Features::all(), Features::empty()))
            .unwrap();
        pv.console_write_regs(b"x").unwrap();
        pv.console_write(0x1000, 1).unwrap();
        pv.time_monotonic().unwrap();
        pv.time_wallclock().unwrap();
        pv.time_frequency().unwrap();
        pv.time_set_page(0x2000).unwrap();
        pv.time_set_timer(5).unwrap();
        pv.time_set_steal_page(0x6000).unwrap();
        pv.events_set_queue(0x3000, 0x40).unwrap();
        pv.events_set_mask(0).unwrap();
        pv.events_send(1, 2).unwrap();
        pv.mem_share(0x4000, 1).unwrap();
        pv.mem_unshare(0x4000, 1).unwrap();
        pv.balloon_release(0x5000, 1).unwrap();
        pv.balloon_reclaim(0x5000, 1).unwrap();
        pv.update_pte(0x6008, 0x7003, 1).unwrap();
        pv.flush_tlb_local().unwrap();
        pv.flush_tlb_range(0x8000, 2).unwrap();
        pv.flush_tlb_all().unwrap();
        pv.vcpu_info().unwrap();
        pv.vcpu_start(1, 0x9000).unwrap();
        let _ = pv.try_vcpu_stop();
        pv.vcpu_yield().unwrap();
        pv.vcpu_halt(0).unwrap();
        pv.vcpu_kick(1).unwrap();
        let _ = pv.try_shutdown(0);
        let _ = pv.try_reboot();
        let _ = pv.try_crash(0xa000, 0);
        pv.multicall(0xb000, 1, 0, 0).unwrap();
        pv.defer_set_queue(0xc000).unwrap();
        pv.defer_flush().unwrap();
        pv.ring_setup(0xd000).unwrap();
        pv.ring_enter().unwrap();
        pv.multicall_pages(0xe000, 1, 1, 0, 0).unwrap();
    }
    let made: BTreeSet<u32> = pv.transport().calls().iter().map(|c| c.0).collect();
    let table: BTreeSet<u32> = calls::all().map(|d| d.call.code()).collect();
    assert_eq!(made, table);
}

#[test]
fn multicall_pages_sends_its_five_arguments() {
    let pv = client(Mock::ok([1024, 1024, 0, 0]));
    // SAFETY: the mock host touches no memory.
    let step = unsafe { pv.multicall_pages(0xf000, 25, 1024, 0, MULTICALL_STOP_ON_ERROR) }.unwrap();
    assert_eq!(
        pv.transport().last(),
        (
            Call::MulticallPages,
            [0xf000, 25, 1024, 0, MULTICALL_STOP_ON_ERROR, 0]
        )
    );
    assert_eq!(
        (step.next, step.processed, step.incomplete),
        (1024, 1024, false)
    );
    // Answers that break BATCH-006 to BATCH-008 are refused, as for MULTICALL.
    let pv = client(Mock::ok([1024, 1000, 0, 0]));
    // SAFETY: as above.
    let r = unsafe { pv.multicall_pages(0xf000, 25, 1024, 0, 0) };
    assert_eq!(r, Err(Error::UnexpectedResult(1000)));
}

#[test]
fn base_calls() {
    let pv = client(Mock::ok([0x0001_0002, 0x0001_0000, 0x0001_0002, 0]));
    let v = pv.get_spec_version().unwrap();
    assert_eq!(pv.transport().last(), (Call::GetSpecVersion, [0; 6]));
    assert_eq!(v.highest, Version::new(1, 2));
    assert_eq!(v.lowest, Version::new(1, 0));
    assert_eq!(v.negotiated, Some(Version::new(1, 2)));

    let pv = client(Mock::ok([0x0001_0000, 0x0001_0000, 0, 0]));
    assert_eq!(pv.get_spec_version().unwrap().negotiated, None);

    let name_lo = u64::from_le_bytes(*b"pvabi-re");
    let name_hi = u64::from_le_bytes(*b"f\0\0\0\0\0\0\0");
    let pv = client(Mock::ok([1, name_lo, name_hi, 0]));
    let id = pv.get_impl_id().unwrap();
    assert_eq!(pv.transport().last(), (Call::GetImplId, [0; 6]));
    assert_eq!(id.id, pvabi_guest::abi::base::IMPL_ID_REFERENCE);
    assert_eq!(id.name_str(), Some("pvabi-ref"));
    assert_eq!(&id.name[..9], b"pvabi-ref");

    let pv = client(Mock::ok([(2 << 32) | (3 << 16) | 4, 0, 0, 0]));
    assert_eq!(
        pv.get_impl_version().unwrap(),
        ImplVersion {
            major: 2,
            minor: 3,
            patch: 4
        }
    );
    assert_eq!(pv.transport().last(), (Call::GetImplVersion, [0; 6]));

    for (raw, state) in [
        (0, CallState::Absent),
        (1, CallState::Available),
        (2, CallState::Ready),
    ] {
        let pv = client(Mock::ok([raw, Features::TIME.bits(), 0, 0]));
        assert_eq!(pv.probe_call(Call::TimeMonotonic), Ok(state));
        let code = u64::from(Call::TimeMonotonic.code());
        assert_eq!(
            pv.transport().last(),
            (Call::ProbeCall, [code, 0, 0, 0, 0, 0])
        );
        let probe = pv.probe_call_code(0x0999).unwrap();
        assert_eq!(probe.feature, Features::TIME);
        assert_eq!(pv.transport().last().1[0], 0x0999);
    }
    let pv = client(Mock::ok([7, 0, 0, 0]));
    assert_eq!(
        pv.probe_call(Call::VcpuInfo),
        Err(Error::UnexpectedResult(7))
    );

    let pv = client(Mock::ok([0x1ff | (1 << 40), 0x3, 0, 0]));
    let f = pv.probe_features().unwrap();
    assert_eq!(pv.transport().last(), (Call::ProbeFeatures, [0; 6]));
    assert_eq!(f.offered.bits(), 0x1ff | (1 << 40), "unknown bits are kept");
    assert_eq!(f.granted, Features::CONSOLE | Features::TIME);
}

#[test]
fn negotiate_packs_the_request_and_decodes_the_answer() {
    let pv = client(Mock::ok([0x0001_0003, 0x7 | (1 << 50), 0, 0]));
    let req = NegotiateRequest {
        major: 1,
        min_minor: 2,
        required: Features::CONSOLE,
        optional: Features::TIME | Features::EVENTS | Features::from_bits_retain(1 << 50),
    };
    let done = pv.negotiate(req).unwrap();
    let (call, args) = pv.transport().last();
    assert_eq!(call, Call::Negotiate);
    assert_eq!(
        args,
        [
            0x0001_0002,
            Features::CONSOLE.bits(),
            0x6 | (1 << 50),
            0,
            0,
            0
        ]
    );
    assert_eq!(done.version, Version::new(1, 3));
    assert_eq!(done.granted.bits(), 0x7 | (1 << 50));
    // A 1.x guest accepts any 1.x host: later minors' features are gated by their bits.
    assert_eq!(
        NegotiateRequest::v1(Features::empty(), Features::empty()).requested(),
        0x0001_0000
    );
    assert_eq!(
        NegotiateRequest::at_least(1, 1, Features::empty(), Features::empty()).requested(),
        0x0001_0001
    );
}

#[test]
fn console_calls() {
    let pv = client(Mock::plausible());
    assert_eq!(pv.console_write(0x1234, 77), Ok(77));
    assert_eq!(
        pv.transport().last(),
        (Call::ConsoleWrite, [0x1234, 77, 0, 0, 0, 0])
    );
    let pv = client(Mock::ok([78, 0, 0, 0]));
    assert_eq!(
        pv.console_write(0x1234, 77),
        Err(Error::UnexpectedResult(78))
    );
}

#[test]
fn time_calls() {
    let pv = client(Mock::ok([123_456, 999_999_999, 7, 0]));
    assert_eq!(pv.time_monotonic(), Ok(123_456));
    assert_eq!(pv.transport().last(), (Call::TimeMonotonic, [0; 6]));
    assert_eq!(
        pv.time_wallclock(),
        Ok(WallClock {
            seconds: 123_456,
            nanoseconds: 999_999_999
        })
    );
    assert_eq!(pv.transport().last(), (Call::TimeWallclock, [0; 6]));
    assert_eq!(
        pv.time_frequency(),
        Ok(Frequency {
            tsc_hz: 123_456,
            resolution_ns: 999_999_999
        })
    );
    assert_eq!(pv.transport().last(), (Call::TimeFrequency, [0; 6]));
    // SAFETY: the mock host touches no memory.
    unsafe { pv.time_set_page(0x7000) }.unwrap();
    assert_eq!(
        pv.transport().last(),
        (Call::TimeSetPage, [0x7000, 0, 0, 0, 0, 0])
    );
    pv.time_unset_page().unwrap();
    assert_eq!(pv.transport().last(), (Call::TimeSetPage, [0; 6]));
    pv.time_set_timer(5_000).unwrap();
    assert_eq!(
        pv.transport().last(),
        (Call::TimeSetTimer, [5_000, 0, 0, 0, 0, 0])
    );
    pv.time_cancel_timer().unwrap();
    assert_eq!(pv.transport().last(), (Call::TimeSetTimer, [0; 6]));

    let pv = client(Mock::ok([1, 1_000_000_000, 0, 0]));
    assert_eq!(
        pv.time_wallclock(),
        Err(Error::UnexpectedResult(1_000_000_000))
    );
}

#[test]
fn events_calls() {
    let pv = client(Mock::ok([0x6, 0, 0, 0]));
    // SAFETY: the mock host touches no memory.
    unsafe { pv.events_set_queue(0x3000, 0x40) }.unwrap();
    assert_eq!(
        pv.transport().last(),
        (Call::EventsSetQueue, [0x3000, 0x40, 0, 0, 0, 0])
    );
    pv.events_unset_queue().unwrap();
    assert_eq!(
        pv.transport().last(),
        (Call::EventsSetQueue, [0, EVENT_VECTOR_MIN, 0, 0, 0, 0])
    );
    let mask = EventKind::User.mask_bit() | EventKind::Kick.mask_bit();
    assert_eq!(pv.events_set_mask(mask), Ok(0x6));
    assert_eq!(
        pv.transport().last(),
        (Call::EventsSetMask, [mask, 0, 0, 0, 0, 0])
    );
    pv.events_send(3, 0xdead_beef).unwrap();
    assert_eq!(
        pv.transport().last(),
        (Call::EventsSend, [3, 0xdead_beef, 0, 0, 0, 0])
    );
}

#[test]
fn memory_calls() {
    let pv = client(Mock::plausible());
    // SAFETY: the mock host touches no memory.
    unsafe {
        pv.mem_share(0x10_0000, 4).unwrap();
        assert_eq!(
            pv.transport().last(),
            (Call::MemShare, [0x10_0000, 4, 0, 0, 0, 0])
        );
        pv.mem_unshare(0x10_0000, 4).unwrap();
        assert_eq!(
            pv.transport().last(),
            (Call::MemUnshare, [0x10_0000, 4, 0, 0, 0, 0])
        );
        assert_eq!(pv.balloon_release(0x5000, 12), Ok(12));
        assert_eq!(
            pv.transport().last(),
            (Call::MemBalloonRelease, [0x5000, 12, 0, 0, 0, 0])
        );
        assert_eq!(pv.balloon_reclaim(0x5000, 3), Ok(3));
        assert_eq!(
            pv.transport().last(),
            (Call::MemBalloonReclaim, [0x5000, 3, 0, 0, 0, 0])
        );
        pv.update_pte(0xa008, 0x20_0083, 2).unwrap();
        assert_eq!(
            pv.transport().last(),
            (Call::MemUpdatePte, [0xa008, 0x20_0083, 2, 0, 0, 0])
        );
    }
    pv.flush_tlb_local().unwrap();
    assert_eq!(pv.transport().last(), (Call::MemFlushTlbLocal, [0; 6]));
    pv.flush_tlb_range(0x40_0000, 16).unwrap();
    assert_eq!(
        pv.transport().last(),
        (Call::MemFlushTlbRange, [0x40_0000, 16, 0, 0, 0, 0])
    );
    pv.flush_tlb_all().unwrap();
    assert_eq!(pv.transport().last(), (Call::MemFlushTlbAll, [0; 6]));

    let pv = client(Mock::ok([13, 0, 0, 0]));
    // SAFETY: the mock host touches no memory.
    let r = unsafe { pv.balloon_release(0x5000, 12) };
    assert_eq!(r, Err(Error::UnexpectedResult(13)));
}

#[test]
fn vcpu_calls() {
    let pv = client(Mock::ok([1, 4, 0, 0]));
    assert_eq!(pv.vcpu_info(), Ok(VcpuInfo { index: 1, count: 4 }));
    assert_eq!(pv.transport().last(), (Call::VcpuInfo, [0; 6]));
    // SAFETY: the mock host touches no memory.
    unsafe { pv.vcpu_start(3, 0x9040) }.unwrap();
    assert_eq!(
        pv.transport().last(),
        (Call::VcpuStart, [3, 0x9040, 0, 0, 0, 0])
    );
    pv.vcpu_yield().unwrap();
    assert_eq!(pv.transport().last(), (Call::VcpuYield, [0; 6]));
    pv.vcpu_kick(2).unwrap();
    assert_eq!(pv.transport().last(), (Call::VcpuKick, [2, 0, 0, 0, 0, 0]));

    for (raw, reason) in [(1, WakeReason::Event), (2, WakeReason::Timeout)] {
        let pv = client(Mock::ok([raw, 0, 0, 0]));
        assert_eq!(pv.vcpu_halt(1_000_000), Ok(reason));
        assert_eq!(
            pv.transport().last(),
            (Call::VcpuHalt, [1_000_000, 0, 0, 0, 0, 0])
        );
    }
    let pv = client(Mock::ok([3, 0, 0, 0]));
    assert_eq!(pv.vcpu_halt(0), Err(Error::UnexpectedResult(3)));

    let pv = client(Mock::with(|_, _| RawResult::error(Status::InvalidState)));
    assert_eq!(pv.try_vcpu_stop(), Error::Status(Status::InvalidState));
    assert_eq!(pv.transport().last(), (Call::VcpuStop, [0; 6]));
}

#[test]
fn system_calls_report_refusals() {
    let pv = client(Mock::with(|_, _| RawResult::error(Status::NotGranted)));
    assert_eq!(pv.try_shutdown(0x5a), Error::Status(Status::NotGranted));
    assert_eq!(
        pv.transport().last(),
        (Call::SystemShutdown, [0x5a, 0, 0, 0, 0, 0])
    );
    assert_eq!(pv.try_reboot(), Error::Status(Status::NotGranted));
    assert_eq!(pv.transport().last(), (Call::SystemReboot, [0; 6]));
    assert_eq!(pv.try_crash(0xa000, 12), Error::Status(Status::NotGranted));
    assert_eq!(
        pv.transport().last(),
        (Call::SystemCrash, [0xa000, 12, 0, 0, 0, 0])
    );

    let msg = b"kernel panic";
    assert_eq!(pv.try_crash_message(msg), Error::Status(Status::NotGranted));
    let (call, args) = pv.transport().last();
    assert_eq!(call, Call::SystemCrash);
    assert_eq!(args[0], pvabi_guest::gpa_of(&msg[..]));
    assert_eq!(args[1], msg.len() as u64);

    // A host that "returns" from a no-return call is flagged.
    let pv = client(Mock::ok([0; 4]));
    assert_eq!(pv.try_shutdown(1), Error::UnexpectedResult(0));
}

#[test]
fn batch_calls() {
    let pv = client(Mock::ok([2, 2, 0, 0]));
    // SAFETY: the mock host touches no memory.
    unsafe {
        let step = pv.multicall(0xb000, 4, 0, MULTICALL_STOP_ON_ERROR).unwrap();
        assert_eq!(
            pv.transport().last(),
            (
                Call::Multicall,
                [0xb000, 4, 0, MULTICALL_STOP_ON_ERROR, 0, 0]
            )
        );
        assert_eq!((step.next, step.processed, step.incomplete), (2, 2, false));
        pv.defer_set_queue(0xc000).unwrap();
        assert_eq!(
            pv.transport().last(),
            (Call::DeferSetQueue, [0xc000, 0, 0, 0, 0, 0])
        );
        pv.ring_setup(0xd040).unwrap();
        assert_eq!(
            pv.transport().last(),
            (Call::RingSetup, [0xd040, 0, 0, 0, 0, 0])
        );
    }
    pv.defer_unset_queue().unwrap();
    assert_eq!(pv.transport().last(), (Call::DeferSetQueue, [0; 6]));
    let flush = pv.defer_flush().unwrap();
    assert_eq!(pv.transport().last(), (Call::DeferFlush, [0; 6]));
    assert_eq!((flush.processed, flush.failed), (2, 2));
    assert_eq!(pv.ring_enter(), Ok(2));
    assert_eq!(pv.transport().last(), (Call::RingEnter, [0; 6]));

    // A resume index outside start..=count is a host bug.
    let pv = client(Mock::ok([5, 1, 0, 0]));
    // SAFETY: the mock host touches no memory.
    let r = unsafe { pv.multicall(0xb000, 4, 0, 0) };
    assert_eq!(r, Err(Error::UnexpectedResult(5)));
}

/// BATCH-006, BATCH-007, BATCH-008: the guest library rejects MULTICALL answers a conforming
/// host never gives: INCOMPLETE at the end or without progress, SUCCESS with entries left and
/// no stop on error, `processed` other than `next - start`.
#[test]
fn multicall_answers_are_checked() {
    let answer = |status: Status, next: u64, processed: u64| {
        Mock::with(move |_, _| RawResult {
            status: status.raw(),
            results: [next, processed, 0, 0],
        })
    };
    // (status, next, processed, start, flags) -> accepted?
    let cases = [
        (Status::Incomplete, 2, 2, 0, 0, true),
        (Status::Incomplete, 4, 4, 0, 0, false), // INCOMPLETE after the last entry
        (Status::Incomplete, 1, 0, 1, 0, false), // INCOMPLETE without progress
        (Status::Success, 4, 3, 1, 0, true),
        (Status::Success, 2, 2, 0, MULTICALL_STOP_ON_ERROR, true),
        (Status::Success, 2, 2, 0, 0, false), // entries left, no stop on error
        (Status::Success, 4, 0, 4, 0, true),  // start == count
        (Status::Success, 4, 3, 0, 0, false), // processed != next - start
    ];
    for (status, next, processed, start, flags, ok) in cases {
        let pv = client(answer(status, next, processed));
        // SAFETY: the mock host touches no memory.
        let r = unsafe { pv.multicall(0xb000, 4, start, flags) };
        assert_eq!(
            r.is_ok(),
            ok,
            "{status:?} next {next} processed {processed}: {r:?}"
        );
        if let Ok(step) = r {
            assert_eq!(step.incomplete, status == Status::Incomplete);
        }
    }
}

#[test]
fn statuses_map_to_errors() {
    for status in Status::ALL.into_iter().filter(|s| *s != Status::Success) {
        let pv = client(Mock::with(move |_, _| RawResult::error(status)));
        assert_eq!(pv.time_monotonic(), Err(Error::Status(status)), "{status}");
        assert_eq!(pv.get_spec_version(), Err(Error::Status(status)));
        // Results are ignored on error, even if the host left values there.
        let pv = client(Mock::with(move |_, _| RawResult {
            status: status.raw(),
            results: [9; 4],
        }));
        assert_eq!(pv.vcpu_info(), Err(Error::Status(status)));
    }
    for raw in [Status::ALL.len() as u64, 0xffff, 1 << 32, u64::MAX] {
        let pv = client(Mock::with(move |_, _| RawResult {
            status: raw,
            results: [0; 4],
        }));
        assert_eq!(pv.flush_tlb_all(), Err(Error::UnknownStatus(raw)));
    }
    // INCOMPLETE is an error for every call but MULTICALL.
    let pv = client(Mock::with(|_, _| RawResult::error(Status::Incomplete)));
    assert_eq!(pv.ring_enter(), Err(Error::Status(Status::Incomplete)));
}
