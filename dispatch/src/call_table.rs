//! The configuration compiled into per-call lookups, and per-vCPU call counters.
//!
//! Built once when the dispatcher is created, so that check 1 ("known and implemented") is an
//! index into a table rather than a scan of the configuration, and counting a call is one
//! relaxed atomic add on the calling vCPU's own counters (no lock shared between vCPUs).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use pvabi_abi::calls::{self, CallDescriptor};
use pvabi_abi::status::Status;

use crate::config::HostConfig;
use crate::report::CallCount;
use crate::sync::lock;

const STATUSES: usize = Status::ALL.len();

/// One defined call code: its descriptor, whether this host implements it, and its dense
/// index into the counters.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Slot {
    pub descriptor: &'static CallDescriptor,
    pub implemented: bool,
    index: usize,
}

/// Every call code of the ABI, by code.
#[derive(Debug)]
pub(crate) struct CallTable {
    /// Indexed by call code (`family << 8 | function`); `None` for undefined codes.
    by_code: Vec<Option<Slot>>,
    /// Number of defined calls (the counters' width).
    calls: usize,
}

impl CallTable {
    pub fn new(config: &HostConfig) -> Self {
        let max = calls::all().map(|d| d.call.code()).max().unwrap_or(0) as usize;
        let mut by_code = vec![None; max + 1];
        let mut calls = 0;
        for (index, d) in calls::all().enumerate() {
            by_code[d.call.code() as usize] = Some(Slot {
                descriptor: d,
                implemented: config.implements(d.call),
                index,
            });
            calls = index + 1;
        }
        CallTable { by_code, calls }
    }

    /// The slot of `code`, if it is a defined call.
    #[inline]
    pub fn get(&self, code: u64) -> Option<&Slot> {
        let i = usize::try_from(code).ok()?;
        self.by_code.get(i)?.as_ref()
    }
}

/// How often each call returned each status, for one vCPU (calls made by it, and entries of
/// its batches, deferred queue and ring). Codes that are not defined calls are counted in a
/// map behind a lock: only a confused or hostile guest makes them.
#[derive(Debug)]
pub(crate) struct CallCounters {
    /// `calls * STATUSES` counters, row by call index.
    known: Box<[AtomicU64]>,
    unknown: Mutex<BTreeMap<u64, CallCount>>,
}

impl CallCounters {
    pub fn new(table: &CallTable) -> Self {
        CallCounters {
            known: (0..table.calls * STATUSES)
                .map(|_| AtomicU64::new(0))
                .collect(),
            unknown: Mutex::new(BTreeMap::new()),
        }
    }

    #[inline]
    pub fn count(&self, table: &CallTable, code: u64, status: Status) {
        match table.get(code) {
            Some(slot) => {
                self.known[slot.index * STATUSES + status as usize].fetch_add(1, Ordering::Relaxed);
            }
            None => {
                let mut unknown = lock(&self.unknown);
                let c = unknown.entry(code).or_default();
                c.total += 1;
                c.by_status[status as usize] += 1;
            }
        }
    }

    /// Adds these counters into `into` (raw code -> counts), leaving out calls never made.
    pub fn add_to(&self, table: &CallTable, into: &mut BTreeMap<u64, CallCount>) {
        for slot in table.by_code.iter().flatten() {
            let row = &self.known[slot.index * STATUSES..(slot.index + 1) * STATUSES];
            let total: u64 = row.iter().map(|c| c.load(Ordering::Relaxed)).sum();
            if total == 0 {
                continue;
            }
            let c = into
                .entry(u64::from(slot.descriptor.call.code()))
                .or_default();
            c.total += total;
            for (s, n) in row.iter().enumerate() {
                c.by_status[s] += n.load(Ordering::Relaxed);
            }
        }
        for (&code, n) in lock(&self.unknown).iter() {
            let c = into.entry(code).or_default();
            c.total += n.total;
            for (s, k) in n.by_status.iter().enumerate() {
                c.by_status[s] += k;
            }
        }
    }
}
