//! Synthetic changes to a copy of the current snapshot: each must be detected with the right
//! class and path, and the rules must give the right verdict.

use pvabi_versioning::check::Relation;
use pvabi_versioning::diff::{VER_BASE_FROZEN, VER_NO_REUSE};
use pvabi_versioning::model::{
    ArgEntry, CallEntry, CheckEntry, Deferral, FeatureEntry, FieldEntry, NamedValue, ResultEntry,
};
use pvabi_versioning::{
    check, diff, AbiVersion, Change, ChangeKind, ProblemKind, Report, Snapshot, StoredSnapshot,
};

const V1_0: AbiVersion = AbiVersion::new(1, 0);
const V1_1: AbiVersion = AbiVersion::new(1, 1);
const V2_0: AbiVersion = AbiVersion::new(2, 0);

/// The current ABI, labelled 1.0 with everything in it introduced in 1.0 (so the tests keep
/// working after later releases).
fn released() -> Snapshot {
    let mut s = Snapshot::current();
    s.version = V1_0;
    for c in &mut s.calls {
        c.since = V1_0;
    }
    for f in &mut s.features {
        f.since = V1_0;
    }
    s
}

/// A feature bit no version uses yet.
fn fresh_bit(s: &Snapshot) -> u32 {
    (0..64)
        .find(|b| s.features.iter().all(|f| f.bit != *b))
        .unwrap()
}

fn at(mut s: Snapshot, v: AbiVersion) -> Snapshot {
    s.version = v;
    s
}

fn stored(s: &Snapshot) -> StoredSnapshot {
    StoredSnapshot {
        file: s.version.file_name(),
        snapshot: s.clone(),
    }
}

fn call_mut<'a>(s: &'a mut Snapshot, name: &str) -> &'a mut CallEntry {
    s.calls.iter_mut().find(|c| c.name == name).unwrap()
}

fn fields_mut<'a>(s: &'a mut Snapshot, name: &str) -> &'a mut Vec<FieldEntry> {
    &mut s
        .structs
        .iter_mut()
        .find(|c| c.name == name)
        .unwrap()
        .fields
}

/// The only change, or a panic listing all of them.
fn only(changes: &[Change]) -> &Change {
    assert_eq!(changes.len(), 1, "expected one change, got {changes:#?}");
    &changes[0]
}

fn find<'a>(changes: &'a [Change], path: &str) -> &'a Change {
    changes
        .iter()
        .find(|c| c.path == path)
        .unwrap_or_else(|| panic!("no change at {path}: {changes:#?}"))
}

fn new_call(code: u32, name: &str, since: AbiVersion) -> CallEntry {
    CallEntry {
        code,
        name: name.to_owned(),
        family: "CONSOLE".to_owned(),
        feature: Some("CONSOLE".to_owned()),
        since,
        args: vec![ArgEntry {
            name: "color".to_owned(),
            register: "rdi".to_owned(),
            check: CheckEntry::Range { min: 0, max: 15 },
        }],
        results: vec![],
        block: None,
        batchable: true,
        deferral: Deferral::None,
        sync_point: false,
        returns: true,
    }
}

fn with_new_call(mut s: Snapshot, since: AbiVersion) -> Snapshot {
    s.calls.push(new_call(0x0102, "CONSOLE_SET_COLOR", since));
    s
}

fn problems(r: &Report, kind: ProblemKind) -> Vec<String> {
    r.errors
        .iter()
        .filter(|e| e.kind == kind)
        .map(|e| e.message.clone())
        .collect()
}

// ------------------------------------------------------------------ classification

#[test]
fn identical_snapshots_have_no_difference() {
    assert!(diff(&released(), &released()).is_empty());
}

#[test]
fn json_round_trips() {
    let s = released();
    let back = Snapshot::from_json(&s.to_json(), "test").unwrap();
    assert_eq!(back, s);
    assert!(s.to_json().ends_with("}\n"));
}

#[test]
fn swapped_fields_are_breaking() {
    let old = released();
    let mut new = old.clone();
    let f = fields_mut(&mut new, "TimePage");
    assert_eq!(
        (f[0].name.as_str(), f[1].name.as_str()),
        ("sequence", "flags")
    );
    (f[0].offset, f[1].offset) = (f[1].offset, f[0].offset);
    f.swap(0, 1);
    let changes = diff(&old, &new);
    assert_eq!(changes.len(), 2, "{changes:#?}");
    for path in [
        "structs.TimePage.fields.sequence.offset",
        "structs.TimePage.fields.flags.offset",
    ] {
        let c = find(&changes, path);
        assert_eq!(c.kind, ChangeKind::Breaking);
        assert!(c.explanation.contains("swapped"), "{}", c.explanation);
    }
}

#[test]
fn changed_size_is_breaking() {
    let old = released();
    let mut new = old.clone();
    new.structs
        .iter_mut()
        .find(|s| s.name == "Event")
        .unwrap()
        .size = 24;
    let c = only(&diff(&old, &new)).clone();
    assert_eq!(c.kind, ChangeKind::Breaking);
    assert_eq!(c.path, "structs.Event.size");
    assert_eq!(
        (c.old.as_deref(), c.new.as_deref()),
        (Some("16"), Some("24"))
    );
}

#[test]
fn renumbered_call_is_breaking() {
    let old = released();
    let mut new = old.clone();
    call_mut(&mut new, "CONSOLE_WRITE").code = 0x0105;
    let c = only(&diff(&old, &new)).clone();
    assert_eq!(c.kind, ChangeKind::Breaking);
    assert_eq!(c.path, "calls.CONSOLE_WRITE.code");
    assert_eq!(
        (c.old.as_deref(), c.new.as_deref()),
        (Some("0x0101"), Some("0x0105"))
    );
    assert!(c.violates.is_empty(), "renumbering reuses nothing");
}

#[test]
fn changed_constant_is_breaking() {
    let old = released();
    let mut new = old.clone();
    let page = new
        .constants
        .iter_mut()
        .find(|c| c.name == "PAGE_SIZE")
        .unwrap();
    page.value = 8192;
    let c = only(&diff(&old, &new)).clone();
    assert_eq!(c.kind, ChangeKind::Breaking);
    assert_eq!(c.path, "constants.PAGE_SIZE.value");
}

#[test]
fn reused_feature_bit_is_breaking_everywhere() {
    let old = released();
    let mut new = old.clone();
    new.features.push(FeatureEntry {
        name: "X".to_owned(),
        bit: 0,
        since: V1_0,
    });
    let c = only(&diff(&old, &new)).clone();
    assert_eq!(c.kind, ChangeKind::Breaking);
    assert_eq!(c.path, "features.X.bit");
    assert!(c.explanation.contains("CONSOLE"), "{}", c.explanation);
    assert_eq!(c.violates, [VER_NO_REUSE]);
}

#[test]
fn new_feature_on_a_fresh_bit_is_an_addition() {
    let old = released();
    let mut new = old.clone();
    new.features.push(FeatureEntry {
        name: "X".to_owned(),
        bit: fresh_bit(&old),
        since: V1_1,
    });
    let c = only(&diff(&old, &new)).clone();
    assert_eq!(
        (c.kind, c.path.as_str()),
        (ChangeKind::Addition, "features.X")
    );
}

#[test]
fn removed_call_is_breaking() {
    let old = released();
    let mut new = old.clone();
    new.calls.retain(|c| c.name != "RING_ENTER");
    let c = only(&diff(&old, &new)).clone();
    assert_eq!(c.kind, ChangeKind::Breaking);
    assert_eq!(c.path, "calls.RING_ENTER");
    assert!(c.explanation.contains("removed"));
}

#[test]
fn changed_status_code_is_breaking() {
    let old = released();
    let mut new = old.clone();
    new.statuses
        .iter_mut()
        .find(|s| s.name == "BUSY")
        .unwrap()
        .value = 20;
    let c = only(&diff(&old, &new)).clone();
    assert_eq!(c.kind, ChangeKind::Breaking);
    assert_eq!(c.path, "statuses.BUSY.value");
}

#[test]
fn added_enum_value_is_an_addition() {
    let old = released();
    let mut new = old.clone();
    new.enums.get_mut("EventKind").unwrap().push(NamedValue {
        name: "CONSOLE_INPUT".to_owned(),
        value: 5,
    });
    let c = only(&diff(&old, &new)).clone();
    assert_eq!(c.kind, ChangeKind::Addition);
    assert_eq!(c.path, "enums.EventKind.CONSOLE_INPUT");
}

#[test]
fn enum_value_reusing_a_value_is_breaking() {
    let old = released();
    let mut new = old.clone();
    new.enums.get_mut("EventKind").unwrap().push(NamedValue {
        name: "OTHER".to_owned(),
        value: 1,
    });
    let c = only(&diff(&old, &new)).clone();
    assert_eq!(c.kind, ChangeKind::Breaking);
    assert_eq!(c.path, "enums.EventKind.OTHER.value");
}

#[test]
fn added_call_is_an_addition() {
    let old = released();
    let new = with_new_call(old.clone(), V1_1);
    let c = only(&diff(&old, &new)).clone();
    assert_eq!(c.kind, ChangeKind::Addition);
    assert_eq!(c.path, "calls.CONSOLE_SET_COLOR");
}

#[test]
fn added_call_reusing_a_code_is_breaking() {
    let old = released();
    let mut new = old.clone();
    new.calls.retain(|c| c.name != "CONSOLE_WRITE");
    new.calls.push(new_call(0x0101, "CONSOLE_SET_COLOR", V1_1));
    let c = only(&diff(&old, &new)).clone();
    assert_eq!(c.kind, ChangeKind::Breaking);
    assert_eq!(c.path, "calls.CONSOLE_WRITE");
    assert_eq!(c.violates, [VER_NO_REUSE]);
}

#[test]
fn field_taken_from_a_reserved_array_is_an_addition() {
    let old = released();
    let mut new = old.clone();
    let f = fields_mut(&mut new, "RingHeader");
    let reserved = f.pop().unwrap();
    assert_eq!((reserved.name.as_str(), reserved.offset), ("reserved", 20));
    f.push(FieldEntry {
        name: "overflow".to_owned(),
        offset: 20,
        size: 4,
        ty: "u32".to_owned(),
    });
    f.push(FieldEntry {
        name: "reserved".to_owned(),
        offset: 24,
        size: 40,
        ty: "[u32; 10]".to_owned(),
    });
    let c = only(&diff(&old, &new)).clone();
    assert_eq!(c.kind, ChangeKind::Addition, "{c:#?}");
    assert_eq!(c.path, "structs.RingHeader.fields.overflow");
}

#[test]
fn reserved_typed_field_given_a_meaning_is_an_addition() {
    let old = released();
    let mut new = old.clone();
    let f = fields_mut(&mut new, "MulticallEntry");
    let flags = f.iter_mut().find(|f| f.name == "flags").unwrap();
    assert_eq!(flags.ty, "ReservedU32");
    flags.ty = "u32".to_owned();
    let c = only(&diff(&old, &new)).clone();
    assert_eq!(c.kind, ChangeKind::Addition);
    assert_eq!(c.path, "structs.MulticallEntry.fields.flags");
}

#[test]
fn renamed_or_retyped_field_is_breaking() {
    let old = released();
    let mut renamed = old.clone();
    fields_mut(&mut renamed, "Event")[1].name = "origin".to_owned();
    let c = only(&diff(&old, &renamed)).clone();
    assert_eq!(
        (c.kind, c.path.as_str()),
        (ChangeKind::Breaking, "structs.Event.fields.source")
    );
    let mut retyped = old.clone();
    fields_mut(&mut retyped, "TimePage")[6].ty = "u32".to_owned();
    let c = only(&diff(&old, &retyped)).clone();
    assert_eq!(
        (c.kind, c.path.as_str()),
        (ChangeKind::Breaking, "structs.TimePage.fields.tsc_shift.ty")
    );
}

#[test]
fn widened_mask_is_an_addition_and_narrowed_mask_is_breaking() {
    let old = released();
    let mut wide = old.clone();
    call_mut(&mut wide, "MULTICALL").args[3].check = CheckEntry::Mask { mask: 0b11 };
    let c = only(&diff(&old, &wide)).clone();
    assert_eq!(
        (c.kind, c.path.as_str()),
        (ChangeKind::Addition, "calls.MULTICALL.args[3].check")
    );
    let mut narrow = old.clone();
    call_mut(&mut narrow, "MULTICALL").args[3].check = CheckEntry::Mask { mask: 0 };
    assert_eq!(only(&diff(&old, &narrow)).kind, ChangeKind::Breaking);
    let mut range = old.clone();
    call_mut(&mut range, "MULTICALL").args[1].check = CheckEntry::Range { min: 1, max: 64 };
    assert_eq!(only(&diff(&old, &range)).kind, ChangeKind::Breaking);
}

#[test]
fn descriptor_flags_are_strict() {
    let old = released();
    for mutate in [
        (|c: &mut CallEntry| c.batchable = !c.batchable) as fn(&mut CallEntry),
        |c| c.sync_point = !c.sync_point,
        |c| c.deferral = Deferral::Mmu,
        |c| c.returns = false,
        |c| c.block = None,
        |c| c.feature = Some("TIME".to_owned()),
    ] {
        let mut new = old.clone();
        mutate(call_mut(&mut new, "CONSOLE_WRITE"));
        let c = only(&diff(&old, &new)).clone();
        assert_eq!(c.kind, ChangeKind::Breaking, "{c:#?}");
        assert!(c.path.starts_with("calls.CONSOLE_WRITE."), "{}", c.path);
    }
}

#[test]
fn argument_names_have_no_abi_effect_but_registers_do() {
    let old = released();
    let mut renamed = old.clone();
    call_mut(&mut renamed, "CONSOLE_WRITE").args[0].name = "gpa".to_owned();
    let c = only(&diff(&old, &renamed)).clone();
    assert_eq!(
        (c.kind, c.path.as_str()),
        (ChangeKind::Neutral, "calls.CONSOLE_WRITE.args[0].name")
    );
    let mut moved = old.clone();
    call_mut(&mut moved, "CONSOLE_WRITE").args[0].register = "r10".to_owned();
    assert_eq!(only(&diff(&old, &moved)).kind, ChangeKind::Breaking);
    let mut extra = old.clone();
    call_mut(&mut extra, "CONSOLE_WRITE").args.push(ArgEntry {
        name: "flags".to_owned(),
        register: "r8".to_owned(),
        check: CheckEntry::Mask { mask: 0 },
    });
    assert_eq!(only(&diff(&old, &extra)).kind, ChangeKind::Breaking);
}

#[test]
fn new_result_is_an_addition_and_removed_result_is_breaking() {
    let old = released();
    let mut more = old.clone();
    call_mut(&mut more, "CONSOLE_WRITE")
        .results
        .push(ResultEntry {
            name: "dropped".to_owned(),
            register: "rsi".to_owned(),
        });
    assert_eq!(only(&diff(&old, &more)).kind, ChangeKind::Addition);
    let mut fewer = old.clone();
    call_mut(&mut fewer, "CONSOLE_WRITE").results.clear();
    assert_eq!(only(&diff(&old, &fewer)).kind, ChangeKind::Breaking);
}

#[test]
fn constant_rules() {
    let old = released();
    let set = |name: &str, value: u64| {
        let mut s = old.clone();
        s.constants
            .iter_mut()
            .find(|c| c.name == name)
            .unwrap()
            .value = value;
        only(&diff(&old, &s)).kind
    };
    assert_eq!(set("MULTICALL_FLAGS_VALID", 0b11), ChangeKind::Addition);
    assert_eq!(set("MULTICALL_FLAGS_VALID", 0), ChangeKind::Breaking);
    assert_eq!(set("CPUID_LEAF_MAX", 4), ChangeKind::Addition);
    assert_eq!(set("CPUID_LEAF_MAX", 2), ChangeKind::Breaking);
    let minor = old
        .constants
        .iter()
        .find(|c| c.name == "VERSION_MINOR")
        .unwrap()
        .value;
    assert_eq!(set("VERSION_MINOR", minor + 1), ChangeKind::Neutral);
    let mut sig = old.clone();
    sig.constants
        .iter_mut()
        .find(|c| c.name == "SIGNATURE_EBX")
        .unwrap()
        .value = 0;
    assert_eq!(only(&diff(&old, &sig)).violates, [VER_BASE_FROZEN]);
    let mut gone = old.clone();
    gone.constants.retain(|c| c.name != "SQ_CAPACITY");
    assert_eq!(only(&diff(&old, &gone)).kind, ChangeKind::Breaking);
}

#[test]
fn cpuid_layout_changes() {
    let old = released();
    let mut moved = old.clone();
    let f = moved
        .cpuid
        .fields
        .iter_mut()
        .find(|f| f.field == "vcpus")
        .unwrap();
    f.register = Some("eax".to_owned());
    let c = only(&diff(&old, &moved)).clone();
    assert_eq!(
        (c.kind, c.path.as_str()),
        (ChangeKind::Breaking, "cpuid.fields.vcpus")
    );
    let mut described = old.clone();
    described.cpuid.leaves[2].ecx = "bits 15:0 debug port".to_owned();
    assert_eq!(only(&diff(&old, &described)).kind, ChangeKind::Addition);
    let mut reworded = old.clone();
    reworded.cpuid.leaves[3].eax = "the most MULTICALL entries".to_owned();
    assert_eq!(only(&diff(&old, &reworded)).kind, ChangeKind::Neutral);
    let mut version_leaf = old.clone();
    version_leaf
        .cpuid
        .fields
        .retain(|f| f.field != "lowest_version");
    assert_eq!(only(&diff(&old, &version_leaf)).violates, [VER_BASE_FROZEN]);
}

#[test]
fn base_family_changes_violate_the_base_guarantee() {
    let old = released();
    let mut new = old.clone();
    call_mut(&mut new, "NEGOTIATE").args[3].check = CheckEntry::Any;
    let c = only(&diff(&old, &new)).clone();
    assert_eq!(c.kind, ChangeKind::Breaking);
    assert_eq!(c.violates, [VER_BASE_FROZEN]);
}

// ------------------------------------------------------------------ rules

#[test]
fn unchanged_crate_passes() {
    let r = check(&released(), &[stored(&released())]);
    assert!(r.ok, "{}", r.to_text());
    assert!(r.to_text().contains("OK: 1.0 matches its snapshot"));
    assert_eq!(r.snapshots[0].relation, Relation::Current);
}

#[test]
fn addition_without_minor_bump_fails() {
    let current = with_new_call(released(), V1_0);
    let r = check(&current, &[stored(&released())]);
    assert!(!r.ok);
    let p = problems(&r, ProblemKind::AdditionWithoutBump);
    assert_eq!(p.len(), 1, "{}", r.to_text());
    assert!(p[0].contains("addition without a minor bump"));
    assert!(p[0].contains("calls.CONSOLE_SET_COLOR"));
    assert!(
        r.errors[0].fix.contains("bump VERSION_MINOR to 1"),
        "{:?}",
        r.errors
    );
    assert!(r.errors[0].fix.contains("pvabi abi snapshot"));
}

#[test]
fn addition_with_minor_bump_but_no_snapshot_fails() {
    let current = at(with_new_call(released(), V1_1), V1_1);
    let r = check(&current, &[stored(&released())]);
    assert!(!r.ok);
    let p = problems(&r, ProblemKind::MissingSnapshot);
    assert_eq!(p.len(), 1, "{}", r.to_text());
    assert!(p[0].contains("version 1.1 has no snapshot"), "{}", p[0]);
    assert_eq!(r.errors.len(), 1, "{}", r.to_text());
}

#[test]
fn addition_with_minor_bump_and_snapshot_passes() {
    let current = at(with_new_call(released(), V1_1), V1_1);
    let r = check(&current, &[stored(&released()), stored(&current)]);
    assert!(r.ok, "{}", r.to_text());
    assert_eq!(r.snapshots[0].relation, Relation::EarlierMinor);
    assert_eq!(r.snapshots[0].additions, 1);
    assert!(r.summary().contains("compatible with 1.0 (1 additions)"));
}

#[test]
fn new_call_must_say_it_is_new() {
    let current = at(with_new_call(released(), V1_0), V1_1);
    let r = check(&current, &[stored(&released()), stored(&current)]);
    let p = problems(&r, ProblemKind::Since);
    assert_eq!(p.len(), 1, "{}", r.to_text());
    assert!(p[0].contains("calls.CONSOLE_SET_COLOR.since"));
    let too_new = at(with_new_call(released(), AbiVersion::new(1, 2)), V1_1);
    let r = check(&too_new, &[stored(&released()), stored(&too_new)]);
    assert_eq!(problems(&r, ProblemKind::Since).len(), 1, "{}", r.to_text());
}

#[test]
fn breaking_change_within_a_major_fails() {
    let mut current = released();
    call_mut(&mut current, "CONSOLE_WRITE").code = 0x0105;
    let r = check(&current, &[stored(&released())]);
    assert!(!r.ok);
    let p = problems(&r, ProblemKind::BreakingWithinMajor);
    assert_eq!(p.len(), 1, "{}", r.to_text());
    assert!(p[0].contains("breaking change within major 1"), "{}", p[0]);
    assert!(p[0].contains("needs major 2"), "{}", p[0]);
    assert!(p[0].contains("calls.CONSOLE_WRITE.code"));
    // A minor bump does not make it acceptable either.
    let bumped = at(current, V1_1);
    let r = check(&bumped, &[stored(&released()), stored(&bumped)]);
    assert!(!problems(&r, ProblemKind::BreakingWithinMajor).is_empty());
    assert!(!problems(&r, ProblemKind::InconsistentSnapshots).is_empty());
}

#[test]
fn breaking_change_in_a_new_major_is_allowed() {
    let mut current = at(released(), V2_0);
    call_mut(&mut current, "CONSOLE_WRITE").code = 0x0105;
    current
        .structs
        .iter_mut()
        .find(|s| s.name == "Event")
        .unwrap()
        .size = 24;
    let r = check(&current, &[stored(&released()), stored(&current)]);
    assert!(r.ok, "{}", r.to_text());
    assert_eq!(r.snapshots[0].relation, Relation::OtherMajor);
    assert_eq!(r.snapshots[0].breaking, 2);
    assert!(r.changes.iter().all(|c| !c.enforced));
}

#[test]
fn new_major_still_may_not_reuse_numbers_or_touch_base() {
    let mut reuse = at(released(), V2_0);
    reuse.calls.retain(|c| c.name != "CONSOLE_WRITE");
    reuse
        .calls
        .push(new_call(0x0101, "CONSOLE_SET_COLOR", V2_0));
    let r = check(&reuse, &[stored(&released()), stored(&reuse)]);
    let p = problems(&r, ProblemKind::CrossMajor);
    assert_eq!(p.len(), 1, "{}", r.to_text());
    assert!(p[0].contains(VER_NO_REUSE));

    let mut base = at(released(), V2_0);
    call_mut(&mut base, "GET_SPEC_VERSION").results.clear();
    let r = check(&base, &[stored(&released()), stored(&base)]);
    let p = problems(&r, ProblemKind::CrossMajor);
    assert!(!p.is_empty(), "{}", r.to_text());
    assert!(p[0].contains(VER_BASE_FROZEN));
}

#[test]
fn snapshot_files_must_be_named_by_their_version() {
    let mut s = stored(&released());
    s.file = "1.1.json".to_owned();
    let r = check(&released(), &[s]);
    assert_eq!(
        problems(&r, ProblemKind::SnapshotName).len(),
        1,
        "{}",
        r.to_text()
    );
    assert!(!r.ok);
}

#[test]
fn newer_snapshot_of_the_major_fails() {
    let newer = at(with_new_call(released(), V1_1), V1_1);
    let r = check(&released(), &[stored(&released()), stored(&newer)]);
    assert_eq!(
        problems(&r, ProblemKind::NewerSnapshot).len(),
        1,
        "{}",
        r.to_text()
    );
}

#[test]
fn report_round_trips_as_json() {
    let mut current = released();
    call_mut(&mut current, "CONSOLE_WRITE").code = 0x0105;
    let r = check(&current, &[stored(&released())]);
    let back = Report::from_json(&r.to_json()).unwrap();
    assert_eq!(back, r);
    assert!(r.to_json().contains("\"ok\": false"));
}

#[test]
fn changelog_lists_additions_per_release() {
    let v11 = at(with_new_call(released(), V1_1), V1_1);
    let mut v20 = at(v11.clone(), V2_0);
    call_mut(&mut v20, "CONSOLE_WRITE").code = 0x0105;
    let md = pvabi_versioning::changelog_markdown_from(&[v20, released(), v11]);
    let i10 = md.find("## Version 1.0").unwrap();
    let i11 = md.find("## Version 1.1").unwrap();
    let i20 = md.find("## Version 2.0").unwrap();
    assert!(i10 < i11 && i11 < i20, "{md}");
    assert!(md[i11..i20].contains("`calls.CONSOLE_SET_COLOR`"), "{md}");
    assert!(md[i20..].contains("A new major version"), "{md}");
    assert!(md[i20..].contains("`calls.CONSOLE_WRITE.code`"), "{md}");
}
