//! Guest checking ([`HostConfig::check_guest`](crate::HostConfig::check_guest)): the host
//! watches the guest's use of the interface and records every guest rule it sees broken,
//! for `pvabi conform --guest`.
//!
//! A host sees the guest's calls, their arguments and the answers it gave, so it checks the
//! guest rules that show in them:
//!
//! | rule | what the host sees |
//! |---|---|
//! | [`CONV_012`] | a doorbell call from outside 64-bit mode at CPL 0 |
//! | [`CONV_001`] | a call code with bits 63:32 set |
//! | [`GEN_002`] | a reserved bit set in a register argument (the call table's masks) |
//! | [`DISC_006`] | a feature call before NEGOTIATE (answered NOT_NEGOTIATED) |
//! | [`BASE_016`] | a call of a feature NEGOTIATE did not grant (answered NOT_GRANTED) |
//! | [`BATCH_009`] | after INCOMPLETE, a MULTICALL of the same list that does not resume at `next` with the same `count` and `flags`, or a batch never resumed |
//! | [`BATCH_019`] | the same for MULTICALL_PAGES (the same `list`, `pages`, `count` and `flags`) |
//! | [`TIME_014`] | a time-page value read during an update: in checking mode the host leaves the page mid-update (odd `sequence`, a marked `monotonic_ns`) for a while at every refresh, so a reader that ignores the sequence lock picks up the mark and passes it on, as a TIME_SET_TIMER deadline |
//!
//! Each rule also counts how often the guest exercised it, so that a report can say "not
//! exercised" rather than claim a pass for a rule the guest never came near.

use std::collections::BTreeMap;

use pvabi_abi::batch::MULTICALL_FLAGS_VALID;
use pvabi_abi::calls::{ArgCheck, Call};
use pvabi_abi::status::Status;

use std::time::Duration;

use pvabi_abi::features::Features;
use pvabi_abi::version::V1_0;

use crate::config::{FeatureOffer, HostConfig};
use crate::sync::lock;

/// CONV-012: calls in 64-bit mode at privilege level 0.
pub const CONV_012: &str = "PVABI-CONV-012";
/// CONV-001: the call code in `rax` with bits 63:32 clear.
pub const CONV_001: &str = "PVABI-CONV-001";
/// GEN-002: 0 in every reserved bit.
pub const GEN_002: &str = "PVABI-GEN-002";
/// DISC-006: offered is not granted.
pub const DISC_006: &str = "PVABI-DISC-006";
/// BASE-016: only the granted features.
pub const BASE_016: &str = "PVABI-BASE-016";
/// BATCH-009: resuming after INCOMPLETE.
pub const BATCH_009: &str = "PVABI-BATCH-009";
/// BATCH-019: resuming MULTICALL_PAGES after INCOMPLETE.
pub const BATCH_019: &str = "PVABI-BATCH-019";
/// TIME-014: the time page's sequence lock.
pub const TIME_014: &str = "PVABI-TIME-014";

/// Every rule the checker checks, in report order.
pub const RULES: [&str; 8] = [
    CONV_012, CONV_001, GEN_002, DISC_006, BASE_016, BATCH_009, BATCH_019, TIME_014,
];

/// The mark of a time-page value written mid-update (in `monotonic_ns`'s top 16 bits, with
/// the low bits the true time): no real monotonic time comes near it (2^62 ns is 146 years).
pub const TORN_MARK: u64 = 0x7ead_0000_0000_0000;
/// The bits [`TORN_MARK`] occupies.
pub const TORN_MASK: u64 = 0xffff_0000_0000_0000;

/// A feature bit no version defines, which the checking host ([`HostConfig::checking`])
/// offers: a guest must not fail because of it (PVABI-VER-009).
pub const UNKNOWN_FEATURE: u64 = 1 << 47;

impl HostConfig {
    /// A host that checks its guest ([`HostConfig::check_guest`]) and is demanding but legal,
    /// for `pvabi conform --guest`: it preempts every MULTICALL and MULTICALL_PAGES after each
    /// entry (INCOMPLETE at every index), poisons the result registers a call does not define, leaves the time
    /// page mid-update for a while at every refresh (every millisecond), lets host-polled
    /// rings sleep as soon as they are idle, serves the newest minor, and offers a feature bit
    /// no version defines ([`UNKNOWN_FEATURE`]).
    pub fn checking() -> HostConfig {
        let base = HostConfig::default();
        let mut features = base.features.clone();
        features.push(FeatureOffer {
            flag: Features::from_bits_retain(UNKNOWN_FEATURE),
            since: V1_0,
        });
        HostConfig {
            check_guest: true,
            strict: true,
            max_multicall: 1,
            max_multicall_pages: 1,
            time_refresh: Duration::from_millis(1),
            poll_idle: Duration::ZERO,
            features,
            ..base
        }
    }
}

/// One broken guest rule, as the host saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestViolation {
    /// The requirement ID.
    pub rule: &'static str,
    /// The vCPU that broke it.
    pub vcpu: u32,
    /// The call that showed it, if one did.
    pub call: Option<&'static str>,
    /// What happened, for the report.
    pub what: String,
}

/// What the checker saw in a run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GuestCheckReport {
    /// Every violation, in order (the first 64 of each rule; [`Self::counts`] has them all).
    pub violations: Vec<GuestViolation>,
    /// How many violations of each rule.
    pub counts: BTreeMap<&'static str, u64>,
    /// How often each rule was exercised (the guest did what the rule is about).
    pub exercised: BTreeMap<&'static str, u64>,
}

/// A batch (MULTICALL or MULTICALL_PAGES) the host preempted, waiting for the guest to
/// resume it.
#[derive(Clone, Copy, Debug)]
struct Preempted {
    call: Call,
    /// The arguments that name the batch and must stay the same (`start` left out).
    key: [u64; 4],
    next: u64,
}

impl Preempted {
    /// The batch arguments of a MULTICALL or MULTICALL_PAGES call: its key and `start`.
    fn of(call: Call, args: &[u64; 6]) -> Option<([u64; 4], u64)> {
        match call {
            // entries, count, start, flags
            Call::Multicall => Some((
                [args[0], args[1], args[3] & MULTICALL_FLAGS_VALID, 0],
                args[2],
            )),
            // list, pages, count, start, flags
            Call::MulticallPages => Some((
                [args[0], args[1], args[2], args[4] & MULTICALL_FLAGS_VALID],
                args[3],
            )),
            _ => None,
        }
    }

    fn rule(self) -> &'static str {
        if self.call == Call::Multicall {
            BATCH_009
        } else {
            BATCH_019
        }
    }

    fn describe(&self) -> String {
        let d = self.call.descriptor();
        let names: Vec<&str> = d
            .args
            .iter()
            .map(|a| a.name)
            .filter(|n| *n != "start")
            .collect();
        names
            .iter()
            .zip(self.key)
            .map(|(n, v)| format!("{n} {v:#x}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[derive(Debug, Default)]
struct State {
    report: GuestCheckReport,
    preempted: Vec<Option<Preempted>>,
}

/// The checker, one per dispatcher in checking mode.
#[derive(Debug)]
pub(crate) struct GuestChecker {
    state: std::sync::Mutex<State>,
}

const MAX_KEPT: u64 = 64;

impl State {
    fn exercised(&mut self, rule: &'static str) {
        *self.report.exercised.entry(rule).or_default() += 1;
    }

    fn violated(&mut self, rule: &'static str, vcpu: u32, call: Option<Call>, what: String) {
        let n = self.report.counts.entry(rule).or_default();
        *n += 1;
        if *n <= MAX_KEPT {
            self.report.violations.push(GuestViolation {
                rule,
                vcpu,
                call: call.map(|c| c.descriptor().name),
                what,
            });
        }
    }
}

impl GuestChecker {
    pub(crate) fn new(vcpus: u32) -> GuestChecker {
        GuestChecker {
            state: std::sync::Mutex::new(State {
                report: GuestCheckReport::default(),
                preempted: vec![None; vcpus as usize],
            }),
        }
    }

    /// A doorbell access from `cpl`, in long mode or not (CONV-012).
    pub(crate) fn doorbell(&self, vcpu: u32, cpl: u8, long_mode: bool) {
        let mut s = lock(&self.state);
        s.exercised(CONV_012);
        if cpl != 0 || !long_mode {
            let mode = if long_mode {
                "64-bit mode"
            } else {
                "not in 64-bit mode"
            };
            s.violated(
                CONV_012,
                vcpu,
                None,
                format!(
                    "a doorbell call at CPL {cpl}, {mode}: calls are made in 64-bit mode at CPL 0"
                ),
            );
        }
    }

    /// A call `code` with `args`, answered `status` with `results`.
    pub(crate) fn call(
        &self,
        vcpu: u32,
        code: u64,
        args: &[u64; 6],
        status: Status,
        results: &[u64; 4],
    ) {
        let mut s = lock(&self.state);
        s.exercised(CONV_001);
        if code >> 32 != 0 {
            s.violated(
                CONV_001,
                vcpu,
                None,
                format!("call code {code:#x} has bits 63:32 set"),
            );
        }
        let Some(call) = Call::from_code(code & 0xffff_ffff) else {
            return;
        };
        let d = call.descriptor();
        s.exercised(GEN_002);
        for (a, value) in d.args.iter().zip(args) {
            if let ArgCheck::Mask(valid) = a.check {
                if value & !valid != 0 {
                    s.violated(
                        GEN_002,
                        vcpu,
                        Some(call),
                        format!(
                            "argument `{}` is {value:#x}: reserved bits {:#x} are set",
                            a.name,
                            value & !valid
                        ),
                    );
                }
            }
        }
        if d.feature.is_some() {
            s.exercised(DISC_006);
            s.exercised(BASE_016);
        }
        match status {
            Status::NotNegotiated => s.violated(
                DISC_006,
                vcpu,
                Some(call),
                format!("{} before NEGOTIATE succeeded: an offered feature is not granted", d.name),
            ),
            Status::NotGranted => s.violated(
                BASE_016,
                vcpu,
                Some(call),
                format!(
                    "{} needs a feature NEGOTIATE did not grant: a guest uses only the granted features",
                    d.name
                ),
            ),
            _ => {}
        }
        if call == Call::TimeSetTimer {
            s.exercised(TIME_014);
            if args[0] & TORN_MASK == TORN_MARK {
                s.violated(
                    TIME_014,
                    vcpu,
                    Some(call),
                    format!(
                        "deadline {:#x} carries the mark the host writes into the time page while \
                         it updates it: the guest read the page without honouring its sequence \
                         lock (odd or changed `sequence`)",
                        args[0]
                    ),
                );
            }
        }
        if let Some((key, start)) = Preempted::of(call, args) {
            Self::batch(&mut s, vcpu, call, key, start, status, results);
        }
    }

    fn batch(
        s: &mut State,
        vcpu: u32,
        call: Call,
        key: [u64; 4],
        start: u64,
        status: Status,
        results: &[u64; 4],
    ) {
        let Some(slot) = s.preempted.get(vcpu as usize).copied() else {
            return;
        };
        if let Some(p) = slot {
            s.exercised(p.rule());
            if p.call == call && p.key[0] == key[0] {
                if start != p.next || key != p.key {
                    let now = Preempted {
                        call,
                        key,
                        next: start,
                    };
                    s.violated(
                        p.rule(),
                        vcpu,
                        Some(call),
                        format!(
                            "after INCOMPLETE (next {}), {} of the same batch with start {start} \
                             and {}: resume with start {} and {}",
                            p.next,
                            call.descriptor().name,
                            now.describe(),
                            p.next,
                            p.describe()
                        ),
                    );
                }
            } else {
                s.violated(
                    p.rule(),
                    vcpu,
                    Some(call),
                    format!(
                        "a new batch while the {} batch ({}) waits to be resumed at entry {}: its \
                         remaining entries never ran",
                        p.call.descriptor().name,
                        p.describe(),
                        p.next
                    ),
                );
            }
        }
        s.preempted[vcpu as usize] = (status == Status::Incomplete).then_some(Preempted {
            call,
            key,
            next: results[0],
        });
    }

    /// The report so far; a batch still waiting to be resumed counts in it as abandoned
    /// (the guest may yet resume it: the count is of this moment).
    pub(crate) fn report(&self) -> GuestCheckReport {
        let s = lock(&self.state);
        let mut now = State {
            report: s.report.clone(),
            preempted: Vec::new(),
        };
        for (vcpu, p) in s.preempted.iter().enumerate() {
            if let Some(p) = p {
                now.violated(
                    p.rule(),
                    vcpu as u32,
                    Some(p.call),
                    format!(
                        "the {} batch ({}) was preempted (INCOMPLETE, next {}) and never resumed: \
                         its remaining entries never ran",
                        p.call.descriptor().name,
                        p.describe(),
                        p.next
                    ),
                );
            }
        }
        now.report
    }
}
