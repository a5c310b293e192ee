/* SPDX-License-Identifier: Apache-2.0 */
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <sys/resource.h>
#include <unistd.h>

#include "common.h"
#include "dashboard.h"
#include "json.h"

/* dashboard.html, embedded by scripts/embed.py (ztunnel/meson.build) */
extern const char zt_dashboard_html[];
extern const unsigned zt_dashboard_html_len;

#define MAX_SETUP_BUCKETS 64

/* ---------------------------------------------------------------- /proc/self */

/*
 * procfs files are generated in memory on read: reading them from the event loop does not
 * wait for a disk, like the admin handler's other work. @buf is NUL-terminated.
 */
static int read_small(const char *path, char *buf, size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = read(fd, buf, len - 1);
	if (n < 0)
		n = -errno;
	close(fd);
	if (n < 0)
		return (int)n;
	buf[n] = '\0';
	return 0;
}

/* "Name:   1234 kB" -> bytes; 0 when absent */
static uint64_t status_kb(const char *status, const char *name)
{
	size_t n = strlen(name);

	for (const char *p = status; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
		if (strncmp(p, name, n) == 0 && p[n] == ':')
			return strtoull(p + n + 1, NULL, 10) * 1024;
	return 0;
}

static unsigned count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	unsigned n = 0;

	if (!d)
		return 0;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n ? n - 1 : 0; /* not the descriptor opendir() holds */
}

/* Seconds since the epoch at which the kernel booted ("btime" in /proc/stat). */
static double boot_time(void)
{
	char buf[8192], *p;

	if (read_small("/proc/stat", buf, sizeof(buf)) < 0 || !(p = strstr(buf, "\nbtime ")))
		return 0;
	return strtod(p + 7, NULL);
}

int zt_dashboard__proc_sample(struct zt_proc_sample *ret)
{
	char stat[1024], status[4096], *p;
	unsigned long long f[22];
	long tck = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
	struct rlimit rl;
	int r;

	if ((r = read_small("/proc/self/stat", stat, sizeof(stat))) < 0 ||
	    (r = read_small("/proc/self/status", status, sizeof(status))) < 0)
		return r;
	/* proc(5): the command name in parentheses may hold anything; fields follow the last ')' */
	p = strrchr(stat, ')');
	if (!p || tck <= 0 || page <= 0)
		return -EBADMSG;
	p += 2;
	p = strchr(p, ' '); /* field 3, the state letter */
	for (unsigned i = 0; i < ARRAY_SIZE(f); i++) {
		char *end;
		if (!p)
			return -EBADMSG;
		f[i] = strtoull(p, &end, 10);
		if (end == p)
			return -EBADMSG;
		p = end;
	}
	/* f[i] is field i + 4: utime 14, stime 15, num_threads 20, starttime 22, vsize 23,
	 * rss 24 (pages) */
	*ret = (struct zt_proc_sample){
		.cpu_seconds = (double)(f[10] + f[11]) / (double)tck,
		.threads = (unsigned)f[16],
		.start_time_seconds = boot_time() + (double)f[18] / (double)tck,
		.vsize_bytes = f[19],
		.rss_bytes = status_kb(status, "VmRSS"),
		.rss_peak_bytes = status_kb(status, "VmHWM"),
		.open_fds = count_fds(),
	};
	if (!ret->rss_bytes)
		ret->rss_bytes = f[20] * (uint64_t)page;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
		ret->max_fds = rl.rlim_cur == RLIM_INFINITY ? UINT32_MAX : (unsigned)rl.rlim_cur;
	return 0;
}

static int put_family(struct ml_buf *out, const char *name, const char *type, const char *help,
		      const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static int put_family(struct ml_buf *out, const char *name, const char *type, const char *help,
		      const char *fmt, ...)
{
	char v[64];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(v, sizeof(v), fmt, ap);
	va_end(ap);
	return ml_buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n%s %s\n", name, help, name, type,
			     name, v);
}

int zt_dashboard_process_metrics(struct ml_buf *out)
{
	struct zt_proc_sample ps;
	size_t used = ml_buf_used(out);
	int r = zt_dashboard__proc_sample(&ps);

	if (r < 0)
		return 0; /* not on Linux procfs: leave the families out, like client_golang */
	/* client_golang's process collector: names, types and help text */
	r = put_family(out, "process_cpu_seconds_total", "counter",
		       "Total user and system CPU time spent in seconds.", "%.17g", ps.cpu_seconds);
	if (r >= 0)
		r = put_family(out, "process_max_fds", "gauge",
			       "Maximum number of open file descriptors.", "%u", ps.max_fds);
	if (r >= 0)
		r = put_family(out, "process_open_fds", "gauge", "Number of open file descriptors.",
			       "%u", ps.open_fds);
	if (r >= 0)
		r = put_family(out, "process_resident_memory_bytes", "gauge",
			       "Resident memory size in bytes.", "%" PRIu64, ps.rss_bytes);
	if (r >= 0)
		r = put_family(out, "process_start_time_seconds", "gauge",
			       "Start time of the process since unix epoch in seconds.", "%.17g",
			       ps.start_time_seconds);
	if (r >= 0)
		r = put_family(out, "process_virtual_memory_bytes", "gauge",
			       "Virtual memory size in bytes.", "%" PRIu64, ps.vsize_bytes);
	if (r < 0) /* all or nothing, like ml_metrics_render() */
		out->len = out->off + used;
	return r < 0 ? r : 0;
}

/* ---------------------------------------------------------------- /dashboard/data */

static uint64_t sum(const struct ml_family *f)
{
	double v = ml_family_sum(f);
	return v > 0 ? (uint64_t)v : 0;
}

static void put_setup(struct ml_json *j, const struct ml_family *f)
{
	uint64_t counts[MAX_SETUP_BUCKETS], total = 0;
	const double *le;
	int n = ml_family_buckets(f, &le, counts, MAX_SETUP_BUCKETS);

	ml_json_key(j, "setup_seconds");
	ml_json_obj_begin(j);
	if (n > MAX_SETUP_BUCKETS)
		n = -E2BIG;
	ml_json_key(j, "le");
	ml_json_arr_begin(j);
	for (int i = 0; i < n; i++) {
		if (i == n - 1)
			ml_json_null(j); /* +Inf: JSON has no infinity */
		else
			ml_json_double(j, le[i]);
	}
	ml_json_arr_end(j);
	ml_json_key(j, "counts");
	ml_json_arr_begin(j);
	for (int i = 0; i < n; i++) {
		ml_json_uint(j, counts[i]);
		total += counts[i];
	}
	ml_json_arr_end(j);
	ml_json_kv_uint(j, "count", total);
	ml_json_obj_end(j);
}

int zt_dashboard__data(const struct zt_dashboard_src *src, unsigned top, struct ml_buf *out)
{
	const struct zt_metrics *m = src->m;
	uint64_t live_to_dst = 0, live_to_src = 0;
	struct zt_proc_sample ps;
	struct ml_json j;

	ml_json_init(&j, out);
	ml_json_obj_begin(&j);
	ml_json_kv_int(&j, "version", 1);
	ml_json_kv_str(&j, "node", src->st->node);
	ml_json_kv_uint(&j, "uptime_ms", ml_now_ns() / 1000000);
	ml_json_kv_uint(&j, "time_ms", ml_wall_ms());
	/* first, so the byte totals below can add what the open relays have moved */
	ml_json_key(&j, "top_connections");
	if (src->proxy)
		zt_proxy_dump_top(src->proxy, &j, top, &live_to_dst, &live_to_src);
	else
		ml_json_null(&j);

	ml_json_key(&j, "connections");
	ml_json_obj_begin(&j);
	ml_json_kv_uint(&j, "opened", sum(m->opened));
	ml_json_kv_uint(&j, "closed", sum(m->closed));
	ml_json_kv_uint(&j, "active", src->proxy ? zt_proxy_active(src->proxy) : 0);
	ml_json_kv_uint(&j, "active_inbound", (uint64_t)ml_series_value(m->active_in));
	ml_json_kv_uint(&j, "active_outbound", (uint64_t)ml_series_value(m->active_out));
	ml_json_obj_end(&j);
	/* istio_tcp_received_bytes_total counts request bytes (source -> destination) */
	ml_json_key(&j, "bytes");
	ml_json_obj_begin(&j);
	ml_json_kv_uint(&j, "received", sum(m->received) + live_to_dst);
	ml_json_kv_uint(&j, "sent", sum(m->sent) + live_to_src);
	ml_json_obj_end(&j);
	ml_json_kv_uint(&j, "denied", sum(m->authz_denied));
	ml_json_key(&j, "tunnels");
	ml_json_obj_begin(&j);
	ml_json_kv_uint(&j, "inbound", (uint64_t)ml_series_value(m->tunnels_server));
	ml_json_kv_uint(&j, "outbound", (uint64_t)ml_series_value(m->tunnels_client));
	ml_json_obj_end(&j);
	put_setup(&j, m->setup);

	ml_json_key(&j, "process");
	if (zt_dashboard__proc_sample(&ps) == 0) {
		ml_json_obj_begin(&j);
		ml_json_key(&j, "cpu_seconds");
		ml_json_double(&j, ps.cpu_seconds);
		ml_json_kv_uint(&j, "rss_bytes", ps.rss_bytes);
		ml_json_kv_uint(&j, "rss_peak_bytes", ps.rss_peak_bytes);
		ml_json_kv_uint(&j, "threads", ps.threads);
		ml_json_kv_uint(&j, "open_fds", ps.open_fds);
		ml_json_obj_end(&j);
	} else {
		ml_json_null(&j);
	}
	ml_json_obj_end(&j);
	(void)ml_buf_puts(out, "\n");
	return ml_json_error(&j);
}

/* ---------------------------------------------------------------- HTTP */

static bool path_is(const struct ml_http1_req *req, const char *path)
{
	return memeq_str(req->path.p, req->path.len, path);
}

static void serve_data(const struct ml_http1_req *req, struct ml_admin_rsp *rsp,
		       const struct zt_dashboard_src *src)
{
	unsigned long top = ZT_DASHBOARD_TOP_DEFAULT;
	char v[16], *end;

	if (ml_http1_query(req, "top", v, sizeof(v)) > 0) {
		errno = 0;
		top = strtoul(v, &end, 10);
		if (errno || *end || top > ZT_PROXY_TOP_MAX) {
			rsp->status = 400;
			(void)ml_buf_printf(&rsp->body, "top must be 0..%d\n", ZT_PROXY_TOP_MAX);
			return;
		}
	}
	if (zt_dashboard__data(src, (unsigned)top, &rsp->body) < 0) {
		ml_buf_reset(&rsp->body);
		rsp->status = 500;
		(void)ml_buf_puts(&rsp->body, "dashboard data too large\n");
		return;
	}
	rsp->content_type = "application/json";
}

bool zt_dashboard_serve(const struct ml_http1_req *req, struct ml_admin_rsp *rsp,
			const struct zt_dashboard_src *src)
{
	if (path_is(req, "/dashboard") || path_is(req, "/dashboard/")) {
		if (ml_buf_append(&rsp->body, zt_dashboard_html, zt_dashboard_html_len) < 0)
			rsp->status = 500;
		rsp->content_type = "text/html; charset=utf-8";
		return true;
	}
	if (path_is(req, "/dashboard/data") || path_is(req, "/stats/dashboard")) {
		serve_data(req, rsp, src);
		return true;
	}
	return false;
}
