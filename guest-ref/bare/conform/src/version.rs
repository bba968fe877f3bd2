//! Conformance test `version`: versions, features and discovery across NEGOTIATE, call by call over the ABI's call table (the body is [`ver`]). Runs on vCPU 0 at CPL0 (a few calls per
//! defined call).
#![no_std]
#![no_main]

mod call;
mod channel;
mod ver;

use pvabi_guest_rt::{halt_forever, BootInfo};

fn main(boot: &BootInfo) -> ! {
    ver::run("version", boot)
}

pvabi_guest_rt::entry!(main);

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    halt_forever()
}
