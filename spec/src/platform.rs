//! `generated/platform.md`: the tables of the appendix "The reference platform", from
//! [`pvabi_abi::platform`] (the constants the reference host boots its guests with).
//!
//! The reference platform is not part of the ABI: these tables document how one host, the
//! reference host, lays out guest memory and starts a vCPU.

use std::fmt::Write as _;

use pvabi_abi::platform::{
    BOOT_APIC_BASE, BOOT_CR0, BOOT_CR4, BOOT_EFER, BOOT_FCW, BOOT_GDT, BOOT_GDT_ADDR,
    BOOT_GDT_LIMIT, BOOT_MAP_PAGE_SIZE, BOOT_MXCSR, BOOT_PTE_FLAGS, BOOT_PTE_PS, BOOT_RFLAGS,
    BOOT_STACK_TOP, BOOT_XCR0, CODE_SELECTOR, DATA_SELECTOR, IMAGE_BASE, IMAGE_MIN_ADDR,
    MIN_MAPPED_BYTES, PDPT_ADDR, PD_ADDR, PML4_ADDR, TSS_SELECTOR,
};

use crate::constants::{self, Module};
use crate::generate::HEADER;

/// The names of the bits set in `value`, from `names` (bit, name), low bit first.
fn bit_names(value: u64, names: &[(u32, &str)]) -> String {
    let mut out: Vec<String> = Vec::new();
    for bit in 0..64 {
        if value & (1 << bit) == 0 {
            continue;
        }
        match names.iter().find(|(b, _)| *b == bit) {
            Some((_, n)) => out.push(format!("{n} (bit {bit})")),
            None => out.push(format!("bit {bit}")),
        }
    }
    out.join(", ")
}

fn memory_map() -> String {
    let mut out = String::from("| Guest-physical address | Size | What |\n|---|---|---|\n");
    let rows: [(u64, String, String); 7] = [
        (
            BOOT_GDT_ADDR,
            format!("{} bytes", u64::from(BOOT_GDT_LIMIT) + 1),
            format!(
                "the boot GDT: null, code `{CODE_SELECTOR:#04x}`, data `{DATA_SELECTOR:#04x}`, TSS `{TSS_SELECTOR:#04x}` (16 bytes)"
            ),
        ),
        (
            BOOT_STACK_TOP,
            "-".to_string(),
            "top of the boot vCPU's scratch stack (it grows down towards the GDT)".to_string(),
        ),
        (PML4_ADDR, "4 KiB".to_string(), "the PML4 (CR3 at entry); entry 0 points to the PDPT".to_string()),
        (PDPT_ADDR, "4 KiB".to_string(), "the PDPT: entry *n* points to the page directory of GiB *n*".to_string()),
        (
            PD_ADDR,
            "4 KiB per GiB mapped".to_string(),
            format!("the page directories, one per GiB mapped, of {} KiB pages", BOOT_MAP_PAGE_SIZE >> 10),
        ),
        (
            IMAGE_MIN_ADDR,
            "-".to_string(),
            "the lowest address a loadable segment of the image may occupy".to_string(),
        ),
        (
            IMAGE_BASE,
            "-".to_string(),
            "where the project's guest images are linked (any address from the one above works)".to_string(),
        ),
    ];
    for (addr, size, what) in rows {
        let _ = writeln!(out, "| `{addr:#x}` | {size} | {what} |");
    }
    out
}

fn entry_state() -> String {
    let cr0 = [
        (0, "PE"),
        (1, "MP"),
        (4, "ET"),
        (5, "NE"),
        (16, "WP"),
        (31, "PG"),
    ];
    let cr4 = [(5, "PAE"), (9, "OSFXSR"), (10, "OSXMMEXCPT")];
    let efer = [(8, "LME"), (10, "LMA")];
    let mut out = String::from(
        "| Register | Boot vCPU (vCPU 0) | vCPU started by VCPU_START |\n|---|---|---|\n",
    );
    let rows: Vec<(String, String, String)> = vec![
        (
            "`rip`".into(),
            "the ELF entry point".into(),
            "`VcpuStartState.rip`".into(),
        ),
        (
            "`rsp`".into(),
            format!("`{BOOT_STACK_TOP:#x}`"),
            "`VcpuStartState.rsp`".into(),
        ),
        (
            "`rdi`".into(),
            "0 (its vCPU index)".into(),
            "`VcpuStartState.arg`".into(),
        ),
        (
            "`rsi`".into(),
            "the size of guest RAM in bytes".into(),
            "0".into(),
        ),
        ("`rdx`".into(), "the vCPU count".into(), "0".into()),
        (
            "other general-purpose registers".into(),
            "0".into(),
            "0".into(),
        ),
        (
            "`rflags`".into(),
            format!("`{BOOT_RFLAGS:#x}` (IF clear)"),
            format!("`{BOOT_RFLAGS:#x}` (IF clear)"),
        ),
        (
            "`cr0`".into(),
            format!("`{BOOT_CR0:#x}`: {}", bit_names(BOOT_CR0, &cr0)),
            "as vCPU 0".into(),
        ),
        ("`cr2`".into(), "0".into(), "0".into()),
        (
            "`cr3`".into(),
            format!("`{PML4_ADDR:#x}`"),
            format!("`VcpuStartState.cr3`, or `{PML4_ADDR:#x}` if it is 0"),
        ),
        (
            "`cr4`".into(),
            format!("`{BOOT_CR4:#x}`: {}", bit_names(BOOT_CR4, &cr4)),
            "as vCPU 0".into(),
        ),
        ("`cr8` (TPR)".into(), "0".into(), "0".into()),
        (
            "EFER".into(),
            format!("`{BOOT_EFER:#x}`: {}", bit_names(BOOT_EFER, &efer)),
            "as vCPU 0".into(),
        ),
        (
            "XCR0".into(),
            format!("`{BOOT_XCR0:#x}` (x87 only)"),
            "as vCPU 0".into(),
        ),
        (
            "x87 and SSE state".into(),
            format!("FCW `{BOOT_FCW:#x}`, MXCSR `{BOOT_MXCSR:#x}`, everything else 0"),
            "as vCPU 0".into(),
        ),
        (
            "CS".into(),
            format!("`{CODE_SELECTOR:#04x}`: base 0, 64-bit code, DPL 0"),
            "as vCPU 0".into(),
        ),
        (
            "DS, ES, FS, GS, SS".into(),
            format!("`{DATA_SELECTOR:#04x}`: base 0, limit 4 GiB, writable data, DPL 0"),
            "as vCPU 0".into(),
        ),
        (
            "TR".into(),
            format!("`{TSS_SELECTOR:#04x}`: busy 64-bit TSS, base 0, limit `0x67`"),
            "as vCPU 0".into(),
        ),
        (
            "LDTR".into(),
            "selector 0, base 0, limit `0xffff` (no LDT loaded)".into(),
            "as vCPU 0".into(),
        ),
        (
            "GDTR".into(),
            format!("base `{BOOT_GDT_ADDR:#x}`, limit `{BOOT_GDT_LIMIT:#x}`"),
            "as vCPU 0".into(),
        ),
        (
            "IDTR".into(),
            "base 0, limit 0 (no IDT)".into(),
            "as vCPU 0".into(),
        ),
        (
            "`IA32_APIC_BASE`".into(),
            format!("`{BOOT_APIC_BASE:#x}` (bit 11 clear: no local APIC)"),
            "as vCPU 0".into(),
        ),
        (
            "FS.base, GS.base, KERNEL_GS_BASE, STAR, LSTAR, CSTAR, SFMASK".into(),
            "0".into(),
            "0".into(),
        ),
    ];
    for (reg, boot, started) in rows {
        let _ = writeln!(out, "| {reg} | {boot} | {started} |");
    }
    out
}

fn gdt() -> String {
    let mut out =
        String::from("| Selector | Descriptor (8 bytes, little-endian) | What |\n|---|---|---|\n");
    let what = [
        "null",
        "64-bit code: present, DPL 0, L=1, G=1",
        "data: present, DPL 0, writable, D/B=1, G=1, limit 4 GiB",
        "64-bit TSS (busy), base 0, limit `0x67`: low half",
        "64-bit TSS: high half (base bits 63:32 = 0)",
    ];
    for (i, (d, w)) in BOOT_GDT.iter().zip(what).enumerate() {
        let _ = writeln!(out, "| `{:#04x}` | `{d:#018x}` | {w} |", i * 8);
    }
    out
}

fn page_tables() -> String {
    format!(
        "Every entry of the PML4, PDPT and page directories that is in use has the flags \
         `{BOOT_PTE_FLAGS:#x}` (present, writable, user); the page-directory entries also set \
         PS (`{BOOT_PTE_PS:#x}`) and map {} KiB each. Page directory entry *i* of GiB *n* maps \
         guest-physical `n * 0x40000000 + i * {BOOT_MAP_PAGE_SIZE:#x}` at the same virtual address. \
         The tables map every GiB that holds guest RAM, and at least the first \
         `{MIN_MAPPED_BYTES:#x}` bytes.\n",
        BOOT_MAP_PAGE_SIZE >> 10
    )
}

/// `generated/platform.md`.
pub fn platform_file() -> String {
    let mut out = String::from(HEADER);
    out.push('\n');
    for (name, body) in [
        ("memory-map", memory_map()),
        ("entry", entry_state()),
        ("gdt", gdt()),
        ("page-tables", page_tables()),
        ("constants", constants::table(Module::Platform)),
    ] {
        let _ = writeln!(out, "<!-- ANCHOR: {name} -->\n");
        out.push_str(&body);
        let _ = writeln!(out, "\n<!-- ANCHOR_END: {name} -->\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tables_quote_the_platform_constants() {
        let text = platform_file();
        assert!(text.contains(&format!("`{PML4_ADDR:#x}`")));
        assert!(text.contains("PE (bit 0)"));
        assert!(text.contains("| `BOOT_CR0` |"), "the constants table");
        assert!(text.contains(&format!("`{:#018x}`", BOOT_GDT[1])));
    }
}
