//! Bring-up guest for the reference host's VM layer (`host-ref/tests/vm_boot.rs`).
//!
//! It speaks a raw test protocol, not pvabi:
//!
//! | port | access | meaning |
//! | --- | --- | --- |
//! | 0x5658 | `out` 32-bit | report: `eax` = tag, `rdi` = value |
//! | 0x5659 | `out` 8-bit | console byte (panic messages) |
//! | 0x565A | `out` 32-bit | control: `eax` = command, args in `rdi`, `rsi`, `r8`, `r9`; result in `rax` |
//! | 0x565B | `in` 32-bit | the scenario to run |
//! | 0x565C | `out` 32-bit | benchmark doorbell (ignored by the host) |
//! | 0x565D | `in` 32-bit | next scenario parameter |
//!
//! The tags, commands and scenarios are the constants below; the test file mirrors them.
#![no_std]
#![no_main]

use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering};

use pvabi_guest_rt::cpu::{cpuid, pause, rdmsr, rdtsc, wrmsr};
use pvabi_guest_rt::port::{inl, outl, RawConsole};
use pvabi_guest_rt::{
    ap_launch, current_vcpu, disable_interrupts, enable_interrupts, halt_forever, run_at_cpl3,
    set_fatal_hook, set_interrupt_handler, wait_for_interrupt, BootInfo, TrapFrame,
};

mod protocol;
use protocol::*;

const CMD_RAISE_LATER: u32 = 1; // rdi = vector, rsi = delay in ms, r8 = target vCPU
const CMD_START_VCPU: u32 = 2; // rdi = vCPU, rsi = rip, r8 = rsp, r9 = rdi for it
const CMD_EXIT: u32 = 3; // rdi = exit code
const CMD_STOP_ME: u32 = 4;
const CMD_MARK: u32 = 5; // rdi = mark id (the host timestamps it)
const CMD_FLUSH_TLB: u32 = 6; // the host flushes this vCPU's TLB

const MODE_X2APIC: u32 = 8;

const TAG_PANIC_LINE: u32 = 0xEF;

const HELLO: u64 = 0x600D_B007;
const DONE: u64 = 0xD0_4E;
const EXIT_OK: u64 = 0x5A;
const VECTOR_HLT: u8 = 0x40;
const VECTOR_CPL3: u8 = 0x41;
/// A generous bound for ring-3 spins, in TSC ticks (seconds on any current CPU).
const SPIN_TICKS: u64 = 20_000_000_000;

fn report(tag: u32, value: u64) {
    // SAFETY: the test host only records reports.
    unsafe {
        asm!("out dx, eax", in("dx") PORT_REPORT, in("eax") tag, in("rdi") value,
             options(nomem, nostack, preserves_flags));
    }
}

fn control(cmd: u32, a: u64, b: u64, c: u64, d: u64) -> u64 {
    let result: u64;
    // SAFETY: the test host's control port; it may start vCPUs that read the launch
    // records, so this asm is a memory barrier for the compiler (no `nomem`).
    unsafe {
        asm!("out dx, eax", in("dx") PORT_CONTROL, inout("rax") u64::from(cmd) => result,
             in("rdi") a, in("rsi") b, in("r8") c, in("r9") d, options(nostack, preserves_flags));
    }
    result
}

fn param() -> u64 {
    // SAFETY: the test host answers parameter reads.
    u64::from(unsafe { inl(PORT_PARAM) })
}

fn read_cs() -> u64 {
    let cs: u16;
    // SAFETY: reads the CS selector.
    unsafe { asm!("mov {0:x}, cs", out(reg) cs, options(nomem, nostack, preserves_flags)) };
    u64::from(cs)
}

fn console() -> RawConsole {
    // SAFETY: the test host treats console bytes as output.
    unsafe { RawConsole::new(PORT_CONSOLE) }
}

static SEEN_VECTOR: AtomicU64 = AtomicU64::new(0);
static SEEN_CS: AtomicU64 = AtomicU64::new(0);
static AP_DONE: AtomicU64 = AtomicU64::new(0);

fn on_interrupt(frame: &mut TrapFrame) {
    SEEN_CS.store(frame.cs, Ordering::Relaxed);
    SEEN_VECTOR.store(frame.vector, Ordering::Release);
}

/// For hosts with an in-kernel irqchip: acknowledge at the x2APIC.
fn on_apic_interrupt(frame: &mut TrapFrame) {
    on_interrupt(frame);
    // SAFETY: x2APIC EOI register; x2APIC mode was enabled by `x2apic_probe`.
    unsafe { wrmsr(0x80b, 0) };
}

/// Enables the x2APIC and counts the interrupts it delivers: first while spinning at
/// CPL3 (bounded), then while halted. Reports each as TAG_IDLE_IRQ.
fn x2apic_probe() -> ! {
    // SAFETY: IA32_APIC_BASE (EN stays set, EXTD added), then the x2APIC's spurious
    // vector register (software enable) and task priority; all exist when the host
    // has an in-kernel irqchip, which is this scenario's premise.
    unsafe {
        wrmsr(0x1b, rdmsr(0x1b) | (1 << 11) | (1 << 10));
        wrmsr(0x80f, 0x1ff);
        wrmsr(0x808, 0);
    }
    set_interrupt_handler(VECTOR_HLT, on_apic_interrupt).ok();
    report(TAG_HELLO, HELLO);
    for count in 1..=3u64 {
        enable_interrupts();
        let seen = run_at_cpl3(spin_for_interrupt, SPIN_TICKS / 4);
        disable_interrupts();
        let vector = SEEN_VECTOR.swap(0, Ordering::AcqRel);
        report(
            TAG_IDLE_IRQ,
            if seen == 1 { (count << 8) | vector } else { 0 },
        );
    }
    while SEEN_VECTOR.load(Ordering::Acquire) == 0 {
        wait_for_interrupt();
    }
    disable_interrupts();
    report(TAG_IRQ_HLT, SEEN_VECTOR.swap(0, Ordering::AcqRel));
    control(CMD_EXIT, EXIT_OK, 0, 0, 0);
    halt_forever()
}

/// Remaps a 2 MiB page by editing the host's boot page directory (no `invlpg`), asks
/// the host to flush this vCPU's TLB and reads through the new mapping.
fn tlb_probe() -> ! {
    const PD: u64 = 0xb000; // the host's first page directory (identity map)
    const VA: u64 = 0x0300_0000; // 48 MiB
    const OTHER: u64 = 0x0340_0000; // 52 MiB
    let pde = (PD + (VA >> 21) * 8) as *mut u64;
    // SAFETY: both 2 MiB regions are guest RAM above the image that nothing else
    // uses; the page directory entry is the host's identity map of VA, and the new
    // entry keeps its flags and maps another RAM region.
    unsafe {
        core::ptr::write_volatile(VA as *mut u64, 0xAAAA);
        core::ptr::write_volatile(OTHER as *mut u64, 0xBBBB);
        report(TAG_TLB_BEFORE, core::ptr::read_volatile(VA as *const u64));
        let entry = core::ptr::read_volatile(pde);
        core::ptr::write_volatile(pde, (entry & 0xfff) | OTHER);
    }
    control(CMD_FLUSH_TLB, 0, 0, 0, 0);
    // SAFETY: VA is mapped (now to OTHER).
    report(TAG_TLB_AFTER, unsafe {
        core::ptr::read_volatile(VA as *const u64)
    });
    control(CMD_EXIT, EXIT_OK, 0, 0, 0);
    halt_forever()
}

fn on_fatal(frame: &TrapFrame) {
    report(TAG_EXCEPTION_VECTOR, frame.vector);
    report(TAG_EXCEPTION_RIP, frame.rip);
}

/// Ring 3: spin until an interrupt was seen (1) or the bound passes (0).
fn spin_for_interrupt(ticks: u64) -> u64 {
    let start = rdtsc();
    while SEEN_VECTOR.load(Ordering::Acquire) == 0 {
        if rdtsc().wrapping_sub(start) > ticks {
            return 0;
        }
        pause();
    }
    1
}

/// Ring 3: spin until the secondary vCPU is done (1) or the bound passes (0).
fn spin_for_ap(ticks: u64) -> u64 {
    let start = rdtsc();
    while AP_DONE.load(Ordering::Acquire) == 0 {
        if rdtsc().wrapping_sub(start) > ticks {
            return 0;
        }
        pause();
    }
    1
}

/// Ring 3: report CS and the argument through port I/O, return a function of it.
fn user_io(arg: u64) -> u64 {
    report(TAG_USER_CS, read_cs());
    report(TAG_USER_ARG, arg);
    arg.wrapping_mul(3).wrapping_add(1)
}

fn ap_main(arg: u64) -> ! {
    report(TAG_AP_ARG, arg);
    report(TAG_AP_VCPU, u64::from(current_vcpu()));
    report(TAG_AP_APIC_ID, u64::from(cpuid(1, 0)[1] >> 24));
    let cs = run_at_cpl3(|_| read_cs(), 0);
    report(TAG_AP_USER_CS, cs);
    AP_DONE.store(1, Ordering::Release);
    control(CMD_STOP_ME, 0, 0, 0, 0);
    halt_forever()
}

fn smoke(boot: &BootInfo) -> ! {
    report(TAG_HELLO, HELLO);
    report(TAG_VCPU, u64::from(boot.vcpu));
    report(TAG_NCPU, u64::from(boot.vcpu_count));
    report(TAG_MEM, boot.mem_bytes);
    let hv = cpuid(0x4000_0000, 0);
    report(TAG_CPUID_EAX, u64::from(hv[0]));
    report(TAG_CPUID_EBX, u64::from(hv[1]));
    report(TAG_APIC_ID, u64::from(cpuid(1, 0)[1] >> 24));

    // An interrupt that wakes a halted vCPU.
    set_interrupt_handler(VECTOR_HLT, on_interrupt).ok();
    control(CMD_RAISE_LATER, u64::from(VECTOR_HLT), 20, 0, 0);
    while SEEN_VECTOR.load(Ordering::Acquire) == 0 {
        wait_for_interrupt();
    }
    disable_interrupts();
    report(TAG_IRQ_HLT, SEEN_VECTOR.swap(0, Ordering::AcqRel));

    // An interrupt that arrives while the vCPU runs (at CPL3) inside KVM_RUN.
    set_interrupt_handler(VECTOR_CPL3, on_interrupt).ok();
    control(CMD_RAISE_LATER, u64::from(VECTOR_CPL3), 50, 0, 0);
    enable_interrupts();
    run_at_cpl3(spin_for_interrupt, SPIN_TICKS);
    disable_interrupts();
    report(TAG_IRQ_CPL3_VECTOR, SEEN_VECTOR.swap(0, Ordering::AcqRel));
    report(TAG_IRQ_CPL3_CS, SEEN_CS.load(Ordering::Relaxed));

    // Port I/O from ring 3.
    let ret = run_at_cpl3(user_io, 0x1234);
    report(TAG_USER_RET, ret);

    // A secondary vCPU.
    if boot.vcpu_count > 1 {
        let start = ap_launch(1, ap_main, AP_ARG).expect("vCPU 1 within MAX_VCPUS");
        let result = control(CMD_START_VCPU, 1, start.rip, start.rsp, start.rdi);
        report(TAG_START_RESULT, result);
        report(TAG_AP_WAIT, run_at_cpl3(spin_for_ap, SPIN_TICKS));
    }

    report(TAG_DONE, DONE);
    control(CMD_EXIT, EXIT_OK, 0, 0, 0);
    halt_forever()
}

fn bench() -> ! {
    let n0 = param();
    let n3 = param();
    control(CMD_MARK, 0, 0, 0, 0);
    for _ in 0..n0 {
        // SAFETY: the benchmark port is ignored by the host.
        unsafe { outl(PORT_BENCH, 0) };
    }
    control(CMD_MARK, 1, 0, 0, 0);
    run_at_cpl3(
        |n| {
            for _ in 0..n {
                // SAFETY: as above; IOPL 3 allows port I/O at CPL3.
                unsafe { outl(PORT_BENCH, 0) };
            }
            0
        },
        n3,
    );
    control(CMD_MARK, 2, 0, 0, 0);
    // The same loop at CPL0 without the `out`: the cost of emulating the loop itself.
    for _ in 0..n0 {
        // SAFETY: an empty asm statement keeps the loop.
        unsafe { asm!("", options(nomem, nostack, preserves_flags)) };
    }
    control(CMD_MARK, 3, 0, 0, 0);
    control(CMD_EXIT, EXIT_OK, 0, 0, 0);
    halt_forever()
}

#[repr(C, packed)]
struct DescriptorPointer {
    limit: u16,
    base: u64,
}

fn main(boot: &BootInfo) -> ! {
    // SAFETY: the test host answers mode reads.
    let mode = unsafe { inl(PORT_MODE) };
    set_fatal_hook(on_fatal);
    match mode {
        MODE_SMOKE => smoke(boot),
        MODE_TRIPLE_FAULT => {
            let null = DescriptorPointer { limit: 0, base: 0 };
            // SAFETY: deliberately breaks the IDT: #UD then finds no usable IDT, which
            // escalates to a triple fault (the point of this scenario). (Not `int3`:
            // KVM's emulator cannot execute `INT n` in long mode.)
            unsafe { asm!("lidt [{}]", "ud2", in(reg) &null, options(nostack)) };
            halt_forever()
        }
        MODE_HLT_IF0 => halt_forever(),
        MODE_EXCEPTION => {
            // SAFETY: deliberately raises #UD, which the runtime treats as fatal.
            unsafe { asm!("ud2", options(nomem, nostack)) };
            halt_forever()
        }
        MODE_MMIO => {
            // SAFETY: deliberately writes to an identity-mapped address above RAM
            // (the host maps at least 1 GiB); no Rust object lives there.
            unsafe { core::ptr::write_volatile(0x3000_0000 as *mut u32, 0xdead) };
            halt_forever()
        }
        MODE_BENCH => bench(),
        MODE_IDLE => {
            // Count the interrupts the host raises while this vCPU halts.
            set_interrupt_handler(VECTOR_HLT, on_interrupt).ok();
            let mut count = 0;
            loop {
                wait_for_interrupt();
                let vector = SEEN_VECTOR.swap(0, Ordering::AcqRel);
                if vector != 0 {
                    count += 1;
                    report(TAG_IDLE_IRQ, (count << 8) | vector);
                }
            }
        }
        MODE_X2APIC => x2apic_probe(),
        MODE_TLB => tlb_probe(),
        MODE_STOP => {
            control(CMD_STOP_ME, 0, 0, 0, 0);
            halt_forever()
        }
        _ => {
            report(TAG_PANIC_LINE, 0);
            halt_forever()
        }
    }
}

pvabi_guest_rt::entry!(main);

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let console = console();
    console.write_str("guest panic at ");
    if let Some(location) = info.location() {
        console.write_str(location.file());
        console.write_str(":");
        console.write_dec(u64::from(location.line()));
        report(TAG_PANIC_LINE, u64::from(location.line()));
    } else {
        report(TAG_PANIC_LINE, 0);
    }
    console.write_str("\n");
    halt_forever()
}
