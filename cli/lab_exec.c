// SPDX-License-Identifier: Apache-2.0
/* `meshlite lab exec NS/POD -- CMD...`: like kubectl exec, CMD becomes a process of the pod. */
#include "lab-internal.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "netns.h"
#include "util.h"

static void usage(FILE *f)
{
	fprintf(f, "Usage: meshlite lab exec [--name NAME] [--state-dir DIR] [-c CONTAINER] "
		   "[NAMESPACE/]POD -- CMD [ARG...]\n"
		   "\n"
		   "Run CMD in the pod's network namespace with the container's environment\n"
		   "(HOSTNAME, POD_NAME, POD_NAMESPACE, POD_IP and its env); stdio is passed\n"
		   "through and meshlite exits with CMD's status.\n"
		   "\n"
		   "  -c, --container NAME the container whose env to use (default: the first)\n"
		   "      --name NAME      lab name (default \"lab\")\n"
		   "      --state-dir DIR  as given to lab up (default /run/meshlite/NAME)\n"
		   "  -h, --help           show this help\n");
}

static const json_t *find_container(const json_t *pod, const char *name)
{
	json_t *c;
	size_t i;

	if (!name)
		return json_array_get(json_object_get(pod, "containers"), 0);
	json_array_foreach(json_object_get(pod, "containers"), i, c) {
		if (streq(cli_js(c, "name"), name))
			return c;
	}
	return NULL;
}

static void list_pods(const struct cli_lab *lab)
{
	json_t *it;
	size_t i;

	json_array_foreach(json_object_get(lab->state, "pods"), i, it)
		cli_info("  %s/%s", cli_js(it, "namespace"), cli_js(it, "name"));
}

int cli_lab_exec(int argc, char **argv)
{
	static const struct option opts[] = {
		{"container", required_argument, NULL, 'c'},
		{"name", required_argument, NULL, 'N'},
		{"state-dir", required_argument, NULL, 'S'},
		{"help", no_argument, NULL, 'h'},
		{},
	};
	const char *name = CLI_LAB_DEFAULT_NAME, *state_dir = NULL, *cname = NULL;
	char target[512], *slash, **env = NULL;
	const char *ns = "default", *pod_name;
	const json_t *pod, *container = NULL;
	struct cli_lab lab;
	int c, r;

	/* '+': stop at the pod, so CMD's own options are never ours. */
	while ((c = getopt_long(argc, argv, "+c:h", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			cname = optarg;
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
	if (optind >= argc) {
		cli_err("lab exec: missing the pod (NAMESPACE/POD)");
		usage(stderr);
		return CLI_EXIT_USAGE;
	}
	snprintf(target, sizeof(target), "%s", argv[optind++]);
	if (optind < argc && streq(argv[optind], "--"))
		optind++;
	if (optind >= argc) {
		cli_err("lab exec: missing the command to run after --");
		usage(stderr);
		return CLI_EXIT_USAGE;
	}
	slash = strchr(target, '/');
	pod_name = target;
	if (slash) {
		*slash = '\0';
		ns = target;
		pod_name = slash + 1;
	}
	r = cli_lab_open(&lab, name, state_dir, 0);
	if (r == 0)
		r = cli_lab_load(&lab);
	if (r == -ENOENT)
		cli_err("lab '%s' is not up (no state in %s)", name, lab.dir);
	if (r < 0)
		goto out;
	r = -ENOENT;
	pod = cli_lab_pod(&lab, ns, pod_name);
	container = pod ? find_container(pod, cname) : NULL;
	if (!pod) {
		cli_err("lab '%s' has no pod %s/%s; its pods are:", name, ns, pod_name);
		list_pods(&lab);
	} else if (!container) {
		cli_err("pod %s/%s has no container %s", ns, pod_name, cname);
	} else if (!cli_netns_exists(cli_js(pod, "netns"))) {
		cli_err("pod %s/%s: its network namespace %s does not exist (is the lab up?)", ns,
			pod_name, cli_js(pod, "netns"));
	} else if (!(env = cli_lab_pod_env(pod, container))) {
		cli_err("out of memory");
	} else if (cli_netns_enter(cli_js(pod, "netns")) == 0) {
		(void)signal(SIGPIPE, SIG_DFL);
		execvpe(argv[optind], argv + optind, env);
		r = errno;
		cli_err("cannot execute %s in pod %s/%s: %s", argv[optind], ns, pod_name,
			strerror(r));
		/* Shell convention: 127 not found, 126 found but not runnable. */
		r = r == ENOENT ? -127 : -126;
	}
	cli_lab_strv_free(env);
out:
	cli_lab_close(&lab);
	return r == -127 || r == -126 ? -r : CLI_EXIT_FAIL;
}
