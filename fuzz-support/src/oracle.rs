//! The oracles: what the spec lets the host answer and write, checked on every call.

use pvabi_abi::batch::{
    CQ_CAPACITY, DEFERRED_ENTRIES_OFFSET, DEFERRED_QUEUE_CAPACITY, RING_ENTRIES_OFFSET, SQ_CAPACITY,
};
use pvabi_abi::calls::{BlockKind, Call, Family};
use pvabi_abi::convention::PAGE_SIZE;
use pvabi_abi::features::Features;
use pvabi_abi::status::Status;
use pvabi_dispatch::{CallRegs, Caller, Doorbell, Outcome, POISON};

use crate::{may_succeed, RingModel, Shadow, World, MC_SIZE, RAM_BYTES};

/// An oracle's finding: which rule, on which call, and what happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation(pub String);

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(Violation(format!($($fmt)+)));
        }
    };
}

/// Byte ranges `[start, end)` the call may write.
type Ranges = Vec<(u64, u64)>;

/// Runs `f` with the RAM copies taken out of `w` (so that `f` may borrow both).
fn with_shadow<T>(w: &mut World, f: impl FnOnce(&mut World, &mut Shadow) -> T) -> T {
    let mut sh = std::mem::take(&mut w.shadow);
    let r = f(w, &mut sh);
    w.shadow = sh;
    r
}

/// Whether calls are traced to stderr (`PVABI_FUZZ_TRACE` set), read once.
fn tracing() -> bool {
    static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("PVABI_FUZZ_TRACE").is_some())
}

/// Applies one operation, checking it.
pub(crate) fn apply(w: &mut World, op: crate::Op) -> Result<(), Violation> {
    match op {
        crate::Op::Write { gpa, bytes } => {
            w.write(gpa, &bytes);
            Ok(())
        }
        crate::Op::Call { vcpu, mut regs } => direct(w, vcpu, &mut regs),
        op => with_shadow(w, |w, sh| other(w, sh, op)),
    }
}

/// A ring notify or an odd doorbell access, checked.
fn other(w: &mut World, sh: &mut Shadow, op: crate::Op) -> Result<(), Violation> {
    sh.begin(&w.m);
    match op {
        crate::Op::Write { .. } | crate::Op::Call { .. } => unreachable!("handled by apply"),
        crate::Op::Notify { vcpu } => {
            let mut allowed = allowed_pages(w, &sh.before);
            let log_before = w.m.log().released.len();
            let mut regs = CallRegs::default();
            let port = w.d.config().ring_notify_port;
            let o =
                w.d.port_out(Caller::kernel(0), port, &vcpu.to_le_bytes(), &mut regs);
            ensure!(o == Some(Outcome::Resume), "ring notify: {o:?}");
            let dirty = sh.end(&w.m);
            // Pages a submission gave back (MEM_BALLOON_RELEASE) are zeroed by the machine.
            let released = w.m.log().released[log_before..].to_vec();
            allowed.extend(released.iter().map(|&p| (p, p + PAGE_SIZE)));
            diff(w, sh, &dirty, &allowed, u64::MAX, &"ring notify")?;
            check_rings(w, &sh.before, &sh.after, None, &"ring notify")
        }
        crate::Op::OddAccess {
            vcpu,
            cpl,
            long_mode,
            width,
            mut regs,
        } => {
            let exit = Doorbell {
                caller: Caller {
                    vcpu,
                    cpl,
                    long_mode,
                },
                width,
                string_element: false,
            };
            let performs = cpl == 0 && long_mode && width == 4 && vcpu < w.vcpus;
            let o = w.d.call(exit, &mut regs);
            ensure!(o == Outcome::Resume, "doorbell access {exit:?}: {o:?}");
            let s = Status::from_raw(regs.rax);
            w.count(s);
            if !performs {
                let want = if vcpu >= w.vcpus {
                    Status::InvalidState
                } else {
                    Status::NotSupported
                };
                ensure!(
                    s == Some(want),
                    "access {exit:?} performs no call, got {s:?}"
                );
                let dirty = sh.end(&w.m);
                diff(
                    w,
                    sh,
                    &dirty,
                    &owned_pages(w),
                    u64::MAX,
                    &format_args!("access {exit:?}"),
                )?;
            }
            Ok(())
        }
    }
}

impl World {
    fn count_entry(&mut self, s: Option<Status>) {
        *self
            .stats
            .entries
            .entry(s.map_or("UNDEFINED", Status::name))
            .or_default() += 1;
    }

    fn count(&mut self, s: Option<Status>) {
        self.stats.calls += 1;
        *self
            .stats
            .statuses
            .entry(s.map_or("UNDEFINED", Status::name))
            .or_default() += 1;
    }
}

/// The host-owned pages: written by the host's threads (time page) and by every call (steal
/// time) whatever the call is.
fn owned_pages(w: &World) -> Ranges {
    w.reg
        .pages()
        .into_iter()
        .map(|p| (p, p + PAGE_SIZE))
        .collect()
}

/// The pages a call may write whatever it is: every host-owned page (registered before the
/// call), and the 64-bit word of every MEM_UPDATE_PTE entry waiting in a deferred queue, a
/// submission ring or (for MULTICALL) the call's list.
fn allowed_pages(w: &World, mem: &[u8]) -> Ranges {
    let mut r = owned_pages(w);
    r.extend(pte_words(w, mem));
    r
}

/// The 64-bit word of every MEM_UPDATE_PTE entry waiting in a deferred queue or a
/// submission ring (any call may drain them).
fn pte_words(w: &World, mem: &[u8]) -> Ranges {
    let pte = u64::from(Call::MemUpdatePte.code());
    let word = |at: u64| -> u64 {
        let i = at as usize;
        mem.get(i..i + 8)
            .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
    };
    let mut ptes = Vec::new();
    for q in w.reg.deferred.iter().flatten() {
        for i in 0..u64::from(DEFERRED_QUEUE_CAPACITY) {
            let e = q + DEFERRED_ENTRIES_OFFSET + 32 * i;
            if word(e) & 0xffff_ffff == pte {
                ptes.push(word(e + 8));
            }
        }
    }
    for ring in w.reg.rings.iter().flatten() {
        for i in 0..u64::from(SQ_CAPACITY) {
            let e = ring.sq + RING_ENTRIES_OFFSET + 64 * i;
            if word(e + 8) & 0xffff_ffff == pte {
                ptes.push(word(e + 16));
            }
        }
    }
    ptes.into_iter().map(|a| (a, a.saturating_add(8))).collect()
}

/// MULTICALL's list: each entry's `status` and `results`, and the PTE words it names (also
/// in `ptes`).
fn multicall_ranges(mem: &[u8], gpa: u64, count: u64, r: &mut Ranges, ptes: &mut Ranges) {
    let word = |at: u64| -> u64 {
        let i = at as usize;
        mem.get(i..i + 8)
            .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
    };
    for i in 0..count {
        let e = gpa + MC_SIZE * i;
        r.push((e + 4, e + 8));
        r.push((e + 64, e + MC_SIZE));
        if word(e) & 0xffff_ffff == u64::from(Call::MemUpdatePte.code()) {
            let a = word(e + 16);
            r.push((a, a.saturating_add(8)));
            ptes.push((a, a.saturating_add(8)));
        }
    }
}

/// The entries of a MULTICALL_PAGES (1.3) with page list `list` of `pages` addresses and
/// `count` entries: entry `i` is at offset 96 × (i mod 42) of list page ⌊i / 42⌋ (BATCH-014).
/// They may be written as MULTICALL's are.
fn multicall_pages_ranges(
    mem: &[u8],
    list: u64,
    pages: u64,
    count: u64,
    r: &mut Ranges,
    ptes: &mut Ranges,
) {
    let per_page = pvabi_abi::batch::MULTICALL_PAGE_ENTRIES;
    let word = |at: u64| -> u64 {
        let i = at as usize;
        mem.get(i..i + 8)
            .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
    };
    let count = count.min(pvabi_abi::batch::MULTICALL_PAGES_MAX_ENTRIES);
    for p in 0..pages.min(pvabi_abi::batch::MULTICALL_PAGES_MAX_PAGES) {
        let page = word(list.saturating_add(8 * p));
        let here = count.saturating_sub(p * per_page).min(per_page);
        if page % PAGE_SIZE != 0 || page >= RAM_BYTES || here == 0 {
            continue;
        }
        multicall_ranges(mem, page, here, r, ptes);
    }
}

/// Every byte below `limit` that differs between `sh.before` and `sh.after` is in `allowed`.
/// Only the `dirty` pages can differ (the others of `after` are `before`'s). A page released
/// in this input (MEM_BALLOON_RELEASE, in the machine's log) may also come back all zeros:
/// MEM_BALLOON_RECLAIM zeroes the pages it reclaims (MEM-009), directly or as an entry.
fn diff(
    w: &World,
    sh: &Shadow,
    dirty: &[usize],
    allowed: &Ranges,
    limit: u64,
    what: &dyn std::fmt::Display,
) -> Result<(), Violation> {
    let page = sh.page_size();
    let limit = usize::try_from(limit)
        .unwrap_or(usize::MAX)
        .min(sh.before.len());
    for &p in dirty {
        let r = (p * page).min(limit)..((p + 1) * page).min(limit);
        let (a, b) = (&sh.before[r.clone()], &sh.after[r]);
        if a == b {
            continue;
        }
        let base = (p * page) as u64;
        let whole = allowed
            .iter()
            .any(|&(s, e)| s <= base && e >= base + a.len() as u64);
        if whole {
            continue;
        }
        if b.iter().all(|&x| x == 0) && w.m.log().released.contains(&base) {
            continue;
        }
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            if x != y {
                let at = base + i as u64;
                ensure!(
                    allowed.iter().any(|&(s, e)| at >= s && at < e),
                    "{what}: wrote {at:#x} ({x:#04x} -> {y:#04x}) outside the blocks and pages it may write"
                );
            }
        }
    }
    Ok(())
}

fn u32_at(mem: &[u8], at: u64) -> u32 {
    let i = at as usize;
    mem.get(i..i + 4)
        .map_or(0, |b| u32::from_le_bytes(b.try_into().unwrap_or_default()))
}

/// Ring consistency after a pass: the host's indices move together from where the host
/// last wrote them, or the malformed jump of RING-005 (nothing runs, `dropped` grows).
fn check_rings(
    w: &mut World,
    before: &[u8],
    after: &[u8],
    consumed: Option<(u32, u64)>,
    what: &dyn std::fmt::Display,
) -> Result<(), Violation> {
    for v in 0..w.vcpus as usize {
        let Some(m) = w.reg.rings[v] else { continue };
        if m.polled {
            continue;
        }
        let head = u32_at(after, m.sq);
        let cq_tail = u32_at(after, m.cq + 4);
        let dropped = u32_at(after, m.sq + 16);
        let tail = u32_at(before, m.sq + 4);
        let changed = head != u32_at(before, m.sq)
            || cq_tail != u32_at(before, m.cq + 4)
            || dropped != u32_at(before, m.sq + 16);
        let mut next = m;
        if changed {
            // A pass wrote: either both host indices advanced by the same count from where
            // the host last wrote them, or the malformed jump (RING-005): nothing ran, the
            // head is the guest's tail and `dropped` grew by the difference.
            let n = head.wrapping_sub(m.sq_head);
            let ran = cq_tail.wrapping_sub(m.cq_tail);
            let malformed = head == tail
                && dropped == m.dropped.wrapping_add(n)
                && cq_tail == u32_at(before, m.cq + 4);
            ensure!(
                (ran == n && n <= SQ_CAPACITY) || malformed,
                "{what}: vCPU {v} SQ head {head} (host wrote {}), CQ tail {cq_tail} (host wrote {}), dropped {dropped} (host wrote {}), SQ tail {tail}",
                m.sq_head,
                m.cq_tail,
                m.dropped
            );
            if !malformed {
                check_completions(w, before, after, &m, n, what)?;
            }
            next.sq_head = head;
            if malformed {
                next.dropped = dropped;
            } else {
                next.cq_tail = cq_tail;
            }
        }
        if let Some((vcpu, r0)) = consumed {
            if vcpu as usize == v {
                let ran = next.cq_tail.wrapping_sub(m.cq_tail);
                ensure!(
                    u64::from(ran) == r0,
                    "{what}: RING_ENTER said {r0} consumed, the CQ tail moved by {ran}"
                );
            }
        }
        w.reg.rings[v] = Some(next);
    }
    Ok(())
}

/// A call as the oracles' messages name it (formatted only for a message).
struct What {
    code: u64,
    vcpu: u32,
    args: [u64; 6],
}

impl std::fmt::Display for What {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match Call::from_code(self.code) {
            Some(c) => f.write_str(c.descriptor().name)?,
            None => write!(f, "code {:#x}", self.code)?,
        }
        write!(f, " from vCPU {} with {:x?}", self.vcpu, self.args)
    }
}

/// One direct call from `vcpu`, checked: the status, the registers, the memory written,
/// the model of host-owned pages and queue/ring state.
pub(crate) fn direct(w: &mut World, vcpu: u32, regs: &mut CallRegs) -> Result<(), Violation> {
    with_shadow(w, |w, sh| direct_in(w, sh, vcpu, regs))
}

fn direct_in(
    w: &mut World,
    sh: &mut Shadow,
    vcpu: u32,
    regs: &mut CallRegs,
) -> Result<(), Violation> {
    let code = regs.rax;
    let call = pvabi_abi::calls::Call::from_code(code);
    let what = What {
        code,
        vcpu,
        args: regs.args(),
    };
    sh.begin(&w.m);
    let before = &sh.before;
    let log_before = w.m.log().released.len();
    let mut allowed = allowed_pages(w, before);
    let mut ptes = pte_words(w, before);
    // What a failed call may still write (the drain of its deferred queue at a sync point,
    // the host's pages): everything but its own block.
    let side_effects = allowed.clone();
    let regs_in = *regs;
    if let (Some(Call::Multicall), true) = (call, regs.rdi < RAM_BYTES) {
        multicall_ranges(before, regs.rdi, regs.rsi.min(32), &mut allowed, &mut ptes);
    }
    if let (Some(Call::MulticallPages), true) = (call, regs.rdi < RAM_BYTES) {
        multicall_pages_ranges(before, regs.rdi, regs.rsi, regs.r8, &mut allowed, &mut ptes);
    }
    if call == Some(Call::MemUpdatePte) {
        allowed.push((regs.rdi, regs.rdi.saturating_add(8)));
    }
    let ring_block = (call == Some(Call::RingSetup) && regs.rdi <= RAM_BYTES - 32).then(|| {
        let at = regs.rdi as usize;
        let b = &before[at..at + 24];
        let q = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or_default());
        (q(0), q(8), u32_at(before, regs.rdi + 16))
    });
    let deferred_tail = w
        .reg
        .deferred
        .get(vcpu as usize)
        .copied()
        .flatten()
        .map(|q| u32_at(before, q + 4));

    let outcome = w.d.call(Doorbell::ring0(vcpu), regs);
    let dirty = sh.end(&w.m);
    let (before, after) = (&sh.before[..], &sh.after[..]);
    if tracing() {
        eprintln!(
            "{what} -> {:?} {:x?} {outcome:?}",
            Status::from_raw(regs.rax),
            regs.results()
        );
        if call == Some(Call::Multicall) && regs_in.rdi < RAM_BYTES {
            for i in 0..regs_in.rsi.min(32) {
                let e = (regs_in.rdi + MC_SIZE * i) as usize;
                let end = (e + MC_SIZE as usize).min(before.len());
                eprintln!("  before {i}: {:x?}", &before[e.min(end)..end]);
            }
        }
    }

    let s = Status::from_raw(regs.rax);
    w.count(s);
    let Some(s) = s else {
        return Err(Violation(format!(
            "{what}: undefined status {:#x}",
            regs.rax
        )));
    };
    let released: Vec<u64> = w.m.log().released[log_before..].to_vec();
    allowed.extend(released.iter().map(|&p| (p, p + PAGE_SIZE)));

    if vcpu >= w.vcpus {
        ensure!(
            s == Status::InvalidState,
            "{what}: vCPU out of range answered {s:?}"
        );
        diff(
            w,
            sh,
            &dirty,
            &owned_pages(w),
            u64::MAX,
            &format_args!("{what} (vCPU out of range)"),
        )?;
        return Ok(());
    }
    // The status is one the call may return in this state.
    let negotiated = w.negotiated.is_some();
    let Some(d) = call.map(Call::descriptor) else {
        ensure!(
            s == Status::NotSupported,
            "{what}: unknown code answered {s:?}"
        );
        diff(
            w,
            sh,
            &dirty,
            &owned_pages(w),
            u64::MAX,
            &format_args!("{what} (unknown code)"),
        )?;
        return check_regs(w, &regs_in, regs, s, 0, &outcome, &what);
    };
    if w.disabled == Some(d.call) {
        ensure!(
            s == Status::NotSupported,
            "{what}: disabled call answered {s:?}"
        );
    }
    if s == Status::Success || s == Status::Incomplete {
        ensure!(
            may_succeed(d, negotiated, w.granted()),
            "{what}: succeeded (negotiated {:?})",
            w.negotiated
        );
        ensure!(
            s == Status::Success || matches!(d.call, Call::Multicall | Call::MulticallPages),
            "{what}: INCOMPLETE from a call that cannot be preempted"
        );
    }
    if !negotiated && d.family() != Family::Base {
        ensure!(
            matches!(s, Status::NotSupported | Status::NotNegotiated),
            "{what}: before NEGOTIATE answered {s:?}"
        );
    }
    if let (true, Some(f)) = (negotiated, d.feature) {
        if !w.granted().contains(f) {
            ensure!(
                matches!(s, Status::NotSupported | Status::NotGranted),
                "{what}: feature {f:?} not granted, answered {s:?}"
            );
        }
    }
    match outcome {
        Outcome::Resume => ensure!(
            d.returns || s != Status::Success,
            "{what}: SUCCESS and resumed from a call that does not return"
        ),
        Outcome::StopVcpu => {
            ensure!(
                d.call == Call::VcpuStop && s == Status::Success,
                "{what}: stopped"
            );
            w.running[vcpu as usize] = false;
            w.reg.clear_vcpu(vcpu as usize);
        }
        Outcome::End(_) => {
            ensure!(
                matches!(
                    d.call,
                    Call::SystemShutdown | Call::SystemReboot | Call::SystemCrash
                ) && s == Status::Success,
                "{what}: ended the VM"
            );
            w.ended = true;
        }
    }
    // On error nothing is written to the call's block (STAT-012); nothing is written
    // outside what the call may write.
    if s != Status::Success && s != Status::Incomplete {
        if let Some(b) = d.block {
            if !matches!(b.kind, BlockKind::SharedPage { .. }) {
                let gpa = regs_in.args()[b.addr_arg];
                let size = b.size(&regs_in.args()).min(PAGE_SIZE);
                if gpa < RAM_BYTES {
                    let end = (gpa + size).min(RAM_BYTES);
                    diff(
                        w,
                        sh,
                        &dirty,
                        &side_effects.iter().copied().chain([(0, gpa)]).collect(),
                        end,
                        &format_args!("{what}: failed with {s:?}, its block (STAT-012)"),
                    )?;
                }
            }
        }
    }
    // The model: NEGOTIATE, registrations, vCPUs, queues, rings.
    let a = regs_in.args();
    if s == Status::Success {
        match d.call {
            Call::Negotiate => match w.negotiated {
                None => w.negotiated = Some((regs.rdi, Features::from_bits_retain(regs.rsi))),
                // LOCKED once NEGOTIATE has succeeded (BASE rules).
                Some(_) => ensure!(false, "{what}: a second NEGOTIATE succeeded"),
            },
            Call::TimeSetPage => w.reg.time = (a[0] != 0).then_some(a[0]),
            Call::TimeSetStealPage => w.reg.steal[vcpu as usize] = (a[0] != 0).then_some(a[0]),
            Call::EventsSetQueue => w.reg.events[vcpu as usize] = (a[0] != 0).then_some(a[0]),
            Call::DeferSetQueue => w.reg.deferred[vcpu as usize] = (a[0] != 0).then_some(a[0]),
            Call::VcpuStart => w.running[a[0] as usize] = true,
            Call::RingSetup => {
                let (sq, cq, mode) = ring_block.unwrap_or_default();
                w.reg.rings[vcpu as usize] = (sq != 0).then_some(RingModel {
                    sq,
                    cq,
                    polled: mode != 0,
                    sq_head: 0,
                    cq_tail: 0,
                    dropped: 0,
                });
            }
            Call::MemBalloonReclaim => {
                // MEM-009: every page of the list is guest RAM again, filled with zeros.
                for i in 0..a[1].min(PAGE_SIZE / 8) {
                    let at = u64_at(before, a[0].wrapping_add(8 * i)).wrapping_mul(PAGE_SIZE);
                    let page = usize::try_from(at)
                        .ok()
                        .and_then(|at| after.get(at..at.checked_add(4096)?));
                    ensure!(
                        page.is_some_and(|p| p.iter().all(|&x| x == 0)),
                        "{what}: reclaimed page {at:#x} is not RAM filled with zeros (MEM-009)"
                    );
                }
            }
            Call::DeferFlush => {
                *w.stats.entries.entry("deferred run").or_default() += regs.rdi;
                *w.stats.entries.entry("deferred failed").or_default() += regs.rsi;
                if let Some(q) = w.reg.deferred[vcpu as usize] {
                    let first = u32_at(after, q + 20);
                    ensure!(
                        Status::from_raw(u64::from(first)).is_some(),
                        "{what}: deferred first_error_status {first:#x} is not a status"
                    );
                }
                ensure!(
                    regs.rsi <= regs.rdi && regs.rdi <= u64::from(DEFERRED_QUEUE_CAPACITY),
                    "{what}: DEFER_FLUSH ran {} and failed {}",
                    regs.rdi,
                    regs.rsi
                );
            }
            _ => {}
        }
    }
    if matches!(d.call, Call::Negotiate) && s != Status::Success && w.negotiated.is_some() {
        ensure!(
            matches!(
                s,
                Status::Locked
                    | Status::InvalidParameter
                    | Status::VersionUnsupported
                    | Status::FeatureUnavailable
            ),
            "{what}: NEGOTIATE after NEGOTIATE answered {s:?}"
        );
    }
    // A drained queue's head is the guest's tail (DEFER-012), whichever way it drained.
    if let (Some(q), Some(tail)) = (w.reg.deferred[vcpu as usize], deferred_tail) {
        let drained = d.call == Call::DeferFlush && s == Status::Success;
        if drained {
            ensure!(
                u32_at(after, q) == tail,
                "{what}: deferred head {} after a flush, tail {tail}",
                u32_at(after, q)
            );
        }
    }
    // Pages registered by this call are the host's from the call on.
    allowed.extend(w.reg.pages().into_iter().map(|p| (p, p + PAGE_SIZE)));
    diff(w, sh, &dirty, &allowed, u64::MAX, &what)?;
    let (before, after) = (&sh.before[..], &sh.after[..]);
    if d.call == Call::Multicall && matches!(s, Status::Success | Status::Incomplete) {
        check_multicall(w, before, after, &regs_in, regs, &ptes, &what)?;
    }
    if s == Status::AccessDenied {
        // ACCESS_DENIED only for a block (or a page it names) that overlaps a host-owned page.
        let pages = w.reg.pages();
        let gpa = d.block.map_or(u64::MAX, |b| a[b.addr_arg]);
        let names_pages = matches!(
            d.call,
            Call::RingSetup
                | Call::MulticallPages
                | Call::MemShare
                | Call::MemUnshare
                | Call::MemBalloonRelease
                | Call::MemBalloonReclaim
        );
        ensure!(
            names_pages || pages.iter().any(|&p| gpa / PAGE_SIZE == p / PAGE_SIZE),
            "{what}: ACCESS_DENIED, but its block overlaps no host-owned page ({pages:x?})"
        );
    }
    let consumed = (d.call == Call::RingEnter && s == Status::Success).then_some((vcpu, regs.rdi));
    check_rings(w, before, after, consumed, &what)?;
    let defined = if s == Status::Success || s == Status::Incomplete {
        d.results.len()
    } else {
        0
    };
    check_regs(w, &regs_in, regs, s, defined, &outcome, &what)
}

fn u64_at(mem: &[u8], at: u64) -> u64 {
    let i = at as usize;
    mem.get(i..i + 8)
        .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
}

/// The `n` completions a pass wrote (RING-019): a defined status, `user_data` of its
/// submission, `reserved` 0, results 0 on failure and in the slots the call does not define.
fn check_completions(
    w: &mut World,
    before: &[u8],
    after: &[u8],
    m: &RingModel,
    n: u32,
    what: &dyn std::fmt::Display,
) -> Result<(), Violation> {
    for k in 0..n {
        let sqe =
            m.sq + RING_ENTRIES_OFFSET + 64 * u64::from(m.sq_head.wrapping_add(k) % SQ_CAPACITY);
        let cqe =
            m.cq + RING_ENTRIES_OFFSET + 48 * u64::from(m.cq_tail.wrapping_add(k) % CQ_CAPACITY);
        let st = u32_at(after, cqe + 8);
        let status = Status::from_raw(u64::from(st));
        w.count_entry(status);
        let Some(status) = status else {
            return Err(Violation(format!(
                "{what}: completion {k} has undefined status {st:#x}"
            )));
        };
        ensure!(
            u32_at(after, cqe + 12) == 0,
            "{what}: completion {k} reserved not 0"
        );
        let results: Vec<u64> = (0..4).map(|r| u64_at(after, cqe + 16 + 8 * r)).collect();
        let code = u64::from(u32_at(before, sqe + 8));
        let flags = u32_at(before, sqe + 12);
        let defined = match (status, Call::from_code(code)) {
            (Status::Success, Some(c)) => c.descriptor().results.len(),
            _ => 0,
        };
        ensure!(
            results[defined..].iter().all(|&r| r == 0),
            "{what}: completion {k} ({status:?}, code {code:#x}) has results {results:x?}"
        );
        ensure!(
            u64_at(after, cqe) == u64_at(before, sqe) || status == Status::InvalidParameter,
            "{what}: completion {k} user_data is not its submission's"
        );
        if flags == 0 {
            if let Some(c) = Call::from_code(code) {
                if !c.descriptor().batchable {
                    ensure!(
                        status != Status::Success,
                        "{what}: submission {k} ({}) is not batchable and succeeded",
                        c.descriptor().name
                    );
                }
            } else {
                ensure!(
                    status == Status::NotSupported,
                    "{what}: submission {k} has unknown code {code:#x}, answered {status:?}"
                );
            }
        }
    }
    Ok(())
}

/// MULTICALL entries: each processed entry has a defined status, nested MULTICALL is not
/// allowed, a failed entry's results are left as the guest wrote them (BATCH-010), and `r0`
/// / `r1` agree with the arguments. An entry that a MEM_UPDATE_PTE of the same call may
/// have rewritten (one of `ptes` overlaps it: the guest pointed a PTE update at its own
/// list) is not read back: the host ran what the list held when it got there, and the
/// status may be the PTE's value.
#[allow(clippy::too_many_arguments)]
fn check_multicall(
    w: &mut World,
    before: &[u8],
    after: &[u8],
    regs_in: &CallRegs,
    regs: &CallRegs,
    ptes: &Ranges,
    what: &dyn std::fmt::Display,
) -> Result<(), Violation> {
    let (gpa, count, start) = (regs_in.rdi, regs_in.rsi, regs_in.r8);
    let (next, processed) = (regs.rdi, regs.rsi);
    ensure!(
        next <= count && next >= start && next - start == processed,
        "{what}: MULTICALL resume index {next}, processed {processed}"
    );
    for i in start..next {
        let e = gpa + MC_SIZE * i;
        if ptes.iter().any(|&(s, end)| s < e + MC_SIZE && end > e) {
            *w.stats
                .entries
                .entry("rewritten by a PTE update")
                .or_default() += 1;
            continue;
        }
        let st = u32_at(after, e + 4);
        let status = Status::from_raw(u64::from(st));
        w.count_entry(status);
        let Some(status) = status else {
            return Err(Violation(format!(
                "{what}: entry {i} has undefined status {st:#x}"
            )));
        };
        let code = u64::from(u32_at(before, e));
        let reserved = u32_at(before, e + 8) | u32_at(before, e + 12);
        if let Some(c) = Call::from_code(code) {
            if !c.descriptor().batchable && reserved == 0 {
                ensure!(
                    matches!(
                        status,
                        Status::NotAllowedHere
                            | Status::NotSupported
                            | Status::NotNegotiated
                            | Status::NotGranted
                    ),
                    "{what}: entry {i} ({}) is not batchable, answered {status:?}",
                    c.descriptor().name
                );
            }
        } else if reserved == 0 {
            ensure!(
                status == Status::NotSupported,
                "{what}: entry {i} has unknown code {code:#x}, answered {status:?}"
            );
        }
        if status != Status::Success {
            let r = (e + 64) as usize..(e + MC_SIZE) as usize;
            ensure!(
                before[r.clone()] == after[r],
                "{what}: entry {i} failed with {status:?} and its results changed (BATCH-010)"
            );
        }
    }
    Ok(())
}

/// Registers: `r10`, `r11` never change; result registers beyond the defined ones are left
/// alone (or poisoned when strict); on error no result is written.
fn check_regs(
    w: &World,
    before: &CallRegs,
    after: &CallRegs,
    s: Status,
    defined: usize,
    outcome: &Outcome,
    what: &dyn std::fmt::Display,
) -> Result<(), Violation> {
    ensure!(
        (after.r10, after.r11) == (before.r10, before.r11),
        "{what}: changed r10/r11"
    );
    let ok = s == Status::Success || s == Status::Incomplete;
    for (i, (b, a)) in before.results().iter().zip(after.results()).enumerate() {
        if i < defined {
            continue;
        }
        // The old value, 0, or a constant of the configuration (STAT-006, CONV-027):
        // POISON when strict.
        let poisoned = w.strict && (!ok || *outcome == Outcome::Resume);
        let fine = if poisoned {
            a == POISON
        } else {
            a == *b || a == 0
        };
        ensure!(
            fine,
            "{what}: {s:?} result register {i} is {a:#x} (was {b:#x}, strict {})",
            w.strict
        );
    }
    Ok(())
}

/// The final check: the host still answers GET_SPEC_VERSION with SUCCESS.
pub(crate) fn finish(w: &mut World) -> Result<(), Violation> {
    let mut regs = CallRegs::new(Call::GetSpecVersion, &[]);
    let o = w.d.call(Doorbell::ring0(0), &mut regs);
    w.count(regs.status());
    ensure!(
        o == Outcome::Resume && regs.status() == Some(Status::Success),
        "final GET_SPEC_VERSION: {o:?} {:?}",
        regs.status()
    );
    Ok(())
}
