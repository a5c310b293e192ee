/* SPDX-License-Identifier: Apache-2.0 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <openssl/mem.h>

#include "common.h"
#include "kube_client.h"
#include "kube_http.h"
#include "kube_tls.h"
#include "log.h"

#define SCOPE "kube"
#define TARGET_MAX 8192
#define REQ_MAX (TARGET_MAX + CTL_KUBE_TOKEN_MAX + 1024)
#define CA_FILE_MAX (1024 * 1024)
#define HOST_MAX 253
#define PLAIN_CHUNK 16384
#define TICK_NS 1000000000ull

struct watcher;

/* One HTTPS request/response. Outlives its watcher's interest: freed when its socket is. */
struct kconn {
	struct watcher *w; /* NULL once detached (finished, or the client went away) */
	struct ml_sock *sock;
	struct ctl_ktls *tls;
	struct ml_buf req;
	bool established, sent;
	struct ctl_http_rsp rsp;
};

struct watcher {
	struct ctl_kube_client *c; /* NULL once orphaned */
	struct ctl_kube_refl *r;
	struct kconn *conn;
	struct ml_timer next; /* the next request (back-off); never re-armed while busy */
	uint64_t deadline;    /* loop time by which the response must be complete */
	char target[TARGET_MAX];
};

struct ctl_kube_client {
	struct ml_loop *l;
	struct ctl_ktls_ctx *tls;
	char host[HOST_MAX + 1]; /* as dialled and verified (no brackets) */
	char host_hdr[HOST_MAX + 16];
	struct sockaddr_storage addr;
	socklen_t addrlen;
	char *token_file;
	struct watcher **w;
	size_t nw;
	/* One periodic timer checks every request's deadline: stopping and re-arming a
	 * per-request timer would race its own cancellation. */
	struct ml_timer tick;
	bool stopping, synced, orphan;
	void (*on_synced)(void *ud);
	void *ud;
};

/* ---- configuration ---- */

int ctl_kube_read_token(const char *path, char *out, size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;
	size_t got = 0, start = 0;

	if (fd < 0)
		return -errno;
	while (got < len - 1 && (n = read(fd, out + got, len - 1 - got)) != 0) {
		if (n < 0) {
			if (errno == EINTR)
				continue;
			int e = -errno;
			(void)close(fd);
			OPENSSL_cleanse(out, len);
			return e;
		}
		got += (size_t)n;
	}
	/* a file that fills the buffer is too large to be a token */
	char extra;
	bool more = got == len - 1 && read(fd, &extra, 1) > 0;
	(void)close(fd);
	if (more) {
		OPENSSL_cleanse(out, len);
		return -EFBIG;
	}
	while (got && (out[got - 1] == '\n' || out[got - 1] == '\r' || out[got - 1] == ' ' ||
		       out[got - 1] == '\t'))
		got--;
	while (start < got && (out[start] == ' ' || out[start] == '\t' || out[start] == '\n'))
		start++;
	for (size_t i = start; i < got; i++) {
		if ((uint8_t)out[i] <= 0x20 || (uint8_t)out[i] >= 0x7f) {
			OPENSSL_cleanse(out, len);
			return -EINVAL;
		}
	}
	memmove(out, out + start, got - start);
	out[got - start] = '\0';
	return got > start ? 0 : -EINVAL;
}

int ctl_kube_incluster_server(char *out, size_t len, char *err, size_t errlen)
{
	const char *host = getenv("KUBERNETES_SERVICE_HOST");
	const char *port = getenv("KUBERNETES_SERVICE_PORT");
	int n;

	if (!host || !*host || !port || !*port) {
		(void)snprintf(
			err, errlen,
			"--kube: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not "
			"set (not running in a pod?); use --kube-api URL instead");
		return -ENOENT;
	}
	n = snprintf(out, len, strchr(host, ':') ? "https://[%s]:%s" : "https://%s:%s", host, port);
	if (n < 0 || (size_t)n >= len) {
		(void)snprintf(err, errlen, "--kube: KUBERNETES_SERVICE_HOST is too long");
		return -ENAMETOOLONG;
	}
	return 0;
}

static int read_file(const char *path, size_t max, char **ret)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	char *buf;
	size_t got = 0;

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0 || (size_t)st.st_size > max) {
		int e = (size_t)st.st_size > max ? -EFBIG : -errno;
		(void)close(fd);
		return e;
	}
	buf = malloc((size_t)st.st_size + 1);
	if (!buf) {
		(void)close(fd);
		return -ENOMEM;
	}
	while (got < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	(void)close(fd);
	buf[got] = '\0';
	*ret = buf;
	return 0;
}

/* "https://host[:port][/]" -> host (brackets removed), port. */
static int parse_url(struct ctl_kube_client *c, const char *url, char *err, size_t errlen)
{
	const char *h, *hend, *p;
	char port[8] = "443";
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *ai = NULL;
	size_t hlen;
	int e;

	if (strncmp(url, "https://", 8) != 0) {
		(void)snprintf(err, errlen, "--kube-api %s: only https:// URLs are supported", url);
		return -EINVAL;
	}
	h = url + 8;
	if (*h == '[') {
		hend = strchr(++h, ']');
		if (!hend) {
			(void)snprintf(err, errlen, "--kube-api %s: unterminated [IPv6]", url);
			return -EINVAL;
		}
		p = hend + 1;
	} else {
		hend = h + strcspn(h, ":/");
		p = hend;
	}
	hlen = (size_t)(hend - h);
	if (hlen == 0 || hlen > HOST_MAX) {
		(void)snprintf(err, errlen, "--kube-api %s: missing or too long host", url);
		return -EINVAL;
	}
	memcpy(c->host, h, hlen);
	c->host[hlen] = '\0';
	if (*p == ':') {
		size_t n = strcspn(p + 1, "/");
		char *end;
		long v;
		if (n == 0 || n >= sizeof(port)) {
			(void)snprintf(err, errlen, "--kube-api %s: invalid port", url);
			return -EINVAL;
		}
		memcpy(port, p + 1, n);
		port[n] = '\0';
		v = strtol(port, &end, 10);
		if (*end || v < 1 || v > 65535) {
			(void)snprintf(err, errlen, "--kube-api %s: invalid port", url);
			return -EINVAL;
		}
		p += 1 + n;
	}
	if (*p && !streq(p, "/")) {
		(void)snprintf(err, errlen, "--kube-api %s: a path prefix is not supported", url);
		return -EINVAL;
	}
	(void)snprintf(c->host_hdr, sizeof(c->host_hdr), strchr(c->host, ':') ? "[%s]:%s" : "%s:%s",
		       c->host, port);
	/* Once, before the loop runs: getaddrinfo blocks (in a pod the host is an IP). */
	e = getaddrinfo(c->host, port, &hints, &ai);
	if (e != 0 || !ai) {
		(void)snprintf(err, errlen, "--kube-api %s: cannot resolve %s: %s", url, c->host,
			       gai_strerror(e));
		return -EHOSTUNREACH;
	}
	memcpy(&c->addr, ai->ai_addr, ai->ai_addrlen);
	c->addrlen = ai->ai_addrlen;
	freeaddrinfo(ai);
	return 0;
}

/* ---- connections ---- */

static void start_request(struct watcher *w);
static void finish(struct watcher *w, int err, const char *why);

static void kconn_free(struct kconn *k)
{
	ctl_ktls_free(k->tls);
	if (k->req.data)
		OPENSSL_cleanse(k->req.data, k->req.cap); /* it holds the bearer token */
	ml_buf_release(&k->req);
	free(k);
}

static void flush_tls(struct kconn *k)
{
	if (!k->sock || ml_sock_closing(k->sock))
		return;
	while (ctl_ktls_pending(k->tls) && ml_sock_tx_room(k->sock) &&
	       ctl_ktls_drain(k->tls, ml_sock_txbuf(k->sock)))
		;
	ml_sock_flush(k->sock);
}

static int on_head(void *ud, int status)
{
	struct watcher *w = ud;

	ctl_kube_refl_status(w->r, status);
	return 0;
}

static int on_body(void *ud, const uint8_t *p, size_t len)
{
	struct watcher *w = ud;
	int r = ctl_kube_refl_body(w->r, p, len);

	return r == 1 ? -ECANCELED : r; /* -ECANCELED: the reflector has what it needs */
}

/* Returns false once the connection is finished. */
static bool read_plain(struct kconn *k)
{
	uint8_t plain[PLAIN_CHUNK];

	for (;;) {
		int n = ctl_ktls_read(k->tls, plain, sizeof(plain));
		if (n == 0)
			return true;
		if (n == -EPIPE) {
			/* close_notify: the response must be complete by now */
			int e = ctl_http_rsp_eof(&k->rsp);
			finish(k->w, e, e ? "connection closed before the response ended" : "");
			return false;
		}
		if (n < 0) {
			finish(k->w, n, ctl_ktls_error(k->tls));
			return false;
		}
		int e = ctl_http_rsp_feed(&k->rsp, plain, (size_t)n, on_head, on_body, k->w);
		if (e == -ECANCELED) {
			finish(k->w, 0, "");
			return false;
		}
		if (e < 0) {
			char why[200];
			(void)snprintf(why, sizeof(why), "bad HTTP response: %s",
				       e == -EBADMSG ? ctl_http_rsp_error(&k->rsp) : strerror(-e));
			finish(k->w, e, why);
			return false;
		}
		if (ctl_http_rsp_done(&k->rsp)) {
			finish(k->w, 0, "");
			return false;
		}
	}
}

static void sock_readable(struct ml_sock *s)
{
	struct kconn *k = ml_sock_ud(s);
	const uint8_t *p;
	size_t n;

	while (k->w && (n = ml_sock_peek(s, &p)) > 0) {
		size_t take = ML_MIN(n, (size_t)CTL_KTLS_MAX_IN / 2);
		int r = ctl_ktls_feed(k->tls, p, take);
		if (r < 0 && r != -ENOBUFS) {
			finish(k->w, r, "TLS input error");
			return;
		}
		ml_sock_consume(s, r == -ENOBUFS ? 0 : take);
		if (!k->established) {
			r = ctl_ktls_handshake(k->tls);
			flush_tls(k);
			if (r < 0) {
				char why[400];
				(void)snprintf(why, sizeof(why), "TLS handshake with %s: %s",
					       k->w->c->host, ctl_ktls_error(k->tls));
				finish(k->w, r, why);
				return;
			}
			if (r == 0)
				continue;
			k->established = true;
			if (ctl_ktls_write(k->tls, ml_buf_head(&k->req), ml_buf_used(&k->req)) <
			    0) {
				finish(k->w, -EPROTO, ctl_ktls_error(k->tls));
				return;
			}
			OPENSSL_cleanse(k->req.data, k->req.cap);
			ml_buf_reset(&k->req);
			k->sent = true;
			flush_tls(k);
		}
		if (!read_plain(k))
			return;
	}
	if (k->w && ml_sock_rx_eof(s)) {
		int e = k->sent ? ctl_http_rsp_eof(&k->rsp) : -ECONNRESET;
		finish(k->w, e ? (e == -EPIPE ? -ECONNRESET : e) : 0,
		       e ? "connection closed before the response ended" : "");
	}
}

static void sock_writable(struct ml_sock *s)
{
	flush_tls(ml_sock_ud(s));
}

static void sock_connected(struct ml_sock *s, int res)
{
	struct kconn *k = ml_sock_ud(s);
	int one = 1;

	if (!k->w)
		return;
	if (res < 0) {
		char why[300];
		(void)snprintf(why, sizeof(why), "connect to %s: %s", k->w->c->host_hdr,
			       strerror(-res));
		finish(k->w, res, why);
		return;
	}
	(void)setsockopt(ml_sock_fd(s), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	ml_sock_start(s);
	if (ctl_ktls_handshake(k->tls) < 0) {
		finish(k->w, -EPROTO, ctl_ktls_error(k->tls));
		return;
	}
	flush_tls(k);
}

static void sock_error(struct ml_sock *s, int err)
{
	struct kconn *k = ml_sock_ud(s);

	if (k->w)
		finish(k->w, err, strerror(-err));
}

static void sock_closed(struct ml_sock *s)
{
	struct kconn *k = ml_sock_ud(s);

	k->sock = NULL;
	if (k->w) {
		/* closed under us (cannot happen: we close only detached connections) */
		k->w->conn = NULL;
		finish(k->w, -ECONNRESET, "connection closed");
	}
	kconn_free(k);
}

static const struct ml_sock_cbs sock_cbs = {
	.on_readable = sock_readable,
	.on_writable = sock_writable,
	.on_connected = sock_connected,
	.on_error = sock_error,
	.on_closed = sock_closed,
};

/* ---- the per-kind request cycle ---- */

static void watcher_maybe_free(struct watcher *w)
{
	if (!w->c && !w->conn && !w->next.op.busy) {
		ctl_kube_refl_free(w->r);
		free(w);
	}
}

static void timer_stopped(struct ml_timer *t)
{
	watcher_maybe_free(t->ud);
}

static void client_release(struct ctl_kube_client *c)
{
	free(c->w);
	ctl_ktls_ctx_free(c->tls);
	free(c->token_file);
	free(c);
}

static void tick_stopped(struct ml_timer *t)
{
	struct ctl_kube_client *c = t->ud;

	if (c->orphan && !c->tick.op.busy)
		client_release(c);
}

static void check_synced(struct ctl_kube_client *c)
{
	if (c->synced)
		return;
	for (size_t i = 0; i < c->nw; i++)
		if (!ctl_kube_refl_synced(c->w[i]->r))
			return;
	c->synced = true;
	ml_log(ML_LOG_INFO, SCOPE, "every resource listed; watching", ML_LU("resources", c->nw));
	if (c->on_synced)
		c->on_synced(c->ud);
}

/* The response is over (or never came): close, and let the reflector pick the delay. */
static void finish(struct watcher *w, int err, const char *why)
{
	struct kconn *k = w->conn;
	uint64_t delay;

	if (k) {
		k->w = NULL;
		w->conn = NULL;
		if (k->sock)
			ml_sock_close(k->sock, true);
		else
			kconn_free(k);
	}
	delay = ctl_kube_refl_done(w->r, err, why);
	check_synced(w->c);
	if (w->c->stopping)
		return;
	ml_timer_start(w->c->l, &w->next, delay ? delay : 1, 0);
}

static void next_fire(struct ml_timer *t)
{
	struct watcher *w = t->ud;

	if (w->c && !w->c->stopping)
		start_request(w);
}

static void tick_fire(struct ml_timer *t)
{
	struct ctl_kube_client *c = t->ud;
	uint64_t now = ml_loop_now(c->l);
	char why[96];

	for (size_t i = 0; i < c->nw && !c->stopping; i++) {
		struct watcher *w = c->w[i];
		if (!w->conn || now < w->deadline)
			continue;
		(void)snprintf(why, sizeof(why), "no complete response within %llu s",
			       (unsigned long long)(ctl_kube_refl_deadline_ns(w->r) / TICK_NS));
		finish(w, -ETIMEDOUT, why);
	}
}

static void start_request(struct watcher *w)
{
	struct ctl_kube_client *c = w->c;
	char token[CTL_KUBE_TOKEN_MAX + 1] = "";
	struct kconn *k;
	char why[300];
	int fd, e;

	e = ctl_kube_refl_request(w->r, w->target, sizeof(w->target));
	if (e < 0) {
		finish(w, e, "request target too long");
		return;
	}
	/* Again for every request: projected tokens are rotated by the kubelet. */
	if (c->token_file && (e = ctl_kube_read_token(c->token_file, token, sizeof(token))) < 0) {
		(void)snprintf(why, sizeof(why), "cannot read the token file %s: %s", c->token_file,
			       e == -EINVAL ? "empty or not a token" : strerror(-e));
		finish(w, e, why);
		return;
	}
	k = calloc(1, sizeof(*k));
	if (!k) {
		OPENSSL_cleanse(token, sizeof(token));
		finish(w, -ENOMEM, "out of memory");
		return;
	}
	ml_buf_init(&k->req, REQ_MAX);
	ctl_http_rsp_init(&k->rsp);
	e = ctl_http_request(&k->req, "GET", c->host_hdr, w->target, token, NULL, 0);
	OPENSSL_cleanse(token, sizeof(token));
	k->tls = ctl_ktls_new(c->tls, c->host);
	fd = socket(c->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (e < 0 || !k->tls || fd < 0) {
		e = e < 0 ? e : fd < 0 ? -errno : -ENOMEM;
		if (fd >= 0)
			(void)close(fd);
		kconn_free(k);
		finish(w, e,
		       e == -EINVAL ? "the token holds characters not allowed in a header"
				    : strerror(-e));
		return;
	}
	k->sock = ml_sock_new(c->l, fd, &sock_cbs, k);
	if (!k->sock) {
		(void)close(fd);
		kconn_free(k);
		finish(w, -ENOMEM, "out of memory");
		return;
	}
	k->w = w;
	w->conn = k;
	w->deadline = ml_loop_now(c->l) + ctl_kube_refl_deadline_ns(w->r);
	e = ml_sock_connect(k->sock, (const struct sockaddr *)&c->addr, c->addrlen);
	if (e < 0) {
		(void)snprintf(why, sizeof(why), "connect to %s: %s", c->host_hdr, strerror(-e));
		finish(w, e, why);
	}
}

/* ---- public ---- */

struct ctl_kube_client *ctl_kube_client_new(const struct ctl_kube_client_opts *o, char *err,
					    size_t errlen)
{
	struct ctl_kube_client *c = calloc(1, sizeof(*c));
	char *ca = NULL;
	char tls_err[256];
	size_t nk = o->kinds ? o->nkinds : CTL_KIND__MAX;
	int e;

	if (!c) {
		(void)snprintf(err, errlen, "out of memory");
		return NULL;
	}
	c->l = o->loop;
	c->tick.fn = tick_fire;
	c->tick.on_stop = tick_stopped;
	c->tick.ud = c;
	c->on_synced = o->on_synced;
	c->ud = o->ud;
	if (parse_url(c, o->server, err, errlen) < 0)
		goto fail;
	e = read_file(o->ca_file, CA_FILE_MAX, &ca);
	if (e < 0) {
		(void)snprintf(err, errlen, "cannot read the CA file %s: %s", o->ca_file,
			       strerror(-e));
		goto fail;
	}
	c->tls = ctl_ktls_ctx_new(ca, tls_err, sizeof(tls_err));
	free(ca);
	if (!c->tls) {
		(void)snprintf(err, errlen, "CA file %s: %s", o->ca_file, tls_err);
		goto fail;
	}
	if (o->token_file) {
		char token[CTL_KUBE_TOKEN_MAX + 1];
		/* Checked now so a wrong path is a start-up error, not a retry loop. */
		e = ctl_kube_read_token(o->token_file, token, sizeof(token));
		OPENSSL_cleanse(token, sizeof(token));
		if (e < 0) {
			(void)snprintf(err, errlen, "cannot read the token file %s: %s",
				       o->token_file,
				       e == -EINVAL ? "empty or not a token" : strerror(-e));
			goto fail;
		}
		if (!(c->token_file = strdup(o->token_file)))
			goto nomem;
	}
	c->w = calloc(nk, sizeof(*c->w));
	if (!c->w)
		goto nomem;
	for (size_t i = 0; i < nk; i++) {
		struct watcher *w = calloc(1, sizeof(*w));
		enum ctl_kind kind = o->kinds ? o->kinds[i] : (enum ctl_kind)i;
		if (!w)
			goto nomem;
		c->w[c->nw++] = w;
		w->c = c;
		w->r = ctl_kube_refl_new(kind, &o->refl);
		if (!w->r)
			goto nomem;
		w->next.fn = next_fire;
		w->next.on_stop = timer_stopped;
		w->next.ud = w;
	}
	return c;
nomem:
	(void)snprintf(err, errlen, "out of memory");
fail:
	ctl_kube_client_free(c);
	return NULL;
}

void ctl_kube_client_start(struct ctl_kube_client *c)
{
	ml_timer_start(c->l, &c->tick, TICK_NS, TICK_NS);
	for (size_t i = 0; i < c->nw; i++)
		start_request(c->w[i]);
}

void ctl_kube_client_stop(struct ctl_kube_client *c)
{
	if (!c || c->stopping)
		return;
	c->stopping = true;
	for (size_t i = 0; i < c->nw; i++) {
		struct watcher *w = c->w[i];
		struct kconn *k = w->conn;
		if (k) {
			k->w = NULL;
			w->conn = NULL;
			if (k->sock)
				ml_sock_close(k->sock, true);
			else
				kconn_free(k);
		}
		if (w->next.op.busy)
			ml_timer_stop(c->l, &w->next);
	}
	if (c->tick.op.busy)
		ml_timer_stop(c->l, &c->tick);
}

struct ctl_kube_client *ctl_kube_client_free(struct ctl_kube_client *c)
{
	if (!c)
		return NULL;
	ctl_kube_client_stop(c);
	for (size_t i = 0; i < c->nw; i++) {
		/* a timer whose cancellation has not completed frees it later */
		c->w[i]->c = NULL;
		watcher_maybe_free(c->w[i]);
	}
	/* watchers are on their own now; the tick timer may still hold @c */
	c->nw = 0;
	c->orphan = true;
	if (!c->tick.op.busy)
		client_release(c);
	return NULL;
}

bool ctl_kube_client_synced(const struct ctl_kube_client *c)
{
	return c->synced;
}

void ctl_kube_client_stats(const struct ctl_kube_client *c, struct ctl_kube_stats *ret)
{
	*ret = (struct ctl_kube_stats){ 0 };
	for (size_t i = 0; i < c->nw; i++) {
		struct ctl_kube_stats s;
		ctl_kube_refl_stats(c->w[i]->r, &s);
		ret->lists += s.lists;
		ret->list_pages += s.list_pages;
		ret->relists += s.relists;
		ret->watches += s.watches;
		ret->added += s.added;
		ret->modified += s.modified;
		ret->deleted += s.deleted;
		ret->bookmarks += s.bookmarks;
		ret->errors += s.errors;
		ret->vanished += s.vanished;
		ret->rejected += s.rejected;
		ret->failures += s.failures;
		ret->initial_events_end += s.initial_events_end;
	}
}
