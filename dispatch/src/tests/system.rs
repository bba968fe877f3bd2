//! System family.

use pvabi_abi::calls::Call;
use pvabi_abi::features::Features;
use pvabi_abi::status::Status;

use super::{BUF, H};
use crate::{End, Outcome};

#[test]
fn shutdown_reboot_and_crash_end_the_vm() {
    let h = H::ready(1);
    let (s, _, o) = h.raw(0, 0x0600, &[7]);
    assert_eq!((s, o), (Status::Success, Outcome::End(End::Shutdown(7))));
    let (_, _, o) = h.raw(0, 0x0600, &[0xffff_ffff]);
    assert_eq!(o, Outcome::End(End::Shutdown(u32::MAX)));
    assert_eq!(h.raw(0, 0x0601, &[]).2, Outcome::End(End::Reboot));
    h.write(BUF, b"oops: \xff bad");
    assert_eq!(
        h.raw(0, 0x0602, &[BUF, 11]).2,
        Outcome::End(End::Crash("oops: \u{fffd} bad".into()))
    );
    assert_eq!(
        h.raw(0, 0x0602, &[BUF, 0]).2,
        Outcome::End(End::Crash(String::new()))
    );
    assert_eq!(h.d.report().end, Some(End::Crash(String::new())));
}

#[test]
fn system_errors_return() {
    let h = H::ready(1);
    // Exit code bits 63:32 are reserved.
    assert_eq!(
        h.status(0, Call::SystemShutdown, &[1 << 32]),
        Status::InvalidParameter
    );
    assert_eq!(
        h.status(0, Call::SystemCrash, &[BUF, 4097]),
        Status::InvalidParameter
    );
    assert_eq!(
        h.status(0, Call::SystemCrash, &[BUF + 0xff0, 32]),
        Status::CrossesPage
    );
    assert_eq!(
        h.status(0, Call::SystemCrash, &[1 << 40, 1]),
        Status::InvalidAddress
    );
    assert_eq!(h.d.report().end, None);
    let h = H::new(1);
    h.negotiate(Features::CONSOLE);
    assert_eq!(h.status(0, Call::SystemReboot, &[]), Status::NotGranted);
}

/// A reset (the dispatcher of the next boot, `Dispatcher::after_reset`): NEGOTIATE unlocked,
/// every page free again, the balloon and sharing forgotten, timers and masks fresh, and
/// monotonic time going on from where it was (PVABI-SYS-008 to SYS-011, TIME-034).
#[test]
fn after_a_reset_everything_but_monotonic_time_is_forgotten() {
    use super::{PAGE1, PAGE2, PAGE3};
    use std::sync::Arc;
    let h = H::ready(1);
    assert_eq!(h.status(0, Call::TimeSetPage, &[PAGE1]), Status::Success);
    assert_eq!(
        h.status(0, Call::EventsSetQueue, &[PAGE2, 0x40]),
        Status::Success
    );
    assert_eq!(h.status(0, Call::EventsSetMask, &[0x4]), Status::Success);
    assert_eq!(h.status(0, Call::MemShare, &[PAGE3, 1]), Status::Success);
    h.write(BUF, &((PAGE3 + 0x1000) / 4096));
    assert_eq!(
        h.status(0, Call::MemBalloonRelease, &[BUF, 1]),
        Status::Success
    );
    let before = h.call(0, Call::TimeMonotonic, &[]).1[0];
    assert_eq!(h.raw(0, 0x0601, &[]).2, Outcome::End(End::Reboot));
    h.d.shutdown();

    let d = h.d.after_reset(Arc::clone(&h.m)).expect("same vCPU count");
    let h = H { d, m: h.m };
    let spec = h.call(0, Call::GetSpecVersion, &[]).1;
    assert_eq!(spec[2], 0, "NEGOTIATE's result is forgotten");
    h.negotiate(Features::CONSOLE | Features::TIME | Features::MEMORY | Features::EVENTS);
    assert!(h.call(0, Call::TimeMonotonic, &[]).1[0] >= before);
    assert_eq!(h.status(0, Call::TimeSetPage, &[PAGE1]), Status::Success);
    assert_eq!(
        h.status(0, Call::EventsSetQueue, &[PAGE2, 0x40]),
        Status::Success
    );
    assert_eq!(h.call(0, Call::EventsSetMask, &[0]).1[0], 0);
    // Not shared any more: it can be released; the released one is not released any more.
    h.write(BUF, &(PAGE3 / 4096));
    assert_eq!(
        h.status(0, Call::MemBalloonRelease, &[BUF, 1]),
        Status::Success
    );
    h.write(BUF, &((PAGE3 + 0x1000) / 4096));
    assert_eq!(
        h.status(0, Call::MemBalloonReclaim, &[BUF, 1]),
        Status::InvalidState
    );
}

/// The injected fault `NegotiateNotUnlockedOnReset` keeps NEGOTIATE locked across a reset.
#[cfg(feature = "fault-injection")]
#[test]
fn the_reset_fault_keeps_negotiate_locked() {
    use std::sync::Arc;
    let h = H::ready_with(crate::HostConfig {
        inject: Some(crate::faults::InjectedFault::NegotiateNotUnlockedOnReset),
        ..super::config(1)
    });
    h.d.shutdown();
    let d = h.d.after_reset(Arc::clone(&h.m)).expect("same vCPU count");
    let h = H { d, m: h.m };
    let (s, _) = h.call(0, Call::Negotiate, &[0x0001_0000, Features::CONSOLE.bits()]);
    assert_eq!(s, Status::Locked);
}
