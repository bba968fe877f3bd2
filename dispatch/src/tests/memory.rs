//! Memory family: sharing, ballooning, PTE updates, TLB flushes.

use pvabi_abi::calls::Call;
use pvabi_abi::status::Status;

use super::{BUF, H, MEM, PAGE1};
use crate::report::{PteWrite, TlbFlush};

const P: u64 = 4096;

#[test]
fn share_and_unshare_track_ranges() {
    let h = H::ready(1);
    assert_eq!(
        h.status(0, Call::MemShare, &[0x30_0000, 4]),
        Status::Success
    );
    assert_eq!(
        h.status(0, Call::MemShare, &[0x30_3000, 2]),
        Status::Success
    );
    assert_eq!(
        h.status(0, Call::MemShare, &[0x30_0000, 1]),
        Status::Success
    );
    assert_eq!(h.d.report().shared_ranges, [(0x30_0000, 5)]);
    assert_eq!(
        h.status(0, Call::MemShare, &[0x30_6000, 1]),
        Status::Success
    );
    assert_eq!(h.d.report().shared_ranges, [(0x30_0000, 5), (0x30_6000, 1)]);
    assert_eq!(
        h.status(0, Call::MemUnshare, &[0x30_1000, 2]),
        Status::Success
    );
    assert_eq!(
        h.d.report().shared_ranges,
        [(0x30_0000, 1), (0x30_3000, 2), (0x30_6000, 1)]
    );
    // Unsharing what is not shared is harmless.
    assert_eq!(
        h.status(0, Call::MemUnshare, &[0x10_0000, 1]),
        Status::Success
    );
    assert_eq!(
        h.status(0, Call::MemUnshare, &[0x30_0000, 8]),
        Status::Success
    );
    assert!(h.d.report().shared_ranges.is_empty());
}

#[test]
fn share_errors() {
    let h = H::ready(1);
    assert_eq!(
        h.status(0, Call::MemShare, &[BUF + 1, 1]),
        Status::InvalidParameter
    );
    assert_eq!(
        h.status(0, Call::MemShare, &[BUF, 0]),
        Status::InvalidParameter
    );
    assert_eq!(
        h.status(0, Call::MemShare, &[BUF, (1 << 20) + 1]),
        Status::InvalidParameter
    );
    assert_eq!(
        h.status(0, Call::MemShare, &[MEM - P, 2]),
        Status::InvalidAddress
    );
    assert_eq!(
        h.status(0, Call::MemShare, &[0, 1 << 20]),
        Status::InvalidAddress
    );
    assert_eq!(h.status(0, Call::TimeSetPage, &[PAGE1]), Status::Success);
    assert_eq!(
        h.status(0, Call::MemShare, &[PAGE1 - P, 2]),
        Status::AccessDenied
    );
    assert!(h.d.report().shared_ranges.is_empty());
}

fn pfns(h: &H, at: u64, list: &[u64]) {
    h.write(at, list);
}

#[test]
fn balloon_release_and_reclaim() {
    let h = H::ready(1);
    let pages = [0x300u64, 0x301, 0x310];
    for &p in &pages {
        h.write(p * P, &[0xabu8; 4096]);
    }
    pfns(&h, BUF, &pages);
    let (s, released) = h.call(0, Call::MemBalloonRelease, &[BUF, 3]);
    assert_eq!((s, released[0]), (Status::Success, 3));
    assert_eq!(h.m.log().released, [0x30_0000, 0x30_1000, 0x31_0000]);
    assert_eq!(
        h.status(0, Call::MemBalloonRelease, &[BUF, 1]),
        Status::InvalidState
    );
    // The guest scribbles on a released page; reclaim still gives zeros back.
    h.write(0x300 * P, &[0x77u8; 64]);
    assert_eq!(h.call(0, Call::MemBalloonReclaim, &[BUF, 3]).1[0], 3);
    for &p in &pages {
        assert!(h.read_bytes(p * P, 4096).iter().all(|&b| b == 0));
    }
    assert_eq!(
        h.status(0, Call::MemBalloonReclaim, &[BUF, 1]),
        Status::InvalidState
    );
    let rep = h.d.report();
    assert_eq!(
        (
            rep.balloon_released,
            rep.balloon_reclaimed,
            rep.balloon_outstanding
        ),
        (3, 3, 0)
    );
}

#[test]
fn balloon_lists_are_checked_whole_before_acting() {
    let h = H::ready(1);
    assert_eq!(
        h.status(0, Call::MemBalloonRelease, &[BUF, 0]),
        Status::InvalidParameter
    );
    assert_eq!(
        h.status(0, Call::MemBalloonRelease, &[BUF, 513]),
        Status::InvalidParameter
    );
    assert_eq!(
        h.status(0, Call::MemBalloonRelease, &[BUF + 4, 1]),
        Status::Misaligned
    );
    assert_eq!(
        h.status(0, Call::MemBalloonRelease, &[BUF + 8, 512]),
        Status::CrossesPage
    );
    // A good page and one outside RAM: nothing is released.
    pfns(&h, BUF, &[0x300, MEM / P]);
    assert_eq!(
        h.status(0, Call::MemBalloonRelease, &[BUF, 2]),
        Status::InvalidAddress
    );
    pfns(&h, BUF, &[0x300, u64::MAX]);
    assert_eq!(
        h.status(0, Call::MemBalloonRelease, &[BUF, 2]),
        Status::InvalidAddress
    );
    assert!(h.m.log().released.is_empty());
    // Duplicates make the list malformed.
    pfns(&h, BUF, &[0x300, 0x301, 0x300]);
    assert_eq!(
        h.status(0, Call::MemBalloonRelease, &[BUF, 3]),
        Status::InvalidParameter
    );
    // The lowest status over the whole list wins: INVALID_ADDRESS (entry 2) before
    // ACCESS_DENIED (entry 1) before INVALID_STATE (entry 0).
    pfns(&h, BUF, &[0x300]);
    assert_eq!(
        h.status(0, Call::MemBalloonRelease, &[BUF, 1]),
        Status::Success
    );
    assert_eq!(h.status(0, Call::TimeSetPage, &[PAGE1]), Status::Success);
    pfns(&h, BUF, &[0x300, PAGE1 / P, MEM / P]);
    assert_eq!(
        h.status(0, Call::MemBalloonRelease, &[BUF, 3]),
        Status::InvalidAddress
    );
    assert_eq!(
        h.status(0, Call::MemBalloonRelease, &[BUF, 2]),
        Status::AccessDenied
    );
    assert_eq!(
        h.status(0, Call::MemBalloonRelease, &[BUF, 1]),
        Status::InvalidState
    );
    // Reclaiming a page that is not released, next to one that is: nothing reclaimed.
    pfns(&h, BUF, &[0x300, 0x301]);
    assert_eq!(
        h.status(0, Call::MemBalloonReclaim, &[BUF, 2]),
        Status::InvalidState
    );
    assert_eq!(h.d.report().balloon_outstanding, 1);
}

#[test]
fn update_pte_writes_and_records() {
    let h = H::ready(1);
    assert_eq!(
        h.status(0, Call::MemUpdatePte, &[BUF + 16, 0x1234_5003, 1]),
        Status::Success
    );
    assert_eq!(h.read::<u64>(BUF + 16), 0x1234_5003);
    let rep = h.d.report();
    assert_eq!(rep.pte_write_count, 1);
    assert_eq!(
        rep.pte_writes,
        [PteWrite {
            vcpu: 0,
            gpa: BUF + 16,
            value: 0x1234_5003,
            level: 1
        }]
    );
    assert_eq!(
        h.status(0, Call::MemUpdatePte, &[BUF + 4, 0, 1]),
        Status::Misaligned
    );
    assert_eq!(
        h.status(0, Call::MemUpdatePte, &[BUF, 0, 0]),
        Status::InvalidParameter
    );
    assert_eq!(
        h.status(0, Call::MemUpdatePte, &[BUF, 0, 5]),
        Status::InvalidParameter
    );
    assert_eq!(
        h.status(0, Call::MemUpdatePte, &[MEM, 0, 4]),
        Status::InvalidAddress
    );
    assert_eq!(h.d.report().pte_write_count, 1);
}

#[test]
fn tlb_flushes() {
    let h = H::ready(2);
    assert_eq!(h.status(1, Call::MemFlushTlbLocal, &[]), Status::Success);
    assert_eq!(
        h.status(0, Call::MemFlushTlbRange, &[0x7fff_0000_0000, 512]),
        Status::Success
    );
    assert_eq!(h.status(0, Call::MemFlushTlbAll, &[]), Status::Success);
    assert_eq!(
        h.status(0, Call::MemFlushTlbRange, &[0x1001, 1]),
        Status::InvalidParameter
    );
    assert_eq!(
        h.status(0, Call::MemFlushTlbRange, &[0x1000, 0]),
        Status::InvalidParameter
    );
    assert_eq!(
        h.status(0, Call::MemFlushTlbRange, &[0x1000, 513]),
        Status::InvalidParameter
    );
    assert_eq!(h.m.log().flushes, [Some(1), None, None]);
    let rep = h.d.report();
    assert_eq!(rep.tlb_flush_count, 3);
    assert_eq!(
        rep.tlb_flushes,
        [
            TlbFlush::Local(1),
            TlbFlush::Range(0x7fff_0000_0000, 512),
            TlbFlush::All
        ]
    );
}

/// PVABI-MEM-017: a range that runs past 2^64 is not guest RAM, and nothing changes.
#[test]
fn a_share_range_past_the_top_of_the_address_space_is_invalid_address() {
    let h = H::ready(1);
    let top = 0u64.wrapping_sub(P);
    for call in [Call::MemShare, Call::MemUnshare] {
        assert_eq!(h.status(0, call, &[top, 2]), Status::InvalidAddress);
        assert_eq!(h.status(0, call, &[top, 1 << 20]), Status::InvalidAddress);
    }
    assert!(h.d.report().shared_ranges.is_empty());
}

/// PVABI-MEM-004, MEM-018, MEM-020: a released page is still RAM for the checks (a second
/// release is INVALID_STATE); sharing and ballooning exclude each other.
#[test]
fn sharing_and_ballooning_exclude_each_other() {
    let h = H::ready(1);
    // Release 0x300; releasing it again is INVALID_STATE, not INVALID_ADDRESS.
    pfns(&h, BUF, &[0x300]);
    assert_eq!(
        h.status(0, Call::MemBalloonRelease, &[BUF, 1]),
        Status::Success
    );
    assert_eq!(
        h.status(0, Call::MemBalloonRelease, &[BUF, 1]),
        Status::InvalidState
    );
    // Sharing a range that holds it: INVALID_STATE, nothing shared; unsharing: harmless.
    assert_eq!(
        h.status(0, Call::MemShare, &[0x2ff * P, 3]),
        Status::InvalidState
    );
    assert!(h.d.report().shared_ranges.is_empty());
    assert_eq!(
        h.status(0, Call::MemUnshare, &[0x2ff * P, 3]),
        Status::Success
    );
    // Lowest value first: a host-owned page in the range gives ACCESS_DENIED.
    assert_eq!(
        h.status(0, Call::TimeSetPage, &[0x301 * P]),
        Status::Success
    );
    assert_eq!(
        h.status(0, Call::MemShare, &[0x300 * P, 2]),
        Status::AccessDenied
    );
    // Releasing a shared page: INVALID_STATE, nothing released.
    assert_eq!(
        h.status(0, Call::MemShare, &[0x350 * P, 4]),
        Status::Success
    );
    pfns(&h, BUF, &[0x360, 0x352]);
    assert_eq!(
        h.status(0, Call::MemBalloonRelease, &[BUF, 2]),
        Status::InvalidState
    );
    assert_eq!(h.d.report().balloon_outstanding, 1);
    // Unshared, it can go; reclaimed, it comes back not shared.
    assert_eq!(
        h.status(0, Call::MemUnshare, &[0x352 * P, 1]),
        Status::Success
    );
    assert_eq!(
        h.status(0, Call::MemBalloonRelease, &[BUF, 2]),
        Status::Success
    );
    assert_eq!(
        h.status(0, Call::MemBalloonReclaim, &[BUF, 2]),
        Status::Success
    );
    assert_eq!(h.d.report().shared_ranges, [(0x350 * P, 2), (0x353 * P, 1)]);
}

/// PVABI-MEM-021: `value` is written as given, whatever its bits and whatever `level`.
#[test]
fn update_pte_writes_any_value_at_any_level() {
    let h = H::ready(1);
    for level in 1..=4 {
        for value in [
            0,
            u64::MAX,
            0x8000_0000_0000_0001,
            0x0000_0000_0000_0080,
            0x1234_5000,
        ] {
            let gpa = BUF + 8 * level;
            assert_eq!(
                h.status(0, Call::MemUpdatePte, &[gpa, value, level]),
                Status::Success
            );
            assert_eq!(h.read::<u64>(gpa), value, "level {level}");
        }
    }
}

/// PVABI-MEM-023: a flush range past the top of the virtual address space succeeds and
/// flushes (here: everything).
#[test]
fn a_flush_range_past_the_top_of_the_address_space_succeeds() {
    let h = H::ready(2);
    let top = 0u64.wrapping_sub(P);
    assert_eq!(
        h.status(0, Call::MemFlushTlbRange, &[top, 512]),
        Status::Success
    );
    assert_eq!(h.m.log().flushes, [None]);
}

/// PVABI-MEM-016: a flush of every vCPU (MEM_FLUSH_TLB_ALL, and MEM_FLUSH_TLB_RANGE, which
/// flushes every vCPU too) asks the machine to flush all of them (`None`), not the vCPUs that
/// run at the time: here vCPU 1 has stopped and vCPU 2 was never started, and each flush is one
/// request for every vCPU. (The reference host's [`Machine::flush_tlb`](crate::Machine) of
/// `None` marks every vCPU, running or not, to flush before it next enters the guest.)
#[test]
fn a_flush_of_every_vcpu_includes_those_not_running() {
    let h = H::ready(3);
    h.start_vcpu_from(0, 1);
    assert_eq!(
        h.raw(1, Call::VcpuStop.code().into(), &[]).2,
        crate::Outcome::StopVcpu
    );
    assert_eq!(h.status(0, Call::MemFlushTlbAll, &[]), Status::Success);
    assert_eq!(
        h.status(0, Call::MemFlushTlbRange, &[0x40_0000, 2]),
        Status::Success
    );
    assert_eq!(
        h.m.log().flushes,
        [None, None],
        "a flush of every vCPU left out the vCPUs that were not running"
    );
}
