//! Profiles: what an implementation claims, held against what the suite saw.
//!
//! A profile is a TOML file that a vendor writes for their host. It declares the
//! implementation's identity, the versions it serves, the optional features it offers, the
//! limits it advertises, and its known failures:
//!
//! ```toml
//! [implementation]
//! id = 1              # what GET_IMPL_ID returns in r0
//! version = "0.1.0"   # what GET_IMPL_VERSION returns, as major.minor.patch
//!
//! [versions]
//! lowest = "1.0"
//! highest = "1.2"
//!
//! [features]
//! offered = ["CONSOLE", "TIME", "EVENTS"]
//!
//! [limits]            # each at least this much
//! vcpus = 2
//! max_multicall_entries = 32
//!
//! [reboot]            # what SYSTEM_REBOOT does (PVABI-SYS-003 allows either)
//! resets = true       # the host resets the VM (else it ends it)
//! [host_events]       # what the host does when a test guest asks (REQUEST <event>)
//! performed = ["migrate"]
//! [exit_status]       # for --host-cmd and run.sh: what the VMM's exit status means
//! fault = 133         # the VM ended by a guest fault (an access outside guest RAM)
//! refusal = 134       # the VMM refused to start the image (no instruction ran)
//!
//! [[known_failure]]
//! check = "time.page_refreshes"   # a check, or a whole test by its name
//! id = 1                          # for this implementation id ...
//! version = "0.1.0"               # ... and this version only
//! reason = "the time page is refreshed every 10 ms; fixed in 0.2"
//! ```
//!
//! What the profile claims is checked against what the base test's INFO lines report
//! ([`Profile::checks`]): a claimed feature the host does not offer, a version it does not
//! serve or a limit it does not reach is a FAIL (never a SKIP: the implementation claimed it).
//! A known failure turns a matching FAIL into [`Verdict::KnownFailure`], shown as such and
//! never as a PASS, and only while the implementation reports the listed id and version.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::channel::{Check, TestResult};
use crate::verdict::Verdict;

/// A profile file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Who the implementation is.
    pub implementation: Option<Identity>,
    /// The versions it serves.
    pub versions: Option<VersionRange>,
    /// The optional features it offers.
    pub features: Option<FeatureClaim>,
    /// The limits it advertises (each at least this much).
    #[serde(default)]
    pub limits: BTreeMap<String, u64>,
    /// What it does on SYSTEM_REBOOT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reboot: Option<RebootClaim>,
    /// The host events it performs when a test guest asks for one over the verdict channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_events: Option<HostEventClaim>,
    /// What the VMM's exit statuses mean, for the tests whose proof is how the VM ends
    /// (an external VMM is known only by its exit status).
    pub exit_status: Option<ExitStatuses>,
    /// Its known failures.
    #[serde(default, rename = "known_failure")]
    pub known_failures: Vec<KnownFailure>,
}

/// The exit statuses of an external VMM (`pvabi conform --host-cmd`, the exported `run.sh`)
/// that say how a VM ended other than by SYSTEM_SHUTDOWN. Without them, a test whose proof
/// is such an end is a SKIP that says so, never a PASS. (`pvabi run --exit-with-guest-code`
/// exits with 133 for a VM that faulted and 134 for an image it could not run.) The status of
/// a guest fault must not also be the VMM's status for a time-out of its own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExitStatuses {
    /// The status when the VM ended by a guest fault (PVABI-PLAT-003).
    pub fault: Option<i32>,
    /// The status when the VMM refused to start the image and ran none of its instructions
    /// (PVABI-PLAT-005).
    pub refusal: Option<i32>,
}

/// An implementation's identity: GET_IMPL_ID's id and GET_IMPL_VERSION's version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    /// GET_IMPL_ID's `r0`.
    pub id: u64,
    /// GET_IMPL_VERSION as `major.minor.patch`.
    pub version: String,
}

/// The versions an implementation serves, as `major.minor`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionRange {
    /// The lowest it serves.
    pub lowest: String,
    /// The highest it serves.
    pub highest: String,
}

/// The optional features an implementation offers, by their names in the spec.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureClaim {
    /// Feature names (`CONSOLE`, `TIME`, ...).
    pub offered: Vec<String>,
}

/// What an implementation does on SYSTEM_REBOOT.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RebootClaim {
    /// It resets the virtual machine (the reset test must then see a second boot: a host that
    /// claims it and ends the VM instead fails, where one that does not claim it skips).
    pub resets: bool,
}

/// The host events an implementation performs on request (the channel's `REQUEST <event>`,
/// [`crate::channel::HOST_EVENTS`]). A test whose request the host did not perform leaves the
/// rules of the event N/A; a claimed event that a test asked for and the host did not
/// perform (no `DONE` line) is a FAIL of the claim.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostEventClaim {
    /// Event names (`migrate`, `tsc-offset`).
    pub performed: Vec<String>,
}

/// A failure the vendor knows of, for one implementation id and version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnownFailure {
    /// A check's name (`time.page_refreshes`) or a test's (`time`).
    pub check: String,
    /// The implementation id it applies to.
    pub id: u64,
    /// The implementation version it applies to (`major.minor.patch`).
    pub version: String,
    /// Why it fails, and what will fix it.
    pub reason: String,
}

/// A profile that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The file is not valid TOML of the profile's shape.
    #[error("the profile is not valid: {0}")]
    Syntax(#[from] toml::de::Error),
    /// A value is malformed.
    #[error("the profile's {field} is `{value}`: {why}")]
    Value {
        /// Where.
        field: String,
        /// What it says.
        value: String,
        /// What it should be.
        why: String,
    },
}

/// What the base test's INFO lines said (see [`crate::channel`]), with numbers parsed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Facts(pub BTreeMap<String, u64>);

impl Facts {
    /// The facts of a run: every INFO item with a number for a value, from every test.
    pub fn of(results: &[TestResult]) -> Facts {
        let mut facts = BTreeMap::new();
        for r in results {
            for (k, v) in &r.info {
                let n = v
                    .strip_prefix("0x")
                    .map_or_else(|| v.parse().ok(), |h| u64::from_str_radix(h, 16).ok());
                if let Some(n) = n {
                    facts.insert(k.clone(), n);
                }
            }
        }
        Facts(facts)
    }

    fn get(&self, key: &str) -> Option<u64> {
        self.0.get(key).copied()
    }
}

/// `major.minor` packed as the spec packs versions (`major << 16 | minor`).
fn spec_version(field: &str, s: &str) -> Result<u64, ProfileError> {
    let bad = || ProfileError::Value {
        field: field.to_owned(),
        value: s.to_owned(),
        why: "a version is major.minor, such as 1.2".to_owned(),
    };
    let (major, minor) = s.split_once('.').ok_or_else(bad)?;
    let major: u16 = major.parse().map_err(|_| bad())?;
    let minor: u16 = minor.parse().map_err(|_| bad())?;
    Ok((u64::from(major) << 16) | u64::from(minor))
}

/// `major.minor.patch` packed as GET_IMPL_VERSION packs it (`major << 32 | minor << 16 | patch`).
fn impl_version(field: &str, s: &str) -> Result<u64, ProfileError> {
    let bad = || ProfileError::Value {
        field: field.to_owned(),
        value: s.to_owned(),
        why: "an implementation version is major.minor.patch, such as 0.1.0".to_owned(),
    };
    let mut parts = s.split('.');
    let (Some(a), Some(b), Some(c), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    let major: u32 = a.parse().map_err(|_| bad())?;
    let minor: u16 = b.parse().map_err(|_| bad())?;
    let patch: u16 = c.parse().map_err(|_| bad())?;
    Ok((u64::from(major) << 32) | (u64::from(minor) << 16) | u64::from(patch))
}

fn show_version(packed: u64) -> String {
    format!("{}.{}", packed >> 16, packed & 0xffff)
}

fn show_impl_version(packed: u64) -> String {
    format!(
        "{}.{}.{}",
        packed >> 32,
        (packed >> 16) & 0xffff,
        packed & 0xffff
    )
}

/// The test the profile's checks are reported under.
pub const PROFILE_TEST: &str = "profile";

impl Profile {
    /// Parses a profile. `feature_bit` maps a feature's name to its bit; an unknown name is
    /// an error that lists the known ones.
    pub fn parse(
        text: &str,
        feature_bit: &dyn Fn(&str) -> Option<u64>,
        feature_names: &[&str],
    ) -> Result<Profile, ProfileError> {
        let p: Profile = toml::from_str(text)?;
        // Validate every value now, so that a run never starts with a profile it cannot use.
        if let Some(i) = &p.implementation {
            impl_version("implementation.version", &i.version)?;
        }
        if let Some(v) = &p.versions {
            let lo = spec_version("versions.lowest", &v.lowest)?;
            let hi = spec_version("versions.highest", &v.highest)?;
            if lo > hi {
                return Err(ProfileError::Value {
                    field: "versions".into(),
                    value: format!("{} to {}", v.lowest, v.highest),
                    why: "lowest is above highest".into(),
                });
            }
        }
        for name in p.features.iter().flat_map(|f| &f.offered) {
            if feature_bit(name).is_none() {
                return Err(ProfileError::Value {
                    field: "features.offered".into(),
                    value: name.clone(),
                    why: format!(
                        "not a feature; the features are {}",
                        feature_names.join(", ")
                    ),
                });
            }
        }
        for name in p.host_events.iter().flat_map(|h| &h.performed) {
            if !crate::channel::HOST_EVENTS.iter().any(|(e, _)| e == name) {
                let known: Vec<&str> = crate::channel::HOST_EVENTS
                    .iter()
                    .map(|&(e, _)| e)
                    .collect();
                return Err(ProfileError::Value {
                    field: "host_events.performed".into(),
                    value: name.clone(),
                    why: format!("not a host event; the events are {}", known.join(", ")),
                });
            }
        }
        for key in p.limits.keys() {
            if !LIMITS.contains(&key.as_str()) {
                return Err(ProfileError::Value {
                    field: "limits".into(),
                    value: key.clone(),
                    why: format!("not a limit; the limits are {}", LIMITS.join(", ")),
                });
            }
        }
        if let Some(ExitStatuses {
            fault: Some(f),
            refusal: Some(r),
        }) = &p.exit_status
        {
            if f == r {
                return Err(ProfileError::Value {
                    field: "exit_status".into(),
                    value: format!("fault = {f}, refusal = {r}"),
                    why: "a guest fault and a refused image need different statuses".into(),
                });
            }
        }
        for (i, k) in p.known_failures.iter().enumerate() {
            impl_version(&format!("known_failure[{i}].version"), &k.version)?;
            if k.reason.trim().is_empty() {
                return Err(ProfileError::Value {
                    field: format!("known_failure[{i}].reason"),
                    value: k.reason.clone(),
                    why: "every known failure needs a reason".into(),
                });
            }
        }
        Ok(p)
    }

    /// The profile's claims, checked against `facts` (the base test's INFO lines): one check
    /// per claim. A claim the facts do not cover (the base test did not run, or crashed) is an
    /// ERROR: nothing is known of it.
    pub fn checks(&self, facts: &Facts, feature_bit: &dyn Fn(&str) -> Option<u64>) -> Vec<Check> {
        let mut checks = Vec::new();
        let mut claim = |name: String,
                         requirements: &[&str],
                         seen: Option<u64>,
                         ok: &dyn Fn(u64) -> bool,
                         want: String,
                         show: &dyn Fn(u64) -> String| {
            let (verdict, message) = match seen {
                None => (
                    Verdict::Error,
                    Some(
                        "no test reported a value for it (the base test reports the identity, \
                         versions, features and limits; a test that asks for a host event, \
                         whether the host performed it)"
                            .to_owned(),
                    ),
                ),
                Some(v) if ok(v) => (Verdict::Pass, None),
                Some(v) => (
                    Verdict::Fail,
                    Some(format!(
                        "the profile claims {want}; the host reports {}",
                        show(v)
                    )),
                ),
            };
            checks.push(Check::new(
                format!("{PROFILE_TEST}.{name}"),
                verdict,
                requirements,
                message,
            ));
        };
        if let Some(i) = &self.implementation {
            claim(
                "implementation_id".into(),
                &[],
                facts.get("impl_id"),
                &|v| v == i.id,
                format!("id {}", i.id),
                &|v| format!("id {v}"),
            );
            let want = impl_version("", &i.version).unwrap_or(u64::MAX);
            // The claimed version is the one thing GET_IMPL_VERSION's packing (major in bits
            // 63:32, minor in 31:16, patch in 15:0) can be held to.
            claim(
                "implementation_version".into(),
                &["PVABI-BASE-018"],
                facts.get("impl_version"),
                &|v| v == want,
                format!("version {}", i.version),
                &|v| format!("version {}", show_impl_version(v)),
            );
        }
        if let Some(r) = &self.versions {
            let lo = spec_version("", &r.lowest).unwrap_or(0);
            let hi = spec_version("", &r.highest).unwrap_or(u64::MAX);
            claim(
                "lowest_version".into(),
                &[],
                facts.get("lowest_version"),
                &|v| v == lo,
                format!("lowest version {}", r.lowest),
                &|v| format!("lowest version {}", show_version(v)),
            );
            claim(
                "highest_version".into(),
                &[],
                facts.get("highest_version"),
                &|v| v == hi,
                format!("highest version {}", r.highest),
                &|v| format!("highest version {}", show_version(v)),
            );
        }
        if self.reboot.as_ref().is_some_and(|r| r.resets) {
            claim(
                "resets_on_reboot".into(),
                &["PVABI-SYS-003"],
                facts.get("resets_on_reboot"),
                &|v| v == 1,
                "that SYSTEM_REBOOT resets the VM".into(),
                &|v| {
                    if v == 1 {
                        "a reset".into()
                    } else {
                        "that it ended the VM".into()
                    }
                },
            );
        }
        for name in self.features.iter().flat_map(|f| &f.offered) {
            let bit = feature_bit(name).unwrap_or(0);
            claim(
                format!("offers_{}", name.to_ascii_lowercase()),
                &[],
                facts.get("offered_features"),
                &|v| v & bit == bit,
                format!("{name} offered"),
                &|_| format!("{name} not offered"),
            );
        }
        for name in self.host_events.iter().flat_map(|h| &h.performed) {
            claim(
                format!("performs_{}", name.replace('-', "_")),
                &[],
                facts.get(&format!("host_event.{name}")),
                &|v| v == 1,
                format!("that the host performs `{name}` on request"),
                &|_| "no DONE line after the guest's request".into(),
            );
        }
        for (limit, at_least) in &self.limits {
            claim(
                format!("{limit}_at_least_{at_least}"),
                &[],
                facts.get(limit),
                &|v| v >= *at_least,
                format!("{limit} of at least {at_least}"),
                &|v| format!("{limit} {v}"),
            );
        }
        checks
    }

    /// Marks the failures this profile knows of, for the implementation `facts` name: a FAIL
    /// check (or every FAIL check of a test) that a known failure names becomes a
    /// [`Verdict::KnownFailure`] with the reason, and its test's verdict is recomputed. Returns
    /// the known failures that matched nothing (they may be fixed: remove them).
    pub fn apply_known_failures(
        &self,
        facts: &Facts,
        results: &mut [TestResult],
    ) -> Vec<KnownFailure> {
        let mut unused = Vec::new();
        for k in &self.known_failures {
            let applies = facts.get("impl_id") == Some(k.id)
                && facts.get("impl_version") == impl_version("", &k.version).ok();
            let mut used = false;
            if applies {
                for r in results.iter_mut() {
                    let whole_test = r.test == k.check;
                    for c in r
                        .checks
                        .iter_mut()
                        .filter(|c| c.verdict == Verdict::Fail && (whole_test || c.name == k.check))
                    {
                        c.verdict = Verdict::KnownFailure;
                        c.message = Some(format!(
                            "known failure: {}{}",
                            k.reason,
                            c.message
                                .as_deref()
                                .map(|m| format!(" ({m})"))
                                .unwrap_or_default()
                        ));
                        used = true;
                    }
                    // A test that failed only by known failures is a known failure itself.
                    if r.verdict == Verdict::Fail {
                        let worst = Verdict::worst(r.checks.iter().map(|c| c.verdict));
                        if worst == Verdict::KnownFailure {
                            r.verdict = Verdict::KnownFailure;
                        }
                    }
                }
            }
            if !used {
                unused.push(k.clone());
            }
        }
        unused
    }
}

/// The limits a profile may claim (the names of the base test's INFO items).
pub const LIMITS: &[&str] = &[
    "vcpus",
    "max_multicall_entries",
    "deferred_capacity",
    "ring_capacity",
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::RunEnd;

    fn bit(name: &str) -> Option<u64> {
        match name {
            "CONSOLE" => Some(1),
            "TIME" => Some(2),
            "RING" => Some(0x100),
            _ => None,
        }
    }

    fn facts() -> Facts {
        Facts(BTreeMap::from([
            ("impl_id".to_owned(), 1),
            ("impl_version".to_owned(), 0x1_0000),
            ("lowest_version".to_owned(), 0x1_0000),
            ("highest_version".to_owned(), 0x1_0002),
            ("offered_features".to_owned(), 3),
            ("vcpus".to_owned(), 2),
        ]))
    }

    #[test]
    fn a_claimed_feature_that_is_absent_fails() {
        let p = Profile::parse(
            "[versions]\nlowest = \"1.0\"\nhighest = \"1.2\"\n[features]\noffered = [\"TIME\", \"RING\"]\n[limits]\nvcpus = 4\n",
            &bit,
            &[],
        )
        .unwrap();
        let checks = p.checks(&facts(), &bit);
        let by = |n: &str| checks.iter().find(|c| c.name == n).unwrap().verdict;
        assert_eq!(by("profile.lowest_version"), Verdict::Pass);
        assert_eq!(by("profile.highest_version"), Verdict::Pass);
        assert_eq!(by("profile.offers_time"), Verdict::Pass);
        assert_eq!(by("profile.offers_ring"), Verdict::Fail);
        assert_eq!(by("profile.vcpus_at_least_4"), Verdict::Fail);
        // Without facts nothing is known: ERROR, not PASS.
        assert!(p
            .checks(&Facts::default(), &bit)
            .iter()
            .all(|c| c.verdict == Verdict::Error));
    }

    #[test]
    fn bad_profiles_are_refused_with_the_fix() {
        let e = Profile::parse(
            "[features]\noffered = [\"TIMEE\"]\n",
            &bit,
            &["CONSOLE", "TIME"],
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("the features are CONSOLE, TIME"),
            "{e}"
        );
        let e = Profile::parse("[versions]\nlowest = \"1\"\nhighest = \"1.2\"\n", &bit, &[])
            .unwrap_err();
        assert!(e.to_string().contains("major.minor"), "{e}");
        assert!(Profile::parse("[limitz]\n", &bit, &[]).is_err());
        let e = Profile::parse("[limits]\ncpus = 2\n", &bit, &[]).unwrap_err();
        assert!(e.to_string().contains("the limits are"), "{e}");
        let e = Profile::parse(
            "[[known_failure]]\ncheck = \"a\"\nid = 1\nversion = \"0.1.0\"\nreason = \" \"\n",
            &bit,
            &[],
        )
        .unwrap_err();
        assert!(e.to_string().contains("needs a reason"), "{e}");
    }

    #[test]
    fn known_failures_apply_only_to_their_implementation_version() {
        let p = Profile::parse(
            "[[known_failure]]\ncheck = \"time.refresh\"\nid = 1\nversion = \"0.1.0\"\nreason = \"bug 7\"\n",
            &bit,
            &[],
        )
        .unwrap();
        let failing = || {
            vec![TestResult {
                test: "time".into(),
                verdict: Verdict::Fail,
                checks: vec![
                    Check::new("time.ok", Verdict::Pass, &[], None),
                    Check::new("time.refresh", Verdict::Fail, &[], Some("got 0".into())),
                ],
                reason: None,
                end: RunEnd::Shutdown(5),
                info: BTreeMap::new(),
            }]
        };
        let mut r = failing();
        assert!(p.apply_known_failures(&facts(), &mut r).is_empty());
        assert_eq!(r[0].verdict, Verdict::KnownFailure);
        assert_eq!(r[0].checks[1].verdict, Verdict::KnownFailure);
        assert!(r[0].checks[1].message.as_deref().unwrap().contains("bug 7"));
        // Another version of the implementation: the failure is a FAIL again.
        let mut newer = facts();
        newer.0.insert("impl_version".into(), 0x2_0000);
        let mut r = failing();
        assert_eq!(p.apply_known_failures(&newer, &mut r).len(), 1);
        assert_eq!(r[0].verdict, Verdict::Fail);
    }
}
