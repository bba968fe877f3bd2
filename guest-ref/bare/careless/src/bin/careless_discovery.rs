//! A second deliberately careless guest, for the discovery rules of `pvabi conform --guest`:
//! it does not look for pvabi in CPUID at all (PVABI-DISC-002) and makes its calls at the
//! default doorbell port instead of the one the transport leaf names (PVABI-DISC-008). The
//! checking host puts its leaves one base up and its ports elsewhere, and passes what
//! arrives at the default ports on, so this guest still runs to its end: a SYSTEM_CRASH whose
//! message is not UTF-8 (PVABI-SYS-007, a SHOULD).
//! Runs on vCPU 0 at CPL0.
#![no_std]
#![no_main]

use pvabi_guest::abi::convention::DOORBELL_PORT;
use pvabi_guest::abi::features::Features;
use pvabi_guest::{Call, PortTransport, Transport};
use pvabi_guest_rt::{halt_forever, BootInfo};

/// A crash message in Latin-1, not UTF-8.
static MESSAGE: [u8; 11] = *b"d\xe9faillance";

fn main(_boot: &BootInfo) -> ! {
    // The default port, assumed rather than read from the transport leaf.
    let t = PortTransport::new(DOORBELL_PORT);
    let features = Features::CONSOLE | Features::SYSTEM;
    // It ends with a crash report whose message is not UTF-8 (PVABI-SYS-007, a SHOULD).
    let message = MESSAGE.as_ptr() as u64;
    // SAFETY: the calls name no memory of the guest but the message, which the host reads.
    unsafe {
        let _ = t.call(
            Call::Negotiate.code(),
            [0x0001_0000, features.bits(), 0, 0, 0, 0],
        );
        let _ = t.call(
            Call::SystemCrash.code(),
            [message, MESSAGE.len() as u64, 0, 0, 0, 0],
        );
    }
    halt_forever()
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    halt_forever()
}

pvabi_guest_rt::entry!(main);
