//! The cross-version matrix on real KVM: every guest profile of
//! `pvabi_versioning::matrix::GUESTS` meets the reference host acting as every version of
//! `HOSTS`, and NEGOTIATE's outcome must be the one `EXPECTED` states (the spec renders the
//! same table). One VM per cell; each guest reports one line and shuts down.

use std::sync::Arc;

use pvabi_abi::features::Features;
use pvabi_abi::version::Version;
use pvabi_host::bus::PortFeed;
use pvabi_host::dispatch::{ConsoleSink, HostConfig};
use pvabi_host::runner::{self, RunConfig};
use pvabi_host::vm::{testing::kvm_or_skip, VmConfig, VmEnd};
use pvabi_versioning::matrix::{cases, GuestProfile, HostProfile, Outcome};

/// The matrix guest reads its profile from this port (see `guest-ref/bare/matrix`).
const PORT_PARAM: u16 = 0x565D;

/// Boots the matrix guest with `guest`'s profile on a host serving `host.serves`; returns the
/// guest's report line.
fn run_cell(guest: &GuestProfile, host: &HostProfile) -> String {
    report_line(&run_profile(guest, host))
}

/// Boots the matrix guest with `guest`'s profile on a host serving `host.serves`.
fn run_profile(guest: &GuestProfile, host: &HostProfile) -> runner::RunOutcome {
    let config = RunConfig {
        host: HostConfig {
            console: ConsoleSink::Discard,
            ..HostConfig::serving(host.serves)
        },
        vm: VmConfig::default(),
        timeout: Some(std::time::Duration::from_secs(60)),
    };
    let profile = [
        guest.requested() as u32,
        guest.required.bits() as u32,
        guest.optional.bits() as u32,
        u32::from(guest.tries_steal_time) | u32::from(guest.tries_multicall_pages) << 1,
    ];
    let outcome = runner::run_with(pvabi_guest_images::matrix(), config, |bus, _| {
        bus.attach(PORT_PARAM..=PORT_PARAM, Arc::new(PortFeed::new(profile)))
    })
    .expect("the VM runs");
    let out = outcome.console_text();
    assert!(
        matches!(outcome.end, VmEnd::Shutdown(0)),
        "{} on {}: the guest did not shut down cleanly: {}\nconsole: {out}",
        guest.name,
        host.name,
        outcome.end
    );
    outcome
}

/// The guest's report line.
fn report_line(outcome: &runner::RunOutcome) -> String {
    let out = outcome.console_text();
    out.lines()
        .find(|l| l.starts_with("matrix "))
        .unwrap_or_else(|| panic!("no report line in {out:?}"))
        .to_owned()
}

/// The line the guest must print for `expected`.
fn expected_line(guest: &GuestProfile, expected: &Outcome) -> String {
    match expected.accepted {
        None => format!(
            "matrix negotiate={} accepted=- granted=- steal=- pages=- timepage=-",
            expected.negotiate.name()
        ),
        Some(v) => {
            let mut granted = guest.required;
            if expected.steal_granted {
                granted |= Features::STEAL_TIME;
            }
            if expected.pages_granted {
                granted |= Features::MULTICALL_PAGES;
            }
            // Optional features other than steal time and MULTICALL_PAGES are offered by every
            // host of the matrix.
            granted |= guest.optional - Features::STEAL_TIME - Features::MULTICALL_PAGES;
            let call = |c: Option<pvabi_abi::status::Status>| match c {
                None => "-".to_owned(),
                Some(s) => s.name().to_owned(),
            };
            let (steal, pages) = (call(expected.steal_call), call(expected.pages_call));
            let layout = if v.major() == 2 { "v2" } else { "v1" };
            format!(
                "matrix negotiate=SUCCESS accepted={:#x} granted={:#x} steal={steal} pages={pages} timepage={layout}",
                v.0,
                granted.bits()
            )
        }
    }
}

#[test]
fn every_guest_version_meets_every_host_version_as_the_spec_says() {
    if !kvm_or_skip("every_guest_version_meets_every_host_version_as_the_spec_says") {
        return;
    }
    let mut failures = Vec::new();
    let mut ran = 0;
    for (guest, host, expected) in cases() {
        let got = run_cell(guest, host);
        let want = expected_line(guest, &expected);
        ran += 1;
        if got != want {
            failures.push(format!(
                "{} on {}:\n  got  {got}\n  want {want}",
                guest.name, host.name
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {ran} matrix cells differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(
        ran,
        pvabi_versioning::matrix::GUESTS.len() * pvabi_versioning::matrix::HOSTS.len()
    );
}

/// MULTICALL_PAGES on KVM: the 1.3 guest's 1024-entry batch (which the guest checks entry by
/// entry) reaches the host in one doorbell exit, and the host ran all 1024 entries in it.
#[test]
fn a_1024_entry_batch_runs_in_one_exit() {
    if !kvm_or_skip("a_1024_entry_batch_runs_in_one_exit") {
        return;
    }
    use pvabi_abi::calls::Call;
    use pvabi_abi::status::Status;
    let guest = pvabi_versioning::matrix::GUESTS
        .iter()
        .find(|g| g.tries_multicall_pages && g.optional.contains(Features::MULTICALL_PAGES))
        .expect("a matrix guest runs a paged batch");
    let host = pvabi_versioning::matrix::HOSTS
        .iter()
        .find(|h| h.serves == [pvabi_abi::version::V1_3])
        .expect("a 1.3 host in the matrix");
    let outcome = run_profile(guest, host);
    let line = report_line(&outcome);
    assert!(line.contains(" pages=SUCCESS "), "{line}");
    let r = &outcome.report;
    assert_eq!(
        r.count(Call::MulticallPages, Status::Success),
        1,
        "one MULTICALL_PAGES"
    );
    assert_eq!(
        r.calls
            .get(&u64::from(Call::MulticallPages.code()))
            .map(|c| c.total),
        Some(1)
    );
    assert_eq!((r.multicall_entries, r.multicall_preemptions), (1024, 0));
    assert_eq!(r.count(Call::TimeMonotonic, Status::Success), 342);
    assert!(r.count(Call::GetSpecVersion, Status::Success) >= 341);
    assert!(r.count(Call::ProbeCall, Status::Success) >= 341);
    // Every pvabi call but the 1024 entries came through its own doorbell exit.
    assert_eq!(outcome.exits.doorbell, outcome.calls() - 1024);
}

/// Two majors side by side: a 1.x guest and a 2.0 guest on the same host build and the same
/// configuration, each reading the time page in its own major's layout.
#[test]
fn a_1x_guest_and_a_2_0_guest_run_on_the_same_host() {
    if !kvm_or_skip("a_1x_guest_and_a_2_0_guest_run_on_the_same_host") {
        return;
    }
    let both = pvabi_versioning::matrix::HOSTS
        .iter()
        .find(|h| h.serves.iter().any(|v| v.major() == 2))
        .expect("a host of the matrix serves major 2");
    let guests = pvabi_versioning::matrix::GUESTS;
    let v1 = guests.iter().find(|g| g.major == 1).unwrap();
    let v2 = guests.iter().find(|g| g.major == 2).unwrap();
    let line1 = run_cell(v1, both);
    let line2 = run_cell(v2, both);
    assert!(
        line1.contains(&format!("accepted={:#x}", both.serves[0].0)),
        "{line1}"
    );
    assert!(line1.ends_with("timepage=v1"), "{line1}");
    assert!(
        line2.contains(&format!("accepted={:#x}", Version::new(2, 0).0)),
        "{line2}"
    );
    assert!(line2.ends_with("timepage=v2"), "{line2}");
}
