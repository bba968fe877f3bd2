//! The order of the guest's reads of the entries of a queue the host produces (the event
//! queue, a completion ring) and its stores of `head` (PVABI-EVT-010, PVABI-RING-006), seen
//! access by access on a *watched page*: the VMM takes the queue's page out of the guest's
//! memory map, so that every guest load and store to it exits and is reported
//! ([`Machine::watch_pages`](crate::Machine::watch_pages),
//! [`Dispatcher::watched_access`](crate::Dispatcher::watched_access)), in the order the vCPU
//! made them.
//!
//! The host tells the watch when it has written an entry, before the `tail` store that
//! publishes it ([`ConsumeWatch::published`]): a guest that reads the entry after seeing that
//! `tail` reads it after the watch knows it. What counts:
//!
//! - **read**: the entry of index `i` counts as read once one guest load since its publication
//!   overlapped any of its bytes. Not all of them: a guest may ignore fields it does not need
//!   (an event's `source`, a completion's unused `results`), and a rule about reading *before*
//!   the store does not ask for every byte.
//! - **a store of `head`** (a store overlapping its 4 bytes; its new value is the stored bytes
//!   over the old value, so a narrower store works too) that moves it forward by at most the
//!   capacity passes the indices from the old value up to the new one. Each of them that the
//!   host had published is *checked* (an exercise of the rule) and *released*; one not read by
//!   then is a violation ([`Finding::Unread`]). Indices not published (a `head` past `tail`)
//!   are another rule's (EVT-025, RING-029), and a store that moves `head` back or by more than
//!   the capacity checks nothing.
//! - **a load of a released entry**, before the host publishes that slot again, is a violation
//!   too ([`Finding::ReadAfterRelease`]): whatever the guest read before, what it reads now it
//!   reads after the store that gave the slot back, while the host may be writing the next
//!   entry there (a guest that reads `kind`, stores `head`, then reads `data`).
//!
//! What it cannot see: accesses before the watch began or after it ended, and entries the host
//! published before the watch knew of the queue (neither checked nor a violation); a read by
//! another vCPU counts like the owner's.

/// A queue's shape in its page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    /// Entries.
    pub capacity: u32,
    /// Bytes per entry.
    pub entry_size: u64,
    /// Where the entries start in the page.
    pub entries_at: u64,
    /// Where `head` (a 32-bit index) is in the page.
    pub head_at: u64,
}

/// What a watch found wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Finding {
    /// A store of `head` moved past entry `index` (in `slot`), which the guest had not read
    /// since the host published it; `head` is the value stored.
    Unread { index: u32, slot: u32, head: u32 },
    /// The guest read entry `index` (in `slot`) after its store of `head` had moved past it.
    ReadAfterRelease { index: u32, slot: u32 },
}

/// The entry a slot holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    index: u32,
    read: bool,
    released: bool,
    /// A read after release was reported (one report per entry).
    reported: bool,
}

/// The watch of one queue the guest consumes.
#[derive(Clone, Debug)]
pub(crate) struct ConsumeWatch {
    layout: Layout,
    /// `head` as the guest last stored it (at first: as the host left it).
    head: u32,
    slots: Vec<Option<Entry>>,
    /// Entries a store of `head` moved past, each counted once.
    pub checked: u32,
}

impl ConsumeWatch {
    /// A watch of a queue of `layout` whose `head` is `head` now.
    pub fn new(layout: Layout, head: u32) -> ConsumeWatch {
        ConsumeWatch {
            layout,
            head,
            slots: vec![None; layout.capacity as usize],
            checked: 0,
        }
    }

    /// The host has written entry `index` and is about to publish it (its `tail` store comes
    /// after this).
    pub fn published(&mut self, index: u32) {
        let slot = (index % self.layout.capacity) as usize;
        self.slots[slot] = Some(Entry {
            index,
            read: false,
            released: false,
            reported: false,
        });
    }

    /// A guest access at `offset` in the page: a load that returned `data`, or a store of
    /// `data`. Returns what it showed wrong.
    pub fn access(&mut self, offset: u64, data: &[u8], write: bool) -> Vec<Finding> {
        let len = data.len() as u64;
        let end = offset.saturating_add(len);
        if write {
            let (h0, h1) = (self.layout.head_at, self.layout.head_at + 4);
            if offset < h1 && end > h0 {
                let mut bytes = self.head.to_le_bytes();
                for (i, b) in data.iter().enumerate() {
                    let at = offset + i as u64;
                    if (h0..h1).contains(&at) {
                        bytes[(at - h0) as usize] = *b;
                    }
                }
                return self.store_head(u32::from_le_bytes(bytes));
            }
            return Vec::new();
        }
        let l = self.layout;
        let area_end = l.entries_at + u64::from(l.capacity) * l.entry_size;
        let (from, to) = (offset.max(l.entries_at), end.min(area_end));
        if from >= to {
            return Vec::new();
        }
        let first = (from - l.entries_at) / l.entry_size;
        let last = (to - 1 - l.entries_at) / l.entry_size;
        let mut found = Vec::new();
        for slot in first..=last {
            if let Some(e) = self.slots[slot as usize].as_mut() {
                if !e.released {
                    e.read = true;
                } else if !e.reported {
                    e.reported = true;
                    found.push(Finding::ReadAfterRelease {
                        index: e.index,
                        slot: slot as u32,
                    });
                }
            }
        }
        found
    }

    fn store_head(&mut self, new: u32) -> Vec<Finding> {
        let old = std::mem::replace(&mut self.head, new);
        let moved = new.wrapping_sub(old);
        let mut found = Vec::new();
        if moved == 0 || moved > self.layout.capacity {
            return found;
        }
        for k in 0..moved {
            let index = old.wrapping_add(k);
            let slot = index % self.layout.capacity;
            match self.slots[slot as usize].as_mut() {
                Some(e) if e.index == index && !e.released => {
                    e.released = true;
                    self.checked = self.checked.saturating_add(1);
                    if !e.read {
                        found.push(Finding::Unread {
                            index,
                            slot,
                            head: new,
                        });
                    }
                }
                _ => {}
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::{ConsumeWatch, Finding, Layout};

    /// 4 entries of 16 bytes from offset 64, `head` at offset 0.
    const LAYOUT: Layout = Layout {
        capacity: 4,
        entry_size: 16,
        entries_at: 64,
        head_at: 0,
    };

    fn entry(i: u64) -> u64 {
        64 + (i % 4) * 16
    }

    /// A sequence of guest accesses: `(offset, data, write)`.
    fn run(w: &mut ConsumeWatch, accesses: &[(u64, &[u8], bool)]) -> Vec<Finding> {
        accesses
            .iter()
            .flat_map(|(off, data, write)| w.access(*off, data, *write))
            .collect()
    }

    const HEAD1: &[u8] = &1u32.to_le_bytes();
    const HEAD2: &[u8] = &2u32.to_le_bytes();
    const Q8: &[u8] = &[0; 8];

    #[test]
    fn reading_the_entry_then_storing_head_passes() {
        let mut w = ConsumeWatch::new(LAYOUT, 0);
        w.published(0);
        w.published(1);
        // tail read (offset 4), entry 0 in two loads, head 1, entry 1 in one load, head 2.
        let found = run(
            &mut w,
            &[
                (4, &[2, 0, 0, 0], false),
                (entry(0), Q8, false),
                (entry(0) + 8, Q8, false),
                (0, HEAD1, true),
                (entry(1) + 4, &[0; 4], false),
                (0, HEAD2, true),
            ],
        );
        assert_eq!(found, []);
        assert_eq!(w.checked, 2);
    }

    #[test]
    fn storing_head_before_reading_the_entry_is_found_and_the_late_read_too() {
        let mut w = ConsumeWatch::new(LAYOUT, 0);
        w.published(0);
        let found = run(
            &mut w,
            &[
                (4, &[1, 0, 0, 0], false),
                (0, HEAD1, true),
                (entry(0), Q8, false),
                (entry(0) + 8, Q8, false),
            ],
        );
        assert_eq!(
            found,
            [
                Finding::Unread {
                    index: 0,
                    slot: 0,
                    head: 1
                },
                Finding::ReadAfterRelease { index: 0, slot: 0 },
            ],
            "one report of each, not one per load"
        );
        assert_eq!(w.checked, 1);
    }

    #[test]
    fn reading_one_field_before_and_another_after_the_store_is_a_late_read() {
        let mut w = ConsumeWatch::new(LAYOUT, 0);
        w.published(0);
        let found = run(
            &mut w,
            &[
                (entry(0), &[0; 4], false),
                (0, HEAD1, true),
                (entry(0) + 8, Q8, false),
            ],
        );
        assert_eq!(found, [Finding::ReadAfterRelease { index: 0, slot: 0 }]);
    }

    #[test]
    fn one_store_past_several_entries_checks_each() {
        let mut w = ConsumeWatch::new(LAYOUT, 0);
        for i in 0..3 {
            w.published(i);
        }
        // Entries 0 and 2 read (one 8-byte load each), entry 1 not; head 3 at once.
        let found = run(
            &mut w,
            &[
                (entry(0), Q8, false),
                (entry(2), Q8, false),
                (0, &3u32.to_le_bytes(), true),
            ],
        );
        assert_eq!(
            found,
            [Finding::Unread {
                index: 1,
                slot: 1,
                head: 3
            }]
        );
        assert_eq!(w.checked, 3);
    }

    #[test]
    fn a_load_spanning_two_entries_reads_both_and_a_header_load_reads_none() {
        let mut w = ConsumeWatch::new(LAYOUT, 0);
        w.published(0);
        w.published(1);
        let found = run(
            &mut w,
            &[
                (0, &[0; 64], false),
                (entry(0) + 12, Q8, false),
                (0, HEAD2, true),
            ],
        );
        assert_eq!(found, []);
        // Only a header load: entry 0 unread.
        let mut w = ConsumeWatch::new(LAYOUT, 0);
        w.published(0);
        let found = run(&mut w, &[(0, &[0; 64], false), (0, HEAD1, true)]);
        assert_eq!(found.len(), 1, "{found:?}");
    }

    #[test]
    fn a_read_before_the_host_published_the_entry_does_not_count() {
        let mut w = ConsumeWatch::new(LAYOUT, 0);
        let found = run(&mut w, &[(entry(0), Q8, false)]);
        assert_eq!(found, []);
        w.published(0);
        let found = run(&mut w, &[(0, HEAD1, true)]);
        assert_eq!(
            found,
            [Finding::Unread {
                index: 0,
                slot: 0,
                head: 1
            }]
        );
    }

    #[test]
    fn head_stored_byte_by_byte_and_wrapping_indices() {
        // head near u32::MAX: indices u32::MAX - 1 and u32::MAX are slots 2 and 3.
        let start = u32::MAX - 1;
        let mut w = ConsumeWatch::new(LAYOUT, start);
        w.published(start);
        w.published(start.wrapping_add(1));
        let found = run(&mut w, &[(entry(2), Q8, false), (entry(3), Q8, false)]);
        assert_eq!(found, []);
        // head 0 (= start + 2) stored as four single bytes: each store makes a value behind
        // the old one or more than the capacity ahead (0xffff_ff00, 0xffff_0000, 0xff00_0000,
        // then 0), so none passes an entry.
        let found = run(
            &mut w,
            &[
                (0, &[0], true),
                (1, &[0], true),
                (2, &[0], true),
                (3, &[0], true),
            ],
        );
        assert_eq!(found, []);
        assert_eq!(
            w.checked, 0,
            "byte stores that move head back or far check nothing"
        );
        // A 2-byte store over the low half: from 0 to 2.
        w.published(0);
        w.published(1);
        let found = run(&mut w, &[(entry(0), Q8, false), (0, &[2, 0], true)]);
        assert_eq!(
            found,
            [Finding::Unread {
                index: 1,
                slot: 1,
                head: 2
            }]
        );
        assert_eq!(w.checked, 2);
    }

    #[test]
    fn head_past_tail_or_backwards_checks_nothing() {
        let mut w = ConsumeWatch::new(LAYOUT, 0);
        w.published(0);
        // head 2: index 0 published and read, index 1 never published (EVT-025's case).
        let found = run(&mut w, &[(entry(0), Q8, false), (0, HEAD2, true)]);
        assert_eq!(found, []);
        assert_eq!(w.checked, 1);
        // Back to 0, then a wild value: nothing.
        let found = run(
            &mut w,
            &[(0, &[0; 4], true), (0, &100u32.to_le_bytes(), true)],
        );
        assert_eq!(found, []);
        assert_eq!(w.checked, 1);
    }

    #[test]
    fn a_slot_published_again_is_a_new_entry() {
        let mut w = ConsumeWatch::new(LAYOUT, 0);
        w.published(0);
        assert_eq!(run(&mut w, &[(entry(0), Q8, false), (0, HEAD1, true)]), []);
        // Index 4 reuses slot 0: not read yet, and a read of it is no late read of index 0.
        w.published(1);
        w.published(4);
        let found = run(
            &mut w,
            &[
                (entry(1), Q8, false),
                (0, HEAD2, true),
                (entry(4), Q8, false),
                (0, &5u32.to_le_bytes(), true),
            ],
        );
        assert_eq!(found, [], "indices 2 and 3 were never published");
        assert_eq!(w.checked, 3);
    }

    #[test]
    fn stores_to_entries_and_other_fields_are_not_head_stores() {
        let mut w = ConsumeWatch::new(LAYOUT, 0);
        w.published(0);
        let found = run(
            &mut w,
            &[
                (entry(0), Q8, true),
                (12, &[0; 4], true),
                (4, &[9; 4], true),
            ],
        );
        assert_eq!(found, []);
        assert_eq!(w.checked, 0);
    }
}
