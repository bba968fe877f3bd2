//! The conformance engine behind `pvabi conform`: the catalogue of test images, running each
//! under the reference host, and tracing the results to the specification's requirements.
//!
//! A test is a guest image that reports over the verdict channel
//! ([`pvabi_conformance::channel`]); the engine only boots it and hands the console and the
//! VM's end to the channel's parser, so nothing here can turn a run without its verdict into
//! a PASS.

use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pvabi_conformance::channel::{self, ExpectedEnd, RunEnd, TestResult};
use pvabi_conformance::report::{self, Report, Requirement};
use pvabi_conformance::Verdict;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use pvabi_host::bus::{PortAccess, PortDevice};
use pvabi_host::dispatch::{CallRegs, ConsoleSink, HostConfig, Outcome};
use pvabi_host::runner::{self, RunConfig};
use pvabi_host::vm::{VmConfig, VmEnd};

/// One test of the suite.
#[derive(Clone, Copy, Debug)]
pub struct TestInfo {
    /// Its name (the one its BEGIN and END lines carry).
    pub name: &'static str,
    /// What it checks.
    pub what: &'static str,
    /// Its image.
    pub image: fn() -> &'static [u8],
    /// How many vCPUs its VM has (an external VMM gets it as `{vcpus}` in the template).
    pub vcpus: u32,
    /// How the reference host is set up for it, from the configuration the run serves
    /// (e.g. a MULTICALL budget of one entry per exit, so that every index is a preemption
    /// point). An external VMM runs the image as it is configured.
    pub host: fn(HostConfig) -> HostConfig,
}

/// The host configuration as the run serves it.
fn as_served(host: HostConfig) -> HostConfig {
    host
}

/// A host that preempts every MULTICALL and MULTICALL_PAGES after each entry (INCOMPLETE at
/// every index, and so at every page boundary of a page list).
fn preempt_every_entry(host: HostConfig) -> HostConfig {
    HostConfig {
        max_multicall: 1,
        max_multicall_pages: 1,
        ..host
    }
}

/// The served host acting as release 1.0 (its versions and features only; everything else,
/// an injected fault included, as served), for the checks that need a host older than the
/// newest minor: the calls of later minors are unknown to it (COMPAT-002).
fn acting_as_1_0(host: HostConfig) -> HostConfig {
    let v1_0 = HostConfig::acting_as(pvabi_abi::version::V1_0);
    HostConfig {
        lowest: v1_0.lowest,
        served: v1_0.served,
        features: v1_0.features,
        ..host
    }
}

/// A host that resets the VM on SYSTEM_REBOOT (at most twice: the reset test's guest reboots
/// once, and fails if it boots a third time).
fn reset_on_reboot(host: HostConfig) -> HostConfig {
    HostConfig {
        on_reboot: pvabi_host::dispatch::OnReboot::Reset { limit: 2 },
        ..host
    }
}

/// The served host serving 1.3 and the 2.0 preview (its versions and features only, as
/// `pvabi run --serve 1.3,2.0`), for the checks that bind only a host serving more than one
/// major (COMPAT-003).
fn serving_two_majors(host: HostConfig) -> HostConfig {
    use pvabi_abi::version::{V1_3, V2_0_PREVIEW};
    let both = HostConfig::serving(&[V1_3, V2_0_PREVIEW]);
    HostConfig {
        lowest: both.lowest,
        served: both.served,
        features: both.features,
        ..host
    }
}

/// A host that performs calls made at CPL3 (the reference host's `allow_user_mode_calls`,
/// which breaks PVABI-CONV-013 on purpose), so that only the mode of an access made at CPL3
/// in compatibility mode keeps it from being a call (PVABI-CONV-032).
fn performing_user_mode_calls(host: HostConfig) -> HostConfig {
    HostConfig {
        allow_user_mode_calls: true,
        ..host
    }
}

/// A host that performs, when a test guest asks over the verdict channel, the host events the
/// reference host can perform: a migration (the reference host cannot move the TSC on this
/// project's PVM machine, so it does not perform `tsc-offset`).
fn performing_host_events(host: HostConfig) -> HostConfig {
    HostConfig {
        host_events: vec![pvabi_host::dispatch::HostEvent::Migrate],
        ..host
    }
}

/// Every test, in the order they run.
pub const TESTS: &[TestInfo] = &[
    TestInfo {
        name: "base",
        what: "discovery (CPUID leaves) and the Base family: versions, identity, probing, NEGOTIATE and its refusals",
        image: pvabi_guest_images::conform_base,
        vcpus: 1,
        host: as_served,
    },
    TestInfo {
        name: "time",
        what: "the clocks and the shared time page: monotonic order, wall-clock range, page initialisation, seqlock, refresh, unregistering",
        image: pvabi_guest_images::conform_time,
        vcpus: 2,
        host: as_served,
    },
    TestInfo {
        name: "memory",
        what: "sharing, the balloon (release, reclaim, their refusals), MEM_UPDATE_PTE and the TLB flushes",
        image: pvabi_guest_images::conform_memory,
        vcpus: 1,
        host: as_served,
    },
    TestInfo {
        name: "multicall",
        what: "MULTICALL: per-entry status and results, entry checks, non-batchable entries, start, STOP_ON_ERROR, the one copy, resumption; MULTICALL_PAGES (1.3): three pages listed out of order, its page count and start, the list and each page checked in list order (misaligned, outside RAM, host-owned), no write outside statuses and results, the one copy of the list",
        image: pvabi_guest_images::conform_multicall,
        vcpus: 1,
        host: as_served,
    },
    TestInfo {
        name: "multicall-preempt",
        what: "the multicall and MULTICALL_PAGES checks under a host that preempts after every entry: INCOMPLETE and resumption at every index, across every page boundary of a page list",
        image: pvabi_guest_images::conform_multicall_preempt,
        vcpus: 1,
        host: preempt_every_entry,
    },
    TestInfo {
        name: "deferred",
        what: "the deferred queue: header, drain points (flush, sync-point calls, MULTICALL, DEFER_SET_QUEUE), order, failure records, the host's own head, a malformed tail, indices past 2^32",
        image: pvabi_guest_images::conform_deferred,
        vcpus: 1,
        host: as_served,
    },
    TestInfo {
        name: "ring",
        what: "the rings, doorbell mode (setup and refusals, RING_ENTER, the notify port, completions, back-pressure, corrupt and wrapping indices) and host-polled mode (the wake-up protocol, completion events)",
        image: pvabi_guest_images::conform_ring,
        vcpus: 1,
        host: as_served,
    },
    TestInfo {
        name: "events",
        what: "events: the queue header, posting, interrupt_pending (raised, coalesced, masked, unmasked), KICK and USER events, a full queue, corrupt indices, the host's own fields, re-registering, replacing, the wake latch",
        image: pvabi_guest_images::conform_events,
        vcpus: 1,
        host: as_served,
    },
    TestInfo {
        name: "vcpu",
        what: "vCPUs (two): INFO, YIELD, HALT with a timeout, KICK, STOP and START and their refusals, a started vCPU's fresh state, per-vCPU queues, events between vCPUs, KICK and SEND to a stopped vCPU",
        image: pvabi_guest_images::conform_vcpu,
        vcpus: 2,
        host: as_served,
    },
    TestInfo {
        name: "system",
        what: "console and system: the lengths written, bounds, a zero-length block, only length bytes of the registers emitted, SYSTEM_SHUTDOWN and SYSTEM_CRASH refusing bad arguments",
        image: pvabi_guest_images::conform_system,
        vcpus: 1,
        host: as_served,
    },
    TestInfo {
        name: "convention",
        what: "the calling convention register by register: results, preserved and undefined registers, widths, and the accesses that perform no call (other widths, reads, the ports above the doorbell, string output, CPL3, rax bits 63:32, unclaimed ports)",
        image: pvabi_guest_images::conform_convention,
        vcpus: 1,
        host: as_served,
    },
    TestInfo {
        name: "convention-compat-mode",
        what: "a doorbell write made in compatibility mode (ring-3 code in a 32-bit code segment) is answered with NOT_SUPPORTED and performs no call, under a reference host set to perform calls made at CPL3, which the same test's 64-bit ring-3 access of the same call shows",
        image: pvabi_guest_images::conform_convention_compat_mode,
        vcpus: 1,
        host: performing_user_mode_calls,
    },
    TestInfo {
        name: "status",
        what: "the precedence order with calls wrong in several ways at once (each step before the next, the lowest call-specific status, NEGOTIATE's order before and after the lock), and what a failed call leaves: no effect, no write, only defined statuses",
        image: pvabi_guest_images::conform_status,
        vcpus: 1,
        host: as_served,
    },
    TestInfo {
        name: "version",
        what: "versions, features and discovery across NEGOTIATE, over the whole call table: NOT_NEGOTIATED and NOT_GRANTED for every feature call, every defined call known, PROBE_CALL following the grant, the served majors, the offered features and the limits leaf, unknown optional bits, the Base calls after NEGOTIATE, CPUID leaves unchanged",
        image: pvabi_guest_images::conform_version,
        vcpus: 1,
        host: as_served,
    },
    TestInfo {
        name: "version-1.0",
        what: "the version test under a host acting as release 1.0: the calls of the later minors (1.1 to 1.3) unknown before and after NEGOTIATE, and the accepted version kept",
        image: pvabi_guest_images::conform_version_1_0,
        vcpus: 1,
        host: acting_as_1_0,
    },
    TestInfo {
        name: "timer",
        what: "TIME_FREQUENCY and TIME_MONOTONIC against the TSC, the one-shot timer (replace, disarm, never early, one event, waking HALT, promptness), the steal-time page, and a stopped vCPU's timer and steal-time page",
        image: pvabi_guest_images::conform_timer,
        vcpus: 2,
        host: as_served,
    },
    TestInfo {
        name: RESET_TEST,
        what: "a guest that survives its own SYSTEM_REBOOT: on its second boot, what a reset restores (NEGOTIATE unlocked, no host-owned page, other vCPUs stopped, deferred calls discarded, fresh per-vCPU state, the balloon and sharing forgotten, monotonic time going on) and what the old rings show: every submission the host consumed before the reboot completed with its effect, none consumed after it (the only end after which a guest can look at its rings)",
        image: pvabi_guest_images::conform_reset,
        vcpus: 2,
        host: reset_on_reboot,
    },
    TestInfo {
        name: "platform",
        what: "what a guest of the reference platform observes: guest RAM and its ends, the boot GDT, page tables and zeroed RAM, the entry control registers and MSRs, the boot registers, the APIC ID and no local APIC in CPUID",
        image: pvabi_guest_images::conform_platform,
        vcpus: 1,
        host: as_served,
    },
    TestInfo {
        name: "platform-fault",
        what: "an access outside guest RAM ends the VM: the guest announces the fault (EXPECT) and reads the first address past RAM; only a VM that then ends by a guest fault passes",
        image: pvabi_guest_images::conform_platform_fault,
        vcpus: 1,
        host: as_served,
    },
    TestInfo {
        name: "system-shutdown",
        what: "SYSTEM_SHUTDOWN ends the VM and the host reports its code, all 32 bits: the guest announces the end (EXPECT shutdown 0x5eed0007) and makes the call from vCPU 0 while vCPU 1 makes calls at CPL3; only a VM that then ends by SYSTEM_SHUTDOWN with exactly that code passes",
        image: pvabi_guest_images::conform_system_shutdown,
        vcpus: 2,
        host: as_served,
    },
    TestInfo {
        name: "system-crash",
        what: "SYSTEM_CRASH ends the VM and the host reports its message as a crash report: the guest announces the end (EXPECT crash <message>) and makes the call from vCPU 0 while vCPU 1 makes calls at CPL3; only a VM that then ends by SYSTEM_CRASH with exactly that message passes",
        image: pvabi_guest_images::conform_system_crash,
        vcpus: 2,
        host: as_served,
    },
    TestInfo {
        name: "compat-1.x",
        what: "under a host serving 1.3 and the 2.0 preview, a guest that negotiates major 1 sees the time page in the 1.x layout (its wall clock held to TIME_WALLCLOCK)",
        image: pvabi_guest_images::conform_compat_1,
        vcpus: 1,
        host: serving_two_majors,
    },
    TestInfo {
        name: "compat-2.0",
        what: "under a host serving 1.3 and the 2.0 preview, a guest that negotiates major 2 sees the time page in the 2.0 layout (its wall clock held to TIME_WALLCLOCK)",
        image: pvabi_guest_images::conform_compat_2,
        vcpus: 1,
        host: serving_two_majors,
    },
    TestInfo {
        name: "migrate",
        what: "host events asked for over the verdict channel (REQUEST tsc-offset, REQUEST migrate): the time page up to date right after each and kept current after the migration, the negotiated version, granted features, a granted and an ungranted call and NEGOTIATE's lock kept across the migration; an event the host does not perform leaves its checks N/A (PVABI-VER-013, and PVABI-TIME-010's clause about it). Not covered: PVABI-TIME-010's clause about a step of the host's wall clock, which no guest can ask for",
        image: pvabi_guest_images::conform_migrate,
        vcpus: 2,
        host: performing_host_events,
    },
    TestInfo {
        name: "image-below-min-addr",
        what: "an image whose loadable segments lie below IMAGE_MIN_ADDR (the platform-fault image moved to 0x1000) is refused and runs no instruction",
        image: image_below_min_addr,
        vcpus: 1,
        host: as_served,
    },
    TestInfo {
        name: "image-beyond-ram",
        what: "an image whose loadable segments lie beyond guest RAM (the platform-fault image moved up by MAX_MEM_BYTES, past any RAM the platform allows) is refused and runs no instruction",
        image: image_beyond_ram,
        vcpus: 1,
        host: as_served,
    },
];

/// The code the `system-shutdown` guest ends the VM with (guest-ref/bare/conform/src/sys_end.rs
/// `CODE`, announced in its EXPECT line; the reference run checks the two agree).
const SYSTEM_SHUTDOWN_CODE: u32 = 0x5eed_0007;

/// The name of the test whose guest reboots ([`TESTS`]).
pub const RESET_TEST: &str = "reset";

/// What the reset test's guest writes before its SYSTEM_REBOOT (a free-form console line).
const RESET_FIRST_BOOT: &str =
    "pvabi-conform reset guest: first boot set up, calling SYSTEM_REBOOT";

/// The reset test's result when the host ended the VM on the guest's SYSTEM_REBOOT instead of
/// resetting it (PVABI-SYS-003 allows either): the guest's first boot ran, asked for a reboot
/// and the VM ended (the reference host's `RunEnd::Reboot`, or an external VMM's exit status
/// 3 or 131, `pvabi run`'s for a reboot without and with `--exit-with-guest-code`; the first
/// boot writes no channel line and never shuts down). Then the test is a SKIP with one passing check of
/// SYS-003 and the fact `resets_on_reboot=0`, which a profile that claims resets turns into a
/// FAIL. Any other result is returned as it is.
fn ended_on_reboot(test: &TestInfo, console: &[u8], result: TestResult) -> TestResult {
    use pvabi_conformance::Check;
    // `pvabi run` exits 3 for a reboot, 131 (128 + 3) under --exit-with-guest-code.
    let ended = matches!(
        result.end,
        RunEnd::Reboot | RunEnd::Shutdown(3) | RunEnd::Shutdown(131)
    );
    let text = String::from_utf8_lossy(console);
    if test.name != RESET_TEST
        || result.verdict != Verdict::Crash
        || !ended
        || !text.contains(RESET_FIRST_BOOT)
        || text.contains(channel::PREFIX)
    {
        return result;
    }
    let reason = "the host ended the VM on SYSTEM_REBOOT instead of resetting it, which PVABI-SYS-003 allows: what a reset restores cannot be observed";
    TestResult {
        verdict: Verdict::Skip,
        checks: vec![
            Check::new(
                format!("{RESET_TEST}.the_host_ends_the_vm_on_reboot"),
                Verdict::Pass,
                &["PVABI-SYS-003"],
                None,
            ),
            Check::new(
                format!("{RESET_TEST}.what_a_reset_restores"),
                Verdict::Skip,
                &["PVABI-SYS-004"],
                Some(reason.to_owned()),
            ),
        ],
        reason: None,
        info: [("resets_on_reboot".to_owned(), "0".to_owned())].into(),
        ..result
    }
}

/// The checks the runner makes itself, from what it saw of a run rather than from a guest's
/// line: that the console output arrived before the VM's end was reported (PVABI-SYS-002:
/// the END line is the last call's output before SYSTEM_SHUTDOWN, and it arrived), and, for
/// the time test, that the wall clock follows the runner's own notion of UTC (PVABI-TIME-005,
/// a SHOULD: within 60 s; the guest reports TIME_WALLCLOCK's seconds as an INFO line).
fn runner_checks(test: &TestInfo, mut result: TestResult) -> TestResult {
    use pvabi_conformance::Check;
    let clean = matches!(
        result.verdict,
        Verdict::Pass | Verdict::Skip | Verdict::Fail
    ) && matches!(result.end, RunEnd::Shutdown(_));
    if test.name == "system" && clean {
        result.checks.push(Check::new(
            "system.console_output_arrives_before_the_end",
            Verdict::Pass,
            &["PVABI-SYS-002"],
            None,
        ));
    }
    let wall = result.info.get("wallclock_sec").and_then(|v| {
        v.strip_prefix("0x")
            .and_then(|h| u64::from_str_radix(h, 16).ok())
    });
    if test.name == "time" && clean {
        if let Some(guest) = wall {
            let ours = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let off = guest.abs_diff(ours);
            // A SHOULD: off by more is a warning (the channel's WARN), not a failure.
            result.checks.push(Check {
                name: "time.wallclock_follows_utc".to_owned(),
                verdict: Verdict::Pass,
                requirements: vec!["PVABI-TIME-005".to_owned()],
                message: (off > 60).then(|| {
                    format!("TIME_WALLCLOCK said {guest} s, {off} s from the runner's clock")
                }),
                warning: off > 60,
                not_applicable: false,
            });
        }
    }
    result
}

/// The tests whose image the host must refuse to start (PVABI-PLAT-005): a refused image
/// runs no instruction and so reports nothing; the runner judges the run itself
/// ([`refusal_result`]).
pub const REFUSED: &[&str] = &["image-below-min-addr", "image-beyond-ram"];

/// `image` with every loadable segment and the entry point moved by `delta` bytes (its
/// physical addresses only: the image is the same, only where it asks to be loaded differs).
pub fn relocated(image: &[u8], delta: i64) -> Vec<u8> {
    let mut image = image.to_vec();
    let word = |img: &[u8], at: usize, n: usize| {
        let mut v = [0u8; 8];
        v[..n].copy_from_slice(&img[at..at + n]);
        u64::from_le_bytes(v)
    };
    let set = |img: &mut Vec<u8>, at: usize| {
        let moved = word(img, at, 8).wrapping_add_signed(delta);
        img[at..at + 8].copy_from_slice(&moved.to_le_bytes());
    };
    set(&mut image, 24); // e_entry
    let (phoff, size, n) = (
        word(&image, 32, 8) as usize,
        word(&image, 54, 2) as usize,
        word(&image, 56, 2) as usize,
    );
    for at in (0..n).map(|i| phoff + i * size) {
        if word(&image, at, 4) == 1 {
            set(&mut image, at + 24); // p_paddr of a PT_LOAD
        }
    }
    image
}

/// The platform-fault image, its lowest segment moved to 0x1000, below IMAGE_MIN_ADDR.
fn image_below_min_addr() -> &'static [u8] {
    static IMAGE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    IMAGE.get_or_init(|| {
        let image = pvabi_guest_images::conform_platform_fault();
        let delta = 0x1000 - pvabi_abi::platform::IMAGE_BASE as i64;
        relocated(image, delta)
    })
}

/// The platform-fault image moved up by MAX_MEM_BYTES: beyond any guest RAM of the platform.
fn image_beyond_ram() -> &'static [u8] {
    static IMAGE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    IMAGE.get_or_init(|| {
        let image = pvabi_guest_images::conform_platform_fault();
        relocated(image, pvabi_abi::platform::MAX_MEM_BYTES as i64)
    })
}

/// The result of a test of [`REFUSED`]: one check, PVABI-PLAT-005, with this verdict.
fn refusal_result(test: &TestInfo, verdict: Verdict, message: String, end: RunEnd) -> TestResult {
    TestResult {
        test: test.name.to_owned(),
        verdict,
        checks: vec![pvabi_conformance::Check::new(
            format!("{}.refused_and_runs_no_instruction", test.name),
            verdict,
            &["PVABI-PLAT-005"],
            Some(message),
        )],
        reason: None,
        end,
        info: Default::default(),
    }
}

/// How long one test VM may run before it is ended (its verdict is then CRASH).
pub const TEST_TIMEOUT: Duration = Duration::from_secs(60);

/// How the runner's view of a VM's end maps onto the channel's. The faults the guest caused
/// (an access without RAM, a triple fault, an exit the CPU took for it) are guest faults; a
/// time-out, an ioctl error, a host panic, a VM ended by the host are not.
fn run_end(end: &VmEnd) -> RunEnd {
    use pvabi_host::vm::Fault;
    match end {
        VmEnd::Shutdown(code) => RunEnd::Shutdown(*code),
        VmEnd::Reboot => RunEnd::Reboot,
        VmEnd::Crash(message) => RunEnd::Crash(message.clone()),
        VmEnd::Fault(report) => match report.fault {
            Fault::Mmio { .. }
            | Fault::TripleFault
            | Fault::InternalError { .. }
            | Fault::FailEntry { .. }
            | Fault::UnexpectedExit(_)
            | Fault::SystemEvent(_) => RunEnd::GuestFault(report.to_string()),
            _ => RunEnd::Fault(report.to_string()),
        },
    }
}

/// Runs `test` under the reference host serving `host`.
pub fn run_test(test: &TestInfo, host: &HostConfig) -> TestResult {
    let config = RunConfig {
        host: HostConfig {
            console: ConsoleSink::Discard,
            ..(test.host)(host.clone())
        },
        vm: VmConfig {
            vcpus: test.vcpus,
            ..VmConfig::default()
        },
        timeout: Some(TEST_TIMEOUT),
    };
    if REFUSED.contains(&test.name) {
        use pvabi_host::vm::VmError;
        return match runner::run((test.image)(), config) {
            Err(runner::RunError::Vm(e @ (VmError::BadElf(_) | VmError::ImageTooLarge { .. }))) => {
                refusal_result(
                    test,
                    Verdict::Pass,
                    format!("refused before the VM was created: {e}"),
                    RunEnd::Refused(e.to_string()),
                )
            }
            Ok(outcome) => refusal_result(
                test,
                Verdict::Fail,
                format!(
                    "the host started the image ({} console bytes), which then ended with {}",
                    outcome.console.len(),
                    outcome.end
                ),
                run_end(&outcome.end),
            ),
            Err(e) => refusal_result(
                test,
                Verdict::Error,
                format!("the run failed for another reason than the image: {e}"),
                RunEnd::Fault(e.to_string()),
            ),
        };
    }
    match runner::run((test.image)(), config) {
        Ok(outcome) => runner_checks(
            test,
            ended_on_reboot(
                test,
                &outcome.console,
                channel::parse(test.name, &outcome.console, run_end(&outcome.end)),
            ),
        ),
        // The VM could not run: the environment is at fault, not the host under test.
        Err(e) => TestResult {
            test: test.name.to_owned(),
            verdict: Verdict::Error,
            checks: Vec::new(),
            reason: Some(format!("the test VM could not run: {e}")),
            end: RunEnd::Fault(e.to_string()),
            info: Default::default(),
        },
    }
}

/// Where a test runs: the reference host in this process, or an external VMM.
#[derive(Clone, Debug)]
pub enum Target {
    /// The reference host serving this configuration.
    Reference(HostConfig),
    /// An external VMM: a shell command in which `{image}` stands for the test image's path
    /// and `{vcpus}` for the number of vCPUs the test needs ([`TestInfo::vcpus`]).
    /// It must print the guest's console on stdout and exit with the guest's SYSTEM_SHUTDOWN
    /// code when the guest shut down (`pvabi run --exit-with-guest-code` does); any other exit
    /// status cannot match a verdict's code, so it is never taken for a PASS, except the
    /// statuses `statuses` names for a guest fault (after the guest's EXPECT line) and for a
    /// refused image (for the tests of [`REFUSED`]).
    Command {
        /// The command template.
        template: String,
        /// A directory to write the images to.
        scratch: std::path::PathBuf,
        /// What the VMM's exit statuses mean for a VM that faulted or an image it refused
        /// (the profile's `[exit_status]`); without them those tests SKIP.
        statuses: Option<pvabi_conformance::profile::ExitStatuses>,
    },
}

impl Target {
    /// Runs `test` here.
    pub fn run(&self, test: &TestInfo) -> TestResult {
        match self {
            Target::Reference(host) => run_test(test, host),
            Target::Command {
                template,
                scratch,
                statuses,
            } => run_external(test, template, scratch, statuses.as_ref()),
        }
    }
}

/// Runs `tests` on `target`, up to `jobs` at once (each test boots its own VM), and returns
/// the results in the order of `tests`. `progress` is told of each result as it arrives, with
/// how many have finished and how long the test took.
pub fn run_all(
    target: &Target,
    tests: &[&TestInfo],
    jobs: usize,
    progress: &(dyn Fn(usize, &TestResult, Duration) + Sync),
) -> Vec<TestResult> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<TestResult>>> = Mutex::new(vec![None; tests.len()]);
    std::thread::scope(|s| {
        for _ in 0..jobs.clamp(1, tests.len().max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(test) = tests.get(i) else { break };
                let started = Instant::now();
                let r = target.run(test);
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                progress(n, &r, started.elapsed());
                results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .map(|r| r.expect("every test ran"))
        .collect()
}

/// The bit of the feature named `name` (as the spec names it: `CONSOLE`, `STEAL_TIME`, ...).
fn feature_bit(name: &str) -> Option<u64> {
    pvabi_abi::features::FEATURES
        .iter()
        .find(|f| f.name == name)
        .map(|f| f.flag.bits())
}

/// Parses a profile (see [`pvabi_conformance::profile`]) with the ABI's feature names.
pub fn parse_profile(
    text: &str,
) -> Result<pvabi_conformance::profile::Profile, pvabi_conformance::profile::ProfileError> {
    let names: Vec<&str> = pvabi_abi::features::FEATURES
        .iter()
        .map(|f| f.name)
        .collect();
    pvabi_conformance::profile::Profile::parse(text, &feature_bit, &names)
}

/// The reference host's profile as the committed reference run holds it to its claims:
/// `conformance/profiles/pvabi-host.toml` plus the identity the reference host declares (its
/// implementation id, and as its version the version of this release, `major.minor.patch`),
/// which the file leaves out because it changes with every release. So GET_IMPL_VERSION's
/// packing (PVABI-BASE-018) is checked against a version the runner knows independently of
/// what the guest reads.
pub fn reference_profile() -> pvabi_conformance::profile::Profile {
    let mut profile = parse_profile(include_str!("../conformance/profiles/pvabi-host.toml"))
        .expect("the reference profile is valid (a unit test parses it)");
    profile.implementation = Some(pvabi_conformance::profile::Identity {
        id: u64::from(pvabi_abi::base::IMPL_ID_REFERENCE),
        version: env!("CARGO_PKG_VERSION").to_owned(),
    });
    profile
}

/// Holds `results` to `profile`: adds the `profile` test (one check per claim, against what
/// the base test reported) and marks the failures the profile knows of. Returns the known
/// failures that did not happen.
pub fn apply_profile(
    profile: &pvabi_conformance::profile::Profile,
    results: &mut Vec<TestResult>,
) -> Vec<pvabi_conformance::profile::KnownFailure> {
    use pvabi_conformance::profile::{Facts, PROFILE_TEST};
    let facts = Facts::of(results);
    let checks = profile.checks(&facts, &feature_bit);
    if !checks.is_empty() {
        let verdict = Verdict::worst(checks.iter().map(|c| c.verdict));
        results.push(TestResult {
            test: PROFILE_TEST.to_owned(),
            verdict,
            checks,
            reason: None,
            end: RunEnd::Shutdown(verdict.exit_code()),
            info: Default::default(),
        });
    }
    profile.apply_known_failures(&facts, results)
}

/// The name of the result `pvabi conform --guest` reports.
pub const GUEST_TEST: &str = "guest";

/// The host `pvabi conform --guest` runs a guest under: the reference host checking the guest
/// and acting demanding but legal ([`HostConfig::checking`]).
pub fn checking_host(vcpus: u32) -> HostConfig {
    HostConfig {
        vcpus,
        console: ConsoleSink::Discard,
        ..HostConfig::checking()
    }
}

/// One check of [`check_guest`]'s report per guest rule the host can see: its name, and what
/// "not exercised" means for it.
use pvabi_host::dispatch::guest_check;

const GUEST_RULES: &[(&str, &str, &str)] = &[
    (
        pvabi_host::dispatch::guest_check::CONV_012,
        "calls_in_long_mode_at_cpl0",
        "the guest made no call",
    ),
    (
        guest_check::CONV_030,
        "doorbell_calls_with_out_not_a_string_output",
        "the guest made no call",
    ),
    (
        guest_check::PLAT_008,
        "idt_loaded_before_interrupts_enabled",
        "no exit of the guest had RFLAGS.IF set",
    ),
    (
        guest_check::MEM_006,
        "released_pages_not_written_until_reclaimed",
        "the guest held no released page when the host looked (at a MEM_BALLOON_RELEASE or \
         MEM_BALLOON_RECLAIM, or at the end)",
    ),
    (
        pvabi_host::dispatch::guest_check::CONV_001,
        "call_code_bits_63_32_clear",
        "the guest made no call",
    ),
    (
        pvabi_host::dispatch::guest_check::GEN_002,
        "reserved_argument_bits_zero",
        "the guest made no defined call",
    ),
    (
        pvabi_host::dispatch::guest_check::DISC_006,
        "no_feature_call_before_negotiate",
        "the guest made no feature call",
    ),
    (
        pvabi_host::dispatch::guest_check::BASE_016,
        "only_granted_features",
        "the guest made no feature call",
    ),
    (
        pvabi_host::dispatch::guest_check::BATCH_009,
        "resumes_preempted_batches",
        "no MULTICALL of the guest was preempted with INCOMPLETE",
    ),
    (
        pvabi_host::dispatch::guest_check::BATCH_019,
        "resumes_preempted_page_batches",
        "no MULTICALL_PAGES of the guest was preempted with INCOMPLETE",
    ),
    (
        pvabi_host::dispatch::guest_check::TIME_014,
        "time_page_sequence_lock",
        "the guest armed no timer (a torn time-page read shows in a TIME_SET_TIMER deadline)",
    ),
    (
        guest_check::CONV_006,
        "no_reliance_on_undefined_results",
        "the guest made no call",
    ),
    (
        guest_check::TIME_025,
        "steal_page_only_when_granted",
        "the guest made no TIME_SET_STEAL_PAGE",
    ),
    (
        guest_check::MEM_019,
        "no_released_page_in_a_call",
        "the guest named no memory in a call",
    ),
    (
        guest_check::MEM_022,
        "no_pml5_entry_updated_with_mem_update_pte",
        "the guest made no MEM_UPDATE_PTE while it used 5-level paging (EFER.LMA and CR4.LA57 \
         set at the vCPU's last exit: the call's own, or for a ring submission the ring \
         owner's); a guest that uses 4-level paging has no PML5 entry to update",
    ),
    (
        guest_check::CONV_025,
        "host_fields_of_host_pages_left_alone",
        "the guest registered no time page (or it was never refreshed)",
    ),
    (
        guest_check::EVT_010,
        "events_read_before_head_moves_past_them",
        "no event-queue entry was consumed (a store of `head` past it) while the checking host \
         watched the queue's page: it takes the page out of the guest's memory map from \
         EVENTS_SET_QUEUE on, so that every guest access to it exits, for the queue's first \
         entries and within a budget of accesses per run",
    ),
    (
        guest_check::EVT_025,
        "event_head_never_past_tail",
        "no event was posted to a registered queue",
    ),
    (
        guest_check::EVT_011,
        "event_interrupt_rearmed_then_tail_reread",
        "the guest made no VCPU_HALT with an event queue registered",
    ),
    (
        guest_check::DEFER_013,
        "no_queuing_into_a_full_deferred_queue",
        "the guest's deferred queue was never drained",
    ),
    (
        guest_check::DEFER_002,
        "deferred_head_and_errors_left_to_the_host",
        "the guest's deferred queue was never drained",
    ),
    (
        guest_check::DEFER_001,
        "deferred_entries_written_before_tail",
        "no deferred-queue entry was seen published and then looked at again before the host \
         ran it: the checking host single-steps a vCPU's ring-0 code after DEFER_SET_QUEUE (up to \
         its next exit, from each port write, for its first entries), and ring-3 code takes no \
         step here",
    ),
    (
        guest_check::MEM_013,
        "no_access_through_a_queued_pte",
        "no instruction was seen to run while a MEM_UPDATE_PTE waited in the vCPU's deferred \
         queue: the checking host single-steps a vCPU's ring-0 code after DEFER_SET_QUEUE (up \
         to its next exit, from each port write, for its first queued MEM_UPDATE_PTEs), and \
         ring-3 code takes no step here",
    ),
    (
        guest_check::DEFER_008,
        "nothing_relies_on_an_undrained_deferred_call",
        "no instruction was seen to run while a MEM_UPDATE_PTE waited in the vCPU's deferred \
         queue (the only dependence on a queued call the checking host looks for: an access \
         through the entry whose queued value differs from what the entry holds)",
    ),
    (
        guest_check::RING_028,
        "no_submission_into_a_full_ring",
        "the host made no pass over a ring of the guest",
    ),
    (
        guest_check::RING_006,
        "completions_read_before_head_moves_past_them",
        "no completion was consumed (a store of the completion ring's `head` past it) while the \
         checking host watched the completion ring's page: it takes the page out of the guest's \
         memory map from RING_SETUP on, so that every guest access to it exits, for the ring's \
         first completions and within a budget of accesses per run",
    ),
    (
        guest_check::RING_029,
        "completion_head_never_past_tail",
        "the host read no completion-ring head of the guest",
    ),
    (
        guest_check::RING_001,
        "submissions_written_before_tail",
        "no submission was seen published and then looked at again before the host consumed it: \
         the checking host single-steps a vCPU's ring-0 code after RING_SETUP (up to its next \
         exit, from each port write, for its first submissions), and ring-3 code takes no step \
         here",
    ),
    (
        guest_check::RING_008,
        "doorbell_rings_notified",
        "the guest had no DOORBELL-mode ring at the end of the run",
    ),
    (
        guest_check::RING_010,
        "sleeping_pollers_woken",
        "the guest had no HOST_POLLED ring at the end of the run",
    ),
    (
        guest_check::VCPU_020,
        "started_vcpus_mapped_by_their_cr3",
        "the guest made no VCPU_START that reached the page-table check",
    ),
    (
        guest_check::VER_014,
        "lowest_minor_and_needed_features_requested",
        "the guest's NEGOTIATE never succeeded",
    ),
    (
        guest_check::COMPAT_001,
        "later_minor_features_optional",
        "the guest's NEGOTIATE never succeeded",
    ),
    (
        guest_check::SYS_007,
        "crash_message_in_utf8",
        "the guest made no SYSTEM_CRASH",
    ),
    (
        guest_check::BASE_017,
        "locked_result_read_after_locked",
        "no NEGOTIATE of the guest was answered LOCKED and followed by GET_SPEC_VERSION or PROBE_FEATURES (a MAY)",
    ),
];

/// PVABI-PLAT-004: where the image's loadable segments are, checked before the guest runs:
/// `Err` names the first segment below `IMAGE_MIN_ADDR` or beyond guest RAM of `ram` bytes.
pub fn check_image_placement(image: &[u8], ram: u64) -> Result<(), String> {
    use pvabi_abi::platform::IMAGE_MIN_ADDR;
    let word = |at: usize, n: usize| -> Option<u64> {
        let b = image.get(at..at + n)?;
        let mut v = [0u8; 8];
        v[..n].copy_from_slice(b);
        Some(u64::from_le_bytes(v))
    };
    if image.get(..4) != Some(b"\x7fELF".as_slice()) {
        return Ok(()); // not an ELF image: the loader says so
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (word(32, 8), word(54, 2), word(56, 2))
    else {
        return Ok(());
    };
    for i in 0..phnum {
        let at = usize::try_from(phoff + i * phentsize).unwrap_or(usize::MAX);
        let (Some(kind), Some(paddr), Some(memsz)) = (
            word(at, 4),
            word(at.saturating_add(24), 8),
            word(at.saturating_add(40), 8),
        ) else {
            return Ok(());
        };
        if kind != 1 {
            continue; // not PT_LOAD
        }
        let end = paddr.saturating_add(memsz);
        if paddr < IMAGE_MIN_ADDR || end > ram {
            return Err(format!(
                "loadable segment {i} occupies {paddr:#x}..{end:#x}: place every loadable segment \
                 at or above IMAGE_MIN_ADDR ({IMAGE_MIN_ADDR:#x}) and within guest RAM (here \
                 {ram:#x} bytes; link the image at 0x200000, as guest-ref/bare/rt/link.ld does)"
            ));
        }
    }
    Ok(())
}

/// The checking host's device on the default pvabi ports, which it does not use
/// ([`guest_check::CHECKING_DOORBELL_PORT`]): it counts the guest's writes there
/// (PVABI-DISC-008) and passes each on to the dispatcher as if made at the advertised port, so
/// that such a guest still runs to its end and its other rules are checked.
#[derive(Default)]
struct DefaultPortTrap {
    dispatcher: std::sync::Mutex<Option<Arc<pvabi_host::KvmDispatcher>>>,
    /// Writes to the default doorbell and ring-notify ports.
    writes: [AtomicU64; 2],
    /// The first write: `(vCPU, port)`.
    first: std::sync::Mutex<Option<(u32, u16)>>,
}

fn lock_trap<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl PortDevice for DefaultPortTrap {
    fn write(&self, access: &PortAccess, data: &[u8], regs: &mut CallRegs) -> Option<Outcome> {
        let doorbell = access.port == pvabi_abi::convention::DOORBELL_PORT;
        self.writes[usize::from(!doorbell)].fetch_add(1, Ordering::Relaxed);
        lock_trap(&self.first).get_or_insert((access.vcpu, access.port));
        let d = lock_trap(&self.dispatcher).clone()?;
        let c = d.config();
        let port = if doorbell {
            c.doorbell_port
        } else {
            c.ring_notify_port
        };
        d.port_out(access.caller(), port, data, regs)
    }
}

/// PVABI-DISC-002 and PVABI-DISC-008 from where the guest's calls arrived: at the ports the
/// transport leaf names (found by scanning up to [`guest_check::CHECKING_CPUID_BASE`]) or at
/// the default ones.
fn discovery_checks(
    seen: &pvabi_host::dispatch::guest_check::GuestCheckReport,
    trap: &DefaultPortTrap,
) -> Vec<pvabi_conformance::Check> {
    use pvabi_conformance::Check;
    let [at_default, notify_default] = [0, 1].map(|i| trap.writes[i].load(Ordering::Relaxed));
    let calls = seen
        .exercised
        .get(guest_check::CONV_012)
        .copied()
        .unwrap_or(0);
    let advertised = calls.saturating_sub(at_default);
    let base = guest_check::CHECKING_CPUID_BASE;
    let disc_002 = if advertised > 0 {
        (Verdict::Pass, None)
    } else {
        (
            Verdict::Fail,
            Some(format!(
                "the guest made no call at the doorbell port {:#x} that the pvabi leaves name: the \
                 checking host put them at base {base:#x}, behind another signature at {:#x}; \
                 scan the candidate bases in increasing order and use the first that carries \
                 pvabi's signature",
                guest_check::CHECKING_DOORBELL_PORT,
                pvabi_abi::discovery::CPUID_FIRST_BASE
            )),
        )
    };
    let disc_008 = if at_default + notify_default > 0 {
        let (vcpu, port) = lock_trap(&trap.first).unwrap_or((0, 0));
        (
            Verdict::Fail,
            Some(format!(
                "vCPU {vcpu}: {} write(s) to the default doorbell port and {} to the default \
                 ring-notify port (the first to {port:#x}), where the transport leaf names {:#x} \
                 and {:#x}: use the ports the transport leaf reports",
                at_default,
                notify_default,
                guest_check::CHECKING_DOORBELL_PORT,
                guest_check::CHECKING_RING_NOTIFY_PORT
            )),
        )
    } else if calls > 0 {
        (Verdict::Pass, None)
    } else {
        (
            Verdict::Skip,
            Some("not exercised: the guest made no call".to_owned()),
        )
    };
    [
        ("finds_pvabi_at_a_later_base", "PVABI-DISC-002", disc_002),
        ("uses_the_transport_leaf_ports", "PVABI-DISC-008", disc_008),
    ]
    .into_iter()
    .map(|(name, rule, (verdict, message))| {
        Check::new(format!("{GUEST_TEST}.{name}"), verdict, &[rule], message)
    })
    .collect()
}

/// Guest rules that bind only on a platform other than the reference platform, which the
/// checking host implements: each check's name, the rule, and what makes it not apply (the
/// channel's N/A). The image under check is a guest of the reference platform (it boots by
/// its protocol), so nothing it does can break these.
const NOT_ON_THE_REFERENCE_PLATFORM: &[(&str, &str, &str)] = &[
    (
        "apic_ids_and_vcpu_indices",
        "PVABI-VCPU-017",
        "the reference platform defines the mapping: a vCPU's initial APIC ID is its index \
         (PVABI-PLAT-009)",
    ),
    (
        "no_end_of_interrupt_to_a_local_apic",
        "PVABI-EVT-009",
        "the reference platform has no local APIC to signal (PVABI-PLAT-010)",
    ),
];

/// The guest rules of [`GUEST_RULES`] whose level is SHOULD or MAY: a failed check of one is
/// a warning, which does not fail the run.
fn guest_rule_is_advisory(rule: &str) -> bool {
    guest_check::ADVISORY.contains(&rule)
}

/// One run of a guest under a checking host: how it ended, what the checker saw, and what
/// reached the default ports.
struct CheckedRun {
    outcome: runner::RunOutcome,
    seen: pvabi_host::dispatch::guest_check::GuestCheckReport,
    trap: Arc<DefaultPortTrap>,
}

/// Runs `image` under `config`'s checking host, with the default ports trapped
/// ([`DefaultPortTrap`]).
fn run_checked(image: &[u8], config: RunConfig) -> Result<CheckedRun, runner::RunError> {
    let mut dispatcher = None;
    let trap = Arc::new(DefaultPortTrap::default());
    let run = runner::run_with(image, config, |bus, d| {
        // What the first boot's dispatcher saw (a guest that reboots gets a new one).
        dispatcher.get_or_insert_with(|| d.clone());
        *lock_trap(&trap.dispatcher) = Some(d.clone());
        let default = pvabi_abi::convention::DOORBELL_PORT;
        bus.attach(default..=default, trap.clone());
        let notify = pvabi_abi::convention::RING_NOTIFY_PORT;
        bus.attach(notify..=notify, trap.clone());
    });
    // The trap holds the dispatcher only while the VM runs.
    lock_trap(&trap.dispatcher).take();
    let outcome = run?;
    let seen = dispatcher.and_then(|d| d.guest_check()).unwrap_or_default();
    Ok(CheckedRun {
        outcome,
        seen,
        trap,
    })
}

/// PVABI-DISC-004 and PVABI-CONV-010 from the discovery trace of the first run
/// ([`pvabi_host::vm::DiscoveryTrace`]: vCPU 0 single-stepped at CPL0 from its entry to its
/// first port write; code at CPL3 takes no step on this PVM machine, and nothing after the
/// first call is traced).
fn trace_checks(
    trace: Option<&pvabi_host::vm::DiscoveryTrace>,
    host: &HostConfig,
) -> Vec<pvabi_conformance::Check> {
    use pvabi_abi::discovery::TransportFlags;
    let check = |name: &str, rule: &str, verdict, message: Option<String>| {
        pvabi_conformance::Check::new(format!("{GUEST_TEST}.{name}"), verdict, &[rule], message)
    };
    const DISC: (&str, &str) = (
        "reads_no_pvabi_leaf_above_the_signature_leaf_eax",
        "PVABI-DISC-004",
    );
    const CONV: (&str, &str) = ("no_unadvertised_hypercall_instruction", "PVABI-CONV-010");
    let Some(t) = trace.filter(|t| t.stepping) else {
        let why =
            "not exercised: single-stepping the guest (KVM_SET_GUEST_DEBUG) is not available here";
        return vec![
            check(DISC.0, DISC.1, Verdict::Skip, Some(why.to_owned())),
            check(CONV.0, CONV.1, Verdict::Skip, Some(why.to_owned())),
        ];
    };
    let window = format!(
        "{} CPL0 instructions of vCPU 0 traced, from its entry to {}",
        t.steps,
        if t.reached_port_write {
            "its first port write"
        } else if t.limited {
            "the trace's limit, before its first port write"
        } else {
            "the end of the VM"
        }
    );
    let base = host.cpuid_base;
    let max = host
        .cpuid_leaves()
        .iter()
        .find(|(f, i, _)| *f == base && *i == 0)
        .map_or(base, |l| l.2[0]);
    let pvabi = |leaf: u32| (base..=base + 0xff).contains(&leaf);
    let above: Vec<_> = t
        .cpuid
        .iter()
        .filter(|r| pvabi(r.leaf) && r.leaf > max)
        .collect();
    let disc = if let Some(first) = above.first() {
        check(
            DISC.0,
            DISC.1,
            Verdict::Fail,
            Some(format!(
                "CPUID leaf {:#x} read at rip {:#x} ({} such read(s)), above {max:#x}, which the \
                 signature leaf at {base:#x} names in eax as pvabi's last leaf: read only the \
                 leaves up to the one the signature leaf's eax names (a newer leaf is absent on \
                 this host)",
                first.leaf,
                first.rip,
                above.len()
            )),
        )
    } else if t.cpuid.iter().any(|r| pvabi(r.leaf)) {
        check(DISC.0, DISC.1, Verdict::Pass, Some(window.clone()))
    } else {
        check(
            DISC.0,
            DISC.1,
            Verdict::Skip,
            Some(format!(
                "not exercised: no CPUID of pvabi's leaves seen ({window})"
            )),
        )
    };
    let allowed = host.transport & (TransportFlags::VMCALL | TransportFlags::VMMCALL);
    let unadvertised: Vec<_> = t
        .hypercalls
        .iter()
        .filter(|(_, vmmcall)| {
            !allowed.contains(if *vmmcall {
                TransportFlags::VMMCALL
            } else {
                TransportFlags::VMCALL
            })
        })
        .collect();
    let conv = if let Some((rip, vmmcall)) = unadvertised.first() {
        check(
            CONV.0,
            CONV.1,
            Verdict::Fail,
            Some(format!(
                "{} at rip {rip:#x}, while the transport leaf advertises neither vmcall nor \
                 vmmcall (only port I/O): make calls with the binding the transport leaf \
                 advertises",
                if *vmmcall { "vmmcall" } else { "vmcall" }
            )),
        )
    } else if t.steps > 0 {
        check(CONV.0, CONV.1, Verdict::Pass, Some(window.clone()))
    } else {
        check(
            CONV.0,
            CONV.1,
            Verdict::Skip,
            Some(format!("not exercised: {window}")),
        )
    };
    vec![disc, conv]
}

/// Whether the watchdog ([`TEST_TIMEOUT`]) ended the run rather than the guest.
fn stopped_by_watchdog(run: &CheckedRun) -> bool {
    matches!(&run.outcome.end, VmEnd::Fault(f) if matches!(f.fault, pvabi_host::vm::Fault::Timeout(_)))
}

/// The name of the PVABI-BASE-005 check of `pvabi conform --guest` (after `guest.`).
const IDENTITY_CHECK: &str = "same_calls_under_another_identity";

/// The identity a host reports, for a report: `id 0x1 "pvabi-ref" version 0.1.0`.
fn identity_of(host: &HostConfig) -> String {
    let len = host.impl_name.iter().position(|&b| b == 0).unwrap_or(16);
    let v = host.impl_version;
    format!(
        "id {:#x} {:?} version {}.{}.{}",
        host.impl_id,
        String::from_utf8_lossy(&host.impl_name[..len]),
        v.major,
        v.minor,
        v.patch
    )
}

/// PVABI-BASE-005 from two runs of the guest under hosts that differ only in their identity
/// ([`guest_check::identity`] says what is compared and why no more): FAIL naming the calls
/// that differ, PASS when none does, SKIP when the guest made no call, ERROR when the second
/// run could not be made.
fn identity_check(
    runs: [(&HostConfig, Result<&CheckedRun, &runner::RunError>); 2],
) -> pvabi_conformance::Check {
    use guest_check::identity::{compare, describe, IdentityRun, BASE_005};
    let check = |verdict, message: Option<String>| {
        pvabi_conformance::Check::new(
            format!("{GUEST_TEST}.{IDENTITY_CHECK}"),
            verdict,
            &[BASE_005],
            message,
        )
    };
    let [(host_a, Ok(a)), (host_b, b)] = runs else {
        return check(Verdict::Error, Some("the first run failed".to_owned()));
    };
    let b = match b {
        Ok(b) => b,
        Err(e) => {
            return check(
                Verdict::Error,
                Some(format!(
                    "the second run, under the host reporting {}, could not be made: {e}",
                    identity_of(host_b)
                )),
            )
        }
    };
    let complete = |r: &CheckedRun| !stopped_by_watchdog(r);
    fn run<'a>(host: &HostConfig, r: &'a CheckedRun, complete: bool) -> IdentityRun<'a> {
        IdentityRun {
            calls: &r.seen.calls,
            complete,
            identity: identity_of(host),
        }
    }
    let (ra, rb) = (run(host_a, a, complete(a)), run(host_b, b, complete(b)));
    if ra.calls.overflowed || rb.calls.overflowed {
        return check(
            Verdict::Skip,
            Some(format!(
                "not compared: the guest made more than {} distinct calls or NEGOTIATE and \
                 PROBE_CALL argument tuples in a run, more than the checking host records",
                guest_check::identity::MAX_DISTINCT
            )),
        );
    }
    let diffs = compare([&ra, &rb]);
    if !diffs.is_empty() {
        return check(Verdict::Fail, Some(describe([&ra, &rb], &diffs)));
    }
    if a.seen.calls.codes.is_empty() {
        return check(
            Verdict::Skip,
            Some("not exercised: the guest made no call".to_owned()),
        );
    }
    if !rb.complete {
        return check(
            Verdict::Pass,
            Some(format!(
                "the watchdog stopped the second run after {TEST_TIMEOUT:?}: only the calls it \
                 made were compared with the first run's"
            )),
        );
    }
    check(Verdict::Pass, None)
}

/// Runs the guest `image` on `vcpus` vCPUs under [`checking_host`] and reports, per guest
/// rule the host can see, PASS (exercised, never broken), FAIL (broken: what, where, how
/// often) or SKIP (not exercised), plus whether the guest ran to a clean SYSTEM_SHUTDOWN under
/// a host offering more than it knows (PVABI-VER-009).
pub fn check_guest(image: &[u8], vcpus: u32) -> TestResult {
    use pvabi_conformance::Check;
    let config = RunConfig {
        host: checking_host(vcpus),
        vm: VmConfig {
            vcpus,
            ..VmConfig::default()
        },
        timeout: Some(TEST_TIMEOUT),
    };
    let placement = check_image_placement(image, config.vm.mem_bytes);
    let plat_004 = Check::new(
        format!("{GUEST_TEST}.image_placed_at_or_above_image_min_addr"),
        if placement.is_ok() {
            Verdict::Pass
        } else {
            Verdict::Fail
        },
        &["PVABI-PLAT-004"],
        placement.clone().err(),
    );
    if placement.is_err() {
        return TestResult {
            test: GUEST_TEST.to_owned(),
            verdict: Verdict::Fail,
            checks: vec![plat_004],
            reason: Some(
                "the reference platform refuses to start the image (PVABI-PLAT-005)".to_owned(),
            ),
            end: RunEnd::Fault("image not started".to_owned()),
            info: Default::default(),
        };
    }
    let first = match run_checked(image, config.clone()) {
        Ok(r) => r,
        Err(e) => {
            return TestResult {
                test: GUEST_TEST.to_owned(),
                verdict: Verdict::Error,
                checks: Vec::new(),
                reason: Some(format!("the guest could not run: {e}")),
                end: RunEnd::Fault(e.to_string()),
                info: Default::default(),
            }
        }
    };
    // PVABI-BASE-005: the same guest again, under the same host with another identity;
    // not when the watchdog stopped the first run (its calls are not all it would have made,
    // and a second run would most likely wait for the watchdog too).
    let base_005 = if stopped_by_watchdog(&first) {
        pvabi_conformance::Check::new(
            format!("{GUEST_TEST}.{IDENTITY_CHECK}"),
            Verdict::Skip,
            &[guest_check::identity::BASE_005],
            Some(format!(
                "not exercised: the watchdog stopped the run after {TEST_TIMEOUT:?}, so the \
                 second run, under another implementation identity, was not made"
            )),
        )
    } else {
        let twin = RunConfig {
            host: config.host.with_twin_identity(),
            ..config.clone()
        };
        let second = run_checked(image, twin.clone());
        identity_check([(&config.host, Ok(&first)), (&twin.host, second.as_ref())])
    };
    let CheckedRun {
        outcome,
        seen,
        trap,
    } = first;
    let mut checks = vec![plat_004];
    checks.extend(discovery_checks(&seen, &trap));
    checks.extend(trace_checks(outcome.discovery.as_ref(), &config.host));
    checks.push(base_005);
    for (rule, name, idle) in GUEST_RULES {
        let broken = seen.counts.get(rule).copied().unwrap_or(0);
        let (verdict, message) = if broken > 0 {
            let first = seen.violations.iter().find(|v| v.rule == *rule);
            let what = first.map_or(String::new(), |v| {
                format!(
                    "vCPU {}{}: {}",
                    v.vcpu,
                    v.call.map(|c| format!(", {c}")).unwrap_or_default(),
                    v.what
                )
            });
            let more = if broken > 1 {
                format!(" ({broken} times)")
            } else {
                String::new()
            };
            (Verdict::Fail, Some(format!("{what}{more}")))
        } else if seen.exercised.get(rule).copied().unwrap_or(0) > 0 {
            (Verdict::Pass, None)
        } else {
            (Verdict::Skip, Some(format!("not exercised: {idle}")))
        };
        checks.push(Check::new(
            format!("{GUEST_TEST}.{name}"),
            verdict,
            &[rule],
            message,
        ));
    }
    let (verdict, message) = match &outcome.end {
        VmEnd::Shutdown(0) => (Verdict::Pass, None),
        VmEnd::Shutdown(code) => {
            let console = String::from_utf8_lossy(&outcome.console);
            let last = console
                .lines()
                .find(|l| l.contains("FAIL"))
                .or_else(|| console.lines().rev().find(|l| !l.trim().is_empty()))
                .unwrap_or("");
            (
                Verdict::Fail,
                Some(format!(
                    "the guest shut down with code {code}, its own report of a failure (its \
                     console: {:?})",
                    last.chars().take(200).collect::<String>()
                )),
            )
        }
        other => (
            Verdict::Fail,
            Some(format!("the guest did not run to SYSTEM_SHUTDOWN: {other}")),
        ),
    };
    // Guest rules with a condition that no guest of the reference platform meets.
    for (name, rule, why) in NOT_ON_THE_REFERENCE_PLATFORM {
        checks.push(Check {
            not_applicable: true,
            ..Check::new(
                format!("{GUEST_TEST}.{name}"),
                Verdict::Pass,
                &[rule],
                Some((*why).to_owned()),
            )
        });
    }
    checks.push(Check::new(
        format!("{GUEST_TEST}.runs_under_a_host_offering_more_than_it_knows"),
        verdict,
        &["PVABI-VER-009"],
        message.map(|m| {
            format!("{m} (the host served the newest minor and offered feature bit {:#x}, which no version defines)", pvabi_host::dispatch::guest_check::UNKNOWN_FEATURE)
        }),
    ));
    // A broken SHOULD or MAY is the channel's WARN: a PASS for the run, a warning for the rule.
    for c in &mut checks {
        if c.verdict == Verdict::Fail && c.requirements.iter().all(|r| guest_rule_is_advisory(r)) {
            c.verdict = Verdict::Pass;
            c.warning = true;
        }
    }
    let worst = Verdict::worst(checks.iter().map(|c| c.verdict));
    // What watching the guest cost it: the instructions its step windows single-stepped
    // (DEFER-001, RING-001), and of those run while a MEM_UPDATE_PTE waited (MEM-013,
    // DEFER-008) how many had their accesses walked, were not decoded, or did not fit the stop
    // after them; and its accesses to watched pages (EVT-010, RING-006).
    let info = [
        ("step_window_steps", seen.step_windows.1.to_string()),
        ("pte_steps_checked", seen.pte_steps.checked.to_string()),
        ("pte_steps_undecoded", seen.pte_steps.undecoded.to_string()),
        (
            "pte_steps_unconfirmed",
            seen.pte_steps.unconfirmed.to_string(),
        ),
        ("watched_page_accesses", seen.watched_accesses.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    TestResult {
        test: GUEST_TEST.to_owned(),
        verdict: worst,
        checks,
        reason: None,
        end: run_end(&outcome.end),
        info,
    }
}

/// The host the committed traceability data comes from.
pub const REFERENCE_HOST: &str = "pvabi-host (the reference host) in its default configuration, held to its profile (conformance/profiles/pvabi-host.toml, with the release's version as its implementation version), and the demo guest under its checking mode (pvabi conform --guest demo)";

/// The traceability data of a run of the whole suite on the reference host (what
/// `conformance/traceability.json` holds; `pvabi conform --write-trace` writes it).
pub fn reference_run(results: &[TestResult]) -> pvabi_conformance::traceability::ReferenceRun {
    pvabi_conformance::traceability::ReferenceRun::from_results(
        &pvabi_abi::version::Version(pvabi_abi::version::SPEC_VERSION).to_string(),
        REFERENCE_HOST,
        results,
    )
}

/// Quotes `s` for a POSIX shell.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Runs `test` under the external VMM `template` (see [`Target::Command`]); `statuses` says
/// which exit statuses mean a guest fault and a refused image.
pub fn run_external(
    test: &TestInfo,
    template: &str,
    scratch: &Path,
    statuses: Option<&pvabi_conformance::profile::ExitStatuses>,
) -> TestResult {
    let error = |why: String| TestResult {
        test: test.name.to_owned(),
        verdict: Verdict::Error,
        checks: Vec::new(),
        reason: Some(why.clone()),
        end: RunEnd::Fault(why),
        info: Default::default(),
    };
    let image = scratch.join(format!("{}.elf", test.name));
    if let Err(e) = std::fs::write(&image, (test.image)()) {
        return error(format!("cannot write {}: {e}", image.display()));
    }
    let command = template
        .replace("{image}", &shell_quote(&image.to_string_lossy()))
        .replace("{vcpus}", &test.vcpus.to_string());
    let child = Command::new("sh")
        .arg("-c")
        .arg(&command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return error(format!("cannot run `{command}`: {e}")),
    };
    // Read the console on a thread, so that a full pipe cannot stall the VMM.
    let mut stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut console = Vec::new();
        let _ = stdout.read_to_end(&mut console);
        console
    });
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if started.elapsed() > TEST_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return error(format!("waiting for `{command}`: {e}")),
        }
    };
    let console = reader.join().unwrap_or_default();
    let code = status.and_then(|s| s.code());
    if REFUSED.contains(&test.name) {
        let refusal = statuses.and_then(|s| s.refusal);
        let (verdict, message, end) = match (code, refusal) {
            (None, _) => {
                let why = match status {
                    None => format!("`{command}` ran longer than {TEST_TIMEOUT:?}"),
                    Some(_) => format!("`{command}` was killed by a signal"),
                };
                return TestResult {
                    test: test.name.to_owned(),
                    verdict: Verdict::Crash,
                    checks: Vec::new(),
                    reason: Some(why.clone()),
                    end: RunEnd::Fault(why),
                    info: Default::default(),
                };
            }
            (Some(c), _) if !console.is_empty() => (
                Verdict::Fail,
                format!(
                    "the VMM printed {} console bytes (exit status {c}): it started the image",
                    console.len()
                ),
                RunEnd::Undetermined(format!("exit status {c}")),
            ),
            (Some(c), Some(r)) if c == r => (
                Verdict::Pass,
                format!("no console output and exit status {c}, the profile's refusal status"),
                RunEnd::Refused(format!("exit status {c}")),
            ),
            (Some(c), Some(r)) => (
                Verdict::Fail,
                format!("exit status {c}, not the profile's refusal status {r}"),
                RunEnd::Undetermined(format!("exit status {c}")),
            ),
            (Some(c), None) => (
                Verdict::Skip,
                format!(
                    "exit status {c} and no console output, and nothing says whether that status                      is a refusal: name it in the profile ([exit_status] refusal)"
                ),
                RunEnd::Undetermined(format!("exit status {c}")),
            ),
        };
        return refusal_result(test, verdict, message, end);
    }
    let fault = statuses.and_then(|s| s.fault);
    let end = match code {
        // The guest announced that the VM is to end by a fault: only the status the profile
        // names for a guest fault says it did.
        // An exit status cannot carry SYSTEM_SHUTDOWN's 32-bit code or SYSTEM_CRASH's
        // message: the end those tests announce cannot be told (a SKIP).
        Some(code)
            if matches!(
                channel::expected_end_of(&console),
                Some(ExpectedEnd::Shutdown(_) | ExpectedEnd::Crash(_))
            ) =>
        {
            RunEnd::Undetermined(format!("exit status {code}"))
        }
        Some(code) if channel::awaits_end(&console) => match fault {
            Some(f) if f == code => RunEnd::GuestFault(format!(
                "exit status {code}, the profile's status of a guest fault"
            )),
            Some(_) => RunEnd::Shutdown(code as u32),
            None => RunEnd::Undetermined(format!("exit status {code}")),
        },
        Some(code) => RunEnd::Shutdown(code as u32),
        None if status.is_none() => {
            RunEnd::Fault(format!("`{command}` ran longer than {TEST_TIMEOUT:?}"))
        }
        None => RunEnd::Fault(format!("`{command}` was killed by a signal")),
    };
    runner_checks(
        test,
        ended_on_reboot(test, &console, channel::parse(test.name, &console, end)),
    )
}

/// Writes the suite to `dir` for a machine without the Rust toolchain: the test images, a
/// manifest (each test, its image, and the checks and requirement IDs a conforming host
/// reports, from a run on the reference host) and `run.sh`, which runs every image under
/// `$HOST_CMD` and decides each verdict from the channel as `pvabi conform` does.
pub fn export(dir: &Path) -> std::io::Result<serde_json::Value> {
    std::fs::create_dir_all(dir.join("images"))?;
    let mut tests = Vec::new();
    for t in TESTS {
        let image = format!("images/{}.elf", t.name);
        std::fs::write(dir.join(&image), (t.image)())?;
        let reference = run_test(t, &HostConfig::default());
        tests.push(serde_json::json!({
            "test": t.name,
            "what": t.what,
            "image": image,
            "vcpus": t.vcpus,
            "ends": match reference.end {
                RunEnd::Refused(_) => "refused: no console output, the VMM's refusal exit status (REFUSAL_STATUS)",
                RunEnd::GuestFault(_) => "by a guest fault after the EXPECT line: the VMM's fault exit status (FAULT_STATUS)",
                RunEnd::Shutdown(SYSTEM_SHUTDOWN_CODE) => "by SYSTEM_SHUTDOWN after the EXPECT line, with the code it names (which an exit status cannot carry: run.sh SKIPs it)",
                RunEnd::Crash(_) => "by SYSTEM_CRASH after the EXPECT line, with the message it names (which an exit status cannot carry: run.sh SKIPs it)",
                _ => "SYSTEM_SHUTDOWN after the END line, with the END verdict's code",
            },
            "channel": {
                "begin": format!("{}BEGIN {}", channel::PREFIX, t.name),
                "end": format!("{}END {} <VERDICT>", channel::PREFIX, t.name),
                "shutdown_codes": {"PASS": 0, "SKIP": 3, "ERROR": 4, "FAIL": 5},
            },
            "checks": reference.checks.iter().map(|c| serde_json::json!({
                "check": c.name,
                "requirements": c.requirements,
            })).collect::<Vec<_>>(),
        }));
    }
    let manifest = serde_json::json!({
        "suite_version": env!("CARGO_PKG_VERSION"),
        "spec_version": pvabi_abi::version::Version(pvabi_abi::version::SPEC_VERSION).to_string(),
        "host_cmd": "a shell command with {image} (and {vcpus}, the test's vCPU count): prints the guest console on stdout, exits with the guest's SYSTEM_SHUTDOWN code",
        "tests": tests,
    });
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_string_pretty(&manifest).expect("a manifest always serializes"),
    )?;
    let names: Vec<String> = TESTS
        .iter()
        .map(|t| {
            let kind = if REFUSED.contains(&t.name) {
                "refuse"
            } else {
                "run"
            };
            format!("{}:{}:{kind}", t.name, t.vcpus)
        })
        .collect();
    let script = RUN_SH.replace("@TESTS@", &names.join(" "));
    let path = dir.join("run.sh");
    std::fs::write(&path, script)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(manifest)
}

/// The exported suite's runner: POSIX shell, grep and sed only.
const RUN_SH: &str = r#"#!/bin/sh
# The pvabi conformance suite, exported by `pvabi conform --export`. Runs every test image
# under your VMM and prints one verdict per test; exits with the worst (0 PASS, 3 SKIP,
# 4 ERROR, 5 FAIL, 6 CRASH).
#
#   HOST_CMD='my-vmm --vcpus {vcpus} --kernel {image}' ./run.sh
#
# {vcpus} stands for the number of vCPUs a test needs (manifest.json: "vcpus"); a VM with
# fewer makes that test SKIP the checks it cannot make.
# HOST_CMD must print the guest's console on stdout and exit with the guest's
# SYSTEM_SHUTDOWN code. Two kinds of test are about how the VM ends, which only the exit
# status shows: set FAULT_STATUS to the status for a VM that ended by a guest fault (an access
# outside guest RAM) and REFUSAL_STATUS to the status for an image the VMM refused to start
# (`pvabi run --exit-with-guest-code`: 133 and 134); without them those tests SKIP.
# A test that prints no END line is a CRASH (unless it announced, with an EXPECT line, that
# the VM is to end by a fault, and the status says it did; a test that announced SYSTEM_SHUTDOWN
# with a 32-bit code or SYSTEM_CRASH with a message SKIPs, as no exit status carries those);
# an END whose verdict
# does not match the exit status is an ERROR; a TRIPPED line (the VMM printed a buffer as the
# guest rewrote it after the call, not the copy it took) is a FAIL. (`pvabi conform --host-cmd` decides the same way
# and also checks every line; manifest.json lists the checks a conforming host reports.)
set -u
cd "$(dirname "$0")"
: "${HOST_CMD:?set HOST_CMD to your VMM command, with {image} for the image path}"
worst=0
rank() { case "$1" in PASS) echo 0;; SKIP) echo 3;; ERROR) echo 4;; FAIL) echo 5;; *) echo 6;; esac; }
for entry in @TESTS@; do
    t=${entry%%:*}
    rest=${entry#*:}
    vcpus=${rest%%:*}
    kind=${rest##*:}
    image="images/$t.elf"
    cmd=$(printf '%s' "$HOST_CMD" | sed "s|{image}|$image|g; s|{vcpus}|$vcpus|g")
    out=$(sh -c "$cmd" 2>/dev/null); code=$?
    end=$(printf '%s\n' "$out" | sed -n "s/^pvabi-conform: END $t \([A-Z]*\)$/\1/p" | tail -n 1)
    last=$(printf '%s\n' "$out" | grep '^pvabi-conform: ' | grep -v '^pvabi-conform: TRIPPED ' | tail -n 1)
    awaits=$(printf '%s\n' "$last" | sed -n 's/^pvabi-conform: EXPECT [^ ]* \([a-z]*\).*$/\1/p')
    if [ -z "$end" ] && [ "$t" = reset ] && { [ "$code" = 3 ] || [ "$code" = 131 ]; } \
        && printf '%s\n' "$out" | grep -q '^pvabi-conform reset guest: first boot' \
        && ! printf '%s\n' "$out" | grep -q '^pvabi-conform: '; then
        # The VMM ended the VM on SYSTEM_REBOOT instead of resetting it (PVABI-SYS-003
        # allows that): what a reset restores cannot be seen.
        echo "    SKIP reset -- the VMM ended the VM on SYSTEM_REBOOT (PVABI-SYS-003 allows it)"
        verdict=SKIP
    elif [ "$kind" = refuse ]; then
        # An image the VMM must refuse: no output at all, and the refusal status.
        if [ -n "$out" ]; then
            verdict=FAIL; echo "    the VMM started the image (it printed output)"
        elif [ -z "${REFUSAL_STATUS:-}" ]; then
            verdict=SKIP; echo "    set REFUSAL_STATUS to your VMM's exit status for an image it refuses"
        elif [ "$code" = "$REFUSAL_STATUS" ]; then
            verdict=PASS
        else
            verdict=FAIL; echo "    exit status $code, not REFUSAL_STATUS ($REFUSAL_STATUS)"
        fi
    elif [ -z "$end" ] && { [ "$awaits" = shutdown ] || [ "$awaits" = crash ]; }; then
        # The guest announced that the VM is to end by SYSTEM_SHUTDOWN with a 32-bit code or
        # by SYSTEM_CRASH with a message: an exit status carries neither.
        verdict=SKIP; echo "    the VM's end is SYSTEM_SHUTDOWN's 32-bit code or SYSTEM_CRASH's message, which an exit status cannot carry"
    elif [ -z "$end" ] && [ "${last#pvabi-conform: EXPECT }" != "$last" ]; then
        # The guest announced that the VM is to end by a fault; it ended without END.
        if [ -z "${FAULT_STATUS:-}" ]; then
            verdict=SKIP; echo "    set FAULT_STATUS to your VMM's exit status for a VM that faulted"
        elif [ "$code" = "$FAULT_STATUS" ]; then
            verdict=PASS
            for v in SKIP ERROR FAIL; do
                printf '%s\n' "$out" | grep -q "^pvabi-conform: $v " && verdict=$v
            done
        else
            verdict=CRASH
        fi
    elif [ -z "$end" ]; then
        verdict=CRASH
    elif [ "$(rank "$end")" != "$code" ]; then
        verdict=ERROR
    else
        verdict=$end
        # A test that asked for a host event the VMM did not perform (a REQUEST line with no
        # DONE line after it) reports checks whose premise did not hold; this runner cannot
        # sort them per check (pvabi conform --host-cmd turns them N/A), so a FAIL there is
        # a SKIP: never a PASS it cannot vouch for.
        if [ "$end" = FAIL ] && printf '%s\n' "$out" | grep -q '^pvabi-conform: REQUEST ' \
            && ! printf '%s\n' "$out" | grep -q '^pvabi-conform: DONE '; then
            verdict=SKIP; echo "    the VMM performed no host event the test asked for (no DONE line)"
        fi
    fi
    # A tripwire the VMM set off (it read a buffer again after the call returned and printed
    # what the guest had written there since): a FAIL, wherever the line landed.
    if printf '%s\n' "$out" | grep -q '^pvabi-conform: TRIPPED ' && [ "$(rank "$verdict")" -lt 5 ]; then
        verdict=FAIL
    fi
    printf '%s\n' "$out" | grep '^pvabi-conform: \(FAIL\|ERROR\|SKIP\|WARN\|TRIPPED\) ' | sed 's/^/    /'
    echo "$verdict $t"
    r=$(rank "$verdict")
    [ "$r" -gt "$worst" ] && worst=$r
done
exit "$worst"
"#;

/// The specification's requirements, as the suite traces them.
pub fn requirements() -> Vec<Requirement> {
    pvabi_spec::requirements()
        .into_iter()
        .map(|r| Requirement {
            id: r.id,
            level: r.level.keyword().to_owned(),
            party: r.party.name().to_owned(),
        })
        .collect()
}

/// The report of a run on `target`.
pub fn report(results: Vec<TestResult>, target: &Target) -> Report {
    let (mut requirements, _) = report::trace(&requirements(), &results);
    report::explain_gaps(&mut requirements, &pvabi_spec::traceability::gaps());
    let (implementation, profile) = match target {
        Target::Reference(host) => {
            let name_len = host.impl_name.iter().position(|&b| b == 0).unwrap_or(16);
            (
                serde_json::json!({
                    "id": host.impl_id,
                    "name": String::from_utf8_lossy(&host.impl_name[..name_len]),
                    "version": host.impl_version.packed(),
                    "host": "reference host (pvabi-host)",
                }),
                serde_json::json!({
                    "serves": host.served.iter().map(|v| v.to_string()).collect::<Vec<_>>(),
                }),
            )
        }
        Target::Command { template, .. } => (
            serde_json::json!({ "host_cmd": template }),
            serde_json::json!({}),
        ),
    };
    // What the implementation said about itself (the base test's INFO lines), whoever it is.
    let mut implementation = implementation;
    let facts = pvabi_conformance::profile::Facts::of(&results);
    if !facts.0.is_empty() {
        implementation["reported"] = serde_json::json!(facts.0);
    }
    Report {
        suite_version: env!("CARGO_PKG_VERSION").to_owned(),
        spec_version: pvabi_abi::version::Version(pvabi_abi::version::SPEC_VERSION).to_string(),
        implementation,
        profile,
        verdict: Verdict::worst(results.iter().map(|r| r.verdict)),
        requirements,
        tests: results,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pvabi_abi::calls::Call;
    use pvabi_host::vm::testing::kvm_or_skip;

    /// The careless guest's image with its first loadable segment moved to `paddr`.
    fn careless_at(paddr: u64) -> Vec<u8> {
        let mut image = pvabi_guest_images::careless().to_vec();
        let word = |img: &[u8], at: usize, n: usize| {
            let mut v = [0u8; 8];
            v[..n].copy_from_slice(&img[at..at + n]);
            u64::from_le_bytes(v) as usize
        };
        let (phoff, size, n) = (
            word(&image, 32, 8),
            word(&image, 54, 2),
            word(&image, 56, 2),
        );
        let load = (0..n)
            .map(|i| phoff + i * size)
            .find(|&at| word(&image, at, 4) == 1)
            .expect("a PT_LOAD segment");
        image[load + 24..load + 32].copy_from_slice(&paddr.to_le_bytes());
        image
    }

    /// Runs the catalogued `test` under a fake external VMM `script` (a shell command).
    fn external(
        test: &str,
        script: &str,
        statuses: Option<pvabi_conformance::profile::ExitStatuses>,
    ) -> TestResult {
        let info = TESTS.iter().find(|t| t.name == test).expect("catalogued");
        let scratch = tempfile::tempdir().expect("a scratch dir");
        run_external(info, script, scratch.path(), statuses.as_ref())
    }

    fn statuses(fault: i32, refusal: i32) -> Option<pvabi_conformance::profile::ExitStatuses> {
        Some(pvabi_conformance::profile::ExitStatuses {
            fault: Some(fault),
            refusal: Some(refusal),
        })
    }

    #[test]
    fn an_external_fault_passes_only_with_the_profiles_fault_status() {
        // A fake VMM that prints what the platform-fault guest prints up to its access, then
        // exits with a status.
        let printed = concat!(
            "printf 'pvabi-conform: BEGIN platform-fault\\npvabi-conform: EXPECT ",
            "platform-fault.access_beyond_guest_ram_ends_the_vm fault PVABI-PLAT-003 ",
            "-- a read\\n'; exit"
        );
        let run = |status: i32, statuses| {
            external(
                "platform-fault",
                &format!("{printed} {status} # {{image}}"),
                statuses,
            )
        };
        assert_eq!(run(133, statuses(133, 134)).verdict, Verdict::Pass);
        // Another status (a clean shutdown, a refusal, a crash report) is no guest fault.
        for status in [0, 5, 134, 132] {
            let r = run(status, statuses(133, 134));
            assert_eq!(r.verdict, Verdict::Crash, "{status}: {r:?}");
        }
        // Without the profile's statuses nothing can tell: SKIP, never PASS.
        let r = run(133, None);
        assert_eq!(r.verdict, Verdict::Skip, "{r:?}");
        // A guest that survived reports FAIL itself, whatever the statuses.
        let survived = concat!(
            "printf 'pvabi-conform: BEGIN platform-fault\\npvabi-conform: EXPECT ",
            "platform-fault.access_beyond_guest_ram_ends_the_vm fault\\n",
            "pvabi-conform: FAIL platform-fault.access_beyond_guest_ram_ends_the_vm ",
            "-- got 0x0\\npvabi-conform: END platform-fault FAIL\\n'; exit 5 # {image}"
        );
        let r = external("platform-fault", survived, statuses(5, 134));
        assert_eq!(r.verdict, Verdict::Fail, "{r:?}");
    }

    #[test]
    fn an_external_shutdown_or_crash_end_is_a_skip_whatever_the_status() {
        // A fake VMM that prints what the guest prints up to its call, then exits with a
        // status: no status carries a 32-bit code or a message, so nothing passes.
        for (test, expect) in [
            (
                "system-shutdown",
                "system-shutdown.code_reported_and_every_vcpu_stopped shutdown 0x5eed0007 PVABI-SYS-001",
            ),
            (
                "system-crash",
                "system-crash.message_reported_and_every_vcpu_stopped crash conform-crash-5eed0007 PVABI-SYS-005",
            ),
        ] {
            for status in [0, 7, 4, 133] {
                let script = format!(
                    "printf 'pvabi-conform: BEGIN {test}\\npvabi-conform: EXPECT {expect} -- x\\n'; exit {status} # {{image}}"
                );
                for st in [statuses(133, 134), None] {
                    let r = external(test, &script, st);
                    assert_eq!(r.verdict, Verdict::Skip, "{test} {status}: {r:?}");
                    assert!(matches!(r.end, RunEnd::Undetermined(_)), "{r:?}");
                }
            }
            // A guest whose call returned fails itself, as anywhere.
            let script = format!(
                "printf 'pvabi-conform: BEGIN {test}\\npvabi-conform: EXPECT {expect}\\npvabi-conform: FAIL {} -- returned\\npvabi-conform: END {test} FAIL\\n'; exit 5 # {{image}}",
                expect.split(' ').next().unwrap()
            );
            assert_eq!(external(test, &script, None).verdict, Verdict::Fail);
        }
    }

    #[test]
    fn the_system_end_tests_end_the_vm_as_they_announce_on_the_reference_host() {
        if !kvm_or_skip("the_system_end_tests_end_the_vm_as_they_announce_on_the_reference_host") {
            return;
        }
        for (test, end) in [
            ("system-shutdown", RunEnd::Shutdown(SYSTEM_SHUTDOWN_CODE)),
            (
                "system-crash",
                RunEnd::Crash("conform-crash-5eed0007".into()),
            ),
        ] {
            let info = TESTS.iter().find(|t| t.name == test).unwrap();
            let r = run_test(info, &HostConfig::default());
            assert_eq!((r.verdict, &r.end), (Verdict::Pass, &end), "{r:?}");
            // vCPU 1 was busy when vCPU 0 ended the VM.
            assert!(
                r.checks[0]
                    .message
                    .as_deref()
                    .unwrap()
                    .contains("vCPU 1 ringing"),
                "{r:?}"
            );
        }
    }

    #[test]
    fn an_external_refusal_passes_only_silent_and_with_the_profiles_refusal_status() {
        for test in REFUSED {
            let run = |script: &str, statuses| external(test, script, statuses);
            assert_eq!(
                run("exit 134 # {image}", statuses(133, 134)).verdict,
                Verdict::Pass
            );
            // A VMM that started the image: console output, or another status.
            let r = run("echo booting; exit 134 # {image}", statuses(133, 134));
            assert_eq!(r.verdict, Verdict::Fail, "{r:?}");
            for status in [0, 133, 6] {
                let r = run(&format!("exit {status} # {{image}}"), statuses(133, 134));
                assert_eq!(r.verdict, Verdict::Fail, "{status}: {r:?}");
            }
            // Without the profile's refusal status: SKIP, never PASS.
            assert_eq!(run("exit 134 # {image}", None).verdict, Verdict::Skip);
            assert_eq!(
                run("exit 0 # {image}", None).checks[0].requirements,
                ["PVABI-PLAT-005"]
            );
        }
    }

    #[test]
    fn the_refused_images_differ_from_a_good_one_only_in_where_they_load() {
        let ram = VmConfig::default().mem_bytes;
        let good = pvabi_guest_images::conform_platform_fault();
        assert_eq!(check_image_placement(good, ram), Ok(()));
        assert_eq!(relocated(good, 0), good);
        for image in [image_below_min_addr(), image_beyond_ram()] {
            assert_eq!(image.len(), good.len());
            assert!(check_image_placement(image, ram).is_err());
            assert!(check_image_placement(image, pvabi_abi::platform::MAX_MEM_BYTES).is_err());
        }
    }

    #[test]
    fn an_image_below_image_min_addr_or_beyond_ram_fails_plat_004_before_it_runs() {
        let ram = VmConfig::default().mem_bytes;
        assert_eq!(
            check_image_placement(pvabi_guest_images::careless(), ram),
            Ok(())
        );
        for (paddr, shows) in [(0x1000, "0x1000"), (ram, "within guest RAM")] {
            let image = careless_at(paddr);
            let why = check_image_placement(&image, ram).unwrap_err();
            assert!(
                why.contains(shows) && why.contains("IMAGE_MIN_ADDR"),
                "{why}"
            );
            // `--guest` reports it as the guest's failure, without starting the image (so
            // without KVM too).
            let r = check_guest(&image, 1);
            assert_eq!(r.verdict, Verdict::Fail, "{r:?}");
            assert_eq!(r.checks.len(), 1, "{r:?}");
            assert_eq!(r.checks[0].requirements, ["PVABI-PLAT-004"]);
            assert_eq!(r.checks[0].message.as_deref(), Some(why.as_str()));
        }
    }

    /// The whole reference run: the host suite on the reference host, then the demo guest under
    /// the checking host (the guest rules' results), `jobs` tests at a time.
    fn run_reference(jobs: usize) -> Vec<TestResult> {
        let tests: Vec<&TestInfo> = TESTS.iter().collect();
        let mut results = run_all(
            &Target::Reference(HostConfig::default()),
            &tests,
            jobs,
            &|_, _, _| {},
        );
        apply_profile(&reference_profile(), &mut results);
        results.push(check_guest(pvabi_guest_images::demo(), 1));
        results
    }

    #[test]
    fn the_reference_profile_claims_this_release() {
        let p = reference_profile();
        let i = p.implementation.expect("an identity");
        assert_eq!(i.version, env!("CARGO_PKG_VERSION"));
        let e = p.exit_status.expect("exit statuses for pvabi run");
        // What `pvabi run --exit-with-guest-code` exits with for a VM that faulted and for an
        // image it could not run.
        use crate::cmd::run::{EXIT_FAULT, EXIT_HOST_ERROR};
        assert_eq!(
            (e.fault, e.refusal),
            (
                Some(128 + i32::from(EXIT_FAULT)),
                Some(128 + i32::from(EXIT_HOST_ERROR))
            )
        );
    }

    #[test]
    fn every_check_cites_requirements_that_exist_and_the_traceability_data_is_current() {
        // Without KVM this still checks the catalogue; the citations are checked on KVM.
        assert!(!TESTS.is_empty());
        if !kvm_or_skip(
            "every_check_cites_requirements_that_exist_and_the_traceability_data_is_current",
        ) {
            return;
        }
        let results = run_reference(2);
        let (_, unknown) = report::trace(&requirements(), &results);
        assert!(unknown.is_empty(), "{unknown:?}");
        // The committed traceability data (the spec's table comes from it) says what this run
        // says: the same tests, checks, citations and verdicts.
        // Warnings are left out of the comparison: whether a SHOULD held can depend on the
        // machine's load (TIME-037's update interval does), and a warning fails nothing.
        let without_warnings = |mut run: pvabi_conformance::traceability::ReferenceRun| {
            for c in run.tests.iter_mut().flat_map(|t| t.checks.iter_mut()) {
                c.warning = false;
            }
            run
        };
        let fresh = reference_run(&results);
        let committed = pvabi_spec::traceability::reference_run();
        assert!(
            without_warnings(fresh.clone()) == without_warnings(committed),
            "conformance/traceability.json is out of date: run `cargo run --release -- conform \
             --write-trace conformance/traceability.json` and `cargo run -- spec --update`\n\
             fresh run:\n{}",
            fresh.to_json()
        );
    }

    #[test]
    fn the_reference_host_passes_and_a_host_that_lacks_a_call_fails() {
        if !kvm_or_skip("the_reference_host_passes_and_a_host_that_lacks_a_call_fails") {
            return;
        }
        let base = &TESTS[0];
        let good = run_test(base, &HostConfig::default());
        assert_eq!(good.verdict, Verdict::Pass, "{good:#?}");
        assert!(good.checks.len() >= 15, "{good:#?}");
        // A host that leaves out PROBE_FEATURES breaks BASE-009: the suite must say FAIL, and
        // name the checks.
        let broken = HostConfig {
            disabled_calls: vec![Call::ProbeFeatures],
            ..HostConfig::default()
        };
        let bad = run_test(base, &broken);
        assert_eq!(bad.verdict, Verdict::Fail, "{bad:#?}");
        let failed: Vec<_> = bad
            .checks
            .iter()
            .filter(|c| c.verdict == Verdict::Fail)
            .map(|c| c.name.as_str())
            .collect();
        assert!(
            failed.contains(&"base.probe_features_before_negotiate"),
            "{failed:?}"
        );
    }

    /// The checks of `test` that failed under `host`.
    fn failures(test: &str, host: HostConfig) -> (Verdict, Vec<String>) {
        let info = TESTS
            .iter()
            .find(|t| t.name == test)
            .expect("a catalogued test");
        let r = run_test(info, &host);
        let failed = r
            .checks
            .iter()
            .filter(|c| c.verdict == Verdict::Fail)
            .map(|c| c.name.clone())
            .collect();
        (r.verdict, failed)
    }

    #[test]
    fn the_host_rule_tests_fail_on_hosts_that_break_their_rules() {
        if !kvm_or_skip("the_host_rule_tests_fail_on_hosts_that_break_their_rules") {
            return;
        }
        // A host that performs calls made at CPL3 breaks CONV-013; the marker of the one
        // access it performed names it, and only it.
        let (verdict, failed) = failures(
            "convention",
            HostConfig {
                allow_user_mode_calls: true,
                ..HostConfig::default()
            },
        );
        assert_eq!(verdict, Verdict::Fail);
        assert_eq!(
            failed,
            ["convention.call_at_cpl3_is_not_supported_and_performs_no_call"]
        );
        // Poisoned undefined results are a configuration constant: legal.
        let strict = HostConfig {
            strict: true,
            ..HostConfig::default()
        };
        assert_eq!(failures("convention", strict).0, Verdict::Pass);
        // A host that leaves out one call of a feature it offers breaks VER-001 and VER-006.
        let (verdict, failed) = failures(
            "version",
            HostConfig {
                disabled_calls: vec![Call::MemShare],
                ..HostConfig::default()
            },
        );
        assert_eq!(verdict, Verdict::Fail);
        for check in [
            "version.every_defined_call_is_known_before_negotiate",
            "version.every_call_of_an_offered_feature_is_implemented",
        ] {
            assert!(failed.iter().any(|f| f == check), "{failed:?}");
        }
        // A host serving 1.0 only still passes the version-independent tests; there the
        // version test also finds the calls of 1.1 unknown (COMPAT-002).
        let v1_0 = HostConfig::acting_as(pvabi_abi::version::V1_0);
        for test in ["status", "version", "convention", "platform"] {
            assert_eq!(failures(test, v1_0.clone()).0, Verdict::Pass, "{test}");
        }
        let version = TESTS
            .iter()
            .find(|t| t.name == "version")
            .expect("catalogued");
        let r = run_test(version, &v1_0);
        for check in [
            "version.calls_of_later_minors_are_unknown_before_negotiate",
            "version.calls_of_later_minors_are_unknown_after_negotiate",
        ] {
            assert!(
                r.checks
                    .iter()
                    .any(|c| c.name == check && c.verdict == Verdict::Pass),
                "{r:#?}"
            );
        }
        // And so does a host acting as 1.1.
        let v1_1 = HostConfig::acting_as(pvabi_abi::version::V1_1);
        assert_eq!(failures("version", v1_1).0, Verdict::Pass);
    }

    #[test]
    fn an_unmet_should_is_a_warning_not_a_failure() {
        if !kvm_or_skip("an_unmet_should_is_a_warning_not_a_failure") {
            return;
        }
        // A host on other ports than the defaults (DISC-009, a SHOULD) still passes the base
        // test; the check warns, and the trace shows the rule as a warning.
        let moved = HostConfig {
            doorbell_port: 0x5660,
            ring_notify_port: 0x5664,
            ..HostConfig::default()
        };
        let r = run_test(&TESTS[0], &moved);
        assert_eq!(r.verdict, Verdict::Pass, "{r:#?}");
        let c = r
            .checks
            .iter()
            .find(|c| c.name == "base.the_default_ports_are_used")
            .expect("the check ran");
        assert!(c.warning && c.verdict == Verdict::Pass, "{c:#?}");
        let (traced, _) = report::trace(&requirements(), std::slice::from_ref(&r));
        let disc_009 = traced.iter().find(|q| q.id == "PVABI-DISC-009").unwrap();
        assert_eq!(disc_009.verdict, report::RequirementVerdict::Warning);
        // On the default ports it holds.
        let r = run_test(&TESTS[0], &HostConfig::default());
        assert!(r.checks.iter().all(|c| !c.warning), "{r:#?}");
    }

    #[test]
    fn the_compat_mode_test_tells_conv_032_from_conv_013_only_on_a_host_performing_cpl3_calls() {
        if !kvm_or_skip(
            "the_compat_mode_test_tells_conv_032_from_conv_013_only_on_a_host_performing_cpl3_calls",
        ) {
            return;
        }
        let test = TESTS
            .iter()
            .find(|t| t.name == "convention-compat-mode")
            .expect("catalogued");
        // As catalogued: the host performs the 64-bit ring-3 NEGOTIATE, and only the mode
        // keeps the compatibility-mode one from being a call.
        let r = run_test(test, &HostConfig::default());
        assert_eq!(r.verdict, Verdict::Pass, "{r:#?}");
        assert_eq!(
            r.info.get("cpl3_calls_performed").map(String::as_str),
            Some("0x1"),
            "{r:#?}"
        );
        assert_eq!(r.checks.len(), 2, "{r:#?}");
        assert!(r.checks.iter().all(|c| c.verdict == Verdict::Pass));
        // Under a host that refuses every CPL3 call (as an external VMM may be), the checks
        // hold too, and the run says they could not tell the two rules apart.
        let refusing = TestInfo {
            host: as_served,
            ..*test
        };
        let r = run_test(&refusing, &HostConfig::default());
        assert_eq!(r.verdict, Verdict::Pass, "{r:#?}");
        assert_eq!(
            r.info.get("cpl3_calls_performed").map(String::as_str),
            Some("0x0"),
            "{r:#?}"
        );
    }

    #[test]
    fn the_reset_test_passes_on_a_host_that_resets_and_skips_on_one_that_ends() {
        if !kvm_or_skip("the_reset_test_passes_on_a_host_that_resets_and_skips_on_one_that_ends") {
            return;
        }
        let reset = TESTS
            .iter()
            .find(|t| t.name == RESET_TEST)
            .expect("catalogued");
        let r = run_test(reset, &HostConfig::default());
        assert_eq!(r.verdict, Verdict::Pass, "{r:#?}");
        assert_eq!(
            r.info.get("resets_on_reboot").map(String::as_str),
            Some("0x1")
        );
        // The same image on a host that ends the VM on SYSTEM_REBOOT (SYS-003 allows it).
        let ends = TestInfo {
            host: as_served,
            ..*reset
        };
        let mut results = vec![run_test(&ends, &HostConfig::default())];
        let r = &results[0];
        assert_eq!(r.verdict, Verdict::Skip, "{r:#?}");
        assert!(r
            .checks
            .iter()
            .any(|c| c.verdict == Verdict::Pass && c.requirements == ["PVABI-SYS-003"]));
        // ... unless its profile claims that it resets.
        let profile = parse_profile("[reboot]\nresets = true\n").expect("a valid profile");
        apply_profile(&profile, &mut results);
        let claim = results.last().expect("the profile test");
        assert_eq!(claim.verdict, Verdict::Fail, "{claim:#?}");
    }

    #[test]
    fn a_guest_that_never_reports_is_a_crash() {
        if !kvm_or_skip("a_guest_that_never_reports_is_a_crash") {
            return;
        }
        // The demo guest knows nothing of the channel: however well it ends, no verdict.
        let demo = TestInfo {
            name: "base",
            what: "not a conformance test",
            image: pvabi_guest_images::demo,
            vcpus: 1,
            host: as_served,
        };
        let r = run_test(&demo, &HostConfig::default());
        assert_eq!(r.verdict, Verdict::Crash, "{r:#?}");
    }
}
