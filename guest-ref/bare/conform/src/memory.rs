//! Conformance test `memory`: sharing, the balloon and MEM_UPDATE_PTE, checked with raw calls
//! against the rules they cite, reported over the verdict channel ([`channel`]). Runs on
//! vCPU 0 at CPL0 with a handful of calls; the pages it names are its own statics.
#![no_std]
#![no_main]

mod call;
mod channel;

use core::cell::UnsafeCell;

use pvabi_guest::abi::features::Features;
use pvabi_guest::discovery::discover;
use pvabi_guest::{Call, PortTransport, Status};
use pvabi_guest_rt::{halt_forever, BootInfo};

use call::raw;
use channel::{check, observe};

const TEST: &str = "memory";
const SUCCESS: u64 = Status::Success as u64;
const PAGE: u64 = 4096;

#[repr(C, align(4096))]
struct Pages([[u8; 4096]; 3]);

/// Page 0: shared and unshared; page 1: released and reclaimed; page 2: a "page table" whose
/// first word MEM_UPDATE_PTE writes and whose second holds the balloon's PFN list.
struct Scratch(UnsafeCell<Pages>);

// SAFETY: one vCPU; the host writes these pages only through the calls made here.
unsafe impl Sync for Scratch {}

static SCRATCH: Scratch = Scratch(UnsafeCell::new(Pages([[0; 4096]; 3])));

fn page(i: usize) -> u64 {
    SCRATCH.0.get() as u64 + i as u64 * PAGE
}

fn read_u64(gpa: u64) -> u64 {
    // SAFETY: `gpa` is inside SCRATCH (identity mapped); a volatile read of memory the host
    // may have written.
    unsafe { (gpa as *const u64).read_volatile() }
}

fn write_u64(gpa: u64, value: u64) {
    // SAFETY: as in `read_u64`, for a page this guest owns and has not released.
    unsafe { (gpa as *mut u64).write_volatile(value) }
}

fn main(boot: &BootInfo) -> ! {
    channel::begin(TEST);
    let Some(found) = discover() else {
        halt_forever()
    };
    channel::set_doorbell(found.info.doorbell_port);
    let t = PortTransport::new(found.info.doorbell_port);
    let required = (Features::CONSOLE | Features::SYSTEM | Features::MEMORY).bits();
    if raw(&t, Call::Negotiate, &[0x0001_0000, required]).status != SUCCESS {
        halt_forever()
    }
    channel::go_live();
    let status = |call: Call, args: &[u64]| raw(&t, call, args).status;

    // Sharing.
    let s = status(Call::MemShare, &[page(0), 1]);
    check(
        "memory.share_succeeds",
        &["PVABI-MEM-001"],
        s == SUCCESS,
        s,
        SUCCESS,
    );
    let s = status(Call::MemShare, &[page(0), 1]);
    check(
        "memory.sharing_a_shared_page_changes_nothing",
        &["PVABI-MEM-002"],
        s == SUCCESS,
        s,
        SUCCESS,
    );
    let s = status(Call::MemUnshare, &[page(0), 1]);
    let s2 = status(Call::MemUnshare, &[page(0), 1]);
    check(
        "memory.unsharing_a_page_that_is_not_shared_changes_nothing",
        &["PVABI-MEM-002"],
        s == SUCCESS && s2 == SUCCESS,
        s2,
        SUCCESS,
    );
    // Unshared, the page is the guest's alone: the host does not write it, whatever calls
    // follow (a host that went on writing a page it had shared would show here).
    for w in 0..PAGE / 8 {
        write_u64(page(0) + 8 * w, 0x5a5a_5a5a_5a5a_5a5a);
    }
    for _ in 0..4 {
        status(Call::MemFlushTlbAll, &[]);
        status(Call::GetSpecVersion, &[]);
    }
    let kept = (0..PAGE / 8).all(|w| read_u64(page(0) + 8 * w) == 0x5a5a_5a5a_5a5a_5a5a);
    check(
        "memory.an_unshared_page_is_not_written_by_the_host",
        &["PVABI-MEM-003"],
        kept,
        u64::from(kept),
        1,
    );
    let ram_end = boot.mem_bytes;
    let s = status(Call::MemShare, &[ram_end, 1]);
    let want = Status::InvalidAddress as u64;
    check(
        "memory.share_outside_ram_is_invalid_address",
        &["PVABI-MEM-001"],
        s == want,
        s,
        want,
    );
    let s = status(Call::MemShare, &[!(PAGE - 1), 2]);
    check(
        "memory.share_past_the_top_of_the_address_space_is_invalid_address",
        &["PVABI-MEM-017"],
        s == want,
        s,
        want,
    );

    // MEM_UPDATE_PTE writes exactly the value given.
    let entry = page(2);
    let value = 0x8000_0000_dead_b007;
    let s = status(Call::MemUpdatePte, &[entry, value, 1]);
    let got = read_u64(entry);
    check(
        "memory.update_pte_writes_exactly_the_value",
        &["PVABI-MEM-021"],
        s == SUCCESS && got == value,
        got,
        value,
    );

    // The balloon: release page 1, not twice, not while shared; reclaim it zeroed.
    let list = page(2) + 8;
    write_u64(page(1), 0x1234_5678);
    write_u64(list, page(1) / PAGE);
    let r = raw(&t, Call::MemBalloonRelease, &[list, 1]);
    check(
        "memory.balloon_release_returns_the_count",
        &["PVABI-MEM-005"],
        r.status == SUCCESS && r.results[0] == 1,
        r.results[0],
        1,
    );
    let s = status(Call::MemBalloonRelease, &[list, 1]);
    let want = Status::InvalidState as u64;
    check(
        "memory.releasing_a_released_page_is_invalid_state",
        &["PVABI-MEM-004"],
        s == want,
        s,
        want,
    );
    let s = status(Call::MemShare, &[page(1), 1]);
    check(
        "memory.sharing_a_released_page_is_invalid_state",
        &["PVABI-MEM-018"],
        s == want,
        s,
        want,
    );
    let r = raw(&t, Call::MemBalloonReclaim, &[list, 1]);
    observe(
        "memory.balloon_reclaim_status",
        &["PVABI-MEM-010"],
        "MEM_BALLOON_RECLAIM of one page answered status (0 SUCCESS; 15 NO_RESOURCES, allowed when the host cannot back it now):",
        r.status,
    );
    let after = read_u64(page(1));
    check(
        "memory.a_reclaimed_page_is_zeroed",
        &["PVABI-MEM-009"],
        r.status == SUCCESS && r.results[0] == 1 && after == 0,
        after,
        0,
    );

    // Flushes.
    let local = status(Call::MemFlushTlbLocal, &[]);
    let all = status(Call::MemFlushTlbAll, &[]);
    check(
        "memory.flushes_succeed",
        &["PVABI-MEM-014"],
        local == SUCCESS && all == SUCCESS,
        local | all,
        SUCCESS,
    );
    // A range whose end passes 2^64 is flushed up to the top of the address space.
    let top = status(Call::MemFlushTlbRange, &[!(PAGE - 1), 2]);
    let wide = status(Call::MemFlushTlbRange, &[!(PAGE - 1) - 3 * PAGE, 512]);
    check(
        "memory.flush_range_past_the_top_of_the_address_space_succeeds",
        &["PVABI-MEM-023"],
        top == SUCCESS && wide == SUCCESS,
        top << 32 | wide,
        SUCCESS,
    );

    // Last, as it may end the VM: a read of a released page reveals nothing that was not the
    // guest's. The host may fault (announced: the VM's end by a guest fault passes), or the
    // page may read as zeros or as what the guest wrote there before it released it.
    const MINE: u64 = 0x6d69_6e65_6d69_6e65;
    for i in 0..PAGE / 8 {
        write_u64(page(1) + 8 * i, MINE);
    }
    write_u64(list, page(1) / PAGE);
    let released = raw(&t, Call::MemBalloonRelease, &[list, 1]).status;
    let name = "memory.a_released_page_reveals_no_data_of_others";
    if released == SUCCESS {
        channel::expect_fault(
            name,
            &["PVABI-MEM-007"],
            "a read of every word of the released page",
            page(1),
        );
        let foreign = (0..PAGE / 8)
            .map(|i| read_u64(page(1) + 8 * i))
            .find(|&w| w != 0 && w != MINE);
        check(
            name,
            &["PVABI-MEM-007"],
            foreign.is_none(),
            foreign.unwrap_or(0),
            0,
        );
        let _ = raw(&t, Call::MemBalloonReclaim, &[list, 1]);
    } else {
        check(name, &["PVABI-MEM-007"], false, released, SUCCESS);
    }
    channel::end(TEST)
}

pvabi_guest_rt::entry!(main);

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    halt_forever()
}
