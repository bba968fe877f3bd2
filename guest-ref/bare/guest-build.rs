//! Shared build script of every guest binary here (each Cargo.toml says
//! `build = "../guest-build.rs"`). Links the guest freestanding at 0x200000 with the runtime's linker script.

fn main() {
    let script = std::env::var("DEP_PVABI_GUEST_RT_LINKER_SCRIPT")
        .expect("pvabi-guest-rt publishes its linker script (links = \"pvabi_guest_rt\")");
    for arg in [
        "-nostartfiles",
        "-nostdlib",
        "-static",
        "-no-pie",
        "-Wl,--build-id=none",
        "-Wl,-z,noexecstack",
        &format!("-Wl,-T,{script}"),
    ] {
        println!("cargo:rustc-link-arg-bins={arg}");
    }
    println!("cargo:rerun-if-changed={script}");
    println!("cargo:rerun-if-changed=../guest-build.rs");
}
