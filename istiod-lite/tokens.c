/* SPDX-License-Identifier: Apache-2.0 */
/* Static bearer tokens -> node names, compared in constant time. See tokens.h. */
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/stat.h>

#include <jansson.h>
#include <openssl/mem.h>
#include <openssl/sha.h>

#include "common.h"
#include "kutil.h"
#include "tokens.h"

#define NODE_MAX 253

struct entry {
	uint8_t digest[SHA256_DIGEST_LENGTH];
	char node[NODE_MAX + 1];
};

struct ctl_tokens {
	size_t n;
	struct entry e[];
};

static int __attribute__((format(printf, 4, 5)))
load_error(char *err, size_t errlen, int r, const char *fmt, ...)
{
	va_list ap;

	if (err && errlen) {
		va_start(ap, fmt);
		(void)vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return r;
}

/* The whole file, NUL-terminated; the caller wipes it (it holds secrets). */
static int slurp(const char *path, char **ret, size_t *ret_len)
{
	_cleanup_(closep) int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	struct stat st;
	size_t got = 0;
	char *buf;

	if (fd < 0 || fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode))
		return -EINVAL;
	if ((uint64_t)st.st_size > CTL_TOKENS_FILE_MAX)
		return -EFBIG;
	buf = malloc((size_t)st.st_size + 1);
	if (!buf)
		return -ENOMEM;
	while (got < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break; /* shrank under us: parse what we have */
		got += (size_t)n;
	}
	buf[got] = '\0';
	*ret = buf;
	*ret_len = got;
	return 0;
}

int ctl_tokens_load(const char *path, struct ctl_tokens **ret, char *err, size_t errlen)
{
	struct ctl_tokens *t = NULL;
	json_error_t jerr;
	const char *tok;
	json_t *root, *v;
	size_t len = 0, i = 0;
	char *buf = NULL;
	int r;

	r = slurp(path, &buf, &len);
	if (r == -EFBIG)
		return load_error(err, errlen, r, "%s: larger than %u bytes", path,
				  CTL_TOKENS_FILE_MAX);
	if (r < 0)
		return load_error(err, errlen, r, "%s: %s", path, strerror(-r));
	root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
	OPENSSL_cleanse(buf, len);
	free(buf);
	if (!root) {
		/* jansson quotes the text near the error: it may be part of a token */
		char *near = strstr(jerr.text, " near ");
		if (near)
			*near = '\0';
		return load_error(err, errlen, -EINVAL, "%s:%d:%d: %s", path, jerr.line,
				  jerr.column, jerr.text);
	}
	if (!json_is_object(root)) {
		r = load_error(err, errlen, -EINVAL,
			       "%s: want a JSON object {\"<token>\": \"<node>\"}", path);
		goto out;
	}
	if (json_object_size(root) > CTL_TOKENS_MAX) {
		r = load_error(err, errlen, -EINVAL, "%s: more than %d tokens", path,
			       CTL_TOKENS_MAX);
		goto out;
	}
	t = calloc(1, sizeof(*t) + json_object_size(root) * sizeof(t->e[0]));
	if (!t) {
		r = load_error(err, errlen, -ENOMEM, "out of memory");
		goto out;
	}
	json_object_foreach(root, tok, v) {
		const char *node = json_string_value(v);
		size_t tl = strlen(tok);

		/* the entry number, never the token, goes into the message */
		if (tl < CTL_TOKEN_MIN || tl > CTL_TOKEN_MAX) {
			r = load_error(err, errlen, -EINVAL,
				       "%s: token #%zu has %zu bytes (want %d..%d)", path, i + 1,
				       tl, CTL_TOKEN_MIN, CTL_TOKEN_MAX);
			goto out;
		}
		if (!node || !ctl_is_dns_subdomain(node)) {
			r = load_error(err, errlen, -EINVAL,
				       "%s: token #%zu: the node name is not an RFC 1123 subdomain",
				       path, i + 1);
			goto out;
		}
		SHA256((const uint8_t *)tok, tl, t->e[i].digest);
		memcpy(t->e[i].node, node, strlen(node) + 1);
		i++;
	}
	t->n = i;
	*ret = TAKE_PTR(t);
	r = 0;
out:
	ctl_tokens_free(t);
	json_decref(root);
	return r;
}

struct ctl_tokens *ctl_tokens_free(struct ctl_tokens *t)
{
	if (t) {
		OPENSSL_cleanse(t, sizeof(*t) + t->n * sizeof(t->e[0]));
		free(t);
	}
	return NULL;
}

size_t ctl_tokens_count(const struct ctl_tokens *t)
{
	return t->n;
}

int ctl_tokens_lookup(const struct ctl_tokens *t, const char *token, char *ret_node, size_t len)
{
	uint8_t d[SHA256_DIGEST_LENGTH];
	size_t tl = token ? strnlen(token, CTL_TOKEN_MAX + 1) : 0, idx = 0, n;
	size_t found = 0;

	if (tl == 0 || tl > CTL_TOKEN_MAX)
		return -EACCES;
	SHA256((const uint8_t *)token, tl, d);
	for (size_t i = 0; i < t->n; i++) {
		/* all-ones when equal, else zero; no branch on the comparison */
		size_t eq = (size_t)0 - (size_t)(CRYPTO_memcmp(d, t->e[i].digest, sizeof(d)) == 0);
		idx = (idx & ~eq) | (i & eq);
		found |= eq;
	}
	OPENSSL_cleanse(d, sizeof(d));
	if (!found)
		return -EACCES;
	n = strlen(t->e[idx].node);
	if (n + 1 > len)
		return -ENOBUFS;
	memcpy(ret_node, t->e[idx].node, n + 1);
	return 0;
}
