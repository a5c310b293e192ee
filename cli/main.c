// SPDX-License-Identifier: Apache-2.0
/* meshlite: the command-line tool. */
#include <signal.h>
#include <stdio.h>

#include "authz.h"
#include "common.h"
#include "dashboard.h"
#include "lab.h"
#include "util.h"

#ifndef MESHLITE_VERSION
#define MESHLITE_VERSION "unknown"
#endif

static void usage(FILE *f)
{
	fprintf(f, "Usage: meshlite COMMAND [OPTIONS]\n"
		   "\n"
		   "Commands:\n"
		   "  lab        run a multi-node meshlite cluster on this machine (network "
		   "namespaces)\n"
		   "  dashboard  print the URL of a lab node's ztunnel dashboard (--forward to\n"
		   "             reach it from this namespace)\n"
		   "  authz      explain the L4 authorization verdict of a connection\n"
		   "\n"
		   "Options:\n"
		   "  -h, --help     show this help\n"
		   "      --version  print the version\n"
		   "\n"
		   "Run 'meshlite COMMAND --help' for a command's usage.\n");
}

int main(int argc, char **argv)
{
	/* `lab down | head` must not stop a teardown halfway: a closed output is ignored. */
	(void)signal(SIGPIPE, SIG_IGN);
	if (argc < 2) {
		usage(stderr);
		return CLI_EXIT_USAGE;
	}
	if (streq(argv[1], "--help") || streq(argv[1], "-h") || streq(argv[1], "help")) {
		usage(stdout);
		return CLI_EXIT_OK;
	}
	if (streq(argv[1], "--version")) {
		printf("meshlite %s\n", MESHLITE_VERSION);
		return CLI_EXIT_OK;
	}
	if (streq(argv[1], "lab"))
		return cli_lab_main(argc - 1, argv + 1);
	if (streq(argv[1], "dashboard"))
		return cli_dashboard_main(argc - 1, argv + 1);
	if (streq(argv[1], "authz"))
		return cli_authz_main(argc - 1, argv + 1);
	cli_err("unknown command '%s'", argv[1]);
	usage(stderr);
	return CLI_EXIT_USAGE;
}
