//! Hostile-guest tests with the table-driven hostile guest (`guest-ref/bare/hostile`) on a
//! real `/dev/kvm`: every malformed input of a class, generated from the call table by code
//! the guest and this test share (`inputs.rs`), so the test knows exactly which inputs the
//! guest made and checks each answer; and the double-fetch races, in which a second vCPU at
//! CPL3 rewrites a MULTICALL list, deferred entries, ring submissions or a RING_SETUP block
//! while the host processes them.
//!
//! Each test prints, per class, how many inputs were tried and what the host answered
//! (`cargo test -p pvabi-host --test hostile_kvm -- --nocapture`).

mod hostile_support;

use std::collections::BTreeMap;

use hostile_support::inputs::*;
use hostile_support::*;
use pvabi_abi::calls::{self, CallDescriptor};
use pvabi_abi::features::Features;
use pvabi_abi::status::Status;
use pvabi_abi::Call;
use pvabi_host::vm::testing::kvm_or_skip;

/// The status a call gets if its feature was not granted (step 3), else `status`.
fn unless_not_granted(d: &CallDescriptor, granted: Features, status: Status) -> Status {
    match d.feature {
        Some(f) if !granted.contains(f) => Status::NotGranted,
        _ => status,
    }
}

/// Per class: inputs tried and the host's answers by status, printed as one table row.
fn summary(class: &str, answers: &[u64]) -> String {
    let mut by: BTreeMap<&str, usize> = BTreeMap::new();
    for &st in answers {
        *by.entry(status_name(st)).or_default() += 1;
    }
    let by: Vec<String> = by.iter().map(|(s, n)| format!("{s} {n}")).collect();
    format!("| {class} | {} | {} |", answers.len(), by.join(", "))
}

/// Checks the records of `class` against the inputs `expected` (in order) and returns their
/// statuses.
fn check_class(
    run: &Run,
    class: u32,
    name: &str,
    expected: Vec<(u64, u32, [u64; 6], Status)>,
) -> Vec<u64> {
    let recs = run.class(class);
    assert_eq!(
        recs.len(),
        expected.len(),
        "{name}: the guest made every generated input once\n{}",
        run.dump()
    );
    for (i, (r, (code, sub, args, status))) in recs.iter().zip(&expected).enumerate() {
        assert_eq!(
            (r.code, r.sub, r.args),
            (*code, *sub, *args),
            "{name} #{i}: the input"
        );
        assert_eq!(
            r.st,
            status.raw(),
            "{name} #{i}: code {code:#x} sub {sub} args {args:#x?}: the host answered {:#x} ({}), \
             the spec says {status}",
            r.st,
            status_name(r.st)
        );
    }
    recs.iter().map(|r| r.st).collect()
}

#[test]
fn hostile_every_input_class_from_the_call_table() {
    if !kvm_or_skip("hostile_every_input_class_from_the_call_table") {
        return;
    }
    let run = boot(S_CLASSES, Opts::default());
    run.assert_alive();
    let granted = Features::from_bits_retain(run.get("granted").st);
    let arena = run.get("arena");
    let (scratch, time, evq, dq) = (arena.st, arena.r0, arena.r1, arena.extra);
    let rings = run.get("arena_rings");
    let (sq, cq) = (rings.st, rings.r0);
    let mut table = vec![
        "| class | inputs | host answers |".to_string(),
        "| --- | --- | --- |".to_string(),
    ];

    // Unused call codes: NOT_SUPPORTED, and the host recorded each code once as such.
    let mut exp = Vec::new();
    for_each_unused_code(&mut |code| {
        exp.push((code, 0, [1, 2, 3, 4, 5, 6], Status::NotSupported));
    });
    let sts = check_class(&run, C_UNUSED_CODE, "unused code", exp.clone());
    for (code, ..) in &exp {
        let c = run
            .report
            .calls
            .get(code)
            .map(|c| (c.total, c.status(Status::NotSupported)));
        assert_eq!(c, Some((1, 1)), "the host's record of code {code:#x}");
    }
    table.push(summary("call codes in every unused range", &sts));

    // A register argument failing its check: INVALID_PARAMETER (step 5).
    let mut exp = Vec::new();
    for_each_reserved_arg(1, &mut |d, i, a| {
        let st = unless_not_granted(d, granted, Status::InvalidParameter);
        exp.push((u64::from(d.call.code()), i as u32, a, st));
    });
    let sts = check_class(&run, C_RESERVED_ARG, "reserved arg", exp);
    table.push(summary(
        "reserved bits / out-of-range register arguments",
        &sts,
    ));

    // Blocks outside RAM: INVALID_ADDRESS.
    let mut exp = Vec::new();
    for_each_outside_ram(MEM, &mut |d, a| {
        assert!(a[d.block.unwrap().addr_arg] >= MEM);
        let st = unless_not_granted(d, granted, Status::InvalidAddress);
        exp.push((u64::from(d.call.code()), 0, a, st));
    });
    let sts = check_class(&run, C_OUTSIDE_RAM, "outside RAM", exp);
    table.push(summary("blocks out of range (outside guest RAM)", &sts));

    // Blocks crossing a page inside RAM: CROSSES_PAGE.
    let mut exp = Vec::new();
    for_each_crossing(scratch, &mut |d, a| {
        let st = unless_not_granted(d, granted, Status::CrossesPage);
        exp.push((u64::from(d.call.code()), 0, a, st));
    });
    let sts = check_class(&run, C_CROSSES_PAGE, "crossing", exp);
    table.push(summary("blocks crossing a page", &sts));

    // Address + length beyond 2^64: a block crosses a page (CONV-035); a share range is not
    // RAM (MEM-017); a flush range ends at the top (MEM-023).
    let mut exp = Vec::new();
    for_each_wrap(&mut |d, a| {
        let st = match d.call {
            Call::MemShare | Call::MemUnshare => Status::InvalidAddress,
            Call::MemFlushTlbRange => Status::Success,
            _ => Status::CrossesPage,
        };
        exp.push((
            u64::from(d.call.code()),
            0,
            a,
            unless_not_granted(d, granted, st),
        ));
    });
    let sts = check_class(&run, C_WRAPS, "wraps", exp);
    table.push(summary("address + length overflowing 2^64", &sts));

    // Blocks on host-owned pages: ACCESS_DENIED, and the pages did not change.
    for name in [
        "time_set_page",
        "events_set_queue",
        "events_set_mask",
        "defer_set_queue",
        "ring_setup",
    ] {
        run.expect(name, Status::Success);
    }
    let mut exp = Vec::new();
    for_each_host_owned(&[time, evq, dq, sq, cq], &mut |d, a| {
        let st = unless_not_granted(d, granted, Status::AccessDenied);
        exp.push((u64::from(d.call.code()), 0, a, st));
    });
    let sts = check_class(&run, C_HOST_OWNED, "host-owned", exp);
    table.push(summary("blocks on host-owned pages", &sts));
    let unchanged: Vec<_> = run.checks.iter().filter(|(t, _)| *t <= 4).collect();
    assert_eq!(unchanged.len(), 4, "{}", run.dump());
    assert!(
        unchanged.iter().all(|(_, diff)| diff.is_none()),
        "the event queue, deferred queue and ring pages did not change: {unchanged:?}"
    );

    // Reserved bits and undefined values in structure blocks: INVALID_PARAMETER (step 10,
    // before the INVALID_STATE the valid blocks would get).
    let mut exp = Vec::new();
    for_each_block_field(&mut |d, offset, width, value| {
        exp.push((u64::from(d.call.code()), offset, value, width));
    });
    let recs = run.class(C_BLOCK_FIELD);
    assert_eq!(recs.len(), exp.len(), "{}", run.dump());
    for (r, (code, offset, value, width)) in recs.iter().zip(&exp) {
        assert_eq!(
            (r.code, r.sub, r.r),
            (*code, *offset, [*value, u64::from(*width)])
        );
        assert_eq!(
            r.st,
            Status::InvalidParameter.raw(),
            "code {code:#x}, field at {offset} = {value:#x}: {}",
            status_name(r.st)
        );
    }
    let sts: Vec<u64> = recs.iter().map(|r| r.st).collect();
    table.push(summary(
        "reserved bits / undefined values in structure blocks",
        &sts,
    ));

    // Reserved bits in batch entries' own fields: INVALID_PARAMETER, nothing written.
    let recs = run.class(C_ENTRY_FIELD);
    assert_eq!(recs.len(), 4 * 32, "{}", run.dump());
    for r in &recs {
        let what = format!("entry field {} bit {}: {r:?}", r.sub, r.code);
        match r.sub {
            F_MC_FLAGS | F_MC_RESERVED => {
                assert_eq!(r.st, Status::InvalidParameter.raw(), "{what}");
                assert_eq!(r.r, [0, 32], "{what}: MULTICALL SUCCESS, 32 processed");
            }
            F_DE_FLAGS => {
                assert_eq!(r.st, 0, "{what}: DEFER_FLUSH");
                assert_eq!((r.args[0], r.args[1]), (1, 1), "{what}: processed, failed");
                assert_eq!(r.r, [1, 1], "{what}: error_count + 1, head past it");
            }
            _ => {
                assert_eq!(r.st, Status::InvalidParameter.raw(), "{what}");
                assert_eq!(r.r[0], 0x100 + r.code, "{what}: user_data");
            }
        }
    }
    assert_eq!(run.get("entry_fields_ring_enter").r0, 32);
    let sts: Vec<u64> = recs
        .iter()
        .map(|r| {
            if r.sub == F_DE_FLAGS {
                Status::InvalidParameter.raw()
            } else {
                r.st
            }
        })
        .collect();
    table.push(summary(
        "reserved bits in MULTICALL/deferred/ring entry fields",
        &sts,
    ));

    // Calls where their context does not allow them (nested MULTICALL among them):
    // NOT_ALLOWED_HERE (step 4), and the host recorded each as such.
    let mut exp = Vec::new();
    for_each_context(&mut |d, ctx| exp.push((d.call, ctx)));
    let recs = run.class(C_CONTEXT);
    assert_eq!(recs.len(), exp.len(), "{}", run.dump());
    let mut per_call: BTreeMap<u32, u64> = BTreeMap::new();
    for (r, (call, ctx)) in recs.iter().zip(&exp) {
        assert_eq!((r.code, r.sub), (u64::from(call.code()), *ctx));
        *per_call.entry(call.code()).or_default() += 1;
        let what = format!("{call:?} in context {ctx}");
        assert_eq!(
            r.r[0], 0,
            "{what}: the MULTICALL, RING_ENTER or DEFER_FLUSH itself"
        );
        if *ctx == CTX_DEFERRED {
            assert_eq!((r.st, r.r[1]), (1, 1), "{what}: (failed, processed)");
        } else {
            assert_eq!(
                (r.st, r.r[1]),
                (Status::NotAllowedHere.raw(), 1),
                "{what}: {}",
                status_name(r.st)
            );
        }
    }
    for (code, n) in &per_call {
        let call = Call::from_code(u64::from(*code)).unwrap();
        assert_eq!(
            run.report.count(call, Status::NotAllowedHere),
            *n,
            "{call:?}: the host's record"
        );
    }
    let sts: Vec<u64> = recs.iter().map(|_| Status::NotAllowedHere.raw()).collect();
    table.push(summary(
        "calls not allowed in a MULTICALL, ring or deferred queue (nested MULTICALL included)",
        &sts,
    ));

    // Submission ring tail beyond head + capacity (RING-005).
    let recs = run.class(C_SQ_INDEX);
    assert_eq!(recs.len(), BAD_OCCUPANCY.len());
    for (r, diff) in recs.iter().zip(BAD_OCCUPANCY) {
        assert_eq!(r.code, u64::from(diff));
        assert_eq!(
            (r.st, r.r[0], r.r[1]),
            (0, 0, u64::from(diff) << 32 | 1),
            "SQ tail − head = {diff}: SUCCESS, nothing ran, dropped += {diff}, head = tail"
        );
    }
    table.push(summary(
        "SQ tail beyond the ring",
        &recs.iter().map(|r| r.st).collect::<Vec<_>>(),
    ));
    // Completion ring head ahead of its tail: no room, nothing consumed, then it runs.
    let recs = run.class(C_CQ_INDEX);
    assert_eq!(recs.len(), CQ_HEAD_AHEAD.len());
    for r in &recs {
        assert_eq!(
            r.args,
            [0, 0, 0, 0, 1, 1],
            "CQ head {} ahead: (enter status, processed, CQ tail moved) while stuck, then \
             (status, processed, SQ head moved) once put back",
            r.code
        );
        assert_eq!((r.st, r.r), (0, [0x200, 1]), "the completion, CQ tail + 1");
    }
    table.push(summary(
        "CQ head ahead of its tail",
        &recs.iter().map(|r| r.st).collect::<Vec<_>>(),
    ));
    // Deferred queue tail beyond head + capacity (DEFER-012).
    let recs = run.class(C_DQ_INDEX);
    assert_eq!(recs.len(), BAD_OCCUPANCY.len());
    for (r, diff) in recs.iter().zip(BAD_OCCUPANCY) {
        assert_eq!(
            (r.st, r.args[0], r.args[1], r.r),
            (0, 0, 0, [u64::from(diff), 1]),
            "deferred tail − head = {diff}: nothing ran, error_count += {diff}, head = tail"
        );
    }
    table.push(summary(
        "deferred queue tail beyond the queue",
        &recs.iter().map(|r| r.st).collect::<Vec<_>>(),
    ));
    // Events acknowledged twice: the queue counts as full (EVT-003), events are dropped and
    // the entries left alone; with head put back, the next event arrives.
    let recs = run.class(C_EVENT_ACK);
    assert_eq!(recs.len(), EXTRA_ACKS.len());
    for r in &recs {
        assert_eq!(
            r.args,
            [0, 0, 3, 0, 1, 3 << 32],
            "acked {} extra: (send status, tail moved, dropped) while full, then (status, tail \
             moved, kind/source) once put back",
            r.code
        );
        assert_eq!(r.st, 0xC000 + u64::from(r.sub), "the event's data");
    }
    let acks: Vec<_> = run.checks.iter().filter(|(t, _)| *t >= 10).collect();
    assert_eq!(acks.len(), EXTRA_ACKS.len());
    assert!(
        acks.iter().all(|(_, d)| d.is_none()),
        "entries unchanged: {acks:?}"
    );
    table.push(summary(
        "events acknowledged twice (3 sends each)",
        &recs.iter().map(|r| r.r[0]).collect::<Vec<_>>(),
    ));

    // Nothing ran that should not have: only the five valid CQ-class submissions wrote.
    assert_eq!(run.report.console_text(), "ccccc", "{}", run.dump());
    assert!(run.report.vcpu_starts.is_empty() && run.report.shared_ranges.is_empty());
    assert_eq!(
        (run.report.pte_write_count, run.report.balloon_released),
        (0, 0)
    );
    eprintln!(
        "hostile_every_input_class_from_the_call_table: {} inputs in {:?}\n{}",
        run.recs.len(),
        run.wall,
        table.join("\n")
    );
}

#[test]
fn hostile_negotiate_replayed_downgraded_and_raced_between_vcpus() {
    if !kvm_or_skip("hostile_negotiate_replayed_downgraded_and_raced_between_vcpus") {
        return;
    }
    let run = boot(
        S_NEGOTIATE_RACE,
        Opts {
            vcpus: 2,
            ..Opts::default()
        },
    );
    run.assert_alive();
    let first = run.expect("negotiate", Status::Success);
    let (accepted, granted) = (first.r0, first.r1);
    let offered = run.get("probe_features_first").st;
    run.expect("start_ap", Status::Success);
    let recs = run.class(C_NEGOTIATE);
    assert_eq!(
        recs.len(),
        2 * 12 * NEGOTIATE_VARIANTS as usize,
        "{}",
        run.dump()
    );
    for r in &recs {
        let expected = match r.sub {
            0 | 1 => Status::Locked,
            2 if r.args[1] & !offered != 0 => Status::FeatureUnavailable,
            2 => Status::Locked,
            3 => Status::VersionUnsupported,
            5 => Status::FeatureUnavailable,
            _ => Status::InvalidParameter,
        };
        assert_eq!(
            r.st,
            expected.raw(),
            "vCPU {} variant {} {:#x?}: {}",
            r.code,
            r.sub,
            &r.args[..4],
            status_name(r.st)
        );
    }
    // The first NEGOTIATE's result stands.
    let after = run.get("probe_features_after");
    assert_eq!((after.st, after.r0), (granted, granted));
    let v = run.get("spec_version_after");
    assert_eq!(
        (v.st, v.r1),
        (0, accepted),
        "GET_SPEC_VERSION's negotiated version"
    );
    assert_eq!(run.report.count(Call::Negotiate, Status::Success), 1);
    assert_eq!(
        run.report.negotiated.map(|n| n.1.bits()),
        Some(granted),
        "{}",
        run.dump()
    );
    let sts: Vec<u64> = recs.iter().map(|r| r.st).collect();
    eprintln!(
        "{}",
        summary("NEGOTIATE replayed/downgraded/raced (2 vCPUs)", &sts)
    );
}

/// The counts a double-fetch race reported: (ok, refused, other, failed calls) and flips.
fn race(run: &Run) -> (u64, u64, u64, u64) {
    run.assert_alive();
    run.expect("vcpu_start", Status::Success);
    assert!(run.get("flips").st > 0, "vCPU 1 flipped\n{}", run.dump());
    let r = run.get("race");
    assert_eq!(
        (r.r1, r.extra),
        (0, 0),
        "no other status, no failed call\n{}",
        run.dump()
    );
    (r.st, r.r0, r.r1, r.extra)
}

fn df_boot(scenario: u32) -> Run {
    boot(
        scenario,
        Opts {
            vcpus: 2,
            ..Opts::default()
        },
    )
}

/// The bytes CONSOLE_WRITE_REGS(8, "ABCDEFGH") entries wrote: whole messages only.
fn assert_whole_messages(run: &Run, ok: u64) {
    assert_eq!(run.report.console_bytes, 8 * ok, "{}", run.dump());
    assert!(run
        .report
        .console_text()
        .as_bytes()
        .chunks(8)
        .all(|c| c == b"ABCDEFGH"));
}

#[test]
fn hostile_double_fetch_multicall_call_codes() {
    if !kvm_or_skip("hostile_double_fetch_multicall_call_codes") {
        return;
    }
    let run = df_boot(S_DF_MULTICALL);
    let (ok, refused, ..) = race(&run);
    // Each entry ran as one version of its bytes: CONSOLE_WRITE_REGS(8) or a refused
    // SYSTEM_SHUTDOWN(8); the VM did not end with code 8.
    assert_eq!(ok + refused, 48 * 32);
    assert_eq!(
        run.report.count(Call::ConsoleWriteRegs, Status::Success),
        ok
    );
    assert_eq!(
        run.report
            .count(Call::SystemShutdown, Status::NotAllowedHere),
        refused
    );
    assert_eq!(run.report.total(Call::SystemShutdown), refused + 1);
    assert_whole_messages(&run, ok);
    assert_eq!(run.report.multicall_entries, 48 * 32);
    eprintln!("hostile_double_fetch_multicall_call_codes: {ok} ran, {refused} refused");
}

#[test]
fn hostile_double_fetch_deferred_entries() {
    if !kvm_or_skip("hostile_double_fetch_deferred_entries") {
        return;
    }
    let run = df_boot(S_DF_DEFER);
    let (ok, refused, ..) = race(&run);
    assert_eq!(ok + refused, 48 * 16);
    assert_eq!(run.report.count(Call::EventsSetMask, Status::Success), ok);
    assert_eq!(
        run.report
            .count(Call::SystemShutdown, Status::NotAllowedHere),
        refused
    );
    assert_eq!(run.report.total(Call::SystemShutdown), refused + 1);
    assert_eq!(
        (run.report.deferred_drained, run.report.deferred_failed),
        (48 * 16, refused)
    );
    eprintln!("hostile_double_fetch_deferred_entries: {ok} ran, {refused} refused");
}

#[test]
fn hostile_double_fetch_ring_submissions() {
    if !kvm_or_skip("hostile_double_fetch_ring_submissions") {
        return;
    }
    let run = df_boot(S_DF_RING);
    let (ok, refused, ..) = race(&run);
    assert_eq!(ok + refused, 48 * 16);
    assert_eq!(
        run.report.count(Call::ConsoleWriteRegs, Status::Success),
        ok
    );
    assert_eq!(
        run.report
            .count(Call::SystemShutdown, Status::NotAllowedHere),
        refused
    );
    assert_eq!(run.report.total(Call::SystemShutdown), refused + 1);
    assert_whole_messages(&run, ok);
    assert_eq!(
        (run.report.ring_submissions, run.report.ring_failed),
        (48 * 16, refused)
    );
    eprintln!("hostile_double_fetch_ring_submissions: {ok} ran, {refused} refused");
}

#[test]
fn hostile_double_fetch_ring_setup_block() {
    if !kvm_or_skip("hostile_double_fetch_ring_setup_block") {
        return;
    }
    let run = df_boot(S_DF_SETUP);
    let (ok, refused, ..) = race(&run);
    // Either the valid block (and then the ring works with that SQ page) or the one with
    // sq_page == cq_page (INVALID_PARAMETER); never a ring registered from a mix.
    assert_eq!(ok + refused, 48 * 4);
    assert_eq!(run.report.count(Call::RingSetup, Status::Success), 2 * ok);
    assert_eq!(
        run.report.count(Call::RingSetup, Status::InvalidParameter),
        refused
    );
    assert_eq!(run.report.console_text(), "R".repeat(ok as usize));
    assert_eq!(run.report.ring_submissions, ok);
    eprintln!("hostile_double_fetch_ring_setup_block: {ok} registered, {refused} refused");
}

#[test]
fn hostile_double_fetch_vcpu_start_state() {
    if !kvm_or_skip("hostile_double_fetch_vcpu_start_state") {
        return;
    }
    let run = boot(
        S_DF_START,
        Opts {
            vcpus: 3,
            ..Opts::default()
        },
    );
    let (ok, refused, ..) = race(&run);
    let busy = run.get("busy");
    // Every attempt: started (and vCPU 1 ran), refused for the non-canonical rip, or
    // INVALID_STATE while vCPU 1 was still stopping from its last run.
    assert_eq!(ok + refused + busy.st, 48 * 4);
    assert_eq!(
        busy.r0,
        ok,
        "vCPU 1 ran once per successful start\n{}",
        run.dump()
    );
    let rip = run.get("ap_rip").st;
    let starts: Vec<_> = run
        .report
        .vcpu_starts
        .iter()
        .filter(|(v, _)| *v == 1)
        .collect();
    run.expect("first_start", Status::Success);
    assert_eq!(
        starts.len() as u64,
        ok + 1,
        "the first start and the race's\n{}",
        run.dump()
    );
    assert!(
        starts.iter().all(|(_, s)| s.rip == rip),
        "every start used the valid rip, from the host's copy"
    );
    assert_eq!(
        run.report.count(Call::VcpuStart, Status::InvalidParameter),
        refused
    );
    eprintln!(
        "hostile_double_fetch_vcpu_start_state: {ok} started, {refused} refused, {} busy",
        busy.st
    );
}

#[test]
fn hostile_inputs_cover_every_call_with_a_block_or_a_checked_argument() {
    // The generators reach every call the table gives a block or a checked argument (so a
    // new call gets its hostile inputs); no KVM needed.
    let mut reserved = std::collections::BTreeSet::new();
    for_each_reserved_arg(1, &mut |d, _, _| {
        reserved.insert(d.call);
    });
    let mut outside = std::collections::BTreeSet::new();
    for_each_outside_ram(MEM, &mut |d, _| {
        outside.insert(d.call);
    });
    for d in calls::all() {
        let checked = d
            .args
            .iter()
            .any(|a| !matches!(a.check, calls::ArgCheck::Any));
        assert_eq!(reserved.contains(&d.call), checked, "{}", d.name);
        assert_eq!(outside.contains(&d.call), d.block.is_some(), "{}", d.name);
    }
}
