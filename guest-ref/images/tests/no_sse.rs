//! The bare-metal guest images the host embeds contain no SSE/AVX instructions: on hosts
//! that emulate ring-0 guest code (PVM), an SSE instruction at CPL0 ends the VM with an
//! internal error, so one stray `movaps` from a copy loop would break every guest.

use std::process::Command;

const IMAGES: &[(&str, &str)] = &[
    ("demo", env!("PVABI_GUEST_DEMO")),
    ("smoke", env!("PVABI_GUEST_SMOKE")),
    ("probe", env!("PVABI_GUEST_PROBE")),
    ("hostile", env!("PVABI_GUEST_HOSTILE")),
    ("bench", env!("PVABI_GUEST_BENCH")),
    ("matrix", env!("PVABI_GUEST_MATRIX")),
    ("conform-base", env!("PVABI_GUEST_CONFORM_BASE")),
    ("conform-time", env!("PVABI_GUEST_CONFORM_TIME")),
    ("conform-memory", env!("PVABI_GUEST_CONFORM_MEMORY")),
    ("conform-multicall", env!("PVABI_GUEST_CONFORM_MULTICALL")),
    (
        "conform-multicall-preempt",
        env!("PVABI_GUEST_CONFORM_MULTICALL_PREEMPT"),
    ),
    ("conform-deferred", env!("PVABI_GUEST_CONFORM_DEFERRED")),
    ("conform-ring", env!("PVABI_GUEST_CONFORM_RING")),
    ("conform-events", env!("PVABI_GUEST_CONFORM_EVENTS")),
    ("conform-vcpu", env!("PVABI_GUEST_CONFORM_VCPU")),
    ("conform-system", env!("PVABI_GUEST_CONFORM_SYSTEM")),
    ("careless", env!("PVABI_GUEST_CARELESS")),
    ("careless-discovery", env!("PVABI_GUEST_CARELESS_DISCOVERY")),
    ("careless-identity", env!("PVABI_GUEST_CARELESS_IDENTITY")),
    ("careless-cpuid", env!("PVABI_GUEST_CARELESS_CPUID")),
    ("careless-order", env!("PVABI_GUEST_CARELESS_ORDER")),
    ("careless-pte", env!("PVABI_GUEST_CARELESS_PTE")),
    ("conform-convention", env!("PVABI_GUEST_CONFORM_CONVENTION")),
    (
        "conform-convention-compat-mode",
        env!("PVABI_GUEST_CONFORM_CONVENTION_COMPAT_MODE"),
    ),
    ("conform-status", env!("PVABI_GUEST_CONFORM_STATUS")),
    ("conform-version", env!("PVABI_GUEST_CONFORM_VERSION")),
    (
        "conform-version-1-0",
        env!("PVABI_GUEST_CONFORM_VERSION_1_0"),
    ),
    ("conform-platform", env!("PVABI_GUEST_CONFORM_PLATFORM")),
    ("conform-reset", env!("PVABI_GUEST_CONFORM_RESET")),
    ("conform-timer", env!("PVABI_GUEST_CONFORM_TIMER")),
    (
        "conform-platform-fault",
        env!("PVABI_GUEST_CONFORM_PLATFORM_FAULT"),
    ),
    (
        "conform-system-shutdown",
        env!("PVABI_GUEST_CONFORM_SYSTEM_SHUTDOWN"),
    ),
    (
        "conform-system-crash",
        env!("PVABI_GUEST_CONFORM_SYSTEM_CRASH"),
    ),
    ("conform-compat-1", env!("PVABI_GUEST_CONFORM_COMPAT_1")),
    ("conform-compat-2", env!("PVABI_GUEST_CONFORM_COMPAT_2")),
    ("conform-migrate", env!("PVABI_GUEST_CONFORM_MIGRATE")),
];

#[test]
fn guest_images_use_no_vector_registers() {
    for (name, path) in IMAGES {
        let out = Command::new("objdump")
            .args(["-d", "--no-show-raw-insn", path])
            .output()
            .unwrap_or_else(|e| panic!("cannot run objdump ({e}): install binutils (Debian: `apt-get install -y binutils`)"));
        assert!(
            out.status.success(),
            "objdump failed on the {name} guest: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let instructions = text.lines().filter(|l| l.contains(":\t")).count();
        assert!(
            instructions > 100,
            "the {name} guest disassembled to only {instructions} instructions"
        );
        let vector: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("%xmm") || l.contains("%ymm") || l.contains("%zmm"))
            .take(5)
            .collect();
        assert!(
            vector.is_empty(),
            "the {name} guest uses vector registers (PVM cannot run SSE at CPL0):\n{}",
            vector.join("\n")
        );
    }
}

#[test]
fn builtin_guests_are_elf_images() {
    for (name, image) in pvabi_guest_images::ALL {
        assert!(image().starts_with(b"\x7fELF"), "{name}");
        assert_eq!(pvabi_guest_images::by_name(name), Some(image()));
    }
    assert_eq!(pvabi_guest_images::by_name("nope"), None);
    // Every built-in guest is disassembled above.
    for (name, _) in pvabi_guest_images::ALL {
        assert!(
            IMAGES.iter().any(|(n, _)| n == name),
            "add {name} to IMAGES, so that its code is checked for vector registers"
        );
    }
}
