//! `pvabi run`: boots a guest ELF (by default the built-in demo guest) under the reference
//! host on `/dev/kvm`, prints the guest's console output as it arrives, and tells by its exit
//! status how the guest ended (see [`EXIT_STATUS_HELP`]).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use pvabi_abi::version::{Version, V1_0, V1_1, V1_2, V1_3, V2_0_PREVIEW};
use pvabi_host::dispatch::{HostConfig, OnReboot};
use pvabi_host::runner::{self, RunConfig, RunError, RunOutcome};
use pvabi_host::vm::{VmConfig, VmEnd, VmError, MIB};

/// The guest shut down with code 0.
pub const EXIT_SHUTDOWN_OK: u8 = 0;
/// The guest shut down with a non-zero code.
pub const EXIT_SHUTDOWN_CODE: u8 = 1;
/// The guest asked for a reboot.
pub const EXIT_REBOOT: u8 = 3;
/// The guest reported a crash.
pub const EXIT_CRASH: u8 = 4;
/// The VM faulted or timed out.
pub const EXIT_FAULT: u8 = 5;
/// The host could not run the VM.
pub const EXIT_HOST_ERROR: u8 = 6;

/// The exit statuses, as `pvabi run --help` shows them.
pub const EXIT_STATUS_HELP: &str = "\
Exit status (how the guest ended):
  0  the guest shut down with code 0 (SYSTEM_SHUTDOWN(0))
  1  the guest shut down with a non-zero code (printed)
  2  the command line was wrong (usage error)
  3  the guest asked for a reboot (SYSTEM_REBOOT); the host stops instead
  4  the guest reported a crash (SYSTEM_CRASH); its message is printed
  5  the VM faulted: triple fault, unexpected exit, stuck vCPU (e.g. HLT with interrupts
     off), or --timeout passed; printed with the vCPU's registers
  6  the host could not run the guest: no /dev/kvm or no permission, image missing or not
     a loadable ELF (the path is named), bad --mem/--vcpus, too little memory
With --exit-with-guest-code: the guest's SYSTEM_SHUTDOWN code (its low 8 bits) when it shut
down, and 128 plus the status above (131, 132, 133, 134) when it ended otherwise; this is the
contract `pvabi conform --host-cmd` expects of a VMM.";

/// Arguments of `pvabi run`.
#[derive(Debug, clap::Args)]
#[command(
    about = "Boot a guest (default: the built-in demo guest) under the reference host on KVM",
    long_about = "Boots a bare-metal x86-64 guest under the pvabi reference host on /dev/kvm and \
                  prints its console output as it arrives. Without IMAGE it boots the built-in \
                  demo guest, which negotiates pvabi and exercises every call family, one check \
                  per line. A one-line summary (how the guest ended, wall time) goes to stderr.",
    after_help = EXIT_STATUS_HELP
)]
pub struct Args {
    /// Guest image: a static x86-64 ELF linked at 0x200000 (default: the built-in demo guest).
    #[arg(value_name = "IMAGE")]
    pub image: Option<PathBuf>,
    /// Number of vCPUs; vCPU 0 boots, the guest starts the others with VCPU_START.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub vcpus: u32,
    /// Guest RAM: bytes, or a number with K, M or G (e.g. 64M, 1G).
    #[arg(long, value_name = "SIZE", default_value = "64M", value_parser = parse_size)]
    pub mem: u64,
    /// Stop the guest (exit status 5) if it still runs after this many seconds.
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    pub timeout: Option<Duration>,
    /// The versions the host serves, one per major, comma-separated: `1.0`, `1.1`, `1.2` or
    /// `1.3` to act as that release, `1.3,2.0` to serve the 2.0 preview beside 1.3 (default:
    /// the current release).
    #[arg(long, value_name = "VERSIONS", value_parser = parse_versions)]
    pub serve: Option<Versions>,
    /// Exit with the guest's shutdown code (see below), as `pvabi conform --host-cmd` needs.
    #[arg(long)]
    pub exit_with_guest_code: bool,
    /// What SYSTEM_REBOOT does: `end` the VM (exit status 3, the default) or `reset` it and
    /// boot the image again (RAM outside the image kept, every pvabi state forgotten,
    /// monotonic time going on), at most `--max-resets` times.
    #[arg(long, value_name = "ACTION", value_enum, default_value_t = RebootAction::End)]
    pub on_reboot: RebootAction,
    /// With `--on-reboot reset`: how many resets one run allows; the reboot after the last
    /// one ends the VM (exit status 3).
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub max_resets: u32,
    /// Perform these host events when a test guest asks for one over the verdict channel
    /// (`pvabi-conform: REQUEST <event>`), comma-separated: `migrate` moves the running VM to
    /// a new KVM VM over the same RAM (every vCPU paused, its state saved and restored) and
    /// writes `pvabi-conform: DONE migrate`. Off by default: a plain guest's console line
    /// never makes the host do anything. (`tsc-offset` is not offered: on the project's PVM
    /// machine the TSC cannot be moved.)
    #[arg(long, value_name = "EVENTS", value_delimiter = ',', value_enum)]
    pub host_events: Vec<HostEventName>,
}

/// What `--host-events` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum HostEventName {
    /// A migration to a new KVM VM.
    Migrate,
}

/// What `--on-reboot` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RebootAction {
    /// End the VM (PVABI-SYS-003's second choice).
    End,
    /// Reset the VM and boot it again.
    Reset,
}

/// The versions `--serve` names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versions(pub Vec<Version>);

/// The versions the reference host can serve: every released one and the 2.0 preview.
const SERVABLE: [Version; 5] = [V1_0, V1_1, V1_2, V1_3, V2_0_PREVIEW];

/// Parses `--serve`: versions such as `1.3` or `1.3,2.0`, ascending, one per major.
pub fn parse_versions(text: &str) -> Result<Versions, String> {
    let known = SERVABLE.map(|v| v.to_string()).join(", ");
    let mut out: Vec<Version> = Vec::new();
    for part in text.split(',') {
        let v = SERVABLE
            .iter()
            .copied()
            .find(|v| v.to_string() == part.trim())
            .ok_or_else(|| {
                format!(
                    "`{}` is not a version this host serves (known: {known})",
                    part.trim()
                )
            })?;
        if out.last().is_some_and(|last| last.major() >= v.major()) {
            return Err(format!(
                "`{text}`: give one version per major, in ascending order, e.g. 1.3,2.0"
            ));
        }
        out.push(v);
    }
    Ok(Versions(out))
}

/// Parses a memory size: bytes, or a number with a binary suffix K, M, G or T (`KiB`,
/// `MB`, ... are accepted too, all meaning powers of 1024).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, suffix) = t.split_at(digits);
    let bad = || {
        format!(
            "`{text}` is not a memory size: give bytes or a number with K, M or G, e.g. 64M or 1G"
        )
    };
    if number.is_empty() {
        return Err(bad());
    }
    let n: u64 = number.parse().map_err(|_| bad())?;
    let shift = match suffix.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => return Err(bad()),
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("`{text}` is too large"))
}

fn parse_seconds(text: &str) -> Result<Duration, String> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("`{text}` is not a number of seconds greater than 0"))
}

/// Runs `pvabi run`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let on_reboot = match args.on_reboot {
        RebootAction::End => OnReboot::End,
        RebootAction::Reset => OnReboot::Reset {
            limit: args.max_resets,
        },
    };
    let config = RunConfig {
        host: HostConfig {
            on_reboot,
            host_events: args
                .host_events
                .iter()
                .map(|e| match e {
                    HostEventName::Migrate => pvabi_host::dispatch::HostEvent::Migrate,
                })
                .collect(),
            ..match &args.serve {
                Some(Versions(v)) => HostConfig::serving(v),
                None => HostConfig::default(),
            }
        },
        vm: VmConfig {
            vcpus: args.vcpus,
            mem_bytes: args.mem,
            ..VmConfig::default()
        },
        timeout: args.timeout,
    };
    let (what, result) = match &args.image {
        Some(path) => (path.display().to_string(), runner::run_file(path, config)),
        None => (
            "the built-in demo guest".to_string(),
            runner::run(pvabi_guest_images::demo(), config),
        ),
    };
    let _ = std::io::stdout().flush();
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(e) => {
            eprintln!("pvabi run: error: {e}{}", flag_advice(&e));
            let offset = if args.exit_with_guest_code { 128 } else { 0 };
            return Ok(ExitCode::from(offset + EXIT_HOST_ERROR));
        }
    };
    let status = exit_status(&outcome.end);
    eprintln!("{}", summary(&what, &args, &outcome, status));
    if args.exit_with_guest_code {
        return Ok(ExitCode::from(guest_code_status(&outcome.end)));
    }
    Ok(ExitCode::from(status))
}

/// What to pass on the command line for an error the library reports about a setting.
fn flag_advice(e: &RunError) -> String {
    let vm = match e {
        RunError::Vm(vm) | RunError::BadImage { source: vm, .. } => vm,
        _ => return String::new(),
    };
    match vm {
        VmError::MemorySize { .. } => "; pass --mem with e.g. 64M".into(),
        VmError::ImageTooLarge { need_mib, .. } => format!("; pass --mem {need_mib}M (or more)"),
        VmError::Memory { .. } => "; pass a smaller --mem".into(),
        VmError::VcpuCount { max, .. } => format!("; pass --vcpus N with N from 1 to {max}"),
        VmError::Thread(_) => "; pass a lower --vcpus".into(),
        _ => String::new(),
    }
}

/// The exit status under `--exit-with-guest-code`: the shutdown code, or 128 + the usual
/// status for any other end (so that no other end can pass for a shutdown with a small code).
pub fn guest_code_status(end: &VmEnd) -> u8 {
    match end {
        VmEnd::Shutdown(code) => (code & 0xff) as u8,
        other => 128 + exit_status(other),
    }
}

/// The exit status for how the VM ended.
pub fn exit_status(end: &VmEnd) -> u8 {
    match end {
        VmEnd::Shutdown(0) => EXIT_SHUTDOWN_OK,
        VmEnd::Shutdown(_) => EXIT_SHUTDOWN_CODE,
        VmEnd::Reboot => EXIT_REBOOT,
        VmEnd::Crash(_) => EXIT_CRASH,
        VmEnd::Fault(_) => EXIT_FAULT,
    }
}

/// One line: how the guest ended, the wall time, the VM's shape, calls and exits, the exit
/// status; a fault's registers follow on the next lines.
fn summary(what: &str, args: &Args, outcome: &RunOutcome, status: u8) -> String {
    let mut details = String::new();
    let how = match &outcome.end {
        VmEnd::Shutdown(0) => "shut down with code 0".to_string(),
        VmEnd::Shutdown(code) => format!("shut down with code {code} ({code:#x})"),
        VmEnd::Reboot => {
            "asked for a reboot (SYSTEM_REBOOT; the VM ended: see --on-reboot)".to_string()
        }
        VmEnd::Crash(message) => format!("crashed (SYSTEM_CRASH): {message:?}"),
        VmEnd::Fault(report) => {
            if let Some(regs) = &report.regs {
                details = format!("\n{regs}");
            }
            format!("faulted on vCPU {}: {}", report.vcpu, report.fault)
        }
    };
    let mem = if args.mem.is_multiple_of(MIB) {
        format!("{} MiB", args.mem / MIB)
    } else {
        format!("{} bytes", args.mem)
    };
    let exits = outcome.exits;
    format!(
        "pvabi run: {what} {how}, after {:.3} s ({} vCPU{}, {mem}; {} pvabi calls, {} doorbell \
         exits, {} other port exits); exit status {status}{details}",
        outcome.wall.as_secs_f64(),
        args.vcpus,
        if args.vcpus == 1 { "" } else { "s" },
        outcome.calls(),
        exits.doorbell,
        exits.total() - exits.doorbell,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("8k"), Ok(8192));
        assert!(parse_size("").is_err());
        assert!(parse_size("M").is_err());
        assert!(parse_size("12X").is_err());
        assert!(parse_size("-1M").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn every_end_has_its_status() {
        use pvabi_host::vm::FaultReport;
        assert_eq!(exit_status(&VmEnd::Shutdown(0)), 0);
        assert_eq!(exit_status(&VmEnd::Shutdown(7)), 1);
        assert_eq!(exit_status(&VmEnd::Reboot), 3);
        assert_eq!(exit_status(&VmEnd::Crash("x".into())), 4);
        let fault = VmEnd::Fault(FaultReport {
            vcpu: 0,
            fault: pvabi_host::vm::Fault::Host("x".into()),
            regs: None,
        });
        assert_eq!(exit_status(&fault), 5);
        for status in 0..=6 {
            assert!(EXIT_STATUS_HELP.contains(&format!("  {status}  ")));
        }
    }
}
