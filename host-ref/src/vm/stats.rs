//! KVM's own per-vCPU statistics, read from the binary stats file descriptor
//! (`KVM_GET_STATS_FD`, KVM_CAP_BINARY_STATS_FD): the counters a benchmark cross-checks its
//! own exit counts against.
//!
//! The file starts with a `kvm_stats_header`; at `desc_offset` follow `num_desc`
//! descriptors (`kvm_stats_desc`, 16 bytes, then a NUL-padded name of `name_size` bytes),
//! and at `data_offset + desc.offset` each statistic's `size` 64-bit values. The layout is
//! read once; afterwards one `pread` of the data block takes a snapshot, from any thread,
//! while the vCPU runs.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::FileExt;

use kvm_bindings::{kvm_stats_desc, kvm_stats_header, KVMIO};

/// The fixed part of a `kvm_stats_desc` (before its name), as a `Copy` type.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct DescHead {
    flags: u32,
    exponent: i16,
    size: u16,
    offset: u32,
    bucket_size: u32,
}

const _: () = assert!(std::mem::size_of::<DescHead>() == std::mem::size_of::<kvm_stats_desc>());
use kvm_ioctls::VcpuFd;
use vmm_sys_util::ioctl::ioctl;

vmm_sys_util::ioctl_io_nr!(KVM_GET_STATS_FD, KVMIO, 0xce);

/// The counters a snapshot keeps (the generic vCPU statistics every x86 KVM has).
pub const STAT_NAMES: [&str; 6] = [
    "exits",
    "io_exits",
    "signal_exits",
    "halt_exits",
    "irq_window_exits",
    "irq_injections",
];

/// One vCPU's stats file, with where each of [`STAT_NAMES`] lives in its data block.
#[derive(Debug)]
pub(super) struct StatsFile {
    file: File,
    data_offset: u64,
    data_len: usize,
    /// Per name of [`STAT_NAMES`]: the byte offset of its (first) value in the data block.
    offsets: [Option<usize>; STAT_NAMES.len()],
}

/// KVM's counters of one vCPU at one moment, by [`STAT_NAMES`] (`None`: this KVM does not
/// have that statistic).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvmExitStats {
    /// Values in the order of [`STAT_NAMES`].
    pub values: [Option<u64>; STAT_NAMES.len()],
}

impl KvmExitStats {
    /// Every counter known and 0: where sums of differences start.
    pub const fn zero() -> KvmExitStats {
        KvmExitStats {
            values: [Some(0); STAT_NAMES.len()],
        }
    }

    /// The value of the statistic `name` (one of [`STAT_NAMES`]).
    pub fn get(&self, name: &str) -> Option<u64> {
        STAT_NAMES
            .iter()
            .position(|n| *n == name)
            .and_then(|i| self.values[i])
    }

    /// Every exit into KVM (`exits`), when known.
    pub fn exits(&self) -> Option<u64> {
        self.values[0]
    }

    /// Exits for port I/O (`io_exits`): both those KVM answered itself (an ioeventfd) and
    /// those it handed to the VMM.
    pub fn io_exits(&self) -> Option<u64> {
        self.values[1]
    }

    /// The sum of two snapshots (of two vCPUs, say).
    pub fn add(&self, other: &KvmExitStats) -> KvmExitStats {
        let mut values = self.values;
        for (v, o) in values.iter_mut().zip(other.values) {
            *v = v.zip(o).map(|(a, b)| a.wrapping_add(b));
        }
        KvmExitStats { values }
    }

    /// `self - earlier`, counter by counter.
    pub fn since(&self, earlier: &KvmExitStats) -> KvmExitStats {
        let mut values = self.values;
        for (v, o) in values.iter_mut().zip(earlier.values) {
            *v = v.zip(o).map(|(a, b)| a.wrapping_sub(b));
        }
        KvmExitStats { values }
    }
}

fn read_struct<T: Copy + Default>(file: &File, at: u64) -> Option<T> {
    let mut value = T::default();
    // SAFETY: `value` is a plain-old-data kernel ABI struct (integers only, every bit
    // pattern valid); the slice covers exactly its bytes and lives as long as the borrow.
    let bytes = unsafe {
        std::slice::from_raw_parts_mut(
            (&mut value as *mut T).cast::<u8>(),
            std::mem::size_of::<T>(),
        )
    };
    file.read_exact_at(bytes, at).ok()?;
    Some(value)
}

impl StatsFile {
    /// Opens `fd`'s stats file and finds the counters in it (`None`: this KVM has no
    /// binary stats, or the layout is not one this code understands).
    pub(super) fn open(fd: &VcpuFd) -> Option<StatsFile> {
        // SAFETY: KVM_GET_STATS_FD takes no argument and returns a new file descriptor
        // (or -1); `fd` is a live vCPU file.
        let raw = unsafe { ioctl(fd, KVM_GET_STATS_FD()) };
        if raw < 0 {
            return None;
        }
        // SAFETY: `raw` is a fresh descriptor nobody else owns; the File closes it.
        let file = unsafe { File::from_raw_fd(raw) };
        debug_assert!(file.as_raw_fd() == raw);
        let header: kvm_stats_header = read_struct(&file, 0)?;
        let desc_size = std::mem::size_of::<kvm_stats_desc>() as u64 + u64::from(header.name_size);
        let mut offsets = [None; STAT_NAMES.len()];
        let mut data_len = 0usize;
        for i in 0..u64::from(header.num_desc) {
            let at = u64::from(header.desc_offset) + i * desc_size;
            let desc: DescHead = read_struct(&file, at)?;
            let mut name = vec![0u8; header.name_size as usize];
            file.read_exact_at(&mut name, at + std::mem::size_of::<kvm_stats_desc>() as u64)
                .ok()?;
            let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
            let name = &name[..end];
            let offset = desc.offset as usize;
            data_len = data_len.max(offset + usize::from(desc.size) * 8);
            if let Some(k) = STAT_NAMES.iter().position(|n| n.as_bytes() == name) {
                offsets[k] = Some(offset);
            }
        }
        Some(StatsFile {
            file,
            data_offset: u64::from(header.data_offset),
            data_len,
            offsets,
        })
    }

    /// A snapshot of the counters (all `None` if the read fails).
    pub(super) fn read(&self) -> KvmExitStats {
        let mut data = vec![0u8; self.data_len];
        if self
            .file
            .read_exact_at(&mut data, self.data_offset)
            .is_err()
        {
            return KvmExitStats::default();
        }
        let mut values = [None; STAT_NAMES.len()];
        for (v, off) in values.iter_mut().zip(self.offsets) {
            *v = off
                .and_then(|o| data.get(o..o + 8))
                .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()));
        }
        KvmExitStats { values }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::testing::kvm_or_skip;

    /// The names and values a fresh vCPU's stats file has (printed), and that the counters
    /// this module keeps are among them.
    #[test]
    fn a_vcpu_stats_file_has_the_exit_counters() {
        if !kvm_or_skip("a_vcpu_stats_file_has_the_exit_counters") {
            return;
        }
        let kvm = kvm_ioctls::Kvm::new().unwrap();
        let vm = kvm.create_vm().unwrap();
        let vcpu = vm.create_vcpu(0).unwrap();
        let Some(file) = StatsFile::open(&vcpu) else {
            println!("SKIP: this KVM has no binary stats fd");
            return;
        };
        let stats = file.read();
        for (name, value) in STAT_NAMES.iter().zip(stats.values) {
            println!("{name} = {value:?}");
        }
        assert!(stats.exits().is_some(), "{stats:?}");
        assert!(stats.io_exits().is_some(), "{stats:?}");
    }
}
