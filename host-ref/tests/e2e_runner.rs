//! The runner ([`pvabi_host::runner`]): errors that name the problem (no KVM needed) and
//! the time limit that ends a stuck guest (KVM).

use std::path::Path;
use std::time::Duration;

use pvabi_host::dispatch::{ConsoleSink, HostConfig};
use pvabi_host::runner::{self, RunConfig, RunError};
use pvabi_host::vm::testing::kvm_or_skip;
use pvabi_host::vm::{VmConfig, VmEnd, VmError};

fn quiet() -> RunConfig {
    RunConfig {
        host: HostConfig {
            console: ConsoleSink::Discard,
            ..HostConfig::default()
        },
        timeout: Some(Duration::from_secs(30)),
        ..RunConfig::default()
    }
}

#[test]
fn a_missing_image_is_named() {
    let path = Path::new("/no/such/guest.elf");
    let err = runner::run_file(path, quiet()).unwrap_err();
    assert!(matches!(err, RunError::ReadImage { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("/no/such/guest.elf"), "{message}");
    assert!(message.contains("No such file"), "{message}");
}

#[test]
fn a_text_file_is_not_a_guest() {
    let dir = std::env::temp_dir().join(format!("pvabi-runner-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("not-an-elf.txt");
    std::fs::write(
        &path,
        "this is not an ELF image, just some text: ".repeat(4),
    )
    .unwrap();
    let err = runner::run_file(&path, quiet()).unwrap_err();
    std::fs::remove_dir_all(&dir).ok();
    assert!(
        matches!(
            err,
            RunError::BadImage {
                source: VmError::BadElf(_),
                ..
            }
        ),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains("not-an-elf.txt"), "{message}");
    assert!(message.contains("ELF magic"), "{message}");
}

#[test]
fn bad_vm_shapes_are_refused_before_kvm() {
    for (vcpus, mem_bytes) in [(0, 64 << 20), (1, 1 << 20), (1, (64 << 20) + 1)] {
        let config = RunConfig {
            vm: VmConfig {
                vcpus,
                mem_bytes,
                ..VmConfig::default()
            },
            ..quiet()
        };
        let err = runner::run(pvabi_guest_images::demo(), config).unwrap_err();
        assert!(
            matches!(
                err,
                RunError::Vm(VmError::VcpuCount { .. } | VmError::MemorySize { .. })
            ),
            "{vcpus} vCPUs, {mem_bytes} bytes: {err:?}"
        );
        // The library names the setting; the command line maps it to its flag.
        let message = err.to_string();
        assert!(
            message.contains("VmConfig::vcpus") || message.contains("VmConfig::mem_bytes"),
            "{message}"
        );
    }
}

#[test]
fn the_time_limit_ends_a_stuck_guest() {
    if !kvm_or_skip("the_time_limit_ends_a_stuck_guest") {
        return;
    }
    // The smoke guest speaks a raw test protocol, not pvabi: on the pvabi host its request
    // for an interrupt goes unanswered and it halts waiting for it, for good.
    let config = RunConfig {
        timeout: Some(Duration::from_millis(300)),
        ..quiet()
    };
    let outcome = runner::run(pvabi_guest_images::smoke(), config).expect("the VM runs");
    match &outcome.end {
        VmEnd::Fault(report) => assert!(
            matches!(report.fault, pvabi_host::vm::Fault::Timeout(_)),
            "{report}"
        ),
        other => panic!("expected a timeout fault, got {other}"),
    }
    assert!(outcome.wall >= Duration::from_millis(300));
    assert!(outcome.wall < Duration::from_secs(10));
    assert!(outcome.exits.other_out > 0, "{:?}", outcome.exits);
}
