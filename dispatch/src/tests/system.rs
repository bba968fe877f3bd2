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
