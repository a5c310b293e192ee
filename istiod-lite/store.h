/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The local object store: Kubernetes objects read from a directory of YAML/JSON files
 * (lib/kobj.h), kept by (kind, namespace, name), and kept current with inotify.
 *
 * Files. Every regular `*.yaml`, `*.yml` or `*.json` directly in the directory whose name
 * does not start with '.' is loaded; one file may hold many objects ("---" documents or a
 * `kind: List`). Writers should write a temporary file (a dot-name, or another suffix) and
 * rename(2) it into place; the store watches IN_CLOSE_WRITE|IN_MOVED_TO (load) and
 * IN_DELETE|IN_MOVED_FROM (forget), so it never reads a half-written file. A queue
 * overflow (IN_Q_OVERFLOW) makes it rescan the whole directory.
 *
 * Rejections never block anything else and never lose the last good state:
 *  - a file that fails to parse keeps all the objects it had (one log line names the file
 *    and the parser's message);
 *  - an object that is malformed (no name, labels that are not strings, ...) or of an
 *    unknown kind/apiVersion is skipped with one log line naming the file and the object;
 *    if the same file had a good version of that object, that version stays;
 *  - the same object defined in two files: the file whose name sorts first wins, the other
 *    definition is kept aside (and logged) and takes over if the winner drops it.
 * These log lines (scope "store") are the only logging istiod-lite's library does.
 *
 * Semantic checks of Istio policies are not the store's job: a structurally sound
 * AuthorizationPolicy with a bad rule is stored, and the model turns it into a fail-closed
 * policy (model.h), because dropping it here would silently remove an ALLOW or a DENY.
 *
 * Events. Every change of a stored object is reported to the callback once the batch that
 * caused it has been applied: CTL_STORE_ADD, _UPDATE (content differs; rewriting a file
 * with the same objects reports nothing) and _DELETE (the object is still readable during
 * the call). Each add/update takes the next value of a store-wide resourceVersion counter.
 *
 * Driving it: ctl_store_open() loads the directory and arms the watch. The daemon either
 * reads ctl_store_fd() itself (ml_loop_read() into a buffer of at least
 * CTL_STORE_READ_MIN bytes, then ctl_store_feed()) or polls it and calls
 * ctl_store_process(), which reads until EAGAIN. No threads; file reads happen on the
 * caller's thread (they are small and bounded: 4 MiB per file, max_objects in total).
 */
#ifndef CTL_STORE_H
#define CTL_STORE_H

#include <jansson.h>
#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/inotify.h>

enum ctl_kind {
	CTL_KIND_NAMESPACE,
	CTL_KIND_POD,
	CTL_KIND_SERVICE,
	CTL_KIND_ENDPOINTSLICE,
	CTL_KIND_SERVICEACCOUNT,
	CTL_KIND_AUTHZ_POLICY,
	CTL_KIND_PEER_AUTHN,
	CTL_KIND_GATEWAY,
	CTL_KIND_HTTPROUTE,
	CTL_KIND__MAX,
};

/* A stored object. Read-only for users; valid until the next call that changes the store. */
struct ctl_obj {
	enum ctl_kind kind;
	const char *ns; /* "" for cluster-scoped kinds (Namespace) */
	const char *name;
	const json_t *json;
	const char *origin;	   /* file name (no directory), or the ctl_store_apply() origin */
	uint64_t resource_version; /* store counter at the last add/update */
	uint64_t seq;		   /* store counter when first added: "creation" order */
};

enum ctl_store_event { CTL_STORE_ADD, CTL_STORE_UPDATE, CTL_STORE_DELETE };

typedef void (*ctl_store_fn)(void *ud, enum ctl_store_event ev, const struct ctl_obj *obj);

#define CTL_STORE_MAX_OBJECTS 65536
/* Smallest buffer ctl_store_feed() can be given: one inotify event with the longest name. */
#define CTL_STORE_READ_MIN (sizeof(struct inotify_event) + NAME_MAX + 1)

struct ctl_store_opts {
	const char *dir;
	size_t max_objects; /* object definitions across all files; 0 = CTL_STORE_MAX_OBJECTS */
	ctl_store_fn cb;    /* may be NULL */
	void *ud;
};

struct ctl_store;

struct ctl_store *ctl_store_new(const struct ctl_store_opts *opts);
struct ctl_store *ctl_store_free(struct ctl_store *s);
/* Arm the inotify watch, then load every file. -errno if the directory cannot be watched. */
int ctl_store_open(struct ctl_store *s);
/* The inotify descriptor (non-blocking), -1 before ctl_store_open(). */
int ctl_store_fd(const struct ctl_store *s);
/* Read and apply every queued inotify event. Returns the number of object events reported
 * (>= 0), or -errno: -ENOENT when the watched directory itself went away; nothing from
 * that batch is applied (an `rm -rf` deletes the files first) and the objects loaded so far
 * are kept, for the caller to decide. */
int ctl_store_process(struct ctl_store *s);
/* The same for @len bytes of events the caller read from ctl_store_fd(). */
int ctl_store_feed(struct ctl_store *s, const void *buf, size_t len);
/* Reload every file (and forget vanished ones). */
int ctl_store_rescan(struct ctl_store *s);

/* Objects from another source (the Kubernetes API later, tests now), validated like file
 * objects; @origin competes with file names for duplicates. -EINVAL (logged) if rejected. */
int ctl_store_apply(struct ctl_store *s, const char *origin, const json_t *obj);
int ctl_store_delete(struct ctl_store *s, const char *origin, enum ctl_kind kind, const char *ns,
		     const char *name);

const struct ctl_obj *ctl_store_get(const struct ctl_store *s, enum ctl_kind kind, const char *ns,
				    const char *name);
/* Iterate one kind, in insertion order: for (o = first(s, k); o; o = next(o)) */
const struct ctl_obj *ctl_store_first(const struct ctl_store *s, enum ctl_kind kind);
const struct ctl_obj *ctl_store_next(const struct ctl_obj *o);
size_t ctl_store_count(const struct ctl_store *s, enum ctl_kind kind);
/* The resourceVersion counter: changes whenever any object does. */
uint64_t ctl_store_version(const struct ctl_store *s);

const char *ctl_kind_name(enum ctl_kind kind);

#endif
