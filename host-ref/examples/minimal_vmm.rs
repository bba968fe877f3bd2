//! Embedding `pvabi-dispatch` in a VMM of your own: a complete, minimal one.
//!
//! This VMM uses `kvm-ioctls` and `vm-memory` directly (nothing of `pvabi-host`). It boots a
//! 33-byte 64-bit guest that makes three pvabi calls on the doorbell port (GET_SPEC_VERSION,
//! NEGOTIATE, SYSTEM_SHUTDOWN) and runs one vCPU loop that hands each doorbell exit to the
//! dispatcher. The three things a VMM does are marked STEP 1-3.
//!
//! ```sh
//! cargo run -p pvabi-host --example minimal_vmm
//! ```

use std::sync::Arc;

use kvm_bindings::{kvm_segment, kvm_userspace_memory_region};
use kvm_ioctls::{Kvm, VcpuExit};
use pvabi_abi::status::Status;
use pvabi_abi::vcpu::VcpuStartState;
use pvabi_dispatch::{
    CallRegs, Caller, ConsoleSink, Dispatcher, Doorbell, End, HostConfig, Machine, Outcome,
};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

const MEM: usize = 4 << 20;
const GDT: u64 = 0x500;
const PML4: u64 = 0x9000;
const PDPT: u64 = 0xa000;
const PD: u64 = 0xb000;
const CODE: u64 = 0x10_0000;

/// The guest, hand-assembled (64-bit mode, ring 0):
/// `mov edx, 0x5650; xor eax, eax; out dx, eax` (GET_SPEC_VERSION), then
/// `mov eax, 5; mov edi, 0x10000; mov esi, 0x20; out dx, eax` (NEGOTIATE 1.0 or later,
/// requiring the SYSTEM feature),
/// then `mov eax, 0x600; mov edi, rax-status; out dx, eax` (SYSTEM_SHUTDOWN with NEGOTIATE's
/// status as the exit code), then `hlt`.
const GUEST: &[u8] = &[
    0xba, 0x50, 0x56, 0x00, 0x00, // mov edx, 0x5650
    0x31, 0xc0, // xor eax, eax
    0xef, // out dx, eax
    0xb8, 0x05, 0x00, 0x00, 0x00, // mov eax, 5
    0xbf, 0x00, 0x00, 0x01, 0x00, // mov edi, 0x10000
    0xbe, 0x20, 0x00, 0x00, 0x00, // mov esi, FEATURE_SYSTEM (bit 5)
    0xef, // out dx, eax
    0x89, 0xc7, // mov edi, eax
    0xb8, 0x00, 0x06, 0x00, 0x00, // mov eax, 0x600
    0xef, // out dx, eax
    0xf4, // hlt
];

/// STEP 1: what the dispatcher needs from your VMM. A one-vCPU VM has nothing to start and
/// no interrupts to deliver in this example; a real VMM forwards these to its vCPUs.
struct MyVm {
    ram: GuestMemoryMmap,
}

impl Machine for MyVm {
    type Memory = GuestMemoryMmap;
    fn memory(&self) -> &GuestMemoryMmap {
        &self.ram
    }
    fn vcpu_count(&self) -> u32 {
        1
    }
    fn raise_interrupt(&self, vcpu: u32, vector: u8) {
        println!("(the dispatcher asks for vector {vector:#x} on vCPU {vcpu})");
    }
    fn start_vcpu(&self, _vcpu: u32, _state: &VcpuStartState) -> Result<(), Status> {
        Err(Status::InvalidState)
    }
    fn flush_tlb(&self, _target: Option<u32>) {}
    fn release_pages(&self, _gpas: &[u64]) {}
}

/// Boots the guest and runs it to its shutdown (`Err` if anything else happens).
pub fn main() -> Result<(), Box<dyn std::error::Error>> {
    let kvm = Kvm::new()?;
    let vm = kvm.create_vm()?;
    let ram = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM)])?;
    let region = ram.iter().next().ok_or("no RAM region")?;
    let host_addr = region.get_host_address(vm_memory::MemoryRegionAddress(0))?;
    // SAFETY: the mapping is `MEM` bytes owned by `ram`, which outlives the VM (it moves into
    // the dispatcher's machine, dropped at the end of `main` after the vCPU and VM files).
    unsafe {
        vm.set_user_memory_region(kvm_userspace_memory_region {
            slot: 0,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: MEM as u64,
            userspace_addr: host_addr as u64,
        })?;
    }
    // Long mode: a GDT with one code segment, 2 MiB identity pages for the first GiB.
    ram.write_obj(0u64, GuestAddress(GDT))?;
    ram.write_obj(0x00af_9b00_0000_ffffu64, GuestAddress(GDT + 8))?;
    ram.write_obj(PDPT | 3, GuestAddress(PML4))?;
    ram.write_obj(PD | 3, GuestAddress(PDPT))?;
    for i in 0..512u64 {
        ram.write_obj((i << 21) | 0x83, GuestAddress(PD + 8 * i))?;
    }
    ram.write_slice(GUEST, GuestAddress(CODE))?;

    let mut vcpu = vm.create_vcpu(0)?;
    let mut sregs = vcpu.get_sregs()?;
    let code = kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector: 0x8,
        type_: 0xb,
        present: 1,
        s: 1,
        l: 1,
        g: 1,
        ..Default::default()
    };
    let data = kvm_segment {
        type_: 0x3,
        l: 0,
        db: 1,
        selector: 0,
        ..code
    };
    (sregs.cs, sregs.ds, sregs.es, sregs.ss) = (code, data, data, data);
    sregs.gdt.base = GDT;
    sregs.gdt.limit = 15;
    sregs.cr3 = PML4;
    sregs.cr4 = 1 << 5; // PAE
    sregs.cr0 = 0x8000_0031; // PG | NE | ET | PE
    sregs.efer = 0x500; // LMA | LME
    vcpu.set_sregs(&sregs)?;
    let mut regs = vcpu.get_regs()?;
    (regs.rip, regs.rflags) = (CODE, 2);
    vcpu.set_regs(&regs)?;

    // STEP 2: one dispatcher per VM. A bad configuration is an error here, before the guest
    // runs. The CPUID leaves that let the guest find pvabi: `config.cpuid_leaves()`, merged
    // into the vCPU's `KVM_SET_CPUID2` (this guest knows the port and skips discovery).
    let config = HostConfig {
        console: ConsoleSink::Stdout,
        ..HostConfig::default()
    };
    let dispatcher = Dispatcher::new(config, Arc::new(MyVm { ram }))?;
    let doorbell = dispatcher.config().doorbell_port;

    // STEP 3: the vCPU loop. A doorbell exit becomes one CallRegs; the dispatcher answers in
    // it; the registers go back and the Outcome says what the vCPU does next.
    loop {
        match vcpu.run()? {
            VcpuExit::IoOut(port, data) if port == doorbell => {
                let width = data.len() as u8;
                let mut r = vcpu.get_regs()?;
                let mut call = CallRegs {
                    rax: r.rax,
                    rdi: r.rdi,
                    rsi: r.rsi,
                    r8: r.r8,
                    r9: r.r9,
                    r10: r.r10,
                    r11: r.r11,
                };
                // Who called: the privilege level, and 64-bit mode (EFER.LMA and CS.L).
                let sregs = vcpu.get_sregs()?;
                let caller = Caller {
                    vcpu: 0,
                    cpl: sregs.ss.dpl,
                    long_mode: sregs.efer & (1 << 10) != 0 && sregs.cs.l != 0,
                };
                let code = call.rax;
                let outcome = dispatcher.call(
                    Doorbell {
                        caller,
                        width,
                        string_element: false,
                    },
                    &mut call,
                );
                println!(
                    "call {code:#06x}: status {} results {:x?}",
                    call.status().map_or("undefined", |s| s.name()),
                    &call.results()[..2]
                );
                (r.rax, r.rdi, r.rsi, r.r8, r.r9) =
                    (call.rax, call.rdi, call.rsi, call.r8, call.r9);
                vcpu.set_regs(&r)?;
                match outcome {
                    Outcome::Resume => {}
                    Outcome::StopVcpu => return Err("the only vCPU stopped".into()),
                    Outcome::End(End::Shutdown(code)) => {
                        println!("guest shut down with code {code}");
                        dispatcher.shutdown();
                        return if code == 0 {
                            Ok(())
                        } else {
                            Err(format!("NEGOTIATE answered status {code}").into())
                        };
                    }
                    Outcome::End(other) => return Err(format!("guest ended: {other:?}").into()),
                }
            }
            VcpuExit::IoOut(..) | VcpuExit::IoIn(..) => {} // no other devices
            VcpuExit::Hlt => return Err("the guest halted without shutting down".into()),
            other => return Err(format!("unexpected exit {other:?}").into()),
        }
    }
}
