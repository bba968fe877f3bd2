//! A fourth deliberately careless guest, for the discovery trace of `pvabi conform --guest`
//! (the checking host single-steps vCPU 0's ring-0 code up to its first port write): after
//! finding pvabi it reads the leaf above the one the signature leaf's eax names
//! (PVABI-DISC-004), then makes a call with `vmcall`, which the transport leaf does not
//! advertise (PVABI-CONV-010). KVM answers both without an exit; only the trace sees them,
//! and it ends the VM at the `vmcall` (which never returns on this machine). Runs on vCPU 0
//! at CPL0.
#![no_std]
#![no_main]

use pvabi_guest::discovery::discover;
use pvabi_guest_rt::cpu::cpuid;
use pvabi_guest_rt::{halt_forever, BootInfo};

fn main(_boot: &BootInfo) -> ! {
    let Some(found) = discover() else {
        halt_forever()
    };
    // A leaf of a newer version, assumed present although the host's leaves end below it.
    let _newer = cpuid(found.max_leaf + 1, 0);
    // SAFETY: `vmcall` with a GET_SPEC_VERSION code in rax; it touches no guest memory (and
    // on a host that does not advertise the binding it faults or never returns).
    unsafe {
        core::arch::asm!("vmcall", inout("rax") 0u64 => _, options(nostack));
    }
    halt_forever()
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    halt_forever()
}

pvabi_guest_rt::entry!(main);
