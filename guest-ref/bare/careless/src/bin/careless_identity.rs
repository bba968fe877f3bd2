//! A third deliberately careless guest, for PVABI-BASE-005 in `pvabi conform --guest`: it
//! chooses what it negotiates and which calls it makes from GET_IMPL_ID. On the reference
//! host (id 1) it also asks for TIME and calls TIME_FREQUENCY; on any other host it does
//! neither. Everything else it does right: it finds pvabi by scanning the bases, calls at the
//! transport leaf's port, writes the identity to its log (which the rule allows), requires
//! only what it uses and shuts down cleanly, so the one rule a checking host sees broken is
//! BASE-005, and only by comparing a run under the reference identity with one under another.
//! Runs on vCPU 0 at CPL0.
#![no_std]
#![no_main]

use pvabi_guest::abi::base::IMPL_ID_REFERENCE;
use pvabi_guest::abi::features::Features;
use pvabi_guest::base::NegotiateRequest;
use pvabi_guest::discovery::discover;
use pvabi_guest::{PortTransport, Pvabi};
use pvabi_guest_rt::{halt_forever, BootInfo};

fn main(_boot: &BootInfo) -> ! {
    let Some(found) = discover() else {
        halt_forever()
    };
    let pv = Pvabi::new(PortTransport::new(found.info.doorbell_port));
    let Ok(id) = pv.get_impl_id() else {
        halt_forever()
    };
    // The mistake: trusting the reference host with more than another host.
    let trusted = id.id == IMPL_ID_REFERENCE;
    let mut required = Features::CONSOLE | Features::SYSTEM;
    if trusted {
        required |= Features::TIME;
    }
    if pv
        .negotiate(NegotiateRequest::v1(required, Features::empty()))
        .is_err()
    {
        pv.shutdown(1)
    }
    // Logging the identity is allowed.
    let _ = pv.console_write_slice(b"careless-identity: host ");
    let _ = pv.console_write_slice(id.name_str().unwrap_or("?").as_bytes());
    let _ = pv.console_write_slice(b"\n");
    if trusted {
        let _ = pv.time_frequency();
    }
    pv.shutdown(0)
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    halt_forever()
}

pvabi_guest_rt::entry!(main);
