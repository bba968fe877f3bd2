//! The port bus: which device answers an `in` or `out` to which I/O port.
//!
//! Devices are attached to port ranges. An access goes to the most recently attached device
//! whose range holds the port; a device that does not handle it (`None`) passes it on to
//! the one attached before it, and an access nobody handles gets the bus's default: a write
//! is ignored and a read returns zeros. So a device that adds one port, or changes how one
//! port answers, implements only that, and everything else reaches the devices beneath it.
//! The bus also counts accesses (each one an exit): all of them, and those of the ports it
//! was asked to [`watch`](PortBus::watch).
//!
//! ```
//! use std::sync::Arc;
//! use pvabi_dispatch::{CallRegs, Caller, Outcome};
//! use pvabi_host::bus::{PortAccess, PortBus, PortDevice};
//!
//! /// Answers reads of its port with 7.
//! struct Seven;
//! impl PortDevice for Seven {
//!     fn read(&self, _: &PortAccess, data: &mut [u8]) -> Option<Outcome> {
//!         data.fill(7);
//!         Some(Outcome::Resume)
//!     }
//! }
//!
//! let mut bus = PortBus::new();
//! bus.attach(0x80..=0x80, Arc::new(Seven));
//! bus.watch(0x80);
//! let access = PortAccess { vcpu: 0, cpl: 0, long_mode: true, port: 0x80, string_element: false };
//! let mut data = [0u8; 1];
//! assert_eq!(bus.read(&access, &mut data), Outcome::Resume);
//! assert_eq!(data, [7]);
//! // Writes fall through to the default (ignored), and are counted.
//! bus.write(&access, &[1], &mut CallRegs::default());
//! assert_eq!(bus.counts(0x80), Some((1, 1)));
//! ```

use std::fmt;
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use pvabi_dispatch::{CallRegs, Caller, Outcome};

/// One port access, as the vCPU exit reported it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortAccess {
    /// The vCPU that made it.
    pub vcpu: u32,
    /// Its privilege level (0 to 3).
    pub cpl: u8,
    /// Whether it ran in 64-bit mode (EFER.LMA and CS.L), not compatibility mode.
    pub long_mode: bool,
    /// The port.
    pub port: u16,
    /// Whether the exit showed this write as an element of a string output: of a `rep outs`,
    /// or one of several elements one exit carried (see
    /// [`Doorbell::string_element`](pvabi_dispatch::Doorbell)); `false` for an `in`, an `out`
    /// and an `outs` without `rep`.
    pub string_element: bool,
}

impl PortAccess {
    /// The caller, as the dispatcher takes it.
    pub fn caller(&self) -> Caller {
        Caller {
            vcpu: self.vcpu,
            cpl: self.cpl,
            long_mode: self.long_mode,
        }
    }
}

/// A device on the [`PortBus`]. Every method has a default that does not handle the access,
/// so a device implements only what it adds.
pub trait PortDevice: Send + Sync {
    /// An `out` of `data` (1, 2 or 4 bytes; more for string I/O). `regs` are the guest's call
    /// registers; changes are written back before the vCPU resumes. `None`: not handled here
    /// (the bus passes it on). May block (e.g. "halt until an event"), but must return once
    /// [`vm_ending`](Self::vm_ending) was called.
    fn write(&self, _access: &PortAccess, _data: &[u8], _regs: &mut CallRegs) -> Option<Outcome> {
        None
    }

    /// An `in`: fill `data` (zeroed before the first device sees it). `None`: not handled.
    fn read(&self, _access: &PortAccess, _data: &mut [u8]) -> Option<Outcome> {
        None
    }

    /// The VM has ended: wake any access that is blocked. Called once, for every device.
    fn vm_ending(&self) {}
}

struct Attachment {
    ports: RangeInclusive<u16>,
    device: Arc<dyn PortDevice>,
}

/// Writes and reads of one port, or of all.
#[derive(Debug, Default)]
struct Counter {
    writes: AtomicU64,
    reads: AtomicU64,
}

impl Counter {
    fn get(&self) -> (u64, u64) {
        (
            self.writes.load(Ordering::Relaxed),
            self.reads.load(Ordering::Relaxed),
        )
    }
}

/// Port devices by range, with access counters.
#[derive(Default)]
pub struct PortBus {
    /// In attachment order; lookups go from the last one back.
    attachments: Vec<Attachment>,
    /// Every access.
    total: Counter,
    /// The watched ports' accesses.
    watched: Vec<(u16, Counter)>,
}

impl fmt::Debug for PortBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.attachments.iter().map(|a| &a.ports))
            .finish()
    }
}

impl PortBus {
    /// An empty bus: every write is ignored and every read returns zeros.
    pub fn new() -> Self {
        Self::default()
    }

    /// Attaches `device` to `ports`, in front of the devices attached before it.
    pub fn attach(&mut self, ports: RangeInclusive<u16>, device: Arc<dyn PortDevice>) {
        self.attachments.push(Attachment { ports, device });
    }

    /// Counts the accesses to `port` apart (see [`counts`](Self::counts)).
    pub fn watch(&mut self, port: u16) {
        if !self.watched.iter().any(|(p, _)| *p == port) {
            self.watched.push((port, Counter::default()));
        }
    }

    fn counter(&self, port: u16) -> Option<&Counter> {
        self.watched
            .iter()
            .find(|(p, _)| *p == port)
            .map(|(_, c)| c)
    }

    fn at(&self, port: u16) -> impl Iterator<Item = &Attachment> {
        self.attachments
            .iter()
            .rev()
            .filter(move |a| a.ports.contains(&port))
    }

    /// An `out`: the first device (most recent first) that handles it answers.
    pub fn write(&self, access: &PortAccess, data: &[u8], regs: &mut CallRegs) -> Outcome {
        self.total.writes.fetch_add(1, Ordering::Relaxed);
        if let Some(c) = self.counter(access.port) {
            c.writes.fetch_add(1, Ordering::Relaxed);
        }
        self.at(access.port)
            .find_map(|a| a.device.write(access, data, regs))
            .unwrap_or(Outcome::Resume)
    }

    /// An `in`: `data` is zeroed, then the first device that handles it fills it.
    pub fn read(&self, access: &PortAccess, data: &mut [u8]) -> Outcome {
        data.fill(0);
        self.total.reads.fetch_add(1, Ordering::Relaxed);
        if let Some(c) = self.counter(access.port) {
            c.reads.fetch_add(1, Ordering::Relaxed);
        }
        self.at(access.port)
            .find_map(|a| a.device.read(access, data))
            .unwrap_or(Outcome::Resume)
    }

    /// Tells every device that the VM has ended.
    pub fn vm_ending(&self) {
        for a in &self.attachments {
            a.device.vm_ending();
        }
    }

    /// `(writes, reads)` of a [watched](Self::watch) port (`None` if it is not watched).
    pub fn counts(&self, port: u16) -> Option<(u64, u64)> {
        self.counter(port).map(Counter::get)
    }

    /// `(writes, reads)` over every port.
    pub fn totals(&self) -> (u64, u64) {
        self.total.get()
    }
}

/// A device that answers `in`s from its port with the given values, in order (the last one
/// repeats, 0 when none were given): how a test hands a guest its scenario or parameters.
/// (Feature `test-util`.)
#[cfg(any(test, feature = "test-util"))]
#[derive(Debug)]
pub struct PortFeed {
    values: std::sync::Mutex<std::collections::VecDeque<u32>>,
}

#[cfg(any(test, feature = "test-util"))]
impl PortFeed {
    /// A device that feeds `values`; attach it to the port with [`PortBus::attach`].
    pub fn new(values: impl IntoIterator<Item = u32>) -> Self {
        PortFeed {
            values: std::sync::Mutex::new(values.into_iter().collect()),
        }
    }
}

#[cfg(any(test, feature = "test-util"))]
impl PortDevice for PortFeed {
    fn read(&self, _access: &PortAccess, data: &mut [u8]) -> Option<Outcome> {
        let value = {
            let mut values = pvabi_dispatch::sync::lock(&self.values);
            match values.len() {
                0 => 0,
                1 => values[0],
                _ => values.pop_front().unwrap_or(0),
            }
        };
        let n = data.len().min(4);
        data[..n].copy_from_slice(&value.to_le_bytes()[..n]);
        Some(Outcome::Resume)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Handles writes of its port by setting `rdi`, and records `vm_ending`.
    #[derive(Default)]
    struct Marker {
        value: u64,
        ended: Mutex<bool>,
    }

    impl PortDevice for Marker {
        fn write(&self, _: &PortAccess, _: &[u8], regs: &mut CallRegs) -> Option<Outcome> {
            regs.rdi = self.value;
            Some(Outcome::StopVcpu)
        }

        fn vm_ending(&self) {
            *self.ended.lock().unwrap() = true;
        }
    }

    /// Passes everything on, counting nothing itself.
    struct Transparent;
    impl PortDevice for Transparent {}

    fn access(port: u16) -> PortAccess {
        PortAccess {
            vcpu: 0,
            cpl: 0,
            long_mode: true,
            port,
            string_element: false,
        }
    }

    #[test]
    fn later_devices_come_first_and_unhandled_accesses_fall_through() {
        let mut bus = PortBus::new();
        let low = Arc::new(Marker {
            value: 1,
            ..Default::default()
        });
        bus.attach(0x10..=0x1f, low.clone());
        bus.attach(0x12..=0x12, Arc::new(Transparent));
        bus.watch(0x12);
        bus.watch(0x99);
        let mut regs = CallRegs::default();
        assert_eq!(bus.write(&access(0x12), &[0], &mut regs), Outcome::StopVcpu);
        assert_eq!(regs.rdi, 1, "the transparent device passed the write on");
        bus.attach(
            0x12..=0x12,
            Arc::new(Marker {
                value: 2,
                ..Default::default()
            }),
        );
        bus.write(&access(0x12), &[0], &mut regs);
        assert_eq!(regs.rdi, 2, "the newest device answers first");
        // A read nobody handles returns zeros, even if the buffer held something.
        let mut data = [0xaa; 4];
        assert_eq!(bus.read(&access(0x12), &mut data), Outcome::Resume);
        assert_eq!(data, [0; 4]);
        // Unclaimed ports: writes ignored, reads zero, counted apart.
        let mut regs = CallRegs::default();
        assert_eq!(bus.write(&access(0x99), &[1], &mut regs), Outcome::Resume);
        assert_eq!(regs, CallRegs::default());
        assert_eq!(bus.counts(0x99), Some((1, 0)));
        assert_eq!(bus.counts(0x12), Some((2, 1)));
        assert_eq!(bus.counts(0x10), None, "not watched");
        assert_eq!(bus.totals(), (3, 1));
        bus.vm_ending();
        assert!(*low.ended.lock().unwrap());
    }
}
