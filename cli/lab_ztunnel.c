// SPDX-License-Identifier: Apache-2.0
/* One ztunnel per lab node: its binary, its static config (docs/ztunnel-config.md), its
 * process and its readiness. */
#include "lab-internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common.h"
#include "netns.h"
#include "proc.h"
#include "util.h"

static bool executable(const char *path)
{
	return access(path, X_OK) == 0;
}

static int absolute(const char *path, char *buf, size_t len)
{
	char real[PATH_MAX];

	if (!realpath(path, real))
		return -errno;
	return cli_fmt(buf, len, "%s", real) < 0 ? -ENAMETOOLONG : 0;
}

int cli_lab_ztunnel_find(const char *opt, char *buf, size_t len)
{
	const char *env = getenv("MESHLITE_ZTUNNEL"), *path = getenv("PATH");
	char exe[PATH_MAX], cand[PATH_MAX];
	ssize_t n;

	if (opt || (env && env[0])) {
		const char *p = opt ? opt : env;

		if (!executable(p) || absolute(p, buf, len) < 0) {
			cli_err("%s %s is not an executable file",
				opt ? "--ztunnel" : "MESHLITE_ZTUNNEL", p);
			return -ENOENT;
		}
		return 0;
	}
	/* Next to the build's meshlite: <build>/cli/meshlite -> <build>/ztunnel/ztunnel. */
	n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n > 0) {
		exe[n] = '\0';
		if (cli_fmt(cand, sizeof(cand), "%s/../ztunnel/ztunnel", dirname(exe)) >= 0 &&
		    executable(cand) && absolute(cand, buf, len) == 0)
			return 0;
	}
	for (const char *p = path; p && *p;) {
		const char *end = strchr(p, ':');
		size_t l = end ? (size_t)(end - p) : strlen(p);

		if (l && cli_fmt(cand, sizeof(cand), "%.*s/ztunnel", (int)l, p) >= 0 &&
		    executable(cand) && absolute(cand, buf, len) == 0)
			return 0;
		p = end ? end + 1 : NULL;
	}
	cli_err("cannot find the ztunnel binary (looked for ../ztunnel/ztunnel next to "
		"meshlite, and in PATH): build it, or pass --ztunnel PATH, or set "
		"MESHLITE_ZTUNNEL");
	return -ENOENT;
}

/* Every listener on all addresses: the node's namespace is private to the lab, and
 * `meshlite zc` and the tests reach admin and metrics on the node IP. */
static json_t *listen_obj(void)
{
	static const struct {
		const char *key;
		int port;
	} ls[] = {
		{"outbound", CLI_ZT_PORT_OUTBOUND},   {"inbound", CLI_ZT_PORT_INBOUND},
		{"admin", CLI_ZT_PORT_ADMIN},	      {"metrics", CLI_ZT_PORT_METRICS},
		{"readiness", CLI_ZT_PORT_READINESS},
	};
	json_t *o = json_object();
	char addr[32];

	for (size_t i = 0; o && i < ARRAY_SIZE(ls); i++) {
		snprintf(addr, sizeof(addr), "0.0.0.0:%d", ls[i].port);
		if (json_object_set_new(o, ls[i].key, json_string(addr)) < 0) {
			json_decref(o);
			return NULL;
		}
	}
	return o;
}

static const char *label_or(const json_t *pod, const char *const *keys, size_t n, const char *dflt)
{
	json_t *labels = json_object_get(pod, "labels");

	for (size_t i = 0; i < n; i++) {
		const char *v = cli_js(labels, keys[i]);

		if (v && v[0])
			return v;
	}
	return dflt;
}

/* istio.workload.Workload fields, named as docs/ztunnel-config.md has them. */
static json_t *workload(const json_t *pod)
{
	static const char *const canon_name[] = {"service.istio.io/canonical-name",
						 "app.kubernetes.io/name", "app"};
	static const char *const canon_rev[] = {"service.istio.io/canonical-revision",
						"app.kubernetes.io/version", "version"};
	const char *ns = cli_js(pod, "namespace"), *name = cli_js(pod, "name");
	const char *ip = cli_js(pod, "ip");
	char uid[600];

	snprintf(uid, sizeof(uid), "%s//Pod/%s/%s", CLI_LAB_CLUSTER_ID, ns, name);
	return json_pack(
		"{s:s, s:s, s:s, s:s, s:[s*], s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "uid", uid,
		"name", name, "namespace", ns, "service_account", cli_js(pod, "service_account"),
		"addresses", ip, "node", cli_js(pod, "node"), "tunnel_protocol",
		cli_jb(pod, "enrolled") ? "HBONE" : "NONE", "workload_name", name, "workload_type",
		"pod", "canonical_name", label_or(pod, canon_name, ARRAY_SIZE(canon_name), name),
		"canonical_revision", label_or(pod, canon_rev, ARRAY_SIZE(canon_rev), "latest"),
		"cluster_id", CLI_LAB_CLUSTER_ID, "trust_domain", CLI_LAB_TRUST_DOMAIN);
}

static int certificates(struct cli_lab *lab, const char *node_name, json_t *out)
{
	char uri[600], cert[PATH_MAX], key[PATH_MAX];
	json_t *pod;
	size_t i;

	json_array_foreach(json_object_get(lab->state, "pods"), i, pod) {
		const char *ns = cli_js(pod, "namespace"), *sa = cli_js(pod, "service_account");
		json_t *c, *it;
		size_t j;
		bool dup = false;

		/* A ztunnel holds only identities of pods on its own node. */
		if (!cli_jb(pod, "enrolled") || !streq(cli_js(pod, "node"), node_name))
			continue;
		snprintf(uri, sizeof(uri), "spiffe://%s/ns/%s/sa/%s", CLI_LAB_TRUST_DOMAIN, ns, sa);
		json_array_foreach(out, j, it) {
			if (streq(cli_js(it, "identity"), uri))
				dup = true;
		}
		if (dup)
			continue;
		if (cli_lab_pki_paths(lab, ns, sa, cert, sizeof(cert), key, sizeof(key)) < 0)
			return -ENAMETOOLONG;
		c = json_pack("{s:s, s:s, s:s}", "identity", uri, "cert_chain", cert, "key", key);
		if (!c || json_array_append_new(out, c) < 0)
			return -ENOMEM;
	}
	return 0;
}

int cli_lab_ztunnel_config(struct cli_lab *lab, json_t *node)
{
	const char *name = cli_js(node, "name"), *ip = cli_js(node, "ip");
	char dir[PATH_MAX], path[PATH_MAX], root[PATH_MAX], addr[64];
	json_t *zt = json_object_get(node, "ztunnel"), *conf, *wls, *certs, *pod;
	char *text;
	size_t i;
	int r;

	if (cli_lab_path(lab, dir, sizeof(dir), "%s", name) < 0 ||
	    cli_lab_path(lab, path, sizeof(path), "%s/ztunnel.json", name) < 0 ||
	    cli_lab_path(lab, root, sizeof(root), "pki/root-cert.pem") < 0)
		return -ENAMETOOLONG;
	r = cli_mkdir_p(dir, 0755);
	if (r < 0) {
		cli_err("cannot create %s: %s", dir, strerror(-r));
		return r;
	}
	wls = json_array();
	certs = json_array();
	if (!wls || !certs) {
		json_decref(wls);
		json_decref(certs);
		return -ENOMEM;
	}
	/* Every workload of the cluster: destinations on other nodes are resolved too. */
	json_array_foreach(json_object_get(lab->state, "pods"), i, pod) {
		if (cli_js(pod, "ip") && json_array_append_new(wls, workload(pod)) < 0)
			r = -ENOMEM;
	}
	if (r == 0)
		r = certificates(lab, name, certs);
	conf = json_pack("{s:s, s:s, s:s, s:s, s:o, s:o, s:[], s:o}", "node", name, "cluster_id",
			 CLI_LAB_CLUSTER_ID, "trust_domain", CLI_LAB_TRUST_DOMAIN, "root_cert",
			 root, "listen", listen_obj(), "workloads", wls, "services", "certificates",
			 certs);
	if (!conf || r < 0) {
		json_decref(conf);
		return r < 0 ? r : -ENOMEM;
	}
	text = json_dumps(conf, JSON_INDENT(2));
	json_decref(conf);
	if (!text)
		return -ENOMEM;
	r = cli_write_file_atomic(path, text, strlen(text), 0644);
	free(text);
	if (r < 0) {
		cli_err("cannot write %s: %s", path, strerror(-r));
		return r;
	}
	if (json_object_set_new(zt, "config", json_string(path)) < 0)
		return -ENOMEM;
	snprintf(addr, sizeof(addr), "%s:%d", ip, CLI_ZT_PORT_ADMIN);
	json_object_set_new(zt, "admin", json_string(addr));
	snprintf(addr, sizeof(addr), "%s:%d", ip, CLI_ZT_PORT_METRICS);
	json_object_set_new(zt, "metrics", json_string(addr));
	snprintf(addr, sizeof(addr), "%s:%d", ip, CLI_ZT_PORT_READINESS);
	json_object_set_new(zt, "readiness", json_string(addr));
	return 0;
}

int cli_lab_ztunnel_start(struct cli_lab *lab, json_t *node)
{
	json_t *zt = json_object_get(node, "ztunnel");
	const char *bin = cli_js(zt, "binary"), *conf = cli_js(zt, "config");
	char log[PATH_MAX];
	const char *argv[] = {bin, "--config", conf, NULL};
	struct cli_proc_spec spec = {
		.netns = cli_js(node, "netns"),
		.argv = argv,
		.log_path = log,
	};
	uint64_t start;
	pid_t pid;
	int r;

	if (cli_lab_path(lab, log, sizeof(log), "%s/ztunnel.log", cli_js(node, "name")) < 0)
		return -ENAMETOOLONG;
	if (json_object_set_new(zt, "log", json_string(log)) < 0)
		return -ENOMEM;
	r = cli_proc_spawn(&spec, &pid, &start);
	if (r < 0)
		return r;
	r = cli_lab_set_proc(zt, pid, start);
	return r < 0 ? r : cli_lab_save(lab);
}

struct probe {
	const char *node;
	const char *ip;
	const char *log;
	pid_t pid;
	uint64_t start;
	uint64_t deadline_ns;
};

static void sleep_ms(unsigned ms)
{
	struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)ms * 1000000L};

	(void)nanosleep(&ts, NULL);
}

/* One GET /healthz/ready; 0 on "200", else -errno and a description in @why. */
static int probe_once(const struct sockaddr_in *sa, char *why, size_t len)
{
	char req[160], rsp[64];
	struct pollfd pfd;
	size_t got = 0;
	int fd, r, soerr = 0;
	socklen_t sl = sizeof(soerr);
	uint64_t until;

	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	r = connect(fd, (const struct sockaddr *)sa, sizeof(*sa));
	if (r < 0 && errno != EINPROGRESS) {
		r = -errno;
		snprintf(why, len, "connect: %s", strerror(errno));
		goto out;
	}
	pfd = (struct pollfd){.fd = fd, .events = POLLOUT};
	if (poll(&pfd, 1, 500) <= 0) {
		r = -ETIMEDOUT;
		snprintf(why, len, "connect timed out");
		goto out;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0 || soerr) {
		r = -(soerr ? soerr : errno);
		snprintf(why, len, "connect: %s", strerror(-r));
		goto out;
	}
	snprintf(req, sizeof(req),
		 "GET /healthz/ready HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n",
		 inet_ntoa(sa->sin_addr));
	if (send(fd, req, strlen(req), MSG_NOSIGNAL) != (ssize_t)strlen(req)) {
		r = -EIO;
		snprintf(why, len, "cannot send the request");
		goto out;
	}
	until = ml_now_ns() + 1000000000ULL;
	while (got < sizeof(rsp) - 1 && !memchr(rsp, '\n', got) && ml_now_ns() < until) {
		ssize_t n;

		pfd = (struct pollfd){.fd = fd, .events = POLLIN};
		if (poll(&pfd, 1, 200) <= 0)
			continue;
		n = recv(fd, rsp + got, sizeof(rsp) - 1 - got, 0);
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	rsp[got] = '\0';
	rsp[strcspn(rsp, "\r\n")] = '\0';
	/* RFC 9112 §4: status-line = HTTP-version SP status-code SP [ reason-phrase ] */
	if (strncmp(rsp, "HTTP/1.", 7) == 0 && strncmp(rsp + 8, " 200", 4) == 0) {
		r = 0;
	} else {
		r = -EPROTO;
		snprintf(why, len, "answered \"%s\"", got ? rsp : "nothing");
	}
out:
	(void)close(fd);
	return r;
}

/* Runs inside the node's namespace until ready, the deadline, or ztunnel's exit. */
static int probe_fn(void *arg)
{
	const struct probe *p = arg;
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(CLI_ZT_PORT_READINESS)};
	char why[160] = "no answer";

	if (inet_pton(AF_INET, p->ip, &sa.sin_addr) != 1)
		return -EINVAL;
	for (;;) {
		if (!cli_proc_alive(p->pid, p->start))
			return -ESRCH;
		if (probe_once(&sa, why, sizeof(why)) == 0)
			return 0;
		if (ml_now_ns() >= p->deadline_ns)
			break;
		sleep_ms(100);
	}
	cli_err("ztunnel on %s is not ready after %d s: GET http://%s:%d/healthz/ready: %s; "
		"see %s",
		p->node, CLI_LAB_READY_TIMEOUT_MS / 1000, p->ip, CLI_ZT_PORT_READINESS, why,
		p->log);
	return -ETIMEDOUT;
}

static void print_tail(const char *path, unsigned lines)
{
	char buf[4096], *p;
	unsigned seen = 0;
	off_t size;
	ssize_t n;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	size = lseek(fd, 0, SEEK_END);
	if (size <= 0 || lseek(fd, ML_MAX(size - (off_t)sizeof(buf) + 1, (off_t)0), SEEK_SET) < 0 ||
	    (n = read(fd, buf, sizeof(buf) - 1)) <= 0) {
		(void)close(fd);
		return;
	}
	(void)close(fd);
	buf[n] = '\0';
	p = buf + n;
	if (p[-1] == '\n')
		p--;
	while (p > buf && !(p[-1] == '\n' && ++seen == lines))
		p--;
	fprintf(stderr, "--- last lines of %s ---\n%s%s", path, p, buf[n - 1] == '\n' ? "" : "\n");
}

int cli_lab_ztunnel_wait_ready(struct cli_lab *lab, json_t *node, uint64_t deadline_ns)
{
	json_t *zt = json_object_get(node, "ztunnel");
	struct probe p = {
		.node = cli_js(node, "name"),
		.ip = cli_js(node, "ip"),
		.log = cli_js(zt, "log"),
		.pid = (pid_t)cli_ji(zt, "pid"),
		.start = (uint64_t)cli_ji(zt, "start_time"),
		.deadline_ns = deadline_ns,
	};
	int r, status;

	r = cli_netns_run(cli_js(node, "netns"), probe_fn, &p);
	if (r == -ESRCH) {
		char how[96] = "exited";

		/* It is our child: collect its status for the message. */
		if (waitpid(p.pid, &status, WNOHANG) == p.pid)
			cli_wait_str(status, how, sizeof(how));
		cli_err("ztunnel on %s stopped before it was ready (%s); see %s", p.node, how,
			p.log);
	}
	if (r < 0)
		print_tail(p.log, 15);
	return r;
}
