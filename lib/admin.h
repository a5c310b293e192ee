/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A small HTTP/1.1 server for the admin, metrics and readiness ports, on the event loop.
 * One request per connection (Connection: close), GET/HEAD only, heads capped at
 * ML_HTTP1_MAX_HEAD, at most ML_ADMIN_MAX_CONNS connections at once, 10 s to send a request.
 */
#ifndef ML_ADMIN_H
#define ML_ADMIN_H

#include "buf.h"
#include "http1.h"
#include "loop.h"

#define ML_ADMIN_MAX_CONNS 64

struct ml_admin;

struct ml_admin_rsp {
	int status;               /* default 200 */
	const char *content_type; /* default text/plain; charset=utf-8 */
	struct ml_buf body;       /* capped at 16 MiB */
};

/* Fill @rsp for @req. */
typedef void (*ml_admin_fn)(const struct ml_http1_req *req, struct ml_admin_rsp *rsp, void *ud);

struct ml_admin *ml_admin_new(struct ml_loop *l, const char *addr, ml_admin_fn fn, void *ud,
			      char *err, size_t errlen);
struct ml_admin *ml_admin_free(struct ml_admin *a);
/* The listening socket (e.g. to learn the port after binding port 0). */
int ml_admin_fd(const struct ml_admin *a);

#endif
