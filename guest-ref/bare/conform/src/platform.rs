//! Conformance test `platform`: what a guest of the reference platform can observe of it. Guest
//! RAM (its size, its two ends), the boot structures and the zeroed rest of the low megabyte
//! (scanned at CPL3, where the loop runs natively) and samples of RAM above the image, the
//! entry state the runtime leaves alone (control registers, MSRs, the boot registers it hands
//! on), and the CPUID values of the platform (APIC ID, no local APIC). Runs on vCPU 0.
#![no_std]
#![no_main]

mod call;
mod channel;

use core::arch::asm;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use pvabi_guest::abi::discovery::CPUID_LEAF_LIMITS;
use pvabi_guest::abi::features::Features;
use pvabi_guest::abi::platform::{
    BOOT_APIC_BASE, BOOT_CR0, BOOT_CR4, BOOT_EFER, BOOT_GDT, BOOT_GDT_ADDR, BOOT_PTE_FLAGS,
    BOOT_PTE_PS, IMAGE_MIN_ADDR, MIN_MAPPED_BYTES, MIN_MEM_BYTES, PDPT_ADDR, PD_ADDR, PML4_ADDR,
};
use pvabi_guest::discovery::discover;
use pvabi_guest::{Call, PortTransport, Status};
use pvabi_guest_rt::cpu::{cpuid, rdmsr};
use pvabi_guest_rt::{
    disable_interrupts, enable_interrupts, halt_forever, run_at_cpl3, set_interrupt_handler,
    BootInfo, TrapFrame,
};

use call::raw;
use channel::check;

const TEST: &str = "platform";
const PAGE: u64 = 4096;
/// The accessed (5) and dirty (6) bits of a page-table entry.
const ACCESSED_DIRTY: u64 = 0x60;
/// Sparse samples of RAM above the image: one word every this many bytes.
const SAMPLE_STRIDE: u64 = 64 << 10;

extern "C" {
    /// The end of the image (the linker script's), page aligned.
    static __pvabi_image_end: u8;
}

/// The GiBs the boot page tables map (every one that holds RAM, at least the first).
static GIBS: AtomicU64 = AtomicU64::new(1);
static SCAN_FROM: AtomicU64 = AtomicU64::new(0);
static SCAN_TO: AtomicU64 = AtomicU64::new(0);
static SCAN_STRIDE: AtomicU64 = AtomicU64::new(8);

/// The 8-byte word at `addr`, which may be 0 (a plain pointer read of address 0 would be
/// undefined behaviour in Rust; the hardware reads it like any other).
fn peek(addr: u64) -> u64 {
    let v: u64;
    // SAFETY: `addr` is guest RAM, identity mapped and user-accessible; a read has no effect.
    unsafe {
        asm!("mov {v}, [{a}]", a = in(reg) addr, v = out(reg) v, options(nostack, readonly, preserves_flags))
    };
    v
}

/// What the platform leaves in the word at `addr` (8-aligned) of the low megabyte: the boot
/// GDT, the boot page tables, and 0 everywhere else.
fn expected_low(addr: u64) -> u64 {
    let gibs = GIBS.load(Ordering::Relaxed);
    let entry = |table: u64| (addr - table) / 8;
    if (BOOT_GDT_ADDR..BOOT_GDT_ADDR + 40).contains(&addr) {
        BOOT_GDT[entry(BOOT_GDT_ADDR) as usize]
    } else if (PML4_ADDR..PML4_ADDR + PAGE).contains(&addr) {
        if addr == PML4_ADDR {
            PDPT_ADDR | BOOT_PTE_FLAGS
        } else {
            0
        }
    } else if (PDPT_ADDR..PDPT_ADDR + PAGE).contains(&addr) {
        let n = entry(PDPT_ADDR);
        if n < gibs {
            (PD_ADDR + n * PAGE) | BOOT_PTE_FLAGS
        } else {
            0
        }
    } else if (PD_ADDR..PD_ADDR + gibs * PAGE).contains(&addr) {
        let i = entry(PD_ADDR);
        (i << 21) | BOOT_PTE_FLAGS | BOOT_PTE_PS
    } else {
        0
    }
}

/// At CPL3: the first word from SCAN_FROM to SCAN_TO (every SCAN_STRIDE bytes) that differs
/// from what the platform leaves there, as its address + 1; 0 if none.
fn scan(_: u64) -> u64 {
    let (from, to) = (
        SCAN_FROM.load(Ordering::Relaxed),
        SCAN_TO.load(Ordering::Relaxed),
    );
    let stride = SCAN_STRIDE.load(Ordering::Relaxed);
    let mut addr = from;
    while addr < to {
        let want = if addr < IMAGE_MIN_ADDR {
            expected_low(addr)
        } else {
            0
        };
        // The processor sets the accessed and dirty bits of the page-table entries it uses.
        let mask = if (PML4_ADDR..PD_ADDR + GIBS.load(Ordering::Relaxed) * PAGE).contains(&addr) {
            !ACCESSED_DIRTY
        } else {
            !0
        };
        if peek(addr) & mask != want {
            return addr + 1;
        }
        addr += stride;
    }
    0
}

fn scan_at_cpl3(from: u64, to: u64, stride: u64) -> u64 {
    SCAN_FROM.store(from, Ordering::Relaxed);
    SCAN_TO.store(to, Ordering::Relaxed);
    SCAN_STRIDE.store(stride, Ordering::Relaxed);
    run_at_cpl3(scan, 0)
}

/// The two vectors of the interrupt checks: the first queue's, and a higher one for the
/// queue that replaces it.
const VECTOR_A: u8 = 0x40;
const VECTOR_B: u8 = 0x50;

#[repr(C, align(4096))]
struct QueuePages(UnsafeCell<[[u8; 4096]; 2]>);

// SAFETY: one vCPU; the host writes the pages as event queues, the guest only the header's
// `interrupt_pending` (its field) through volatile stores.
unsafe impl Sync for QueuePages {}

static QUEUES: QueuePages = QueuePages(UnsafeCell::new([[0; 4096]; 2]));

fn queue(i: usize) -> u64 {
    QUEUES.0.get() as u64 + i as u64 * PAGE
}

/// The vectors delivered, in order.
static DELIVERED: [AtomicU64; 8] = [const { AtomicU64::new(0) }; 8];
static DELIVERIES: AtomicUsize = AtomicUsize::new(0);

fn on_interrupt(frame: &mut TrapFrame) {
    let n = DELIVERIES.fetch_add(1, Ordering::SeqCst);
    if let Some(slot) = DELIVERED.get(n) {
        slot.store(frame.vector, Ordering::SeqCst);
    }
}

fn set_cr8(v: u64) {
    // SAFETY: CR8 (the task priority) has no effect on the reference platform, which has no
    // interrupt controller; writing it at CPL0 changes nothing else.
    unsafe { asm!("mov cr8, {}", in(reg) v, options(nomem, nostack, preserves_flags)) };
}

/// The interrupt checks (PLAT-011 to PLAT-013): with IF clear, an event raises vector A;
/// the guest re-arms the queue and a second event raises A again while undelivered; a new
/// queue with vector B gets a third. Nothing may arrive while IF is clear; once IF is set
/// (with CR8 at its highest), B then A, A once, although the queue now has vector B.
fn interrupts(t: &PortTransport, time: bool) {
    let call = |c: Call, args: &[u64]| raw(t, c, args).status;
    let ok = set_interrupt_handler(VECTOR_A, on_interrupt).is_ok()
        && set_interrupt_handler(VECTOR_B, on_interrupt).is_ok();
    let s = [
        call(Call::EventsSetQueue, &[queue(0), u64::from(VECTOR_A)]),
        call(Call::EventsSend, &[0, 1]),
    ];
    // SAFETY: `interrupt_pending` (offset 12) of the first queue's header is the guest's
    // to clear once it has looked at the queue.
    unsafe { ((queue(0) + 12) as *mut u32).write_volatile(0) };
    core::sync::atomic::fence(Ordering::SeqCst);
    let s2 = [
        call(Call::EventsSend, &[0, 2]),
        call(Call::EventsSetQueue, &[queue(1), u64::from(VECTOR_B)]),
        call(Call::EventsSend, &[0, 3]),
    ];
    let setup_ok = ok && s.iter().chain(&s2).all(|s| *s == Status::Success as u64);
    // Calls with IF clear: every exit is a chance to deliver, and none may.
    for _ in 0..4 {
        call(Call::GetSpecVersion, &[]);
    }
    let early = DELIVERIES.load(Ordering::SeqCst);
    set_cr8(15);
    enable_interrupts();
    let mut looks = 0;
    while DELIVERIES.load(Ordering::SeqCst) < 2 && looks < 1000 {
        call(Call::GetSpecVersion, &[]);
        looks += 1;
    }
    // A few more exits for a duplicate to show.
    for _ in 0..8 {
        call(Call::GetSpecVersion, &[]);
    }
    let n = DELIVERIES.load(Ordering::SeqCst);
    // `hlt` with IF set: the vCPU sleeps until an interrupt comes (a TIMER event 5 ms on),
    // then resumes after the `hlt`. `sti; hlt` leaves no window for the interrupt to come
    // first (the instruction after `sti` runs before any interrupt).
    let woken = if time {
        disable_interrupts();
        // SAFETY: as above; the handler does not clear it, so clear it for the next interrupt.
        unsafe { ((queue(1) + 12) as *mut u32).write_volatile(0) };
        core::sync::atomic::fence(Ordering::SeqCst);
        let before = DELIVERIES.load(Ordering::SeqCst);
        let now = raw(t, Call::TimeMonotonic, &[]).results[0];
        let armed = call(Call::TimeSetTimer, &[now + 5_000_000]);
        if armed == Status::Success as u64 {
            while DELIVERIES.load(Ordering::SeqCst) == before {
                // SAFETY: waits for the interrupt the armed timer raises; its handler is set.
                unsafe { core::arch::asm!("sti", "hlt", "cli", options(nomem, nostack)) };
            }
        }
        Some(armed == Status::Success as u64 && DELIVERIES.load(Ordering::SeqCst) > before)
    } else {
        None
    };
    disable_interrupts();
    set_cr8(0);
    let _ = call(Call::EventsSetQueue, &[0, 0]);
    let got = [
        DELIVERED[0].load(Ordering::SeqCst),
        DELIVERED[1].load(Ordering::SeqCst),
    ];
    let pack = |a: u64, b: u64| a << 8 | b;
    check(
        "platform.interrupts_only_with_if_set_whatever_cr8",
        &["PVABI-PLAT-011", "PVABI-EVT-008"],
        setup_ok && early == 0 && n >= 1,
        early as u64 | (n as u64) << 8,
        2 << 8,
    );
    check(
        "platform.several_vectors_highest_first_and_each_once",
        &["PVABI-PLAT-012"],
        setup_ok && n == 2 && got == [u64::from(VECTOR_B), u64::from(VECTOR_A)],
        pack(got[0], got[1]) | (n as u64) << 16,
        pack(u64::from(VECTOR_B), u64::from(VECTOR_A)) | 2 << 16,
    );
    match woken {
        Some(woken) => check(
            "platform.hlt_with_if_set_resumes_on_an_interrupt",
            &["PVABI-PLAT-014"],
            woken,
            u64::from(woken),
            1,
        ),
        None => channel::skip(
            "platform.hlt_with_if_set_resumes_on_an_interrupt",
            &["PVABI-PLAT-014"],
            "TIME not granted: no timer to raise the interrupt",
        ),
    }
    check(
        "platform.interrupt_keeps_its_vector_after_the_queue_changes",
        &["PVABI-PLAT-013"],
        setup_ok && got.contains(&u64::from(VECTOR_A)),
        pack(got[0], got[1]),
        pack(u64::from(VECTOR_B), u64::from(VECTOR_A)),
    );
}

fn cr(n: u8) -> u64 {
    let v: u64;
    // SAFETY: reading a control register at CPL0 has no effect.
    unsafe {
        match n {
            0 => asm!("mov {}, cr0", out(reg) v, options(nomem, nostack, preserves_flags)),
            2 => asm!("mov {}, cr2", out(reg) v, options(nomem, nostack, preserves_flags)),
            3 => asm!("mov {}, cr3", out(reg) v, options(nomem, nostack, preserves_flags)),
            4 => asm!("mov {}, cr4", out(reg) v, options(nomem, nostack, preserves_flags)),
            _ => asm!("mov {}, cr8", out(reg) v, options(nomem, nostack, preserves_flags)),
        }
    }
    v
}

fn main(boot: &BootInfo) -> ! {
    channel::begin(TEST);
    // The entry state, before anything else can change it: what the runtime's start code
    // leaves alone (it loads its own GDT, TSS and IDT and switches stacks, nothing else).
    let crs = [cr(0), cr(2), cr(3), cr(4), cr(8)];
    let want_crs = [BOOT_CR0, 0, PML4_ADDR, BOOT_CR4, 0];
    // EFER, IA32_APIC_BASE, FS.base, GS.base, KERNEL_GS_BASE, STAR, LSTAR, CSTAR, SFMASK.
    const MSRS: [u32; 9] = [
        0xc000_0080,
        0x1b,
        0xc000_0100,
        0xc000_0101,
        0xc000_0102,
        0xc000_0081,
        0xc000_0082,
        0xc000_0083,
        0xc000_0084,
    ];
    let want_msrs = [BOOT_EFER, BOOT_APIC_BASE, 0, 0, 0, 0, 0, 0, 0];
    let mut msrs = [0u64; 9];
    for (v, msr) in msrs.iter_mut().zip(MSRS) {
        // SAFETY: each of these MSRs exists on every x86-64 processor; reading has no effect.
        *v = unsafe { rdmsr(msr) };
    }
    let Some(found) = discover() else {
        halt_forever()
    };
    channel::set_doorbell(found.info.doorbell_port);
    let t = PortTransport::new(found.info.doorbell_port);
    let required = (Features::CONSOLE | Features::SYSTEM | Features::MEMORY).bits();
    let n = raw(
        &t,
        Call::Negotiate,
        &[
            0x0001_0000,
            required,
            (Features::EVENTS | Features::TIME).bits(),
        ],
    );
    if n.status != Status::Success as u64 {
        halt_forever()
    }
    channel::go_live();

    let bad_cr = (0..crs.len()).find(|i| crs[*i] != want_crs[*i]);
    check(
        "platform.entry_control_registers",
        &["PVABI-PLAT-006"],
        bad_cr.is_none(),
        bad_cr.map_or(0, |i| crs[i]),
        bad_cr.map_or(0, |i| want_crs[i]),
    );
    let bad_msr = (0..msrs.len()).find(|i| msrs[*i] != want_msrs[*i]);
    check(
        "platform.entry_msrs",
        &["PVABI-PLAT-006"],
        bad_msr.is_none(),
        bad_msr.map_or(0, |i| msrs[i]),
        bad_msr.map_or(0, |i| want_msrs[i]),
    );
    // rdi, rsi and rdx at entry, as the runtime handed them on.
    let limits = cpuid(found.base + CPUID_LEAF_LIMITS, 0);
    check(
        "platform.entry_registers_name_the_vcpu_and_the_vcpu_count",
        &["PVABI-PLAT-006"],
        boot.vcpu == 0 && boot.vcpu_count == limits[3] && boot.vcpu_count >= 1,
        u64::from(boot.vcpu) << 32 | u64::from(boot.vcpu_count),
        u64::from(limits[3]),
    );

    // Guest RAM: from 0 to rsi, a multiple of 4096, at least MIN_MEM_BYTES; its last byte
    // and its first pages are RAM to the host, the byte after it is not.
    let ram = boot.mem_bytes;
    check(
        "platform.ram_size_is_whole_pages_and_at_least_the_minimum",
        &["PVABI-PLAT-001"],
        ram.is_multiple_of(PAGE) && ram >= MIN_MEM_BYTES,
        ram,
        MIN_MEM_BYTES,
    );
    // SAFETY: the last byte of guest RAM, identity mapped, above the image: nothing uses it.
    unsafe { ((ram - 1) as *mut u8).write_volatile(b'\n') };
    let last = raw(&t, Call::ConsoleWrite, &[ram - 1, 1]).status;
    let past = raw(&t, Call::ConsoleWrite, &[ram, 1]).status;
    // A PFN list at 0x1000 (zeros: PFN 0, not released): the host reads it as RAM.
    let low = raw(&t, Call::MemBalloonReclaim, &[PAGE, 1]).status;
    check(
        "platform.guest_ram_is_the_one_range_from_0_to_its_size",
        &["PVABI-PLAT-001", "PVABI-CONV-033"],
        last == Status::Success as u64
            && past == Status::InvalidAddress as u64
            && low == Status::InvalidState as u64,
        last | past << 8 | low << 16,
        (Status::InvalidAddress as u64) << 8 | (Status::InvalidState as u64) << 16,
    );
    // SAFETY: as above (restores the zero the platform left).
    unsafe { ((ram - 1) as *mut u8).write_volatile(0) };

    // The boot structures, and zeros in the rest of the low megabyte; zeros above the image
    // (sampled), where nothing has written.
    GIBS.store(
        ram.max(MIN_MAPPED_BYTES).div_ceil(MIN_MAPPED_BYTES),
        Ordering::Relaxed,
    );
    let first = scan_at_cpl3(0, IMAGE_MIN_ADDR, 8);
    check(
        "platform.boot_gdt_and_page_tables_and_zeros_below_the_image",
        &["PVABI-PLAT-002"],
        first == 0,
        first.saturating_sub(1),
        0,
    );
    // Only the symbol's address is taken.
    let image_end = core::ptr::addr_of!(__pvabi_image_end) as u64;
    let sampled = scan_at_cpl3(image_end, ram - PAGE, SAMPLE_STRIDE);
    let top = scan_at_cpl3(ram - PAGE, ram, 8);
    check(
        "platform.ram_above_the_image_is_zero",
        &["PVABI-PLAT-002"],
        sampled == 0 && top == 0,
        sampled.max(top).saturating_sub(1),
        0,
    );

    // CPUID: the vCPU index as the initial APIC ID, and no local APIC.
    let leaf1 = cpuid(1, 0);
    let max_leaf = cpuid(0, 0)[0];
    let mut apic_ids = leaf1[1] >> 24;
    for leaf in [0xb, 0x1f] {
        if max_leaf >= leaf {
            apic_ids |= cpuid(leaf, 0)[3];
        }
    }
    check(
        "platform.initial_apic_id_is_the_vcpu_index",
        &["PVABI-PLAT-009"],
        apic_ids == boot.vcpu,
        u64::from(apic_ids),
        u64::from(boot.vcpu),
    );
    let apic = (leaf1[3] >> 9 & 1) | (leaf1[2] >> 21 & 1) << 1;
    check(
        "platform.no_local_apic",
        &["PVABI-PLAT-010"],
        apic == 0,
        u64::from(apic),
        0,
    );
    // VCPU-021 binds a host that also starts vCPUs by INIT-SIPI-SIPI, which needs a local APIC.
    const INIT_SIPI: &str = "platform.vcpus_started_by_init_sipi_count_as_running";
    if apic == 0 {
        channel::not_applicable(
            INIT_SIPI,
            &["PVABI-VCPU-021"],
            "leaf 1 reports no local APIC (so no INIT-SIPI-SIPI starts): APIC and x2APIC bits",
            u64::from(apic),
        );
    } else {
        channel::skip(
            INIT_SIPI,
            &["PVABI-VCPU-021"],
            "the host reports a local APIC, and the suite has no INIT-SIPI-SIPI test",
        );
    }
    if n.results[1] & Features::EVENTS.bits() != 0 {
        interrupts(&t, n.results[1] & Features::TIME.bits() != 0);
    } else {
        for (name, id) in [
            (
                "platform.interrupts_only_with_if_set_whatever_cr8",
                "PVABI-PLAT-011",
            ),
            (
                "platform.several_vectors_highest_first_and_each_once",
                "PVABI-PLAT-012",
            ),
            (
                "platform.interrupt_keeps_its_vector_after_the_queue_changes",
                "PVABI-PLAT-013",
            ),
        ] {
            channel::skip(
                name,
                &[id],
                "EVENTS is not offered: the host raises no interrupt",
            );
        }
    }
    // At the end, after every call of the test: guest RAM is still the range it was, its
    // last byte RAM to the host and the byte after it not (no page added or removed).
    // SAFETY: as above (the byte is restored at once).
    unsafe { ((ram - 1) as *mut u8).write_volatile(b'\n') };
    let last_again = raw(&t, Call::ConsoleWrite, &[ram - 1, 1]).status;
    let past_again = raw(&t, Call::ConsoleWrite, &[ram, 1]).status;
    // SAFETY: as above.
    let kept = unsafe { ((ram - 1) as *const u8).read_volatile() } == b'\n';
    // SAFETY: as above.
    unsafe { ((ram - 1) as *mut u8).write_volatile(0) };
    check(
        "platform.guest_ram_does_not_change_while_the_vm_runs",
        &["PVABI-CONV-034"],
        last_again == Status::Success as u64 && past_again == Status::InvalidAddress as u64 && kept,
        last_again | past_again << 8 | u64::from(kept) << 16,
        (Status::InvalidAddress as u64) << 8 | 1 << 16,
    );
    channel::end(TEST)
}

pvabi_guest_rt::entry!(main);

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    halt_forever()
}
