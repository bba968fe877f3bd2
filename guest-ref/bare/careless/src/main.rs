//! A deliberately careless guest, the negative case of `pvabi conform --guest`: it runs to a
//! clean SYSTEM_SHUTDOWN, but on the way it
//!
//! 1. calls VCPU_INFO although NEGOTIATE did not grant VCPU (PVABI-BASE-016),
//! 2. takes MULTICALL's INCOMPLETE for done and never resumes the batch (PVABI-BATCH-009),
//! 3. reads the time page's `monotonic_ns` without its sequence lock, and arms timers from
//!    what it read (PVABI-TIME-014).
//!
//! A checking host must report each of the three. Runs on vCPU 0 at CPL0.
#![no_std]
#![no_main]

use core::cell::UnsafeCell;
use core::mem::offset_of;

use pvabi_guest::abi::batch::MulticallEntry;
use pvabi_guest::abi::features::Features;
use pvabi_guest::abi::time::TimePage;
use pvabi_guest::discovery::discover;
use pvabi_guest::time::SharedTimePage;
use pvabi_guest::transport::{RawResult, Transport};
use pvabi_guest::{Call, PortTransport};
use pvabi_guest_rt::{halt_forever, BootInfo};

/// Entries in the batch (a checking host preempts after each).
const ENTRIES: usize = 4;
/// Time-page reads, each armed as a timer.
const READS: usize = 2000;

static PAGE: SharedTimePage = SharedTimePage::new();

#[repr(C, align(4096))]
struct Batch([MulticallEntry; ENTRIES]);

struct Shared(UnsafeCell<Batch>);

// SAFETY: one vCPU; the host writes the entries only during the MULTICALL made here.
unsafe impl Sync for Shared {}

static BATCH: Shared = Shared(UnsafeCell::new(Batch(
    [MulticallEntry {
        call: 0,
        status: 0,
        flags: pvabi_guest::abi::convention::ReservedU32::Zero,
        reserved: pvabi_guest::abi::convention::ReservedU32::Zero,
        args: [0; 6],
        results: [0; 4],
    }; ENTRIES],
)));

fn call(t: &PortTransport, call: Call, args: &[u64]) -> RawResult {
    let mut a = [0u64; 6];
    a[..args.len()].copy_from_slice(args);
    // SAFETY: the calls name only this guest's own statics (the batch and the time page).
    unsafe { t.call(call.code(), a) }
}

fn main(_boot: &BootInfo) -> ! {
    let Some(found) = discover() else {
        halt_forever()
    };
    let t = PortTransport::new(found.info.doorbell_port);
    let granted = Features::CONSOLE | Features::SYSTEM | Features::TIME | Features::MULTICALL;
    let _ = call(&t, Call::Negotiate, &[0x0001_0000, granted.bits()]);

    // 1. A call of a feature it did not ask for.
    let _ = call(&t, Call::VcpuInfo, &[]);

    // 2. A batch whose INCOMPLETE it ignores.
    let batch = BATCH.0.get();
    // SAFETY: the batch is this guest's; no call is in flight.
    unsafe {
        for e in (*batch).0.iter_mut() {
            e.call = Call::GetSpecVersion.code();
        }
    }
    let _ = call(&t, Call::Multicall, &[batch as u64, ENTRIES as u64, 0, 0]);

    // 3. The time page read without the sequence lock.
    let _ = call(&t, Call::TimeSetPage, &[PAGE.gpa()]);
    let monotonic =
        (PAGE.as_ptr() as u64 + offset_of!(TimePage, monotonic_ns) as u64) as *const u64;
    for _ in 0..READS {
        // SAFETY: the registered time page, identity mapped; a volatile read of memory the
        // host writes (and, carelessly, without checking `sequence`).
        let now = unsafe { monotonic.read_volatile() };
        let _ = call(&t, Call::TimeSetTimer, &[now + 1_000_000]);
    }
    let _ = call(&t, Call::TimeSetTimer, &[0]);
    let _ = call(&t, Call::SystemShutdown, &[0]);
    halt_forever()
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    halt_forever()
}

pvabi_guest_rt::entry!(main);
