//! Structure-aware generators and spec oracles for fuzzing `pvabi-dispatch`.
//!
//! Dev-only: the cargo-fuzz targets in `fuzz/` and a fixed-seed run inside `cargo test` drive
//! the same code. An input is a byte string read through [`arbitrary::Unstructured`]: a host
//! configuration, a set-up for the input [`Class`], then a bounded list of guest operations
//! (direct calls generated from [`pvabi_abi::calls::all`] plus unused codes, guest writes to
//! MULTICALL lists, deferred queues, rings and their headers, ring notifies, odd doorbell
//! accesses). Every call is checked against the spec's rules ([`run`] returns the first
//! violation).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::Arc;

use arbitrary::Unstructured;
use pvabi_abi::batch::{
    MulticallEntry, DEFERRED_ENTRIES_OFFSET, DEFERRED_QUEUE_CAPACITY, MULTICALL_MAX_ENTRIES,
    RING_ENTRIES_OFFSET, SQ_CAPACITY,
};
use pvabi_abi::calls::{self, ArgCheck, BlockKind, Call, CallDescriptor, Family};
use pvabi_abi::convention::PAGE_SIZE;
use pvabi_abi::features::Features;
use pvabi_abi::vcpu::VcpuStartState;
use pvabi_abi::version::{V1_0, V1_2, V2_0_PREVIEW};
use pvabi_dispatch::{
    CallRegs, ConsoleSink, Dispatcher, FakeLog, FakeMachine, HostConfig, Machine,
};
use vm_memory::bitmap::AtomicBitmap;
use vm_memory::{Bytes, GuestAddress};

mod oracle;

pub use oracle::Violation;

/// Guest RAM pages of the model (256 KiB).
pub const RAM_PAGES: u64 = 64;
/// Guest RAM bytes.
pub const RAM_BYTES: u64 = RAM_PAGES * PAGE_SIZE;
/// Most operations one input runs (every loop is bounded).
pub const MAX_OPS: usize = 32;
/// The longest VCPU_HALT timeout the generator asks for (0, "forever", is never asked).
pub const MAX_HALT_NS: u64 = 200_000;

/// Bytes of one MULTICALL entry.
pub const MC_SIZE: u64 = size_of::<MulticallEntry>() as u64;

/// Prepared pages: where the set-ups put their blocks.
pub mod pages {
    /// MULTICALL entry arrays.
    pub const MULTICALL: u64 = 4;
    /// RING_SETUP and VCPU_START blocks.
    pub const SETUP: u64 = 6;
    /// Deferred queue of vCPU `v`: `DEFERRED + v`.
    pub const DEFERRED: u64 = 8;
    /// Event queue of vCPU `v`: `EVENTS + v`.
    pub const EVENTS: u64 = 16;
    /// Submission ring of vCPU `v`: `SQ + 2 v`, completion ring `SQ + 2 v + 1`.
    pub const SQ: u64 = 24;
    /// Time page.
    pub const TIME: u64 = 40;
    /// Steal pages: `STEAL + v`.
    pub const STEAL: u64 = 42;
}

/// What an input mostly exercises.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Class {
    /// Single calls with arbitrary registers.
    Single,
    /// MULTICALL lists: nested, non-batchable entries, huge counts, resume indices.
    Multicall,
    /// Deferred queues with corrupt indices and entries.
    Deferred,
    /// Rings with indices beyond the ring and corrupt headers.
    Ring,
    /// NEGOTIATE sequences: none, twice, downgraded, on several vCPUs.
    Negotiate,
    /// Several vCPUs, with VCPU_STOP / VCPU_START in between.
    MultiVcpu,
}

impl Class {
    /// Every class.
    pub const ALL: [Class; 6] = [
        Class::Single,
        Class::Multicall,
        Class::Deferred,
        Class::Ring,
        Class::Negotiate,
        Class::MultiVcpu,
    ];

    /// The class's name (as the fuzz targets are named).
    pub const fn name(self) -> &'static str {
        match self {
            Class::Single => "single",
            Class::Multicall => "multicall",
            Class::Deferred => "deferred",
            Class::Ring => "ring",
            Class::Negotiate => "negotiate",
            Class::MultiVcpu => "multi_vcpu",
        }
    }
}

/// What the host answered, over many inputs.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Inputs run.
    pub inputs: u64,
    /// Direct calls made (set-up calls included).
    pub calls: u64,
    /// Direct-call statuses by name.
    pub statuses: BTreeMap<&'static str, u64>,
    /// Statuses of MULTICALL entries and ring completions the oracles read back, by name.
    pub entries: BTreeMap<&'static str, u64>,
}

impl Stats {
    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &Stats) {
        self.inputs += other.inputs;
        self.calls += other.calls;
        for (k, v) in &other.statuses {
            *self.statuses.entry(k).or_default() += v;
        }
        for (k, v) in &other.entries {
            *self.entries.entry(k).or_default() += v;
        }
    }
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} inputs, {} calls:", self.inputs, self.calls)?;
        for (k, v) in &self.statuses {
            write!(f, " {k}={v}")?;
        }
        write!(f, "; entries/completions:")?;
        for (k, v) in &self.entries {
            write!(f, " {k}={v}")?;
        }
        Ok(())
    }
}

/// Host-owned pages as the guest knows them from the host's answers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Registered {
    pub time: Option<u64>,
    pub events: Vec<Option<u64>>,
    pub deferred: Vec<Option<u64>>,
    pub steal: Vec<Option<u64>>,
    pub rings: Vec<Option<RingModel>>,
}

impl Registered {
    pub fn pages(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self.time.into_iter().collect();
        for list in [&self.events, &self.deferred, &self.steal] {
            v.extend(list.iter().flatten());
        }
        for r in self.rings.iter().flatten() {
            v.push(r.sq);
            v.push(r.cq);
        }
        v
    }

    fn clear_vcpu(&mut self, vcpu: usize) {
        self.events[vcpu] = None;
        self.deferred[vcpu] = None;
        self.steal[vcpu] = None;
        self.rings[vcpu] = None;
    }
}

/// The host's ring indices as the host last wrote them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RingModel {
    pub sq: u64,
    pub cq: u64,
    pub polled: bool,
    pub sq_head: u32,
    pub cq_tail: u32,
    pub dropped: u32,
}

/// The machine of the model: RAM with a dirty bitmap.
pub(crate) type Fake = FakeMachine<AtomicBitmap>;

/// The guest RAM as the oracles see it around one call: `before` is RAM as it was when the
/// call began, `after` as the call left it. Both are whole copies of RAM kept up to date
/// from the machine's dirty bitmap (only pages written since the last look are copied), so
/// that an oracle compares every byte of RAM without copying all of it on every call; at the
/// end of each input, [`Shadow::verify`] compares the whole RAM with the copy, so a write the
/// bitmap missed cannot go unseen.
#[derive(Debug, Default)]
pub(crate) struct Shadow {
    pub before: Vec<u8>,
    pub after: Vec<u8>,
    /// The host page size (one bit of the dirty bitmap).
    page: usize,
    /// Pages the last call wrote: `after` holds them, `before` does not yet.
    pending: Vec<usize>,
    /// Every page seen written in this input (zeroed before the next input reuses the copy).
    touched: Vec<bool>,
    /// [`verify`](Self::verify)'s copy of RAM.
    scratch: Vec<u8>,
}

impl Shadow {
    fn new(page: usize) -> Shadow {
        let n = RAM_BYTES as usize;
        Shadow {
            before: vec![0; n],
            after: vec![0; n],
            page,
            pending: Vec::new(),
            touched: vec![false; n.div_ceil(page)],
            scratch: Vec::new(),
        }
    }

    fn read_page(&mut self, m: &Fake, p: usize) {
        let r = p * self.page..((p + 1) * self.page).min(self.after.len());
        let _ = m
            .memory()
            .read_slice(&mut self.after[r], GuestAddress((p * self.page) as u64));
        self.touched[p] = true;
    }

    fn copy_to_before(&mut self, p: usize) {
        let r = p * self.page..((p + 1) * self.page).min(self.after.len());
        let (before, after) = (&mut self.before[r.clone()], &self.after[r]);
        before.copy_from_slice(after);
    }

    /// Before a call: takes every write since the last call's [`end`](Self::end) (the
    /// guest's, the host threads') into `before` and `after`, unchecked.
    pub fn begin(&mut self, m: &Fake) {
        for p in std::mem::take(&mut self.pending) {
            self.copy_to_before(p);
        }
        for p in m.take_dirty_pages() {
            self.read_page(m, p);
            self.copy_to_before(p);
        }
    }

    /// After a call: takes the pages written since [`begin`](Self::begin) into `after` and
    /// returns them (every other page of `after` equals `before`).
    pub fn end(&mut self, m: &Fake) -> Vec<usize> {
        let pages = m.take_dirty_pages();
        for &p in &pages {
            self.read_page(m, p);
        }
        self.pending.clone_from(&pages);
        pages
    }

    /// The page size of [`end`](Self::end)'s page indices.
    pub fn page_size(&self) -> usize {
        self.page
    }

    /// At the end of an input (the host's threads stopped): the whole RAM equals the copy,
    /// that is, the dirty bitmap saw every write.
    fn verify(&mut self, m: &Fake) -> Result<(), Violation> {
        self.begin(m);
        let ram = &mut self.scratch;
        ram.resize(self.before.len(), 0);
        let _ = m.memory().read_slice(ram, GuestAddress(0));
        if *ram == self.before {
            return Ok(());
        }
        if let Some(at) = ram.iter().zip(&self.before).position(|(a, b)| a != b) {
            return Err(Violation(format!(
                "guest RAM at {at:#x} is {:#04x}, but the oracles' copy says {:#04x}: a write the dirty bitmap did not see",
                ram[at], self.before[at]
            )));
        }
        Ok(())
    }

    /// Zeroes the pages this input wrote, for the next input (RAM is zeroed the same way).
    fn clear(&mut self) {
        for p in 0..self.touched.len() {
            if std::mem::take(&mut self.touched[p]) {
                let r = p * self.page..((p + 1) * self.page).min(self.after.len());
                self.before[r.clone()].fill(0);
                self.after[r].fill(0);
            }
        }
        self.pending.clear();
    }
}

/// Machines (by vCPU count) and RAM copies of finished inputs, reused by the next input of
/// the thread: reused RAM is zeroed and the log emptied, so an input starts as on a new
/// machine, without an mmap and page faults per input.
#[derive(Default)]
struct Pool {
    machines: Vec<(u32, Fake)>,
    shadow: Option<Shadow>,
}

thread_local! {
    static POOL: RefCell<Pool> = RefCell::new(Pool::default());
}

fn machine(vcpus: u32) -> Fake {
    let reused = POOL.with(|p| {
        let mut p = p.borrow_mut();
        let i = p.machines.iter().position(|(v, _)| *v == vcpus)?;
        Some(p.machines.swap_remove(i).1)
    });
    reused.unwrap_or_else(|| Fake::tracked(RAM_BYTES as usize, vcpus))
}

/// Returns a finished input's machine and RAM copy to the pool, zeroed.
fn recycle(m: Arc<Fake>, vcpus: u32, mut shadow: Shadow) {
    let Ok(m) = Arc::try_unwrap(m) else { return };
    let zero = vec![0u8; shadow.page];
    for (p, &t) in shadow.touched.iter().enumerate() {
        if t {
            let _ = m
                .memory()
                .write_slice(&zero, GuestAddress((p * shadow.page) as u64));
        }
    }
    let _ = m.take_dirty_pages();
    *m.log() = FakeLog::default();
    shadow.clear();
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        p.machines.push((vcpus, m));
        p.shadow = Some(shadow);
    });
}

/// One guest (and its host) under test.
pub(crate) struct World {
    pub d: Dispatcher<Fake>,
    pub m: Arc<Fake>,
    pub shadow: Shadow,
    pub vcpus: u32,
    pub strict: bool,
    pub disabled: Option<Call>,
    pub negotiated: Option<(u64, Features)>,
    pub running: Vec<bool>,
    pub ended: bool,
    pub reg: Registered,
    pub stats: Stats,
}

impl World {
    fn new(u: &mut Unstructured<'_>, class: Class) -> arbitrary::Result<World> {
        let vcpus = match class {
            Class::MultiVcpu | Class::Negotiate => u.int_in_range(2..=4)?,
            _ => u.int_in_range(1..=2)?,
        };
        let base = match u.int_in_range(0..=3u8)? {
            0 => HostConfig::acting_as(V1_0),
            1 => HostConfig::serving(&[V1_2, V2_0_PREVIEW]),
            _ => HostConfig::default(),
        };
        let disabled = if u.ratio(1, 8)? {
            // Any call but GET_SPEC_VERSION, which the final check makes.
            let c = u.choose(&calls::all().skip(1).collect::<Vec<_>>())?.call;
            Some(c)
        } else {
            None
        };
        let config = HostConfig {
            vcpus,
            strict: u.arbitrary()?,
            max_multicall: u.int_in_range(1..=MULTICALL_MAX_ENTRIES as u32)?,
            console: ConsoleSink::Discard,
            disabled_calls: disabled.into_iter().collect(),
            ..base
        };
        let strict = config.strict;
        let m = Arc::new(machine(vcpus));
        let shadow = POOL
            .with(|p| p.borrow_mut().shadow.take())
            .filter(|s| s.page == m.page_size())
            .unwrap_or_else(|| Shadow::new(m.page_size()));
        let d = Dispatcher::new(config, m.clone()).expect("a valid configuration");
        let n = vcpus as usize;
        let mut running = vec![false; n];
        running[0] = true;
        Ok(World {
            d,
            m,
            shadow,
            vcpus,
            strict,
            disabled,
            negotiated: None,
            running,
            ended: false,
            reg: Registered {
                time: None,
                events: vec![None; n],
                deferred: vec![None; n],
                steal: vec![None; n],
                rings: vec![None; n],
            },
            stats: Stats::default(),
        })
    }

    pub fn write(&self, gpa: u64, bytes: &[u8]) {
        // Writes past the end of RAM are dropped, as a guest cannot make them.
        let _ = self.m.memory().write_slice(bytes, GuestAddress(gpa));
    }

    pub fn read_u32(&self, gpa: u64) -> u32 {
        let mut b = [0u8; 4];
        let _ = self.m.memory().read_slice(&mut b, GuestAddress(gpa));
        u32::from_le_bytes(b)
    }

    /// A running vCPU, mostly; now and then any index (also out of range).
    fn pick_vcpu(&self, u: &mut Unstructured<'_>) -> arbitrary::Result<u32> {
        if u.ratio(1, 32)? {
            return u.int_in_range(0..=self.vcpus);
        }
        let running: Vec<u32> = (0..self.vcpus)
            .filter(|&v| self.running[v as usize])
            .collect();
        Ok(*u.choose(&running).unwrap_or(&0))
    }

    /// The granted set (empty before NEGOTIATE).
    pub fn granted(&self) -> Features {
        self.negotiated.map_or(Features::empty(), |n| n.1)
    }
}

/// A guest operation.
#[derive(Clone, Debug)]
pub(crate) enum Op {
    Call {
        vcpu: u32,
        regs: CallRegs,
    },
    Write {
        gpa: u64,
        bytes: Vec<u8>,
    },
    Notify {
        vcpu: u32,
    },
    OddAccess {
        vcpu: u32,
        cpl: u8,
        long_mode: bool,
        width: u8,
        regs: CallRegs,
    },
}

/// An interesting 64-bit value.
fn interesting(u: &mut Unstructured<'_>) -> arbitrary::Result<u64> {
    Ok(match u.int_in_range(0..=9u8)? {
        0 => 0,
        1 => 1,
        2 => u64::MAX,
        3 => 1 << u.int_in_range(0..=63)?,
        4 => u64::from(u32::MAX),
        5 => 0x8000_0000_0000_0000,
        6 => u.int_in_range(0..=64)?,
        7 => RAM_BYTES,
        8 => u.int_in_range(0..=RAM_PAGES + 4)? * PAGE_SIZE,
        _ => u.arbitrary()?,
    })
}

/// A guest-physical address for a block of `align`: mostly a prepared page, sometimes one of
/// the classic bad addresses.
fn address(u: &mut Unstructured<'_>, align: u64) -> arbitrary::Result<u64> {
    let page = u.int_in_range(0..=RAM_PAGES + 2)? * PAGE_SIZE;
    Ok(match u.int_in_range(0..=7u8)? {
        0..=3 => page + u.int_in_range(0..=(PAGE_SIZE / align.max(1)) - 1)? * align.max(1),
        4 => page + PAGE_SIZE - align.max(8) + u.int_in_range(0..=8)?, // crosses or misaligned
        5 => page + u.int_in_range(0..=PAGE_SIZE - 1)?,
        6 => 0,
        _ => interesting(u)?,
    })
}

fn arg_value(u: &mut Unstructured<'_>, check: ArgCheck, vcpus: u32) -> arbitrary::Result<u64> {
    if u.ratio(1, 10)? {
        return interesting(u);
    }
    Ok(match check {
        ArgCheck::Any => interesting(u)?,
        ArgCheck::Range { min, max } => match u.int_in_range(0..=5u8)? {
            0 => min,
            1 => max,
            2 => max.wrapping_add(1),
            3 => min.wrapping_sub(1),
            _ => u.int_in_range(min..=max)?,
        },
        ArgCheck::Mask(mask) => {
            let v = u.arbitrary::<u64>()? & mask;
            if u.ratio(1, 6)? {
                v | (1 << u.int_in_range(0..=63)?)
            } else {
                v
            }
        }
        ArgCheck::VcpuIndex => match u.int_in_range(0..=4u8)? {
            0 => u64::from(vcpus),
            1 => u64::MAX,
            _ => u.int_in_range(0..=u64::from(vcpus) - 1)?,
        },
    })
}

/// A call code: mostly a defined call, else an unused code in a defined family, an unused
/// family, or any value.
pub(crate) fn call_code(u: &mut Unstructured<'_>) -> arbitrary::Result<u64> {
    if u.ratio(7, 8)? {
        let all: Vec<&CallDescriptor> = calls::all().collect();
        return Ok(u64::from(u.choose(&all)?.call.code()));
    }
    Ok(match u.int_in_range(0..=3u8)? {
        0 => {
            let fam = u.int_in_range(0..=7u64)?;
            let used = calls::FAMILIES[fam as usize].calls.len() as u64;
            fam << 8 | u.int_in_range(used..=255)?
        }
        1 => u.int_in_range(8..=255u64)? << 8 | u.int_in_range(0..=255u64)?,
        2 => u64::from(u.arbitrary::<u32>()?) << 32 | u.int_in_range(0..=0x7ffu64)?,
        _ => u.arbitrary()?,
    })
}

/// Six argument registers for `code`, biased to its descriptor.
pub(crate) fn call_args(
    u: &mut Unstructured<'_>,
    code: u64,
    vcpus: u32,
) -> arbitrary::Result<[u64; 6]> {
    let mut a = [0u64; 6];
    let Some(call) = Call::from_code(code) else {
        for v in &mut a {
            *v = interesting(u)?;
        }
        return Ok(a);
    };
    let d = call.descriptor();
    for (i, slot) in a.iter_mut().enumerate() {
        *slot = match d.args.get(i) {
            Some(arg) => {
                let is_addr = d.block.is_some_and(|b| b.addr_arg == i);
                if is_addr && u.ratio(4, 5)? {
                    address(u, d.block.map_or(1, |b| b.align))?
                } else {
                    arg_value(u, arg.check, vcpus)?
                }
            }
            None if u.ratio(1, 8)? => interesting(u)?,
            None => 0,
        };
    }
    // Bias lengths and counts to what fits the page.
    if let Some(b) = d.block {
        match b.kind {
            BlockKind::Bytes { len_arg, max } if u.ratio(3, 4)? => {
                a[len_arg] = u.int_in_range(0..=max)?
            }
            BlockKind::Array { count_arg, max, .. } if u.ratio(3, 4)? => {
                a[count_arg] = u.int_in_range(0..=max)?
            }
            _ => {}
        }
    }
    match call {
        // Never wait forever (no hang): a short, non-zero timeout.
        Call::VcpuHalt => a[0] = u.int_in_range(1..=MAX_HALT_NS)?,
        Call::Negotiate if u.ratio(3, 4)? => {
            let major = *u.choose(&[1u64, 2, 0, 3])?;
            a[0] = major << 16 | u.int_in_range(0..=3)?;
        }
        _ => {}
    }
    Ok(a)
}

/// A batch-entry call: mostly batchable or deferrable calls, with biased arguments.
fn entry_call(u: &mut Unstructured<'_>, vcpus: u32) -> arbitrary::Result<(u32, [u64; 6])> {
    let code = if u.ratio(3, 4)? {
        let ok: Vec<&CallDescriptor> = calls::all()
            .filter(|d| d.batchable || d.deferral != calls::DeferClass::None)
            .collect();
        u64::from(u.choose(&ok)?.call.code())
    } else {
        call_code(u)?
    };
    let args = call_args(u, code, vcpus)?;
    Ok((code as u32, args))
}

/// A MULTICALL entry (96 bytes), sometimes with reserved fields set.
fn multicall_entry(u: &mut Unstructured<'_>, vcpus: u32) -> arbitrary::Result<Vec<u8>> {
    let (code, args) = if u.ratio(1, 10)? {
        // Nested MULTICALL, pointing at the list itself or elsewhere.
        let mut a = call_args(u, u64::from(Call::Multicall.code()), vcpus)?;
        if u.arbitrary()? {
            a[0] = pages::MULTICALL * PAGE_SIZE;
        }
        (Call::Multicall.code(), a)
    } else {
        entry_call(u, vcpus)?
    };
    let mut e = Vec::with_capacity(MC_SIZE as usize);
    e.extend_from_slice(&code.to_le_bytes());
    e.extend_from_slice(&u.arbitrary::<u32>()?.to_le_bytes()); // status: the host's to write
    let (flags, reserved) = if u.ratio(1, 12)? {
        (u.arbitrary()?, u.arbitrary()?)
    } else {
        (0u32, 0u32)
    };
    e.extend_from_slice(&flags.to_le_bytes());
    e.extend_from_slice(&reserved.to_le_bytes());
    for a in args {
        e.extend_from_slice(&a.to_le_bytes());
    }
    for _ in 0..4 {
        e.extend_from_slice(&u.arbitrary::<u64>()?.to_le_bytes());
    }
    Ok(e)
}

/// A deferred entry (32 bytes).
fn deferred_entry(u: &mut Unstructured<'_>, vcpus: u32) -> arbitrary::Result<Vec<u8>> {
    let (code, args) = entry_call(u, vcpus)?;
    let flags: u32 = if u.ratio(1, 12)? { u.arbitrary()? } else { 0 };
    let mut e = Vec::with_capacity(32);
    e.extend_from_slice(&code.to_le_bytes());
    e.extend_from_slice(&flags.to_le_bytes());
    for a in &args[..3] {
        e.extend_from_slice(&a.to_le_bytes());
    }
    Ok(e)
}

/// A submission entry (64 bytes).
fn submission_entry(u: &mut Unstructured<'_>, vcpus: u32) -> arbitrary::Result<Vec<u8>> {
    let (code, args) = entry_call(u, vcpus)?;
    let flags: u32 = if u.ratio(1, 12)? { u.arbitrary()? } else { 0 };
    let mut e = Vec::with_capacity(64);
    e.extend_from_slice(&u.arbitrary::<u64>()?.to_le_bytes());
    e.extend_from_slice(&code.to_le_bytes());
    e.extend_from_slice(&flags.to_le_bytes());
    for a in args {
        e.extend_from_slice(&a.to_le_bytes());
    }
    Ok(e)
}

/// A free-running index near `base`: mostly in the ring, sometimes far beyond it.
fn index_near(u: &mut Unstructured<'_>, base: u32, capacity: u32) -> arbitrary::Result<u32> {
    Ok(match u.int_in_range(0..=5u8)? {
        0 => base.wrapping_add(capacity + 1),
        1 => base.wrapping_sub(1),
        2 => u.arbitrary()?,
        _ => base.wrapping_add(u.int_in_range(0..=capacity)?),
    })
}

fn ring_setup_block(u: &mut Unstructured<'_>, vcpu: u32) -> arbitrary::Result<Vec<u8>> {
    let own = pages::SQ + 2 * u64::from(vcpu);
    let (sq, cq) = match u.int_in_range(0..=9u8)? {
        0 => (0, 0),
        1 => (address(u, 4096)?, address(u, 4096)?),
        2 => (own * PAGE_SIZE, own * PAGE_SIZE),
        _ => (own * PAGE_SIZE, (own + 1) * PAGE_SIZE),
    };
    // HOST_POLLED rarely (a poller thread per ring), an invalid mode now and then.
    let mode: u32 = match u.int_in_range(0..=15u8)? {
        0 => 1,
        1 => u.arbitrary()?,
        _ => 0,
    };
    let flags: u32 = if u.ratio(1, 8)? {
        u.arbitrary()?
    } else {
        u.int_in_range(0..=1)?
    };
    let reserved: u64 = if u.ratio(1, 16)? { u.arbitrary()? } else { 0 };
    let mut b = Vec::with_capacity(32);
    b.extend_from_slice(&sq.to_le_bytes());
    b.extend_from_slice(&cq.to_le_bytes());
    b.extend_from_slice(&mode.to_le_bytes());
    b.extend_from_slice(&flags.to_le_bytes());
    b.extend_from_slice(&reserved.to_le_bytes());
    Ok(b)
}

/// The next operation for `class`.
fn next_op(u: &mut Unstructured<'_>, w: &World, class: Class) -> arbitrary::Result<Vec<Op>> {
    let vcpu = w.pick_vcpu(u)?;
    let v = u64::from(vcpu.min(w.vcpus - 1));
    let call = |code: Call, args: &[u64]| Op::Call {
        vcpu,
        regs: CallRegs::raw(u64::from(code.code()), args),
    };
    let kind = u.int_in_range(0..=9u8)?;
    let ops = match (class, kind) {
        (_, 0) if u.ratio(1, 3)? => {
            // Any guest write: corrupt whatever, host-owned pages included.
            let gpa = address(u, 1)? % RAM_BYTES;
            let len = u.int_in_range(1..=16usize)?;
            vec![Op::Write {
                gpa,
                bytes: u.bytes(len)?.to_vec(),
            }]
        }
        (_, 1) if u.ratio(1, 4)? => vec![Op::OddAccess {
            vcpu,
            cpl: u.int_in_range(0..=3)?,
            long_mode: u.arbitrary()?,
            width: *u.choose(&[1u8, 2, 4, 8])?,
            regs: CallRegs::raw(u64::from(Call::GetSpecVersion.code()), &[]),
        }],
        (Class::Multicall, 2..=8) => {
            let n = u.int_in_range(0..=MULTICALL_MAX_ENTRIES as usize)?;
            let mut ops = Vec::new();
            let base = pages::MULTICALL * PAGE_SIZE;
            for i in 0..n {
                ops.push(Op::Write {
                    gpa: base + MC_SIZE * i as u64,
                    bytes: multicall_entry(u, w.vcpus)?,
                });
            }
            let count = match u.int_in_range(0..=7u8)? {
                0 => u.arbitrary()?,
                1 => MULTICALL_MAX_ENTRIES + 1,
                2 => 0,
                _ => n as u64,
            };
            let start = if u.ratio(1, 4)? {
                u.int_in_range(0..=count.min(64) + 1)?
            } else {
                0
            };
            let flags = if u.ratio(1, 8)? {
                interesting(u)?
            } else {
                u.int_in_range(0..=1)?
            };
            let gpa = if u.ratio(1, 8)? { address(u, 8)? } else { base };
            ops.push(call(Call::Multicall, &[gpa, count, start, flags]));
            ops
        }
        (Class::Deferred, 2..=8) => {
            let q = pages::DEFERRED + v;
            let mut ops = Vec::new();
            let head = w.read_u32(q * PAGE_SIZE);
            let n = u.int_in_range(0..=8u32)?;
            for i in 0..n {
                let slot = head.wrapping_add(i) % DEFERRED_QUEUE_CAPACITY;
                ops.push(Op::Write {
                    gpa: q * PAGE_SIZE + DEFERRED_ENTRIES_OFFSET + 32 * u64::from(slot),
                    bytes: deferred_entry(u, w.vcpus)?,
                });
            }
            let tail = if u.ratio(3, 4)? {
                head.wrapping_add(n)
            } else {
                index_near(u, head, DEFERRED_QUEUE_CAPACITY)?
            };
            ops.push(Op::Write {
                gpa: q * PAGE_SIZE + 4,
                bytes: tail.to_le_bytes().to_vec(),
            });
            ops.push(match u.int_in_range(0..=5u8)? {
                0 => call(Call::DeferSetQueue, &[q * PAGE_SIZE]),
                1 => call(Call::DeferSetQueue, &[0]),
                2 => {
                    // A sync point drains too.
                    let code = call_code(u)?;
                    Op::Call {
                        vcpu,
                        regs: CallRegs::raw(code, &call_args(u, code, w.vcpus)?),
                    }
                }
                _ => call(Call::DeferFlush, &[]),
            });
            ops
        }
        (Class::Ring, 2..=8) => {
            let sq = (pages::SQ + 2 * v) * PAGE_SIZE;
            let cq = sq + PAGE_SIZE;
            let mut ops = Vec::new();
            let tail0 = w.read_u32(sq + 4);
            let n = u.int_in_range(0..=6u32)?;
            for i in 0..n {
                let slot = tail0.wrapping_add(i) % SQ_CAPACITY;
                ops.push(Op::Write {
                    gpa: sq + RING_ENTRIES_OFFSET + 64 * u64::from(slot),
                    bytes: submission_entry(u, w.vcpus)?,
                });
            }
            let tail = if u.ratio(3, 4)? {
                tail0.wrapping_add(n)
            } else {
                index_near(u, tail0, SQ_CAPACITY)?
            };
            ops.push(Op::Write {
                gpa: sq + 4,
                bytes: tail.to_le_bytes().to_vec(),
            });
            if u.ratio(1, 4)? {
                // Corrupt a header field (host-written ones included) of either ring.
                let page = if u.arbitrary()? { sq } else { cq };
                let field = u.int_in_range(0..=15u64)? * 4;
                ops.push(Op::Write {
                    gpa: page + field,
                    bytes: index_near(u, 0, 64)?.to_le_bytes().to_vec(),
                });
            }
            if u.ratio(1, 3)? {
                // The guest consumes completions (or lies about it).
                let cq_tail = w.read_u32(cq + 4);
                ops.push(Op::Write {
                    gpa: cq,
                    bytes: index_near(u, cq_tail.wrapping_sub(8), 8)?
                        .to_le_bytes()
                        .to_vec(),
                });
            }
            ops.push(match u.int_in_range(0..=5u8)? {
                0 => Op::Notify { vcpu },
                1 => {
                    let setup = pages::SETUP * PAGE_SIZE;
                    let b = ring_setup_block(u, vcpu)?;
                    return Ok(vec![
                        Op::Write {
                            gpa: setup,
                            bytes: b,
                        },
                        call(Call::RingSetup, &[setup]),
                    ]);
                }
                _ => call(Call::RingEnter, &[]),
            });
            ops
        }
        (Class::Negotiate, 7) => {
            // Start a secondary, so that NEGOTIATE is made from several vCPUs.
            let gpa = pages::SETUP * PAGE_SIZE + 64;
            let target = u.int_in_range(1..=u64::from(w.vcpus) - 1)?;
            vec![
                Op::Write {
                    gpa,
                    bytes: vec![0; size_of::<VcpuStartState>()],
                },
                call(Call::VcpuStart, &[target, gpa]),
            ]
        }
        (Class::MultiVcpu, 2..=5) => {
            let target = u.int_in_range(0..=w.vcpus)?;
            match u.int_in_range(0..=3u8)? {
                0 => vec![call(Call::VcpuStop, &[])],
                1 => vec![call(Call::VcpuKick, &[u64::from(target)])],
                _ => {
                    let gpa = pages::SETUP * PAGE_SIZE + 64;
                    let size = size_of::<VcpuStartState>();
                    let mut state = vec![0u8; size];
                    if u.ratio(1, 4)? {
                        state = u.bytes(size)?.to_vec();
                    }
                    vec![
                        Op::Write { gpa, bytes: state },
                        call(Call::VcpuStart, &[u64::from(target), gpa]),
                    ]
                }
            }
        }
        (Class::MultiVcpu | Class::Negotiate, 6) => {
            // Registrations on this vCPU: its own pages, or another's.
            let other = u.int_in_range(0..=u64::from(w.vcpus) - 1)?;
            match u.int_in_range(0..=3u8)? {
                0 => vec![call(
                    Call::EventsSetQueue,
                    &[(pages::EVENTS + other) * PAGE_SIZE, 32],
                )],
                1 => vec![call(
                    Call::DeferSetQueue,
                    &[(pages::DEFERRED + other) * PAGE_SIZE],
                )],
                2 => vec![call(
                    Call::TimeSetStealPage,
                    &[(pages::STEAL + other) * PAGE_SIZE],
                )],
                _ => vec![call(Call::TimeSetPage, &[pages::TIME * PAGE_SIZE])],
            }
        }
        (Class::Negotiate, 2..=5) => {
            let offered = Features::all().bits();
            let major = *u.choose(&[1u64, 1, 2, 0, 7])?;
            let minor = u.int_in_range(0..=4u64)?;
            let required = match u.int_in_range(0..=3u8)? {
                0 => 0,
                1 => offered & u.arbitrary::<u64>()?,
                _ => interesting(u)?,
            };
            let optional = if u.arbitrary()? {
                u64::MAX
            } else {
                u.arbitrary()?
            };
            let flags = if u.ratio(1, 8)? { interesting(u)? } else { 0 };
            vec![call(
                Call::Negotiate,
                &[major << 16 | minor, required, optional, flags],
            )]
        }
        _ => {
            let code = call_code(u)?;
            vec![Op::Call {
                vcpu,
                regs: CallRegs::raw(code, &call_args(u, code, w.vcpus)?),
            }]
        }
    };
    Ok(ops)
}

/// The set-up of `class` (each call of it is checked like any other).
fn setup(u: &mut Unstructured<'_>, w: &mut World, class: Class) -> Result<(), Violation> {
    if class == Class::Negotiate || u.ratio(1, 16).unwrap_or(false) {
        return Ok(());
    }
    let major = u64::from(w.d.config().highest().major());
    let mut regs = CallRegs::raw(
        u64::from(Call::Negotiate.code()),
        &[major << 16, 0, u64::MAX, 0],
    );
    oracle::direct(w, 0, &mut regs)?;
    let ring =
        class == Class::Ring || (class == Class::MultiVcpu && u.ratio(1, 2).unwrap_or(false));
    let deferred = class == Class::Deferred || class == Class::MultiVcpu;
    for v in 0..w.vcpus {
        if !w.running[v as usize] && v != 0 {
            continue;
        }
        let v64 = u64::from(v);
        if deferred {
            let mut r = CallRegs::raw(
                u64::from(Call::DeferSetQueue.code()),
                &[(pages::DEFERRED + v64) * PAGE_SIZE],
            );
            oracle::direct(w, v, &mut r)?;
        }
        if ring {
            let setup = pages::SETUP * PAGE_SIZE;
            let sq = (pages::SQ + 2 * v64) * PAGE_SIZE;
            let mut b = Vec::new();
            b.extend_from_slice(&sq.to_le_bytes());
            b.extend_from_slice(&(sq + PAGE_SIZE).to_le_bytes());
            b.extend_from_slice(&[0u8; 16]);
            w.write(setup, &b);
            let mut r = CallRegs::raw(u64::from(Call::RingSetup.code()), &[setup]);
            oracle::direct(w, v, &mut r)?;
        }
        if class == Class::MultiVcpu {
            let mut r = CallRegs::raw(
                u64::from(Call::EventsSetQueue.code()),
                &[(pages::EVENTS + v64) * PAGE_SIZE, 32],
            );
            oracle::direct(w, v, &mut r)?;
        }
    }
    Ok(())
}

/// Runs one input of `class`: its set-up, its operations and the final GET_SPEC_VERSION,
/// each call checked by the oracles. `Ok` holds what the host answered.
pub fn run(class: Class, data: &[u8]) -> Result<Stats, Violation> {
    let mut u = Unstructured::new(data);
    let Ok(mut w) = World::new(&mut u, class) else {
        return Ok(Stats::default());
    };
    setup(&mut u, &mut w, class)?;
    let mut ops = 0;
    while ops < MAX_OPS && !u.is_empty() && !w.ended {
        let Ok(batch) = next_op(&mut u, &w, class) else {
            break;
        };
        for op in batch {
            ops += 1;
            oracle::apply(&mut w, op)?;
        }
    }
    oracle::finish(&mut w)?;
    w.d.shutdown();
    w.shadow.verify(&w.m)?;
    let World {
        d,
        m,
        shadow,
        vcpus,
        mut stats,
        ..
    } = w;
    drop(d);
    recycle(m, vcpus, shadow);
    stats.inputs = 1;
    Ok(stats)
}

/// A tiny fixed-seed generator (xorshift64*) for the stable run inside `cargo test`.
pub fn seeded_input(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
        })
        .collect()
}

/// Whether `call` may succeed with the granted set `granted` (before NEGOTIATE: none).
pub fn may_succeed(d: &CallDescriptor, negotiated: bool, granted: Features) -> bool {
    match d.feature {
        None => d.family() == Family::Base,
        Some(f) => negotiated && granted.contains(f),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryBackend;

    /// A world of class `MultiVcpu` (2 vCPUs) from an all-zero input, negotiated.
    fn world() -> World {
        let zeros = [0u8; 64];
        let mut w = World::new(&mut Unstructured::new(&zeros), Class::MultiVcpu).expect("world");
        let mut regs = CallRegs::raw(
            u64::from(Call::Negotiate.code()),
            &[
                u64::from(w.d.config().highest().major()) << 16,
                0,
                u64::MAX,
                0,
            ],
        );
        oracle::direct(&mut w, 0, &mut regs).expect("NEGOTIATE");
        w
    }

    fn start_vcpu_1(w: &mut World) -> Result<(), Violation> {
        let gpa = pages::SETUP * PAGE_SIZE;
        let mut regs = CallRegs::raw(u64::from(Call::VcpuStart.code()), &[1, gpa]);
        oracle::direct(w, 0, &mut regs)
    }

    /// The memory oracle sees a byte the host writes outside what the call may write (here
    /// the machine, inside VCPU_START, on a page nobody registered).
    #[test]
    fn a_stray_host_write_during_a_call_is_a_violation() {
        let mut w = world();
        w.m.on_start(Box::new(|mem| {
            let _ = mem.write_slice(&[0x5a], GuestAddress(3 * PAGE_SIZE + 7));
        }));
        let v = start_vcpu_1(&mut w).expect_err("the stray write is seen");
        assert!(v.0.contains("wrote 0x3007"), "{v}");
    }

    /// Without the stray write the same call passes (the test above fails for the write).
    #[test]
    fn the_same_call_without_a_stray_write_passes() {
        let mut w = world();
        start_vcpu_1(&mut w).expect("no violation");
        w.shadow.verify(&w.m).expect("the copy is RAM");
    }

    /// The end-of-input check sees a change of RAM that bypassed `vm_memory` (so the dirty
    /// bitmap never saw it): the per-call checks trust the bitmap, this one does not.
    #[test]
    fn a_write_the_dirty_bitmap_missed_is_a_violation() {
        let mut w = world();
        let host =
            w.m.memory()
                .get_host_address(GuestAddress(5 * PAGE_SIZE + 1))
                .expect("in RAM");
        // SAFETY: the address is inside the machine's RAM mapping (checked by
        // get_host_address), no other thread touches page 5, and a byte has no alignment.
        unsafe { host.write_volatile(0x77) };
        let v = w
            .shadow
            .verify(&w.m)
            .expect_err("the untracked write is seen");
        assert!(v.0.contains("0x5001"), "{v}");
    }
}
