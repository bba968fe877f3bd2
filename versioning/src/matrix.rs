//! The cross-version matrix: what NEGOTIATE gives every pair of guest and host versions.
//!
//! Guests and hosts of different versions meet only through NEGOTIATE. This module states
//! what must happen for each pair, as data. The spec renders it as a table
//! ([`matrix_markdown`]), and a KVM test (`host-ref/tests/matrix.rs`) boots a real guest for
//! every cell on the reference host acting as each version and checks the outcome.

use std::fmt::Write as _;

use pvabi_abi::features::Features;
use pvabi_abi::status::Status;
use pvabi_abi::version::{Version, V1_0, V1_1, V1_2, V1_3, V2_0_PREVIEW};

/// The features every guest of the matrix requires (present in every version).
pub const BASE_REQUIRED: Features = Features::CONSOLE
    .union(Features::TIME)
    .union(Features::SYSTEM);

/// A guest, as it presents itself to NEGOTIATE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestProfile {
    /// A short name, used in test and table rows.
    pub name: &'static str,
    /// What the guest is.
    pub description: &'static str,
    /// The major version it asks for.
    pub major: u16,
    /// The lowest minor it accepts.
    pub min_minor: u16,
    /// Features it cannot run without.
    pub required: Features,
    /// Features it uses if granted.
    pub optional: Features,
    /// Whether it tries TIME_SET_STEAL_PAGE after NEGOTIATE (a 1.1 guest does; a 1.0 guest
    /// does not know the call).
    pub tries_steal_time: bool,
    /// Whether it tries MULTICALL_PAGES (1024 entries in one exit) after NEGOTIATE (a 1.3
    /// guest may; older guests do not know the call).
    pub tries_multicall_pages: bool,
}

impl GuestProfile {
    /// NEGOTIATE's `requested` argument.
    pub const fn requested(&self) -> u64 {
        ((self.major as u64) << 16) | self.min_minor as u64
    }
}

/// A host configuration of the matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostProfile {
    /// A short name, used in test and table rows.
    pub name: &'static str,
    /// The versions it serves (one per major, ascending).
    pub serves: &'static [Version],
}

/// What a guest sees, and what it does about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// NEGOTIATE's status.
    pub negotiate: Status,
    /// The accepted version (when NEGOTIATE succeeded).
    pub accepted: Option<Version>,
    /// Whether STEAL_TIME was granted.
    pub steal_granted: bool,
    /// TIME_SET_STEAL_PAGE's status, for guests that try it after a successful NEGOTIATE.
    pub steal_call: Option<Status>,
    /// Whether MULTICALL_PAGES was granted.
    pub pages_granted: bool,
    /// MULTICALL_PAGES's status, for guests that try it after a successful NEGOTIATE (SUCCESS
    /// means the guest also found all 1024 entries run, in order, in one exit).
    pub pages_call: Option<Status>,
}

/// The guests of the matrix.
pub const GUESTS: &[GuestProfile] = &[
    GuestProfile {
        name: "1.0 guest",
        description: "Built against 1.0: asks for major 1, minor 0 or later.",
        major: 1,
        min_minor: 0,
        required: BASE_REQUIRED,
        optional: Features::EVENTS,
        tries_steal_time: false,
        tries_multicall_pages: false,
    },
    GuestProfile {
        name: "1.1 guest, steal time optional",
        description: "Uses the steal-time page if it is granted, and degrades without it.",
        major: 1,
        min_minor: 0,
        required: BASE_REQUIRED,
        optional: Features::STEAL_TIME,
        tries_steal_time: true,
        tries_multicall_pages: false,
    },
    GuestProfile {
        name: "1.1 guest, steal time required",
        description: "Cannot run without the steal-time page.",
        major: 1,
        min_minor: 0,
        required: BASE_REQUIRED.union(Features::STEAL_TIME),
        optional: Features::empty(),
        tries_steal_time: true,
        tries_multicall_pages: false,
    },
    GuestProfile {
        name: "1.1 guest, minimum minor 1",
        description: "Relies on 1.1 semantics, so it asks for minor 1 or later.",
        major: 1,
        min_minor: 1,
        required: BASE_REQUIRED,
        optional: Features::empty(),
        tries_steal_time: true,
        tries_multicall_pages: false,
    },
    GuestProfile {
        name: "1.2 guest, minimum minor 2",
        description: "Relies on the precise rules of 1.2, so it asks for minor 2 or later.",
        major: 1,
        min_minor: 2,
        required: BASE_REQUIRED,
        optional: Features::STEAL_TIME,
        tries_steal_time: true,
        tries_multicall_pages: false,
    },
    GuestProfile {
        name: "1.3 guest, paged batches optional",
        description: "Runs a 1024-entry MULTICALL_PAGES if it is granted, and degrades without it.",
        major: 1,
        min_minor: 0,
        required: BASE_REQUIRED,
        optional: Features::MULTICALL_PAGES,
        tries_steal_time: false,
        tries_multicall_pages: true,
    },
    GuestProfile {
        name: "1.3 guest, minimum minor 3",
        description: "Asks for minor 3 or later but not for MULTICALL_PAGES, and tries the call.",
        major: 1,
        min_minor: 3,
        required: BASE_REQUIRED,
        optional: Features::empty(),
        tries_steal_time: false,
        tries_multicall_pages: true,
    },
    GuestProfile {
        name: "2.0 guest",
        description: "Built against the 2.0 preview (time page in the 2.0 layout).",
        major: 2,
        min_minor: 0,
        required: BASE_REQUIRED,
        optional: Features::STEAL_TIME,
        tries_steal_time: true,
        tries_multicall_pages: false,
    },
    GuestProfile {
        name: "3.0 guest",
        description: "Asks for a major no host serves.",
        major: 3,
        min_minor: 0,
        required: BASE_REQUIRED,
        optional: Features::empty(),
        tries_steal_time: false,
        tries_multicall_pages: false,
    },
];

/// The hosts of the matrix: the reference host acting as each released minor, and serving
/// the 2.0 preview beside the current release.
pub const HOSTS: &[HostProfile] = &[
    HostProfile {
        name: "1.0 host",
        serves: &[V1_0],
    },
    HostProfile {
        name: "1.1 host",
        serves: &[V1_1],
    },
    HostProfile {
        name: "1.2 host",
        serves: &[V1_2],
    },
    HostProfile {
        name: "1.3 host",
        serves: &[V1_3],
    },
    HostProfile {
        name: "1.3 + 2.0 host",
        serves: &[V1_3, V2_0_PREVIEW],
    },
];

const fn ok(accepted: Version, steal_granted: bool, steal_call: Option<Status>) -> Outcome {
    Outcome {
        negotiate: Status::Success,
        accepted: Some(accepted),
        steal_granted,
        steal_call,
        pages_granted: false,
        pages_call: None,
    }
}

/// A guest that tries MULTICALL_PAGES after NEGOTIATE accepted `accepted`.
const fn paged(accepted: Version, granted: bool, call: Status) -> Outcome {
    Outcome {
        pages_granted: granted,
        pages_call: Some(call),
        ..ok(accepted, false, None)
    }
}

const fn refused(status: Status) -> Outcome {
    Outcome {
        negotiate: status,
        accepted: None,
        steal_granted: false,
        steal_call: None,
        pages_granted: false,
        pages_call: None,
    }
}

/// The expected outcome of every pair: `EXPECTED[guest][host]`, in the order of [`GUESTS`]
/// and [`HOSTS`]. Written out by hand from the spec's rules, not computed, so that the KVM
/// test checks the host against an independent statement.
pub const EXPECTED: [[Outcome; 5]; 9] = [
    // 1.0 guest: accepted at the host's highest minor of major 1; never touches steal time.
    [
        ok(V1_0, false, None),
        ok(V1_1, false, None),
        ok(V1_2, false, None),
        ok(V1_3, false, None),
        ok(V1_3, false, None),
    ],
    // 1.1 guest, steal time optional: degrades on a 1.0 host, where the call does not exist.
    [
        ok(V1_0, false, Some(Status::NotSupported)),
        ok(V1_1, true, Some(Status::Success)),
        ok(V1_2, true, Some(Status::Success)),
        ok(V1_3, true, Some(Status::Success)),
        ok(V1_3, true, Some(Status::Success)),
    ],
    // 1.1 guest, steal time required: refused cleanly by a 1.0 host.
    [
        refused(Status::FeatureUnavailable),
        ok(V1_1, true, Some(Status::Success)),
        ok(V1_2, true, Some(Status::Success)),
        ok(V1_3, true, Some(Status::Success)),
        ok(V1_3, true, Some(Status::Success)),
    ],
    // 1.1 guest, minimum minor 1: a 1.0 host cannot serve it; without asking for steal time
    // it is not granted it.
    [
        refused(Status::VersionUnsupported),
        ok(V1_1, false, Some(Status::NotGranted)),
        ok(V1_2, false, Some(Status::NotGranted)),
        ok(V1_3, false, Some(Status::NotGranted)),
        ok(V1_3, false, Some(Status::NotGranted)),
    ],
    // 1.2 guest, minimum minor 2: only hosts of 1.2 or later serve it; it then uses steal
    // time. A 1.3 host accepts it at 1.3 but grants it nothing it did not ask for.
    [
        refused(Status::VersionUnsupported),
        refused(Status::VersionUnsupported),
        ok(V1_2, true, Some(Status::Success)),
        ok(V1_3, true, Some(Status::Success)),
        ok(V1_3, true, Some(Status::Success)),
    ],
    // 1.3 guest, paged batches optional: before 1.3 the call does not exist (NOT_SUPPORTED,
    // COMPAT-002) and the guest degrades; a 1.3 host runs its 1024 entries in one exit.
    [
        paged(V1_0, false, Status::NotSupported),
        paged(V1_1, false, Status::NotSupported),
        paged(V1_2, false, Status::NotSupported),
        paged(V1_3, true, Status::Success),
        paged(V1_3, true, Status::Success),
    ],
    // 1.3 guest, minimum minor 3: only 1.3 hosts serve it; without asking for the feature it
    // is not granted it (the feature bit gates the call, not the accepted minor).
    [
        refused(Status::VersionUnsupported),
        refused(Status::VersionUnsupported),
        refused(Status::VersionUnsupported),
        paged(V1_3, false, Status::NotGranted),
        paged(V1_3, false, Status::NotGranted),
    ],
    // 2.0 guest: only the host that serves major 2 accepts it.
    [
        refused(Status::VersionUnsupported),
        refused(Status::VersionUnsupported),
        refused(Status::VersionUnsupported),
        refused(Status::VersionUnsupported),
        ok(V2_0_PREVIEW, true, Some(Status::Success)),
    ],
    // 3.0 guest: no host serves major 3.
    [
        refused(Status::VersionUnsupported),
        refused(Status::VersionUnsupported),
        refused(Status::VersionUnsupported),
        refused(Status::VersionUnsupported),
        refused(Status::VersionUnsupported),
    ],
];

/// Every cell: `(guest, host, expected)`.
pub fn cases() -> impl Iterator<Item = (&'static GuestProfile, &'static HostProfile, Outcome)> {
    GUESTS.iter().enumerate().flat_map(|(g, guest)| {
        HOSTS
            .iter()
            .enumerate()
            .map(move |(h, host)| (guest, host, EXPECTED[g][h]))
    })
}

fn cell(o: &Outcome) -> String {
    match o.accepted {
        None => format!("refused: {}", o.negotiate.name()),
        Some(v) => {
            let steal = match o.steal_call {
                None => String::new(),
                Some(Status::Success) => ", steal time used".to_owned(),
                Some(s) => format!(", steal time: {}", s.name()),
            };
            let pages = match o.pages_call {
                None => String::new(),
                Some(Status::Success) => ", 1024-entry MULTICALL_PAGES in one exit".to_owned(),
                Some(s) => format!(", MULTICALL_PAGES: {}", s.name()),
            };
            format!("{v}{steal}{pages}")
        }
    }
}

/// The matrix as a Markdown table, for the spec.
pub fn matrix_markdown() -> String {
    let mut s = String::from("| guest | requests |");
    for h in HOSTS {
        let _ = write!(s, " {} |", h.name);
    }
    s.push_str("\n|---|---|");
    s.push_str(&"---|".repeat(HOSTS.len()));
    s.push('\n');
    for (g, guest) in GUESTS.iter().enumerate() {
        let _ = write!(
            s,
            "| {} | major {}, minor ≥ {}; requires {}; optional {} |",
            guest.name,
            guest.major,
            guest.min_minor,
            feature_names(guest.required),
            feature_names(guest.optional)
        );
        for o in &EXPECTED[g] {
            let _ = write!(s, " {} |", cell(o));
        }
        s.push('\n');
    }
    s
}

fn feature_names(f: Features) -> String {
    let names: Vec<&str> = pvabi_abi::features::FEATURES
        .iter()
        .filter(|i| f.contains(i.flag))
        .map(|i| i.name)
        .collect();
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_matrix_is_complete_and_consistent() {
        assert_eq!(EXPECTED.len(), GUESTS.len());
        assert_eq!(cases().count(), GUESTS.len() * HOSTS.len());
        for (guest, host, o) in cases() {
            match o.accepted {
                Some(v) => {
                    assert_eq!(o.negotiate, Status::Success);
                    assert_eq!(v.major(), guest.major, "{} on {}", guest.name, host.name);
                    assert!(host.serves.contains(&v), "{} on {}", guest.name, host.name);
                    assert!(v.minor() >= guest.min_minor);
                    assert_eq!(o.steal_call.is_some(), guest.tries_steal_time);
                    assert_eq!(o.pages_call.is_some(), guest.tries_multicall_pages);
                    // MULTICALL_PAGES is granted exactly when the guest asked for it and the
                    // accepted version defines it, and only then does the call succeed.
                    let asked =
                        (guest.required | guest.optional).contains(Features::MULTICALL_PAGES);
                    assert_eq!(o.pages_granted, asked && v >= V1_3 && v.major() == 1);
                    if let Some(s) = o.pages_call {
                        assert_eq!(s == Status::Success, o.pages_granted);
                    }
                }
                None => assert_ne!(o.negotiate, Status::Success),
            }
        }
    }

    #[test]
    fn the_table_has_a_row_per_guest() {
        let md = matrix_markdown();
        assert_eq!(md.lines().count(), 2 + GUESTS.len());
        assert!(md.contains("refused: FEATURE_UNAVAILABLE"));
    }
}
