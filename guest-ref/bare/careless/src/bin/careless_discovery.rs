//! A second deliberately careless guest, for the discovery rules of `pvabi conform --guest`:
//! it does not look for pvabi in CPUID at all (PVABI-DISC-002) and makes its calls at the
//! default doorbell port instead of the one the transport leaf names (PVABI-DISC-008). The
//! checking host puts its leaves one base up and its ports elsewhere, and passes what
//! arrives at the default ports on, so this guest still runs to a clean SYSTEM_SHUTDOWN.
//! Runs on vCPU 0 at CPL0.
#![no_std]
#![no_main]

use pvabi_guest::abi::convention::DOORBELL_PORT;
use pvabi_guest::abi::features::Features;
use pvabi_guest::{Call, PortTransport, Transport};
use pvabi_guest_rt::{halt_forever, BootInfo};

fn main(_boot: &BootInfo) -> ! {
    // The default port, assumed rather than read from the transport leaf.
    let t = PortTransport::new(DOORBELL_PORT);
    let features = Features::CONSOLE | Features::SYSTEM;
    // SAFETY: the calls name no memory of the guest.
    unsafe {
        let _ = t.call(
            Call::Negotiate.code(),
            [0x0001_0000, features.bits(), 0, 0, 0, 0],
        );
        let _ = t.call(Call::SystemShutdown.code(), [0; 6]);
    }
    halt_forever()
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    halt_forever()
}

pvabi_guest_rt::entry!(main);
