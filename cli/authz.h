/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `meshlite authz explain`: ask the ztunnel of the destination's node why it would allow or
 * deny a connection (GET /debug/authz on its admin port, ztunnel/main.c) and print the
 * answer for a person: the verdict first, then every candidate policy with the rule that
 * matched or why none did. Parsing and rendering are exposed for the unit tests.
 */
#ifndef CLI_AUTHZ_H
#define CLI_AUTHZ_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#define CLI_AUTHZ_ARG_MAX 320 /* a SPIFFE id of two 63-byte names and a long trust domain */

enum cli_authz_end_kind {
	CLI_AUTHZ_END_IP,  /* an address, v4 or v6 */
	CLI_AUTHZ_END_ID,  /* a SPIFFE id (source only); "ns/NS/sa/SA" is expanded into one */
	CLI_AUTHZ_END_POD, /* a lab pod "NS/POD" (or "POD" in namespace default) */
};

struct cli_authz_end {
	enum cli_authz_end_kind kind;
	char value[CLI_AUTHZ_ARG_MAX]; /* the IP, the SPIFFE id, or "NS/POD" */
	char ns[CLI_AUTHZ_ARG_MAX];    /* POD: its namespace and name */
	char pod[CLI_AUTHZ_ARG_MAX];
};

struct cli_authz_opts {
	const char *lab;       /* --lab, NULL when not given */
	const char *state_dir; /* --state-dir */
	const char *node;      /* --node */
	const char *admin;     /* --admin HOST:PORT */
	struct cli_authz_end src, dst;
	unsigned port;
	bool json;
};

/* What the output says about the ends and who answered, beyond the endpoint's JSON. */
struct cli_authz_view {
	const char *src_pod; /* "NS/POD" when known */
	const char *dst_pod;
	const char *node;  /* the node whose ztunnel answered; NULL with --admin alone */
	const char *admin; /* "IP:PORT" */
};

/* argv[0] is "authz"; returns the exit status: 0 allowed, 1 denied, 2 usage or error. */
int cli_authz_main(int argc, char **argv);

/* `explain` options (argv[0] = "explain"): 0, 1 when --help was printed, -EINVAL after
 * saying what is wrong on stderr. */
int cli_authz_parse(int argc, char **argv, struct cli_authz_opts *o);
/* One end of the connection as given on the command line; -EINVAL (said) if it is not a
 * form the end accepts (a destination is never an identity). */
int cli_authz_parse_end(const char *arg, bool src, struct cli_authz_end *e);
/* "/debug/authz?src=..&dst=..&port=.." with the values percent-encoded; -ENAMETOOLONG. */
int cli_authz_query(const char *src, const char *dst, unsigned port, char *buf, size_t len);
/* The explanation @ex (the endpoint's JSON) for a person. Returns 0 for an ALLOW verdict,
 * 1 for DENY, -EBADMSG when @ex is not an explanation. */
int cli_authz_render(const json_t *ex, const struct cli_authz_view *v, FILE *out);

#endif
