//! The dispatcher through its public API only, without KVM: a scripted "guest" on a
//! FakeMachine that uses most families, then checks what the host recorded.

use std::sync::Arc;

use pvabi_abi::batch::{DeferredEntry, MulticallEntry, RingMode, RingSetup, SubmissionEntry};
use pvabi_abi::calls::Call;
use pvabi_abi::convention::{ReservedU32, ReservedU64};
use pvabi_abi::features::Features;
use pvabi_abi::status::Status;
use pvabi_dispatch::{CallRegs, Doorbell};
use pvabi_dispatch::{ConsoleSink, Dispatcher, End, FakeMachine, HostConfig, Machine, Outcome};
use vm_memory::{Bytes, GuestAddress};
use zerocopy::IntoBytes;

struct Guest {
    d: Dispatcher<FakeMachine>,
    m: Arc<FakeMachine>,
}

impl Guest {
    fn call(&self, vcpu: u32, call: Call, args: &[u64]) -> (Status, [u64; 4], Outcome) {
        let mut regs = CallRegs::new(call, args);
        let outcome = self.d.call(Doorbell::ring0(vcpu), &mut regs);
        let status = regs.status().expect("defined status");
        (status, regs.results(), outcome)
    }

    fn ok(&self, vcpu: u32, call: Call, args: &[u64]) -> [u64; 4] {
        let (s, r, o) = self.call(vcpu, call, args);
        assert_eq!((s, o), (Status::Success, Outcome::Resume), "{call:?}");
        r
    }

    fn write(&self, gpa: u64, bytes: &[u8]) {
        self.m
            .memory()
            .write_slice(bytes, GuestAddress(gpa))
            .unwrap();
    }
}

#[test]
fn a_scripted_guest_session() {
    let m = Arc::new(FakeMachine::new(8 << 20, 2));
    let config = HostConfig {
        vcpus: 2,
        console: ConsoleSink::Discard,
        // The script is a 1.0 session (the default host serves the current release).
        ..HostConfig::acting_as(pvabi_abi::version::V1_0)
    };
    let g = Guest {
        d: Dispatcher::new(config, m.clone()).unwrap(),
        m,
    };
    // Discovery: the pvabi leaves at 0x40000000, 2 vCPUs.
    let leaves = g.d.cpuid_leaves();
    assert_eq!(leaves[0].0, 0x4000_0000);
    assert_eq!(leaves[3].2[3], 2);

    // Handshake.
    assert_eq!(
        g.call(0, Call::ConsoleWriteRegs, &[0]).0,
        Status::NotNegotiated
    );
    let v1_0 = Features::defined_in(pvabi_abi::version::V1_0);
    let r = g.ok(0, Call::Negotiate, &[0x0001_0000, v1_0.bits()]);
    assert_eq!(r[..2], [0x0001_0000, 0x1ff]);

    // Event queue on vCPU 0, deferred queue on vCPU 0.
    g.ok(0, Call::EventsSetQueue, &[0x10_0000, 0x30]);
    g.ok(0, Call::DeferSetQueue, &[0x10_1000, 0]);
    let pte = DeferredEntry {
        call: Call::MemUpdatePte.code(),
        flags: ReservedU32::Zero,
        args: [0x20_0000, 0xabc0_0003, 1],
    };
    g.write(0x10_1000 + 64, pte.as_bytes());
    g.write(0x10_1000 + 4, &1u32.to_le_bytes());

    // A MULTICALL (a sync point: the deferred PTE write happens first).
    let entries = [
        MulticallEntry {
            call: Call::EventsSend.code(),
            args: [0, 7, 0, 0, 0, 0],
            ..Default::default()
        },
        MulticallEntry {
            call: Call::ConsoleWriteRegs.code(),
            args: [3, u64::from_le_bytes(*b"hey\0\0\0\0\0"), 0, 0, 0, 0],
            ..Default::default()
        },
    ];
    g.write(0x30_0000, entries.as_bytes());
    assert_eq!(g.ok(1, Call::Multicall, &[0x30_0000, 2, 0, 0])[..2], [2, 2]);

    // A doorbell ring on vCPU 1.
    let setup = RingSetup {
        sq_page: 0x11_0000,
        cq_page: 0x11_1000,
        mode: RingMode::Doorbell,
        flags: 0,
        reserved: ReservedU64::Zero,
    };
    g.write(0x30_1000, setup.as_bytes());
    g.ok(1, Call::RingSetup, &[0x30_1000]);
    let sqe = SubmissionEntry {
        user_data: 9,
        call: Call::VcpuKick.code(),
        flags: ReservedU32::Zero,
        args: [0, 0, 0, 0, 0, 0],
    };
    g.write(0x11_0000 + 64, sqe.as_bytes());
    g.write(0x11_0000 + 4, &1u32.to_le_bytes());
    g.d.ring_notify(1);

    // vCPU 0 has two events (USER from the batch, KICK from the ring): HALT returns at once.
    assert_eq!(g.ok(0, Call::VcpuHalt, &[0])[0], 1);
    let (s, _, o) = g.call(0, Call::SystemShutdown, &[3]);
    assert_eq!((s, o), (Status::Success, Outcome::End(End::Shutdown(3))));
    g.d.shutdown();

    let rep = g.d.report();
    assert_eq!(rep.negotiated.map(|n| n.1), Some(v1_0));
    assert_eq!(rep.console_text(), "hey");
    assert_eq!((rep.events_posted, rep.interrupts_raised), (2, 1));
    assert_eq!(rep.pte_write_count, 1);
    assert_eq!((rep.multicall_entries, rep.deferred_drained), (2, 1));
    assert_eq!((rep.ring_submissions, rep.ring_notifies), (1, 1));
    assert_eq!(rep.end, Some(End::Shutdown(3)));
    assert_eq!(rep.count(Call::Multicall, Status::Success), 1);
    assert_eq!(g.m.log().interrupts, [(0, 0x30)]);
}
