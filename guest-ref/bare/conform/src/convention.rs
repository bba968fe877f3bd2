//! Conformance test `convention`: the calling convention, checked register by register
//! ([`regs::exchange`] loads every general-purpose register, executes one port instruction
//! and records every register afterwards).
//!
//! Before NEGOTIATE, a series of accesses that must perform no call (a doorbell write of
//! another width, a read of the doorbell, writes to the ports just above it, a string output
//! of bytes, a write at CPL3, a code with a bit of 63:32 set, a port no device claims) each
//! carries a NEGOTIATE that would succeed: a host that performed one would lock NEGOTIATE.
//! Each carries its own optional-feature marker, so that the features a wrongly performed
//! NEGOTIATE granted name the access. Then the real NEGOTIATE, and calls whose every register
//! is compared with what the convention allows. Runs on vCPU 0, at CPL0 except the one access
//! made at CPL3.
#![no_std]
#![no_main]

mod call;
mod channel;
mod regs;

use pvabi_guest::abi::discovery::CPUID_LEAF_TRANSPORT;
use pvabi_guest::abi::discovery::{TRANSPORT_VMCALL, TRANSPORT_VMMCALL};
use pvabi_guest::abi::features::Features;
use pvabi_guest::discovery::discover;
use pvabi_guest::{Call, PortTransport, Status};
use pvabi_guest_rt::cpu::cpuid;
use pvabi_guest_rt::{halt_forever, run_at_cpl3, BootInfo};

use call::raw;
use channel::{check, observe};
use regs::{exchange, pattern, Op, Regs};
use regs::{R8, R9, RAX, RCX, RDI, RDX, RFLAGS, RSI, RSP};

const TEST: &str = "convention";
const SUCCESS: u64 = Status::Success as u64;
const NOT_SUPPORTED: u64 = Status::NotSupported as u64;
/// A code no version defines.
const UNKNOWN_CODE: u64 = 0x7f42;
/// A port no device of the reference platform claims (the POST port).
const UNCLAIMED_PORT: u64 = 0x80;
/// The status flags of `rflags` (CF, PF, AF, ZF, SF, OF): unspecified after a call.
const STATUS_FLAGS: u64 = 0x8d5;
/// What NEGOTIATE requires in every access: CONSOLE and SYSTEM (bits 0 and 5), the channel's.
/// It is also the address `rep outsb` reads from (bytes of the boot TSS's page, all zero).
const REQUIRED: u64 = Features::CONSOLE.bits() | Features::SYSTEM.bits();

/// The optional features whose grant identifies a wrongly performed access: probe `k`
/// offers the features of the bits of `k + 1` (bit `i` is `MARKERS[i]`).
const MARKERS: [Features; 8] = [
    Features::TIME,
    Features::EVENTS,
    Features::MEMORY,
    Features::VCPU,
    Features::MULTICALL,
    Features::DEFERRED,
    Features::RING,
    Features::STEAL_TIME,
];

fn marker(k: usize) -> u64 {
    let code = k + 1;
    MARKERS
        .iter()
        .enumerate()
        .filter(|(i, _)| code >> i & 1 == 1)
        .fold(0, |m, (_, f)| m | f.bits())
}

/// One access that must perform no call.
struct Probe {
    name: &'static str,
    reqs: &'static [&'static str],
    op: Op,
    /// The port, relative to the doorbell port `P` (or [`UNCLAIMED_PORT`] when `absolute`).
    port: u64,
    absolute: bool,
    /// Bits ORed into `rax` (the NEGOTIATE code).
    rax_high: u64,
    cpl3: bool,
    /// What `rax` must be afterwards: `None` = unchanged.
    rax_after: Option<fn(u64) -> u64>,
    /// Whether every other register must be unchanged.
    others_unchanged: bool,
}

const PROBES: &[Probe] = &[
    Probe {
        name: "convention.doorbell_byte_write_is_not_supported_and_performs_no_call",
        reqs: &["PVABI-CONV-008"],
        op: Op::OutByte,
        port: 0,
        absolute: false,
        rax_high: 0,
        cpl3: false,
        rax_after: Some(|_| NOT_SUPPORTED),
        others_unchanged: true,
    },
    Probe {
        name: "convention.doorbell_word_write_is_not_supported_and_performs_no_call",
        reqs: &["PVABI-CONV-008"],
        op: Op::OutWord,
        port: 0,
        absolute: false,
        rax_high: 0,
        cpl3: false,
        rax_after: Some(|_| NOT_SUPPORTED),
        others_unchanged: true,
    },
    Probe {
        name: "convention.doorbell_read_is_all_ones_and_performs_no_call",
        reqs: &["PVABI-CONV-009"],
        op: Op::InDword,
        port: 0,
        absolute: false,
        rax_high: 0,
        cpl3: false,
        rax_after: Some(|_| 0xffff_ffff),
        others_unchanged: true,
    },
    Probe {
        name: "convention.write_to_doorbell_plus_1_performs_no_call",
        reqs: &["PVABI-CONV-029"],
        op: Op::OutDword,
        port: 1,
        absolute: false,
        rax_high: 0,
        cpl3: false,
        rax_after: None,
        others_unchanged: true,
    },
    Probe {
        name: "convention.write_to_doorbell_plus_2_performs_no_call",
        reqs: &["PVABI-CONV-029"],
        op: Op::OutDword,
        port: 2,
        absolute: false,
        rax_high: 0,
        cpl3: false,
        rax_after: None,
        others_unchanged: true,
    },
    Probe {
        name: "convention.write_to_doorbell_plus_3_performs_no_call",
        reqs: &["PVABI-CONV-029"],
        op: Op::OutDword,
        port: 3,
        absolute: false,
        rax_high: 0,
        cpl3: false,
        rax_after: None,
        others_unchanged: true,
    },
    Probe {
        name: "convention.read_of_doorbell_plus_1_changes_only_al_to_0",
        reqs: &["PVABI-CONV-029", "PVABI-PLAT-015"],
        op: Op::InByte,
        port: 1,
        absolute: false,
        rax_high: 0,
        cpl3: false,
        rax_after: Some(|old| old & !0xff),
        others_unchanged: true,
    },
    Probe {
        name: "convention.string_output_of_bytes_is_not_supported_and_performs_no_call",
        reqs: &["PVABI-CONV-031", "PVABI-CONV-008"],
        op: Op::RepOutsb,
        port: 0,
        absolute: false,
        rax_high: 0,
        cpl3: false,
        // Each element is a 1-byte write to the doorbell.
        rax_after: Some(|_| NOT_SUPPORTED),
        others_unchanged: false,
    },
    Probe {
        name: "convention.call_at_cpl3_is_not_supported_and_performs_no_call",
        reqs: &["PVABI-CONV-013", "PVABI-CONV-038"],
        op: Op::OutDword,
        port: 0,
        absolute: false,
        rax_high: 0,
        cpl3: true,
        rax_after: Some(|_| NOT_SUPPORTED),
        others_unchanged: true,
    },
    Probe {
        name: "convention.code_with_bit_32_set_is_unknown",
        reqs: &["PVABI-CONV-002", "PVABI-CONV-004"],
        op: Op::OutDword,
        port: 0,
        absolute: false,
        rax_high: 1 << 32,
        cpl3: false,
        rax_after: Some(|_| NOT_SUPPORTED),
        others_unchanged: false,
    },
    Probe {
        name: "convention.code_with_bit_63_set_is_unknown",
        reqs: &["PVABI-CONV-002", "PVABI-CONV-004"],
        op: Op::OutDword,
        port: 0,
        absolute: false,
        rax_high: 1 << 63,
        cpl3: false,
        rax_after: Some(|_| NOT_SUPPORTED),
        others_unchanged: false,
    },
    Probe {
        name: "convention.write_to_an_unclaimed_port_is_ignored",
        reqs: &["PVABI-PLAT-015"],
        op: Op::OutDword,
        port: UNCLAIMED_PORT,
        absolute: true,
        rax_high: 0,
        cpl3: false,
        rax_after: None,
        others_unchanged: true,
    },
    Probe {
        name: "convention.read_of_an_unclaimed_port_is_0",
        reqs: &["PVABI-PLAT-015"],
        op: Op::InDword,
        port: UNCLAIMED_PORT,
        absolute: true,
        rax_high: 0,
        cpl3: false,
        rax_after: Some(|_| 0),
        others_unchanged: true,
    },
];

/// The registers a probe leaves as they were: every slot but `rax` (and `rflags`, whose
/// view differs at CPL3 on some hosts; it is compared for the calls below).
fn first_changed(before: &Regs, after: &Regs, skip: &[usize]) -> Option<usize> {
    (1..=RSP).find(|i| !skip.contains(i) && before.r[*i] != after.r[*i])
}

/// The exchange of a CPL3 probe: its input, and where it leaves its output.
static mut CPL3_IO: (Option<Regs>, Option<(Regs, Regs)>) = (None, None);

fn at_cpl3(_: u64) -> u64 {
    // SAFETY: one vCPU; `main` filled the input before and reads the output after.
    unsafe {
        let io = &mut *core::ptr::addr_of_mut!(CPL3_IO);
        if let Some(input) = io.0 {
            io.1 = Some(exchange(Op::OutDword, &input));
        }
    }
    0
}

fn run(op: Op, input: &Regs, cpl3: bool) -> (Regs, Regs) {
    if !cpl3 {
        return exchange(op, input);
    }
    // SAFETY: as in `at_cpl3`.
    unsafe {
        *core::ptr::addr_of_mut!(CPL3_IO) = (Some(*input), None);
    }
    run_at_cpl3(at_cpl3, 0);
    // SAFETY: as in `at_cpl3`.
    unsafe { (*core::ptr::addr_of!(CPL3_IO)).1 }.unwrap_or((*input, Regs { r: [0; 17] }))
}

/// A call through the doorbell with every register patterned (`tag`), `code` in `rax`,
/// `args` in the argument registers.
fn call_all(port: u64, tag: u64, code: u64, args: &[(usize, u64)]) -> (Regs, Regs) {
    let mut input = pattern(tag);
    input.r[RAX] = code;
    input.r[RDX] = port;
    for (slot, value) in args {
        input.r[*slot] = *value;
    }
    exchange(Op::OutDword, &input)
}

/// The slots a call may change: `rax` and the four result registers.
const RESULTS: [usize; 5] = [RAX, RDI, RSI, R8, R9];

/// Checks that a call preserved every register but `rax` and the results, and every flag but
/// the status flags.
fn preserved(before: &Regs, after: &Regs) -> (bool, u64, u64) {
    if let Some(i) = first_changed(before, after, &RESULTS) {
        return (false, after.r[i], before.r[i]);
    }
    let flags = (before.r[RFLAGS] ^ after.r[RFLAGS]) & !STATUS_FLAGS;
    (flags == 0, after.r[RFLAGS], before.r[RFLAGS])
}

/// CONV-027: an undefined result register holds, after each of two calls with different
/// inputs, its old value or 0, or the same value both times (a configuration constant).
fn undefined_ok(slot: usize, a: &(Regs, Regs), b: &(Regs, Regs)) -> bool {
    let ok = |(before, after): &(Regs, Regs)| after.r[slot] == before.r[slot] || after.r[slot] == 0;
    (ok(a) && ok(b)) || a.1.r[slot] == b.1.r[slot]
}

fn main(_boot: &BootInfo) -> ! {
    channel::begin(TEST);
    let Some(found) = discover() else {
        halt_forever()
    };
    let port = u64::from(found.info.doorbell_port);
    channel::set_doorbell(found.info.doorbell_port);
    let t = PortTransport::new(found.info.doorbell_port);

    // The accesses that must perform no call, each carrying a NEGOTIATE with its marker.
    let mut seen = [(Regs { r: [0; 17] }, Regs { r: [0; 17] }); PROBES.len()];
    for (k, p) in PROBES.iter().enumerate() {
        let mut input = pattern(k as u64);
        input.r[RAX] = u64::from(Call::Negotiate.code()) | p.rax_high;
        input.r[RDX] = if p.absolute { p.port } else { port + p.port };
        input.r[RDI] = 0x0001_0000;
        input.r[RSI] = REQUIRED;
        input.r[R8] = marker(k);
        input.r[R9] = 0;
        if let Op::RepOutsb = p.op {
            input.r[RCX] = 4;
        }
        seen[k] = run(p.op, &input, p.cpl3);
    }

    // The real NEGOTIATE, every register patterned; r10 and r11 are not NEGOTIATE's.
    let negotiate = call_all(
        port,
        0x40,
        u64::from(Call::Negotiate.code()),
        &[(RDI, 0x0001_0000), (RSI, REQUIRED), (R8, 0), (R9, 0)],
    );
    let n = negotiate.1;
    let granted = if n.r[RAX] == SUCCESS {
        n.r[RSI]
    } else {
        raw(&t, Call::ProbeFeatures, &[]).results[1]
    };
    if granted & REQUIRED != REQUIRED {
        // No console: nothing can be reported (a wrongly performed access granted less).
        halt_forever()
    }
    channel::go_live();
    // Which access performed its NEGOTIATE, if one did: the one whose marker was granted.
    let offered = found.info.offered_features;
    let culprit = if n.r[RAX] == SUCCESS {
        None
    } else {
        let got = granted & !REQUIRED;
        let matches = (0..PROBES.len()).filter(|k| marker(*k) & offered == got);
        let mut one = None;
        let mut count = 0;
        for k in matches {
            one = Some(k);
            count += 1;
        }
        // An unattributable lock blames every access.
        if count == 1 {
            one
        } else {
            Some(usize::MAX)
        }
    };
    for (k, p) in PROBES.iter().enumerate() {
        let (before, after) = &seen[k];
        let performed = culprit == Some(k) || culprit == Some(usize::MAX);
        let want_rax = p.rax_after.map_or(before.r[RAX], |f| f(before.r[RAX]));
        let others = if p.others_unchanged {
            first_changed(before, after, &[RAX])
        } else {
            None
        };
        let (seen_v, want_v) = match others {
            Some(i) => (after.r[i], before.r[i]),
            None if performed => (granted, REQUIRED),
            None => (after.r[RAX], want_rax),
        };
        check(
            p.name,
            p.reqs,
            !performed && after.r[RAX] == want_rax && others.is_none(),
            seen_v,
            want_v,
        );
    }

    // The probe at CPL3 came back: the host answered it with a status rather than by
    // injecting the fault the port write would raise without a hypervisor (either is allowed;
    // an injected fault would have ended this test).
    observe(
        "convention.a_call_at_cpl3_is_answered_with_a_status_not_a_fault",
        &["PVABI-CONV-037"],
        "no fault injected (call_at_cpl3 checks what rax became); CPL3 doorbell writes made:",
        PROBES.iter().filter(|p| p.cpl3).count() as u64,
    );

    // The NEGOTIATE: results in rdi and rsi, the rest preserved.
    let (before, after) = &negotiate;
    let (kept, got, want) = preserved(before, after);
    if culprit.is_some_and(|k| k < PROBES.len()) {
        channel::skip(
            "convention.negotiate_with_undefined_argument_registers_succeeds",
            &["PVABI-CONV-003", "PVABI-CONV-007"],
            "an access that must perform no call performed a NEGOTIATE (its check fails)",
        );
    } else {
        check(
            "convention.negotiate_with_undefined_argument_registers_succeeds",
            &["PVABI-CONV-003", "PVABI-CONV-007"],
            after.r[RAX] == SUCCESS,
            after.r[RAX],
            SUCCESS,
        );
    }
    let negotiated = raw(&t, Call::GetSpecVersion, &[]).results[2];
    check(
        "convention.negotiate_preserves_every_other_register",
        &["PVABI-CONV-005"],
        kept,
        got,
        want,
    );

    // GET_SPEC_VERSION twice, every register patterned (rdi to r11 are not its arguments).
    let a = call_all(port, 0x50, u64::from(Call::GetSpecVersion.code()), &[]);
    let b = call_all(port, 0x51, u64::from(Call::GetSpecVersion.code()), &[]);
    let (highest, lowest) = (
        u64::from(found.info.highest_version),
        u64::from(found.info.lowest_version),
    );
    let results_ok = |(_, r): &(Regs, Regs)| {
        r.r[RAX] == SUCCESS
            && r.r[RDI] == highest
            && r.r[RSI] == lowest
            && r.r[R8] == negotiated
            && negotiated != 0
    };
    check(
        "convention.results_and_status_in_their_registers",
        &["PVABI-CONV-004", "PVABI-CONV-003"],
        results_ok(&a) && results_ok(&b),
        a.1.r[RDI],
        highest,
    );
    check(
        "convention.narrow_results_are_zero_extended",
        &["PVABI-CONV-028"],
        [RDI, RSI, R8]
            .iter()
            .all(|s| a.1.r[*s] >> 32 == 0 && b.1.r[*s] >> 32 == 0),
        a.1.r[RDI],
        highest,
    );
    check(
        "convention.undefined_result_register_holds_no_host_data",
        &["PVABI-CONV-027"],
        undefined_ok(R9, &a, &b),
        a.1.r[R9],
        a.0.r[R9],
    );
    let (kept, got, want) = preserved(&a.0, &a.1);
    check(
        "convention.a_call_preserves_every_non_result_register",
        &["PVABI-CONV-005"],
        kept,
        got,
        want,
    );

    // An unknown code: NOT_SUPPORTED, zero-extended; no result register is defined.
    let a = call_all(port, 0x60, UNKNOWN_CODE, &[]);
    let b = call_all(port, 0x61, UNKNOWN_CODE, &[]);
    check(
        "convention.error_status_is_zero_extended",
        &["PVABI-CONV-004", "PVABI-CONV-002"],
        a.1.r[RAX] == NOT_SUPPORTED && b.1.r[RAX] == NOT_SUPPORTED,
        a.1.r[RAX],
        NOT_SUPPORTED,
    );
    check(
        "convention.result_registers_after_an_error_hold_no_host_data",
        &["PVABI-CONV-027"],
        [RDI, RSI, R8, R9].iter().all(|s| undefined_ok(*s, &a, &b)),
        a.1.r[RDI],
        a.0.r[RDI],
    );
    let kept = [RDI, RSI, R8, R9]
        .iter()
        .fold(0, |m, &r| m << 1 | u64::from(a.1.r[r] == a.0.r[r]));
    observe(
        "convention.what_a_failed_call_leaves_in_the_result_registers",
        &["PVABI-STAT-006"],
        "after NOT_SUPPORTED, which of rdi, rsi, r8, r9 (bits 3 to 0) keep the guest's value:",
        kept,
    );
    let (kept, got, want) = preserved(&a.0, &a.1);
    check(
        "convention.a_failed_call_preserves_every_non_result_register",
        &["PVABI-CONV-005"],
        kept,
        got,
        want,
    );

    // The vmcall and vmmcall bindings, where the transport leaf advertises them: the same
    // call as the doorbell's, whatever rdx holds (the pattern puts junk there).
    let transport = cpuid(found.base + CPUID_LEAF_TRANSPORT, 0)[1];
    for (flag, op, name) in [
        (
            TRANSPORT_VMCALL,
            Op::Vmcall,
            "convention.vmcall_binding_is_the_doorbell_call",
        ),
        (
            TRANSPORT_VMMCALL,
            Op::Vmmcall,
            "convention.vmmcall_binding_is_the_doorbell_call",
        ),
    ] {
        if transport & flag == 0 {
            // The rule binds only a host that advertises the binding: nothing to check.
            channel::not_applicable(
                name,
                &["PVABI-CONV-011"],
                "the transport leaf's eax advertises no such binding:",
                u64::from(transport),
            );
            continue;
        }
        let mut input = pattern(0x70);
        input.r[RAX] = u64::from(Call::GetSpecVersion.code());
        let (before, after) = exchange(op, &input);
        let (kept, got, want) = preserved(&before, &after);
        check(
            name,
            &["PVABI-CONV-011"],
            results_ok(&(before, after)) && kept,
            if kept { after.r[RDI] } else { got },
            if kept { highest } else { want },
        );
    }
    channel::end(TEST)
}

pvabi_guest_rt::entry!(main);

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    halt_forever()
}
