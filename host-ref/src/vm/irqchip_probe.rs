//! A probe of the alternative the VM layer does not use: the in-kernel irqchip
//! (`KVM_CREATE_IRQCHIP`) with interrupts sent as MSIs (`KVM_SIGNAL_MSI`) to the
//! guest's x2APIC. It boots the smoke guest's x2APIC scenario on a bare `KVM_RUN`
//! loop and prints whether, and how fast, MSIs reach it. Run it with
//! `cargo test -p pvabi-host --lib irqchip -- --ignored --nocapture`.

use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kvm_bindings::kvm_msi;
use kvm_ioctls::{Kvm, VcpuExit};
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion, MemoryRegionAddress};

use super::testing::kvm_or_skip;
use super::{boot, cpuid, memory, BOOT_STACK_TOP, MIB, PML4_ADDR};

fn smoke() -> &'static [u8] {
    pvabi_guest_images::smoke()
}
const MODE_X2APIC: u32 = 8;
const TAG_HELLO: u32 = 0x01;
const TAG_IRQ_HLT: u32 = 0x10;
const TAG_IDLE_IRQ: u32 = 0x13;

#[test]
#[ignore = "probe of the in-kernel irqchip: prints what works, asserts little"]
fn in_kernel_irqchip_msi_probe() {
    if !kvm_or_skip("in_kernel_irqchip_msi_probe") {
        return;
    }
    let mem_bytes = 64 * MIB;
    // Declared before the VM, so dropped after it.
    let memory = memory::create(mem_bytes).unwrap();
    let kvm = Kvm::new().unwrap();
    let vm = Arc::new(kvm.create_vm().unwrap());
    vm.create_irq_chip().expect("KVM_CREATE_IRQCHIP");
    boot::write_tables(&memory, mem_bytes).unwrap();
    let entry = memory::load(&memory, mem_bytes, smoke()).unwrap();
    let region = memory.iter().next().unwrap();
    let host_addr = region.get_host_address(MemoryRegionAddress(0)).unwrap();
    // SAFETY: the region is a live mapping of `mem_bytes` bytes owned by `memory`, which
    // is dropped after the VM (declared before it) and after the vCPU (its thread is
    // joined below).
    unsafe {
        vm.set_user_memory_region(kvm_bindings::kvm_userspace_memory_region {
            slot: 0,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: mem_bytes,
            userspace_addr: host_addr as u64,
        })
        .unwrap();
    }
    let supported = kvm
        .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
        .unwrap();
    let mut vcpu = vm.create_vcpu(0).unwrap();
    // The guest enables the x2APIC: leaf 1 must offer it (KVM refuses IA32_APIC_BASE.EXTD
    // otherwise, with #GP), whatever the supported set says.
    let mut entries = supported.as_slice().to_vec();
    for e in entries.iter_mut().filter(|e| e.function == 1) {
        println!(
            "irqchip: supported leaf 1 ecx {:#x} (x2APIC bit {})",
            e.ecx,
            e.ecx >> 21 & 1
        );
        e.ecx |= 1 << 21;
        e.edx |= 1 << 9;
    }
    vcpu.set_cpuid2(&cpuid::for_vcpu(&entries, 0).unwrap())
        .unwrap();
    let mut sregs = vcpu.get_sregs().unwrap();
    boot::long_mode_sregs(&mut sregs, PML4_ADDR);
    // The reference platform boots with the APIC globally disabled (PVABI-PLAT-010); from
    // there the guest's switch straight to x2APIC mode is an invalid transition (#GP), so
    // the probe boots with the xAPIC enabled (EN, BSP), as firmware would.
    sregs.apic_base = 0xfee0_0000 | (1 << 11) | (1 << 8);
    vcpu.set_sregs(&sregs).unwrap();
    vcpu.set_regs(&boot::entry_regs(entry, BOOT_STACK_TOP, 0, mem_bytes, 1))
        .unwrap();

    let (report_tx, report_rx) = mpsc::channel::<(u32, u64, Instant)>();
    let runner = std::thread::spawn(move || loop {
        let exit = vcpu.run();
        match exit {
            Ok(VcpuExit::IoOut(0x5658, data)) => {
                let tag = u32::from_le_bytes(data.try_into().unwrap());
                let value = vcpu.get_regs().unwrap().rdi;
                let _ = report_tx.send((tag, value, Instant::now()));
            }
            Ok(VcpuExit::IoOut(0x565A, _)) => return "guest exited".to_string(),
            Ok(VcpuExit::IoIn(0x565B, data)) => data.copy_from_slice(&MODE_X2APIC.to_le_bytes()),
            Ok(other) => return format!("unexpected exit {other:?}"),
            Err(e) => return format!("KVM_RUN: {e}"),
        }
    });

    let wait = |what: &str| {
        report_rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("no report: {what}"))
    };
    let (tag, value, _) = wait("hello");
    if tag != TAG_HELLO {
        let more = report_rx.recv_timeout(Duration::from_secs(2)).ok();
        panic!(
            "irqchip: expected the hello report, got tag {tag:#x} value {value:#x}, then {more:x?}"
        );
    }
    let msi = kvm_msi {
        address_lo: 0xfee0_0000,
        address_hi: 0,
        data: 0x40,
        ..Default::default()
    };
    for round in 1..=3 {
        std::thread::sleep(Duration::from_millis(20));
        let sent = Instant::now();
        let ret = vm.signal_msi(msi);
        let (tag, value, at) = wait("interrupt while spinning at CPL3");
        assert_eq!(tag, TAG_IDLE_IRQ);
        println!(
            "irqchip: MSI {round} (KVM_SIGNAL_MSI -> {ret:?}) to a vCPU spinning at CPL3: guest \
             reported {value:#x} after {:?}",
            at - sent
        );
        if value == 0 {
            println!("irqchip: the MSI was not delivered within the guest's bound");
        }
    }
    std::thread::sleep(Duration::from_millis(50));
    let sent = Instant::now();
    let ret = vm.signal_msi(msi);
    let (tag, value, at) = wait("interrupt while halted");
    assert_eq!(tag, TAG_IRQ_HLT);
    println!(
        "irqchip: MSI (KVM_SIGNAL_MSI -> {ret:?}) to a halted vCPU (HLT in the kernel): guest \
         saw vector {value:#x} after {:?}",
        at - sent
    );
    println!("irqchip: {}", runner.join().unwrap());
}
