//! Watched pages ([`VmCtl::watch_pages`]): guest pages taken out of KVM's memory slots while
//! this VMM keeps its own mapping of them, so that every guest access to one becomes a
//! `KVM_EXIT_MMIO` that the vCPU thread serves from that mapping (the same memory the host's
//! threads read and write) and reports to the exit watcher
//! ([`ExitWatcher::watched_access`](super::ExitWatcher::watched_access)). The checking host
//! watches the pages the guest consumes from (the event queue, the completion ring) to see
//! the order of the guest's reads of an entry and its store of `head` (PVABI-EVT-010,
//! PVABI-RING-006).
//!
//! # What an access looks like, measured on this project's PVM host
//!
//! `host-ref/src/vm/mmio_probe.rs` (an ignored test that prints) measured, from CPL0 and CPL3
//! alike: every load or store to a page outside the slots is one exit with its exact address,
//! width and direction (an aligned or unaligned 8-byte `mov`: one exit of 8 bytes; 4, 2 and 1
//! bytes likewise); an access that straddles the page's edge exits with only the bytes inside
//! it; `rep movsb` of 64 bytes is 64 exits of 1 byte, `rep movsq` one exit per 8 bytes; an SSE
//! `movdqu` at CPL3 two exits of 8 bytes; `lock xadd`, `lock cmpxchg`, `xchg` and `lock add` a
//! read exit and then a write exit (so a locked read-modify-write of a watched page is **not
//! atomic** against the host's own stores to it, which this layer cannot prevent). An exit
//! costs about what a port exit costs: ~10 µs from CPL0, ~60 µs from CPL3 (that day).
//!
//! # Changing the slots
//!
//! KVM cannot shrink a slot: watching a page deletes the slot that holds it and creates the
//! pieces around it, and between the two ioctls the rest of that RAM is missing too. A vCPU
//! that runs through the gap faults (measured: both vCPUs of the probe triple-faulted at the
//! first change). So every change runs with all vCPUs held out of `KVM_RUN`: a *gate* each
//! vCPU thread passes before `KVM_RUN` (and leaves right after it returns) is closed, every
//! vCPU is kicked, the change waits until none is inside, then the gate opens again (measured:
//! ~40 µs of ioctls per change, ~200 µs with the wait for two vCPUs spinning at CPL3). A vCPU
//! that is not in `KVM_RUN` (in a port handler, halted, parked) is not waited for; the thread
//! that changes the slots may be a vCPU thread in its port handler.
//!
//! The dirty-page log ([`VmConfig::log_guest_writes`](super::VmConfig::log_guest_writes))
//! survives a change: the bits of a deleted slot are read first and kept until the next
//! [`VmCtl::guest_written_pages`], which also counts each store to a watched page.
//!
//! An MMIO exit at an address inside guest RAM is always served from RAM (it can only be a
//! watched page, or one that was watched when the access began); elsewhere it is a fault, as
//! before. Code fetched from a watched page, page tables or a stack on one are not supported:
//! the checking host watches only the pages the guest hands over for a queue.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Condvar, Mutex};

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use pvabi_dispatch::sync::{lock, read_lock, wait};
use vm_memory::{
    Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
    MemoryRegionAddress,
};

use super::{Shared, VmCtl, VmError};

/// The most pages [`VmCtl::watch_pages`] watches at once (each costs a memory slot).
pub const MAX_WATCHED_PAGES: usize = 64;

const PAGE: u64 = 4096;

/// One KVM memory slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Slot {
    id: u32,
    gpa: u64,
    size: u64,
}

/// The memory slots and the pages left out of them.
#[derive(Debug)]
pub(super) struct Layout {
    /// Watched pages (guest-physical addresses, page-aligned).
    watched: BTreeSet<u64>,
    /// The slots KVM has now.
    slots: Vec<Slot>,
    /// Pages the guest wrote that no dirty log holds any more (a deleted slot's bits, stores
    /// to watched pages), until the next `guest_written_pages`.
    written: BTreeSet<u64>,
    /// The host address of guest RAM (one mapping from guest-physical 0).
    host: u64,
    mem_bytes: u64,
}

/// Holds vCPUs out of `KVM_RUN` while the slots change.
#[derive(Debug, Default)]
pub(super) struct Gate {
    closing: AtomicBool,
    inside: AtomicU32,
    lock: Mutex<()>,
    cv: Condvar,
}

impl Gate {
    /// Before `KVM_RUN`: waits while the gate is closed, then counts the vCPU in.
    pub(super) fn enter(&self) {
        loop {
            if self.closing.load(Ordering::SeqCst) {
                let mut g = lock(&self.lock);
                while self.closing.load(Ordering::SeqCst) {
                    g = wait(&self.cv, g);
                }
            }
            self.inside.fetch_add(1, Ordering::SeqCst);
            if !self.closing.load(Ordering::SeqCst) {
                return;
            }
            self.leave();
        }
    }

    /// After `KVM_RUN` returned (or was not entered after [`Self::enter`]).
    pub(super) fn leave(&self) {
        self.inside.fetch_sub(1, Ordering::SeqCst);
        if self.closing.load(Ordering::SeqCst) {
            let _g = lock(&self.lock);
            self.cv.notify_all();
        }
    }

    /// Closes the gate; `kick` makes every vCPU inside leave `KVM_RUN`; returns when none is
    /// inside.
    fn close(&self, kick: impl FnOnce()) {
        self.closing.store(true, Ordering::SeqCst);
        kick();
        let mut g = lock(&self.lock);
        while self.inside.load(Ordering::SeqCst) > 0 {
            g = wait(&self.cv, g);
        }
    }

    fn open(&self) {
        let _g = lock(&self.lock);
        self.closing.store(false, Ordering::SeqCst);
        self.cv.notify_all();
    }
}

impl Layout {
    /// All of guest RAM in slot 0 (registered by [`Layout::register_in`]). Guest RAM must be
    /// one mapping of `mem_bytes` from guest-physical 0, as the loader makes it: the slots
    /// are cut from it by address.
    pub(super) fn new(memory: &GuestMemoryMmap, mem_bytes: u64) -> Result<Layout, VmError> {
        let mut regions = memory.iter();
        let region = match (regions.next(), regions.next()) {
            (Some(r), None) if r.start_addr().0 == 0 && r.len() == mem_bytes => r,
            _ => {
                return Err(VmError::GuestWrite {
                    what: "the memory slot",
                    detail: format!(
                        "guest RAM must be one region of {mem_bytes:#x} bytes from address 0"
                    ),
                })
            }
        };
        let host = region
            .get_host_address(MemoryRegionAddress(0))
            .map_err(|e| VmError::GuestWrite {
                what: "the memory slot",
                detail: e.to_string(),
            })? as u64;
        Ok(Layout {
            watched: BTreeSet::new(),
            slots: vec![Slot {
                id: 0,
                gpa: 0,
                size: mem_bytes,
            }],
            written: BTreeSet::new(),
            host,
            mem_bytes,
        })
    }

    /// The slots for guest RAM without the watched pages.
    fn slots_for(&self, watched: &BTreeSet<u64>) -> Vec<Slot> {
        let mut slots = Vec::new();
        let mut start = 0;
        for &page in watched.iter().chain(std::iter::once(&self.mem_bytes)) {
            if page > start {
                slots.push(Slot {
                    id: slots.len() as u32,
                    gpa: start,
                    size: page - start,
                });
            }
            start = page + PAGE;
        }
        slots
    }

    /// The slot layout as KVM registers it (for the dirty log).
    pub(super) fn registered(&self) -> impl Iterator<Item = (u32, u64, u64)> + '_ {
        self.slots.iter().map(|s| (s.id, s.gpa, s.size))
    }

    /// Moves the dirty log of every slot `vm` has now into the pages recorded as written,
    /// before the slots go away (a slot change, a migration to a new VM).
    pub(super) fn keep_dirty_log(&mut self, vm: &VmFd) {
        for s in &self.slots {
            let Ok(bits) = vm.get_dirty_log(s.id, s.size as usize) else {
                continue;
            };
            for (w, word) in bits.iter().enumerate() {
                for b in 0..64 {
                    if word & (1 << b) != 0 {
                        self.written.insert(s.gpa + (w as u64 * 64 + b) * PAGE);
                    }
                }
            }
        }
    }

    /// Registers the slots KVM has now in `vm`, a new VM over the same guest RAM (a
    /// migration's target: watched pages stay out of it). Its dirty log starts empty: the old
    /// VM's is kept first ([`Layout::keep_dirty_log`]).
    pub(super) fn register_in(&self, vm: &VmFd, log_writes: bool) -> Result<(), VmError> {
        self.slots
            .iter()
            .try_for_each(|s| set_slot(vm, log_writes, self.host, *s, s.size))
    }

    /// Takes the pages recorded as written outside the dirty log.
    pub(super) fn take_written(&mut self) -> BTreeSet<u64> {
        std::mem::take(&mut self.written)
    }
}

/// Registers `slot` with KVM in `vm` (size 0 deletes it), logging the guest's writes to it
/// if `log_writes`.
fn set_slot(vm: &VmFd, log_writes: bool, host: u64, slot: Slot, size: u64) -> Result<(), VmError> {
    let flags = if log_writes {
        kvm_bindings::KVM_MEM_LOG_DIRTY_PAGES
    } else {
        0
    };
    let region = kvm_userspace_memory_region {
        slot: slot.id,
        flags,
        guest_phys_addr: slot.gpa,
        memory_size: size,
        userspace_addr: host + slot.gpa,
    };
    // SAFETY: the range lies inside the one live mapping of guest RAM, `mem_bytes` long from
    // `host` (checked by `Layout::new`; slots are computed inside `mem_bytes`), which the VM's
    // `Shared` owns and drops after the VM file and every vCPU file (field order of `Shared`;
    // the vCPU threads hold it until they have closed theirs). Size 0 deletes the slot.
    unsafe { vm.set_user_memory_region(region) }.map_err(|source| VmError::WatchSlots {
        op: if size == 0 {
            "KVM_SET_USER_MEMORY_REGION (delete)"
        } else {
            "KVM_SET_USER_MEMORY_REGION"
        },
        source,
    })
}

/// Moves the slots from `layout.slots` to `new`, with every vCPU out of `KVM_RUN`.
fn apply(shared: &Shared, layout: &mut Layout, new: Vec<Slot>) -> Result<(), VmError> {
    if new == layout.slots {
        return Ok(());
    }
    shared
        .gate
        .close(|| shared.vcpus.iter().for_each(|v| v.kick()));
    let result = (|| {
        let vm = read_lock(&shared.vm);
        if shared.log_guest_writes {
            layout.keep_dirty_log(&vm);
        }
        for s in &layout.slots {
            set_slot(&vm, shared.log_guest_writes, layout.host, *s, 0)?;
        }
        layout.slots.clear();
        for s in &new {
            set_slot(&vm, shared.log_guest_writes, layout.host, *s, s.size)?;
            layout.slots.push(*s);
        }
        Ok(())
    })();
    shared.gate.open();
    result
}

impl VmCtl {
    /// Watches the `pages` pages from `gpa` (page-aligned, inside guest RAM): from now on every
    /// guest access to them exits to this VMM, which serves it from guest RAM and reports it to
    /// the exit watcher ([`ExitWatcher::watched_access`](super::ExitWatcher::watched_access)).
    /// Safe from any thread, a vCPU's own port handler included, while the VM runs: the change
    /// holds every vCPU out of `KVM_RUN` for a moment (see the module docs of `watch.rs`).
    /// Watching a watched page again does nothing.
    pub fn watch_pages(&self, gpa: u64, pages: u64) -> Result<(), VmError> {
        self.change_watch(gpa, pages, true)
    }

    /// Ends [`watch_pages`](Self::watch_pages) for the `pages` pages from `gpa`: they are
    /// ordinary RAM again. Pages not watched are left alone.
    pub fn unwatch_pages(&self, gpa: u64, pages: u64) -> Result<(), VmError> {
        self.change_watch(gpa, pages, false)
    }

    /// The watched pages, in address order.
    pub fn watched_pages(&self) -> Vec<u64> {
        lock(&self.shared.layout).watched.iter().copied().collect()
    }

    fn change_watch(&self, gpa: u64, pages: u64, on: bool) -> Result<(), VmError> {
        let mem = self.shared.mem_bytes;
        let end = pages.checked_mul(PAGE).and_then(|len| gpa.checked_add(len));
        if !gpa.is_multiple_of(PAGE) || pages == 0 || end.is_none_or(|e| e > mem) {
            return Err(VmError::WatchRange { gpa, pages });
        }
        let mut layout = lock(&self.shared.layout);
        let mut watched = layout.watched.clone();
        for p in 0..pages {
            if on {
                watched.insert(gpa + p * PAGE);
            } else {
                watched.remove(&(gpa + p * PAGE));
            }
        }
        if watched.len() > MAX_WATCHED_PAGES {
            return Err(VmError::TooManyWatched {
                max: MAX_WATCHED_PAGES,
            });
        }
        let new = layout.slots_for(&watched);
        let old = layout.slots.clone();
        match apply(&self.shared, &mut layout, new) {
            Ok(()) => {
                layout.watched = watched;
                Ok(())
            }
            Err(e) => {
                // Put the slots back as they were (if that fails too, the VM has lost RAM
                // and cannot go on).
                if let Err(again) = apply(&self.shared, &mut layout, old) {
                    drop(layout);
                    self.end(super::VmEnd::Fault(super::FaultReport {
                        vcpu: 0,
                        fault: super::Fault::Kvm {
                            op: "KVM_SET_USER_MEMORY_REGION",
                            errno: format!("{again} (restoring the slots after: {e})"),
                        },
                        regs: None,
                    }));
                }
                Err(e)
            }
        }
    }

    /// Serves an MMIO exit of `vcpu` at `gpa` from guest RAM: a read fills `data`, a write
    /// stores it (one atomic access of the same width where it is 1, 2, 4 or 8 bytes and
    /// aligned, else byte by byte). `false` when the range is not inside guest RAM (a fault).
    /// A watched page's access is reported to the exit watcher.
    pub(super) fn serve_mmio(&self, vcpu: u32, gpa: u64, data: &mut [u8], write: bool) -> bool {
        let len = data.len() as u64;
        if gpa
            .checked_add(len)
            .is_none_or(|end| end > self.shared.mem_bytes)
        {
            return false;
        }
        let mem = &self.shared.memory;
        let at = GuestAddress(gpa);
        let aligned = gpa.is_multiple_of(len.max(1));
        let ok = match (write, data.len(), aligned) {
            (false, 1, _) => mem.load::<u8>(at, Ordering::SeqCst).map(|v| data[0] = v),
            (false, 2, true) => mem
                .load::<u16>(at, Ordering::SeqCst)
                .map(|v| data.copy_from_slice(&v.to_le_bytes())),
            (false, 4, true) => mem
                .load::<u32>(at, Ordering::SeqCst)
                .map(|v| data.copy_from_slice(&v.to_le_bytes())),
            (false, 8, true) => mem
                .load::<u64>(at, Ordering::SeqCst)
                .map(|v| data.copy_from_slice(&v.to_le_bytes())),
            (false, ..) => mem.read_slice(data, at),
            (true, 1, _) => mem.store(data[0], at, Ordering::SeqCst),
            (true, 2, true) => {
                mem.store(u16::from_le_bytes([data[0], data[1]]), at, Ordering::SeqCst)
            }
            (true, 4, true) => mem.store(
                u32::from_le_bytes(data[..4].try_into().unwrap_or_default()),
                at,
                Ordering::SeqCst,
            ),
            (true, 8, true) => mem.store(
                u64::from_le_bytes(data[..8].try_into().unwrap_or_default()),
                at,
                Ordering::SeqCst,
            ),
            (true, ..) => mem.write_slice(data, at),
        };
        if ok.is_err() {
            return false;
        }
        let page = gpa & !(PAGE - 1);
        let watched = {
            let mut layout = lock(&self.shared.layout);
            if write && self.shared.log_guest_writes {
                layout.written.insert(page);
            }
            layout.watched.contains(&page)
        };
        if watched {
            if let Some(w) = self.exit_watcher() {
                w.watched_access(vcpu, gpa, data, write);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::{Layout, Slot, PAGE};
    use std::collections::BTreeSet;

    fn layout(mem: u64) -> Layout {
        Layout {
            watched: BTreeSet::new(),
            slots: Vec::new(),
            written: BTreeSet::new(),
            host: 0,
            mem_bytes: mem,
        }
    }

    fn slot(id: u32, gpa: u64, size: u64) -> Slot {
        Slot { id, gpa, size }
    }

    #[test]
    fn the_slots_leave_out_exactly_the_watched_pages() {
        let l = layout(16 * PAGE);
        assert_eq!(
            l.slots_for(&BTreeSet::new()),
            [slot(0, 0, 16 * PAGE)],
            "nothing watched: one slot"
        );
        let w: BTreeSet<u64> = [3 * PAGE, 4 * PAGE, 9 * PAGE].into();
        assert_eq!(
            l.slots_for(&w),
            [
                slot(0, 0, 3 * PAGE),
                slot(1, 5 * PAGE, 4 * PAGE),
                slot(2, 10 * PAGE, 6 * PAGE)
            ]
        );
        // The first and the last page: no empty slot at either end.
        let w: BTreeSet<u64> = [0, 15 * PAGE].into();
        assert_eq!(l.slots_for(&w), [slot(0, PAGE, 14 * PAGE)]);
    }
}
