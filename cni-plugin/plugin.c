/* SPDX-License-Identifier: Apache-2.0 */
/* meshlite-cni ADD/DEL/CHECK: enrollment map, tc capture program, pod registry (plugin.h). */
#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <linux/ethtool.h>
#include <linux/sockios.h>

#include "log.h"
#include "plugin.h"
#include "podreg.h"

#define SCOPE "cni"
#define MAX_ADDRS (2 * EBPF_CAPTURE_POD_MAX_ADDRS)

/* ---- addresses ---- */

/* The i-th address of @a (IPv4 first) as a map key and a string. */
static void addr_at(const struct ebpf_pod_addrs *a, unsigned int i, struct ebpf_enroll_key *k,
		    char *s, size_t len)
{
	memset(k, 0, sizeof(*k));
	if (i < a->n4) {
		k->family = AF_INET;
		memcpy(k->addr, &a->v4[i], sizeof(a->v4[i]));
		(void)inet_ntop(AF_INET, &a->v4[i], s, (socklen_t)len);
	} else {
		k->family = AF_INET6;
		memcpy(k->addr, &a->v6[i - a->n4], sizeof(a->v6[0]));
		(void)inet_ntop(AF_INET6, &a->v6[i - a->n4], s, (socklen_t)len);
	}
}

static bool addrs_has(const struct ebpf_pod_addrs *a, const struct ebpf_enroll_key *k)
{
	for (unsigned int i = 0; k->family == AF_INET && i < a->n4; i++)
		if (!memcmp(&a->v4[i], k->addr, sizeof(a->v4[i])))
			return true;
	for (unsigned int i = 0; k->family == AF_INET6 && i < a->n6; i++)
		if (!memcmp(&a->v6[i], k->addr, sizeof(a->v6[i])))
			return true;
	return false;
}

static bool addrs_equal(const struct ebpf_pod_addrs *a, const struct ebpf_pod_addrs *b)
{
	struct ebpf_enroll_key k;
	char s[INET6_ADDRSTRLEN];

	if (a->n4 != b->n4 || a->n6 != b->n6)
		return false;
	for (unsigned int i = 0; i < a->n4 + a->n6; i++) {
		addr_at(a, i, &k, s, sizeof(s));
		if (!addrs_has(b, &k))
			return false;
	}
	return true;
}

/* "10.1.0.5, fd00::5" for messages. */
static const char *addrs_str(const struct ebpf_pod_addrs *a, char *buf, size_t len)
{
	struct ebpf_enroll_key k;
	char s[INET6_ADDRSTRLEN];
	size_t off = 0;

	buf[0] = '\0';
	for (unsigned int i = 0; i < a->n4 + a->n6 && off < len; i++) {
		int n;

		addr_at(a, i, &k, s, sizeof(s));
		n = snprintf(buf + off, len - off, "%s%s", i ? ", " : "", s);
		if (n < 0)
			break;
		off += (size_t)n;
	}
	return buf;
}

/* ---- errors ---- */

/* Transient kernel conditions the runtime should retry (SPEC.md code 11). */
static int code_for(int r, int code)
{
	return r == -EAGAIN || r == -EBUSY || r == -EINTR ? CNI_ERR_TRY_AGAIN : code;
}

static const char *hint_for(int r)
{
	if (r == -EPERM || r == -EACCES)
		return " (meshlite-cni needs CAP_NET_ADMIN, CAP_BPF and CAP_SYS_ADMIN: the runtime "
		       "runs CNI plugins as root)";
	if (r == -ENOENT || r == -ENOTDIR)
		return " (is the BPF filesystem mounted at /sys/fs/bpf?)";
	return "";
}

/* ---- the host-side interface ---- */

/* The bridge plugin lists the bridge itself without a sandbox too: ask the driver. */
static bool is_bridge(const char *ifname)
{
	struct ethtool_drvinfo info = { .cmd = ETHTOOL_GDRVINFO };
	struct ifreq ifr;
	bool r = false;
	int fd;

	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return false;
	memset(&ifr, 0, sizeof(ifr));
	memcpy(ifr.ifr_name, ifname, strnlen(ifname, IFNAMSIZ - 1));
	ifr.ifr_data = (void *)&info;
	if (ioctl(fd, SIOCETHTOOL, &ifr) == 0)
		r = strncmp(info.driver, "bridge", sizeof(info.driver)) == 0;
	(void)close(fd);
	return r;
}

/* The one interface of prevResult without a sandbox that exists here and is not a bridge. */
static int host_if_pick(const struct cni_conf *c, char *ret_name, int *ret_ifindex,
			struct cni_err *err)
{
	char names[CNI_MAX_HOST_IFS * 18] = "";
	int found = 0, ifindex = 0;
	const char *name = NULL;

	for (unsigned int i = 0; i < c->n_host_ifs; i++) {
		unsigned int idx = if_nametoindex(c->host_ifs[i]);

		(void)snprintf(names + strlen(names), sizeof(names) - strlen(names), "%s%s",
			       i ? ", " : "", c->host_ifs[i]);
		if (idx == 0 || is_bridge(c->host_ifs[i]))
			continue;
		found++;
		name = c->host_ifs[i];
		ifindex = (int)idx;
	}
	if (found == 0)
		return cni_fail(err, CNI_ERR_HOST_IF,
				"no host-side interface of prevResult (%s) exists in this network "
				"namespace as a veth: run meshlite-cni where the runtime runs the "
				"plugin that created it (the node's namespace), right after it",
				names);
	if (found > 1)
		return cni_fail(err, CNI_ERR_HOST_IF,
				"prevResult lists several host-side interfaces (%s): cannot tell "
				"which one carries the pod's traffic",
				names);
	memcpy(ret_name, name, strlen(name) + 1);
	*ret_ifindex = ifindex;
	return 0;
}

/* ---- ADD ---- */

static void undo_entries(int map_fd, const struct ebpf_pod_addrs *a, const bool *inserted)
{
	struct ebpf_enroll_key k;
	char s[INET6_ADDRSTRLEN];

	for (unsigned int i = 0; i < a->n4 + a->n6; i++) {
		int r;

		if (!inserted[i])
			continue;
		addr_at(a, i, &k, s, sizeof(s));
		r = ebpf_enroll_del(map_fd, &k);
		if (r < 0)
			ml_log(ML_LOG_ERROR, SCOPE, "undo: cannot remove enrollment entry",
			       ML_LS("ip", s), ML_LS("error", strerror(-r)));
	}
}

int cni_plugin_add(const struct cni_conf *c, const struct cni_env *env, struct cni_err *err)
{
	bool inserted[MAX_ADDRS] = { false };
	struct ebpf_podreg *e = NULL;
	char host_if[IFNAMSIZ], s[INET6_ADDRSTRLEN], why[256];
	struct ebpf_enroll_key k;
	int map_fd, ifindex, r, ret = -1;

	if (host_if_pick(c, host_if, &ifindex, err) < 0)
		return -1;

	map_fd = ebpf_enroll_open(c->bpf_dir, true);
	if (map_fd < 0)
		return cni_fail(err, code_for(map_fd, CNI_ERR_ENROLL_MAP),
				"cannot open or create the node's enrollment map %s/%s: %s%s",
				c->bpf_dir, MESHLITE_ENROLL_MAP, strerror(-map_fd),
				hint_for(map_fd));

	/*
	 * PENDING until the agent knows the pod: its connections are dropped (TCP retries the
	 * SYN) instead of leaving uncaptured while the agent is down or slow. An entry already
	 * there is the agent's decision and stays.
	 */
	for (unsigned int i = 0; i < c->addrs.n4 + c->addrs.n6; i++) {
		addr_at(&c->addrs, i, &k, s, sizeof(s));
		r = ebpf_enroll_set(map_fd, &k, EBPF_ENROLL_PENDING, true);
		if (r == -EEXIST) {
			ml_log(ML_LOG_INFO, SCOPE, "enrollment entry exists, kept", ML_LS("ip", s),
			       ML_LI("state", ebpf_enroll_get(map_fd, &k)));
			continue;
		}
		if (r < 0) {
			cni_fail(err, code_for(r, CNI_ERR_ENROLL_MAP),
				 "cannot add %s to the enrollment map %s/%s: %s%s", s, c->bpf_dir,
				 MESHLITE_ENROLL_MAP, strerror(-r),
				 r == -E2BIG || r == -ENOSPC ? " (the map is full)" : "");
			goto err_entries;
		}
		inserted[i] = true;
	}

	r = ebpf_capture_attach_pod(ifindex, &c->addrs, map_fd);
	if (r < 0) {
		cni_fail(err, code_for(r, CNI_ERR_CAPTURE),
			 "cannot attach the capture program to %s (ifindex %d, tc ingress): %s%s",
			 host_if, ifindex, strerror(-r), hint_for(r));
		goto err_entries;
	}

	e = calloc(1, sizeof(*e));
	if (!e) {
		cni_fail(err, CNI_ERR_REGISTRY, "out of memory");
		goto err_detach;
	}
	memcpy(e->container_id, env->container_id, sizeof(e->container_id));
	memcpy(e->ifname, env->ifname, sizeof(e->ifname));
	memcpy(e->uid, env->k8s_uid, sizeof(e->uid));
	memcpy(e->ns, env->k8s_ns, sizeof(e->ns));
	memcpy(e->name, env->k8s_name, sizeof(e->name));
	memcpy(e->netns, env->netns, sizeof(e->netns));
	memcpy(e->host_if, host_if, sizeof(e->host_if));
	e->host_ifindex = ifindex;
	e->addrs = c->addrs;
	r = ebpf_podreg_check(e, why, sizeof(why));
	if (r < 0) {
		cni_fail(err, CNI_ERR_REGISTRY, "cannot register the pod: %s", why);
		goto err_detach;
	}
	r = ebpf_podreg_write(c->state_dir, e);
	if (r < 0) {
		cni_fail(err, code_for(r, CNI_ERR_REGISTRY),
			 "cannot write the pod's registry file under %s/pods: %s", c->state_dir,
			 strerror(-r));
		goto err_detach;
	}
	ml_log(ML_LOG_INFO, SCOPE, "pod added", ML_LS("container", env->container_id),
	       ML_LS("pod", env->k8s_name), ML_LS("namespace", env->k8s_ns),
	       ML_LS("hostInterface", host_if), ML_LI("ifindex", ifindex),
	       ML_LS("ips", addrs_str(&c->addrs, why, sizeof(why))));
	ret = 0;
	goto out;

err_detach:
	r = ebpf_capture_detach(ifindex);
	if (r < 0 && r != -ENODEV)
		ml_log(ML_LOG_ERROR, SCOPE, "undo: cannot detach the capture program",
		       ML_LS("interface", host_if), ML_LS("error", strerror(-r)));
err_entries:
	undo_entries(map_fd, &c->addrs, inserted);
	ml_log(ML_LOG_ERROR, SCOPE, "ADD failed", ML_LS("container", env->container_id),
	       ML_LS("error", err->msg));
out:
	free(e);
	(void)close(map_fd);
	return ret;
}

/* ---- DEL ---- */

struct owner_scan {
	const struct ebpf_podreg *self;
	bool taken[MAX_ADDRS];
};

/* Mark the addresses of @self that another registered pod claims now. */
static int owner_cb(const char *path, const struct ebpf_podreg *e, const char *why, void *ud)
{
	struct owner_scan *o = ud;
	struct ebpf_enroll_key k;
	char s[INET6_ADDRSTRLEN];

	if (!e) {
		ml_log(ML_LOG_WARN, SCOPE, "ignoring a malformed registry file",
		       ML_LS("error", why));
		return 0;
	}
	if (!strcmp(e->container_id, o->self->container_id) && !strcmp(e->ifname, o->self->ifname))
		return 0;
	for (unsigned int i = 0; i < o->self->addrs.n4 + o->self->addrs.n6; i++) {
		addr_at(&o->self->addrs, i, &k, s, sizeof(s));
		if (addrs_has(&e->addrs, &k))
			o->taken[i] = true;
	}
	return 0;
}

/* Our filter on the interface the registry recorded, if that interface still exists. */
static int del_detach(const struct ebpf_podreg *e, struct cni_err *err)
{
	char name[IF_NAMESIZE];
	int r;

	/* the same index under the same name: an interface recreated since is someone else's */
	if (!if_indextoname((unsigned int)e->host_ifindex, name) || strcmp(name, e->host_if))
		return 0;
	r = ebpf_capture_detach(e->host_ifindex);
	if (r < 0 && r != -ENODEV && r != -ENOENT)
		return cni_fail(err, code_for(r, CNI_ERR_CAPTURE),
				"cannot detach the capture program from %s (ifindex %d): %s%s",
				e->host_if, e->host_ifindex, strerror(-r), hint_for(r));
	return 0;
}

static int del_entries(const struct cni_conf *c, const struct ebpf_podreg *e, struct cni_err *err)
{
	struct owner_scan scan = { .self = e };
	struct ebpf_enroll_key k;
	char s[INET6_ADDRSTRLEN];
	int map_fd, r;

	map_fd = ebpf_enroll_open(c->bpf_dir, false);
	if (map_fd == -ENOENT)
		return 0;
	if (map_fd < 0)
		return cni_fail(err, code_for(map_fd, CNI_ERR_ENROLL_MAP),
				"cannot open the node's enrollment map %s/%s: %s%s", c->bpf_dir,
				MESHLITE_ENROLL_MAP, strerror(-map_fd), hint_for(map_fd));
	r = ebpf_podreg_foreach(c->state_dir, owner_cb, &scan);
	if (r < 0) {
		(void)close(map_fd);
		return cni_fail(err, CNI_ERR_REGISTRY,
				"cannot list the pod registry %s/pods to check who owns %s's "
				"addresses: %s",
				c->state_dir, e->name, strerror(-r));
	}
	for (unsigned int i = 0; i < e->addrs.n4 + e->addrs.n6; i++) {
		addr_at(&e->addrs, i, &k, s, sizeof(s));
		if (scan.taken[i]) {
			ml_log(ML_LOG_INFO, SCOPE, "address now registered to another pod, kept",
			       ML_LS("ip", s));
			continue;
		}
		r = ebpf_enroll_del(map_fd, &k);
		if (r < 0) {
			(void)close(map_fd);
			return cni_fail(err, code_for(r, CNI_ERR_ENROLL_MAP),
					"cannot remove %s from the enrollment map %s/%s: %s", s,
					c->bpf_dir, MESHLITE_ENROLL_MAP, strerror(-r));
		}
	}
	(void)close(map_fd);
	return 0;
}

/* No registry file (a second DEL, or an ADD that never finished): what prevResult says. */
static int del_from_prev(const struct cni_conf *c, struct cni_err *err)
{
	struct ebpf_pod_addrs attached = { 0 };
	struct cni_err ignored;
	char host_if[IFNAMSIZ];
	int ifindex, r;

	if (!c->prev || c->n_host_ifs == 0 || c->addrs.n4 + c->addrs.n6 == 0)
		return 0;
	if (host_if_pick(c, host_if, &ifindex, &ignored) < 0)
		return 0; /* gone with the netns, or never there: nothing of ours on it */
	/* only the program loaded for this pod: the name may be another pod's by now */
	if (ebpf_capture_pod_addrs(ifindex, &attached) < 0 || !addrs_equal(&attached, &c->addrs))
		return 0;
	r = ebpf_capture_detach(ifindex);
	if (r < 0 && r != -ENODEV && r != -ENOENT)
		return cni_fail(err, code_for(r, CNI_ERR_CAPTURE),
				"cannot detach the capture program from %s (ifindex %d): %s%s",
				host_if, ifindex, strerror(-r), hint_for(r));
	return 0;
}

int cni_plugin_del(const struct cni_conf *c, const struct cni_env *env, struct cni_err *err)
{
	struct ebpf_podreg *e;
	char path[PATH_MAX], why[PATH_MAX + 256];
	bool registered;
	int r;

	r = ebpf_podreg_path(c->state_dir, env->container_id, env->ifname, path, sizeof(path));
	if (r < 0)
		return cni_fail(err, CNI_ERR_INVALID_CONFIG,
				"stateDir \"%s\" is too long for the registry file name",
				c->state_dir);
	e = calloc(1, sizeof(*e));
	if (!e)
		return cni_fail(err, CNI_ERR_IO, "out of memory");
	r = ebpf_podreg_read(path, e, why, sizeof(why));
	if (r == 0 &&
	    (strcmp(e->container_id, env->container_id) || strcmp(e->ifname, env->ifname))) {
		/* "<id>-<if>" is ambiguous when both contain '-': the file is another pod's */
		ml_log(ML_LOG_WARN, SCOPE, "registry file belongs to another container, kept",
		       ML_LS("path", path), ML_LS("container", e->container_id));
		r = -ENOENT;
		path[0] = '\0';
	} else if (r < 0 && r != -ENOENT) {
		ml_log(ML_LOG_WARN, SCOPE, "unreadable registry file, removing it",
		       ML_LS("error", why));
	}

	registered = r == 0;
	if (registered) {
		if (del_detach(e, err) < 0 || del_entries(c, e, err) < 0)
			goto err;
	} else if (del_from_prev(c, err) < 0) {
		goto err;
	}
	/* last, so that a DEL that failed above finds the file again when retried */
	if (path[0]) {
		r = ebpf_podreg_remove(c->state_dir, env->container_id, env->ifname);
		if (r < 0) {
			cni_fail(err, code_for(r, CNI_ERR_REGISTRY),
				 "cannot remove the registry file %s: %s", path, strerror(-r));
			goto err;
		}
	}
	ml_log(ML_LOG_INFO, SCOPE, "pod deleted", ML_LS("container", env->container_id),
	       ML_LB("registered", registered));
	free(e);
	return 0;
err:
	ml_log(ML_LOG_ERROR, SCOPE, "DEL failed", ML_LS("container", env->container_id),
	       ML_LS("error", err->msg));
	free(e);
	return -1;
}

/* ---- CHECK ---- */

static int check_registry(const struct cni_conf *c, const struct cni_env *env, const char *host_if,
			  int ifindex, struct cni_err *err)
{
	char path[PATH_MAX], why[PATH_MAX + 256], a[256], b[256];
	const char *field = NULL;
	struct ebpf_podreg *e;
	int r;

	r = ebpf_podreg_path(c->state_dir, env->container_id, env->ifname, path, sizeof(path));
	if (r < 0)
		return cni_fail(err, CNI_ERR_INVALID_CONFIG,
				"stateDir \"%s\" is too long for the registry file name",
				c->state_dir);
	e = calloc(1, sizeof(*e));
	if (!e)
		return cni_fail(err, CNI_ERR_IO, "out of memory");
	r = ebpf_podreg_read(path, e, why, sizeof(why));
	if (r == -ENOENT) {
		free(e);
		return cni_fail(err, CNI_ERR_REGISTRY,
				"the pod is not registered with the node agent: %s does not exist; "
				"recreate the pod (DEL then ADD) to register it",
				path);
	}
	if (r < 0) {
		free(e);
		return cni_fail(
			err, CNI_ERR_REGISTRY,
			"the pod's registry file is unusable: %s; recreate the pod (DEL then "
			"ADD)",
			why);
	}
	if (strcmp(e->container_id, env->container_id))
		field = "containerId";
	else if (strcmp(e->ifname, env->ifname))
		field = "ifName";
	else if (strcmp(e->ns, env->k8s_ns))
		field = "podNamespace";
	else if (strcmp(e->name, env->k8s_name))
		field = "podName";
	else if (strcmp(e->uid, env->k8s_uid))
		field = "podUid";
	else if (strcmp(e->netns, env->netns))
		field = "netns";
	else if (strcmp(e->host_if, host_if))
		field = "hostInterface";
	else if (e->host_ifindex != ifindex)
		field = "hostIfindex";
	else if (!addrs_equal(&e->addrs, &c->addrs))
		field = "ips";
	if (field) {
		cni_fail(err, CNI_ERR_REGISTRY,
			 "the pod's registry file %s does not match the runtime's view: \"%s\" "
			 "differs (registered ips %s, prevResult ips %s); recreate the pod (DEL "
			 "then "
			 "ADD)",
			 path, field, addrs_str(&e->addrs, a, sizeof(a)),
			 addrs_str(&c->addrs, b, sizeof(b)));
		free(e);
		return -1;
	}
	free(e);
	return 0;
}

int cni_plugin_check(const struct cni_conf *c, const struct cni_env *env, struct cni_err *err)
{
	struct ebpf_pod_addrs attached = { 0 };
	struct ebpf_enroll_key k;
	char host_if[IFNAMSIZ], s[INET6_ADDRSTRLEN], a[256];
	int ifindex, map_fd, r;

	if (host_if_pick(c, host_if, &ifindex, err) < 0)
		goto err;
	r = ebpf_capture_pod_addrs(ifindex, &attached);
	if (r == -ENOENT) {
		cni_fail(err, CNI_ERR_CAPTURE,
			 "the capture program is not attached to %s (ifindex %d, tc ingress handle "
			 "0x%x prio %d): the pod's traffic is not captured; recreate the pod (DEL "
			 "then ADD) to attach it",
			 host_if, ifindex, MESHLITE_CAPTURE_TC_HANDLE, MESHLITE_CAPTURE_TC_PRIO);
		goto err;
	}
	if (r < 0) {
		cni_fail(err, code_for(r, CNI_ERR_CAPTURE),
			 "cannot query the capture program on %s (ifindex %d): %s%s", host_if,
			 ifindex, strerror(-r), hint_for(r));
		goto err;
	}
	if (!addrs_equal(&attached, &c->addrs)) {
		cni_fail(err, CNI_ERR_CAPTURE,
			 "the capture program on %s was loaded for other addresses (%s) than the "
			 "pod's (%s); recreate the pod (DEL then ADD)",
			 host_if, addrs_str(&attached, a, sizeof(a)),
			 addrs_str(&c->addrs, s, sizeof(s)));
		goto err;
	}
	if (check_registry(c, env, host_if, ifindex, err) < 0)
		goto err;

	map_fd = ebpf_enroll_open(c->bpf_dir, false);
	if (map_fd < 0) {
		cni_fail(err, code_for(map_fd, CNI_ERR_ENROLL_MAP),
			 "cannot open the node's enrollment map %s/%s: %s%s", c->bpf_dir,
			 MESHLITE_ENROLL_MAP, strerror(-map_fd), hint_for(map_fd));
		goto err;
	}
	for (unsigned int i = 0; i < c->addrs.n4 + c->addrs.n6; i++) {
		addr_at(&c->addrs, i, &k, s, sizeof(s));
		r = ebpf_enroll_get(map_fd, &k);
		if (r == EBPF_ENROLL_NONE || r < 0) {
			(void)close(map_fd);
			if (r < 0)
				cni_fail(err, code_for(r, CNI_ERR_ENROLL_MAP),
					 "cannot look %s up in the enrollment map %s/%s: %s", s,
					 c->bpf_dir, MESHLITE_ENROLL_MAP, strerror(-r));
			else
				cni_fail(err, CNI_ERR_ENROLL_MAP,
					 "the enrollment map %s/%s has no entry for the pod's "
					 "address "
					 "%s: the pod would run uncaptured if enrolled; recreate "
					 "the "
					 "pod (DEL then ADD)",
					 c->bpf_dir, MESHLITE_ENROLL_MAP, s);
			goto err;
		}
	}
	(void)close(map_fd);
	return 0;
err:
	ml_log(ML_LOG_ERROR, SCOPE, "CHECK failed", ML_LS("container", env->container_id),
	       ML_LS("error", err->msg));
	return -1;
}
