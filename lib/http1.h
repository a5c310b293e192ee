/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Minimal HTTP/1.1 request parser and response writer for the admin, metrics and
 * readiness ports. Sans-IO: the caller feeds bytes and writes the produced response.
 * Limits: request head <= ML_HTTP1_MAX_HEAD bytes, <= ML_HTTP1_MAX_HEADERS headers;
 * request bodies are not supported (Content-Length > 0 or Transfer-Encoding -> -EBADMSG
 * with status 411/413/501 as appropriate).
 */
#ifndef ML_HTTP1_H
#define ML_HTTP1_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"

#define ML_HTTP1_MAX_HEAD 8192
#define ML_HTTP1_MAX_HEADERS 32
#define ML_HTTP1_MAX_QUERY 16

struct ml_http1_str {
	const char *p; /* points into the caller's buffer, not NUL-terminated */
	size_t len;
};

struct ml_http1_req {
	struct ml_http1_str method, target, path, query; /* path/query split from target */
	struct ml_http1_str hdr_name[ML_HTTP1_MAX_HEADERS], hdr_value[ML_HTTP1_MAX_HEADERS];
	unsigned nhdr;
	int minor_version; /* HTTP/1.x */
	bool keep_alive;
	int error_status; /* when parse fails: 400, 413 (head too large), 501, ... */
};

/*
 * Parse one request head from @buf. Returns the number of bytes consumed (>0) when a full
 * head is present, -EAGAIN when more bytes are needed, -EBADMSG on a malformed or
 * oversized request (req->error_status tells which response to send).
 */
int ml_http1_parse(const char *buf, size_t len, struct ml_http1_req *req);
/* Case-insensitive header lookup; NULL if absent. */
const struct ml_http1_str *ml_http1_header(const struct ml_http1_req *req, const char *name);
/*
 * Query parameter lookup with percent-decoding into @out (NUL-terminated, at most
 * @outlen-1 bytes). Returns the decoded length, -ENOENT if absent, -EINVAL if malformed
 * or too long.
 */
int ml_http1_query(const struct ml_http1_req *req, const char *key, char *out, size_t outlen);
/* Append a full response (status line, Content-Type, Content-Length, Connection). */
int ml_http1_respond(struct ml_buf *out, int status, const char *content_type, const void *body,
		     size_t len, bool keep_alive);
const char *ml_http1_reason(int status);

#endif
