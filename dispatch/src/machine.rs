//! What the dispatcher needs from the machine it serves, so that it does not depend on KVM.

use pvabi_abi::status::Status;
use pvabi_abi::vcpu::VcpuStartState;
use vm_memory::GuestMemoryBackend;

/// The machine under the dispatcher: guest RAM and the few vCPU operations calls need.
///
/// A VMM implements it over its own VM handle (the reference host does so over KVM). Every
/// method may be called from any thread (vCPU threads and the dispatcher's own timer,
/// time-page and ring-poller threads).
pub trait Machine: Send + Sync + 'static {
    /// The VMM's guest-memory type: any [`vm_memory`] backend (`GuestMemoryMmap`, or the
    /// VMM's own implementation).
    type Memory: GuestMemoryBackend + Send + Sync;

    /// Guest RAM. The dispatcher accesses it only through `vm_memory`'s `Bytes` (copies,
    /// atomic loads and stores), never through references into it: the vCPUs write it
    /// concurrently.
    fn memory(&self) -> &Self::Memory;

    /// The number of vCPUs.
    fn vcpu_count(&self) -> u32;

    /// Delivers interrupt `vector` to `vcpu` as soon as it can take it.
    fn raise_interrupt(&self, vcpu: u32, vector: u8);

    /// Starts parked vCPU `vcpu` with `state` (already validated by the dispatcher). An
    /// error is the status the guest gets (INVALID_STATE if it runs, INVALID_PARAMETER for a
    /// page-table root the machine refuses).
    fn start_vcpu(&self, vcpu: u32, state: &VcpuStartState) -> Result<(), Status>;

    /// Flushes the TLB of `target` (`None`: every vCPU, including those halted, stopped or
    /// not started, each before it next runs guest code: PVABI-MEM-016).
    fn flush_tlb(&self, target: Option<u32>);

    /// The guest gave these pages (4 KiB-aligned guest-physical addresses, all in RAM) back:
    /// the machine may drop their backing. The dispatcher zeroes them again when they are
    /// reclaimed, so a machine may also do nothing.
    fn release_pages(&self, gpas: &[u64]);

    /// For the checking host (PVABI-MEM-006): which of the pages at `gpas` (4 KiB-aligned
    /// guest-physical addresses) the guest wrote since the previous call of this method (the
    /// first call: since the machine started), or `None` (the default) if the machine cannot
    /// see guest writes. Each call starts the next interval for every page, not only those of
    /// `gpas`. The host's own writes to guest memory do not count. The dispatcher calls it
    /// only in checking mode.
    fn guest_written_pages(&self, _gpas: &[u64]) -> Option<Vec<u64>> {
        None
    }

    /// For the checking host (PVABI-EVT-010, PVABI-RING-006): from now on, makes every guest
    /// access to the `pages` pages from `gpa` (4 KiB-aligned, in RAM) reach
    /// [`Dispatcher::watched_access`](crate::Dispatcher::watched_access), in the order each vCPU
    /// makes them and before the vCPU goes on, while the access itself behaves as before.
    /// Returns whether it does; `false` (the default) if the machine cannot watch pages. The
    /// dispatcher calls it only in checking mode, for pages it owns, from any thread (a vCPU's
    /// own call included).
    fn watch_pages(&self, _gpa: u64, _pages: u64) -> bool {
        false
    }

    /// Ends [`watch_pages`](Self::watch_pages) for those pages (the default does nothing).
    fn unwatch_pages(&self, _gpa: u64, _pages: u64) {}

    /// The vCPUs' time-stamp counter now, read without stopping any vCPU, or `None` (the
    /// default) if the machine cannot read it or the counters do not advance at one constant
    /// rate from a common origin on every vCPU (PVABI-TIME-011). With `Some`, the dispatcher
    /// sets `TIME_PAGE_TSC_VALID` and interpolation fields in the time page. The value must
    /// be no later than the TSC any vCPU reads after this returns.
    fn guest_tsc(&self) -> Option<GuestTsc> {
        None
    }

    /// A test guest asked, from vCPU `vcpu`, for host event `event`, and the configuration
    /// says this host performs it ([`HostConfig::host_events`](crate::HostConfig::host_events)).
    /// Called on the vCPU's thread during its CONSOLE_WRITE. A machine that will perform it
    /// does so before `vcpu` runs guest code again, pauses every vCPU for it, and calls
    /// [`Dispatcher::host_event_performed`](crate::Dispatcher::host_event_performed) before
    /// any vCPU runs guest code again; it returns whether it will. The default performs
    /// nothing.
    fn request_host_event(&self, _vcpu: u32, _event: crate::HostEvent) -> bool {
        false
    }
}

/// A reading of the vCPUs' time-stamp counter ([`Machine::guest_tsc`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestTsc {
    /// The counter's value at the moment of the call.
    pub tsc: u64,
    /// The counter's nominal rate in Hz (not 0). The dispatcher refines it by measurement.
    pub hz: u64,
}
