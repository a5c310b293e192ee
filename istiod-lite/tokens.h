/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Static bearer tokens for lab and single-node use: a JSON object mapping each token to
 * the Kubernetes node its holder (a node's ztunnel) runs on,
 *
 *	{"<random token>": "node-1", "<another token>": "node-2"}
 *
 * The stand-in for Istio's TokenReview of projected service-account tokens (mission-anchors
 * §1 row 10): a token names a node, and the CA and xDS server take the node from it.
 *
 * Only SHA-256 digests of the tokens are kept. A lookup hashes the presented token and
 * compares the digest with every entry with CRYPTO_memcmp and no early exit, so its timing
 * depends on the presented length and the number of entries, never on how much of a real
 * token was guessed.
 */
#ifndef CTL_TOKENS_H
#define CTL_TOKENS_H

#include <stddef.h>

#define CTL_TOKENS_MAX 65536		/* entries in a file */
#define CTL_TOKEN_MAX 4096		/* bytes in one token */
#define CTL_TOKENS_FILE_MAX (16u << 20) /* bytes in the file */
#define CTL_TOKEN_MIN 16		/* shorter tokens are refused at load: guessable */

struct ctl_tokens;

/* 0, or -errno with a reason in @err: -EINVAL (not a JSON object of token -> RFC 1123
 * node name, a token shorter than CTL_TOKEN_MIN or longer than CTL_TOKEN_MAX, too many),
 * -EFBIG, -ENOMEM, or the file system's error. */
int ctl_tokens_load(const char *path, struct ctl_tokens **ret, char *err, size_t errlen);
struct ctl_tokens *ctl_tokens_free(struct ctl_tokens *t);
size_t ctl_tokens_count(const struct ctl_tokens *t);
/* The node @token belongs to, copied into @ret_node (@len >= 254 holds any node name):
 * 0, or -EACCES (unknown, empty or overlong token), -ENOBUFS (@len too small). */
int ctl_tokens_lookup(const struct ctl_tokens *t, const char *token, char *ret_node, size_t len);

#endif
