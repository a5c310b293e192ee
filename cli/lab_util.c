// SPDX-License-Identifier: Apache-2.0
/* What the lab's parts share: finding the binaries it runs, and plain HTTP/1.1 probes of the
 * daemons' admin ports (readiness, /config_dump). */
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
#include <strings.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common.h"
#include "netns.h"
#include "proc.h"
#include "util.h"

/* Bodies we read: a /config_dump of a big lab is well below this. */
#define HTTP_BODY_MAX (32u << 20)

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

int cli_lab_find_program(const char *opt, const char *opt_name, const char *env,
			 const char *build_rel, const char *name, char *buf, size_t len)
{
	const char *env_val = getenv(env), *path = getenv("PATH");
	char exe[PATH_MAX], cand[PATH_MAX];
	ssize_t n;

	if (opt || (env_val && env_val[0])) {
		const char *p = opt ? opt : env_val;

		if (!executable(p) || absolute(p, buf, len) < 0) {
			cli_err("%s %s is not an executable file", opt ? opt_name : env, p);
			return -ENOENT;
		}
		return 0;
	}
	/* Next to the build's meshlite: <build>/cli/meshlite -> <build>/<build_rel>. */
	n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n > 0) {
		exe[n] = '\0';
		if (cli_fmt(cand, sizeof(cand), "%s/../%s", dirname(exe), build_rel) >= 0 &&
		    executable(cand) && absolute(cand, buf, len) == 0)
			return 0;
	}
	for (const char *p = path; p && *p;) {
		const char *end = strchr(p, ':');
		size_t l = end ? (size_t)(end - p) : strlen(p);

		if (l && cli_fmt(cand, sizeof(cand), "%.*s/%s", (int)l, p, name) >= 0 &&
		    executable(cand) && absolute(cand, buf, len) == 0)
			return 0;
		p = end ? end + 1 : NULL;
	}
	cli_err("cannot find the %s binary (looked for ../%s next to meshlite, and in PATH): "
		"build it, or pass %s PATH, or set %s",
		name, build_rel, opt_name, env);
	return -ENOENT;
}

void cli_lab_sleep_ms(unsigned ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };

	(void)nanosleep(&ts, NULL);
}

void cli_lab_identity(const json_t *pod, char *buf, size_t len)
{
	const char *sa = cli_js(pod, "service_account");

	snprintf(buf, len, "spiffe://%s/ns/%s/sa/%s", CLI_LAB_TRUST_DOMAIN,
		 cli_js(pod, "namespace"), sa && sa[0] ? sa : "default");
}

static int wait_fd(int fd, short events, uint64_t until)
{
	struct pollfd pfd = { .fd = fd, .events = events };
	uint64_t now = ml_now_ns();
	int r;

	if (now >= until)
		return -ETIMEDOUT;
	r = poll(&pfd, 1, (int)((until - now) / 1000000ULL) + 1);
	if (r < 0)
		return errno == EINTR ? 0 : -errno;
	return r == 0 ? -ETIMEDOUT : 1;
}

/* Content-Length of a response head (RFC 9112 §6.3), -1 without one. */
static long long content_length(const char *head)
{
	for (const char *p = strstr(head, "\r\n"); p && p[2]; p = strstr(p + 2, "\r\n")) {
		if (strncasecmp(p + 2, "content-length:", 15) == 0)
			return strtoll(p + 17, NULL, 10);
	}
	return -1;
}

int cli_lab_http_get(const char *ip, int port, const char *path, unsigned timeout_ms,
		     int *ret_status, char **ret_body, char *why, size_t whylen)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	uint64_t until = ml_now_ns() + (uint64_t)timeout_ms * 1000000ULL;
	size_t got = 0, cap = 4096, sent = 0, reqlen, body_off = 0;
	char req[512], *buf = NULL, *body;
	long long clen = -1;
	int fd, r, soerr = 0, status;
	socklen_t sl = sizeof(soerr);

	if (inet_pton(AF_INET, ip, &sa.sin_addr) != 1) {
		snprintf(why, whylen, "%s is not an IPv4 address", ip);
		return -EINVAL;
	}
	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(why, whylen, "socket: %s", strerror(errno));
		return -errno;
	}
	r = connect(fd, (const struct sockaddr *)&sa, sizeof(sa));
	if (r < 0 && errno != EINPROGRESS) {
		r = -errno;
		snprintf(why, whylen, "connect: %s", strerror(errno));
		goto out;
	}
	r = wait_fd(fd, POLLOUT, until);
	if (r == 1 && (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0 || soerr))
		r = -(soerr ? soerr : errno);
	if (r < 0) {
		snprintf(why, whylen, "connect: %s", strerror(-r));
		goto out;
	}
	reqlen = (size_t)snprintf(req, sizeof(req),
				  "GET %s HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n\r\n",
				  path, ip, port);
	while (sent < reqlen) {
		ssize_t n = send(fd, req + sent, reqlen - sent, MSG_NOSIGNAL);

		if (n < 0 && errno == EAGAIN && (r = wait_fd(fd, POLLOUT, until)) >= 0)
			continue;
		if (n < 0) {
			r = -EIO;
			snprintf(why, whylen, "cannot send the request");
			goto out;
		}
		sent += (size_t)n;
	}
	buf = malloc(cap);
	if (!buf) {
		r = -ENOMEM;
		snprintf(why, whylen, "out of memory");
		goto out;
	}
	for (;;) {
		ssize_t n;

		buf[got] = '\0';
		if (!body_off && (body = strstr(buf, "\r\n\r\n"))) {
			body_off = (size_t)(body + 4 - buf);
			clen = content_length(buf);
		}
		if (body_off && clen >= 0 && got - body_off >= (size_t)clen)
			break;
		if (got + 1 >= cap) {
			char *p = cap >= HTTP_BODY_MAX ? NULL : realloc(buf, cap * 2);

			if (!p) {
				r = -EFBIG;
				snprintf(why, whylen, "the response is too large");
				goto out;
			}
			buf = p;
			cap *= 2;
		}
		n = recv(fd, buf + got, cap - 1 - got, 0);
		if (n == 0)
			break;
		if (n < 0 && errno == EAGAIN) {
			r = wait_fd(fd, POLLIN, until);
			if (r < 0) {
				snprintf(why, whylen, "no complete answer within %u ms",
					 timeout_ms);
				goto out;
			}
			continue;
		}
		if (n < 0) {
			r = -errno;
			snprintf(why, whylen, "recv: %s", strerror(errno));
			goto out;
		}
		got += (size_t)n;
	}
	buf[got] = '\0';
	/* RFC 9112 §4: status-line = HTTP-version SP status-code SP [ reason-phrase ] */
	body = strstr(buf, "\r\n\r\n");
	if (strncmp(buf, "HTTP/1.", 7) != 0 || got < 12 || buf[8] != ' ' || !body ||
	    sscanf(buf + 9, "%3d", &status) != 1) {
		buf[strcspn(buf, "\r\n")] = '\0';
		snprintf(why, whylen, "answered \"%.60s\"", got ? buf : "nothing");
		r = -EPROTO;
		goto out;
	}
	body += 4;
	memmove(buf, body, strlen(body) + 1);
	*ret_status = status;
	*ret_body = buf;
	buf = NULL;
	r = 0;
out:
	free(buf);
	(void)close(fd);
	return r;
}

/* Runs inside the namespace until ready, the deadline, or the process's exit. */
static int probe_fn(void *arg)
{
	const struct cli_lab_probe *p = arg;
	char why[160] = "no answer";

	for (;;) {
		char *body = NULL;
		int status = 0, r;

		if (!cli_proc_alive(p->pid, p->start))
			return -ESRCH;
		r = cli_lab_http_get(p->ip, p->port, p->path, 1000, &status, &body, why,
				     sizeof(why));
		free(body);
		if (r == 0 && status == 200)
			return 0;
		if (r == 0)
			snprintf(why, sizeof(why), "answered %d", status);
		if (ml_now_ns() >= p->deadline_ns)
			break;
		cli_lab_sleep_ms(100);
	}
	cli_err("%s is not ready after %d s: GET http://%s:%d%s: %s; see %s", p->what,
		CLI_LAB_READY_TIMEOUT_MS / 1000, p->ip, p->port, p->path, why, p->log);
	return -ETIMEDOUT;
}

void cli_lab_print_tail(const char *path, unsigned lines)
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

int cli_lab_wait_ready(const struct cli_lab_probe *p)
{
	int r, status;

	r = cli_netns_run(p->netns, probe_fn, (void *)p);
	if (r == -ESRCH) {
		char how[96] = "exited";

		/* It is our child: collect its status for the message. */
		if (waitpid(p->pid, &status, WNOHANG) == p->pid)
			cli_wait_str(status, how, sizeof(how));
		cli_err("%s stopped before it was ready (%s); see %s", p->what, how, p->log);
	}
	if (r < 0)
		cli_lab_print_tail(p->log, 15);
	return r;
}
