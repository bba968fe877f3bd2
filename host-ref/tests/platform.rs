//! KVM tests of the reference platform's entry state (spec appendix "The reference
//! platform", PVABI-PLAT-006/007, and the vCPU family's entry state, PVABI-VCPU-016/017).
//!
//! The guests are a few hand-assembled instructions in a minimal ELF built here. Each ends
//! with `hlt` at IF=0, which ends the VM with a fault report that carries the registers the
//! halting vCPU had: the registers it started with, except what its instructions changed.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use pvabi_abi::platform::{
    BOOT_CR0, BOOT_CR4, BOOT_EFER, BOOT_RFLAGS, BOOT_STACK_TOP, CODE_SELECTOR, DATA_SELECTOR,
    IMAGE_BASE, PML4_ADDR,
};
use pvabi_host::bus::{PortAccess, PortBus, PortDevice};
use pvabi_host::dispatch::{CallRegs, Outcome};
use pvabi_host::vm::testing::kvm_or_skip;
use pvabi_host::vm::{Fault, FaultReport, GuestRegs, Vm, VmConfig, VmCtl, VmEnd, MIB};

/// Offset 0: `hlt`.
const BOOT: &[u8] = &[0xf4];
/// Offset 0x10 (vCPU 0): `mov dx, 0x7001; out dx, eax; sti; 1: hlt; jmp 1b`.
const SMP0: &[u8] = &[0x66, 0xba, 0x01, 0x70, 0xef, 0xfb, 0xf4, 0xeb, 0xfd];
/// Offset 0x100 (vCPU 1, first run): dirty r12, rbx, cr2, LSTAR, KERNEL_GS_BASE and the TPR (cr8), then
/// `out` to 0x7002 (the host stops it and starts it again at offset 0x200).
const SMP1_FIRST: &[u8] = &[
    0x49, 0xc7, 0xc4, 0xff, 0xff, 0xff, 0xff, // mov r12, -1
    0x48, 0xc7, 0xc3, 0xff, 0xff, 0xff, 0xff, // mov rbx, -1
    0x48, 0xc7, 0xc0, 0x00, 0x50, 0x55, 0x05, // mov rax, 0x5555000
    0x0f, 0x22, 0xd0, // mov cr2, rax
    0xb9, 0x82, 0x00, 0x00, 0xc0, // mov ecx, LSTAR
    0xb8, 0x78, 0x56, 0x34, 0x12, // mov eax, 0x12345678
    0xba, 0x00, 0x80, 0xff, 0xff, // mov edx, 0xffff8000
    0x0f, 0x30, // wrmsr
    0xb9, 0x02, 0x01, 0x00, 0xc0, // mov ecx, KERNEL_GS_BASE
    0x0f, 0x30, // wrmsr
    0xb8, 0x02, 0x00, 0x00, 0x00, // mov eax, 2
    0x4c, 0x0f, 0x22, 0xc0, // mov cr8, rax (the TPR)
    0x66, 0xba, 0x02, 0x70, 0xef, // mov dx, 0x7002; out dx, eax
    0x0f, 0x0b, // ud2
];
/// Offset 0x200 (vCPU 1, second run): KERNEL_GS_BASE into r9:r8, LSTAR into rdx:rax, the TPR
/// into r10, `hlt`.
const SMP1_SECOND: &[u8] = &[
    0xb9, 0x02, 0x01, 0x00, 0xc0, // mov ecx, KERNEL_GS_BASE
    0x0f, 0x32, // rdmsr
    0x49, 0x89, 0xc0, // mov r8, rax
    0x49, 0x89, 0xd1, // mov r9, rdx
    0xb9, 0x82, 0x00, 0x00, 0xc0, // mov ecx, LSTAR
    0x0f, 0x32, // rdmsr
    0x4d, 0x0f, 0x20, 0xc2, // mov r10, cr8
    0xf4, // hlt
];
const LSTAR: u64 = 0xc000_0082;
const AP_STACK: [u64; 2] = [0x30_0000, 0x31_0000];
const AP_ARG: [u64; 2] = [0x1111, 0x2222];

/// A static ELF64 with one RWX segment at `IMAGE_BASE` holding `code` (offset, bytes) and
/// entering at `IMAGE_BASE + entry`.
fn image(code: &[(usize, &[u8])], entry: u64) -> Vec<u8> {
    const TEXT: usize = 0x1000;
    let mut text = vec![0u8; 0x1000];
    for (off, bytes) in code {
        text[*off..off + bytes.len()].copy_from_slice(bytes);
    }
    let mut elf = vec![0u8; TEXT];
    elf[..4].copy_from_slice(b"\x7fELF");
    elf[4] = 2; // 64-bit
    elf[5] = 1; // little-endian
    elf[6] = 1; // version
    let put16 =
        |e: &mut Vec<u8>, at: usize, v: u16| e[at..at + 2].copy_from_slice(&v.to_le_bytes());
    let put32 =
        |e: &mut Vec<u8>, at: usize, v: u32| e[at..at + 4].copy_from_slice(&v.to_le_bytes());
    let put64 =
        |e: &mut Vec<u8>, at: usize, v: u64| e[at..at + 8].copy_from_slice(&v.to_le_bytes());
    put16(&mut elf, 16, 2); // ET_EXEC
    put16(&mut elf, 18, 62); // EM_X86_64
    put32(&mut elf, 20, 1);
    put64(&mut elf, 24, IMAGE_BASE + entry);
    put64(&mut elf, 32, 64); // e_phoff
    put16(&mut elf, 52, 64); // e_ehsize
    put16(&mut elf, 54, 56); // e_phentsize
    put16(&mut elf, 56, 1); // e_phnum
    let ph = 64;
    put32(&mut elf, ph, 1); // PT_LOAD
    put32(&mut elf, ph + 4, 7); // RWX
    put64(&mut elf, ph + 8, TEXT as u64);
    put64(&mut elf, ph + 16, IMAGE_BASE);
    put64(&mut elf, ph + 24, IMAGE_BASE);
    put64(&mut elf, ph + 32, text.len() as u64);
    put64(&mut elf, ph + 40, text.len() as u64);
    put64(&mut elf, ph + 48, 0x1000);
    elf.extend_from_slice(&text);
    elf
}

/// Ports 0x7001 (start vCPU 1 at offset 0x100) and 0x7002 (stop the caller, then start
/// vCPU 1 again at offset 0x200).
/// Other ports' writes are recorded.
#[derive(Default)]
struct Starter {
    ctl: OnceLock<VmCtl>,
    writes: Mutex<Vec<(u16, Vec<u8>)>>,
}

impl PortDevice for Starter {
    fn write(&self, access: &PortAccess, data: &[u8], _regs: &mut CallRegs) -> Option<Outcome> {
        let ctl = self.ctl.get().expect("set before the VM runs").clone();
        Some(match access.port {
            0x7001 => {
                ctl.start_vcpu(1, IMAGE_BASE + 0x100, AP_STACK[0], AP_ARG[0], 0)
                    .expect("vCPU 1 is parked");
                Outcome::Resume
            }
            0x7002 => {
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        std::thread::sleep(Duration::from_millis(5));
                        if ctl
                            .start_vcpu(1, IMAGE_BASE + 0x200, AP_STACK[1], AP_ARG[1], 0)
                            .is_ok()
                        {
                            return;
                        }
                    }
                    ctl.end(VmEnd::Crash("vCPU 1 never parked after it stopped".into()));
                });
                Outcome::StopVcpu
            }
            port => {
                self.writes.lock().unwrap().push((port, data.to_vec()));
                Outcome::Resume
            }
        })
    }
}

fn run(image: &[u8], vcpus: u32, mem_bytes: u64) -> FaultReport {
    run_with(image, vcpus, mem_bytes, Arc::new(Starter::default()))
}

fn run_with(image: &[u8], vcpus: u32, mem_bytes: u64, starter: Arc<Starter>) -> FaultReport {
    let config = VmConfig {
        vcpus,
        mem_bytes,
        cpuid: Vec::new(),
        log_guest_writes: false,
    };
    let vm = Vm::new(&config, image).expect("VM setup");
    assert!(starter.ctl.set(vm.ctl()).is_ok());
    let watchdog_ctl = vm.ctl();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(60));
        watchdog_ctl.end(VmEnd::Crash("watchdog: 60 s".into()));
    });
    let mut bus = PortBus::new();
    bus.attach(0x7000..=0x70ff, starter);
    match vm.run(Arc::new(bus)).expect("VM run") {
        VmEnd::Fault(report) => report,
        other => panic!("expected the hlt at IF=0 to end the VM, got {other}"),
    }
}

fn halted_regs(report: &FaultReport, vcpu: u32) -> GuestRegs {
    assert_eq!(report.vcpu, vcpu, "{report:?}");
    assert_eq!(report.fault, Fault::HaltWithInterruptsOff, "{report:?}");
    *report
        .regs
        .clone()
        .expect("a halt report carries registers")
}

/// The control and segment state every vCPU starts with (the "as vCPU 0" rows).
fn assert_common_entry_state(r: &GuestRegs) {
    assert_eq!(r.rflags, BOOT_RFLAGS, "rflags\n{r}");
    assert_eq!(r.cr0, BOOT_CR0, "cr0\n{r}");
    assert_eq!(r.cr4, BOOT_CR4, "cr4\n{r}");
    assert_eq!(r.efer, BOOT_EFER, "efer\n{r}");
    assert_eq!(r.cr2, 0, "cr2\n{r}");
    assert_eq!(r.cs, CODE_SELECTOR, "cs\n{r}");
    assert_eq!(r.ss, DATA_SELECTOR, "ss\n{r}");
}

#[test]
fn boot_vcpu_starts_in_the_documented_entry_state() {
    if !kvm_or_skip("boot_vcpu_starts_in_the_documented_entry_state") {
        return;
    }
    let mem = 32 * MIB;
    let report = run(&image(&[(0, BOOT)], 0), 3, mem);
    let r = halted_regs(&report, 0);
    assert_eq!(r.rip, IMAGE_BASE + 1, "just after the hlt\n{r}");
    assert_eq!(r.rsp, BOOT_STACK_TOP, "{r}");
    assert_eq!(
        (r.rdi, r.rsi, r.rdx),
        (0, mem, 3),
        "index, RAM, vCPU count\n{r}"
    );
    let others = [
        r.rax, r.rbx, r.rcx, r.rbp, r.r8, r.r9, r.r10, r.r11, r.r12, r.r13, r.r14, r.r15,
    ];
    assert_eq!(
        others, [0; 12],
        "every other general-purpose register is 0\n{r}"
    );
    assert_eq!(r.cr3, PML4_ADDR, "{r}");
    assert_common_entry_state(&r);
}

#[test]
fn a_restarted_vcpu_starts_in_the_entry_state_not_in_its_old_one() {
    if !kvm_or_skip("a_restarted_vcpu_starts_in_the_entry_state_not_in_its_old_one") {
        return;
    }
    let code = [(0x10, SMP0), (0x100, SMP1_FIRST), (0x200, SMP1_SECOND)];
    let report = run(&image(&code, 0x10), 2, 64 * MIB);
    let r = halted_regs(&report, 1);
    assert_eq!(r.rip, IMAGE_BASE + 0x200 + SMP1_SECOND.len() as u64, "{r}");
    assert_eq!(
        (r.rsp, r.rdi),
        (AP_STACK[1], AP_ARG[1]),
        "rsp and arg of the second start\n{r}"
    );
    assert_eq!((r.rax, r.rdx), (0, 0), "LSTAR is 0 again\n{r}");
    assert_eq!((r.r8, r.r9), (0, 0), "KERNEL_GS_BASE is 0 again\n{r}");
    assert_eq!(r.rcx, LSTAR, "{r}");
    let others = [
        r.rbx, r.rsi, r.rbp, r.r10, r.r11, r.r12, r.r13, r.r14, r.r15,
    ];
    assert_eq!(
        others, [0; 9],
        "the first run's r12 and rbx are gone, and its TPR (r10 = cr8)\n{r}"
    );
    assert_eq!(
        r.cr3, PML4_ADDR,
        "cr3 0 in the start means the entry page tables\n{r}"
    );
    assert_common_entry_state(&r);
}

/// `mov eax, 1; xor ecx, ecx; cpuid; hlt`.
const CPUID_1: &[u8] = &[0xb8, 0x01, 0x00, 0x00, 0x00, 0x31, 0xc9, 0x0f, 0xa2, 0xf4];

#[test]
fn cpuid_leaf_1_reports_a_hypervisor_and_no_local_apic() {
    if !kvm_or_skip("cpuid_leaf_1_reports_a_hypervisor_and_no_local_apic") {
        return;
    }
    let r = halted_regs(&run(&image(&[(0, CPUID_1)], 0), 1, 32 * MIB), 0);
    assert_ne!(r.rcx & (1 << 31), 0, "hypervisor bit (PVABI-DISC-013)\n{r}");
    assert_eq!(r.rcx & (1 << 21), 0, "no x2APIC (PVABI-PLAT-010)\n{r}");
    assert_eq!(r.rdx & (1 << 9), 0, "no local APIC (PVABI-PLAT-010)\n{r}");
    assert_eq!(
        r.rbx >> 24 & 0xff,
        0,
        "APIC ID = index (PVABI-PLAT-009)\n{r}"
    );
}

/// `mov dx, 0x7003; lea rsi, [rip + 0x35]; mov ecx, 4; rep outsb; mov dx, 0x7004;
/// mov ecx, 2; rep outsd; hlt`, with the bytes 1..=8 at offset 0x40.
const STRING_OUT: &[u8] = &[
    0x66, 0xba, 0x03, 0x70, 0x48, 0x8d, 0x35, 0x35, 0x00, 0x00, 0x00, 0xb9, 0x04, 0x00, 0x00, 0x00,
    0xf3, 0x6e, 0x66, 0xba, 0x04, 0x70, 0xb9, 0x02, 0x00, 0x00, 0x00, 0xf3, 0x6f, 0xf4,
];

#[test]
fn a_string_output_is_one_write_per_element() {
    // PVABI-CONV-031: devices (the doorbell among them) judge the width of each element, so
    // `rep outsb` of four bytes to the doorbell is never a 4-byte write, that is, a call.
    if !kvm_or_skip("a_string_output_is_one_write_per_element") {
        return;
    }
    let starter = Arc::new(Starter::default());
    let code = [(0, STRING_OUT), (0x40, &[1u8, 2, 3, 4, 5, 6, 7, 8][..])];
    let r = halted_regs(&run_with(&image(&code, 0), 1, 32 * MIB, starter.clone()), 0);
    assert_eq!(r.rcx, 0, "both rep prefixes ran out\n{r}");
    assert_eq!(
        *starter.writes.lock().unwrap(),
        [
            (0x7003, vec![1]),
            (0x7003, vec![2]),
            (0x7003, vec![3]),
            (0x7003, vec![4]),
            (0x7004, vec![5, 6, 7, 8]),
            (0x7004, vec![0, 0, 0, 0]),
        ],
        "one write per element"
    );
}

/// `mov dx, 0x80; mov eax, 0xffffffff; out dx, eax; in eax, dx; hlt`.
const UNCLAIMED_PORT: &[u8] = &[
    0x66, 0xba, 0x80, 0x00, 0xb8, 0xff, 0xff, 0xff, 0xff, 0xef, 0xed, 0xf4,
];

#[test]
fn a_port_without_a_device_ignores_writes_and_reads_zero() {
    // PVABI-PLAT-015, on the bus every reference-host VM starts from (PortBus::new).
    if !kvm_or_skip("a_port_without_a_device_ignores_writes_and_reads_zero") {
        return;
    }
    let r = halted_regs(&run(&image(&[(0, UNCLAIMED_PORT)], 0), 1, 32 * MIB), 0);
    assert_eq!(r.rax, 0, "{r}");
    assert_eq!(r.rip, IMAGE_BASE + UNCLAIMED_PORT.len() as u64, "{r}");
}

#[test]
fn an_image_below_the_minimum_address_or_beyond_ram_is_refused_before_it_runs() {
    // PVABI-PLAT-005: refused by Vm::new, which checks the image before it touches KVM, so
    // none of its instructions can run (no KVM needed).
    let config = VmConfig {
        vcpus: 1,
        mem_bytes: 32 * MIB,
        cpuid: Vec::new(),
        log_guest_writes: false,
    };
    let good = image(&[(0, BOOT)], 0);
    let set64 =
        |elf: &mut Vec<u8>, at: usize, v: u64| elf[at..at + 8].copy_from_slice(&v.to_le_bytes());
    // The segment at 0x1000 (and the entry in it): inside the host's boot area.
    let mut low = good.clone();
    set64(&mut low, 64 + 16, 0x1000);
    set64(&mut low, 64 + 24, 0x1000);
    set64(&mut low, 24, 0x1000);
    match Vm::new(&config, &low) {
        Err(e) => assert!(e.to_string().contains("boot area"), "{e}"),
        Ok(_) => panic!("an image loading at 0x1000 was accepted"),
    }
    // A segment whose memory size runs past the end of guest RAM.
    let mut big = good;
    set64(&mut big, 64 + 40, 64 * MIB);
    match Vm::new(&config, &big) {
        Err(e) => assert!(
            matches!(e, pvabi_host::vm::VmError::ImageTooLarge { .. }),
            "{e}"
        ),
        Ok(_) => panic!("an image larger than guest RAM was accepted"),
    }
}
