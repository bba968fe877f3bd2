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
use pvabi_abi::time::{StealTimePage, TimePage};
use zerocopy::IntoBytes;

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
        Call::TimeFrequency => done(&[h.config.tsc_hz, h.config.timer_resolution_ns]),
        Call::TimeSetPage => set_page(h, r.block.page_arg()),
        Call::TimeSetTimer => set_timer(h, r.vcpu, r.args[0]),
        Call::TimeSetStealPage => set_steal_page(h, r.vcpu, r.block.page_arg()),
        _ => Err(Status::NotSupported),
    }
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
            let mut new = TimePageReg { gpa, seq: 0 };
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
    /// Brings the time page up to date if the refresh thread has let it grow older than
    /// TIME_PAGE_MAX_REFRESH (a loaded host can starve that thread): so a snapshot read after
    /// a TIME_MONOTONIC call is never older than TIME-027 allows. Takes no lock when the page
    /// is fresh, and never waits for one (the refresh thread holding it is refreshing).
    fn refresh_stale_time_page(&self, now: u64) {
        if injected!(self, TimePageNotRefreshed) {
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
        if self.negotiated().is_some_and(|n| n.version.major() == 2) {
            return self.write_time_page_v2(reg);
        }
        let mem = self.machine.memory();
        let (wallclock_sec, wallclock_nsec) = wallclock();
        let page = TimePage {
            sequence: 0,
            // The host cannot know the guest's TSC offset: no TSC_VALID, readers use
            // `monotonic_ns` (refreshed every `time_refresh`, at most TIME_PAGE_MAX_REFRESH)
            // or TIME_MONOTONIC. The TSC fields are 0 (TIME-026); `monotonic_ns` is read
            // before the update is published, so it is never ahead (TIME-028).
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
        guest_mem::seqlock_write(
            mem,
            reg.gpa,
            &mut reg.seq,
            SeqWidth::U32,
            body,
            &page.as_bytes()[body..],
        );
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
    let mut reg = lock(&h.time_page);
    while !h.stopping() {
        // Without a page, sleep until TIME_SET_PAGE (or shutdown) wakes the thread.
        let wait = match reg.as_mut() {
            Some(_) if injected!(h, TimePageNotRefreshed) => TIMER_IDLE_WAIT,
            Some(r) => {
                h.write_time_page(r);
                h.config.time_refresh.min(TIME_PAGE_MAX_REFRESH)
            }
            None => TIMER_IDLE_WAIT,
        };
        reg = wait_timeout(&h.time_cv, reg, wait);
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
