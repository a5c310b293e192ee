/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Kubernetes API ingestion, sans-IO: one reflector per resource kind does what client-go's
 * Reflector does, into the store (store.h) under one origin ("kube-api"), so the model and
 * xDS work unchanged. The transport (kube_client.h) moves bytes; this module decides.
 *
 *  1. List: GET <path>?limit=500, then &continue=<token> while metadata.continue is set.
 *     Items lack kind/apiVersion (the API omits them inside a List): they are filled from
 *     the list's kind (PodList -> Pod). Each page is applied to the store as it arrives;
 *     after the last page every object of this kind and origin that the list did not name
 *     is deleted from the store (objects that vanished while we were not watching).
 *  2. Watch: GET <path>?watch=1&resourceVersion=<RV>&allowWatchBookmarks=true&
 *     timeoutSeconds=<300..600>: newline-delimited events {"type", "object"}. ADDED and
 *     MODIFIED apply, DELETED deletes, BOOKMARK only moves the resourceVersion (the
 *     k8s.io/initial-events-end annotation is recognised and counted). ERROR with a Status
 *     of code 410 (Expired/Gone), or an HTTP 410 answer, starts a new list; other errors
 *     re-watch from the last resourceVersion after a back-off. A watch the server ends
 *     cleanly (timeoutSeconds) is re-opened at once.
 *  3. Failures (connection lost, 5xx, 401/403, malformed list page): exponential back-off
 *     with jitter, [d/2, d] with d = min * 2^(n-1) capped at max (0.5 s .. 30 s by
 *     default); reset once a watch makes progress (an event, or a clean end).
 *
 * Rejections never stop the stream: a watch line over max_event_bytes, a line that is not
 * JSON or not an event, an object of another kind, or one the store refuses, is logged
 * (scope "kube", naming the object as far as it can be identified) and skipped. A list item
 * that is rejected still counts as present, so its last good version is not deleted.
 * metadata.managedFields is dropped before storing (istiod keeps no use for it either).
 */
#ifndef CTL_KUBE_H
#define CTL_KUBE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store.h"

#define CTL_KUBE_ORIGIN "kube-api"
#define CTL_KUBE_RV_MAX 64 /* resourceVersion strings are opaque; etcd's are <= 20 digits */

struct ctl_kube_resource {
	enum ctl_kind kind;
	const char *path;	 /* collection path, e.g. "/api/v1/pods" */
	const char *api_version; /* of the items, e.g. "v1" */
	const char *kind_name;	 /* "Pod" */
	const char *list_kind;	 /* "PodList" */
	bool namespaced;
};

/* The resource istiod-lite reads for @kind (every enum ctl_kind has one). */
const struct ctl_kube_resource *ctl_kube_resource(enum ctl_kind kind);

struct ctl_kube_opts {
	struct ctl_store *store;
	const char *origin;	  /* default CTL_KUBE_ORIGIN */
	unsigned page_limit;	  /* list page size; default 500 */
	size_t max_event_bytes;	  /* one watch line / one object; default 4 MiB */
	size_t max_list_bytes;	  /* one list page body; default 64 MiB */
	uint64_t backoff_min_ns;  /* default 500 ms */
	uint64_t backoff_max_ns;  /* default 30 s */
	unsigned watch_timeout_s; /* timeoutSeconds drawn from [t, 2t]; default 300 */
	/* Random source for jitter and watch timeouts; NULL = random(3). Tests inject one. */
	uint64_t (*rand)(void *ud);
	void *rand_ud;
};

struct ctl_kube_stats {
	uint64_t lists, list_pages, relists, watches;
	uint64_t added, modified, deleted, bookmarks, errors;
	uint64_t vanished; /* deleted after a relist */
	uint64_t rejected; /* lines or objects skipped */
	uint64_t failures; /* requests that failed (back-off taken) */
	uint64_t initial_events_end;
};

struct ctl_kube_refl;

struct ctl_kube_refl *ctl_kube_refl_new(enum ctl_kind kind, const struct ctl_kube_opts *opts);
struct ctl_kube_refl *ctl_kube_refl_free(struct ctl_kube_refl *r);

/* The next request's target (path + query). -ENAMETOOLONG if it does not fit @len. */
int ctl_kube_refl_request(struct ctl_kube_refl *r, char *out, size_t len);
/* The response's final status arrived. */
void ctl_kube_refl_status(struct ctl_kube_refl *r, int http_status);
/* Decoded body bytes. 0 = go on, 1 = this response is finished (a watch ERROR event: the
 * transport closes and calls done with 0), -ENOMEM. */
int ctl_kube_refl_body(struct ctl_kube_refl *r, const uint8_t *p, size_t len);
/* The response ended: @err 0 when complete, else -errno (connection lost, timed out, bad
 * HTTP); @why is logged with it. Returns the delay in ns before the next request. */
uint64_t ctl_kube_refl_done(struct ctl_kube_refl *r, int err, const char *why);
/* How long the transport lets the current request run before it gives up (-ETIMEDOUT). */
uint64_t ctl_kube_refl_deadline_ns(const struct ctl_kube_refl *r);

const struct ctl_kube_resource *ctl_kube_refl_resource(const struct ctl_kube_refl *r);
bool ctl_kube_refl_synced(const struct ctl_kube_refl *r); /* a full list has been applied */
bool ctl_kube_refl_watching(const struct ctl_kube_refl *r);
const char *ctl_kube_refl_rv(const struct ctl_kube_refl *r);
void ctl_kube_refl_stats(const struct ctl_kube_refl *r, struct ctl_kube_stats *ret);

/* The back-off delay before retry number @attempt (1, 2, ...) with random value @rnd. */
uint64_t ctl_kube_backoff_ns(uint64_t min_ns, uint64_t max_ns, unsigned attempt, uint64_t rnd);

#endif
