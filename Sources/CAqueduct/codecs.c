/* Decompression of Kafka record batch payloads: gzip, snappy, lz4, zstd.
 *
 * The broker never needs these on the produce or fetch path (batches are stored and
 * served as sent); they serve readers that want records, such as the HTTP API. zlib,
 * zstd and lz4 are the system's shared libraries, loaded with dlopen on first use, so
 * building Aqueduct needs no headers or -dev packages and a machine without one of
 * them only loses that codec, with a clear error. Snappy is decoded here (the format is
 * small), raw or in the xerial framing Kafka's Java client writes. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "caqueduct.h"

typedef struct {
    unsigned char *data;
    size_t length;
    size_t capacity;
    size_t limit;
} aq_output;

static int aq_output_reserve(aq_output *out, size_t more) {
    if (out->length + more > out->limit) return AQ_CODEC_TOO_LARGE;
    if (out->length + more <= out->capacity) return 0;
    size_t capacity = out->capacity ? out->capacity : 4096;
    while (capacity < out->length + more) capacity *= 2;
    if (capacity > out->limit) capacity = out->limit;
    unsigned char *grown = realloc(out->data, capacity);
    if (!grown) return AQ_CODEC_TOO_LARGE;
    out->data = grown;
    out->capacity = capacity;
    return 0;
}

static int aq_finish(aq_output *out, int status, void **result, size_t *result_length) {
    if (status != 0) {
        free(out->data);
        return status;
    }
    *result = out->data;
    *result_length = out->length;
    return 0;
}

static void *aq_open_library(const char *const *names) {
    for (int i = 0; names[i]; i++) {
        void *handle = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
        if (handle) return handle;
    }
    return NULL;
}

/* ---------------------------------------------------------------- gzip (zlib) */

typedef struct {
    const unsigned char *next_in;
    unsigned avail_in;
    unsigned long total_in;
    unsigned char *next_out;
    unsigned avail_out;
    unsigned long total_out;
    const char *msg;
    void *state;
    void *zalloc, *zfree, *opaque;
    int data_type;
    unsigned long adler, reserved;
} aq_z_stream; /* zlib's z_stream layout (stable ABI since zlib 1.0) */

static struct {
    pthread_once_t once;
    int (*inflateInit2_)(aq_z_stream *, int, const char *, int);
    int (*inflate)(aq_z_stream *, int);
    int (*inflateEnd)(aq_z_stream *);
    const char *(*zlibVersion)(void);
} aq_zlib = { PTHREAD_ONCE_INIT };

static void aq_load_zlib(void) {
    static const char *const names[] = { "libz.so.1", "libz.so", "libz.dylib", NULL };
    void *handle = aq_open_library(names);
    if (!handle) return;
    aq_zlib.inflateInit2_ = dlsym(handle, "inflateInit2_");
    aq_zlib.inflate = dlsym(handle, "inflate");
    aq_zlib.inflateEnd = dlsym(handle, "inflateEnd");
    aq_zlib.zlibVersion = dlsym(handle, "zlibVersion");
}

static int aq_gzip(const unsigned char *input, size_t length, aq_output *out) {
    pthread_once(&aq_zlib.once, aq_load_zlib);
    if (!aq_zlib.inflateInit2_ || !aq_zlib.inflate || !aq_zlib.inflateEnd || !aq_zlib.zlibVersion) return AQ_CODEC_UNAVAILABLE;
    aq_z_stream stream;
    memset(&stream, 0, sizeof stream);
    /* 15 + 32: a zlib or gzip header, detected. */
    if (aq_zlib.inflateInit2_(&stream, 15 + 32, aq_zlib.zlibVersion(), (int)sizeof stream) != 0) return AQ_CODEC_CORRUPT;
    stream.next_in = input;
    stream.avail_in = (unsigned)length;
    int status = 0;
    for (;;) {
        if ((status = aq_output_reserve(out, 65536)) != 0) break;
        stream.next_out = out->data + out->length;
        stream.avail_out = (unsigned)(out->capacity - out->length);
        int result = aq_zlib.inflate(&stream, 0);
        out->length = out->capacity - stream.avail_out;
        if (result == 1 /* Z_STREAM_END */) {
            /* Concatenated gzip members are legal: go on if input remains. */
            break;
        }
        if (result != 0 /* Z_OK */ && result != -5 /* Z_BUF_ERROR */) { status = AQ_CODEC_CORRUPT; break; }
        if (result == -5 && stream.avail_in == 0) { status = AQ_CODEC_CORRUPT; break; }
    }
    aq_zlib.inflateEnd(&stream);
    return status;
}

/* ---------------------------------------------------------------- zstd */

typedef struct { const void *src; size_t size; size_t pos; } aq_zstd_in;
typedef struct { void *dst; size_t size; size_t pos; } aq_zstd_out;

static struct {
    pthread_once_t once;
    void *(*createDStream)(void);
    size_t (*freeDStream)(void *);
    size_t (*initDStream)(void *);
    size_t (*decompressStream)(void *, aq_zstd_out *, aq_zstd_in *);
    unsigned (*isError)(size_t);
} aq_zstd = { PTHREAD_ONCE_INIT };

static void aq_load_zstd(void) {
    static const char *const names[] = { "libzstd.so.1", "libzstd.so", "libzstd.dylib", NULL };
    void *handle = aq_open_library(names);
    if (!handle) return;
    aq_zstd.createDStream = dlsym(handle, "ZSTD_createDStream");
    aq_zstd.freeDStream = dlsym(handle, "ZSTD_freeDStream");
    aq_zstd.initDStream = dlsym(handle, "ZSTD_initDStream");
    aq_zstd.decompressStream = dlsym(handle, "ZSTD_decompressStream");
    aq_zstd.isError = dlsym(handle, "ZSTD_isError");
}

static int aq_zstd_decompress(const unsigned char *input, size_t length, aq_output *out) {
    pthread_once(&aq_zstd.once, aq_load_zstd);
    if (!aq_zstd.createDStream || !aq_zstd.freeDStream || !aq_zstd.initDStream || !aq_zstd.decompressStream || !aq_zstd.isError) {
        return AQ_CODEC_UNAVAILABLE;
    }
    void *stream = aq_zstd.createDStream();
    if (!stream) return AQ_CODEC_TOO_LARGE;
    aq_zstd.initDStream(stream);
    aq_zstd_in in = { input, length, 0 };
    int status = 0;
    for (;;) {
        if ((status = aq_output_reserve(out, 65536)) != 0) break;
        aq_zstd_out target = { out->data + out->length, out->capacity - out->length, 0 };
        size_t consumed_before = in.pos;
        size_t result = aq_zstd.decompressStream(stream, &target, &in);
        out->length += target.pos;
        if (aq_zstd.isError(result)) { status = AQ_CODEC_CORRUPT; break; }
        /* Done when the input is used up and the output was not filled (nothing held back). */
        if (in.pos == in.size && target.pos < target.size) {
            if (result != 0) status = AQ_CODEC_CORRUPT; /* a frame was cut short */
            break;
        }
        if (in.pos == consumed_before && target.pos == 0) { status = AQ_CODEC_CORRUPT; break; }
    }
    aq_zstd.freeDStream(stream);
    return status;
}

/* ---------------------------------------------------------------- lz4 (frame format) */

static struct {
    pthread_once_t once;
    size_t (*createContext)(void **, unsigned);
    size_t (*freeContext)(void *);
    size_t (*decompress)(void *, void *, size_t *, const void *, size_t *, const void *);
    unsigned (*isError)(size_t);
} aq_lz4 = { PTHREAD_ONCE_INIT };

static void aq_load_lz4(void) {
    static const char *const names[] = { "liblz4.so.1", "liblz4.so", "liblz4.dylib", NULL };
    void *handle = aq_open_library(names);
    if (!handle) return;
    aq_lz4.createContext = dlsym(handle, "LZ4F_createDecompressionContext");
    aq_lz4.freeContext = dlsym(handle, "LZ4F_freeDecompressionContext");
    aq_lz4.decompress = dlsym(handle, "LZ4F_decompress");
    aq_lz4.isError = dlsym(handle, "LZ4F_isError");
}

static int aq_lz4_decompress(const unsigned char *input, size_t length, aq_output *out) {
    pthread_once(&aq_lz4.once, aq_load_lz4);
    if (!aq_lz4.createContext || !aq_lz4.freeContext || !aq_lz4.decompress || !aq_lz4.isError) return AQ_CODEC_UNAVAILABLE;
    void *context = NULL;
    if (aq_lz4.isError(aq_lz4.createContext(&context, 100 /* LZ4F_VERSION */))) return AQ_CODEC_TOO_LARGE;
    size_t consumed_total = 0;
    int status = 0;
    while (consumed_total < length) {
        if ((status = aq_output_reserve(out, 65536)) != 0) break;
        size_t produced = out->capacity - out->length;
        size_t consumed = length - consumed_total;
        size_t result = aq_lz4.decompress(context, out->data + out->length, &produced, input + consumed_total, &consumed, NULL);
        if (aq_lz4.isError(result)) { status = AQ_CODEC_CORRUPT; break; }
        out->length += produced;
        consumed_total += consumed;
        if (result == 0 && consumed_total < length) continue; /* a frame ended; another may follow */
        if (consumed == 0 && produced == 0) { status = AQ_CODEC_CORRUPT; break; }
    }
    aq_lz4.freeContext(context);
    return status;
}

/* ---------------------------------------------------------------- snappy */

/* One raw snappy block: a varint of the uncompressed length, then literals and copies. */
static int aq_snappy_block(const unsigned char *input, size_t length, aq_output *out) {
    size_t position = 0;
    uint64_t expected = 0;
    for (int shift = 0;; shift += 7) {
        if (position >= length || shift > 35) return AQ_CODEC_CORRUPT;
        unsigned char byte = input[position++];
        expected |= (uint64_t)(byte & 0x7F) << shift;
        if (!(byte & 0x80)) break;
    }
    size_t start = out->length;
    int status = aq_output_reserve(out, (size_t)expected);
    if (status != 0) return status;
    while (position < length) {
        unsigned char tag = input[position++];
        size_t literal = 0, copy = 0, offset = 0;
        switch (tag & 3) {
        case 0:
            literal = tag >> 2;
            if (literal >= 60) {
                size_t bytes = literal - 59;
                if (position + bytes > length) return AQ_CODEC_CORRUPT;
                literal = 0;
                for (size_t i = 0; i < bytes; i++) literal |= (size_t)input[position + i] << (8 * i);
                position += bytes;
            }
            literal += 1;
            if (position + literal > length || out->length + literal > start + expected) return AQ_CODEC_CORRUPT;
            memcpy(out->data + out->length, input + position, literal);
            out->length += literal;
            position += literal;
            continue;
        case 1:
            if (position + 1 > length) return AQ_CODEC_CORRUPT;
            copy = ((tag >> 2) & 7) + 4;
            offset = ((size_t)(tag >> 5) << 8) | input[position];
            position += 1;
            break;
        case 2:
            if (position + 2 > length) return AQ_CODEC_CORRUPT;
            copy = (tag >> 2) + 1;
            offset = input[position] | ((size_t)input[position + 1] << 8);
            position += 2;
            break;
        default:
            if (position + 4 > length) return AQ_CODEC_CORRUPT;
            copy = (tag >> 2) + 1;
            offset = input[position] | ((size_t)input[position + 1] << 8) | ((size_t)input[position + 2] << 16)
                | ((size_t)input[position + 3] << 24);
            position += 4;
            break;
        }
        if (offset == 0 || offset > out->length - start || out->length + copy > start + expected) return AQ_CODEC_CORRUPT;
        /* Byte by byte: copies may overlap what they produce. */
        for (size_t i = 0; i < copy; i++) out->data[out->length + i] = out->data[out->length - offset + i];
        out->length += copy;
    }
    return out->length - start == expected ? 0 : AQ_CODEC_CORRUPT;
}

static uint32_t aq_big_endian32(const unsigned char *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static int aq_snappy(const unsigned char *input, size_t length, aq_output *out) {
    static const unsigned char xerial[8] = { 0x82, 'S', 'N', 'A', 'P', 'P', 'Y', 0 };
    if (length < 16 || memcmp(input, xerial, 8) != 0) return aq_snappy_block(input, length, out);
    /* xerial framing: magic, version, compatible version, then (length, block) pairs. */
    size_t position = 16;
    while (position < length) {
        if (position + 4 > length) return AQ_CODEC_CORRUPT;
        uint32_t block = aq_big_endian32(input + position);
        position += 4;
        if (block > length - position) return AQ_CODEC_CORRUPT;
        int status = aq_snappy_block(input + position, block, out);
        if (status != 0) return status;
        position += block;
    }
    return 0;
}

/* ---------------------------------------------------------------- entry point */

int aq_decompress(int codec, const void *input, size_t length, size_t limit, void **output, size_t *output_length) {
    aq_output out = { NULL, 0, 0, limit };
    int status;
    switch (codec) {
    case 1: status = aq_gzip(input, length, &out); break;
    case 2: status = aq_snappy(input, length, &out); break;
    case 3: status = aq_lz4_decompress(input, length, &out); break;
    case 4: status = aq_zstd_decompress(input, length, &out); break;
    default: status = AQ_CODEC_UNAVAILABLE; break;
    }
    if (status == 0 && out.data == NULL) {
        out.data = malloc(1);
        if (!out.data) status = AQ_CODEC_TOO_LARGE;
    }
    return aq_finish(&out, status, output, output_length);
}
