/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Data layout. An object (struct sobj, one per kind/ns/name) has one definition (struct def)
 * per source that defines it: normally one file. The definition from the source whose name
 * sorts first is the object's current content. Loading a file replaces that file's
 * definitions and marks the objects they touch dirty; flush() then picks the winners and
 * reports ADD/UPDATE/DELETE. Doing all of one batch before flushing means an object that
 * moves from one file to another in a single batch is reported as one UPDATE (or nothing),
 * never as a DELETE followed by an ADD.
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>

#include "common.h"
#include "kobj.h"
#include "kutil.h"
#include "log.h"
#include "store.h"

#define STORE_READ_BUF (64u * 1024)
#define STORE_BATCH_MAX 1024 /* distinct file names per batch before falling back to a rescan */
#define STORE_ERR_MAX 512

struct sfile;

struct def {
	struct sobj *obj;
	struct sfile *file;
	json_t *json;
	struct def *key_next;  /* other definitions of the same object */
	struct def *file_next; /* other definitions from the same source */
	uint64_t load_gen;     /* the load that last (re)confirmed this definition */
};

struct sobj {
	struct ctl_obj pub;
	char *key; /* "Kind/ns/name" */
	char *ns;
	char *name;
	char *origin; /* copy of the winning source's name */
	json_t *cur;  /* reported content (a reference), NULL while not live */
	struct def *defs;
	bool live;
	bool dirty;
	struct sobj *dirty_next;
	struct sobj *hnext;
	struct sobj *prev, *next; /* live objects of this kind */
};

struct sfile {
	char *name;
	struct def *defs;
	struct sfile *next;
	bool api;  /* ctl_store_apply() origin: not a file */
	bool seen; /* rescan mark */
};

struct ctl_store {
	char *dir;
	size_t max_defs;
	ctl_store_fn cb;
	void *ud;
	int fd;
	int wd;
	bool gone;

	struct sobj **buckets;
	size_t nbuckets;
	size_t nobjs; /* in the hash (live or pending) */
	size_t ndefs;
	struct sobj *kind_head[CTL_KIND__MAX], *kind_tail[CTL_KIND__MAX];
	size_t kind_count[CTL_KIND__MAX];
	struct sobj *dirty;
	struct sfile *files;
	uint64_t counter;
	uint64_t load_gen;
	int events; /* reported by the current flush */

	/* the current inotify batch */
	char **batch;
	size_t nbatch;
	bool batch_rescan;
};

static const struct {
	const char *kind;
	const char *api[2];
	bool namespaced;
	bool name_is_label; /* Namespace and Service names are RFC 1123 labels */
} kinds[CTL_KIND__MAX] = {
	[CTL_KIND_NAMESPACE] = { "Namespace", { "v1" }, false, true },
	[CTL_KIND_POD] = { "Pod", { "v1" }, true, false },
	[CTL_KIND_SERVICE] = { "Service", { "v1" }, true, true },
	[CTL_KIND_ENDPOINTSLICE] = { "EndpointSlice", { "discovery.k8s.io/v1" }, true, false },
	[CTL_KIND_SERVICEACCOUNT] = { "ServiceAccount", { "v1" }, true, false },
	[CTL_KIND_AUTHZ_POLICY] = { "AuthorizationPolicy",
				    { "security.istio.io/v1", "security.istio.io/v1beta1" },
				    true,
				    false },
	[CTL_KIND_PEER_AUTHN] = { "PeerAuthentication",
				  { "security.istio.io/v1", "security.istio.io/v1beta1" },
				  true,
				  false },
	/* v1beta1 is still served by the Gateway API CRDs and common in examples. */
	[CTL_KIND_GATEWAY] = { "Gateway",
			       { "gateway.networking.k8s.io/v1",
				 "gateway.networking.k8s.io/v1beta1" },
			       true,
			       false },
	[CTL_KIND_HTTPROUTE] = { "HTTPRoute",
				 { "gateway.networking.k8s.io/v1",
				   "gateway.networking.k8s.io/v1beta1" },
				 true,
				 false },
};

const char *ctl_kind_name(enum ctl_kind kind)
{
	return (unsigned)kind < CTL_KIND__MAX ? kinds[kind].kind : "?";
}

/* ---- hash ---- */

static uint64_t fnv1a(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ull;

	for (; *s; s++)
		h = (h ^ (uint8_t)*s) * 0x100000001b3ull;
	return h;
}

static struct sobj *lookup(const struct ctl_store *s, const char *key)
{
	if (!s->nbuckets)
		return NULL;
	for (struct sobj *o = s->buckets[fnv1a(key) & (s->nbuckets - 1)]; o; o = o->hnext)
		if (streq(o->key, key))
			return o;
	return NULL;
}

static int grow(struct ctl_store *s)
{
	size_t n = s->nbuckets ? s->nbuckets * 2 : 64;
	struct sobj **b = calloc(n, sizeof(*b));

	if (!b)
		return -ENOMEM;
	for (size_t i = 0; i < s->nbuckets; i++) {
		for (struct sobj *o = s->buckets[i], *next; o; o = next) {
			next = o->hnext;
			size_t h = fnv1a(o->key) & (n - 1);
			o->hnext = b[h];
			b[h] = o;
		}
	}
	free(s->buckets);
	s->buckets = b;
	s->nbuckets = n;
	return 0;
}

static void unhash(struct ctl_store *s, struct sobj *o)
{
	struct sobj **pp = &s->buckets[fnv1a(o->key) & (s->nbuckets - 1)];

	for (; *pp; pp = &(*pp)->hnext) {
		if (*pp == o) {
			*pp = o->hnext;
			s->nobjs--;
			return;
		}
	}
}

static char *make_key(enum ctl_kind kind, const char *ns, const char *name)
{
	size_t n = strlen(kinds[kind].kind) + strlen(ns) + strlen(name) + 3;
	char *k = malloc(n);

	if (k)
		(void)snprintf(k, n, "%s/%s/%s", kinds[kind].kind, ns, name);
	return k;
}

static struct sobj *obj_get_or_create(struct ctl_store *s, enum ctl_kind kind, const char *ns,
				      const char *name)
{
	_cleanup_(freep) char *key = make_key(kind, ns, name);
	struct sobj *o;

	if (!key)
		return NULL;
	o = lookup(s, key);
	if (o)
		return o;
	if (s->nobjs >= s->nbuckets && grow(s) < 0)
		return NULL;
	o = calloc(1, sizeof(*o));
	if (!o)
		return NULL;
	o->ns = strdup(ns);
	o->name = strdup(name);
	if (!o->ns || !o->name) {
		free(o->ns);
		free(o->name);
		free(o);
		return NULL;
	}
	o->key = TAKE_PTR(key);
	o->pub.kind = kind;
	o->pub.ns = o->ns;
	o->pub.name = o->name;
	size_t h = fnv1a(o->key) & (s->nbuckets - 1);
	o->hnext = s->buckets[h];
	s->buckets[h] = o;
	s->nobjs++;
	return o;
}

static void mark_dirty(struct ctl_store *s, struct sobj *o)
{
	if (o->dirty)
		return;
	o->dirty = true;
	o->dirty_next = s->dirty;
	s->dirty = o;
}

static void obj_free(struct sobj *o)
{
	json_decref(o->cur);
	free(o->key);
	free(o->ns);
	free(o->name);
	free(o->origin);
	free(o);
}

/* ---- definitions ---- */

static void def_unlink_key(struct def *d)
{
	for (struct def **pp = &d->obj->defs; *pp; pp = &(*pp)->key_next) {
		if (*pp == d) {
			*pp = d->key_next;
			return;
		}
	}
}

static void def_remove(struct ctl_store *s, struct def **pp_file)
{
	struct def *d = *pp_file;

	*pp_file = d->file_next;
	def_unlink_key(d);
	mark_dirty(s, d->obj);
	json_decref(d->json);
	free(d);
	s->ndefs--;
}

static struct def *def_find(struct sobj *o, const struct sfile *f)
{
	for (struct def *d = o->defs; d; d = d->key_next)
		if (d->file == f)
			return d;
	return NULL;
}

/* ---- reporting ---- */

static void kind_link(struct ctl_store *s, struct sobj *o)
{
	enum ctl_kind k = o->pub.kind;

	o->prev = s->kind_tail[k];
	o->next = NULL;
	if (o->prev)
		o->prev->next = o;
	else
		s->kind_head[k] = o;
	s->kind_tail[k] = o;
	s->kind_count[k]++;
}

static void kind_unlink(struct ctl_store *s, struct sobj *o)
{
	enum ctl_kind k = o->pub.kind;

	if (o->prev)
		o->prev->next = o->next;
	else
		s->kind_head[k] = o->next;
	if (o->next)
		o->next->prev = o->prev;
	else
		s->kind_tail[k] = o->prev;
	s->kind_count[k]--;
}

static void emit(struct ctl_store *s, enum ctl_store_event ev, struct sobj *o)
{
	s->events++;
	if (s->cb)
		s->cb(s->ud, ev, &o->pub);
}

static int set_origin(struct sobj *o, const char *origin)
{
	if (o->origin && streq(o->origin, origin))
		return 0;
	char *c = strdup(origin);
	if (!c)
		return -ENOMEM;
	free(o->origin);
	o->origin = c;
	o->pub.origin = c;
	return 0;
}

static void flush(struct ctl_store *s)
{
	while (s->dirty) {
		struct sobj *o = s->dirty;
		struct def *win = NULL;

		s->dirty = o->dirty_next;
		o->dirty = false;
		for (struct def *d = o->defs; d; d = d->key_next)
			if (!win || strcmp(d->file->name, win->file->name) < 0)
				win = d;

		if (!win) {
			if (o->live) {
				s->counter++;
				emit(s, CTL_STORE_DELETE, o);
				kind_unlink(s, o);
			}
			unhash(s, o);
			obj_free(o);
			continue;
		}
		if (set_origin(o, win->file->name) < 0) {
			/* Out of memory: keep what was reported; the next load retries. */
			continue;
		}
		if (!o->live) {
			o->cur = json_incref(win->json);
			o->pub.json = o->cur;
			o->pub.resource_version = o->pub.seq = ++s->counter;
			o->live = true;
			kind_link(s, o);
			emit(s, CTL_STORE_ADD, o);
		} else if (!json_equal(o->cur, win->json)) {
			json_decref(o->cur);
			o->cur = json_incref(win->json);
			o->pub.json = o->cur;
			o->pub.resource_version = ++s->counter;
			emit(s, CTL_STORE_UPDATE, o);
		}
	}
}

/* ---- validation ---- */

static void format_id(char *id, size_t len, enum ctl_kind kind, const char *ns, const char *name)
{
	(void)snprintf(id, len, "%s/%s%s%s", kinds[kind].kind, ns, *ns ? "/" : "", name);
}

static bool api_ok(enum ctl_kind k, const char *api)
{
	for (unsigned i = 0; i < ARRAY_SIZE(kinds[k].api); i++)
		if (kinds[k].api[i] && streq(kinds[k].api[i], api))
			return true;
	return false;
}

/*
 * Structural checks only (see store.h). On success sets kind/ns/name (pointing into @o).
 * On failure writes a message; @id names the object as far as it could be identified.
 */
static int validate(const json_t *o, enum ctl_kind *ret_kind, const char **ret_ns,
		    const char **ret_name, char *id, size_t idlen, char *err, size_t errlen)
{
	const char *kind = ml_kobj_str(o, "kind");
	const char *api = ml_kobj_str(o, "apiVersion");
	json_t *meta = ml_kobj_get(o, "metadata");
	const char *name = ml_kobj_str(o, "metadata.name");
	json_t *nsv = ml_kobj_get(o, "metadata.namespace");
	const char *ns;
	unsigned k;

	const char *nsname = json_string_value(nsv);
	(void)snprintf(id, idlen, "%s/%s%s%s", kind ? kind : "?", nsname ? nsname : "",
		       nsname ? "/" : "", name ? name : "?");
	if (!kind || !api) {
		(void)snprintf(err, errlen, "apiVersion and kind must be strings");
		return -EINVAL;
	}
	for (k = 0; k < CTL_KIND__MAX; k++)
		if (streq(kinds[k].kind, kind))
			break;
	if (k == CTL_KIND__MAX) {
		(void)snprintf(err, errlen, "unsupported kind %s (apiVersion %s)", kind, api);
		return -EINVAL;
	}
	if (!api_ok(k, api)) {
		(void)snprintf(err, errlen, "unsupported apiVersion %s for kind %s", api, kind);
		return -EINVAL;
	}
	if (!json_is_object(meta)) {
		(void)snprintf(err, errlen, "metadata must be a mapping");
		return -EINVAL;
	}
	if (!name ||
	    !(kinds[k].name_is_label ? ctl_is_dns_label(name) : ctl_is_dns_subdomain(name))) {
		(void)snprintf(err, errlen, "metadata.name must be an RFC 1123 %s",
			       kinds[k].name_is_label ? "label" : "subdomain");
		return -EINVAL;
	}
	if (!kinds[k].namespaced) {
		ns = "";
	} else if (!nsv || json_is_null(nsv)) {
		ns = "default"; /* what kubectl apply would do */
	} else {
		ns = json_string_value(nsv);
		if (!ctl_is_dns_label(ns)) {
			(void)snprintf(err, errlen, "metadata.namespace must be an RFC 1123 label");
			return -EINVAL;
		}
	}
	format_id(id, idlen, (enum ctl_kind)k, ns, name);
	static const char *const maps[] = { "labels", "annotations" };
	for (unsigned i = 0; i < ARRAY_SIZE(maps); i++) {
		json_t *m = json_object_get(meta, maps[i]);
		if (m && !json_is_null(m) && !ctl_is_string_map(m)) {
			/* e.g. `version: 1` unquoted: the API server refuses it as well */
			(void)snprintf(err, errlen, "metadata.%s must map strings to strings",
				       maps[i]);
			return -EINVAL;
		}
	}
	static const char *const parts[] = { "spec", "status" };
	for (unsigned i = 0; i < ARRAY_SIZE(parts); i++) {
		json_t *p = json_object_get(o, parts[i]);
		if (p && !json_is_null(p) && !json_is_object(p)) {
			(void)snprintf(err, errlen, "%s must be a mapping", parts[i]);
			return -EINVAL;
		}
	}
	*ret_kind = (enum ctl_kind)k;
	*ret_ns = ns;
	*ret_name = name;
	return 0;
}

static void log_object(const char *origin, const char *id, const char *err)
{
	ml_log(ML_LOG_WARN, "store", "object rejected", ML_LS("file", origin), ML_LS("object", id),
	       ML_LS("error", err));
}

/* ---- sources ---- */

static struct sfile *file_find(const struct ctl_store *s, const char *name, bool api)
{
	for (struct sfile *f = s->files; f; f = f->next)
		if (f->api == api && streq(f->name, name))
			return f;
	return NULL;
}

static struct sfile *file_get(struct ctl_store *s, const char *name, bool api)
{
	struct sfile *f = file_find(s, name, api);

	if (f)
		return f;
	f = calloc(1, sizeof(*f));
	if (!f)
		return NULL;
	f->name = strdup(name);
	if (!f->name) {
		free(f);
		return NULL;
	}
	f->api = api;
	f->next = s->files;
	s->files = f;
	return f;
}

static void file_remove(struct ctl_store *s, struct sfile *f)
{
	while (f->defs)
		def_remove(s, &f->defs);
	for (struct sfile **pp = &s->files; *pp; pp = &(*pp)->next) {
		if (*pp == f) {
			*pp = f->next;
			break;
		}
	}
	free(f->name);
	free(f);
}

/*
 * Put @doc (validated) into @f as the definition of kind/ns/name. @doc is referenced, not
 * copied. Returns 0, or -errno (logged by the caller).
 */
static int define(struct ctl_store *s, struct sfile *f, enum ctl_kind kind, const char *ns,
		  const char *name, json_t *doc, const char *id)
{
	struct sobj *o = obj_get_or_create(s, kind, ns, name);
	struct def *d;

	if (!o)
		return -ENOMEM;
	d = def_find(o, f);
	if (d && d->load_gen == s->load_gen) {
		log_object(f->name, id, "defined twice in this file; the first definition is used");
		return -EEXIST;
	}
	if (!d) {
		if (s->ndefs >= s->max_defs) {
			char e[96];
			(void)snprintf(e, sizeof(e), "the store is full (%zu objects)",
				       s->max_defs);
			log_object(f->name, id, e);
			if (!o->defs && !o->live && !o->dirty) {
				unhash(s, o);
				obj_free(o);
			}
			return -ENOSPC;
		}
		d = calloc(1, sizeof(*d));
		if (!d) {
			if (!o->defs && !o->live && !o->dirty) {
				unhash(s, o);
				obj_free(o);
			}
			return -ENOMEM;
		}
		d->obj = o;
		d->file = f;
		d->key_next = o->defs;
		o->defs = d;
		d->file_next = f->defs;
		f->defs = d;
		s->ndefs++;
	} else if (d->json && json_equal(d->json, doc)) {
		d->load_gen = s->load_gen;
		return 0;
	}
	json_decref(d->json);
	d->json = json_incref(doc);
	d->load_gen = s->load_gen;
	mark_dirty(s, o);
	for (struct def *w = o->defs; w; w = w->key_next) {
		if (w != d && strcmp(w->file->name, f->name) < 0) {
			char e[STORE_ERR_MAX];
			(void)snprintf(e, sizeof(e), "also defined in %s, which takes precedence",
				       w->file->name);
			log_object(f->name, id, e);
			break;
		}
	}
	return 0;
}

/* Keep @f's current definition of the object (a malformed new version was rejected). */
static void keep(struct ctl_store *s, struct sfile *f, enum ctl_kind kind, const char *ns,
		 const char *name)
{
	_cleanup_(freep) char *key = make_key(kind, ns, name);
	struct sobj *o = key ? lookup(s, key) : NULL;
	struct def *d = o ? def_find(o, f) : NULL;

	if (d)
		d->load_gen = s->load_gen;
}

/* Best-effort identification of a rejected object, to keep its previous version. */
static bool rejected_key(const json_t *o, enum ctl_kind *kind, const char **ns, const char **name)
{
	const char *k = ml_kobj_str(o, "kind");
	const char *n = ml_kobj_str(o, "metadata.name");
	const char *nsv = ml_kobj_str(o, "metadata.namespace");

	if (!k || !n)
		return false;
	for (unsigned i = 0; i < CTL_KIND__MAX; i++) {
		if (streq(kinds[i].kind, k)) {
			*kind = (enum ctl_kind)i;
			*ns = !kinds[i].namespaced ? "" : nsv ? nsv : "default";
			*name = n;
			return true;
		}
	}
	return false;
}

static void drop_unconfirmed(struct ctl_store *s, struct sfile *f)
{
	for (struct def **pp = &f->defs; *pp;) {
		if ((*pp)->load_gen != s->load_gen)
			def_remove(s, pp);
		else
			pp = &(*pp)->file_next;
	}
}

static bool wanted_name(const char *name)
{
	size_t n = strlen(name);

	if (name[0] == '.' || n > NAME_MAX)
		return false;
	return (n > 5 && streq(name + n - 5, ".yaml")) || (n > 4 && streq(name + n - 4, ".yml")) ||
	       (n > 5 && streq(name + n - 5, ".json"));
}

/*
 * Replace @f's definitions with the objects in @docs, in three passes so the object limit
 * counts what the file will hold, not what it held: (1) validate, and update the objects
 * the file already defines; (2) drop the ones it no longer defines; (3) add the new ones.
 */
static void load(struct ctl_store *s, struct sfile *f, json_t *docs)
{
	size_t n = json_array_size(docs), npend = 0;
	struct pending {
		enum ctl_kind kind;
		const char *ns, *name;
		json_t *doc;
	} *pend = calloc(n + 1, sizeof(*pend));
	char err[STORE_ERR_MAX], id[STORE_ERR_MAX];
	size_t i;
	json_t *doc;

	s->load_gen++;
	json_array_foreach(docs, i, doc) {
		enum ctl_kind kind;
		const char *ns, *oname;

		if (validate(doc, &kind, &ns, &oname, id, sizeof(id), err, sizeof(err)) < 0) {
			log_object(f->name, id, err);
			if (rejected_key(doc, &kind, &ns, &oname))
				keep(s, f, kind, ns, oname);
			continue;
		}
		_cleanup_(freep) char *key = make_key(kind, ns, oname);
		struct sobj *o = key ? lookup(s, key) : NULL;
		if ((o && def_find(o, f)) || !pend) {
			if (define(s, f, kind, ns, oname, doc, id) == -ENOMEM) {
				log_object(f->name, id, "out of memory");
				keep(s, f, kind, ns, oname);
			}
			continue;
		}
		pend[npend++] = (struct pending){ kind, ns, oname, doc };
	}
	drop_unconfirmed(s, f);
	for (i = 0; i < npend; i++) {
		format_id(id, sizeof(id), pend[i].kind, pend[i].ns, pend[i].name);
		if (define(s, f, pend[i].kind, pend[i].ns, pend[i].name, pend[i].doc, id) ==
		    -ENOMEM)
			log_object(f->name, id, "out of memory");
	}
	free(pend);
}

/* Bring file @name in line with the directory: load it, or forget it if it is gone. */
static void examine(struct ctl_store *s, const char *name)
{
	char path[PATH_MAX];
	char err[STORE_ERR_MAX];
	struct stat st;
	struct sfile *f;

	if ((size_t)snprintf(path, sizeof(path), "%s/%s", s->dir, name) >= sizeof(path))
		return;
	/* Gone, or no longer a regular file: forget it. Any other failure keeps what it had,
	 * like a parse error does: an unreadable policy file must not drop a DENY. */
	int r = stat(path, &st);
	if (r < 0 && errno != ENOENT && errno != ENOTDIR) {
		ml_log(ML_LOG_WARN, "store", "file rejected", ML_LS("file", name),
		       ML_LS("error", strerror(errno)),
		       ML_LS("kept", "the previous objects of this file"));
		return;
	}
	if (r < 0 || !S_ISREG(st.st_mode)) {
		f = file_find(s, name, false);
		if (f)
			file_remove(s, f);
		return;
	}
	json_t *docs = ml_kobj_load_file(path, err, sizeof(err));
	if (!docs) {
		if (stat(path, &st) < 0 && errno == ENOENT) {
			f = file_find(s, name, false);
			if (f)
				file_remove(s, f);
			return;
		}
		ml_log(ML_LOG_WARN, "store", "file rejected", ML_LS("file", name),
		       ML_LS("error", err), ML_LS("kept", "the previous objects of this file"));
		return;
	}
	f = file_get(s, name, false);
	if (!f) {
		json_decref(docs);
		return;
	}
	load(s, f, docs);
	json_decref(docs);
}

static int name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int rescan(struct ctl_store *s)
{
	DIR *d = opendir(s->dir);
	struct dirent *de;
	char **names = NULL;
	size_t n = 0, cap = 0;
	int r = 0;

	if (!d)
		return -errno;
	while ((de = readdir(d))) {
		if (!wanted_name(de->d_name))
			continue;
		if (n == cap) {
			size_t nc = cap ? cap * 2 : 32;
			char **nn = realloc(names, nc * sizeof(*nn));
			if (!nn) {
				r = -ENOMEM;
				break;
			}
			names = nn;
			cap = nc;
		}
		names[n] = strdup(de->d_name);
		if (!names[n]) {
			r = -ENOMEM;
			break;
		}
		n++;
	}
	(void)closedir(d);
	if (r == 0) {
		if (n)
			qsort(names, n, sizeof(*names), name_cmp);
		for (struct sfile *f = s->files; f; f = f->next)
			f->seen = f->api;
		for (size_t i = 0; i < n; i++) {
			examine(s, names[i]);
			struct sfile *f = file_find(s, names[i], false);
			if (f)
				f->seen = true;
		}
		for (struct sfile *f = s->files, *next; f; f = next) {
			next = f->next;
			if (!f->seen)
				file_remove(s, f);
		}
	}
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	return r;
}

/* ---- public ---- */

struct ctl_store *ctl_store_new(const struct ctl_store_opts *opts)
{
	struct ctl_store *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	s->dir = strdup(opts->dir ? opts->dir : ".");
	if (!s->dir) {
		free(s);
		return NULL;
	}
	s->max_defs = opts->max_objects ? opts->max_objects : CTL_STORE_MAX_OBJECTS;
	s->cb = opts->cb;
	s->ud = opts->ud;
	s->fd = -1;
	s->wd = -1;
	return s;
}

struct ctl_store *ctl_store_free(struct ctl_store *s)
{
	if (!s)
		return NULL;
	while (s->files) {
		struct sfile *f = s->files;
		while (f->defs) {
			struct def *d = f->defs;
			f->defs = d->file_next;
			json_decref(d->json);
			free(d);
		}
		s->files = f->next;
		free(f->name);
		free(f);
	}
	for (size_t i = 0; i < s->nbuckets; i++) {
		for (struct sobj *o = s->buckets[i], *next; o; o = next) {
			next = o->hnext;
			obj_free(o);
		}
	}
	free(s->buckets);
	for (size_t i = 0; i < s->nbatch; i++)
		free(s->batch[i]);
	free(s->batch);
	if (s->fd >= 0)
		(void)close(s->fd);
	free(s->dir);
	free(s);
	return NULL;
}

int ctl_store_open(struct ctl_store *s)
{
	if (s->fd >= 0)
		return -EALREADY;
	s->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (s->fd < 0)
		return -errno;
	/* Watch first, then scan: a file written during the scan is loaded again, not missed. */
	s->wd = inotify_add_watch(s->fd, s->dir,
				  IN_CLOSE_WRITE | IN_MOVED_TO | IN_DELETE | IN_MOVED_FROM |
					  IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR);
	if (s->wd < 0) {
		int r = -errno;
		(void)close(s->fd);
		s->fd = -1;
		return r;
	}
	return ctl_store_rescan(s);
}

int ctl_store_fd(const struct ctl_store *s)
{
	return s->fd;
}

int ctl_store_rescan(struct ctl_store *s)
{
	s->events = 0;
	int r = rescan(s);
	flush(s);
	return r < 0 ? r : s->events;
}

static void batch_add(struct ctl_store *s, const char *name)
{
	if (s->batch_rescan)
		return;
	for (size_t i = 0; i < s->nbatch; i++)
		if (streq(s->batch[i], name))
			return;
	if (s->nbatch == STORE_BATCH_MAX) {
		s->batch_rescan = true;
		return;
	}
	if (!s->batch) {
		s->batch = calloc(STORE_BATCH_MAX, sizeof(*s->batch));
		if (!s->batch) {
			s->batch_rescan = true;
			return;
		}
	}
	s->batch[s->nbatch] = strdup(name);
	if (!s->batch[s->nbatch])
		s->batch_rescan = true;
	else
		s->nbatch++;
}

static void parse_events(struct ctl_store *s, const uint8_t *buf, size_t len)
{
	size_t off = 0;

	while (len - off >= sizeof(struct inotify_event)) {
		struct inotify_event ev;
		memcpy(&ev, buf + off, sizeof(ev));
		if (ev.len > len - off - sizeof(ev))
			break; /* cut short: the kernel never does this; a caller might */
		const char *name = (const char *)buf + off + sizeof(ev);
		off += sizeof(ev) + ev.len;

		if (ev.mask & IN_Q_OVERFLOW) {
			s->batch_rescan = true;
			continue;
		}
		if (ev.wd != s->wd)
			continue;
		if (ev.mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED)) {
			s->gone = true;
			continue;
		}
		if (ev.len == 0 || !memchr(name, '\0', ev.len))
			continue;
		/* A ConfigMap volume swaps its "..data" symlink: everything may have changed. */
		if (name[0] == '.' && name[1] == '.') {
			s->batch_rescan = true;
			continue;
		}
		if ((ev.mask & IN_ISDIR) || !wanted_name(name))
			continue;
		batch_add(s, name);
	}
}

static int apply_batch(struct ctl_store *s)
{
	int r = 0;

	s->events = 0;
	if (s->gone) {
		/* rm -rf of the directory, or it was moved away: keep the last good state
		 * rather than apply the deletions that preceded it. */
		r = -ENOENT;
	} else if (s->batch_rescan) {
		r = rescan(s);
	} else {
		/* Sorted, so a batch gives the same result whatever order the events came in. */
		if (s->nbatch)
			qsort(s->batch, s->nbatch, sizeof(*s->batch), name_cmp);
		for (size_t i = 0; i < s->nbatch; i++)
			examine(s, s->batch[i]);
	}
	for (size_t i = 0; i < s->nbatch; i++)
		free(s->batch[i]);
	s->nbatch = 0;
	s->batch_rescan = false;
	flush(s);
	return r < 0 ? r : s->events;
}

int ctl_store_feed(struct ctl_store *s, const void *buf, size_t len)
{
	parse_events(s, buf, len);
	return apply_batch(s);
}

int ctl_store_process(struct ctl_store *s)
{
	_Alignas(struct inotify_event) uint8_t buf[STORE_READ_BUF];

	if (s->fd < 0)
		return -EBADF;
	for (;;) {
		ssize_t n = read(s->fd, buf, sizeof(buf));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				break;
			int r = -errno;
			(void)apply_batch(s);
			return r;
		}
		if (n == 0)
			break;
		parse_events(s, buf, (size_t)n);
	}
	return apply_batch(s);
}

int ctl_store_apply(struct ctl_store *s, const char *origin, const json_t *obj)
{
	enum ctl_kind kind;
	const char *ns, *name;
	char id[STORE_ERR_MAX], err[STORE_ERR_MAX];
	struct sfile *f;
	int r;

	if (!origin || !obj)
		return -EINVAL;
	if (!json_is_object(obj)) {
		log_object(origin, "?", "not a mapping");
		return -EINVAL;
	}
	if (validate(obj, &kind, &ns, &name, id, sizeof(id), err, sizeof(err)) < 0) {
		log_object(origin, id, err);
		return -EINVAL;
	}
	json_t *copy = json_deep_copy(obj);
	if (!copy)
		return -ENOMEM;
	f = file_get(s, origin, true);
	if (!f) {
		json_decref(copy);
		return -ENOMEM;
	}
	s->events = 0;
	s->load_gen++;
	r = define(s, f, kind, ns, name, copy, id);
	json_decref(copy);
	flush(s);
	return r < 0 ? r : 0;
}

int ctl_store_delete(struct ctl_store *s, const char *origin, enum ctl_kind kind, const char *ns,
		     const char *name)
{
	struct sfile *f;

	if (!origin || (unsigned)kind >= CTL_KIND__MAX || !ns || !name)
		return -EINVAL;
	f = file_find(s, origin, true);
	if (!f)
		return -ENOENT;
	for (struct def **pp = &f->defs; *pp; pp = &(*pp)->file_next) {
		struct sobj *o = (*pp)->obj;
		if (o->pub.kind == kind && streq(o->ns, ns) && streq(o->name, name)) {
			s->events = 0;
			def_remove(s, pp);
			flush(s);
			return 0;
		}
	}
	return -ENOENT;
}

const struct ctl_obj *ctl_store_get(const struct ctl_store *s, enum ctl_kind kind, const char *ns,
				    const char *name)
{
	char key[1024];

	if ((unsigned)kind >= CTL_KIND__MAX || !ns || !name)
		return NULL;
	if ((size_t)snprintf(key, sizeof(key), "%s/%s/%s", kinds[kind].kind, ns, name) >=
	    sizeof(key))
		return NULL;
	struct sobj *o = lookup(s, key);
	return o && o->live ? &o->pub : NULL;
}

const struct ctl_obj *ctl_store_first(const struct ctl_store *s, enum ctl_kind kind)
{
	if ((unsigned)kind >= CTL_KIND__MAX)
		return NULL;
	return s->kind_head[kind] ? &s->kind_head[kind]->pub : NULL;
}

const struct ctl_obj *ctl_store_next(const struct ctl_obj *o)
{
	const struct sobj *so = container_of(o, struct sobj, pub);

	return so->next ? &so->next->pub : NULL;
}

size_t ctl_store_count(const struct ctl_store *s, enum ctl_kind kind)
{
	return (unsigned)kind < CTL_KIND__MAX ? s->kind_count[kind] : 0;
}

uint64_t ctl_store_version(const struct ctl_store *s)
{
	return s->counter;
}
