//! A [`Machine`] without KVM, for unit tests and fuzzing: a few MiB of guest RAM and a log of
//! what the dispatcher asked the machine to do.

use std::sync::{Mutex, MutexGuard};

use pvabi_abi::status::Status;
use pvabi_abi::vcpu::VcpuStartState;
use vm_memory::bitmap::{AtomicBitmap, Bitmap, NewBitmap};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use crate::machine::Machine;
use crate::sync::lock;

/// A hook run inside [`Machine::start_vcpu`], with guest RAM (tests use it to change guest
/// memory while the dispatcher handles a call).
pub type MemoryHook<B = ()> = Box<dyn Fn(&GuestMemoryMmap<B>) + Send + Sync>;

/// What a [`FakeMachine`] was asked to do, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FakeLog {
    /// `(vCPU, vector)` of every raised interrupt.
    pub interrupts: Vec<(u32, u8)>,
    /// `(vCPU, state)` of every accepted start.
    pub starts: Vec<(u32, VcpuStartState)>,
    /// Every TLB flush target (`None` = all).
    pub flushes: Vec<Option<u32>>,
    /// Every page handed to `release_pages`.
    pub released: Vec<u64>,
}

/// A fake machine: guest RAM from guest-physical 0, and a [`FakeLog`].
///
/// `B` is the RAM's dirty bitmap: none (`()`, [`FakeMachine::new`]), or an
/// [`AtomicBitmap`] ([`FakeMachine::tracked`]) that records every page written through
/// `vm_memory` (by the dispatcher, its threads, or the test), read by
/// [`take_dirty_pages`](FakeMachine::take_dirty_pages).
pub struct FakeMachine<B: Bitmap + 'static = ()> {
    memory: GuestMemoryMmap<B>,
    vcpus: u32,
    log: Mutex<FakeLog>,
    refuse_starts: Mutex<Option<Status>>,
    start_hook: Mutex<Option<MemoryHook<B>>>,
    /// Pages the test said the guest wrote since the last [`Machine::guest_written_pages`]
    /// (`None`: the test never did, and the machine cannot see guest writes).
    guest_writes: Mutex<Option<std::collections::BTreeSet<u64>>>,
    /// The pages [`Machine::watch_pages`] watches (`None`: the test did not allow watching,
    /// and the machine cannot watch pages).
    watched: Mutex<Option<std::collections::BTreeSet<u64>>>,
}

impl<B: Bitmap + 'static> std::fmt::Debug for FakeMachine<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeMachine")
            .field("vcpus", &self.vcpus)
            .field("log", &*self.log())
            .finish_non_exhaustive()
    }
}

impl FakeMachine {
    /// `mem_bytes` of zeroed RAM (a multiple of 4 KiB) and `vcpus` vCPUs.
    ///
    /// # Panics
    /// If the RAM cannot be allocated (a test set-up failure).
    pub fn new(mem_bytes: usize, vcpus: u32) -> Self {
        Self::with_bitmap(mem_bytes, vcpus)
    }
}

impl FakeMachine<AtomicBitmap> {
    /// Like [`new`](FakeMachine::new), with a dirty bitmap over the RAM (one bit per host
    /// page) that every write through `vm_memory` sets.
    ///
    /// # Panics
    /// If the RAM cannot be allocated (a test set-up failure).
    pub fn tracked(mem_bytes: usize, vcpus: u32) -> Self {
        Self::with_bitmap(mem_bytes, vcpus)
    }

    /// The indices of the host pages written since the last call (or since creation), in
    /// increasing order, and clears them. A write that races with this call is in this
    /// answer or in the next one.
    pub fn take_dirty_pages(&self) -> Vec<usize> {
        let mut pages = Vec::new();
        for region in self.memory.iter() {
            let base = region.start_addr().0 as usize / self.page_size();
            let bitmap: &AtomicBitmap = std::ops::Deref::deref(region).bitmap();
            for (w, bits) in bitmap.get_and_reset().into_iter().enumerate() {
                let mut b = bits;
                while b != 0 {
                    pages.push(base + w * 64 + b.trailing_zeros() as usize);
                    b &= b - 1;
                }
            }
        }
        pages
    }

    /// The bytes one bit of the dirty bitmap covers (the host's page size).
    pub fn page_size(&self) -> usize {
        self.memory.iter().next().map_or(4096, |r| {
            let bitmap: &AtomicBitmap = std::ops::Deref::deref(r).bitmap();
            bitmap.byte_size() / bitmap.len().max(1)
        })
    }
}

impl<B: Bitmap + 'static> FakeMachine<B> {
    fn with_bitmap(mem_bytes: usize, vcpus: u32) -> Self
    where
        B: NewBitmap,
    {
        let memory = GuestMemoryMmap::<B>::from_ranges(&[(GuestAddress(0), mem_bytes)])
            .expect("allocate fake guest RAM");
        FakeMachine {
            memory,
            vcpus,
            log: Mutex::new(FakeLog::default()),
            refuse_starts: Mutex::new(None),
            start_hook: Mutex::new(None),
            guest_writes: Mutex::new(None),
            watched: Mutex::new(None),
        }
    }

    /// Lets the machine watch pages ([`Machine::watch_pages`]), as a VMM that can report
    /// every guest access to them; the test then plays the guest's accesses to
    /// [`Dispatcher::watched_access`](crate::Dispatcher::watched_access) itself.
    pub fn allow_watching(&self) {
        lock(&self.watched).get_or_insert_with(Default::default);
    }

    /// The pages watched now, in address order (empty when watching is not allowed).
    pub fn watched_pages(&self) -> Vec<u64> {
        lock(&self.watched)
            .as_ref()
            .map_or_else(Vec::new, |w| w.iter().copied().collect())
    }

    /// What the machine was asked so far.
    pub fn log(&self) -> MutexGuard<'_, FakeLog> {
        lock(&self.log)
    }

    /// Makes every later `start_vcpu` fail with `status` (`None`: accept again).
    pub fn refuse_starts(&self, status: Option<Status>) {
        *lock(&self.refuse_starts) = status;
    }

    /// Records that the guest wrote the page holding `gpa` (as KVM's dirty-page log would):
    /// from then on the machine sees guest writes ([`Machine::guest_written_pages`]).
    pub fn guest_wrote(&self, gpa: u64) {
        lock(&self.guest_writes)
            .get_or_insert_with(Default::default)
            .insert(gpa & !0xfff);
    }

    /// Runs `hook` inside every later `start_vcpu`, before it records the start.
    pub fn on_start(&self, hook: MemoryHook<B>) {
        *lock(&self.start_hook) = Some(hook);
    }
}

impl<B: Bitmap + Send + Sync + 'static> Machine for FakeMachine<B> {
    type Memory = GuestMemoryMmap<B>;

    fn memory(&self) -> &GuestMemoryMmap<B> {
        &self.memory
    }

    fn vcpu_count(&self) -> u32 {
        self.vcpus
    }

    fn raise_interrupt(&self, vcpu: u32, vector: u8) {
        self.log().interrupts.push((vcpu, vector));
    }

    fn start_vcpu(&self, vcpu: u32, state: &VcpuStartState) -> Result<(), Status> {
        if let Some(hook) = &*lock(&self.start_hook) {
            hook(&self.memory);
        }
        if let Some(s) = *lock(&self.refuse_starts) {
            return Err(s);
        }
        self.log().starts.push((vcpu, *state));
        Ok(())
    }

    fn flush_tlb(&self, target: Option<u32>) {
        self.log().flushes.push(target);
    }

    fn release_pages(&self, gpas: &[u64]) {
        let zero = [0u8; 4096];
        for &gpa in gpas {
            // The dispatcher only hands over RAM pages; a failure would be a dispatcher bug
            // that the tests then see as non-zero memory.
            let _ = self.memory.write_slice(&zero, GuestAddress(gpa));
        }
        self.log().released.extend_from_slice(gpas);
    }

    fn watch_pages(&self, gpa: u64, pages: u64) -> bool {
        let mut watched = lock(&self.watched);
        let Some(w) = watched.as_mut() else {
            return false;
        };
        w.extend((0..pages).map(|p| gpa + p * 4096));
        true
    }

    fn unwatch_pages(&self, gpa: u64, pages: u64) {
        if let Some(w) = lock(&self.watched).as_mut() {
            for p in 0..pages {
                w.remove(&(gpa + p * 4096));
            }
        }
    }

    fn guest_written_pages(&self, gpas: &[u64]) -> Option<Vec<u64>> {
        let mut writes = lock(&self.guest_writes);
        let written = writes.as_mut()?;
        let hit = gpas
            .iter()
            .copied()
            .filter(|g| written.contains(&(g & !0xfff)))
            .collect();
        written.clear();
        Some(hit)
    }
}
