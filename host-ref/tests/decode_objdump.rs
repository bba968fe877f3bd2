//! The checking host's decoder (`pvabi_dispatch::x86`, over iced-x86) against binutils'
//! `objdump` on every instruction of the built-in guest images: the same lengths, the same
//! addresses for every memory operand objdump prints (computed from the same registers), and
//! the same targets for direct branches and calls. What the decoder gives up on must be one
//! of the instructions its documentation names.

use std::collections::{BTreeMap, HashSet};
use std::process::Command;

use pvabi_dispatch::x86::{decode, Next, Regs};

const FS_BASE: u64 = 0x7000_0000;
const GS_BASE: u64 = 0x9000_0000;

/// Register `n` (encoding order) holds a value no other register's low 32 bits share.
fn gprs() -> [u64; 16] {
    std::array::from_fn(|n| 0x0101_0000_0000 * (n as u64 + 1) + 0x10_0100 * (n as u64 + 1))
}

const R64: [&str; 16] = [
    "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13",
    "r14", "r15",
];
const R32: [&str; 16] = [
    "eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi", "r8d", "r9d", "r10d", "r11d", "r12d",
    "r13d", "r14d", "r15d",
];

/// A register's value, and whether it is a 32-bit one.
fn register(name: &str, g: &[u64; 16]) -> Option<(u64, bool)> {
    if let Some(n) = R64.iter().position(|r| *r == name) {
        return Some((g[n], false));
    }
    if let Some(n) = R32.iter().position(|r| *r == name) {
        return Some((g[n] & 0xffff_ffff, true));
    }
    match name {
        "riz" => Some((0, false)),
        "eiz" => Some((0, true)),
        _ => None,
    }
}

/// One line of `objdump -d -M intel -w`.
struct Line {
    address: u64,
    len: usize,
    bytes: Vec<u8>,
    text: String,
}

fn disassemble(name: &str, image: &[u8]) -> Vec<Line> {
    let path = std::env::temp_dir().join(format!(
        "pvabi-decode-objdump-{}-{name}.elf",
        std::process::id()
    ));
    std::fs::write(&path, image).expect("write the image");
    let out = Command::new("objdump")
        .args(["-d", "-M", "intel", "-w", "--insn-width=16"])
        .arg(&path)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run objdump ({e}): install binutils (`apt-get install -y binutils`)")
        });
    let _ = std::fs::remove_file(&path);
    assert!(out.status.success(), "objdump failed on {name}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, '\t');
            let address = parts.next()?.trim().strip_suffix(':')?;
            let address = u64::from_str_radix(address, 16).ok()?;
            let bytes: Vec<u8> = parts
                .next()?
                .split_whitespace()
                .map(|b| u8::from_str_radix(b, 16))
                .collect::<Result<_, _>>()
                .ok()?;
            let text = parts.next().unwrap_or("").trim().to_owned();
            Some(Line {
                address,
                len: bytes.len(),
                bytes,
                text,
            })
        })
        .collect()
}

/// The addresses of the memory operands objdump prints in `text` (the instruction after it
/// at `next`), or `None` where one cannot be read.
fn operands(text: &str, next: u64, g: &[u64; 16]) -> Option<Vec<u64>> {
    let text = text.split(['#', '<']).next().unwrap_or("");
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('[') {
        let close = open + rest[open..].find(']')?;
        let segment = match &rest[..open] {
            b if b.ends_with("fs:") => FS_BASE,
            b if b.ends_with("gs:") => GS_BASE,
            _ => 0,
        };
        let (mut sum, mut addr32) = (0u64, false);
        let inner = rest[open + 1..close].replace('-', "+-");
        for term in inner.split('+').filter(|t| !t.is_empty()) {
            let (negative, term) = match term.strip_prefix('-') {
                Some(t) => (true, t),
                None => (false, term),
            };
            let value = if let Some(hex) = term.strip_prefix("0x") {
                u64::from_str_radix(hex, 16).ok()?
            } else if term == "rip" {
                next
            } else if let Some((r, scale)) = term.split_once('*') {
                let (v, is32) = register(r, g)?;
                addr32 |= is32;
                v.wrapping_mul(scale.parse().ok()?)
            } else {
                let (v, is32) = register(term, g)?;
                addr32 |= is32;
                v
            };
            sum = if negative {
                sum.wrapping_sub(value)
            } else {
                sum.wrapping_add(value)
            };
        }
        if addr32 {
            sum &= 0xffff_ffff;
        }
        out.push(segment.wrapping_add(sum));
        rest = &rest[close + 1..];
    }
    // Absolute addresses: `ds:0x1234`, `gs:0x28`.
    for (prefix, base) in [("ds:0x", 0), ("fs:0x", FS_BASE), ("gs:0x", GS_BASE)] {
        let mut rest = text;
        while let Some(at) = rest.find(prefix) {
            rest = &rest[at + prefix.len()..];
            let hex: String = rest.chars().take_while(char::is_ascii_hexdigit).collect();
            out.push(u64::from_str_radix(&hex, 16).ok()?.wrapping_add(base));
        }
    }
    Some(out)
}

/// The mnemonic, past the prefixes objdump prints before it.
fn mnemonic(text: &str) -> &str {
    text.split_whitespace()
        .find(|w| {
            !matches!(
                *w,
                "lock"
                    | "rep"
                    | "repz"
                    | "repnz"
                    | "repe"
                    | "repne"
                    | "bnd"
                    | "notrack"
                    | "data16"
                    | "addr32"
                    | "rex"
                    | "rex.W"
                    | "cs"
                    | "ds"
                    | "es"
                    | "ss"
                    | "fs"
                    | "gs"
            )
        })
        .unwrap_or("")
}

#[test]
fn the_decoder_agrees_with_objdump_on_the_guest_images() {
    let g = gprs();
    let mut seen = HashSet::new();
    let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
    let mut given_up: BTreeMap<String, u64> = BTreeMap::new();
    let mut wrong = Vec::new();
    for (name, image) in pvabi_guest_images::ALL {
        for line in disassemble(name, image()) {
            if line.text.is_empty() || line.text.starts_with("(bad)") {
                continue;
            }
            *counts.entry("instructions").or_default() += 1;
            // Each distinct instruction once (the images share their runtime).
            if !seen.insert((line.address, line.bytes.clone())) {
                continue;
            }
            *counts.entry("distinct").or_default() += 1;
            let mut code = line.bytes.clone();
            code.resize(16, 0x90);
            let regs = Regs {
                rip: line.address,
                gprs: &g,
                fs_base: FS_BASE,
                gs_base: GS_BASE,
            };
            let m = mnemonic(&line.text);
            let Some(d) = decode(&code, &regs) else {
                *given_up.entry(m.to_owned()).or_default() += 1;
                continue;
            };
            *counts.entry("decoded").or_default() += 1;
            let next = line.address + line.len as u64;
            if usize::from(d.len) != line.len {
                wrong.push(format!(
                    "{name}: length {} for {:x}: {}",
                    d.len, line.address, line.text
                ));
            }
            // Direct branches and calls: objdump prints the target.
            if let Next::To(t) | Next::Branch(t) = d.next {
                let operand = line.text.split(['<', '#']).next().unwrap_or("");
                let operand = operand.split_whitespace().last().unwrap_or("");
                let printed = u64::from_str_radix(operand, 16)
                    .ok()
                    .or_else(|| register(operand, &g).map(|(v, _)| v));
                if !line.text.contains('[') {
                    *counts.entry("branch targets").or_default() += 1;
                    if printed != Some(t) {
                        wrong.push(format!(
                            "{name}: target {t:#x} for {:x}: {}",
                            line.address, line.text
                        ));
                    }
                }
            }
            // Operands objdump prints that access nothing, or not at the address printed.
            let no_access = m == "lea"
                || m.starts_with("nop")
                || m.starts_with("prefetch")
                || m == "invlpg"
                || m.starts_with("xlat")
                || m.starts_with("endbr");
            if no_access {
                continue;
            }
            let Some(addresses) = operands(&line.text, next, &g) else {
                wrong.push(format!("{name}: cannot read the operands of {}", line.text));
                continue;
            };
            for a in addresses {
                *counts.entry("memory operands").or_default() += 1;
                if !d.data.iter().any(|x| x.address == a) {
                    wrong.push(format!(
                        "{name}: {a:#x} for {:x}: {} not among {:x?}",
                        line.address, line.text, d.data
                    ));
                }
            }
        }
    }
    println!("{counts:?}; given up on: {given_up:?}");
    assert!(
        wrong.is_empty(),
        "{} disagreements:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    // The module's documentation names what it gives up on.
    let documented = [
        "int3", "int", "int1", "iretq", "iretd", "retfq", "lret", "retf", "ud2", "ud0", "ud1",
        "vmcall", "vmmcall", "syscall", "sysretq", "sysret", "xbegin", "xabort", "xend",
    ];
    for m in given_up.keys() {
        assert!(
            documented.contains(&m.as_str()),
            "gives up on {m}: {given_up:?}"
        );
    }
    assert!(counts["decoded"] > 10_000, "{counts:?}");
    assert!(counts["memory operands"] > 5_000, "{counts:?}");
    assert!(counts["branch targets"] > 5_000, "{counts:?}");
}
