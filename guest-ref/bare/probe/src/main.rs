//! Placeholder: discovers pvabi and shuts down.
#![no_std]
#![no_main]

use pvabi_guest::discovery::discover;
use pvabi_guest_rt::{halt_forever, BootInfo};

fn main(_boot: &BootInfo) -> ! {
    if let Some(d) = discover() {
        let pv = d.pvabi();
        let _ = pv.try_shutdown(0);
    }
    halt_forever()
}

pvabi_guest_rt::entry!(main);

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    halt_forever()
}
