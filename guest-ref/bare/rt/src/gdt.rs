//! The runtime's per-vCPU GDTs and TSSs.
//!
//! Layout (selectors): 0x00 null, 0x08 kernel code (64-bit), 0x10 kernel data,
//! 0x18 user data (DPL 3), 0x20 user code (64-bit, DPL 3), 0x28 user code (32-bit,
//! DPL 3: compatibility mode), then one 16-byte TSS descriptor slot per vCPU from 0x30. Each vCPU loads its own TSS so that interrupts
//! taken at CPL3 switch to that vCPU's kernel stack (`rsp0`, set by `run_at_cpl3`).
//!
//! Each vCPU has its own copy of the table, built by [`load`] each time the vCPU
//! starts, in which only its own TSS slot is filled (the others are null). `ltr` marks
//! a TSS descriptor busy and loading a busy TSS faults; a vCPU that was stopped and is
//! started again gets a fresh, available descriptor this way, and no vCPU ever writes
//! a table another vCPU has loaded.

use core::mem::MaybeUninit;
use core::ptr::addr_of_mut;

use x86_64::instructions::segmentation::{Segment, CS, DS, ES, FS, GS, SS};
use x86_64::instructions::tables::load_tss;
use x86_64::structures::gdt::{
    Descriptor, DescriptorFlags, GlobalDescriptorTable, SegmentSelector,
};
use x86_64::structures::tss::TaskStateSegment;

use crate::{
    Global, KERNEL_CS, KERNEL_DS, MAX_VCPUS, TSS_SELECTOR_BASE, USER32_CS, USER_CS, USER_DS,
};

const GDT_ENTRIES: usize = 6 + 2 * MAX_VCPUS;
/// One bit per port.
const IO_BITMAP_BYTES: usize = 65536 / 8;

/// A 64-bit task-state segment followed by an I/O permission bitmap that allows
/// every port.
///
/// Ring-3 port I/O needs IOPL 3 or the bitmap. The bitmap is what works on PVM hosts:
/// they run ring-3 guest code with the real IOPL at 0 and emulate each trapped
/// `in`/`out`, and the emulator consults the guest's TSS bitmap when CPL > IOPL.
#[repr(C)]
struct Tss {
    header: TaskStateSegment,
    /// One bit per port (0 = allowed), then the architecturally required all-ones byte.
    iomap: [u8; IO_BITMAP_BYTES + 1],
}

// The bitmap starts right after the header, where `TaskStateSegment::new` points
// `iomap_base`.
const _: () =
    assert!(core::mem::offset_of!(Tss, iomap) == core::mem::size_of::<TaskStateSegment>());

impl Tss {
    /// All zeros, so that the TSS array stays in .bss, out of the image
    /// (`TaskStateSegment::new` sets `iomap_base`; [`load`] does that at run time).
    const fn zeroed() -> Self {
        Self {
            // SAFETY: `TaskStateSegment` holds only integers (`VirtAddr` is a `u64`),
            // for which all-zero bits are a valid value.
            header: unsafe { core::mem::zeroed() },
            iomap: [0; IO_BITMAP_BYTES + 1],
        }
    }
}

// Slot `n` of both arrays is only touched by vCPU `n` (in `load`, and its `rsp0` in
// `run_at_cpl3`), apart from the CPU's own accesses (the busy bit at `ltr`, `rsp0` on
// interrupts).
static TSS: Global<[Tss; MAX_VCPUS]> = Global::new([const { Tss::zeroed() }; MAX_VCPUS]);
static GDT: Global<[MaybeUninit<GlobalDescriptorTable<GDT_ENTRIES>>; MAX_VCPUS]> =
    Global::new([const { MaybeUninit::uninit() }; MAX_VCPUS]);

/// The segments at the start of every vCPU's GDT. Evaluated at compile time, which
/// checks that they have the selectors the runtime publishes.
const fn segments() -> GlobalDescriptorTable<GDT_ENTRIES> {
    let mut gdt = GlobalDescriptorTable::empty();
    let kernel_cs = gdt.append(Descriptor::kernel_code_segment());
    let kernel_ds = gdt.append(Descriptor::kernel_data_segment());
    let user_ds = gdt.append(Descriptor::user_data_segment());
    let user_cs = gdt.append(Descriptor::user_code_segment());
    // Flat, 32-bit (D = 1, L = 0), DPL 3.
    let user32_cs = gdt.append(Descriptor::UserSegment(DescriptorFlags::USER_CODE32.bits()));
    assert!(kernel_cs.0 == KERNEL_CS && kernel_ds.0 == KERNEL_DS);
    assert!(user_ds.0 == USER_DS && user_cs.0 == USER_CS && user32_cs.0 == USER32_CS);
    gdt
}

/// Pointer to `rsp0` in vCPU `vcpu`'s TSS.
pub(crate) fn rsp0_slot(vcpu: usize) -> *mut u64 {
    assert!(vcpu < MAX_VCPUS);
    // SAFETY: in bounds (asserted); only the address is taken, no reference is made
    // to the packed field.
    unsafe { addr_of_mut!((*TSS.get())[vcpu].header.privilege_stack_table[0]).cast::<u64>() }
}

/// Sets up vCPU `vcpu`'s TSS and GDT, loads the GDT, reloads the segment registers
/// and loads the TSS. Called by each vCPU for itself, each time it starts.
pub(crate) fn load(vcpu: usize) {
    assert!(vcpu < MAX_VCPUS);
    // SAFETY: in bounds (asserted above); slot `vcpu` belongs to this vCPU alone (see the
    // static), and a previous run of this vCPU is over, so nothing uses the TSS while it
    // is rewritten (the CPU only reads it once `ltr` below has loaded it). From here on
    // it is only written through raw pointers (`rsp0_slot`) and read by the CPU.
    let tss: &'static Tss = unsafe {
        let tss = addr_of_mut!((*TSS.get())[vcpu]);
        (*tss).header = TaskStateSegment::new();
        (*tss).iomap[IO_BITMAP_BYTES] = 0xff;
        &*tss
    };
    let Ok(descriptor) = Descriptor::tss_segment_with_iomap(&tss.header, &tss.iomap) else {
        panic!("the TSS's I/O bitmap was rejected");
    };
    let mut table = const { segments() };
    let mut tss_selector = SegmentSelector(0);
    for i in 0..MAX_VCPUS {
        if i == vcpu {
            tss_selector = table.append(descriptor);
        } else {
            table.append(Descriptor::SystemSegment(0, 0));
        }
    }
    debug_assert_eq!(tss_selector.0, TSS_SELECTOR_BASE + 16 * vcpu as u16);
    // SAFETY: as for the TSS: slot `vcpu` is this vCPU's and its previous run is over (the
    // CPU reads the table only when the code below loads selectors from it). From here on
    // only the CPU writes the table (the TSS descriptor's busy bit; entries are atomics).
    let gdt: &'static GlobalDescriptorTable<GDT_ENTRIES> =
        unsafe { (*addr_of_mut!((*GDT.get())[vcpu])).write(table) };
    gdt.load();
    // SAFETY: the GDT just loaded lives forever; CS becomes its kernel code segment,
    // which matches the running code; the data selectors are its kernel data segment
    // (FS and GS null); the TSS descriptor is this vCPU's own and available (just built).
    unsafe {
        CS::set_reg(SegmentSelector(KERNEL_CS));
        DS::set_reg(SegmentSelector(KERNEL_DS));
        ES::set_reg(SegmentSelector(KERNEL_DS));
        SS::set_reg(SegmentSelector(KERNEL_DS));
        FS::set_reg(SegmentSelector(0));
        GS::set_reg(SegmentSelector(0));
        load_tss(tss_selector);
    }
}
