//! The boot environment: the host's GDT and identity-mapping page tables in low
//! memory, and the register state that puts a vCPU straight into 64-bit mode.
//!
//! The register values follow the usual long-mode recipe (as in rust-vmm's
//! vmm-reference, Firecracker and the KVM selftests): CR0.PE|PG (plus MP, ET, NE,
//! WP), CR4.PAE (plus OSFXSR/OSXMMEXCPT so that ring-3 code may use SSE where the
//! hardware runs it natively), EFER.LME|LMA, flat 64-bit code and data segments and a
//! busy 64-bit TSS in TR.

use kvm_bindings::{kvm_regs, kvm_segment, kvm_sregs};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::{VmError, BOOT_GDT_ADDR, GIB, PDPT_ADDR, PD_ADDR, PML4_ADDR};

/// Boot GDT selectors.
pub(super) const CODE_SELECTOR: u16 = 0x08;
pub(super) const DATA_SELECTOR: u16 = 0x10;
pub(super) const TSS_SELECTOR: u16 = 0x18;

const CR0_PE: u64 = 1 << 0;
const CR0_MP: u64 = 1 << 1;
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_WP: u64 = 1 << 16;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const CR4_OSFXSR: u64 = 1 << 9;
const CR4_OSXMMEXCPT: u64 = 1 << 10;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

/// Page-table entry bits: present, writable, user, page size (2 MiB).
const PTE_P: u64 = 1 << 0;
const PTE_RW: u64 = 1 << 1;
const PTE_US: u64 = 1 << 2;
const PTE_PS: u64 = 1 << 7;

/// How many GiB the boot page tables identity-map for `mem_bytes` of RAM: all of RAM
/// and at least 1 GiB.
pub(super) fn mapped_gib(mem_bytes: u64) -> u64 {
    mem_bytes.div_ceil(GIB).max(1)
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
    let gdt: [u64; 5] = [
        0,
        0x00af_9b00_0000_ffff,
        0x00cf_9300_0000_ffff,
        0x0000_8b00_0000_0067,
        0,
    ];
    for (i, entry) in gdt.iter().enumerate() {
        write(mem, "the boot GDT", BOOT_GDT_ADDR + 8 * i as u64, *entry)?;
    }

    // Page tables: one PML4 entry -> PDPT; one PDPT entry per GiB -> a PD of 512
    // 2 MiB pages. Everything is user-accessible so ring-3 guest code can run anywhere.
    let flags = PTE_P | PTE_RW | PTE_US;
    write(mem, "the PML4", PML4_ADDR, PDPT_ADDR | flags)?;
    for gib in 0..mapped_gib(mem_bytes) {
        let pd = PD_ADDR + gib * 0x1000;
        write(mem, "the PDPT", PDPT_ADDR + 8 * gib, pd | flags)?;
        for i in 0..512u64 {
            let phys = gib * GIB + (i << 21);
            write(mem, "a page directory", pd + 8 * i, phys | flags | PTE_PS)?;
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
    sregs.gdt.base = BOOT_GDT_ADDR;
    sregs.gdt.limit = 5 * 8 - 1;
    sregs.idt.base = 0;
    sregs.idt.limit = 0;
    sregs.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG;
    sregs.cr3 = cr3;
    sregs.cr4 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT;
    sregs.efer = EFER_LME | EFER_LMA;
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
        rflags: 0x2,
        ..Default::default()
    }
}
