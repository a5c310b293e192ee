/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ml-testpeer: the client and server ends of the lab integration tests. Everything it sends
 * is a deterministic pseudo-random stream (xorshift from a seed) so both ends can check
 * every byte with SHA-256 without storing it.
 *
 *   ml-testpeer echo-server PORT           echo every connection back, half-close after EOF
 *   ml-testpeer sha-server PORT            read to EOF, answer "<bytes> <sha256>\n", close
 *   ml-testpeer push-server PORT BYTES     send BYTES (seed 7) and half-close, then read to EOF
 *                                          and print "<bytes> <sha256>" of what came in
 *   ml-testpeer send ADDR BYTES [SEED]     stream BYTES to a sha-server, half-close, check the
 *                                          answer; prints MB/s
 *   ml-testpeer pull ADDR BYTES SENDBYTES  read BYTES from a push-server until its EOF, check
 *                                          them, then send SENDBYTES (seed 9) and half-close
 *   ml-testpeer echo-check ADDR CONNS PARALLEL BYTES
 *                                          CONNS connections (PARALLEL at a time) through an
 *                                          echo-server, each with its own seed; all must match
 *   ml-testpeer marker ADDR STRING COUNT  send STRING COUNT times to a sha-server, check the
 *                                          answer (for "no plaintext on the wire" captures)
 *   ml-testpeer http-server PORT SIZE      keep-alive HTTP/1.1 server answering every request
 *                                          with SIZE bytes (load-generator target for wrk)
 *   ml-testpeer probe ADDR                 connect, send a line, report what happens:
 *                                          "refused", "reset", "eof" or "data"
 *   ml-testpeer peer-server PORT           answer every connection with the address it
 *                                          came from ("IP:PORT\n"), then close
 *   ml-testpeer whoami ADDR                connect to a peer-server and print its answer
 *   ml-testpeer rate ADDR SECONDS WORKERS [SOCKS]
 *                                          one HTTP/1.1 request per connection against an
 *                                          http-server for SECONDS with WORKERS threads
 *                                          (through the SOCKS5 proxy SOCKS if given); prints
 *                                          "conns_per_s N connect_p50_us N connect_p99_us N"
 *   ml-testpeer latency ADDR COUNT [SOCKS] COUNT requests one after the other on one
 *                                          keep-alive connection; prints
 *                                          "p50_us N p90_us N p99_us N"
 * Exit status 0 = success/match, 1 = mismatch or error (with a message on stderr).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

struct stream {
	uint64_t s;
};

static void stream_fill(struct stream *st, uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if ((i & 7) == 0) {
			st->s ^= st->s << 13;
			st->s ^= st->s >> 7;
			st->s ^= st->s << 17;
		}
		p[i] = (uint8_t)(st->s >> ((i & 7) * 8));
	}
}

static int parse_addr(const char *s, struct sockaddr_in *sa)
{
	char host[64];
	const char *c = strrchr(s, ':');
	if (!c || (size_t)(c - s) >= sizeof(host))
		return -1;
	memcpy(host, s, (size_t)(c - s));
	host[c - s] = 0;
	memset(sa, 0, sizeof(*sa));
	sa->sin_family = AF_INET;
	sa->sin_port = htons((uint16_t)atoi(c + 1));
	return inet_pton(AF_INET, host, &sa->sin_addr) == 1 ? 0 : -1;
}

static int dial(const char *addr)
{
	struct sockaddr_in sa;
	if (parse_addr(addr, &sa) < 0) {
		fprintf(stderr, "bad address %s\n", addr);
		return -1;
	}
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct timeval tv = { .tv_sec = 30 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

static int listen_on(int port)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 4096) < 0) {
		perror("listen");
		exit(1);
	}
	return fd;
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
	while (n) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static void hex(const uint8_t *d, char *out)
{
	for (int i = 0; i < SHA256_DIGEST_LENGTH; i++)
		snprintf(out + 2 * i, 3, "%02x", d[i]);
}

/* Expected SHA-256 of @n bytes of the stream with @seed. */
static void stream_sha(uint64_t seed, uint64_t n, char *out)
{
	struct stream st = { seed };
	SHA256_CTX c;
	uint8_t buf[65536], d[SHA256_DIGEST_LENGTH];
	SHA256_Init(&c);
	while (n) {
		size_t k = n < sizeof(buf) ? (size_t)n : sizeof(buf);
		stream_fill(&st, buf, k);
		SHA256_Update(&c, buf, k);
		n -= k;
	}
	SHA256_Final(d, &c);
	hex(d, out);
}

static int send_stream(int fd, uint64_t seed, uint64_t n)
{
	struct stream st = { seed };
	uint8_t buf[65536];
	while (n) {
		size_t k = n < sizeof(buf) ? (size_t)n : sizeof(buf);
		stream_fill(&st, buf, k);
		if (write_all(fd, buf, k) < 0)
			return -1;
		n -= k;
	}
	return 0;
}

/* Read to EOF, hashing; returns bytes or -1. */
static int64_t read_sha(int fd, char *out)
{
	SHA256_CTX c;
	uint8_t buf[65536], d[SHA256_DIGEST_LENGTH];
	int64_t total = 0;
	SHA256_Init(&c);
	for (;;) {
		ssize_t r = recv(fd, buf, sizeof(buf), 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -1;
		if (r == 0)
			break;
		SHA256_Update(&c, buf, (size_t)r);
		total += r;
	}
	SHA256_Final(d, &c);
	hex(d, out);
	return total;
}

struct srv_arg {
	int fd;
	int mode;
	uint64_t bytes;
};

/* Keep-alive HTTP/1.1: answer each request head (up to CRLFCRLF) with a fixed body. */
static void serve_http(int fd, uint64_t size)
{
	char head[128], buf[16384];
	uint8_t *body = malloc(size ? size : 1);
	memset(body, 'x', size);
	int hl = snprintf(head, sizeof(head),
			  "HTTP/1.1 200 OK\r\nContent-Length: %llu\r\nContent-Type: text/plain\r\n\r\n",
			  (unsigned long long)size);
	size_t have = 0;
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	for (;;) {
		ssize_t r = recv(fd, buf + have, sizeof(buf) - 1 - have, 0);
		if (r <= 0)
			break;
		have += (size_t)r;
		buf[have] = 0;
		char *end;
		while ((end = strstr(buf, "\r\n\r\n")) != NULL) {
			size_t used = (size_t)(end + 4 - buf);
			struct iovec iov[2] = { { head, (size_t)hl }, { body, size } };
			struct msghdr mh = { .msg_iov = iov, .msg_iovlen = 2 };
			if (sendmsg(fd, &mh, MSG_NOSIGNAL) < 0)
				goto out;
			memmove(buf, buf + used, have - used + 1);
			have -= used;
		}
		if (have >= sizeof(buf) - 1)
			break;
	}
out:
	free(body);
}

static void *serve_conn(void *arg)
{
	struct srv_arg *a = arg;
	int fd = a->fd;
	uint8_t buf[65536];
	char sha[65];
	if (a->mode == 0) { /* echo */
		for (;;) {
			ssize_t r = recv(fd, buf, sizeof(buf), 0);
			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0)
				break;
			if (write_all(fd, buf, (size_t)r) < 0)
				break;
		}
		shutdown(fd, SHUT_WR);
	} else if (a->mode == 1) { /* sha */
		int64_t n = read_sha(fd, sha);
		if (n >= 0) {
			char line[128];
			int l = snprintf(line, sizeof(line), "%lld %s\n", (long long)n, sha);
			write_all(fd, (uint8_t *)line, (size_t)l);
		}
	} else if (a->mode == 3) {
		serve_http(fd, a->bytes);
	} else if (a->mode == 4) { /* peer: what the application sees as its client */
		struct sockaddr_in peer;
		socklen_t pl = sizeof(peer);
		char ip[INET_ADDRSTRLEN], line[64];
		if (getpeername(fd, (struct sockaddr *)&peer, &pl) == 0 &&
		    inet_ntop(AF_INET, &peer.sin_addr, ip, sizeof(ip))) {
			int l = snprintf(line, sizeof(line), "%s:%u\n", ip, ntohs(peer.sin_port));
			write_all(fd, (uint8_t *)line, (size_t)l);
		}
	} else { /* push */
		if (send_stream(fd, 7, a->bytes) == 0) {
			shutdown(fd, SHUT_WR);
			int64_t n = read_sha(fd, sha);
			printf("%lld %s\n", (long long)n, sha);
			fflush(stdout);
		}
	}
	close(fd);
	free(a);
	return NULL;
}

static int server(int mode, int port, uint64_t bytes)
{
	int lfd = listen_on(port);
	for (;;) {
		int fd = accept(lfd, NULL, NULL);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			perror("accept");
			return 1;
		}
		struct srv_arg *a = malloc(sizeof(*a));
		*a = (struct srv_arg){ .fd = fd, .mode = mode, .bytes = bytes };
		pthread_t th;
		pthread_attr_t at;
		pthread_attr_init(&at);
		pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
		pthread_attr_setstacksize(&at, 256 * 1024);
		if (pthread_create(&th, &at, serve_conn, a) != 0) {
			close(fd);
			free(a);
		}
		pthread_attr_destroy(&at);
	}
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmd_send(const char *addr, uint64_t bytes, uint64_t seed)
{
	char want[65], got[65];
	long long n = 0;
	int fd = dial(addr);
	if (fd < 0) {
		fprintf(stderr, "connect %s: %s\n", addr, strerror(errno));
		return 1;
	}
	double t0 = now_s();
	if (send_stream(fd, seed, bytes) < 0) {
		fprintf(stderr, "send: %s\n", strerror(errno));
		return 1;
	}
	shutdown(fd, SHUT_WR);
	char line[160] = { 0 };
	size_t off = 0;
	while (off < sizeof(line) - 1) {
		ssize_t r = recv(fd, line + off, sizeof(line) - 1 - off, 0);
		if (r <= 0)
			break;
		off += (size_t)r;
	}
	double dt = now_s() - t0;
	close(fd);
	stream_sha(seed, bytes, want);
	if (sscanf(line, "%lld %64s", &n, got) != 2 || (uint64_t)n != bytes || strcmp(got, want)) {
		fprintf(stderr, "mismatch: sent %llu bytes sha %s, server saw '%s'\n",
			(unsigned long long)bytes, want, line);
		return 1;
	}
	printf("ok %llu bytes sha256 %s %.1f MB/s\n", (unsigned long long)bytes, want,
	       (double)bytes / dt / 1e6);
	return 0;
}

static int cmd_pull(const char *addr, uint64_t bytes, uint64_t sendbytes)
{
	char want[65], got[65];
	int fd = dial(addr);
	if (fd < 0) {
		fprintf(stderr, "connect %s: %s\n", addr, strerror(errno));
		return 1;
	}
	int64_t n = read_sha(fd, got); /* the server half-closed: we see EOF... */
	stream_sha(7, bytes, want);
	if (n < 0 || (uint64_t)n != bytes || strcmp(got, want)) {
		fprintf(stderr, "pull mismatch: got %lld bytes sha %s, want %llu sha %s\n",
			(long long)n, got, (unsigned long long)bytes, want);
		return 1;
	}
	/* ...and our direction must still be open. */
	if (send_stream(fd, 9, sendbytes) < 0) {
		fprintf(stderr, "send after peer half-close: %s\n", strerror(errno));
		return 1;
	}
	shutdown(fd, SHUT_WR);
	char c;
	(void)recv(fd, &c, 1, 0);
	close(fd);
	stream_sha(9, sendbytes, want);
	printf("ok pulled %llu bytes, then sent %llu bytes sha256 %s\n", (unsigned long long)bytes,
	       (unsigned long long)sendbytes, want);
	return 0;
}

struct ec_arg {
	const char *addr;
	unsigned next, conns, ok, bad;
	uint64_t bytes;
	pthread_mutex_t mu;
};

static void *ec_worker(void *arg)
{
	struct ec_arg *a = arg;
	uint8_t *out = malloc(a->bytes), *in = malloc(a->bytes + 1);
	for (;;) {
		pthread_mutex_lock(&a->mu);
		unsigned i = a->next < a->conns ? a->next++ : a->conns;
		pthread_mutex_unlock(&a->mu);
		if (i >= a->conns)
			break;
		struct stream st = { 1000 + i };
		stream_fill(&st, out, a->bytes);
		int good = 0, fd = dial(a->addr);
		if (fd >= 0 && write_all(fd, out, a->bytes) == 0) {
			shutdown(fd, SHUT_WR);
			size_t got = 0;
			for (;;) {
				ssize_t r = recv(fd, in + got, a->bytes + 1 - got, 0);
				if (r <= 0)
					break;
				got += (size_t)r;
				if (got > a->bytes)
					break;
			}
			good = got == a->bytes && memcmp(in, out, a->bytes) == 0;
		}
		if (fd >= 0)
			close(fd);
		pthread_mutex_lock(&a->mu);
		if (good)
			a->ok++;
		else
			a->bad++;
		pthread_mutex_unlock(&a->mu);
	}
	free(out);
	free(in);
	return NULL;
}

static int cmd_echo_check(const char *addr, unsigned conns, unsigned parallel, uint64_t bytes)
{
	struct ec_arg a = { .addr = addr, .conns = conns, .bytes = bytes };
	pthread_mutex_init(&a.mu, NULL);
	pthread_t *th = calloc(parallel, sizeof(*th));
	double t0 = now_s();
	for (unsigned i = 0; i < parallel; i++)
		pthread_create(&th[i], NULL, ec_worker, &a);
	for (unsigned i = 0; i < parallel; i++)
		pthread_join(th[i], NULL);
	free(th);
	printf("%s %u/%u connections byte-exact (%u failed) in %.2f s\n", a.bad ? "FAIL" : "ok",
	       a.ok, conns, a.bad, now_s() - t0);
	return a.bad ? 1 : 0;
}

static int cmd_marker(const char *addr, const char *marker, unsigned count)
{
	size_t ml = strlen(marker);
	SHA256_CTX c;
	uint8_t d[SHA256_DIGEST_LENGTH];
	char want[65], got[65];
	long long n = 0;
	int fd = dial(addr);
	if (fd < 0) {
		fprintf(stderr, "connect %s: %s\n", addr, strerror(errno));
		return 1;
	}
	SHA256_Init(&c);
	for (unsigned i = 0; i < count; i++) {
		if (write_all(fd, (const uint8_t *)marker, ml) < 0) {
			fprintf(stderr, "send: %s\n", strerror(errno));
			return 1;
		}
		SHA256_Update(&c, marker, ml);
	}
	SHA256_Final(d, &c);
	hex(d, want);
	shutdown(fd, SHUT_WR);
	char line[160] = { 0 };
	size_t off = 0;
	while (off < sizeof(line) - 1) {
		ssize_t r = recv(fd, line + off, sizeof(line) - 1 - off, 0);
		if (r <= 0)
			break;
		off += (size_t)r;
	}
	close(fd);
	if (sscanf(line, "%lld %64s", &n, got) != 2 || (size_t)n != ml * count || strcmp(got, want)) {
		fprintf(stderr, "marker mismatch: server saw '%s'\n", line);
		return 1;
	}
	printf("ok sent marker %u times\n", count);
	return 0;
}

static int cmd_probe(const char *addr)
{
	int fd = dial(addr);
	if (fd < 0) {
		puts(errno == ECONNREFUSED ? "refused" : "error");
		return 0;
	}
	/* A reset that arrives before this send is reported by the send (and consumed: the
	 * recv after it would then see a plain end of stream), so look at both. */
	if (send(fd, "probe\n", 6, MSG_NOSIGNAL) < 0) {
		puts(errno == ECONNRESET || errno == EPIPE ? "reset" : "error");
		close(fd);
		return 0;
	}
	char buf[64];
	ssize_t r = recv(fd, buf, sizeof(buf), 0);
	if (r > 0)
		puts("data");
	else if (r == 0)
		puts("eof");
	else
		puts(errno == ECONNRESET ? "reset" : "error");
	close(fd);
	return 0;
}

static int read_exact(int fd, uint8_t *p, size_t n)
{
	while (n) {
		ssize_t r = recv(fd, p, n, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

/* SOCKS5 CONNECT to @target through the proxy at @proxy (RFC 1928, no authentication). */
static int socks_dial(const char *proxy, const char *target)
{
	struct sockaddr_in t;
	uint8_t req[10] = { 5, 1, 0, 1 }, rep[10];
	int fd;

	if (parse_addr(target, &t) < 0 || (fd = dial(proxy)) < 0)
		return -1;
	memcpy(req + 4, &t.sin_addr, 4);
	memcpy(req + 8, &t.sin_port, 2);
	/* greeting and request in one write: the proxy must take pipelined bytes */
	uint8_t msg[13] = { 5, 1, 0 };
	memcpy(msg + 3, req, sizeof(req));
	if (write_all(fd, msg, sizeof(msg)) < 0)
		goto fail;
	uint8_t method[2];
	if (read_exact(fd, method, sizeof(method)) < 0 || method[0] != 5 || method[1] != 0 ||
	    read_exact(fd, rep, sizeof(rep)) < 0)
		goto fail;
	if (rep[0] != 5 || rep[1] != 0)
		goto fail;
	return fd;
fail:
	close(fd);
	return -1;
}

static int connect_to(const char *addr, const char *socks)
{
	return socks ? socks_dial(socks, addr) : dial(addr);
}

/* One request on @fd; reads the response to the end of its body. 0 or -1. */
static int http_roundtrip(int fd, bool close_after)
{
	static const char keep[] = "GET / HTTP/1.1\r\nHost: bench\r\n\r\n";
	static const char cls[] = "GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n";
	char buf[16384];
	size_t have = 0, want = 0;
	char *end = NULL;

	if (close_after ? write_all(fd, (const uint8_t *)cls, sizeof(cls) - 1)
			: write_all(fd, (const uint8_t *)keep, sizeof(keep) - 1))
		return -1;
	for (;;) {
		ssize_t r = recv(fd, buf + have, sizeof(buf) - 1 - have, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		have += (size_t)r;
		buf[have] = 0;
		if (!end && (end = strstr(buf, "\r\n\r\n"))) {
			const char *cl = strcasestr(buf, "content-length:");
			if (!cl)
				return -1;
			want = (size_t)(end + 4 - buf) + strtoul(cl + 15, NULL, 10);
		}
		if (end && have >= want)
			return 0;
		if (have >= sizeof(buf) - 1) {
			/* a big body: keep only the count */
			if (!end)
				return -1;
			want -= have;
			have = 0;
			end = buf; /* headers seen */
			if (want == 0)
				return 0;
		}
	}
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double pct(double *v, size_t n, double q)
{
	if (!n)
		return 0;
	size_t i = (size_t)(q * (double)(n - 1) + 0.5);
	return v[i];
}

struct rate_arg {
	const char *addr, *socks;
	double until;
	uint64_t done, failed;
	double *lat; /* connect+request times, microseconds */
	size_t nlat, cap;
};

static void *rate_worker(void *p)
{
	struct rate_arg *a = p;
	while (now_s() < a->until) {
		double t0 = now_s();
		int fd = connect_to(a->addr, a->socks);
		if (fd < 0) {
			a->failed++;
			continue;
		}
		int r = http_roundtrip(fd, true);
		close(fd);
		if (r < 0) {
			a->failed++;
			continue;
		}
		a->done++;
		if (a->nlat < a->cap)
			a->lat[a->nlat++] = (now_s() - t0) * 1e6;
	}
	return NULL;
}

static int cmd_rate(const char *addr, double secs, unsigned workers, const char *socks)
{
	struct rate_arg *a = calloc(workers, sizeof(*a));
	pthread_t *th = calloc(workers, sizeof(*th));
	double until = now_s() + secs, t0 = now_s();
	uint64_t done = 0, failed = 0;
	size_t n = 0;
	if (!a || !th || workers == 0)
		return 1;
	for (unsigned i = 0; i < workers; i++) {
		a[i] = (struct rate_arg){ .addr = addr, .socks = socks, .until = until, .cap = 1u << 20 };
		a[i].lat = malloc(a[i].cap * sizeof(double));
		if (!a[i].lat || pthread_create(&th[i], NULL, rate_worker, &a[i]) != 0)
			return 1;
	}
	for (unsigned i = 0; i < workers; i++) {
		pthread_join(th[i], NULL);
		done += a[i].done;
		failed += a[i].failed;
		n += a[i].nlat;
	}
	double dt = now_s() - t0;
	double *all = malloc((n ? n : 1) * sizeof(double));
	size_t k = 0;
	for (unsigned i = 0; i < workers; i++) {
		memcpy(all + k, a[i].lat, a[i].nlat * sizeof(double));
		k += a[i].nlat;
		free(a[i].lat);
	}
	qsort(all, n, sizeof(double), cmp_double);
	printf("conns_per_s %.0f conn_p50_us %.0f conn_p99_us %.0f failed %llu\n", (double)done / dt,
	       pct(all, n, 0.5), pct(all, n, 0.99), (unsigned long long)failed);
	free(all);
	free(a);
	free(th);
	return done > 0 && failed * 100 <= done ? 0 : 1;
}

static int cmd_latency(const char *addr, unsigned count, const char *socks)
{
	double *lat = malloc((count ? count : 1) * sizeof(double));
	int fd = connect_to(addr, socks);
	if (!lat || fd < 0 || count == 0) {
		fprintf(stderr, "latency: cannot connect to %s%s%s\n", addr, socks ? " via " : "",
			socks ? socks : "");
		return 1;
	}
	for (unsigned i = 0; i < count; i++) {
		double t0 = now_s();
		if (http_roundtrip(fd, false) < 0) {
			fprintf(stderr, "latency: request %u failed\n", i);
			return 1;
		}
		lat[i] = (now_s() - t0) * 1e6;
	}
	close(fd);
	qsort(lat, count, sizeof(double), cmp_double);
	printf("p50_us %.1f p90_us %.1f p99_us %.1f\n", pct(lat, count, 0.5), pct(lat, count, 0.9),
	       pct(lat, count, 0.99));
	free(lat);
	return 0;
}

static int cmd_whoami(const char *addr)
{
	char buf[128];
	size_t have = 0;
	int fd = dial(addr);
	if (fd < 0)
		return 1;
	for (;;) {
		ssize_t r = recv(fd, buf + have, sizeof(buf) - 1 - have, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		have += (size_t)r;
		if (have == sizeof(buf) - 1)
			break;
	}
	close(fd);
	buf[have] = 0;
	if (!have || buf[have - 1] != '\n') {
		fprintf(stderr, "whoami %s: no answer\n", addr);
		return 1;
	}
	fputs(buf, stdout);
	return 0;
}

int main(int argc, char **argv)
{
	signal(SIGPIPE, SIG_IGN);
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc >= 3 && !strcmp(argv[1], "echo-server"))
		return server(0, atoi(argv[2]), 0);
	if (argc >= 3 && !strcmp(argv[1], "sha-server"))
		return server(1, atoi(argv[2]), 0);
	if (argc >= 4 && !strcmp(argv[1], "push-server"))
		return server(2, atoi(argv[2]), strtoull(argv[3], NULL, 10));
	if (argc >= 4 && !strcmp(argv[1], "http-server"))
		return server(3, atoi(argv[2]), strtoull(argv[3], NULL, 10));
	if (argc >= 4 && !strcmp(argv[1], "send"))
		return cmd_send(argv[2], strtoull(argv[3], NULL, 10),
				argc > 4 ? strtoull(argv[4], NULL, 10) : 42);
	if (argc >= 5 && !strcmp(argv[1], "pull"))
		return cmd_pull(argv[2], strtoull(argv[3], NULL, 10), strtoull(argv[4], NULL, 10));
	if (argc >= 6 && !strcmp(argv[1], "echo-check"))
		return cmd_echo_check(argv[2], (unsigned)atoi(argv[3]), (unsigned)atoi(argv[4]),
				      strtoull(argv[5], NULL, 10));
	if (argc >= 5 && !strcmp(argv[1], "marker"))
		return cmd_marker(argv[2], argv[3], (unsigned)atoi(argv[4]));
	if (argc >= 3 && !strcmp(argv[1], "probe"))
		return cmd_probe(argv[2]);
	if (argc >= 3 && !strcmp(argv[1], "peer-server"))
		return server(4, atoi(argv[2]), 0);
	if (argc >= 3 && !strcmp(argv[1], "whoami"))
		return cmd_whoami(argv[2]);
	if (argc >= 5 && !strcmp(argv[1], "rate"))
		return cmd_rate(argv[2], atof(argv[3]), (unsigned)atoi(argv[4]),
				argc > 5 ? argv[5] : NULL);
	if (argc >= 4 && !strcmp(argv[1], "latency"))
		return cmd_latency(argv[2], (unsigned)atoi(argv[3]), argc > 4 ? argv[4] : NULL);
	fprintf(stderr, "usage: see the comment at the top of tests/tools/ml-testpeer.c\n");
	return 2;
}
