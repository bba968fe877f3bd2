//! Spec chapter "System family": shutdown, reboot and crash report.

use crate::calls::{arg, plain, ArgCheck, BlockDesc, BlockKind, Call, CallDescriptor};
use crate::features::Features;

/// The most bytes of a crash message.
pub const CRASH_MESSAGE_MAX: u64 = 4096;

/// The System family's calls.
pub const CALLS: &[CallDescriptor] = &[
    CallDescriptor {
        feature: Some(Features::SYSTEM),
        args: &[arg(
            "code",
            ArgCheck::Mask(0xffff_ffff),
            "Exit code (32 bits; bits 63:32 reserved).",
        )],
        sync_point: true,
        returns: false,
        ..plain(
            Call::SystemShutdown,
            "SYSTEM_SHUTDOWN",
            "Powers the VM off with an exit code.",
        )
    },
    CallDescriptor {
        feature: Some(Features::SYSTEM),
        sync_point: true,
        returns: false,
        ..plain(Call::SystemReboot, "SYSTEM_REBOOT", "Reboots the VM.")
    },
    CallDescriptor {
        feature: Some(Features::SYSTEM),
        args: &[
            arg(
                "message",
                ArgCheck::Any,
                "Guest-physical address of the message bytes.",
            ),
            arg(
                "length",
                ArgCheck::Range {
                    min: 0,
                    max: CRASH_MESSAGE_MAX,
                },
                "Message length, 0 to 4096.",
            ),
        ],
        block: Some(BlockDesc {
            addr_arg: 0,
            align: 1,
            kind: BlockKind::Bytes {
                len_arg: 1,
                max: CRASH_MESSAGE_MAX,
            },
        }),
        sync_point: true,
        returns: false,
        ..plain(
            Call::SystemCrash,
            "SYSTEM_CRASH",
            "Reports a guest crash with a message and ends the VM.",
        )
    },
];
