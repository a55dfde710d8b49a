/* Internal: the checkpoint format's pieces that tests, the fuzz target and
 * the corpus generator reach without going through a file (checkpoint.c). */
#ifndef DIFFUSE_NN_CHECKPOINT_H
#define DIFFUSE_NN_CHECKPOINT_H

#include "internal.h"

#include <stddef.h>
#include <stdint.h>

/* Bytes of the fixed header: magic, version, payload length, CRC. */
#define DIFFUSE__CKPT_HEADER 24u
/* The largest checkpoint the loader reads (and the saver writes): 2 GiB. */
#define DIFFUSE__CKPT_MAX_BYTES ((uint64_t)1 << 31)

/* CRC-32 (IEEE 802.3: reflected polynomial 0xEDB88320, initial value and
 * final xor 0xFFFFFFFF), running like zlib's crc32(): start with crc = 0
 * and feed the bytes in any number of pieces.  "123456789" -> 0xCBF43926. */
uint32_t diffuse__crc32(uint32_t crc, const void *buf, size_t len);

/* Serialize net (and tr when not NULL) into buf[0 .. cap-1], the whole file
 * (header and payload).  *len receives the file's size; buf NULL is a size
 * query.  Errors: DIFFUSE_EINVAL (NULL net or len, tr of another net, cap
 * too small, a checkpoint above DIFFUSE__CKPT_MAX_BYTES); nothing else. */
int diffuse__checkpoint_serialize(const diffuse_net *net, const diffuse_trainer *tr,
                                  unsigned char *buf, size_t cap, size_t *len);

/* diffuse_checkpoint_load_limit() from memory: the file's bytes
 * buf[0 .. len-1] (buf may be NULL when len is 0).  Same arguments after the
 * buffer (max_workspace is not range-checked here), same errors (less EIO),
 * messages under the name diffuse_checkpoint_load.  Reads nothing outside
 * buf whatever its bytes. */
int diffuse__checkpoint_parse(const unsigned char *buf, size_t len, size_t max_batch,
                              diffuse_net **net_out, const diffuse_schedule *s,
                              size_t trainer_batch, diffuse_trainer **tr_out,
                              uint64_t max_workspace);

/* diffuse_checkpoint_read_meta() from memory: the whole file is checked as
 * diffuse__checkpoint_parse() checks it, then meta.text is copied (see the
 * public function for out, cap and len_out). */
int diffuse__checkpoint_meta(const unsigned char *buf, size_t len, char *out, size_t cap,
                             size_t *len_out);

#endif
