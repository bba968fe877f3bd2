//! The embedding example (`examples/minimal_vmm.rs`, a VMM on `kvm-ioctls` and
//! `pvabi-dispatch` alone) runs on a real `/dev/kvm`: its guest negotiates and shuts down
//! with code 0, which it does only if NEGOTIATE granted SYSTEM.

#[path = "../examples/minimal_vmm.rs"]
mod example;

#[test]
fn the_embedding_example_boots_its_guest_and_answers_its_calls() {
    if !pvabi_host::vm::testing::kvm_or_skip(
        "the_embedding_example_boots_its_guest_and_answers_its_calls",
    ) {
        return;
    }
    if let Err(e) = example::main() {
        panic!("the example VMM failed: {e}");
    }
}
