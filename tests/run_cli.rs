//! `pvabi run`: boots the built-in demo guest on `/dev/kvm` and maps how the guest ended to
//! the exit status (0 shutdown(0), 1 shutdown(code), 2 usage, 3 reboot, 4 crash, 5 fault,
//! 6 host error); host errors name the problem and the fix.

use std::path::PathBuf;
use std::process::{Command, Output};

use pvabi_host::vm::testing::kvm_or_skip;

fn pvabi_run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pvabi"))
        .arg("run")
        .args(args)
        .output()
        .expect("the pvabi binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn describe(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    )
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pvabi-run-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    dir.join(name)
}

#[test]
fn run_boots_the_demo_and_exits_0_with_a_summary() {
    if !kvm_or_skip("run_boots_the_demo_and_exits_0_with_a_summary") {
        return;
    }
    let out = pvabi_run(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("pvabi demo guest"), "{}", describe(&out));
    assert!(!stdout.contains("FAIL"), "{}", describe(&out));
    assert!(stdout.contains(" checks passed: every family of pvabi 1.0 works"));
    assert!(stdout.contains("(SMP demo skipped: 1 vCPU"));
    let stderr = text(&out.stderr);
    let summary = stderr.lines().last().unwrap_or_default();
    assert!(
        summary.starts_with("pvabi run: the built-in demo guest shut down with code 0, after "),
        "{}",
        describe(&out)
    );
    assert!(summary.contains(" s (1 vCPU, 64 MiB; "), "{summary}");
    assert!(summary.ends_with("; exit status 0"), "{summary}");
}

#[test]
fn run_with_two_vcpus_runs_the_smp_demo() {
    if !kvm_or_skip("run_with_two_vcpus_runs_the_smp_demo") {
        return;
    }
    let out = pvabi_run(&["--vcpus", "2", "--mem", "32M"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("-- vcpu: SMP (2 vCPUs) --"),
        "{}",
        describe(&out)
    );
    assert!(stdout.contains("ok  vcpu1: started by VCPU_START"));
    assert!(stdout.contains("ok  vcpu1: started again"));
    assert!(text(&out.stderr).contains("(2 vCPUs, 32 MiB; "));
}

#[test]
fn a_missing_image_is_a_host_error_naming_the_path() {
    let out = pvabi_run(&["/no/such/file"]);
    assert_eq!(out.status.code(), Some(6), "{}", describe(&out));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("/no/such/file"), "{stderr}");
    assert!(stderr.contains("cannot read the guest image"), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn a_text_file_is_not_a_guest_image() {
    let path = scratch("notes.txt");
    std::fs::write(&path, "these are notes, not a guest kernel\n".repeat(3)).unwrap();
    let out = pvabi_run(&[path.to_str().unwrap()]);
    std::fs::remove_file(&path).ok();
    assert_eq!(out.status.code(), Some(6), "{}", describe(&out));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("notes.txt"), "{stderr}");
    assert!(stderr.contains("not a loadable x86-64 ELF"), "{stderr}");
    assert!(stderr.contains("ELF magic"), "{stderr}");
}

#[test]
fn too_little_memory_says_how_much_to_give() {
    let out = pvabi_run(&["--mem", "1M"]);
    assert_eq!(out.status.code(), Some(6), "{}", describe(&out));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("guest memory must be"), "{stderr}");
    assert!(stderr.contains("--mem"), "{stderr}");
}

#[test]
fn bad_arguments_are_usage_errors() {
    let out = pvabi_run(&["--mem", "lots"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(text(&out.stderr).contains("is not a memory size"));
    let out = pvabi_run(&["--vcpus", "0"]);
    assert_eq!(out.status.code(), Some(6), "{}", describe(&out));
    assert!(text(&out.stderr).contains("--vcpus"));
}

#[test]
fn help_documents_the_exit_statuses() {
    let out = pvabi_run(&["--help"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let help = text(&out.stdout);
    for needle in [
        "--vcpus <N>",
        "--mem <SIZE>",
        "[IMAGE]",
        "Exit status",
        "0  the guest shut down with code 0",
        "4  the guest reported a crash",
        "6  the host could not run the guest",
    ] {
        assert!(help.contains(needle), "{needle:?} missing from:\n{help}");
    }
}

#[test]
fn serve_makes_the_host_act_as_a_released_version() {
    if !kvm_or_skip("serve_makes_the_host_act_as_a_released_version") {
        return;
    }
    for (serve, highest) in [
        ("1.0", "highest 1.0, lowest 1.0"),
        ("1.1", "highest 1.1, lowest 1.0"),
        ("1.2", "highest 1.2, lowest 1.0"),
        ("1.3,2.0", "highest 2.0, lowest 1.0"),
    ] {
        let out = pvabi_run(&["--serve", serve]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "--serve {serve}: {}",
            describe(&out)
        );
        let stdout = text(&out.stdout);
        assert!(
            stdout.contains(highest),
            "--serve {serve}: {}",
            describe(&out)
        );
    }
    for bad in ["2.0,1.1", "3.0", "1.0,1.1"] {
        let out = pvabi_run(&["--serve", bad]);
        assert_eq!(
            out.status.code(),
            Some(2),
            "--serve {bad}: {}",
            describe(&out)
        );
        assert!(text(&out.stderr).contains("--serve"), "{}", describe(&out));
    }
}
