/*
 * pvabi_call.h: the x86-64 pieces a C guest needs besides include/pvabi.h: the CPUID scan
 * that finds pvabi and the doorbell hypercall stub.
 *
 * Everything here follows the specification (spec/text/discovery.md and convention.md) and
 * uses only the constants of the generated header. It needs GCC or Clang (GNU inline
 * assembly) and nothing from a C library. SPDX-License-Identifier: MIT OR Apache-2.0
 */
#ifndef PVABI_CALL_H
#define PVABI_CALL_H

#include <stdint.h>

#include "pvabi.h"

/* ------------------------------------------------------------------------------------------
 * The hypercall: the doorbell binding (convention.md, "The doorbell binding").
 *
 *   rax        call code in (bits 63:32 clear, PVABI-CONV-001), status out
 *   rdi rsi r8 r9 r10 r11   arguments a0..a5
 *   rdi rsi r8 r9           results r0..r3 (they replace a0..a3)
 *   dx         the doorbell port from the transport CPUID leaf (PVABI-DISC-008)
 *   out dx, eax             a 4-byte port write (PVABI_DOORBELL_WIDTH)
 *
 * The host preserves every other register, rbx, rcx, rdx, r10 and r11 included
 * (PVABI-CONV-005); only rax, the four result registers and the status flags change. So the
 * stub declares rax, rdi, rsi, r8 and r9 as in/out, r10, r11 and dx as inputs, and clobbers
 * "cc" and "memory" (the host reads and writes guest memory: memory blocks, the time page,
 * the event queue). rbx plays no part in the convention.
 *
 * (The stub is not called pvabi_call: pvabi.h uses that name for the call-code type.)
 *
 * `out` (may be NULL) receives the four result registers. Read them only when the status is
 * PVABI_STATUS_SUCCESS, and only those the call defines (PVABI-CONV-006, PVABI-STAT-006).
 * ------------------------------------------------------------------------------------------ */
static inline uint64_t pvabi_hypercall(uint16_t port, uint64_t code, uint64_t a0, uint64_t a1,
                                       uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5,
                                       uint64_t out[PVABI_MAX_RESULTS])
{
    register uint64_t r8 __asm__("r8") = a2;
    register uint64_t r9 __asm__("r9") = a3;
    register uint64_t r10 __asm__("r10") = a4;
    register uint64_t r11 __asm__("r11") = a5;
    uint64_t rax = code & 0xffffffffu;

    __asm__ __volatile__("outl %%eax, %%dx"
                         : "+a"(rax), "+D"(a0), "+S"(a1), "+r"(r8), "+r"(r9)
                         : "d"(port), "r"(r10), "r"(r11)
                         : "cc", "memory");
    if (out) {
        out[0] = a0;
        out[1] = a1;
        out[2] = r8;
        out[3] = r9;
    }
    return rax;
}

/* ------------------------------------------------------------------------------------------
 * Discovery (discovery.md).
 * ------------------------------------------------------------------------------------------ */

/* CPUID with a sub-leaf; returns eax, ebx, ecx, edx in r[0..3]. */
static inline void pvabi_cpuid(uint32_t leaf, uint32_t subleaf, uint32_t r[4])
{
    uint32_t a, b, c, d;
    __asm__ __volatile__("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(leaf), "c"(subleaf));
    r[0] = a;
    r[1] = b;
    r[2] = c;
    r[3] = d;
}

/* What the pvabi CPUID leaves say. */
struct pvabi_discovery {
    uint32_t base;             /* B: the signature leaf */
    uint32_t max_leaf;         /* eax of the signature leaf: B + the highest offset */
    uint32_t highest_version;  /* version leaf eax (major << 16 | minor) */
    uint32_t lowest_version;   /* version leaf ebx */
    uint64_t offered_hint;     /* version leaf ecx | edx << 32: a hint, PVABI-DISC-006 */
    uint16_t doorbell_port;    /* transport leaf eax[15:0] */
    uint16_t ring_notify_port; /* transport leaf eax[31:16] */
    uint32_t transport_flags;  /* transport leaf ebx */
    uint32_t vcpus;            /* limits leaf edx (0 if the host has no limits leaf) */
};

/*
 * Finds pvabi. Returns 1 and fills *d, or 0 when pvabi is absent (or when the signature leaf
 * announces no transport leaf, without which no call can be made).
 *
 * PVABI-DISC-003: no hypervisor bit, no scan. PVABI-DISC-002: scan the candidate bases in
 * increasing order and take the first with the signature; never assume the first base.
 * PVABI-DISC-004: read no leaf above the one named in eax of the signature leaf.
 */
static inline int pvabi_discover(struct pvabi_discovery *d)
{
    uint32_t r[4];

    pvabi_cpuid(1, 0, r);
    if (!(r[2] & (UINT32_C(1) << 31)))
        return 0;

    for (uint32_t k = 0; k < PVABI_CPUID_BASE_COUNT; k++) {
        uint32_t base = PVABI_CPUID_FIRST_BASE + k * PVABI_CPUID_BASE_STRIDE;

        pvabi_cpuid(base + PVABI_CPUID_LEAF_SIGNATURE, 0, r);
        if (r[1] != PVABI_SIGNATURE_EBX || r[2] != PVABI_SIGNATURE_ECX ||
            r[3] != PVABI_SIGNATURE_EDX)
            continue;

        d->base = base;
        d->max_leaf = r[0];
        if (d->max_leaf < base + PVABI_CPUID_LEAF_TRANSPORT)
            return 0;

        pvabi_cpuid(base + PVABI_CPUID_LEAF_VERSION, 0, r);
        d->highest_version = r[0];
        d->lowest_version = r[1];
        d->offered_hint = (uint64_t)r[2] | (uint64_t)r[3] << 32;

        pvabi_cpuid(base + PVABI_CPUID_LEAF_TRANSPORT, 0, r);
        d->doorbell_port = (uint16_t)(r[0] & 0xffff);
        d->ring_notify_port = (uint16_t)(r[0] >> 16);
        d->transport_flags = r[1];

        d->vcpus = 0;
        if (d->max_leaf >= base + PVABI_CPUID_LEAF_LIMITS) {
            pvabi_cpuid(base + PVABI_CPUID_LEAF_LIMITS, 0, r);
            d->vcpus = r[3];
        }
        return 1;
    }
    return 0;
}

#endif /* PVABI_CALL_H */
