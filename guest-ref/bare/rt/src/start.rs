//! Entry points: `_start` for the boot vCPU and `pvabi_rt_ap_entry` for the others.
//!
//! The entry points are hand-written assembly (there is no stack yet to run Rust on);
//! the tables they load are built with the `x86_64` crate (`gdt.rs`, `idt.rs`).

use core::arch::global_asm;
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crate::{gdt, idt, Global, KERNEL_STACK_SIZE, MAX_VCPUS};

/// What the boot vCPU's entry function learns from the host.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BootInfo {
    /// This vCPU's index (0 for the boot vCPU).
    pub vcpu: u32,
    /// How many vCPUs the VM has (the others are not running yet).
    pub vcpu_count: u32,
    /// Size of guest RAM in bytes (identity-mapped from address 0).
    pub mem_bytes: u64,
}

#[repr(C, align(4096))]
struct KernelStacks([[u8; KERNEL_STACK_SIZE]; MAX_VCPUS]);

// Slot `n` is vCPU `n`'s ring-0 stack, used by that vCPU only.
static KERNEL_STACKS: Global<KernelStacks> =
    Global::new(KernelStacks([[0; KERNEL_STACK_SIZE]; MAX_VCPUS]));

global_asm!(
    ".section .text._start, \"ax\", @progbits",
    ".global _start",
    "_start:",
    "    cli",
    "    lea rsp, [rip + {stacks} + {size}]",
    "    xor ebp, ebp",
    "    call {bsp_main}",
    "2:",
    "    hlt",
    "    jmp 2b",
    "",
    ".section .text.pvabi_rt_ap_entry, \"ax\", @progbits",
    ".global pvabi_rt_ap_entry",
    "pvabi_rt_ap_entry:",
    "    cli",
    "    and rsp, -16",
    "    xor ebp, ebp",
    "    call {ap_main}",
    "3:",
    "    hlt",
    "    jmp 3b",
    stacks = sym KERNEL_STACKS,
    size = const KERNEL_STACK_SIZE,
    bsp_main = sym bsp_main,
    ap_main = sym ap_main,
);

extern "C" {
    static pvabi_rt_ap_entry: u8;
    fn pvabi_guest_main(boot: &BootInfo) -> !;
}

static BOOT: Global<BootInfo> = Global::new(BootInfo {
    vcpu: 0,
    vcpu_count: 0,
    mem_bytes: 0,
});

/// Boot vCPU: rdi = vCPU index, rsi = RAM bytes, rdx = vCPU count (from the host).
extern "C" fn bsp_main(vcpu: u64, mem_bytes: u64, vcpu_count: u64) -> ! {
    let vcpu = vcpu as usize;
    if vcpu >= MAX_VCPUS {
        crate::halt_forever();
    }
    idt::init();
    gdt::load(vcpu);
    idt::load();
    let boot = BOOT.get();
    // SAFETY: written once, here, before anything reads it.
    unsafe {
        *boot = BootInfo {
            vcpu: vcpu as u32,
            vcpu_count: vcpu_count as u32,
            mem_bytes,
        };
        pvabi_guest_main(&*boot)
    }
}

/// Where a secondary vCPU must start: the values for the host's "start vCPU" request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApStart {
    /// Entry point ([`ap_entry_address`]).
    pub rip: u64,
    /// Top of the vCPU's kernel stack.
    pub rsp: u64,
    /// Address of the vCPU's launch record.
    pub rdi: u64,
}

const LAUNCH_MAGIC: u64 = 0x7076_6162_695f_6170; // "pvabi_ap"

#[repr(C, align(64))]
struct ApLaunch {
    magic: AtomicU64,
    vcpu: AtomicU32,
    entry: AtomicUsize,
    arg: AtomicU64,
}

static AP_LAUNCH: [ApLaunch; MAX_VCPUS] = [const {
    ApLaunch {
        magic: AtomicU64::new(0),
        vcpu: AtomicU32::new(0),
        entry: AtomicUsize::new(0),
        arg: AtomicU64::new(0),
    }
}; MAX_VCPUS];

/// The address secondary vCPUs enter at.
pub fn ap_entry_address() -> u64 {
    core::ptr::addr_of!(pvabi_rt_ap_entry) as u64
}

/// Prepares vCPU `vcpu` to run `entry(arg)` and returns the registers to start it
/// with. `None` when `vcpu` is out of range. Call it only while `vcpu` is not running
/// (its stack and launch record are reused).
pub fn ap_launch(vcpu: u32, entry: fn(u64) -> !, arg: u64) -> Option<ApStart> {
    let index = vcpu as usize;
    if index >= MAX_VCPUS {
        return None;
    }
    let record = &AP_LAUNCH[index];
    record.vcpu.store(vcpu, Ordering::Relaxed);
    record.entry.store(entry as usize, Ordering::Relaxed);
    record.arg.store(arg, Ordering::Relaxed);
    record.magic.store(LAUNCH_MAGIC, Ordering::Release);
    // SAFETY: in bounds; only the address of the stack's end is computed.
    let stack = unsafe { core::ptr::addr_of_mut!((*KERNEL_STACKS.get()).0[index]) as u64 };
    Some(ApStart {
        rip: ap_entry_address(),
        rsp: stack + KERNEL_STACK_SIZE as u64,
        rdi: record as *const ApLaunch as u64,
    })
}

/// Secondary vCPU: rdi = its launch record (see [`ap_launch`]).
extern "C" fn ap_main(record: u64) -> ! {
    let base = AP_LAUNCH.as_ptr() as u64;
    let size = core::mem::size_of::<ApLaunch>() as u64;
    let offset = record.wrapping_sub(base);
    let index = (offset / size) as usize;
    if !offset.is_multiple_of(size) || index >= MAX_VCPUS {
        crate::halt_forever();
    }
    let launch = &AP_LAUNCH[index];
    if launch.magic.load(Ordering::Acquire) != LAUNCH_MAGIC
        || launch.vcpu.load(Ordering::Relaxed) as usize != index
    {
        crate::halt_forever();
    }
    let entry = launch.entry.load(Ordering::Relaxed);
    let arg = launch.arg.load(Ordering::Relaxed);
    gdt::load(index);
    idt::load();
    // SAFETY: `entry` was stored from a `fn(u64) -> !` by `ap_launch`.
    let entry = unsafe { core::mem::transmute::<usize, fn(u64) -> !>(entry) };
    entry(arg)
}
