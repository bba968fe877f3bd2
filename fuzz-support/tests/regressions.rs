//! Inputs that once failed an oracle, each named for what it exercises. All were oracle
//! errors (the host answered as the spec says); each test fails with the oracle as it was.

use pvabi_fuzz_support::{run, seeded_input, Class};

/// The stable run's input for `seed` of `class` (see tests/stable.rs).
fn input(class: Class, seed: u64) -> Vec<u8> {
    let len = 64 + (seed as usize * 37) % 2048;
    seeded_input(seed ^ (class as u64) << 32, len)
}

/// A MULTICALL list whose entry 2 is a MEM_UPDATE_PTE of the word at the list's own entry 0
/// (`call` and `status`). The host runs the entry and writes the PTE after entry 0's status,
/// so entry 0 reads back with the PTE's value as its status (0x4000000). The oracle took
/// that for an undefined status; now it does not read back an entry a PTE update of the same
/// call may have rewritten. (Found as seed 14446; the seed that builds this input changes when
/// the call table grows: 2210 since 1.3 added MULTICALL_PAGES. The assertion below fails if
/// the seed no longer reaches the case.)
#[test]
fn a_pte_update_aimed_at_its_own_multicall_list() {
    let stats = run(Class::Multicall, &input(Class::Multicall, 2210)).expect("no violation");
    assert_eq!(stats.entries.get("rewritten by a PTE update"), Some(&1));
}

/// A ring notify that runs a MEM_BALLOON_RELEASE submission of page 0: the machine zeroes the
/// page (a word MEM_UPDATE_PTE set there earlier goes back to 0). The oracle allowed released
/// pages to change after a direct call but not after a ring notify.
#[test]
fn a_ring_notify_may_zero_the_pages_a_submission_releases() {
    let stats = run(Class::Ring, &input(Class::Ring, 6380)).expect("no violation");
    assert!(stats.calls > 0);
}

/// libFuzzer's `single` input (crash-201cc679...): MEM_BALLOON_RELEASE of page 0, a guest
/// write to page 0 (which a guest must not make, MEM-006, but a fuzzer does), then
/// MEM_BALLOON_RECLAIM of page 0, which fills it with zeros (MEM-009). The oracle allowed a
/// released page to change only in the call that released it; now a page released in the
/// input may come back all zeros, and a successful reclaim must leave its pages zeroed.
#[test]
fn a_reclaimed_page_comes_back_zeroed() {
    const INPUT: &[u8] = &[
        0xa7, 0xa7, 0xbf, 0xf7, 0x0a, 0xff, 0xff, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02,
        0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0xf9, 0xfd, 0xfd, 0xfd, 0xfd, 0xfd, 0xfd, 0xfd,
        0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02,
        0x3b, 0xf2, 0xf2, 0xd2, 0xf2, 0xf2, 0xf2, 0xf2, 0xf2, 0xf2, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xf7, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xf2, 0x00, 0xca, 0x9a, 0x3b, 0xf2, 0x2e, 0x02, 0xc6, 0x02, 0x02, 0x02, 0x06, 0x02,
        0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0xce, 0xce, 0xce,
    ];
    let stats = run(Class::Single, INPUT).expect("no violation");
    assert!(stats.statuses.get("SUCCESS").copied().unwrap_or(0) >= 3);
}

/// libFuzzer's `multicall` input (crash-58cf358b...): a MULTICALL_PAGES (1.3) whose page list names
/// page 0, so the host writes entries' status and results there. The oracle allowed writes to
/// MULTICALL's entries but did not know MULTICALL_PAGES (BATCH-014); now it allows the
/// status and results of the entries on every listed page, and INCOMPLETE from it.
#[test]
fn multicall_pages_writes_its_entries_on_the_listed_pages() {
    const INPUT: &[u8] = &[
        0x4e, 0x4f, 0x54, 0x5f, 0x53, 0x55, 0x50, 0x50, 0x32, 0x4f, 0x52, 0x54, 0x45, 0x44, 0x04,
        0x00, 0x00, 0x00, 0xe7, 0x4e, 0x4f, 0x54, 0x5f, 0x53, 0x55, 0x50, 0x50, 0x32, 0x4f, 0x52,
        0xa3, 0x45, 0x44, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0x22, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0x5d,
        0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0x32, 0xe7, 0x02, 0x00, 0x01, 0x00, 0xe7, 0xe7,
        0x5d, 0xe7, 0xe7, 0xe7, 0xe7, 0x4e, 0x4f, 0x54, 0x5f, 0x4e, 0x45, 0x47, 0x4f, 0x54, 0x49,
        0x41, 0x54, 0x45, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7,
        0xe7, 0xe7, 0xe7, 0xfd,
    ];
    let stats = run(Class::Multicall, INPUT).expect("no violation");
    assert!(stats.calls > 0);
}
