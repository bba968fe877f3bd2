//! The pvabi ABI.
#![no_std]
