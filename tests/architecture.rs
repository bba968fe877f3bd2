//! The crate graph the architecture promises: the dispatcher is a library any VMM can link
//! without KVM, a loader or a guest build; only what runs guests builds guest images.

use std::process::Command;

/// The normal (non-dev, non-build) dependencies of `package`, as `cargo tree` prints them.
fn dependencies(package: &str) -> String {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "--locked",
            "--offline",
            "-e",
            "normal",
            "--prefix",
            "none",
        ])
        .args(["-p", package])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "cargo tree -p {package} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn crates(tree: &str) -> Vec<&str> {
    tree.lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect()
}

#[test]
fn the_dispatcher_depends_on_nothing_of_kvm_and_builds_no_guest() {
    let tree = dependencies("pvabi-dispatch");
    let names = crates(&tree);
    for forbidden in [
        "kvm-ioctls",
        "kvm-bindings",
        "linux-loader",
        "vmm-sys-util",
        "pvabi-guest-images",
        "pvabi-host",
    ] {
        assert!(
            !names.contains(&forbidden),
            "pvabi-dispatch depends on {forbidden}:\n{tree}"
        );
    }
    // Its direct dependencies include the ABI crate, vm-memory, zerocopy, thiserror and
    // iced-x86 (the checking host's instruction decoder, module `x86`).
    for needed in [
        "pvabi-abi",
        "vm-memory",
        "zerocopy",
        "thiserror",
        "iced-x86",
    ] {
        assert!(names.contains(&needed), "{needed} missing:\n{tree}");
    }
    // And it has no build script that could build guests.
    let manifest = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("dispatch/Cargo.toml"),
    )
    .unwrap();
    assert!(!manifest.contains("build ="), "{manifest}");
    assert!(!std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("dispatch/build.rs")
        .exists());
}

#[test]
fn the_reference_vmm_builds_no_guest_either() {
    // Only what runs guests (the CLI, the tests) depends on the image crate.
    let tree = dependencies("pvabi-host");
    assert!(
        !crates(&tree).contains(&"pvabi-guest-images"),
        "pvabi-host depends on the guest images:\n{tree}"
    );
    assert!(crates(&tree).contains(&"pvabi-dispatch"), "{tree}");
}
