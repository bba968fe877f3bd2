/*
 * The pvabi C demo guest: a freestanding x86-64 program, built only from include/pvabi.h,
 * that uses pvabi 1.0 the way a C kernel would.
 *
 *  1. discovery: the CPUID scan, the version and transport leaves (discovery.md);
 *  2. the Base family: GET_SPEC_VERSION, GET_IMPL_ID, PROBE_FEATURES, then NEGOTIATE 1.0
 *     requiring CONSOLE | TIME | EVENTS | SYSTEM, with VCPU optional (base.md);
 *  3. the console, register form and memory form (console.md), and the memory-block rules
 *     (convention.md#memory-blocks) with the status each broken rule gets (status.md);
 *  4. the shared time page, read twice with the sequence lock (time.md#time-page-reader);
 *  5. an event queue and the one-shot timer; the TIMER event is taken through VCPU_HALT when
 *     VCPU is granted, else by polling the queue, and consumed with the drain protocol
 *     (events.md#consuming);
 *  6. SYSTEM_SHUTDOWN(0).
 *
 * Every line it prints starts with "c-demo: ". A failed check prints "c-demo: FAIL: ..." and
 * shuts down with a non-zero code (see enum fail_code). Before the console and SYSTEM are
 * usable the demo cannot report anything: if pvabi is missing it halts with interrupts off,
 * which the reference host reports as a stuck vCPU.
 *
 * The demo has no IDT and keeps interrupts off: it masks every event kind, so the host queues
 * events without raising the queue's interrupt (PVABI-EVT-007), and it looks at the queue
 * itself. SPDX-License-Identifier: MIT OR Apache-2.0
 */
#include <stddef.h>
#include <stdint.h>

#include "pvabi.h"
#include "pvabi_call.h"

/* What the demo needs, and what it uses if it is there. */
#define REQUIRED_FEATURES \
    (PVABI_FEATURE_CONSOLE | PVABI_FEATURE_TIME | PVABI_FEATURE_EVENTS | PVABI_FEATURE_SYSTEM)
#define OPTIONAL_FEATURES PVABI_FEATURE_VCPU

/* NEGOTIATE's `requested`: major 1, minimum minor 0. */
#define REQUESTED_VERSION ((uint64_t)PVABI_VERSION_MAJOR << 16 | 0u)

#define EVENT_VECTOR 0x40u                  /* any of 32..255; never delivered (all masked) */
#define TIMER_DELAY_NS 2000000u             /* the timer fires 2 ms after it is armed */
#define WAIT_LIMIT_NS 2000000000u           /* give up waiting for anything after 2 s */
#define HALT_TIMEOUT_NS 500000000u          /* one VCPU_HALT waits at most 0.5 s */
#define SEQLOCK_TRIES 100000u

/* Exit codes of the failures (SYSTEM_SHUTDOWN's `code`); 0 is success. */
enum fail_code {
    FAIL_DISCOVERY = 1,
    FAIL_BASE = 2,
    FAIL_NEGOTIATE = 3,
    FAIL_CONSOLE = 4,
    FAIL_RULES = 5,
    FAIL_TIME = 6,
    FAIL_EVENTS = 7,
    FAIL_TIMER = 8,
    FAIL_SHUTDOWN = 9,
};

/* Marks "no status to report" for fail(). */
#define NO_STATUS UINT64_MAX

_Noreturn void pvabi_demo_main(uint64_t vcpu, uint64_t mem_bytes, uint64_t vcpu_count);

/* ------------------------------------------------------------------------------------------
 * Shared pages and buffers. Guest RAM is identity-mapped, so an object's address is its
 * guest-physical address.
 * ------------------------------------------------------------------------------------------ */

/* The time page: a whole page, page-aligned (PVABI-CONV-022), host-owned once registered. */
struct time_page_area {
    pvabi_time_page page;
    uint8_t rest[PVABI_PAGE_SIZE - sizeof(pvabi_time_page)];
};

/* The event-queue page: header, then the entries at PVABI_EVENT_QUEUE_ENTRIES_OFFSET. */
struct event_queue_page {
    pvabi_event_queue_header hdr;
    pvabi_event entries[PVABI_EVENT_QUEUE_CAPACITY];
    uint8_t rest[PVABI_PAGE_SIZE - PVABI_EVENT_QUEUE_ENTRIES_OFFSET -
                 PVABI_EVENT_QUEUE_CAPACITY * sizeof(pvabi_event)];
};

_Static_assert(sizeof(struct time_page_area) == PVABI_PAGE_SIZE, "time page is one page");
_Static_assert(offsetof(struct event_queue_page, entries) == PVABI_EVENT_QUEUE_ENTRIES_OFFSET,
               "event entries at their offset");
_Static_assert(sizeof(struct event_queue_page) == PVABI_PAGE_SIZE, "event queue is one page");
_Static_assert((PVABI_EVENT_QUEUE_CAPACITY & (PVABI_EVENT_QUEUE_CAPACITY - 1)) == 0,
               "capacity is a power of two, so free-running indices wrap cleanly");

static _Alignas(PVABI_PAGE_SIZE) struct time_page_area time_area;
static _Alignas(PVABI_PAGE_SIZE) struct event_queue_page event_queue;
/* Two pages, for a console message that straddles the boundary between them. */
static _Alignas(PVABI_PAGE_SIZE) char two_pages[2 * PVABI_PAGE_SIZE];

static uint64_t gpa(const volatile void *p)
{
    return (uint64_t)(uintptr_t)p;
}

/* ------------------------------------------------------------------------------------------
 * Calls, and the state needed to report failures.
 * ------------------------------------------------------------------------------------------ */

static uint16_t doorbell;   /* 0 until discovery found pvabi */
static int negotiated;      /* NEGOTIATE succeeded (ours, or a locked earlier one) */
static uint64_t granted;    /* the granted features */
static int failing;         /* fail() is running: do not recurse */

static uint64_t call(uint64_t code, uint64_t a0, uint64_t a1, uint64_t a2, uint64_t a3,
                     uint64_t a4, uint64_t out[PVABI_MAX_RESULTS])
{
    return pvabi_hypercall(doorbell, code, a0, a1, a2, a3, a4, 0, out);
}

static const char *status_name(uint64_t status)
{
    switch (status) {
    case PVABI_STATUS_SUCCESS: return "SUCCESS";
    case PVABI_STATUS_NOT_SUPPORTED: return "NOT_SUPPORTED";
    case PVABI_STATUS_NOT_NEGOTIATED: return "NOT_NEGOTIATED";
    case PVABI_STATUS_NOT_GRANTED: return "NOT_GRANTED";
    case PVABI_STATUS_NOT_ALLOWED_HERE: return "NOT_ALLOWED_HERE";
    case PVABI_STATUS_INVALID_PARAMETER: return "INVALID_PARAMETER";
    case PVABI_STATUS_MISALIGNED: return "MISALIGNED";
    case PVABI_STATUS_CROSSES_PAGE: return "CROSSES_PAGE";
    case PVABI_STATUS_INVALID_ADDRESS: return "INVALID_ADDRESS";
    case PVABI_STATUS_ACCESS_DENIED: return "ACCESS_DENIED";
    case PVABI_STATUS_VERSION_UNSUPPORTED: return "VERSION_UNSUPPORTED";
    case PVABI_STATUS_FEATURE_UNAVAILABLE: return "FEATURE_UNAVAILABLE";
    case PVABI_STATUS_LOCKED: return "LOCKED";
    case PVABI_STATUS_INVALID_STATE: return "INVALID_STATE";
    case PVABI_STATUS_BUSY: return "BUSY";
    case PVABI_STATUS_NO_RESOURCES: return "NO_RESOURCES";
    case PVABI_STATUS_INCOMPLETE: return "INCOMPLETE";
    /* PVABI-STAT-008: a status this version does not define is a failure all the same. */
    default: return "unknown status";
    }
}

static _Noreturn void halt_forever(void)
{
    for (;;)
        __asm__ __volatile__("cli; hlt" ::: "memory");
}

static void cpu_relax(void)
{
    __asm__ __volatile__("pause" ::: "memory");
}

/*
 * A full barrier: a locked read-modify-write of the stack, which orders like mfence and needs
 * no SSE2 (some emulators of ring-0 code lack SSE instructions).
 */
static void full_barrier(void)
{
    __asm__ __volatile__("lock; orl $0, (%%rsp)" ::: "memory", "cc");
}

/* ------------------------------------------------------------------------------------------
 * Console output.
 * ------------------------------------------------------------------------------------------ */

static _Noreturn void fail(enum fail_code code, const char *what, uint64_t status);

/* CONSOLE_WRITE_REGS: up to 32 bytes a call, byte i in byte i % 8 of argument 1 + i / 8. */
static void console_write_regs(const char *s, size_t n)
{
    while (n > 0) {
        size_t k = n < PVABI_CONSOLE_REGS_MAX ? n : PVABI_CONSOLE_REGS_MAX;
        uint64_t w[4] = {0, 0, 0, 0};
        uint64_t r[PVABI_MAX_RESULTS];

        for (size_t i = 0; i < k; i++)
            w[i / 8] |= (uint64_t)(unsigned char)s[i] << (8 * (i % 8));
        uint64_t st = call(PVABI_CALL_CONSOLE_WRITE_REGS, k, w[0], w[1], w[2], w[3], r);
        if (st != PVABI_STATUS_SUCCESS)
            fail(FAIL_CONSOLE, "CONSOLE_WRITE_REGS", st);
        if (r[0] != k)
            fail(FAIL_CONSOLE, "CONSOLE_WRITE_REGS wrote a different length", NO_STATUS);
        s += k;
        n -= k;
    }
}

/*
 * CONSOLE_WRITE: the buffer is a memory block, so it must not cross a page boundary
 * (PVABI-CONV-015): split the message at page boundaries.
 */
static void console_write(const char *s, size_t n)
{
    while (n > 0) {
        size_t room = PVABI_PAGE_SIZE - (size_t)(gpa(s) % PVABI_PAGE_SIZE);
        size_t k = n < room ? n : room;
        uint64_t r[PVABI_MAX_RESULTS];

        uint64_t st = call(PVABI_CALL_CONSOLE_WRITE, gpa(s), k, 0, 0, 0, r);
        if (st != PVABI_STATUS_SUCCESS)
            fail(FAIL_CONSOLE, "CONSOLE_WRITE", st);
        if (r[0] != k)
            fail(FAIL_CONSOLE, "CONSOLE_WRITE wrote a different length", NO_STATUS);
        s += k;
        n -= k;
    }
}

/* A line being built; emit() writes it with CONSOLE_WRITE. */
static struct {
    char buf[256];
    size_t len;
} line;

static void put_char(char c)
{
    if (line.len < sizeof(line.buf))
        line.buf[line.len++] = c;
}

static void put_str(const char *s)
{
    while (*s)
        put_char(*s++);
}

static void put_dec_width(uint64_t v, unsigned width)
{
    char digits[20];
    unsigned n = 0;

    do {
        digits[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (width > n) {
        put_char('0');
        width--;
    }
    while (n)
        put_char(digits[--n]);
}

static void put_dec(uint64_t v)
{
    put_dec_width(v, 0);
}

static void put_hex(uint64_t v)
{
    static const char hex[] = "0123456789abcdef";
    int shift = 60;

    put_str("0x");
    while (shift > 0 && !(v >> shift))
        shift -= 4;
    for (; shift >= 0; shift -= 4)
        put_char(hex[(v >> shift) & 0xf]);
}

static void put_version(uint64_t v)
{
    put_dec(v >> 16 & 0xffff);
    put_char('.');
    put_dec(v & 0xffff);
}

static void put_status(uint64_t st)
{
    put_dec(st);
    put_char(' ');
    put_str(status_name(st));
}

static void begin(const char *s)
{
    line.len = 0;
    put_str("c-demo: ");
    put_str(s);
}

static void emit(void)
{
    put_char('\n');
    if (line.len == sizeof(line.buf))
        line.buf[line.len - 1] = '\n';
    console_write(line.buf, line.len);
    line.len = 0;
}

static void say(const char *s)
{
    begin(s);
    emit();
}

/* ------------------------------------------------------------------------------------------
 * Failure: print "FAIL: ..." and shut down with a non-zero code.
 * ------------------------------------------------------------------------------------------ */

/*
 * Failing before NEGOTIATE leaves no console. Try to get one: negotiate 1.0 with CONSOLE and
 * SYSTEM optional; if NEGOTIATE already succeeded (LOCKED), read what it granted
 * (PVABI-BASE-017).
 */
static void get_reporting_features(void)
{
    uint64_t r[PVABI_MAX_RESULTS];
    uint64_t st;

    if (negotiated || !doorbell)
        return;
    st = call(PVABI_CALL_NEGOTIATE, REQUESTED_VERSION, 0,
              PVABI_FEATURE_CONSOLE | PVABI_FEATURE_SYSTEM, 0, 0, r);
    if (st == PVABI_STATUS_SUCCESS) {
        negotiated = 1;
        granted = r[1];
    } else if (st == PVABI_STATUS_LOCKED &&
               call(PVABI_CALL_PROBE_FEATURES, 0, 0, 0, 0, 0, r) == PVABI_STATUS_SUCCESS) {
        negotiated = 1;
        granted = r[1];
    }
}

static _Noreturn void fail(enum fail_code code, const char *what, uint64_t status)
{
    if (!failing) {
        failing = 1;
        get_reporting_features();
        if (granted & PVABI_FEATURE_CONSOLE) {
            begin("FAIL: ");
            put_str(what);
            if (status != NO_STATUS) {
                put_str(" (status ");
                put_status(status);
                put_char(')');
            }
            emit();
        }
    }
    if (granted & PVABI_FEATURE_SYSTEM)
        call(PVABI_CALL_SYSTEM_SHUTDOWN, (uint64_t)code, 0, 0, 0, 0, NULL);
    halt_forever();
}

static void expect_ok(uint64_t status, enum fail_code code, const char *what)
{
    if (status != PVABI_STATUS_SUCCESS)
        fail(code, what, status);
}

static void check(int ok, enum fail_code code, const char *what)
{
    if (!ok)
        fail(code, what, NO_STATUS);
}

static uint64_t monotonic_now(void)
{
    uint64_t r[PVABI_MAX_RESULTS];

    expect_ok(call(PVABI_CALL_TIME_MONOTONIC, 0, 0, 0, 0, 0, r), FAIL_TIME, "TIME_MONOTONIC");
    return r[0];
}

/* ------------------------------------------------------------------------------------------
 * The time page (time.md#time-page-reader).
 * ------------------------------------------------------------------------------------------ */

struct time_snapshot {
    uint32_t sequence;
    uint32_t flags;
    uint64_t monotonic_ns;
    uint64_t tsc_timestamp;
    uint64_t wallclock_sec;
    uint32_t wallclock_nsec;
    int32_t tsc_shift;
    uint32_t tsc_mul;
    uint64_t tsc; /* the TSC read inside the snapshot (only when TSC_VALID) */
};

/*
 * An ordered TSC read, as the spec's reader does it: lfence keeps rdtsc from running ahead
 * of the loads before it. (rdtscp would do too on hardware, but the PVM host this project is
 * tested on cannot emulate it at ring 0, while lfence and rdtsc work there.)
 */
static uint64_t rdtsc_ordered(void)
{
    uint32_t lo, hi;

    __asm__ __volatile__("lfence; rdtsc" : "=a"(lo), "=d"(hi) : : "memory");
    return (uint64_t)hi << 32 | lo;
}

/*
 * One consistent snapshot: sequence (acquire), fields, sequence again; retry while the
 * sequence is odd or changed (PVABI-TIME-014). Returns 0 if no consistent snapshot came within
 * SEQLOCK_TRIES attempts (a host that never finishes an update).
 */
static int time_page_read(const pvabi_time_page *p, struct time_snapshot *s)
{
    for (unsigned tries = 0; tries < SEQLOCK_TRIES; tries++) {
        uint32_t seq = __atomic_load_n(&p->sequence, __ATOMIC_ACQUIRE);

        if (seq & 1) {
            cpu_relax(); /* the host is writing: try again */
            continue;
        }
        s->flags = __atomic_load_n(&p->flags, __ATOMIC_RELAXED);
        s->monotonic_ns = __atomic_load_n(&p->monotonic_ns, __ATOMIC_RELAXED);
        s->tsc_timestamp = __atomic_load_n(&p->tsc_timestamp, __ATOMIC_RELAXED);
        s->wallclock_sec = __atomic_load_n(&p->wallclock_sec, __ATOMIC_RELAXED);
        s->wallclock_nsec = __atomic_load_n(&p->wallclock_nsec, __ATOMIC_RELAXED);
        s->tsc_shift = __atomic_load_n(&p->tsc_shift, __ATOMIC_RELAXED);
        s->tsc_mul = __atomic_load_n(&p->tsc_mul, __ATOMIC_RELAXED);
        s->tsc = (s->flags & PVABI_TIME_PAGE_TSC_VALID) ? rdtsc_ordered() : 0;
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        if (__atomic_load_n(&p->sequence, __ATOMIC_RELAXED) == seq) {
            s->sequence = seq;
            return 1;
        }
    }
    return 0;
}

/*
 * (delta * mul) >> 32 with a 96-bit product (PVABI-TIME-015), without __int128: split delta
 * into 32-bit halves. hi * mul carries no fraction, so the sum is exact (modulo 2^64).
 */
static uint64_t scale_tsc_delta(uint64_t delta, int32_t shift, uint32_t mul)
{
    if (shift >= 64 || shift <= -64)
        delta = 0;
    else if (shift >= 0)
        delta <<= shift;
    else
        delta >>= -shift;
    return (delta >> 32) * mul + (((delta & 0xffffffffu) * mul) >> 32);
}

/* The current monotonic time from a snapshot, or from TIME_MONOTONIC without TSC_VALID. */
static uint64_t time_from_snapshot(const struct time_snapshot *s)
{
    if (!(s->flags & PVABI_TIME_PAGE_TSC_VALID))
        return monotonic_now();
    return s->monotonic_ns + scale_tsc_delta(s->tsc - s->tsc_timestamp, s->tsc_shift, s->tsc_mul);
}

static void put_snapshot(const char *what, const struct time_snapshot *s)
{
    begin(what);
    put_str(": sequence ");
    put_dec(s->sequence);
    put_str(", flags ");
    put_hex(s->flags);
    put_str(", monotonic_ns ");
    put_dec(s->monotonic_ns);
    put_str(", wall clock ");
    put_dec(s->wallclock_sec);
    put_char('.');
    put_dec_width(s->wallclock_nsec, 9);
    emit();
}

/* ------------------------------------------------------------------------------------------
 * The event queue (events.md#consuming).
 * ------------------------------------------------------------------------------------------ */

struct timer_wait {
    uint32_t vcpu;
    uint64_t deadline;
    int fired;
};

static void handle_event(const pvabi_event *ev, struct timer_wait *w)
{
    if (ev->kind != PVABI_EVENT_KIND_TIMER)
        fail(FAIL_EVENTS, "an event of a kind nobody sent", NO_STATUS);
    check(ev->source == w->vcpu, FAIL_TIMER, "TIMER event from another vCPU");
    check(ev->data == w->deadline, FAIL_TIMER, "TIMER event data is not the deadline");
    check(!w->fired, FAIL_TIMER, "a second TIMER event for one deadline");
    w->fired = 1;
}

/*
 * Drains the queue: read each entry before storing a head past it (PVABI-EVT-010); once
 * empty, store 0 to interrupt_pending, full barrier, read tail again and drain again if an
 * event slipped in (PVABI-EVT-011). `head` is the guest's copy of the index it owns.
 * Returns the number of events consumed.
 */
static unsigned drain_events(struct event_queue_page *q, uint32_t *head, struct timer_wait *w)
{
    unsigned consumed = 0;

    for (;;) {
        uint32_t tail = __atomic_load_n(&q->hdr.tail, __ATOMIC_ACQUIRE);

        check(tail - *head <= PVABI_EVENT_QUEUE_CAPACITY, FAIL_EVENTS,
              "event queue tail is more than a queue ahead of head");
        while (*head != tail) {
            pvabi_event ev = q->entries[*head % PVABI_EVENT_QUEUE_CAPACITY];

            *head += 1;
            __atomic_store_n(&q->hdr.head, *head, __ATOMIC_RELEASE);
            handle_event(&ev, w);
            consumed++;
        }
        __atomic_store_n(&q->hdr.interrupt_pending, 0, __ATOMIC_RELAXED);
        full_barrier();
        if (__atomic_load_n(&q->hdr.tail, __ATOMIC_ACQUIRE) == *head)
            return consumed;
        /* an event arrived during the drain: it may not have raised an interrupt */
    }
}

/* ------------------------------------------------------------------------------------------
 * The demo.
 * ------------------------------------------------------------------------------------------ */

static const char regs_message[] = "c-demo: console: hello from C through CONSOLE_WRITE_REGS\n";
static const char mem_message[] = "c-demo: console: hello from C through CONSOLE_WRITE\n";
static const char split_message[] =
    "c-demo: console: this line straddles a page boundary and went out in two CONSOLE_WRITEs\n";

/* Expects `status` from a call that must fail with exactly that status. */
static void expect_status(uint64_t got, uint64_t want, const char *what)
{
    begin("rules: ");
    put_str(what);
    put_str(" -> ");
    put_str(status_name(got));
    if (got != want) {
        put_str(", expected ");
        put_str(status_name(want));
        emit();
        fail(FAIL_RULES, what, got);
    }
    emit();
}

_Noreturn void pvabi_demo_main(uint64_t vcpu, uint64_t mem_bytes, uint64_t vcpu_count)
{
    struct pvabi_discovery disc;
    uint64_t r[PVABI_MAX_RESULTS];
    uint64_t st;

    /* 1. Discovery. Nothing can be reported until NEGOTIATE grants the console. */
    if (!pvabi_discover(&disc))
        halt_forever();
    if (!(disc.transport_flags & PVABI_TRANSPORT_PIO))
        halt_forever();
    doorbell = disc.doorbell_port;

    /* 2. Base family: what the host serves, then NEGOTIATE. */
    st = call(PVABI_CALL_GET_SPEC_VERSION, 0, 0, 0, 0, 0, r);
    expect_ok(st, FAIL_BASE, "GET_SPEC_VERSION");
    uint64_t highest = r[0], lowest = r[1], before = r[2];

    st = call(PVABI_CALL_GET_IMPL_ID, 0, 0, 0, 0, 0, r);
    expect_ok(st, FAIL_BASE, "GET_IMPL_ID");
    uint64_t impl_id = r[0];
    char impl_name[17];
    for (unsigned i = 0; i < 16; i++)
        impl_name[i] = (char)(r[1 + i / 8] >> (8 * (i % 8)));
    impl_name[16] = 0;

    st = call(PVABI_CALL_PROBE_FEATURES, 0, 0, 0, 0, 0, r);
    expect_ok(st, FAIL_BASE, "PROBE_FEATURES");
    uint64_t offered = r[0];

    st = call(PVABI_CALL_NEGOTIATE, REQUESTED_VERSION, REQUIRED_FEATURES, OPTIONAL_FEATURES, 0,
              0, r);
    expect_ok(st, FAIL_NEGOTIATE, "NEGOTIATE 1.0");
    negotiated = 1;
    granted = r[1];
    uint64_t accepted = r[0];

    say("pvabi C demo guest, built from include/pvabi.h");
    begin("boot: vCPU ");
    put_dec(vcpu);
    put_str(" of ");
    put_dec(vcpu_count);
    put_str(", ");
    put_dec(mem_bytes >> 20);
    put_str(" MiB of RAM");
    emit();
    begin("discovery: signature at CPUID ");
    put_hex(disc.base);
    put_str(" (leaves up to ");
    put_hex(disc.max_leaf);
    put_str("), doorbell port ");
    put_hex(disc.doorbell_port);
    put_str(", transport flags ");
    put_hex(disc.transport_flags);
    emit();
    begin("base: host serves ");
    put_version(lowest);
    put_str(" to ");
    put_version(highest);
    put_str(", implementation ");
    put_dec(impl_id);
    put_str(" \"");
    put_str(impl_name);
    put_str("\", offers ");
    put_hex(offered);
    emit();

    /* PVABI-DISC-005: the CPUID leaves and the Base calls agree. */
    check(disc.highest_version == highest && disc.lowest_version == lowest, FAIL_BASE,
          "CPUID version leaf and GET_SPEC_VERSION disagree");
    check(disc.offered_hint == offered, FAIL_BASE,
          "CPUID offered features and PROBE_FEATURES disagree");
    check(before == 0, FAIL_BASE, "GET_SPEC_VERSION reported a negotiated version before NEGOTIATE");

    begin("negotiate: requested ");
    put_version(REQUESTED_VERSION);
    put_str(" required ");
    put_hex(REQUIRED_FEATURES);
    put_str(" optional ");
    put_hex(OPTIONAL_FEATURES);
    put_str(" -> accepted ");
    put_version(accepted);
    put_str(" granted ");
    put_hex(granted);
    emit();
    check(accepted >> 16 == PVABI_VERSION_MAJOR, FAIL_NEGOTIATE, "accepted another major version");
    check((granted & REQUIRED_FEATURES) == REQUIRED_FEATURES, FAIL_NEGOTIATE,
          "a required feature was not granted");
    check((granted & ~(REQUIRED_FEATURES | OPTIONAL_FEATURES)) == 0, FAIL_NEGOTIATE,
          "granted a feature nobody asked for");

    /* 3. The console, both forms. */
    console_write_regs(regs_message, sizeof(regs_message) - 1);
    console_write(mem_message, sizeof(mem_message) - 1);

    /* The memory-block rules, and the status each broken rule gets. A failed call has no
     * effect (PVABI-STAT-005): none of these writes a byte. */
    char *straddle = two_pages + PVABI_PAGE_SIZE - 24;
    for (size_t i = 0; i < sizeof(split_message) - 1; i++)
        straddle[i] = split_message[i];
    st = call(PVABI_CALL_CONSOLE_WRITE, gpa(straddle), sizeof(split_message) - 1, 0, 0, 0, r);
    expect_status(st, PVABI_STATUS_CROSSES_PAGE, "CONSOLE_WRITE of a block across a page boundary");
    st = call(PVABI_CALL_CONSOLE_WRITE, gpa(straddle), PVABI_CONSOLE_WRITE_MAX + 1, 0, 0, 0, r);
    expect_status(st, PVABI_STATUS_INVALID_PARAMETER,
                  "CONSOLE_WRITE too long and across a page (step 5 before step 7)");
    console_write(straddle, sizeof(split_message) - 1);

    /* 4. The time page. */
    st = call(PVABI_CALL_TIME_SET_PAGE, gpa(&time_area) + 8, 0, 0, 0, 0, r);
    expect_status(st, PVABI_STATUS_MISALIGNED, "TIME_SET_PAGE at a page address + 8");
    st = call(PVABI_CALL_TIME_SET_PAGE, gpa(&time_area), 0, 0, 0, 0, r);
    expect_ok(st, FAIL_TIME, "TIME_SET_PAGE");
    st = call(PVABI_CALL_CONSOLE_WRITE, gpa(&time_area), 8, 0, 0, 0, r);
    expect_status(st, PVABI_STATUS_ACCESS_DENIED, "CONSOLE_WRITE from the host-owned time page");

    st = call(PVABI_CALL_TIME_FREQUENCY, 0, 0, 0, 0, 0, r);
    expect_ok(st, FAIL_TIME, "TIME_FREQUENCY");
    begin("time: tsc_hz ");
    put_dec(r[0]);
    put_str(", timer resolution ");
    put_dec(r[1]);
    put_str(" ns");
    emit();
    check(r[1] != 0, FAIL_TIME, "TIME_FREQUENCY resolution_ns is 0");

    struct time_snapshot s1, s2;
    check(time_page_read(&time_area.page, &s1), FAIL_TIME, "no consistent time page snapshot");
    put_snapshot("time page read 1", &s1);
    check(s1.wallclock_nsec < 1000000000u, FAIL_TIME, "wall-clock nanoseconds out of range");

    /* Wait, with a bound, until the host has refreshed the page. */
    uint64_t waited_from = monotonic_now();
    for (;;) {
        check(time_page_read(&time_area.page, &s2), FAIL_TIME, "no consistent time page snapshot");
        if (s2.sequence != s1.sequence)
            break;
        check(monotonic_now() - waited_from < WAIT_LIMIT_NS, FAIL_TIME,
              "the host did not update the time page within 2 s");
    }
    put_snapshot("time page read 2", &s2);
    check(s2.monotonic_ns > s1.monotonic_ns, FAIL_TIME,
          "monotonic time did not advance between the two reads");
    begin("time page: monotonic time advanced by ");
    put_dec(s2.monotonic_ns - s1.monotonic_ns);
    put_str(" ns between the reads");
    emit();

    uint64_t now = time_from_snapshot(&s2);
    begin((s2.flags & PVABI_TIME_PAGE_TSC_VALID)
              ? "time page: TSC_VALID set, current time from the TSC: "
              : "time page: TSC_VALID clear, current time from TIME_MONOTONIC: ");
    put_dec(now);
    put_str(" ns");
    emit();
    check(now >= s2.monotonic_ns, FAIL_TIME, "current time is before the page's monotonic_ns");

    /* 5. The event queue, the timer, and the TIMER event. */
    st = call(PVABI_CALL_EVENTS_SET_QUEUE, gpa(&event_queue), EVENT_VECTOR, 0, 0, 0, r);
    expect_ok(st, FAIL_EVENTS, "EVENTS_SET_QUEUE");
    check(event_queue.hdr.capacity == PVABI_EVENT_QUEUE_CAPACITY && event_queue.hdr.head == 0 &&
              event_queue.hdr.tail == 0 && event_queue.hdr.interrupt_pending == 0,
          FAIL_EVENTS, "EVENTS_SET_QUEUE left an unexpected header");
    /* No IDT: mask every kind, so events are queued without raising the vector. */
    st = call(PVABI_CALL_EVENTS_SET_MASK, PVABI_EVENT_MASK_VALID, 0, 0, 0, 0, r);
    expect_ok(st, FAIL_EVENTS, "EVENTS_SET_MASK");
    check(r[0] == 0, FAIL_EVENTS, "the initial event mask was not 0");
    begin("events: queue at ");
    put_hex(gpa(&event_queue));
    put_str(", vector ");
    put_hex(EVENT_VECTOR);
    put_str(", capacity ");
    put_dec(event_queue.hdr.capacity);
    put_str(", every kind masked (mask ");
    put_hex(PVABI_EVENT_MASK_VALID);
    put_str(")");
    emit();

    struct timer_wait w = {(uint32_t)vcpu, 0, 0};
    uint32_t head = 0;
    uint64_t armed_at = monotonic_now();
    w.deadline = armed_at + TIMER_DELAY_NS;
    st = call(PVABI_CALL_TIME_SET_TIMER, w.deadline, 0, 0, 0, 0, r);
    expect_ok(st, FAIL_TIMER, "TIME_SET_TIMER");
    begin("timer: armed at ");
    put_dec(armed_at);
    put_str(" ns for deadline ");
    put_dec(w.deadline);
    put_str(" ns");
    emit();

    if (granted & PVABI_FEATURE_VCPU) {
        unsigned halts = 0;
        while (!w.fired) {
            st = call(PVABI_CALL_VCPU_HALT, HALT_TIMEOUT_NS, 0, 0, 0, 0, r);
            expect_ok(st, FAIL_TIMER, "VCPU_HALT");
            halts++;
            check(r[0] == PVABI_WAKE_REASON_EVENT, FAIL_TIMER,
                  "VCPU_HALT timed out: no TIMER event within 0.5 s");
            drain_events(&event_queue, &head, &w);
            check(halts < 4, FAIL_TIMER, "VCPU_HALT keeps waking without a TIMER event");
        }
        begin("timer: woke from VCPU_HALT (reason EVENT) after ");
        put_dec(halts);
        put_str(halts == 1 ? " halt" : " halts");
        emit();
    } else {
        while (!w.fired) {
            drain_events(&event_queue, &head, &w);
            check(monotonic_now() - armed_at < WAIT_LIMIT_NS, FAIL_TIMER,
                  "no TIMER event within 2 s of polling");
            cpu_relax();
        }
        say("timer: VCPU not granted: polled the queue until the event came");
    }
    uint64_t taken_at = monotonic_now();
    check(taken_at >= w.deadline, FAIL_TIMER, "TIMER event before the deadline");
    begin("events: TIMER event from vCPU ");
    put_dec(w.vcpu);
    put_str(" with data = the deadline; queue head ");
    put_dec(event_queue.hdr.head);
    put_str(" tail ");
    put_dec(event_queue.hdr.tail);
    put_str(" interrupt_pending ");
    put_dec(event_queue.hdr.interrupt_pending);
    put_str(" dropped ");
    put_dec(event_queue.hdr.dropped);
    emit();
    check(event_queue.hdr.dropped == 0, FAIL_EVENTS, "the host dropped events");

    /* 6. Done. */
    say("PASS: every check passed; SYSTEM_SHUTDOWN(0)");
    st = call(PVABI_CALL_SYSTEM_SHUTDOWN, 0, 0, 0, 0, 0, r);
    fail(FAIL_SHUTDOWN, "SYSTEM_SHUTDOWN returned", st);
}
