//! Host work per trivial call, on every path, without KVM: the dispatcher over a
//! [`FakeMachine`] (plain `vm_memory::GuestMemoryMmap`), timed the way `pvabi bench` times it
//! (one `Instant` pair around the dispatcher's entry point), in two cache states:
//!
//! - **warm**: call after call, as in a tight loop (the best case);
//! - **cold**: before each timed call the thread walks a buffer larger than the last-level
//!   cache, so that the dispatcher's code, data and the guest's pages come from memory, as
//!   after an exit on a host whose exit path evicts them (PVM: the bench's direct calls).
//!
//! Run: `cargo run --release -p pvabi-dispatch --example hot_path`.
//! It prints figures only (speed goals live in benchmarks, not tests).

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use pvabi_abi::batch::{
    DeferredEntry, MulticallEntry, RingMode, RingSetup, SubmissionEntry, DEFERRED_ENTRIES_OFFSET,
    RING_ENTRIES_OFFSET,
};
use pvabi_abi::calls::Call;
use pvabi_abi::features::Features;
use pvabi_abi::status::Status;
use pvabi_abi::version::V1_0;
use pvabi_dispatch::{
    CallRegs, ConsoleSink, Dispatcher, Doorbell, FakeMachine, HostConfig, Machine,
};
use vm_memory::{Bytes, GuestAddress};
use zerocopy::IntoBytes;

const MEM: usize = 8 << 20;
/// The page whose words MEM_UPDATE_PTE writes.
const PTES: u64 = 0x40_0000;
/// MULTICALL's entry page.
const BATCH: u64 = 0x41_0000;
/// The deferred queue.
const QUEUE: u64 = 0x42_0000;
/// The ring pair.
const SQ: u64 = 0x43_0000;
const CQ: u64 = 0x44_0000;
/// RING_SETUP's block.
const SETUP: u64 = 0x45_0000;

type D = Dispatcher<FakeMachine>;

fn call(d: &D, code: Call, args: &[u64]) -> CallRegs {
    let mut regs = CallRegs::new(code, args);
    d.call(Doorbell::ring0(0), &mut regs);
    regs
}

fn ok(d: &D, code: Call, args: &[u64]) -> CallRegs {
    let r = call(d, code, args);
    assert_eq!(r.status(), Some(Status::Success), "{code:?}");
    r
}

/// A buffer bigger than the caches, walked one line at a time between cold calls.
struct Evict(Vec<u8>);

impl Evict {
    fn new() -> Self {
        Evict(vec![1u8; 64 << 20])
    }
    fn run(&mut self) {
        if self.0.is_empty() {
            return;
        }
        for i in (0..self.0.len()).step_by(64) {
            self.0[i] = self.0[i].wrapping_add(1);
        }
        black_box(&self.0);
    }
}

/// Times `op` (which does `per` operations) `n` times; returns the median ns per operation.
fn time(n: usize, per: usize, cold: Option<&mut Evict>, mut op: impl FnMut(usize)) -> f64 {
    let mut evict = cold;
    let mut v = Vec::with_capacity(n);
    for i in 0..n {
        if let Some(e) = evict.as_deref_mut() {
            e.run();
        }
        let start = Instant::now();
        op(i);
        v.push(start.elapsed().as_nanos() as f64 / per as f64);
    }
    v.sort_by(f64::total_cmp);
    v[n / 2]
}

fn main() {
    let config = HostConfig {
        vcpus: 1,
        console: ConsoleSink::Discard,
        record_effects: false,
        ..HostConfig::acting_as(V1_0)
    };
    let m = Arc::new(FakeMachine::new(MEM, 1));
    let d = Dispatcher::new(config, m.clone()).expect("a valid configuration");
    let mem = m.memory();
    ok(
        &d,
        Call::Negotiate,
        &[0x0001_0000, Features::defined_in(V1_0).bits()],
    );
    ok(&d, Call::DeferSetQueue, &[QUEUE]);
    let setup = RingSetup {
        sq_page: SQ,
        cq_page: CQ,
        mode: RingMode::Doorbell,
        flags: 0,
        reserved: Default::default(),
    };
    mem.write_slice(setup.as_bytes(), GuestAddress(SETUP))
        .expect("RAM");
    ok(&d, Call::RingSetup, &[SETUP]);

    // `warm` as the first argument: warm figures only (for a profiler).
    let warm_only = std::env::args().nth(1).as_deref() == Some("warm");
    let mut evict = if warm_only {
        Evict(Vec::new())
    } else {
        Evict::new()
    };
    let pte = |i: usize| PTES + (i as u64 % 512) * 8;
    let (warm_n, cold_n) = if warm_only {
        (2_000_000, 1)
    } else {
        (20_000, 300)
    };

    // Nothing: the timing itself (an Instant pair).
    let nothing = |_| {};
    // Direct calls.
    let vcpu_info = |_| {
        black_box(call(&d, Call::VcpuInfo, &[]));
    };
    let update_pte = |i: usize| {
        black_box(call(&d, Call::MemUpdatePte, &[pte(i), i as u64 | 1, 1]));
    };
    // MULTICALL of 32 MEM_UPDATE_PTE (the entries are rewritten before each batch, outside
    // the timing, as the guest does).
    let fill_batch = |i: usize| {
        for k in 0..32 {
            let e = MulticallEntry {
                call: Call::MemUpdatePte.code(),
                args: [pte(i * 32 + k), 1, 1, 0, 0, 0],
                ..Default::default()
            };
            mem.write_slice(e.as_bytes(), GuestAddress(BATCH + k as u64 * 96))
                .expect("RAM");
        }
    };
    // The deferred queue: 64 entries, then DEFER_FLUSH.
    let mut dq_tail = 0u32;
    let mut fill_queue = |i: usize| {
        for k in 0..64u32 {
            let e = DeferredEntry {
                call: Call::MemUpdatePte.code(),
                args: [pte(i * 64 + k as usize), 1, 1],
                ..Default::default()
            };
            let slot = u64::from(dq_tail.wrapping_add(k) % 64);
            mem.write_slice(
                e.as_bytes(),
                GuestAddress(QUEUE + DEFERRED_ENTRIES_OFFSET + slot * 32),
            )
            .expect("RAM");
        }
        dq_tail = dq_tail.wrapping_add(64);
        mem.write_obj(dq_tail, GuestAddress(QUEUE + 4))
            .expect("RAM");
    };
    // The ring: 32 submissions, then a notify; the completions are reaped (CQ head moved).
    let mut sq_tail = 0u32;
    let mut fill_ring = |i: usize| {
        for k in 0..32u32 {
            let e = SubmissionEntry {
                user_data: u64::from(k),
                call: Call::MemUpdatePte.code(),
                args: [pte(i * 32 + k as usize), 1, 1, 0, 0, 0],
                ..Default::default()
            };
            let slot = u64::from(sq_tail.wrapping_add(k) % 32);
            mem.write_slice(
                e.as_bytes(),
                GuestAddress(SQ + RING_ENTRIES_OFFSET + slot * 64),
            )
            .expect("RAM");
        }
        sq_tail = sq_tail.wrapping_add(32);
        mem.write_obj(sq_tail, GuestAddress(SQ + 4)).expect("RAM");
        // Reap everything: CQ head := CQ tail.
        let cq_tail: u32 = mem.read_obj(GuestAddress(CQ + 4)).expect("RAM");
        mem.write_obj(cq_tail, GuestAddress(CQ)).expect("RAM");
    };

    println!(
        "{:<34} {:>10} {:>10}",
        "ns per call (median)", "warm", "cold"
    );
    let row = |name: &str, warm: f64, cold: f64| println!("{name:<34} {warm:>10.1} {cold:>10.1}");
    row(
        "Instant pair, nothing timed",
        time(warm_n, 1, None, nothing),
        time(cold_n, 1, Some(&mut evict), nothing),
    );
    row(
        "direct VCPU_INFO",
        time(warm_n, 1, None, vcpu_info),
        time(cold_n, 1, Some(&mut evict), vcpu_info),
    );
    row(
        "direct GET_SPEC_VERSION",
        time(warm_n, 1, None, |_| {
            black_box(call(&d, Call::GetSpecVersion, &[]));
        }),
        time(cold_n, 1, Some(&mut evict), |_| {
            black_box(call(&d, Call::GetSpecVersion, &[]));
        }),
    );
    row(
        "direct MEM_UPDATE_PTE",
        time(warm_n, 1, None, update_pte),
        time(cold_n, 1, Some(&mut evict), update_pte),
    );
    // Batches: fill outside the timing (the guest's work), time the one call.
    let mut batched = |per: usize, cold: bool, fill: &mut dyn FnMut(usize), run: &dyn Fn()| {
        let n = if cold {
            cold_n
        } else {
            warm_n / per.max(1) * 4
        };
        let mut v = Vec::with_capacity(n);
        for i in 0..n {
            fill(i);
            if cold {
                evict.run();
            }
            let start = Instant::now();
            run();
            v.push(start.elapsed().as_nanos() as f64 / per as f64);
        }
        v.sort_by(f64::total_cmp);
        v[n / 2]
    };
    let mc = || {
        black_box(ok(&d, Call::Multicall, &[BATCH, 32, 0, 0]));
    };
    let mut fb = fill_batch;
    row(
        "MULTICALL 32 x MEM_UPDATE_PTE",
        batched(32, false, &mut fb, &mc),
        batched(32, true, &mut fb, &mc),
    );
    let flush = || {
        black_box(ok(&d, Call::DeferFlush, &[]));
    };
    row(
        "deferred 64 x MEM_UPDATE_PTE",
        batched(64, false, &mut fill_queue, &flush),
        batched(64, true, &mut fill_queue, &flush),
    );
    let notify = || d.ring_notify(0);
    row(
        "ring 32 x MEM_UPDATE_PTE (notify)",
        batched(32, false, &mut fill_ring, &notify),
        batched(32, true, &mut fill_ring, &notify),
    );
    let work = d.ring_work();
    println!(
        "ring passes {} entries {}: ring_work {:.1} ns per entry",
        work.passes,
        work.entries,
        work.time.as_nanos() as f64 / work.entries.max(1) as f64
    );
}
