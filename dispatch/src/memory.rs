//! Memory family: sharing, ballooning, page-table entry updates and TLB flushes.

use pvabi_abi::calls::Call;
use pvabi_abi::convention::PAGE_SIZE;
use pvabi_abi::status::Status;

use crate::faults::injected;
use crate::guest_mem;
use crate::machine::Machine;
use crate::report::{PteWrite, Report, TlbFlush};
use crate::state::Inner;
use crate::sync::write_lock;
use crate::{done, Reply, Req};

pub(crate) fn handle<M: Machine>(h: &Inner<M>, r: &Req) -> Result<Reply, Status> {
    match r.call {
        Call::MemShare | Call::MemUnshare => {
            share(h, r.call == Call::MemShare, r.args[0], r.args[1])
        }
        Call::MemBalloonRelease | Call::MemBalloonReclaim => {
            let release = r.call == Call::MemBalloonRelease;
            if let Some(c) = &h.checker {
                let at = if release {
                    "at the next MEM_BALLOON_RELEASE"
                } else {
                    "at the MEM_BALLOON_RECLAIM"
                };
                h.check_released_writes(c, r.vcpu, at);
            }
            balloon(h, release, r.block.bytes())
        }
        Call::MemUpdatePte => update_pte(h, r),
        Call::MemFlushTlbLocal => flush(h, Some(r.vcpu), TlbFlush::Local(r.vcpu)),
        Call::MemFlushTlbRange
            if injected!(h, FlushRangePastTheTopRefused)
                && r.args[0].checked_add(r.args[1] << 12).is_none() =>
        {
            Err(Status::InvalidParameter)
        }
        Call::MemFlushTlbRange => flush(h, None, TlbFlush::Range(r.args[0], r.args[1])),
        Call::MemFlushTlbAll => flush(h, None, TlbFlush::All),
        _ => Err(Status::NotSupported),
    }
}

/// MEM_SHARE / MEM_UNSHARE of `pages` pages from `start` (page-aligned, 1..=2^20 pages:
/// check 5). The whole range must be RAM (INVALID_ADDRESS; a range past 2^64 is not: MEM-017),
/// must not overlap a host-owned page (ACCESS_DENIED) and, to share, must hold no released
/// page (INVALID_STATE: MEM-018). Sharing a shared page and unsharing a page that is not shared
/// are harmless; a released page is never shared.
fn share<M: Machine>(h: &Inner<M>, share: bool, start: u64, pages: u64) -> Result<Reply, Status> {
    if !guest_mem::pages_in_ram(h.machine.memory(), start, pages) {
        if injected!(h, ShareIgnoresRamBounds) {
            return done(&[]);
        }
        return Err(Status::InvalidAddress);
    }
    let mut vm = write_lock(&h.vm);
    // In RAM, so `pages * PAGE_SIZE` and the end do not overflow.
    if vm.overlaps_owned(start, pages * PAGE_SIZE) {
        return Err(Status::AccessDenied);
    }
    let first = start / PAGE_SIZE;
    if share && vm.released.range(first..first + pages).next().is_some() {
        return Err(Status::InvalidState);
    }
    if share {
        vm.share(first, first + pages);
    } else {
        vm.unshare(first, first + pages);
    }
    done(&[])
}

/// MEM_BALLOON_RELEASE / MEM_BALLOON_RECLAIM of the copied PFN list. All-or-nothing: every
/// entry is checked before any page changes state. Duplicate entries make the list malformed
/// (INVALID_PARAMETER, block contents). Then, over all entries, the lowest applicable status
/// wins: INVALID_ADDRESS (not RAM), ACCESS_DENIED (host-owned), INVALID_STATE (release: already
/// released or shared, MEM-020; reclaim: not released). A released page is still RAM for these
/// checks (MEM-004).
fn balloon<M: Machine>(h: &Inner<M>, release: bool, list: &[u8]) -> Result<Reply, Status> {
    let pfns: Vec<u64> = list
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
        .collect();
    let mut sorted = pfns.clone();
    sorted.sort_unstable();
    if sorted.windows(2).any(|w| w[0] == w[1]) {
        return Err(Status::InvalidParameter);
    }
    let mem = h.machine.memory();
    let gpas: Vec<u64> = {
        let mut vm = write_lock(&h.vm);
        let mut worst: Option<Status> = None;
        for &pfn in &pfns {
            let gpa = pfn.checked_mul(PAGE_SIZE);
            let status = match gpa {
                Some(gpa) if guest_mem::in_ram(mem, gpa, PAGE_SIZE) => {
                    if vm.overlaps_owned(gpa, PAGE_SIZE) {
                        Some(Status::AccessDenied)
                    } else if (vm.released.contains(&pfn) == release
                        && !(release && injected!(h, BalloonDoubleReleaseAccepted)))
                        || (release && is_shared(&vm.shared, pfn))
                    {
                        Some(Status::InvalidState)
                    } else {
                        None
                    }
                }
                _ => Some(Status::InvalidAddress),
            };
            if let Some(s) = status {
                worst = Some(worst.map_or(s, |w| if (s as u32) < (w as u32) { s } else { w }));
            }
        }
        if let Some(s) = worst {
            return Err(s);
        }
        for &pfn in &pfns {
            if release {
                vm.released.insert(pfn);
            } else {
                vm.released.remove(&pfn);
            }
        }
        pfns.iter().map(|&p| p * PAGE_SIZE).collect()
    };
    if release {
        h.machine.release_pages(&gpas);
        if injected!(h, ReleasedPageLeaksData) {
            // Another owner's bytes where the guest's were.
            let stale = [0xa5u8; PAGE_SIZE as usize];
            for &gpa in &gpas {
                guest_mem::write(mem, gpa, &stale);
            }
        }
    } else {
        // Reclaimed pages come back zeroed, whatever the machine did with them.
        let zero = [0u8; PAGE_SIZE as usize];
        for &gpa in &gpas {
            guest_mem::write(mem, gpa, &zero);
        }
    }
    let n = gpas.len() as u64;
    h.record(|r| {
        if release {
            r.balloon_released += n;
        } else {
            r.balloon_reclaimed += n;
        }
    });
    done(&[n])
}

/// Whether page frame `pfn` is in one of the disjoint shared ranges `start -> end`.
fn is_shared(shared: &std::collections::BTreeMap<u64, u64>, pfn: u64) -> bool {
    shared
        .range(..=pfn)
        .next_back()
        .is_some_and(|(_, &end)| pfn < end)
}

/// MEM_UPDATE_PTE: one atomic 64-bit store to the checked, 8-aligned word, of `value` as given
/// whatever `level` says (MEM-021).
fn update_pte<M: Machine>(h: &Inner<M>, r: &Req) -> Result<Reply, Status> {
    let crate::check::Block::Word(gpa) = r.block else {
        return Err(Status::InvalidParameter);
    };
    if let Some(c) = &h.checker {
        h.check_not_released(c, r.vcpu, Call::MemUpdatePte, gpa, 8);
        c.pte_update(r.vcpu, gpa);
    }
    let value = if injected!(h, UpdatePteDropsNx) {
        r.args[1] & !(1 << 63)
    } else {
        r.args[1]
    };
    if injected!(h, UpdatePteTornStore) {
        // Two 32-bit halves with a pause between: a concurrent reader sees a mix.
        let mem = h.machine.memory();
        guest_mem::write(mem, gpa, &(value as u32).to_le_bytes());
        std::thread::sleep(std::time::Duration::from_micros(20));
        guest_mem::write(mem, gpa + 4, &((value >> 32) as u32).to_le_bytes());
    } else if !guest_mem::store_u64(h.machine.memory(), gpa, value) {
        return Err(Status::InvalidAddress);
    }
    let write = PteWrite {
        vcpu: r.vcpu,
        gpa,
        value,
        level: r.args[2] as u8,
    };
    h.record(|rep| {
        rep.pte_write_count += 1;
        Report::push_capped(&mut rep.pte_writes, write);
    });
    done(&[])
}

fn flush<M: Machine>(h: &Inner<M>, target: Option<u32>, what: TlbFlush) -> Result<Reply, Status> {
    h.machine.flush_tlb(target);
    h.record(|rep| {
        rep.tlb_flush_count += 1;
        Report::push_capped(&mut rep.tlb_flushes, what);
    });
    done(&[])
}
