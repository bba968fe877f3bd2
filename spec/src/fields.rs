//! What each structure field means, for the structure tables.
//!
//! `pvabi-abi`'s layout descriptions carry names, offsets, sizes and types but no prose, so the
//! meaning of each field lives here. A test checks that this table covers every field of every
//! structure in `pvabi_abi::layout::STRUCTS` and nothing else.

/// `(structure, field, who writes it, meaning)`.
pub(crate) const FIELD_DOCS: &[(&str, &str, &str, &str)] = &[
    ("TimePage", "sequence", "host", "Sequence lock: odd while the host updates the page, even when the page is consistent."),
    ("TimePage", "flags", "host", "`TIME_PAGE_*` flags ({{pvabi:TIME_PAGE_TSC_VALID}}: `TIME_PAGE_TSC_VALID`)."),
    ("TimePage", "monotonic_ns", "host", "Monotonic nanoseconds at `tsc_timestamp`."),
    ("TimePage", "tsc_timestamp", "host", "The TSC value at the last update."),
    ("TimePage", "wallclock_sec", "host", "Wall-clock seconds since the Unix epoch at `tsc_timestamp`."),
    ("TimePage", "wallclock_nsec", "host", "Nanoseconds part of the wall clock, below one second."),
    ("TimePage", "tsc_shift", "host", "Shift applied to a TSC delta before the multiplication; negative values shift right."),
    ("TimePage", "tsc_mul", "host", "Multiplier, in units of 2<sup>-32</sup> ns per shifted TSC tick."),
    ("TimePage", "reserved0", "host", "Reserved; the host writes 0."),
    ("TimePage", "reserved", "host", "Reserved; the host writes 0."),
    ("StealTimePage", "sequence", "host", "Sequence lock: odd while the host updates the page, even when the page is consistent."),
    ("StealTimePage", "flags", "host", "Reserved; the host writes 0."),
    ("StealTimePage", "steal_ns", "host", "Nanoseconds the vCPU was ready to run but the host ran something else, since registration; never decreases."),
    ("StealTimePage", "preemptions", "host", "How many times the host held the vCPU up (each exit it handled for it), since registration."),
    ("StealTimePage", "reserved", "host", "Reserved; the host writes 0."),
    ("TimePageV2", "sequence", "host", "Sequence lock, 64 bits wide: odd while the host updates the page."),
    ("TimePageV2", "monotonic_ns", "host", "Monotonic nanoseconds at `tsc_timestamp`."),
    ("TimePageV2", "wallclock_ns", "host", "Wall-clock nanoseconds since the Unix epoch at `tsc_timestamp` (one count, not seconds and nanoseconds)."),
    ("TimePageV2", "tsc_timestamp", "host", "The TSC value at the last update."),
    ("TimePageV2", "tsc_mul", "host", "Multiplier, in units of 2<sup>-32</sup> ns per TSC tick (64 bits, no shift)."),
    ("TimePageV2", "flags", "host", "`TIME_PAGE_V2_*` flags."),
    ("TimePageV2", "reserved0", "host", "Reserved; the host writes 0."),
    ("TimePageV2", "reserved", "host", "Reserved; the host writes 0."),
    ("EventQueueHeader", "head", "guest", "Index of the next entry the guest will consume."),
    ("EventQueueHeader", "tail", "host", "Index of the next entry the host will write."),
    ("EventQueueHeader", "capacity", "host", "Number of entry slots ({{pvabi:EVENT_QUEUE_CAPACITY}})."),
    ("EventQueueHeader", "interrupt_pending", "both", "The host sets it to 1 when it raises the queue's interrupt; the guest writes 0 to re-arm."),
    ("EventQueueHeader", "dropped", "host", "Events dropped because the queue was full (wraps)."),
    ("EventQueueHeader", "reserved", "host", "Reserved; the host writes 0 and the guest does not write."),
    ("Event", "kind", "host", "An `EventKind` value."),
    ("Event", "source", "host", "The vCPU the event came from (for TIMER, the vCPU that owns the timer)."),
    ("Event", "data", "host", "Kind-specific data."),
    ("VcpuStartState", "rip", "guest", "Instruction pointer at entry."),
    ("VcpuStartState", "rsp", "guest", "Stack pointer at entry."),
    ("VcpuStartState", "arg", "guest", "The value of `rdi` at entry."),
    ("VcpuStartState", "cr3", "guest", "Page-table root; 0 selects the page tables the boot vCPU started with."),
    ("VcpuStartState", "flags", "guest", "Reserved; must be 0."),
    ("VcpuStartState", "reserved", "guest", "Reserved; must be 0."),
    ("MulticallEntry", "call", "guest", "The call code."),
    ("MulticallEntry", "status", "host", "The entry's status, written when the entry is processed."),
    ("MulticallEntry", "flags", "guest", "Reserved; must be 0."),
    ("MulticallEntry", "reserved", "guest", "Reserved; must be 0."),
    ("MulticallEntry", "args", "guest", "Arguments `a0` to `a5`."),
    ("MulticallEntry", "results", "host", "Results `r0` to `r3`; unspecified unless `status` is SUCCESS."),
    ("MulticallPage", "entries", "both", "Entries 42 × *k* to 42 × *k* + 41 of the batch, for the page at position *k* of the page list; on the last page only the batch's remaining entries are read."),
    ("MulticallPage", "unused", "nobody", "Not part of the batch: the host neither reads nor writes it."),
    ("DeferredQueueHeader", "head", "host", "Index of the next entry the host will run."),
    ("DeferredQueueHeader", "tail", "guest", "Index of the next entry the guest will write."),
    ("DeferredQueueHeader", "capacity", "host", "Number of entry slots ({{pvabi:DEFERRED_QUEUE_CAPACITY}})."),
    ("DeferredQueueHeader", "error_count", "host", "Entries that failed since the queue was registered (wraps)."),
    ("DeferredQueueHeader", "first_error_index", "host", "Queue index of the first entry that failed; valid while `error_count` is not 0."),
    ("DeferredQueueHeader", "first_error_status", "host", "Status of the first entry that failed; valid while `error_count` is not 0."),
    ("DeferredQueueHeader", "reserved", "host", "Reserved; the host writes 0 and the guest does not write."),
    ("DeferredEntry", "call", "guest", "The call code."),
    ("DeferredEntry", "flags", "guest", "Reserved; must be 0."),
    ("DeferredEntry", "args", "guest", "Arguments `a0` to `a2`; the call's other arguments are 0."),
    ("RingSetup", "sq_page", "guest", "Guest-physical address of the submission-ring page (page-aligned)."),
    ("RingSetup", "cq_page", "guest", "Guest-physical address of the completion-ring page (page-aligned)."),
    ("RingSetup", "mode", "guest", "A `RingMode` value."),
    ("RingSetup", "flags", "guest", "`RING_*` flags ({{pvabi:RING_COMPLETION_EVENTS}}: `RING_COMPLETION_EVENTS`); other bits must be 0."),
    ("RingSetup", "reserved", "guest", "Reserved; must be 0."),
    ("RingHeader", "head", "consumer", "Consumer index: the host in the submission ring, the guest in the completion ring."),
    ("RingHeader", "tail", "producer", "Producer index: the guest in the submission ring, the host in the completion ring."),
    ("RingHeader", "capacity", "host", "Number of entry slots ({{pvabi:SQ_CAPACITY}} in the submission ring, {{pvabi:CQ_CAPACITY}} in the completion ring)."),
    ("RingHeader", "flags", "host", "Submission ring: {{pvabi:SQ_NEED_WAKEUP}} is `SQ_NEED_WAKEUP`. Completion ring: 0."),
    ("RingHeader", "dropped", "host", "Submissions the host could not read as entries and skipped (wraps)."),
    ("RingHeader", "reserved", "host", "Reserved; the host writes 0 and the guest does not write."),
    ("SubmissionEntry", "user_data", "guest", "Opaque; copied to the completion."),
    ("SubmissionEntry", "call", "guest", "The call code."),
    ("SubmissionEntry", "flags", "guest", "Reserved; must be 0."),
    ("SubmissionEntry", "args", "guest", "Arguments `a0` to `a5`."),
    ("CompletionEntry", "user_data", "host", "The submission's `user_data`."),
    ("CompletionEntry", "status", "host", "The call's status."),
    ("CompletionEntry", "reserved", "host", "Reserved; the host writes 0."),
    ("CompletionEntry", "results", "host", "Results `r0` to `r3`; unspecified unless `status` is SUCCESS."),
];

/// The `(writer, meaning)` of a field, if documented.
pub(crate) fn field_doc(structure: &str, field: &str) -> Option<(&'static str, &'static str)> {
    FIELD_DOCS
        .iter()
        .find(|d| d.0 == structure && d.1 == field)
        .map(|d| (d.2, d.3))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pvabi_abi::layout::STRUCTS;

    #[test]
    fn every_field_is_documented_and_nothing_else() {
        let all = || STRUCTS.iter().chain(pvabi_abi::preview2::STRUCTS);
        for s in all() {
            for f in s.fields {
                assert!(
                    field_doc(s.name, f.name).is_some(),
                    "spec/src/fields.rs: document {}.{}",
                    s.name,
                    f.name
                );
            }
        }
        for (s, f, _, _) in FIELD_DOCS {
            let known = all().any(|l| l.name == *s && l.fields.iter().any(|x| x.name == *f));
            assert!(
                known,
                "spec/src/fields.rs documents {s}.{f}, which pvabi-abi does not define"
            );
        }
    }
}
