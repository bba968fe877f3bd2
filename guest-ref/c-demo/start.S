/*
 * Entry point of the pvabi C demo guest.
 *
 * The host starts the boot vCPU in 64-bit mode at CPL0 with interrupts disabled, paging on
 * (guest RAM identity-mapped), a scratch stack below 1 MiB, and
 *     rdi = 0 (the vCPU index), rsi = guest RAM in bytes, rdx = number of vCPUs.
 * _start switches to the image's own stack, zeroes .bss (the reference host hands over fresh,
 * zeroed RAM, but a guest should not depend on that) and calls
 *     void pvabi_demo_main(uint64_t vcpu, uint64_t mem_bytes, uint64_t vcpu_count)
 * with those three values, which are already in the System V argument registers.
 */
    .section .text._start, "ax", @progbits
    .globl  _start
    .type   _start, @function
_start:
    cli
    cld
    leaq    pvabi_demo_stack_top(%rip), %rsp
    xorl    %ebp, %ebp

    /* Zero .bss, keeping the boot registers: rep stosq uses rdi, rcx and rax. */
    movq    %rdi, %r12
    movq    %rsi, %r13
    movq    %rdx, %r14
    leaq    __bss_start(%rip), %rdi
    leaq    __bss_end(%rip), %rcx
    subq    %rdi, %rcx
    shrq    $3, %rcx
    xorl    %eax, %eax
    rep stosq
    movq    %r12, %rdi
    movq    %r13, %rsi
    movq    %r14, %rdx

    call    pvabi_demo_main

    /* pvabi_demo_main does not return; if it did, stop here for good. */
1:  cli
    hlt
    jmp     1b
    .size   _start, . - _start

    /* The boot stack (16 KiB), in .bss. It is zeroed above while still empty. */
    .section .bss.pvabi_demo_stack, "aw", @nobits
    .balign 16
pvabi_demo_stack:
    .skip   16384
pvabi_demo_stack_top:

    .section .note.GNU-stack, "", @progbits
