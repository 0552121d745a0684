/* Bare-metal start-up for the Cortex-M firmware tinyengine-tf builds: vector table, .data/.bss
 * set-up, and the few Arm semihosting calls the harness needs (files on the host, exit).
 * Hard-float builds switch the FPU on first.
 * Semihosting traps with BKPT 0xAB; QEMU serves it with -semihosting-config enable=on. */
#include <stdint.h>
#include "te_semihost.h"

extern uint32_t __stack_top, __data_load, __data_start, __data_end, __bss_start, __bss_end;
int main(void);

int te_sh_call(int op, void *arg) {
    register int r0 __asm__("r0") = op;
    register void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

void te_sh_exit(int status) {
    /* ADP_Stopped_ApplicationExit makes QEMU exit 0; any other reason makes it exit 1. */
    for (;;) te_sh_call(0x18, (void *)(uintptr_t)(status == 0 ? 0x20026 : 0x20023));
}

void Reset_Handler(void);
void Reset_Handler(void) {
#if defined(__ARM_FP)
    /* Hard-float builds: grant full access to the FPU (CP10, CP11 in CPACR) before any code
     * can use it; the FPU is off out of reset and its first instruction would fault. */
    *(volatile uint32_t *)0xE000ED88u |= 0xFu << 20;
    __asm__ volatile("dsb\n\tisb" ::: "memory");
#endif
    uint32_t *src = &__data_load, *dst = &__data_start;
    while (dst < &__data_end) *dst++ = *src++;
    for (dst = &__bss_start; dst < &__bss_end;) *dst++ = 0;
    te_sh_exit(main());
}

void Default_Handler(void);
void Default_Handler(void) { te_sh_exit(3); }

__attribute__((section(".isr_vector"), used))
void (*const te_vectors[16])(void) = {
    (void (*)(void))(uintptr_t)&__stack_top, Reset_Handler, Default_Handler, Default_Handler,
    Default_Handler, Default_Handler, Default_Handler, 0, 0, 0, 0, Default_Handler,
    Default_Handler, 0, Default_Handler, Default_Handler,
};
