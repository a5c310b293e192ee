/* SPDX-License-Identifier: Apache-2.0 */
/* istiod-lite/store.c: directory loading, rejections, inotify flow, duplicates, limits. */
#include <check.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "check_main.h"
#include "common.h"
#include "kobj.h"
#include "log.h"
#include "store.h"

/* ---- helpers ---- */

static int log_fd = -1;
static char logbuf[65536];

/* Everything logged since the last call. */
static const char *logged(void)
{
	ssize_t n = pread(log_fd, logbuf, sizeof(logbuf) - 1, 0);

	logbuf[n > 0 ? n : 0] = '\0';
	ck_assert_int_eq(ftruncate(log_fd, 0), 0);
	ck_assert_int_eq(lseek(log_fd, 0, SEEK_SET), 0);
	return logbuf;
}

static int count_lines(const char *s, const char *needle)
{
	int n = 0;

	for (const char *line = s; *line;) {
		const char *nl = strchr(line, '\n');
		size_t len = nl ? (size_t)(nl - line) : strlen(line);
		char buf[4096];
		if (len >= sizeof(buf))
			len = sizeof(buf) - 1;
		memcpy(buf, line, len);
		buf[len] = '\0';
		if (strstr(buf, needle))
			n++;
		line += len + (nl ? 1 : 0);
	}
	return n;
}

struct rec {
	int add, update, del;
	char last[256];
	uint64_t last_rv;
};

static void on_event(void *ud, enum ctl_store_event ev, const struct ctl_obj *o)
{
	struct rec *r = ud;
	static const char tag[] = { 'A', 'U', 'D' };

	if (ev == CTL_STORE_ADD)
		r->add++;
	else if (ev == CTL_STORE_UPDATE)
		r->update++;
	else
		r->del++;
	(void)snprintf(r->last, sizeof(r->last), "%c %s/%s/%s", tag[ev], ctl_kind_name(o->kind),
		       o->ns, o->name);
	r->last_rv = o->resource_version;
}

static void reset(struct rec *r)
{
	memset(r, 0, sizeof(*r));
}

static char tmpdir[64];

static void mk_tmpdir(void)
{
	(void)snprintf(tmpdir, sizeof(tmpdir), "/tmp/ctl-store-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static void rm_tmpdir(void)
{
	DIR *d = opendir(tmpdir);
	struct dirent *de;
	char p[PATH_MAX];

	if (!d)
		return;
	while ((de = readdir(d))) {
		if (streq(de->d_name, ".") || streq(de->d_name, ".."))
			continue;
		(void)snprintf(p, sizeof(p), "%s/%s", tmpdir, de->d_name);
		(void)unlink(p);
	}
	(void)closedir(d);
	(void)rmdir(tmpdir);
}

static void write_raw(const char *name, const char *content)
{
	char p[PATH_MAX];
	(void)snprintf(p, sizeof(p), "%s/%s", tmpdir, name);
	int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, content, strlen(content)), (ssize_t)strlen(content));
	ck_assert_int_eq(close(fd), 0);
}

/* How writers should update a manifest: a hidden temporary file, then rename(2). */
static void write_atomic(const char *name, const char *content)
{
	char tmp[PATH_MAX], dst[PATH_MAX], tname[NAME_MAX + 1];
	(void)snprintf(tname, sizeof(tname), ".%s.tmp", name);
	write_raw(tname, content);
	(void)snprintf(tmp, sizeof(tmp), "%s/%s", tmpdir, tname);
	(void)snprintf(dst, sizeof(dst), "%s/%s", tmpdir, name);
	ck_assert_int_eq(rename(tmp, dst), 0);
}

static void remove_file(const char *name)
{
	char p[PATH_MAX];
	(void)snprintf(p, sizeof(p), "%s/%s", tmpdir, name);
	ck_assert_int_eq(unlink(p), 0);
}

static const char pod_v1[] = "apiVersion: v1\nkind: Pod\n"
			     "metadata: {name: p1, namespace: ns1, labels: {version: v1}}\n";
static const char pod_v2[] = "apiVersion: v1\nkind: Pod\n"
			     "metadata: {name: p1, namespace: ns1, labels: {version: v2}}\n";

static void setup(void)
{
	log_fd = memfd_create("ctl-store-log", MFD_CLOEXEC);
	ck_assert_int_ge(log_fd, 0);
	ml_log_set_fd(log_fd);
	ml_log_set_level(ML_LOG_INFO);
	mk_tmpdir();
}

static void teardown(void)
{
	rm_tmpdir();
	ml_log_set_fd(STDERR_FILENO);
	(void)close(log_fd);
	log_fd = -1;
}

/* ---- tests ---- */

START_TEST(test_load_fixture_dir)
{
	struct rec r = { 0 };
	struct ctl_store *s = ctl_store_new(
		&(struct ctl_store_opts){ .dir = CTL_FIXTURES "/store", .cb = on_event, .ud = &r });

	ck_assert_ptr_nonnull(s);
	ck_assert_int_eq(ctl_store_fd(s), -1);
	ck_assert_int_eq(ctl_store_open(s), 5);
	ck_assert_int_ge(ctl_store_fd(s), 0);
	ck_assert_int_eq(r.add, 5);

	/* 10-good.yaml: a cluster-scoped Namespace and a Pod */
	const struct ctl_obj *ns = ctl_store_get(s, CTL_KIND_NAMESPACE, "", "demo");
	ck_assert_ptr_nonnull(ns);
	ck_assert_str_eq(ns->origin, "10-good.yaml");
	ck_assert_str_eq(ml_kobj_label(ns->json, "istio.io/dataplane-mode"), "ambient");
	ck_assert_ptr_nonnull(ctl_store_get(s, CTL_KIND_POD, "demo", "good"));
	/* 30-mixed.yaml: only the Service survives */
	ck_assert_ptr_nonnull(ctl_store_get(s, CTL_KIND_SERVICE, "demo", "svc"));
	ck_assert_ptr_null(ctl_store_get(s, CTL_KIND_POD, "demo", "bad-labels"));
	/* 40-list.json: a List is flattened; a namespaced object without a namespace is in
	 * "default", as kubectl apply would put it */
	ck_assert_ptr_nonnull(ctl_store_get(s, CTL_KIND_SERVICEACCOUNT, "demo", "sa1"));
	const struct ctl_obj *pa = ctl_store_get(s, CTL_KIND_PEER_AUTHN, "default", "default");
	ck_assert_ptr_nonnull(pa);
	/* hidden files and other suffixes are not manifests */
	ck_assert_ptr_null(ctl_store_get(s, CTL_KIND_POD, "default", "hidden"));
	ck_assert_ptr_null(ctl_store_get(s, CTL_KIND_POD, "default", "from-txt"));
	ck_assert_uint_eq(ctl_store_count(s, CTL_KIND_POD), 1);

	/* one line per rejection, naming the file and the object */
	const char *log = logged();
	ck_assert_int_eq(count_lines(log, "rejected"), 4);
	ck_assert_int_eq(count_lines(log, "file rejected"), 1);
	ck_assert_int_eq(count_lines(log, "20-broken.yaml"), 1);
	ck_assert_int_eq(count_lines(log, "object=Deployment/demo/deploy"), 1);
	ck_assert_int_eq(count_lines(log, "object=Pod/demo/bad-labels"), 1);
	ck_assert_int_eq(count_lines(log, "metadata.labels must map strings to strings"), 1);
	ck_assert_int_eq(count_lines(log, "unsupported apiVersion networking.istio.io/v1"), 1);
	ck_assert_int_eq(count_lines(log, "file=30-mixed.yaml"), 3);

	/* iteration */
	size_t n = 0;
	for (const struct ctl_obj *o = ctl_store_first(s, CTL_KIND_POD); o; o = ctl_store_next(o))
		n++;
	ck_assert_uint_eq(n, 1);
	ck_assert_uint_eq(ctl_store_version(s), 5);
	ctl_store_free(s);
}
END_TEST

START_TEST(test_inotify_flow)
{
	struct rec r = { 0 };
	struct ctl_store *s =
		ctl_store_new(&(struct ctl_store_opts){ .dir = tmpdir, .cb = on_event, .ud = &r });

	ck_assert_int_eq(ctl_store_open(s), 0);
	ck_assert_int_eq(ctl_store_process(s), 0);

	/* tmp + rename -> add (the temporary name itself is ignored) */
	write_atomic("pods.yaml", pod_v1);
	ck_assert_int_eq(ctl_store_process(s), 1);
	ck_assert_int_eq(r.add, 1);
	ck_assert_str_eq(r.last, "A Pod/ns1/p1");
	const struct ctl_obj *o = ctl_store_get(s, CTL_KIND_POD, "ns1", "p1");
	ck_assert_ptr_nonnull(o);
	uint64_t rv1 = o->resource_version, seq = o->seq;

	/* modify -> update, with a new resourceVersion and the same creation order */
	write_atomic("pods.yaml", pod_v2);
	ck_assert_int_eq(ctl_store_process(s), 1);
	ck_assert_int_eq(r.update, 1);
	ck_assert_str_eq(r.last, "U Pod/ns1/p1");
	o = ctl_store_get(s, CTL_KIND_POD, "ns1", "p1");
	ck_assert_uint_gt(o->resource_version, rv1);
	ck_assert_uint_eq(o->seq, seq);
	ck_assert_str_eq(ml_kobj_label(o->json, "version"), "v2");

	/* the same content again: nothing to report */
	write_atomic("pods.yaml", pod_v2);
	ck_assert_int_eq(ctl_store_process(s), 0);

	/* a broken version: logged, and the last good object stays */
	write_atomic("pods.yaml", "apiVersion: v1\nkind: Pod\nmetadata: [\n");
	ck_assert_int_eq(ctl_store_process(s), 0);
	ck_assert_int_eq(count_lines(logged(), "file rejected"), 1);
	o = ctl_store_get(s, CTL_KIND_POD, "ns1", "p1");
	ck_assert_ptr_nonnull(o);
	ck_assert_str_eq(ml_kobj_label(o->json, "version"), "v2");

	/* a plain write (IN_CLOSE_WRITE) of another file, while the first is still broken */
	write_raw("other.yml", "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: sa}\n");
	ck_assert_int_eq(ctl_store_process(s), 1);
	ck_assert_str_eq(r.last, "A ServiceAccount/default/sa");

	/* delete -> delete */
	remove_file("pods.yaml");
	ck_assert_int_eq(ctl_store_process(s), 1);
	ck_assert_int_eq(r.del, 1);
	ck_assert_str_eq(r.last, "D Pod/ns1/p1");
	ck_assert_ptr_null(ctl_store_get(s, CTL_KIND_POD, "ns1", "p1"));

	/* moving a file out of the directory is a delete too */
	char from[PATH_MAX];
	(void)snprintf(from, sizeof(from), "%s/other.yml", tmpdir);
	ck_assert_int_eq(rename(from, "/tmp/ctl-store-moved.yml"), 0);
	ck_assert_int_eq(ctl_store_process(s), 1);
	ck_assert_str_eq(r.last, "D ServiceAccount/default/sa");
	(void)unlink("/tmp/ctl-store-moved.yml");

	/* other names are ignored */
	write_atomic("README.md", pod_v1);
	write_raw("pods.yaml.swp", pod_v1);
	ck_assert_int_eq(ctl_store_process(s), 0);
	ck_assert_uint_eq(ctl_store_count(s, CTL_KIND_POD), 0);
	ctl_store_free(s);
}
END_TEST

/* The daemon's io_uring path: it reads the fd into its own buffer and feeds the store. */
START_TEST(test_feed)
{
	struct rec r = { 0 };
	struct ctl_store *s =
		ctl_store_new(&(struct ctl_store_opts){ .dir = tmpdir, .cb = on_event, .ud = &r });
	_Alignas(8) uint8_t buf[CTL_STORE_READ_MIN * 4];

	ck_assert_int_eq(ctl_store_open(s), 0);
	write_atomic("a.yaml", pod_v1);
	ssize_t n = read(ctl_store_fd(s), buf, sizeof(buf));
	ck_assert_int_gt(n, 0);
	ck_assert_int_eq(ctl_store_feed(s, buf, (size_t)n), 1);
	ck_assert_str_eq(r.last, "A Pod/ns1/p1");

	/* IN_Q_OVERFLOW: the store rescans the directory */
	write_raw("b.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: ns1}\n");
	struct inotify_event ev = { .wd = -1, .mask = IN_Q_OVERFLOW };
	ck_assert_int_eq(ctl_store_feed(s, &ev, sizeof(ev)), 1);
	ck_assert_str_eq(r.last, "A Namespace//ns1");
	/* the queued events for b.yaml change nothing any more */
	ck_assert_int_eq(ctl_store_process(s), 0);

	/* a truncated buffer is ignored rather than over-read */
	ck_assert_int_eq(ctl_store_feed(s, buf, sizeof(struct inotify_event) - 1), 0);
	ctl_store_free(s);
}
END_TEST

/* A malformed new version of one object keeps its previous version; the rest update. */
START_TEST(test_keep_previous_object)
{
	struct rec r = { 0 };
	struct ctl_store *s =
		ctl_store_new(&(struct ctl_store_opts){ .dir = tmpdir, .cb = on_event, .ud = &r });

	write_raw("two.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: a, labels: {v: '1'}}\n"
			      "---\n"
			      "apiVersion: v1\nkind: Pod\nmetadata: {name: b, labels: {v: '1'}}\n");
	ck_assert_int_eq(ctl_store_open(s), 2);
	write_atomic("two.yaml",
		     "apiVersion: v1\nkind: Pod\nmetadata: {name: a, labels: {v: 2}}\n"
		     "---\n"
		     "apiVersion: v1\nkind: Pod\nmetadata: {name: b, labels: {v: '2'}}\n");
	ck_assert_int_eq(ctl_store_process(s), 1);
	ck_assert_str_eq(r.last, "U Pod/default/b");
	ck_assert_str_eq(ml_kobj_label(ctl_store_get(s, CTL_KIND_POD, "default", "a")->json, "v"),
			 "1");
	ck_assert_int_eq(count_lines(logged(), "object=Pod/default/a"), 1);

	/* dropping the object from the file deletes it */
	write_atomic("two.yaml",
		     "apiVersion: v1\nkind: Pod\nmetadata: {name: b, labels: {v: '2'}}\n");
	ck_assert_int_eq(ctl_store_process(s), 1);
	ck_assert_str_eq(r.last, "D Pod/default/a");
	ctl_store_free(s);
}
END_TEST

/* The same object in two files: the file that sorts first wins, whatever the order of
 * events, and the other copy takes over when the winner drops it. */
START_TEST(test_duplicates)
{
	struct rec r = { 0 };
	struct ctl_store *s =
		ctl_store_new(&(struct ctl_store_opts){ .dir = tmpdir, .cb = on_event, .ud = &r });

	ck_assert_int_eq(ctl_store_open(s), 0);
	write_atomic("b.yaml", pod_v2);
	ck_assert_int_eq(ctl_store_process(s), 1);
	write_atomic("a.yaml", pod_v1);
	ck_assert_int_eq(ctl_store_process(s), 1);
	ck_assert_str_eq(r.last, "U Pod/ns1/p1");
	const struct ctl_obj *o = ctl_store_get(s, CTL_KIND_POD, "ns1", "p1");
	ck_assert_str_eq(o->origin, "a.yaml");
	ck_assert_str_eq(ml_kobj_label(o->json, "version"), "v1");
	const char *log = logged();
	ck_assert_int_eq(count_lines(log, "also defined in a.yaml, which takes precedence"), 0);

	/* b.yaml rewritten: its copy still loses, and says so */
	write_atomic("b.yaml", pod_v2);
	ck_assert_int_eq(ctl_store_process(s), 0);
	log = logged();
	ck_assert_int_eq(count_lines(log, "file=b.yaml"),
			 0); /* unchanged content: no reload noise */

	write_atomic("b.yaml", "# changed comment\n"
			       "apiVersion: v1\nkind: Pod\n"
			       "metadata: {name: p1, namespace: ns1, labels: {version: v3}}\n");
	ck_assert_int_eq(ctl_store_process(s), 0);
	ck_assert_int_eq(count_lines(logged(), "also defined in a.yaml, which takes precedence"),
			 1);

	remove_file("a.yaml");
	ck_assert_int_eq(ctl_store_process(s), 1);
	ck_assert_str_eq(r.last, "U Pod/ns1/p1");
	o = ctl_store_get(s, CTL_KIND_POD, "ns1", "p1");
	ck_assert_str_eq(o->origin, "b.yaml");
	ck_assert_str_eq(ml_kobj_label(o->json, "version"), "v3");

	/* twice in one file: the first definition is used */
	write_atomic(
		"c.yaml",
		"apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: x, labels: {n: '1'}}\n"
		"---\n"
		"apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: x, labels: {n: '2'}}\n");
	ck_assert_int_eq(ctl_store_process(s), 1);
	ck_assert_str_eq(
		ml_kobj_label(ctl_store_get(s, CTL_KIND_SERVICEACCOUNT, "default", "x")->json, "n"),
		"1");
	ck_assert_int_eq(count_lines(logged(), "defined twice in this file"), 1);
	ctl_store_free(s);
}
END_TEST

START_TEST(test_max_objects)
{
	struct rec r = { 0 };
	struct ctl_store *s = ctl_store_new(&(struct ctl_store_opts){
		.dir = tmpdir, .max_objects = 3, .cb = on_event, .ud = &r });
	char doc[4096] = "";

	for (int i = 0; i < 5; i++) {
		char one[128];
		(void)snprintf(one, sizeof(one),
			       "---\napiVersion: v1\nkind: Pod\nmetadata: {name: p%d}\n", i);
		strncat(doc, one, sizeof(doc) - strlen(doc) - 1);
	}
	write_raw("many.yaml", doc);
	ck_assert_int_eq(ctl_store_open(s), 3);
	ck_assert_uint_eq(ctl_store_count(s, CTL_KIND_POD), 3);
	ck_assert_int_eq(count_lines(logged(), "the store is full (3 objects)"), 2);

	/* room comes back when objects go */
	write_atomic("many.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: p9}\n");
	ck_assert_int_eq(ctl_store_process(s), 4); /* 3 deletes, 1 add */
	ck_assert_uint_eq(ctl_store_count(s, CTL_KIND_POD), 1);
	ctl_store_free(s);
}
END_TEST

/* Structural validation, table-driven through ctl_store_apply(). */
static const struct {
	const char *yaml;
	bool ok;
	const char *err; /* substring of the log line when rejected */
} validation[] = {
	{ "apiVersion: v1\nkind: Pod\nmetadata: {name: ok}\n", true, NULL },
	{ "apiVersion: v1\nkind: Pod\nmetadata: {namespace: x}\n", false, "metadata.name" },
	{ "apiVersion: v1\nkind: Pod\nmetadata: {name: Upper}\n", false, "RFC 1123 subdomain" },
	{ "apiVersion: v1\nkind: Pod\nmetadata: {name: a/b}\n", false, "RFC 1123 subdomain" },
	{ "apiVersion: v1\nkind: Pod\nmetadata: {name: ok, namespace: a.b}\n", false,
	  "metadata.namespace" },
	{ "apiVersion: v1\nkind: Service\nmetadata: {name: a.b}\n", false, "RFC 1123 label" },
	{ "apiVersion: v1\nkind: Pod\nmetadata: []\n", false, "metadata must be a mapping" },
	{ "apiVersion: v1\nkind: Pod\n", false, "metadata must be a mapping" },
	{ "kind: Pod\nmetadata: {name: ok}\n", false, "apiVersion and kind" },
	{ "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ok}\n", false, "unsupported kind" },
	{ "apiVersion: apps/v1\nkind: Pod\nmetadata: {name: ok}\n", false,
	  "unsupported apiVersion" },
	{ "apiVersion: v1\nkind: Pod\nmetadata: {name: ok, annotations: {a: [1]}}\n", false,
	  "metadata.annotations" },
	{ "apiVersion: v1\nkind: Pod\nmetadata: {name: ok}\nspec: [1]\n", false,
	  "spec must be a mapping" },
	{ "apiVersion: v1\nkind: Pod\nmetadata: {name: ok}\nstatus: 3\n", false,
	  "status must be a mapping" },
	{ "apiVersion: security.istio.io/v1beta1\nkind: AuthorizationPolicy\nmetadata: {name: "
	  "ok}\n",
	  true, NULL },
	{ "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: ok}\n",
	  true, NULL },
	{ "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: ok}\n", true,
	  NULL },
	{ "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: ok-abc}\n", true,
	  NULL },
	{ "apiVersion: v1\nkind: Namespace\nmetadata: {name: ok, namespace: ignored}\n", true,
	  NULL },
};

START_TEST(test_validation)
{
	struct ctl_store *s = ctl_store_new(&(struct ctl_store_opts){ .dir = tmpdir });
	char err[256];
	json_t *docs = ml_kobj_parse(validation[_i].yaml, strlen(validation[_i].yaml), "t", err,
				     sizeof(err));

	ck_assert_msg(docs, "%s", err);
	int r = ctl_store_apply(s, "api", json_array_get(docs, 0));
	const char *log = logged();
	if (validation[_i].ok) {
		ck_assert_msg(r == 0, "case %d rejected: %s", _i, log);
	} else {
		ck_assert_int_eq(r, -EINVAL);
		ck_assert_msg(strstr(log, validation[_i].err), "case %d: %s", _i, log);
		ck_assert_int_eq(count_lines(log, "file=api"), 1);
	}
	json_decref(docs);
	ctl_store_free(s);
}
END_TEST

START_TEST(test_apply_delete)
{
	struct rec r = { 0 };
	struct ctl_store *s =
		ctl_store_new(&(struct ctl_store_opts){ .dir = tmpdir, .cb = on_event, .ud = &r });
	json_t *ns = json_pack("{s:s, s:s, s:{s:s}}", "apiVersion", "v1", "kind", "Namespace",
			       "metadata", "name", "n1");

	ck_assert_int_eq(ctl_store_apply(s, "api", ns), 0);
	ck_assert_str_eq(r.last, "A Namespace//n1");
	/* the store keeps its own copy */
	json_object_set_new(json_object_get(ns, "metadata"), "labels",
			    json_pack("{s:s}", "x", "y"));
	ck_assert_ptr_null(
		ml_kobj_label(ctl_store_get(s, CTL_KIND_NAMESPACE, "", "n1")->json, "x"));
	ck_assert_int_eq(ctl_store_apply(s, "api", ns), 0);
	ck_assert_str_eq(r.last, "U Namespace//n1");
	ck_assert_int_eq(ctl_store_delete(s, "api", CTL_KIND_NAMESPACE, "", "nope"), -ENOENT);
	ck_assert_int_eq(ctl_store_delete(s, "other", CTL_KIND_NAMESPACE, "", "n1"), -ENOENT);
	ck_assert_int_eq(ctl_store_delete(s, "api", CTL_KIND_NAMESPACE, "", "n1"), 0);
	ck_assert_str_eq(r.last, "D Namespace//n1");
	ck_assert_int_eq(r.add + r.update + r.del, 3);
	/* a rescan never touches objects that did not come from files */
	ck_assert_int_eq(ctl_store_apply(s, "api", ns), 0);
	ck_assert_int_eq(ctl_store_rescan(s), 0);
	ck_assert_ptr_nonnull(ctl_store_get(s, CTL_KIND_NAMESPACE, "", "n1"));
	json_decref(ns);
	ctl_store_free(s);
}
END_TEST

START_TEST(test_dir_gone)
{
	struct rec r = { 0 };
	struct ctl_store *s =
		ctl_store_new(&(struct ctl_store_opts){ .dir = tmpdir, .cb = on_event, .ud = &r });

	write_raw("a.yaml", pod_v1);
	ck_assert_int_eq(ctl_store_open(s), 1);
	rm_tmpdir();
	/* the last good state stays; the caller learns the directory is gone */
	ck_assert_int_eq(ctl_store_process(s), -ENOENT);
	ck_assert_ptr_nonnull(ctl_store_get(s, CTL_KIND_POD, "ns1", "p1"));
	ck_assert_int_eq(r.del, 0);
	ctl_store_free(s);

	/* a directory that does not exist cannot be opened */
	s = ctl_store_new(&(struct ctl_store_opts){ .dir = "/nonexistent/ctl-store" });
	ck_assert_int_eq(ctl_store_open(s), -ENOENT);
	ck_assert_int_eq(ctl_store_process(s), -EBADF);
	ctl_store_free(s);
	mk_tmpdir(); /* for teardown */
}
END_TEST

/* Many files changed in one batch; an object moving between files is one update. */
START_TEST(test_batch_move)
{
	struct rec r = { 0 };
	struct ctl_store *s =
		ctl_store_new(&(struct ctl_store_opts){ .dir = tmpdir, .cb = on_event, .ud = &r });

	write_raw("x.yaml", pod_v1);
	ck_assert_int_eq(ctl_store_open(s), 1);
	reset(&r);
	write_atomic("y.yaml", pod_v2);
	remove_file("x.yaml");
	ck_assert_int_eq(ctl_store_process(s), 1);
	ck_assert_int_eq(r.update, 1);
	ck_assert_int_eq(r.add + r.del, 0);
	ck_assert_str_eq(ctl_store_get(s, CTL_KIND_POD, "ns1", "p1")->origin, "y.yaml");
	ctl_store_free(s);
}
END_TEST

static Suite *store_suite(void)
{
	Suite *s = suite_create("ctl-store");
	TCase *tc = tcase_create("core");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_load_fixture_dir);
	tcase_add_test(tc, test_inotify_flow);
	tcase_add_test(tc, test_feed);
	tcase_add_test(tc, test_keep_previous_object);
	tcase_add_test(tc, test_duplicates);
	tcase_add_test(tc, test_max_objects);
	tcase_add_loop_test(tc, test_validation, 0, (int)ARRAY_SIZE(validation));
	tcase_add_test(tc, test_apply_delete);
	tcase_add_test(tc, test_dir_gone);
	tcase_add_test(tc, test_batch_move);
	suite_add_tcase(s, tc);
	return s;
}

ML_CHECK_MAIN(store_suite)
