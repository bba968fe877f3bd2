//! The C guest (`guest-ref/c-demo`): proof that `include/pvabi.h` serves a guest written in C.
//!
//! The tests build the guest with the C compiler itself, with exactly the flags of its
//! Makefile (`makefile_and_tests_use_the_same_flags` keeps the two in step), into a directory
//! under `CARGO_TARGET_TMPDIR`, and boot it on `/dev/kvm` under the reference host
//! ([`PvabiPorts`](pvabi_host::PvabiPorts)). They check both sides: the lines the guest printed, and what the host
//! recorded in its [`Report`](pvabi_host::dispatch::Report).
//!
//! A missing compiler is a failure that names the fix (`apt-get install -y gcc`); a missing
//! `/dev/kvm` is a loud SKIP of the boot ([`kvm_or_skip`]), a failure under `CI=true`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use pvabi_abi::calls::Call;
use pvabi_abi::features::Features;
use pvabi_abi::status::Status;
use pvabi_abi::version::Version;
use pvabi_host::dispatch::{ConsoleSink, End, HostConfig, Report};
use pvabi_host::runner::{self, RunConfig};
use pvabi_host::vm::testing::kvm_or_skip;
use pvabi_host::vm::{VmConfig, VmEnd};

/// Compiler flags: the Makefile's `CFLAGS`, word for word.
const CFLAGS: &[&str] = &[
    "-std=c11",
    "-Wall",
    "-Wextra",
    "-Werror",
    "-pedantic",
    "-ffreestanding",
    "-fno-pic",
    "-fno-pie",
    "-fno-stack-protector",
    "-fno-asynchronous-unwind-tables",
    "-mno-red-zone",
    "-mgeneral-regs-only",
    "-O2",
];

/// Linker flags: the Makefile's `LDFLAGS`, word for word (the linker script comes on top).
const LDFLAGS: &[&str] = &[
    "-nostdlib",
    "-static",
    "-no-pie",
    "-Wl,--build-id=none",
    "-Wl,--fatal-warnings",
];

/// The flags the guest must be built with whatever else changes: freestanding, static, at a
/// fixed address, no SSE (ring-0 guest code is emulated without it on PVM hosts), warnings
/// are errors.
const REQUIRED_FLAGS: &[&str] = &[
    "-ffreestanding",
    "-nostdlib",
    "-static",
    "-no-pie",
    "-fno-pic",
    "-mno-red-zone",
    "-mgeneral-regs-only",
    "-fno-stack-protector",
    "-O2",
    "-std=c11",
    "-Wall",
    "-Wextra",
    "-Werror",
    "-pedantic",
];

/// The guest's sources: compiled in this order, linked in this order.
const SOURCES: &[&str] = &["start.S", "main.c", "mem.c"];

/// What the guest requires and what it takes if offered (main.c).
const REQUIRED: Features = Features::CONSOLE
    .union(Features::TIME)
    .union(Features::EVENTS)
    .union(Features::SYSTEM);
const OPTIONAL: Features = Features::VCPU;

/// How long a boot may take before the watchdog ends the VM (the guest needs about a second
/// on a PVM host, where its ring-0 code is emulated).
const WATCHDOG: Duration = Duration::from_secs(120);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host-ref lives inside the repository")
        .to_path_buf()
}

fn c_demo() -> PathBuf {
    repo().join("guest-ref").join("c-demo")
}

/// A fresh directory for one test's build output (removed again when the build succeeded).
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("c_guest-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}

/// Panics, naming the fix, unless `tool --version` runs.
fn require_tool(tool: &str, package: &str) {
    let works = Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        works,
        "`{tool}` is needed to build the C guest (guest-ref/c-demo) but cannot be run. \
         Install it: `apt-get install -y {package}` (or run ./scripts/test.sh as root, which \
         installs it)"
    );
}

/// Runs one compiler command; panics with its output if it fails or prints anything (with
/// -Werror and --fatal-warnings, any diagnostic is a bug).
fn run_compiler(cc: &[&str], args: &[String]) {
    let mut cmd = Command::new(cc[0]);
    cmd.args(&cc[1..]).args(args);
    let shown = format!("{} {}", cc.join(" "), args.join(" "));
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{shown}`: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "`{shown}` failed ({}):\n{stderr}",
        out.status
    );
    assert!(
        stderr.trim().is_empty(),
        "`{shown}` printed diagnostics:\n{stderr}"
    );
}

/// Builds the C guest with `cc` (a compiler and its leading arguments) into `out`, exactly as
/// the Makefile does, and returns the ELF image.
fn build(cc: &[&str], out: &Path) -> Vec<u8> {
    let src = c_demo();
    let include = repo().join("include");
    let mut objects = Vec::new();
    for source in SOURCES {
        let object = out.join(Path::new(source).with_extension("o"));
        let mut args: Vec<String> = CFLAGS.iter().map(|s| s.to_string()).collect();
        if source.ends_with(".c") {
            args.push(format!("-I{}", include.display()));
        }
        args.extend([
            "-c".to_string(),
            "-o".to_string(),
            object.display().to_string(),
            src.join(source).display().to_string(),
        ]);
        run_compiler(cc, &args);
        objects.push(object.display().to_string());
    }
    let elf = out.join("c-demo.elf");
    let mut args: Vec<String> = CFLAGS
        .iter()
        .chain(LDFLAGS)
        .map(|s| s.to_string())
        .collect();
    args.push(format!("-Wl,-T,{}", src.join("link.ld").display()));
    args.extend(["-o".to_string(), elf.display().to_string()]);
    args.extend(objects);
    run_compiler(cc, &args);
    let image =
        std::fs::read(&elf).unwrap_or_else(|e| panic!("cannot read {}: {e}", elf.display()));
    check_elf(&image);
    check_no_vector_registers(&elf);
    // Built and checked: the directory is kept only when something went wrong.
    let _ = std::fs::remove_dir_all(out);
    image
}

/// The image is a static x86-64 executable whose entry is at the 0x200000 convention.
fn check_elf(image: &[u8]) {
    assert!(
        image.len() > 64 && image[..4] == *b"\x7fELF",
        "not an ELF file"
    );
    assert_eq!(image[4], 2, "not a 64-bit ELF");
    assert_eq!(u16::from_le_bytes([image[16], image[17]]), 2, "not ET_EXEC");
    assert_eq!(u16::from_le_bytes([image[18], image[19]]), 62, "not x86-64");
    let entry = u64::from_le_bytes(image[24..32].try_into().unwrap());
    assert_eq!(entry, 0x20_0000, "entry point is not _start at 0x200000");
}

/// The image uses no SSE/AVX register: ring-0 code on a PVM host is emulated without them
/// (`-mgeneral-regs-only` keeps the compiler from using them; this catches hand-written ones).
fn check_no_vector_registers(elf: &Path) {
    let out = Command::new("objdump")
        .args(["-d", "--no-show-raw-insn"])
        .arg(elf)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run objdump ({e}): install binutils (`apt-get install -y binutils`)")
        });
    assert!(out.status.success(), "objdump failed on {}", elf.display());
    let text = String::from_utf8_lossy(&out.stdout);
    let vector: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("%xmm") || l.contains("%ymm") || l.contains("%zmm"))
        .take(5)
        .collect();
    assert!(
        text.lines().filter(|l| l.contains(":\t")).count() > 100,
        "the C guest disassembled to almost nothing:\n{text}"
    );
    assert!(
        vector.is_empty(),
        "the C guest uses vector registers:\n{}",
        vector.join("\n")
    );
}

/// The VM ended how, the host recorded what.
struct Run {
    end: VmEnd,
    report: Report,
    config: HostConfig,
}

impl Run {
    fn console(&self) -> String {
        self.report.console_text()
    }

    /// Everything worth seeing when an assertion fails.
    fn dump(&self) -> String {
        format!(
            "VM end: {}\n--- guest console ---\n{}--- end of console ---",
            self.end,
            self.console()
        )
    }
}

/// Boots `image` on one vCPU under a reference host configured by `config`.
fn boot(image: &[u8], config: HostConfig) -> Run {
    let run = RunConfig {
        host: config.clone(),
        vm: VmConfig::default(),
        timeout: Some(WATCHDOG),
    };
    let outcome = runner::run(image, run).expect("VM ran");
    Run {
        end: outcome.end,
        report: outcome.report,
        config,
    }
}

/// The guest's lines, checked to all carry its prefix.
fn lines(run: &Run) -> Vec<String> {
    let text = run.console();
    assert!(
        text.ends_with('\n'),
        "console does not end a line\n{}",
        run.dump()
    );
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    for line in &lines {
        assert!(
            line.starts_with("c-demo: "),
            "a console line without the guest's prefix: {line:?}\n{}",
            run.dump()
        );
        assert!(
            !line.contains("FAIL"),
            "the guest failed: {line}\n{}",
            run.dump()
        );
    }
    lines
}

/// Finds, from `*from` on, the line that starts with `prefix`, and moves `*from` past it.
fn take<'a>(lines: &'a [String], from: &mut usize, prefix: &str, run: &Run) -> &'a str {
    let full = format!("c-demo: {prefix}");
    match lines[*from..].iter().position(|l| l.starts_with(&full)) {
        Some(i) => {
            *from += i + 1;
            &lines[*from - 1][full.len()..]
        }
        None => panic!(
            "no line starting with {full:?} after line {} (in order)\n{}",
            *from,
            run.dump()
        ),
    }
}

/// The number after `key` in `text` (decimal, or hex with 0x).
fn number_after(text: &str, key: &str) -> u64 {
    let start = text
        .find(key)
        .unwrap_or_else(|| panic!("{key:?} not in {text:?}"))
        + key.len();
    let digits: String = text[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect();
    match digits.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => digits.parse(),
    }
    .unwrap_or_else(|e| panic!("no number after {key:?} in {text:?}: {e}"))
}

fn version(v: Version) -> String {
    format!("{}.{}", v.major(), v.minor())
}

/// The checks every successful boot of the demo passes, on the guest's side and the host's.
fn assert_demo_passed(run: &Run, vcpu_halt: bool) {
    eprintln!("{}", run.dump());
    assert_eq!(run.end, VmEnd::Shutdown(0), "\n{}", run.dump());
    let lines = lines(run);
    let config = &run.config;
    let accepted = config.served_major(1).expect("the host serves major 1");
    let granted = REQUIRED | (OPTIONAL & config.offered_at(accepted));
    let mut at = 0;

    // What the guest printed, in order.
    take(
        &lines,
        &mut at,
        "pvabi C demo guest, built from include/pvabi.h",
        run,
    );
    assert_eq!(
        take(&lines, &mut at, "boot: ", run),
        "vCPU 0 of 1, 64 MiB of RAM"
    );
    let leaf = config.cpuid_base;
    assert_eq!(
        take(&lines, &mut at, "discovery: ", run),
        format!(
            "signature at CPUID {leaf:#x} (leaves up to {:#x}), doorbell port {:#x}, \
             transport flags 0x1",
            leaf + 3,
            config.doorbell_port
        )
    );
    assert_eq!(
        take(&lines, &mut at, "base: ", run),
        format!(
            "host serves {} to {}, implementation 1 \"pvabi-ref\", offers {:#x}",
            version(config.lowest),
            version(config.highest()),
            config.offered_at(config.highest()).bits()
        )
    );
    assert_eq!(
        take(&lines, &mut at, "negotiate: ", run),
        format!(
            "requested 1.0 required {:#x} optional {:#x} -> accepted {} granted {:#x}",
            REQUIRED.bits(),
            OPTIONAL.bits(),
            version(accepted),
            granted.bits()
        )
    );
    take(
        &lines,
        &mut at,
        "console: hello from C through CONSOLE_WRITE_REGS",
        run,
    );
    take(
        &lines,
        &mut at,
        "console: hello from C through CONSOLE_WRITE",
        run,
    );
    assert!(take(
        &lines,
        &mut at,
        "rules: CONSOLE_WRITE of a block across",
        run
    )
    .ends_with("-> CROSSES_PAGE"));
    assert!(take(&lines, &mut at, "rules: CONSOLE_WRITE too long", run)
        .ends_with("-> INVALID_PARAMETER"));
    take(
        &lines,
        &mut at,
        "console: this line straddles a page boundary",
        run,
    );
    assert!(take(
        &lines,
        &mut at,
        "rules: TIME_SET_PAGE at a page address + 8",
        run
    )
    .ends_with("-> MISALIGNED"));
    assert!(take(
        &lines,
        &mut at,
        "rules: CONSOLE_WRITE from the host-owned time page",
        run
    )
    .ends_with("-> ACCESS_DENIED"));
    let freq = take(&lines, &mut at, "time: ", run);
    // tsc_hz: the configured rate, or (configured 0) the rate the host read from KVM.
    let hz = number_after(freq, "tsc_hz ");
    assert!(
        hz == config.tsc_hz || config.tsc_hz == 0,
        "{freq} (configured {})",
        config.tsc_hz
    );
    assert_eq!(
        freq,
        format!(
            "tsc_hz {hz}, timer resolution {} ns",
            config.timer_resolution_ns
        )
    );
    let read1 = take(&lines, &mut at, "time page read 1: ", run);
    let read2 = take(&lines, &mut at, "time page read 2: ", run);
    let (seq1, seq2) = (
        number_after(read1, "sequence "),
        number_after(read2, "sequence "),
    );
    let (mono1, mono2) = (
        number_after(read1, "monotonic_ns "),
        number_after(read2, "monotonic_ns "),
    );
    assert!(
        seq1 % 2 == 0 && seq2 % 2 == 0 && seq2 > seq1,
        "{read1} / {read2}"
    );
    assert!(
        mono2 > mono1,
        "monotonic time did not advance: {read1} / {read2}"
    );
    assert!(
        number_after(read1, "wall clock ") > 1_600_000_000,
        "{read1}"
    );
    let advanced = take(
        &lines,
        &mut at,
        "time page: monotonic time advanced by ",
        run,
    );
    assert_eq!(advanced, format!("{} ns between the reads", mono2 - mono1));
    // The reference host sets TSC_VALID when it can read the guest's TSC (on this project's
    // KVM it can): the C guest then interpolates with the header's formula.
    let now = take(&lines, &mut at, "time page: TSC_VALID ", run);
    assert!(
        now.starts_with("set, current time from the TSC: ")
            || now.starts_with("clear, current time from TIME_MONOTONIC: "),
        "{now}"
    );
    assert!(number_after(now, ": ") >= mono2, "{now}");
    assert_eq!(
        take(&lines, &mut at, "events: queue at ", run)
            .split_once(", ")
            .map(|x| x.1),
        Some("vector 0x40, capacity 128, every kind masked (mask 0x1e)")
    );
    let timer = take(&lines, &mut at, "timer: armed at ", run);
    let (armed, deadline) = (number_after(timer, ""), number_after(timer, "deadline "));
    assert_eq!(deadline, armed + 2_000_000, "{timer}");
    if vcpu_halt {
        take(
            &lines,
            &mut at,
            "timer: woke from VCPU_HALT (reason EVENT)",
            run,
        );
    } else {
        take(
            &lines,
            &mut at,
            "timer: VCPU not granted: polled the queue",
            run,
        );
    }
    assert_eq!(
        take(&lines, &mut at, "events: TIMER event ", run),
        "from vCPU 0 with data = the deadline; queue head 1 tail 1 interrupt_pending 0 dropped 0"
    );
    take(
        &lines,
        &mut at,
        "PASS: every check passed; SYSTEM_SHUTDOWN(0)",
        run,
    );
    assert_eq!(at, lines.len(), "lines after PASS\n{}", run.dump());

    // What the host recorded.
    let r = &run.report;
    let ctx = run.dump();
    assert_eq!(r.end, Some(End::Shutdown(0)), "{ctx}");
    assert_eq!(r.negotiated, Some((accepted, granted)), "{ctx}");
    assert_eq!(r.total(Call::Negotiate), 1, "{ctx}");
    assert_eq!(r.count(Call::Negotiate, Status::Success), 1, "{ctx}");
    // The console stream is exactly the guest's lines, whole.
    assert_eq!(r.console_bytes, r.console.len() as u64, "{ctx}");
    let regs_line = "c-demo: console: hello from C through CONSOLE_WRITE_REGS\n";
    assert_eq!(
        r.count(Call::ConsoleWriteRegs, Status::Success),
        regs_line.len().div_ceil(32) as u64,
        "the register form is split into 32-byte calls\n{ctx}"
    );
    // The broken rules: each rejected with its status, and nothing else failed.
    assert_eq!(r.count(Call::ConsoleWrite, Status::CrossesPage), 1, "{ctx}");
    assert_eq!(
        r.count(Call::ConsoleWrite, Status::InvalidParameter),
        1,
        "{ctx}"
    );
    assert_eq!(
        r.count(Call::ConsoleWrite, Status::AccessDenied),
        1,
        "{ctx}"
    );
    assert_eq!(r.count(Call::TimeSetPage, Status::Misaligned), 1, "{ctx}");
    assert_eq!(r.count(Call::TimeSetPage, Status::Success), 1, "{ctx}");
    let failed: u64 = r
        .calls
        .values()
        .map(|c| c.total - c.status(Status::Success))
        .sum();
    assert_eq!(
        failed, 4,
        "only the four deliberate rule breaks fail: {:?}\n{ctx}",
        r.calls
    );
    // The time page was refreshed between the guest's two reads.
    assert!(r.time_page_updates >= 2, "{ctx}");
    // The timer fired once and its event was queued, with no interrupt (every kind masked).
    assert_eq!(r.count(Call::EventsSetQueue, Status::Success), 1, "{ctx}");
    assert_eq!(r.count(Call::EventsSetMask, Status::Success), 1, "{ctx}");
    assert_eq!(r.count(Call::TimeSetTimer, Status::Success), 1, "{ctx}");
    assert_eq!(r.timers_fired, 1, "{ctx}");
    assert_eq!(r.events_posted, 1, "{ctx}");
    assert_eq!(r.events_dropped, 0, "{ctx}");
    assert_eq!(r.interrupts_raised, 0, "{ctx}");
    if vcpu_halt {
        assert!(r.halt_events >= 1, "{ctx}");
        assert_eq!(r.halt_timeouts, 0, "{ctx}");
    } else {
        assert_eq!(r.total(Call::VcpuHalt), 0, "{ctx}");
    }
    assert_eq!(r.count(Call::SystemShutdown, Status::Success), 1, "{ctx}");
}

/// The Makefile variable `name` (`NAME = words`), as words.
fn makefile_words(makefile: &str, name: &str) -> Vec<String> {
    let line = makefile
        .lines()
        .find(|l| {
            l.split_once('=')
                .is_some_and(|(k, _)| k.trim() == name && !l.trim_start().starts_with('#'))
        })
        .unwrap_or_else(|| panic!("no `{name} = ...` line in guest-ref/c-demo/Makefile"));
    assert!(
        !line.ends_with('\\'),
        "keep {name} on one line in the Makefile"
    );
    let (_, value) = line.split_once('=').unwrap();
    value.split_whitespace().map(str::to_string).collect()
}

#[test]
fn makefile_and_tests_use_the_same_flags() {
    let makefile = std::fs::read_to_string(c_demo().join("Makefile")).expect("Makefile");
    assert_eq!(
        makefile_words(&makefile, "CFLAGS"),
        CFLAGS,
        "CFLAGS drifted"
    );
    assert_eq!(
        makefile_words(&makefile, "LDFLAGS"),
        LDFLAGS,
        "LDFLAGS drifted"
    );
    for flag in REQUIRED_FLAGS {
        assert!(
            CFLAGS.contains(flag) || LDFLAGS.contains(flag),
            "the C guest must be built with {flag}"
        );
    }
    // Every source file the tests build is one the Makefile builds, and the other way round.
    let objects = makefile_words(&makefile, "OBJS");
    let built: Vec<String> = SOURCES
        .iter()
        .map(|s| format!("$(BUILD)/{}", Path::new(s).with_extension("o").display()))
        .collect();
    assert_eq!(objects, built, "OBJS and the tests' SOURCES differ");
}

/// The main test: gcc builds the guest, and it passes every check under the reference host.
#[test]
fn c_guest_runs_under_the_reference_host() {
    require_tool("gcc", "gcc");
    let image = build(&["gcc"], &scratch("gcc"));
    if !kvm_or_skip("c_guest_runs_under_the_reference_host") {
        return;
    }
    let config = HostConfig {
        console: ConsoleSink::Discard,
        ..HostConfig::default()
    };
    let run = boot(&image, config);
    assert_demo_passed(&run, true);
}

/// Guest conformance (`pvabi conform --guest`'s host): under a host that checks its guest and
/// is demanding but legal (INCOMPLETE at every MULTICALL index, the time page left mid-update
/// at every refresh, poisoned undefined results, a feature bit no version defines), the C
/// guest, written from the header alone, breaks no guest rule the host can see, and still
/// passes every check of its own.
#[test]
fn c_guest_breaks_no_guest_rule_under_a_checking_host() {
    require_tool("gcc", "gcc");
    let image = build(&["gcc"], &scratch("gcc-checked"));
    if !kvm_or_skip("c_guest_breaks_no_guest_rule_under_a_checking_host") {
        return;
    }
    let config = HostConfig {
        console: ConsoleSink::Discard,
        ..HostConfig::checking()
    };
    let mut dispatcher = None;
    let outcome = runner::run_with(
        &image,
        RunConfig {
            host: config.clone(),
            vm: VmConfig::default(),
            timeout: Some(WATCHDOG),
        },
        |_, d| dispatcher = Some(d.clone()),
    )
    .expect("VM ran");
    let seen = dispatcher
        .and_then(|d| d.guest_check())
        .expect("a checking host reports what it saw");
    assert!(seen.violations.is_empty(), "{seen:#?}");
    // The checks were exercised: calls, feature calls and timers (the C guest makes no
    // MULTICALL of more than one entry, so no batch of it is preempted).
    for rule in [
        "PVABI-CONV-012",
        "PVABI-CONV-030",
        "PVABI-BASE-016",
        "PVABI-TIME-014",
    ] {
        assert!(
            seen.exercised.get(rule).copied().unwrap_or(0) > 0,
            "{rule} not exercised: {seen:#?}"
        );
    }
    // PVABI-DEFER-001, PVABI-RING-001, PVABI-MEM-013, PVABI-DEFER-008: the C guest registers
    // no deferred queue and no ring, so the checking host opened no step window and the rules
    // are not exercised (a SKIP).
    for rule in [
        "PVABI-DEFER-001",
        "PVABI-RING-001",
        "PVABI-MEM-013",
        "PVABI-DEFER-008",
    ] {
        assert_eq!(seen.exercised.get(rule), None, "{seen:#?}");
    }
    assert_eq!(seen.step_windows, (0, 0), "{seen:#?}");
    // PVABI-EVT-010: the checking host watched the event queue's page (every access of the
    // guest to it exits) and saw the C guest read each entry before storing `head` past it;
    // PVABI-RING-006: it sets up no ring, so no completion ring was watched.
    assert!(
        seen.exercised.get("PVABI-EVT-010").copied().unwrap_or(0) > 0,
        "{seen:#?}"
    );
    assert_eq!(seen.exercised.get("PVABI-RING-006"), None, "{seen:#?}");
    assert!(seen.watched_accesses > 0, "{seen:#?}");
    assert_eq!(seen.pte_steps, Default::default(), "{seen:#?}");
    // PVABI-MEM-022: the C guest keeps the platform's 4-level paging (no exit shows CR4.LA57),
    // so no MEM_UPDATE_PTE of it comes under the PML5 check.
    assert_eq!(seen.exercised.get("PVABI-MEM-022"), None, "{seen:#?}");
    // PVABI-DISC-004, PVABI-CONV-010: the discovery trace (vCPU 0 single-stepped at CPL0 up
    // to its first port write) saw the guest read the signature leaf, nothing above the leaf
    // its eax names, and no vmcall or vmmcall.
    let trace = outcome
        .discovery
        .clone()
        .expect("a checking host traces discovery");
    assert!(trace.stepping && trace.reached_port_write, "{trace:#?}");
    let base = config.cpuid_base;
    assert!(trace.cpuid.iter().any(|r| r.leaf == base), "{trace:#?}");
    let above = base + pvabi_abi::discovery::CPUID_LEAF_MAX + 1..=base + 0xff;
    assert!(
        trace.cpuid.iter().all(|r| !above.contains(&r.leaf)),
        "{trace:#?}"
    );
    assert!(trace.hypercalls.is_empty(), "{trace:#?}");
    // PVABI-BASE-005: under the same host with another implementation identity, the same
    // calls (as far as timing cannot change them: guest_check::identity).
    let twin = config.with_twin_identity();
    let mut twin_dispatcher = None;
    let twin_outcome = runner::run_with(
        &image,
        RunConfig {
            host: twin.clone(),
            vm: VmConfig::default(),
            timeout: Some(WATCHDOG),
        },
        |_, d| twin_dispatcher = Some(d.clone()),
    )
    .expect("VM ran");
    assert!(
        matches!(twin_outcome.end, VmEnd::Shutdown(0)),
        "{}",
        twin_outcome.end
    );
    let twin_seen = twin_dispatcher
        .and_then(|d| d.guest_check())
        .expect("a checking host reports what it saw");
    {
        use pvabi_host::dispatch::guest_check::identity::{compare, IdentityRun};
        let run = |calls, identity: &str| IdentityRun {
            calls,
            complete: true,
            identity: identity.to_owned(),
        };
        let (a, b) = (run(&seen.calls, "reference"), run(&twin_seen.calls, "twin"));
        let diffs = compare([&a, &b]);
        assert!(diffs.is_empty(), "{diffs:#?}");
        // It was exercised: the guest read the identity and negotiated in both runs.
        for c in [Call::GetImplId, Call::Negotiate] {
            assert!(
                seen.calls.codes.contains_key(&u64::from(c.code())),
                "{seen:#?}"
            );
        }
    }
    let run = Run {
        end: outcome.end,
        report: outcome.report,
        config,
    };
    assert_demo_passed(&run, true);
}

/// The header and the guest compile with clang too. The clang-built guest then boots on a host
/// laid out differently: the pvabi leaves one base up, behind another hypervisor's signature
/// (PVABI-DISC-002), a doorbell at another port (PVABI-DISC-008), and no VCPU feature, so the
/// guest polls its queue instead of halting.
#[test]
fn c_guest_builds_with_clang_and_finds_a_moved_host() {
    require_tool("clang", "clang");
    // Clang finds -no-pie redundant next to -static and says so; that is all it says.
    let clang = [
        "clang",
        "-target",
        "x86_64-linux-gnu",
        "-Wno-unused-command-line-argument",
    ];
    let image = build(&clang, &scratch("clang"));
    if !kvm_or_skip("c_guest_builds_with_clang_and_finds_a_moved_host") {
        return;
    }
    let mut config = HostConfig {
        console: ConsoleSink::Discard,
        cpuid_base: 0x4000_0100,
        doorbell_port: 0x5670,
        ring_notify_port: 0x5674,
        // "Microsoft Hv" at the first base: a signature that is not pvabi's.
        extra_cpuid_leaves: vec![(
            0x4000_0000,
            0,
            [0x4000_0005, 0x7263_694d, 0x666f_736f, 0x7648_2074],
        )],
        ..HostConfig::default()
    };
    config.features.retain(|f| f.flag != Features::VCPU);
    let run = boot(&image, config);
    assert_demo_passed(&run, false);
}

/// A porter's path: `make -C guest-ref/c-demo` builds cleanly (when make is installed).
#[test]
fn makefile_builds_the_guest() {
    if !Command::new("make")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        eprintln!(
            "SKIP: makefile_builds_the_guest: `make` is not installed (apt-get install -y make)"
        );
        return;
    }
    require_tool("gcc", "gcc");
    let out = scratch("make");
    let result = Command::new("make")
        .arg("-C")
        .arg(c_demo())
        .arg(format!("BUILD={}", out.display()))
        .output()
        .expect("make runs");
    let stdout = String::from_utf8_lossy(&result.stdout);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(result.status.success(), "make failed:\n{stdout}\n{stderr}");
    assert!(
        !stderr.contains("warning:") && !stdout.contains("warning:"),
        "make printed warnings:\n{stdout}\n{stderr}"
    );
    let image = std::fs::read(out.join("c-demo.elf")).expect("make built c-demo.elf");
    check_elf(&image);
    let _ = std::fs::remove_dir_all(&out);
}
