//! The order of the guest's stores to a queue it produces (the deferred queue, a submission
//! ring), seen through successive looks of the checking host while it single-steps the vCPU
//! that produces into it (PVABI-DEFER-001, PVABI-RING-001): a "step window".
//!
//! A look ([`Look`]) is taken under the queue's lock, so that no consumption by the host is in
//! progress: the host's own consumer index, then the guest's `tail` (an atomic load), then the
//! entry slots (read after `tail`). Between two looks L1 and L2, an entry whose index was in
//! `[head, tail)` at L1 (the guest had published it) and still is at L2 (the host has not
//! consumed it) must not change: if its bytes differ, a store of the guest to the entry came
//! after the store of `tail` that published it, which is an entry written after its
//! publication (or rewritten after it: either way the entry the host consumes was not
//! completely written before its `tail` store). That holds whatever happened between the two
//! looks, so the check is sound however far apart they are; single-stepping only brings them
//! close enough to see a store that follows `tail` (one instruction apart at CPL0).
//!
//! What it cannot see: stores that land between the same two looks in either order (ring-3 code
//! takes no step on PVM, so a whole stretch of it lies between two looks), an entry the host
//! consumed before the late store (a host-polled poller that was awake), and a late store that
//! writes the bytes the slot already held, which changes nothing the host can read and so
//! nothing it consumes. A writer on another vCPU is fine as long as it orders its own stores:
//! the host reads `tail` before the slots, so an entry stored before `tail` is seen with it.

/// One look at a queue the guest produces.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Look {
    /// The host's own consumer index (the next entry it consumes).
    pub head: u32,
    /// The guest's `tail`, read before the slots.
    pub tail: u32,
    /// Every slot's bytes (`capacity * entry_size`), read after `tail`.
    pub slots: Vec<u8>,
    /// When it was taken: the watch's single-step count.
    pub step: u64,
}

/// A queue's shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    /// Entries.
    pub capacity: u32,
    /// Bytes per entry.
    pub entry_size: usize,
}

/// An entry the guest changed after publishing it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Changed {
    /// The entry's free-running index.
    pub index: u32,
    /// Its slot (`index` mod capacity).
    pub slot: u32,
    /// The step count of the first look that saw it published.
    pub published: u64,
    /// The step count of the look that saw it changed.
    pub seen: u64,
}

/// `a` is at or after `b` in free-running 32-bit index order.
fn at_or_after(a: u32, b: u32) -> bool {
    a.wrapping_sub(b) < 1 << 31
}

/// The looks at one registered queue, compared one after another.
#[derive(Clone, Debug)]
pub(crate) struct QueueWatch {
    /// What the queue is (its page, or a ring's generation): another key is another queue.
    pub key: u64,
    layout: Layout,
    prev: Option<Look>,
    /// Entries compared between two looks at least once (each counted once).
    pub compared: u32,
    /// The next index not yet counted in `compared`.
    counted_to: Option<u32>,
    /// The next index whose publication is not yet recorded in `published`.
    published_to: Option<u32>,
    /// Per slot: the step count of the first look that saw its current entry published.
    published: Vec<u64>,
    /// Indices already reported (one report per entry).
    reported: Vec<u32>,
}

impl QueueWatch {
    /// A watch of the queue `key`, with no look yet.
    pub fn new(key: u64, layout: Layout) -> QueueWatch {
        QueueWatch {
            key,
            layout,
            prev: None,
            compared: 0,
            counted_to: None,
            published_to: None,
            published: vec![0; layout.capacity as usize],
            reported: Vec::new(),
        }
    }

    /// `tail - head` of a look, if it is a valid occupancy (at most the capacity: a larger one
    /// is a malformed queue, which the host does not consume and this does not compare).
    fn occupancy(&self, look: &Look) -> Option<u32> {
        let n = look.tail.wrapping_sub(look.head);
        let whole = self.layout.capacity as usize * self.layout.entry_size;
        (n <= self.layout.capacity && look.slots.len() >= whole).then_some(n)
    }

    fn slot_bytes<'a>(&self, look: &'a Look, index: u32) -> &'a [u8] {
        let slot = (index % self.layout.capacity) as usize;
        let size = self.layout.entry_size;
        &look.slots[slot * size..(slot + 1) * size]
    }

    /// Compares `now` with the previous look: every entry published at the previous look and
    /// not consumed at this one whose bytes changed in between (each entry reported once).
    pub fn look(&mut self, now: Look) -> Vec<Changed> {
        let mut changed = Vec::new();
        if let (Some(prev), Some(n_now)) = (self.prev.as_ref(), self.occupancy(&now)) {
            if let Some(n_prev) = self.occupancy(prev) {
                for k in 0..n_prev {
                    let index = prev.head.wrapping_add(k);
                    // Consumed since (or no longer below `tail`): not compared.
                    if index.wrapping_sub(now.head) >= n_now {
                        continue;
                    }
                    if self.counted_to.is_none_or(|c| at_or_after(index, c)) {
                        self.compared = self.compared.saturating_add(1);
                        self.counted_to = Some(index.wrapping_add(1));
                    }
                    if self.slot_bytes(prev, index) != self.slot_bytes(&now, index)
                        && !self.reported.contains(&index)
                    {
                        self.reported.push(index);
                        let slot = index % self.layout.capacity;
                        changed.push(Changed {
                            index,
                            slot,
                            published: self.published[slot as usize],
                            seen: now.step,
                        });
                    }
                }
            }
        }
        if let Some(n_now) = self.occupancy(&now) {
            for k in 0..n_now {
                let index = now.head.wrapping_add(k);
                if self.published_to.is_none_or(|p| at_or_after(index, p)) {
                    self.published[(index % self.layout.capacity) as usize] = now.step;
                    self.published_to = Some(index.wrapping_add(1));
                }
            }
        }
        self.prev = Some(now);
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::{Changed, Layout, Look, QueueWatch};

    const LAYOUT: Layout = Layout {
        capacity: 4,
        entry_size: 8,
    };

    /// A look with `head`, `tail` and slot `s` holding bytes `fill[s]`.
    fn look(step: u64, head: u32, tail: u32, fill: [u8; 4]) -> Look {
        Look {
            head,
            tail,
            slots: fill.iter().flat_map(|&b| [b; 8]).collect(),
            step,
        }
    }

    fn run(looks: &[Look]) -> (Vec<Changed>, u32) {
        let mut w = QueueWatch::new(1, LAYOUT);
        let changed = looks.iter().flat_map(|l| w.look(l.clone())).collect();
        (changed, w.compared)
    }

    #[test]
    fn an_entry_written_before_its_tail_store_passes() {
        // Entry 0 written (step 1), then tail 1 (step 2), then other work.
        let (changed, compared) = run(&[
            look(0, 0, 0, [0; 4]),
            look(1, 0, 0, [7, 0, 0, 0]),
            look(2, 0, 1, [7, 0, 0, 0]),
            look(3, 0, 1, [7, 0, 0, 0]),
        ]);
        assert_eq!(changed, []);
        assert_eq!(compared, 1);
    }

    #[test]
    fn an_entry_written_after_its_tail_store_is_reported_once() {
        // tail 1 first (step 1), then the entry in two stores (steps 2 and 3).
        let (changed, compared) = run(&[
            look(0, 0, 0, [0; 4]),
            look(1, 0, 1, [0; 4]),
            look(2, 0, 1, [5, 0, 0, 0]),
            look(3, 0, 1, [7, 0, 0, 0]),
        ]);
        assert_eq!(
            changed,
            [Changed {
                index: 0,
                slot: 0,
                published: 1,
                seen: 2
            }]
        );
        assert_eq!(compared, 1);
    }

    #[test]
    fn both_stores_between_the_same_two_looks_show_nothing() {
        // Ring-3 code (no steps) wrote entry and tail in either order: indistinguishable.
        let (changed, _) = run(&[look(0, 0, 0, [0; 4]), look(9, 0, 1, [7, 0, 0, 0])]);
        assert_eq!(changed, []);
    }

    #[test]
    fn a_store_after_the_host_consumed_the_entry_is_not_a_violation() {
        // Published at step 1, consumed (host head 1) before the slot changed: the slot is
        // free again, and the guest may write it for index 4.
        let (changed, _) = run(&[
            look(0, 0, 0, [0; 4]),
            look(1, 0, 1, [7, 0, 0, 0]),
            look(2, 1, 1, [9, 0, 0, 0]),
            look(3, 1, 4, [9, 1, 2, 3]),
        ]);
        assert_eq!(changed, []);
    }

    #[test]
    fn a_store_of_the_bytes_already_there_cannot_be_seen() {
        // The late store writes what the slot held: nothing the host reads changes.
        let (changed, compared) = run(&[
            look(0, 0, 0, [7, 0, 0, 0]),
            look(1, 0, 1, [7, 0, 0, 0]),
            look(2, 0, 1, [7, 0, 0, 0]),
        ]);
        assert_eq!(changed, []);
        assert_eq!(compared, 1);
    }

    #[test]
    fn indices_wrap_and_slots_follow_them() {
        // head and tail near u32::MAX: index u32::MAX is slot 3, index 0 is slot 0.
        let h = u32::MAX - 1;
        let (changed, compared) = run(&[
            look(0, h, h, [0; 4]),
            look(1, h, h.wrapping_add(3), [0, 0, 1, 1]),
            look(2, h, h.wrapping_add(3), [4, 0, 1, 1]),
        ]);
        assert_eq!(
            changed,
            [Changed {
                index: 0,
                slot: 0,
                published: 1,
                seen: 2
            }]
        );
        assert_eq!(compared, 3);
    }

    #[test]
    fn a_malformed_queue_is_not_compared() {
        // tail - head beyond the capacity: the host runs none of it.
        let (changed, compared) = run(&[
            look(0, 0, 0, [0; 4]),
            look(1, 0, 9, [0; 4]),
            look(2, 0, 9, [1, 1, 1, 1]),
        ]);
        assert_eq!((changed, compared), (vec![], 0));
    }

    #[test]
    fn a_tail_moved_back_leaves_the_entries_above_it_alone() {
        let (changed, _) = run(&[
            look(0, 0, 0, [0; 4]),
            look(1, 0, 2, [1, 2, 0, 0]),
            look(2, 0, 1, [1, 5, 0, 0]),
        ]);
        assert_eq!(changed, []);
    }

    #[test]
    fn the_first_look_is_a_baseline_and_published_entries_count_from_it() {
        // An entry already published at the first look is watched from there.
        let (changed, _) = run(&[look(4, 0, 1, [1, 0, 0, 0]), look(5, 0, 1, [2, 0, 0, 0])]);
        assert_eq!(
            changed,
            [Changed {
                index: 0,
                slot: 0,
                published: 4,
                seen: 5
            }]
        );
    }
}
