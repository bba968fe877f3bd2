//! Spec chapter "Console family": debug console output.

use crate::calls::{arg, plain, res, ArgCheck, BlockDesc, BlockKind, Call, CallDescriptor};
use crate::features::Features;

/// The most bytes CONSOLE_WRITE_REGS carries (four registers of eight bytes).
pub const CONSOLE_REGS_MAX: u64 = 32;
/// The most bytes one CONSOLE_WRITE takes.
pub const CONSOLE_WRITE_MAX: u64 = 4096;

/// The Console family's calls.
pub const CALLS: &[CallDescriptor] = &[
    CallDescriptor {
        feature: Some(Features::CONSOLE),
        args: &[
            arg(
                "length",
                ArgCheck::Range {
                    min: 0,
                    max: CONSOLE_REGS_MAX,
                },
                "Number of bytes, 0 to 32.",
            ),
            arg("bytes0", ArgCheck::Any, "Bytes 0..8, little-endian."),
            arg("bytes1", ArgCheck::Any, "Bytes 8..16."),
            arg("bytes2", ArgCheck::Any, "Bytes 16..24."),
            arg("bytes3", ArgCheck::Any, "Bytes 24..32."),
        ],
        results: &[res("written", "Bytes written.")],
        batchable: true,
        ..plain(
            Call::ConsoleWriteRegs,
            "CONSOLE_WRITE_REGS",
            "Writes up to 32 bytes passed in registers to the console.",
        )
    },
    CallDescriptor {
        feature: Some(Features::CONSOLE),
        args: &[
            arg(
                "buffer",
                ArgCheck::Any,
                "Guest-physical address of the bytes.",
            ),
            arg(
                "length",
                ArgCheck::Range {
                    min: 0,
                    max: CONSOLE_WRITE_MAX,
                },
                "Number of bytes, 0 to 4096.",
            ),
        ],
        results: &[res("written", "Bytes written.")],
        block: Some(BlockDesc {
            addr_arg: 0,
            align: 1,
            kind: BlockKind::Bytes {
                len_arg: 1,
                max: CONSOLE_WRITE_MAX,
            },
        }),
        batchable: true,
        ..plain(
            Call::ConsoleWrite,
            "CONSOLE_WRITE",
            "Writes a buffer in guest memory to the console.",
        )
    },
];
