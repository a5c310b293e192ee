/* SPDX-License-Identifier: Apache-2.0 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include <jansson.h>

#include "buf.h"
#include "common.h"
#include "kobj.h"
#include "kube.h"
#include "log.h"

#define SCOPE "kube"
#define NS_PER_S 1000000000ull
#define DEF_PAGE_LIMIT 500
#define DEF_MAX_EVENT (4u * 1024 * 1024)
#define DEF_MAX_LIST (64u * 1024 * 1024)
#define DEF_BACKOFF_MIN (500ull * 1000 * 1000)
#define DEF_BACKOFF_MAX (30ull * NS_PER_S)
#define DEF_WATCH_TIMEOUT_S 300
#define MAX_ERROR_BODY (64u * 1024) /* of a non-200 answer: enough for any Status */
#define MAX_CONTINUE 4096	    /* continue tokens are base64 of a small struct */
#define LIST_DEADLINE_NS (120ull * NS_PER_S)
#define WATCH_GRACE_S 60       /* past timeoutSeconds before we call a watch dead */
#define SNIFF_MAX (64u * 1024) /* bytes of an oversize line searched for its name */
#define SHOW_MAX 80	       /* bytes of a malformed line quoted in a log line */
#define ANN_INITIAL_EVENTS_END "k8s.io/initial-events-end"

static const struct ctl_kube_resource resources[CTL_KIND__MAX] = {
	[CTL_KIND_NAMESPACE] = { CTL_KIND_NAMESPACE, "/api/v1/namespaces", "v1", "Namespace",
				 "NamespaceList", false },
	[CTL_KIND_POD] = { CTL_KIND_POD, "/api/v1/pods", "v1", "Pod", "PodList", true },
	[CTL_KIND_SERVICE] = { CTL_KIND_SERVICE, "/api/v1/services", "v1", "Service", "ServiceList",
			       true },
	[CTL_KIND_ENDPOINTSLICE] = { CTL_KIND_ENDPOINTSLICE,
				     "/apis/discovery.k8s.io/v1/endpointslices",
				     "discovery.k8s.io/v1", "EndpointSlice", "EndpointSliceList",
				     true },
	[CTL_KIND_SERVICEACCOUNT] = { CTL_KIND_SERVICEACCOUNT, "/api/v1/serviceaccounts", "v1",
				      "ServiceAccount", "ServiceAccountList", true },
	[CTL_KIND_AUTHZ_POLICY] = { CTL_KIND_AUTHZ_POLICY,
				    "/apis/security.istio.io/v1/authorizationpolicies",
				    "security.istio.io/v1", "AuthorizationPolicy",
				    "AuthorizationPolicyList", true },
	[CTL_KIND_PEER_AUTHN] = { CTL_KIND_PEER_AUTHN,
				  "/apis/security.istio.io/v1/peerauthentications",
				  "security.istio.io/v1", "PeerAuthentication",
				  "PeerAuthenticationList", true },
	[CTL_KIND_GATEWAY] = { CTL_KIND_GATEWAY, "/apis/gateway.networking.k8s.io/v1/gateways",
			       "gateway.networking.k8s.io/v1", "Gateway", "GatewayList", true },
	[CTL_KIND_HTTPROUTE] = { CTL_KIND_HTTPROUTE,
				 "/apis/gateway.networking.k8s.io/v1/httproutes",
				 "gateway.networking.k8s.io/v1", "HTTPRoute", "HTTPRouteList",
				 true },
};

const struct ctl_kube_resource *ctl_kube_resource(enum ctl_kind kind)
{
	return (unsigned)kind < CTL_KIND__MAX ? &resources[kind] : NULL;
}

enum phase { PH_LIST, PH_WATCH };
enum body_mode { M_NONE, M_LIST, M_WATCH, M_ERROR, M_IGNORE };

struct ctl_kube_refl {
	const struct ctl_kube_resource *res;
	struct ctl_kube_opts o;
	char *origin;
	enum phase phase;
	char rv[CTL_KUBE_RV_MAX + 1];
	char *cont;   /* continue token of the list in progress */
	json_t *seen; /* "ns/name" -> true, named by the list in progress */
	bool synced;
	unsigned attempt; /* consecutive failures */
	struct ctl_kube_stats st;

	/* the response in progress */
	int status;
	enum body_mode mode;
	struct ml_buf body; /* list page, error body, or the current watch line */
	bool overflow;	    /* list page or error body over its cap */
	bool skipping;	    /* inside an oversize watch line */
	size_t skipped;
	char skip_id[400];
	uint64_t lineno;
	bool progress;	    /* this watch applied an event */
	bool expired;	    /* this watch got ERROR 410 */
	bool watch_error;   /* this watch got another ERROR */
	unsigned timeout_s; /* of the current watch */
};

static uint64_t default_rand(void *ud)
{
	(void)ud;
	return (uint64_t)arc4random() << 32 | arc4random();
}

static uint64_t rnd(struct ctl_kube_refl *r)
{
	return r->o.rand ? r->o.rand(r->o.rand_ud) : default_rand(NULL);
}

uint64_t ctl_kube_backoff_ns(uint64_t min_ns, uint64_t max_ns, unsigned attempt, uint64_t rnd)
{
	uint64_t d = min_ns;

	/* client-go's wait.Backoff doubles from 0.8 s to 30 s with jitter; equal jitter keeps
	 * the delay in [d/2, d] so a retry storm spreads out but never fires at once. */
	for (unsigned i = 1; i < attempt && d < max_ns; i++)
		d = d > max_ns / 2 ? max_ns : d * 2;
	d = ML_MIN(d, max_ns);
	return d / 2 + rnd % (d / 2 + 1);
}

struct ctl_kube_refl *ctl_kube_refl_new(enum ctl_kind kind, const struct ctl_kube_opts *opts)
{
	struct ctl_kube_refl *r;

	if ((unsigned)kind >= CTL_KIND__MAX || !opts || !opts->store)
		return NULL;
	r = calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	r->res = &resources[kind];
	r->o = *opts;
	if (!r->o.page_limit)
		r->o.page_limit = DEF_PAGE_LIMIT;
	if (!r->o.max_event_bytes)
		r->o.max_event_bytes = DEF_MAX_EVENT;
	if (!r->o.max_list_bytes)
		r->o.max_list_bytes = DEF_MAX_LIST;
	if (!r->o.backoff_min_ns)
		r->o.backoff_min_ns = DEF_BACKOFF_MIN;
	if (!r->o.backoff_max_ns)
		r->o.backoff_max_ns = DEF_BACKOFF_MAX;
	if (r->o.backoff_max_ns < r->o.backoff_min_ns)
		r->o.backoff_max_ns = r->o.backoff_min_ns;
	if (!r->o.watch_timeout_s)
		r->o.watch_timeout_s = DEF_WATCH_TIMEOUT_S;
	r->origin = strdup(opts->origin ? opts->origin : CTL_KUBE_ORIGIN);
	r->o.origin = r->origin;
	if (!r->origin) {
		free(r);
		return NULL;
	}
	r->phase = PH_LIST;
	ml_buf_init(&r->body, r->o.max_list_bytes);
	return r;
}

struct ctl_kube_refl *ctl_kube_refl_free(struct ctl_kube_refl *r)
{
	if (!r)
		return NULL;
	ml_buf_release(&r->body);
	json_decref(r->seen);
	free(r->cont);
	free(r->origin);
	free(r);
	return NULL;
}

const struct ctl_kube_resource *ctl_kube_refl_resource(const struct ctl_kube_refl *r)
{
	return r->res;
}

bool ctl_kube_refl_synced(const struct ctl_kube_refl *r)
{
	return r->synced;
}

bool ctl_kube_refl_watching(const struct ctl_kube_refl *r)
{
	return r->phase == PH_WATCH;
}

const char *ctl_kube_refl_rv(const struct ctl_kube_refl *r)
{
	return r->rv;
}

void ctl_kube_refl_stats(const struct ctl_kube_refl *r, struct ctl_kube_stats *ret)
{
	*ret = r->st;
}

uint64_t ctl_kube_refl_deadline_ns(const struct ctl_kube_refl *r)
{
	if (r->phase == PH_LIST)
		return LIST_DEADLINE_NS;
	return ((uint64_t)r->timeout_s + WATCH_GRACE_S) * NS_PER_S;
}

/* ---- requests ---- */

/* RFC 3986 query component: unreserved characters as they are, the rest %XX. */
static int append_escaped(struct ml_buf *b, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";

	for (; *s; s++) {
		uint8_t c = (uint8_t)*s;
		int r;
		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		    c == '-' || c == '.' || c == '_' || c == '~') {
			r = ml_buf_append(b, s, 1);
		} else {
			char e[3] = { '%', hex[c >> 4], hex[c & 15] };
			r = ml_buf_append(b, e, 3);
		}
		if (r < 0)
			return r;
	}
	return 0;
}

static void list_reset(struct ctl_kube_refl *r)
{
	free(r->cont);
	r->cont = NULL;
	json_decref(r->seen);
	r->seen = NULL;
}

int ctl_kube_refl_request(struct ctl_kube_refl *r, char *out, size_t len)
{
	struct ml_buf b;
	const char *s;
	int e;

	ml_buf_init(&b, len);
	if (r->phase == PH_LIST) {
		e = ml_buf_printf(&b, "%s?limit=%u", r->res->path, r->o.page_limit);
		if (e >= 0 && r->cont) {
			e = ml_buf_puts(&b, "&continue=");
			if (e >= 0)
				e = append_escaped(&b, r->cont);
		}
	} else {
		/* client-go: timeoutSeconds = minWatchTimeout * (1 + rand) so that watches
		 * of many clients do not all end together. */
		r->timeout_s = r->o.watch_timeout_s +
			       (unsigned)(rnd(r) % ((uint64_t)r->o.watch_timeout_s + 1));
		e = ml_buf_printf(&b, "%s?watch=1&resourceVersion=", r->res->path);
		if (e >= 0)
			e = append_escaped(&b, r->rv);
		if (e >= 0)
			e = ml_buf_printf(&b, "&allowWatchBookmarks=true&timeoutSeconds=%u",
					  r->timeout_s);
	}
	if (e >= 0)
		e = ml_buf_cstr(&b, &s);
	if (e < 0) {
		ml_buf_release(&b);
		return e == -ENOBUFS ? -ENAMETOOLONG : e;
	}
	memcpy(out, s, strlen(s) + 1);
	ml_buf_release(&b);
	/* a new response starts with this request */
	r->status = 0;
	r->mode = M_NONE;
	ml_buf_reset(&r->body);
	r->overflow = r->skipping = false;
	r->skipped = 0;
	r->lineno = 0;
	r->progress = r->expired = r->watch_error = false;
	if (r->phase == PH_WATCH)
		r->st.watches++;
	else if (!r->cont)
		r->st.lists++;
	return 0;
}

void ctl_kube_refl_status(struct ctl_kube_refl *r, int http_status)
{
	r->status = http_status;
	if (http_status != 200)
		r->mode = M_ERROR;
	else
		r->mode = r->phase == PH_LIST ? M_LIST : M_WATCH;
	r->body.max = r->mode == M_LIST	   ? r->o.max_list_bytes
		      : r->mode == M_WATCH ? r->o.max_event_bytes
					   : MAX_ERROR_BODY;
}

/* ---- objects ---- */

/* Printable ASCII copy of peer bytes for a log line. */
static void show(char *dst, size_t cap, const char *p, size_t len)
{
	size_t i, n = ML_MIN(len, cap - 4);

	for (i = 0; i < n; i++)
		dst[i] = (p[i] >= 0x20 && p[i] < 0x7f) ? p[i] : '?';
	if (n < len) {
		memcpy(dst + n, "...", 3);
		n += 3;
	}
	dst[n] = '\0';
}

static void object_id(const struct ctl_kube_refl *r, const json_t *obj, char *id, size_t len)
{
	const char *ns = ml_kobj_str(obj, "metadata.namespace");
	const char *name = ml_kobj_str(obj, "metadata.name");

	(void)snprintf(id, len, "%s/%s%s%s", r->res->kind_name, ns ? ns : "", ns ? "/" : "",
		       name ? name : "?");
}

static void reject(struct ctl_kube_refl *r, const char *id, const char *why)
{
	r->st.rejected++;
	ml_log(ML_LOG_WARN, SCOPE, "object rejected", ML_LS("resource", r->res->path),
	       ML_LS("object", id), ML_LS("error", why));
}

/* Kind and apiVersion as the store wants them; a watch of pods must only carry Pods. */
static int complete_object(struct ctl_kube_refl *r, json_t *obj, const char *id)
{
	const char *kind = ml_kobj_str(obj, "kind");
	json_t *meta = json_object_get(obj, "metadata");
	char why[200];

	if (!json_is_object(meta)) {
		reject(r, id, "metadata is not an object");
		return -EINVAL;
	}
	if (kind && !streq(kind, r->res->kind_name)) {
		(void)snprintf(why, sizeof(why), "an object of kind %.64s in a list/watch of %s",
			       kind, r->res->kind_name);
		reject(r, id, why);
		return -EINVAL;
	}
	/* The API server omits kind/apiVersion of items inside a List (and a watch may too,
	 * for some serializers): they are the list's. */
	if (!kind && json_object_set_new(obj, "kind", json_string(r->res->kind_name)) < 0)
		return -ENOMEM;
	if (!ml_kobj_str(obj, "apiVersion") &&
	    json_object_set_new(obj, "apiVersion", json_string(r->res->api_version)) < 0)
		return -ENOMEM;
	/* Server-side apply bookkeeping: large, churns on every write, used by nothing here. */
	(void)json_object_del(meta, "managedFields");
	return 0;
}

static int set_rv(struct ctl_kube_refl *r, const json_t *obj)
{
	const char *rv = ml_kobj_str(obj, "metadata.resourceVersion");

	if (!rv || !*rv || strlen(rv) > CTL_KUBE_RV_MAX)
		return -EINVAL;
	memcpy(r->rv, rv, strlen(rv) + 1);
	return 0;
}

static int apply_object(struct ctl_kube_refl *r, json_t *obj, const char *id)
{
	int e = complete_object(r, obj, id);

	if (e < 0)
		return e;
	e = ctl_store_apply(r->o.store, r->origin, obj);
	if (e < 0)
		r->st.rejected++; /* the store logged it */
	return e;
}

static bool object_key(const struct ctl_kube_refl *r, const json_t *obj, char *key, size_t len)
{
	const char *ns = ml_kobj_str(obj, "metadata.namespace");
	const char *name = ml_kobj_str(obj, "metadata.name");
	int n;

	if (!name)
		return false;
	/* as the store keys them: cluster-scoped "", namespaced without one "default" */
	if (!r->res->namespaced)
		ns = "";
	else if (!ns)
		ns = "default";
	n = snprintf(key, len, "%s/%s", ns, name);
	return n > 0 && (size_t)n < len;
}

/* ---- status objects ---- */

struct status_info {
	int64_t code;
	const char *reason, *message;
};

static void status_of(const json_t *st, struct status_info *ret)
{
	json_t *code = json_object_get(st, "code");

	ret->code = json_is_integer(code) ? json_integer_value(code) : 0;
	ret->reason = ml_kobj_str(st, "reason");
	ret->message = ml_kobj_str(st, "message");
}

/* 410: the resourceVersion (or continue token) is older than etcd's compaction window. */
static bool status_expired(const struct status_info *s)
{
	return s->code == 410 ||
	       (s->reason && (streq(s->reason, "Expired") || streq(s->reason, "Gone")));
}

/* ---- watch events ---- */

static void watch_event(struct ctl_kube_refl *r, const char *type, json_t *obj)
{
	char id[400];

	const char *kind = ml_kobj_str(obj, "kind");

	object_id(r, obj, id, sizeof(id));
	if (streq(type, "ADDED") || streq(type, "MODIFIED")) {
		/* A rejected object still moves the resourceVersion below: it was delivered,
		 * and watching from before it would only deliver it again. */
		(void)apply_object(r, obj, id);
		if (streq(type, "ADDED"))
			r->st.added++;
		else
			r->st.modified++;
	} else if (kind && !streq(kind, r->res->kind_name)) {
		reject(r, id, "an event for an object of another kind");
		return;
	} else if (streq(type, "DELETED")) {
		const char *name = ml_kobj_str(obj, "metadata.name");
		const char *ns = r->res->namespaced ? ml_kobj_str(obj, "metadata.namespace") : "";
		if (!name) {
			reject(r, id, "DELETED event without metadata.name");
			return;
		}
		int e = ctl_store_delete(r->o.store, r->origin, r->res->kind, ns ? ns : "default",
					 name);
		if (e < 0 && e != -ENOENT)
			ml_log(ML_LOG_WARN, SCOPE, "cannot delete an object", ML_LS("object", id),
			       ML_LS("error", strerror(-e)));
		r->st.deleted++;
	} else if (streq(type, "BOOKMARK")) {
		/* A bookmark carries only metadata.resourceVersion (and, for a watch that
		 * asked for sendInitialEvents, the initial-events-end annotation). */
		r->st.bookmarks++;
		const json_t *ann = ml_kobj_get(obj, "metadata.annotations");
		const char *end = json_string_value(json_object_get(ann, ANN_INITIAL_EVENTS_END));
		if (end && streq(end, "true")) {
			r->st.initial_events_end++;
			ml_log(ML_LOG_DEBUG, SCOPE, "initial events end",
			       ML_LS("resource", r->res->path));
		}
	} else {
		char shown[SHOW_MAX + 4];
		show(shown, sizeof(shown), type, strlen(type));
		reject(r, id, "unknown watch event type");
		ml_log(ML_LOG_DEBUG, SCOPE, "unknown watch event", ML_LS("type", shown));
		return;
	}
	if (set_rv(r, obj) < 0) {
		reject(r, id, "event object has no usable metadata.resourceVersion");
		return;
	}
	r->progress = true;
}

static void watch_error(struct ctl_kube_refl *r, const json_t *obj)
{
	struct status_info s;

	status_of(obj, &s);
	r->st.errors++;
	if (status_expired(&s)) {
		r->expired = true;
		ml_log(ML_LOG_INFO, SCOPE, "watch expired, listing again",
		       ML_LS("resource", r->res->path), ML_LS("resource_version", r->rv),
		       ML_LS("message", s.message));
	} else {
		r->watch_error = true;
		ml_log(ML_LOG_WARN, SCOPE, "watch error", ML_LS("resource", r->res->path),
		       ML_LI("code", s.code), ML_LS("reason", s.reason),
		       ML_LS("message", s.message));
	}
}

/* One line of the watch stream. Returns 1 when the stream is over (an ERROR event). */
static int watch_line(struct ctl_kube_refl *r, const char *p, size_t n)
{
	json_error_t je;
	json_t *ev, *obj;
	const char *type;
	char shown[SHOW_MAX + 4], where[64];

	r->lineno++;
	while (n && (p[n - 1] == '\r' || p[n - 1] == ' ' || p[n - 1] == '\t'))
		n--;
	if (n == 0)
		return 0;
	ev = json_loadb(p, n, JSON_REJECT_DUPLICATES, &je);
	type = ev ? json_string_value(json_object_get(ev, "type")) : NULL;
	obj = ev ? json_object_get(ev, "object") : NULL;
	if (!ev || !json_is_object(ev) || !type || !json_is_object(obj)) {
		show(shown, sizeof(shown), p, n);
		(void)snprintf(where, sizeof(where), "line %" PRIu64, r->lineno);
		r->st.rejected++;
		ml_log(ML_LOG_WARN, SCOPE, "malformed watch event skipped",
		       ML_LS("resource", r->res->path), ML_LS("where", where),
		       ML_LS("error",
			     ev ? "not an object with a string type and an object" : je.text),
		       ML_LS("line", shown));
		json_decref(ev);
		return 0;
	}
	if (streq(type, "ERROR")) {
		watch_error(r, obj);
		json_decref(ev);
		return 1;
	}
	watch_event(r, type, obj);
	json_decref(ev);
	return 0;
}

/* Best-effort: the string value of the first "key":"..." in @p (an oversize line is never
 * parsed; the API server writes metadata.name and namespace early in each object). */
static void sniff(const char *p, size_t n, const char *after, const char *key, char *out,
		  size_t outlen)
{
	char pat[64];
	const char *s = p, *end = p + ML_MIN(n, (size_t)SNIFF_MAX);

	out[0] = '\0';
	if (after) {
		s = memmem(p, (size_t)(end - p), after, strlen(after));
		if (!s)
			return;
	}
	(void)snprintf(pat, sizeof(pat), "\"%s\":\"", key);
	s = memmem(s, (size_t)(end - s), pat, strlen(pat));
	if (!s)
		return;
	s += strlen(pat);
	const char *q = s;
	while (q < end && *q != '"' && *q != '\\' && (size_t)(q - s) < outlen - 1)
		q++;
	show(out, outlen, s, (size_t)(q - s));
}

static void skip_start(struct ctl_kube_refl *r)
{
	const char *p = (const char *)ml_buf_head(&r->body);
	size_t n = ml_buf_used(&r->body);
	char name[254], ns[64];

	sniff(p, n, "\"metadata\":{", "name", name, sizeof(name));
	sniff(p, n, "\"metadata\":{", "namespace", ns, sizeof(ns));
	(void)snprintf(r->skip_id, sizeof(r->skip_id), "%s/%s%s%s", r->res->kind_name, ns,
		       *ns ? "/" : "", *name ? name : "?");
	r->skipping = true;
	r->skipped = n;
	ml_buf_reset(&r->body);
}

static void skip_end(struct ctl_kube_refl *r)
{
	char why[128];

	(void)snprintf(why, sizeof(why), "watch event of more than %zu bytes (limit %zu)",
		       r->skipped, r->o.max_event_bytes);
	r->lineno++;
	reject(r, r->skip_id, why);
	r->skipping = false;
	r->skipped = 0;
}

static int watch_feed(struct ctl_kube_refl *r, const uint8_t *p, size_t len)
{
	while (len && r->mode == M_WATCH) {
		const uint8_t *nl = memchr(p, '\n', len);
		size_t seg = nl ? (size_t)(nl - p) : len;

		if (r->skipping) {
			r->skipped += seg;
		} else if (ml_buf_append(&r->body, p, seg) < 0) {
			/* over max_event_bytes: keep the head we have to name the object */
			size_t room = ml_buf_room(&r->body);
			(void)ml_buf_append(&r->body, p, room);
			skip_start(r);
			r->skipped += seg - room;
		}
		if (!nl)
			break;
		if (r->skipping) {
			skip_end(r);
		} else {
			int e = watch_line(r, (const char *)ml_buf_head(&r->body),
					   ml_buf_used(&r->body));
			ml_buf_reset(&r->body);
			if (e == 1) {
				r->mode = M_IGNORE;
				return 1;
			}
		}
		p += seg + 1;
		len -= seg + 1;
	}
	return r->mode == M_IGNORE ? 1 : 0;
}

int ctl_kube_refl_body(struct ctl_kube_refl *r, const uint8_t *p, size_t len)
{
	switch (r->mode) {
	case M_WATCH:
		return watch_feed(r, p, len);
	case M_LIST:
	case M_ERROR:
		if (!r->overflow && ml_buf_append(&r->body, p, len) < 0) {
			if (r->mode == M_ERROR)
				(void)ml_buf_append(&r->body, p, ml_buf_room(&r->body));
			r->overflow = true;
		}
		return 0;
	case M_IGNORE:
		return 1;
	default:
		return 0;
	}
}

/* ---- completion ---- */

static uint64_t retry(struct ctl_kube_refl *r)
{
	r->attempt++;
	r->st.failures++;
	return ctl_kube_backoff_ns(r->o.backoff_min_ns, r->o.backoff_max_ns, r->attempt, rnd(r));
}

static uint64_t relist(struct ctl_kube_refl *r)
{
	/* The first relist is immediate; one that follows another failure backs off, so a
	 * server answering 410 to every watch cannot spin us. */
	uint64_t d = r->attempt ? ctl_kube_backoff_ns(r->o.backoff_min_ns, r->o.backoff_max_ns,
						      r->attempt, rnd(r))
				: 0;
	r->attempt++;
	r->st.relists++;
	r->phase = PH_LIST;
	list_reset(r);
	return d;
}

/* Delete what this reflector stored that the completed list did not name. */
static void delete_vanished(struct ctl_kube_refl *r)
{
	size_t n = 0, cap = 0;
	char **gone = NULL;
	char key[600];

	for (const struct ctl_obj *o = ctl_store_first(r->o.store, r->res->kind); o;
	     o = ctl_store_next(o)) {
		if (!o->origin || !streq(o->origin, r->origin))
			continue;
		(void)snprintf(key, sizeof(key), "%s/%s", o->ns, o->name);
		if (json_object_get(r->seen, key))
			continue;
		if (n == cap) {
			size_t nc = cap ? cap * 2 : 16;
			char **g = realloc(gone, nc * sizeof(*g));
			if (!g)
				break; /* the next relist retries the rest */
			gone = g;
			cap = nc;
		}
		if (!(gone[n] = strdup(key)))
			break;
		n++;
	}
	for (size_t i = 0; i < n; i++) {
		char *slash = strchr(gone[i], '/');
		*slash = '\0';
		if (ctl_store_delete(r->o.store, r->origin, r->res->kind, gone[i], slash + 1) == 0)
			r->st.vanished++;
		free(gone[i]);
	}
	free(gone);
	if (n)
		ml_log(ML_LOG_INFO, SCOPE, "deleted objects that vanished while not watching",
		       ML_LS("resource", r->res->path), ML_LU("objects", n));
}

/* Apply one list page; 0 and the continue token set (or cleared), or -EBADMSG (logged). */
static int list_page(struct ctl_kube_refl *r)
{
	json_error_t je;
	json_t *list, *items, *item;
	const char *kind, *cont, *rv;
	char id[400], key[600];
	size_t i;

	if (r->overflow) {
		ml_log(ML_LOG_ERROR, SCOPE, "list page too large", ML_LS("resource", r->res->path),
		       ML_LU("limit", r->o.max_list_bytes));
		return -EBADMSG;
	}
	list = json_loadb((const char *)ml_buf_head(&r->body), ml_buf_used(&r->body), 0, &je);
	items = json_object_get(list, "items");
	kind = ml_kobj_str(list, "kind");
	rv = ml_kobj_str(list, "metadata.resourceVersion");
	cont = ml_kobj_str(list, "metadata.continue");
	if (!json_is_object(list) || !(json_is_array(items) || json_is_null(items)) || !rv ||
	    !*rv || strlen(rv) > CTL_KUBE_RV_MAX || (kind && !streq(kind, r->res->list_kind)) ||
	    (cont && strlen(cont) > MAX_CONTINUE)) {
		ml_log(ML_LOG_ERROR, SCOPE, "malformed list response",
		       ML_LS("resource", r->res->path),
		       ML_LS("error",
			     !list ? je.text
			     : kind && !streq(kind, r->res->list_kind)
				     ? "unexpected list kind"
				     : "not a list with items and metadata.resourceVersion"));
		json_decref(list);
		return -EBADMSG;
	}
	if (!r->seen && !(r->seen = json_object()))
		goto nomem;
	json_array_foreach(items, i, item) {
		if (!json_is_object(item)) {
			reject(r, "?", "list item is not an object");
			continue;
		}
		object_id(r, item, id, sizeof(id));
		/* Named by the list: keep it even if this version is rejected below. */
		if (object_key(r, item, key, sizeof(key)) &&
		    json_object_set_new(r->seen, key, json_true()) < 0)
			goto nomem;
		size_t sz = json_dumpb(item, NULL, 0, JSON_COMPACT);
		if (sz > r->o.max_event_bytes) {
			char why[128];
			(void)snprintf(why, sizeof(why), "object of %zu bytes (limit %zu)", sz,
				       r->o.max_event_bytes);
			reject(r, id, why);
			continue;
		}
		if (apply_object(r, item, id) == -ENOMEM)
			goto nomem;
	}
	r->st.list_pages++;
	free(r->cont);
	r->cont = NULL;
	if (cont && *cont && !(r->cont = strdup(cont)))
		goto nomem;
	/* Every page carries the snapshot's resourceVersion; the last one is the one to
	 * watch from. */
	memcpy(r->rv, rv, strlen(rv) + 1);
	json_decref(list);
	return 0;
nomem:
	json_decref(list);
	ml_log(ML_LOG_ERROR, SCOPE, "out of memory applying a list page",
	       ML_LS("resource", r->res->path));
	return -ENOMEM;
}

static void log_failure(struct ctl_kube_refl *r, int err, const char *why)
{
	struct status_info s = { 0 };
	json_t *st = NULL;
	char shown[SHOW_MAX + 4] = "";

	if (r->status && r->status != 200) {
		st = json_loadb((const char *)ml_buf_head(&r->body), ml_buf_used(&r->body), 0,
				NULL);
		status_of(st, &s);
		if (!s.message)
			show(shown, sizeof(shown), (const char *)ml_buf_head(&r->body),
			     ml_buf_used(&r->body));
	}
	ml_log(r->status == 410 ? ML_LOG_INFO : ML_LOG_WARN, SCOPE,
	       r->phase == PH_LIST ? "list failed" : "watch failed",
	       ML_LS("resource", r->res->path), ML_LI("status", r->status),
	       ML_LS("reason", s.reason),
	       ML_LS("message", s.message  ? s.message
				: shown[0] ? shown
					   : NULL),
	       ML_LS("error", err ? (why && *why ? why : strerror(-err)) : NULL));
	json_decref(st);
}

uint64_t ctl_kube_refl_done(struct ctl_kube_refl *r, int err, const char *why)
{
	enum body_mode mode = r->mode;

	r->mode = M_NONE;
	if (r->phase == PH_LIST) {
		if (err == 0 && r->status == 200) {
			int e = list_page(r);
			/* a page can be large: do not keep its buffer for the watch */
			ml_buf_release(&r->body);
			ml_buf_init(&r->body, r->o.max_list_bytes);
			if (e == 0 && r->cont)
				return 0; /* the next page at once */
			if (e == 0) {
				delete_vanished(r);
				list_reset(r);
				r->phase = PH_WATCH;
				if (!r->synced)
					ml_log(ML_LOG_INFO, SCOPE, "listed",
					       ML_LS("resource", r->res->path),
					       ML_LU("objects",
						     ctl_store_count(r->o.store, r->res->kind)),
					       ML_LS("resource_version", r->rv));
				r->synced = true;
				return 0;
			}
			list_reset(r);
			return retry(r);
		}
		log_failure(r, err, why);
		/* 410 on a page: the continue token expired; either way start over. */
		list_reset(r);
		return retry(r);
	}

	/* watch */
	if (r->status == 200) {
		if (err == 0 && mode == M_WATCH && !r->skipping && ml_buf_used(&r->body)) {
			/* the stream ended without a final newline */
			(void)watch_line(r, (const char *)ml_buf_head(&r->body),
					 ml_buf_used(&r->body));
			ml_buf_reset(&r->body);
		}
		if (r->progress)
			r->attempt = 0;
		if (r->expired)
			return relist(r);
		if (r->watch_error)
			return retry(r);
		if (err == 0) {
			r->attempt = 0; /* timeoutSeconds reached: watch again at once */
			return 0;
		}
		ml_log(ML_LOG_WARN, SCOPE, "watch connection lost", ML_LS("resource", r->res->path),
		       ML_LS("resource_version", r->rv),
		       ML_LS("error", why && *why ? why : strerror(-err)));
		return retry(r);
	}
	log_failure(r, err, why);
	if (r->status == 410)
		return relist(r);
	return retry(r);
}
