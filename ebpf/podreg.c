/* SPDX-License-Identifier: Apache-2.0 */
/* The node's pod registry files (see podreg.h). */
#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "podreg.h"

#define PODS_SUBDIR "pods"
#define FILE_SUFFIX ".json"
/* Two families of EBPF_CAPTURE_POD_MAX_ADDRS each. */
#define MAX_IPS (2 * EBPF_CAPTURE_POD_MAX_ADDRS)

__attribute__((format(printf, 3, 4))) static void seterr(char *err, size_t errlen, const char *fmt,
							 ...)
{
	va_list ap;

	if (!err || errlen == 0)
		return;
	va_start(ap, fmt);
	(void)vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* ---- field validators ---- */

bool ebpf_podreg_container_id_ok(const char *id)
{
	size_t n;

	/* the charset of the CNI reference library (pkg/utils ValidateContainerID) */
	if (!id || !isalnum((unsigned char)id[0]))
		return false;
	for (n = 0; id[n]; n++) {
		unsigned char c = (unsigned char)id[n];

		if (n >= sizeof(((struct ebpf_podreg *)0)->container_id) - 1)
			return false;
		if (!isalnum(c) && c != '_' && c != '.' && c != '-')
			return false;
	}
	return true;
}

bool ebpf_podreg_ifname_ok(const char *ifname)
{
	size_t n;

	if (!ifname || !*ifname || !strcmp(ifname, ".") || !strcmp(ifname, ".."))
		return false;
	for (n = 0; ifname[n]; n++) {
		unsigned char c = (unsigned char)ifname[n];

		/* IFNAMSIZ includes the NUL; the kernel's dev_valid_name() refuses these */
		if (n >= 15 || c == '/' || c == ':' || isspace(c) || c < 0x20 || c >= 0x7f)
			return false;
	}
	return true;
}

bool ebpf_podreg_k8s_name_ok(const char *s, bool subdomain)
{
	size_t n, max = subdomain ? 253 : 63;

	/* DNS-1123: lower-case alphanumerics and '-' (and '.' in a subdomain), starting and
	 * ending with an alphanumeric */
	if (!s || !*s)
		return false;
	for (n = 0; s[n]; n++) {
		unsigned char c = (unsigned char)s[n];

		if (n >= max)
			return false;
		if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))
			continue;
		if (n == 0 || !(c == '-' || (subdomain && c == '.')))
			return false;
	}
	return isalnum((unsigned char)s[n - 1]);
}

bool ebpf_podreg_uid_ok(const char *uid)
{
	size_t n;

	if (!uid || !*uid)
		return false;
	for (n = 0; uid[n]; n++) {
		unsigned char c = (unsigned char)uid[n];

		if (n >= 63 || !(isalnum(c) || c == '-'))
			return false;
	}
	return true;
}

/* "2026-11-22T05:00:00Z" or with fractional seconds: what write() produces, and RFC 3339
 * UTC in general (an agent only compares or prints it). */
static bool created_at_ok(const char *s)
{
	static const char pat[] = "dddd-dd-ddTdd:dd:dd";
	size_t n = strlen(s), i;

	if (n < sizeof(pat) || n >= sizeof(((struct ebpf_podreg *)0)->created_at))
		return false;
	for (i = 0; i < sizeof(pat) - 1; i++) {
		if (pat[i] == 'd' ? !isdigit((unsigned char)s[i]) : s[i] != pat[i])
			return false;
	}
	if (s[i] == '.') {
		for (i++; isdigit((unsigned char)s[i]); i++)
			;
	}
	return s[i] == 'Z' && s[i + 1] == '\0';
}

static bool netns_ok(const char *p)
{
	size_t n = strnlen(p, PATH_MAX);

	if (n == 0 || n >= PATH_MAX || p[0] != '/')
		return false;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)p[i] < 0x20 || p[i] == 0x7f)
			return false;
	return true;
}

/* Re-adding every address to an empty set catches the invalid, the duplicated and the
 * out-of-range counts with ebpf_pod_addrs_add()'s own rules. */
static int addrs_check(const struct ebpf_pod_addrs *a, char *err, size_t errlen)
{
	struct ebpf_pod_addrs copy = { 0 };
	char buf[INET6_ADDRSTRLEN];

	if (a->n4 > EBPF_CAPTURE_POD_MAX_ADDRS || a->n6 > EBPF_CAPTURE_POD_MAX_ADDRS) {
		seterr(err, errlen, "ips: more than %d addresses of one family",
		       EBPF_CAPTURE_POD_MAX_ADDRS);
		return -EINVAL;
	}
	if (a->n4 + a->n6 == 0) {
		seterr(err, errlen, "ips: no address");
		return -EINVAL;
	}
	for (unsigned int i = 0; i < a->n4 + a->n6; i++) {
		int r;

		if (i < a->n4)
			(void)inet_ntop(AF_INET, &a->v4[i], buf, sizeof(buf));
		else
			(void)inet_ntop(AF_INET6, &a->v6[i - a->n4], buf, sizeof(buf));
		r = ebpf_pod_addrs_add(&copy, buf);
		if (r < 0 || copy.n4 + copy.n6 != i + 1) {
			seterr(err, errlen, "ips: %s is %s", buf,
			       r < 0 ? "not an address a pod can own" : "listed twice");
			return -EINVAL;
		}
	}
	return 0;
}

int ebpf_podreg_check(const struct ebpf_podreg *e, char *err, size_t errlen)
{
	/* every string must be terminated inside its array before anything reads it */
#define TERMINATED(f) (memchr(e->f, '\0', sizeof(e->f)) != NULL)
	if (!TERMINATED(container_id) || !ebpf_podreg_container_id_ok(e->container_id)) {
		seterr(err, errlen,
		       "containerId: must be 1-128 characters of [A-Za-z0-9_.-], starting with a "
		       "letter or digit");
		return -EINVAL;
	}
	if (!TERMINATED(ifname) || !ebpf_podreg_ifname_ok(e->ifname)) {
		seterr(err, errlen, "ifName: not a valid interface name (1-15 characters)");
		return -EINVAL;
	}
	if (!TERMINATED(uid) || (e->uid[0] && !ebpf_podreg_uid_ok(e->uid))) {
		seterr(err, errlen, "podUid: must be empty or 1-63 characters of [A-Za-z0-9-]");
		return -EINVAL;
	}
	if (!TERMINATED(ns) || !ebpf_podreg_k8s_name_ok(e->ns, false)) {
		seterr(err, errlen, "podNamespace: not a DNS-1123 label");
		return -EINVAL;
	}
	if (!TERMINATED(name) || !ebpf_podreg_k8s_name_ok(e->name, true)) {
		seterr(err, errlen, "podName: not a DNS-1123 subdomain");
		return -EINVAL;
	}
	if (!TERMINATED(netns) || !netns_ok(e->netns)) {
		seterr(err, errlen, "netns: must be an absolute path");
		return -EINVAL;
	}
	if (!TERMINATED(host_if) || !ebpf_podreg_ifname_ok(e->host_if)) {
		seterr(err, errlen, "hostInterface: not a valid interface name (1-15 characters)");
		return -EINVAL;
	}
	if (e->host_ifindex <= 0) {
		seterr(err, errlen, "hostIfindex: must be a positive interface index");
		return -EINVAL;
	}
	if (!TERMINATED(created_at) || (e->created_at[0] && !created_at_ok(e->created_at))) {
		seterr(err, errlen, "createdAt: not an RFC 3339 UTC time (2006-01-02T15:04:05Z)");
		return -EINVAL;
	}
#undef TERMINATED
	return addrs_check(&e->addrs, err, errlen);
}

/* ---- paths ---- */

int ebpf_podreg_path(const char *dir, const char *container_id, const char *ifname, char *buf,
		     size_t len)
{
	int n;

	if (!dir || !*dir || !ebpf_podreg_container_id_ok(container_id) ||
	    !ebpf_podreg_ifname_ok(ifname))
		return -EINVAL;
	n = snprintf(buf, len, "%s/" PODS_SUBDIR "/%s-%s" FILE_SUFFIX, dir, container_id, ifname);
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

/* ---- write ---- */

static json_t *to_json(const struct ebpf_podreg *e)
{
	char buf[INET6_ADDRSTRLEN];
	json_t *ips = json_array(), *o;

	if (!ips)
		return NULL;
	for (unsigned int i = 0; i < e->addrs.n4 + e->addrs.n6; i++) {
		if (i < e->addrs.n4)
			(void)inet_ntop(AF_INET, &e->addrs.v4[i], buf, sizeof(buf));
		else
			(void)inet_ntop(AF_INET6, &e->addrs.v6[i - e->addrs.n4], buf, sizeof(buf));
		if (json_array_append_new(ips, json_string(buf)) < 0) {
			json_decref(ips);
			return NULL;
		}
	}
	/* "o" steals ips, also on failure */
	o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:i, s:o, s:s}", "containerId",
		      e->container_id, "ifName", e->ifname, "podUid", e->uid, "podNamespace", e->ns,
		      "podName", e->name, "netns", e->netns, "hostInterface", e->host_if,
		      "hostIfindex", e->host_ifindex, "ips", ips, "createdAt", e->created_at);
	return o;
}

static int write_all(int fd, const char *s, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, s, len);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		s += n;
		len -= (size_t)n;
	}
	return 0;
}

static int fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), r = 0;

	if (fd < 0)
		return -errno;
	if (fsync(fd) < 0)
		r = -errno;
	(void)close(fd);
	return r;
}

int ebpf_podreg_write(const char *dir, struct ebpf_podreg *e)
{
	char path[PATH_MAX], tmp[PATH_MAX], pods[PATH_MAX];
	char *text = NULL;
	json_t *o;
	int fd, r, n;

	if (!e || !dir || !*dir)
		return -EINVAL;
	if (!e->created_at[0]) {
		time_t now = time(NULL);
		struct tm tm;

		if (!gmtime_r(&now, &tm) ||
		    !strftime(e->created_at, sizeof(e->created_at), "%Y-%m-%dT%H:%M:%SZ", &tm))
			return -EOVERFLOW;
	}
	if (ebpf_podreg_check(e, NULL, 0) < 0)
		return -EINVAL;
	r = ebpf_podreg_path(dir, e->container_id, e->ifname, path, sizeof(path));
	if (r < 0)
		return r;
	n = snprintf(pods, sizeof(pods), "%s/" PODS_SUBDIR, dir);
	if (n < 0 || (size_t)n >= sizeof(pods))
		return -ENAMETOOLONG;
	n = snprintf(tmp, sizeof(tmp), "%s/.%s-%s" FILE_SUFFIX ".tmp", pods, e->container_id,
		     e->ifname);
	if (n < 0 || (size_t)n >= sizeof(tmp))
		return -ENAMETOOLONG;
	r = ebpf_mkdir_p(pods);
	if (r < 0)
		return r;

	o = to_json(e);
	if (!o)
		return -ENOMEM;
	text = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	if (!text)
		return -ENOMEM;

	/* O_TRUNC: a temporary file a crashed writer left behind is simply reused */
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0) {
		r = -errno;
		goto out_free;
	}
	r = write_all(fd, text, strlen(text));
	if (r == 0)
		r = write_all(fd, "\n", 1);
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	if (close(fd) < 0 && r == 0)
		r = -errno;
	if (r == 0 && rename(tmp, path) < 0)
		r = -errno;
	if (r < 0) {
		(void)unlink(tmp);
		goto out_free;
	}
	/* the rename itself must survive a crash too: the agent trusts what it finds */
	r = fsync_dir(pods);
out_free:
	free(text);
	return r;
}

/* ---- read ---- */

static int get_str(json_t *o, const char *key, char *dst, size_t dstlen, bool required, char *err,
		   size_t errlen)
{
	json_t *v = json_object_get(o, key);
	size_t n;

	if (!v) {
		if (!required) {
			dst[0] = '\0';
			return 0;
		}
		seterr(err, errlen, "missing \"%s\"", key);
		return -EINVAL;
	}
	if (!json_is_string(v)) {
		seterr(err, errlen, "\"%s\" is not a string", key);
		return -EINVAL;
	}
	n = json_string_length(v);
	if (n >= dstlen) {
		seterr(err, errlen, "\"%s\" is longer than %zu bytes", key, dstlen - 1);
		return -EINVAL;
	}
	memcpy(dst, json_string_value(v), n + 1);
	return 0;
}

static int from_json(json_t *o, struct ebpf_podreg *e, char *err, size_t errlen)
{
	struct {
		const char *key;
		char *dst;
		size_t len;
		bool required;
	} strs[] = {
		{ "containerId", e->container_id, sizeof(e->container_id), true },
		{ "ifName", e->ifname, sizeof(e->ifname), true },
		{ "podUid", e->uid, sizeof(e->uid), false },
		{ "podNamespace", e->ns, sizeof(e->ns), true },
		{ "podName", e->name, sizeof(e->name), true },
		{ "netns", e->netns, sizeof(e->netns), true },
		{ "hostInterface", e->host_if, sizeof(e->host_if), true },
		{ "createdAt", e->created_at, sizeof(e->created_at), false },
	};
	json_t *v, *ip;
	size_t i;

	if (!json_is_object(o)) {
		seterr(err, errlen, "not a JSON object");
		return -EINVAL;
	}
	for (i = 0; i < sizeof(strs) / sizeof(strs[0]); i++) {
		int r = get_str(o, strs[i].key, strs[i].dst, strs[i].len, strs[i].required, err,
				errlen);
		if (r < 0)
			return r;
	}
	v = json_object_get(o, "hostIfindex");
	if (!json_is_integer(v) || json_integer_value(v) <= 0 ||
	    json_integer_value(v) > INT32_MAX) {
		seterr(err, errlen, "\"hostIfindex\" is not a positive interface index");
		return -EINVAL;
	}
	e->host_ifindex = (int)json_integer_value(v);
	v = json_object_get(o, "ips");
	if (!json_is_array(v) || json_array_size(v) == 0 || json_array_size(v) > MAX_IPS) {
		seterr(err, errlen, "\"ips\" is not an array of 1 to %d addresses", MAX_IPS);
		return -EINVAL;
	}
	json_array_foreach(v, i, ip) {
		const char *s = json_string_value(ip);

		/* "IP" only: a prefix length here would be a different writer's mistake */
		if (!s || strchr(s, '/') || ebpf_pod_addrs_add(&e->addrs, s) < 0) {
			seterr(err, errlen, "\"ips\"[%zu] is not an address a pod can own", i);
			return -EINVAL;
		}
		if (e->addrs.n4 + e->addrs.n6 != i + 1) {
			seterr(err, errlen, "ips: %s is listed twice", s);
			return -EINVAL;
		}
	}
	return ebpf_podreg_check(e, err, errlen);
}

int ebpf_podreg_read(const char *path, struct ebpf_podreg *ret, char *err, size_t errlen)
{
	struct ebpf_podreg *e = NULL;
	char why[256] = "";
	json_error_t jerr;
	struct stat st;
	char *buf = NULL;
	json_t *o = NULL;
	size_t got = 0;
	int fd, r;

	if (!path || !ret)
		return -EINVAL;
	/* never follow a link planted in the directory to some other file */
	fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0) {
		r = -errno;
		if (r != -ENOENT)
			seterr(err, errlen, "%s: %s", path, strerror(-r));
		return r;
	}
	if (fstat(fd, &st) < 0) {
		r = -errno;
		seterr(err, errlen, "%s: %s", path, strerror(-r));
		goto out;
	}
	if (!S_ISREG(st.st_mode) || st.st_size > EBPF_PODREG_FILE_MAX) {
		r = -EINVAL;
		seterr(err, errlen, "%s: not a regular file of at most %d bytes", path,
		       EBPF_PODREG_FILE_MAX);
		goto out;
	}
	buf = malloc(EBPF_PODREG_FILE_MAX + 1);
	e = calloc(1, sizeof(*e));
	if (!buf || !e) {
		r = -ENOMEM;
		seterr(err, errlen, "%s: out of memory", path);
		goto out;
	}
	/* read up to the bound, whatever fstat said: the file may grow meanwhile */
	for (;;) {
		ssize_t n = read(fd, buf + got, EBPF_PODREG_FILE_MAX + 1 - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = -errno;
			seterr(err, errlen, "%s: %s", path, strerror(-r));
			goto out;
		}
		if (n == 0)
			break;
		got += (size_t)n;
		if (got > EBPF_PODREG_FILE_MAX) {
			r = -EINVAL;
			seterr(err, errlen, "%s: longer than %d bytes", path, EBPF_PODREG_FILE_MAX);
			goto out;
		}
	}
	o = json_loadb(buf, got, JSON_REJECT_DUPLICATES, &jerr);
	if (!o) {
		r = -EINVAL;
		seterr(err, errlen, "%s: invalid JSON at line %d: %s", path, jerr.line, jerr.text);
		goto out;
	}
	r = from_json(o, e, why, sizeof(why));
	if (r < 0) {
		seterr(err, errlen, "%s: %s", path, why);
		goto out;
	}
	*ret = *e;
out:
	json_decref(o);
	free(e);
	free(buf);
	(void)close(fd);
	return r;
}

/* ---- remove, foreach ---- */

int ebpf_podreg_remove(const char *dir, const char *container_id, const char *ifname)
{
	char path[PATH_MAX], pods[PATH_MAX];
	int r, n;

	r = ebpf_podreg_path(dir, container_id, ifname, path, sizeof(path));
	if (r < 0)
		return r;
	if (unlink(path) < 0)
		return errno == ENOENT ? 0 : -errno;
	n = snprintf(pods, sizeof(pods), "%s/" PODS_SUBDIR, dir);
	if (n < 0 || (size_t)n >= sizeof(pods))
		return -ENAMETOOLONG;
	return fsync_dir(pods);
}

int ebpf_podreg_foreach(const char *dir,
			int (*fn)(const char *path, const struct ebpf_podreg *e, const char *err,
				  void *ud),
			void *ud)
{
	char pods[PATH_MAX], path[PATH_MAX], why[PATH_MAX + 256];
	struct ebpf_podreg *e;
	struct dirent *de;
	DIR *d;
	int r = 0, n;

	if (!dir || !*dir || !fn)
		return -EINVAL;
	n = snprintf(pods, sizeof(pods), "%s/" PODS_SUBDIR, dir);
	if (n < 0 || (size_t)n >= sizeof(pods))
		return -ENAMETOOLONG;
	d = opendir(pods);
	if (!d)
		return errno == ENOENT ? 0 : -errno;
	e = malloc(sizeof(*e));
	if (!e) {
		(void)closedir(d);
		return -ENOMEM;
	}
	while ((de = readdir(d))) {
		size_t len = strlen(de->d_name);
		int rr;

		/* ".", "..", and writers' ".<name>.tmp" files */
		if (de->d_name[0] == '.' || len <= strlen(FILE_SUFFIX) ||
		    strcmp(de->d_name + len - strlen(FILE_SUFFIX), FILE_SUFFIX) != 0)
			continue;
		n = snprintf(path, sizeof(path), "%s/%s", pods, de->d_name);
		if (n < 0 || (size_t)n >= sizeof(path))
			continue;
		memset(e, 0, sizeof(*e));
		rr = ebpf_podreg_read(path, e, why, sizeof(why));
		if (rr == -ENOENT) /* removed since readdir() */
			continue;
		r = fn(path, rr < 0 ? NULL : e, rr < 0 ? why : NULL, ud);
		if (r != 0)
			break;
	}
	free(e);
	(void)closedir(d);
	return r;
}
