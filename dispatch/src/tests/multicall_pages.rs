//! MULTICALL_PAGES (1.3): batches of up to 4096 entries on a list of pages.

use pvabi_abi::batch::{
    multicall_pages_for, MulticallEntry, MULTICALL_PAGES_MAX_ENTRIES, MULTICALL_PAGES_MAX_PAGES,
    MULTICALL_PAGE_ENTRIES,
};
use pvabi_abi::calls::Call;
use pvabi_abi::features::Features;
use pvabi_abi::status::Status;
use pvabi_abi::version::{Version, V1_2, V1_3};

use super::{BUF, BUF2, H, MEM, PAGE1};
use crate::{ConsoleSink, HostConfig};
use zerocopy::{Immutable, IntoBytes};

const SENTINEL: u64 = 0x5a5a_5a5a_5a5a_5a5a;
/// Where the tests put the page list.
const LIST: u64 = 0x18_0000;
/// The first of the pages the tests put entries on (98 pages fit below 0x3a_0000).
const PAGES: u64 = 0x30_0000;
const PER_PAGE: u64 = MULTICALL_PAGE_ENTRIES;
/// Pages for plain MULTICALL arrays.
const AREA: u64 = 0x28_0000;

fn entry(call: Call, args: &[u64]) -> MulticallEntry {
    entry_code(call.code(), args)
}

fn entry_code(code: u32, args: &[u64]) -> MulticallEntry {
    let mut a = [0u64; 6];
    a[..args.len()].copy_from_slice(args);
    MulticallEntry {
        call: code,
        status: 0xffff,
        args: a,
        results: [SENTINEL; 4],
        ..Default::default()
    }
}

/// A quiet 1.3 host with `vcpus` vCPUs.
fn config13(vcpus: u32) -> HostConfig {
    HostConfig {
        vcpus,
        console: ConsoleSink::Discard,
        ..HostConfig::acting_as(V1_3)
    }
}

/// Negotiated 1.3 with every feature.
fn ready13(config: HostConfig) -> H {
    let h = H::with(config);
    h.negotiate(Features::defined_in(V1_3));
    h
}

/// `n` page addresses for a batch, in a scrambled order (the list need not be ascending).
fn scattered(n: u64) -> Vec<u64> {
    (0..n).map(|k| PAGES + ((k * 37) % n) * 4096).collect()
}

/// Writes `entries` onto `pages` (entry `i` on page `i / 42` at `96 * (i % 42)`), fills each
/// page's unused tail and the slots after the last entry with 0xee, and writes the list at
/// `LIST`.
fn place<E: IntoBytes + Immutable>(h: &H, pages: &[u64], entries: &[E]) {
    for &p in pages {
        h.write(p, &[0xeeu8; 4096]);
    }
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(e.as_bytes().len(), 96);
        h.write(at(pages, i as u64), e);
    }
    h.write(LIST, pages);
}

/// The 96 bytes of `e`, with its reserved `flags` set to 1 when `reserved`.
fn raw(e: &MulticallEntry, reserved: bool) -> [u8; 96] {
    let mut b = [0u8; 96];
    b.copy_from_slice(e.as_bytes());
    if reserved {
        b[8] = 1;
    }
    b
}

/// Where entry `i` lies.
fn at(pages: &[u64], i: u64) -> u64 {
    pages[(i / PER_PAGE) as usize] + 96 * (i % PER_PAGE)
}

fn status_of(h: &H, pages: &[u64], i: u64) -> u32 {
    h.u32_at(at(pages, i) + 4)
}

fn results_of(h: &H, pages: &[u64], i: u64) -> [u64; 4] {
    h.read(at(pages, i) + 64)
}

/// MULTICALL_PAGES of `count` entries on the list at `LIST`: (status, next, processed).
fn mcp(h: &H, pages: u64, count: u64, start: u64, flags: u64) -> (Status, u64, u64) {
    let (s, r) = h.call(0, Call::MulticallPages, &[LIST, pages, count, start, flags]);
    (s, r[0], r[1])
}

/// A deterministic mix of entries: batchable calls with results (some changing state, in
/// order), failing ones, a reserved field set (every 11th from 9), non-batchable ones.
fn mixed(n: u64) -> Vec<[u8; 96]> {
    (0..n)
        .map(|i| match i % 11 {
            0 => entry(Call::VcpuInfo, &[]),
            1 => entry(
                Call::ConsoleWriteRegs,
                &[1, u64::from(b'a' + (i % 26) as u8)],
            ),
            2 => entry(Call::MemUpdatePte, &[BUF + 8 * (i % 64), i, 1]),
            3 => entry(Call::EventsSetMask, &[i & 0b111]),
            4 => entry(Call::ConsoleWriteRegs, &[99]),
            5 => entry(Call::ProbeCall, &[u64::from(Call::MulticallPages.code())]),
            6 => entry_code(0x0fff, &[]),
            7 => entry(Call::Multicall, &[BUF2, 1, 0, 0]),
            8 => entry(Call::MulticallPages, &[LIST, 1, 1, 0, 0]),
            9 => entry(Call::TimeFrequency, &[]),
            _ => entry(Call::GetSpecVersion, &[]),
        })
        .enumerate()
        .map(|(i, e)| raw(&e, i % 11 == 9 && i % 2 == 0))
        .collect()
}

/// The call code of a raw entry.
fn code_of(e: &[u8; 96]) -> u32 {
    u32::from_le_bytes(e[..4].try_into().unwrap())
}

/// The arguments of a raw entry.
fn args_of(e: &[u8; 96]) -> [u64; 6] {
    core::array::from_fn(|j| u64::from_le_bytes(e[16 + 8 * j..][..8].try_into().unwrap()))
}

/// Per entry (status, results), the console output, and the words the entries wrote.
type OneByOne = (Vec<(u32, [u64; 4])>, String, Vec<u8>);

/// The same calls made one by one, as 1-entry MULTICALLs (the batch context, so that context
/// checks give the same NOT_ALLOWED_HERE), on a fresh host: per entry (status, results), the
/// console output and the words the entries wrote. Batchable calls without state are also
/// made directly and must agree.
fn one_by_one(entries: &[[u8; 96]]) -> OneByOne {
    let h = ready13(config13(1));
    let slot = BUF2 + 2048;
    let mut out = Vec::new();
    for e in entries {
        h.write(slot, e);
        let (s, r) = h.call(0, Call::Multicall, &[slot, 1, 0, 0]);
        assert_eq!((s, r[0], r[1]), (Status::Success, 1, 1));
        let got = (h.u32_at(slot + 4), h.read::<[u64; 4]>(slot + 64));
        out.push(got);
        let stateless = [
            Call::VcpuInfo,
            Call::ProbeCall,
            Call::TimeFrequency,
            Call::GetSpecVersion,
        ];
        if let Some(c) = Call::from_code(code_of(e).into()) {
            if stateless.contains(&c) && e[8] == 0 {
                let (s, r) = h.call(0, c, &args_of(e));
                assert_eq!(s as u32, got.0, "{c:?} directly");
                let n = c.descriptor().results.len();
                assert_eq!(r[..n], got.1[..n], "{c:?} directly");
            }
        }
    }
    (out, h.d.report().console_text(), h.read_bytes(BUF, 512))
}

#[test]
fn a_paged_batch_gives_the_results_of_the_same_calls_one_by_one() {
    let count = 1024;
    let entries = mixed(count);
    let h = ready13(config13(1));
    let pages = scattered(multicall_pages_for(count));
    assert_eq!(pages.len(), 25);
    place(&h, &pages, &entries);
    assert_eq!(
        mcp(&h, 25, count, 0, 0),
        (Status::Success, count, count),
        "1024 entries in one exit"
    );
    let (want, console, memory) = one_by_one(&entries);
    for (i, (status, results)) in want.iter().enumerate() {
        let i = i as u64;
        assert_eq!(status_of(&h, &pages, i), *status, "entry {i} status");
        if *status == Status::Success as u32 {
            assert_eq!(results_of(&h, &pages, i), *results, "entry {i} results");
        } else {
            assert_eq!(
                results_of(&h, &pages, i),
                [SENTINEL; 4],
                "entry {i} results"
            );
        }
    }
    assert_eq!(h.d.report().console_text(), console);
    assert_eq!(h.read_bytes(BUF, 512), memory);
    // Every kind of outcome occurred.
    for s in [
        Status::Success,
        Status::InvalidParameter,
        Status::NotSupported,
        Status::NotAllowedHere,
    ] {
        assert!(want.iter().any(|w| w.0 == s as u32), "{s:?}");
    }
    // The host wrote nothing but statuses and results: inputs, the unused tails and the
    // slots after the last entry are as the guest left them.
    for (i, e) in entries.iter().enumerate() {
        let got = h.read_bytes(at(&pages, i as u64), 96);
        assert_eq!(got[..4], e[..4], "entry {i} call");
        assert_eq!(got[8..64], e[8..64], "entry {i} flags, reserved, args");
    }
    for (k, &p) in pages.iter().enumerate() {
        assert_eq!(h.read_bytes(p + 4032, 64), [0xee; 64], "page {k} tail");
    }
    let last = pages[24] + 96 * (count - 24 * PER_PAGE);
    assert!(h
        .read_bytes(last, (pages[24] + 4096 - last) as usize)
        .iter()
        .all(|&b| b == 0xee));
    assert_eq!(h.d.report().multicall_entries, count);
}

#[test]
fn the_same_batch_through_multicall_and_multicall_pages_agrees() {
    // 96 entries as three 32-entry MULTICALLs and as one MULTICALL_PAGES.
    let entries = mixed(96);
    let a = ready13(config13(1));
    for chunk in 0..3u64 {
        let gpa = AREA + chunk * 4096;
        a.write(gpa, &entries[chunk as usize * 32..][..32]);
        assert_eq!(
            a.call(0, Call::Multicall, &[gpa, 32, 0, 0]).1[..2],
            [32, 32]
        );
    }
    let b = ready13(config13(1));
    let pages = scattered(3);
    place(&b, &pages, &entries);
    assert_eq!(mcp(&b, 3, 96, 0, 0), (Status::Success, 96, 96));
    for i in 0..96u64 {
        let m = AREA + (i / 32) * 4096 + 96 * (i % 32);
        assert_eq!(status_of(&b, &pages, i), a.u32_at(m + 4), "entry {i}");
        assert_eq!(
            results_of(&b, &pages, i),
            a.read::<[u64; 4]>(m + 64),
            "entry {i}"
        );
    }
    assert_eq!(a.d.report().console_text(), b.d.report().console_text());
}

#[test]
fn the_largest_batch_runs_in_one_exit() {
    let h = ready13(config13(2));
    let count = MULTICALL_PAGES_MAX_ENTRIES;
    let n = MULTICALL_PAGES_MAX_PAGES;
    assert_eq!((count, n), (4096, 98));
    let pages = scattered(n);
    place(
        &h,
        &pages,
        &vec![entry(Call::VcpuInfo, &[]); count as usize],
    );
    assert_eq!(mcp(&h, n, count, 0, 0), (Status::Success, count, count));
    for i in [0, 41, 42, 2047, 4094, 4095] {
        assert_eq!(status_of(&h, &pages, i), 0, "entry {i}");
        assert_eq!(results_of(&h, &pages, i), [0, 2, 0, 0], "entry {i}");
    }
    let rep = h.d.report();
    assert_eq!(rep.multicall_entries, count);
    assert_eq!(rep.count(Call::VcpuInfo, Status::Success), count);
    assert_eq!(rep.count(Call::MulticallPages, Status::Success), 1);
}

/// Nothing ran and nothing was written: every entry keeps its sentinel status.
fn untouched(h: &H, pages: &[u64], count: u64) {
    for i in 0..count {
        assert_eq!(status_of(h, pages, i), 0xffff, "entry {i} was processed");
    }
    assert_eq!(h.d.report().count(Call::VcpuInfo, Status::Success), 0);
}

#[test]
fn gating_by_version_and_feature() {
    let pages = scattered(1);
    let batch = [entry(Call::VcpuInfo, &[])];
    // A host acting as 1.2 does not implement the call (COMPAT-002), whatever is granted,
    // and does not offer the feature.
    let h = H::with(HostConfig {
        console: ConsoleSink::Discard,
        ..HostConfig::acting_as(V1_2)
    });
    place(&h, &pages, &batch);
    assert_eq!(mcp(&h, 1, 1, 0, 0).0, Status::NotSupported);
    let (s, r) = h.call(0, Call::ProbeFeatures, &[]);
    assert_eq!(s, Status::Success);
    assert_eq!(r[0] & Features::MULTICALL_PAGES.bits(), 0);
    h.negotiate(Features::defined_in(V1_2));
    assert_eq!(mcp(&h, 1, 1, 0, 0).0, Status::NotSupported);
    untouched(&h, &pages, 1);

    // A 1.3 host: before NEGOTIATE the call is known but not negotiated.
    let h = H::with(config13(1));
    place(&h, &pages, &batch);
    assert_eq!(mcp(&h, 1, 1, 0, 0).0, Status::NotNegotiated);
    // A guest written for 1.2 asks for minor 2 and the features it knows: it is accepted at
    // 1.3 (the host's highest minor) but not granted MULTICALL_PAGES.
    let request = [
        u64::from(Version::new(1, 2).0),
        0,
        Features::defined_in(V1_2).bits(),
    ];
    let (s, r) = h.call(0, Call::Negotiate, &request);
    assert_eq!(s, Status::Success);
    assert_eq!(r[0], u64::from(V1_3.0));
    assert!(!Features::from_bits_retain(r[1]).contains(Features::MULTICALL_PAGES));
    assert!(Features::from_bits_retain(r[1]).contains(Features::MULTICALL));
    // NOT_GRANTED (step 3) comes before any register or block check.
    assert_eq!(mcp(&h, 1, 1, 0, 0).0, Status::NotGranted);
    assert_eq!(mcp(&h, 0, 5000, 9999, 0xff).0, Status::NotGranted);
    untouched(&h, &pages, 1);

    // Granted: it runs.
    let h = ready13(config13(1));
    place(&h, &pages, &batch);
    assert_eq!(mcp(&h, 1, 1, 0, 0), (Status::Success, 1, 1));
}

#[test]
fn register_arguments_are_checked_at_step_5() {
    let h = ready13(config13(1));
    let pages = scattered(3);
    place(&h, &pages, &vec![entry(Call::VcpuInfo, &[]); 100]);
    let bad: &[(&str, [u64; 4])] = &[
        ("no page", [0, 1, 0, 0]),
        ("99 pages", [99, 4096, 0, 0]),
        ("no entry", [1, 0, 0, 0]),
        ("4097 entries", [98, 4097, 0, 0]),
        ("start past the limit", [3, 100, 4097, 0]),
        ("start past count", [3, 100, 101, 0]),
        ("too few pages for count", [2, 100, 0, 0]),
        ("a page too many", [3, 84, 0, 0]),
        ("two pages too many", [3, 1, 0, 0]),
        ("reserved flag bit 1", [3, 100, 0, 2]),
        ("reserved flag bit 63", [3, 100, 0, 1 << 63]),
    ];
    for (what, [pages_arg, count, start, flags]) in bad {
        assert_eq!(
            mcp(&h, *pages_arg, *count, *start, *flags).0,
            Status::InvalidParameter,
            "{what}"
        );
    }
    untouched(&h, &pages, 100);
    // The boundaries that are valid: 42 entries on 1 page, 43 on 2, start == count.
    assert_eq!(mcp(&h, 1, 42, 0, 0), (Status::Success, 42, 42));
    assert_eq!(mcp(&h, 2, 43, 0, 0), (Status::Success, 43, 43));
    assert_eq!(mcp(&h, 3, 100, 100, 0), (Status::Success, 100, 0));
    assert_eq!(mcp(&h, 3, 100, 0, 1), (Status::Success, 100, 100));
}

#[test]
fn the_page_list_is_a_memory_block() {
    let h = ready13(config13(1));
    // Register a host-owned page (the deferred queue) for the ACCESS_DENIED cases.
    assert_eq!(
        h.status(0, Call::DeferSetQueue, &[PAGE1, 0]),
        Status::Success
    );
    let pages = scattered(2);
    place(&h, &pages, &vec![entry(Call::VcpuInfo, &[]); 50]);
    let call = |list: u64| h.call(0, Call::MulticallPages, &[list, 2, 50, 0, 0]).0;
    // Step 6: aligned to 8.
    assert_eq!(call(LIST + 4), Status::Misaligned);
    // Step 7: two addresses from 8 bytes before a page boundary cross it.
    h.write(LIST + 4096 - 8, &pages[..]);
    assert_eq!(call(LIST + 4096 - 8), Status::CrossesPage);
    // Step 8: guest RAM (the end of RAM, and far beyond it).
    assert_eq!(call(MEM), Status::InvalidAddress);
    assert_eq!(call(u64::MAX - 7), Status::CrossesPage);
    assert_eq!(call(0xffff_ffff_ffff_f000), Status::InvalidAddress);
    // Step 9: not host-owned.
    h.write(PAGE1 + 512, &pages[..]);
    assert_eq!(call(PAGE1 + 512), Status::AccessDenied);
    untouched(&h, &pages, 50);
    assert_eq!(call(LIST), Status::Success);
}

#[test]
fn every_named_page_is_checked_in_list_order_before_any_entry_runs() {
    let h = ready13(config13(1));
    assert_eq!(
        h.status(0, Call::DeferSetQueue, &[PAGE1, 0]),
        Status::Success
    );
    let good = scattered(3);
    let entries = vec![entry(Call::VcpuInfo, &[]); 100];
    // One bad page at each position, each kind of fault.
    let faults: [(u64, Status); 7] = [
        (8, Status::Misaligned),                   // low bits set
        (0x800, Status::Misaligned),               // low bits set
        (1 << 63, Status::InvalidAddress),         // aligned, far beyond RAM
        (MEM, Status::InvalidAddress),             // the first page past RAM
        (PAGE1, Status::AccessDenied),             // host-owned
        (u64::MAX - 4095, Status::InvalidAddress), // the last page of the address space
        (u64::MAX, Status::Misaligned),
    ];
    for position in 0..3 {
        for (value, want) in faults {
            place(&h, &good, &entries);
            let mut list = good.clone();
            list[position] = if value == 8 || value == 0x800 {
                good[position] + value
            } else {
                value
            };
            h.write(LIST, &list[..]);
            assert_eq!(
                mcp(&h, 3, 100, 0, 0).0,
                want,
                "page {position} = {:#x}",
                list[position]
            );
            // Nothing ran, nothing was written (STAT-012), on the good pages.
            for i in 0..100u64 {
                let k = (i / PER_PAGE) as usize;
                if k != position {
                    assert_eq!(h.u32_at(at(&good, i) + 4), 0xffff, "entry {i}");
                }
            }
        }
    }
    assert_eq!(h.d.report().count(Call::VcpuInfo, Status::Success), 0);
    // The last page's block is only its entries: 16 entries at the last page in RAM fit.
    let tail = [good[0], good[1], MEM - 4096];
    place(&h, &tail, &entries);
    assert_eq!(mcp(&h, 3, 100, 0, 0), (Status::Success, 100, 100));
    // A page before `start`'s page is checked too, though none of its entries runs.
    let mut list = good.clone();
    list[0] = MEM;
    place(&h, &good, &entries);
    h.write(LIST, &list[..]);
    assert_eq!(mcp(&h, 3, 100, 90, 0).0, Status::InvalidAddress);
}

/// Precedence when several things are wrong at once: the step order, then the list before
/// its pages, then the pages in list order, each through steps 6 to 9 before the next.
#[test]
fn precedence_of_several_faults() {
    let h = ready13(config13(1));
    assert_eq!(
        h.status(0, Call::DeferSetQueue, &[PAGE1, 0]),
        Status::Success
    );
    let good = scattered(3);
    place(&h, &good, &vec![entry(Call::VcpuInfo, &[]); 100]);
    let run = |list: &[u64], list_gpa: u64, count: u64, flags: u64| {
        h.write(LIST, list);
        h.call(
            0,
            Call::MulticallPages,
            &[
                list_gpa,
                multicall_pages_for(count.max(1)).min(98),
                count,
                0,
                flags,
            ],
        )
        .0
    };
    // Step 5 before the list block (step 6) and before its pages.
    assert_eq!(run(&[MEM; 3], LIST + 4, 100, 2), Status::InvalidParameter);
    assert_eq!(run(&[MEM; 3], MEM, 4097, 0), Status::InvalidParameter);
    // The list block (steps 6-9) before the pages it names: an unaligned list.
    assert_eq!(run(&[PAGE1; 3], LIST + 4, 100, 0), Status::Misaligned);
    // The list outside RAM: its pages are never read.
    assert_eq!(run(&[good[0] + 8; 3], MEM, 100, 0), Status::InvalidAddress);
    // Page 0 host-owned, page 1 misaligned: page 0 is checked first, through step 9.
    assert_eq!(
        run(&[PAGE1, good[1] + 8, good[2]], LIST, 100, 0),
        Status::AccessDenied
    );
    // Page 0 fine, page 1 outside RAM, page 2 misaligned: page 1 first.
    assert_eq!(
        run(&[good[0], MEM, good[2] + 8], LIST, 100, 0),
        Status::InvalidAddress
    );
    // Page 0 misaligned, page 1 host-owned: MISALIGNED, although ACCESS_DENIED ranks higher.
    assert_eq!(
        run(&[good[0] + 8, PAGE1, good[2]], LIST, 100, 0),
        Status::Misaligned
    );
    // A bad page beats bad entries: no entry is looked at.
    let bad_entries = vec![entry_code(0x0fff, &[]); 100];
    place(&h, &good, &bad_entries);
    assert_eq!(
        run(&[good[0], good[1], MEM], LIST, 100, 0),
        Status::InvalidAddress
    );
    for i in 0..100u64 {
        assert_eq!(h.u32_at(at(&good, i) + 4), 0xffff);
    }
    // Bad entries with good pages: the call succeeds and each entry has its own status.
    assert_eq!(run(&good, LIST, 100, 0), Status::Success);
    assert_eq!(status_of(&h, &good, 99), Status::NotSupported as u32);
}

/// DEFER-003: a direct MULTICALL_PAGES is a sync point: it drains once it has passed step 5,
/// also when a page check then fails; not when step 5 fails.
#[test]
fn it_is_a_drain_point_after_step_5() {
    let h = ready13(config13(1));
    assert_eq!(
        h.status(0, Call::DeferSetQueue, &[PAGE1, 0]),
        Status::Success
    );
    let good = scattered(1);
    place(&h, &good, &[entry(Call::VcpuInfo, &[])]);
    let queue = |value: u64| {
        let tail: u32 = h.u32_at(PAGE1 + 4);
        let e = pvabi_abi::batch::DeferredEntry {
            call: Call::MemUpdatePte.code(),
            flags: pvabi_abi::convention::ReservedU32::Zero,
            args: [BUF, value, 1],
        };
        h.write(PAGE1 + 64 + u64::from(tail % 64) * 32, &e);
        h.write(PAGE1 + 4, &(tail + 1));
    };
    queue(1);
    assert_eq!(mcp(&h, 2, 1, 0, 0).0, Status::InvalidParameter);
    assert_eq!(h.read::<u64>(BUF), 0, "step 5 failed: no drain");
    h.write(LIST, &[MEM]);
    assert_eq!(mcp(&h, 1, 1, 0, 0).0, Status::InvalidAddress);
    assert_eq!(h.read::<u64>(BUF), 1, "a page check failed after the drain");
    queue(2);
    h.write(LIST, &good[..]);
    assert_eq!(mcp(&h, 1, 1, 0, 0), (Status::Success, 1, 1));
    assert_eq!(h.read::<u64>(BUF), 2);
}

/// BATCH-007 to BATCH-009 across pages: with a budget of `b` entries per exit, every issue
/// processes `b` entries (the last one what is left), and re-issuing from `next` completes
/// the batch with every entry run once and in order, whatever `b` (every page boundary and
/// every index in between).
#[test]
fn preemption_at_every_index_resumes_correctly() {
    // 127 entries: pages of 42, 42, 42 and 1.
    let count = 127u64;
    let n = multicall_pages_for(count);
    assert_eq!(n, 4);
    let pages = scattered(n);
    // Each entry writes its index into its own word: the words give the order of effects.
    let entries: Vec<_> = (0..count)
        .map(|i| entry(Call::MemUpdatePte, &[BUF + 8 * i, i + 1, 1]))
        .collect();
    for budget in 1..=count + 1 {
        let h = ready13(HostConfig {
            max_multicall_pages: budget as u32,
            ..config13(1)
        });
        place(&h, &pages, &entries);
        let mut start = 0;
        let mut issues = 0;
        loop {
            let (s, next, processed) = mcp(&h, n, count, start, 0);
            issues += 1;
            assert_eq!(processed, budget.min(count - start), "budget {budget}");
            assert_eq!(next, start + processed);
            if s == Status::Success {
                assert_eq!(next, count);
                break;
            }
            assert_eq!(s, Status::Incomplete, "budget {budget}");
            assert!(next < count);
            // Entries from `next` on are untouched; those before it are done.
            assert_eq!(status_of(&h, &pages, next), 0xffff, "budget {budget}");
            assert_eq!(status_of(&h, &pages, next - 1), 0, "budget {budget}");
            start = next;
        }
        assert_eq!(issues, count.div_ceil(budget), "budget {budget}");
        for i in 0..count {
            assert_eq!(status_of(&h, &pages, i), 0, "budget {budget}, entry {i}");
            assert_eq!(h.read::<u64>(BUF + 8 * i), i + 1);
        }
        let rep = h.d.report();
        assert_eq!(rep.count(Call::MemUpdatePte, Status::Success), count);
        assert_eq!(rep.multicall_preemptions, issues - 1);
    }
}

/// Starting anywhere (a resume index the guest chose) runs exactly entries `start..count`.
#[test]
fn every_start_index_runs_exactly_the_rest() {
    let count = 90u64;
    let pages = scattered(3);
    let h = ready13(config13(1));
    for start in 0..=count {
        place(
            &h,
            &pages,
            &vec![entry(Call::VcpuInfo, &[]); count as usize],
        );
        assert_eq!(
            mcp(&h, 3, count, start, 0),
            (Status::Success, count, count - start)
        );
        for i in 0..count {
            let want = if i < start { 0xffff } else { 0 };
            assert_eq!(status_of(&h, &pages, i), want, "start {start}, entry {i}");
        }
    }
}

/// STOP_ON_ERROR across a page boundary, and a resume after the failing entry.
#[test]
fn stop_on_error_across_pages() {
    let h = ready13(config13(1));
    let pages = scattered(3);
    let mut entries = vec![entry(Call::VcpuInfo, &[]); 100];
    entries[42] = entry(Call::ConsoleWriteRegs, &[99]); // first entry of page 1
    entries[84] = entry(Call::Negotiate, &[0x10000]); // first entry of page 2
    place(&h, &pages, &entries);
    assert_eq!(mcp(&h, 3, 100, 0, 1), (Status::Success, 43, 43));
    assert_eq!(status_of(&h, &pages, 42), Status::InvalidParameter as u32);
    assert_eq!(status_of(&h, &pages, 43), 0xffff);
    assert_eq!(mcp(&h, 3, 100, 43, 1), (Status::Success, 85, 42));
    assert_eq!(status_of(&h, &pages, 84), Status::NotAllowedHere as u32);
    assert_eq!(mcp(&h, 3, 100, 85, 1), (Status::Success, 100, 15));
    // Without STOP_ON_ERROR, the preempting budget at a failing entry is INCOMPLETE.
    let h = ready13(HostConfig {
        max_multicall_pages: 43,
        ..config13(1)
    });
    place(&h, &pages, &entries);
    assert_eq!(mcp(&h, 3, 100, 0, 0), (Status::Incomplete, 43, 43));
    // With it, the same point ends the batch: SUCCESS (BATCH-006).
    place(&h, &pages, &entries);
    assert_eq!(mcp(&h, 3, 100, 0, 1), (Status::Success, 43, 43));
}

/// BATCH-011: entries run from the one copy made before the first runs, and the list from
/// its copy: an entry that rewrites a later entry, or the list, changes nothing.
#[test]
fn entries_and_list_run_from_the_one_copy() {
    let h = ready13(config13(1));
    let pages = scattered(2);
    let garbage = u64::from(Call::SystemShutdown.code()) | (1 << 32);
    let mut entries = vec![entry(Call::VcpuInfo, &[]); 60];
    // Entry 0 rewrites entry 50 (on page 1) with a reserved bit and a non-batchable call.
    entries[0] = entry(Call::MemUpdatePte, &[at(&pages, 50), garbage, 1]);
    // Entry 1 rewrites the list's second address to a page outside RAM.
    entries[1] = entry(Call::MemUpdatePte, &[LIST + 8, MEM, 1]);
    place(&h, &pages, &entries);
    assert_eq!(mcp(&h, 2, 60, 0, 0), (Status::Success, 60, 60));
    for i in 0..60 {
        assert_eq!(status_of(&h, &pages, i), 0, "entry {i}");
    }
    assert_eq!(results_of(&h, &pages, 50), [0, 1, 0, 0]);
    assert_eq!(h.u32_at(at(&pages, 50)), Call::SystemShutdown.code());
    assert_eq!(h.read::<u64>(LIST + 8), MEM);
}

/// A page named twice holds the same entries twice; the host writes statuses in index
/// order, so the later entry's answer is what remains.
#[test]
fn a_page_named_twice() {
    let h = ready13(config13(1));
    let page = PAGES;
    let mut entries = vec![entry(Call::VcpuInfo, &[]); 42];
    entries[0] = entry(Call::EventsSetMask, &[0b10]);
    place(&h, &[page], &entries);
    h.write(LIST, &[page, page]);
    assert_eq!(mcp(&h, 2, 84, 0, 0), (Status::Success, 84, 84));
    // Entry 0 ran twice (as entries 0 and 42): the second answer, the mask the first set.
    assert_eq!(status_of(&h, &[page], 0), 0);
    assert_eq!(results_of(&h, &[page], 0)[0], 0b10);
    assert_eq!(h.d.report().count(Call::VcpuInfo, Status::Success), 82);
}
