//! Port I/O and a raw byte console.
//!
//! Every port access leaves the guest (a VM exit): on the pvabi reference host each
//! costs microseconds. Ring-3 code may use these too: [`run_at_cpl3`](crate::run_at_cpl3)
//! runs it with IOPL 3 and an I/O permission bitmap that allows every port. The
//! helpers are one-line wrappers around [`x86_64::instructions::port::Port`].

use x86_64::instructions::port::Port;

/// Writes a byte to `port`.
///
/// # Safety
/// Port I/O talks to the host's devices and doorbells, which may change guest memory
/// or VM state: the caller must follow the protocol of whatever listens on `port`.
#[inline]
pub unsafe fn outb(port: u16, value: u8) {
    // SAFETY: the caller upholds the port's protocol.
    unsafe { Port::new(port).write(value) };
}

/// Writes a 16-bit word to `port`.
///
/// # Safety
/// As for [`outb`].
#[inline]
pub unsafe fn outw(port: u16, value: u16) {
    // SAFETY: the caller upholds the port's protocol.
    unsafe { Port::new(port).write(value) };
}

/// Writes a 32-bit doubleword to `port`.
///
/// # Safety
/// As for [`outb`].
#[inline]
pub unsafe fn outl(port: u16, value: u32) {
    // SAFETY: the caller upholds the port's protocol.
    unsafe { Port::new(port).write(value) };
}

/// Reads a byte from `port`.
///
/// # Safety
/// As for [`outb`].
#[inline]
pub unsafe fn inb(port: u16) -> u8 {
    // SAFETY: the caller upholds the port's protocol.
    unsafe { Port::new(port).read() }
}

/// Reads a 16-bit word from `port`.
///
/// # Safety
/// As for [`outb`].
#[inline]
pub unsafe fn inw(port: u16) -> u16 {
    // SAFETY: the caller upholds the port's protocol.
    unsafe { Port::new(port).read() }
}

/// Reads a 32-bit doubleword from `port`.
///
/// # Safety
/// As for [`outb`].
#[inline]
pub unsafe fn inl(port: u16) -> u32 {
    // SAFETY: the caller upholds the port's protocol.
    unsafe { Port::new(port).read() }
}

/// A console that writes each byte to one I/O port with `outb` (one exit per byte:
/// meant for bring-up and failure messages, not for bulk output). It is not the
/// pvabi console; the port is whatever the host under test listens on.
#[derive(Clone, Copy, Debug)]
pub struct RawConsole {
    port: u16,
}

impl RawConsole {
    /// A console on `port`.
    ///
    /// # Safety
    /// The host must treat byte writes to `port` as harmless output.
    pub const unsafe fn new(port: u16) -> Self {
        Self { port }
    }

    /// Writes raw bytes.
    pub fn write_bytes(&self, bytes: &[u8]) {
        for &b in bytes {
            // SAFETY: `new`'s contract: byte writes to this port are output only.
            unsafe { outb(self.port, b) };
        }
    }

    /// Writes a string.
    pub fn write_str(&self, s: &str) {
        self.write_bytes(s.as_bytes());
    }

    /// Writes `value` as `0x` followed by 16 hex digits (no `core::fmt`, so no SSE).
    pub fn write_hex(&self, value: u64) {
        let mut buf = [0u8; 18];
        buf[0] = b'0';
        buf[1] = b'x';
        for i in 0..16 {
            let nibble = ((value >> ((15 - i) * 4)) & 0xf) as u8;
            buf[2 + i] = if nibble < 10 {
                b'0' + nibble
            } else {
                b'a' + nibble - 10
            };
        }
        self.write_bytes(&buf);
    }

    /// Writes `value` in decimal (no `core::fmt`).
    pub fn write_dec(&self, mut value: u64) {
        let mut buf = [0u8; 20];
        let mut i = buf.len();
        loop {
            i -= 1;
            buf[i] = b'0' + (value % 10) as u8;
            value /= 10;
            if value == 0 {
                break;
            }
        }
        self.write_bytes(&buf[i..]);
    }

    /// Writes "`guest` panic at FILE:LINE" and a newline, then halts this vCPU for ever: the
    /// body of a guest's `#[panic_handler]` (no `core::fmt`, so it is safe at CPL0).
    pub fn report_panic(&self, guest: &str, info: &core::panic::PanicInfo<'_>) -> ! {
        self.write_str(guest);
        self.write_str(" panic at ");
        if let Some(location) = info.location() {
            self.write_str(location.file());
            self.write_str(":");
            self.write_dec(u64::from(location.line()));
        }
        self.write_str("\n");
        crate::cpu::halt_forever()
    }
}

impl core::fmt::Write for RawConsole {
    /// Note: `write!` goes through the precompiled `core::fmt`, which may use SSE;
    /// only use it where SSE is allowed (CPL3 with CR4.OSFXSR, which the reference
    /// host sets).
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        RawConsole::write_str(self, s);
        Ok(())
    }
}
