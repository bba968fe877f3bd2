//! Conformance test `version-1.0`: the version test, which the suite runs under a host acting as release 1.0, so that the calls of the later minors are unknown to it (COMPAT-002) (the body is [`ver`]). Runs on vCPU 0 at CPL0 (a few calls per
//! defined call).
#![no_std]
#![no_main]

mod call;
mod channel;
mod ver;

use pvabi_guest_rt::{halt_forever, BootInfo};

fn main(boot: &BootInfo) -> ! {
    ver::run("version-1.0", boot)
}

pvabi_guest_rt::entry!(main);

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    halt_forever()
}
