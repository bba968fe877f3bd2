//! The pvabi reference host over KVM.
