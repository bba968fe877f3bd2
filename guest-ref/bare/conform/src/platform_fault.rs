//! Conformance test `platform-fault`: an access to a guest-physical address outside guest RAM
//! is a fault of the guest that ends the VM (PVABI-PLAT-003). The test announces the fault
//! over the channel (EXPECT), then reads the first byte past guest RAM, which the boot page
//! tables map (they map every GiB that holds RAM, so the byte after RAM is mapped unless RAM
//! ends at a GiB boundary). The runner takes the check as a PASS only if the VM then ends by
//! a guest fault; a guest that survives the read reports the check as a FAIL and ends as
//! usual. Runs on vCPU 0 at CPL0.
#![no_std]
#![no_main]

mod call;
mod channel;
mod common;

use core::arch::asm;

use pvabi_guest::abi::features::Features;
use pvabi_guest_rt::{halt_forever, BootInfo};

use common::start;

const TEST: &str = "platform-fault";
const CHECK: &str = "platform-fault.access_beyond_guest_ram_ends_the_vm";
const GIB: u64 = 1 << 30;

fn main(boot: &BootInfo) -> ! {
    let _ = start(TEST, Features::empty());
    let ram = boot.mem_bytes;
    if ram.is_multiple_of(GIB) {
        channel::skip(
            CHECK,
            &["PVABI-PLAT-003"],
            "guest RAM ends at a GiB boundary, so the boot page tables map no address past it",
        );
        channel::end(TEST)
    }
    channel::expect_fault(
        CHECK,
        &["PVABI-PLAT-003"],
        "a read of the first guest-physical address past guest RAM,",
        ram,
    );
    let v: u64;
    // SAFETY: `ram` is identity mapped by the boot page tables (the GiB that holds the end of
    // RAM) and is no RAM of the guest: the read either ends the VM, as the rule says, or
    // returns whatever the host put there, which the check reports.
    unsafe {
        asm!("mov {v}, [{a}]", a = in(reg) ram, v = out(reg) v, options(nostack, readonly, preserves_flags))
    };
    channel::check(CHECK, &["PVABI-PLAT-003"], false, v, 0);
    channel::end(TEST)
}

pvabi_guest_rt::entry!(main);

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    halt_forever()
}
