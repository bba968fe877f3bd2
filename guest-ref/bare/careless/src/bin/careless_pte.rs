//! A sixth deliberately careless guest, for the step windows of `pvabi conform --guest` (the
//! checking host single-steps a vCPU's ring-0 code after DEFER_SET_QUEUE and, while a
//! MEM_UPDATE_PTE waits in the vCPU's deferred queue, walks the page tables for each
//! instruction's accesses): it maps page A at a window address of its own page tables, queues
//! MEM_UPDATE_PTE in its deferred queue to map page B there instead, and reads through the
//! window before any drain point (PVABI-MEM-013; the read's outcome depends on the queued
//! call, PVABI-DEFER-008). It reads page A: the host has not run the update yet. After
//! DEFER_FLUSH and MEM_FLUSH_TLB_LOCAL it reads page B, unmaps the window and shuts down with
//! 0, so no other rule is broken. Runs on vCPU 0 at CPL0.
#![no_std]
#![no_main]

use pvabi_guest::abi::features::Features;
use pvabi_guest::base::NegotiateRequest;
use pvabi_guest::batch::DeferredQueue;
use pvabi_guest::discovery::discover;
use pvabi_guest::{PortTransport, Pvabi};
use pvabi_guest_rt::{halt_forever, BootInfo};

/// One 4 KiB page of 64-bit words.
#[repr(C, align(4096))]
struct Page([u64; 512]);

/// The window's page tables (a PDPT, a PD and a PT: PML4 slot 1 of the boot tables is free),
/// the two pages it maps, and the deferred queue. vCPU 0 alone uses them.
struct Pages {
    pdpt: Page,
    pd: Page,
    pt: Page,
    a: Page,
    b: Page,
    queue: DeferredQueue,
}

static mut PAGES: Pages = Pages {
    pdpt: Page([0; 512]),
    pd: Page([0; 512]),
    pt: Page([0; 512]),
    a: Page([0; 512]),
    b: Page([0; 512]),
    queue: DeferredQueue::new(),
};

/// The window: PML4 slot 1, PDPT 0, PD 0, PTE 0.
const WINDOW: u64 = 0x80_0000_0000;
/// Present, writable.
const FLAGS: u64 = 0b11;
/// What pages A and B hold in their first word.
const IN_A: u64 = 0xaaaa_0000_0000_000a;
const IN_B: u64 = 0xbbbb_0000_0000_000b;

/// The guest-physical address of `p` (the boot tables identity-map RAM).
fn gpa<T>(p: &T) -> u64 {
    p as *const T as u64
}

/// The first word of the page the window maps.
fn read_window() -> u64 {
    // SAFETY: the window maps page A or page B (both plain integers) whenever this is called.
    unsafe { core::ptr::read_volatile(WINDOW as *const u64) }
}

fn main(_boot: &BootInfo) -> ! {
    let Some(found) = discover() else {
        halt_forever()
    };
    let pv = Pvabi::new(PortTransport::new(found.info.doorbell_port));
    let required = Features::CONSOLE | Features::SYSTEM | Features::MEMORY | Features::DEFERRED;
    if pv
        .negotiate(NegotiateRequest::v1(required, Features::empty()))
        .is_err()
    {
        pv.shutdown(1)
    }
    let _ = pv.console_write_slice(b"careless-pte: a read through a queued PTE\n");
    // SAFETY: the only reference to the pages, taken once on the only vCPU that runs.
    let pages = unsafe { &mut *core::ptr::addr_of_mut!(PAGES) };
    pages.a.0[0] = IN_A;
    pages.b.0[0] = IN_B;
    pages.pd.0[0] = gpa(&pages.pt) | FLAGS;
    pages.pdpt.0[0] = gpa(&pages.pd) | FLAGS;
    let cr3: u64;
    // SAFETY: reading CR3 at CPL0 has no side effect.
    unsafe {
        core::arch::asm!("mov {}, cr3", out(reg) cr3, options(nomem, nostack, preserves_flags))
    };
    let slot = (cr3 & 0x000f_ffff_ffff_f000) + 8;
    let pte = gpa(&pages.pt.0[0]);
    // The window, mapped to page A by direct calls.
    // SAFETY: links tables that map only the window (unused VA) to a page of integers.
    let linked = unsafe {
        pv.update_pte(slot, gpa(&pages.pdpt) | FLAGS, 4)
            .and_then(|()| pv.update_pte(pte, gpa(&pages.a) | FLAGS, 1))
    };
    if linked.and_then(|()| pv.flush_tlb_local()).is_err() || read_window() != IN_A {
        pv.shutdown(2)
    }
    // SAFETY: a static page handed to the host for good.
    if unsafe { pv.defer_set_queue(pages.queue.gpa()) }.is_err() {
        pv.shutdown(3)
    }
    // SAFETY: remaps the window to page B, another page of integers, when the host runs it.
    if unsafe { pages.queue.push_update_pte(pte, gpa(&pages.b) | FLAGS, 1) }.is_err() {
        pv.shutdown(4)
    }
    // The mistake: a read through the entry while its update waits in the queue. It reads
    // page A; a guest that wanted page B needed a drain point first.
    let early = read_window();
    let flushed = pv.defer_flush();
    let late = pv.flush_tlb_local().map(|()| read_window());
    // SAFETY: nothing uses the window any more.
    let unlinked = unsafe {
        pv.update_pte(pte, 0, 1)
            .and_then(|()| pv.update_pte(slot, 0, 4))
            .and_then(|()| pv.flush_tlb_local())
    };
    let _ = pv.defer_unset_queue();
    let ok = early == IN_A
        && flushed.is_ok_and(|f| f.processed == 1 && f.failed == 0)
        && late == Ok(IN_B)
        && unlinked.is_ok();
    pv.shutdown(if ok { 0 } else { 5 })
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    halt_forever()
}

pvabi_guest_rt::entry!(main);
