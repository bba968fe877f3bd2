/*
 * pvabi.h: the pvabi paravirtual hypercall interface for x86-64 guests.
 *
 * Generated from the ABI crate (abi/) by cbindgen through `pvabi header`. Do not edit:
 * change the crate and regenerate. SPDX-License-Identifier: MIT OR Apache-2.0
 */

#ifndef PVABI_H
#define PVABI_H

#include <stdint.h>
#include <stddef.h>

/**
 * The interface signature, in ebx, ecx, edx of the signature leaf.
 * As a string literal: its 12 characters, then the NUL that the registers do not hold.
 */
#define PVABI_SIGNATURE "pvabi-x86-64"

/**
 * The implementation id of the pvabi reference host.
 */
#define PVABI_IMPL_ID_REFERENCE 0x1u

/**
 * Implementation ids from this value up are free for vendors to choose.
 */
#define PVABI_IMPL_ID_VENDOR_FIRST 0x80000000u

/**
 * The bits of NEGOTIATE's `requested` argument that carry a version; bits 63:32 are reserved.
 */
#define PVABI_NEGOTIATE_REQUESTED_MASK 0xffffffffull

/**
 * NEGOTIATE defines no flag in this version: `flags` must be zero.
 */
#define PVABI_NEGOTIATE_FLAGS_MASK 0x0ull

/**
 * The most entries one MULTICALL takes (one page of entries, rounded down to a power of two).
 */
#define PVABI_MULTICALL_MAX_ENTRIES 32

/**
 * MULTICALL flag: stop at the first entry whose status is not SUCCESS.
 */
#define PVABI_MULTICALL_STOP_ON_ERROR (1 << 0)

/**
 * The MULTICALL flags this version defines.
 */
#define PVABI_MULTICALL_FLAGS_VALID PVABI_MULTICALL_STOP_ON_ERROR

/**
 * The entries on one page of a MULTICALL_PAGES batch: as many 96-byte entries as fit in
 * 4096 bytes (since 1.3).
 */
#define PVABI_MULTICALL_PAGE_ENTRIES 42

/**
 * The most entries one MULTICALL_PAGES takes (since 1.3).
 */
#define PVABI_MULTICALL_PAGES_MAX_ENTRIES 4096

/**
 * The most pages one MULTICALL_PAGES batch is spread over: the pages that
 * [`MULTICALL_PAGES_MAX_ENTRIES`] entries fill, [`MULTICALL_PAGE_ENTRIES`] to a page
 * (since 1.3).
 */
#define PVABI_MULTICALL_PAGES_MAX_PAGES 98

/**
 * Number of entries in a deferred queue.
 */
#define PVABI_DEFERRED_QUEUE_CAPACITY 64

/**
 * Offset of the first entry in the deferred-queue page.
 */
#define PVABI_DEFERRED_ENTRIES_OFFSET 64

/**
 * Number of entries in a submission ring.
 */
#define PVABI_SQ_CAPACITY 32

/**
 * Number of entries in a completion ring.
 */
#define PVABI_CQ_CAPACITY 64

/**
 * Offset of the first entry in a ring page.
 */
#define PVABI_RING_ENTRIES_OFFSET 64

/**
 * `RingHeader::flags` of the submission ring: the polling host is asleep; ring the doorbell.
 */
#define PVABI_SQ_NEED_WAKEUP (1 << 0)

/**
 * `RingSetup::flags`: post a RING_COMPLETION event when completions are written.
 */
#define PVABI_RING_COMPLETION_EVENTS (1 << 0)

/**
 * The `RingSetup::flags` this version defines.
 */
#define PVABI_RING_FLAGS_VALID PVABI_RING_COMPLETION_EVENTS

/**
 * The most bytes CONSOLE_WRITE_REGS carries (four registers of eight bytes).
 */
#define PVABI_CONSOLE_REGS_MAX 32

/**
 * The most bytes one CONSOLE_WRITE takes.
 */
#define PVABI_CONSOLE_WRITE_MAX 4096

/**
 * The default doorbell port (advertised in the transport CPUID leaf).
 */
#define PVABI_DOORBELL_PORT 0x5650

/**
 * The default ring-notify port (advertised in the transport CPUID leaf).
 */
#define PVABI_RING_NOTIFY_PORT 0x5654

/**
 * The width, in bytes, of the doorbell access (`out dx, eax`).
 */
#define PVABI_DOORBELL_WIDTH 4

/**
 * The number of argument registers.
 */
#define PVABI_MAX_ARGS 6

/**
 * The number of result registers (besides the status in `rax`).
 */
#define PVABI_MAX_RESULTS 4

/**
 * The size of a page, and the unit of the page-crossing rule.
 */
#define PVABI_PAGE_SIZE 4096

/**
 * The largest memory block a call takes.
 */
#define PVABI_MAX_BLOCK_SIZE 4096

/**
 * The first base a guest scans.
 */
#define PVABI_CPUID_FIRST_BASE 0x40000000u

/**
 * The distance between two candidate bases.
 */
#define PVABI_CPUID_BASE_STRIDE 0x100u

/**
 * The number of candidate bases (`k` runs over `0..CPUID_BASE_COUNT`).
 */
#define PVABI_CPUID_BASE_COUNT 256

/**
 * The last base a guest scans: `CPUID_FIRST_BASE + (CPUID_BASE_COUNT - 1) * CPUID_BASE_STRIDE`.
 */
#define PVABI_CPUID_LAST_BASE 0x4000ff00u

/**
 * Offset of the signature leaf: `eax` = highest pvabi leaf, `ebx:ecx:edx` = [`SIGNATURE`].
 */
#define PVABI_CPUID_LEAF_SIGNATURE 0

/**
 * Offset of the version leaf: `eax` = highest version, `ebx` = lowest version,
 * `ecx`/`edx` = offered features bits 31:0 / 63:32 (a hint; PROBE_FEATURES is authoritative).
 */
#define PVABI_CPUID_LEAF_VERSION 1

/**
 * Offset of the transport leaf: `eax[15:0]` = doorbell port, `eax[31:16]` = ring-notify port,
 * `ebx` = [`TransportFlags`], `ecx` = `edx` = 0.
 */
#define PVABI_CPUID_LEAF_TRANSPORT 2

/**
 * Offset of the limits leaf: `eax` = maximum MULTICALL entries, `ebx` = deferred-queue
 * capacity, `ecx` = submission-ring capacity, `edx` = number of vCPUs.
 */
#define PVABI_CPUID_LEAF_LIMITS 3

/**
 * The highest leaf offset defined by this version (`eax` of the signature leaf is `B + this`).
 */
#define PVABI_CPUID_LEAF_MAX 3

/**
 * [`SIGNATURE`] bytes 0..4 as read from `ebx`.
 */
#define PVABI_SIGNATURE_EBX 0x62617670u

/**
 * [`SIGNATURE`] bytes 4..8 as read from `ecx`.
 */
#define PVABI_SIGNATURE_ECX 0x38782d69u

/**
 * [`SIGNATURE`] bytes 8..12 as read from `edx`.
 */
#define PVABI_SIGNATURE_EDX 0x34362d36u

/**
 * Transport bit: the port-I/O doorbell binding (always set).
 */
#define PVABI_TRANSPORT_PIO (1 << 0)

/**
 * Transport bit: the `vmcall` binding (Intel).
 */
#define PVABI_TRANSPORT_VMCALL (1 << 1)

/**
 * Transport bit: the `vmmcall` binding (AMD).
 */
#define PVABI_TRANSPORT_VMMCALL (1 << 2)

/**
 * Number of entries in an event queue.
 */
#define PVABI_EVENT_QUEUE_CAPACITY 128

/**
 * Offset of the first entry in the queue page.
 */
#define PVABI_EVENT_QUEUE_ENTRIES_OFFSET 64

/**
 * Lowest interrupt vector EVENTS_SET_QUEUE accepts (0 to 31 are CPU exceptions).
 */
#define PVABI_EVENT_VECTOR_MIN 32

/**
 * Highest interrupt vector.
 */
#define PVABI_EVENT_VECTOR_MAX 255

/**
 * The mask bits EVENTS_SET_MASK accepts: one bit per [`EventKind`] (bit `kind`).
 */
#define PVABI_EVENT_MASK_VALID 0x1eull

/**
 * The console family (debug console output).
 */
#define PVABI_FEATURE_CONSOLE (1ull << 0)

/**
 * The time family (clocks, shared time page, one-shot timer).
 */
#define PVABI_FEATURE_TIME (1ull << 1)

/**
 * The events family (shared event queue, masking, coalesced interrupts).
 */
#define PVABI_FEATURE_EVENTS (1ull << 2)

/**
 * The memory family (sharing, ballooning, page-table updates, TLB flushes).
 */
#define PVABI_FEATURE_MEMORY (1ull << 3)

/**
 * The vCPU family (start, stop, yield, halt, kick).
 */
#define PVABI_FEATURE_VCPU (1ull << 4)

/**
 * The system family (shutdown, reboot, crash report).
 */
#define PVABI_FEATURE_SYSTEM (1ull << 5)

/**
 * MULTICALL: batches of calls with per-entry status.
 */
#define PVABI_FEATURE_MULTICALL (1ull << 6)

/**
 * The per-vCPU deferred queue.
 */
#define PVABI_FEATURE_DEFERRED (1ull << 7)

/**
 * The exitless submission/completion ring pair.
 */
#define PVABI_FEATURE_RING (1ull << 8)

/**
 * The per-vCPU steal-time page (since 1.1).
 */
#define PVABI_FEATURE_STEAL_TIME (1ull << 9)

/**
 * MULTICALL_PAGES: batches of up to 4096 entries given as a list of pages (since 1.3).
 */
#define PVABI_FEATURE_MULTICALL_PAGES (1ull << 10)

/**
 * The most page frame numbers one balloon call takes (one page of `u64`s).
 */
#define PVABI_BALLOON_MAX_PFNS 512

/**
 * The most pages one TLB range flush names.
 */
#define PVABI_FLUSH_RANGE_MAX_PAGES 512

/**
 * The most pages one share or unshare call names.
 */
#define PVABI_SHARE_MAX_PAGES (1 << 20)

/**
 * 2.0 preview, not a released ABI: `TimePageV2::flags`, the TSC fields are valid.
 */
#define PVABI_TIME_PAGE_V2_TSC_VALID (1 << 0)

/**
 * The most bytes of a crash message.
 */
#define PVABI_CRASH_MESSAGE_MAX 4096

/**
 * `TimePage::flags`: the TSC fields are valid and may be used to interpolate. A host sets it
 * only while every vCPU's TSC advances at one constant rate from a common origin
 * (PVABI-TIME-011), with a `tsc_timestamp` the counters had reached before the update and
 * fresh values at least every 10 ms (PVABI-TIME-036, PVABI-TIME-037).
 */
#define PVABI_TIME_PAGE_TSC_VALID (1 << 0)

/**
 * The major number of this release of the specification.
 */
#define PVABI_VERSION_MAJOR 1

/**
 * The minor number of this release of the specification.
 */
#define PVABI_VERSION_MINOR 3

/**
 * This release of the specification, `VERSION_MAJOR << 16 | VERSION_MINOR`.
 */
#define PVABI_SPEC_VERSION 0x10003u

/**
 * How the host learns of new submissions.
 */
enum pvabi_ring_mode
#if defined(__cplusplus) || __STDC_VERSION__ >= 202311L
  : uint32_t
#endif // defined(__cplusplus) || __STDC_VERSION__ >= 202311L
 {
  /**
   * The guest calls RING_ENTER or writes the ring-notify port.
   */
  PVABI_RING_MODE_DOORBELL = 0,
  /**
   * A host thread polls the submission ring; the guest rings only when `SQ_NEED_WAKEUP`.
   */
  PVABI_RING_MODE_HOST_POLLED = 1,
};
#ifndef __cplusplus
#if __STDC_VERSION__ >= 202311L
typedef enum pvabi_ring_mode pvabi_ring_mode;
#else
typedef uint32_t pvabi_ring_mode;
#endif // __STDC_VERSION__ >= 202311L
#endif // __cplusplus

/**
 * Every call code defined by this version.
 */
enum pvabi_call
#if defined(__cplusplus) || __STDC_VERSION__ >= 202311L
  : uint32_t
#endif // defined(__cplusplus) || __STDC_VERSION__ >= 202311L
 {
  /**
   * Base: the spec versions served and negotiated.
   */
  PVABI_CALL_GET_SPEC_VERSION = 0,
  /**
   * Base: the implementation's identity.
   */
  PVABI_CALL_GET_IMPL_ID = 1,
  /**
   * Base: the implementation's version.
   */
  PVABI_CALL_GET_IMPL_VERSION = 2,
  /**
   * Base: whether a call is implemented and callable.
   */
  PVABI_CALL_PROBE_CALL = 3,
  /**
   * Base: offered and granted features.
   */
  PVABI_CALL_PROBE_FEATURES = 4,
  /**
   * Base: the version and feature handshake.
   */
  PVABI_CALL_NEGOTIATE = 5,
  /**
   * Console: write up to 32 bytes passed in registers.
   */
  PVABI_CALL_CONSOLE_WRITE_REGS = 256,
  /**
   * Console: write a buffer in guest memory.
   */
  PVABI_CALL_CONSOLE_WRITE = 257,
  /**
   * Time: monotonic nanoseconds.
   */
  PVABI_CALL_TIME_MONOTONIC = 512,
  /**
   * Time: wall-clock time.
   */
  PVABI_CALL_TIME_WALLCLOCK = 513,
  /**
   * Time: TSC frequency and timer resolution.
   */
  PVABI_CALL_TIME_FREQUENCY = 514,
  /**
   * Time: register the shared time page.
   */
  PVABI_CALL_TIME_SET_PAGE = 515,
  /**
   * Time: arm or cancel the one-shot timer.
   */
  PVABI_CALL_TIME_SET_TIMER = 516,
  /**
   * Time: register the calling vCPU's steal-time page (since 1.1).
   */
  PVABI_CALL_TIME_SET_STEAL_PAGE = 517,
  /**
   * Events: register the event queue.
   */
  PVABI_CALL_EVENTS_SET_QUEUE = 768,
  /**
   * Events: set the event mask.
   */
  PVABI_CALL_EVENTS_SET_MASK = 769,
  /**
   * Events: send a user event to a vCPU.
   */
  PVABI_CALL_EVENTS_SEND = 770,
  /**
   * Memory: share pages with the host.
   */
  PVABI_CALL_MEM_SHARE = 1024,
  /**
   * Memory: stop sharing pages.
   */
  PVABI_CALL_MEM_UNSHARE = 1025,
  /**
   * Memory: give pages back to the host.
   */
  PVABI_CALL_MEM_BALLOON_RELEASE = 1026,
  /**
   * Memory: take released pages back.
   */
  PVABI_CALL_MEM_BALLOON_RECLAIM = 1027,
  /**
   * Memory: write a page-table entry.
   */
  PVABI_CALL_MEM_UPDATE_PTE = 1028,
  /**
   * Memory: flush the caller's TLB.
   */
  PVABI_CALL_MEM_FLUSH_TLB_LOCAL = 1029,
  /**
   * Memory: flush a virtual range on every vCPU.
   */
  PVABI_CALL_MEM_FLUSH_TLB_RANGE = 1030,
  /**
   * Memory: flush every vCPU's TLB.
   */
  PVABI_CALL_MEM_FLUSH_TLB_ALL = 1031,
  /**
   * vCPU: the caller's index and the vCPU count.
   */
  PVABI_CALL_VCPU_INFO = 1280,
  /**
   * vCPU: start a secondary vCPU.
   */
  PVABI_CALL_VCPU_START = 1281,
  /**
   * vCPU: stop the calling vCPU.
   */
  PVABI_CALL_VCPU_STOP = 1282,
  /**
   * vCPU: yield the physical CPU.
   */
  PVABI_CALL_VCPU_YIELD = 1283,
  /**
   * vCPU: halt until an event.
   */
  PVABI_CALL_VCPU_HALT = 1284,
  /**
   * vCPU: wake another vCPU.
   */
  PVABI_CALL_VCPU_KICK = 1285,
  /**
   * System: power off.
   */
  PVABI_CALL_SYSTEM_SHUTDOWN = 1536,
  /**
   * System: reboot.
   */
  PVABI_CALL_SYSTEM_REBOOT = 1537,
  /**
   * System: report a crash with a message.
   */
  PVABI_CALL_SYSTEM_CRASH = 1538,
  /**
   * Batch: run a batch of calls.
   */
  PVABI_CALL_MULTICALL = 1792,
  /**
   * Batch: register the deferred queue.
   */
  PVABI_CALL_DEFER_SET_QUEUE = 1793,
  /**
   * Batch: drain the deferred queue.
   */
  PVABI_CALL_DEFER_FLUSH = 1794,
  /**
   * Batch: register the submission/completion rings.
   */
  PVABI_CALL_RING_SETUP = 1795,
  /**
   * Batch: process the submission ring now.
   */
  PVABI_CALL_RING_ENTER = 1796,
  /**
   * Batch: run a batch of calls whose entries are on a list of pages (since 1.3).
   */
  PVABI_CALL_MULTICALL_PAGES = 1797,
};
#ifndef __cplusplus
#if __STDC_VERSION__ >= 202311L
typedef enum pvabi_call pvabi_call;
#else
typedef uint32_t pvabi_call;
#endif // __STDC_VERSION__ >= 202311L
#endif // __cplusplus

/**
 * What PROBE_CALL reports about a call.
 */
enum pvabi_call_state
#if defined(__cplusplus) || __STDC_VERSION__ >= 202311L
  : uint32_t
#endif // defined(__cplusplus) || __STDC_VERSION__ >= 202311L
 {
  /**
   * The implementation does not implement the call.
   */
  PVABI_CALL_STATE_ABSENT = 0,
  /**
   * Implemented, but not callable now: NEGOTIATE has not granted its feature.
   */
  PVABI_CALL_STATE_AVAILABLE = 1,
  /**
   * Callable now.
   */
  PVABI_CALL_STATE_READY = 2,
};
#ifndef __cplusplus
#if __STDC_VERSION__ >= 202311L
typedef enum pvabi_call_state pvabi_call_state;
#else
typedef uint32_t pvabi_call_state;
#endif // __STDC_VERSION__ >= 202311L
#endif // __cplusplus

/**
 * The kinds of event.
 */
enum pvabi_event_kind
#if defined(__cplusplus) || __STDC_VERSION__ >= 202311L
  : uint32_t
#endif // defined(__cplusplus) || __STDC_VERSION__ >= 202311L
 {
  /**
   * The vCPU's one-shot timer expired (`data`: the deadline).
   */
  PVABI_EVENT_KIND_TIMER = 1,
  /**
   * Another vCPU kicked this one (`source`: the kicker).
   */
  PVABI_EVENT_KIND_KICK = 2,
  /**
   * EVENTS_SEND from vCPU `source` with `data`.
   */
  PVABI_EVENT_KIND_USER = 3,
  /**
   * Ring completions are waiting (`data`: the completion-ring tail).
   */
  PVABI_EVENT_KIND_RING_COMPLETION = 4,
};
#ifndef __cplusplus
#if __STDC_VERSION__ >= 202311L
typedef enum pvabi_event_kind pvabi_event_kind;
#else
typedef uint32_t pvabi_event_kind;
#endif // __STDC_VERSION__ >= 202311L
#endif // __cplusplus

/**
 * A call family: one chapter of the spec.
 */
enum pvabi_family
#if defined(__cplusplus) || __STDC_VERSION__ >= 202311L
  : uint8_t
#endif // defined(__cplusplus) || __STDC_VERSION__ >= 202311L
 {
  /**
   * Base: always present, works before negotiation.
   */
  PVABI_FAMILY_BASE = 0,
  /**
   * Console output.
   */
  PVABI_FAMILY_CONSOLE = 1,
  /**
   * Time.
   */
  PVABI_FAMILY_TIME = 2,
  /**
   * Events.
   */
  PVABI_FAMILY_EVENTS = 3,
  /**
   * Memory.
   */
  PVABI_FAMILY_MEMORY = 4,
  /**
   * vCPU control.
   */
  PVABI_FAMILY_VCPU = 5,
  /**
   * System control.
   */
  PVABI_FAMILY_SYSTEM = 6,
  /**
   * Batching, deferral and rings.
   */
  PVABI_FAMILY_BATCH = 7,
};
#ifndef __cplusplus
#if __STDC_VERSION__ >= 202311L
typedef enum pvabi_family pvabi_family;
#else
typedef uint8_t pvabi_family;
#endif // __STDC_VERSION__ >= 202311L
#endif // __cplusplus

/**
 * The status of a call (`rax` after the call; `status` fields in batch entries).
 */
enum pvabi_status
#if defined(__cplusplus) || __STDC_VERSION__ >= 202311L
  : uint32_t
#endif // defined(__cplusplus) || __STDC_VERSION__ >= 202311L
 {
  /**
   * The call completed.
   */
  PVABI_STATUS_SUCCESS = 0,
  /**
   * The call code is unknown, or this implementation does not implement the call.
   */
  PVABI_STATUS_NOT_SUPPORTED = 1,
  /**
   * A call outside the Base family was made before NEGOTIATE succeeded.
   */
  PVABI_STATUS_NOT_NEGOTIATED = 2,
  /**
   * The feature the call belongs to was not granted by NEGOTIATE.
   */
  PVABI_STATUS_NOT_GRANTED = 3,
  /**
   * The call was made where its descriptor forbids it: a non-batchable call in a batch or a
   * ring, a nested MULTICALL, or a call without a deferral class in the deferred queue.
   */
  PVABI_STATUS_NOT_ALLOWED_HERE = 4,
  /**
   * A register argument or a field of a memory block is out of range, or a reserved bit or
   * field is not zero.
   */
  PVABI_STATUS_INVALID_PARAMETER = 5,
  /**
   * A memory block is not aligned to its required alignment.
   */
  PVABI_STATUS_MISALIGNED = 6,
  /**
   * A memory block crosses a 4 KiB page boundary.
   */
  PVABI_STATUS_CROSSES_PAGE = 7,
  /**
   * A memory block or a referenced guest-physical page is not guest RAM.
   */
  PVABI_STATUS_INVALID_ADDRESS = 8,
  /**
   * A memory block overlaps a page the host owns (a registered shared page).
   */
  PVABI_STATUS_ACCESS_DENIED = 9,
  /**
   * NEGOTIATE: the requested major version is not served, or its minimum minor is too high.
   */
  PVABI_STATUS_VERSION_UNSUPPORTED = 10,
  /**
   * NEGOTIATE: a required feature is not offered.
   */
  PVABI_STATUS_FEATURE_UNAVAILABLE = 11,
  /**
   * NEGOTIATE was already completed; the result is locked.
   */
  PVABI_STATUS_LOCKED = 12,
  /**
   * The call is not valid in the current state (for example, starting a running vCPU).
   */
  PVABI_STATUS_INVALID_STATE = 13,
  /**
   * A queue or ring is full; the call may succeed if retried later.
   */
  PVABI_STATUS_BUSY = 14,
  /**
   * The host lacks the resources to complete the call.
   */
  PVABI_STATUS_NO_RESOURCES = 15,
  /**
   * A long call was preempted; re-issue it with the resume index it returned.
   */
  PVABI_STATUS_INCOMPLETE = 16,
};
#ifndef __cplusplus
#if __STDC_VERSION__ >= 202311L
typedef enum pvabi_status pvabi_status;
#else
typedef uint32_t pvabi_status;
#endif // __STDC_VERSION__ >= 202311L
#endif // __cplusplus

/**
 * Why VCPU_HALT returned.
 */
enum pvabi_wake_reason
#if defined(__cplusplus) || __STDC_VERSION__ >= 202311L
  : uint32_t
#endif // defined(__cplusplus) || __STDC_VERSION__ >= 202311L
 {
  /**
   * An event is pending for the vCPU (in its queue, or latched when it has none).
   */
  PVABI_WAKE_REASON_EVENT = 1,
  /**
   * The timeout passed.
   */
  PVABI_WAKE_REASON_TIMEOUT = 2,
};
#ifndef __cplusplus
#if __STDC_VERSION__ >= 202311L
typedef enum pvabi_wake_reason pvabi_wake_reason;
#else
typedef uint32_t pvabi_wake_reason;
#endif // __STDC_VERSION__ >= 202311L
#endif // __cplusplus

/**
 * The shared time page, at offset 0 of the page registered with TIME_SET_PAGE.
 *
 * The host updates it under a sequence lock: it makes `sequence` odd, writes the other
 * fields, then makes `sequence` even again. A reader retries while `sequence` is odd or
 * changed during its read (PVABI-TIME-014).
 *
 * When `flags` has [`TIME_PAGE_TSC_VALID`], the monotonic time at TSC value `tsc` is, in C,
 * for a consistent snapshot `t` (a `const pvabi_time_page *`): the TSC delta wraps at 64 bits
 * and the product of the shifted delta and `tsc_mul` keeps 96 bits (PVABI-TIME-015). The
 * shifts are defined C for `tsc_shift` from -63 to 63.
 *
 * ```c
 * uint64_t delta = tsc - t->tsc_timestamp;
 * delta = t->tsc_shift >= 0 ? delta << t->tsc_shift : delta >> -t->tsc_shift;
 * uint64_t now_ns = t->monotonic_ns + (uint64_t)(((unsigned __int128)delta * t->tsc_mul) >> 32);
 * ```
 *
 * Without `unsigned __int128`, the same 96-bit product from two 64-bit ones:
 *
 * ```c
 * uint64_t delta = tsc - t->tsc_timestamp;
 * delta = t->tsc_shift >= 0 ? delta << t->tsc_shift : delta >> -t->tsc_shift;
 * uint64_t now_ns = t->monotonic_ns + (delta >> 32) * t->tsc_mul
 *                   + (((delta & 0xffffffffu) * t->tsc_mul) >> 32);
 * ```
 */
typedef struct pvabi_time_page {
  /**
   * Sequence lock: odd while the host updates the page.
   */
  uint32_t sequence;
  /**
   * `TIME_PAGE_*` flags.
   */
  uint32_t flags;
  /**
   * Monotonic nanoseconds at `tsc_timestamp`.
   */
  uint64_t monotonic_ns;
  /**
   * TSC value at the last update.
   */
  uint64_t tsc_timestamp;
  /**
   * Wall-clock seconds since the Unix epoch at `tsc_timestamp`.
   */
  uint64_t wallclock_sec;
  /**
   * Nanoseconds part of the wall clock (0 to 999 999 999).
   */
  uint32_t wallclock_nsec;
  /**
   * Shift applied to a TSC delta before `tsc_mul` (negative: right shift).
   */
  int32_t tsc_shift;
  /**
   * Multiplier, in 2^-32 nanoseconds per (shifted) TSC tick.
   */
  uint32_t tsc_mul;
  /**
   * Reserved, written as 0 by the host.
   */
  uint32_t reserved0;
  /**
   * Reserved, written as 0 by the host.
   */
  uint64_t reserved[2];
} pvabi_time_page;

/**
 * The steal-time page, at offset 0 of the page a vCPU registers with TIME_SET_STEAL_PAGE
 * (since 1.1). The host updates it under the same sequence lock as [`TimePage`].
 *
 * `steal_ns` counts the nanoseconds the vCPU was ready to run guest code but the host was
 * doing something else for it or for others. The guest did not ask for that time: it
 * excludes VCPU_HALT, VCPU_YIELD and the other calls that wait on the guest's behalf.
 * It never decreases.
 */
typedef struct pvabi_steal_time_page {
  /**
   * Sequence lock: odd while the host updates the page.
   */
  uint32_t sequence;
  /**
   * Reserved, written as 0 by the host.
   */
  uint32_t flags;
  /**
   * Nanoseconds stolen from this vCPU since the page was registered.
   */
  uint64_t steal_ns;
  /**
   * Number of times the vCPU was held up (each exit the host handled for it).
   */
  uint64_t preemptions;
  /**
   * Reserved, written as 0 by the host.
   */
  uint64_t reserved[5];
} pvabi_steal_time_page;

/**
 * The header of an event-queue page.
 */
typedef struct pvabi_event_queue_header {
  /**
   * Guest-written: index of the next entry the guest will consume.
   */
  uint32_t head;
  /**
   * Host-written: index of the next entry the host will write.
   */
  uint32_t tail;
  /**
   * Host-written: number of entries ([`EVENT_QUEUE_CAPACITY`]).
   */
  uint32_t capacity;
  /**
   * 1 after the host raised the interrupt; the guest writes 0 to re-arm it.
   */
  uint32_t interrupt_pending;
  /**
   * Host-written: events dropped because the queue was full.
   */
  uint32_t dropped;
  /**
   * Reserved.
   */
  uint32_t reserved[11];
} pvabi_event_queue_header;

/**
 * One event-queue entry.
 */
typedef struct pvabi_event {
  /**
   * An [`EventKind`] value.
   */
  uint32_t kind;
  /**
   * The vCPU the event came from (or the index of the vCPU that owns the timer).
   */
  uint32_t source;
  /**
   * Kind-specific data.
   */
  uint64_t data;
} pvabi_event;

/**
 * The state a secondary vCPU starts in (VCPU_START's memory block). The vCPU starts in
 * 64-bit mode with the boot segments, at `rip`, with `rsp`, `rdi = arg`, interrupts disabled.
 */
typedef struct pvabi_vcpu_start_state {
  /**
   * Instruction pointer.
   */
  uint64_t rip;
  /**
   * Stack pointer.
   */
  uint64_t rsp;
  /**
   * Value of `rdi` at entry.
   */
  uint64_t arg;
  /**
   * Page-table root; 0 = the page tables the boot vCPU started with.
   */
  uint64_t cr3;
  /**
   * Reserved, must be 0.
   */
  uint64_t flags;
  /**
   * Reserved, must be 0.
   */
  uint64_t reserved[3];
} pvabi_vcpu_start_state;

/**
 * One MULTICALL entry.
 */
typedef struct pvabi_multicall_entry {
  /**
   * The call code.
   */
  uint32_t call;
  /**
   * Written by the host: the entry's status.
   */
  uint32_t status;
  /**
   * Reserved, must be 0.
   */
  uint32_t flags;
  /**
   * Reserved, must be 0.
   */
  uint32_t reserved;
  /**
   * Arguments `a0` to `a5`.
   */
  uint64_t args[6];
  /**
   * Written by the host: results `r0` to `r3` (unspecified unless `status` is SUCCESS).
   */
  uint64_t results[4];
} pvabi_multicall_entry;

/**
 * One page of a MULTICALL_PAGES batch (since 1.3): [`MULTICALL_PAGE_ENTRIES`] entries from
 * offset 0, then 64 bytes the host neither reads nor writes. The page is at a 4096-aligned
 * guest-physical address; a batch's last page may hold fewer entries, and the host reads
 * only the entries the batch has.
 */
typedef struct pvabi_multicall_page {
  /**
   * Entries `42 * k` to `42 * k + 41` of the batch, for the page at position `k` of the
   * page list.
   */
  struct pvabi_multicall_entry entries[42];
  /**
   * Not part of the batch: the host neither reads nor writes these bytes.
   */
  uint8_t unused[64];
} pvabi_multicall_page;

/**
 * The header of a deferred-queue page.
 */
typedef struct pvabi_deferred_queue_header {
  /**
   * Host-written: index of the next entry the host will run.
   */
  uint32_t head;
  /**
   * Guest-written: index of the next entry the guest will write.
   */
  uint32_t tail;
  /**
   * Host-written: number of entries ([`DEFERRED_QUEUE_CAPACITY`]).
   */
  uint32_t capacity;
  /**
   * Host-written: entries that failed since registration.
   */
  uint32_t error_count;
  /**
   * Host-written: queue index of the first entry that failed.
   */
  uint32_t first_error_index;
  /**
   * Host-written: status of the first entry that failed.
   */
  uint32_t first_error_status;
  /**
   * Reserved.
   */
  uint32_t reserved[10];
} pvabi_deferred_queue_header;

/**
 * One deferred-queue entry (a call of a deferral class; its results are discarded).
 */
typedef struct pvabi_deferred_entry {
  /**
   * The call code.
   */
  uint32_t call;
  /**
   * Reserved, must be 0.
   */
  uint32_t flags;
  /**
   * Arguments `a0` to `a2`.
   */
  uint64_t args[3];
} pvabi_deferred_entry;

/**
 * RING_SETUP's memory block.
 */
typedef struct pvabi_ring_setup {
  /**
   * Guest-physical address of the submission-ring page (4 KiB-aligned).
   */
  uint64_t sq_page;
  /**
   * Guest-physical address of the completion-ring page (4 KiB-aligned).
   */
  uint64_t cq_page;
  /**
   * A [`RingMode`].
   */
  pvabi_ring_mode mode;
  /**
   * `RING_*` flags.
   */
  uint32_t flags;
  /**
   * Reserved, must be 0.
   */
  uint64_t reserved;
} pvabi_ring_setup;

/**
 * The header of a submission-ring or completion-ring page. In the submission ring the guest
 * writes `tail` and the host writes `head`; in the completion ring it is the other way round.
 */
typedef struct pvabi_ring_header {
  /**
   * Consumer index.
   */
  uint32_t head;
  /**
   * Producer index.
   */
  uint32_t tail;
  /**
   * Host-written: number of entries.
   */
  uint32_t capacity;
  /**
   * Host-written flags (`SQ_NEED_WAKEUP`).
   */
  uint32_t flags;
  /**
   * Host-written: submissions rejected as malformed.
   */
  uint32_t dropped;
  /**
   * Reserved.
   */
  uint32_t reserved[11];
} pvabi_ring_header;

/**
 * One submission.
 */
typedef struct pvabi_submission_entry {
  /**
   * Copied to the completion.
   */
  uint64_t user_data;
  /**
   * The call code.
   */
  uint32_t call;
  /**
   * Reserved, must be 0.
   */
  uint32_t flags;
  /**
   * Arguments `a0` to `a5`.
   */
  uint64_t args[6];
} pvabi_submission_entry;

/**
 * One completion.
 */
typedef struct pvabi_completion_entry {
  /**
   * The submission's `user_data`.
   */
  uint64_t user_data;
  /**
   * The call's status.
   */
  uint32_t status;
  /**
   * Reserved, written as 0.
   */
  uint32_t reserved;
  /**
   * Results `r0` to `r3`.
   */
  uint64_t results[4];
} pvabi_completion_entry;

/**
 * 2.0 preview, not a released ABI: the shared time page in major version 2 (TIME_SET_PAGE
 * writes this layout, instead of `TimePage`'s, only when NEGOTIATE accepted major 2:
 * PVABI-COMPAT-003).
 *
 * The sequence lock works as in 1.x, on a 64-bit counter. When `flags` has
 * [`TIME_PAGE_V2_TSC_VALID`], the monotonic time at TSC value `tsc` is, in C, for a
 * consistent snapshot `t` (a `const pvabi_v2_time_page *`): there is no shift, and the product
 * of the 64-bit delta and the 64-bit `tsc_mul` needs 128 bits.
 *
 * ```c
 * uint64_t delta = tsc - t->tsc_timestamp;
 * uint64_t now_ns = t->monotonic_ns + (uint64_t)(((unsigned __int128)delta * t->tsc_mul) >> 32);
 * ```
 */
typedef struct pvabi_v2_time_page {
  /**
   * Sequence lock: odd while the host updates the page.
   */
  uint64_t sequence;
  /**
   * Monotonic nanoseconds at `tsc_timestamp`.
   */
  uint64_t monotonic_ns;
  /**
   * Wall-clock nanoseconds since the Unix epoch at `tsc_timestamp`.
   */
  uint64_t wallclock_ns;
  /**
   * TSC value at the last update.
   */
  uint64_t tsc_timestamp;
  /**
   * Multiplier, in 2^-32 nanoseconds per TSC tick.
   */
  uint64_t tsc_mul;
  /**
   * `TIME_PAGE_V2_*` flags.
   */
  uint32_t flags;
  /**
   * Reserved, written as 0 by the host.
   */
  uint32_t reserved0;
  /**
   * Reserved, written as 0 by the host.
   */
  uint64_t reserved[2];
} pvabi_v2_time_page;

/**
 * A set of feature bits.
 *
 * ```
 * use pvabi_abi::features::Features;
 * // Bit 40 is unknown to this version, and it is kept.
 * let f = Features::from_bits_retain((1 << 40) | 1);
 * assert!(f.contains(Features::CONSOLE));
 * assert_eq!(f.bits() >> 40, 1);
 * assert_eq!(f.unknown().bits(), 1 << 40);
 * ```
 */
typedef uint64_t pvabi_features;

/**
 * A pvabi specification version, `major << 16 | minor`.
 */
typedef uint32_t pvabi_version;







#endif  /* PVABI_H */


/* Layout assertions, generated from the ABI crate's layout table. */
#ifndef PVABI_H_LAYOUT_ASSERTIONS
#define PVABI_H_LAYOUT_ASSERTIONS
#if defined(__cplusplus)
#define PVABI_STATIC_ASSERT(cond, msg) static_assert(cond, msg)
#elif defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L
#define PVABI_STATIC_ASSERT(cond, msg) _Static_assert(cond, msg)
#else
#define PVABI_STATIC_ASSERT_CAT2(a, b) a##b
#define PVABI_STATIC_ASSERT_CAT(a, b) PVABI_STATIC_ASSERT_CAT2(a, b)
#define PVABI_STATIC_ASSERT(cond, msg) \
  typedef char PVABI_STATIC_ASSERT_CAT(pvabi_static_assert_, __LINE__)[(cond) ? 1 : -1]
#endif

PVABI_STATIC_ASSERT(sizeof(pvabi_time_page) == 64, "size of pvabi_time_page");
PVABI_STATIC_ASSERT(offsetof(pvabi_time_page, sequence) == 0, "offset of pvabi_time_page.sequence");
PVABI_STATIC_ASSERT(offsetof(pvabi_time_page, flags) == 4, "offset of pvabi_time_page.flags");
PVABI_STATIC_ASSERT(offsetof(pvabi_time_page, monotonic_ns) == 8, "offset of pvabi_time_page.monotonic_ns");
PVABI_STATIC_ASSERT(offsetof(pvabi_time_page, tsc_timestamp) == 16, "offset of pvabi_time_page.tsc_timestamp");
PVABI_STATIC_ASSERT(offsetof(pvabi_time_page, wallclock_sec) == 24, "offset of pvabi_time_page.wallclock_sec");
PVABI_STATIC_ASSERT(offsetof(pvabi_time_page, wallclock_nsec) == 32, "offset of pvabi_time_page.wallclock_nsec");
PVABI_STATIC_ASSERT(offsetof(pvabi_time_page, tsc_shift) == 36, "offset of pvabi_time_page.tsc_shift");
PVABI_STATIC_ASSERT(offsetof(pvabi_time_page, tsc_mul) == 40, "offset of pvabi_time_page.tsc_mul");
PVABI_STATIC_ASSERT(offsetof(pvabi_time_page, reserved0) == 44, "offset of pvabi_time_page.reserved0");
PVABI_STATIC_ASSERT(offsetof(pvabi_time_page, reserved) == 48, "offset of pvabi_time_page.reserved");
PVABI_STATIC_ASSERT(sizeof(pvabi_steal_time_page) == 64, "size of pvabi_steal_time_page");
PVABI_STATIC_ASSERT(offsetof(pvabi_steal_time_page, sequence) == 0, "offset of pvabi_steal_time_page.sequence");
PVABI_STATIC_ASSERT(offsetof(pvabi_steal_time_page, flags) == 4, "offset of pvabi_steal_time_page.flags");
PVABI_STATIC_ASSERT(offsetof(pvabi_steal_time_page, steal_ns) == 8, "offset of pvabi_steal_time_page.steal_ns");
PVABI_STATIC_ASSERT(offsetof(pvabi_steal_time_page, preemptions) == 16, "offset of pvabi_steal_time_page.preemptions");
PVABI_STATIC_ASSERT(offsetof(pvabi_steal_time_page, reserved) == 24, "offset of pvabi_steal_time_page.reserved");
PVABI_STATIC_ASSERT(sizeof(pvabi_event_queue_header) == 64, "size of pvabi_event_queue_header");
PVABI_STATIC_ASSERT(offsetof(pvabi_event_queue_header, head) == 0, "offset of pvabi_event_queue_header.head");
PVABI_STATIC_ASSERT(offsetof(pvabi_event_queue_header, tail) == 4, "offset of pvabi_event_queue_header.tail");
PVABI_STATIC_ASSERT(offsetof(pvabi_event_queue_header, capacity) == 8, "offset of pvabi_event_queue_header.capacity");
PVABI_STATIC_ASSERT(offsetof(pvabi_event_queue_header, interrupt_pending) == 12, "offset of pvabi_event_queue_header.interrupt_pending");
PVABI_STATIC_ASSERT(offsetof(pvabi_event_queue_header, dropped) == 16, "offset of pvabi_event_queue_header.dropped");
PVABI_STATIC_ASSERT(offsetof(pvabi_event_queue_header, reserved) == 20, "offset of pvabi_event_queue_header.reserved");
PVABI_STATIC_ASSERT(sizeof(pvabi_event) == 16, "size of pvabi_event");
PVABI_STATIC_ASSERT(offsetof(pvabi_event, kind) == 0, "offset of pvabi_event.kind");
PVABI_STATIC_ASSERT(offsetof(pvabi_event, source) == 4, "offset of pvabi_event.source");
PVABI_STATIC_ASSERT(offsetof(pvabi_event, data) == 8, "offset of pvabi_event.data");
PVABI_STATIC_ASSERT(sizeof(pvabi_vcpu_start_state) == 64, "size of pvabi_vcpu_start_state");
PVABI_STATIC_ASSERT(offsetof(pvabi_vcpu_start_state, rip) == 0, "offset of pvabi_vcpu_start_state.rip");
PVABI_STATIC_ASSERT(offsetof(pvabi_vcpu_start_state, rsp) == 8, "offset of pvabi_vcpu_start_state.rsp");
PVABI_STATIC_ASSERT(offsetof(pvabi_vcpu_start_state, arg) == 16, "offset of pvabi_vcpu_start_state.arg");
PVABI_STATIC_ASSERT(offsetof(pvabi_vcpu_start_state, cr3) == 24, "offset of pvabi_vcpu_start_state.cr3");
PVABI_STATIC_ASSERT(offsetof(pvabi_vcpu_start_state, flags) == 32, "offset of pvabi_vcpu_start_state.flags");
PVABI_STATIC_ASSERT(offsetof(pvabi_vcpu_start_state, reserved) == 40, "offset of pvabi_vcpu_start_state.reserved");
PVABI_STATIC_ASSERT(sizeof(pvabi_multicall_entry) == 96, "size of pvabi_multicall_entry");
PVABI_STATIC_ASSERT(offsetof(pvabi_multicall_entry, call) == 0, "offset of pvabi_multicall_entry.call");
PVABI_STATIC_ASSERT(offsetof(pvabi_multicall_entry, status) == 4, "offset of pvabi_multicall_entry.status");
PVABI_STATIC_ASSERT(offsetof(pvabi_multicall_entry, flags) == 8, "offset of pvabi_multicall_entry.flags");
PVABI_STATIC_ASSERT(offsetof(pvabi_multicall_entry, reserved) == 12, "offset of pvabi_multicall_entry.reserved");
PVABI_STATIC_ASSERT(offsetof(pvabi_multicall_entry, args) == 16, "offset of pvabi_multicall_entry.args");
PVABI_STATIC_ASSERT(offsetof(pvabi_multicall_entry, results) == 64, "offset of pvabi_multicall_entry.results");
PVABI_STATIC_ASSERT(sizeof(pvabi_multicall_page) == 4096, "size of pvabi_multicall_page");
PVABI_STATIC_ASSERT(offsetof(pvabi_multicall_page, entries) == 0, "offset of pvabi_multicall_page.entries");
PVABI_STATIC_ASSERT(offsetof(pvabi_multicall_page, unused) == 4032, "offset of pvabi_multicall_page.unused");
PVABI_STATIC_ASSERT(sizeof(pvabi_deferred_queue_header) == 64, "size of pvabi_deferred_queue_header");
PVABI_STATIC_ASSERT(offsetof(pvabi_deferred_queue_header, head) == 0, "offset of pvabi_deferred_queue_header.head");
PVABI_STATIC_ASSERT(offsetof(pvabi_deferred_queue_header, tail) == 4, "offset of pvabi_deferred_queue_header.tail");
PVABI_STATIC_ASSERT(offsetof(pvabi_deferred_queue_header, capacity) == 8, "offset of pvabi_deferred_queue_header.capacity");
PVABI_STATIC_ASSERT(offsetof(pvabi_deferred_queue_header, error_count) == 12, "offset of pvabi_deferred_queue_header.error_count");
PVABI_STATIC_ASSERT(offsetof(pvabi_deferred_queue_header, first_error_index) == 16, "offset of pvabi_deferred_queue_header.first_error_index");
PVABI_STATIC_ASSERT(offsetof(pvabi_deferred_queue_header, first_error_status) == 20, "offset of pvabi_deferred_queue_header.first_error_status");
PVABI_STATIC_ASSERT(offsetof(pvabi_deferred_queue_header, reserved) == 24, "offset of pvabi_deferred_queue_header.reserved");
PVABI_STATIC_ASSERT(sizeof(pvabi_deferred_entry) == 32, "size of pvabi_deferred_entry");
PVABI_STATIC_ASSERT(offsetof(pvabi_deferred_entry, call) == 0, "offset of pvabi_deferred_entry.call");
PVABI_STATIC_ASSERT(offsetof(pvabi_deferred_entry, flags) == 4, "offset of pvabi_deferred_entry.flags");
PVABI_STATIC_ASSERT(offsetof(pvabi_deferred_entry, args) == 8, "offset of pvabi_deferred_entry.args");
PVABI_STATIC_ASSERT(sizeof(pvabi_ring_setup) == 32, "size of pvabi_ring_setup");
PVABI_STATIC_ASSERT(offsetof(pvabi_ring_setup, sq_page) == 0, "offset of pvabi_ring_setup.sq_page");
PVABI_STATIC_ASSERT(offsetof(pvabi_ring_setup, cq_page) == 8, "offset of pvabi_ring_setup.cq_page");
PVABI_STATIC_ASSERT(offsetof(pvabi_ring_setup, mode) == 16, "offset of pvabi_ring_setup.mode");
PVABI_STATIC_ASSERT(offsetof(pvabi_ring_setup, flags) == 20, "offset of pvabi_ring_setup.flags");
PVABI_STATIC_ASSERT(offsetof(pvabi_ring_setup, reserved) == 24, "offset of pvabi_ring_setup.reserved");
PVABI_STATIC_ASSERT(sizeof(pvabi_ring_header) == 64, "size of pvabi_ring_header");
PVABI_STATIC_ASSERT(offsetof(pvabi_ring_header, head) == 0, "offset of pvabi_ring_header.head");
PVABI_STATIC_ASSERT(offsetof(pvabi_ring_header, tail) == 4, "offset of pvabi_ring_header.tail");
PVABI_STATIC_ASSERT(offsetof(pvabi_ring_header, capacity) == 8, "offset of pvabi_ring_header.capacity");
PVABI_STATIC_ASSERT(offsetof(pvabi_ring_header, flags) == 12, "offset of pvabi_ring_header.flags");
PVABI_STATIC_ASSERT(offsetof(pvabi_ring_header, dropped) == 16, "offset of pvabi_ring_header.dropped");
PVABI_STATIC_ASSERT(offsetof(pvabi_ring_header, reserved) == 20, "offset of pvabi_ring_header.reserved");
PVABI_STATIC_ASSERT(sizeof(pvabi_submission_entry) == 64, "size of pvabi_submission_entry");
PVABI_STATIC_ASSERT(offsetof(pvabi_submission_entry, user_data) == 0, "offset of pvabi_submission_entry.user_data");
PVABI_STATIC_ASSERT(offsetof(pvabi_submission_entry, call) == 8, "offset of pvabi_submission_entry.call");
PVABI_STATIC_ASSERT(offsetof(pvabi_submission_entry, flags) == 12, "offset of pvabi_submission_entry.flags");
PVABI_STATIC_ASSERT(offsetof(pvabi_submission_entry, args) == 16, "offset of pvabi_submission_entry.args");
PVABI_STATIC_ASSERT(sizeof(pvabi_completion_entry) == 48, "size of pvabi_completion_entry");
PVABI_STATIC_ASSERT(offsetof(pvabi_completion_entry, user_data) == 0, "offset of pvabi_completion_entry.user_data");
PVABI_STATIC_ASSERT(offsetof(pvabi_completion_entry, status) == 8, "offset of pvabi_completion_entry.status");
PVABI_STATIC_ASSERT(offsetof(pvabi_completion_entry, reserved) == 12, "offset of pvabi_completion_entry.reserved");
PVABI_STATIC_ASSERT(offsetof(pvabi_completion_entry, results) == 16, "offset of pvabi_completion_entry.results");

/* The 2.0 preview (not a released ABI): a host writes these layouts only for a guest
 * whose NEGOTIATE accepted major 2 (PVABI-COMPAT-003). */
PVABI_STATIC_ASSERT(sizeof(pvabi_v2_time_page) == 64, "size of pvabi_v2_time_page");
PVABI_STATIC_ASSERT(offsetof(pvabi_v2_time_page, sequence) == 0, "offset of pvabi_v2_time_page.sequence");
PVABI_STATIC_ASSERT(offsetof(pvabi_v2_time_page, monotonic_ns) == 8, "offset of pvabi_v2_time_page.monotonic_ns");
PVABI_STATIC_ASSERT(offsetof(pvabi_v2_time_page, wallclock_ns) == 16, "offset of pvabi_v2_time_page.wallclock_ns");
PVABI_STATIC_ASSERT(offsetof(pvabi_v2_time_page, tsc_timestamp) == 24, "offset of pvabi_v2_time_page.tsc_timestamp");
PVABI_STATIC_ASSERT(offsetof(pvabi_v2_time_page, tsc_mul) == 32, "offset of pvabi_v2_time_page.tsc_mul");
PVABI_STATIC_ASSERT(offsetof(pvabi_v2_time_page, flags) == 40, "offset of pvabi_v2_time_page.flags");
PVABI_STATIC_ASSERT(offsetof(pvabi_v2_time_page, reserved0) == 44, "offset of pvabi_v2_time_page.reserved0");
PVABI_STATIC_ASSERT(offsetof(pvabi_v2_time_page, reserved) == 48, "offset of pvabi_v2_time_page.reserved");
#endif /* PVABI_H_LAYOUT_ASSERTIONS */
