/*
 * Checkpoints: a net (architecture, weights, EMA) and optionally its
 * trainer's whole state, in a little-endian file written atomically.
 *
 * File layout (format version 1).  Every integer is little-endian and every
 * float or double is its IEEE-754 bit pattern, written byte by byte:
 *
 *   offset  size  field
 *        0     8  magic "DIFFCKPT"
 *        8     4  u32 format version (1); magic and version keep these
 *                 offsets in every later version
 *       12     8  u64 payload length N; the file is exactly 24 + N bytes
 *       20     4  u32 CRC-32 (IEEE 802.3, reflected 0xEDB88320) of the payload
 *       24     N  payload: records back to back, no padding
 *
 * A record:
 *
 *   u8         name length L, 1 .. 255
 *   L bytes    name, characters [A-Za-z0-9._-]
 *   u8         element type: 1 f32, 2 f64, 3 i32, 4 u32, 5 u64
 *   u8         rank R, 0 .. 4 (0: a scalar)
 *   R x u64    dims, outermost first, each >= 1
 *   elements   prod(dims) of them (1 for a scalar), each little-endian
 *
 * Version 1 records ("x" is a scalar):
 *
 *   net.kind                    u32 x     DIFFUSE_NET_KIND_*: 1 MLP, 2 U-Net;
 *                                         a file without it holds an MLP
 *   net.dim                     u64 x     data elements per sample (C H W
 *                                         for a U-Net)
 *   net.width, net.depth,       u64 x     MLP only: diffuse_net_create_mlp()'s
 *     net.emb_dim                         sizes
 *   net.channels, net.height,   u64 x     U-Net only:
 *     net.width_pixels,                   diffuse_net_create_unet()'s sizes
 *     net.base_channels,
 *     net.groups
 *   net.prediction,             i32 x     DIFFUSE_PRED_*, DIFFUSE_VAR_*
 *   net.variance
 *   net.params, net.ema         f32 [P]   weights and EMA, documented order
 *   trainer.lr, .beta1, .beta2, f64 x     DIFFUSE_TRAINER_* values, bit exact
 *     .eps, .weight_decay,
 *     .grad_clip, .ema_decay,
 *     .min_snr_gamma
 *   trainer.adamw, .loss,       i32 x
 *     .timesteps, .num_threads
 *   trainer.step                u64 x     steps taken
 *   trainer.adam_m, .adam_v     f32 [P]   Adam moments
 *   trainer.loss_history        f64 [T][10]  importance sampler's losses
 *   trainer.loss_history_count  u32 [T]   losses recorded per t (<= 10)
 *   trainer.loss_history_next   u32 [T]   next slot per t (< 10)
 *   schedule.betas              f64 [T]   the trainer's schedule
 *   schedule.timesteps          i32 [T]   its original indices
 *   net.classes                 u64 x     DIFFUSE_NET_CLASSES, 1 .. 2^24;
 *                                         only for a net with classes
 *                                         (then net.params holds the class
 *                                         embedding [classes + 1][E] last)
 *   net.uncond_rows             u64 x     DIFFUSE_NET_UNCOND_ROWS, with
 *                                         net.classes only
 *   trainer.label_dropout       f64 x     DIFFUSE_TRAINER_LABEL_DROPOUT;
 *                                         written when not 0
 *   meta.text                   u32 [W]   the caller's text of
 *                                         diffuse_checkpoint_save_meta():
 *                                         its bytes 4 to a word, the first
 *                                         in the low byte, then zero bytes
 *                                         up to the word boundary (at least
 *                                         one); no zero byte inside the text
 *   net.channels, .height,      u64 x     Improved DDPM U-Net (net.kind 3):
 *     .width_pixels,                      diffuse_net_create_iddpm()'s sizes
 *     .base_channels, .groups,            (base_channels: model_channels)
 *     .num_res_blocks,                    and options; num_heads_upsample
 *     .num_heads,                         as used (never -1)
 *     .num_heads_upsample
 *   net.channel_mult            u64 [L]   per level
 *   net.attention_levels        u32 [L]   1 where the level has attention
 *   net.use_scale_shift_norm,   u32 x     0 or 1
 *     net.conv_resample
 *   net.dropout, net.time_scale f64 x
 * (added in 1.1 the same way: an older reader refuses kind 3.)
 *
 * The U-Net records and net.kind 2 were added to version 1 without a new
 * version: a reader that predates them refuses a U-Net file with
 * DIFFUSE_EFORMAT (the MLP records are missing, the kind is unknown), and
 * every MLP file reads as before (an MLP's bytes did not change).  The
 * class records came the same way: a reader that predates them skips
 * net.classes and refuses the file, whose net.params is longer than the
 * architecture it knows; a net without classes is written as before.
 *
 * meta.text came the same way (1.1): a 1.0 reader skips it as an unknown
 * name, and a file without it reads as before.
 *
 * The writer emits the records in the order of the known-record table below
 * (KNOWN); the loader accepts them in any order.
 *
 * Rules of the loader, checked in this order, each failure DIFFUSE_EFORMAT:
 *  - magic; version (0 or above diffuse_checkpoint_format_version():
 *    "written by a newer libdiffuse"); payload length equal to the bytes
 *    that follow the header; CRC.
 *  - Every record well formed and inside the payload (no size arithmetic can
 *    overflow: element counts are checked against the bytes left).
 *  - A known name must have the type and rank above and appear once.  An
 *    unknown name is skipped once it is well formed: a later library may
 *    add ancillary records without a new version; anything an older
 *    reader must understand needs a new version.
 *  - Every net record of the kind present, and none of the other kind's;
 *    the trainer and schedule records all present or all absent.  Sizes
 *    agree with the architecture ([P], [T], [T][10]; a U-Net's dim is
 *    C H W); values in range: sizes as diffuse_net_create_mlp() or
 *    diffuse_net_create_unet() takes them, kinds known, weights, EMA and
 *    Adam moments finite (second moments >= 0),
 *    trainer parameters as diffuse_trainer_set() takes them, losses finite,
 *    history counters consistent, betas in (0, 1] (1 only last), timesteps
 *    increasing from >= 0.
 *  - The workspace the net needs for max_batch rows (and, with tr_out, the
 *    trainer's for trainer_batch rows) within the caller's limit (default
 *    DIFFUSE_CHECKPOINT_DEFAULT_MAX_WORKSPACE): everything else a load allocates is
 *    backed by the file's own bytes.
 * Then, with tr_out: DIFFUSE_EINVAL unless the file holds trainer state and
 * s has its betas and timesteps bit for bit.
 *
 * Files are read whole (at most 2 GiB) and parsed from memory; saving makes
 * two passes over the state (length and CRC, then the bytes), so it
 * allocates nothing but the temporary file's name.  It replaces only a
 * regular file (never a symlink, FIFO or device), and first removes the
 * temporary files that killed saves of the same path left (remove_stale()).
 */
#define _POSIX_C_SOURCE 200809L

#include "checkpoint.h"
#include "layers.h"
#include "train.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

_Static_assert(sizeof(float) == 4 && sizeof(double) == 8, "IEEE-754 binary32 and binary64");

#define FORMAT_VERSION 1u
#define MAX_RANK 4u
#define SIZE_LIMIT ((uint64_t)1 << 24) /* dim, width, emb_dim (diffuse_net_create_mlp) */
/* Above this many parameters a net's weights cannot fit a checkpoint. */
#define PARAM_LIMIT ((uint64_t)1 << 30)
#define DEPTH_LIMIT 4096u
#define LOAD "diffuse_checkpoint_load"
#define BAD(...) diffuse__fail(DIFFUSE_EFORMAT, LOAD, __VA_ARGS__)

static const unsigned char MAGIC[8] = {'D', 'I', 'F', 'F', 'C', 'K', 'P', 'T'};

/* ---------------------------------------------------------------------- */
/* CRC-32                                                                   */

static const uint32_t CRC_TABLE[256] = {
    0x00000000u, 0x77073096u, 0xee0e612cu, 0x990951bau, 0x076dc419u, 0x706af48fu,
    0xe963a535u, 0x9e6495a3u, 0x0edb8832u, 0x79dcb8a4u, 0xe0d5e91eu, 0x97d2d988u,
    0x09b64c2bu, 0x7eb17cbdu, 0xe7b82d07u, 0x90bf1d91u, 0x1db71064u, 0x6ab020f2u,
    0xf3b97148u, 0x84be41deu, 0x1adad47du, 0x6ddde4ebu, 0xf4d4b551u, 0x83d385c7u,
    0x136c9856u, 0x646ba8c0u, 0xfd62f97au, 0x8a65c9ecu, 0x14015c4fu, 0x63066cd9u,
    0xfa0f3d63u, 0x8d080df5u, 0x3b6e20c8u, 0x4c69105eu, 0xd56041e4u, 0xa2677172u,
    0x3c03e4d1u, 0x4b04d447u, 0xd20d85fdu, 0xa50ab56bu, 0x35b5a8fau, 0x42b2986cu,
    0xdbbbc9d6u, 0xacbcf940u, 0x32d86ce3u, 0x45df5c75u, 0xdcd60dcfu, 0xabd13d59u,
    0x26d930acu, 0x51de003au, 0xc8d75180u, 0xbfd06116u, 0x21b4f4b5u, 0x56b3c423u,
    0xcfba9599u, 0xb8bda50fu, 0x2802b89eu, 0x5f058808u, 0xc60cd9b2u, 0xb10be924u,
    0x2f6f7c87u, 0x58684c11u, 0xc1611dabu, 0xb6662d3du, 0x76dc4190u, 0x01db7106u,
    0x98d220bcu, 0xefd5102au, 0x71b18589u, 0x06b6b51fu, 0x9fbfe4a5u, 0xe8b8d433u,
    0x7807c9a2u, 0x0f00f934u, 0x9609a88eu, 0xe10e9818u, 0x7f6a0dbbu, 0x086d3d2du,
    0x91646c97u, 0xe6635c01u, 0x6b6b51f4u, 0x1c6c6162u, 0x856530d8u, 0xf262004eu,
    0x6c0695edu, 0x1b01a57bu, 0x8208f4c1u, 0xf50fc457u, 0x65b0d9c6u, 0x12b7e950u,
    0x8bbeb8eau, 0xfcb9887cu, 0x62dd1ddfu, 0x15da2d49u, 0x8cd37cf3u, 0xfbd44c65u,
    0x4db26158u, 0x3ab551ceu, 0xa3bc0074u, 0xd4bb30e2u, 0x4adfa541u, 0x3dd895d7u,
    0xa4d1c46du, 0xd3d6f4fbu, 0x4369e96au, 0x346ed9fcu, 0xad678846u, 0xda60b8d0u,
    0x44042d73u, 0x33031de5u, 0xaa0a4c5fu, 0xdd0d7cc9u, 0x5005713cu, 0x270241aau,
    0xbe0b1010u, 0xc90c2086u, 0x5768b525u, 0x206f85b3u, 0xb966d409u, 0xce61e49fu,
    0x5edef90eu, 0x29d9c998u, 0xb0d09822u, 0xc7d7a8b4u, 0x59b33d17u, 0x2eb40d81u,
    0xb7bd5c3bu, 0xc0ba6cadu, 0xedb88320u, 0x9abfb3b6u, 0x03b6e20cu, 0x74b1d29au,
    0xead54739u, 0x9dd277afu, 0x04db2615u, 0x73dc1683u, 0xe3630b12u, 0x94643b84u,
    0x0d6d6a3eu, 0x7a6a5aa8u, 0xe40ecf0bu, 0x9309ff9du, 0x0a00ae27u, 0x7d079eb1u,
    0xf00f9344u, 0x8708a3d2u, 0x1e01f268u, 0x6906c2feu, 0xf762575du, 0x806567cbu,
    0x196c3671u, 0x6e6b06e7u, 0xfed41b76u, 0x89d32be0u, 0x10da7a5au, 0x67dd4accu,
    0xf9b9df6fu, 0x8ebeeff9u, 0x17b7be43u, 0x60b08ed5u, 0xd6d6a3e8u, 0xa1d1937eu,
    0x38d8c2c4u, 0x4fdff252u, 0xd1bb67f1u, 0xa6bc5767u, 0x3fb506ddu, 0x48b2364bu,
    0xd80d2bdau, 0xaf0a1b4cu, 0x36034af6u, 0x41047a60u, 0xdf60efc3u, 0xa867df55u,
    0x316e8eefu, 0x4669be79u, 0xcb61b38cu, 0xbc66831au, 0x256fd2a0u, 0x5268e236u,
    0xcc0c7795u, 0xbb0b4703u, 0x220216b9u, 0x5505262fu, 0xc5ba3bbeu, 0xb2bd0b28u,
    0x2bb45a92u, 0x5cb36a04u, 0xc2d7ffa7u, 0xb5d0cf31u, 0x2cd99e8bu, 0x5bdeae1du,
    0x9b64c2b0u, 0xec63f226u, 0x756aa39cu, 0x026d930au, 0x9c0906a9u, 0xeb0e363fu,
    0x72076785u, 0x05005713u, 0x95bf4a82u, 0xe2b87a14u, 0x7bb12baeu, 0x0cb61b38u,
    0x92d28e9bu, 0xe5d5be0du, 0x7cdcefb7u, 0x0bdbdf21u, 0x86d3d2d4u, 0xf1d4e242u,
    0x68ddb3f8u, 0x1fda836eu, 0x81be16cdu, 0xf6b9265bu, 0x6fb077e1u, 0x18b74777u,
    0x88085ae6u, 0xff0f6a70u, 0x66063bcau, 0x11010b5cu, 0x8f659effu, 0xf862ae69u,
    0x616bffd3u, 0x166ccf45u, 0xa00ae278u, 0xd70dd2eeu, 0x4e048354u, 0x3903b3c2u,
    0xa7672661u, 0xd06016f7u, 0x4969474du, 0x3e6e77dbu, 0xaed16a4au, 0xd9d65adcu,
    0x40df0b66u, 0x37d83bf0u, 0xa9bcae53u, 0xdebb9ec5u, 0x47b2cf7fu, 0x30b5ffe9u,
    0xbdbdf21cu, 0xcabac28au, 0x53b39330u, 0x24b4a3a6u, 0xbad03605u, 0xcdd70693u,
    0x54de5729u, 0x23d967bfu, 0xb3667a2eu, 0xc4614ab8u, 0x5d681b02u, 0x2a6f2b94u,
    0xb40bbe37u, 0xc30c8ea1u, 0x5a05df1bu, 0x2d02ef8du,
};

uint32_t diffuse__crc32(uint32_t crc, const void *buf, size_t len)
{
    const unsigned char *p = (const unsigned char *)buf;
    size_t i;
    crc = ~crc;
    for (i = 0; i < len; i++)
        crc = CRC_TABLE[(crc ^ p[i]) & 0xFFu] ^ (crc >> 8);
    return ~crc;
}

int diffuse_checkpoint_format_version(void)
{
    return (int)FORMAT_VERSION;
}

/* ---------------------------------------------------------------------- */
/* Records                                                                  */

enum { T_F32 = 1, T_F64 = 2, T_I32 = 3, T_U32 = 4, T_U64 = 5 };

static size_t type_size(unsigned type)
{
    return type == T_F32 || type == T_I32 || type == T_U32 ? 4 : type == T_F64 || type == T_U64 ? 8
                                                                                                 : 0;
}

/* The known records.  R_LR .. R_THREADS follow DIFFUSE_TRAINER_LR (1) ..
 * DIFFUSE_TRAINER_NUM_THREADS (12) in order. */
enum {
    R_KIND, R_DIM, R_WIDTH, R_DEPTH, R_EMB,
    R_CHANNELS, R_HEIGHT, R_WIDTH_PIXELS, R_BASE, R_GROUPS,
    R_PRED, R_VAR, R_PARAMS, R_EMA,
    R_LR, R_BETA1, R_BETA2, R_EPS, R_WD, R_ADAMW, R_CLIP, R_EMA_DECAY, R_LOSS, R_MIN_SNR,
    R_TIMESTEPS_KIND, R_THREADS,
    R_STEP, R_M, R_V, R_HIST, R_HIST_N, R_HIST_POS, R_BETAS, R_SCHED_T,
    R_CLASSES, R_UNCOND, R_DROPOUT, R_META,
    R_NRB, R_MULT, R_ATTN, R_HEADS, R_HEADS_UP, R_SCALE_SHIFT, R_CONV_RESAMPLE, R_NET_DROPOUT,
    R_TIME_SCALE,
    R_COUNT
};
#define R_FIRST_TRAINER R_LR
#define R_LAST_TRAINER R_SCHED_T /* the records a trainer state always has */
_Static_assert(R_THREADS - R_LR == DIFFUSE_TRAINER_NUM_THREADS - DIFFUSE_TRAINER_LR,
               "one record per trainer parameter, in the order of their numbers");

static const struct {
    const char *name;
    unsigned char type, rank;
} KNOWN[R_COUNT] = {
    {"net.kind", T_U32, 0},
    {"net.dim", T_U64, 0},
    {"net.width", T_U64, 0},
    {"net.depth", T_U64, 0},
    {"net.emb_dim", T_U64, 0},
    {"net.channels", T_U64, 0},
    {"net.height", T_U64, 0},
    {"net.width_pixels", T_U64, 0},
    {"net.base_channels", T_U64, 0},
    {"net.groups", T_U64, 0},
    {"net.prediction", T_I32, 0},
    {"net.variance", T_I32, 0},
    {"net.params", T_F32, 1},
    {"net.ema", T_F32, 1},
    {"trainer.lr", T_F64, 0},
    {"trainer.beta1", T_F64, 0},
    {"trainer.beta2", T_F64, 0},
    {"trainer.eps", T_F64, 0},
    {"trainer.weight_decay", T_F64, 0},
    {"trainer.adamw", T_I32, 0},
    {"trainer.grad_clip", T_F64, 0},
    {"trainer.ema_decay", T_F64, 0},
    {"trainer.loss", T_I32, 0},
    {"trainer.min_snr_gamma", T_F64, 0},
    {"trainer.timesteps", T_I32, 0},
    {"trainer.num_threads", T_I32, 0},
    {"trainer.step", T_U64, 0},
    {"trainer.adam_m", T_F32, 1},
    {"trainer.adam_v", T_F32, 1},
    {"trainer.loss_history", T_F64, 2},
    {"trainer.loss_history_count", T_U32, 1},
    {"trainer.loss_history_next", T_U32, 1},
    {"schedule.betas", T_F64, 1},
    {"schedule.timesteps", T_I32, 1},
    {"net.classes", T_U64, 0},
    {"net.uncond_rows", T_U64, 0},
    {"trainer.label_dropout", T_F64, 0},
    {"meta.text", T_U32, 1},
    {"net.num_res_blocks", T_U64, 0},
    {"net.channel_mult", T_U64, 1},
    {"net.attention_levels", T_U32, 1},
    {"net.num_heads", T_U64, 0},
    {"net.num_heads_upsample", T_U64, 0},
    {"net.use_scale_shift_norm", T_U32, 0},
    {"net.conv_resample", T_U32, 0},
    {"net.dropout", T_F64, 0},
    {"net.time_scale", T_F64, 0},
};

static void put32(unsigned char *b, uint32_t v)
{
    b[0] = (unsigned char)v;
    b[1] = (unsigned char)(v >> 8);
    b[2] = (unsigned char)(v >> 16);
    b[3] = (unsigned char)(v >> 24);
}

static void put64(unsigned char *b, uint64_t v)
{
    put32(b, (uint32_t)v);
    put32(b + 4, (uint32_t)(v >> 32));
}

static uint32_t get32(const unsigned char *b)
{
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

static uint64_t get64(const unsigned char *b)
{
    return (uint64_t)get32(b) | (uint64_t)get32(b + 4) << 32;
}

static int32_t get_i32(const unsigned char *b)
{
    uint32_t u = get32(b);
    return u <= INT32_MAX ? (int32_t)u : -(int32_t)(~u) - 1;
}

static float get_f32(const unsigned char *b)
{
    uint32_t u = get32(b);
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static double get_f64(const unsigned char *b)
{
    uint64_t u = get64(b);
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
}

/* ---------------------------------------------------------------------- */
/* Writing                                                                  */

/* A byte sink: a FILE, a memory buffer, or neither (length and CRC only). */
typedef struct {
    FILE *f;
    unsigned char *mem;
    size_t cap, pos; /* memory sink */
    uint64_t plen;   /* payload bytes so far */
    uint32_t crc;    /* CRC of the payload so far */
    int err;         /* errno of the first failed write; -1: memory sink full */
} writer;

static void w_bytes(writer *w, const void *p, size_t n, int payload)
{
    if (payload) {
        w->crc = diffuse__crc32(w->crc, p, n);
        w->plen += n;
    }
    if (w->err != 0 || n == 0)
        return;
    if (w->f != NULL) {
        errno = 0;
        if (fwrite(p, 1, n, w->f) != n)
            w->err = errno != 0 ? errno : EIO;
    }
    if (w->mem != NULL) {
        if (n > w->cap - w->pos)
            w->err = -1;
        else
            memcpy(w->mem + w->pos, p, n);
        w->pos += n;
    }
}

static void w_head(writer *w, int r, const uint64_t *dims)
{
    unsigned char b[3 + 255 + 8 * MAX_RANK];
    size_t L = strlen(KNOWN[r].name), k = 0, i;
    b[k++] = (unsigned char)L;
    memcpy(b + k, KNOWN[r].name, L);
    k += L;
    b[k++] = KNOWN[r].type;
    b[k++] = KNOWN[r].rank;
    for (i = 0; i < KNOWN[r].rank; i++, k += 8)
        put64(b + k, dims[i]);
    w_bytes(w, b, k, 1);
}

#define CHUNK 512 /* elements converted per write */

/* n elements of `size` (4 or 8) bytes each at x (u32, i32, float; u64,
 * double), their bit patterns little-endian: the element bytes of a record
 * whose head is written. */
static void w_words(writer *w, const void *x, size_t n, size_t size)
{
    const unsigned char *src = (const unsigned char *)x;
    unsigned char b[8 * CHUNK];
    while (n > 0) {
        size_t k = n < CHUNK ? n : CHUNK, i;
        for (i = 0; i < k; i++, src += size) {
            if (size == 4) {
                uint32_t u;
                memcpy(&u, src, 4);
                put32(b + 4 * i, u);
            } else {
                uint64_t u;
                memcpy(&u, src, 8);
                put64(b + 8 * i, u);
            }
        }
        w_bytes(w, b, size * k, 1);
        n -= k;
    }
}

static void w_u32s(writer *w, const uint32_t *x, size_t n)
{
    w_words(w, x, n, 4);
}

static void w_i32s(writer *w, const int32_t *x, size_t n)
{
    w_words(w, x, n, 4);
}

static void w_f32s(writer *w, const float *x, size_t n)
{
    w_words(w, x, n, 4);
}

static void w_f64s(writer *w, const double *x, size_t n)
{
    w_words(w, x, n, 8);
}

/* A one-element record r of `size` bytes at v. */
static void w_one(writer *w, int r, const void *v, size_t size)
{
    w_head(w, r, NULL);
    w_words(w, v, 1, size);
}

static void w_u64(writer *w, int r, uint64_t v)
{
    w_one(w, r, &v, 8);
}

static void w_u32(writer *w, int r, uint32_t v)
{
    w_one(w, r, &v, 4);
}

static void w_i32(writer *w, int r, int32_t v)
{
    w_one(w, r, &v, 4);
}

static void w_f64(writer *w, int r, double v)
{
    w_one(w, r, &v, 8);
}

/* The payload of a net and, when tr is not NULL, its trainer. */
static void emit(writer *w, const diffuse_net *n, const diffuse_trainer *tr)
{
    uint64_t d[2];
    w_u32(w, R_KIND, (uint32_t)n->kind);
    w_u64(w, R_DIM, n->dim);
    if (n->kind == DIFFUSE_NET_KIND_IDDPM) {
        const diffuse__iddpm_config *c = &n->iddpm->cfg;
        uint64_t m[DIFFUSE__IDDPM_MAX_LEVELS];
        uint32_t at[DIFFUSE__IDDPM_MAX_LEVELS];
        size_t l;
        w_u64(w, R_CHANNELS, c->C);
        w_u64(w, R_HEIGHT, c->H);
        w_u64(w, R_WIDTH_PIXELS, c->W);
        w_u64(w, R_BASE, c->mc);
        w_u64(w, R_GROUPS, c->G);
        w_u64(w, R_NRB, c->nrb);
        for (l = 0; l < c->levels; l++) {
            m[l] = c->mult[l];
            at[l] = (c->attn_mask >> l) & 1u;
        }
        d[0] = c->levels;
        w_head(w, R_MULT, d);
        w_words(w, m, c->levels, 8);
        w_head(w, R_ATTN, d);
        w_u32s(w, at, c->levels);
        w_u64(w, R_HEADS, c->heads);
        w_u64(w, R_HEADS_UP, c->heads_up ? c->heads_up : c->heads);
        w_u32(w, R_SCALE_SHIFT, (uint32_t)c->scale_shift);
        w_u32(w, R_CONV_RESAMPLE, (uint32_t)c->conv_resample);
        w_f64(w, R_NET_DROPOUT, c->dropout);
        w_f64(w, R_TIME_SCALE, c->time_scale);
    } else if (n->kind == DIFFUSE_NET_KIND_UNET) {
        w_u64(w, R_CHANNELS, n->unet.C);
        w_u64(w, R_HEIGHT, n->unet.H);
        w_u64(w, R_WIDTH_PIXELS, n->unet.W);
        w_u64(w, R_BASE, n->unet.c);
        w_u64(w, R_GROUPS, n->unet.G);
    } else {
        w_u64(w, R_WIDTH, n->mlp.width);
        w_u64(w, R_DEPTH, n->mlp.depth);
        w_u64(w, R_EMB, n->mlp.emb);
    }
    w_i32(w, R_PRED, n->prediction);
    w_i32(w, R_VAR, n->variance);
    d[0] = n->n_params;
    w_head(w, R_PARAMS, d);
    w_f32s(w, n->params, n->n_params);
    w_head(w, R_EMA, d);
    w_f32s(w, n->ema, n->n_params);
    if (n->classes > 0) {
        w_u64(w, R_CLASSES, n->classes);
        w_u64(w, R_UNCOND, n->uncond_rows);
    }
    if (tr == NULL)
        return;
    if (tr->label_dropout != 0.0)
        w_f64(w, R_DROPOUT, tr->label_dropout);
    w_f64(w, R_LR, tr->lr);
    w_f64(w, R_BETA1, tr->beta1);
    w_f64(w, R_BETA2, tr->beta2);
    w_f64(w, R_EPS, tr->eps);
    w_f64(w, R_WD, tr->weight_decay);
    w_i32(w, R_ADAMW, tr->adamw);
    w_f64(w, R_CLIP, tr->grad_clip);
    w_f64(w, R_EMA_DECAY, tr->ema_decay);
    w_i32(w, R_LOSS, tr->loss);
    w_f64(w, R_MIN_SNR, tr->min_snr);
    w_i32(w, R_TIMESTEPS_KIND, tr->timesteps);
    w_i32(w, R_THREADS, tr->num_threads);
    w_u64(w, R_STEP, tr->step);
    w_head(w, R_M, d);
    w_f32s(w, tr->m, n->n_params);
    w_head(w, R_V, d);
    w_f32s(w, tr->v, n->n_params);
    d[0] = tr->T;
    d[1] = HISTORY;
    w_head(w, R_HIST, d);
    w_f64s(w, tr->hist, tr->T * HISTORY);
    w_head(w, R_HIST_N, d);
    w_u32s(w, tr->hist_n, tr->T);
    w_head(w, R_HIST_POS, d);
    w_u32s(w, tr->hist_pos, tr->T);
    w_head(w, R_BETAS, d);
    w_f64s(w, tr->sched->tables[DIFFUSE_TABLE_BETAS], tr->T);
    w_head(w, R_SCHED_T, d);
    w_i32s(w, tr->sched->timesteps, tr->T);
}

/* The meta.text record of a text (nothing for NULL). */
static void emit_meta(writer *w, const char *meta)
{
    uint64_t d[1];
    size_t n, i;
    if (meta == NULL)
        return;
    n = strlen(meta);
    d[0] = n / 4 + 1;
    w_head(w, R_META, d);
    for (i = 0; i < 4 * (size_t)d[0]; i += 4) {
        unsigned char b[4] = {0, 0, 0, 0};
        size_t k;
        for (k = 0; k < 4 && i + k < n; k++)
            b[k] = (unsigned char)meta[i + k];
        w_bytes(w, b, 4, 1);
    }
}

static void w_header(writer *w, uint64_t plen, uint32_t crc)
{
    unsigned char h[DIFFUSE__CKPT_HEADER];
    memcpy(h, MAGIC, 8);
    put32(h + 8, FORMAT_VERSION);
    put64(h + 12, plen);
    put32(h + 20, crc);
    w_bytes(w, h, sizeof h, 0);
}

/* The first non-finite value of x[0 .. n-1], or n. */
static size_t first_nonfinite_f32(const float *x, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return i;
    return n;
}

/* Refuse (as func, DIFFUSE_ENUMERIC) a state the loader would reject: a
 * non-finite weight, EMA weight, Adam moment or recorded loss. */
static int check_finite_state(const char *func, const diffuse_net *net,
                              const diffuse_trainer *tr)
{
    const size_t P = net->n_params;
    const float *arr[4];
    const char *names[4] = {"weight", "EMA weight", "Adam first moment", "Adam second moment"};
    size_t k, i, n = tr != NULL ? 4 : 2;
    arr[0] = net->params;
    arr[1] = net->ema;
    arr[2] = tr != NULL ? tr->m : NULL;
    arr[3] = tr != NULL ? tr->v : NULL;
    for (k = 0; k < n; k++) {
        i = first_nonfinite_f32(arr[k], P);
        if (i < P)
            return diffuse__fail(DIFFUSE_ENUMERIC, func,
                                 "%s %zu is %g: refusing to save a non-finite state (nothing "
                                 "written)",
                                 names[k], i, (double)arr[k][i]);
    }
    if (tr != NULL)
        for (i = 0; i < tr->T * HISTORY; i++)
            if (!isfinite(tr->hist[i]))
                return diffuse__fail(DIFFUSE_ENUMERIC, func,
                                     "loss history value %zu is %g: refusing to save a "
                                     "non-finite state (nothing written)",
                                     i, tr->hist[i]);
    return DIFFUSE_OK;
}

/* The first pass: payload length and CRC.  Fails (as func) above the size
 * limit. */
static int measure(const char *func, const diffuse_net *net, const diffuse_trainer *tr,
                   const char *meta, writer *w0)
{
    DIFFUSE_TRY(check_finite_state(func, net, tr));
    memset(w0, 0, sizeof *w0);
    emit(w0, net, tr);
    emit_meta(w0, meta);
    if (w0->plen > DIFFUSE__CKPT_MAX_BYTES - DIFFUSE__CKPT_HEADER)
        return diffuse__fail(DIFFUSE_EINVAL, func,
                             "the checkpoint would take %llu bytes, above the format's limit "
                             "of %llu",
                             (unsigned long long)(w0->plen + DIFFUSE__CKPT_HEADER),
                             (unsigned long long)DIFFUSE__CKPT_MAX_BYTES);
    return DIFFUSE_OK;
}

int diffuse__checkpoint_serialize(const diffuse_net *net, const diffuse_trainer *tr,
                                  unsigned char *buf, size_t cap, size_t *len)
{
    writer w0, w;
    size_t total;
    if (net == NULL || len == NULL)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "%s is NULL", net == NULL ? "net" : "len");
    *len = 0;
    if (tr != NULL && tr->net != net)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "the trainer trains another net");
    DIFFUSE_TRY(measure(__func__, net, tr, NULL, &w0));
    total = (size_t)w0.plen + DIFFUSE__CKPT_HEADER;
    *len = total;
    if (buf == NULL)
        return DIFFUSE_OK;
    if (cap < total)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "cap = %zu but the checkpoint takes %zu bytes", cap, total);
    memset(&w, 0, sizeof w);
    w.mem = buf;
    w.cap = cap;
    w_header(&w, w0.plen, w0.crc);
    emit(&w, net, tr);
    return DIFFUSE_OK;
}

/* errno's text, thread-safely (the XSI strerror_r). */
static const char *errno_text(int e, char *buf, size_t size)
{
    if (strerror_r(e, buf, size) != 0)
        snprintf(buf, size, "error %d", e);
    return buf;
}

/* fsync the directory holding path, so that the rename is durable too.
 * Best effort: a file system may refuse to sync a directory.  buf holds at
 * least strlen(path) + 2 bytes. */
static void sync_dir(const char *path, char *buf)
{
    const char *slash = strrchr(path, '/');
    int fd;
    if (slash == NULL) {
        strcpy(buf, ".");
    } else if (slash == path) {
        strcpy(buf, "/");
    } else {
        memcpy(buf, path, (size_t)(slash - path));
        buf[slash - path] = '\0';
    }
    fd = open(buf, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd);
        (void)close(fd);
    }
}

/* What a file that is not a regular file is, for a message. */
static const char *file_kind(mode_t m)
{
    return S_ISLNK(m) ? "a symbolic link" : S_ISDIR(m) ? "a directory" : S_ISFIFO(m) ? "a FIFO"
           : S_ISCHR(m) ? "a character device" : S_ISBLK(m) ? "a block device"
           : S_ISSOCK(m) ? "a socket" : "a special file";
}

/* Temporary files are named "<path>.tmp-<host>-<pid>.XXXXXX" (mkstemp
 * fills the X's), host being gethostname() with every character outside
 * [A-Za-z0-9_] replaced by '_' and cut to TMP_HOST_MAX characters. */
#define TMP_HOST_MAX 64

static void tmp_host(char *out)
{
    char h[256];
    size_t i;
    if (gethostname(h, sizeof h) != 0)
        h[0] = '\0';
    h[sizeof h - 1] = '\0';
    for (i = 0; h[i] != '\0' && i < TMP_HOST_MAX; i++) {
        const char c = h[i];
        out[i] = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
                     ? c
                     : '_';
    }
    out[i] = '\0';
}

/* Remove the temporary files that saves of path killed before their rename
 * left behind: entries "<base>.tmp-<host>-<pid>.<6 characters>" of path's
 * directory with this machine's host name and the pid of no live process
 * (kill(pid, 0) fails with ESRCH).  The files of a live process (this one
 * included: another thread may be saving the same path) and of other hosts
 * are kept.  Best effort: errors are ignored.  buf holds at least
 * strlen(path) + 258 bytes. */
static void remove_stale(const char *path, const char *host, char *buf)
{
    const char *slash = strrchr(path, '/');
    const char *base = slash != NULL ? slash + 1 : path;
    const size_t bl = strlen(base), hl = strlen(host);
    const size_t dl = slash == NULL ? 0 : slash == path ? 1 : (size_t)(slash - path);
    DIR *d;
    struct dirent *ent;
    if (slash == NULL)
        strcpy(buf, ".");
    else {
        memcpy(buf, path, dl);
        buf[dl] = '\0';
    }
    d = opendir(buf);
    if (d == NULL)
        return;
    while ((ent = readdir(d)) != NULL) {
        const char *n = ent->d_name, *p;
        unsigned long pid = 0;
        size_t digits = 0;
        if (strncmp(n, base, bl) != 0 || strncmp(n + bl, ".tmp-", 5) != 0 ||
            strncmp(n + bl + 5, host, hl) != 0 || n[bl + 5 + hl] != '-')
            continue;
        for (p = n + bl + 6 + hl; *p >= '0' && *p <= '9' && digits < 10; p++, digits++)
            pid = 10 * pid + (unsigned long)(*p - '0');
        if (digits == 0 || *p != '.' || strlen(p + 1) != 6 || pid == 0 || pid > INT_MAX ||
            (pid_t)pid == getpid())
            continue;
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH)
            continue;
        if (slash == NULL)
            (void)unlink(n);
        else {
            buf[dl] = '\0';
            if (dl == 1 && buf[0] == '/')
                snprintf(buf + 1, 257, "%s", n);
            else {
                buf[dl] = '/';
                snprintf(buf + dl + 1, 257, "%s", n);
            }
            (void)unlink(buf);
            buf[dl] = '\0';
        }
    }
    (void)closedir(d);
}

/* diffuse_checkpoint_save() and diffuse_checkpoint_save_meta() (as func),
 * with the meta.text record when meta is not NULL. */
static int save_file(const char *func, const char *path, const diffuse_net *net,
                     const diffuse_trainer *tr, const char *meta)
{
    writer w0, w;
    char *tmp, *scratch, msg[128], host[TMP_HOST_MAX + 1];
    const char *stage = NULL;
    size_t pl;
    int fd, e = 0, have_st;
    FILE *f;
    struct stat st;
    if (path == NULL || net == NULL)
        return diffuse__fail(DIFFUSE_EINVAL, func, "%s is NULL", path == NULL ? "path" : "net");
    if (path[0] == '\0')
        return diffuse__fail(DIFFUSE_EINVAL, func, "path is empty");
    if (tr != NULL && tr->net != net)
        return diffuse__fail(DIFFUSE_EINVAL, func, "the trainer trains another net");
    DIFFUSE_TRY(measure(func, net, tr, meta, &w0));
    pl = strlen(path);
    /* Only a regular file is replaced: the rename would put a regular file
     * in the place of a symlink, FIFO or device (lstat: a symlink is not
     * followed). */
    have_st = lstat(path, &st) == 0;
    if (have_st && !S_ISREG(st.st_mode))
        return diffuse__fail(DIFFUSE_EIO, func, "'%s' is %s, not a regular file: not replaced",
                             path, file_kind(st.st_mode));
    tmp_host(host);
    /* the temporary file's name, then room for a directory entry's path */
    tmp = (char *)diffuse__malloc(2 * pl + strlen(host) + 300);
    if (tmp == NULL)
        return diffuse__fail(DIFFUSE_ENOMEM, func, "cannot allocate the temporary file's name");
    scratch = tmp + pl + strlen(host) + 40;
    remove_stale(path, host, scratch);
    snprintf(tmp, pl + strlen(host) + 40, "%s.tmp-%s-%lu.XXXXXX", path, host,
             (unsigned long)getpid());
    fd = mkstemp(tmp);
    if (fd < 0) {
        e = errno;
        diffuse__free(tmp);
        return diffuse__fail(DIFFUSE_EIO, func, "cannot create a temporary file next to '%s': %s", path,
                     errno_text(e, msg, sizeof msg));
    }
    /* mkstemp makes the file 0600; a checkpoint that replaces a file keeps
     * that file's permissions. */
    if (have_st)
        (void)fchmod(fd, st.st_mode & 0777);
    f = fdopen(fd, "wb");
    if (f == NULL) {
        e = errno;
        (void)close(fd);
        stage = "open the temporary file for";
    } else {
        memset(&w, 0, sizeof w);
        w.f = f;
        w_header(&w, w0.plen, w0.crc);
        emit(&w, net, tr);
        emit_meta(&w, meta);
        if (w.err != 0) {
            e = w.err;
            stage = "write";
        } else if (w.plen != w0.plen || w.crc != w0.crc) {
            /* the state changed between the passes: another thread used
             * the net or trainer during the save */
            e = EAGAIN;
            stage = "save a consistent state to";
        } else if (fflush(f) != 0) {
            e = errno;
            stage = "write";
        } else if (fsync(fileno(f)) != 0) {
            e = errno;
            stage = "flush to disk";
        }
        if (fclose(f) != 0 && e == 0) {
            e = errno;
            stage = "close";
        }
        if (e == 0 && rename(tmp, path) != 0) {
            e = errno;
            stage = "rename the temporary file to";
        }
    }
    if (stage != NULL) {
        (void)unlink(tmp);
        diffuse__free(tmp);
        return diffuse__fail(DIFFUSE_EIO, func, "cannot %s '%s': %s (nothing written)", stage, path,
                     errno_text(e, msg, sizeof msg));
    }
    sync_dir(path, tmp);
    diffuse__free(tmp);
    return DIFFUSE_OK;
}

int diffuse_checkpoint_save(const char *path, const diffuse_net *net, const diffuse_trainer *tr)
{
    return save_file(__func__, path, net, tr, NULL);
}

int diffuse_checkpoint_save_meta(const char *path, const diffuse_net *net,
                                 const diffuse_trainer *tr, const char *meta)
{
    if (meta == NULL)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "meta is NULL");
    if (strlen(meta) > DIFFUSE_CHECKPOINT_META_MAX)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "meta holds %zu bytes, above the limit of %d",
                     strlen(meta), DIFFUSE_CHECKPOINT_META_MAX);
    return save_file(__func__, path, net, tr, meta);
}

/* ---------------------------------------------------------------------- */
/* Reading                                                                  */

typedef struct {
    const unsigned char *data; /* first element */
    uint64_t dims[MAX_RANK];
    int present;
} record;

static int name_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '.' || c == '_' || c == '-';
}

static int find_known(const unsigned char *name, size_t L)
{
    int r;
    for (r = 0; r < R_COUNT; r++)
        if (strlen(KNOWN[r].name) == L && memcmp(KNOWN[r].name, name, L) == 0)
            return r;
    return -1;
}

/* Split the payload p[0 .. n-1] into records; the known ones go into R. */
static int read_records(const unsigned char *p, size_t n, record *R)
{
    size_t pos = 0, idx = 0;
    while (pos < n) {
        const unsigned char *name = p + pos + 1;
        size_t L = p[pos], esize, k, at = pos;
        unsigned type, rank;
        uint64_t dims[MAX_RANK], count = 1, room;
        int r;
        if (L == 0)
            return BAD("record %zu (payload offset %zu) has an empty name", idx, at);
        if (n - pos < 3 + L)
            return BAD("record %zu (payload offset %zu) is truncated", idx, at);
        for (k = 0; k < L; k++)
            if (!name_char(name[k]))
                return BAD("record %zu (payload offset %zu) has a malformed name", idx, at);
        type = p[pos + 1 + L];
        rank = p[pos + 2 + L];
        esize = type_size(type);
        if (esize == 0)
            return BAD("record '%.*s' has unknown element type %u", (int)L, (const char *)name,
                       type);
        if (rank > MAX_RANK)
            return BAD("record '%.*s' has rank %u, above %u", (int)L, (const char *)name, rank,
                       MAX_RANK);
        pos += 3 + L;
        if ((n - pos) / 8 < rank)
            return BAD("record '%.*s' is truncated", (int)L, (const char *)name);
        room = (uint64_t)((n - pos - 8 * rank) / esize); /* elements the payload can hold */
        for (k = 0; k < rank; k++) {
            dims[k] = get64(p + pos + 8 * k);
            if (dims[k] == 0)
                return BAD("record '%.*s' has a zero dimension", (int)L, (const char *)name);
            if (count > room / dims[k])
                return BAD("record '%.*s' is truncated (its dimensions need more bytes than "
                           "the payload holds)",
                           (int)L, (const char *)name);
            count *= dims[k];
        }
        if (count > room)
            return BAD("record '%.*s' is truncated", (int)L, (const char *)name);
        pos += 8 * rank;
        r = find_known(name, L);
        if (r >= 0) {
            if (R[r].present)
                return BAD("record '%s' appears twice", KNOWN[r].name);
            if (type != KNOWN[r].type || rank != KNOWN[r].rank)
                return BAD("record '%s' has element type %u and rank %u, not type %u and "
                           "rank %u",
                           KNOWN[r].name, type, rank, (unsigned)KNOWN[r].type,
                           (unsigned)KNOWN[r].rank);
            R[r].present = 1;
            R[r].data = p + pos;
            memcpy(R[r].dims, dims, sizeof dims[0] * rank);
        }
        pos += (size_t)count * esize;
        idx++;
    }
    return DIFFUSE_OK;
}

typedef struct {
    uint32_t kind;
    uint64_t dim, width, depth, emb, out_dim, n_params;
    uint64_t channels, height, width_pixels, base, groups; /* U-Net */
    uint64_t classes, uncond_rows;                          /* 0 without classes */
    diffuse__iddpm_config iddpm;                            /* kind IDDPM */
    int prediction, variance;
} arch;

static int need(const record *R, int r)
{
    return R[r].present ? DIFFUSE_OK : BAD("missing record '%s'", KNOWN[r].name);
}

static int need_len(const record *R, int r, uint64_t want, const char *what)
{
    if (R[r].dims[0] != want)
        return BAD("record '%s' holds %llu values but %s needs %llu", KNOWN[r].name,
                   (unsigned long long)R[r].dims[0], what, (unsigned long long)want);
    return DIFFUSE_OK;
}

/* f32 values all finite (and >= 0 when nonneg). */
static int check_f32(const record *R, int r, uint64_t n, int nonneg)
{
    uint64_t i;
    for (i = 0; i < n; i++) {
        float x = get_f32(R[r].data + 4 * i);
        if (!isfinite(x) || (nonneg && x < 0.0f))
            return BAD("record '%s': value %llu is %g", KNOWN[r].name, (unsigned long long)i,
                       (double)x);
    }
    return DIFFUSE_OK;
}

/* The records of the MLP and those of the U-Net: a file holds one set. */
static const int MLP_RECORDS[] = {R_WIDTH, R_DEPTH, R_EMB};
static const int UNET_RECORDS[] = {R_CHANNELS, R_HEIGHT, R_WIDTH_PIXELS, R_BASE, R_GROUPS};
static const int IDDPM_RECORDS[] = {R_CHANNELS, R_HEIGHT, R_WIDTH_PIXELS, R_BASE, R_GROUPS,
                                    R_NRB, R_MULT, R_ATTN, R_HEADS, R_HEADS_UP, R_SCALE_SHIFT,
                                    R_CONV_RESAMPLE, R_NET_DROPOUT, R_TIME_SCALE};
#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

static int check_mlp(const record *R, arch *a)
{
    uint64_t W;
    a->width = W = get64(R[R_WIDTH].data);
    a->depth = get64(R[R_DEPTH].data);
    a->emb = get64(R[R_EMB].data);
    if (a->dim < 1 || a->dim > SIZE_LIMIT || W < 1 || W > SIZE_LIMIT || a->emb < 2 ||
        a->emb > SIZE_LIMIT || a->depth > DEPTH_LIMIT)
        return BAD("bad MLP sizes: dim %llu, width %llu, depth %llu, emb_dim %llu",
                   (unsigned long long)a->dim, (unsigned long long)W,
                   (unsigned long long)a->depth, (unsigned long long)a->emb);
    a->out_dim = a->variance >= DIFFUSE_VAR_LEARNED ? 2 * a->dim : a->dim;
    /* Each factor is at most 2^24 and depth at most 2^12: no overflow in
     * 64 bits.  Same formula as diffuse__mlp_layout(). */
    a->n_params = W * a->emb + W + W * W + W + W * a->dim + W + a->depth * 2 * (W * W + W) +
                  a->out_dim * W + a->out_dim;
    return DIFFUSE_OK;
}

static int check_unet(const record *R, arch *a)
{
    diffuse__unet_shape sh;
    double c, C, bound;
    a->channels = get64(R[R_CHANNELS].data);
    a->height = get64(R[R_HEIGHT].data);
    a->width_pixels = get64(R[R_WIDTH_PIXELS].data);
    a->base = get64(R[R_BASE].data);
    a->groups = get64(R[R_GROUPS].data);
    if (a->channels > SIZE_LIMIT || a->height > SIZE_LIMIT || a->width_pixels > SIZE_LIMIT ||
        a->base > SIZE_LIMIT || a->groups > SIZE_LIMIT ||
        diffuse__unet_check(LOAD, (size_t)a->channels, (size_t)a->height,
                            (size_t)a->width_pixels, (size_t)a->base,
                            (size_t)a->groups) != DIFFUSE_OK)
        return BAD("bad U-Net sizes: %llu channels, %llu x %llu pixels, base_channels %llu, "
                   "groups %llu",
                   (unsigned long long)a->channels, (unsigned long long)a->height,
                   (unsigned long long)a->width_pixels, (unsigned long long)a->base,
                   (unsigned long long)a->groups);
    /* each size is at most 2^24 and their product too: no overflow */
    if (a->dim != a->channels * a->height * a->width_pixels)
        return BAD("record 'net.dim' is %llu but a %llu x %llu x %llu image has %llu values",
                   (unsigned long long)a->dim, (unsigned long long)a->channels,
                   (unsigned long long)a->height, (unsigned long long)a->width_pixels,
                   (unsigned long long)(a->channels * a->height * a->width_pixels));
    a->out_dim = a->variance >= DIFFUSE_VAR_LEARNED ? 2 * a->dim : a->dim;
    /* The parameter count, bounded in double first (above 150 c^2 + 30 c C
     * only by lower-order terms) so that the exact count cannot overflow a
     * 32-bit size_t. */
    c = (double)a->base;
    C = (double)a->channels;
    bound = 200.0 * c * c + 30.0 * c * C + 100.0 * c;
    if (!(bound < (double)PARAM_LIMIT))
        return BAD("a U-Net with %llu channels and base_channels %llu has more parameters "
                   "than a checkpoint holds",
                   (unsigned long long)a->channels, (unsigned long long)a->base);
    sh.C = (size_t)a->channels;
    sh.H = (size_t)a->height;
    sh.W = (size_t)a->width_pixels;
    sh.c = (size_t)a->base;
    sh.G = (size_t)a->groups;
    sh.out_C = a->variance >= DIFFUSE_VAR_LEARNED ? 2 * sh.C : sh.C;
    sh.classes = 0;
    a->n_params = diffuse__unet_layout(&sh).total;
    return DIFFUSE_OK;
}

/* An Improved DDPM U-Net's records: its options as diffuse_net_create_iddpm()
 * takes them; the parameter count from its plan. */
static int check_iddpm(const record *R, arch *a)
{
    diffuse__iddpm_config *c = &a->iddpm;
    diffuse__iddpm_plan *pl = NULL;
    uint64_t v[6], L = R[R_MULT].dims[0], l;
    int rc;
    const int sizes[] = {R_CHANNELS, R_HEIGHT, R_WIDTH_PIXELS, R_BASE, R_GROUPS, R_NRB};
    for (l = 0; l < 6; l++) {
        v[l] = get64(R[sizes[l]].data);
        if (v[l] > SIZE_LIMIT)
            return BAD("record '%s' is %llu, above 2^24", KNOWN[sizes[l]].name,
                       (unsigned long long)v[l]);
    }
    if (L < 1 || L > DIFFUSE__IDDPM_MAX_LEVELS)
        return BAD("record 'net.channel_mult' has %llu levels, not 1 to %d",
                   (unsigned long long)L, DIFFUSE__IDDPM_MAX_LEVELS);
    DIFFUSE_TRY(need_len(R, R_ATTN, L, "net.channel_mult"));
    diffuse__iddpm_defaults(c);
    c->C = (size_t)v[0];
    c->H = (size_t)v[1];
    c->W = (size_t)v[2];
    c->mc = (size_t)v[3];
    c->G = (size_t)v[4];
    c->nrb = (size_t)v[5];
    c->levels = (size_t)L;
    c->attn_mask = 0;
    for (l = 0; l < L; l++) {
        uint64_t m = get64(R[R_MULT].data + 8 * l);
        uint32_t at = get32(R[R_ATTN].data + 4 * l);
        if (m < 1 || m > DIFFUSE__IDDPM_MAX_MULT || at > 1)
            return BAD("level %llu: channel_mult %llu, attention %lu are not valid values",
                       (unsigned long long)l, (unsigned long long)m, (unsigned long)at);
        c->mult[l] = (size_t)m;
        c->attn_mask |= at << l;
    }
    v[0] = get64(R[R_HEADS].data);
    v[1] = get64(R[R_HEADS_UP].data);
    if (v[0] < 1 || v[0] > 4096 || v[1] < 1 || v[1] > 4096 || c->nrb > DIFFUSE__IDDPM_MAX_RES_BLOCKS ||
        get32(R[R_SCALE_SHIFT].data) > 1 || get32(R[R_CONV_RESAMPLE].data) > 1)
        return BAD("bad Improved DDPM U-Net options (heads %llu, %llu; num_res_blocks %llu)",
                   (unsigned long long)v[0], (unsigned long long)v[1],
                   (unsigned long long)c->nrb);
    c->heads = (size_t)v[0];
    c->heads_up = (size_t)v[1];
    c->scale_shift = (int)get32(R[R_SCALE_SHIFT].data);
    c->conv_resample = (int)get32(R[R_CONV_RESAMPLE].data);
    c->dropout = get_f64(R[R_NET_DROPOUT].data);
    c->time_scale = get_f64(R[R_TIME_SCALE].data);
    c->out_C = a->variance >= DIFFUSE_VAR_LEARNED ? 2 * c->C : c->C;
    if (diffuse__iddpm_check(LOAD, c) != DIFFUSE_OK)
        return BAD("bad Improved DDPM U-Net: %s", diffuse_last_error());
    if (a->dim != (uint64_t)c->C * c->H * c->W)
        return BAD("record 'net.dim' is %llu but the image has %llu values",
                   (unsigned long long)a->dim, (unsigned long long)(c->C * c->H * c->W));
    a->base = c->mc;
    a->out_dim = (uint64_t)c->out_C * c->H * c->W;
    rc = diffuse__iddpm_plan_create(LOAD, c, 1, &pl);
    if (rc != DIFFUSE_OK)
        return rc == DIFFUSE_EINVAL ? BAD("bad Improved DDPM U-Net: %s", diffuse_last_error())
                                    : rc;
    a->n_params = pl->n_params;
    diffuse__iddpm_plan_free(pl);
    if (a->n_params > PARAM_LIMIT)
        return BAD("the net has more parameters than a checkpoint holds");
    return DIFFUSE_OK;
}

/* The class records: both or neither; classes in [1, 2^24]; the class
 * embedding [classes + 1][E] added to the parameter count. */
static int check_classes(const record *R, arch *a)
{
    uint64_t E;
    if (!R[R_CLASSES].present && !R[R_UNCOND].present)
        return DIFFUSE_OK;
    DIFFUSE_TRY(need(R, R_CLASSES));
    DIFFUSE_TRY(need(R, R_UNCOND));
    a->classes = get64(R[R_CLASSES].data);
    a->uncond_rows = get64(R[R_UNCOND].data);
    if (a->classes < 1 || a->classes > DIFFUSE_MAX_CLASSES)
        return BAD("record 'net.classes' is %llu, outside [1, %lu]",
                   (unsigned long long)a->classes, (unsigned long)DIFFUSE_MAX_CLASSES);
    E = a->kind != DIFFUSE_NET_KIND_MLP ? 4 * a->base : a->width;
    /* E and classes are at most 2^24 (E 2^14 for a U-Net): no overflow */
    if ((a->classes + 1) * E > PARAM_LIMIT - a->n_params)
        return BAD("a class embedding of %llu x %llu values is more than a checkpoint holds",
                   (unsigned long long)(a->classes + 1), (unsigned long long)E);
    a->n_params += (a->classes + 1) * E;
    return DIFFUSE_OK;
}

static int check_net(const record *R, arch *a)
{
    static const int common[] = {R_DIM, R_PRED, R_VAR, R_PARAMS, R_EMA};
    const int *mine;
    size_t n_mine, i, j;
    uint32_t pred, var;
    a->kind = R[R_KIND].present ? get32(R[R_KIND].data) : DIFFUSE_NET_KIND_MLP;
    if (a->kind != DIFFUSE_NET_KIND_MLP && a->kind != DIFFUSE_NET_KIND_UNET &&
        a->kind != DIFFUSE_NET_KIND_IDDPM)
        return BAD("unknown net kind %lu", (unsigned long)a->kind);
    for (i = 0; i < N_OF(common); i++)
        DIFFUSE_TRY(need(R, common[i]));
    mine = a->kind == DIFFUSE_NET_KIND_MLP    ? MLP_RECORDS
           : a->kind == DIFFUSE_NET_KIND_UNET ? UNET_RECORDS
                                              : IDDPM_RECORDS;
    n_mine = a->kind == DIFFUSE_NET_KIND_MLP    ? N_OF(MLP_RECORDS)
             : a->kind == DIFFUSE_NET_KIND_UNET ? N_OF(UNET_RECORDS)
                                                : N_OF(IDDPM_RECORDS);
    for (i = 0; i < n_mine; i++)
        DIFFUSE_TRY(need(R, mine[i]));
    /* every kind-specific record (MLP_RECORDS, IDDPM_RECORDS cover them all)
     * must be the kind's own */
    for (j = 0; j < N_OF(MLP_RECORDS) + N_OF(IDDPM_RECORDS); j++) {
        const int r = j < N_OF(MLP_RECORDS) ? MLP_RECORDS[j] : IDDPM_RECORDS[j - N_OF(MLP_RECORDS)];
        int own = 0;
        for (i = 0; i < n_mine; i++)
            own |= mine[i] == r;
        if (R[r].present && !own)
            return BAD("record '%s' does not describe %s", KNOWN[r].name,
                       a->kind == DIFFUSE_NET_KIND_MLP    ? "an MLP"
                       : a->kind == DIFFUSE_NET_KIND_UNET ? "a U-Net"
                                                          : "an Improved DDPM U-Net");
    }
    a->dim = get64(R[R_DIM].data);
    pred = get32(R[R_PRED].data);
    var = get32(R[R_VAR].data);
    if (pred > DIFFUSE_PRED_V)
        return BAD("unknown prediction kind %ld", (long)get_i32(R[R_PRED].data));
    if (var > DIFFUSE_VAR_LEARNED_RANGE)
        return BAD("unknown variance type %ld", (long)get_i32(R[R_VAR].data));
    a->prediction = (int)pred;
    a->variance = (int)var;
    if (a->kind == DIFFUSE_NET_KIND_MLP)
        DIFFUSE_TRY(check_mlp(R, a));
    else if (a->kind == DIFFUSE_NET_KIND_UNET)
        DIFFUSE_TRY(check_unet(R, a));
    else
        DIFFUSE_TRY(check_iddpm(R, a));
    DIFFUSE_TRY(check_classes(R, a));
    DIFFUSE_TRY(need_len(R, R_PARAMS, a->n_params, "the architecture"));
    DIFFUSE_TRY(need_len(R, R_EMA, a->n_params, "the architecture"));
    DIFFUSE_TRY(check_f32(R, R_PARAMS, a->n_params, 0));
    DIFFUSE_TRY(check_f32(R, R_EMA, a->n_params, 0));
    return DIFFUSE_OK;
}

/* The value of hyperparameter record r as diffuse_trainer_set() takes it. */
static double hyper_value(const record *R, int r)
{
    return KNOWN[r].type == T_F64 ? get_f64(R[r].data) : (double)get_i32(R[r].data);
}

/* The ranges diffuse_trainer_set() accepts (param: DIFFUSE_TRAINER_*). */
static int hyper_ok(int param, double v, int learned_var)
{
    if (!diffuse__trainer_value_ok(param, v))
        return 0;
    return param != DIFFUSE_TRAINER_LOSS || v != DIFFUSE_LOSS_HYBRID || learned_var;
}

/* The trainer records: *has 0 when none is present (T unset).  With values
 * 0 (a net loaded alone) only their presence and lengths are checked, so that
 * a damaged trainer state does not cost the user the net's weights. */
static int check_trainer(const record *R, const arch *a, int values, int *has,
                         uint64_t *T_out)
{
    const int learned_var = a->variance >= DIFFUSE_VAR_LEARNED;
    uint64_t T, i;
    int r, n = 0;
    for (r = R_FIRST_TRAINER; r <= R_LAST_TRAINER; r++)
        n += R[r].present;
    *has = n > 0;
    if (n == 0) {
        if (R[R_DROPOUT].present)
            return BAD("record 'trainer.label_dropout' without a trainer state");
        return DIFFUSE_OK;
    }
    if (R[R_DROPOUT].present && values) {
        double p = get_f64(R[R_DROPOUT].data);
        if (!(p >= 0.0 && p <= 1.0) || a->classes == 0)
            return BAD("record 'trainer.label_dropout': %g is not a valid value%s", p,
                       a->classes == 0 ? " (the net has no classes)" : "");
    }
    for (r = R_FIRST_TRAINER; r <= R_LAST_TRAINER; r++)
        if (!R[r].present)
            return BAD("incomplete trainer state: missing record '%s'", KNOWN[r].name);
    for (r = R_LR; r <= R_THREADS && values; r++) {
        double v = hyper_value(R, r);
        if (!hyper_ok(r - R_LR + DIFFUSE_TRAINER_LR, v, learned_var))
            return BAD("record '%s': %g is not a valid value%s", KNOWN[r].name, v,
                       r == R_LOSS && v == DIFFUSE_LOSS_HYBRID ? " (hybrid loss without a "
                                                                 "learned variance)"
                                                               : "");
    }
    if (values && get64(R[R_STEP].data) > DIFFUSE__TRAINER_MAX_STEP)
        return BAD("record 'trainer.step': %llu is above the trainer's limit of 2^53 steps",
                   (unsigned long long)get64(R[R_STEP].data));
    DIFFUSE_TRY(need_len(R, R_M, a->n_params, "the architecture"));
    DIFFUSE_TRY(need_len(R, R_V, a->n_params, "the architecture"));
    if (values) {
        DIFFUSE_TRY(check_f32(R, R_M, a->n_params, 0));
        DIFFUSE_TRY(check_f32(R, R_V, a->n_params, 1));
    }
    T = R[R_BETAS].dims[0];
    if (T > DIFFUSE_MAX_STEPS)
        return BAD("the schedule has %llu steps, above %d", (unsigned long long)T,
                   DIFFUSE_MAX_STEPS);
    DIFFUSE_TRY(need_len(R, R_SCHED_T, T, "the schedule"));
    DIFFUSE_TRY(need_len(R, R_HIST_N, T, "the schedule"));
    DIFFUSE_TRY(need_len(R, R_HIST_POS, T, "the schedule"));
    DIFFUSE_TRY(need_len(R, R_HIST, T, "the schedule"));
    if (R[R_HIST].dims[1] != HISTORY)
        return BAD("record '%s' keeps %llu losses per step, not %d", KNOWN[R_HIST].name,
                   (unsigned long long)R[R_HIST].dims[1], HISTORY);
    for (i = 0; i < T && values; i++) {
        double b = get_f64(R[R_BETAS].data + 8 * i);
        int32_t t = get_i32(R[R_SCHED_T].data + 4 * i);
        uint32_t hn = get32(R[R_HIST_N].data + 4 * i), hp = get32(R[R_HIST_POS].data + 4 * i);
        if (!(b > 0.0 && b <= 1.0) || (b == 1.0 && i + 1 < T))
            return BAD("schedule beta[%llu] = %g is not a valid beta", (unsigned long long)i, b);
        if (t < 0 || (i > 0 && t <= get_i32(R[R_SCHED_T].data + 4 * (i - 1))))
            return BAD("schedule timestep[%llu] = %ld is negative or not increasing",
                       (unsigned long long)i, (long)t);
        if (hn > HISTORY || hp >= HISTORY || (hn < HISTORY && hp != hn))
            return BAD("loss history of step %llu: count %lu, next slot %lu are inconsistent",
                       (unsigned long long)i, (unsigned long)hn, (unsigned long)hp);
    }
    for (i = 0; i < T * HISTORY && values; i++) {
        double l = get_f64(R[R_HIST].data + 8 * i);
        if (!isfinite(l))
            return BAD("loss history value %llu is %g", (unsigned long long)i, l);
    }
    *T_out = T;
    return DIFFUSE_OK;
}

/* s has the checkpoint's betas and timesteps, bit for bit. */
static int same_schedule(const record *R, uint64_t T, const diffuse_schedule *s)
{
    size_t i;
    if (s->T != T)
        return diffuse__fail(DIFFUSE_EINVAL, LOAD,
                             "the schedule has %zu steps but the checkpoint's has %llu", s->T,
                             (unsigned long long)T);
    for (i = 0; i < s->T; i++) {
        uint64_t mine;
        memcpy(&mine, &s->tables[DIFFUSE_TABLE_BETAS][i], sizeof mine);
        if (mine != get64(R[R_BETAS].data + 8 * i))
            return diffuse__fail(DIFFUSE_EINVAL, LOAD,
                                 "the schedule's beta[%zu] = %.17g differs from the "
                                 "checkpoint's %.17g",
                                 i, s->tables[DIFFUSE_TABLE_BETAS][i],
                                 get_f64(R[R_BETAS].data + 8 * i));
        if (s->timesteps[i] != get_i32(R[R_SCHED_T].data + 4 * i))
            return diffuse__fail(DIFFUSE_EINVAL, LOAD,
                                 "the schedule's timestep[%zu] = %ld differs from the "
                                 "checkpoint's %ld",
                                 i, (long)s->timesteps[i],
                                 (long)get_i32(R[R_SCHED_T].data + 4 * i));
    }
    return DIFFUSE_OK;
}

static void read_f32s(float *out, const unsigned char *p, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++)
        out[i] = get_f32(p + 4 * i);
}

/* ---------------------------------------------------------------------- */
/* The workspace cap                                                        */

/* The largest workspace cap diffuse_checkpoint_load_limit() accepts. */
#define MAX_WORKSPACE_LIMIT ((uint64_t)1 << 62)

/* The bytes a load of architecture a allocates beyond what the file's own
 * bytes back (the weights, EMA, gradients, Adam moments, schedule and loss
 * history are at most a few times the file's size): the net's activations,
 * backward scratch and layer work for max_batch rows, and the trainer's
 * batch buffers for trainer_batch rows (0: no trainer).  Computed in double
 * from the same size functions the net uses (layer work for the threads the
 * net is built for, as net.c sizes it); HUGE_VAL where a per-row size would
 * not fit a size_t. */
static double workspace_bytes(const arch *a, size_t max_batch, size_t trainer_batch)
{
    const double B = (double)max_batch;
    double floats;
    if (a->kind == DIFFUSE_NET_KIND_IDDPM) {
        /* the plan's sizes already count max_batch rows */
        diffuse__iddpm_plan *pl = NULL;
        size_t work;
        if (diffuse__iddpm_plan_create(LOAD, &a->iddpm, max_batch, &pl) != DIFFUSE_OK)
            return HUGE_VAL;
        work = diffuse__iddpm_work_floats(pl, diffuse__default_threads());
        floats = work == SIZE_MAX ? HUGE_VAL
                                  : (double)pl->n_acts + (double)pl->n_scratch + (double)work;
        diffuse__iddpm_plan_free(pl);
    } else if (a->kind == DIFFUSE_NET_KIND_UNET) {
        diffuse__unet_shape sh;
        size_t work;
        /* a row's activations are below 64 c H W values */
        if ((double)a->base * (double)a->height * (double)a->width_pixels * 64.0 >
            (double)(SIZE_MAX / 2))
            return HUGE_VAL;
        sh.C = (size_t)a->channels;
        sh.H = (size_t)a->height;
        sh.W = (size_t)a->width_pixels;
        sh.c = (size_t)a->base;
        sh.G = (size_t)a->groups;
        sh.out_C = a->variance >= DIFFUSE_VAR_LEARNED ? 2 * sh.C : sh.C;
        sh.classes = 0;
        work = diffuse__unet_work_floats(&sh, diffuse__default_threads());
        if (work == SIZE_MAX)
            return HUGE_VAL;
        floats = B * ((double)diffuse__unet_act_count(&sh, 1) +
                      (double)diffuse__unet_scratch_count(&sh, 1)) +
                 (double)work;
    } else {
        diffuse__mlp_shape sh;
        if ((double)a->width * (4.0 * (double)a->depth + 6.0) + (double)a->emb >
            (double)(SIZE_MAX / 2))
            return HUGE_VAL;
        sh.dim = (size_t)a->dim;
        sh.out_dim = (size_t)a->out_dim;
        sh.width = (size_t)a->width;
        sh.depth = (size_t)a->depth;
        sh.emb = (size_t)a->emb;
        sh.classes = 0;
        floats = B * ((double)diffuse__mlp_act_count(&sh, 1) + 3.0 * (double)a->width) +
                 (double)diffuse__linear_work_floats(diffuse__default_threads());
    }
    floats += 2.0 * B; /* timesteps, labels */
    /* the trainer's x_t, noise [dim], out, dout [out_dim]; two doubles and
     * a timestep per row */
    floats += (double)trainer_batch * (2.0 * (double)a->dim + 2.0 * (double)a->out_dim + 5.0);
    return floats * (double)sizeof(float);
}

/* Refuse, before anything is allocated, a file whose net (and trainer) would
 * need more workspace than cap bytes: a U-Net's
 * parameters do not grow with its image size, so a few kilobytes can
 * describe a net that needs gigabytes per row. */
static int check_workspace(const arch *a, size_t max_batch, size_t trainer_batch, uint64_t cap)
{
    const double need = workspace_bytes(a, max_batch, trainer_batch);
    char what[96];
    if (need <= (double)cap)
        return DIFFUSE_OK;
    if (a->kind == DIFFUSE_NET_KIND_IDDPM)
        snprintf(what, sizeof what, "Improved DDPM U-Net for %zu x %zu x %zu images",
                 a->iddpm.C, a->iddpm.H, a->iddpm.W);
    else if (a->kind == DIFFUSE_NET_KIND_UNET)
        snprintf(what, sizeof what, "U-Net for %llu x %llu x %llu images",
                 (unsigned long long)a->channels, (unsigned long long)a->height,
                 (unsigned long long)a->width_pixels);
    else
        snprintf(what, sizeof what, "MLP of width %llu and depth %llu",
                 (unsigned long long)a->width, (unsigned long long)a->depth);
    return BAD("the %s needs %.4g bytes of workspace for max_batch = %zu%s, above the "
               "limit of %llu bytes (diffuse_checkpoint_load_limit() takes a higher one for "
               "a file you trust)",
               what, need, max_batch, trainer_batch > 0 ? " with its trainer" : "",
               (unsigned long long)cap);
}

/* meta.text: the text, then at least one zero byte, zeros to the end. */
static int check_meta(const record *R, size_t *text_len)
{
    const unsigned char *b = R[R_META].data;
    uint64_t words, k, n = 0;
    *text_len = 0;
    if (!R[R_META].present)
        return DIFFUSE_OK;
    words = R[R_META].dims[0];
    if (words > DIFFUSE_CHECKPOINT_META_MAX / 4 + 1)
        return BAD("record 'meta.text' holds %llu words, above the limit of %d",
                   (unsigned long long)words, DIFFUSE_CHECKPOINT_META_MAX / 4 + 1);
    while (n < 4 * words && b[n] != 0)
        n++;
    if (n == 4 * words)
        return BAD("record 'meta.text' is not terminated by a zero byte");
    if (n > DIFFUSE_CHECKPOINT_META_MAX)
        return BAD("record 'meta.text' holds %llu bytes, above the limit of %d",
                   (unsigned long long)n, DIFFUSE_CHECKPOINT_META_MAX);
    for (k = n; k < 4 * words; k++)
        if (b[k] != 0)
            return BAD("record 'meta.text' has a nonzero byte after its end (offset %llu)",
                       (unsigned long long)k);
    if (4 * words - n > 4)
        return BAD("record 'meta.text' has %llu bytes of padding, above 4",
                   (unsigned long long)(4 * words - n));
    *text_len = (size_t)n;
    return DIFFUSE_OK;
}

static int check_args(size_t max_batch, diffuse_net **net_out, const diffuse_schedule *s,
                      size_t trainer_batch, diffuse_trainer **tr_out)
{
    if (net_out == NULL)
        return diffuse__fail(DIFFUSE_EINVAL, LOAD, "net_out is NULL");
    if (max_batch == 0 || max_batch > ((size_t)1 << 24))
        return diffuse__fail(DIFFUSE_EINVAL, LOAD, "max_batch = %zu is outside [1, 2^24]",
                             max_batch);
    if (tr_out != NULL && s == NULL)
        return diffuse__fail(DIFFUSE_EINVAL, LOAD, "tr_out needs the schedule s");
    if (tr_out != NULL && (trainer_batch == 0 || trainer_batch > max_batch))
        return diffuse__fail(DIFFUSE_EINVAL, LOAD,
                             "trainer_batch = %zu is outside [1, max_batch = %zu]",
                             trainer_batch, max_batch);
    return DIFFUSE_OK;
}

int diffuse__checkpoint_parse(const unsigned char *buf, size_t len, size_t max_batch,
                              diffuse_net **net_out, const diffuse_schedule *s,
                              size_t trainer_batch, diffuse_trainer **tr_out,
                              uint64_t max_workspace)
{
    record R[R_COUNT];
    arch a;
    uint64_t plen, T = 0;
    uint32_t version, crc, got;
    int has_tr = 0, rc, r;
    size_t meta_len;
    diffuse_net *net = NULL;
    diffuse_trainer *tr = NULL;
    if (net_out != NULL)
        *net_out = NULL;
    if (tr_out != NULL)
        *tr_out = NULL;
    DIFFUSE_TRY(check_args(max_batch, net_out, s, trainer_batch, tr_out));
    if (buf == NULL && len > 0)
        return diffuse__fail(DIFFUSE_EINVAL, LOAD, "buf is NULL");
    if (len < 8 || memcmp(buf, MAGIC, 8) != 0)
        return BAD("not a libdiffuse checkpoint (no \"DIFFCKPT\" magic)");
    if (len < 12)
        return BAD("truncated header (%zu bytes)", len);
    version = get32(buf + 8);
    if (version > FORMAT_VERSION)
        return BAD("written by a newer libdiffuse (format version %lu; this library reads 1 to "
                   "%u)",
                   (unsigned long)version, FORMAT_VERSION);
    if (version == 0)
        return BAD("format version 0 does not exist");
    if (len < DIFFUSE__CKPT_HEADER)
        return BAD("truncated header (%zu bytes)", len);
    plen = get64(buf + 12);
    if (plen != len - DIFFUSE__CKPT_HEADER)
        return BAD("the header announces %llu payload bytes but %zu follow it (truncated or "
                   "padded)",
                   (unsigned long long)plen, len - DIFFUSE__CKPT_HEADER);
    crc = get32(buf + 20);
    got = diffuse__crc32(0, buf + DIFFUSE__CKPT_HEADER, len - DIFFUSE__CKPT_HEADER);
    if (got != crc)
        return BAD("CRC mismatch: stored 0x%08lx, computed 0x%08lx (corrupt file)",
                   (unsigned long)crc, (unsigned long)got);
    memset(R, 0, sizeof R);
    memset(&a, 0, sizeof a);
    DIFFUSE_TRY(read_records(buf + DIFFUSE__CKPT_HEADER, len - DIFFUSE__CKPT_HEADER, R));
    DIFFUSE_TRY(check_net(R, &a));
    DIFFUSE_TRY(check_trainer(R, &a, tr_out != NULL, &has_tr, &T));
    DIFFUSE_TRY(check_workspace(&a, max_batch, tr_out != NULL ? trainer_batch : 0, max_workspace));
    DIFFUSE_TRY(check_meta(R, &meta_len));
    if (tr_out != NULL) {
        if (!has_tr)
            return diffuse__fail(DIFFUSE_EINVAL, LOAD, "the checkpoint holds no trainer state");
        DIFFUSE_TRY(same_schedule(R, T, s));
    }
    /* Everything is checked: build. */
    if (a.kind == DIFFUSE_NET_KIND_IDDPM)
        DIFFUSE_TRY(diffuse__net_create_iddpm_config(LOAD, &net, &a.iddpm, 0, a.prediction,
                                                     a.variance, max_batch, 0));
    else if (a.kind == DIFFUSE_NET_KIND_UNET)
        DIFFUSE_TRY_AS(LOAD, diffuse_net_create_unet(&net, (size_t)a.channels, (size_t)a.height,
                                            (size_t)a.width_pixels, (size_t)a.base,
                                            (size_t)a.groups, a.prediction, a.variance,
                                            max_batch, 0));
    else
        DIFFUSE_TRY_AS(LOAD, diffuse_net_create_mlp(&net, (size_t)a.dim, (size_t)a.width,
                                           (size_t)a.depth, (size_t)a.emb, a.prediction,
                                           a.variance, max_batch, 0));
    if (a.classes > 0) {
        rc = diffuse_net_set(net, DIFFUSE_NET_CLASSES, (double)a.classes);
        if (rc != DIFFUSE_OK) {
            diffuse_net_free(net);
            return diffuse__reprefix(rc, LOAD);
        }
        net->uncond_rows = a.uncond_rows;
    }
    read_f32s(net->params, R[R_PARAMS].data, net->n_params);
    read_f32s(net->ema, R[R_EMA].data, net->n_params);
    net->gen++; /* new weights: nothing derived from the old ones stays valid */
    if (tr_out != NULL) {
        size_t i;
        rc = diffuse_trainer_create(&tr, net, s, trainer_batch);
        if (rc != DIFFUSE_OK) {
            diffuse_net_free(net);
            return diffuse__reprefix(rc, LOAD);
        }
        for (r = R_LR; r <= R_THREADS; r++) {
            if (diffuse_trainer_set(tr, r - R_LR + DIFFUSE_TRAINER_LR, hyper_value(R, r)) !=
                DIFFUSE_OK) {
                diffuse_trainer_free(tr);
                diffuse_net_free(net);
                return BAD("record '%s': %g is not a valid value", KNOWN[r].name,
                           hyper_value(R, r));
            }
        }
        if (R[R_DROPOUT].present &&
            diffuse_trainer_set(tr, DIFFUSE_TRAINER_LABEL_DROPOUT, get_f64(R[R_DROPOUT].data)) !=
                DIFFUSE_OK) {
            diffuse_trainer_free(tr);
            diffuse_net_free(net);
            return BAD("record 'trainer.label_dropout': %g is not a valid value",
                       get_f64(R[R_DROPOUT].data));
        }
        tr->step = get64(R[R_STEP].data);
        read_f32s(tr->m, R[R_M].data, net->n_params);
        read_f32s(tr->v, R[R_V].data, net->n_params);
        for (i = 0; i < tr->T * HISTORY; i++)
            tr->hist[i] = get_f64(R[R_HIST].data + 8 * i);
        for (i = 0; i < tr->T; i++) {
            tr->hist_n[i] = get32(R[R_HIST_N].data + 4 * i);
            tr->hist_pos[i] = get32(R[R_HIST_POS].data + 4 * i);
        }
        *tr_out = tr;
    }
    *net_out = net;
    return DIFFUSE_OK;
}

/* Read the whole file at path into a new buffer (diffuse__free it). */
static int read_all(const char *path, unsigned char **out, size_t *len_out)
{
    struct stat st;
    unsigned char *buf;
    size_t cap, len = 0;
    char msg[128];
    int fd, e;
    *out = NULL;
    *len_out = 0;
    do
        fd = open(path, O_RDONLY | O_CLOEXEC);
    while (fd < 0 && errno == EINTR);
    if (fd < 0) {
        e = errno;
        return diffuse__fail(DIFFUSE_EIO, LOAD, "cannot open '%s': %s", path,
                             errno_text(e, msg, sizeof msg));
    }
    if (fstat(fd, &st) != 0) {
        e = errno;
        (void)close(fd);
        return diffuse__fail(DIFFUSE_EIO, LOAD, "cannot stat '%s': %s", path,
                             errno_text(e, msg, sizeof msg));
    }
    if (S_ISDIR(st.st_mode)) {
        (void)close(fd);
        return diffuse__fail(DIFFUSE_EIO, LOAD, "cannot read '%s': %s", path,
                             errno_text(EISDIR, msg, sizeof msg));
    }
    if (S_ISREG(st.st_mode) && (uint64_t)st.st_size > DIFFUSE__CKPT_MAX_BYTES) {
        (void)close(fd);
        return BAD("'%s' holds %llu bytes, above the checkpoint limit of %llu", path,
                   (unsigned long long)st.st_size, (unsigned long long)DIFFUSE__CKPT_MAX_BYTES);
    }
    /* A regular file's size plus one byte to see the end; other files grow. */
    cap = S_ISREG(st.st_mode) ? (size_t)st.st_size + 1 : 65536;
    buf = (unsigned char *)diffuse__malloc(cap);
    if (buf == NULL) {
        (void)close(fd);
        return diffuse__fail(DIFFUSE_ENOMEM, LOAD, "cannot allocate %zu bytes for '%s'", cap,
                             path);
    }
    for (;;) {
        ssize_t got;
        if (len == cap) {
            size_t ncap;
            unsigned char *nbuf;
            if ((uint64_t)cap > DIFFUSE__CKPT_MAX_BYTES) {
                diffuse__free(buf);
                (void)close(fd);
                return BAD("'%s' holds more than the checkpoint limit of %llu bytes", path,
                           (unsigned long long)DIFFUSE__CKPT_MAX_BYTES);
            }
            ncap = (uint64_t)cap * 2 > DIFFUSE__CKPT_MAX_BYTES + 1
                       ? (size_t)(DIFFUSE__CKPT_MAX_BYTES + 1)
                       : cap * 2;
            nbuf = (unsigned char *)diffuse__malloc(ncap);
            if (nbuf == NULL) {
                diffuse__free(buf);
                (void)close(fd);
                return diffuse__fail(DIFFUSE_ENOMEM, LOAD, "cannot allocate %zu bytes for '%s'",
                                     ncap, path);
            }
            memcpy(nbuf, buf, len);
            diffuse__free(buf);
            buf = nbuf;
            cap = ncap;
        }
        got = read(fd, buf + len, cap - len);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            e = errno;
            diffuse__free(buf);
            (void)close(fd);
            return diffuse__fail(DIFFUSE_EIO, LOAD, "cannot read '%s': %s", path,
                                 errno_text(e, msg, sizeof msg));
        }
        if (got == 0)
            break;
        len += (size_t)got;
    }
    (void)close(fd);
    *out = buf;
    *len_out = len;
    return DIFFUSE_OK;
}

/* Both public loads: messages under the name diffuse_checkpoint_load. */
static int load_file(const char *path, size_t max_batch, diffuse_net **net_out,
                     const diffuse_schedule *s, size_t trainer_batch, diffuse_trainer **tr_out,
                     uint64_t max_workspace)
{
    unsigned char *buf;
    size_t len;
    int rc;
    if (net_out != NULL)
        *net_out = NULL;
    if (tr_out != NULL)
        *tr_out = NULL;
    if (path == NULL || path[0] == '\0')
        return diffuse__fail(DIFFUSE_EINVAL, LOAD, "path is %s",
                             path == NULL ? "NULL" : "empty");
    DIFFUSE_TRY(check_args(max_batch, net_out, s, trainer_batch, tr_out));
    if (max_workspace == 0 || max_workspace > MAX_WORKSPACE_LIMIT)
        return diffuse__fail(DIFFUSE_EINVAL, LOAD,
                             "max_workspace = %llu bytes is outside [1, 2^62]",
                             (unsigned long long)max_workspace);
    DIFFUSE_TRY(read_all(path, &buf, &len));
    rc = diffuse__checkpoint_parse(buf, len, max_batch, net_out, s, trainer_batch, tr_out,
                                   max_workspace);
    diffuse__free(buf);
    return rc;
}

int diffuse_checkpoint_load(const char *path, size_t max_batch, diffuse_net **net_out,
                            const diffuse_schedule *s, size_t trainer_batch,
                            diffuse_trainer **tr_out)
{
    return load_file(path, max_batch, net_out, s, trainer_batch, tr_out,
                     DIFFUSE_CHECKPOINT_DEFAULT_MAX_WORKSPACE);
}

int diffuse_checkpoint_load_limit(const char *path, size_t max_batch, diffuse_net **net_out,
                                  const diffuse_schedule *s, size_t trainer_batch,
                                  diffuse_trainer **tr_out, uint64_t max_workspace)
{
    const int rc = load_file(path, max_batch, net_out, s, trainer_batch, tr_out, max_workspace);
    return rc == DIFFUSE_OK ? rc : diffuse__rename(rc, LOAD, __func__);
}

int diffuse__checkpoint_meta(const unsigned char *buf, size_t len, char *out, size_t cap,
                             size_t *len_out)
{
    record R[R_COUNT];
    diffuse_net *net = NULL;
    size_t n;
    /* the whole file is checked as the loader checks it */
    DIFFUSE_TRY(diffuse__checkpoint_parse(buf, len, 1, &net, NULL, 0, NULL,
                                          DIFFUSE_CHECKPOINT_DEFAULT_MAX_WORKSPACE));
    diffuse_net_free(net);
    memset(R, 0, sizeof R);
    DIFFUSE_TRY(read_records(buf + DIFFUSE__CKPT_HEADER, len - DIFFUSE__CKPT_HEADER, R));
    DIFFUSE_TRY(check_meta(R, &n));
    *len_out = n;
    if (out == NULL && cap == 0)
        return DIFFUSE_OK;
    if (cap <= n)
        return diffuse__fail(DIFFUSE_EINVAL, "diffuse_checkpoint_read_meta",
                             "cap = %zu but the text and its terminating zero take %zu bytes",
                             cap, n + 1);
    if (n > 0)
        memcpy(out, R[R_META].data, n);
    out[n] = '\0';
    return DIFFUSE_OK;
}

int diffuse_checkpoint_read_meta(const char *path, char *out, size_t cap, size_t *len_out)
{
    unsigned char *buf;
    size_t len;
    int rc;
    if (path == NULL || path[0] == '\0')
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "path is %s", path == NULL ? "NULL" : "empty");
    if (len_out == NULL)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "len_out is NULL");
    *len_out = 0;
    if (out == NULL && cap > 0)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "out is NULL with cap = %zu", cap);
    rc = read_all(path, &buf, &len);
    if (rc == DIFFUSE_OK) {
        rc = diffuse__checkpoint_meta(buf, len, out, cap, len_out);
        diffuse__free(buf);
    }
    if (rc != DIFFUSE_OK) {
        /* the shared reader and parser speak as the loader: speak as this
         * function */
        const char *m = diffuse_last_error();
        const char *colon = strchr(m, ':');
        char copy[512];
        snprintf(copy, sizeof copy, "%s", colon != NULL ? colon + 2 : m);
        return diffuse__fail(rc, __func__, "%s", copy);
    }
    return DIFFUSE_OK;
}
