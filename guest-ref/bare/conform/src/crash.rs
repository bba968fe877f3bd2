//! Conformance test `system-crash`: SYSTEM_CRASH ends the VM and the host reports its
//! message as a crash report (PVABI-SYS-005), while vCPU 1 is busy making calls (see
//! `sys_end`).
#![no_std]
#![no_main]

mod call;
mod channel;
mod common;
mod sys_end;

use pvabi_guest_rt::{halt_forever, BootInfo};

fn main(boot: &BootInfo) -> ! {
    sys_end::run(
        boot,
        "system-crash",
        "system-crash.message_reported_and_every_vcpu_stopped",
        sys_end::How::Crash,
    )
}

pvabi_guest_rt::entry!(main);

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    halt_forever()
}
