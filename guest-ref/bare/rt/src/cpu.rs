//! Small CPU helpers: interrupt flag, halting, the current vCPU, TSC, CPUID, MSRs.

use core::arch::asm;

use x86_64::instructions::{hlt, interrupts};
use x86_64::registers::model_specific::Msr;

use crate::{MAX_VCPUS, TSS_SELECTOR_BASE};

/// Sets IF: the vCPU takes interrupts from now on.
#[inline]
pub fn enable_interrupts() {
    interrupts::enable();
}

/// Clears IF.
#[inline]
pub fn disable_interrupts() {
    interrupts::disable();
}

/// Whether IF is set.
#[inline]
pub fn interrupts_enabled() -> bool {
    interrupts::are_enabled()
}

/// Enables interrupts and halts until one arrives (`sti; hlt`, so an interrupt
/// cannot slip in between). Interrupts stay enabled afterwards.
#[inline]
pub fn wait_for_interrupt() {
    interrupts::enable_and_hlt();
}

/// Disables interrupts and halts for good. The host sees a halt with IF=0, which can
/// never wake, and ends the VM with a fault report that includes the registers.
pub fn halt_forever() -> ! {
    loop {
        interrupts::disable();
        hlt();
    }
}

/// The index of the vCPU this code runs on (derived from the task register, which
/// holds this vCPU's TSS selector once the runtime's tables are loaded).
#[inline]
pub fn current_vcpu() -> u32 {
    let tr: u16;
    // Hand-written: x86_64 0.15 has no wrapper for `str`.
    // SAFETY: `str` reads the task register; allowed at any CPL without UMIP.
    unsafe { asm!("str {0:x}", out(reg) tr, options(nomem, nostack, preserves_flags)) };
    let index = (tr.wrapping_sub(TSS_SELECTOR_BASE) / 16) as u32;
    debug_assert!((index as usize) < MAX_VCPUS);
    index
}

/// Reads the time-stamp counter.
#[inline]
pub fn rdtsc() -> u64 {
    let lo: u32;
    let hi: u32;
    // Hand-written: x86_64 0.15 has no wrapper for `rdtsc`.
    // SAFETY: `rdtsc` only reads the TSC (allowed at CPL3 unless CR4.TSD, which the
    // host leaves clear).
    unsafe {
        asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Executes CPUID for `leaf`/`subleaf`: `[eax, ebx, ecx, edx]`.
#[inline]
pub fn cpuid(leaf: u32, subleaf: u32) -> [u32; 4] {
    // CPUID is always available in 64-bit mode.
    let r = core::arch::x86_64::__cpuid_count(leaf, subleaf);
    [r.eax, r.ebx, r.ecx, r.edx]
}

/// A spin-loop hint.
#[inline]
pub fn pause() {
    core::hint::spin_loop();
}

/// Reads model-specific register `msr` (CPL0 only).
///
/// # Safety
/// `msr` must exist (otherwise #GP, which is fatal) and the caller must run at CPL0.
#[inline]
pub unsafe fn rdmsr(msr: u32) -> u64 {
    // SAFETY: the caller guarantees the MSR exists and that we run at CPL0.
    unsafe { Msr::new(msr).read() }
}

/// Writes model-specific register `msr` (CPL0 only).
///
/// # Safety
/// `msr` must exist and accept `value`, and writing it must not break what the
/// runtime relies on (paging, segments); the caller must run at CPL0.
#[inline]
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: the caller guarantees the MSR, the value and CPL0.
    unsafe { Msr::new(msr).write(value) };
}
