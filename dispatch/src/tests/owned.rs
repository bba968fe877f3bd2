//! The lock-free filter over host-owned pages (check 9's fast path): it must never call an
//! owned page free, whatever other pages share its bit, and it must let the exact check
//! answer for pages that only collide with an owned one.

use pvabi_abi::convention::PAGE_SIZE;

use crate::state::{Owner, VmState};

/// Page frames 4096 apart share a bit of the filter.
const ALIAS: u64 = 4096 * PAGE_SIZE;

#[test]
fn the_filter_never_hides_an_owned_page() {
    let mut vm = VmState::default();
    let (a, b) = (0x20_0000, 0x20_0000 + ALIAS);
    assert!(!vm.filter().may_overlap(a, 8), "nothing owned yet");
    vm.claim(&[(a, Owner::TimePage), (b, Owner::EventQueue(0))])
        .expect("free pages");
    for gpa in [a, b, a + PAGE_SIZE - 8, b + 100] {
        assert!(vm.filter().may_overlap(gpa, 8), "{gpa:#x}");
        assert!(vm.overlaps_owned(gpa, 8), "{gpa:#x}");
    }
    // A block that ends on an owned page.
    assert!(vm.filter().may_overlap(a - 8, 16));
    // Releasing one of two pages that share a bit keeps the bit for the other.
    vm.release(a, Owner::TimePage);
    assert!(vm.filter().may_overlap(b, 8));
    assert!(vm.overlaps_owned(b, 8));
    // The released page only collides now: the exact check frees it.
    assert!(!vm.overlaps_owned(a, 8));
    // Releasing by the wrong owner changes nothing.
    vm.release(b, Owner::TimePage);
    assert!(vm.overlaps_owned(b, 8));
    vm.release(b, Owner::EventQueue(0));
    assert!(!vm.filter().may_overlap(a, 8));
    assert!(!vm.filter().may_overlap(b, 8));
    // Neighbours of an owned page are not flagged.
    vm.claim(&[(a, Owner::DeferredQueue(1))])
        .expect("free page");
    assert!(!vm.filter().may_overlap(a + PAGE_SIZE, 8));
    assert!(!vm.filter().may_overlap(a - PAGE_SIZE, PAGE_SIZE));
}

#[test]
fn a_long_range_goes_to_the_exact_check() {
    let mut vm = VmState::default();
    // No bit set, but a range of more than 64 pages is not answered by the filter.
    assert!(vm.filter().may_overlap(0, 65 * PAGE_SIZE));
    assert!(!vm.overlaps_owned(0, 65 * PAGE_SIZE));
    vm.claim(&[(64 * PAGE_SIZE, Owner::StealPage(0))])
        .expect("free page");
    assert!(vm.overlaps_owned(0, 65 * PAGE_SIZE));
}
