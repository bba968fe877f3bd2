//! Conformance test `multicall`: MULTICALL's entries, their statuses and results, the entry
//! checks, batchability, `start` and STOP_ON_ERROR, the one copy, and resumption (the body is
//! [`mc`], shared with `multicall-preempt`). Runs on vCPU 0 at CPL0.
#![no_std]
#![no_main]

mod call;
mod channel;
mod common;
mod mc;
mod mc_pages;

use pvabi_guest_rt::{halt_forever, BootInfo};

fn main(_boot: &BootInfo) -> ! {
    mc::run("multicall")
}

pvabi_guest_rt::entry!(main);

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    halt_forever()
}
