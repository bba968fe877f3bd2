//! Memory family: sharing, the balloon, page-table entry updates on page tables the guest
//! builds itself, and TLB flushes.
//!
//! The page-table demo maps a window at [`VA_WINDOW`] (PML4 slot 1, unused by the boot
//! tables, which identity-map RAM through slot 0): the guest builds a PDPT, a PD and a PT
//! in its own memory, links the PDPT into the live PML4 with MEM_UPDATE_PTE, points PTEs
//! at pages with known contents, flushes, and reads through the window. The batch section
//! reuses the window for the deferred queue and then unlinks it.

use pvabi_guest::Status;
use pvabi_guest_rt::BootInfo;

use crate::out::{expect_status, must, pv, section, Line};
use crate::{Global, Page};

/// Virtual address of the window (PML4 slot 1).
pub const VA_WINDOW: u64 = 0x80_0000_0000;
const PML4_SLOT: u64 = 1;
const PRESENT: u64 = 1 << 0;
const WRITABLE: u64 = 1 << 1;
const USER: u64 = 1 << 2;
/// Flags of the guest's table and page entries.
pub const FLAGS: u64 = PRESENT | WRITABLE | USER;
/// Target pages the window's PTEs point at.
pub const TARGETS: usize = 4;

/// The guest's own page tables for the window. Written by vCPU 0 before they are linked;
/// after that only through MEM_UPDATE_PTE.
#[repr(C, align(4096))]
struct Tables {
    pdpt: Page,
    pd: Page,
    pt: Page,
}

static TABLES: Global<Tables> = Global::new(Tables {
    pdpt: Page::new(),
    pd: Page::new(),
    pt: Page::new(),
});
// Page `i` holds `magic(i)` in its first word (written by vCPU 0 only).
static TARGET_PAGES: Global<[Page; TARGETS]> = Global::new([const { Page::new() }; TARGETS]);
// Shared with the host (it may write them): the guest never touches their contents.
static SHARED: Global<[Page; 4]> = Global::new([const { Page::new() }; 4]);
// Given to the host and taken back; accessed by vCPU 0 only, and not while released.
static BALLOON: Global<[Page; 4]> = Global::new([const { Page::new() }; 4]);

/// The PFN list of the balloon calls (8-aligned, never crossing a page).
#[repr(C, align(64))]
struct PfnList([u64; 4]);
static PFNS: Global<PfnList> = Global::new(PfnList([0; 4]));

/// The value in the first word of target page `i`.
pub const fn magic(i: usize) -> u64 {
    0x5041_4745_0000_0000 | i as u64 // "PAGE" and the index
}

/// Guest-physical address of target page `i`.
pub fn target_gpa(i: usize) -> u64 {
    // SAFETY: only the address is taken.
    unsafe { core::ptr::addr_of!((*TARGET_PAGES.get())[i]) as u64 }
}

/// Guest-physical address of the window's PTE `i`.
pub fn pte_gpa(i: usize) -> u64 {
    // SAFETY: only the address is taken.
    unsafe { core::ptr::addr_of!((*TABLES.get()).pt.0[i]) as u64 }
}

/// The accessed and dirty bits, which the CPU sets in entries it walks.
const ACCESSED_DIRTY: u64 = (1 << 5) | (1 << 6);

/// Reads the window's PTE `i` (written by the host), without the accessed and dirty bits.
pub fn pte(i: usize) -> u64 {
    // SAFETY: an aligned word of a static page table; read volatile, as the host writes it.
    unsafe { core::ptr::read_volatile(pte_gpa(i) as *const u64) & !ACCESSED_DIRTY }
}

/// Guest-physical address of the live PML4's slot for the window.
pub fn pml4_slot_gpa() -> u64 {
    let cr3: u64;
    // SAFETY: reading CR3 at CPL0 has no side effect.
    unsafe {
        core::arch::asm!("mov {}, cr3", out(reg) cr3, options(nomem, nostack, preserves_flags))
    };
    (cr3 & 0x000f_ffff_ffff_f000) + 8 * PML4_SLOT
}

/// Reads the first word of the page mapped at window page `i`.
pub fn read_window(i: usize) -> u64 {
    // SAFETY: the window page is mapped (the caller linked it and flushed) to one of the
    // target pages, which hold plain integers.
    unsafe { core::ptr::read_volatile((VA_WINDOW + 4096 * i as u64) as *const u64) }
}

fn page_gpa<T>(p: *const T) -> u64 {
    p as u64
}

pub fn run(boot: &BootInfo) {
    section("memory");
    let pv = pv();
    share(boot);
    balloon();

    // Page tables the guest builds itself, linked into the live hierarchy.
    let slot = pml4_slot_gpa();
    // SAFETY: the PML4 slot is an aligned word of the live PML4 (identity-mapped).
    let old = unsafe { core::ptr::read_volatile(slot as *const u64) };
    Line::check("memory", old == 0)
        .s("PML4 slot 1 (VA ")
        .hex(VA_WINDOW)
        .s(") is free in the boot page tables")
        .end();
    let t = TABLES.get();
    // SAFETY: vCPU 0 fills its own tables and target pages before anything maps them.
    unsafe {
        (*t).pd.0[0] = page_gpa(&(*t).pt) | FLAGS;
        (*t).pdpt.0[0] = page_gpa(&(*t).pd) | FLAGS;
        let targets = TARGET_PAGES.get();
        for i in 0..TARGETS {
            core::ptr::write_volatile(&mut (*targets)[i].0[0], magic(i));
        }
    }
    // SAFETY: links tables that map only the window (unused VA) to pages that hold
    // integers; nothing else changes.
    unsafe {
        must(
            "memory",
            "MEM_UPDATE_PTE",
            pv.update_pte(slot, page_gpa(&(*t).pdpt) | FLAGS, 4),
        );
        must(
            "memory",
            "MEM_UPDATE_PTE",
            pv.update_pte(pte_gpa(0), target_gpa(0) | FLAGS, 1),
        );
    }
    must("memory", "MEM_FLUSH_TLB_LOCAL", pv.flush_tlb_local());
    let v = read_window(0);
    Line::check("memory", v == magic(0) && pte(0) == target_gpa(0) | FLAGS)
        .s("MEM_UPDATE_PTE linked the guest's PDPT/PD/PT at PML4 slot 1 and PTE 0 -> page ")
        .hex(target_gpa(0))
        .s("; after MEM_FLUSH_TLB_LOCAL the window reads ")
        .hex(v)
        .end();
    // SAFETY: remaps the window page to another integer page.
    must("memory", "MEM_UPDATE_PTE", unsafe {
        pv.update_pte(pte_gpa(0), target_gpa(1) | FLAGS, 1)
    });
    must(
        "memory",
        "MEM_FLUSH_TLB_RANGE",
        pv.flush_tlb_range(VA_WINDOW, 1),
    );
    let v = read_window(0);
    Line::check("memory", v == magic(1))
        .s("PTE 0 -> page ")
        .hex(target_gpa(1))
        .s(", MEM_FLUSH_TLB_RANGE(window, 1 page): the window reads ")
        .hex(v)
        .end();
    // SAFETY: as above.
    must("memory", "MEM_UPDATE_PTE", unsafe {
        pv.update_pte(pte_gpa(0), target_gpa(0) | FLAGS, 1)
    });
    must("memory", "MEM_FLUSH_TLB_ALL", pv.flush_tlb_all());
    let v = read_window(0);
    Line::check("memory", v == magic(0))
        .s("PTE 0 -> page ")
        .hex(target_gpa(0))
        .s(" again, MEM_FLUSH_TLB_ALL: the window reads ")
        .hex(v)
        .end();

    expect_status(
        "memory",
        "MEM_UPDATE_PTE of an entry that is not 8-aligned",
        // SAFETY: the host refuses the address before it writes anything.
        unsafe { pv.update_pte(pte_gpa(3) + 4, 0, 1) },
        Status::Misaligned,
    );
    expect_status(
        "memory",
        "MEM_UPDATE_PTE at level 5",
        // SAFETY: the host refuses the level before it writes anything.
        unsafe { pv.update_pte(pte_gpa(3), 0, 5) },
        Status::InvalidParameter,
    );
    expect_status(
        "memory",
        "MEM_FLUSH_TLB_RANGE of 0 pages",
        pv.flush_tlb_range(VA_WINDOW, 0),
        Status::InvalidParameter,
    );
}

/// MEM_SHARE and MEM_UNSHARE: 4 pages shared, the last 2 unshared again.
fn share(boot: &BootInfo) {
    let pv = pv();
    let gpa = SHARED.get() as u64;
    // SAFETY: the pages are statics the guest never reads or writes.
    must("memory", "MEM_SHARE", unsafe { pv.mem_share(gpa, 4) });
    // SAFETY: as above.
    must("memory", "MEM_UNSHARE", unsafe {
        pv.mem_unshare(gpa + 2 * 4096, 2)
    });
    Line::check("memory", true)
        .s("MEM_SHARE of 4 pages at ")
        .hex(gpa)
        .s(", MEM_UNSHARE of the last 2: 2 pages stay shared")
        .end();
    expect_status(
        "memory",
        "MEM_SHARE of the event queue page (host-owned)",
        // SAFETY: the host refuses; nothing changes.
        unsafe { pv.mem_share(crate::irq::queue_gpa(0), 1) },
        Status::AccessDenied,
    );
    expect_status(
        "memory",
        "MEM_SHARE of a page beyond guest RAM",
        // SAFETY: the host refuses; nothing changes.
        unsafe { pv.mem_share(boot.mem_bytes, 1) },
        Status::InvalidAddress,
    );
}

/// MEM_BALLOON_RELEASE and MEM_BALLOON_RECLAIM of 4 pages; they come back zeroed.
fn balloon() {
    let pv = pv();
    let pages = BALLOON.get();
    let list = PFNS.get();
    // SAFETY: vCPU 0 owns these statics; the pages are written before release and read
    // after reclaim only.
    let list_gpa = unsafe {
        for i in 0..4 {
            core::ptr::write_volatile(&mut (*pages)[i].0[0], magic(i));
            (*list).0[i] = (core::ptr::addr_of!((*pages)[i]) as u64) / 4096;
        }
        core::ptr::addr_of!((*list).0) as u64
    };
    // SAFETY: nothing uses the pages until they are reclaimed.
    let released = must("memory", "MEM_BALLOON_RELEASE", unsafe {
        pv.balloon_release(list_gpa, 4)
    });
    Line::check("memory", released == 4)
        .s("MEM_BALLOON_RELEASE of 4 pages (PFNs from ")
        .hex(pages as u64 / 4096)
        .s(") -> ")
        .dec(released)
        .s(" released")
        .end();
    // SAFETY: the pages were released and are not in use.
    let reclaimed = must("memory", "MEM_BALLOON_RECLAIM", unsafe {
        pv.balloon_reclaim(list_gpa, 4)
    });
    // SAFETY: reclaimed: the pages are guest RAM again.
    let zeroed = unsafe {
        (0..4).all(|i| {
            core::ptr::read_volatile(&(*pages)[i].0[0]) == 0
                && core::ptr::read_volatile(&(*pages)[i].0[511]) == 0
        })
    };
    Line::check("memory", reclaimed == 4 && zeroed)
        .s("MEM_BALLOON_RECLAIM -> ")
        .dec(reclaimed)
        .s(" reclaimed, and they came back zeroed")
        .end();
    expect_status(
        "memory",
        "MEM_BALLOON_RECLAIM of pages that are not released",
        // SAFETY: the host refuses; nothing changes.
        unsafe { pv.balloon_reclaim(list_gpa, 4) },
        Status::InvalidState,
    );
    // SAFETY: vCPU 0 owns the list.
    unsafe { (*list).0[3] = crate::irq::queue_gpa(0) / 4096 };
    expect_status(
        "memory",
        "MEM_BALLOON_RELEASE of a list with the event queue page (all or nothing)",
        // SAFETY: the host refuses the whole list; nothing changes.
        unsafe { pv.balloon_release(list_gpa, 4) },
        Status::AccessDenied,
    );
}
