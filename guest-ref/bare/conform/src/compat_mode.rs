//! Conformance test `convention-compat-mode`: a doorbell write made in compatibility mode
//! (ring-3 code in a 32-bit code segment, `CS.L` = 0) performs no call (PVABI-CONV-032).
//!
//! Ring-3 code, because on the reference platform's PVM hosts ring-0 code runs emulated in
//! 64-bit mode only, while ring-3 code runs natively in either mode. A host must refuse a
//! call made at CPL3 anyway (PVABI-CONV-013), so the catalogue runs this test under a
//! reference host set to perform calls made at CPL3 (`allow_user_mode_calls`): there only
//! the mode keeps the compatibility-mode access from being a call, which the same test shows
//! with a 64-bit ring-3 access of the same call, which that host performs. Seen on the
//! project's PVM machine: the 32-bit code runs (its `dec esp` takes effect), the exit's
//! registers that KVM syncs show `CS` 0x2b with L 0, D 1, DPL 3 and EFER.LMA set (the 64-bit
//! access: `CS` 0x23, L 1), and exception frames name `CS` 0x2b; the CPU keeps bits 63:32 of
//! every register across the switches.
//!
//! The call is a NEGOTIATE made before any other: a host that performed the
//! compatibility-mode access would lock NEGOTIATE, which the later NEGOTIATEs find (its
//! optional-feature marker in the grant the message shows). The 32-bit and the 64-bit code
//! are the same bytes (`out dx, eax`, then `4c 90`: `dec esp; nop` in compatibility mode, a
//! REX-prefixed `nop` in 64-bit mode, then `ud2`), so `esp` shows which mode ran. In order:
//! 0. the 32-bit code from its second byte (no port write), every register patterned in all
//!    64 bits: whether this CPU keeps bits 63:32 across compatibility mode, which the
//!    architecture leaves undefined (it defines the low halves of `rax` to `rsp` and all of
//!    `r8` to `r15`);
//! 1. the compatibility-mode NEGOTIATE (with the marker): no call, `eax` NOT_SUPPORTED, and
//!    what the architecture defines of every other register unchanged;
//! 2. the same code with bits 63:32 of `rax` (so no call code either) and of every register
//!    patterned: `rax` NOT_SUPPORTED in all 64 bits and every other register unchanged in all
//!    64, where step 0 showed the CPU keeps them (else a SKIP);
//! 3. the 64-bit ring-3 NEGOTIATE (without it), which a host performing CPL3 calls performs;
//! 4. when it was not performed, the ring-0 NEGOTIATE that makes the channel live.
//!
//! Under a host that refuses every CPL3 call (any conforming host, such as an external VMM
//! under `--host-cmd`), the access must still be answered as PVABI-CONV-032 says (the answer
//! PVABI-CONV-038 requires is the same), so the check stays sound there, though it cannot
//! tell the two rules apart: INFO `cpl3_calls_performed` says which case the run was. A host
//! that answers CPL3 doorbells with a fault (PVABI-CONV-037) makes the check a SKIP.
#![no_std]
#![no_main]

mod call;
mod channel;

use core::arch::global_asm;

use pvabi_guest::abi::features::Features;
use pvabi_guest::discovery::discover;
use pvabi_guest::{Call, PortTransport, Status};
use pvabi_guest_rt::{halt_forever, run_user_code, BootInfo, UserContext, UserSegment};

use call::raw;
use channel::check;

const TEST: &str = "convention-compat-mode";
const CHECK: &str =
    "convention-compat-mode.compat_mode_doorbell_is_not_supported_and_performs_no_call";
const CHECK_HIGH: &str =
    "convention-compat-mode.compat_mode_doorbell_clears_rax_bits_63_32_and_changes_no_other_register";
const SUCCESS: u64 = Status::Success as u64;
const NOT_SUPPORTED: u64 = Status::NotSupported as u64;
/// What every NEGOTIATE here requires: CONSOLE and SYSTEM, the channel's.
const REQUIRED: u64 = Features::CONSOLE.bits() | Features::SYSTEM.bits();
/// The optional features the marker may be (the first the host offers).
const MARKERS: [Features; 4] = [
    Features::TIME,
    Features::EVENTS,
    Features::MEMORY,
    Features::VCPU,
];
/// The message of a check whose access the host answered with a fault.
const FAULTED: &str = "the host answered the CPL3 doorbell write with #GP (PVABI-CONV-037 allows it): no answer to check";
/// The message of a check whose code did not run in compatibility mode.
const NOT_COMPAT: &str =
    "the 32-bit code did not run to its ud2 in compatibility mode (esp after its dec esp):";
/// The #UD and #GP vectors (how ring-3 code ends).
const UD: u64 = 6;
const GP: u64 = 13;

global_asm!(
    ".section .text.conform_compat_mode, \"ax\", @progbits",
    ".code32",
    ".global conform_compat_doorbell",
    "conform_compat_doorbell:",
    "    out dx, eax",
    // dec esp; nop (a REX-prefixed nop in 64-bit mode).
    "    .byte 0x4c, 0x90",
    "    ud2",
    ".code64",
    ".global conform_long_doorbell",
    "conform_long_doorbell:",
    "    out dx, eax",
    "    .byte 0x4c, 0x90",
    "    ud2",
);

extern "C" {
    static conform_compat_doorbell: u8;
    static conform_long_doorbell: u8;
}

/// The address of the 32-bit code.
fn compat_entry() -> u64 {
    core::ptr::addr_of!(conform_compat_doorbell) as u64
}

/// The address of the 64-bit code.
fn long_entry() -> u64 {
    core::ptr::addr_of!(conform_long_doorbell) as u64
}

/// The ring-3 stack pointer the code gets (it uses no stack: exceptions switch to ring 0's).
const USER_RSP: u64 = 0x0070_0000;

/// A NEGOTIATE carrying `marker`, every other register patterned with `tag`; `high`
/// patterns bits 63:32 of the call's registers too (no call then: the code is not one).
fn negotiate(port: u64, marker: u64, tag: u64, high: bool) -> UserContext {
    let p = |i: u64| 0xa5c3_0000_0000_0000 | (tag << 32) | (i * 0x0101_0101);
    let h = |v: u64| if high { v | p(0) & !0xffff_ffff } else { v };
    UserContext {
        rax: h(u64::from(Call::Negotiate.code())),
        rbx: p(1),
        rcx: p(2),
        rdx: p(3) & !0xffff | port,
        rsi: h(REQUIRED),
        rdi: h(0x0001_0000),
        rbp: p(6),
        r8: h(marker),
        r9: h(0),
        r10: p(9),
        r11: p(10),
        r12: p(11),
        r13: p(12),
        r14: p(13),
        r15: p(14),
        rsp: USER_RSP,
        ..UserContext::default()
    }
}

/// Runs `input` through the code at `entry` in the mode of `segment`; returns the registers
/// afterwards.
fn ring(segment: UserSegment, entry: u64, input: &UserContext) -> UserContext {
    let mut ctx = *input;
    // SAFETY: `entry` is in the code above, of the segment's mode; it ends with `ud2`,
    // touches no memory and no stack; its port write is a NEGOTIATE (or no call), whose
    // effects are the host's.
    unsafe { run_user_code(segment, entry, &mut ctx) };
    ctx
}

/// `rbx` to `rbp` and `r8` to `r15`: the registers but `rax` and `rsp`.
fn others(c: &UserContext) -> [u64; 14] {
    [
        c.rbx, c.rcx, c.rdx, c.rsi, c.rdi, c.rbp, c.r8, c.r9, c.r10, c.r11, c.r12, c.r13, c.r14,
        c.r15,
    ]
}

/// The first of [`others`] that differs between `before` and `after` in the bits `mask`
/// selects for it, as (seen, before).
fn changed(
    before: &UserContext,
    after: &UserContext,
    mask: fn(usize) -> u64,
) -> Option<(u64, u64)> {
    let (b, a) = (others(before), others(after));
    (0..b.len())
        .find(|&i| (b[i] ^ a[i]) & mask(i) != 0)
        .map(|i| (a[i] & mask(i), b[i] & mask(i)))
}

/// What the architecture preserves across the switch into compatibility mode and back: the
/// low halves of `rbx` to `rbp` (the first six of [`others`]), all of `r8` to `r15`.
fn defined(i: usize) -> u64 {
    if i < 6 {
        0xffff_ffff
    } else {
        u64::MAX
    }
}

/// Every bit.
fn all(_: usize) -> u64 {
    u64::MAX
}

/// Whether the code ran to its `ud2` in the mode of `segment`: `esp` lower by one after the
/// 32-bit code (its `dec esp`), `rsp` unchanged after the 64-bit code (a REX-prefixed nop).
fn ran_in_mode(segment: UserSegment, after: &UserContext) -> bool {
    let (end, sp) = match segment {
        UserSegment::Compat => (compat_entry() + 3, USER_RSP - 1),
        UserSegment::Long => (long_entry() + 3, USER_RSP),
    };
    after.vector == UD && after.rip == end && after.rsp & 0xffff_ffff == sp
}

/// A #GP raised by the code's port write at `entry`: the host answered the CPL3 doorbell with
/// a fault.
fn faulted(entry: u64, after: &UserContext) -> bool {
    after.vector == GP && after.rip == entry
}

fn main(_boot: &BootInfo) -> ! {
    channel::begin(TEST);
    let Some(found) = discover() else {
        halt_forever()
    };
    let port = u64::from(found.info.doorbell_port);
    channel::set_doorbell(found.info.doorbell_port);
    let t = PortTransport::new(found.info.doorbell_port);
    let offered = found.info.offered_features;
    let marker = MARKERS
        .iter()
        .map(|f| f.bits())
        .find(|m| m & offered != 0)
        .unwrap_or(0);
    let (compat_entry, long_entry) = (compat_entry(), long_entry());

    // (0): the 32-bit code without its port write (from its second byte): whether this
    // CPU keeps bits 63:32 of the registers across compatibility mode, which the
    // architecture leaves undefined.
    let control_in = negotiate(port, marker, 0x0f, true);
    let control = ring(UserSegment::Compat, compat_entry + 1, &control_in);
    let kept = ran_in_mode(UserSegment::Compat, &control)
        && control.rax == control_in.rax
        && changed(&control_in, &control, all).is_none();
    // (1) and (2): compatibility mode.
    let compat_in = negotiate(port, marker, 0x10, false);
    let compat = ring(UserSegment::Compat, compat_entry, &compat_in);
    let high_in = negotiate(port, marker, 0x11, true);
    let high = ring(UserSegment::Compat, compat_entry, &high_in);
    // (3): 64-bit mode, at CPL3 too.
    let long_in = negotiate(port, 0, 0x12, false);
    let long = ring(UserSegment::Long, long_entry, &long_in);
    let long_performed = ran_in_mode(UserSegment::Long, &long) && long.rax == SUCCESS;
    // (4): the ring-0 NEGOTIATE, unless (3) was the first; a NEGOTIATE that fails here was
    // not the first (an access before it performed one).
    let (granted, first_lost) = if long_performed {
        (long.rsi, false)
    } else {
        let r = raw(&t, Call::Negotiate, &[0x0001_0000, REQUIRED]);
        if r.status == SUCCESS {
            (r.results[1], false)
        } else {
            (raw(&t, Call::ProbeFeatures, &[]).results[1], true)
        }
    };
    if granted & REQUIRED != REQUIRED {
        // No console: nothing can be reported (a wrongly performed access granted less).
        halt_forever()
    }
    channel::go_live();
    // Whether the run could tell PVABI-CONV-032 from PVABI-CONV-013 (see the module docs).
    channel::info("cpl3_calls_performed", u64::from(long_performed));

    // (1): no call, NOT_SUPPORTED, every register the switches preserve unchanged.
    // The lock is the effect (no other access came before the NEGOTIATE that found it
    // taken): the marker in the grant names the access, but a host whose NEGOTIATE grants
    // more than it is asked for shows it too, so it is only shown.
    let performed = first_lost;
    if faulted(compat_entry, &compat) {
        channel::skip(CHECK, &["PVABI-CONV-032"], FAULTED);
    } else if !ran_in_mode(UserSegment::Compat, &compat) {
        channel::fail(
            CHECK,
            &["PVABI-CONV-032"],
            NOT_COMPAT,
            compat.rsp & 0xffff_ffff,
        );
    } else if performed {
        channel::fail(
            CHECK,
            &["PVABI-CONV-032"],
            "the access performed its NEGOTIATE (the later ones found NEGOTIATE locked); the features granted (the marker is the first of TIME, EVENTS, MEMORY and VCPU offered):",
            granted,
        );
    } else {
        let (seen, want) = changed(&compat_in, &compat, defined)
            .unwrap_or((compat.rax & 0xffff_ffff, NOT_SUPPORTED));
        check(
            CHECK,
            &["PVABI-CONV-032"],
            compat.rax & 0xffff_ffff == NOT_SUPPORTED
                && changed(&compat_in, &compat, defined).is_none(),
            seen,
            want,
        );
    }

    // (2): rax is NOT_SUPPORTED in all 64 bits and no other register changed in any bit,
    // where the CPU keeps bits 63:32 across compatibility mode (the control above).
    if faulted(compat_entry, &high) {
        channel::skip(CHECK_HIGH, &["PVABI-CONV-032"], FAULTED);
    } else if !ran_in_mode(UserSegment::Compat, &high) {
        channel::fail(
            CHECK_HIGH,
            &["PVABI-CONV-032"],
            NOT_COMPAT,
            high.rsp & 0xffff_ffff,
        );
    } else if !kept {
        channel::skip(
            CHECK_HIGH,
            &["PVABI-CONV-032"],
            "this CPU does not keep bits 63:32 of the registers across compatibility mode (the architecture leaves them undefined): what the host leaves in them cannot be seen",
        );
    } else {
        let (seen, want) = changed(&high_in, &high, all).unwrap_or((high.rax, NOT_SUPPORTED));
        check(
            CHECK_HIGH,
            &["PVABI-CONV-032"],
            high.rax == NOT_SUPPORTED && changed(&high_in, &high, all).is_none(),
            seen,
            want,
        );
    }
    channel::end(TEST)
}

pvabi_guest_rt::entry!(main);

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    halt_forever()
}
