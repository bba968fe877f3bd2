//! What the tests of the hostile guest (`guest-ref/bare/hostile`) share: its test ports as a
//! device, booting one scenario, and counting the threads the VMM and the dispatcher started.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pvabi_abi::status::Status;
use pvabi_host::bus::{PortAccess, PortDevice};
use pvabi_host::dispatch::{CallRegs, ConsoleSink, HostConfig, Outcome, Report};
use pvabi_host::runner::{self, RunConfig};
use pvabi_host::vm::{VmConfig, VmCtl, VmEnd};
use vm_memory::{Bytes, GuestAddress};

pub mod protocol {
    include!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../guest-ref/bare/hostile/src/protocol.rs"
    ));
}

/// The guest's input generators (the same file the guest runs).
pub mod inputs {
    use pvabi_abi as abi;
    include!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../guest-ref/bare/hostile/src/inputs.rs"
    ));
}

pub use protocol::*;

/// Guest RAM of every hostile VM.
pub const MEM: u64 = 64 << 20;

/// One named report of the guest.
#[derive(Clone, Debug)]
pub struct Probe {
    pub vcpu: u32,
    pub name: String,
    pub st: u64,
    pub r0: u64,
    pub r1: u64,
    pub extra: u64,
}

/// The guest's test ports, in front of the pvabi ports.
pub struct HostilePorts {
    ctl: VmCtl,
    scenario: u32,
    params: Mutex<VecDeque<u32>>,
    probes: Mutex<Vec<Probe>>,
    recs: Mutex<Vec<Rec>>,
    snaps: Mutex<HashMap<u64, (u64, Vec<u8>)>>,
    /// `(tag, first differing offset)` of each comparison.
    checks: Mutex<Vec<(u64, Option<usize>)>>,
    console: Mutex<Vec<u8>>,
}

fn read_mem(ctl: &VmCtl, addr: u64, len: u64) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; len as usize];
    ctl.memory()
        .read_slice(&mut buf, GuestAddress(addr))
        .ok()
        .map(|()| buf)
}

fn parse_rec(b: &[u8]) -> Rec {
    let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    let mut args = [0u64; 6];
    for (i, a) in args.iter_mut().enumerate() {
        *a = u64_at(16 + 8 * i);
    }
    Rec {
        class: u32_at(0),
        sub: u32_at(4),
        code: u64_at(8),
        args,
        st: u64_at(64),
        r: [u64_at(72), u64_at(80)],
    }
}

impl PortDevice for HostilePorts {
    fn write(&self, access: &PortAccess, data: &[u8], regs: &mut CallRegs) -> Option<Outcome> {
        match access.port {
            PORT_REPORT => {
                let name = read_mem(&self.ctl, regs.rdi, regs.rsi.min(128)).map_or_else(
                    || format!("<unreadable name at {:#x}>", regs.rdi),
                    |b| String::from_utf8_lossy(&b).into_owned(),
                );
                self.probes.lock().unwrap().push(Probe {
                    vcpu: access.vcpu,
                    name,
                    st: regs.r8,
                    r0: regs.r9,
                    r1: regs.r10,
                    extra: regs.r11,
                });
            }
            PORT_LOG => {
                let n = regs.rsi.min(4096);
                let size = std::mem::size_of::<Rec>() as u64;
                assert_eq!(size, 88, "the guest's record layout");
                let bytes = read_mem(&self.ctl, regs.rdi, n * size).expect("log in RAM");
                let mut recs = self.recs.lock().unwrap();
                recs.extend(bytes.chunks(size as usize).map(parse_rec));
            }
            PORT_SNAP => {
                let bytes = read_mem(&self.ctl, regs.rdi, regs.rsi.min(1 << 20)).expect("snap");
                self.snaps
                    .lock()
                    .unwrap()
                    .insert(regs.r8, (regs.rdi, bytes));
            }
            PORT_CHECK => {
                let snaps = self.snaps.lock().unwrap();
                let (addr, before) = snaps.get(&regs.rdi).expect("a snapshot of that tag");
                let now = read_mem(&self.ctl, *addr, before.len() as u64).expect("snap");
                let diff = before.iter().zip(&now).position(|(a, b)| a != b);
                self.checks.lock().unwrap().push((regs.rdi, diff));
            }
            PORT_CONSOLE => self.console.lock().unwrap().extend_from_slice(data),
            _ => return None,
        }
        Some(Outcome::Resume)
    }

    fn read(&self, access: &PortAccess, data: &mut [u8]) -> Option<Outcome> {
        let value = match access.port {
            PORT_SCENARIO => self.scenario,
            PORT_PARAM => self.params.lock().unwrap().pop_front().unwrap_or(0),
            _ => return None,
        };
        let n = data.len().min(4);
        data[..n].copy_from_slice(&value.to_le_bytes()[..n]);
        Some(Outcome::Resume)
    }
}

/// What one hostile VM did.
pub struct Run {
    pub scenario: u32,
    pub end: VmEnd,
    pub probes: Vec<Probe>,
    pub recs: Vec<Rec>,
    pub checks: Vec<(u64, Option<usize>)>,
    pub report: Report,
    pub console: String,
    pub wall: Duration,
}

impl Run {
    /// A summary for assertion messages.
    pub fn dump(&self) -> String {
        let mut s = format!(
            "scenario {} ended after {:?}: {}\n",
            self.scenario, self.wall, self.end
        );
        for p in &self.probes {
            s += &format!(
                "  [vCPU {}] {:<28} {:#x} r0={:#x} r1={:#x} extra={:#x}\n",
                p.vcpu, p.name, p.st, p.r0, p.r1, p.extra
            );
        }
        s += &format!("  {} records, checks {:?}\n", self.recs.len(), self.checks);
        if !self.console.is_empty() {
            s += &format!("  raw console: {}\n", self.console);
        }
        s
    }

    /// Every report named `name`.
    pub fn all(&self, name: &str) -> Vec<&Probe> {
        self.probes.iter().filter(|p| p.name == name).collect()
    }

    /// The one report named `name`.
    pub fn get(&self, name: &str) -> &Probe {
        let found = self.all(name);
        assert_eq!(found.len(), 1, "`{name}`: one report\n{}", self.dump());
        found[0]
    }

    /// The report `name` has status `status`.
    pub fn expect(&self, name: &str, status: Status) -> &Probe {
        let p = self.get(name);
        assert_eq!(p.st, status.raw(), "`{name}`\n{}", self.dump());
        p
    }

    /// The VM kept running to its SYSTEM_SHUTDOWN(0) after everything the guest did.
    pub fn assert_alive(&self) {
        self.expect("alive", Status::Success);
        for bad in [
            "shutdown_returned",
            "ap_stop_returned",
            "unknown_scenario",
            "no_pvabi",
        ] {
            assert!(self.all(bad).is_empty(), "`{bad}`\n{}", self.dump());
        }
        assert_eq!(self.end, VmEnd::Shutdown(0), "{}", self.dump());
        assert!(self.console.is_empty(), "guest panic\n{}", self.dump());
    }

    /// Records of one class.
    pub fn class(&self, class: u32) -> Vec<&Rec> {
        self.recs.iter().filter(|r| r.class == class).collect()
    }
}

/// Options of one hostile VM.
#[derive(Clone, Debug)]
pub struct Opts {
    pub vcpus: u32,
    pub params: Vec<u32>,
    pub timeout: Duration,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            vcpus: 1,
            params: Vec::new(),
            timeout: Duration::from_secs(120),
        }
    }
}

/// Boots the hostile guest for `scenario` and runs it to its end (or the timeout).
pub fn boot(scenario: u32, opts: Opts) -> Run {
    let run = RunConfig {
        host: HostConfig {
            vcpus: opts.vcpus,
            console: ConsoleSink::Discard,
            strict: true,
            ..HostConfig::default()
        },
        vm: VmConfig {
            vcpus: opts.vcpus,
            mem_bytes: MEM,
            ..VmConfig::default()
        },
        timeout: Some(opts.timeout),
    };
    let mut ports = None;
    let outcome = runner::run_with(pvabi_guest_images::hostile(), run, |bus, dispatcher| {
        let dev = Arc::new(HostilePorts {
            ctl: dispatcher.machine().ctl().clone(),
            scenario,
            params: Mutex::new(opts.params.clone().into()),
            probes: Mutex::new(Vec::new()),
            recs: Mutex::new(Vec::new()),
            snaps: Mutex::new(HashMap::new()),
            checks: Mutex::new(Vec::new()),
            console: Mutex::new(Vec::new()),
        });
        for port in [
            PORT_REPORT,
            PORT_LOG,
            PORT_SNAP,
            PORT_CHECK,
            PORT_SCENARIO,
            PORT_PARAM,
            PORT_CONSOLE,
        ] {
            bus.attach(port..=port, dev.clone());
        }
        ports = Some(dev);
    })
    .expect("the hostile VM runs");
    let ports = ports.expect("the device was attached");
    let run = Run {
        scenario,
        end: outcome.end,
        probes: ports.probes.lock().unwrap().clone(),
        recs: ports.recs.lock().unwrap().clone(),
        checks: ports.checks.lock().unwrap().clone(),
        report: outcome.report,
        console: String::from_utf8_lossy(&ports.console.lock().unwrap()).into_owned(),
        wall: outcome.wall,
    };
    run
}

/// Threads of this process that a VM or its dispatcher started (`vcpuN`, `pvabi-*`).
pub fn vm_threads() -> Vec<String> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir("/proc/self/task").expect("/proc/self/task") {
        let path = entry.expect("task entry").path().join("comm");
        if let Ok(name) = std::fs::read_to_string(path) {
            let name = name.trim().to_string();
            if name.starts_with("vcpu") || name.starts_with("pvabi-") {
                names.push(name);
            }
        }
    }
    names.sort();
    names
}

/// Open file descriptors of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// Resident set size of this process, in KiB.
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A status by its raw value, for messages.
pub fn status_name(raw: u64) -> &'static str {
    Status::from_raw(raw).map_or("undefined", |s| s.name())
}
