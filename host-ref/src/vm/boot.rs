//! The boot environment: the host's GDT and identity-mapping page tables in low
//! memory, and the register state that puts a vCPU straight into 64-bit mode.
//!
//! The register values follow the usual long-mode recipe (as in rust-vmm's
//! vmm-reference, Firecracker and the KVM selftests): CR0.PE|PG (plus MP, ET, NE,
//! WP), CR4.PAE (plus OSFXSR/OSXMMEXCPT so that ring-3 code may use SSE where the
//! hardware runs it natively), EFER.LME|LMA, flat 64-bit code and data segments and a
//! busy 64-bit TSS in TR.

use kvm_bindings::{
    kvm_fpu, kvm_msr_entry, kvm_regs, kvm_segment, kvm_sregs, kvm_xcr, kvm_xcrs, Msrs,
};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use pvabi_abi::platform::{
    BOOT_APIC_BASE, BOOT_CR0, BOOT_CR4, BOOT_EFER, BOOT_FCW, BOOT_GDT, BOOT_GDT_LIMIT,
    BOOT_MAP_PAGE_SIZE, BOOT_MXCSR, BOOT_PTE_FLAGS, BOOT_PTE_PS, BOOT_RFLAGS, BOOT_XCR0,
    CODE_SELECTOR, DATA_SELECTOR, MIN_MAPPED_BYTES, TSS_SELECTOR,
};

use super::{VmError, BOOT_GDT_ADDR, GIB, PDPT_ADDR, PD_ADDR, PML4_ADDR};

/// How many GiB the boot page tables identity-map for `mem_bytes` of RAM: all of RAM
/// and at least [`MIN_MAPPED_BYTES`].
pub(super) fn mapped_gib(mem_bytes: u64) -> u64 {
    mem_bytes.max(MIN_MAPPED_BYTES).div_ceil(GIB)
}

fn write<T: vm_memory::ByteValued>(
    mem: &GuestMemoryMmap,
    what: &'static str,
    addr: u64,
    value: T,
) -> Result<(), VmError> {
    mem.write_obj(value, GuestAddress(addr))
        .map_err(|e| VmError::GuestWrite {
            what,
            detail: e.to_string(),
        })
}

/// Writes the boot GDT and the page tables into guest memory.
pub(super) fn write_tables(mem: &GuestMemoryMmap, mem_bytes: u64) -> Result<(), VmError> {
    // GDT: null, 64-bit code, data, then a 16-byte TSS descriptor (base 0, limit 0x67,
    // busy 64-bit TSS). KVM takes the segment state from KVM_SET_SREGS; the table is in
    // memory so that a guest reloading selectors finds the same descriptors.
    for (i, entry) in BOOT_GDT.iter().enumerate() {
        write(mem, "the boot GDT", BOOT_GDT_ADDR + 8 * i as u64, *entry)?;
    }

    // Page tables: one PML4 entry -> PDPT; one PDPT entry per GiB -> a PD of 512
    // 2 MiB pages. Everything is user-accessible so ring-3 guest code can run anywhere.
    let flags = BOOT_PTE_FLAGS;
    write(mem, "the PML4", PML4_ADDR, PDPT_ADDR | flags)?;
    for gib in 0..mapped_gib(mem_bytes) {
        let pd = PD_ADDR + gib * 0x1000;
        write(mem, "the PDPT", PDPT_ADDR + 8 * gib, pd | flags)?;
        for i in 0..512u64 {
            let phys = gib * GIB + i * BOOT_MAP_PAGE_SIZE;
            write(
                mem,
                "a page directory",
                pd + 8 * i,
                phys | flags | BOOT_PTE_PS,
            )?;
        }
    }
    Ok(())
}

fn segment(selector: u16, type_: u8, code: bool) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_,
        present: 1,
        dpl: 0,
        db: u8::from(!code),
        s: 1,
        l: u8::from(code),
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// Sets the 64-bit boot state into `sregs` (as read from the vCPU) with page tables
/// at `cr3`.
pub(super) fn long_mode_sregs(sregs: &mut kvm_sregs, cr3: u64) {
    sregs.cs = segment(CODE_SELECTOR, 0xb, true);
    let data = segment(DATA_SELECTOR, 0x3, false);
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = kvm_segment {
        base: 0,
        limit: 0x67,
        selector: TSS_SELECTOR,
        type_: 0xb,
        present: 1,
        dpl: 0,
        db: 0,
        s: 0,
        l: 0,
        g: 0,
        avl: 0,
        unusable: 0,
        padding: 0,
    };
    // No LDT: KVM's reset value, set explicitly so that a restarted vCPU loses its own.
    sregs.ldt = kvm_segment {
        base: 0,
        limit: 0xffff,
        selector: 0,
        type_: 0x2,
        present: 1,
        dpl: 0,
        db: 0,
        s: 0,
        l: 0,
        g: 0,
        avl: 0,
        unusable: 0,
        padding: 0,
    };
    // No local APIC (PVABI-PLAT-010): the APIC base MSR has its global-enable bit (11)
    // clear, which is also what makes KVM report CPUID.1:EDX.APIC as 0.
    sregs.apic_base = BOOT_APIC_BASE;
    sregs.gdt.base = BOOT_GDT_ADDR;
    sregs.gdt.limit = BOOT_GDT_LIMIT;
    sregs.idt.base = 0;
    sregs.idt.limit = 0;
    sregs.cr0 = BOOT_CR0;
    sregs.cr2 = 0;
    sregs.cr3 = cr3;
    sregs.cr8 = 0;
    sregs.cr4 = BOOT_CR4;
    sregs.efer = BOOT_EFER;
}

/// General registers for an entry at `rip` with `rsp` and the first three argument
/// registers; interrupts disabled.
pub(super) fn entry_regs(rip: u64, rsp: u64, rdi: u64, rsi: u64, rdx: u64) -> kvm_regs {
    kvm_regs {
        rip,
        rsp,
        rdi,
        rsi,
        rdx,
        rflags: BOOT_RFLAGS,
        ..Default::default()
    }
}

/// The x87/SSE state at entry: FCW and MXCSR at their reset values, every other field 0
/// (empty x87 stack, zero XMM registers).
pub(super) fn entry_fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: BOOT_FCW,
        mxcsr: BOOT_MXCSR,
        ..Default::default()
    }
}

/// XCR0 at entry.
pub(super) fn entry_xcrs() -> kvm_xcrs {
    let mut xcrs = kvm_xcrs {
        nr_xcrs: 1,
        ..Default::default()
    };
    xcrs.xcrs[0] = kvm_xcr {
        xcr: 0,
        value: BOOT_XCR0,
        ..Default::default()
    };
    xcrs
}

/// The MSRs a started vCPU gets as 0 whatever it had before it stopped: KERNEL_GS_BASE,
/// STAR, LSTAR, CSTAR and SFMASK (FS.base and GS.base are the segments' bases, also 0).
pub(super) const ZEROED_MSRS: [u32; 5] = [
    0xc000_0102,
    0xc000_0081,
    0xc000_0082,
    0xc000_0083,
    0xc000_0084,
];

/// [`ZEROED_MSRS`], each 0.
pub(super) fn entry_msrs() -> Msrs {
    let entries: Vec<kvm_msr_entry> = ZEROED_MSRS
        .iter()
        .map(|&index| kvm_msr_entry {
            index,
            data: 0,
            ..Default::default()
        })
        .collect();
    Msrs::from_entries(&entries).expect("five MSRs fit")
}
