//! Publishes the path of the guest linker script to the build scripts of the guest
//! binaries (as `DEP_PVABI_GUEST_RT_LINKER_SCRIPT`).

use std::path::PathBuf;

fn main() {
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let script = dir.join("link.ld");
    println!("cargo:rerun-if-changed={}", script.display());
    println!("cargo:LINKER_SCRIPT={}", script.display());
}
