//! MULTICALL, MULTICALL_PAGES and the deferred queue. Every entry goes through the same
//! `execute` core as a direct call, in its own context ([`Ctx::Multicall`], [`Ctx::Deferred`]);
//! MULTICALL and MULTICALL_PAGES share one entry loop and differ only in where the entries lie.

use std::mem::offset_of;

use pvabi_abi::batch::{
    DeferredEntry, DeferredQueueHeader, MulticallEntry, DEFERRED_ENTRIES_OFFSET,
    DEFERRED_QUEUE_CAPACITY, MULTICALL_PAGE_ENTRIES, MULTICALL_STOP_ON_ERROR,
};
use pvabi_abi::calls::Call;
use pvabi_abi::convention::{within_one_page, PAGE_SIZE};
use pvabi_abi::status::Status;
use zerocopy::{IntoBytes, TryFromBytes};

use crate::check::Ctx;
use crate::faults::injected;
use crate::guest_mem;
use crate::machine::Machine;
use crate::state::{DeferredQueue, Inner, Owner};
use crate::sync::{lock, write_lock};
use crate::{done, Outcome, Reply, Req};

const MC_SIZE: usize = size_of::<MulticallEntry>();
const PAGE_ENTRIES: usize = MULTICALL_PAGE_ENTRIES as usize;
const MC_STATUS: u64 = offset_of!(MulticallEntry, status) as u64;
const MC_RESULTS: u64 = offset_of!(MulticallEntry, results) as u64;
const DQ_HEAD: u64 = offset_of!(DeferredQueueHeader, head) as u64;
const DQ_TAIL: u64 = offset_of!(DeferredQueueHeader, tail) as u64;
const DQ_ERRORS: u64 = offset_of!(DeferredQueueHeader, error_count) as u64;
const DQ_ENTRY_SIZE: u64 = size_of::<DeferredEntry>() as u64;

pub(crate) fn handle<M: Machine>(h: &Inner<M>, r: &Req) -> Result<Reply, Status> {
    match r.call {
        Call::Multicall => multicall(h, r),
        Call::MulticallPages => multicall_pages(h, r),
        Call::DeferSetQueue => defer_set_queue(h, r.vcpu, r.block.page_arg()),
        Call::DeferFlush => {
            let (processed, failed) = h.drain_deferred(r.vcpu);
            done(&[u64::from(processed), u64::from(failed)])
        }
        _ => Err(Status::NotSupported),
    }
}

/// The raw call code of a 32-byte-or-longer entry whose first `u32` at `offset` is the code,
/// for the report when the entry does not parse.
fn raw_code(bytes: &[u8], offset: usize) -> u64 {
    bytes.get(offset..offset + 4).map_or(0, |b| {
        u64::from(u32::from_le_bytes(b.try_into().unwrap_or_default()))
    })
}

/// MULTICALL over the one copy of the entry array: each entry from `start` runs through
/// `execute` (a malformed entry gets INVALID_PARAMETER); only its `status` and, on SUCCESS,
/// `results` are written back. At most `max_multicall` entries run per call: then INCOMPLETE
/// with `r0` the resume index.
fn multicall<M: Machine>(h: &Inner<M>, r: &Req) -> Result<Reply, Status> {
    let gpa = r.args[0];
    // `count` is 1..=32 and `start <= count` (check 5); the copy holds `count` entries.
    let count = r.args[1] as usize;
    let start = r.args[2] as usize;
    let batch = Batch {
        start,
        count,
        stop_on_error: r.args[3] & MULTICALL_STOP_ON_ERROR != 0,
        budget: h.config.max_multicall as usize,
    };
    // The copy holds entries 0..count; run from `start`.
    let copy = r.block.bytes().get(start * MC_SIZE..).unwrap_or_default();
    // The entry array (checked and copied as the call's block) looked up once.
    let array = [guest_mem::Area::new(
        h.machine.memory(),
        gpa,
        count * MC_SIZE,
    )];
    run_batch(h, r.vcpu, &batch, copy, &array, |i| {
        (0, (i * MC_SIZE) as u64)
    })
}

/// MULTICALL_PAGES (list, pages, count, start, flags). Check 5 made `pages` the number of
/// pages `count` entries fill and `start <= count`; checks 6-9 and the one copy covered the
/// page list. Then each page the list names goes through checks 6-9 in list order, as the
/// block of the entries it holds (BATCH-017); then entries `start..count` are copied once,
/// page by page, before any runs (BATCH-011); then they run as MULTICALL's do.
fn multicall_pages<M: Machine>(h: &Inner<M>, r: &Req) -> Result<Reply, Status> {
    let list: Vec<u64> = r
        .block
        .bytes()
        .chunks_exact(8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
        .collect();
    let count = r.args[2] as usize;
    let start = r.args[3] as usize;
    let on_page = |k: usize| count.saturating_sub(k * PAGE_ENTRIES).min(PAGE_ENTRIES);
    let mem = h.machine.memory();
    let first_checked = if injected!(h, MulticallPagesSkipsPagesBeforeStart) {
        start / PAGE_ENTRIES
    } else {
        0
    };
    for (k, &page) in list.iter().enumerate().skip(first_checked) {
        let size = (on_page(k) * MC_SIZE) as u64;
        if !page.is_multiple_of(PAGE_SIZE) {
            return Err(Status::Misaligned);
        }
        if !within_one_page(page, size) {
            // Unreachable: an aligned page holds its at most 4032 bytes of entries.
            return Err(Status::CrossesPage);
        }
        if !guest_mem::in_ram(mem, page, size) {
            return Err(Status::InvalidAddress);
        }
        if h.overlaps_owned(page, size) {
            return Err(Status::AccessDenied);
        }
    }
    // The one copy of entries start..count, read page by page.
    let mut copy = Vec::with_capacity((count - start) * MC_SIZE);
    let mut i = start;
    while i < count {
        let (k, slot) = (i / PAGE_ENTRIES, i % PAGE_ENTRIES);
        let n = on_page(k) - slot;
        let page = list.get(k).copied().unwrap_or_default();
        copy.extend(guest_mem::copy_in(
            mem,
            page + (slot * MC_SIZE) as u64,
            n * MC_SIZE,
        )?);
        i += n;
    }
    let batch = Batch {
        start,
        count,
        stop_on_error: r.args[4] & MULTICALL_STOP_ON_ERROR != 0,
        budget: h.config.max_multicall_pages as usize,
    };
    // Each listed page (checked above) looked up once.
    let pages: Vec<_> = list
        .iter()
        .enumerate()
        .map(|(k, &page)| guest_mem::Area::new(mem, page, on_page(k) * MC_SIZE))
        .collect();
    let reply = run_batch(h, r.vcpu, &batch, &copy, &pages, |i| {
        (i / PAGE_ENTRIES, ((i % PAGE_ENTRIES) * MC_SIZE) as u64)
    });
    match reply {
        Ok(mut reply)
            if injected!(h, MulticallPagesResumeBackAcrossPage)
                && reply.status == Status::Incomplete
                && reply.results[0] % PAGE_ENTRIES as u64 == 0 =>
        {
            reply.results[0] -= 1;
            Ok(reply)
        }
        other => other,
    }
}

/// What a MULTICALL or MULTICALL_PAGES issue runs: entries `start..count`, with STOP_ON_ERROR
/// or not, at most `budget` of them before the host preempts.
struct Batch {
    start: usize,
    count: usize,
    stop_on_error: bool,
    budget: usize,
}

/// The one entry loop of MULTICALL and MULTICALL_PAGES (BATCH-002 to BATCH-008). `copy` holds
/// entries `start..count`, copied before any runs; entry `i` lies in guest memory at offset
/// `locate(i).1` of `areas[locate(i).0]`, where its `status` and, on SUCCESS, its `results`
/// are written.
fn run_batch<M: Machine>(
    h: &Inner<M>,
    vcpu: u32,
    b: &Batch,
    copy: &[u8],
    areas: &[guest_mem::Area<'_, M::Memory>],
    locate: impl Fn(usize) -> (usize, u64),
) -> Result<Reply, Status> {
    let mut next = b.start;
    let mut processed = 0usize;
    let mut preempted = false;
    while next < b.count {
        if processed == b.budget {
            preempted = true;
            break;
        }
        let at = (next - b.start) * MC_SIZE;
        let raw = copy.get(at..at + MC_SIZE).unwrap_or_default();
        let (status, results) = match MulticallEntry::try_read_from_bytes(raw) {
            Ok(e) => match h.execute(vcpu, Ctx::Multicall, u64::from(e.call), e.args) {
                // Batchable calls always resume with SUCCESS and results.
                Ok(reply) => (Status::Success, Some(reply.results)),
                Err(s) => (s, None),
            },
            Err(_) => {
                h.count_call(vcpu, raw_code(raw, 0), Status::InvalidParameter);
                (Status::InvalidParameter, None)
            }
        };
        // Every entry lies in one of the areas (the array, or a listed page).
        let (k, at) = locate(next);
        if let Some(area) = areas.get(k) {
            area.write(at + MC_STATUS, &(status as u32).to_le_bytes());
            // The results only on SUCCESS (undefined slots are 0: BATCH-003); a failed entry's
            // `results` are left as the guest wrote them, strict or not (BATCH-010).
            let failed_too = injected!(h, MulticallWritesFailedResults).then_some([0; 4]);
            if let Some(res) = results.or(failed_too) {
                area.write(at + MC_RESULTS, res.as_bytes());
            }
        }
        processed += 1;
        next += 1;
        if status != Status::Success && b.stop_on_error {
            break;
        }
    }
    h.record(|rep| {
        rep.multicall_entries += processed as u64;
        rep.multicall_preemptions += u64::from(preempted);
    });
    let resume = next + usize::from(preempted && injected!(h, MulticallResumeIndexOffByOne));
    let results = [resume as u64, processed as u64, 0, 0];
    Ok(Reply {
        status: if preempted {
            Status::Incomplete
        } else {
            Status::Success
        },
        results,
        defined: 0,
        then: Outcome::Resume,
    })
}

/// DEFER_SET_QUEUE: the old queue was drained (sync point); register the new page (or none).
fn defer_set_queue<M: Machine>(
    h: &Inner<M>,
    vcpu: u32,
    page: Option<u64>,
) -> Result<Reply, Status> {
    let owner = Owner::DeferredQueue(vcpu);
    let new = match page {
        Some(gpa) => {
            write_lock(&h.vm).claim(&[(gpa, owner)])?;
            let header = DeferredQueueHeader {
                capacity: DEFERRED_QUEUE_CAPACITY,
                ..Default::default()
            };
            guest_mem::write(h.machine.memory(), gpa, header.as_bytes());
            Some(DeferredQueue {
                gpa,
                head: 0,
                error_count: 0,
                first_error: None,
            })
        }
        None => None,
    };
    let old = std::mem::replace(&mut *lock(&h.vcpus[vcpu as usize].deferred), new);
    if let Some(old) = old {
        write_lock(&h.vm).release(old.gpa, owner);
    }
    if let Some(c) = &h.checker {
        // The checking host watches the new queue's stores in step windows (DEFER-001).
        c.watch_deferred(vcpu, page);
    }
    done(&[])
}

impl<M: Machine> Inner<M> {
    /// Drains `vcpu`'s deferred queue: runs entries `head..tail` in order (each entry copied
    /// once), then sets `head := tail`. A `tail - head` beyond the capacity is malformed
    /// (BATCH-013, DEFER-012): no entry runs, `error_count` grows by the difference, the first error
    /// (if none yet) is `(head, INVALID_PARAMETER)`, and `head := tail`. Failures are
    /// recorded in the header (`error_count`, `first_error_*`), from the host's own copies.
    /// Returns `(entries run, entries failed)`.
    pub(crate) fn drain_deferred(&self, vcpu: u32) -> (u32, u32) {
        let Some(slot) = self.vcpus.get(vcpu as usize) else {
            return (0, 0);
        };
        let mut guard = lock(&slot.deferred);
        let Some(q) = guard.as_mut() else {
            return (0, 0);
        };
        // The queue's page, looked up once for the drain (registered after its checks).
        let page = guest_mem::Area::new(self.machine.memory(), q.gpa, PAGE_SIZE as usize);
        // The guest's tail, read once.
        let Some(tail) = page.load_u32(DQ_TAIL) else {
            return (0, 0);
        };
        if let Some(c) = &self.checker {
            self.check_deferred(c, vcpu, q, tail);
        }
        let pending = tail.wrapping_sub(q.head);
        let malformed =
            pending > DEFERRED_QUEUE_CAPACITY && !injected!(self, DeferredMalformedTailRuns);
        let run = if malformed {
            0
        } else {
            pending.min(DEFERRED_QUEUE_CAPACITY)
        };
        let mut failed = 0u32;
        let record_error = |q: &mut DeferredQueue, index: u32, status: Status, n: u32| {
            q.error_count = q.error_count.wrapping_add(n);
            q.first_error.get_or_insert((index, status as u32));
        };
        for i in 0..run {
            let i = if injected!(self, DeferredRunsNewestFirst) {
                run - 1 - i
            } else {
                i
            };
            let index = q.head.wrapping_add(i);
            let offset = DEFERRED_ENTRIES_OFFSET
                + u64::from(index % DEFERRED_QUEUE_CAPACITY) * DQ_ENTRY_SIZE;
            let status = match page.copy_array::<{ DQ_ENTRY_SIZE as usize }>(offset) {
                Err(s) => s,
                Ok(raw) => match DeferredEntry::try_read_from_bytes(&raw[..]) {
                    Ok(e) => {
                        let args = [e.args[0], e.args[1], e.args[2], 0, 0, 0];
                        match self.execute(vcpu, Ctx::Deferred, u64::from(e.call), args) {
                            Ok(_) => Status::Success,
                            Err(s) => s,
                        }
                    }
                    Err(_) => {
                        self.count_call(vcpu, raw_code(&raw, 0), Status::InvalidParameter);
                        Status::InvalidParameter
                    }
                },
            };
            if status != Status::Success {
                failed += 1;
                // The free-running queue index, not the slot (DEFER-007).
                record_error(q, index, status, 1);
            }
        }
        if malformed {
            // Every index from head to tail counts as failed; the first is `head`.
            record_error(q, q.head, Status::InvalidParameter, pending);
        }
        q.head = tail;
        let (first_index, first_status) = q.first_error.unwrap_or((0, 0));
        page.store_u32(DQ_HEAD, q.head);
        let errors = [q.error_count, first_index, first_status];
        page.write(DQ_ERRORS, errors.as_bytes());
        drop(guard);
        self.record(|rep| {
            rep.deferred_drained += u64::from(run);
            rep.deferred_failed += u64::from(failed) + u64::from(malformed);
        });
        (run, failed)
    }
}
