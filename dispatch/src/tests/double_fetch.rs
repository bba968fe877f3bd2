//! No double fetch, under a real race: a second thread rewrites the guest memory the
//! dispatcher is processing (MULTICALL entries, deferred entries, ring submissions, a
//! RING_SETUP block) between two versions as fast as it can, for many calls. Every outcome
//! must be one the spec allows for one version of the bytes: the host acts on its own copy.
//! (The KVM version of these races, with a second vCPU as the writer, is in
//! `host-ref/tests/hostile_kvm.rs`.)

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;

use pvabi_abi::batch::{DeferredEntry, MulticallEntry, RingMode, RingSetup, SubmissionEntry};
use pvabi_abi::calls::Call;
use pvabi_abi::convention::ReservedU64;
use pvabi_abi::status::Status;
use vm_memory::{Bytes, GuestAddress};

use super::{wait_for, BUF, BUF2, H, PAGE1, PAGE2};
use crate::{FakeMachine, Outcome};

use super::super::machine::Machine as _;

const ROUNDS: u32 = 400;
const CONSOLE: u32 = Call::ConsoleWriteRegs.code();
const SHUTDOWN: u32 = Call::SystemShutdown.code();
/// One register for both versions: CONSOLE_WRITE_REGS's length 8 and SYSTEM_SHUTDOWN's
/// code 8.
const ARGS: [u64; 6] = [8, 0x4847_4645_4443_4241, 0, 0, 0, 0];

/// Flips the u32 at `addr + i * stride` (`i < count`) between `a` and `b` until stopped.
struct Flipper {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<u64>>,
}

impl Flipper {
    fn start(m: &Arc<FakeMachine>, addr: u64, stride: u64, count: u64, a: u32, b: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (m, s) = (m.clone(), stop.clone());
        let passes = Arc::new(AtomicU64::new(0));
        let passes_now = passes.clone();
        let thread = thread::spawn(move || {
            let mut flips = 0u64;
            while !s.load(Ordering::Relaxed) {
                let v = if flips.is_multiple_of(2) { b } else { a };
                for i in 0..count {
                    m.memory()
                        .write_obj(v, GuestAddress(addr + i * stride))
                        .expect("in RAM");
                }
                flips += 1;
                passes.fetch_add(1, Ordering::Relaxed);
            }
            flips
        });
        wait_for("the flipper's first pass", || {
            passes_now.load(Ordering::Relaxed) > 0
        });
        Flipper {
            stop,
            thread: Some(thread),
        }
    }

    fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

/// The counts every race checks: entries that ran as CONSOLE_WRITE_REGS(8) wrote exactly
/// 8 bytes each, the others were refused as a SYSTEM_SHUTDOWN in a batch, and none ended
/// the VM.
/// A doorbell-mode RING_SETUP block.
fn ring_setup(sq_page: u64, cq_page: u64) -> RingSetup {
    RingSetup {
        sq_page,
        cq_page,
        mode: RingMode::Doorbell,
        flags: 0,
        reserved: ReservedU64::Zero,
    }
}

fn check_counts(h: &H, entries: u64) -> (u64, u64) {
    let r = h.d.report();
    let ok = r.count(Call::ConsoleWriteRegs, Status::Success);
    let refused = r.count(Call::SystemShutdown, Status::NotAllowedHere);
    assert_eq!(ok + refused, entries, "one of the two versions, every time");
    assert_eq!(r.total(Call::ConsoleWriteRegs), ok);
    assert_eq!(r.total(Call::SystemShutdown), refused);
    assert_eq!(r.console_bytes, 8 * ok);
    assert!(r.console.chunks(8).all(|c| c == b"ABCDEFGH"));
    assert_eq!(r.end, None);
    (ok, refused)
}

#[test]
fn multicall_entries_rewritten_during_the_batch() {
    let h = H::ready(2);
    let entry = MulticallEntry {
        call: CONSOLE,
        args: ARGS,
        ..Default::default()
    };
    for i in 0..32 {
        h.write(BUF + i * 96, &entry);
    }
    let f = Flipper::start(&h.m, BUF, 96, 32, CONSOLE, SHUTDOWN);
    for _ in 0..ROUNDS {
        let (s, r, o) = h.raw(0, Call::Multicall.code().into(), &[BUF, 32, 0, 0]);
        assert_eq!((s, r[1], o), (Status::Success, 32, Outcome::Resume));
    }
    let flips = f.stop();
    let (ok, refused) = check_counts(&h, 32 * u64::from(ROUNDS));
    assert!(flips > 0);
    eprintln!("MULTICALL race: {flips} flips, {ok} ran, {refused} refused");
}

#[test]
fn deferred_entries_rewritten_during_the_drain() {
    let h = H::ready(1);
    assert_eq!(
        h.status(0, Call::DeferSetQueue, &[PAGE1, 0]),
        Status::Success
    );
    // CONSOLE_WRITE_REGS may not be deferred: EVENTS_SET_MASK(8) and SYSTEM_SHUTDOWN(8).
    let mask = Call::EventsSetMask.code();
    for i in 0..64 {
        let e = DeferredEntry {
            call: mask,
            args: [8, 0, 0],
            ..Default::default()
        };
        h.write(PAGE1 + 64 + i * 32, &e);
    }
    let f = Flipper::start(&h.m, PAGE1 + 64, 32, 64, mask, SHUTDOWN);
    let mut tail = 0u32;
    let (mut ran, mut failed) = (0, 0);
    for _ in 0..ROUNDS {
        tail = tail.wrapping_add(16);
        h.write(PAGE1 + 4, &tail);
        let (s, r) = h.call(0, Call::DeferFlush, &[]);
        assert_eq!((s, r[0]), (Status::Success, 16));
        ran += r[0] - r[1];
        failed += r[1];
    }
    let flips = f.stop();
    let rep = h.d.report();
    assert_eq!(rep.count(Call::EventsSetMask, Status::Success), ran);
    assert_eq!(
        rep.count(Call::SystemShutdown, Status::NotAllowedHere),
        failed
    );
    assert_eq!(rep.total(Call::SystemShutdown), failed);
    assert_eq!(
        (rep.deferred_drained, rep.deferred_failed),
        (16 * u64::from(ROUNDS), failed)
    );
    assert!(flips > 0 && rep.end.is_none());
}

#[test]
fn ring_submissions_rewritten_during_processing() {
    let h = H::ready(1);
    h.write(BUF2, &ring_setup(PAGE1, PAGE2));
    assert_eq!(h.status(0, Call::RingSetup, &[BUF2]), Status::Success);
    for i in 0..32u64 {
        let e = SubmissionEntry {
            user_data: i,
            call: CONSOLE,
            args: ARGS,
            ..Default::default()
        };
        h.write(PAGE1 + 64 + i * 64, &e);
    }
    let f = Flipper::start(&h.m, PAGE1 + 64 + 8, 64, 32, CONSOLE, SHUTDOWN);
    let mut tail = 0u32;
    for _ in 0..ROUNDS {
        tail = tail.wrapping_add(16);
        h.write(PAGE1 + 4, &tail);
        let (s, r) = h.call(0, Call::RingEnter, &[]);
        assert_eq!((s, r[0]), (Status::Success, 16));
        h.write(PAGE2, &tail); // consume the completions
    }
    let flips = f.stop();
    let (_, refused) = check_counts(&h, 16 * u64::from(ROUNDS));
    assert_eq!(h.d.report().ring_failed, refused);
    assert!(flips > 0);
}

#[test]
fn ring_setup_block_rewritten_during_the_call() {
    let h = H::ready(1);
    h.write(BUF, &ring_setup(PAGE1, PAGE2));
    h.write(BUF2, &ring_setup(0, 0));
    // sq_page flips between PAGE1 (valid) and PAGE2 (= cq_page: INVALID_PARAMETER).
    let f = Flipper::start(&h.m, BUF, 8, 1, PAGE1 as u32, PAGE2 as u32);
    let (mut ok, mut refused) = (0u64, 0u64);
    for _ in 0..ROUNDS {
        match h.status(0, Call::RingSetup, &[BUF]) {
            Status::Success => {
                ok += 1;
                // The ring registered is the valid one: a submission in PAGE1 completes.
                let e = SubmissionEntry {
                    user_data: 0x5e7,
                    call: CONSOLE,
                    args: [1, u64::from(b'R'), 0, 0, 0, 0],
                    ..Default::default()
                };
                h.write(PAGE1 + 64, &e);
                h.write(PAGE1 + 4, &1u32);
                assert_eq!(
                    h.call(0, Call::RingEnter, &[]),
                    (Status::Success, [1, 0, 0, 0])
                );
                assert_eq!(h.u32_at(PAGE2 + 4), 1, "a completion in PAGE2");
                assert_eq!(h.status(0, Call::RingSetup, &[BUF2]), Status::Success);
            }
            Status::InvalidParameter => refused += 1,
            other => panic!("RING_SETUP answered {other} for one of two valid-or-refused blocks"),
        }
    }
    let flips = f.stop();
    assert_eq!(ok + refused, u64::from(ROUNDS));
    assert_eq!(h.d.report().console_text(), "R".repeat(ok as usize));
    assert!(flips > 0);
}
