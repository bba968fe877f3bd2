//! MULTICALL and the deferred queue. Every entry goes through the same `execute` core as a
//! direct call, in its own context ([`Ctx::Multicall`], [`Ctx::Deferred`]).

use std::mem::offset_of;

use pvabi_abi::batch::{
    DeferredEntry, DeferredQueueHeader, MulticallEntry, DEFERRED_ENTRIES_OFFSET,
    DEFERRED_QUEUE_CAPACITY, MULTICALL_STOP_ON_ERROR,
};
use pvabi_abi::calls::Call;
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
const MC_STATUS: u64 = offset_of!(MulticallEntry, status) as u64;
const MC_RESULTS: u64 = offset_of!(MulticallEntry, results) as u64;
const DQ_HEAD: u64 = offset_of!(DeferredQueueHeader, head) as u64;
const DQ_TAIL: u64 = offset_of!(DeferredQueueHeader, tail) as u64;
const DQ_ERRORS: u64 = offset_of!(DeferredQueueHeader, error_count) as u64;
const DQ_ENTRY_SIZE: u64 = size_of::<DeferredEntry>() as u64;

pub(crate) fn handle<M: Machine>(h: &Inner<M>, r: &Req) -> Result<Reply, Status> {
    match r.call {
        Call::Multicall => multicall(h, r),
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
    let stop_on_error = r.args[3] & MULTICALL_STOP_ON_ERROR != 0;
    let entries = r.block.bytes();
    let budget = h.config.max_multicall as usize;
    let mem = h.machine.memory();
    let mut next = r.args[2] as usize;
    let mut processed = 0usize;
    let mut preempted = false;
    while next < count {
        if processed == budget {
            preempted = true;
            break;
        }
        let raw = entries
            .get(next * MC_SIZE..(next + 1) * MC_SIZE)
            .unwrap_or_default();
        let (status, results) = match MulticallEntry::try_read_from_bytes(raw) {
            Ok(e) => match h.execute(r.vcpu, Ctx::Multicall, u64::from(e.call), e.args) {
                // Batchable calls always resume with SUCCESS and results.
                Ok(reply) => (Status::Success, Some(reply.results)),
                Err(s) => (s, None),
            },
            Err(_) => {
                h.count_call(r.vcpu, raw_code(raw, 0), Status::InvalidParameter);
                (Status::InvalidParameter, None)
            }
        };
        let entry_gpa = gpa + (next * MC_SIZE) as u64;
        guest_mem::write(mem, entry_gpa + MC_STATUS, &(status as u32).to_le_bytes());
        // The results only on SUCCESS (undefined slots are 0: BATCH-003); a failed entry's
        // `results` are left as the guest wrote them, strict or not (BATCH-010).
        if let Some(res) = results.or(injected!(h, MulticallWritesFailedResults).then_some([0; 4]))
        {
            guest_mem::write(mem, entry_gpa + MC_RESULTS, res.as_bytes());
        }
        processed += 1;
        next += 1;
        if status != Status::Success && stop_on_error {
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
        let mem = self.machine.memory();
        // The guest's tail, read once.
        let Some(tail) = guest_mem::load_u32(mem, q.gpa + DQ_TAIL) else {
            return (0, 0);
        };
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
            let gpa = q.gpa
                + DEFERRED_ENTRIES_OFFSET
                + u64::from(index % DEFERRED_QUEUE_CAPACITY) * DQ_ENTRY_SIZE;
            let status = match guest_mem::copy_in(mem, gpa, DQ_ENTRY_SIZE as usize) {
                Err(s) => s,
                Ok(raw) => match DeferredEntry::try_read_from_bytes(&raw) {
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
        guest_mem::store_u32(mem, q.gpa + DQ_HEAD, q.head);
        let errors = [q.error_count, first_index, first_status];
        guest_mem::write(mem, q.gpa + DQ_ERRORS, errors.as_bytes());
        drop(guard);
        self.record(|rep| {
            rep.deferred_drained += u64::from(run);
            rep.deferred_failed += u64::from(failed) + u64::from(malformed);
        });
        (run, failed)
    }
}
