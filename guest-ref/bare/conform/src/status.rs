//! Conformance test `status`: the precedence order of the checks, with calls that are wrong in
//! several ways at once (for each, exactly one status is correct: that of the first check to
//! fail, and among the call-specific conditions the lowest), NEGOTIATE's own order, and what
//! a failed call leaves: no effect, no write to its block, only statuses the version defines.
//! Runs on vCPU 0 at CPL0; the pages it names are its own statics, the end of guest RAM and
//! addresses beyond it.
#![no_std]
#![no_main]

mod call;
mod channel;

use core::cell::UnsafeCell;

use pvabi_guest::abi::features::Features;
use pvabi_guest::discovery::discover;
use pvabi_guest::transport::RawResult;
use pvabi_guest::{Call, PortTransport, Status};
use pvabi_guest_rt::{halt_forever, BootInfo};

use call::raw;
use channel::check;

const TEST: &str = "status";
const PAGE: u64 = 4096;
/// A required feature bit no version defines.
const UNKNOWN_FEATURE: u64 = 1 << 61;
/// A major version no host serves.
const UNSERVED_MAJOR: u64 = 0x0063_0000;
const SENTINEL: u64 = 0x5a5a_5a5a_5a5a_5a5a;

#[repr(C, align(4096))]
struct Pages([[u8; 4096]; 4]);

/// Page 0: the time page (host-owned once registered); 1: a word MEM_UPDATE_PTE must not
/// write; 2: PFN lists; 3: a page that is shared, and that failed releases must not release.
struct Scratch(UnsafeCell<Pages>);

// SAFETY: one vCPU; the host writes these pages only through the calls made here.
unsafe impl Sync for Scratch {}

static SCRATCH: Scratch = Scratch(UnsafeCell::new(Pages([[0; 4096]; 4])));

fn page(i: usize) -> u64 {
    SCRATCH.0.get() as u64 + i as u64 * PAGE
}

fn read_u64(gpa: u64) -> u64 {
    // SAFETY: `gpa` is inside SCRATCH (identity mapped); volatile: the host may write it.
    unsafe { (gpa as *const u64).read_volatile() }
}

fn write_u64(gpa: u64, value: u64) {
    // SAFETY: as in `read_u64`, for a page this guest owns (never the time page).
    unsafe { (gpa as *mut u64).write_volatile(value) }
}

/// Every status the test saw: the highest, and whether INCOMPLETE was among them.
struct Seen {
    highest: u64,
    incomplete: bool,
}

/// Makes `call` and checks that its status is `want`.
fn expect(
    t: &PortTransport,
    seen: &mut Seen,
    name: &str,
    reqs: &[&str],
    call: Call,
    args: &[u64],
    want: Status,
) -> RawResult {
    let r = raw(t, call, args);
    seen.highest = seen.highest.max(r.status);
    seen.incomplete |= r.status == Status::Incomplete as u64;
    check(name, reqs, r.status == want as u64, r.status, want as u64);
    r
}

fn main(boot: &BootInfo) -> ! {
    channel::begin(TEST);
    let Some(found) = discover() else {
        halt_forever()
    };
    channel::set_doorbell(found.info.doorbell_port);
    let t = PortTransport::new(found.info.doorbell_port);
    let mut seen = Seen {
        highest: 0,
        incomplete: false,
    };
    let s = &mut seen;
    let ram_end = boot.mem_bytes;
    let highest = u64::from(found.info.highest_version);

    // Before NEGOTIATE: step 2 comes before the argument checks.
    expect(
        &t,
        s,
        "status.not_negotiated_before_invalid_parameter",
        &["PVABI-STAT-001", "PVABI-VER-010"],
        Call::MemUpdatePte,
        &[page(1) + 1, 0, 9],
        Status::NotNegotiated,
    );
    // NEGOTIATE's own order: step 5 (reserved bits), then the lowest of its step-11
    // conditions.
    let required =
        (Features::CONSOLE | Features::SYSTEM | Features::MEMORY | Features::TIME).bits();
    expect(
        &t,
        s,
        "status.negotiate_reserved_bits_before_an_unserved_major",
        &["PVABI-STAT-001", "PVABI-GEN-003", "PVABI-GEN-005"],
        Call::Negotiate,
        &[(1 << 40) | UNSERVED_MAJOR, UNKNOWN_FEATURE],
        Status::InvalidParameter,
    );
    expect(
        &t,
        s,
        "status.negotiate_flags_are_reserved",
        &["PVABI-GEN-003", "PVABI-BASE-019"],
        Call::Negotiate,
        &[0x0001_0000, required, 0, 1],
        Status::InvalidParameter,
    );
    expect(
        &t,
        s,
        "status.negotiate_unserved_major_before_an_unknown_required_feature",
        &["PVABI-STAT-002", "PVABI-BASE-020", "PVABI-COMPAT-004"],
        Call::Negotiate,
        &[UNSERVED_MAJOR, UNKNOWN_FEATURE],
        Status::VersionUnsupported,
    );
    expect(
        &t,
        s,
        "status.negotiate_minor_above_the_highest_before_an_unknown_required_feature",
        &["PVABI-STAT-002", "PVABI-BASE-020", "PVABI-BASE-010"],
        Call::Negotiate,
        &[highest + 1, UNKNOWN_FEATURE],
        Status::VersionUnsupported,
    );
    // A failed NEGOTIATE locked nothing: this one succeeds.
    let n = raw(&t, Call::Negotiate, &[0x0001_0000, required]);
    if n.status != Status::Success as u64 {
        halt_forever()
    }
    channel::go_live();
    check(
        "status.failed_negotiates_have_no_effect",
        &["PVABI-STAT-005"],
        n.results[1] == required,
        n.results[1],
        required,
    );
    expect(
        &t,
        s,
        "status.negotiate_unserved_major_before_locked",
        &["PVABI-STAT-002", "PVABI-BASE-020", "PVABI-COMPAT-004"],
        Call::Negotiate,
        &[UNSERVED_MAJOR, required],
        Status::VersionUnsupported,
    );
    expect(
        &t,
        s,
        "status.negotiate_unknown_required_feature_before_locked",
        &["PVABI-STAT-002", "PVABI-BASE-020"],
        Call::Negotiate,
        &[0x0001_0000, required | UNKNOWN_FEATURE],
        Status::FeatureUnavailable,
    );

    // Step 3 before steps 5 and 6: EVENTS was not granted.
    expect(
        &t,
        s,
        "status.not_granted_before_invalid_parameter",
        &["PVABI-STAT-001", "PVABI-VER-011"],
        Call::EventsSend,
        &[u64::from(u32::MAX), 0],
        Status::NotGranted,
    );
    expect(
        &t,
        s,
        "status.not_granted_before_misaligned",
        &["PVABI-STAT-001", "PVABI-VER-011"],
        Call::EventsSetQueue,
        &[page(0) + 8, 0],
        Status::NotGranted,
    );
    // Step 5 before 6; 6 before 7 and 8; 7 before 8.
    write_u64(page(1), SENTINEL);
    expect(
        &t,
        s,
        "status.invalid_parameter_before_misaligned",
        &["PVABI-STAT-001", "PVABI-GEN-005"],
        Call::MemUpdatePte,
        &[page(1) + 4, 0x1234_5007, 0],
        Status::InvalidParameter,
    );
    expect(
        &t,
        s,
        "status.misaligned_before_crosses_page_and_invalid_address",
        &["PVABI-STAT-001", "PVABI-CONV-014"],
        Call::MemBalloonRelease,
        &[ram_end - 4, 2],
        Status::Misaligned,
    );
    expect(
        &t,
        s,
        "status.crosses_page_before_invalid_address",
        &["PVABI-STAT-001", "PVABI-CONV-015"],
        Call::ConsoleWrite,
        &[ram_end - 8, 16],
        Status::CrossesPage,
    );
    // A last byte at or above 2^64 crosses the page (it does not wrap to a low address);
    // a block of size 0 passes steps 7 to 9 wherever it is.
    expect(
        &t,
        s,
        "status.block_whose_end_wraps_crosses_the_page",
        &["PVABI-CONV-035"],
        Call::ConsoleWrite,
        &[u64::MAX - 7, 16],
        Status::CrossesPage,
    );
    expect(
        &t,
        s,
        "status.array_whose_end_wraps_crosses_the_page",
        &["PVABI-CONV-035"],
        Call::MemBalloonRelease,
        &[u64::MAX - 7, 2],
        Status::CrossesPage,
    );
    expect(
        &t,
        s,
        "status.empty_block_beyond_guest_ram_is_fine",
        &["PVABI-CONV-018"],
        Call::ConsoleWrite,
        &[u64::MAX - 3, 0],
        Status::Success,
    );
    expect(
        &t,
        s,
        "status.block_beyond_guest_ram_is_invalid_address",
        &["PVABI-CONV-016", "PVABI-CONV-033"],
        Call::ConsoleWrite,
        &[ram_end, 1],
        Status::InvalidAddress,
    );
    // Registration: address 0 with nothing registered succeeds; a misaligned page is
    // refused at step 6; the header is the host's when the call returns, reserved fields 0
    // (the guest filled the page with ones before).
    expect(
        &t,
        s,
        "status.unregistering_with_nothing_registered_succeeds",
        &["PVABI-CONV-026"],
        Call::TimeSetPage,
        &[0],
        Status::Success,
    );
    expect(
        &t,
        s,
        "status.misaligned_shared_page_is_misaligned",
        &["PVABI-CONV-022"],
        Call::TimeSetPage,
        &[page(0) + 8],
        Status::Misaligned,
    );
    for off in (0..PAGE).step_by(8) {
        write_u64(page(0) + off, u64::MAX);
    }
    let r = raw(&t, Call::TimeSetPage, &[page(0)]);
    check(
        "status.time_page_registers",
        &[],
        r.status == Status::Success as u64,
        r.status,
        0,
    );
    // TimePage: sequence (u32) and flags at 0, monotonic_ns at 8, reserved0 (u32) at 44,
    // reserved at 48 and 56.
    let head = read_u64(page(0));
    let mono = read_u64(page(0) + 8);
    check(
        "status.shared_page_header_is_initialised_when_the_call_returns",
        &["PVABI-CONV-024"],
        // (The sequence may be odd: a refresh can already be under way.)
        head as u32 != u32::MAX && head >> 32 != u64::from(u32::MAX) && mono != u64::MAX,
        head,
        0,
    );
    let reserved = (read_u64(page(0) + 40) >> 32) | read_u64(page(0) + 48) | read_u64(page(0) + 56);
    check(
        "status.host_writes_0_to_reserved_fields",
        &["PVABI-GEN-004"],
        reserved == 0,
        reserved,
        0,
    );
    expect(
        &t,
        s,
        "status.empty_block_on_a_host_owned_page_is_fine",
        &["PVABI-CONV-018"],
        Call::ConsoleWrite,
        &[page(0), 0],
        Status::Success,
    );
    expect(
        &t,
        s,
        "status.access_denied_before_the_contents_of_a_block",
        &["PVABI-STAT-001", "PVABI-CONV-017"],
        Call::MemBalloonRelease,
        &[page(0), 4],
        Status::AccessDenied,
    );
    // Step 10 before 11: a PFN twice, and not released.
    let q = page(3) / PAGE;
    write_u64(page(2), q);
    write_u64(page(2) + 8, q);
    expect(
        &t,
        s,
        "status.reclaim_duplicate_pfn_before_not_released",
        &["PVABI-STAT-001", "PVABI-MEM-008"],
        Call::MemBalloonReclaim,
        &[page(2), 2],
        Status::InvalidParameter,
    );
    expect(
        &t,
        s,
        "status.reclaim_of_a_page_not_released_is_invalid_state",
        &["PVABI-MEM-008"],
        Call::MemBalloonReclaim,
        &[page(2), 1],
        Status::InvalidState,
    );
    // A release refused for its duplicate released nothing (the reclaim finds q not
    // released).
    expect(
        &t,
        s,
        "status.release_with_a_duplicate_pfn_is_invalid_parameter",
        &["PVABI-MEM-004"],
        Call::MemBalloonRelease,
        &[page(2), 2],
        Status::InvalidParameter,
    );
    expect(
        &t,
        s,
        "status.a_refused_release_released_nothing",
        &["PVABI-STAT-005", "PVABI-MEM-004"],
        Call::MemBalloonReclaim,
        &[page(2), 1],
        Status::InvalidState,
    );
    // Two call-specific conditions: a PFN beyond guest RAM (INVALID_ADDRESS) and a shared
    // page (INVALID_STATE): the lower value wins.
    let r = raw(&t, Call::MemShare, &[page(3), 1]);
    check(
        "status.share_succeeds",
        &[],
        r.status == Status::Success as u64,
        r.status,
        0,
    );
    expect(
        &t,
        s,
        "status.release_of_a_shared_page_is_invalid_state",
        &["PVABI-MEM-020"],
        Call::MemBalloonRelease,
        &[page(2), 1],
        Status::InvalidState,
    );
    write_u64(page(2), ram_end / PAGE + 16);
    write_u64(page(2) + 8, q);
    expect(
        &t,
        s,
        "status.lowest_call_specific_status_wins",
        &["PVABI-STAT-002", "PVABI-MEM-004", "PVABI-MEM-020"],
        Call::MemBalloonRelease,
        &[page(2), 2],
        Status::InvalidAddress,
    );
    let _ = raw(&t, Call::MemUnshare, &[page(3), 1]);
    // A failed MEM_UPDATE_PTE (refused at step 5, and at step 9 on the host's page) wrote
    // nothing.
    expect(
        &t,
        s,
        "status.update_pte_level_out_of_range",
        &["PVABI-GEN-005"],
        Call::MemUpdatePte,
        &[page(1), 0x1234_5007, 5],
        Status::InvalidParameter,
    );
    let word = read_u64(page(1));
    check(
        "status.failed_calls_write_nothing_to_their_block",
        &["PVABI-STAT-012", "PVABI-STAT-005", "PVABI-CONV-020"],
        word == SENTINEL,
        word,
        SENTINEL,
    );
    // Little-endian in guest memory: the host's store of a PTE value, byte by byte.
    let value = 0x0807_0605_0403_0201u64;
    let r = raw(&t, Call::MemUpdatePte, &[page(1), value, 1]);
    // SAFETY: page 1 of SCRATCH; the host has returned.
    let bytes = unsafe { core::ptr::read_volatile(page(1) as *const [u8; 8]) };
    check(
        "status.host_stores_little_endian",
        &["PVABI-GEN-001"],
        r.status == Status::Success as u64 && bytes == [1, 2, 3, 4, 5, 6, 7, 8],
        u64::from_be_bytes(bytes),
        value,
    );
    let _ = raw(&t, Call::TimeSetPage, &[0]);

    // Across every call above.
    let last = Status::Incomplete as u64;
    check(
        "status.every_status_is_one_the_version_defines",
        &["PVABI-STAT-007"],
        seen.highest <= last,
        seen.highest,
        last,
    );
    check(
        "status.no_incomplete_from_calls_that_do_not_define_it",
        &["PVABI-STAT-009"],
        !seen.incomplete,
        u64::from(seen.incomplete),
        0,
    );
    let alive = raw(&t, Call::GetSpecVersion, &[]);
    check(
        "status.the_host_serves_calls_after_malformed_ones",
        &["PVABI-GEN-007"],
        alive.status == Status::Success as u64 && alive.results[0] == highest,
        alive.status,
        0,
    );
    channel::end(TEST)
}

pvabi_guest_rt::entry!(main);

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    halt_forever()
}
