//! A probe of how a host can move a vCPU's time-stamp counter on this KVM: hand-written
//! guest code reads `rdtsc` at CPL0 and CPL3 and reports each value with an `out`; between
//! reports the probe moves the counter with `KVM_SET_MSRS(IA32_TSC)` or with
//! `KVM_SET_DEVICE_ATTR(KVM_VCPU_TSC_OFFSET)` and prints what the guest then reads. Run it
//! with `cargo test -p pvabi-host --lib tsc_probe -- --ignored --nocapture`.

use kvm_bindings::{kvm_device_attr, kvm_msr_entry, Msrs, KVMIO};
use kvm_ioctls::{Kvm, VcpuExit};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion, MemoryRegionAddress};
use vmm_sys_util::ioctl::ioctl_with_ref;

use super::testing::kvm_or_skip;
use super::tsc::host_tsc;
use super::{boot, memory, PML4_ADDR};

vmm_sys_util::ioctl_iow_nr!(KVM_SET_DEVICE_ATTR, KVMIO, 0xe1, kvm_device_attr);
vmm_sys_util::ioctl_iow_nr!(KVM_GET_DEVICE_ATTR, KVMIO, 0xe2, kvm_device_attr);

/// rdtsc; report 1; rdtsc; report 2; iretq to CPL3; rdtsc; report 3, 4, 5; spin.
const CODE: [u8; 115] = [
    0x0f, 0x31, 0x48, 0xc1, 0xe2, 0x20, 0x48, 0x09, 0xd0, 0x48, 0x89, 0xc7, 0xb0, 0x01, 0xe6, 0x10,
    0x0f, 0x31, 0x48, 0xc1, 0xe2, 0x20, 0x48, 0x09, 0xd0, 0x48, 0x89, 0xc7, 0xb0, 0x02, 0xe6, 0x10,
    0x48, 0xc7, 0xc0, 0x23, 0x00, 0x00, 0x00, 0x50, 0x48, 0xc7, 0xc0, 0x00, 0x70, 0x00, 0x00, 0x50,
    0x68, 0x02, 0x30, 0x00, 0x00, 0x6a, 0x1b, 0x48, 0x8d, 0x05, 0x03, 0x00, 0x00, 0x00, 0x50, 0x48,
    0xcf, 0x0f, 0x31, 0x48, 0xc1, 0xe2, 0x20, 0x48, 0x09, 0xd0, 0x48, 0x89, 0xc7, 0xb0, 0x03, 0xe6,
    0x10, 0x0f, 0x31, 0x48, 0xc1, 0xe2, 0x20, 0x48, 0x09, 0xd0, 0x48, 0x89, 0xc7, 0xb0, 0x04, 0xe6,
    0x10, 0x0f, 0x31, 0x48, 0xc1, 0xe2, 0x20, 0x48, 0x09, 0xd0, 0x48, 0x89, 0xc7, 0xb0, 0x05, 0xe6,
    0x10, 0xeb, 0xfe,
];

fn offset(fd: &kvm_ioctls::VcpuFd) -> Option<u64> {
    let mut value = 0u64;
    let attr = kvm_device_attr {
        group: kvm_bindings::KVM_VCPU_TSC_CTRL,
        attr: u64::from(kvm_bindings::KVM_VCPU_TSC_OFFSET),
        addr: std::ptr::addr_of_mut!(value) as u64,
        flags: 0,
    };
    // SAFETY: KVM_GET_DEVICE_ATTR writes 8 bytes at `attr.addr` (`value`, live).
    let r = unsafe { ioctl_with_ref(fd, KVM_GET_DEVICE_ATTR(), &attr) };
    (r == 0).then_some(value)
}

fn set_offset(fd: &kvm_ioctls::VcpuFd, value: u64) -> i32 {
    let attr = kvm_device_attr {
        group: kvm_bindings::KVM_VCPU_TSC_CTRL,
        attr: u64::from(kvm_bindings::KVM_VCPU_TSC_OFFSET),
        addr: std::ptr::addr_of!(value) as u64,
        flags: 0,
    };
    // SAFETY: KVM_SET_DEVICE_ATTR reads 8 bytes at `attr.addr` (`value`, live).
    let r = unsafe { ioctl_with_ref(fd, KVM_SET_DEVICE_ATTR(), &attr) };
    if r == 0 {
        0
    } else {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
    }
}

fn msr_tsc(fd: &kvm_ioctls::VcpuFd) -> u64 {
    let mut msrs = Msrs::from_entries(&[kvm_msr_entry {
        index: 0x10,
        ..Default::default()
    }])
    .unwrap();
    fd.get_msrs(&mut msrs).unwrap();
    msrs.as_slice()[0].data
}

#[test]
#[ignore = "probe of TSC offset changes: prints what works, asserts little"]
fn tsc_probe() {
    if !kvm_or_skip("tsc_probe") {
        return;
    }
    let mem_bytes = 64 << 20;
    let mem = memory::create(mem_bytes).unwrap();
    let kvm = Kvm::new().unwrap();
    let vm = kvm.create_vm().unwrap();
    boot::write_tables(&mem, mem_bytes).unwrap();
    // A GDT with user segments: null, kcode, kdata, ucode (0x18), udata (0x20).
    let gdt: [u64; 5] = [
        0,
        0x00af_9b00_0000_ffff,
        0x00cf_9300_0000_ffff,
        0x00af_fb00_0000_ffff,
        0x00cf_f300_0000_ffff,
    ];
    for (i, e) in gdt.iter().enumerate() {
        mem.write_obj(*e, GuestAddress(0x600 + 8 * i as u64))
            .unwrap();
    }
    mem.write_slice(&CODE, GuestAddress(0x10_0000)).unwrap();
    let region = mem.iter().next().unwrap();
    let host_addr = region.get_host_address(MemoryRegionAddress(0)).unwrap();
    // SAFETY: `mem` outlives the VM (declared before it).
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
    vcpu.set_cpuid2(&supported).unwrap();
    let mut sregs = vcpu.get_sregs().unwrap();
    boot::long_mode_sregs(&mut sregs, PML4_ADDR);
    sregs.gdt.base = 0x600;
    sregs.gdt.limit = 0x27;
    vcpu.set_sregs(&sregs).unwrap();
    vcpu.set_regs(&boot::entry_regs(0x10_0000, 0x8000, 0, 0, 0))
        .unwrap();
    println!(
        "tsc_probe: khz {:?} offset {:?}",
        vcpu.get_tsc_khz(),
        offset(&vcpu)
    );
    const MOVE: u64 = 1 << 40;
    for _ in 0..8 {
        let exit = vcpu.run();
        let tag = match exit {
            Ok(VcpuExit::IoOut(0x10, data)) => data[0],
            other => {
                println!("tsc_probe: exit {other:?}");
                break;
            }
        };
        let host = host_tsc();
        let regs = vcpu.get_regs().unwrap();
        let guest = regs.rdi;
        println!(
            "tsc_probe: report {tag} guest {guest:#x} host {host:#x} guest-host {:#x} offset {:?} msr-host {:#x} cs {:#x}",
            guest.wrapping_sub(host),
            offset(&vcpu),
            msr_tsc(&vcpu).wrapping_sub(host_tsc()),
            vcpu.get_sregs().unwrap().cs.selector,
        );
        match tag {
            1 => {
                let target = msr_tsc(&vcpu).wrapping_add(MOVE);
                let msrs = Msrs::from_entries(&[kvm_msr_entry {
                    index: 0x10,
                    data: target,
                    ..Default::default()
                }])
                .unwrap();
                println!(
                    "tsc_probe: KVM_SET_MSRS(IA32_TSC += 2^40) -> {:?}",
                    vcpu.set_msrs(&msrs)
                );
            }
            3 => {
                let o = offset(&vcpu).unwrap_or(0).wrapping_add(MOVE);
                println!(
                    "tsc_probe: KVM_SET_DEVICE_ATTR(TSC_OFFSET += 2^40) -> errno {}",
                    set_offset(&vcpu, o)
                );
            }
            4 => {
                println!(
                    "tsc_probe: KVM_SET_TSC_KHZ(1000000) -> {:?}",
                    vcpu.set_tsc_khz(1_000_000)
                );
            }
            5 => break,
            _ => {}
        }
    }
}
