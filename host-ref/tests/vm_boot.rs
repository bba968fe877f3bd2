//! KVM tests of the VM layer with the bare-metal smoke guest
//! (`guest-ref/bare/smoke`), on a real `/dev/kvm`.
//!
//! The smoke guest speaks a raw test protocol (documented in its `main.rs`; the
//! constants below mirror it): reports on port 0x5658 (`eax` = tag, `rdi` = value),
//! console bytes on 0x5659, control commands on 0x565A, the scenario on 0x565B.

use std::collections::VecDeque;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use pvabi_host::bus::{PortAccess, PortBus, PortDevice};
use pvabi_host::dispatch::{CallRegs, End, Outcome};
use pvabi_host::vm::testing::kvm_or_skip;
use pvabi_host::vm::{self, FlushTarget, StartError, Vm, VmConfig, VmCtl, VmEnd, VmError, MIB};

fn smoke() -> &'static [u8] {
    pvabi_guest_images::smoke()
}

#[allow(dead_code)]
mod protocol {
    include!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../guest-ref/bare/smoke/src/protocol.rs"
    ));
}
use protocol::*;

const CMD_RAISE_LATER: u64 = 1;
const CMD_START_VCPU: u64 = 2;
const CMD_EXIT: u64 = 3;
const CMD_STOP_ME: u64 = 4;
const CMD_MARK: u64 = 5;
const CMD_FLUSH_TLB: u64 = 6;

const EXIT_OK: u32 = 0x5A;
/// The runtime's ring-3 code selector, as interrupt frames show it.
const USER_CS: u64 = 0x23;
/// `rax` the runtime halts with after a fatal exception (ORed with the vector).
const FATAL_MARKER: u64 = 0x0bad_0000_0000_0000;
/// The hypervisor CPUID leaf the test host supplies.
const HV_LEAF: (u32, u32, [u32; 4]) = (0x4000_0000, 0, [0x4000_0001, 0x6261_7670, 0x7473_6574, 0]);

/// Called for every report: (ctl, vcpu, tag, value).
type ReportHook = Box<dyn Fn(&VmCtl, u32, u32, u64) + Send + Sync>;

/// A test host for the smoke guest's raw protocol: one device for every port.
#[derive(Default)]
struct TestHost {
    /// The VM's handle, set before it runs.
    ctl: OnceLock<VmCtl>,
    mode: u32,
    params: Mutex<VecDeque<u32>>,
    reports: Mutex<Vec<(u32, u32, u64)>>,
    console: Mutex<Vec<u8>>,
    marks: Mutex<Vec<(u64, Instant)>>,
    /// When each RAISE_LATER interrupt was raised and when the guest reported it.
    raised: Arc<Mutex<Vec<Instant>>>,
    irq_reported: Mutex<Vec<Instant>>,
    /// Called for every report (vcpu, tag, value), e.g. to end the VM.
    on_report: Option<ReportHook>,
}

impl TestHost {
    fn new(mode: u32) -> Self {
        Self {
            mode,
            ..Default::default()
        }
    }

    fn reports(&self) -> Vec<(u32, u32, u64)> {
        self.reports.lock().unwrap().clone()
    }

    /// The values reported with `tag` by `vcpu`.
    fn values(&self, vcpu: u32, tag: u32) -> Vec<u64> {
        self.reports()
            .iter()
            .filter(|r| r.0 == vcpu && r.1 == tag)
            .map(|r| r.2)
            .collect()
    }

    fn one(&self, vcpu: u32, tag: u32) -> u64 {
        let values = self.values(vcpu, tag);
        assert_eq!(
            values.len(),
            1,
            "vCPU {vcpu} tag {tag:#x}: {values:x?}\n{}",
            self.dump()
        );
        values[0]
    }

    fn dump(&self) -> String {
        format!(
            "reports: {:x?}\nconsole: {}",
            self.reports(),
            String::from_utf8_lossy(&self.console.lock().unwrap())
        )
    }
}

impl PortDevice for TestHost {
    fn write(&self, access: &PortAccess, data: &[u8], regs: &mut CallRegs) -> Option<Outcome> {
        let (vcpu, port) = (access.vcpu, access.port);
        let ctl = self
            .ctl
            .get()
            .expect("the handle is set before the VM runs");
        Some(match port {
            PORT_REPORT => {
                let tag = u32::from_le_bytes(data.try_into().expect("32-bit report"));
                self.reports.lock().unwrap().push((vcpu, tag, regs.rdi));
                if tag == TAG_IRQ_HLT || tag == TAG_IRQ_CPL3_VECTOR {
                    self.irq_reported.lock().unwrap().push(Instant::now());
                }
                if let Some(f) = &self.on_report {
                    f(ctl, vcpu, tag, regs.rdi);
                }
                Outcome::Resume
            }
            PORT_CONSOLE => {
                self.console.lock().unwrap().extend_from_slice(data);
                Outcome::Resume
            }
            PORT_BENCH => Outcome::Resume,
            PORT_CONTROL => match regs.rax & 0xffff_ffff {
                CMD_RAISE_LATER => {
                    let (vector, delay, target) = (regs.rdi as u8, regs.rsi, regs.r8 as u32);
                    let ctl = ctl.clone();
                    let raised = Arc::clone(&self.raised);
                    std::thread::spawn(move || {
                        std::thread::sleep(Duration::from_millis(delay));
                        raised.lock().unwrap().push(Instant::now());
                        ctl.raise_interrupt(target, vector);
                    });
                    regs.rax = 0;
                    Outcome::Resume
                }
                CMD_START_VCPU => {
                    let result = ctl.start_vcpu(regs.rdi as u32, regs.rsi, regs.r8, regs.r9, 0);
                    regs.rax = u64::from(result.is_err());
                    Outcome::Resume
                }
                CMD_EXIT => Outcome::End(End::Shutdown(regs.rdi as u32)),
                CMD_STOP_ME => Outcome::StopVcpu,
                CMD_FLUSH_TLB => {
                    ctl.flush_tlb(FlushTarget::Vcpu(vcpu));
                    Outcome::Resume
                }
                CMD_MARK => {
                    self.marks.lock().unwrap().push((regs.rdi, Instant::now()));
                    Outcome::Resume
                }
                other => Outcome::End(End::Crash(format!("unknown control command {other}"))),
            },
            _ => Outcome::End(End::Crash(format!("unexpected out to port {port:#x}"))),
        })
    }

    fn read(&self, access: &PortAccess, data: &mut [u8]) -> Option<Outcome> {
        let port = access.port;
        let value = match port {
            PORT_MODE => self.mode,
            PORT_PARAM => self.params.lock().unwrap().pop_front().unwrap_or(0),
            _ => {
                return Some(Outcome::End(End::Crash(format!(
                    "unexpected in from port {port:#x}"
                ))))
            }
        };
        let bytes = value.to_le_bytes();
        let n = data.len().min(4);
        data[..n].copy_from_slice(&bytes[..n]);
        Some(Outcome::Resume)
    }
}

/// Runs the smoke guest with `host` on `vcpus` vCPUs; `with_ctl` runs on another
/// thread with the VM's handle. A watchdog ends the VM after 120 s so that a broken
/// layer fails the test instead of hanging it.
fn run_smoke(
    host: Arc<TestHost>,
    vcpus: u32,
    with_ctl: impl FnOnce(VmCtl) + Send + 'static,
) -> VmEnd {
    run_smoke_watched(host, vcpus, None, with_ctl)
}

/// [`run_smoke`], with `watcher` seeing every exit from the first.
fn run_smoke_watched(
    host: Arc<TestHost>,
    vcpus: u32,
    watcher: Option<Arc<dyn vm::ExitWatcher>>,
    with_ctl: impl FnOnce(VmCtl) + Send + 'static,
) -> VmEnd {
    let config = VmConfig {
        vcpus,
        mem_bytes: 64 * MIB,
        cpuid: vec![HV_LEAF],
        log_guest_writes: false,
    };
    let vm = Vm::new(&config, smoke()).expect("VM setup");
    let ctl = vm.ctl();
    assert!(host.ctl.set(ctl.clone()).is_ok(), "one VM per test host");
    if let Some(watcher) = watcher {
        assert!(ctl.watch_exits(watcher), "the first watcher");
    }
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let watchdog_ctl = ctl.clone();
    let watchdog = std::thread::spawn(move || {
        if stop_rx.recv_timeout(Duration::from_secs(120)).is_err() {
            watchdog_ctl.end(VmEnd::Crash("test watchdog: the VM ran for 120 s".into()));
        }
    });
    let helper = std::thread::spawn(move || with_ctl(ctl));
    let end = vm.run(bus_of(host)).expect("VM run");
    let _ = stop_tx.send(());
    watchdog.join().unwrap();
    helper.join().unwrap();
    end
}

/// A bus with `host` answering every port.
fn bus_of(host: Arc<TestHost>) -> Arc<PortBus> {
    let mut bus = PortBus::new();
    bus.attach(0..=u16::MAX, host);
    Arc::new(bus)
}

fn assert_clean_exit(end: &VmEnd, host: &TestHost) {
    assert_eq!(*end, VmEnd::Shutdown(EXIT_OK), "{end}\n{}", host.dump());
}

#[test]
fn smoke_guest_boots_and_reports() {
    if !kvm_or_skip("smoke_guest_boots_and_reports") {
        return;
    }
    let host = Arc::new(TestHost::new(MODE_SMOKE));
    let end = run_smoke(host.clone(), 2, |_| {});
    assert_clean_exit(&end, &host);
    let first: Vec<_> = host.reports().into_iter().take(7).collect();
    assert_eq!(
        first,
        vec![
            (0, TAG_HELLO, 0x600D_B007),
            (0, TAG_VCPU, 0),
            (0, TAG_NCPU, 2),
            (0, TAG_MEM, 64 * MIB),
            (0, TAG_CPUID_EAX, u64::from(HV_LEAF.2[0])),
            (0, TAG_CPUID_EBX, u64::from(HV_LEAF.2[1])),
            (0, TAG_APIC_ID, 0),
        ],
        "{}",
        host.dump()
    );
    assert_eq!(
        host.reports().last(),
        Some(&(0, TAG_DONE, 0xD04E)),
        "{}",
        host.dump()
    );
}

/// Records every exit's state, as the checking host's watcher gets it.
#[derive(Default)]
struct ExitStates(Mutex<Vec<(u32, pvabi_host::dispatch::ExitState)>>);

impl vm::ExitWatcher for ExitStates {
    fn exit(&self, vcpu: u32, state: pvabi_host::dispatch::ExitState) {
        self.0.lock().unwrap().push((vcpu, state));
    }
}

/// The exit watcher gets each exit's interrupt and paging state from the registers KVM synced
/// (PVABI-PLAT-008 and PVABI-MEM-022 rest on them): the smoke guest runs in long mode (EFER.LMA)
/// with PAE paging from the entry tables (CR3 names `boot_cr3`) and never turns on LA57 (the
/// platform boots 4-level paging), so no exit shows a PML5 table; it halts with interrupts
/// enabled and its IDT loaded, which some exit shows.
#[test]
fn the_exit_watcher_sees_each_exits_interrupt_and_paging_state() {
    if !kvm_or_skip("the_exit_watcher_sees_each_exits_interrupt_and_paging_state") {
        return;
    }
    use pvabi_abi::platform::{BOOT_CR4, BOOT_EFER};
    const EFER_LMA: u64 = 1 << 10;
    const CR4_PAE: u64 = 1 << 5;
    const CR4_LA57: u64 = 1 << 12;
    let host = Arc::new(TestHost::new(MODE_SMOKE));
    let states = Arc::new(ExitStates::default());
    let boot_cr3 = Arc::new(OnceLock::new());
    let cr3 = boot_cr3.clone();
    let end = run_smoke_watched(host.clone(), 1, Some(states.clone()), move |ctl| {
        let _ = cr3.set(ctl.boot_cr3());
    });
    assert_clean_exit(&end, &host);
    let states = states.0.lock().unwrap();
    assert!(states.len() > 10, "{} exits watched", states.len());
    // The smoke guest keeps the entry state's paging registers up to its first exit.
    let (_, first) = states[0];
    assert_eq!(
        (first.cr3 & 0x000f_ffff_ffff_f000, first.cr4, first.efer),
        (*boot_cr3.get().unwrap(), BOOT_CR4, BOOT_EFER),
        "{first:?}"
    );
    for (vcpu, s) in states.iter() {
        assert_eq!(*vcpu, 0);
        assert!(
            s.efer & EFER_LMA != 0 && s.cr4 & CR4_PAE != 0 && s.cr4 & CR4_LA57 == 0,
            "{s:?}"
        );
        assert_eq!(s.pml5_table(), None, "{s:?}");
    }
    assert!(
        states
            .iter()
            .any(|(_, s)| s.interrupt_flag && s.idt_limit != 0),
        "no exit with IF set and an IDT"
    );
}

#[test]
fn interrupt_from_host_thread_reaches_guest_handler() {
    if !kvm_or_skip("interrupt_from_host_thread_reaches_guest_handler") {
        return;
    }
    let host = Arc::new(TestHost::new(MODE_SMOKE));
    let end = run_smoke(host.clone(), 1, |_| {});
    assert_clean_exit(&end, &host);
    // Raised 20 ms later from another thread while the vCPU halted (HLT, IF=1).
    assert_eq!(host.one(0, TAG_IRQ_HLT), 0x40, "{}", host.dump());
    // Raised 50 ms later while the vCPU spun at CPL3 inside KVM_RUN: needs the kick.
    assert_eq!(host.one(0, TAG_IRQ_CPL3_VECTOR), 0x41, "{}", host.dump());
    assert_eq!(
        host.one(0, TAG_IRQ_CPL3_CS),
        USER_CS,
        "interrupted at CPL3\n{}",
        host.dump()
    );
}

#[test]
fn cpl3_function_does_port_io() {
    if !kvm_or_skip("cpl3_function_does_port_io") {
        return;
    }
    let host = Arc::new(TestHost::new(MODE_SMOKE));
    let end = run_smoke(host.clone(), 1, |_| {});
    assert_clean_exit(&end, &host);
    // `mov ax, cs` at ring 3 reads the hardware selector: the runtime's 0x23, or on
    // PVM the host's own user CS (0x33). Either way its RPL is 3.
    let cs = host.one(0, TAG_USER_CS);
    assert_eq!(cs & 3, 3, "CS.RPL of the ring-3 function: {cs:#x}");
    assert_eq!(host.one(0, TAG_USER_ARG), 0x1234);
    assert_eq!(
        host.one(0, TAG_USER_RET),
        0x1234 * 3 + 1,
        "the result came back to ring 0"
    );
    // The smoke guest exits once this is all done, so there were no AP reports.
    assert!(host.values(1, TAG_AP_ARG).is_empty());
}

#[test]
fn secondary_vcpu_starts_with_its_argument() {
    if !kvm_or_skip("secondary_vcpu_starts_with_its_argument") {
        return;
    }
    let host = Arc::new(TestHost::new(MODE_SMOKE));
    let end = run_smoke(host.clone(), 2, |_| {});
    assert_clean_exit(&end, &host);
    assert_eq!(
        host.one(0, TAG_START_RESULT),
        0,
        "start_vcpu accepted\n{}",
        host.dump()
    );
    assert_eq!(host.one(1, TAG_AP_ARG), AP_ARG, "{}", host.dump());
    assert_eq!(host.one(1, TAG_AP_VCPU), 1);
    assert_eq!(host.one(1, TAG_AP_APIC_ID), 1, "per-vCPU CPUID");
    assert_eq!(
        host.one(1, TAG_AP_USER_CS) & 3,
        3,
        "ring 3 on the second vCPU (own TSS)"
    );
    assert_eq!(
        host.one(0, TAG_AP_WAIT),
        1,
        "the boot vCPU saw the AP finish"
    );
}

fn expect_fault(end: &VmEnd, host: &TestHost, reason: &str) -> vm::FaultReport {
    match end {
        VmEnd::Fault(report) => {
            assert!(
                report.fault.to_string().contains(reason),
                "fault {:?}, wanted {reason:?}",
                report.fault
            );
            assert!(report.regs.is_some(), "a fault report carries registers");
            eprintln!("{report}");
            report.clone()
        }
        other => panic!("expected a fault ({reason}), got {other}\n{}", host.dump()),
    }
}

#[test]
fn triple_fault_ends_the_vm_with_a_fault_report() {
    if !kvm_or_skip("triple_fault_ends_the_vm_with_a_fault_report") {
        return;
    }
    let host = Arc::new(TestHost::new(MODE_TRIPLE_FAULT));
    let end = run_smoke(host.clone(), 1, |_| {});
    let report = expect_fault(&end, &host, "triple fault");
    let regs = report.regs.unwrap();
    assert_eq!(
        regs.cr0 & 0x8000_0001,
        0x8000_0001,
        "still in paged protected mode"
    );
    assert_eq!(report.vcpu, 0);
    assert!(
        end.to_string().contains("rip="),
        "readable registers: {end}"
    );
}

#[test]
fn halt_with_interrupts_disabled_is_reported_as_stuck() {
    if !kvm_or_skip("halt_with_interrupts_disabled_is_reported_as_stuck") {
        return;
    }
    let host = Arc::new(TestHost::new(MODE_HLT_IF0));
    let end = run_smoke(host.clone(), 1, |_| {});
    let report = expect_fault(&end, &host, "HLT with interrupts disabled");
    assert_eq!(report.regs.unwrap().rflags & 0x200, 0);
}

#[test]
fn guest_exception_is_reported_by_the_runtime() {
    if !kvm_or_skip("guest_exception_is_reported_by_the_runtime") {
        return;
    }
    let host = Arc::new(TestHost::new(MODE_EXCEPTION));
    let end = run_smoke(host.clone(), 1, |_| {});
    let report = expect_fault(&end, &host, "HLT with interrupts disabled");
    // The runtime's fatal hook reported #UD and where it happened, then halted with
    // the vector in rax/rdi and the faulting rip in rsi.
    assert_eq!(host.one(0, TAG_EXCEPTION_VECTOR), 6, "{}", host.dump());
    let rip = host.one(0, TAG_EXCEPTION_RIP);
    let regs = report.regs.unwrap();
    assert_eq!(regs.rax, FATAL_MARKER | 6);
    assert_eq!(regs.rdi, 6);
    assert_eq!(regs.rsi, rip);
    assert!(
        (0x20_0000..0x40_0000).contains(&rip),
        "rip {rip:#x} inside the image"
    );
}

#[test]
fn mmio_to_nowhere_is_a_fault() {
    if !kvm_or_skip("mmio_to_nowhere_is_a_fault") {
        return;
    }
    let host = Arc::new(TestHost::new(MODE_MMIO));
    let end = run_smoke(host.clone(), 1, |_| {});
    expect_fault(&end, &host, "MMIO write to 0x30000000");
}

#[test]
fn last_vcpu_stopping_ends_the_vm() {
    if !kvm_or_skip("last_vcpu_stopping_ends_the_vm") {
        return;
    }
    let host = Arc::new(TestHost::new(MODE_STOP));
    let end = run_smoke(host.clone(), 2, |_| {});
    match end {
        VmEnd::Fault(report) => {
            assert!(matches!(report.fault, vm::Fault::AllStopped(_)), "{report}")
        }
        other => panic!("expected a fault, got {other}"),
    }
}

#[test]
fn host_thread_controls_a_halted_vm() {
    if !kvm_or_skip("host_thread_controls_a_halted_vm") {
        return;
    }
    // The next interrupt is raised only once the guest has reported the previous one:
    // raising a vector that is still queued merges with it (by design).
    let (seen_tx, seen_rx) = mpsc::channel::<u64>();
    let seen_tx = Mutex::new(seen_tx);
    let host = Arc::new(TestHost {
        on_report: Some(Box::new(move |ctl, _, tag, value| {
            if tag == TAG_IDLE_IRQ {
                let _ = seen_tx.lock().unwrap().send(value);
                // End the VM after the third interrupt the guest counted.
                if value >> 8 == 3 {
                    ctl.end(VmEnd::Shutdown(7));
                }
            }
        })),
        ..TestHost::new(MODE_IDLE)
    });
    let end = run_smoke(host.clone(), 2, move |ctl| {
        assert_eq!(
            ctl.start_vcpu(5, 0x20_0000, 0x8000, 0, 0),
            Err(StartError::NoSuchVcpu { vcpu: 5, count: 2 })
        );
        assert_eq!(
            ctl.start_vcpu(0, 0x20_0000, 0x8000, 0, 0),
            Err(StartError::AlreadyRunning(0))
        );
        assert_eq!(
            ctl.start_vcpu(1, 0x20_0000, 0x8000, 0, 0x123),
            Err(StartError::BadCr3(0x123))
        );
        for _ in 0..3 {
            // Let the guest halt again first (not required, but that is the case to test).
            std::thread::sleep(Duration::from_millis(10));
            ctl.flush_tlb(FlushTarget::All);
            ctl.raise_interrupt(0, 0x40);
            if seen_rx.recv_timeout(Duration::from_secs(60)).is_err() {
                return; // the VM ended some other way; the asserts below say how
            }
        }
    });
    assert_eq!(end, VmEnd::Shutdown(7), "{}", host.dump());
    assert_eq!(
        host.values(0, TAG_IDLE_IRQ),
        vec![0x140, 0x240, 0x340],
        "{}",
        host.dump()
    );
}

/// The guest remaps a page behind the TLB's back and the host flushes its TLB. On a
/// shadow-paging host (PVM) KVM tracks page-table writes itself, so this also passes
/// without the flush (checked by hand); what it proves is that the flush path
/// (`KVM_SET_SREGS` twice, CR4.PGE toggled) runs and leaves the vCPU consistent.
#[test]
fn tlb_flush_makes_a_remapped_page_visible() {
    if !kvm_or_skip("tlb_flush_makes_a_remapped_page_visible") {
        return;
    }
    let host = Arc::new(TestHost::new(MODE_TLB));
    let end = run_smoke(host.clone(), 1, |_| {});
    assert_clean_exit(&end, &host);
    assert_eq!(host.one(0, TAG_TLB_BEFORE), 0xAAAA);
    assert_eq!(
        host.one(0, TAG_TLB_AFTER),
        0xBBBB,
        "the new mapping after flush_tlb"
    );
}

#[test]
fn bad_images_are_errors() {
    // No KVM needed: images are checked before /dev/kvm is opened.
    let host = Arc::new(TestHost::new(MODE_SMOKE));
    let config = VmConfig::default();
    let err = vm::run(&config, &[b'x'; 100], bus_of(host.clone())).unwrap_err();
    assert!(matches!(err, VmError::BadElf(_)), "{err}");
    assert!(err.to_string().contains("ELF magic"), "{err}");

    let err = vm::run(&config, &smoke()[..100], bus_of(host.clone())).unwrap_err();
    assert!(matches!(err, VmError::BadElf(_)), "{err}");

    // Make the last PT_LOAD segment 100 MiB long in memory.
    let mut big = smoke().to_vec();
    let phoff = u64::from_le_bytes(big[32..40].try_into().unwrap()) as usize;
    let phnum = u16::from_le_bytes(big[56..58].try_into().unwrap()) as usize;
    let last_load = (0..phnum)
        .map(|i| phoff + i * 56)
        .rfind(|&ph| u32::from_le_bytes(big[ph..ph + 4].try_into().unwrap()) == 1)
        .unwrap();
    big[last_load + 40..last_load + 48].copy_from_slice(&(100 * MIB).to_le_bytes());
    let err = vm::run(&config, &big, bus_of(host.clone())).unwrap_err();
    assert!(
        matches!(err, VmError::ImageTooLarge { have_mib: 64, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("give the VM at least"), "{err}");

    let err = vm::run(
        &VmConfig {
            vcpus: 1,
            mem_bytes: 12345,
            ..VmConfig::default()
        },
        smoke(),
        bus_of(host),
    )
    .unwrap_err();
    assert!(
        matches!(err, VmError::MemorySize { bytes: 12345, .. }),
        "{err}"
    );
}

#[test]
fn kvm_or_skip_agrees_with_the_machine() {
    let usable = kvm_or_skip("kvm_or_skip_agrees_with_the_machine");
    assert_eq!(
        usable,
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_ok()
    );
}

/// Round-trip cost of a bare 32-bit `out` that exits to this host, at CPL0 and CPL3.
/// Run with `cargo test -p pvabi-host --release --test vm_boot -- --ignored --nocapture`.
#[test]
#[ignore = "measurement: prints figures, asserts nothing"]
fn measure_exit_costs() {
    if !kvm_or_skip("measure_exit_costs") {
        return;
    }
    let n0: u32 = std::env::var("PVABI_BENCH_N0")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let n3: u32 = std::env::var("PVABI_BENCH_N3")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20000);
    for round in 0..3 {
        let host = Arc::new(TestHost::new(MODE_BENCH));
        host.params.lock().unwrap().extend([n0, n3]);
        let end = run_smoke(host.clone(), 1, |_| {});
        assert_clean_exit(&end, &host);
        let marks = host.marks.lock().unwrap().clone();
        assert_eq!(
            marks.iter().map(|m| m.0).collect::<Vec<_>>(),
            vec![0, 1, 2, 3]
        );
        let per =
            |a: usize, b: usize, n: u32| (marks[b].1 - marks[a].1).as_nanos() as f64 / f64::from(n);
        let cpl0 = per(0, 1, n0);
        let cpl3 = per(1, 2, n3);
        let empty = per(2, 3, n0);
        println!(
            "round {round}: out at CPL0: {cpl0:.0} ns/exit ({n0} exits; the emulated loop alone \
             costs {empty:.0} ns/iteration), out at CPL3: {cpl3:.0} ns/exit ({n3} exits)"
        );
    }
    // Interrupt latency with KVM_INTERRUPT: from raise_interrupt on a host thread to the
    // guest's report from its handler path (which includes that report's exit).
    let host = Arc::new(TestHost::new(MODE_SMOKE));
    let end = run_smoke(host.clone(), 1, |_| {});
    assert_clean_exit(&end, &host);
    let raised = host.raised.lock().unwrap().clone();
    let reported = host.irq_reported.lock().unwrap().clone();
    for (what, (r, g)) in ["halted (HLT exit, woken)", "spinning at CPL3 (kicked)"]
        .iter()
        .zip(raised.iter().zip(reported.iter()))
    {
        println!(
            "KVM_INTERRUPT: vCPU {what}: guest reported the vector {:?} after raise_interrupt",
            *g - *r
        );
    }
}

/// One access to a watched page: (vCPU, address, a write, the bytes).
type Access = (u32, u64, bool, Vec<u8>);

/// Records every access to a watched page, and on the first read of `from` moves the watch
/// from `from` to `to` (from the vCPU's own thread, in the middle of the guest's instruction).
struct PageWatcher {
    ctl: Mutex<Option<VmCtl>>,
    from: u64,
    to: u64,
    accesses: Mutex<Vec<Access>>,
}

impl vm::ExitWatcher for PageWatcher {
    fn exit(&self, _: u32, _: pvabi_host::dispatch::ExitState) {}

    fn watched_access(&self, vcpu: u32, gpa: u64, data: &[u8], write: bool) {
        self.accesses
            .lock()
            .unwrap()
            .push((vcpu, gpa, write, data.to_vec()));
        if gpa == self.from && !write {
            if let Some(ctl) = self.ctl.lock().unwrap().as_ref() {
                ctl.unwatch_pages(self.from, 1).expect("unwatch");
                ctl.watch_pages(self.to, 1).expect("watch");
            }
        }
    }
}

/// Watched pages (`VmCtl::watch_pages`): every guest access to a page taken out of the memory
/// slots reaches the exit watcher with its address, width, direction and value, and is served
/// from guest RAM (the guest reads what it wrote); a watch moved to another page from the
/// vCPU's own thread, between the guest's accesses, takes effect for the next one. The smoke
/// guest's TLB scenario writes 0xAAAA to 48 MiB and 0xBBBB to 52 MiB, reads 48 MiB, remaps
/// 48 MiB onto 52 MiB and reads it again.
#[test]
fn watched_pages_exit_with_each_access_and_are_served_from_ram() {
    if !kvm_or_skip("watched_pages_exit_with_each_access_and_are_served_from_ram") {
        return;
    }
    const VA: u64 = 0x0300_0000;
    const OTHER: u64 = 0x0340_0000;
    let host = Arc::new(TestHost::new(MODE_TLB));
    let config = VmConfig {
        vcpus: 1,
        mem_bytes: 64 * MIB,
        cpuid: vec![HV_LEAF],
        log_guest_writes: true,
    };
    let vm = Vm::new(&config, smoke()).expect("VM setup");
    let ctl = vm.ctl();
    assert!(host.ctl.set(ctl.clone()).is_ok());
    let watcher = Arc::new(PageWatcher {
        ctl: Mutex::new(Some(ctl.clone())),
        from: VA,
        to: OTHER,
        accesses: Mutex::new(Vec::new()),
    });
    assert!(ctl.watch_exits(watcher.clone()));
    // Not whole pages of RAM: refused, nothing watched.
    for (gpa, pages) in [(VA + 8, 1), (VA, 0), (64 * MIB - 4096, 2)] {
        assert!(
            matches!(ctl.watch_pages(gpa, pages), Err(VmError::WatchRange { .. })),
            "{gpa:#x} {pages}"
        );
    }
    ctl.watch_pages(VA, 1).expect("watch");
    assert_eq!(ctl.watched_pages(), [VA]);
    let end = vm.run(bus_of(host.clone())).expect("VM run");
    let ctl = watcher.ctl.lock().unwrap().take().unwrap();
    assert_clean_exit(&end, &host);
    assert_eq!(host.one(0, TAG_TLB_BEFORE), 0xAAAA, "served from RAM");
    assert_eq!(host.one(0, TAG_TLB_AFTER), 0xBBBB, "{}", host.dump());
    let accesses = watcher.accesses.lock().unwrap().clone();
    let word = |v: u64| v.to_le_bytes().to_vec();
    assert_eq!(
        accesses,
        [
            (0, VA, true, word(0xAAAA)),
            (0, VA, false, word(0xAAAA)),
            // The write of 0xBBBB to OTHER came before its watch: not seen.
            (0, OTHER, false, word(0xBBBB)),
        ],
        "{}",
        host.dump()
    );
    assert_eq!(ctl.watched_pages(), [OTHER]);
    // The dirty log survives the slot changes, and counts the store to the watched page.
    let written = ctl.guest_written_pages(&[VA, OTHER, 0x0380_0000]).unwrap();
    assert_eq!(written, [VA, OTHER]);
}

/// Changing the memory slots while two vCPUs run: the smoke scenario (CPL3 spins, interrupts,
/// a second vCPU started) runs to its clean end while another thread watches and unwatches a
/// page as fast as it can, which each time deletes and re-creates the slots of all RAM. Without
/// the gate that holds vCPUs out of KVM_RUN meanwhile, a vCPU triple-faults at the first change
/// (measured by `vm::mmio_probe`).
#[test]
fn the_slots_change_safely_while_two_vcpus_run() {
    if !kvm_or_skip("the_slots_change_safely_while_two_vcpus_run") {
        return;
    }
    let host = Arc::new(TestHost::new(MODE_SMOKE));
    let changes = Arc::new(Mutex::new(0u32));
    let counted = changes.clone();
    let end = run_smoke(host.clone(), 2, move |ctl| {
        while !ctl.is_ended() {
            ctl.watch_pages(0x0380_0000, 1).expect("watch");
            ctl.unwatch_pages(0x0380_0000, 1).expect("unwatch");
            *counted.lock().unwrap() += 2;
        }
    });
    assert_clean_exit(&end, &host);
    let changes = *changes.lock().unwrap();
    assert!(changes >= 2, "{changes} slot changes");
    println!("{changes} slot changes while the smoke guest ran");
}
