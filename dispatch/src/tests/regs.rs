//! What a call does to the registers: results only on SUCCESS, strict poisoning.

use pvabi_abi::calls::Call;
use pvabi_abi::status::Status;

use super::{config, H};
use crate::CallRegs;
use crate::{Caller, Doorbell};
use crate::{HostConfig, Outcome, POISON};

const SENTINEL: u64 = 0x5555_aaaa_5555_aaaa;

fn regs(code: Call, a0: u64) -> CallRegs {
    CallRegs {
        rax: u64::from(code.code()),
        rdi: a0,
        rsi: SENTINEL,
        r8: SENTINEL,
        r9: SENTINEL,
        r10: SENTINEL,
        r11: SENTINEL,
    }
}

#[test]
fn results_only_on_success_and_only_defined_ones() {
    let h = H::ready(2);
    let mut r = regs(Call::VcpuInfo, SENTINEL);
    assert_eq!(h.d.call(Doorbell::ring0(1), &mut r), Outcome::Resume);
    assert_eq!((r.rax, r.rdi, r.rsi), (0, 1, 2));
    // VCPU_INFO defines two results: r8, r9, and the argument-only r10, r11 are untouched.
    assert_eq!(
        (r.r8, r.r9, r.r10, r.r11),
        (SENTINEL, SENTINEL, SENTINEL, SENTINEL)
    );

    let mut r = regs(Call::ConsoleWriteRegs, 99);
    h.d.call(Doorbell::ring0(0), &mut r);
    assert_eq!(r.rax, Status::InvalidParameter.raw());
    assert_eq!(
        (r.rdi, r.rsi, r.r8, r.r9),
        (99, SENTINEL, SENTINEL, SENTINEL)
    );
}

#[test]
fn strict_mode_poisons_what_the_guest_must_not_read() {
    let h = H::ready_with(HostConfig {
        strict: true,
        ..config(2)
    });
    let mut r = regs(Call::VcpuInfo, SENTINEL);
    h.d.call(Doorbell::ring0(1), &mut r);
    assert_eq!((r.rax, r.rdi, r.rsi, r.r8, r.r9), (0, 1, 2, POISON, POISON));
    assert_eq!((r.r10, r.r11), (SENTINEL, SENTINEL));

    let mut r = regs(Call::ConsoleWriteRegs, 99);
    h.d.call(Doorbell::ring0(0), &mut r);
    assert_eq!(r.rax, Status::InvalidParameter.raw());
    assert_eq!((r.rdi, r.rsi, r.r8, r.r9), (POISON, POISON, POISON, POISON));
    assert_eq!((r.r10, r.r11), (SENTINEL, SENTINEL));
}

#[test]
fn status_is_zero_extended_and_bad_host_vcpu_does_not_panic() {
    let h = H::ready(1);
    let mut r = regs(Call::VcpuInfo, 0);
    r.rax |= 0xffff_ffff_0000_0000;
    h.d.call(Doorbell::ring0(0), &mut r);
    assert_eq!(r.rax, Status::NotSupported.raw());
    let mut r = regs(Call::VcpuInfo, 0);
    assert_eq!(h.d.call(Doorbell::ring0(7), &mut r), Outcome::Resume);
    assert_eq!(r.rax, Status::InvalidState.raw());
}

#[test]
fn report_counts_calls_by_status() {
    let h = H::ready(1);
    for _ in 0..3 {
        h.call(0, Call::TimeMonotonic, &[]);
    }
    h.call(0, Call::ConsoleWriteRegs, &[40]);
    h.raw(0, 0xdead, &[]);
    let rep = h.d.report();
    assert_eq!(rep.count(Call::TimeMonotonic, Status::Success), 3);
    assert_eq!(rep.total(Call::TimeMonotonic), 3);
    assert_eq!(
        rep.count(Call::ConsoleWriteRegs, Status::InvalidParameter),
        1
    );
    assert_eq!(rep.calls[&0xdead].status(Status::NotSupported), 1);
    assert_eq!(rep.count(Call::Negotiate, Status::Success), 1);
}

/// CONV-008, CONV-013, CONV-032: a doorbell access of another width, from outside ring 0, or
/// from outside 64-bit mode performs no call: NOT_SUPPORTED in `rax`, nothing else changes,
/// and the host records no call. `allow_user_mode_calls` lifts only the ring rule.
#[test]
fn accesses_that_are_not_calls_change_nothing() {
    for allow_user_mode_calls in [false, true] {
        let h = H::ready_with(HostConfig {
            allow_user_mode_calls,
            ..super::config(1)
        });
        let exits = [
            (
                Doorbell {
                    caller: Caller {
                        vcpu: 0,
                        cpl: 3,
                        long_mode: true,
                    },
                    width: 4,
                    string_element: false,
                },
                !allow_user_mode_calls,
            ),
            (
                Doorbell {
                    caller: Caller {
                        vcpu: 0,
                        cpl: 1,
                        long_mode: true,
                    },
                    width: 4,
                    string_element: false,
                },
                !allow_user_mode_calls,
            ),
            (
                Doorbell {
                    caller: Caller {
                        vcpu: 0,
                        cpl: 0,
                        long_mode: false,
                    },
                    width: 4,
                    string_element: false,
                },
                true,
            ),
            (
                Doorbell {
                    caller: Caller::kernel(0),
                    width: 1,
                    string_element: false,
                },
                true,
            ),
            (
                Doorbell {
                    caller: Caller::kernel(0),
                    width: 2,
                    string_element: false,
                },
                true,
            ),
        ];
        for (exit, refused) in exits {
            // VCPU_INFO would answer SUCCESS with the vCPU index and count.
            let before = CallRegs::new(Call::VcpuInfo, &[7, 7, 7, 7, 7, 7]);
            let mut regs = before;
            let calls = h.d.report().total(Call::VcpuInfo);
            assert_eq!(h.d.call(exit, &mut regs), Outcome::Resume, "{exit:?}");
            if refused {
                assert_eq!(
                    regs,
                    CallRegs {
                        rax: Status::NotSupported.raw(),
                        ..before
                    },
                    "{exit:?}"
                );
                assert_eq!(h.d.report().total(Call::VcpuInfo), calls, "{exit:?}");
            } else {
                assert_eq!(regs.status(), Some(Status::Success), "{exit:?}");
                assert_eq!(regs.results()[..2], [0, 1], "{exit:?}");
            }
        }
    }
}
