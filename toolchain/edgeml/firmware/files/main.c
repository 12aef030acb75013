/* edgeml example firmware: score the rows of edgeml_rows.h with the plain-C model and print the results.
 *
 * It prints "edgeml rows <n> outputs <k> classifier <0|1>", then one line per row,
 * "row <i> <k output float32 bits in hex> [<label>]", then "checksum <FNV-1a 32-bit, hex>" and
 * "stack <bytes>". The checksum runs over every row's outputs as float32 bytes (little-endian) then,
 * for a classifier, its label as a little-endian int32: the host computes the same from numpy float32
 * arrays (edgeml.firmware.project.checksum), so one line says whether the device computed exactly what
 * the host did. Floats print as bits, not with printf: that keeps the C library's formatting code out
 * of flash and the comparison exact (struct.unpack("<f", bytes.fromhex(...)[::-1]) reads one back).
 * Exit status: 0 scored, 4 the model's features are not the rows' (edgeml_rows.h is for another model),
 * 5 the stack overflowed (3, from startup.c: a fault).
 */
#include <stdint.h>
#include <string.h>

#include "edgeml_model.h"
#include "edgeml_rows.h"
#include "edgeml_startup.h"

/* The rows must have the model's width (a compile-time check: the array size is -1 otherwise). */
typedef char edgeml_rows_fit_the_model[(EDGEML_ROW_FEATURES == EDGEML_N_FEATURES) ? 1 : -1];

static char line[48 + 9 * EDGEML_N_OUTPUTS + 12];
static char out_buf[512];
static size_t out_len;

static void flush(void)
{
    if (out_len) {
        out_buf[out_len] = '\0';
        edgeml_write(out_buf);
        out_len = 0;
    }
}

static void put(const char *s)
{
    size_t n = strlen(s);
    if (out_len + n >= sizeof out_buf) {
        flush();
    }
    if (n >= sizeof out_buf) {  /* longer than the buffer: as it is */
        edgeml_write(s);
        return;
    }
    memcpy(out_buf + out_len, s, n);
    out_len += n;
}

static char *hex(char *p, uint32_t v)
{
    for (int shift = 28; shift >= 0; shift -= 4) {
        *p++ = "0123456789abcdef"[(v >> shift) & 0xFu];
    }
    return p;
}

static char *dec(char *p, int32_t v)
{
    char digits[12];
    int n = 0;
    uint32_t u = v < 0 ? (uint32_t)0 - (uint32_t)v : (uint32_t)v;
    if (v < 0) {
        *p++ = '-';
    }
    do {
        digits[n++] = (char)('0' + u % 10u);
        u /= 10u;
    } while (u);
    while (n) {
        *p++ = digits[--n];
    }
    return p;
}

static uint32_t fnv1a(uint32_t h, uint32_t word)
{
    for (int i = 0; i < 4; i++) {  /* little-endian byte order, whatever the CPU's */
        h = (h ^ ((word >> (8 * i)) & 0xFFu)) * 16777619u;
    }
    return h;
}

static int same_features(void)
{
#ifdef EDGEML_ROW_NAMES
    for (int j = 0; j < EDGEML_N_FEATURES; j++) {
        if (strcmp(edgeml_row_features[j], edgeml_feature_names[j]) != 0) {
            put("the rows' feature ");
            put(edgeml_row_features[j]);
            put(" is the model's ");
            put(edgeml_feature_names[j]);
            put(": write edgeml_rows.h for this model\n");
            return 0;
        }
    }
#endif
    return 1;
}

int main(void)
{
    uint32_t h = 2166136261u;
    float out[EDGEML_N_OUTPUTS];
    if (!same_features()) {
        flush();
        return 4;
    }
    char *p = dec((char *)memcpy(line, "edgeml rows ", 12) + 12, EDGEML_N_ROWS);
    p = dec((char *)memcpy(p, " outputs ", 9) + 9, EDGEML_N_OUTPUTS);
    p = dec((char *)memcpy(p, " classifier ", 12) + 12, EDGEML_CLASSIFIER);
    *p++ = '\n';
    *p = '\0';
    put(line);
    for (int i = 0; i < EDGEML_N_ROWS; i++) {
        edgeml_predict(edgeml_rows[i], out);
        p = dec((char *)memcpy(line, "row ", 4) + 4, i);
        for (int j = 0; j < EDGEML_N_OUTPUTS; j++) {
            uint32_t bits;
            memcpy(&bits, &out[j], sizeof bits);
            h = fnv1a(h, bits);
            *p++ = ' ';
            p = hex(p, bits);
        }
#if EDGEML_CLASSIFIER
        int32_t label = (int32_t)edgeml_label(out);
        h = fnv1a(h, (uint32_t)label);
        *p++ = ' ';
        p = dec(p, label);
#endif
        *p++ = '\n';
        *p = '\0';
        put(line);
    }
    p = hex((char *)memcpy(line, "checksum ", 9) + 9, h);
    *p++ = '\n';
    *p = '\0';
    put(line);
    uint32_t used = edgeml_stack_used();
    p = dec((char *)memcpy(line, "stack ", 6) + 6, (int32_t)used);
    *p++ = '\n';
    *p = '\0';
    put(line);
    if (used >= edgeml_stack_size()) {  /* the paint is gone down to the bottom: it went further, into .bss */
        put("stack overflow: raise STACK_SIZE in link.ld (the profile's mcu.stack_bytes)\n");
        flush();
        return 5;
    }
    flush();
    return 0;
}
