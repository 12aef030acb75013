/* Startup for the edgeml example firmware: the vector table, a reset handler and semihosting.
 *
 * The reset handler turns the FPU on, copies .data from flash to RAM, zeroes .bss, paints the stack
 * with a known word (so edgeml_stack_used() can tell how deep it went) and calls main(). Output and
 * exit go through Arm semihosting (a "bkpt 0xab" the debugger or QEMU serves): no UART driver, no
 * C library stdio, so the firmware stays small. Symbols come from link.ld.
 */
#include <stdint.h>

#include "edgeml_startup.h"

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _sstack, _estack;
extern int main(void);

#define STACK_PAINT 0xC5C5C5C5u
#define SYS_WRITE0 0x04u
#define SYS_EXIT_EXTENDED 0x20u
#define ADP_STOPPED_APPLICATION_EXIT 0x20026u

static uint32_t semihost(uint32_t op, const void *arg)
{
    register uint32_t r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

void edgeml_write(const char *text) { semihost(SYS_WRITE0, text); }

void edgeml_exit(int code)
{
    const uint32_t block[2] = {ADP_STOPPED_APPLICATION_EXIT, (uint32_t)code};
    semihost(SYS_EXIT_EXTENDED, block);
    for (;;) {
    }
}

uint32_t edgeml_stack_size(void) { return (uint32_t)((uintptr_t)&_estack - (uintptr_t)&_sstack); }

uint32_t edgeml_stack_used(void)
{
    const uint32_t *p = &_sstack;
    while (p < &_estack && *p == STACK_PAINT) {
        p++;
    }
    return (uint32_t)((uintptr_t)&_estack - (uintptr_t)p);
}

void Reset_Handler(void)
{
    /* CPACR: full access to CP10/CP11 (the FPU) before any floating-point instruction. */
    *(volatile uint32_t *)0xE000ED88u |= 0xFu << 20;
    __asm__ volatile("dsb\n\tisb" ::: "memory");
    for (uint32_t *src = &_sidata, *dst = &_sdata; dst < &_edata;) {
        *dst++ = *src++;
    }
    for (uint32_t *dst = &_sbss; dst < &_ebss;) {
        *dst++ = 0;
    }
    /* Paint from the stack's bottom to 64 bytes below where this function's frame is. */
    uint32_t *sp;
    __asm__ volatile("mov %0, sp" : "=r"(sp));
    for (volatile uint32_t *p = &_sstack; p < sp - 16;) {
        *p++ = STACK_PAINT;
    }
    edgeml_exit(main());
}

static void Fault_Handler(void)
{
    edgeml_write("fault: the firmware took a HardFault/MemManage/BusFault/UsageFault\n");
    edgeml_exit(3);
}

/* The Cortex-M vector table: initial stack pointer, then the handlers (no interrupts are used). */
__attribute__((section(".isr_vector"), used)) static const void *const vectors[16] = {
    &_estack, (const void *)Reset_Handler, (const void *)Fault_Handler, (const void *)Fault_Handler,
    (const void *)Fault_Handler, (const void *)Fault_Handler, (const void *)Fault_Handler,
};
