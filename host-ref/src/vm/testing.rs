//! Helpers for tests that need a real `/dev/kvm`.

use std::path::Path;

/// Whether KVM tests can run here. Call it first in every KVM test:
///
/// ```no_run
/// # fn demo() {
/// if !pvabi_host::vm::testing::kvm_or_skip("my_test") {
///     return;
/// }
/// # }
/// ```
///
/// When `/dev/kvm` is missing or cannot be opened it prints a loud
/// `SKIP: <test>: /dev/kvm not available (<reason>)` to stderr and returns `false`.
/// But a skip must not hide a broken CI machine: when the environment variable
/// `CI=true` is set and `/dev/kvm` exists, failing to open it panics instead.
pub fn kvm_or_skip(test: &str) -> bool {
    let reason = if !Path::new("/dev/kvm").exists() {
        "no /dev/kvm on this machine".to_string()
    } else {
        match kvm_ioctls::Kvm::new() {
            Ok(kvm) if kvm.get_api_version() == 12 => return true,
            Ok(kvm) => format!("KVM API version {} instead of 12", kvm.get_api_version()),
            Err(e) => format!("cannot open /dev/kvm: {e}"),
        }
    };
    let in_ci = std::env::var("CI").is_ok_and(|v| v == "true");
    if in_ci && Path::new("/dev/kvm").exists() {
        panic!("{test}: CI=true and /dev/kvm exists, so KVM tests must run, but: {reason}");
    }
    eprintln!();
    eprintln!("==================================================================");
    eprintln!("SKIP: {test}: /dev/kvm not available ({reason})");
    eprintln!("==================================================================");
    false
}
