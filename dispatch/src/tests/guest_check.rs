//! The guest checker (`HostConfig::check_guest`): each guest rule it checks, broken and kept.

use pvabi_abi::batch::MulticallEntry;
use pvabi_abi::calls::Call;
use pvabi_abi::features::Features;
use pvabi_abi::status::Status;
use pvabi_abi::time::TimePage;

use super::{config, wait_for, BUF, BUF2, H, PAGE1, PAGE2, PAGE3};
use crate::guest_check::{
    GuestCheckReport, ADVISORY, BASE_016, BATCH_009, BATCH_019, CONV_001, CONV_012, CONV_030,
    DEFER_002, DEFER_013, DISC_006, EVT_011, EVT_025, GEN_002, MEM_006, MEM_019, MEM_022, PLAT_008,
    TIME_014, TORN_MARK, TORN_MASK,
};
use crate::{CallRegs, Caller, Doorbell, ExitState, HostConfig};

fn checking(vcpus: u32) -> HostConfig {
    HostConfig {
        check_guest: true,
        ..config(vcpus)
    }
}

fn report(h: &H) -> GuestCheckReport {
    h.d.guest_check().expect("checking mode")
}

/// The MUST rules broken (the SHOULD and MAY ones, warnings, are tested on their own).
fn broken(h: &H) -> Vec<&'static str> {
    report(h)
        .violations
        .iter()
        .map(|v| v.rule)
        .filter(|r| !ADVISORY.contains(r))
        .collect()
}

fn entries(n: usize) -> Vec<MulticallEntry> {
    (0..n)
        .map(|_| MulticallEntry {
            call: Call::VcpuInfo.code(),
            ..Default::default()
        })
        .collect()
}

#[test]
fn a_careful_guest_breaks_nothing_and_the_checker_is_off_by_default() {
    assert!(H::ready(1).d.guest_check().is_none());
    let h = H::with(checking(1));
    h.negotiate(Features::CONSOLE | Features::TIME | Features::MULTICALL);
    assert_eq!(h.status(0, Call::TimeMonotonic, &[]), Status::Success);
    assert_eq!(h.status(0, Call::GetSpecVersion, &[]), Status::Success);
    let r = report(&h);
    assert!(broken(&h).is_empty(), "{r:?}");
    assert!(
        r.exercised[CONV_012] >= 3 && r.exercised[BASE_016] >= 1,
        "{r:?}"
    );
}

#[test]
fn feature_calls_before_negotiate_and_ungranted_calls_are_caught() {
    let h = H::with(checking(1));
    assert_eq!(h.status(0, Call::TimeMonotonic, &[]), Status::NotNegotiated);
    h.negotiate(Features::CONSOLE);
    assert_eq!(h.status(0, Call::VcpuInfo, &[]), Status::NotGranted);
    let r = report(&h);
    assert_eq!(broken(&h), [DISC_006, BASE_016], "{r:?}");
    assert_eq!(r.violations[1].call, Some("VCPU_INFO"));
    assert!(r.violations[1].what.contains("did not grant"), "{r:?}");
}

#[test]
fn reserved_bits_codes_and_modes_are_caught() {
    let h = H::with(checking(1));
    h.negotiate(Features::CONSOLE | Features::MULTICALL);
    // MULTICALL's flags: only STOP_ON_ERROR is defined.
    let _ = h.call(0, Call::Multicall, &[BUF, 1, 0, 1 << 7]);
    let code = (1u64 << 40) | u64::from(Call::GetSpecVersion.code());
    let _ = h.raw(0, code, &[]);
    let mut regs = CallRegs::new(Call::GetSpecVersion, &[]);
    let user = Doorbell {
        caller: Caller {
            vcpu: 0,
            cpl: 3,
            long_mode: true,
        },
        width: 4,
        string_element: false,
    };
    let _ = h.d.call(user, &mut regs);
    assert_eq!(broken(&h), [GEN_002, CONV_001, CONV_012]);
}

#[test]
fn a_preempted_batch_must_be_resumed_where_it_stopped() {
    let h = H::with(HostConfig {
        max_multicall: 1,
        ..checking(1)
    });
    h.negotiate(Features::CONSOLE | Features::VCPU | Features::MULTICALL);
    h.write(BUF, entries(3).as_slice());
    // Resumed by the rules: nothing to report.
    let (s, r) = h.call(0, Call::Multicall, &[BUF, 3, 0, 0]);
    assert_eq!((s, r[0]), (Status::Incomplete, 1));
    assert_eq!(
        h.call(0, Call::Multicall, &[BUF, 3, 1, 0]).0,
        Status::Incomplete
    );
    assert_eq!(
        h.call(0, Call::Multicall, &[BUF, 3, 2, 0]).0,
        Status::Success
    );
    assert!(broken(&h).is_empty());
    // Restarted from 0 instead of resumed at 1 (entry 0 runs twice).
    let _ = h.call(0, Call::Multicall, &[BUF, 3, 0, 0]);
    let _ = h.call(0, Call::Multicall, &[BUF, 3, 0, 0]);
    // ... and, so far, not resumed: INCOMPLETE taken for done.
    let r = report(&h);
    assert_eq!(broken(&h), [BATCH_009, BATCH_009], "{r:?}");
    assert!(r.violations[0].what.contains("start 0"), "{r:?}");
    assert!(r.violations[1].what.contains("never resumed"), "{r:?}");
    // Resumed after all: only the restart remains.
    assert_eq!(
        h.call(0, Call::Multicall, &[BUF, 3, 1, 0]).0,
        Status::Incomplete
    );
    assert_eq!(
        h.call(0, Call::Multicall, &[BUF, 3, 2, 0]).0,
        Status::Success
    );
    assert_eq!(broken(&h), [BATCH_009]);
    assert_eq!(report(&h).counts[BATCH_009], 1);
}

#[test]
fn a_preempted_page_batch_must_be_resumed_where_it_stopped() {
    // The default host serves 1.3, which has MULTICALL_PAGES.
    let h = H::with(HostConfig {
        vcpus: 1,
        console: crate::ConsoleSink::Discard,
        check_guest: true,
        max_multicall_pages: 1,
        ..HostConfig::default()
    });
    h.negotiate(Features::CONSOLE | Features::VCPU | Features::MULTICALL_PAGES);
    h.write(PAGE1, entries(3).as_slice());
    h.write(BUF, &[PAGE1]);
    // list, pages, count, start, flags
    let (s, r) = h.call(0, Call::MulticallPages, &[BUF, 1, 3, 0, 0]);
    assert_eq!((s, r[0]), (Status::Incomplete, 1));
    // Resumed with another count: not the same batch's rest.
    let _ = h.call(0, Call::MulticallPages, &[BUF, 1, 2, 1, 0]);
    let r = report(&h);
    assert_eq!(broken(&h)[0], BATCH_019, "{r:?}");
    assert!(r.violations[0].what.contains("count 0x3"), "{r:?}");
}

#[test]
fn the_time_page_is_left_mid_update_and_a_torn_read_is_caught() {
    let h = H::with(checking(1));
    h.negotiate(Features::CONSOLE | Features::TIME);
    assert_eq!(h.status(0, Call::TimeSetPage, &[PAGE1]), Status::Success);
    // The page is seen mid-update, marked, and then whole again with the mark gone.
    let mut marked = 0;
    wait_for("the page mid-update with the mark", || {
        let p: TimePage = h.read(PAGE1);
        if !p.sequence.is_multiple_of(2) && p.monotonic_ns & TORN_MASK == TORN_MARK {
            marked = p.monotonic_ns;
        }
        marked != 0
    });
    wait_for("the update completed", || {
        let p: TimePage = h.read(PAGE1);
        p.sequence.is_multiple_of(2) && p.monotonic_ns & TORN_MASK != TORN_MARK
    });
    // A careless reader passes the marked value on.
    let _ = h.call(0, Call::TimeSetTimer, &[marked + 1_000_000]);
    let r = report(&h);
    assert_eq!(broken(&h), [TIME_014], "{r:?}");
    assert!(r.violations[0].what.contains("sequence"), "{r:?}");
}

#[test]
fn the_event_queue_protocol_is_checked_and_spurious_interrupts_come_in_bursts() {
    use pvabi_abi::events::EventQueueHeader;
    use std::mem::offset_of;
    let head = PAGE1 + offset_of!(EventQueueHeader, head) as u64;
    let tail = PAGE1 + offset_of!(EventQueueHeader, tail) as u64;
    let pending = PAGE1 + offset_of!(EventQueueHeader, interrupt_pending) as u64;
    let h = H::with(checking(1));
    h.negotiate(Features::EVENTS | Features::VCPU);
    assert_eq!(
        h.status(0, Call::EventsSetQueue, &[PAGE1, 0x40]),
        Status::Success
    );
    // A careful guest: it clears `interrupt_pending` after each interrupt; the host raises
    // spurious ones (no entry) in bursts, and the queue stays empty.
    for _ in 0..2 * crate::guest_check::SPURIOUS_PERIOD {
        let _ = h.status(0, Call::GetSpecVersion, &[]);
        h.write(pending, &0u32);
    }
    let r = report(&h);
    assert!(r.spurious_interrupts >= 2, "{r:?}");
    assert_eq!(h.m.log().interrupts.len() as u64, r.spurious_interrupts);
    assert_eq!(h.u32_at(tail), 0, "a spurious interrupt appends nothing");
    // It drains an event, re-arms, looks at `tail` again and halts: nothing broken.
    assert_eq!(h.status(0, Call::EventsSend, &[0, 1]), Status::Success);
    h.write(head, &h.u32_at(tail));
    h.write(pending, &0u32);
    let _ = h.status(0, Call::VcpuHalt, &[1000]);
    assert!(broken(&h).is_empty(), "{:?}", report(&h));
    assert!(report(&h).exercised[EVT_011] >= 1 && report(&h).exercised[EVT_025] >= 1);
    // A careless one re-arms with an event waiting and halts (EVT-011) ...
    assert_eq!(h.status(0, Call::EventsSend, &[0, 2]), Status::Success);
    h.write(pending, &0u32);
    let _ = h.status(0, Call::VcpuHalt, &[1000]);
    assert_eq!(broken(&h), [EVT_011]);
    // ... and stores a `head` past `tail` (EVT-025).
    h.write(head, &(h.u32_at(tail) + 3));
    let _ = h.status(0, Call::EventsSend, &[0, 3]);
    assert_eq!(broken(&h), [EVT_011, EVT_025], "{:?}", report(&h));
}

#[test]
fn deferred_queue_fields_and_released_pages_are_checked() {
    use pvabi_abi::batch::{DeferredQueueHeader, DEFERRED_QUEUE_CAPACITY};
    use std::mem::offset_of;
    let h = H::with(checking(1));
    h.negotiate(Features::DEFERRED | Features::MEMORY | Features::CONSOLE);
    // Released, named in a call (MEM-019), reclaimed, named again (fine).
    h.write(BUF, &(PAGE3 >> 12));
    assert_eq!(
        h.status(0, Call::MemBalloonRelease, &[BUF, 1]),
        Status::Success
    );
    assert_eq!(
        h.status(0, Call::ConsoleWrite, &[PAGE2, 8]),
        Status::Success
    );
    assert!(broken(&h).is_empty());
    let _ = h.status(0, Call::ConsoleWrite, &[PAGE3 + 8, 8]);
    assert_eq!(broken(&h), [MEM_019]);
    assert_eq!(
        h.status(0, Call::MemBalloonReclaim, &[BUF, 1]),
        Status::Success
    );
    let _ = h.status(0, Call::ConsoleWrite, &[PAGE3, 8]);
    assert_eq!(broken(&h), [MEM_019]);
    // A deferred queue drained with nothing queued: fine; overfull (DEFER-013); its head
    // written by the guest (DEFER-002).
    let dq_tail = PAGE1 + offset_of!(DeferredQueueHeader, tail) as u64;
    let dq_head = PAGE1 + offset_of!(DeferredQueueHeader, head) as u64;
    assert_eq!(h.status(0, Call::DeferSetQueue, &[PAGE1]), Status::Success);
    assert_eq!(h.status(0, Call::DeferFlush, &[]), Status::Success);
    assert_eq!(broken(&h), [MEM_019]);
    h.write(dq_tail, &(DEFERRED_QUEUE_CAPACITY + 1));
    let _ = h.status(0, Call::DeferFlush, &[]);
    assert_eq!(broken(&h), [MEM_019, DEFER_013]);
    h.write(dq_head, &0u32);
    let _ = h.status(0, Call::DeferFlush, &[]);
    assert_eq!(
        broken(&h),
        [MEM_019, DEFER_013, DEFER_002],
        "{:?}",
        report(&h)
    );
}

#[test]
fn a_doorbell_call_by_an_element_of_a_string_output_is_caught() {
    // A VMM that cannot tell string outputs apart leaves the rule not exercised.
    let blind = H::with(checking(1));
    let mut regs = CallRegs::new(Call::GetSpecVersion, &[]);
    let _ = blind.d.call(Doorbell::ring0(0), &mut regs);
    assert!(!report(&blind).exercised.contains_key(CONV_030));
    let h = H::with(HostConfig {
        vmm_marks_string_outputs: true,
        ..checking(1)
    });
    // `out dx, eax` (and, to the VMM, a single-element `outs`): fine.
    let mut regs = CallRegs::new(Call::GetSpecVersion, &[]);
    let _ = h.d.call(Doorbell::ring0(0), &mut regs);
    let mut regs = CallRegs::new(Call::GetSpecVersion, &[]);
    let _ = h.d.port_out(Caller::kernel(0), 0x5650, &[0; 4], &mut regs);
    assert!(broken(&h).is_empty());
    assert_eq!(report(&h).exercised[CONV_030], 2);
    // One element of a `rep outsd` of several: the call is still performed (CONV-031).
    let mut regs = CallRegs::new(Call::GetSpecVersion, &[]);
    let _ =
        h.d.string_element_port_out(Caller::kernel(0), 0x5650, &[0; 4], &mut regs);
    assert_eq!(regs.status(), Some(Status::Success));
    let r = report(&h);
    assert_eq!(broken(&h), [CONV_030], "{r:?}");
    assert!(r.violations[0].what.contains("`out dx, eax`"), "{r:?}");
}

#[test]
fn interrupts_enabled_without_an_idt_are_caught_at_exits() {
    let state = |interrupt_flag, idt_base, idt_limit| ExitState {
        interrupt_flag,
        idt_base,
        idt_limit,
        cr3: 0x1000,
        cr4: 0x20,
        efer: 0x500,
    };
    // Off outside checking mode.
    let quiet = H::ready(1);
    quiet.d.check_exit(0, state(true, 0, 0));
    assert!(quiet.d.guest_check().is_none());
    let h = H::with(checking(2));
    // IF clear: whatever the IDTR, nothing to see (not exercised either).
    h.d.check_exit(0, state(false, 0, 0));
    assert!(!report(&h).exercised.contains_key(PLAT_008));
    // IF set with an IDT: kept.
    h.d.check_exit(0, state(true, 0x40_0000, 0xfff));
    assert!(broken(&h).is_empty());
    // IF set with the entry state's IDTR, or any IDTR of limit 0 (no IDT), on vCPU 1.
    h.d.check_exit(1, state(true, 0, 0));
    h.d.check_exit(1, state(true, 0x40_0000, 0));
    let r = report(&h);
    assert_eq!(broken(&h), [PLAT_008, PLAT_008], "{r:?}");
    assert_eq!((r.violations[0].vcpu, r.exercised[PLAT_008]), (1, 3));
    assert!(r.violations[1].what.contains("base 0x400000"), "{r:?}");
}

/// A vCPU's state at an exit with paging state `cr3`, `cr4`, `efer` (IF clear: no PLAT-008).
fn paging(cr3: u64, cr4: u64, efer: u64) -> ExitState {
    ExitState {
        interrupt_flag: false,
        idt_base: 0,
        idt_limit: 0,
        cr3,
        cr4,
        efer,
    }
}

/// CR4 with PAE and PCIDE, and with LA57 (5-level paging) or without it.
const CR4_4_LEVEL: u64 = (1 << 5) | (1 << 17);
const CR4_5_LEVEL: u64 = CR4_4_LEVEL | (1 << 12);
/// EFER with LME and LMA (long mode active), and with LME only (paging off).
const EFER_LONG: u64 = (1 << 8) | (1 << 10);
const EFER_NOT_LONG: u64 = 1 << 8;

/// PVABI-MEM-022 at direct calls: a MEM_UPDATE_PTE of an entry in the page CR3 names while
/// the vCPU uses 5-level paging (EFER.LMA and CR4.LA57 at its last exit) is caught, whatever
/// CR3's PCID bits and bit 63; an entry of another page, or the same page under 4-level
/// paging (a PML4 entry), or any before the vCPU's first exit, is not; and each vCPU's own
/// state counts.
#[test]
fn a_pml5_entry_updated_with_mem_update_pte_is_caught() {
    const PML5: u64 = 0x30_0000;
    const OTHER_PML5: u64 = 0x30_1000;
    let h = H::with(checking(2));
    h.negotiate(Features::MEMORY);
    let update = |vcpu, gpa: u64| h.status(vcpu, Call::MemUpdatePte, &[gpa, 0x1003, 4]);
    let exercised = |h: &H| report(h).exercised.get(MEM_022).copied().unwrap_or(0);
    // No exit seen yet, then 4-level paging with the same root (its PML4 entries), then
    // LA57 set outside long mode (no paging in use): nothing to check.
    assert_eq!(update(0, PML5), Status::Success);
    h.d.check_exit(0, paging(PML5 | 0x5, CR4_4_LEVEL, EFER_LONG));
    assert_eq!(update(0, PML5 + 8), Status::Success);
    h.d.check_exit(0, paging(PML5, CR4_5_LEVEL, EFER_NOT_LONG));
    assert_eq!(update(0, PML5 + 16), Status::Success);
    assert_eq!(exercised(&h), 0, "{:?}", report(&h));
    // 5-level paging, CR3 with PCID 0x5 and bit 63 (no flush) set: entries of other pages
    // (just below and above the table too) are fine, entries of the table are not.
    h.d.check_exit(0, paging(PML5 | 0x5 | (1 << 63), CR4_5_LEVEL, EFER_LONG));
    for gpa in [PML5 - 8, PML5 + 0x1000, BUF] {
        assert_eq!(update(0, gpa), Status::Success);
    }
    assert!(broken(&h).is_empty(), "{:?}", report(&h));
    assert_eq!(exercised(&h), 3);
    assert_eq!(update(0, PML5), Status::Success, "performed all the same");
    assert_eq!(update(0, PML5 + 0xff8), Status::Success);
    let r = report(&h);
    assert_eq!(broken(&h), [MEM_022, MEM_022], "{r:?}");
    assert_eq!(
        (r.violations[0].vcpu, r.violations[0].call),
        (0, Some("MEM_UPDATE_PTE"))
    );
    assert!(
        r.violations[1].what.contains("entry at 0x300ff8")
            && r.violations[1].what.contains("table at 0x300000"),
        "{r:?}"
    );
    // vCPU 1 uses 5-level paging with its own table: vCPU 0's table is not its PML5.
    h.d.check_exit(1, paging(OTHER_PML5, CR4_5_LEVEL, EFER_LONG));
    assert_eq!(update(1, PML5), Status::Success);
    assert_eq!(broken(&h).len(), 2);
    assert_eq!(update(1, OTHER_PML5 + 0x100), Status::Success);
    assert_eq!(report(&h).violations[2].vcpu, 1);
    // vCPU 0 back under 4-level paging at its next exit: its old table is no PML5 table.
    h.d.check_exit(0, paging(PML5, CR4_4_LEVEL, EFER_LONG));
    assert_eq!(update(0, PML5), Status::Success);
    assert_eq!((broken(&h).len(), exercised(&h)), (3, 7));
    // Off outside checking mode.
    let quiet = H::ready(1);
    quiet.d.check_exit(0, paging(PML5, CR4_5_LEVEL, EFER_LONG));
    assert_eq!(
        quiet.status(0, Call::MemUpdatePte, &[PML5, 0x1003, 4]),
        Status::Success
    );
    assert!(quiet.d.guest_check().is_none());
}

/// PVABI-MEM-022 wherever MEM_UPDATE_PTE runs: a MULTICALL entry and a deferred entry are
/// checked against the calling vCPU's state at the call's exit, a ring submission against
/// the ring owner's state at its last exit, whichever vCPU notified.
#[test]
fn a_pml5_entry_update_is_caught_in_a_multicall_a_deferred_queue_and_a_ring() {
    use pvabi_abi::batch::{
        DeferredEntry, DeferredQueueHeader, RingHeader, RingMode, RingSetup, SubmissionEntry,
        DEFERRED_ENTRIES_OFFSET, RING_ENTRIES_OFFSET,
    };
    use pvabi_abi::convention::ReservedU64;
    use std::mem::offset_of;
    const PML5: u64 = 0x30_0000;
    let h = H::with(checking(2));
    h.negotiate(Features::MEMORY | Features::MULTICALL | Features::DEFERRED | Features::RING);
    h.d.check_exit(0, paging(PML5 | 0xabc, CR4_5_LEVEL, EFER_LONG));
    h.d.check_exit(1, paging(PML5, CR4_4_LEVEL, EFER_LONG));
    let pte = |gpa: u64| [gpa, 0x2003, 4, 0, 0, 0];
    // MULTICALL by vCPU 0: one entry outside the table, one inside.
    let multicall: Vec<MulticallEntry> = [BUF2, PML5 + 8]
        .iter()
        .map(|&gpa| MulticallEntry {
            call: Call::MemUpdatePte.code(),
            args: pte(gpa),
            ..Default::default()
        })
        .collect();
    h.write(BUF, multicall.as_slice());
    assert_eq!(
        h.status(0, Call::Multicall, &[BUF, 2, 0, 0]),
        Status::Success
    );
    assert_eq!(broken(&h), [MEM_022]);
    // The same batch by vCPU 1, under 4-level paging: nothing.
    assert_eq!(
        h.status(1, Call::Multicall, &[BUF, 2, 0, 0]),
        Status::Success
    );
    assert_eq!(broken(&h), [MEM_022]);
    // vCPU 0's deferred queue, drained by its DEFER_FLUSH.
    assert_eq!(h.status(0, Call::DeferSetQueue, &[PAGE1]), Status::Success);
    let queued = DeferredEntry {
        call: Call::MemUpdatePte.code(),
        args: [PML5 + 16, 0x2003, 4],
        ..Default::default()
    };
    h.write(PAGE1 + DEFERRED_ENTRIES_OFFSET, &queued);
    h.write(PAGE1 + offset_of!(DeferredQueueHeader, tail) as u64, &1u32);
    assert_eq!(h.call(0, Call::DeferFlush, &[]).1[..2], [1, 0]);
    assert_eq!(broken(&h), [MEM_022, MEM_022]);
    // vCPU 0's DOORBELL ring, notified by vCPU 1 (whose own paging is 4-level).
    h.write(
        BUF,
        &RingSetup {
            sq_page: PAGE2,
            cq_page: PAGE3,
            mode: RingMode::Doorbell,
            flags: 0,
            reserved: ReservedU64::Zero,
        },
    );
    assert_eq!(h.status(0, Call::RingSetup, &[BUF]), Status::Success);
    let submission = SubmissionEntry {
        user_data: 1,
        call: Call::MemUpdatePte.code(),
        args: pte(PML5 + 24),
        ..Default::default()
    };
    h.write(PAGE2 + RING_ENTRIES_OFFSET, &submission);
    h.write(PAGE2 + offset_of!(RingHeader, tail) as u64, &1u32);
    h.d.ring_notify(0);
    assert_eq!(h.u32_at(PAGE3 + offset_of!(RingHeader, tail) as u64), 1);
    let r = report(&h);
    assert_eq!(broken(&h), [MEM_022, MEM_022, MEM_022], "{r:?}");
    assert!(
        r.violations.iter().all(|v| v.vcpu == 0) && r.violations[2].what.contains("0x300018"),
        "{r:?}"
    );
    // Exercised at the entries run for vCPU 0 (two of the batch, the queued and the ring's).
    assert_eq!(r.exercised[MEM_022], 4, "{r:?}");
    // The written entries are really there: the checker only watches.
    assert_eq!(h.read::<u64>(PML5 + 24), 0x2003);
}

#[test]
fn a_guest_write_to_a_released_page_is_caught_at_reclaim_and_at_the_end() {
    let h = H::with(checking(1));
    h.negotiate(Features::MEMORY | Features::CONSOLE);
    // A machine that cannot see guest writes: nothing exercised.
    h.write(BUF, &(PAGE3 >> 12));
    assert_eq!(
        h.status(0, Call::MemBalloonRelease, &[BUF, 1]),
        Status::Success
    );
    assert_eq!(
        h.status(0, Call::MemBalloonReclaim, &[BUF, 1]),
        Status::Success
    );
    assert!(!report(&h).exercised.contains_key(MEM_006));
    // Written before the release (fine: the release starts a new interval), released, a
    // write elsewhere, reclaimed: kept.
    h.m.guest_wrote(PAGE3 + 8);
    assert_eq!(
        h.status(0, Call::MemBalloonRelease, &[BUF, 1]),
        Status::Success
    );
    h.m.guest_wrote(PAGE2);
    assert_eq!(
        h.status(0, Call::MemBalloonReclaim, &[BUF, 1]),
        Status::Success
    );
    assert!(broken(&h).is_empty(), "{:?}", report(&h));
    assert_eq!(report(&h).exercised[MEM_006], 1);
    // Released and written: caught at the reclaim.
    assert_eq!(
        h.status(0, Call::MemBalloonRelease, &[BUF, 1]),
        Status::Success
    );
    h.m.guest_wrote(PAGE3 + 0x10);
    assert_eq!(
        h.status(0, Call::MemBalloonReclaim, &[BUF, 1]),
        Status::Success
    );
    let r = report(&h);
    assert_eq!(broken(&h), [MEM_006], "{r:?}");
    assert!(
        r.violations[0].what.contains(&format!("{PAGE3:#x}")),
        "{r:?}"
    );
    // Released, written and never reclaimed: caught when the report is taken.
    assert_eq!(
        h.status(0, Call::MemBalloonRelease, &[BUF, 1]),
        Status::Success
    );
    h.m.guest_wrote(PAGE3);
    let r = report(&h);
    assert_eq!(broken(&h), [MEM_006, MEM_006], "{r:?}");
    assert!(
        r.violations[1].what.contains("at the end of the run"),
        "{r:?}"
    );
}

/// The step windows (DEFER-001, RING-001), driven as a VMM drives them, with the guest's
/// stores written between the steps: an entry written before its `tail` store passes, one
/// written after it fails, and nothing opens a window outside checking mode or without a
/// registered queue.
#[test]
fn step_windows_see_an_entry_written_after_its_tail_store() {
    use crate::guest_check::{DEFER_001, RING_001, WATCH_ENTRIES};
    use pvabi_abi::batch::{
        DeferredEntry, DeferredQueueHeader, RingHeader, RingMode, RingSetup, SubmissionEntry,
        DEFERRED_ENTRIES_OFFSET, RING_ENTRIES_OFFSET,
    };
    use pvabi_abi::convention::ReservedU64;
    use std::mem::offset_of;
    assert!(!H::ready(1).d.step_window_open(0));
    let h = H::with(checking(1));
    h.negotiate(Features::DEFERRED | Features::RING | Features::EVENTS | Features::CONSOLE);
    assert!(!h.d.step_window_open(0), "no queue registered");
    let dq_tail = PAGE1 + offset_of!(DeferredQueueHeader, tail) as u64;
    let entry = |i: u64| PAGE1 + DEFERRED_ENTRIES_OFFSET + i * size_of::<DeferredEntry>() as u64;
    let set_mask = DeferredEntry {
        call: Call::EventsSetMask.code(),
        ..Default::default()
    };
    assert_eq!(h.status(0, Call::DeferSetQueue, &[PAGE1]), Status::Success);
    // In order: the entry, a step, `tail`, a step, other work.
    assert!(h.d.step_window_open(0));
    h.write(entry(0), &set_mask);
    assert!(h.d.step_window_step(0));
    h.write(dq_tail, &1u32);
    assert!(h.d.step_window_step(0));
    assert!(h.d.step_window_step(0));
    // Careless: `tail`, a step, then the entry; the window closes at the next exit.
    h.write(dq_tail, &2u32);
    assert!(h.d.step_window_step(0));
    h.write(entry(1), &set_mask);
    assert!(h.d.step_window_step(0));
    h.d.step_window_close(0);
    assert!(!h.d.step_window_step(0), "closed");
    let r = report(&h);
    assert_eq!(broken(&h), [DEFER_001], "{r:?}");
    assert!(r.violations[0].what.contains("entry 1 (slot 1)"), "{r:?}");
    assert_eq!(r.exercised[DEFER_001], 2, "{r:?}");
    assert_eq!(r.step_windows, (1, 5), "{r:?}");
    // The drain runs both; the next window starts after it and sees nothing wrong.
    assert_eq!(h.call(0, Call::DeferFlush, &[]).1[0], 2);
    assert!(h.d.step_window_open(0));
    h.d.step_window_close(0);
    // Unregistered: no more windows.
    assert_eq!(h.status(0, Call::DeferSetQueue, &[0]), Status::Success);
    assert!(!h.d.step_window_open(0));

    // A submission ring: the same mistake, and the watch ends after WATCH_ENTRIES entries.
    h.write(
        BUF,
        &RingSetup {
            sq_page: PAGE2,
            cq_page: PAGE3,
            mode: RingMode::Doorbell,
            flags: 0,
            reserved: ReservedU64::Zero,
        },
    );
    assert_eq!(h.status(0, Call::RingSetup, &[BUF]), Status::Success);
    let sq_tail = PAGE2 + offset_of!(RingHeader, tail) as u64;
    let sqe = |i: u64| PAGE2 + RING_ENTRIES_OFFSET + i * size_of::<SubmissionEntry>() as u64;
    let info = |user_data| SubmissionEntry {
        user_data,
        call: Call::VcpuInfo.code(),
        ..Default::default()
    };
    assert!(h.d.step_window_open(0));
    h.write(dq_tail, &0u32); // the old queue page: no longer watched
    h.write(sq_tail, &1u32);
    assert!(h.d.step_window_step(0));
    h.write(sqe(0), &info(7));
    // Then in order, until the watch has compared its entries and ends.
    let mut steps = 0;
    let mut go_on = h.d.step_window_step(0);
    for n in 1..64 {
        if !go_on {
            break;
        }
        h.write(sqe(n), &info(n));
        go_on = h.d.step_window_step(0);
        if go_on {
            h.write(sq_tail, &(n as u32 + 1));
            go_on = h.d.step_window_step(0);
        }
        steps += 1;
    }
    assert!(!go_on && steps < 8, "the watch ends ({steps})");
    assert_eq!(h.status(0, Call::RingEnter, &[]), Status::Success);
    let r = report(&h);
    assert_eq!(broken(&h), [DEFER_001, RING_001], "{r:?}");
    assert!(
        r.violations[1].what.contains("submission-ring entry 0"),
        "{r:?}"
    );
    assert_eq!(r.exercised[RING_001], u64::from(WATCH_ENTRIES), "{r:?}");
    assert!(!h.d.step_window_open(0));
}

/// A HOST_POLLED ring in a step window: the poller consumes while the vCPU is stepped, and a
/// look (under the ring's lock) never takes an entry it consumed, whose slot the guest may
/// write again, for one the guest changed after publishing it. (A careless submission that an
/// awake poller consumed before the late store cannot be seen, so none is made here; the
/// doorbell test above shows one.)
#[test]
fn step_windows_and_a_host_polled_poller_that_consumes_meanwhile() {
    use crate::guest_check::RING_001;
    use pvabi_abi::batch::{RingHeader, RingMode, RingSetup, SubmissionEntry, RING_ENTRIES_OFFSET};
    use pvabi_abi::convention::ReservedU64;
    use std::mem::offset_of;
    let h = H::with(checking(1));
    h.negotiate(Features::RING | Features::CONSOLE);
    h.write(
        BUF,
        &RingSetup {
            sq_page: PAGE2,
            cq_page: PAGE3,
            mode: RingMode::HostPolled,
            flags: 0,
            reserved: ReservedU64::Zero,
        },
    );
    assert_eq!(h.status(0, Call::RingSetup, &[BUF]), Status::Success);
    let sq_tail = PAGE2 + offset_of!(RingHeader, tail) as u64;
    let sq_head = PAGE2 + offset_of!(RingHeader, head) as u64;
    let sqe =
        |i: u32| PAGE2 + RING_ENTRIES_OFFSET + u64::from(i) * size_of::<SubmissionEntry>() as u64;
    let info = |user_data| SubmissionEntry {
        user_data,
        call: Call::VcpuInfo.code(),
        ..Default::default()
    };
    // In order, waking the poller after each (it sleeps at once when idle, in checking mode),
    // and letting it consume between the looks.
    assert!(h.d.step_window_open(0));
    for n in 0..3u32 {
        h.write(sqe(n), &info(u64::from(n)));
        assert!(h.d.step_window_step(0));
        h.write(sq_tail, &(n + 1));
        assert!(h.d.step_window_step(0));
        assert!(h.d.step_window_step(0));
        h.d.ring_notify(0);
        wait_for("the poller consumed it", || h.u32_at(sq_head) == n + 1);
        // The guest may write the free slot again at once (for index n + SQ_CAPACITY).
        h.write(sqe(n), &info(99));
        assert!(h.d.step_window_step(0));
    }
    h.d.step_window_close(0);
    let r = report(&h);
    assert!(broken(&h).is_empty(), "{r:?}");
    // Each entry is compared unless the poller, awake, consumed it before the next look.
    assert!(
        r.exercised.get(RING_001).copied().unwrap_or(0) <= 3,
        "{r:?}"
    );
}

impl H {
    /// The guest (vCPU `vcpu`) loads `len` bytes at `gpa` of a watched page, as a VMM serves
    /// and reports it: the bytes are read from RAM, then reported.
    fn guest_load(&self, vcpu: u32, gpa: u64, len: usize) -> Vec<u8> {
        let data = self.read_bytes(gpa, len);
        self.d.watched_access(vcpu, gpa, &data, false);
        data
    }

    /// The guest stores `value` at `gpa` of a watched page: written to RAM, then reported.
    fn guest_store(&self, vcpu: u32, gpa: u64, value: &[u8]) {
        self.write(gpa, value);
        self.d.watched_access(vcpu, gpa, value, true);
    }
}

/// Watched pages (EVT-010, RING-006), driven as a VMM drives them: the machine watches the
/// event queue's page from EVENTS_SET_QUEUE on (and not once it is unregistered), and the
/// test plays the guest's accesses to it. Reading an entry and then storing `head` passes;
/// storing `head` past an entry not read fails, and so does reading it afterwards; a machine
/// that cannot watch pages leaves the rule not exercised.
#[test]
fn watched_pages_see_an_event_consumed_before_it_was_read() {
    use crate::guest_check::EVT_010;
    use pvabi_abi::events::{EventQueueHeader, EVENT_QUEUE_ENTRIES_OFFSET};
    use std::mem::offset_of;
    let head = PAGE1 + offset_of!(EventQueueHeader, head) as u64;
    let tail = PAGE1 + offset_of!(EventQueueHeader, tail) as u64;
    let entry = |i: u64| PAGE1 + EVENT_QUEUE_ENTRIES_OFFSET + 16 * i;
    let h = H::with(checking(1));
    h.negotiate(Features::EVENTS | Features::CONSOLE);
    // A machine that cannot watch pages: nothing is watched, nothing checked.
    assert_eq!(
        h.status(0, Call::EventsSetQueue, &[PAGE1, 0x40]),
        Status::Success
    );
    assert_eq!(h.status(0, Call::EventsSend, &[0, 1]), Status::Success);
    assert_eq!(h.m.watched_pages(), [] as [u64; 0]);
    h.write(head, &1u32);
    assert_eq!(report(&h).exercised.get(EVT_010), None);
    assert_eq!(
        h.status(0, Call::EventsSetQueue, &[0, 0x40]),
        Status::Success
    );

    h.m.allow_watching();
    assert_eq!(
        h.status(0, Call::EventsSetQueue, &[PAGE1, 0x40]),
        Status::Success
    );
    assert_eq!(h.m.watched_pages(), [PAGE1]);
    for data in [10, 11, 12] {
        assert_eq!(h.status(0, Call::EventsSend, &[0, data]), Status::Success);
    }
    // Entry 0 in order: `tail`, the entry (two 8-byte loads), then `head`.
    assert_eq!(h.guest_load(0, tail, 4), 3u32.to_le_bytes());
    let _ = h.guest_load(0, entry(0), 8);
    let _ = h.guest_load(0, entry(0) + 8, 8);
    h.guest_store(0, head, &1u32.to_le_bytes());
    assert!(broken(&h).is_empty(), "{:?}", report(&h));
    // Entry 1: `head` first, then the entry; entry 2: its `kind` read, then `head`, then
    // its `data`.
    h.guest_store(0, head, &2u32.to_le_bytes());
    let _ = h.guest_load(0, entry(1), 16);
    let _ = h.guest_load(0, entry(2), 4);
    h.guest_store(0, head, &3u32.to_le_bytes());
    let _ = h.guest_load(0, entry(2) + 8, 8);
    let r = report(&h);
    assert_eq!(broken(&h), [EVT_010, EVT_010, EVT_010], "{r:?}");
    let what: Vec<&str> = r.violations.iter().map(|v| v.what.as_str()).collect();
    assert!(
        what[0].contains("event-queue entry 1 (slot 1): the guest stored 2 to the event queue's `head`, past the entry, without having read any of its bytes"),
        "{what:?}"
    );
    assert!(what[1].contains("entry 1 (slot 1) read after"), "{what:?}");
    assert!(what[2].contains("entry 2 (slot 2) read after"), "{what:?}");
    assert_eq!(r.exercised[EVT_010], 3, "{r:?}");
    assert_eq!(r.watched_accesses, 9, "{r:?}");
    // Unregistered: the page is no longer watched, and its accesses count for nothing.
    assert_eq!(
        h.status(0, Call::EventsSetQueue, &[0, 0x40]),
        Status::Success
    );
    assert_eq!(h.m.watched_pages(), [] as [u64; 0]);
    h.guest_store(0, head, &9u32.to_le_bytes());
    assert_eq!(report(&h).exercised[EVT_010], 3);

    // Outside checking mode nothing is watched, and an access report is ignored.
    let plain = H::ready(1);
    plain.m.allow_watching();
    assert_eq!(
        plain.status(0, Call::EventsSetQueue, &[PAGE1, 0x40]),
        Status::Success
    );
    assert_eq!(plain.m.watched_pages(), [] as [u64; 0]);
    plain.d.watched_access(0, head, &[1, 0, 0, 0], true);
    assert!(plain.d.guest_check().is_none());
}

/// The completion ring's page (RING-006): watched from RING_SETUP; completions reaped in order
/// pass, and the watch ends once it has checked CONSUME_WATCH_ENTRIES of them, so that later
/// accesses run at full speed (and are not judged); a careless reap before that fails.
#[test]
fn watched_pages_see_completions_reaped_and_the_watch_ends() {
    use crate::guest_check::{CONSUME_WATCH_ENTRIES, RING_006};
    use pvabi_abi::batch::{
        CompletionEntry, RingHeader, RingMode, RingSetup, SubmissionEntry, RING_ENTRIES_OFFSET,
    };
    use pvabi_abi::convention::ReservedU64;
    use std::mem::offset_of;
    let h = H::with(checking(1));
    h.m.allow_watching();
    h.negotiate(Features::RING | Features::CONSOLE);
    h.write(
        BUF,
        &RingSetup {
            sq_page: PAGE2,
            cq_page: PAGE3,
            mode: RingMode::Doorbell,
            flags: 0,
            reserved: ReservedU64::Zero,
        },
    );
    assert_eq!(h.status(0, Call::RingSetup, &[BUF]), Status::Success);
    assert_eq!(h.m.watched_pages(), [PAGE3], "the completion ring only");
    let sq_tail = PAGE2 + offset_of!(RingHeader, tail) as u64;
    let cq_head = PAGE3 + offset_of!(RingHeader, head) as u64;
    let cq_tail = PAGE3 + offset_of!(RingHeader, tail) as u64;
    let sqe = |i: u32| PAGE2 + RING_ENTRIES_OFFSET + u64::from(i % 32) * 64;
    let cqe = |i: u32| {
        PAGE3 + RING_ENTRIES_OFFSET + u64::from(i % 64) * size_of::<CompletionEntry>() as u64
    };
    let submit = |from: u32, n: u32| {
        for i in from..from + n {
            h.write(
                sqe(i),
                &SubmissionEntry {
                    user_data: u64::from(i),
                    call: Call::VcpuInfo.code(),
                    ..Default::default()
                },
            );
        }
        h.write(sq_tail, &(from + n));
        assert_eq!(h.call(0, Call::RingEnter, &[]).1[0], u64::from(n));
    };
    // The first completion reaped carelessly: `head` first, then its `user_data`.
    submit(0, 1);
    assert_eq!(h.guest_load(0, cq_tail, 4), 1u32.to_le_bytes());
    h.guest_store(0, cq_head, &1u32.to_le_bytes());
    let _ = h.guest_load(0, cqe(0), 8);
    // Then in order: `user_data` and `status`, then `head`, until the watch ends.
    submit(1, CONSUME_WATCH_ENTRIES + 4);
    for i in 1..=CONSUME_WATCH_ENTRIES + 4 {
        let _ = h.guest_load(0, cqe(i), 8);
        let _ = h.guest_load(0, cqe(i) + 8, 4);
        h.guest_store(0, cq_head, &(i + 1).to_le_bytes());
        if i + 2 == CONSUME_WATCH_ENTRIES {
            assert_eq!(h.m.watched_pages(), [PAGE3], "still watched after {i}");
        }
    }
    assert_eq!(h.m.watched_pages(), [] as [u64; 0], "the watch ended");
    // A careless reap now is not seen: the page is RAM again.
    submit(CONSUME_WATCH_ENTRIES + 5, 1);
    h.guest_store(0, cq_head, &(CONSUME_WATCH_ENTRIES + 6).to_le_bytes());
    let r = report(&h);
    assert_eq!(broken(&h), [RING_006, RING_006], "{r:?}");
    assert!(
        r.violations[0]
            .what
            .contains("completion 0 (slot 0): the guest stored 1 to the completion ring's `head`"),
        "{r:?}"
    );
    assert!(r.violations[1]
        .what
        .contains("completion 0 (slot 0) read after"));
    assert_eq!(
        r.exercised[RING_006],
        u64::from(CONSUME_WATCH_ENTRIES),
        "{r:?}"
    );
    // A new registration watches again.
    h.write(
        BUF,
        &RingSetup {
            sq_page: 0,
            cq_page: 0,
            mode: RingMode::Doorbell,
            flags: 0,
            reserved: ReservedU64::Zero,
        },
    );
    assert_eq!(h.status(0, Call::RingSetup, &[BUF]), Status::Success);
    h.write(
        BUF,
        &RingSetup {
            sq_page: PAGE1,
            cq_page: PAGE2,
            mode: RingMode::Doorbell,
            flags: 0,
            reserved: ReservedU64::Zero,
        },
    );
    assert_eq!(h.status(0, Call::RingSetup, &[BUF]), Status::Success);
    assert_eq!(h.m.watched_pages(), [PAGE2]);
}

/// The run's budget of watched accesses: a guest that polls a watched page (a `tail` at
/// CPL3, say) ends every watch after ACCESS_BUDGET accesses, and no new one starts.
#[test]
fn watched_pages_end_when_the_access_budget_is_spent() {
    use crate::guest_check::ACCESS_BUDGET;
    use pvabi_abi::events::EventQueueHeader;
    use std::mem::offset_of;
    let tail = PAGE1 + offset_of!(EventQueueHeader, tail) as u64;
    let h = H::with(checking(2));
    h.m.allow_watching();
    h.negotiate(Features::EVENTS | Features::CONSOLE);
    assert_eq!(
        h.status(0, Call::EventsSetQueue, &[PAGE1, 0x40]),
        Status::Success
    );
    assert_eq!(
        h.status(1, Call::EventsSetQueue, &[PAGE2, 0x40]),
        Status::Success
    );
    assert_eq!(h.m.watched_pages(), [PAGE1, PAGE2]);
    for _ in 1..ACCESS_BUDGET {
        let _ = h.guest_load(0, tail, 4);
    }
    assert_eq!(h.m.watched_pages(), [PAGE1, PAGE2]);
    let _ = h.guest_load(0, tail, 4);
    assert_eq!(h.m.watched_pages(), [] as [u64; 0], "every watch ended");
    assert_eq!(
        h.status(0, Call::EventsSetQueue, &[PAGE3, 0x40]),
        Status::Success
    );
    assert_eq!(h.m.watched_pages(), [] as [u64; 0], "and none starts");
    assert_eq!(report(&h).watched_accesses, ACCESS_BUDGET);
}

/// Accesses through a queued MEM_UPDATE_PTE's entry (MEM-013, DEFER-008), driven as a VMM
/// drives the step windows, with the vCPU's state handed in at each stop where the checker
/// asks for it: a load through the queued PTE before the drain fails both rules (with the
/// address and the entry); a load elsewhere, and the same load after the drain, pass; nothing
/// is asked for while no MEM_UPDATE_PTE waits.
#[test]
fn step_windows_see_a_load_through_a_queued_pte() {
    use crate::guest_check::{StepState, DEFER_008, MEM_013};
    use pvabi_abi::batch::{DeferredEntry, DeferredQueueHeader, DEFERRED_ENTRIES_OFFSET};
    use std::mem::offset_of;
    // Page tables at 0x30_0000: VA 0 to 2 MiB identity-mapped by a 2 MiB page (the code at
    // 0x8000 and the stack), VA 0x40_0000 through PTE 0 of the PT at 0x30_3000 to 0x31_0000.
    const PML4: u64 = 0x30_0000;
    const PT: u64 = 0x30_3000;
    const VA: u64 = 0x40_0000;
    const CODE: u64 = 0x8000;
    let h = H::with(checking(1));
    h.negotiate(Features::DEFERRED | Features::MEMORY | Features::CONSOLE);
    h.write(PML4, &(PML4 + 0x1003));
    h.write(PML4 + 0x1000, &(PML4 + 0x2003));
    h.write(PML4 + 0x2000, &0x83u64);
    h.write(PML4 + 0x2010, &(PT | 3));
    h.write(PT, &0x31_0003u64);
    // mov rax, [rcx]; nop; nop
    h.write(CODE, &[0x48u8, 0x8b, 0x01, 0x90, 0x90]);
    let stop = |rip: u64, rcx: u64| {
        let mut s = StepState {
            rip,
            cr3: PML4,
            efer: 1 << 10,
            long_mode: true,
            ..StepState::default()
        };
        s.gprs[1] = rcx;
        s.gprs[4] = 0x1_0000;
        s
    };
    let dq_tail = PAGE1 + offset_of!(DeferredQueueHeader, tail) as u64;
    let remap = DeferredEntry {
        call: Call::MemUpdatePte.code(),
        args: [PT, 0x32_0003, 1],
        ..Default::default()
    };
    let entry = |i: u64| PAGE1 + DEFERRED_ENTRIES_OFFSET + i * size_of::<DeferredEntry>() as u64;
    assert!(!h.d.step_window_wants_state(0), "no window");
    assert_eq!(h.status(0, Call::DeferSetQueue, &[PAGE1]), Status::Success);
    assert!(h.d.step_window_open(0));
    assert!(!h.d.step_window_wants_state(0), "nothing queued");
    // The entry, then `tail` (DEFER-001 kept): from here a MEM_UPDATE_PTE waits.
    h.write(entry(0), &remap);
    assert!(h.d.step_window_step(0));
    h.write(dq_tail, &1u32);
    assert!(h.d.step_window_step(0));
    assert!(h.d.step_window_wants_state(0));
    // A load of identity-mapped memory: checked, nothing through the queued entry.
    h.d.step_window_state(0, &stop(CODE, 0x1000));
    assert!(h.d.step_window_step(0));
    h.d.step_window_state(0, &stop(CODE + 3, 0x1000));
    assert!(broken(&h).is_empty(), "{:?}", report(&h));
    // The careless load through VA, which PTE 0 (queued) maps.
    h.d.step_window_state(0, &stop(CODE, VA + 8));
    assert!(h.d.step_window_step(0));
    h.d.step_window_state(0, &stop(CODE + 3, VA + 8));
    h.d.step_window_close(0);
    let r = report(&h);
    assert_eq!(broken(&h), [MEM_013, DEFER_008], "{r:?}");
    let seen: Vec<_> = r
        .violations
        .iter()
        .filter(|v| [MEM_013, DEFER_008].contains(&v.rule))
        .collect();
    for v in &seen {
        for part in [
            "a read of 8 byte(s) at 0x400008",
            "rip 0x8000",
            "entry at 0x303000",
            "level 1 of the walk from CR3 0x300000",
            "value 0x320003",
            "deferred queue (index 0)",
        ] {
            assert!(v.what.contains(part), "{part:?} not in {}", v.what);
        }
    }
    assert!(seen[1].what.contains("the entry held 0x310003"), "{r:?}");
    assert_eq!(
        (r.exercised[MEM_013], r.exercised[DEFER_008]),
        (1, 1),
        "{r:?}"
    );
    assert_eq!(r.pte_steps.checked, 2, "{r:?}");
    // The drain writes the entry; the window after it has nothing queued, and the same load
    // is fine.
    assert_eq!(h.call(0, Call::DeferFlush, &[]).1[0], 1);
    assert_eq!(h.read::<u64>(PT), 0x32_0003);
    assert!(h.d.step_window_open(0));
    assert!(!h.d.step_window_wants_state(0));
    h.d.step_window_close(0);
    assert_eq!(broken(&h), [MEM_013, DEFER_008]);
    // Outside checking mode nothing is asked for.
    let plain = H::ready(1);
    assert!(!plain.d.step_window_wants_state(0));
    plain.d.step_window_state(0, &stop(CODE, VA));
}
