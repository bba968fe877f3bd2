//! The pvabi reference guest library.
#![no_std]
