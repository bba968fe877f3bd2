//! Conformance test `multicall-preempt`: the checks of `multicall` ([`mc`]) under a host that
//! preempts every MULTICALL after each entry (the suite runs it so), so that the guest resumes
//! at every index. Runs on vCPU 0 at CPL0.
#![no_std]
#![no_main]

mod call;
mod channel;
mod common;
mod mc;
mod mc_pages;

use pvabi_guest_rt::{halt_forever, BootInfo};

fn main(_boot: &BootInfo) -> ! {
    mc::run("multicall-preempt")
}

pvabi_guest_rt::entry!(main);

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    halt_forever()
}
