/* What startup.c gives main.c: semihosted output and exit, and the stack's high-water mark. */
#ifndef EDGEML_STARTUP_H
#define EDGEML_STARTUP_H
#include <stdint.h>

void edgeml_write(const char *text);   /* a NUL-terminated string to the host's console */
void edgeml_exit(int code);            /* end the program; QEMU exits with this code */
uint32_t edgeml_stack_used(void);      /* bytes of stack touched since reset (painted words overwritten) */
uint32_t edgeml_stack_size(void);      /* bytes reserved for the stack (link.ld's STACK_SIZE) */
#endif
