//! Accesses through a page-table entry that a MEM_UPDATE_PTE in the vCPU's deferred queue is
//! still waiting to write (PVABI-MEM-013, and PVABI-DEFER-008 where the access depends on
//! what the queued call writes), seen in the step windows of module `order`.
//!
//! While a window is open and the vCPU's queue holds a published MEM_UPDATE_PTE that has not
//! run (its index in `[host head, guest tail)`, `flags` 0), the VMM hands the checker the
//! vCPU's state at each stop ([`StepState`]: RIP, the general registers, FS and GS bases, CR3,
//! CR4, EFER), which is the state the next instruction starts with. At the following stop the
//! checker reads that instruction's bytes at RIP through the vCPU's page tables (in guest
//! memory, as `KVM_TRANSLATE` would) and decodes it ([`crate::x86`], over iced-x86: the fetch
//! of its own bytes, its memory operands, the stack slots of a push, pop, call or return, the
//! first element of a string instruction). It takes the instruction as executed only if the
//! new RIP is the one it goes to (right after it; a branch's target; for a `ret` or a transfer
//! through memory, the 8 bytes it loaded, read again) and RSP is the one it leaves (unchanged,
//! or moved by its stack operation, unless it writes RSP as an operand), so that an
//! instruction that faulted, or an interrupt delivered before it, shows and is passed over
//! ([`crate::x86::Decoded::ran`]). For an executed instruction it walks the page tables for each page its accesses touch
//! (4-level or 5-level as CR4.LA57 says, 1 GiB and 2 MiB pages, from the CR3 the instruction
//! started with), and looks for each entry read on the way, at any level, among the queued
//! MEM_UPDATE_PTEs that were waiting both at the look before the instruction and at the look
//! after it (so the entry was queued all the while it ran). One found is an access through a queued entry before a drain point: PVABI-MEM-013
//! (each queued entry reported once). If the entry in memory then differs from the value the
//! call will write in a bit that decides the access ([`DECIDES_ACCESS`]: not the accessed,
//! dirty, global, software or protection-key bits), the access's outcome depends on the
//! queued call's effect: PVABI-DEFER-008 as well.
//!
//! Each queued MEM_UPDATE_PTE that was waiting across an instruction whose accesses were
//! walked exercises both rules once. The watch starts at DEFER_SET_QUEUE like the DEFER-001
//! watch, keeps the vCPU's windows opening while it lasts, and ends when the queue is
//! unregistered or replaced, or once [`super::WATCH_ENTRIES`] queued entries have been
//! exercised; the run's step budget bounds it as it bounds every window. Decoding and walking
//! happen only at the stops where a MEM_UPDATE_PTE waits; other stops cost one flag test.
//!
//! What it cannot see:
//! - code at CPL3, which takes no step on PVM, and everything outside the windows (after the
//!   budget, before the first port write, after an exit that closes a window) or on another
//!   vCPU (an access by another vCPU through this vCPU's queued entry);
//! - an instruction a stop was never made before: the first instruction of an exception or
//!   interrupt handler (it runs in the step of the delivery on PVM), the instruction an
//!   `iretq` returns to, the instruction after `mov ss` or `pop ss`;
//! - instructions [`crate::x86::decode`] gives up on (far and privileged control transfers,
//!   `int`, `syscall`, `iretq`; bit strings, gathers, masked and `xsave`-sized accesses: see
//!   its documentation), an instruction that faulted (a page fault because the
//!   old entry is not present included) or that caused an exit of its own (an MMIO access);
//! - implicit accesses: the frame an interrupt or exception pushes, descriptor-table reads,
//!   the page-table walk itself (it reads the entries, it does not go through them);
//! - a translation the vCPU had cached: the walk reads the tables as they are in memory at the
//!   stop after the instruction, which is what the access went through unless the guest
//!   changed an entry on the way without flushing;
//! - telling another vCPU that the entry is in place (the second half of PVABI-MEM-013), and
//!   any other dependence on a queued call (a call whose result depends on a queued
//!   TIME_SET_TIMER or EVENTS_SET_MASK, for PVABI-DEFER-008): only accesses through queued
//!   page-table entries are looked for.

use pvabi_abi::batch::{DeferredEntry, DEFERRED_QUEUE_CAPACITY};
use pvabi_abi::calls::Call;

use super::{order, GuestChecker, DEFER_008, MEM_013, WATCH_ENTRIES};
use crate::sync::lock;
use crate::x86::{self, Access, Regs};

/// A vCPU's state at a stop of a step window (the instruction at `rip` has not run yet),
/// which the VMM hands the checking host when it asks for it
/// ([`Dispatcher::step_window_wants_state`](crate::Dispatcher::step_window_wants_state),
/// [`Dispatcher::step_window_state`](crate::Dispatcher::step_window_state)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StepState {
    /// RIP: the instruction the vCPU executes next (the checker reads its bytes through the
    /// page tables at `cr3`).
    pub rip: u64,
    /// The general registers in encoding order: rax, rcx, rdx, rbx, rsp, rbp, rsi, rdi, r8 to
    /// r15.
    pub gprs: [u64; 16],
    /// FS's base.
    pub fs_base: u64,
    /// GS's base.
    pub gs_base: u64,
    /// CR3.
    pub cr3: u64,
    /// CR4 (bit 12, LA57: 5-level paging).
    pub cr4: u64,
    /// EFER (bit 10, LMA: long mode active).
    pub efer: u64,
    /// The current privilege level.
    pub cpl: u8,
    /// CS.L: the vCPU runs 64-bit code.
    pub long_mode: bool,
}

/// What the look at accesses through queued entries did in a run (all vCPUs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PteSteps {
    /// Instructions whose accesses were walked while a MEM_UPDATE_PTE waited in the queue.
    pub checked: u64,
    /// Instructions run while one waited that the decoder gives up on (see
    /// [`crate::x86::decode`]), or not at CPL0 in 64-bit mode.
    pub undecoded: u64,
    /// Decoded instructions whose next stop did not fit them (a fault, an interrupt, an
    /// exit: [`crate::x86::Decoded::ran`]): not taken as executed.
    pub unconfirmed: u64,
}

/// Where in a window a look was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stop {
    /// The window's first look.
    Open,
    /// After a single-stepped instruction.
    Step,
    /// At the exit that closes it.
    Close,
}

/// A MEM_UPDATE_PTE published in the queue and not yet run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Queued {
    /// Its free-running queue index.
    pub index: u32,
    /// `entry_gpa`.
    pub entry: u64,
    /// `value`.
    pub value: u64,
    /// `level`.
    pub level: u64,
}

/// An access that went through a queued entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Hit {
    /// The queued call.
    pub queued: Queued,
    /// The access.
    pub access: Access,
    /// The instruction's address.
    pub rip: u64,
    /// CR3 of the walk.
    pub cr3: u64,
    /// The walk's level at which it read the entry (4 = PML4, ..., 1 = PTE).
    pub level: u8,
    /// What the entry held in memory.
    pub current: u64,
}

/// What a stop showed: more entries exercised, the hits, and the step counts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Seen {
    /// Queued entries exercised for the first time.
    pub exercised: u32,
    /// New hits (each queued entry's first).
    pub hits: Vec<Hit>,
    /// The counts of this stop.
    pub steps: PteSteps,
}

/// One vCPU's watch of its deferred queue's MEM_UPDATE_PTEs.
#[derive(Clone, Debug)]
pub(crate) struct PteWatch {
    /// The queue's page: another is another queue.
    pub key: u64,
    /// The MEM_UPDATE_PTEs waiting at the look before the last.
    before: Vec<Queued>,
    /// Those waiting at the last look.
    now: Vec<Queued>,
    /// Looks taken.
    looks: u64,
    /// The state handed in at the stop of look number `.0`.
    pending: Option<(u64, StepState)>,
    /// The indices of the queued entries exercised.
    exercised: Vec<u32>,
    /// The indices of the queued entries reported.
    reported: Vec<u32>,
}

const PRESENT: u64 = 1;
const PAGE_SIZE_BIT: u64 = 1 << 7;
const TABLE: u64 = 0x000f_ffff_ffff_f000;
/// The bits of an entry that decide an access made through it: present, writable, user, the
/// cache-type bits (PWT, PCD, and bit 7: PAT in a 4 KiB entry, the page size above), the frame
/// or table address (which holds a large page's PAT bit 12) and execute-disable. Not the
/// accessed and dirty bits, which the processor sets as it walks, nor the global bit (a TLB
/// matter), the bits software may use (9-11, 52-58) or the protection key (59-62, which counts
/// only with CR4.PKE): a queued change of those alone leaves the access's outcome as it is.
const DECIDES_ACCESS: u64 = 0b1001_1111 | TABLE | (1 << 63);
const EFER_LMA: u64 = 1 << 10;
const CR4_LA57: u64 = 1 << 12;

/// Whether writing `queued` over an entry that holds `current` changes an access made through
/// it ([`DECIDES_ACCESS`]).
fn changes_the_access(current: u64, queued: u64) -> bool {
    (current ^ queued) & DECIDES_ACCESS != 0
}

impl PteWatch {
    /// A watch of the queue at `key`, with no look yet.
    pub fn new(key: u64) -> PteWatch {
        PteWatch {
            key,
            before: Vec::new(),
            now: Vec::new(),
            looks: 0,
            pending: None,
            exercised: Vec::new(),
            reported: Vec::new(),
        }
    }

    /// Whether a MEM_UPDATE_PTE waits at the last look: the VMM's state at this stop is
    /// wanted.
    pub fn wanted(&self) -> bool {
        !self.now.is_empty()
    }

    /// The queued entries exercised so far.
    pub fn exercised(&self) -> u32 {
        self.exercised.len() as u32
    }

    /// A look at the queue (`look`: the host's head, the guest's tail and the slots, as module
    /// `order` takes it), at a stop of kind `at`.
    pub fn look(&mut self, at: Stop, look: &order::Look) {
        self.looks += 1;
        if at != Stop::Step {
            // A window's bounds: no instruction runs between this look and the last one
            // that a state was handed in for.
            self.pending = None;
        }
        self.before = std::mem::replace(&mut self.now, waiting(look));
    }

    /// The vCPU's state at this stop (handed in after its look): the instruction the last
    /// state started, if it ran, is checked; `read` reads the 8 bytes of guest memory at a
    /// guest-physical, 8-aligned address (`None`: not RAM).
    pub fn state(&mut self, s: &StepState, read: impl Fn(u64) -> Option<u64>) -> Seen {
        let mut seen = Seen::default();
        let prev = self
            .pending
            .take()
            .filter(|(at, _)| at + 1 == self.looks)
            .map(|(_, p)| p);
        if !self.now.is_empty() {
            self.pending = Some((self.looks, *s));
        }
        let Some(prev) = prev else {
            return seen;
        };
        // Waiting at both looks: queued for the whole of the instruction.
        let both: Vec<Queued> = self
            .before
            .iter()
            .filter(|q| self.now.contains(q))
            .copied()
            .collect();
        if both.is_empty() {
            return seen;
        }
        let paging = prev.efer & EFER_LMA != 0 && prev.long_mode && prev.cpl == 0;
        let five_level = prev.cr4 & CR4_LA57 != 0;
        let mut bytes = [0u8; 16];
        let code = if paging {
            fetch(prev.cr3, five_level, prev.rip, &read, &mut bytes)
        } else {
            &[]
        };
        let regs = Regs {
            rip: prev.rip,
            gprs: &prev.gprs,
            fs_base: prev.fs_base,
            gs_base: prev.gs_base,
        };
        let Some(d) = x86::decode(code, &regs) else {
            seen.steps.undecoded += 1;
            return seen;
        };
        // The 8 bytes a `ret` or a transfer through memory loaded, read again now.
        let load = |va: u64| {
            let mut word = [0u8; 8];
            let got = fetch(prev.cr3, five_level, va, &read, &mut word).len();
            (got == word.len()).then(|| u64::from_le_bytes(word))
        };
        let Some(accesses) = d.ran(prev.rip, s.rip, &s.gprs, load) else {
            seen.steps.unconfirmed += 1;
            return seen;
        };
        seen.steps.checked += 1;
        for q in &both {
            if !self.exercised.contains(&q.index) {
                self.exercised.push(q.index);
                seen.exercised += 1;
            }
        }
        for access in accesses {
            // Every page from the first byte's to the last one's.
            let first = access.address >> 12;
            let pages =
                u64::from(access.size.max(1) - 1).wrapping_add(access.address & 0xfff) >> 12;
            for va in (0..=pages).map(|p| first.wrapping_add(p) << 12) {
                for (entry, current, level) in walk(prev.cr3, five_level, va, &read) {
                    let Some(q) = both.iter().find(|q| q.entry == entry) else {
                        continue;
                    };
                    if self.reported.contains(&q.index) {
                        continue;
                    }
                    self.reported.push(q.index);
                    seen.hits.push(Hit {
                        queued: *q,
                        access,
                        rip: prev.rip,
                        cr3: prev.cr3,
                        level,
                        current,
                    });
                }
            }
        }
        seen
    }
}

/// The MEM_UPDATE_PTEs published and not yet run in `look` (none if its occupancy is not
/// valid: the host runs none of a malformed queue).
fn waiting(look: &order::Look) -> Vec<Queued> {
    let size = size_of::<DeferredEntry>();
    let n = look.tail.wrapping_sub(look.head);
    if n > DEFERRED_QUEUE_CAPACITY || look.slots.len() < DEFERRED_QUEUE_CAPACITY as usize * size {
        return Vec::new();
    }
    let word = |b: &[u8], at: usize| {
        let mut v = [0u8; 8];
        v.copy_from_slice(&b[at..at + 8]);
        u64::from_le_bytes(v)
    };
    (0..n)
        .filter_map(|k| {
            let index = look.head.wrapping_add(k);
            let slot = (index % DEFERRED_QUEUE_CAPACITY) as usize;
            let b = &look.slots[slot * size..(slot + 1) * size];
            let head = word(b, 0);
            // `call` and `flags` (0: an entry with other flags is refused, and writes nothing).
            (head == u64::from(Call::MemUpdatePte.code())).then(|| Queued {
                index,
                entry: word(b, 8),
                value: word(b, 16),
                level: word(b, 24),
            })
        })
        .collect()
}

/// The guest-physical address `va` maps to in the tables at `cr3`, if it is mapped.
fn translate(
    cr3: u64,
    five_level: bool,
    va: u64,
    read: &impl Fn(u64) -> Option<u64>,
) -> Option<u64> {
    let &(_, entry, level) = walk(cr3, five_level, va, read).last()?;
    // A walk that ends anywhere but at a present leaf (a PTE, or a PS entry at level 3 or 2)
    // maps nothing: an absent entry, or a table that could not be read.
    let leaf = level == 1 || (level <= 3 && entry & PAGE_SIZE_BIT != 0);
    if entry & PRESENT == 0 || !leaf {
        return None;
    }
    // The page's size: 4 KiB at level 1, 2 MiB at level 2, 1 GiB at level 3.
    let offset = (1u64 << (12 + 9 * u32::from(level - 1))) - 1;
    Some((entry & TABLE & !offset) | (va & offset))
}

/// The bytes at `va` (as many as `buf` holds, fewer where they run into a page that is not
/// mapped), read through the tables at `cr3` into `buf`.
fn fetch<'b>(
    cr3: u64,
    five_level: bool,
    va: u64,
    read: &impl Fn(u64) -> Option<u64>,
    buf: &'b mut [u8],
) -> &'b [u8] {
    let mut n = 0;
    while n < buf.len() {
        let at = va.wrapping_add(n as u64);
        let Some(gpa) = translate(cr3, five_level, at, read) else {
            break;
        };
        // Whole aligned words, up to the end of the page or of the buffer.
        let room = (0x1000 - (at & 0xfff)) as usize;
        let end = (n + room).min(buf.len());
        while n < end {
            let a = gpa + (va.wrapping_add(n as u64) - at);
            let Some(word) = read(a & !7) else {
                return &buf[..n];
            };
            let bytes = word.to_le_bytes();
            let from = (a & 7) as usize;
            let take = (8 - from).min(end - n);
            buf[n..n + take].copy_from_slice(&bytes[from..from + take]);
            n += take;
        }
    }
    &buf[..n]
}

/// The entries a walk of `va` reads from the tables at `cr3` (bits 51:12), top level first,
/// each as `(address, value, level)`: up to a non-present entry, a large page (PS at level 3
/// or 2) or the PTE. Stops where an entry cannot be read.
fn walk(
    cr3: u64,
    five_level: bool,
    va: u64,
    read: &impl Fn(u64) -> Option<u64>,
) -> Vec<(u64, u64, u8)> {
    let mut entries = Vec::with_capacity(5);
    let mut table = cr3 & TABLE;
    let top: u8 = if five_level { 5 } else { 4 };
    for level in (1..=top).rev() {
        let index = (va >> (12 + 9 * u32::from(level - 1))) & 0x1ff;
        let at = table + index * 8;
        let Some(entry) = read(at) else {
            break;
        };
        entries.push((at, entry, level));
        if entry & PRESENT == 0 || level == 1 || (level <= 3 && entry & PAGE_SIZE_BIT != 0) {
            break;
        }
        table = entry & TABLE;
    }
    entries
}

impl GuestChecker {
    /// Records what a stop of `vcpu` showed (PVABI-MEM-013, PVABI-DEFER-008).
    pub(super) fn pte_seen(&self, vcpu: u32, seen: &Seen) {
        if seen == &Seen::default() {
            return;
        }
        let mut s = lock(&self.state);
        let steps = &mut s.report.pte_steps;
        steps.checked += seen.steps.checked;
        steps.undecoded += seen.steps.undecoded;
        steps.unconfirmed += seen.steps.unconfirmed;
        for _ in 0..seen.exercised {
            s.exercised(MEM_013);
            s.exercised(DEFER_008);
        }
        for h in &seen.hits {
            let q = h.queued;
            let a = h.access;
            let what = format!(
                "{} of {} byte(s) at {:#x} (the instruction at rip {:#x}) went through the \
                 page-table entry at {:#x} (read at level {} of the walk from CR3 {:#x}) while \
                 MEM_UPDATE_PTE of that entry (value {:#x}, level {}) waited in the vCPU's \
                 deferred queue (index {}), published and not yet run",
                a.kind.describe(),
                a.size,
                a.address,
                h.rip,
                q.entry,
                h.level,
                h.cr3,
                q.value,
                q.level,
                q.index
            );
            s.violated(
                MEM_013,
                vcpu,
                None,
                format!(
                    "{what}: access memory through an entry you queued only after the vCPU \
                     has reached a drain point (DEFER_FLUSH or a sync-point call has returned)"
                ),
            );
            if changes_the_access(h.current, q.value) {
                s.violated(
                    DEFER_008,
                    vcpu,
                    None,
                    format!(
                        "{what}; the entry held {:#x}, so the access's outcome depended on the \
                         queued call's effect: make a call that is a drain point of the vCPU \
                         (DEFER_FLUSH, a sync-point call) before an access that needs it",
                        h.current
                    ),
                );
            }
        }
    }
}

/// The checks that need the dispatcher (the VMM's side of the look, through
/// [`crate::Dispatcher`]).
impl<M: crate::machine::Machine> crate::state::Inner<M> {
    /// Whether `vcpu`'s open window wants its state at this stop: a MEM_UPDATE_PTE waits in
    /// its queue at the last look.
    pub(crate) fn step_window_wants_state(&self, c: &GuestChecker, vcpu: u32) -> bool {
        c.watches.get(vcpu as usize).is_some_and(|w| {
            let w = lock(w);
            w.open.is_some() && w.pte.as_ref().is_some_and(PteWatch::wanted)
        })
    }

    /// `vcpu`'s state at this stop of its open window: the instruction since the last stop is
    /// checked; the watch ends once it has exercised [`WATCH_ENTRIES`] queued entries.
    pub(crate) fn step_window_state(&self, c: &GuestChecker, vcpu: u32, state: &StepState) {
        let Some(watch) = c.watches.get(vcpu as usize) else {
            return;
        };
        let mem = self.machine.memory();
        let read = |gpa: u64| {
            crate::guest_mem::copy_array::<8, _>(mem, gpa)
                .ok()
                .map(u64::from_le_bytes)
        };
        let mut w = lock(watch);
        if w.open.is_none() {
            return;
        }
        let Some(p) = w.pte.as_mut() else {
            return;
        };
        let seen = p.state(state, read);
        if p.exercised() >= WATCH_ENTRIES {
            w.pte = None;
            if let Some(watching) = c.watching.get(vcpu as usize) {
                watching.store(w.armed(), std::sync::atomic::Ordering::SeqCst);
            }
        }
        c.pte_seen(vcpu, &seen);
    }
}

/// Hands `look` (`None`: the queue is gone, which ends the watch) to the watch in `watch`.
pub(crate) fn look_at(watch: &mut Option<PteWatch>, at: Stop, look: Option<&order::Look>) {
    match (watch.as_mut(), look) {
        (Some(w), Some(look)) => w.look(at, look),
        _ => *watch = None,
    }
}

#[cfg(test)]
mod tests {
    use super::{walk, Hit, PteWatch, Queued, Seen, StepState, Stop};
    use crate::guest_check::order::Look;
    use crate::x86::{Access, Kind};
    use pvabi_abi::batch::{DeferredEntry, DEFERRED_QUEUE_CAPACITY};
    use pvabi_abi::calls::Call;
    use std::collections::BTreeMap;

    /// Page tables: PML4 at 0x1000, PDPT 0x2000, PD 0x3000, PT 0x4000, mapping VA 0x40_0000
    /// (PML4 0, PDPT 0, PD 2, PTE 0) to 0x9000; the code at VA 0x20_0000 through a 2 MiB
    /// page (PD 1).
    fn tables() -> BTreeMap<u64, u64> {
        BTreeMap::from([
            (0x1000, 0x2003),
            (0x2000, 0x3003),
            (0x3008, 0x20_0083),
            (0x3010, 0x4003),
            (0x4000, 0x9003),
        ])
    }

    const PTE: u64 = 0x4000;
    const VA: u64 = 0x40_0000;

    /// A look with the MEM_UPDATE_PTEs `(entry, value)` published from index 0.
    fn look(queued: &[(u64, u64)]) -> Look {
        let size = size_of::<DeferredEntry>();
        let mut slots = vec![0u8; DEFERRED_QUEUE_CAPACITY as usize * size];
        for (i, (entry, value)) in queued.iter().enumerate() {
            let s = &mut slots[i * size..(i + 1) * size];
            s[0..4].copy_from_slice(&Call::MemUpdatePte.code().to_le_bytes());
            s[8..16].copy_from_slice(&entry.to_le_bytes());
            s[16..24].copy_from_slice(&value.to_le_bytes());
            s[24..32].copy_from_slice(&1u64.to_le_bytes());
        }
        Look {
            head: 0,
            tail: queued.len() as u32,
            slots,
            step: 0,
        }
    }

    /// The code: at 0x20_0000 (through the 2 MiB page at physical 0x20_0000), `mov rax,
    /// [rcx]`, then `nop`s; at 0x30_0000 the same; a `syscall` at 0x20_1000, a `ret` at
    /// 0x20_2000, a `rep stosb` at 0x20_3000.
    const SYSCALL: u64 = 0x20_1000;
    const RET: u64 = 0x20_2000;
    const REP_STOSB: u64 = 0x20_3000;

    fn memory(gpa: u64) -> Option<u64> {
        let code = |at: u64| match at {
            0x20_0000 | 0x30_0000 => 0x9090_9090_9001_8b48, // mov rax, [rcx]; nop ...
            0x20_1000 => 0x050f,
            0x20_2000 => 0xc3,
            0x20_3000 => 0xaaf3,
            _ => 0x9090_9090_9090_9090,
        };
        if (0x20_0000..0x40_0000).contains(&gpa) {
            return Some(code(gpa));
        }
        Some(tables().get(&gpa).copied().unwrap_or(0))
    }

    /// A stop at `rip`, with rcx = VA, rsp = 0x8000.
    fn at(rip: u64) -> StepState {
        let mut s = StepState {
            rip,
            cr3: 0x1000,
            efer: 1 << 10,
            long_mode: true,
            ..StepState::default()
        };
        s.gprs[1] = VA;
        s.gprs[4] = 0x8000;
        s
    }

    fn state(w: &mut PteWatch, s: &StepState) -> Seen {
        w.state(s, memory)
    }

    #[test]
    fn a_load_through_a_queued_pte_is_a_hit_with_its_address_and_level() {
        let mut w = PteWatch::new(0x5000);
        let q = look(&[(PTE, 0xa003)]);
        w.look(Stop::Open, &q);
        assert!(w.wanted());
        assert_eq!(state(&mut w, &at(0x20_0000)), Seen::default());
        w.look(Stop::Step, &q);
        let seen = state(&mut w, &at(0x20_0003));
        assert_eq!(seen.exercised, 1);
        assert_eq!(seen.steps.checked, 1);
        assert_eq!(
            seen.hits,
            [Hit {
                queued: Queued {
                    index: 0,
                    entry: PTE,
                    value: 0xa003,
                    level: 1
                },
                access: Access {
                    address: VA,
                    size: 8,
                    kind: Kind::Read
                },
                rip: 0x20_0000,
                cr3: 0x1000,
                level: 1,
                current: 0x9003,
            }]
        );
        // Reported once: the same load again (the stop at it does not follow the `nop` before,
        // which is not taken as run) is checked, but neither reported nor exercised again.
        w.look(Stop::Step, &q);
        assert_eq!(state(&mut w, &at(0x20_0000)).steps.unconfirmed, 1);
        w.look(Stop::Step, &q);
        let again = state(&mut w, &at(0x20_0003));
        assert_eq!(again.steps.checked, 1);
        assert!(again.hits.is_empty() && again.exercised == 0, "{again:?}");
    }

    #[test]
    fn a_queued_entry_higher_up_the_walk_counts_and_one_off_the_walk_does_not() {
        // The PDE that links the PT (level 2), and the PTE of another page.
        // (The fetches at 0x30_0000 go through PML4 0, PDPT 0 and the 2 MiB page at PD 1.)
        for (entry, hit) in [(0x3010, true), (PTE + 8, false), (0x3018, false)] {
            let mut w = PteWatch::new(0x5000);
            let q = look(&[(entry, 0)]);
            w.look(Stop::Open, &q);
            state(&mut w, &at(0x30_0000));
            w.look(Stop::Step, &q);
            let seen = state(&mut w, &at(0x30_0003));
            assert_eq!(seen.exercised, 1, "{entry:#x}");
            assert_eq!(!seen.hits.is_empty(), hit, "{entry:#x}: {seen:?}");
            if hit {
                assert_eq!(seen.hits[0].level, 2);
            }
        }
    }

    #[test]
    fn the_fetch_of_code_through_a_queued_entry_is_an_access() {
        // The code's 2 MiB page (PD 1, at 0x3008) is queued: every instruction fetched there.
        let mut w = PteWatch::new(0x5000);
        let q = look(&[(0x3008, 0x20_0083)]);
        w.look(Stop::Open, &q);
        state(&mut w, &at(0x20_0003));
        w.look(Stop::Step, &q);
        let seen = state(&mut w, &at(0x20_0004));
        assert_eq!(seen.hits.len(), 1, "{seen:?}");
        assert_eq!(seen.hits[0].access.kind, Kind::Fetch);
        assert_eq!(seen.hits[0].current, 0x20_0083);
    }

    #[test]
    fn nothing_counts_unless_the_instruction_ran_while_the_entry_waited() {
        let q = look(&[(PTE, 0xa003)]);
        let empty = look(&[]);
        // Queued only after the instruction (its look before showed nothing).
        let mut w = PteWatch::new(0x5000);
        w.look(Stop::Open, &empty);
        assert!(!w.wanted());
        state(&mut w, &at(0x20_0000));
        w.look(Stop::Step, &q);
        assert_eq!(state(&mut w, &at(0x20_0003)), Seen::default());
        // Drained before the next look (the look after shows it gone).
        let mut w = PteWatch::new(0x5000);
        w.look(Stop::Open, &q);
        state(&mut w, &at(0x20_0000));
        w.look(Stop::Step, &empty);
        assert_eq!(state(&mut w, &at(0x20_0003)), Seen::default());
        // An interrupt delivered before the load: the next stop is in the handler.
        let mut w = PteWatch::new(0x5000);
        w.look(Stop::Open, &q);
        state(&mut w, &at(0x20_0000));
        w.look(Stop::Step, &q);
        let seen = state(&mut w, &at(0x30_0001));
        assert_eq!(
            (seen.steps.unconfirmed, seen.hits.len()),
            (1, 0),
            "{seen:?}"
        );
        // The same RIP but another RSP (a delivery whose handler is right there).
        let mut w = PteWatch::new(0x5000);
        w.look(Stop::Open, &q);
        state(&mut w, &at(0x20_0000));
        w.look(Stop::Step, &q);
        let mut after = at(0x20_0003);
        after.gprs[4] -= 40;
        assert_eq!(state(&mut w, &after).steps.unconfirmed, 1);
        // A stop without a state in between: the state handed in before it is not used.
        let mut w = PteWatch::new(0x5000);
        w.look(Stop::Open, &q);
        state(&mut w, &at(0x20_0000));
        w.look(Stop::Step, &q);
        w.look(Stop::Step, &q);
        assert_eq!(state(&mut w, &at(0x20_0003)), Seen::default());
        // A window closed and opened again.
        let mut w = PteWatch::new(0x5000);
        w.look(Stop::Open, &q);
        state(&mut w, &at(0x20_0000));
        w.look(Stop::Close, &q);
        assert_eq!(state(&mut w, &at(0x20_0003)), Seen::default());
        // An instruction the decoder gives up on (a `syscall`).
        let mut w = PteWatch::new(0x5000);
        w.look(Stop::Open, &q);
        state(&mut w, &at(SYSCALL));
        w.look(Stop::Step, &q);
        assert_eq!(state(&mut w, &at(SYSCALL + 2)).steps.undecoded, 1);
    }

    #[test]
    fn a_rep_string_instruction_reaches_the_pages_of_all_its_elements() {
        // rep stosb of 0x1000 bytes from VA - 0x800 (the 2 MiB page below VA), run in one
        // step with RIP still on it: its second half is in VA's page, behind the queued PTE.
        let q = look(&[(PTE, 0xa003)]);
        let mut before = at(REP_STOSB);
        before.gprs[1] = 0x1000;
        before.gprs[7] = VA - 0x800;
        let mut after = before;
        after.gprs[1] = 0;
        after.gprs[7] = VA + 0x800;
        let mut w = PteWatch::new(0x5000);
        w.look(Stop::Open, &q);
        state(&mut w, &before);
        w.look(Stop::Step, &q);
        let seen = state(&mut w, &after);
        assert_eq!(seen.steps.checked, 1, "{seen:?}");
        assert_eq!(
            seen.hits
                .iter()
                .map(|h| (h.access, h.level))
                .collect::<Vec<_>>(),
            [(
                Access {
                    address: VA - 0x800,
                    size: 0x1000,
                    kind: Kind::Write
                },
                1
            )]
        );
    }

    #[test]
    fn a_ret_counts_where_it_went_to_the_address_it_popped() {
        // RSP is VA (the page behind the queued PTE, physical 0x9000), which holds 0x20_0100.
        let mem = |gpa: u64| match gpa {
            0x9000 => Some(0x20_0100),
            _ => memory(gpa),
        };
        let q = look(&[(PTE, 0xa003)]);
        let ret_at = |rip: u64, rsp: u64| {
            let mut s = at(rip);
            s.gprs[4] = rsp;
            s
        };
        let mut w = PteWatch::new(0x5000);
        w.look(Stop::Open, &q);
        w.state(&ret_at(RET, VA), mem);
        w.look(Stop::Step, &q);
        let seen = w.state(&ret_at(0x20_0100, VA + 8), mem);
        assert_eq!(seen.steps.checked, 1, "{seen:?}");
        assert_eq!(
            seen.hits.iter().map(|h| h.access).collect::<Vec<_>>(),
            [Access {
                address: VA,
                size: 8,
                kind: Kind::Read
            }]
        );
        // Anywhere else (an interrupt's handler), or with another RSP: not run.
        for next in [ret_at(0x20_0101, VA + 8), ret_at(0x20_0100, VA - 32)] {
            let mut w = PteWatch::new(0x5000);
            w.look(Stop::Open, &q);
            w.state(&ret_at(RET, VA), mem);
            w.look(Stop::Step, &q);
            let seen = w.state(&next, mem);
            assert_eq!(
                (seen.steps.unconfirmed, seen.hits.len()),
                (1, 0),
                "{seen:?}"
            );
        }
    }

    #[test]
    fn only_bits_that_decide_an_access_make_it_depend_on_the_queued_value() {
        let entry = 0x0000_0000_0020_8003; // present, writable, frame 0x208000
                                           // Accessed, dirty, global, the software bits and the protection key: no dependence.
        for bit in [5, 6, 8, 9, 10, 11, 52, 58, 59, 62] {
            assert!(
                !super::changes_the_access(entry, entry ^ (1 << bit)),
                "bit {bit}"
            );
        }
        // Present, writable, user, PWT, PCD, PAT/PS, the frame, execute-disable: dependence.
        for bit in [0, 1, 2, 3, 4, 7, 12, 30, 51, 63] {
            assert!(
                super::changes_the_access(entry, entry ^ (1 << bit)),
                "bit {bit}"
            );
        }
    }

    #[test]
    fn only_published_mem_update_ptes_with_flags_0_wait() {
        let mut q = look(&[(PTE, 0xa003), (PTE, 0xb003)]);
        // Entry 1 has flags set (the host refuses it), and tail covers only entry 0 at first.
        let size = size_of::<DeferredEntry>();
        q.slots[size + 4] = 1;
        assert_eq!(super::waiting(&q).len(), 1);
        q.tail = 0;
        assert!(super::waiting(&q).is_empty());
        // Another call code.
        let mut other = look(&[(PTE, 0)]);
        other.slots[0..4].copy_from_slice(&Call::EventsSetMask.code().to_le_bytes());
        assert!(super::waiting(&other).is_empty());
        // A malformed queue (tail - head beyond the capacity).
        let mut bad = look(&[(PTE, 0)]);
        bad.tail = DEFERRED_QUEUE_CAPACITY + 1;
        assert!(super::waiting(&bad).is_empty());
    }

    #[test]
    fn code_is_read_through_the_page_tables_across_a_page_boundary() {
        // VA 0x40_0ffc is PTE 0's page (physical 0x9000) + 0xffc; 0x40_1000 is PTE 1 (absent).
        let mem = |gpa: u64| match gpa {
            0x9ff8 => Some(0x4433_2211_0000_0000),
            _ => memory(gpa),
        };
        let mut buf = [0u8; 16];
        assert_eq!(
            super::fetch(0x1000, false, 0x40_0ffc, &mem, &mut buf),
            [0x11, 0x22, 0x33, 0x44]
        );
        // Through the 2 MiB page: 16 bytes from the middle of a word.
        assert_eq!(
            super::fetch(0x1000, false, 0x20_0001, &mem, &mut buf),
            [
                0x8b, 0x01, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90,
                0x90, 0x90
            ]
        );
        assert_eq!(
            super::translate(0x1000, false, 0x20_1234, &mem),
            Some(0x20_1234)
        );
        assert_eq!(
            super::translate(0x1000, false, VA + 0x10, &mem),
            Some(0x9010)
        );
        assert_eq!(super::translate(0x1000, false, VA + 0x1000, &mem), None);
        // A table that cannot be read (the PT here) maps nothing.
        let no_pt = |gpa: u64| (gpa & !0xfff != 0x4000).then(|| memory(gpa)).flatten();
        assert_eq!(super::translate(0x1000, false, VA, &no_pt), None);
    }

    #[test]
    fn walks_stop_at_large_pages_and_absent_entries() {
        let mem = tables();
        let read = |gpa: u64| mem.get(&gpa).copied().or(Some(0));
        assert_eq!(
            walk(0x1000, false, VA, &read),
            [
                (0x1000, 0x2003, 4),
                (0x2000, 0x3003, 3),
                (0x3010, 0x4003, 2),
                (0x4000, 0x9003, 1)
            ]
        );
        assert_eq!(walk(0x1000, false, 0x20_0000, &read).len(), 3);
        // PML4 entry 1 is absent.
        assert_eq!(walk(0x1000, false, 1 << 39, &read), [(0x1008, 0, 4)]);
        // 5-level paging starts one level up; the PCID bits of CR3 are no address.
        assert_eq!(walk(0x1fff, true, 0, &read)[0], (0x1000, 0x2003, 5));
        // Unreadable memory ends the walk.
        assert!(walk(0x1000, false, VA, &|_| None).is_empty());
    }
}
