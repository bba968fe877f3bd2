//! `pvabi conform`: runs the conformance suite against the reference host and reports each
//! test's verdict, traced to the specification's requirements.

use std::process::ExitCode;

use pvabi_conformance::report::{self, RequirementVerdict};
use pvabi_conformance::Verdict;
use pvabi_host::dispatch::HostConfig;

use crate::conform::{self, TESTS};

/// How `pvabi conform` prints its results.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A readable summary.
    Text,
    /// The full report (tests, checks, and every requirement with its verdict).
    Json,
    /// TAP version 13, one test point per check.
    Tap,
    /// JUnit XML, one test case per check.
    Junit,
}

/// Arguments of `pvabi conform`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// List the tests and exit.
    #[arg(long)]
    list: bool,
    /// Run only the tests whose name contains this text.
    #[arg(long, value_name = "TEXT")]
    filter: Option<String>,
    /// Output format on stdout (progress goes to stderr).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Run each test image under this VMM command instead of the reference host: `{image}`
    /// stands for the image's path; the command prints the guest console on stdout and exits
    /// with the guest's SYSTEM_SHUTDOWN code; `{vcpus}` stands for the number of vCPUs the
    /// test needs (e.g. 'pvabi run --vcpus {vcpus} --exit-with-guest-code {image}'). The tests
    /// about how the VM ends (a guest fault, a refused image) need the profile's
    /// `[exit_status]` to read the command's exit status; without it they SKIP.
    #[arg(long, value_name = "TEMPLATE")]
    host_cmd: Option<String>,
    /// Write the test images, a manifest and a runner script to DIR (for a machine without
    /// the Rust toolchain) instead of running the suite.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["host_cmd", "list"])]
    export: Option<std::path::PathBuf>,
    /// Check a guest instead of a host: boot the guest ELF IMAGE (or a built-in guest by name:
    /// `demo`, `careless`, `careless-discovery`, `careless-identity`, `careless-cpuid`,
    /// `careless-order`, `careless-pte`) under the reference host
    /// in its checking mode, which records every guest rule it sees broken in the guest's calls
    /// and shared pages while acting demanding but legal (INCOMPLETE at every index, a time
    /// page left mid-update at every refresh, poisoned undefined results, spurious event
    /// interrupts in bursts, pollers that sleep at once, its CPUID leaves one base up and its
    /// ports off the defaults, a feature bit no version defines), single-stepping vCPU 0 up to
    /// its first port write to see its CPUID reads and any vmcall (PVABI-DISC-004,
    /// PVABI-CONV-010), and a vCPU's ring-0 code after it registers a deferred queue or a ring
    /// to see the order of its entry and `tail` stores (PVABI-DEFER-001, PVABI-RING-001) and
    /// its accesses through the entry of a queued MEM_UPDATE_PTE (PVABI-MEM-013,
    /// PVABI-DEFER-008), and every access to the pages of its event queues and completion rings
    /// to see that it reads an entry before it stores `head` past it (PVABI-EVT-010,
    /// PVABI-RING-006); then
    /// boots it again under the same host with another implementation
    /// identity and compares the calls (PVABI-BASE-005).
    #[arg(long, value_name = "IMAGE", conflicts_with_all = ["host_cmd", "export", "list", "filter", "write_trace", "profile"])]
    guest: Option<String>,
    /// vCPUs of the guest `--guest` checks.
    #[arg(long, value_name = "N", default_value_t = 1, requires = "guest")]
    vcpus: u32,
    /// What the implementation claims (versions, optional features, limits) and its known
    /// failures, as a TOML profile (see docs/host-implementers.md): a claim the host does not
    /// meet is a FAIL; a failure the profile lists for the implementation's reported id and
    /// version is shown as XFAIL with its reason.
    #[arg(long, value_name = "FILE")]
    profile: Option<std::path::PathBuf>,
    /// Run up to N tests at once, each in its own VM (their order in the report stays the
    /// catalogue's).
    #[arg(short = 'j', long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..))]
    jobs: u16,
    /// Run the whole suite on the reference host and write its traceability data (each check
    /// and the requirement IDs it cites, with its verdict) to FILE, the file the spec's
    /// traceability table is generated from (`conformance/traceability.json`; then run
    /// `pvabi spec --update`).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["host_cmd", "export", "list", "filter"])]
    write_trace: Option<std::path::PathBuf>,
    /// Run the suite against the reference host once per injected fault, and fail unless a
    /// test catches every one (the faults exist only in builds with the `self-test` feature:
    /// `cargo run --release --features self-test -- conform --self-test`).
    #[arg(long, conflicts_with_all = ["host_cmd", "export", "list"])]
    self_test: bool,
}

/// Runs `pvabi conform`; the exit status is the worst verdict's (0 PASS, 3 SKIP, 4 ERROR,
/// 5 FAIL, 6 CRASH).
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let selected: Vec<_> = TESTS
        .iter()
        .filter(|t| args.filter.as_deref().is_none_or(|f| t.name.contains(f)))
        .collect();
    if args.list {
        for t in &selected {
            println!("{:<18} {}", t.name, t.what);
        }
        return Ok(ExitCode::SUCCESS);
    }
    if args.self_test {
        #[cfg(feature = "self-test")]
        return self_test(&selected);
        #[cfg(not(feature = "self-test"))]
        anyhow::bail!(
            "this pvabi was built without the injected faults that --self-test runs the suite \
             against (they are never in a default build); build it with them: \
             `cargo run --release --features self-test -- conform --self-test`"
        );
    }
    if let Some(dir) = &args.export {
        let manifest = conform::export(dir)
            .map_err(|e| anyhow::anyhow!("cannot export to {}: {e}", dir.display()))?;
        println!(
            "wrote {} test images, manifest.json and run.sh to {}; run them with \
             HOST_CMD='your-vmm {{image}}' {}/run.sh",
            manifest["tests"].as_array().map_or(0, Vec::len),
            dir.display(),
            dir.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(image) = &args.guest {
        return check_guest(image, args.vcpus, args.format);
    }
    if selected.is_empty() {
        anyhow::bail!(
            "no test matches --filter {:?}; `pvabi conform --list` shows them",
            args.filter.unwrap_or_default()
        );
    }
    let profile = match &args.profile {
        Some(path) => Some(load_profile(path)?),
        None => None,
    };
    let host = HostConfig::default();
    let target = match &args.host_cmd {
        Some(template) => {
            let scratch =
                std::env::temp_dir().join(format!("pvabi-conform-{}", std::process::id()));
            std::fs::create_dir_all(&scratch)?;
            conform::Target::Command {
                template: template.clone(),
                scratch: scratch.clone(),
                statuses: profile.as_ref().and_then(|p| p.exit_status.clone()),
            }
        }
        None => conform::Target::Reference(host.clone()),
    };
    let total = selected.len();
    eprintln!(
        "pvabi conform: {total} test(s) on {}, {} at a time",
        match &target {
            conform::Target::Reference(_) => "the reference host".to_owned(),
            conform::Target::Command { template, .. } => format!("`{template}`"),
        },
        args.jobs
    );
    let results = conform::run_all(&target, &selected, args.jobs.into(), &|n, r, took| {
        eprintln!(
            "[{n}/{total}] {:<10} {:<5} {:>3} checks  {:.1} s",
            r.test,
            r.verdict.name(),
            r.checks.len(),
            took.as_secs_f64()
        );
    });
    if let Some(path) = &args.write_trace {
        let mut results = results.clone();
        // The reference host held to its profile (GET_IMPL_VERSION's packing, PVABI-BASE-018,
        // can be checked only against a claimed version).
        conform::apply_profile(&conform::reference_profile(), &mut results);
        results.push(conform::check_guest(pvabi_guest_images::demo(), 1));
        let data = conform::reference_run(&results);
        std::fs::write(path, data.to_json())
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
        eprintln!(
            "wrote {} ({} tests); regenerate the spec's traceability table with `pvabi spec --update`",
            path.display(),
            data.tests.len()
        );
    }
    if let conform::Target::Command { scratch, .. } = &target {
        let _ = std::fs::remove_dir_all(scratch);
    }
    let mut results = results;
    if let Some(profile) = &profile {
        for stale in conform::apply_profile(profile, &mut results) {
            eprintln!(
                "note: the profile's known failure of `{}` (id {}, version {}) did not happen; \
                 if it is fixed, remove it from the profile",
                stale.check, stale.id, stale.version
            );
        }
    }
    let mut report = conform::report(results, &target);
    if let Some(profile) = &profile {
        report.profile = serde_json::to_value(profile).expect("a profile always serializes");
    }
    match args.format {
        Format::Json => println!("{}", report.to_json()),
        Format::Tap => print!("{}", report::tap(&report.tests)),
        Format::Junit => print!("{}", report::junit(&report.tests)),
        Format::Text => print!("{}", summary(&report, "host")),
    }
    Ok(ExitCode::from(report.verdict.exit_code() as u8))
}

/// `--guest IMAGE`: the guest's run under the checking host, reported like a host run.
fn check_guest(image: &str, vcpus: u32, format: Format) -> anyhow::Result<ExitCode> {
    let bytes: Vec<u8> = match std::fs::read(image) {
        Ok(b) => b,
        Err(e) => match pvabi_guest_images::by_name(image) {
            Some(b) => b.to_vec(),
            None => anyhow::bail!(
                "cannot read the guest image {image}: {e} (give an ELF file, or a built-in guest: {})",
                pvabi_guest_images::ALL
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        },
    };
    eprintln!("pvabi conform --guest: {image} on {vcpus} vCPU(s) under the checking host ...");
    let started = std::time::Instant::now();
    let result = conform::check_guest(&bytes, vcpus);
    eprintln!(
        "[1/1] {:<10} {:<5} {:>3} checks  {:.1} s",
        result.test,
        result.verdict.name(),
        result.checks.len(),
        started.elapsed().as_secs_f64()
    );
    let mut report = conform::report(
        vec![result],
        &conform::Target::Reference(conform::checking_host(vcpus)),
    );
    report.implementation = serde_json::json!({ "guest": image, "vcpus": vcpus });
    match format {
        Format::Json => println!("{}", report.to_json()),
        Format::Tap => print!("{}", report::tap(&report.tests)),
        Format::Junit => print!("{}", report::junit(&report.tests)),
        Format::Text => print!("{}", summary(&report, "guest")),
    }
    Ok(ExitCode::from(report.verdict.exit_code() as u8))
}

/// Reads and checks `--profile`, naming the file in every error.
fn load_profile(path: &std::path::Path) -> anyhow::Result<pvabi_conformance::profile::Profile> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read the profile {}: {e}", path.display()))?;
    conform::parse_profile(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// How many runs of the suite a fault gets before it counts as missed.
#[cfg(feature = "self-test")]
const RUNS_PER_FAULT: u32 = 3;

/// `--self-test`: first the selected tests against the faultless reference host, which must
/// pass all of them (else every fault would look caught); then, for each injected fault, the
/// tests again, the one named by the fault's [`area`] first, until one does not PASS: that
/// test caught the fault. A fault no test caught gets up to [`RUNS_PER_FAULT`] runs in all,
/// the later ones of its area's tests only (some faults show only in a race). Prints the catch table and exits 0 only if every fault
/// is caught.
///
/// [`area`]: pvabi_dispatch::faults::InjectedFault::area
#[cfg(feature = "self-test")]
fn self_test(tests: &[&conform::TestInfo]) -> anyhow::Result<ExitCode> {
    use pvabi_dispatch::faults::InjectedFault;
    let clean = HostConfig::default();
    // The faultless run: every test PASS, or SKIP where a rule does not bind the host (a
    // binding it does not advertise); a fault is caught where a run differs from it.
    let baseline: Vec<_> = tests.iter().map(|t| conform::run_test(t, &clean)).collect();
    let failing: Vec<String> = baseline
        .iter()
        .filter(|r| !matches!(r.verdict, Verdict::Pass | Verdict::Skip))
        .map(|r| format!("{} {}", r.test, r.verdict))
        .collect();
    if !failing.is_empty() {
        println!(
            "pvabi conform --self-test: the suite does not pass against the faultless host ({}): no fault can be said to be caught",
            failing.join(", ")
        );
        return Ok(ExitCode::from(Verdict::Fail.exit_code() as u8));
    }
    let mut caught = 0;
    for fault in InjectedFault::ALL {
        let host = HostConfig {
            inject: Some(fault),
            ..HostConfig::default()
        };
        let mut order: Vec<&conform::TestInfo> = tests.to_vec();
        order.sort_by_key(|t| t.name.split('-').next() != Some(fault.area()));
        let in_area = |t: &&&conform::TestInfo| t.name.split('-').next() == Some(fault.area());
        // `retry`: only the fault's own area's tests may catch it, so that a timing flake of
        // an unrelated check gets no second chance to pass for a catch.
        let detect = |retry: bool| {
            let by = order.iter().filter(|t| !retry || in_area(t)).find_map(|t| {
                let r = conform::run_test(t, &host);
                let base = baseline.iter().find(|b| b.test == t.name)?;
                let was = |name: &str| {
                    base.checks
                        .iter()
                        .find(|c| c.name == name)
                        .map(|c| c.verdict)
                };
                let checks: Vec<&str> = r
                    .checks
                    .iter()
                    .filter(|c| c.verdict != Verdict::Pass && was(&c.name) != Some(c.verdict))
                    .map(|c| c.name.as_str())
                    .collect();
                (r.verdict != base.verdict || !checks.is_empty())
                    .then(|| format!("{} {} ({})", r.test, r.verdict, checks.join(", ")))
            });
            // What only a profile can catch (GET_IMPL_VERSION's packing, PVABI-BASE-018): the
            // base test's report held to the reference profile, as the reference run holds it.
            let by = by.or_else(|| {
                if retry {
                    return None;
                }
                let base = tests.iter().find(|t| t.name == "base")?;
                let mut results = vec![conform::run_test(base, &host)];
                conform::apply_profile(&conform::reference_profile(), &mut results);
                let profile = results.get(1)?;
                let failed: Vec<&str> = profile
                    .checks
                    .iter()
                    .filter(|c| c.verdict != Verdict::Pass)
                    .map(|c| c.name.as_str())
                    .collect();
                (!failed.is_empty()).then(|| {
                    format!(
                        "{} {} ({})",
                        profile.test,
                        profile.verdict,
                        failed.join(", ")
                    )
                })
            });
            by
        };
        // A fault that shows only in a race (a time page written in the wrong order shows
        // only to a read that lands inside the write) may slip past one run on a loaded
        // machine: a missed fault gets up to RUNS_PER_FAULT runs of its area's tests, and the
        // report says which run caught it.
        let mut by = detect(false);
        let mut runs = 1;
        while by.is_none() && runs < RUNS_PER_FAULT {
            runs += 1;
            by = detect(true);
        }
        match by {
            Some(by) if runs > 1 => {
                caught += 1;
                println!(
                    "caught  {:<40} by {by}, on run {runs} of {RUNS_PER_FAULT}",
                    fault.name()
                );
            }
            Some(by) => {
                caught += 1;
                println!("caught  {:<40} by {by}", fault.name());
            }
            None => println!("MISSED  {} (in {RUNS_PER_FAULT} runs)", fault.name()),
        }
    }
    let total = InjectedFault::ALL.len();
    println!("pvabi conform --self-test: {caught} of {total} injected faults caught");
    Ok(if caught == total {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(Verdict::Fail.exit_code() as u8)
    })
}

/// The text report: each test's verdict and its checks that did not pass, then the counts of
/// the rules that bind `subject` (`"host"` or `"guest"`).
fn summary(r: &report::Report, subject: &str) -> String {
    let mut s = String::new();
    for t in &r.tests {
        s += &format!("{:<6} {}\n", t.verdict.name(), t.test);
        for c in t.checks.iter().filter(|c| c.verdict != Verdict::Pass) {
            s += &format!(
                "         {} {}{}{}\n",
                c.verdict,
                c.name,
                c.requirements
                    .iter()
                    .map(|r| format!(" {r}"))
                    .collect::<String>(),
                c.message
                    .as_deref()
                    .map(|m| format!(" -- {m}"))
                    .unwrap_or_default()
            );
        }
        if let Some(reason) = &t.reason {
            s += &format!("         {reason}\n");
        }
    }
    // The rules that bind the subject of the run (`host` or `guest`, alone or with the other
    // party): a host run says nothing of a guest's rules, nor a guest run of a host's.
    let binding: Vec<_> = r
        .requirements
        .iter()
        .filter(|q| q.party.split(" and ").any(|p| p == subject))
        .collect();
    let count = |v: RequirementVerdict| binding.iter().filter(|q| q.verdict == v).count();
    let unobservable = binding
        .iter()
        .filter(|q| q.untested_reason.is_some())
        .count();
    // PASS and FAIL always; the others where there are some.
    let mut counts = vec![
        format!("{} pass", count(RequirementVerdict::Pass)),
        format!("{} fail", count(RequirementVerdict::Fail)),
    ];
    for (v, what) in [
        (RequirementVerdict::KnownFailure, "known failure"),
        (
            RequirementVerdict::Error,
            "not checked: their test went wrong",
        ),
        (RequirementVerdict::Skip, "skipped"),
        (RequirementVerdict::Warning, "warning"),
        (
            RequirementVerdict::NotApplicable,
            "not applicable (conditions the implementation does not meet)",
        ),
    ] {
        if count(v) > 0 {
            counts.push(format!("{} {what}", count(v)));
        }
    }
    counts.push(format!(
        "{} untested ({unobservable} of them MUSTs no check can observe: --format json gives each \
         one's reason and the reference implementation's own tests of it)",
        count(RequirementVerdict::Untested)
    ));
    let checks: usize = r.tests.iter().map(|t| t.checks.len()).sum();
    s += &format!(
        "pvabi conform: {} against spec {} ({} tests, {checks} checks); the {} rules that bind the {subject}: {}\n",
        r.verdict,
        r.spec_version,
        r.tests.len(),
        binding.len(),
        counts.join(", "),
    );
    s
}
