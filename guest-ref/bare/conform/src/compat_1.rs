//! Conformance test `compat-1.x`: under a host serving 1.3 and the 2.0 preview, a guest that
//! negotiates major 1 sees the time page in major 1's layout (PVABI-COMPAT-003; the body is
//! [`compat`]). Runs on vCPU 0 at CPL0.
#![no_std]
#![no_main]

mod call;
mod channel;
mod common;
mod compat;

use pvabi_guest_rt::{halt_forever, BootInfo};

fn main(_boot: &BootInfo) -> ! {
    compat::run("compat-1.x", 1)
}

pvabi_guest_rt::entry!(main);

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    halt_forever()
}
