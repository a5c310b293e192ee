// SPDX-License-Identifier: Apache-2.0
#include "lab.h"

#include <stdio.h>
#include <string.h>
#include <getopt.h>

#include "common.h"
#include "lab-internal.h"
#include "util.h"

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: meshlite lab COMMAND [OPTIONS]\n"
		"\n"
		"A multi-node cluster on this machine: nodes and pods are network namespaces,\n"
		"pods are wired by a real CNI chain, each node runs a ztunnel.\n"
		"\n"
		"Commands:\n"
		"  up [--nodes N] [--name NAME] [--control-plane static|istiod] DIR\n"
		"                                      build the lab from YAML\n"
		"  status [--json] [--name NAME]       show control plane, nodes, pods, processes\n"
		"  exec [--name NAME] NS/POD -- CMD... run CMD in a pod\n"
		"  apply [--name NAME] -f FILE         create or change objects (istiod labs)\n"
		"  delete [--name NAME] -f FILE        delete objects (istiod labs)\n"
		"  down [--name NAME]                  remove everything up made\n"
		"\n"
		"Run 'meshlite lab COMMAND --help' for a command's options.\n");
}

int cli_lab_main(int argc, char **argv)
{
	static const struct {
		const char *name;
		int (*fn)(int argc, char **argv);
	} cmds[] = {
		{"up", cli_lab_up},
		{"down", cli_lab_down},
		{"status", cli_lab_status},
		{"exec", cli_lab_exec},
		{"apply", cli_lab_apply},
		{"delete", cli_lab_delete},
	};

	if (argc < 2) {
		cli_err("lab: missing command");
		usage(stderr);
		return CLI_EXIT_USAGE;
	}
	if (streq(argv[1], "--help") || streq(argv[1], "-h") || streq(argv[1], "help")) {
		usage(stdout);
		return CLI_EXIT_OK;
	}
	for (size_t i = 0; i < ARRAY_SIZE(cmds); i++) {
		if (streq(argv[1], cmds[i].name)) {
			optind = 1;
			return cmds[i].fn(argc - 1, argv + 1);
		}
	}
	cli_err("lab: unknown command '%s'", argv[1]);
	usage(stderr);
	return CLI_EXIT_USAGE;
}
