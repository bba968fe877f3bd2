//! Hostile-guest tests of the reference host on a real `/dev/kvm`.
//!
//! The probe guest (`guest-ref/bare/probe`) runs one scenario per VM: it makes deliberately
//! bad pvabi calls and reports the raw answer of each over a test port, without judging it,
//! then makes a call that must succeed (`alive`) and shuts down with SYSTEM_SHUTDOWN(0). Each
//! test asserts, per case, the exact status the spec defines, that the VM kept running and
//! ended with shutdown(0) (not a fault), and what the host recorded in its [`Report`].
//!
//! Test protocol (mirrors the probe's `main.rs`): reports on port 0x5670 (`rdi`/`rsi` = the
//! case name in guest memory, `r8` = raw status, `r9` = `r0`, `r10` = `r1`, `r11` = extra),
//! raw console bytes on 0x5671, the scenario from 0x5672, parameters from 0x5673. Every
//! other port goes to the [`PvabiHost`].

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pvabi_abi::calls::Call;
use pvabi_abi::features::Features;
use pvabi_abi::status::Status;
use pvabi_host::bus::{PortAccess, PortDevice};
use pvabi_host::dispatch::{CallRegs, ConsoleSink, End, HostConfig, Outcome, Report};
use pvabi_host::runner::{self, RunConfig};
use pvabi_host::vm::testing::kvm_or_skip;
use pvabi_host::vm::{VmConfig, VmCtl, VmEnd};
use vm_memory::{Bytes, GuestAddress};

#[allow(dead_code)]
mod protocol {
    include!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../guest-ref/bare/probe/src/protocol.rs"
    ));
}
use protocol::*;

/// Guest RAM of every probe VM.
const MEM: u64 = 64 << 20;
/// How long one probe VM may run before the test gives up on it (a hang is a failure).
const DEADLINE: Duration = Duration::from_secs(90);

/// One report of the probe.
#[derive(Clone, Debug)]
struct Probe {
    vcpu: u32,
    name: String,
    /// `rax` after the call, all 64 bits.
    st: u64,
    r0: u64,
    r1: u64,
    extra: u64,
}

/// The probe's test ports, as a device in front of the pvabi ports.
struct ProbePorts {
    ctl: VmCtl,
    scenario: u32,
    params: Mutex<VecDeque<u32>>,
    probes: Mutex<Vec<Probe>>,
    console: Mutex<Vec<u8>>,
}

impl PortDevice for ProbePorts {
    fn write(&self, access: &PortAccess, data: &[u8], regs: &mut CallRegs) -> Option<Outcome> {
        match access.port {
            PORT_REPORT => {
                let len = regs.rsi.min(128) as usize;
                let mut name = vec![0u8; len];
                let name = match self
                    .ctl
                    .memory()
                    .read_slice(&mut name, GuestAddress(regs.rdi))
                {
                    Ok(()) => String::from_utf8_lossy(&name).into_owned(),
                    Err(_) => format!("<unreadable name at {:#x}>", regs.rdi),
                };
                self.probes.lock().unwrap().push(Probe {
                    vcpu: access.vcpu,
                    name,
                    st: regs.r8,
                    r0: regs.r9,
                    r1: regs.r10,
                    extra: regs.r11,
                });
                Some(Outcome::Resume)
            }
            PORT_CONSOLE => {
                self.console.lock().unwrap().extend_from_slice(data);
                Some(Outcome::Resume)
            }
            _ => None,
        }
    }

    fn read(&self, access: &PortAccess, data: &mut [u8]) -> Option<Outcome> {
        let value = match access.port {
            PORT_SCENARIO => self.scenario,
            PORT_PARAM => self.params.lock().unwrap().pop_front().unwrap_or(0),
            _ => return None,
        };
        let bytes = value.to_le_bytes();
        let n = data.len().min(4);
        data[..n].copy_from_slice(&bytes[..n]);
        Some(Outcome::Resume)
    }
}

/// What one probe VM did.
struct Run {
    scenario: u32,
    end: VmEnd,
    probes: Vec<Probe>,
    report: Report,
    console: String,
    elapsed: Duration,
}

impl Run {
    fn dump(&self) -> String {
        let mut s = format!(
            "scenario {} ended after {:?}: {}\nprobe reports:\n",
            self.scenario, self.elapsed, self.end
        );
        for p in &self.probes {
            s += &format!(
                "  [vCPU {}] {:<40} status={:<#6x} ({}) r0={:#x} r1={:#x} extra={:#x}\n",
                p.vcpu,
                p.name,
                p.st,
                status_name(p.st),
                p.r0,
                p.r1,
                p.extra
            );
        }
        if !self.console.is_empty() {
            s += &format!("raw console: {}\n", self.console);
        }
        let console = &self.report.console;
        s += &format!(
            "pvabi console ({} bytes): {:?}{}\n",
            self.report.console_bytes,
            String::from_utf8_lossy(&console[..console.len().min(160)]),
            if console.len() > 160 { "..." } else { "" }
        );
        s
    }

    /// The one report named `name`.
    fn get(&self, name: &str) -> &Probe {
        let found: Vec<&Probe> = self.probes.iter().filter(|p| p.name == name).collect();
        assert_eq!(
            found.len(),
            1,
            "case `{name}`: expected exactly one report\n{}",
            self.dump()
        );
        found[0]
    }

    /// The case `name` returned exactly `status` in `rax` (zero-extended).
    fn expect(&self, name: &str, status: Status) -> &Probe {
        let p = self.get(name);
        assert_eq!(
            p.st,
            status.raw(),
            "case `{name}`: rax = {:#x} ({}), the spec says {status} ({})\n{}",
            p.st,
            status_name(p.st),
            status.raw(),
            self.dump()
        );
        p
    }

    /// Several cases that must all return `status`.
    fn expect_all(&self, names: &[&str], status: Status) {
        for name in names {
            self.expect(name, status);
        }
    }

    /// The VM kept running after every bad call: the final call succeeded, nothing reported a
    /// returning stop or shutdown, and the VM ended with SYSTEM_SHUTDOWN(0), not a fault.
    fn assert_alive(&self) {
        self.expect("alive", Status::Success);
        for bad in ["shutdown_returned", "ap_stop_returned", "unknown_scenario"] {
            assert!(
                self.probes.iter().all(|p| p.name != bad),
                "`{bad}` was reported\n{}",
                self.dump()
            );
        }
        assert_eq!(
            self.end,
            VmEnd::Shutdown(0),
            "the VM must end with shutdown(0)\n{}",
            self.dump()
        );
        assert_eq!(
            self.report.end,
            Some(End::Shutdown(0)),
            "the host recorded the end\n{}",
            self.dump()
        );
        // Every status the guest saw is one the spec defines (STAT-007).
        for p in &self.probes {
            if p.name == "sweep" || p.name.starts_with("entry") || p.name.starts_with("cqe") {
                assert!(
                    p.st < Status::ALL.len() as u64,
                    "case `{}`: undefined status {:#x}\n{}",
                    p.name,
                    p.st,
                    self.dump()
                );
            }
        }
    }

    fn count(&self, call: Call, status: Status) -> u64 {
        self.report.count(call, status)
    }

    /// `(total, by status)` the host recorded for a raw code.
    fn code(&self, code: u64) -> (u64, [u64; 17]) {
        self.report
            .calls
            .get(&code)
            .map_or((0, [0; 17]), |c| (c.total, c.by_status))
    }
}

fn status_name(raw: u64) -> &'static str {
    Status::from_raw(raw).map_or("undefined", |s| s.name())
}

/// Options of one probe VM.
struct Opts {
    vcpus: u32,
    params: Vec<u32>,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            vcpus: 1,
            params: Vec::new(),
        }
    }
}

/// Boots the probe for `scenario` and runs it to its end (or the deadline).
fn boot(scenario: u32, opts: Opts) -> Run {
    let config = HostConfig {
        vcpus: opts.vcpus,
        console: ConsoleSink::Discard,
        strict: true,
        ..HostConfig::default()
    };
    let run = RunConfig {
        host: config,
        vm: VmConfig {
            vcpus: opts.vcpus,
            mem_bytes: MEM,
            ..VmConfig::default()
        },
        timeout: Some(DEADLINE),
    };
    let mut ports = None;
    let outcome = runner::run_with(pvabi_guest_images::probe(), run, |bus, dispatcher| {
        let probe = Arc::new(ProbePorts {
            ctl: dispatcher.machine().ctl().clone(),
            scenario,
            params: Mutex::new(opts.params.clone().into()),
            probes: Mutex::new(Vec::new()),
            console: Mutex::new(Vec::new()),
        });
        for port in [PORT_REPORT, PORT_CONSOLE, PORT_SCENARIO, PORT_PARAM] {
            bus.attach(port..=port, probe.clone());
        }
        ports = Some(probe);
    })
    .expect("the probe VM runs");
    let ports = ports.expect("the devices were added");
    let probes = ports.probes.lock().unwrap().clone();
    let console = String::from_utf8_lossy(&ports.console.lock().unwrap()).into_owned();
    Run {
        scenario,
        end: outcome.end,
        probes,
        report: outcome.report,
        console,
        elapsed: outcome.wall,
    }
}

/// Skips (loudly) without KVM; otherwise boots the scenario.
macro_rules! probe_vm {
    ($test:literal, $scenario:expr) => {
        probe_vm!($test, $scenario, Opts::default())
    };
    ($test:literal, $scenario:expr, $opts:expr) => {{
        if !kvm_or_skip($test) {
            return;
        }
        boot($scenario, $opts)
    }};
}

// ---------------------------------------------------------------------------------------

#[test]
fn hostile_unknown_call_codes() {
    let run = probe_vm!("hostile_unknown_call_codes", S_UNKNOWN);
    run.assert_alive();
    let unknown = [
        ("unknown_base_0x0006", 0x0006u64),
        ("unknown_console_0x0106", 0x0106),
        ("unknown_family_0x0800", 0x0800),
        ("unknown_0x07ff", 0x07ff),
        ("unknown_0xffff", 0xffff),
        ("unknown_0xffffffff", 0xffff_ffff),
        ("get_spec_version_with_bit_32", 1 << 32),
        ("console_write_regs_with_bit_63", (1 << 63) | 0x0100),
        ("all_ones", u64::MAX),
    ];
    for (name, code) in unknown {
        run.expect(name, Status::NotSupported);
        // The host recorded the raw code, as NOT_SUPPORTED, once.
        let (total, by) = run.code(code);
        assert_eq!(
            (total, by[Status::NotSupported as usize]),
            (1, 1),
            "case `{name}`: the host's record of code {code:#x}\n{}",
            run.dump()
        );
    }
    // Codes with bits 63:32 set were not taken for the call in the low bits.
    assert_eq!(
        run.report.total(Call::GetSpecVersion),
        1,
        "only `alive`\n{}",
        run.dump()
    );
    assert_eq!(
        run.report.total(Call::ConsoleWriteRegs),
        0,
        "{}",
        run.dump()
    );
    for name in ["probe_call_unknown_family", "probe_call_bit_32"] {
        let p = run.expect(name, Status::Success);
        assert_eq!(p.r0, 0, "case `{name}`: PROBE_CALL says ABSENT");
    }
    run.expect_all(
        &[
            "after_unknown_console_0x0107",
            "after_console_write_regs_with_bit_32",
        ],
        Status::NotSupported,
    );
    assert!(run.report.console.is_empty(), "{}", run.dump());
}

#[test]
fn hostile_call_before_negotiate() {
    let run = probe_vm!("hostile_call_before_negotiate", S_BEFORE_NEGOTIATE);
    run.assert_alive();
    let cases = [
        ("console_write_regs", Call::ConsoleWriteRegs),
        ("console_write", Call::ConsoleWrite),
        ("time_monotonic", Call::TimeMonotonic),
        ("system_shutdown", Call::SystemShutdown),
        ("system_reboot", Call::SystemReboot),
        ("system_crash", Call::SystemCrash),
        ("multicall", Call::Multicall),
        ("vcpu_stop", Call::VcpuStop),
        ("ring_enter", Call::RingEnter),
        ("defer_flush", Call::DeferFlush),
        ("mem_flush_tlb_all", Call::MemFlushTlbAll),
    ];
    for (name, call) in cases {
        run.expect(name, Status::NotNegotiated);
        assert_eq!(
            run.count(call, Status::NotNegotiated),
            1,
            "case `{name}`: the host's record\n{}",
            run.dump()
        );
    }
    // Base calls work before NEGOTIATE and show that nothing was negotiated.
    let v = run.expect("get_spec_version", Status::Success);
    assert_ne!(v.r0, 0, "highest version");
    assert_eq!(
        v.extra, 0,
        "GET_SPEC_VERSION r2 (negotiated) is 0 before NEGOTIATE"
    );
    assert_eq!(run.expect("probe_features", Status::Success).r1, 0);
    let p = run.expect("probe_call_console", Status::Success);
    assert_eq!(
        (p.r0, p.r1),
        (1, Features::CONSOLE.bits()),
        "AVAILABLE, CONSOLE"
    );
    run.expect("negotiate", Status::Success);
    run.expect("console_after", Status::Success);
    // The refused calls had no effect: only the console write after NEGOTIATE reached the
    // console, and the refused shutdown, reboot, crash and stop did not end anything.
    assert_eq!(run.report.console_text(), "ok\n", "{}", run.dump());
    assert_eq!(run.report.tlb_flush_count, 0);
    assert!(run.report.vcpu_stops.is_empty());
    assert_eq!(run.count(Call::SystemShutdown, Status::Success), 1);
}

#[test]
fn hostile_call_of_family_not_granted() {
    let run = probe_vm!("hostile_call_of_family_not_granted", S_NOT_GRANTED);
    run.assert_alive();
    let granted = Features::CONSOLE | Features::SYSTEM;
    assert_eq!(run.expect("negotiate", Status::Success).r1, granted.bits());
    let cases = [
        ("time_monotonic", Call::TimeMonotonic),
        ("time_set_page", Call::TimeSetPage),
        ("events_send", Call::EventsSend),
        ("multicall", Call::Multicall),
        ("defer_flush", Call::DeferFlush),
        ("ring_setup", Call::RingSetup),
        ("mem_flush_tlb_all", Call::MemFlushTlbAll),
        ("mem_update_pte", Call::MemUpdatePte),
        ("vcpu_info", Call::VcpuInfo),
    ];
    for (name, call) in cases {
        run.expect(name, Status::NotGranted);
        assert_eq!(
            run.count(call, Status::NotGranted),
            1,
            "case `{name}`\n{}",
            run.dump()
        );
    }
    let p = run.expect("probe_call_time", Status::Success);
    assert_eq!(
        (p.r0, p.r1),
        (1, Features::TIME.bits()),
        "AVAILABLE (not granted), TIME"
    );
    run.expect("console_after", Status::Success);
    assert_eq!(run.report.negotiated.map(|n| n.1), Some(granted));
    assert_eq!(
        (run.report.tlb_flush_count, run.report.pte_write_count),
        (0, 0)
    );
    assert_eq!(run.report.time_page_updates, 0);
}

#[test]
fn hostile_reserved_bits_in_registers() {
    let run = probe_vm!("hostile_reserved_bits_in_registers", S_RESERVED_REGS);
    run.assert_alive();
    run.expect_all(
        &[
            "negotiate_flags",
            "negotiate_requested_bit_32",
            "shutdown_code_bit_32",
            "console_write_regs_len_33",
            "console_write_len_4097",
            "multicall_flags_bit_1",
            "multicall_count_0",
            "multicall_count_33",
            "multicall_start_after_count",
            "flush_tlb_range_unaligned",
            "flush_tlb_range_0_pages",
            "events_set_mask_bit_63",
            "events_set_queue_vector_31",
            "events_set_queue_vector_256",
            "vcpu_kick_index_1_of_1",
            "vcpu_kick_index_bit_32",
            "update_pte_level_0",
            "update_pte_level_5",
            "defer_set_queue_flags",
        ],
        Status::InvalidParameter,
    );
    // The refused NEGOTIATEs did not lock anything.
    run.expect("negotiate", Status::Success);
    run.expect("time_set_page_after_bad_calls", Status::Success);
    // Registers a call does not define are not read; bytes beyond `length` are ignored.
    run.expect("get_spec_version_garbage_args", Status::Success);
    let p = run.expect("console_write_regs_garbage_unused", Status::Success);
    assert_eq!(p.r0, 2, "written");
    assert_eq!(run.report.console_text(), "ok", "{}", run.dump());
    assert_eq!(run.count(Call::Negotiate, Status::InvalidParameter), 2);
    assert_eq!(run.count(Call::Negotiate, Status::Success), 1);
    assert_eq!(run.count(Call::SystemShutdown, Status::InvalidParameter), 1);
    assert_eq!(run.count(Call::Multicall, Status::InvalidParameter), 4);
    assert_eq!(
        (
            run.report.tlb_flush_count,
            run.report.pte_write_count,
            run.report.kicks,
            run.report.multicall_entries
        ),
        (0, 0, 0, 0),
        "{}",
        run.dump()
    );
}

#[test]
fn hostile_reserved_fields_in_blocks() {
    let run = probe_vm!(
        "hostile_reserved_fields_in_blocks",
        S_RESERVED_BLOCKS,
        Opts {
            vcpus: 2,
            ..Opts::default()
        }
    );
    run.assert_alive();
    run.expect_all(
        &[
            "vcpu_start_flags",
            "vcpu_start_reserved",
            "ring_setup_reserved",
            "ring_setup_mode_2",
            "ring_setup_flags",
            "ring_setup_same_pages",
            "ring_setup_page_unaligned",
        ],
        Status::InvalidParameter,
    );
    // None of the refused RING_SETUPs registered a ring.
    run.expect("ring_enter_after_bad_setups", Status::InvalidState);
    assert!(run.report.vcpu_starts.is_empty(), "{}", run.dump());
    // MULTICALL entries with reserved fields set fail by themselves.
    let m = run.expect("multicall_reserved_entries", Status::Success);
    assert_eq!((m.r0, m.r1), (3, 3), "next, processed");
    assert_eq!(
        run.get("mc_entry_flags").st,
        Status::InvalidParameter.raw(),
        "MulticallEntry.flags\n{}",
        run.dump()
    );
    assert_eq!(
        run.get("mc_entry_reserved").st,
        Status::InvalidParameter.raw(),
        "MulticallEntry.reserved\n{}",
        run.dump()
    );
    assert_eq!(run.get("mc_entry_valid").st, 0, "{}", run.dump());
    assert_eq!(run.report.console_text(), "c", "only the valid entry wrote");
    // A deferred entry with flags set fails; the valid one after it runs.
    run.expect("defer_set_queue", Status::Success);
    let f = run.expect("defer_flush", Status::Success);
    assert_eq!((f.r0, f.r1), (2, 1), "processed, failed");
    let h = run.get("defer_header");
    assert_eq!(
        (h.st, h.r0, h.r1),
        (Status::InvalidParameter.raw(), 0, 1),
        "first_error_status, first_error_index, error_count\n{}",
        run.dump()
    );
    assert_eq!(run.count(Call::TimeSetTimer, Status::Success), 1);
    // A submission with flags set completes with INVALID_PARAMETER and its user_data.
    run.expect("ring_setup", Status::Success);
    assert_eq!(run.expect("ring_enter", Status::Success).r0, 1);
    let c = run.get("cqe_flags");
    assert_eq!(
        (c.st, c.r0),
        (Status::InvalidParameter.raw(), 0x77),
        "{}",
        run.dump()
    );
    assert_eq!(
        (
            run.report.multicall_entries,
            run.report.deferred_drained,
            run.report.deferred_failed,
            run.report.ring_submissions,
            run.report.ring_failed
        ),
        (3, 2, 1, 1, 1),
        "{}",
        run.dump()
    );
}

#[test]
fn hostile_vcpu_start_with_bad_state() {
    let run = probe_vm!(
        "hostile_vcpu_start_with_bad_state",
        S_VCPU_START_STATE,
        Opts {
            vcpus: 2,
            ..Opts::default()
        }
    );
    run.assert_alive();
    run.expect_all(
        &[
            "rip_not_canonical",
            "rsp_not_canonical",
            "cr3_reserved_bit_62",
        ],
        Status::InvalidParameter,
    );
    run.expect("start_valid", Status::Success);
    let ap = run.get("ap_ran");
    assert_eq!((ap.st, ap.r0), (1, 0xA9), "vCPU 1 ran\n{}", run.dump());
    run.expect("start_boot_vcpu", Status::InvalidState);
    assert_eq!(
        run.report.vcpu_starts.len(),
        1,
        "only the valid start\n{}",
        run.dump()
    );
    assert_eq!(run.report.vcpu_stops, vec![1]);
}

#[test]
fn hostile_block_outside_guest_ram() {
    let run = probe_vm!("hostile_block_outside_guest_ram", S_OUTSIDE_RAM);
    run.assert_alive();
    run.expect_all(
        &[
            "console_at_ram_end",
            "console_above_ram_mapped",
            "console_at_4_gib",
            "console_top_of_u64",
            "console_u64_max_1_byte",
            "vcpu_start_state_outside",
            "update_pte_top_of_u64",
            "update_pte_at_ram_end",
            "time_set_page_at_ram_end",
            "time_set_page_top_page",
            "events_set_queue_outside",
            "defer_set_queue_outside",
            "multicall_outside",
            "multicall_top_of_u64",
            "ring_setup_sq_outside",
            "ring_setup_cq_top_page",
            "mem_share_straddles_ram_end",
            "mem_unshare_outside",
            "balloon_release_pfn_at_ram_end",
            "balloon_release_pfn_u64_max",
            "balloon_reclaim_pfn_huge",
            "crash_message_outside",
        ],
        Status::InvalidAddress,
    );
    // A block that wraps around the address space, or straddles the end of RAM, crosses a
    // page first (step 7 before step 8): RAM always ends at a page boundary.
    run.expect_all(
        &["console_u64_max_2_bytes_wraps", "console_straddles_ram_end"],
        Status::CrossesPage,
    );
    // The last bytes of RAM are RAM; an empty block is never outside.
    run.expect("console_last_16_bytes_of_ram", Status::Success);
    run.expect("console_zero_length_outside", Status::Success);
    assert_eq!(
        run.report.console_text(),
        "LAST-16-BYTES-OK",
        "{}",
        run.dump()
    );
    let r = &run.report;
    assert_eq!(
        (
            r.pte_write_count,
            r.time_page_updates,
            r.balloon_released,
            r.balloon_reclaimed,
            r.multicall_entries
        ),
        (0, 0, 0, 0, 0),
        "{}",
        run.dump()
    );
    assert!(r.shared_ranges.is_empty() && r.vcpu_starts.is_empty());
    assert_eq!(run.count(Call::SystemCrash, Status::InvalidAddress), 1);
}

#[test]
fn hostile_misaligned_blocks() {
    let run = probe_vm!("hostile_misaligned_blocks", S_MISALIGNED);
    run.assert_alive();
    run.expect_all(
        &[
            "vcpu_start_state_plus_4",
            "multicall_entries_plus_4",
            "time_set_page_plus_8",
            "events_set_queue_plus_1",
            "defer_set_queue_half_page",
            "update_pte_plus_4",
            "ring_setup_block_plus_4",
            "balloon_list_plus_4",
        ],
        Status::Misaligned,
    );
    // The ring pages are fields of the block, checked at step 10.
    run.expect("ring_setup_sq_page_plus_8", Status::InvalidParameter);
    // Nothing became host-owned.
    run.expect("console_on_time_page", Status::Success);
    run.expect("console_on_deferred_page", Status::Success);
    assert_eq!(run.report.console_text(), "free");
    assert_eq!(
        (run.report.pte_write_count, run.report.time_page_updates),
        (0, 0)
    );
}

#[test]
fn hostile_blocks_crossing_a_page() {
    let run = probe_vm!("hostile_blocks_crossing_a_page", S_CROSSES_PAGE);
    run.assert_alive();
    run.expect_all(
        &[
            "console_crosses",
            "console_full_page_plus_1",
            "multicall_crosses",
            "vcpu_start_state_crosses",
            "ring_setup_block_crosses",
            "crash_message_crosses",
            "balloon_list_crosses",
        ],
        Status::CrossesPage,
    );
    assert_eq!(
        run.expect("console_full_page", Status::Success).r0,
        4096,
        "a whole page is one page"
    );
    run.expect("console_page_tail", Status::Success);
    assert_eq!(run.report.console_bytes, 4096 + 8, "{}", run.dump());
    assert_eq!(run.report.multicall_entries, 0);
    assert_eq!(run.count(Call::SystemCrash, Status::CrossesPage), 1);
}

#[test]
fn hostile_blocks_overlapping_host_owned_pages() {
    let run = probe_vm!("hostile_blocks_overlapping_host_owned_pages", S_HOST_OWNED);
    run.assert_alive();
    run.expect_all(
        &[
            "time_set_page",
            "events_set_queue",
            "defer_set_queue",
            "ring_setup",
        ],
        Status::Success,
    );
    run.expect_all(
        &[
            "console_in_time_page",
            "console_in_event_queue",
            "console_in_deferred_queue",
            "console_in_submission_ring",
            "console_in_completion_ring",
            "multicall_in_deferred_queue",
            "vcpu_start_state_in_time_page",
            "update_pte_in_event_queue",
            "ring_setup_block_in_completion_ring",
            "balloon_list_in_submission_ring",
            "crash_message_in_time_page",
            "events_set_queue_on_time_page",
            "time_set_page_on_deferred_queue",
            "time_set_page_again",
            "defer_set_queue_on_completion_ring",
            // ACCESS_DENIED (9) beats INVALID_STATE (13, the vCPU already has rings).
            "ring_setup_sq_on_time_page",
            "mem_share_over_event_queue",
            "balloon_release_time_page",
        ],
        Status::AccessDenied,
    );
    // Once unregistered, the page is the guest's again.
    run.expect("time_unset_page", Status::Success);
    run.expect("console_in_released_time_page", Status::Success);
    assert_eq!(run.report.console_text(), "RELEASED", "{}", run.dump());
    let r = &run.report;
    assert_eq!(
        (r.pte_write_count, r.balloon_released, r.multicall_entries),
        (0, 0, 0),
        "{}",
        run.dump()
    );
    assert!(r.shared_ranges.is_empty() && r.vcpu_starts.is_empty());
}

#[test]
fn hostile_precedence_of_several_errors() {
    let run = probe_vm!("hostile_precedence_of_several_errors", S_PRECEDENCE);
    run.assert_alive();
    let cases: &[(&str, Status)] = &[
        // step 1 before everything
        ("unknown_code_with_bad_args", Status::NotSupported),
        // step 2 before 5 and 6
        ("multicall_before_negotiate_bad_args", Status::NotNegotiated),
        // step 5 before step 11
        ("negotiate_flags_and_bad_major", Status::InvalidParameter),
        // step 11: the lowest status wins
        (
            "negotiate_bad_major_and_feature",
            Status::VersionUnsupported,
        ),
        ("negotiate_minor_and_feature", Status::VersionUnsupported),
        ("negotiate", Status::Success),
        // step 3 before 6
        ("not_granted_and_misaligned", Status::NotGranted),
        ("multicall", Status::Success),
        // step 5 before 6, 7, 8
        ("bad_length_and_outside", Status::InvalidParameter),
        ("bad_index_and_misaligned", Status::InvalidParameter),
        ("bad_count_and_crossing", Status::InvalidParameter),
        // 6 before 7 before 8 before 9
        ("misaligned_and_outside", Status::Misaligned),
        ("misaligned_and_crossing", Status::Misaligned),
        ("crossing_and_outside", Status::CrossesPage),
        ("defer_set_queue", Status::Success),
        ("crossing_into_host_owned", Status::CrossesPage),
        ("misaligned_page_outside", Status::Misaligned),
        // 9 before 10 before 11
        ("host_owned_and_bad_contents", Status::AccessDenied),
        ("bad_contents_and_running_target", Status::InvalidParameter),
        ("running_target", Status::InvalidState),
        ("ring_setup_reserved_and_outside", Status::InvalidParameter),
        // step 11: INVALID_ADDRESS (8) before ACCESS_DENIED (9), before INVALID_STATE (13)
        ("ring_setup_outside_and_host_owned", Status::InvalidAddress),
        ("balloon_host_owned_and_outside", Status::InvalidAddress),
        // step 10 (a duplicate PFN) before step 11
        ("balloon_duplicate_and_host_owned", Status::InvalidParameter),
        ("reclaim_not_released_and_outside", Status::InvalidAddress),
        // NEGOTIATE after NEGOTIATE: LOCKED (12) is the highest of its step-11 statuses
        ("negotiate_again_bad_major", Status::VersionUnsupported),
        ("negotiate_again_bad_feature", Status::FeatureUnavailable),
        ("negotiate_again_flags", Status::InvalidParameter),
        ("negotiate_again_valid", Status::Locked),
    ];
    for (name, status) in cases {
        run.expect(name, *status);
    }
    // Entries of a batch go through the same order in the batch context.
    let entries: &[(&str, Status)] = &[
        // step 4 (not batchable) before step 5
        ("entry_not_batchable_and_bad_flags", Status::NotAllowedHere),
        // step 3 (not granted) before step 4
        ("entry_not_granted_and_not_batchable", Status::NotGranted),
        ("entry_bad_length", Status::InvalidParameter),
        ("entry_not_batchable_and_bad_index", Status::NotAllowedHere),
        ("entry_unknown", Status::NotSupported),
    ];
    for (name, status) in entries {
        let p = run.get(name);
        assert_eq!(
            p.st,
            status.raw(),
            "MULTICALL entry `{name}`: status {:#x} ({}), the spec says {status}\n{}",
            p.st,
            status_name(p.st),
            run.dump()
        );
    }
    let granted = run.report.negotiated.map(|n| n.1).unwrap();
    assert!(!granted.contains(Features::TIME));
    assert_eq!(run.count(Call::Negotiate, Status::Success), 1);
    assert_eq!(run.count(Call::Negotiate, Status::Locked), 1);
    assert_eq!(
        (run.report.balloon_released, run.report.balloon_reclaimed),
        (0, 0)
    );
    assert!(run.report.vcpu_starts.is_empty());
}

#[test]
fn hostile_nested_multicall() {
    let run = probe_vm!("hostile_nested_multicall", S_NESTED_MULTICALL);
    run.assert_alive();
    let m = run.expect("multicall", Status::Success);
    assert_eq!((m.r0, m.r1), (7, 7), "next, processed");
    let entries: &[(&str, Status)] = &[
        ("entry_get_spec_version", Status::Success),
        ("entry_nested_multicall", Status::NotAllowedHere),
        ("entry_console", Status::Success),
        ("entry_shutdown", Status::NotAllowedHere),
        ("entry_negotiate", Status::NotAllowedHere),
        ("entry_defer_flush", Status::NotAllowedHere),
        ("entry_vcpu_info", Status::Success),
    ];
    for (name, status) in entries {
        let p = run.get(name);
        assert_eq!(
            p.st,
            status.raw(),
            "entry `{name}`: {:#x} ({})\n{}",
            p.st,
            status_name(p.st),
            run.dump()
        );
    }
    assert_eq!(
        (run.get("entry_vcpu_info").r0, run.get("entry_vcpu_info").r1),
        (0, 1)
    );
    // The nested batch never ran: its entry's status is still the probe's sentinel.
    assert_eq!(run.get("inner_entry_untouched").st, 0xEEEE_EEEE);
    // STOP_ON_ERROR stops after the nested MULTICALL; the next entry is untouched.
    let s = run.expect("multicall_stop_on_error", Status::Success);
    assert_eq!((s.r0, s.r1), (2, 2), "next, processed");
    assert_eq!(
        run.get("stop_entry_nested_multicall").st,
        Status::NotAllowedHere.raw()
    );
    assert_eq!(run.get("stop_entry_after_stop").st, 0xEEEE_EEEE);
    // Resuming at 2 runs the console entry and stops at the shutdown entry.
    let r = run.expect("multicall_resume_at_2", Status::Success);
    assert_eq!((r.r0, r.r1), (4, 2), "next, processed");
    assert_eq!(run.get("resume_entry_before_start").st, 0xEEEE_EEEE);
    assert_eq!(
        run.get("resume_entry_shutdown").st,
        Status::NotAllowedHere.raw()
    );
    // What the host recorded: the inner entry never ran, no batch ended the VM.
    assert_eq!(run.report.console_text(), "OUTEROUTER", "{}", run.dump());
    assert_eq!(run.report.multicall_entries, 7 + 2 + 2);
    assert_eq!(run.count(Call::Multicall, Status::Success), 3);
    assert_eq!(run.count(Call::Multicall, Status::NotAllowedHere), 2);
    assert_eq!(run.count(Call::SystemShutdown, Status::NotAllowedHere), 2);
    assert_eq!(run.count(Call::Negotiate, Status::NotAllowedHere), 1);
    assert_eq!(run.count(Call::DeferFlush, Status::NotAllowedHere), 1);
}

#[test]
fn hostile_non_deferrable_calls_in_deferred_queue() {
    let run = probe_vm!(
        "hostile_non_deferrable_calls_in_deferred_queue",
        S_DEFER_NOT_DEFERRABLE
    );
    run.assert_alive();
    run.expect("defer_set_queue", Status::Success);
    let f = run.expect("defer_flush", Status::Success);
    assert_eq!((f.r0, f.r1), (8, 7), "processed, failed\n{}", run.dump());
    let h = run.get("header_after_flush");
    assert_eq!(
        (h.st, h.r0, h.r1, h.extra),
        (Status::NotAllowedHere.raw(), 0, 7, 8),
        "first_error_status, first_error_index, error_count, head\n{}",
        run.dump()
    );
    // A sync-point call drains the queue even though its own block is then refused.
    run.expect("sync_point_with_bad_block", Status::AccessDenied);
    let h = run.get("header_after_sync_point");
    assert_eq!(
        (h.r1, h.extra),
        (8, 9),
        "error_count, head after the drain\n{}",
        run.dump()
    );
    // A tail far beyond head is malformed (BATCH-013, DEFER-012): nothing runs, every index
    // counts as failed, then head = tail.
    let m = run.expect("defer_flush_malformed_tail", Status::Success);
    assert_eq!(
        (m.r0, m.r1),
        (0, 0),
        "a malformed queue runs nothing\n{}",
        run.dump()
    );
    let h = run.get("header_after_malformed");
    assert_eq!(h.extra, 1009, "head = tail\n{}", run.dump());
    assert_eq!(
        h.r1,
        8 + 1000,
        "error_count grows by the occupancy\n{}",
        run.dump()
    );
    let e = run.expect("defer_flush_empty", Status::Success);
    assert_eq!((e.r0, e.r1), (0, 0));
    // What the host recorded: each refused entry as NOT_ALLOWED_HERE, none took effect.
    assert!(
        run.count(Call::SystemShutdown, Status::NotAllowedHere) >= 1
            && run.count(Call::ConsoleWriteRegs, Status::NotAllowedHere) >= 1
            && run.count(Call::Negotiate, Status::NotAllowedHere) >= 1
            && run.count(Call::VcpuStop, Status::NotAllowedHere) >= 1
            && run.count(Call::SystemReboot, Status::NotAllowedHere) >= 1
            && run.count(Call::Multicall, Status::NotAllowedHere) >= 1,
        "{}",
        run.dump()
    );
    assert!(run.count(Call::EventsSetMask, Status::InvalidParameter) >= 1);
    assert!(run.count(Call::TimeSetTimer, Status::Success) >= 1);
    assert!(run.code(0x0999).1[Status::NotSupported as usize] >= 1);
    assert!(!run.report.console_text().contains("BAD!"));
    assert!(run.report.vcpu_stops.is_empty());
    assert_eq!(run.report.deferred_drained, 8 + 1, "{}", run.dump());
    assert_eq!(run.report.multicall_entries, 0);
}

#[test]
fn hostile_garbage_ring() {
    let run = probe_vm!("hostile_garbage_ring", S_GARBAGE_RING);
    run.assert_alive();
    run.expect("ring_enter_without_ring", Status::InvalidState);
    run.expect("ring_setup", Status::Success);
    // tail - head > capacity: nothing runs, head jumps to tail, `dropped` grows by the
    // difference (RING-005).
    assert_eq!(
        run.expect("ring_enter_malformed_tail", Status::Success).r0,
        0
    );
    let sq = run.get("sq_after_malformed");
    assert_eq!(
        (sq.st, sq.r0),
        (1000, 1000),
        "SQ dropped, head after a tail 1000 ahead\n{}",
        run.dump()
    );
    assert_eq!(run.expect("ring_enter_garbage", Status::Success).r0, 6);
    let cqes: &[(&str, Status, u64)] = &[
        ("cqe_unknown", Status::NotSupported, 0xA0),
        ("cqe_flags", Status::InvalidParameter, 0xA1),
        ("cqe_negotiate", Status::NotAllowedHere, 0xA2),
        ("cqe_shutdown", Status::NotAllowedHere, 0xA3),
        ("cqe_multicall", Status::NotAllowedHere, 0xA4),
        ("cqe_valid", Status::Success, 0xA5),
    ];
    for (name, status, user_data) in cqes {
        let c = run.get(name);
        assert_eq!(
            (c.st, c.r0),
            (status.raw(), *user_data),
            "completion `{name}`: status {:#x} ({}), user_data {:#x}\n{}",
            c.st,
            status_name(c.st),
            c.r0,
            run.dump()
        );
    }
    // A CQ head ahead of its tail leaves no room: nothing consumed, nothing overwritten.
    assert_eq!(
        run.expect("ring_enter_cq_head_ahead", Status::Success).r0,
        0
    );
    assert_eq!(
        run.expect("ring_enter_cq_head_fixed", Status::Success).r0,
        1
    );
    // Notifications of another width or for a vCPU without rings are ignored.
    assert_eq!(
        run.get("sq_head_after_bad_notifies").st,
        1007,
        "{}",
        run.dump()
    );
    assert_eq!(run.get("sq_head_after_notify").st, 1008, "{}", run.dump());
    // A vCPU that has rings cannot set up another pair (RING-013).
    run.expect("ring_setup_again", Status::InvalidState);
    run.expect("ring_unregister", Status::Success);
    run.expect("ring_enter_after_unregister", Status::InvalidState);
    let r = &run.report;
    assert_eq!(
        (
            r.ring_malformed,
            r.ring_submissions,
            r.ring_failed,
            r.ring_notifies
        ),
        (1, 8, 5, 3),
        "malformed, submissions, failed, 32-bit notifies\n{}",
        run.dump()
    );
    assert_eq!(run.count(Call::SystemShutdown, Status::NotAllowedHere), 1);
    assert_eq!(run.count(Call::Multicall, Status::NotAllowedHere), 1);
    assert_eq!(run.report.multicall_entries, 0);
}

#[test]
fn hostile_negotiate_twice() {
    let run = probe_vm!("hostile_negotiate_twice", S_NEGOTIATE_TWICE);
    run.assert_alive();
    let cs = (Features::CONSOLE | Features::SYSTEM).bits();
    assert_eq!(run.expect("negotiate_first", Status::Success).r1, cs);
    run.expect_all(
        &["negotiate_more_features", "negotiate_same_again"],
        Status::Locked,
    );
    assert_eq!(
        run.expect("probe_features", Status::Success).r1,
        cs,
        "the grant is unchanged"
    );
    run.expect("time_after_locked", Status::NotGranted);
    assert_eq!(
        run.report.negotiated.map(|n| n.1.bits()),
        Some(cs),
        "{}",
        run.dump()
    );
    assert_eq!(run.count(Call::Negotiate, Status::Success), 1);
    assert_eq!(run.count(Call::Negotiate, Status::Locked), 2);
}

#[test]
fn hostile_negotiate_unknown_major() {
    let run = probe_vm!("hostile_negotiate_unknown_major", S_NEGOTIATE_VERSION);
    run.assert_alive();
    run.expect_all(
        &["major_0", "major_2", "major_0xffff", "min_minor_0xffff"],
        Status::VersionUnsupported,
    );
    assert_eq!(
        run.expect("get_spec_version", Status::Success).extra,
        0,
        "still not negotiated"
    );
    run.expect("negotiate_valid", Status::Success);
    assert_eq!(run.count(Call::Negotiate, Status::VersionUnsupported), 4);
    assert_eq!(run.count(Call::Negotiate, Status::Success), 1);
}

#[test]
fn hostile_negotiate_unknown_required_feature() {
    let run = probe_vm!(
        "hostile_negotiate_unknown_required_feature",
        S_NEGOTIATE_FEATURE
    );
    run.assert_alive();
    run.expect_all(
        &["required_bit_40", "required_bit_63", "required_all_ones"],
        Status::FeatureUnavailable,
    );
    let offered = run.expect("probe_features_before", Status::Success).r0;
    assert_eq!(run.expect("probe_features_before", Status::Success).r1, 0);
    // Unknown optional bits are ignored (BASE-013): granted = required | (optional & offered).
    let n = run.expect("optional_unknown_ignored", Status::Success);
    assert_eq!(n.r1, offered, "granted = offered\n{}", run.dump());
    assert_eq!(
        run.expect("probe_features_after", Status::Success).r1,
        offered
    );
    assert_eq!(run.report.negotiated.map(|n| n.1.bits()), Some(offered));
    assert_eq!(run.count(Call::Negotiate, Status::FeatureUnavailable), 3);
}

#[test]
fn hostile_doorbell_wrong_width() {
    let run = probe_vm!("hostile_doorbell_wrong_width", S_DOORBELL_WIDTH);
    run.assert_alive();
    for name in [
        "out8_shutdown",
        "out16_shutdown",
        "out8_get_spec_version",
        "out16_console",
    ] {
        // rax = NOT_SUPPORTED, every other register unchanged (CONV-008).
        let p = run.expect(name, Status::NotSupported);
        assert_eq!(
            (p.r0, p.r1, p.extra),
            (0x42, 0x1111, 0),
            "case `{name}`: rdi, r11, mask of changed registers\n{}",
            run.dump()
        );
    }
    // No call was performed for them: the refused SHUTDOWN (code 0x42) did not end the VM,
    // and the host recorded no call for those exits.
    assert_eq!(run.report.total(Call::SystemShutdown), 1, "{}", run.dump());
    assert_eq!(run.report.total(Call::GetSpecVersion), 1, "only `alive`");
    assert_eq!(run.report.total(Call::ConsoleWriteRegs), 0);
}

#[test]
fn hostile_doorbell_read_returns_all_ones() {
    let run = probe_vm!("hostile_doorbell_read_returns_all_ones", S_DOORBELL_WIDTH);
    run.assert_alive();
    // `in` from the doorbell completes with all bits set, as for a port no device claims
    // (CONV-009); `in al`/`in ax` keep the rest of rax, `in eax` zero-extends.
    let before = 0x1234_5678_9abc_def0u64;
    for (name, expected) in [
        ("in8_doorbell", (before & !0xff) | 0xff),
        ("in16_doorbell", (before & !0xffff) | 0xffff),
        ("in32_doorbell", 0xffff_ffff),
    ] {
        let p = run.get(name);
        assert_eq!(
            p.st,
            expected,
            "case `{name}`: rax after the read\n{}",
            run.dump()
        );
    }
}

#[test]
fn hostile_no_double_fetch_of_multicall_entries() {
    let run = probe_vm!(
        "hostile_no_double_fetch_of_multicall_entries",
        S_DOUBLE_FETCH,
        Opts {
            vcpus: 2,
            ..Opts::default()
        }
    );
    run.assert_alive();
    run.expect("vcpu_start", Status::Success);
    assert_eq!(run.get("flipper_running").st, 1, "{}", run.dump());
    let done = run.get("flipper_done");
    assert_eq!(done.st, 1, "{}", run.dump());
    let flips = done.r0;
    let statuses = run.get("race_entry_counts");
    let (guest_ok, guest_bad, guest_other, failed_calls) =
        (statuses.st, statuses.r0, statuses.r1, statuses.extra);
    let entries = 256 * 32;
    // Every entry was acted on as one consistent copy: a valid length (8) ran and wrote
    // exactly 8 bytes, an invalid one (200) was refused and wrote nothing. A host that checked
    // one read of the length and used another would write 200 bytes or refuse a valid entry.
    let ok = run.count(Call::ConsoleWriteRegs, Status::Success);
    let bad = run.count(Call::ConsoleWriteRegs, Status::InvalidParameter);
    assert_eq!(
        run.report.total(Call::ConsoleWriteRegs),
        ok + bad,
        "only SUCCESS or INVALID_PARAMETER\n{}",
        run.dump()
    );
    assert_eq!(ok + bad, entries, "{}", run.dump());
    assert_eq!(
        run.report.console_bytes,
        8 * ok,
        "8 bytes per successful entry"
    );
    let text = run.report.console_text();
    assert!(
        text.as_bytes().chunks(8).all(|c| c == b"ABCDEFGH"),
        "console holds whole 8-byte messages only"
    );
    // What the guest found in the entries agrees with what the host recorded.
    assert_eq!(
        (guest_ok, guest_bad, guest_other, failed_calls),
        (ok, bad, 0, 0),
        "guest view (ok, invalid, other, failed MULTICALLs) vs host\n{}",
        run.dump()
    );
    assert_eq!(run.report.multicall_entries, entries);
    assert_eq!(run.report.vcpu_stops, vec![1]);
    eprintln!(
        "hostile_no_double_fetch_of_multicall_entries: vCPU 1 flipped the entries {flips} \
         times; the host saw {ok} valid and {bad} invalid entries out of {entries}"
    );
    assert!(flips > 0, "vCPU 1 really ran");
}

#[test]
fn hostile_random_register_sweep() {
    const CALLS: u32 = 1000;
    let seed: u64 = std::env::var("PVABI_HOSTILE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_1234_abcd_0042);
    let run = probe_vm!(
        "hostile_random_register_sweep",
        S_SWEEP,
        Opts {
            vcpus: 1,
            params: vec![seed as u32, (seed >> 32) as u32, CALLS],
        }
    );
    eprintln!(
        "hostile_random_register_sweep: seed {seed:#x} (PVABI_HOSTILE_SEED), {CALLS} calls, {:?}",
        run.elapsed
    );
    run.assert_alive();
    let sweep: Vec<&Probe> = run.probes.iter().filter(|p| p.name == "sweep").collect();
    assert_eq!(sweep.len(), CALLS as usize, "{}", run.dump());
    let mut defined = 0;
    for p in &sweep {
        let code = p.r0;
        match Call::from_code(code) {
            // A code this version does not define is always NOT_SUPPORTED (CONV-002).
            None => assert_eq!(
                p.st,
                Status::NotSupported.raw(),
                "call #{} code {code:#x} a0 {:#x}: status {:#x}\n{}",
                p.extra,
                p.r1,
                p.st,
                run.dump()
            ),
            Some(_) => defined += 1,
        }
    }
    eprintln!("hostile_random_register_sweep: {defined} calls had a defined code");
    assert!(run.elapsed < DEADLINE);
    // The host recorded every call (plus batch entries it ran).
    let total: u64 = run.report.calls.values().map(|c| c.total).sum();
    assert!(total >= u64::from(CALLS), "{}", run.dump());
}

/// A user process of the guest (CPL3) rings the doorbell: the runtime's TSS I/O bitmap opens
/// every port to ring 3, as a guest kernel may. The host must not perform the call (CONV-013):
/// the reference host answers NOT_SUPPORTED, as for a doorbell access of the wrong width.
#[test]
fn hostile_call_from_cpl3_is_not_performed() {
    let run = probe_vm!("hostile_call_from_cpl3_is_not_performed", S_CPL3);
    run.assert_alive();
    run.expect_all(
        &["cpl3_console_write_regs", "cpl3_system_shutdown"],
        Status::NotSupported,
    );
    assert_eq!(
        run.report.total(Call::ConsoleWriteRegs),
        0,
        "no call from ring 3 was performed or recorded\n{}",
        run.dump()
    );
    assert!(run.report.console.is_empty(), "{}", run.dump());
    assert_eq!(
        run.report.total(Call::SystemShutdown),
        1,
        "only ring 0's shutdown\n{}",
        run.dump()
    );
}
