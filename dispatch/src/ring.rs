//! The submission/completion ring pair: RING_SETUP, RING_ENTER, the ring-notify port, and
//! the HOST_POLLED poller thread.
//!
//! The host keeps its own copies of the indices it writes (SQ `head`, CQ `tail`) and reads
//! the guest's (SQ `tail`, CQ `head`) once per pass. It never overwrites an unconsumed
//! completion: when the CQ is full it stops consuming the SQ. A SQ whose `tail - head`
//! exceeds the capacity is malformed: nothing runs, `head` jumps to `tail`, and `dropped`
//! counts it.

use std::mem::offset_of;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use pvabi_abi::batch::{
    CompletionEntry, RingHeader, RingMode, RingSetup, SubmissionEntry, CQ_CAPACITY,
    RING_COMPLETION_EVENTS, RING_ENTRIES_OFFSET, RING_FLAGS_VALID, SQ_CAPACITY, SQ_NEED_WAKEUP,
};
use pvabi_abi::calls::Call;
use pvabi_abi::convention::PAGE_SIZE;
use pvabi_abi::events::EventKind;
use pvabi_abi::status::Status;
use zerocopy::{IntoBytes, TryFromBytes};

use crate::check::Ctx;
use crate::faults::injected;
use crate::guest_check::Consumed;
use crate::guest_mem;
use crate::machine::Machine;
use crate::state::{Inner, Owner, Ring};
use crate::sync::{lock, wait_timeout, write_lock};
use crate::{done, Reply, Req};

const HEAD: u64 = offset_of!(RingHeader, head) as u64;
const TAIL: u64 = offset_of!(RingHeader, tail) as u64;
const FLAGS: u64 = offset_of!(RingHeader, flags) as u64;
const DROPPED: u64 = offset_of!(RingHeader, dropped) as u64;
const SQE_SIZE: u64 = size_of::<SubmissionEntry>() as u64;
const CQE_SIZE: u64 = size_of::<CompletionEntry>() as u64;

/// How long the poller sleeps between two empty polls while it still polls. A sleep lasts
/// at least the thread's timer slack too (50 µs by default on Linux).
const POLL_SPIN: Duration = Duration::from_micros(20);
/// How long after its last work the poller looks again without sleeping.
const POLL_SPIN_FIRST: Duration = Duration::from_micros(5);
/// How often a sleeping poller looks at the shutdown flag without being woken.
const POLL_RECHECK: Duration = Duration::from_millis(100);

pub(crate) fn handle<M: Machine>(h: &Inner<M>, r: &Req) -> Result<Reply, Status> {
    match r.call {
        Call::RingSetup => setup(h, r),
        Call::RingEnter => {
            let mut ring = lock(&h.vcpus[r.vcpu as usize].ring);
            let ring = ring.as_mut().ok_or(Status::InvalidState)?;
            if let Some(c) = &h.checker {
                h.check_ring_notify(c, r.vcpu, ring);
            }
            let consumed = h.process_ring(r.vcpu, ring);
            done(&[u64::from(consumed)])
        }
        _ => Err(Status::NotSupported),
    }
}

/// RING_SETUP. Block contents (INVALID_PARAMETER): the mode and reserved field (zerocopy),
/// unknown flags, pages not page-aligned, one page 0 and not the other, or both the same page.
/// Both pages 0 unregisters. Call-specific, lowest status first (RING-013): pages not RAM
/// (INVALID_ADDRESS), already host-owned (ACCESS_DENIED), the vCPU already has rings
/// (INVALID_STATE; unregister them first).
fn setup<M: Machine>(h: &Inner<M>, r: &Req) -> Result<Reply, Status> {
    let s: RingSetup = r.block.parse()?;
    let (sq, cq) = (s.sq_page, s.cq_page);
    let unregister = sq == 0 && cq == 0;
    if s.flags & !RING_FLAGS_VALID != 0
        || (!unregister
            && (sq == 0
                || cq == 0
                || !sq.is_multiple_of(PAGE_SIZE)
                || !cq.is_multiple_of(PAGE_SIZE)
                || sq == cq))
    {
        return Err(Status::InvalidParameter);
    }
    let vcpu = r.vcpu;
    let (sq_owner, cq_owner) = (Owner::SubmissionRing(vcpu), Owner::CompletionRing(vcpu));
    let mem = h.machine.memory();
    let new = if unregister {
        None
    } else {
        if !guest_mem::in_ram(mem, sq, PAGE_SIZE) || !guest_mem::in_ram(mem, cq, PAGE_SIZE) {
            return Err(Status::InvalidAddress);
        }
        // Only this vCPU's calls change its ring slot, so the answer cannot go stale.
        let has_rings = lock(&h.vcpus[vcpu as usize].ring).is_some();
        {
            let mut vm = write_lock(&h.vm);
            if vm.overlaps_owned(sq, PAGE_SIZE) || vm.overlaps_owned(cq, PAGE_SIZE) {
                return Err(Status::AccessDenied);
            }
            if has_rings {
                return Err(Status::InvalidState);
            }
            vm.claim(&[(sq, sq_owner), (cq, cq_owner)])?;
        }
        for (page, capacity) in [(sq, SQ_CAPACITY), (cq, CQ_CAPACITY)] {
            let header = RingHeader {
                capacity,
                ..Default::default()
            };
            guest_mem::write(mem, page, header.as_bytes());
        }
        Some(Ring {
            sq,
            cq,
            mode: s.mode,
            completion_events: s.flags & RING_COMPLETION_EVENTS != 0,
            sq_head: 0,
            cq_tail: 0,
            sq_flags: 0,
            dropped: 0,
            notified: false,
            generation: h
                .ring_generation
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
                + 1,
        })
    };
    let slot = &h.vcpus[vcpu as usize];
    let old = std::mem::replace(&mut *lock(&slot.ring), new);
    // An old poller sees the generation change and exits.
    slot.ring_wake.notify_all();
    if let Some(c) = &h.checker {
        // The checking host watches the new submission ring's stores in step windows
        // (RING-001).
        c.watch_ring(vcpu, new.map(|r| r.generation));
        // ... and every access to the new completion-ring page (RING-006).
        h.watch_consumed_queue(c, vcpu, Consumed::Completions, new.map(|r| r.cq));
    }
    if let Some(old) = old {
        if let Some(c) = &h.checker {
            h.check_ring_left(c, vcpu, &old, false);
        }
        let mut vm = write_lock(&h.vm);
        vm.release(old.sq, sq_owner);
        vm.release(old.cq, cq_owner);
    }
    if let Some(ring) = new.filter(|r| r.mode == RingMode::HostPolled) {
        let generation = ring.generation;
        let spawned = h.spawn_worker(
            &format!("pvabi-ring{vcpu}"),
            |_| true,
            move |h| poller(h, vcpu, generation),
        );
        if let Err(s) = spawned {
            let mut g = lock(&slot.ring);
            if g.as_ref().is_some_and(|r| r.generation == generation) {
                *g = None;
                let mut vm = write_lock(&h.vm);
                vm.release(sq, sq_owner);
                vm.release(cq, cq_owner);
            }
            drop(g);
            if let Some(c) = &h.checker {
                h.watch_consumed_queue(c, vcpu, Consumed::Completions, None);
            }
            return Err(s);
        }
    }
    done(&[])
}

impl<M: Machine> Inner<M> {
    /// One pass over `vcpu`'s submission ring: consumes what is queued, as far as the
    /// completion ring has room. Returns the submissions consumed.
    pub(crate) fn process_ring(&self, vcpu: u32, ring: &mut Ring) -> u32 {
        if self.rings_stopped() {
            // The VM is ending (RING-023): nothing more is consumed.
            return 0;
        }
        // The pass's host work, timed from here (its look-ups and index reads included) to
        // the published completions, for `ring_work` (passes that consume nothing are not
        // counted).
        let started = Instant::now();
        let mem = self.machine.memory();
        // Both pages looked up once for the pass (registered after their checks, so in RAM).
        let sq = guest_mem::Area::new(mem, ring.sq, PAGE_SIZE as usize);
        let cq = guest_mem::Area::new(mem, ring.cq, PAGE_SIZE as usize);
        // The guest-written indices, each read once.
        let Some(sq_tail) = sq.load_u32(TAIL) else {
            return 0;
        };
        if let Some(c) = &self.checker {
            self.check_ring_indices(c, vcpu, ring, sq_tail);
        }
        let pending = sq_tail.wrapping_sub(ring.sq_head);
        if pending > SQ_CAPACITY {
            // Malformed (RING-005, BATCH-013): nothing runs, `dropped` grows by the
            // difference, and the host's own head moves to the guest's tail.
            ring.dropped = ring.dropped.wrapping_add(pending);
            sq.store_u32(DROPPED, ring.dropped);
            ring.sq_head = sq_tail;
            sq.store_u32(HEAD, ring.sq_head);
            self.record(|r| r.ring_malformed += 1);
            return 0;
        }
        if pending == 0 {
            return 0;
        }
        let Some(cq_head) = cq.load_u32(HEAD) else {
            return 0;
        };
        if let Some(c) = &self.checker {
            c.cq_head(vcpu, cq_head, ring.cq_tail);
        }
        // A CQ whose `tail - head` exceeds the capacity (a head ahead of the tail, or more
        // than a capacity behind it) is malformed and treated as full (BATCH-014): no room,
        // nothing is overwritten, nothing is consumed.
        let room = if injected!(self, RingFullCompletionRingOverwritten) {
            CQ_CAPACITY
        } else {
            CQ_CAPACITY.saturating_sub(ring.cq_tail.wrapping_sub(cq_head))
        };
        let n = pending.min(room);
        // The entries' lines come from the guest's core: ask for all of them at once.
        for k in 0..n {
            let sqe = ring.sq_head.wrapping_add(k) % SQ_CAPACITY;
            sq.prefetch(
                RING_ENTRIES_OFFSET + u64::from(sqe) * SQE_SIZE,
                SQE_SIZE as usize,
                false,
            );
            let cqe = ring.cq_tail.wrapping_add(k) % CQ_CAPACITY;
            cq.prefetch(
                RING_ENTRIES_OFFSET + u64::from(cqe) * CQE_SIZE,
                CQE_SIZE as usize,
                true,
            );
        }
        let mut failed = 0u64;
        let mut consumed = 0;
        let first_completion = ring.cq_tail;
        while consumed < n {
            // Each submission is consumed only while the VM has not begun to end: a pass in
            // progress when a SYSTEM_SHUTDOWN, _REBOOT or _CRASH is handled stops at the next
            // entry, and publishes what it completed (RING-023, RING-027). One load per entry.
            if self.rings_stopped() {
                break;
            }
            consumed += 1;
            let sqe = RING_ENTRIES_OFFSET + u64::from(ring.sq_head % SQ_CAPACITY) * SQE_SIZE;
            let (user_data, status, results) = self.run_submission(vcpu, &sq, sqe);
            let completion = CompletionEntry {
                user_data,
                status: status as u32,
                reserved: 0,
                // On failure every result is 0 (RING-019), strict or not.
                results: results.unwrap_or([0; 4]),
            };
            for _ in 0..1 + u8::from(injected!(self, RingCompletionDuplicated)) {
                let cqe = RING_ENTRIES_OFFSET + u64::from(ring.cq_tail % CQ_CAPACITY) * CQE_SIZE;
                cq.write(cqe, completion.as_bytes());
                ring.cq_tail = ring.cq_tail.wrapping_add(1);
            }
            ring.sq_head = ring.sq_head.wrapping_add(1);
            failed += u64::from(status != Status::Success);
        }
        let n = consumed;
        // The pass's completions published with one store of the CQ tail, after all of them,
        // and its slots freed with one store of the SQ head (RING-003): each store to a line
        // the guest reads moves the line between cores, so one per pass, not one per entry.
        if n > 0 {
            if let Some(c) = &self.checker {
                c.consumed_published(vcpu, Consumed::Completions, first_completion, ring.cq_tail);
            }
            cq.publish_u32(TAIL, ring.cq_tail);
            sq.publish_u32(HEAD, ring.sq_head);
        }
        if n > 0 && ring.completion_events {
            self.post_event(
                vcpu,
                EventKind::RingCompletion,
                vcpu,
                u64::from(ring.cq_tail),
            );
        }
        self.record(|r| {
            r.ring_submissions += u64::from(n);
            r.ring_failed += failed;
        });
        if n > 0 {
            let ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
            let [passes, entries, total] = &self.ring_work;
            passes.fetch_add(1, Ordering::Relaxed);
            entries.fetch_add(u64::from(n), Ordering::Relaxed);
            total.fetch_add(ns, Ordering::Relaxed);
        }
        n
    }

    /// Copies the submission at `offset` of the submission-ring page `sq` once and runs it:
    /// `(user_data, status, results)`.
    fn run_submission(
        &self,
        vcpu: u32,
        sq: &guest_mem::Area<'_, M::Memory>,
        offset: u64,
    ) -> (u64, Status, Option<[u64; 4]>) {
        let raw = match sq.copy_array::<{ SQE_SIZE as usize }>(offset) {
            Ok(raw) => raw,
            Err(s) => return (0, s, None),
        };
        match SubmissionEntry::try_read_from_bytes(&raw[..]) {
            Ok(e) => match self.execute(vcpu, Ctx::Ring, u64::from(e.call), e.args) {
                // Batchable calls always resume with SUCCESS and results.
                Ok(reply) => (e.user_data, Status::Success, Some(reply.results)),
                Err(s) => (e.user_data, s, None),
            },
            Err(_) => {
                let word = |at: usize| {
                    raw.get(at..at + 8)
                        .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
                };
                let code = word(offset_of!(SubmissionEntry, call)) & 0xffff_ffff;
                self.count_call(vcpu, code, Status::InvalidParameter);
                (word(0), Status::InvalidParameter, None)
            }
        }
    }

    /// The VM begins to end: a SYSTEM_SHUTDOWN, SYSTEM_REBOOT or SYSTEM_CRASH passed its
    /// checks. From now on no ring consumes a submission, on any path (RING-023): a pass
    /// looks at the flag before each entry, so RING_ENTER, a notify (on the vCPU's thread or
    /// a host-ref notify worker) and a poller (which then exits) all stop. Taking each ring's
    /// lock once then waits for a pass in progress, which stops at its next entry and
    /// publishes what it completed: when this returns, every submission consumed before has
    /// its effects and its completion written (RING-027). Runs on the calling vCPU's thread,
    /// which holds no ring lock (system calls are not batchable: none runs inside a pass).
    pub(crate) fn stop_rings(&self) {
        if injected!(self, RingsRunWithoutCompletionsAtEnd) {
            // The fault: what is still queued in each ring runs and is consumed, but no
            // completion is written ("the VM is ending: nobody will read them").
            let mem = self.machine.memory();
            for (vcpu, slot) in (0u32..).zip(&self.vcpus) {
                let mut g = lock(&slot.ring);
                let Some(ring) = g.as_mut() else {
                    continue;
                };
                let sq = guest_mem::Area::new(mem, ring.sq, PAGE_SIZE as usize);
                let tail = sq.load_u32(TAIL).unwrap_or(ring.sq_head);
                for _ in 0..tail.wrapping_sub(ring.sq_head).min(SQ_CAPACITY) {
                    let sqe =
                        RING_ENTRIES_OFFSET + u64::from(ring.sq_head % SQ_CAPACITY) * SQE_SIZE;
                    self.run_submission(vcpu, &sq, sqe);
                    ring.sq_head = ring.sq_head.wrapping_add(1);
                }
                sq.publish_u32(HEAD, ring.sq_head);
            }
        }
        self.rings_stopped.store(true, Ordering::SeqCst);
        for slot in &self.vcpus {
            drop(lock(&slot.ring));
            // A sleeping poller wakes, sees the flag and exits.
            slot.ring_wake.notify_all();
        }
    }

    /// Whether the VM has begun to end ([`stop_rings`](Self::stop_rings)).
    fn rings_stopped(&self) -> bool {
        self.rings_stopped.load(Ordering::Acquire)
    }

    /// A write to the ring-notify port naming `vcpu`.
    pub(crate) fn ring_notify(&self, vcpu: u32) {
        self.record(|r| r.ring_notifies += 1);
        let Some(slot) = self.vcpus.get(vcpu as usize) else {
            return;
        };
        let mut g = lock(&slot.ring);
        let Some(ring) = g.as_mut() else {
            return;
        };
        if let Some(c) = &self.checker {
            self.check_ring_notify(c, vcpu, ring);
        }
        match ring.mode {
            RingMode::Doorbell if injected!(self, RingNotifyIgnored) => {}
            RingMode::Doorbell => {
                self.process_ring(vcpu, ring);
            }
            RingMode::HostPolled => {
                ring.notified = true;
                drop(g);
                slot.ring_wake.notify_all();
            }
        }
    }

    fn set_need_wakeup(&self, ring: &mut Ring, on: bool) {
        if on && injected!(self, PollerSleepsWithoutNeedWakeup) {
            return;
        }
        if on {
            ring.sq_flags |= SQ_NEED_WAKEUP;
        } else {
            ring.sq_flags &= !SQ_NEED_WAKEUP;
        }
        guest_mem::store_u32(self.machine.memory(), ring.sq + FLAGS, ring.sq_flags);
    }
}

/// The HOST_POLLED poller of `vcpu`'s ring `generation`: polls the SQ; after `poll_idle`
/// without work it sets `SQ_NEED_WAKEUP`, polls once more (so a submission that raced with
/// the flag is not missed), and sleeps until a notify. Exits when the ring is replaced or
/// removed, when the VM begins to end (RING-023), or on shutdown.
pub(crate) fn poller<M: Machine>(h: Arc<Inner<M>>, vcpu: u32, generation: u64) {
    let Some(slot) = h.vcpus.get(vcpu as usize) else {
        return;
    };
    let mine = |r: &Ring| r.generation == generation;
    let mut idle_since = Instant::now();
    loop {
        if h.stopping() || h.rings_stopped() {
            return;
        }
        let consumed = {
            let mut g = lock(&slot.ring);
            match g.as_mut().filter(|r| mine(r)) {
                Some(r) => {
                    r.notified = false;
                    h.process_ring(vcpu, r)
                }
                None => return,
            }
        };
        if consumed > 0 {
            idle_since = Instant::now();
            continue;
        }
        if idle_since.elapsed() < h.config.poll_idle {
            // Look again at once for a short while (a guest that submits in bursts usually
            // has the next one ready), then sleep briefly. The sleep, not a yield, because on
            // a loaded host a thread that wakes from a sleep is scheduled promptly while one
            // that yields waits for its fair share: measured on the 2-core PVM machine at a
            // load of 15, yielding made ring_polled ~170 us per entry, sleeping ~1 us.
            if idle_since.elapsed() < POLL_SPIN_FIRST {
                std::hint::spin_loop();
            } else {
                thread::sleep(POLL_SPIN);
            }
            continue;
        }
        let mut g = lock(&slot.ring);
        let Some(r) = g.as_mut().filter(|r| mine(r)) else {
            return;
        };
        h.set_need_wakeup(r, true);
        if h.process_ring(vcpu, r) > 0 {
            h.set_need_wakeup(r, false);
            idle_since = Instant::now();
            continue;
        }
        loop {
            if h.stopping() || h.rings_stopped() {
                return;
            }
            match g.as_mut().filter(|r| mine(r)) {
                Some(r) if r.notified => {
                    r.notified = false;
                    h.set_need_wakeup(r, false);
                    break;
                }
                Some(_) => {}
                None => return,
            }
            g = wait_timeout(&slot.ring_wake, g, POLL_RECHECK);
        }
        idle_since = Instant::now();
    }
}
