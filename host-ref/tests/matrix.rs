//! The cross-version matrix on real KVM: every guest profile of
//! `pvabi_versioning::matrix::GUESTS` meets the reference host acting as every version of
//! `HOSTS`, and NEGOTIATE's outcome must be the one `EXPECTED` states (the spec renders the
//! same table). One VM per cell; each guest reports one line and shuts down.

use std::sync::{Arc, Mutex};

use pvabi_abi::features::Features;
use pvabi_abi::version::Version;
use pvabi_host::dispatch::kvm_glue::PvabiHost;
use pvabi_host::dispatch::{ConsoleSink, HostConfig};
use pvabi_host::vm::{self, testing::kvm_or_skip, CallRegs, Next, VmConfig, VmCtl, VmEnd, VmHost};
use pvabi_versioning::matrix::{cases, GuestProfile, HostProfile, Outcome};

const MATRIX_GUEST: &[u8] = include_bytes!(env!("PVABI_GUEST_MATRIX"));
const PORT_PARAM: u16 = 0x565D;

/// The pvabi host plus the test port that hands the guest its profile.
struct MatrixHost {
    pvabi: PvabiHost,
    params: Mutex<Vec<u32>>,
}

impl VmHost for MatrixHost {
    fn cpuid_leaves(&self) -> Vec<(u32, u32, [u32; 4])> {
        self.pvabi.cpuid_leaves()
    }

    fn port_out(
        &self,
        vcpu: u32,
        port: u16,
        data: &[u8],
        regs: &mut CallRegs,
        ctl: &VmCtl,
    ) -> Next {
        self.pvabi.port_out(vcpu, port, data, regs, ctl)
    }

    fn port_in(&self, vcpu: u32, port: u16, data: &mut [u8], ctl: &VmCtl) -> Next {
        if port == PORT_PARAM {
            let mut params = self.params.lock().unwrap();
            let v = if params.is_empty() {
                0
            } else {
                params.remove(0)
            };
            let n = data.len().min(4);
            data[..n].copy_from_slice(&v.to_le_bytes()[..n]);
            return Next::Resume;
        }
        self.pvabi.port_in(vcpu, port, data, ctl)
    }

    fn vcpu_started(&self, vcpu: u32, ctl: &VmCtl) {
        self.pvabi.vcpu_started(vcpu, ctl);
    }

    fn vm_ending(&self, how: &VmEnd, ctl: &VmCtl) {
        self.pvabi.vm_ending(how, ctl);
    }
}

/// Boots the matrix guest with `guest`'s profile on a host serving `host.serves`; returns the
/// guest's report line.
fn run_cell(guest: &GuestProfile, host: &HostProfile) -> String {
    let console = Arc::new(Mutex::new(Vec::<u8>::new()));
    let sink = console.clone();
    let config = HostConfig {
        console: ConsoleSink::Custom(Arc::new(move |_, bytes| {
            sink.lock().unwrap().extend_from_slice(bytes)
        })),
        ..HostConfig::serving(host.serves)
    };
    let matrix_host = Arc::new(MatrixHost {
        pvabi: PvabiHost::new(config).expect("valid host configuration"),
        params: Mutex::new(vec![
            guest.requested() as u32,
            guest.required.bits() as u32,
            guest.optional.bits() as u32,
            u32::from(guest.tries_steal_time),
        ]),
    });
    let end = vm::run(&VmConfig::default(), MATRIX_GUEST, matrix_host).expect("the VM runs");
    assert!(
        matches!(end, VmEnd::Shutdown(0)),
        "{} on {}: the guest did not shut down cleanly: {end}\nconsole: {}",
        guest.name,
        host.name,
        String::from_utf8_lossy(&console.lock().unwrap())
    );
    let out = String::from_utf8_lossy(&console.lock().unwrap()).into_owned();
    out.lines()
        .find(|l| l.starts_with("matrix "))
        .unwrap_or_else(|| panic!("{} on {}: no report line in {out:?}", guest.name, host.name))
        .to_owned()
}

/// The line the guest must print for `expected`.
fn expected_line(guest: &GuestProfile, expected: &Outcome) -> String {
    match expected.accepted {
        None => format!(
            "matrix negotiate={} accepted=- granted=- steal=- timepage=-",
            expected.negotiate.name()
        ),
        Some(v) => {
            let mut granted = guest.required;
            if expected.steal_granted {
                granted |= Features::STEAL_TIME;
            }
            // Optional features other than steal time are offered by every host of the matrix.
            granted |= guest.optional - Features::STEAL_TIME;
            let steal = match expected.steal_call {
                None => "-".to_owned(),
                Some(s) => s.name().to_owned(),
            };
            let layout = if v.major() == 2 { "v2" } else { "v1" };
            format!(
                "matrix negotiate=SUCCESS accepted={:#x} granted={:#x} steal={steal} timepage={layout}",
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
    assert_eq!(ran, 18);
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
        line1.contains(&format!("accepted={:#x}", Version::new(1, 1).0)),
        "{line1}"
    );
    assert!(line1.ends_with("timepage=v1"), "{line1}");
    assert!(
        line2.contains(&format!("accepted={:#x}", Version::new(2, 0).0)),
        "{line2}"
    );
    assert!(line2.ends_with("timepage=v2"), "{line2}");
}
