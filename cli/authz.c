// SPDX-License-Identifier: Apache-2.0
/* `meshlite authz explain`: see authz.h. */
#include "authz.h"

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"
#include "lab-internal.h"
#include "netns.h"
#include "util.h"

#define FETCH_TIMEOUT_MS 5000
/* cli_lab_http_get() formats the request line into 512 bytes with the Host header. */
#define QUERY_MAX 400
#define ANSWER_MAX (8u << 20)
#define NAME_COL_MAX 40
#define WHY_INDENT 11

static void explain_usage(FILE *f)
{
	fprintf(f,
		"Usage: meshlite authz explain [--lab NAME] [--node NODE | --admin IP:PORT]\n"
		"                              --src SRC --dst DST --port PORT [--json]\n"
		"\n"
		"Ask a ztunnel how its L4 authorization decides a connection SRC -> DST:PORT\n"
		"(GET /debug/authz on its admin port) and explain it: the verdict and its reason\n"
		"first, then every candidate policy in evaluation order (DENY, ALLOW, dry-run)\n"
		"with the rule that matched, or for each rule the condition that did not.\n"
		"Policies are enforced by the destination's node, so by default the question\n"
		"goes to the ztunnel of the lab node that runs DST.\n"
		"\n"
		"  SRC  spiffe://TD/ns/NS/sa/SA, or ns/NS/sa/SA (trust domain " CLI_LAB_TRUST_DOMAIN
		"),\n"
		"       or a lab pod NS/POD (its address; ztunnel knows its identity),\n"
		"       or the IP of a workload the ztunnel knows\n"
		"  DST  a lab pod NS/POD, or the IP of a workload the ztunnel knows\n"
		"\n"
		"Rules are numbered as the ztunnel received them: rule N is the N-th rule of the\n"
		"policy unless the control plane dropped earlier rules (an ALLOW rule with\n"
		"HTTP-only fields is dropped).\n"
		"\n"
		"      --src SRC        the connection's source\n"
		"      --dst DST        its destination\n"
		"      --port PORT      its destination port (1-65535)\n"
		"      --node NODE      ask the ztunnel of this lab node (default: DST's node),\n"
		"                       inside the node's network namespace (needs root)\n"
		"      --admin IP:PORT  ask the ztunnel admin server at this address, from this\n"
		"                       network namespace (or the node's, with --node)\n"
		"      --lab NAME       lab name (default \"lab\"; --name works too)\n"
		"      --state-dir DIR  as given to lab up (default /run/meshlite/NAME)\n"
		"      --json           print {node, admin, source, destination, explain}, where\n"
		"                       explain is the ztunnel's answer as it sent it\n"
		"  -h, --help           show this help\n"
		"\n"
		"Exit status: 0 the connection is allowed, 1 it is denied, 2 usage error or no\n"
		"answer (unknown pod or node, ztunnel unreachable, or it refused the question).\n");
}

static void usage(FILE *f)
{
	fprintf(f, "Usage: meshlite authz COMMAND [OPTIONS]\n"
		   "\n"
		   "L4 authorization (Istio AuthorizationPolicy) as the ztunnels enforce it.\n"
		   "\n"
		   "Commands:\n"
		   "  explain --src SRC --dst DST --port PORT   why a connection is allowed or\n"
		   "                                            denied, policy by policy\n"
		   "\n"
		   "Run 'meshlite authz COMMAND --help' for a command's options.\n");
}

/* ---- arguments ----------------------------------------------------------------------- */

static bool is_ip(const char *s)
{
	unsigned char a[16];

	return inet_pton(AF_INET, s, a) == 1 || inet_pton(AF_INET6, s, a) == 1;
}

/* A Kubernetes name as the lab accepts it; the lab state has the final word. */
static bool name_ok(const char *s, size_t n)
{
	if (n == 0 || n > 253)
		return false;
	for (size_t i = 0; i < n; i++)
		if (s[i] == '/' || s[i] == '%' || s[i] == '&' || (unsigned char)s[i] <= ' ')
			return false;
	return true;
}

int cli_authz_parse_end(const char *arg, bool src, struct cli_authz_end *e)
{
	const char *what = src ? "--src" : "--dst";
	const char *slash = strchr(arg, '/');
	unsigned slashes = 0;

	memset(e, 0, sizeof(*e));
	for (const char *p = arg; *p; p++)
		slashes += *p == '/';
	if (arg[0] == '\0' || strlen(arg) >= sizeof(e->value)) {
		cli_err("authz explain: %s '%s' is empty or too long", what, arg);
		return -EINVAL;
	}
	if (is_ip(arg)) {
		e->kind = CLI_AUTHZ_END_IP;
		snprintf(e->value, sizeof(e->value), "%s", arg);
		return 0;
	}
	if (strncmp(arg, "spiffe://", 9) == 0 || (slashes == 3 && strncmp(arg, "ns/", 3) == 0)) {
		char ns[CLI_AUTHZ_ARG_MAX], sa[CLI_AUTHZ_ARG_MAX];
		int n = 0;

		if (!src) {
			cli_err("authz explain: --dst must be a pod (NS/POD) or an IP, not an "
				"identity: policies are enforced for a destination workload");
			return -EINVAL;
		}
		if (arg[0] == 's') {
			/* ztunnel validates the id itself; it must be a value the query carries */
			if (!name_ok(arg + 9, strcspn(arg + 9, "/")) ||
			    strcspn(arg, "%&# \t") != strlen(arg)) {
				cli_err("authz explain: --src '%s' is not a SPIFFE id", arg);
				return -EINVAL;
			}
			snprintf(e->value, sizeof(e->value), "%s", arg);
			e->kind = CLI_AUTHZ_END_ID;
			return 0;
		}
		/* ns/NS/sa/SA: the principal of a Kubernetes service account */
		if (sscanf(arg, "ns/%319[^/]/sa/%319[^/]%n", ns, sa, &n) != 2 ||
		    (size_t)n != strlen(arg) || !name_ok(ns, strlen(ns)) ||
		    !name_ok(sa, strlen(sa)) ||
		    cli_fmt(e->value, sizeof(e->value), "spiffe://%s/ns/%s/sa/%s",
			    CLI_LAB_TRUST_DOMAIN, ns, sa) < 0) {
			cli_err("authz explain: --src '%s' is not ns/NAMESPACE/sa/SERVICEACCOUNT",
				arg);
			return -EINVAL;
		}
		e->kind = CLI_AUTHZ_END_ID;
		return 0;
	}
	if (slashes > 1) {
		cli_err("authz explain: %s '%s' is not %s", what, arg,
			src ? "a SPIFFE id, ns/NS/sa/SA, NS/POD or an IP" : "NS/POD or an IP");
		return -EINVAL;
	}
	/* NS/POD, or POD in "default" as kubectl reads it */
	if (slash) {
		snprintf(e->ns, sizeof(e->ns), "%.*s", (int)(slash - arg), arg);
		snprintf(e->pod, sizeof(e->pod), "%s", slash + 1);
	} else {
		snprintf(e->ns, sizeof(e->ns), "default");
		snprintf(e->pod, sizeof(e->pod), "%s", arg);
	}
	if (!name_ok(e->ns, strlen(e->ns)) || !name_ok(e->pod, strlen(e->pod))) {
		cli_err("authz explain: %s '%s' is not NS/POD", what, arg);
		return -EINVAL;
	}
	e->kind = CLI_AUTHZ_END_POD;
	(void)cli_fmt(e->value, sizeof(e->value), "%s/%s", e->ns, e->pod);
	return 0;
}

int cli_authz_parse(int argc, char **argv, struct cli_authz_opts *o)
{
	static const struct option opts[] = {
		{ "src", required_argument, NULL, 's' },
		{ "dst", required_argument, NULL, 'd' },
		{ "port", required_argument, NULL, 'p' },
		{ "node", required_argument, NULL, 'n' },
		{ "admin", required_argument, NULL, 'a' },
		{ "lab", required_argument, NULL, 'N' },
		{ "name", required_argument, NULL, 'N' }, /* as the lab commands spell it */
		{ "state-dir", required_argument, NULL, 'S' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{},
	};
	const char *src = NULL, *dst = NULL, *port = NULL;
	int c;

	memset(o, 0, sizeof(*o));
	/* 0: a full re-initialisation, so the parser can run more than once (tests) */
	optind = 0;
	opterr = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 's':
			src = optarg;
			break;
		case 'd':
			dst = optarg;
			break;
		case 'p':
			port = optarg;
			break;
		case 'n':
			o->node = optarg;
			break;
		case 'a':
			o->admin = optarg;
			break;
		case 'N':
			o->lab = optarg;
			break;
		case 'S':
			o->state_dir = optarg;
			break;
		case 'j':
			o->json = true;
			break;
		case 'h':
			explain_usage(stdout);
			return 1;
		default:
			explain_usage(stderr);
			return -EINVAL;
		}
	}
	if (optind != argc) {
		cli_err("authz explain: unexpected argument %s", argv[optind]);
		explain_usage(stderr);
		return -EINVAL;
	}
	if (!src || !dst || !port) {
		cli_err("authz explain: --src, --dst and --port are required");
		explain_usage(stderr);
		return -EINVAL;
	}
	if (cli_authz_parse_end(src, true, &o->src) < 0 ||
	    cli_authz_parse_end(dst, false, &o->dst) < 0)
		return -EINVAL;
	{
		char *end;
		unsigned long v;

		errno = 0;
		v = strtoul(port, &end, 10);
		if (errno || end == port || *end || port[0] == '-' || port[0] == '+' || v == 0 ||
		    v > 65535) {
			cli_err("authz explain: --port '%s' is not a port (1-65535)", port);
			return -EINVAL;
		}
		o->port = (unsigned)v;
	}
	if (o->admin) {
		char ip[64];
		unsigned ap;
		int n = 0;

		if (sscanf(o->admin, "%63[0-9.]:%u%n", ip, &ap, &n) != 2 ||
		    (size_t)n != strlen(o->admin) || !is_ip(ip) || ap == 0 || ap > 65535) {
			cli_err("authz explain: --admin '%s' is not IPv4:PORT", o->admin);
			return -EINVAL;
		}
	}
	if (o->lab && cli_lab_check_name(o->lab) < 0) {
		cli_err("authz explain: invalid lab name '%s'", o->lab);
		return -EINVAL;
	}
	return 0;
}

/* RFC 3986 §3.4: a query may hold pchar, '/' and '?'; everything else is escaped, and so
 * are '&', '=', '+' and '%' which the query syntax itself gives meaning to. */
static int put_encoded(char *buf, size_t len, size_t *off, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";

	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;
		bool plain = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
			     (ch >= '0' && ch <= '9') || strchr("-._~:/@", ch);

		if (*off + (plain ? 1 : 3) >= len)
			return -ENAMETOOLONG;
		if (plain) {
			buf[(*off)++] = (char)ch;
		} else {
			buf[(*off)++] = '%';
			buf[(*off)++] = hex[ch >> 4];
			buf[(*off)++] = hex[ch & 15];
		}
	}
	buf[*off] = '\0';
	return 0;
}

int cli_authz_query(const char *src, const char *dst, unsigned port, char *buf, size_t len)
{
	size_t off = 0;
	int n;

	n = snprintf(buf, len, "/debug/authz?src=");
	if (n < 0 || (size_t)n >= len)
		return -ENAMETOOLONG;
	off = (size_t)n;
	if (put_encoded(buf, len, &off, src) < 0)
		return -ENAMETOOLONG;
	n = snprintf(buf + off, len - off, "&dst=");
	if (n < 0 || (size_t)n >= len - off)
		return -ENAMETOOLONG;
	off += (size_t)n;
	if (put_encoded(buf, len, &off, dst) < 0)
		return -ENAMETOOLONG;
	n = snprintf(buf + off, len - off, "&port=%u", port);
	return n < 0 || (size_t)n >= len - off ? -ENAMETOOLONG : 0;
}

/* ---- rendering ----------------------------------------------------------------------- */

static const char *or_str(const char *s, const char *dflt)
{
	return s && s[0] ? s : dflt;
}

static bool unspecified_ip(const char *ip)
{
	return !ip || streq(ip, "0.0.0.0") || streq(ip, "::");
}

static const json_t *find_policy(const json_t *pols, const char *name)
{
	json_t *p;
	size_t i;

	json_array_foreach(pols, i, p) {
		const char *n = cli_js(p, "policy");

		if (name && n && streq(n, name))
			return p;
	}
	return NULL;
}

static const char *scope_word(const json_t *p)
{
	const char *sc = or_str(cli_js(p, "scope"), "?");

	if (streq(sc, "GLOBAL"))
		return "mesh-wide";
	if (streq(sc, "NAMESPACE"))
		return "namespace";
	if (streq(sc, "WORKLOAD_SELECTOR"))
		return "selector";
	return sc;
}

/*
 * One "why" string of the engine (ztunnel/authz.c explain text):
 *   "group G: clause C: no match entry matched: <entries>"
 * where <entries> is one entry's failed conditions, or "match K: ...; match K+1: ..." when
 * the clause has several entries (the entries of one from/to list, ORed). A group is a
 * rule of the AuthorizationPolicy. Anything else is printed as it came.
 */
static void print_why(FILE *out, const char *s)
{
	const char *rest = s, *next;
	unsigned g, c;
	int n = 0;

	if (sscanf(s, "group %u: %n", &g, &n) != 1 || n == 0) {
		fprintf(out, "%*s%s\n", WHY_INDENT, "", s);
		return;
	}
	rest = s + n;
	n = 0;
	if (sscanf(rest, "clause %u: no match entry matched: %n", &c, &n) == 1 && n > 0)
		rest += n;
	if (strncmp(rest, "match 0: ", 9) != 0) {
		fprintf(out, "%*srule %u: %s\n", WHY_INDENT, "", g, rest);
		return;
	}
	fprintf(out, "%*srule %u: none of the entries of one condition matched:\n", WHY_INDENT, "",
		g);
	while (rest) {
		unsigned k;

		next = strstr(rest, "; match ");
		n = 0;
		if (sscanf(rest, "match %u: %n", &k, &n) == 1 && n > 0)
			fprintf(out, "%*sentry %u: %.*s\n", WHY_INDENT + 2, "", k,
				(int)(next ? (size_t)(next - rest - n) : strlen(rest + n)),
				rest + n);
		else
			fprintf(out, "%*s%.*s\n", WHY_INDENT + 2, "",
				(int)(next ? (size_t)(next - rest) : strlen(rest)), rest);
		rest = next ? next + 2 : NULL;
	}
}

static void print_policy(FILE *out, const json_t *p, int width, bool allow, const char *decider)
{
	const char *name = or_str(cli_js(p, "policy"), "?"),
		   *action = or_str(cli_js(p, "action"), "?");
	bool matched = cli_jb(p, "matched"), decided = cli_jb(p, "decided");
	bool dry = cli_jb(p, "dry_run"), is_allow = streq(action, "ALLOW");
	const json_t *mg = json_object_get(p, "matched_group");
	char rule[48] = "";
	const json_t *why;
	json_t *w;
	size_t i;

	if (json_is_integer(mg))
		snprintf(rule, sizeof(rule), "rule %lld", (long long)json_integer_value(mg));
	fprintf(out, "  %-5s  %-*s  %-9s  ", action, width, name, scope_word(p));
	if (dry)
		fprintf(out,
			matched ? "dry-run: would %s (%s matched); not enforced\n"
				: "dry-run: no match; not enforced\n",
			is_allow ? "allow" : "deny", rule);
	else if (matched && decided)
		fprintf(out, "MATCHED %s  <- decided\n", rule);
	else if (matched && is_allow && !allow)
		fprintf(out, "matched %s, but DENY %s decided first\n", rule,
			or_str(decider, "(another policy)"));
	else if (matched)
		fprintf(out, "matched %s (%s decided first in name order)\n", rule,
			or_str(decider, "another policy"));
	else
		fprintf(out, "no match\n");
	if (cli_js(p, "placeholder"))
		fprintf(out, "%*snot converted: %s\n", WHY_INDENT, "", cli_js(p, "placeholder"));
	why = json_object_get(p, "why");
	if (matched || !json_is_array(why))
		return;
	json_array_foreach(why, i, w) {
		if (json_string_value(w))
			print_why(out, json_string_value(w));
	}
}

int cli_authz_render(const json_t *ex, const struct cli_authz_view *v, FILE *out)
{
	const json_t *conn = json_object_get(ex, "connection"),
		     *pols = json_object_get(ex, "policies");
	const char *verdict = cli_js(ex, "verdict"), *reason = cli_js(ex, "reason");
	const char *decider = cli_js(ex, "policy"), *sid, *sip, *dip, *dns;
	const json_t *dec, *unknown, *dry, *hits, *p;
	char src[CLI_AUTHZ_ARG_MAX + 64], dst[CLI_AUTHZ_ARG_MAX + 64];
	unsigned n_allow = 0, n_pols;
	long long port;
	bool allow;
	int width = 6;
	size_t i;

	if (!verdict || !(streq(verdict, "ALLOW") || streq(verdict, "DENY")) ||
	    !json_is_object(conn))
		return -EBADMSG;
	allow = streq(verdict, "ALLOW");
	sid = cli_js(conn, "source_identity");
	sip = cli_js(conn, "source_ip");
	dip = or_str(cli_js(conn, "destination_ip"), "?");
	dns = or_str(cli_js(conn, "destination_namespace"), "?");
	port = cli_ji(conn, "destination_port");
	n_pols = (unsigned)json_array_size(pols);

	/* the verdict and the question in one line, then the reason in ztunnel's words (the
	 * same text as its deny log line, so it can be searched for) */
	snprintf(src, sizeof(src), "%s",
		 v && v->src_pod ? v->src_pod : or_str(sid, or_str(sip, "?")));
	snprintf(dst, sizeof(dst), "%s", v && v->dst_pod ? v->dst_pod : dip);
	fprintf(out, "%s  %s -> %s:%lld\n", verdict, src, dst, port);
	dec = find_policy(pols, decider);
	fprintf(out, "      %s", or_str(reason, "(ztunnel gave no reason)"));
	if (dec && json_is_integer(json_object_get(dec, "matched_group")))
		fprintf(out, " (rule %lld)",
			(long long)json_integer_value(json_object_get(dec, "matched_group")));
	fputc('\n', out);
	json_array_foreach(pols, i, p) {
		const char *a = cli_js(p, "action");

		if (a && streq(a, "ALLOW") && !cli_jb(p, "dry_run"))
			n_allow++;
	}
	if (!allow && !decider && n_allow)
		fprintf(out,
			"      %u ALLOW polic%s cover%s %s and none matched, so it is denied\n",
			n_allow, n_allow == 1 ? "y" : "ies", n_allow == 1 ? "s" : "", dst);
	else if (allow && !decider)
		fprintf(out, "      no ALLOW policy covers %s and no DENY matched\n", dst);

	fprintf(out, "\n  source       %s", sid ? sid : "no identity (plaintext)");
	if (v && v->src_pod && !unspecified_ip(sip))
		fprintf(out, "  (pod %s, %s)", v->src_pod, sip);
	else if (!unspecified_ip(sip))
		fprintf(out, "  (%s)", sip);
	else
		fprintf(out, "  (any address: the question named an identity)");
	fprintf(out, "\n  destination  %s:%lld  (%s%s%snamespace %s)\n", dip, port,
		v && v->dst_pod ? "pod " : "", v && v->dst_pod ? v->dst_pod : "",
		v && v->dst_pod ? ", " : "", dns);
	if (v && (v->node || v->admin)) {
		fprintf(out, "  answered by  ztunnel");
		if (v->node)
			fprintf(out, " on %s", v->node);
		if (v->admin)
			fprintf(out, " (admin %s)", v->admin);
		fputc('\n', out);
	}
	fputc('\n', out);

	if (n_pols == 0) {
		fprintf(out,
			"No policy applies to %s: with no ALLOW policy every connection to it "
			"is allowed.\n",
			dst);
	} else {
		json_array_foreach(pols, i, p) {
			int l = (int)strlen(or_str(cli_js(p, "policy"), "?"));

			width = l > width ? ML_MIN(l, NAME_COL_MAX) : width;
		}
		fprintf(out,
			"%u candidate polic%s, in evaluation order (DENY, then ALLOW, then "
			"dry-run):\n",
			n_pols, n_pols == 1 ? "y" : "ies");
		json_array_foreach(pols, i, p)
			print_policy(out, p, width, allow, decider);
	}

	unknown = json_object_get(ex, "unknown_policies");
	if (json_array_size(unknown)) {
		json_t *u;

		fprintf(out, "\nListed on the destination but unknown to this ztunnel (skipped):");
		json_array_foreach(unknown, i, u)
			fprintf(out, "%s %s", i ? "," : "", or_str(json_string_value(u), "?"));
		fputc('\n', out);
	}
	dry = json_object_get(ex, "dry_run");
	hits = json_object_get(dry, "hits");
	if (json_array_size(hits)) {
		const char *shadow = or_str(cli_js(dry, "shadow_verdict"), "?");

		fprintf(out, "\nWith its dry-run policies enforced the verdict would be %s%s.\n",
			shadow, streq(shadow, verdict) ? " (the same)" : "");
	}
	return allow ? 0 : 1;
}

/* ---- asking the ztunnel -------------------------------------------------------------- */

struct fetch {
	char ip[64];
	int port;
	const char *path;
	int fd; /* memfd: "<status>\n<body>", or the reason of a failure */
};

static int write_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -EIO;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Runs in the node's namespace (a forked child) or in ours: the answer goes to the memfd
 * either way, so the CLI itself never leaves its own namespace. */
static int fetch_get(void *arg)
{
	struct fetch *f = arg;
	char why[256] = "", *body = NULL, head[16];
	int status = 0, r;

	r = cli_lab_http_get(f->ip, f->port, f->path, FETCH_TIMEOUT_MS, &status, &body, why,
			     sizeof(why));
	if (r < 0) {
		(void)write_all(f->fd, why, strlen(why));
		return r;
	}
	snprintf(head, sizeof(head), "%d\n", status);
	r = write_all(f->fd, head, strlen(head));
	if (r == 0)
		r = write_all(f->fd, body, strlen(body));
	free(body);
	return r;
}

/* 0 with the status and the body (free()), or -errno after saying why. */
static int ask(const char *netns, const char *what, struct fetch *f, int *ret_status,
	       char **ret_body)
{
	struct stat st;
	char *buf = NULL;
	int r;

	f->fd = memfd_create("meshlite-authz", MFD_CLOEXEC);
	if (f->fd < 0) {
		r = -errno;
		cli_err("memfd_create: %s", strerror(errno));
		return r;
	}
	r = netns ? cli_netns_run(netns, fetch_get, f) : fetch_get(f);
	if (fstat(f->fd, &st) < 0 || (size_t)st.st_size > ANSWER_MAX ||
	    !(buf = calloc(1, (size_t)st.st_size + 1))) {
		r = r < 0 ? r : -EFBIG;
		goto out;
	}
	if (st.st_size && pread(f->fd, buf, (size_t)st.st_size, 0) != st.st_size) {
		r = r < 0 ? r : -EIO;
		goto out;
	}
	if (r == 0) {
		char *nl = strchr(buf, '\n');

		if (!nl || sscanf(buf, "%d", ret_status) != 1) {
			r = -EPROTO;
			goto out;
		}
		memmove(buf, nl + 1, strlen(nl + 1) + 1);
		*ret_body = buf;
		buf = NULL;
	}
out:
	if (r < 0)
		cli_err("cannot ask %s at %s:%d: %s", what, f->ip, f->port,
			buf && buf[0] ? buf : strerror(-r));
	free(buf);
	(void)close(f->fd);
	f->fd = -1;
	return r;
}

/* ---- the command --------------------------------------------------------------------- */

static const json_t *pod_by_ip(const struct cli_lab *lab, const char *ip)
{
	json_t *p;
	size_t i;

	json_array_foreach(json_object_get(lab->state, "pods"), i, p) {
		const char *pip = cli_js(p, "ip");

		if (pip && streq(pip, ip))
			return p;
	}
	return NULL;
}

/* The lab pod of @e, or NULL (said when @e names a pod that is not there). */
static const json_t *resolve_pod(const struct cli_lab *lab, const struct cli_authz_end *e,
				 const char *what, int *err)
{
	const json_t *pod;

	if (!lab->state)
		return NULL;
	if (e->kind == CLI_AUTHZ_END_IP)
		return pod_by_ip(lab, e->value);
	if (e->kind != CLI_AUTHZ_END_POD)
		return NULL;
	pod = cli_lab_pod(lab, e->ns, e->pod);
	if (!pod) {
		cli_err("lab '%s' has no pod %s (%s)", lab->name, e->value, what);
		*err = -ENOENT;
	} else if (!cli_js(pod, "ip")) {
		cli_err("pod %s has no address yet (%s)", e->value, what);
		*err = -ENOENT;
		pod = NULL;
	}
	return pod;
}

static void pod_name(const json_t *pod, char *buf, size_t len)
{
	snprintf(buf, len, "%s/%s", or_str(cli_js(pod, "namespace"), "?"),
		 or_str(cli_js(pod, "name"), "?"));
}

static int explain(const struct cli_authz_opts *o)
{
	const char *name = o->lab ? o->lab : CLI_LAB_DEFAULT_NAME, *admin = o->admin;
	bool need_lab = o->node || o->src.kind == CLI_AUTHZ_END_POD ||
			o->dst.kind == CLI_AUTHZ_END_POD || !o->admin;
	const json_t *spod = NULL, *dpod = NULL, *node = NULL;
	char path[QUERY_MAX + 1], sname[2 * CLI_AUTHZ_ARG_MAX], dname[2 * CLI_AUTHZ_ARG_MAX];
	char what[128], *body = NULL;
	struct cli_authz_view view = { 0 };
	struct fetch f = { .fd = -1 };
	struct cli_lab lab = { .dir_fd = -1 };
	const char *node_name = o->node;
	json_t *ex = NULL;
	json_error_t jerr;
	int status = 0, r = 0, rc = CLI_EXIT_USAGE;

	/* The lab is read when a pod or a node must be found, or a lab was named (to put pod
	 * names on addresses). No lock: this only reads, and must work while apply runs. */
	if (need_lab || o->lab || o->state_dir) {
		r = cli_lab_open(&lab, name, o->state_dir, 0);
		if (r == 0)
			r = cli_lab_load(&lab);
		if (r == -ENOENT)
			cli_err("lab '%s' is not up (no state in %s)%s", name, lab.dir,
				need_lab ? "" : "; pass --admin alone to ask a ztunnel directly");
		if (r < 0)
			goto out;
	}
	spod = resolve_pod(&lab, &o->src, "--src", &r);
	dpod = resolve_pod(&lab, &o->dst, "--dst", &r);
	if (r < 0)
		goto out;
	if (spod) {
		pod_name(spod, sname, sizeof(sname));
		view.src_pod = sname;
	}
	if (dpod) {
		pod_name(dpod, dname, sizeof(dname));
		view.dst_pod = dname;
	}

	/* who to ask: the given node, else the node that enforces for DST */
	if (!node_name && !admin) {
		node_name = cli_js(dpod, "node");
		if (!node_name) {
			cli_err("authz explain: %s is not a pod of lab '%s': say which ztunnel to "
				"ask with --node NODE or --admin IP:PORT",
				o->dst.value, name);
			goto out;
		}
	}
	if (node_name) {
		node = cli_lab_node(&lab, node_name);
		if (!node) {
			cli_err("lab '%s' has no node %s", name, node_name);
			goto out;
		}
		if (!admin)
			admin = cli_js(json_object_get(node, "ztunnel"), "admin");
		if (!admin || !cli_js(node, "netns")) {
			cli_err("node %s has no ztunnel admin address in the lab state", node_name);
			goto out;
		}
		view.node = node_name;
		if (dpod && cli_js(dpod, "node") && !streq(cli_js(dpod, "node"), node_name))
			cli_warn("%s runs on %s: the answer is %s's view, but only %s's ztunnel "
				 "enforces policies for it",
				 dname, cli_js(dpod, "node"), node_name, cli_js(dpod, "node"));
	}
	view.admin = admin;
	if (sscanf(admin, "%63[0-9.]:%d", f.ip, &f.port) != 2) {
		cli_err("ztunnel admin address '%s' is not IPv4:PORT", admin);
		goto out;
	}
	if (dpod && !cli_jb(dpod, "enrolled"))
		cli_warn("%s is not in the mesh: no ztunnel sees its inbound connections, so no "
			 "policy is enforced for it",
			 dname);
	if (spod && !cli_jb(spod, "enrolled"))
		cli_warn("%s is not in the mesh: its connections arrive in plaintext, without "
			 "the identity this explanation assumes",
			 sname);

	r = cli_authz_query(spod ? cli_js(spod, "ip") : o->src.value,
			    dpod ? cli_js(dpod, "ip") : o->dst.value, o->port, path, sizeof(path));
	if (r < 0) {
		cli_err("authz explain: the question is too long for the admin server");
		goto out;
	}
	f.path = path;
	snprintf(what, sizeof(what), "the ztunnel%s%s", node_name ? " on " : "",
		 node_name ? node_name : "");
	r = ask(node_name ? cli_js(node, "netns") : NULL, what, &f, &status, &body);
	if (r < 0)
		goto out;
	if (status != 200) {
		body[strcspn(body, "\n")] = '\0';
		if (status == 404)
			cli_err("%s has no /debug/authz (HTTP 404): it is older than meshlite's L4 "
				"authorization",
				what);
		else
			cli_err("%s refused the question (HTTP %d): %s", what, status, body);
		goto out;
	}
	ex = json_loads(body, 0, &jerr);
	if (!json_is_object(ex)) {
		cli_err("%s answered something that is not JSON: %s", what, jerr.text);
		goto out;
	}
	if (o->json) {
		json_t *doc =
			json_pack("{s:s?, s:s, s:{s:s, s:s?, s:s?}, s:{s:s, s:s?, s:s?}, s:O}",
				  "node", view.node, "admin", admin, "source", "arg", o->src.value,
				  "pod", view.src_pod, "ip", spod ? cli_js(spod, "ip") : NULL,
				  "destination", "arg", o->dst.value, "pod", view.dst_pod, "ip",
				  dpod ? cli_js(dpod, "ip") : NULL, "explain", ex);
		const char *v = cli_js(ex, "verdict");

		if (!doc || json_dumpf(doc, stdout, JSON_INDENT(2)) < 0 || !v) {
			cli_err("cannot print the answer as JSON");
		} else {
			fputc('\n', stdout);
			rc = streq(v, "ALLOW")	? CLI_EXIT_OK
			     : streq(v, "DENY") ? CLI_EXIT_FAIL
						: CLI_EXIT_USAGE;
		}
		json_decref(doc);
		goto out;
	}
	r = cli_authz_render(ex, &view, stdout);
	if (r < 0) {
		cli_err("%s answered JSON without a verdict", what);
		goto out;
	}
	rc = r == 0 ? CLI_EXIT_OK : CLI_EXIT_FAIL;
out:
	fflush(stdout);
	json_decref(ex);
	free(body);
	cli_lab_close(&lab);
	return rc;
}

int cli_authz_main(int argc, char **argv)
{
	struct cli_authz_opts o;
	int r;

	if (argc < 2) {
		cli_err("authz: missing command");
		usage(stderr);
		return CLI_EXIT_USAGE;
	}
	if (streq(argv[1], "--help") || streq(argv[1], "-h") || streq(argv[1], "help")) {
		usage(stdout);
		return CLI_EXIT_OK;
	}
	if (!streq(argv[1], "explain")) {
		cli_err("authz: unknown command '%s'", argv[1]);
		usage(stderr);
		return CLI_EXIT_USAGE;
	}
	r = cli_authz_parse(argc - 1, argv + 1, &o);
	if (r != 0)
		return r > 0 ? CLI_EXIT_OK : CLI_EXIT_USAGE;
	return explain(&o);
}
