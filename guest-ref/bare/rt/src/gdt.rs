//! The runtime's GDT and per-vCPU TSSs.
//!
//! Layout (selectors): 0x00 null, 0x08 kernel code (64-bit), 0x10 kernel data,
//! 0x18 user data (DPL 3), 0x20 user code (64-bit, DPL 3), then one 16-byte TSS
//! descriptor per vCPU from 0x28. Each vCPU loads its own TSS so that interrupts
//! taken at CPL3 switch to that vCPU's kernel stack (`rsp0`, set by `run_at_cpl3`).

use core::arch::asm;
use core::ptr::addr_of_mut;

use crate::{Global, KERNEL_CS, KERNEL_DS, MAX_VCPUS, TSS_SELECTOR_BASE};

const GDT_ENTRIES: usize = 5 + 2 * MAX_VCPUS;
/// The busy bit of a TSS descriptor (type 0xB busy, 0x9 available).
const TSS_BUSY: u64 = 0x2 << 40;

/// A 64-bit task-state segment followed by an I/O permission bitmap that allows
/// every port.
///
/// Ring-3 port I/O needs IOPL 3 or the bitmap. The bitmap is what works on PVM hosts:
/// they run ring-3 guest code with the real IOPL at 0 and emulate each trapped
/// `in`/`out`, and the emulator consults the guest's TSS bitmap when CPL > IOPL.
#[repr(C, packed(4))]
pub(crate) struct Tss {
    _reserved0: u32,
    /// Stack pointers loaded on a privilege change to ring 0, 1, 2.
    pub(crate) rsp: [u64; 3],
    _reserved1: u64,
    ist: [u64; 7],
    _reserved2: u64,
    _reserved3: u16,
    iomap_base: u16,
    /// One bit per port, 0 = allowed.
    io_bitmap: [u8; 8192],
    /// The architecturally required all-ones byte after the bitmap.
    io_bitmap_end: u8,
}

const TSS_HEADER_SIZE: usize = 104;
/// The TSS limit (offset of its last byte): up to and including the end byte.
const TSS_LIMIT: usize = TSS_HEADER_SIZE + 8192;
const _: () = assert!(core::mem::offset_of!(Tss, io_bitmap) == TSS_HEADER_SIZE);
const _: () = assert!(core::mem::offset_of!(Tss, io_bitmap_end) == TSS_LIMIT);

impl Tss {
    const fn new() -> Self {
        Self {
            _reserved0: 0,
            rsp: [0; 3],
            _reserved1: 0,
            ist: [0; 7],
            _reserved2: 0,
            _reserved3: 0,
            // Set by `init`: an all-zero TSS array stays in .bss, out of the image.
            iomap_base: 0,
            io_bitmap: [0; 8192],
            io_bitmap_end: 0,
        }
    }
}

// Written by the boot vCPU in `init` before any other vCPU exists; after that only the
// busy bit of vCPU `n`'s TSS descriptor changes, by vCPU `n` itself (`load`) and the CPU.
static GDT: Global<[u64; GDT_ENTRIES]> = Global::new([0; GDT_ENTRIES]);
// Slot `n` is only touched by vCPU `n` (its `rsp0`), apart from the CPU's own
// accesses to the descriptor's busy bit at `ltr`.
static TSS: Global<[Tss; MAX_VCPUS]> = Global::new([const { Tss::new() }; MAX_VCPUS]);

/// Pointer to `rsp0` in vCPU `vcpu`'s TSS.
pub(crate) fn rsp0_slot(vcpu: usize) -> *mut u64 {
    assert!(vcpu < MAX_VCPUS);
    // SAFETY: in bounds (asserted); only the address is taken, no reference is made
    // to the packed field.
    unsafe { addr_of_mut!((*TSS.get())[vcpu].rsp[0]) }
}

/// Fills the GDT. Called once, by the boot vCPU, before other vCPUs start.
pub(crate) fn init() {
    let gdt = GDT.get();
    let tss = TSS.get();
    // SAFETY: single-threaded at this point (see the statics' comments); indices are
    // in bounds by construction.
    unsafe {
        (*gdt)[0] = 0;
        (*gdt)[1] = 0x00af_9b00_0000_ffff; // kernel code: P, DPL0, exec/read, L, G
        (*gdt)[2] = 0x00cf_9300_0000_ffff; // kernel data: P, DPL0, read/write, D/B, G
        (*gdt)[3] = 0x00cf_f300_0000_ffff; // user data: P, DPL3, read/write
        (*gdt)[4] = 0x00af_fb00_0000_ffff; // user code: P, DPL3, exec/read, L
        for i in 0..MAX_VCPUS {
            addr_of_mut!((*tss)[i].iomap_base).write_unaligned(TSS_HEADER_SIZE as u16);
            addr_of_mut!((*tss)[i].io_bitmap_end).write(0xff);
            let base = addr_of_mut!((*tss)[i]) as u64;
            let limit = TSS_LIMIT as u64;
            let low = (limit & 0xffff)
                | ((base & 0xff_ffff) << 16)
                | (0x89 << 40) // P, DPL0, type 9 = available 64-bit TSS
                | (((limit >> 16) & 0xf) << 48)
                | (((base >> 24) & 0xff) << 56);
            (*gdt)[5 + 2 * i] = low;
            (*gdt)[6 + 2 * i] = base >> 32;
        }
    }
}

#[repr(C, packed)]
struct DescriptorPointer {
    limit: u16,
    base: u64,
}

/// Loads the GDT, reloads the segment registers and loads vCPU `vcpu`'s TSS.
pub(crate) fn load(vcpu: usize) {
    assert!(vcpu < MAX_VCPUS);
    let ptr = DescriptorPointer {
        limit: (GDT_ENTRIES * 8 - 1) as u16,
        base: GDT.get() as u64,
    };
    let tss_selector = TSS_SELECTOR_BASE + 16 * vcpu as u16;
    // `ltr` marks the descriptor busy, and loading a busy TSS faults (#GP, before the IDT
    // is loaded: a triple fault). A vCPU that was stopped and is started again finds its
    // descriptor still busy from its previous run: make it available again. No other
    // vCPU uses this descriptor, and this vCPU's previous run is over.
    // SAFETY: in bounds (asserted above); only vCPU `vcpu` touches its own descriptor.
    unsafe {
        let descriptor = addr_of_mut!((*GDT.get())[5 + 2 * vcpu]);
        descriptor.write_volatile(descriptor.read_volatile() & !TSS_BUSY);
    }
    // SAFETY: the GDT was filled by `init` and lives forever; the far return reloads
    // CS with the kernel code segment, which matches the running code; the data
    // selectors are valid kernel data segments; the TSS descriptor is this vCPU's own
    // and not busy (cleared above).
    unsafe {
        asm!("lgdt [{}]", in(reg) &ptr, options(readonly, nostack, preserves_flags));
        asm!(
            "push {sel}",
            "lea {tmp}, [rip + 2f]",
            "push {tmp}",
            "retfq",
            "2:",
            sel = in(reg) u64::from(KERNEL_CS),
            tmp = lateout(reg) _,
            options(preserves_flags),
        );
        asm!(
            "mov ds, {0:x}",
            "mov es, {0:x}",
            "mov ss, {0:x}",
            "mov fs, {1:x}",
            "mov gs, {1:x}",
            in(reg) KERNEL_DS,
            in(reg) 0u16,
            options(nostack, preserves_flags),
        );
        asm!("ltr {0:x}", in(reg) tss_selector, options(nostack, preserves_flags));
    }
}
