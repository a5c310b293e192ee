/* SPDX-License-Identifier: Apache-2.0 */
/* The node agent: enrollment map, pod registry, capture programs (see agent.h). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>


#include "agent.h"
#include "capture.h"
#include "common.h"
#include "log.h"
#include "podreg.h"

#define SCOPE "agent"
#define EVBUF (16 * (sizeof(struct inotify_event) + NAME_MAX + 1))
/* Safety net besides the control plane's updates, and how often capture is re-checked. */
#define TICK_NS (1000ull * 1000000ull)
#define RECHECK_TICKS 10
#define MAX_PODS 4096

enum pod_state { POD_PENDING, POD_ENROLLED, POD_NOT_ENROLLED, POD_FAILED };

static const char *const state_names[] = {
	[POD_PENDING] = "pending",
	[POD_ENROLLED] = "enrolled",
	[POD_NOT_ENROLLED] = "not_enrolled",
	[POD_FAILED] = "failed",
};

struct agent_pod {
	char file[NAME_MAX + 1];
	struct ebpf_podreg reg;
	enum pod_state state;
	bool logged; /* state above was logged */
	bool capture_ok;
	bool link_down; /* we took its interface down: no capture, so no traffic */
	char reason[200];
	struct agent_pod *next;
};

struct zt_agent {
	struct ml_loop *l;
	struct zt_state *st;
	const struct zt_agent_config *cfg;
	int map_fd, ino_fd;
	char pods_dir[PATH_MAX];
	struct ml_op ino_op;
	uint8_t *evbuf;
	struct ml_timer tick;
	unsigned ticks;
	struct agent_pod *pods;
	unsigned npods;
	bool uplink_ok;
	int lookup_link; /* capture_lookup's link: attached while open */
	char uplink_err[160];
	struct ml_family *pods_gauge, *failures;
};

/* ---- helpers ---- */

static void key_of(struct ebpf_enroll_key *k, int family, const void *addr)
{
	memset(k, 0, sizeof(*k));
	k->family = (uint32_t)family;
	memcpy(k->addr, addr, family == AF_INET ? 4 : 16);
}

static void zip_of(struct zt_ip *ip, const struct ebpf_enroll_key *k)
{
	memset(ip, 0, sizeof(*ip));
	ip->family = (uint8_t)k->family;
	memcpy(ip->addr, k->addr, k->family == AF_INET ? 4 : 16);
}

/* The pod's @i-th address as a map key; false past the last one. */
static bool pod_key(const struct agent_pod *pod, unsigned i, struct ebpf_enroll_key *k)
{
	const struct ebpf_pod_addrs *a = &pod->reg.addrs;

	if (i < a->n4)
		key_of(k, AF_INET, &a->v4[i]);
	else if (i - a->n4 < a->n6)
		key_of(k, AF_INET6, &a->v6[i - a->n4]);
	else
		return false;
	return true;
}

static void pod_ips(const struct agent_pod *pod, char *buf, size_t len)
{
	struct ebpf_enroll_key k;
	size_t off = 0;

	buf[0] = '\0';
	for (unsigned ki = 0; pod_key(pod, ki, &k); ki++) {
		char a[INET6_ADDRSTRLEN];
		int n = snprintf(buf + off, len - off, "%s%s", off ? "," : "",
				 ebpf_enroll_key_str(&k, a, sizeof(a)));
		if (n < 0 || (size_t)n >= len - off)
			break;
		off += (size_t)n;
	}
}

static void fail_count(struct zt_agent *a, const char *reason)
{
	ml_counter_add(ml_series_get(a->failures, (const char *[]){ reason }), 1);
}

/* Bring the pod's host-side interface up or down (SIOCSIFFLAGS, in our namespace). */
static int set_link(const char *ifname, bool up)
{
	struct ifreq ifr;
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0), r = 0;

	if (fd < 0)
		return -errno;
	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", ifname);
	if (ioctl(fd, SIOCGIFFLAGS, &ifr) < 0) {
		r = -errno;
	} else if (!!(ifr.ifr_flags & IFF_UP) != up) {
		if (up)
			ifr.ifr_flags |= IFF_UP;
		else
			ifr.ifr_flags &= ~IFF_UP;
		if (ioctl(fd, SIOCSIFFLAGS, &ifr) < 0)
			r = -errno;
	}
	close(fd);
	return r;
}

/* ---- capture of one pod ---- */

/*
 * Make sure capture_pod is on the pod's interface (meshlite-cni put it there; it stays
 * across our restarts, but someone may have removed it). A pod whose capture cannot be
 * restored is cut off (its interface goes down): never uncaptured traffic from a pod that
 * may be in the mesh.
 */
static void pod_check_capture(struct zt_agent *a, struct agent_pod *pod)
{
	unsigned idx = if_nametoindex(pod->reg.host_if);
	int r;

	if (!idx) {
		pod->capture_ok = false;
		snprintf(pod->reason, sizeof(pod->reason),
			 "host interface %s is gone (the pod was deleted without CNI DEL?)",
			 pod->reg.host_if);
		return;
	}
	if (ebpf_capture_attached((int)idx)) {
		pod->capture_ok = true;
	} else {
		r = ebpf_capture_attach_pod((int)idx, &pod->reg.addrs, a->map_fd);
		if (r == 0) {
			pod->capture_ok = true;
			ml_log(ML_LOG_WARN, SCOPE, "capture program was missing, re-attached",
			       ML_LS("pod", pod->reg.name), ML_LS("namespace", pod->reg.ns),
			       ML_LS("interface", pod->reg.host_if));
			fail_count(a, "program_missing");
		} else {
			pod->capture_ok = false;
			snprintf(pod->reason, sizeof(pod->reason),
				 "cannot attach the capture program to %s: %s", pod->reg.host_if,
				 strerror(-r));
			fail_count(a, "attach_failed");
		}
	}
	if (!pod->capture_ok && !pod->link_down) {
		r = set_link(pod->reg.host_if, false);
		pod->link_down = r == 0;
		ml_log(ML_LOG_ERROR, SCOPE, "pod isolated: its traffic cannot be captured",
		       ML_LS("pod", pod->reg.name), ML_LS("namespace", pod->reg.ns),
		       ML_LS("interface", pod->reg.host_if), ML_LS("reason", pod->reason),
		       ML_LS("link_down", r == 0 ? "yes" : strerror(-r)));
	} else if (pod->capture_ok && pod->link_down) {
		if (set_link(pod->reg.host_if, true) == 0)
			pod->link_down = false;
	}
}

/* The state the control plane gives an address. */
static enum ebpf_enroll_state desired(const struct zt_agent *a, const struct ebpf_enroll_key *k)
{
	struct zt_ip ip;
	const struct zt_workload *w;

	zip_of(&ip, k);
	w = zt_state_workload_by_ip(a->st, &ip);
	if (!w)
		return EBPF_ENROLL_PENDING;
	return w->tunnel == ZT_TUNNEL_HBONE ? EBPF_ENROLL_ENROLLED : EBPF_ENROLL_NONE;
}

static void pod_reconcile(struct zt_agent *a, struct agent_pod *pod)
{
	enum pod_state st = POD_NOT_ENROLLED;
	struct ebpf_enroll_key k;
	char err[160] = "";

	for (unsigned ki = 0; pod_key(pod, ki, &k); ki++) {
		enum ebpf_enroll_state want = desired(a, &k);
		int cur = ebpf_enroll_get(a->map_fd, &k), r = 0;

		if (cur < 0)
			r = cur;
		else if (want == EBPF_ENROLL_NONE && cur != EBPF_ENROLL_NONE)
			r = ebpf_enroll_del(a->map_fd, &k);
		else if (want != EBPF_ENROLL_NONE && cur != (int)want)
			r = ebpf_enroll_set(a->map_fd, &k, want, false);
		if (r < 0) {
			char ab[INET6_ADDRSTRLEN];
			snprintf(err, sizeof(err), "enrollment map update for %s: %s",
				 ebpf_enroll_key_str(&k, ab, sizeof(ab)), strerror(-r));
			fail_count(a, "map_update");
		}
		if (want == EBPF_ENROLL_PENDING)
			st = POD_PENDING;
		else if (want == EBPF_ENROLL_ENROLLED && st != POD_PENDING)
			st = POD_ENROLLED;
	}
	if (err[0]) {
		st = POD_FAILED;
		snprintf(pod->reason, sizeof(pod->reason), "%s", err);
	} else if (!pod->capture_ok) {
		st = POD_FAILED;
	} else if (st == POD_PENDING) {
		snprintf(pod->reason, sizeof(pod->reason),
			 "the control plane does not know this pod's address yet; new connections "
			 "are dropped until it does");
	} else {
		pod->reason[0] = '\0';
	}
	if (st != pod->state || !pod->logged) {
		char ips[200];
		pod_ips(pod, ips, sizeof(ips));
		ml_log(st == POD_FAILED ? ML_LOG_ERROR : ML_LOG_INFO, SCOPE, "pod capture state",
		       ML_LS("pod", pod->reg.name), ML_LS("namespace", pod->reg.ns),
		       ML_LS("ips", ips), ML_LS("interface", pod->reg.host_if),
		       ML_LS("state", state_names[st]),
		       ML_LS("previous", pod->logged ? state_names[pod->state] : NULL),
		       ML_LS("reason", pod->reason[0] ? pod->reason : NULL));
		pod->state = st;
		pod->logged = true;
	}
}

static void update_gauge(struct zt_agent *a)
{
	unsigned n[ARRAY_SIZE(state_names)] = { 0 };

	for (struct agent_pod *p = a->pods; p; p = p->next)
		n[p->state]++;
	for (size_t i = 0; i < ARRAY_SIZE(state_names); i++)
		ml_gauge_set(ml_series_get(a->pods_gauge, (const char *[]){ state_names[i] }),
			     n[i]);
}

void zt_agent_reconcile(struct zt_agent *a)
{
	if (!a)
		return;
	for (struct agent_pod *p = a->pods; p; p = p->next)
		pod_reconcile(a, p);
	update_gauge(a);
}

/* ---- the registry ---- */

static struct agent_pod *pod_find(struct zt_agent *a, const char *file, struct agent_pod ***ret_pp)
{
	for (struct agent_pod **pp = &a->pods; *pp; pp = &(*pp)->next) {
		if (strcmp((*pp)->file, file) == 0) {
			if (ret_pp)
				*ret_pp = pp;
			return *pp;
		}
	}
	return NULL;
}

/* Is @k an address of a registered pod other than @except? */
static bool key_in_use(struct zt_agent *a, const struct ebpf_enroll_key *k,
		       const struct agent_pod *except)
{
	for (struct agent_pod *p = a->pods; p; p = p->next) {
		struct ebpf_enroll_key o;
		if (p == except)
			continue;
		for (unsigned ki = 0; pod_key(p, ki, &o); ki++) {
			if (memcmp(&o, k, sizeof(o)) == 0)
				return true;
		}
	}
	return false;
}

static void pod_forget(struct zt_agent *a, const char *file)
{
	struct agent_pod **pp, *pod = pod_find(a, file, &pp);
	struct ebpf_enroll_key k;

	if (!pod)
		return;
	/* meshlite-cni's DEL removes them too; an address reused by a newer pod stays */
	for (unsigned ki = 0; pod_key(pod, ki, &k); ki++) {
		if (!key_in_use(a, &k, pod))
			(void)ebpf_enroll_del(a->map_fd, &k);
	}
	ml_log(ML_LOG_INFO, SCOPE, "pod removed", ML_LS("pod", pod->reg.name),
	       ML_LS("namespace", pod->reg.ns), ML_LS("container", pod->reg.container_id));
	*pp = pod->next;
	a->npods--;
	free(pod);
}

static void pod_adopt(struct zt_agent *a, const char *file, const struct ebpf_podreg *reg)
{
	struct agent_pod *pod = pod_find(a, file, NULL);

	if (!pod) {
		if (a->npods >= MAX_PODS) {
			ml_log(ML_LOG_ERROR, SCOPE, "too many pods on this node, not adopting",
			       ML_LS("file", file), ML_LU("max", MAX_PODS));
			fail_count(a, "too_many_pods");
			return;
		}
		pod = calloc(1, sizeof(*pod));
		if (!pod) {
			fail_count(a, "out_of_memory");
			return;
		}
		snprintf(pod->file, sizeof(pod->file), "%s", file);
		pod->state = POD_PENDING;
		pod->next = a->pods;
		a->pods = pod;
		a->npods++;
	}
	pod->reg = *reg;
	pod_check_capture(a, pod);
	pod_reconcile(a, pod);
}

static bool registry_name(const char *name)
{
	size_t n = strlen(name);

	return name[0] != '.' && n > 5 && strcmp(name + n - 5, ".json") == 0;
}

static void load_file(struct zt_agent *a, const char *name)
{
	char path[PATH_MAX], err[PATH_MAX + 200];
	struct ebpf_podreg *reg;
	int r;

	if (snprintf(path, sizeof(path), "%s/%s", a->pods_dir, name) >= (int)sizeof(path))
		return;
	reg = malloc(sizeof(*reg));
	if (!reg)
		return;
	r = ebpf_podreg_read(path, reg, err, sizeof(err));
	if (r == -ENOENT) {
		pod_forget(a, name);
	} else if (r < 0) {
		/* keep what we had: one bad file never disturbs the pods we know */
		ml_log(ML_LOG_ERROR, SCOPE, "pod registry file rejected", ML_LS("file", path),
		       ML_LS("error", err));
		fail_count(a, "bad_registry_file");
	} else {
		pod_adopt(a, name, reg);
	}
	free(reg);
}

static int scan_one(const char *path, const struct ebpf_podreg *e, const char *err, void *ud)
{
	struct zt_agent *a = ud;
	const char *name = strrchr(path, '/');

	name = name ? name + 1 : path;
	if (!e) {
		ml_log(ML_LOG_ERROR, SCOPE, "pod registry file rejected", ML_LS("file", path),
		       ML_LS("error", err));
		fail_count(a, "bad_registry_file");
		return 0;
	}
	pod_adopt(a, name, e);
	return 0;
}

static void rescan(struct zt_agent *a)
{
	int r = ebpf_podreg_foreach(a->cfg->cni_dir, scan_one, a);

	if (r < 0)
		ml_log(ML_LOG_ERROR, SCOPE, "cannot read the pod registry",
		       ML_LS("dir", a->pods_dir), ML_LS("error", strerror(-r)));
	/* files that vanished while we were not watching */
	for (struct agent_pod *p = a->pods, *n; p; p = n) {
		char path[PATH_MAX];
		n = p->next;
		if (snprintf(path, sizeof(path), "%s/%s", a->pods_dir, p->file) < (int)sizeof(path) &&
		    access(path, F_OK) < 0 && errno == ENOENT)
			pod_forget(a, p->file);
	}
	update_gauge(a);
}

static void ino_arm(struct zt_agent *a);

static void on_events(struct ml_loop *l, struct ml_op *op, int res, uint32_t flags)
{
	struct zt_agent *a = container_of(op, struct zt_agent, ino_op);
	size_t off = 0;
	(void)l;
	(void)flags;

	if (res == -ECANCELED)
		return;
	if (res == -EAGAIN || res == -EINTR) {
		ino_arm(a); /* the tick also rescans */
		return;
	}
	if (res <= 0) {
		ml_log(ML_LOG_ERROR, SCOPE, "cannot read registry events, rescanning once a second",
		       ML_LS("dir", a->pods_dir), ML_LS("error", strerror(res ? -res : EIO)));
		return;
	}
	while (off + sizeof(struct inotify_event) <= (size_t)res) {
		const struct inotify_event *ev = (const void *)(a->evbuf + off);
		size_t sz = sizeof(*ev) + ev->len;

		if (off + sz > (size_t)res)
			break;
		off += sz;
		if (ev->mask & IN_Q_OVERFLOW) {
			rescan(a);
			continue;
		}
		if (!ev->len || !registry_name(ev->name))
			continue;
		if (ev->mask & (IN_CLOSE_WRITE | IN_MOVED_TO))
			load_file(a, ev->name);
		else if (ev->mask & (IN_DELETE | IN_MOVED_FROM))
			pod_forget(a, ev->name);
	}
	update_gauge(a);
	ino_arm(a);
}

static void ino_arm(struct zt_agent *a)
{
	if (a->ino_fd >= 0)
		ml_loop_read(a->l, &a->ino_op, a->ino_fd, a->evbuf, EVBUF);
}

static void on_tick(struct ml_timer *t)
{
	struct zt_agent *a = t->ud;

	if (++a->ticks % RECHECK_TICKS == 0) {
		for (struct agent_pod *p = a->pods; p; p = p->next)
			pod_check_capture(a, p);
		if (a->ino_fd < 0 || !a->ino_op.busy)
			rescan(a);
	}
	zt_agent_reconcile(a);
}

/* ---- lifecycle ---- */

static int attach_uplink(struct zt_agent *a)
{
	unsigned idx = if_nametoindex(a->cfg->uplink);
	int r;

	if (!idx)
		return -errno;
	/* replaced atomically: the old program runs until the new one is in */
	r = ebpf_capture_attach((int)idx, EBPF_CAPTURE_NODE, a->map_fd);
	return r;
}

struct zt_agent *zt_agent_new(struct ml_loop *l, struct zt_state *st, struct ml_metrics *reg,
			      char *err, size_t errlen)
{
	const struct zt_agent_config *cfg = st->agent;
	struct zt_agent *a;
	int r;

	if (!cfg) {
		snprintf(err, errlen, "no node_agent configuration");
		errno = EINVAL;
		return NULL;
	}
	a = calloc(1, sizeof(*a));
	if (!a || !(a->evbuf = malloc(EVBUF))) {
		free(a);
		snprintf(err, errlen, "out of memory");
		errno = ENOMEM;
		return NULL;
	}
	a->l = l;
	a->st = st;
	a->cfg = cfg;
	a->map_fd = -1;
	a->ino_fd = -1;
	a->lookup_link = -1;
	ebpf_libbpf_log();
	a->pods_gauge = ml_family_new(reg, "meshlite_node_pods",
				      "Pods registered on this node by meshlite-cni, by capture state",
				      ML_GAUGE, (const char *[]){ "state" }, 1, NULL, 0);
	a->failures = ml_family_new(reg, "meshlite_capture_failures_total",
				    "Capture problems the node agent met, by reason", ML_COUNTER,
				    (const char *[]){ "reason" }, 1, NULL, 0);
	if (!a->pods_gauge || !a->failures) {
		snprintf(err, errlen, "out of memory");
		r = -ENOMEM;
		goto fail;
	}
	r = ebpf_capture_routing_setup();
	if (r < 0) {
		snprintf(err, errlen, "capture routing (ip rule fwmark 0x%x lookup %d): %s",
			 MESHLITE_CAPTURE_MARK, MESHLITE_CAPTURE_TABLE, strerror(-r));
		goto fail;
	}
	a->map_fd = ebpf_enroll_open(cfg->bpf_dir, true);
	if (a->map_fd < 0) {
		r = a->map_fd;
		snprintf(err, errlen, "enrollment map %s/%s: %s%s", cfg->bpf_dir, MESHLITE_ENROLL_MAP,
			 strerror(-r),
			 r == -EBADF ? " (a pinned object of another kind is in the way)"
			 : r == -ENOENT || r == -EPERM
				 ? " (is a bpffs mounted there? `ip netns exec` remounts /sys "
				   "without it: enter the network namespace with nsenter --net)"
				 : "");
		goto fail;
	}
	if (cfg->uplink) {
		r = attach_uplink(a);
		if (r < 0) {
			snprintf(err, errlen, "cannot attach the node capture program to %s: %s",
				 cfg->uplink, strerror(-r));
			goto fail;
		}
		a->uplink_ok = true;
	}
	if (snprintf(a->pods_dir, sizeof(a->pods_dir), "%s/pods", cfg->cni_dir) >=
	    (int)sizeof(a->pods_dir)) {
		snprintf(err, errlen, "cni_dir is too long");
		r = -ENAMETOOLONG;
		goto fail;
	}
	r = ebpf_mkdir_p(a->pods_dir);
	if (r < 0) {
		snprintf(err, errlen, "cannot create %s: %s", a->pods_dir, strerror(-r));
		goto fail;
	}
	a->ino_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (a->ino_fd < 0 ||
	    inotify_add_watch(a->ino_fd, a->pods_dir,
			      IN_CLOSE_WRITE | IN_MOVED_TO | IN_DELETE | IN_MOVED_FROM) < 0) {
		r = -errno;
		snprintf(err, errlen, "cannot watch %s: %s", a->pods_dir, strerror(errno));
		goto fail;
	}
	/* watch first, then scan: a pod registered in between is seen at least once */
	rescan(a);
	a->ino_op.cb = on_events;
	ino_arm(a);
	a->tick.fn = on_tick;
	a->tick.ud = a;
	ml_timer_start(l, &a->tick, TICK_NS, TICK_NS);
	ml_log(ML_LOG_INFO, SCOPE, "node agent started", ML_LS("bpf_dir", cfg->bpf_dir),
	       ML_LS("registry", a->pods_dir), ML_LS("uplink", cfg->uplink),
	       ML_LU("pods_adopted", a->npods));
	return a;
fail:
	zt_agent_free(a);
	errno = -r;
	return NULL;
}

struct zt_agent *zt_agent_free(struct zt_agent *a)
{
	if (!a)
		return NULL;
	if (a->tick.fn)
		ml_timer_stop(a->l, &a->tick);
	if (a->ino_op.busy)
		ml_loop_cancel(a->l, &a->ino_op);
	/* the pinned map, the programs and the fwmark rule stay: capture outlives us */
	if (a->lookup_link >= 0)
		close(a->lookup_link);
	if (a->ino_fd >= 0)
		close(a->ino_fd);
	if (a->map_fd >= 0)
		close(a->map_fd);
	while (a->pods) {
		struct agent_pod *p = a->pods;
		a->pods = p->next;
		free(p);
	}
	free(a->evbuf);
	free(a);
	return NULL;
}

int zt_agent_attach_lookup(struct zt_agent *a, const int fds[3])
{
	int ns = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC), r;

	if (ns < 0) {
		r = -errno;
	} else {
		r = ebpf_lookup_attach(ns, a->map_fd, fds);
		close(ns);
	}
	if (r < 0) {
		ml_log(ML_LOG_WARN, SCOPE,
		       "cannot attach the listener lookup; a client reusing the port of a "
		       "connection ztunnel closed will wait for its TIME_WAIT to expire",
		       ML_LS("error", strerror(-r)));
		fail_count(a, "lookup_attach");
		return r;
	}
	if (a->lookup_link >= 0)
		close(a->lookup_link);
	a->lookup_link = r;
	return 0;
}

void zt_agent_dump(const struct zt_agent *a, struct ml_json *j)
{
	ml_json_key(j, "capture");
	ml_json_obj_begin(j);
	ml_json_kv_str(j, "bpf_dir", a->cfg->bpf_dir);
	ml_json_kv_str(j, "registry", a->pods_dir);
	ml_json_kv_str(j, "uplink", a->cfg->uplink);
	ml_json_kv_bool(j, "uplink_attached", a->uplink_ok);
	ml_json_kv_bool(j, "listener_lookup", a->lookup_link >= 0);
	ml_json_obj_end(j);
	ml_json_key(j, "pods");
	ml_json_arr_begin(j);
	for (const struct agent_pod *p = a->pods; p; p = p->next) {
		struct ebpf_enroll_key k;
		ml_json_obj_begin(j);
		ml_json_kv_str(j, "namespace", p->reg.ns);
		ml_json_kv_str(j, "name", p->reg.name);
		ml_json_kv_str(j, "uid", p->reg.uid);
		ml_json_kv_str(j, "container_id", p->reg.container_id);
		ml_json_kv_str(j, "interface", p->reg.host_if);
		ml_json_key(j, "ips");
		ml_json_arr_begin(j);
		for (unsigned ki = 0; pod_key(p, ki, &k); ki++) {
			char ab[INET6_ADDRSTRLEN];
			ml_json_str(j, ebpf_enroll_key_str(&k, ab, sizeof(ab)));
		}
		ml_json_arr_end(j);
		ml_json_kv_str(j, "state", state_names[p->state]);
		ml_json_kv_bool(j, "capture_attached", p->capture_ok);
		ml_json_kv_str(j, "reason", p->reason[0] ? p->reason : NULL);
		ml_json_obj_end(j);
	}
	ml_json_arr_end(j);
}
