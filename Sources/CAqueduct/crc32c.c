// CRC-32C (Castagnoli). Hardware path: the SSE4.2 crc32 instruction over three
// independent streams interleaved (the instruction has a latency of 3 cycles and a
// throughput of 1, so one stream leaves two thirds of the unit idle), combined with
// a zero-extension table. Portable path: slicing-by-8 tables.
#include "caqueduct.h"
#include <pthread.h>
#include <string.h>

#define POLY 0x82F63B78u

static uint32_t table8[8][256];
static pthread_once_t once = PTHREAD_ONCE_INIT;
static int use_hardware;
static void initialise(void);

static void init_tables(void) {
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t crc = n;
        for (int k = 0; k < 8; k++) crc = (crc & 1) ? (crc >> 1) ^ POLY : crc >> 1;
        table8[0][n] = crc;
    }
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t crc = table8[0][n];
        for (int k = 1; k < 8; k++) {
            crc = table8[0][crc & 0xff] ^ (crc >> 8);
            table8[k][n] = crc;
        }
    }
}

uint32_t aq_crc32c_extend_portable(uint32_t crc, const void *data, size_t length) {
    pthread_once(&once, initialise);
    const uint8_t *p = (const uint8_t *)data;
    uint32_t c = ~crc;
    while (length && ((uintptr_t)p & 7)) {
        c = table8[0][(c ^ *p++) & 0xff] ^ (c >> 8);
        length--;
    }
    while (length >= 8) {
        uint64_t word;
        memcpy(&word, p, 8);
        uint32_t lo = (uint32_t)word ^ c;
        uint32_t hi = (uint32_t)(word >> 32);
        c = table8[7][lo & 0xff] ^ table8[6][(lo >> 8) & 0xff] ^ table8[5][(lo >> 16) & 0xff] ^
            table8[4][lo >> 24] ^ table8[3][hi & 0xff] ^ table8[2][(hi >> 8) & 0xff] ^
            table8[1][(hi >> 16) & 0xff] ^ table8[0][hi >> 24];
        p += 8;
        length -= 8;
    }
    while (length--) c = table8[0][(c ^ *p++) & 0xff] ^ (c >> 8);
    return ~c;
}

#if defined(__x86_64__)
#include <nmmintrin.h>

// Multiplication in GF(2) modulo the reflected polynomial; used to shift a CRC
// over a run of zero bytes when combining interleaved streams.
static uint32_t gf2_multiply(uint32_t a, uint32_t b) {
    uint32_t product = 0;
    for (int i = 0; i < 32; i++) {
        if (b & 0x80000000u) product ^= a;
        b <<= 1;
        a = (a & 1) ? (a >> 1) ^ POLY : a >> 1;
    }
    return product;
}

// x^(8*n) mod P, reflected, by square-and-multiply.
static uint32_t x_pow_8n(size_t n) {
    uint32_t result = 0x80000000u;  // x^0
    uint32_t power = 0x00800000u;   // x^8
    while (n) {
        if (n & 1) result = gf2_multiply(result, power);
        power = gf2_multiply(power, power);
        n >>= 1;
    }
    return result;
}

// Stream length for the interleaved loop: 3 streams of this many bytes each.
#define STREAM_BYTES 4096
static uint32_t shift_stream;   // x^(8*STREAM_BYTES) mod P
static uint32_t shift_table[4][256];  // byte-wise tables of multiplication by shift_stream

static void init_shift(void) {
    shift_stream = x_pow_8n(STREAM_BYTES);
    for (uint32_t n = 0; n < 256; n++) {
        for (int k = 0; k < 4; k++) {
            shift_table[k][n] = gf2_multiply(n << (8 * k), shift_stream);
        }
    }
}

static inline uint32_t shift(uint32_t crc) {
    return shift_table[0][crc & 0xff] ^ shift_table[1][(crc >> 8) & 0xff] ^
           shift_table[2][(crc >> 16) & 0xff] ^ shift_table[3][crc >> 24];
}

__attribute__((target("sse4.2")))
static uint32_t crc32c_hardware(uint32_t crc, const void *data, size_t length) {
    const uint8_t *p = (const uint8_t *)data;
    uint64_t c = (uint32_t)~crc;
    while (length && ((uintptr_t)p & 7)) {
        c = _mm_crc32_u8((uint32_t)c, *p++);
        length--;
    }
    while (length >= 3 * STREAM_BYTES) {
        uint64_t c1 = 0, c2 = 0;
        const uint8_t *p1 = p + STREAM_BYTES, *p2 = p + 2 * STREAM_BYTES;
        for (size_t i = 0; i < STREAM_BYTES; i += 8) {
            uint64_t w0, w1, w2;
            memcpy(&w0, p + i, 8);
            memcpy(&w1, p1 + i, 8);
            memcpy(&w2, p2 + i, 8);
            c = _mm_crc32_u64(c, w0);
            c1 = _mm_crc32_u64(c1, w1);
            c2 = _mm_crc32_u64(c2, w2);
        }
        // crc(A||B) = shift(crc(A)) ^ crc(B) when crc(B) is computed from state 0.
        c = shift((uint32_t)c) ^ (uint32_t)c1;
        c = shift((uint32_t)c) ^ (uint32_t)c2;
        p += 3 * STREAM_BYTES;
        length -= 3 * STREAM_BYTES;
    }
    while (length >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c = _mm_crc32_u64(c, w);
        p += 8;
        length -= 8;
    }
    while (length--) c = _mm_crc32_u8((uint32_t)c, *p++);
    return ~(uint32_t)c;
}
#endif

static void initialise(void) {
    init_tables();
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("sse4.2")) {
        init_shift();
        use_hardware = 1;
    }
#endif
}

int aq_crc32c_is_hardware(void) {
    pthread_once(&once, initialise);
    return use_hardware;
}

uint32_t aq_crc32c_extend(uint32_t crc, const void *data, size_t length) {
    pthread_once(&once, initialise);
#if defined(__x86_64__)
    if (use_hardware) return crc32c_hardware(crc, data, length);
#endif
    return aq_crc32c_extend_portable(crc, data, length);
}

/* Combining CRCs: the CRC of A followed by B from crc(A), crc(B) and B's length, without
   reading B. In GF(2) modulo the (reflected) Castagnoli polynomial, appending len(B)
   bytes multiplies the register by x^(8 len(B)); that power is built from the squares
   x^(2^k), computed once. */
#define AQ_CRC32C_POLY 0x82F63B78u

/* a * b modulo the polynomial; bit 31 is x^0 (reflected order). */
static uint32_t aq_multiply_mod(uint32_t a, uint32_t b) {
    uint32_t product = 0;
    for (uint32_t bit = 1u << 31; bit != 0; bit >>= 1) {
        if (a & bit) product ^= b;
        b = (b & 1) ? (b >> 1) ^ AQ_CRC32C_POLY : b >> 1;
    }
    return product;
}

static uint32_t aq_square_powers[64]; /* x^(2^k) mod P */
static int aq_square_powers_ready;

static void aq_prepare_square_powers(void) {
    uint32_t power = 1u << 30; /* x^1 */
    for (int k = 0; k < 64; k++) {
        aq_square_powers[k] = power;
        power = aq_multiply_mod(power, power);
    }
    __atomic_store_n(&aq_square_powers_ready, 1, __ATOMIC_RELEASE);
}

uint32_t aq_crc32c_combine(uint32_t crc_a, uint32_t crc_b, uint64_t length_b) {
    if (!__atomic_load_n(&aq_square_powers_ready, __ATOMIC_ACQUIRE)) aq_prepare_square_powers();
    uint32_t shift = 1u << 31; /* x^0 */
    uint64_t bits = length_b * 8;
    for (int k = 0; bits != 0 && k < 64; k++, bits >>= 1) {
        if (bits & 1) shift = aq_multiply_mod(aq_square_powers[k], shift);
    }
    return aq_multiply_mod(shift, crc_a) ^ crc_b;
}
