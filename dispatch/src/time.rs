//! Time family: clocks, the shared time page (kept current by a host thread under the
//! seqlock protocol) and the per-vCPU one-shot timer (fired by a host thread).

use std::mem::offset_of;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pvabi_abi::calls::Call;
use pvabi_abi::convention::PAGE_SIZE;
use pvabi_abi::events::EventKind;
use pvabi_abi::preview2::TimePageV2;
use pvabi_abi::status::Status;
use pvabi_abi::time::{StealTimePage, TimePage, TIME_PAGE_TSC_VALID};
use zerocopy::IntoBytes;

use crate::guest_check::{TORN_MARK, TORN_MASK};

use crate::faults::injected;
use crate::guest_mem::{self, SeqWidth};
use crate::machine::Machine;
use crate::state::{Inner, Owner, StealPageReg, TimePageReg};
use crate::sync::{lock, wait_timeout, write_lock};
use crate::{done, Reply, Req};

/// How long the timer thread sleeps at most when no timer is armed (it is woken on arm).
const TIMER_IDLE_WAIT: Duration = Duration::from_millis(100);

/// The longest the host waits between two updates of a time page without `TSC_VALID`
/// (PVABI-TIME-027 allows 10 ms; half of it leaves room for the thread's scheduling delay).
/// A longer `time_refresh` is cut to this.
pub(crate) const TIME_PAGE_MAX_REFRESH: Duration = Duration::from_millis(5);

pub(crate) fn handle<M: Machine>(h: &Inner<M>, r: &Req) -> Result<Reply, Status> {
    match r.call {
        Call::TimeMonotonic => {
            let now = h.now_ns();
            h.refresh_stale_time_page(now);
            done(&[now])
        }
        Call::TimeWallclock => {
            let (sec, nsec) = wallclock();
            let nsec = if injected!(h, WallclockNanosecondsOverflow) {
                nsec + 1_000_000_000
            } else {
                nsec
            };
            done(&[sec, u64::from(nsec)])
        }
        Call::TimeFrequency => done(&[tsc_hz(h), h.config.timer_resolution_ns]),
        Call::TimeSetPage => set_page(h, r.block.page_arg()),
        Call::TimeSetTimer => set_timer(h, r.vcpu, r.args[0]),
        Call::TimeSetStealPage => set_steal_page(h, r.vcpu, r.block.page_arg()),
        _ => Err(Status::NotSupported),
    }
}

/// TIME_FREQUENCY's `tsc_hz`: the configured rate, or else the machine's (0 if neither).
fn tsc_hz<M: Machine>(h: &Inner<M>) -> u64 {
    if h.config.tsc_hz != 0 {
        return h.config.tsc_hz;
    }
    h.machine.guest_tsc().map_or(0, |t| t.hz)
}

/// Wall-clock time since the Unix epoch (0 if the host clock is before it).
fn wallclock() -> (u64, u32) {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_secs(), d.subsec_nanos())
}

fn set_page<M: Machine>(h: &Inner<M>, page: Option<u64>) -> Result<Reply, Status> {
    if let Some(gpa) = page {
        write_lock(&h.vm).claim(&[(gpa, Owner::TimePage)])?;
        if let Err(s) = h.spawn_worker(
            "pvabi-time-page",
            |w| !std::mem::replace(&mut w.time_page_started, true),
            time_page_thread,
        ) {
            write_lock(&h.vm).release(gpa, Owner::TimePage);
            return Err(s);
        }
    }
    let old = {
        let mut reg = lock(&h.time_page);
        if page.is_none() && injected!(h, TimePageWrittenAfterUnregister) {
            // The registration stays (the page is released below all the same).
            return done(&[]);
        }
        let old = reg.take();
        if page.is_none() {
            h.time_page_written_ns
                .store(0, std::sync::atomic::Ordering::Relaxed);
        }
        if let Some(gpa) = page {
            // TIME-008: the rest of the page reads 0, whatever the guest left there.
            if !injected!(h, TimePageRestNotZeroed) {
                guest_mem::write(h.machine.memory(), gpa, &[0u8; PAGE_SIZE as usize]);
            }
            let mut new = TimePageReg {
                gpa,
                seq: 0,
                #[cfg(feature = "fault-injection")]
                ghost: old
                    .filter(|_| injected!(h, TimePageWrittenAfterUnregister))
                    .map(|o| (o.gpa, o.seq)),
            };
            h.write_time_page(&mut new);
            *reg = Some(new);
        }
        old
    };
    if let Some(old) = old {
        write_lock(&h.vm).release(old.gpa, Owner::TimePage);
    }
    h.time_cv.notify_all();
    done(&[])
}

/// TIME_SET_STEAL_PAGE: registers, replaces or (with 0) unregisters the caller's page.
fn set_steal_page<M: Machine>(h: &Inner<M>, vcpu: u32, page: Option<u64>) -> Result<Reply, Status> {
    if let Some(gpa) = page {
        write_lock(&h.vm).claim(&[(gpa, Owner::StealPage(vcpu))])?;
    }
    let old = {
        let mut reg = lock(&h.vcpus[vcpu as usize].steal);
        let old = reg.take();
        if let Some(gpa) = page {
            let mut new = StealPageReg {
                gpa,
                seq: 0,
                steal_ns: 0,
                preemptions: 0,
            };
            write_steal_page(h, &mut new);
            *reg = Some(new);
        }
        h.vcpus[vcpu as usize]
            .steal_on
            .store(reg.is_some(), std::sync::atomic::Ordering::Relaxed);
        old
    };
    if let Some(old) = old {
        write_lock(&h.vm).release(old.gpa, Owner::StealPage(vcpu));
    }
    done(&[])
}

/// Writes a steal-time page under its sequence lock, from the host's own copy.
fn write_steal_page<M: Machine>(h: &Inner<M>, reg: &mut StealPageReg) {
    let mem = h.machine.memory();
    let page = StealTimePage {
        sequence: 0,
        flags: 0,
        steal_ns: reg.steal_ns,
        preemptions: reg.preemptions,
        reserved: [0; 5],
    };
    let body = offset_of!(StealTimePage, flags);
    guest_mem::seqlock_write(
        mem,
        reg.gpa,
        &mut reg.seq,
        SeqWidth::U32,
        body,
        &page.as_bytes()[body..],
    );
}

impl<M: Machine> Inner<M> {
    /// Charges `stolen` (the time the host spent on one exit of `vcpu`) to the vCPU's
    /// steal-time page, if it registered one, and brings the page up to date. Calls that
    /// wait at the guest's request are not charged (the caller skips them).
    pub(crate) fn account_steal(&self, vcpu: u32, stolen: Duration) {
        let Some(slot) = self.vcpus.get(vcpu as usize) else {
            return;
        };
        let mut reg = lock(&slot.steal);
        if let Some(r) = reg.as_mut() {
            r.steal_ns = r.steal_ns.saturating_add(stolen.as_nanos() as u64);
            r.preemptions += 1;
            write_steal_page(self, r);
        }
    }
}

fn set_timer<M: Machine>(h: &Inner<M>, vcpu: u32, deadline: u64) -> Result<Reply, Status> {
    if deadline != 0 {
        h.spawn_worker(
            "pvabi-timers",
            |w| !std::mem::replace(&mut w.timer_started, true),
            timer_thread,
        )?;
    }
    if let Some(t) = lock(&h.timers).get_mut(vcpu as usize) {
        *t = (deadline != 0).then_some(deadline);
    }
    h.timers_cv.notify_all();
    done(&[])
}

impl<M: Machine> Inner<M> {
    /// Brings a time page without `TIME_PAGE_TSC_VALID` up to date if the refresh thread has
    /// let it grow older than TIME_PAGE_MAX_REFRESH (a loaded host can starve that thread): so
    /// a snapshot read after a TIME_MONOTONIC call is never older than TIME-027 allows. Takes
    /// no lock when the page is fresh or TSC-valid (`time_page_written_ns` is then `u64::MAX`),
    /// and never waits for one (the refresh thread holding it is refreshing).
    fn refresh_stale_time_page(&self, now: u64) {
        if injected!(self, TimePageNotRefreshed) || self.time_page_frozen() {
            return;
        }
        let written = self
            .time_page_written_ns
            .load(std::sync::atomic::Ordering::Relaxed);
        let max = TIME_PAGE_MAX_REFRESH.as_nanos() as u64;
        if written == 0 || now.saturating_sub(written) <= max {
            return;
        }
        if let Ok(mut reg) = self.time_page.try_lock() {
            if let Some(r) = reg.as_mut() {
                self.write_time_page(r);
            }
        }
    }

    /// Writes the time page under the seqlock: sequence odd, fields, sequence even. Only
    /// the host's own sequence counter is used, never the value in guest memory.
    pub(crate) fn write_time_page(&self, reg: &mut TimePageReg) {
        self.time_page_written_ns
            .store(self.now_ns().max(1), std::sync::atomic::Ordering::Relaxed);
        if self.negotiated().is_some_and(|n| n.version.major() == 2)
            && !injected!(self, TimePageIgnoresMajor)
        {
            return self.write_time_page_v2(reg);
        }
        let (wallclock_sec, wallclock_nsec) = wallclock();
        let page = TimePage {
            sequence: 0,
            // Without TSC_VALID (the first write at TIME_SET_PAGE, or a machine without a
            // TSC reading): readers use `monotonic_ns` (refreshed every `time_refresh`, at
            // most TIME_PAGE_MAX_REFRESH) or TIME_MONOTONIC. The TSC fields are 0 (TIME-026);
            // `monotonic_ns` is read before the update is published, so it is never ahead
            // (TIME-028).
            flags: 0,
            monotonic_ns: self.now_ns(),
            tsc_timestamp: 0,
            wallclock_sec,
            wallclock_nsec,
            tsc_shift: 0,
            tsc_mul: 0,
            reserved0: 0,
            reserved: [0; 2],
        };
        let body = offset_of!(TimePage, flags);
        self.seqlock_time_page(reg, &page.as_bytes()[body..]);
        self.record(|r| r.time_page_updates += 1);
    }

    /// The time page in the layout of major version 2 (the 2.0 preview): a 64-bit sequence
    /// and one 64-bit wall-clock count, written when NEGOTIATE accepted major 2.
    fn write_time_page_v2(&self, reg: &mut TimePageReg) {
        let mem = self.machine.memory();
        let (sec, nsec) = wallclock();
        let page = TimePageV2 {
            sequence: 0,
            monotonic_ns: self.now_ns(),
            wallclock_ns: sec
                .saturating_mul(1_000_000_000)
                .saturating_add(u64::from(nsec)),
            tsc_timestamp: 0,
            tsc_mul: 0,
            flags: 0,
            reserved0: 0,
            reserved: [0; 2],
        };
        let body = offset_of!(TimePageV2, monotonic_ns);
        guest_mem::seqlock_write(
            mem,
            reg.gpa,
            &mut reg.seq,
            SeqWidth::U64,
            body,
            &page.as_bytes()[body..],
        );
        self.record(|r| r.time_page_updates += 1);
    }
}

/// Refreshes the time page every `time_refresh` (at most [`TIME_PAGE_MAX_REFRESH`]) until
/// shutdown.
fn time_page_thread<M: Machine>(h: Arc<Inner<M>>) {
    let mut tsc = TscClock::default();
    let mut generation = h.tsc_generation.load(std::sync::atomic::Ordering::Acquire);
    let mut reg = lock(&h.time_page);
    while !h.stopping() {
        // After a host event that may have moved the counters (PVABI-TIME-010), the rate is
        // measured again from a new first sample and no earlier parameters are trusted.
        let now_generation = h.tsc_generation.load(std::sync::atomic::Ordering::Acquire);
        if now_generation != generation {
            generation = now_generation;
            tsc = TscClock::default();
        }
        // Without a page, sleep until TIME_SET_PAGE (or shutdown) wakes the thread.
        let wait = match reg.as_mut() {
            Some(_) if injected!(h, TimePageNotRefreshed) || h.time_page_frozen() => {
                TIMER_IDLE_WAIT
            }
            Some(r) if h.checker.is_some() => {
                if let Some(c) = &h.checker {
                    if h.negotiated().is_none_or(|n| n.version.major() != 2) {
                        h.check_time_page(c, r);
                    }
                }
                // Checking mode: every refresh is an update left half-done for a while, then
                // completed (without TSC_VALID, so that the page is always written whole).
                h.leave_time_page_torn(r);
                h.write_time_page(r);
                h.config.time_refresh.min(TIME_PAGE_MAX_REFRESH)
            }
            Some(r) => {
                if !h.write_time_page_tsc(r, &mut tsc) {
                    h.write_time_page(r);
                }
                h.config.time_refresh.min(TIME_PAGE_MAX_REFRESH)
            }
            None => TIMER_IDLE_WAIT,
        };
        reg = wait_timeout(&h.time_cv, reg, wait);
    }
}

impl<M: Machine> Inner<M> {
    /// Whether the time page is no longer written (the fault `TimePageFrozenAfterMigration`,
    /// after a migration; always false without it).
    fn time_page_frozen(&self) -> bool {
        injected!(self, TimePageFrozenAfterMigration)
            && self.migrations.load(std::sync::atomic::Ordering::Relaxed) > 0
    }

    /// After a host event that may have moved the time-stamp counters or the machine under
    /// the guest (a migration, a change of the counters' offset), with every vCPU paused:
    /// brings the time page up to date before any vCPU runs guest code again
    /// (PVABI-TIME-010). The update is written without `TIME_PAGE_TSC_VALID`, from monotonic
    /// time alone (no TSC parameters of before the event are trusted), as TIME_SET_PAGE's
    /// first update is; the refresh thread, woken, calibrates the counter afresh and sets the
    /// flag again at its next update.
    pub(crate) fn time_page_after_host_event(&self) {
        self.tsc_generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        {
            let mut reg = lock(&self.time_page);
            if let Some(r) = reg.as_mut() {
                self.write_time_page(r);
            }
        }
        self.time_cv.notify_all();
    }

    /// Writes `body` (the fields from `flags` on) to the 1.x time page of `reg` under its
    /// sequence lock (PVABI-TIME-009), or, with the fault `TimePageSequenceEvenBeforeData`,
    /// makes the sequence odd and even again first and writes the fields after.
    fn seqlock_time_page(&self, reg: &mut TimePageReg, body: &[u8]) {
        let mem = self.machine.memory();
        let offset = offset_of!(TimePage, flags);
        #[cfg(feature = "fault-injection")]
        if let Some((gpa, mut seq)) = reg.ghost {
            // `TimePageWrittenAfterUnregister`: the page this registration replaced gets
            // every update too.
            guest_mem::seqlock_write(mem, gpa, &mut seq, SeqWidth::U32, offset, body);
            reg.ghost = Some((gpa, seq));
        }
        if injected!(self, TimePageSequenceEvenBeforeData) {
            reg.seq = reg.seq.wrapping_add(1) | 1;
            guest_mem::store_u32(mem, reg.gpa, reg.seq as u32);
            reg.seq = reg.seq.wrapping_add(1);
            guest_mem::store_u32(mem, reg.gpa, reg.seq as u32);
            std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
            guest_mem::write(mem, reg.gpa + offset as u64, body);
            return;
        }
        guest_mem::seqlock_write(mem, reg.gpa, &mut reg.seq, SeqWidth::U32, offset, body);
    }
}

/// How long, in checking mode, the time page stays mid-update at every refresh.
const TORN_WINDOW: Duration = Duration::from_micros(300);

impl<M: Machine> Inner<M> {
    /// Checking mode: the first half of an update, left visible for [`TORN_WINDOW`]: an odd
    /// `sequence`, `flags` 0 and a `monotonic_ns` carrying [`TORN_MARK`] (see
    /// [`crate::guest_check`]). The regular write that follows completes the update with the
    /// same odd sequence, then the next even one.
    fn leave_time_page_torn(&self, reg: &TimePageReg) {
        if self.negotiated().is_some_and(|n| n.version.major() == 2) {
            return;
        }
        let mem = self.machine.memory();
        guest_mem::store_u32(mem, reg.gpa, (reg.seq.wrapping_add(1) | 1) as u32);
        std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
        let marked = TORN_MARK | (self.now_ns() & !TORN_MASK);
        let flags = reg.gpa + offset_of!(TimePage, flags) as u64;
        guest_mem::write(mem, flags, &0u32.to_le_bytes());
        let monotonic = reg.gpa + offset_of!(TimePage, monotonic_ns) as u64;
        guest_mem::write(mem, monotonic, &marked.to_le_bytes());
        std::thread::sleep(TORN_WINDOW);
    }
}

/// The longest the refresh thread waits for monotonic time to reach a `monotonic_ns` that the
/// monotonicity clamp moved ahead of it (PVABI-TIME-028); a longer wait means the
/// calibration is off, and the page is written without `TSC_VALID` instead.
const MAX_CLAMP_WAIT_NS: u64 = 20_000;

/// A TSC sample whose monotonic bracket is wider than this (the thread was preempted while
/// taking it) is not used while the page's last parameters are younger than
/// [`STALE_PARAMS_NS`]: the update is skipped instead.
const MAX_SAMPLE_WIDTH_NS: u64 = 10_000;
/// See [`MAX_SAMPLE_WIDTH_NS`].
const STALE_PARAMS_NS: u64 = 8_000_000;

/// Baseline after which the TSC rate is measured instead of taken from the nominal one.
const RATE_BASELINE_NS: u64 = 100_000_000;

/// A TSC reading and the monotonic time at it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TscSample {
    pub tsc: u64,
    pub ns: u64,
}

/// The interpolation parameters of one update of the time page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TscParams {
    pub tsc_timestamp: u64,
    pub monotonic_ns: u64,
    pub tsc_shift: i32,
    pub tsc_mul: u32,
}

impl TscParams {
    /// The reader's formula (PVABI-TIME-015) at `tsc`.
    pub fn at(&self, tsc: u64) -> u64 {
        let delta = tsc.wrapping_sub(self.tsc_timestamp);
        let delta = if self.tsc_shift >= 0 {
            delta << self.tsc_shift
        } else {
            delta >> -self.tsc_shift
        };
        let elapsed = ((u128::from(delta) * u128::from(self.tsc_mul)) >> 32) as u64;
        self.monotonic_ns.wrapping_add(elapsed)
    }
}

/// What the refresh thread keeps between updates of a page with `TSC_VALID`: the first
/// sample (the rate is measured from it) and the last parameters written (the next ones never
/// give an earlier time, PVABI-TIME-012).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct TscClock {
    first: Option<TscSample>,
    last: Option<TscParams>,
}

/// `tsc_shift` and `tsc_mul` for `ns` nanoseconds per `ticks` ticks: the smallest shift
/// from 0 up that keeps the multiplier below 2^32 (a TSC at or above 1 GHz gets shift 0 and
/// loses no tick). `None` for a rate the fields cannot express.
pub(crate) fn scale(ns: u64, ticks: u64) -> Option<(i32, u32)> {
    if ns == 0 || ticks == 0 {
        return None;
    }
    for shift in 0..32 {
        let mul = (u128::from(ns) << (32 - shift)) / u128::from(ticks);
        if let Ok(m) = u32::try_from(mul) {
            return (m != 0).then_some((shift, m));
        }
    }
    None
}

impl TscClock {
    /// Whether the last parameters are younger than [`STALE_PARAMS_NS`] at `now`.
    fn is_fresh(&self, now: u64) -> bool {
        self.last
            .is_some_and(|p| now.saturating_sub(p.monotonic_ns) < STALE_PARAMS_NS)
    }

    /// The parameters for a new update from `sample`, taken now: the rate measured since the
    /// first sample (after [`RATE_BASELINE_NS`]) or else the nominal `hz`; `monotonic_ns` is
    /// raised to what the last parameters give at the new timestamp if they run ahead, so the
    /// page's time never goes back. `None` (and the state reset) if the counter went back.
    pub(crate) fn next(&mut self, sample: TscSample, hz: u64) -> Option<TscParams> {
        let first = *self.first.get_or_insert(sample);
        let (dns, dtsc) = (
            sample.ns.wrapping_sub(first.ns),
            sample.tsc.wrapping_sub(first.tsc),
        );
        let (tsc_shift, tsc_mul) = if dns >= RATE_BASELINE_NS && dtsc != 0 && dtsc < 1 << 62 {
            scale(dns, dtsc)?
        } else {
            scale(1_000_000_000, hz)?
        };
        let mut monotonic_ns = sample.ns;
        if let Some(last) = self.last {
            if sample.tsc.wrapping_sub(last.tsc_timestamp) >= 1 << 62 {
                *self = TscClock::default();
                return None;
            }
            monotonic_ns = monotonic_ns.max(last.at(sample.tsc));
        }
        let p = TscParams {
            tsc_timestamp: sample.tsc,
            monotonic_ns,
            tsc_shift,
            tsc_mul,
        };
        self.last = Some(p);
        Some(p)
    }
}

impl<M: Machine> Inner<M> {
    /// A TSC reading bracketed by two monotonic readings: of three tries, the one with the
    /// narrowest bracket, timed at its middle, with the nominal rate and the bracket's width.
    /// `None` without a machine TSC.
    fn tsc_sample(&self) -> Option<(TscSample, u64, u64)> {
        let mut best: Option<(TscSample, u64, u64)> = None;
        for _ in 0..3 {
            let a = self.now_ns();
            let t = self.machine.guest_tsc()?;
            let b = self.now_ns();
            let width = b.saturating_sub(a);
            if best.is_none_or(|(_, _, w)| width < w) {
                let ns = a + width / 2;
                best = Some((TscSample { tsc: t.tsc, ns }, t.hz, width));
            }
        }
        best
    }

    /// Writes the time page with `TIME_PAGE_TSC_VALID` from a fresh TSC sample; `false` (and
    /// nothing written) when the machine has no TSC or the calibration is unusable, or for
    /// the 2.0 preview layout (which has no `tsc_shift`).
    pub(crate) fn write_time_page_tsc(&self, reg: &mut TimePageReg, clock: &mut TscClock) -> bool {
        if self.negotiated().is_some_and(|n| n.version.major() == 2) {
            return false;
        }
        let Some((sample, hz, width)) = self.tsc_sample() else {
            return false;
        };
        if width > MAX_SAMPLE_WIDTH_NS && clock.is_fresh(sample.ns) {
            // A poor sample; the page's parameters are still good: try again next time.
            return true;
        }
        let (wall_sec, wall_nsec) = wallclock();
        let wall_at = self.now_ns();
        let Some(p) = clock.next(sample, hz) else {
            return false;
        };
        // PVABI-TIME-028: `monotonic_ns` is not ahead of monotonic time when the update is
        // published. The clamp may have moved it a few nanoseconds ahead: wait that out.
        loop {
            let now = self.now_ns();
            if now >= p.monotonic_ns {
                break;
            }
            if p.monotonic_ns - now > MAX_CLAMP_WAIT_NS {
                *clock = TscClock::default();
                return false;
            }
            std::hint::spin_loop();
        }
        // PVABI-TIME-029: the wall clock at `monotonic_ns` (it was read a moment after).
        let wall = (u128::from(wall_sec) * 1_000_000_000 + u128::from(wall_nsec))
            .saturating_sub(u128::from(wall_at.saturating_sub(p.monotonic_ns)));
        let page = TimePage {
            sequence: 0,
            flags: TIME_PAGE_TSC_VALID,
            monotonic_ns: p.monotonic_ns,
            tsc_timestamp: p.tsc_timestamp,
            wallclock_sec: (wall / 1_000_000_000) as u64,
            wallclock_nsec: (wall % 1_000_000_000) as u32,
            tsc_shift: p.tsc_shift,
            tsc_mul: p.tsc_mul,
            reserved0: 0,
            reserved: [0; 2],
        };
        let body = offset_of!(TimePage, flags);
        self.seqlock_time_page(reg, &page.as_bytes()[body..]);
        // A TSC-valid page does not go stale for readers: calls need not refresh it.
        self.time_page_written_ns
            .store(u64::MAX, std::sync::atomic::Ordering::Relaxed);
        self.record(|r| r.time_page_updates += 1);
        true
    }
}

/// Fires one-shot timers until shutdown. The deadlines are examined and the wait begins
/// under the same lock that arming takes, so an armed timer is never missed.
fn timer_thread<M: Machine>(h: Arc<Inner<M>>) {
    let mut timers = lock(&h.timers);
    while !h.stopping() {
        let now = h.now_ns();
        let (due, next) = expired(&mut timers, now);
        if !due.is_empty() {
            drop(timers);
            // Counted first, so that whoever sees the event also sees the count.
            h.record(|r| r.timers_fired += due.len() as u64);
            for &(vcpu, deadline) in &due {
                h.post_event(vcpu, EventKind::Timer, vcpu, deadline);
            }
            timers = lock(&h.timers);
            continue;
        }
        let sleep = next.map_or(TIMER_IDLE_WAIT, |n| {
            Duration::from_nanos(n.saturating_sub(now)).min(TIMER_IDLE_WAIT)
        });
        timers = wait_timeout(&h.timers_cv, timers, sleep);
    }
}

/// Takes the expired timers out of `timers`; returns them and the next deadline.
fn expired(timers: &mut [Option<u64>], now: u64) -> (Vec<(u32, u64)>, Option<u64>) {
    let mut due = Vec::new();
    let mut next: Option<u64> = None;
    for (vcpu, t) in timers.iter_mut().enumerate() {
        match *t {
            Some(d) if d <= now => {
                due.push((vcpu as u32, d));
                *t = None;
            }
            Some(d) => next = Some(next.map_or(d, |n| n.min(d))),
            None => {}
        }
    }
    (due, next)
}
