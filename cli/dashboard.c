// SPDX-License-Identifier: Apache-2.0
/*
 * `meshlite dashboard NODE`: where a lab node's ztunnel dashboard is (/dashboard on its admin
 * port), and with --forward a way to open it from this namespace: the node's admin address
 * lives in the node's network namespace, which the caller's namespace has no route to (the
 * lab never adds routes here), so we listen on 127.0.0.1 here and relay each connection to
 * the admin port from inside the node's namespace.
 */
#include "dashboard.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common.h"
#include "lab-internal.h"
#include "loop.h"
#include "netns.h"
#include "util.h"

#define FWD_MAX_CONNS 32 /* the admin server serves 64 at once */
#define FWD_BUF 16384
#define FWD_CONNECT_TIMEOUT_S 3

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: meshlite dashboard [--name NAME] [--state-dir DIR] [--forward PORT] NODE\n"
		"\n"
		"Print the URL of NODE's ztunnel dashboard: a live page on the ztunnel admin\n"
		"port (/dashboard; its data is /dashboard/data) charting connections, bytes,\n"
		"denials, connection setup time, CPU and memory, and the top connections.\n"
		"\n"
		"The URL's address is inside the node's network namespace; open it there\n"
		"(ip netns exec NETNS chromium URL), or use --forward.\n"
		"\n"
		"      --forward PORT   listen on 127.0.0.1:PORT in this namespace and relay each\n"
		"                       connection to the node's admin port until interrupted;\n"
		"                       prints the local URL (PORT 0: any free port)\n"
		"      --name NAME      lab name (default \"lab\")\n"
		"      --state-dir DIR  as given to lab up (default /run/meshlite/NAME)\n"
		"  -h, --help           show this help\n");
}

/* ---------------------------------------------------------------- forwarder */

struct fwd_pair {
	int fd[2];	      /* 0: the local client, 1: the admin port; -1 when free */
	char buf[2][FWD_BUF]; /* buf[d]: read from fd[d], to be written to fd[!d] */
	size_t len[2], off[2];
	bool eof[2];
};

static volatile sig_atomic_t fwd_stop;

static void on_stop(int sig)
{
	(void)sig;
	fwd_stop = 1;
}

static void pair_close(struct fwd_pair *p)
{
	for (int i = 0; i < 2; i++) {
		if (p->fd[i] >= 0)
			(void)close(p->fd[i]);
		p->fd[i] = -1;
	}
}

/* Connected in the node's namespace (where this process now is), then non-blocking. */
static int connect_admin(const struct sockaddr_storage *to, socklen_t tolen)
{
	struct timeval tv = { .tv_sec = FWD_CONNECT_TIMEOUT_S };
	int fd = socket(to->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -errno;
	(void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (connect(fd, (const struct sockaddr *)to, tolen) < 0 ||
	    fcntl(fd, F_SETFL, O_NONBLOCK) < 0) {
		int r = -errno;

		(void)close(fd);
		return r;
	}
	return fd;
}

/* Move what can move in direction @d; false when the pair is finished or failed. */
static bool pair_pump(struct fwd_pair *p, int d, short rev_in, short rev_out)
{
	if ((rev_in & (POLLIN | POLLHUP | POLLERR)) && p->len[d] == 0 && !p->eof[d]) {
		ssize_t n = read(p->fd[d], p->buf[d], FWD_BUF);

		if (n < 0 && errno != EAGAIN && errno != EINTR)
			return false;
		if (n == 0) {
			p->eof[d] = true;
			(void)shutdown(p->fd[!d], SHUT_WR);
		}
		if (n > 0) {
			p->len[d] = (size_t)n;
			p->off[d] = 0;
			rev_out |= POLLOUT; /* try at once */
		}
	}
	if ((rev_out & POLLOUT) && p->len[d] > p->off[d]) {
		ssize_t n =
			send(p->fd[!d], p->buf[d] + p->off[d], p->len[d] - p->off[d], MSG_NOSIGNAL);

		if (n < 0 && errno != EAGAIN && errno != EINTR)
			return false;
		if (n > 0)
			p->off[d] += (size_t)n;
		if (p->off[d] == p->len[d])
			p->len[d] = p->off[d] = 0;
	}
	return true;
}

static int forward_loop(int lfd, const struct sockaddr_storage *to, socklen_t tolen)
{
	static struct fwd_pair pairs[FWD_MAX_CONNS];
	struct pollfd pfd[1 + 2 * FWD_MAX_CONNS];
	unsigned nopen = 0;

	for (int i = 0; i < FWD_MAX_CONNS; i++)
		pairs[i].fd[0] = pairs[i].fd[1] = -1;
	while (!fwd_stop) {
		pfd[0] =
			(struct pollfd){ .fd = nopen < FWD_MAX_CONNS ? lfd : -1, .events = POLLIN };
		for (int i = 0; i < FWD_MAX_CONNS; i++) {
			struct fwd_pair *p = &pairs[i];

			for (int d = 0; d < 2; d++) {
				struct pollfd *q = &pfd[1 + 2 * i + d];

				q->fd = p->fd[d];
				q->events = 0;
				q->revents = 0;
				if (p->fd[d] < 0)
					continue;
				if (p->len[d] == 0 && !p->eof[d])
					q->events |= POLLIN;
				if (p->len[!d] > p->off[!d])
					q->events |= POLLOUT;
			}
		}
		if (poll(pfd, 1 + 2 * FWD_MAX_CONNS, -1) < 0) {
			if (errno == EINTR)
				continue;
			cli_err("dashboard: poll: %s", strerror(errno));
			break;
		}
		for (int i = 0; i < FWD_MAX_CONNS; i++) {
			struct fwd_pair *p = &pairs[i];
			short r0 = pfd[1 + 2 * i].revents, r1 = pfd[2 + 2 * i].revents;

			if (p->fd[0] < 0)
				continue;
			if (!pair_pump(p, 0, r0, r1) || !pair_pump(p, 1, r1, r0) ||
			    (p->eof[0] && p->eof[1] && !p->len[0] && !p->len[1])) {
				pair_close(p);
				nopen--;
			}
		}
		if (pfd[0].revents & POLLIN) {
			int cfd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC), i;

			if (cfd < 0)
				continue;
			for (i = 0; pairs[i].fd[0] >= 0; i++)
				;
			int afd = connect_admin(to, tolen);
			if (afd < 0) {
				cli_warn("dashboard: cannot connect to the admin port: %s",
					 strerror(-afd));
				(void)close(cfd);
				continue;
			}
			pairs[i] = (struct fwd_pair){ .fd = { cfd, afd } };
			nopen++;
		}
	}
	for (int i = 0; i < FWD_MAX_CONNS; i++)
		pair_close(&pairs[i]);
	return 0;
}

static int forward(const char *node, const char *netns, const char *admin, long port)
{
	struct sockaddr_in local = { .sin_family = AF_INET,
				     .sin_port = htons((uint16_t)port),
				     .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	struct sigaction sa = { .sa_handler = on_stop }; /* no SA_RESTART: poll() returns */
	struct sockaddr_storage to;
	socklen_t tolen, llen = sizeof(local);
	int lfd, one = 1, r;

	if (ml_addr_parse(admin, &to, &tolen) < 0) {
		cli_err("dashboard: node %s has an unusable admin address '%s'", node, admin);
		return CLI_EXIT_FAIL;
	}
	/* The listener is made here, before we move: a socket stays in the namespace it was
	 * created in. */
	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (lfd < 0 || setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(lfd, (struct sockaddr *)&local, sizeof(local)) < 0 || listen(lfd, 64) < 0 ||
	    getsockname(lfd, (struct sockaddr *)&local, &llen) < 0) {
		cli_err("dashboard: cannot listen on 127.0.0.1:%ld: %s", port, strerror(errno));
		if (lfd >= 0)
			(void)close(lfd);
		return CLI_EXIT_FAIL;
	}
	/* This process only forwards from now on and exits when it stops, so it may live in
	 * the node's namespace (cli_netns_enter's rule). */
	r = cli_netns_enter(netns);
	if (r < 0) {
		(void)close(lfd);
		return CLI_EXIT_FAIL;
	}
	(void)sigaction(SIGINT, &sa, NULL);
	(void)sigaction(SIGTERM, &sa, NULL);
	printf("http://127.0.0.1:%u/dashboard\n", ntohs(local.sin_port));
	fflush(stdout);
	cli_info("forwarding 127.0.0.1:%u to %s's ztunnel admin port %s (network namespace %s); "
		 "interrupt to stop",
		 ntohs(local.sin_port), node, admin, netns);
	r = forward_loop(lfd, &to, tolen);
	(void)close(lfd);
	return r < 0 ? CLI_EXIT_FAIL : CLI_EXIT_OK;
}

/* ---------------------------------------------------------------- command */

int cli_dashboard_main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "forward", required_argument, NULL, 'f' },
		{ "name", required_argument, NULL, 'N' },
		{ "state-dir", required_argument, NULL, 'S' },
		{ "help", no_argument, NULL, 'h' },
		{},
	};
	const char *name = CLI_LAB_DEFAULT_NAME, *state_dir = NULL, *node_name;
	const char *netns, *admin;
	long port = -1;
	struct cli_lab lab;
	json_t *node;
	char *end;
	int c, r;

	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'f':
			errno = 0;
			port = strtol(optarg, &end, 10);
			if (errno || *end || !*optarg || port < 0 || port > 65535) {
				cli_err("dashboard: --forward wants a port 0..65535, got '%s'",
					optarg);
				return CLI_EXIT_USAGE;
			}
			break;
		case 'N':
			name = optarg;
			break;
		case 'S':
			state_dir = optarg;
			break;
		case 'h':
			usage(stdout);
			return CLI_EXIT_OK;
		default:
			usage(stderr);
			return CLI_EXIT_USAGE;
		}
	}
	if (optind + 1 != argc) {
		cli_err("dashboard: want one NODE (e.g. node-1)");
		usage(stderr);
		return CLI_EXIT_USAGE;
	}
	node_name = argv[optind];
	r = cli_lab_open(&lab, name, state_dir, 0);
	if (r == 0)
		r = cli_lab_load(&lab);
	if (r == -ENOENT)
		cli_err("lab '%s' is not up (no state in %s)", name, lab.dir);
	if (r < 0) {
		cli_lab_close(&lab);
		return CLI_EXIT_FAIL;
	}
	node = cli_lab_node(&lab, node_name);
	netns = cli_js(node, "netns");
	admin = cli_js(json_object_get(node, "ztunnel"), "admin");
	if (!node || !netns || !admin) {
		json_t *it;
		size_t i;

		if (node)
			cli_err("dashboard: node '%s' has no ztunnel admin address recorded",
				node_name);
		else
			cli_err("dashboard: lab '%s' has no node '%s'; its nodes:", name,
				node_name);
		json_array_foreach(json_object_get(lab.state, "nodes"), i, it)
			cli_info("  %s", cli_js(it, "name"));
		cli_lab_close(&lab);
		return CLI_EXIT_FAIL;
	}
	if (!cli_lab_proc_alive(json_object_get(node, "ztunnel")))
		cli_warn("the ztunnel of %s is not running", node_name);
	if (port >= 0) {
		char n[128], ns[256], a[128];

		/* the state goes away with the lab; keep what the forwarder needs */
		snprintf(n, sizeof(n), "%s", node_name);
		snprintf(ns, sizeof(ns), "%s", netns);
		snprintf(a, sizeof(a), "%s", admin);
		cli_lab_close(&lab);
		return forward(n, ns, a, port);
	}
	printf("http://%s/dashboard\n", admin);
	cli_info("%s is in network namespace %s; open it there, e.g.\n"
		 "  ip netns exec %s chromium --no-sandbox http://%s/dashboard\n"
		 "or forward it to this namespace:\n"
		 "  meshlite dashboard%s%s --forward 8080 %s   (then "
		 "http://127.0.0.1:8080/dashboard)",
		 admin, netns, netns, admin, streq(name, CLI_LAB_DEFAULT_NAME) ? "" : " --name ",
		 streq(name, CLI_LAB_DEFAULT_NAME) ? "" : name, node_name);
	cli_lab_close(&lab);
	return CLI_EXIT_OK;
}
