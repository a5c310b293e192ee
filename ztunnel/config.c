/* SPDX-License-Identifier: Apache-2.0 */
/* The static configuration file (docs/ztunnel-config.md) -> struct zt_state. */
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/stat.h>

#include "common.h"
#include "config_policy.h"
#include "loop.h"
#include "state.h"

#define CONFIG_MAX_BYTES (64u << 20)
#define PEM_MAX_BYTES (1u << 20)

static int fail(char *err, size_t errlen, int code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static int fail(char *err, size_t errlen, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return code;
}

/* Read a whole (small) file; NUL-terminated. */
static int read_file(const char *path, size_t max, char **ret)
{
	FILE *f = fopen(path, "re");
	if (!f)
		return -errno;
	struct stat stt;
	if (fstat(fileno(f), &stt) < 0 || stt.st_size < 0 || (size_t)stt.st_size > max) {
		fclose(f);
		return -EFBIG;
	}
	char *buf = malloc((size_t)stt.st_size + 1);
	if (!buf) {
		fclose(f);
		return -ENOMEM;
	}
	size_t n = fread(buf, 1, (size_t)stt.st_size, f);
	fclose(f);
	buf[n] = '\0';
	*ret = buf;
	return 0;
}

/* Optional string field: returns 0 and a strdup (or NULL if absent), -EINVAL if not a string. */
static int opt_str(json_t *obj, const char *key, char **ret)
{
	json_t *v = json_object_get(obj, key);
	*ret = NULL;
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_string(v))
		return -EINVAL;
	*ret = strdup(json_string_value(v));
	return *ret ? 0 : -ENOMEM;
}

static int parse_workload(json_t *o, unsigned idx, const char *default_td, struct zt_workload **ret,
			  char *err, size_t errlen)
{
	struct zt_workload *w = zt_workload_new();
	if (!w)
		return -ENOMEM;
	struct {
		const char *key;
		char **dst;
	} fields[] = {
		{ "uid", &w->uid },
		{ "name", &w->name },
		{ "namespace", &w->ns },
		{ "service_account", &w->service_account },
		{ "trust_domain", &w->trust_domain },
		{ "node", &w->node },
		{ "cluster_id", &w->cluster_id },
		{ "workload_name", &w->workload_name },
		{ "workload_type", &w->workload_type },
		{ "canonical_name", &w->canonical_name },
		{ "canonical_revision", &w->canonical_revision },
	};
	int r;
	for (size_t i = 0; i < ARRAY_SIZE(fields); i++) {
		if ((r = opt_str(o, fields[i].key, fields[i].dst)) < 0) {
			r = fail(err, errlen, r, "workloads[%u].%s: must be a string", idx,
				 fields[i].key);
			goto out;
		}
	}
	if (!w->name || !w->ns) {
		r = fail(err, errlen, -EINVAL, "workloads[%u]: name and namespace are required", idx);
		goto out;
	}
	/* Istio: empty service account means "default", empty trust domain the mesh's. */
	if (!w->service_account && !(w->service_account = strdup("default"))) {
		r = -ENOMEM;
		goto out;
	}
	if (!w->trust_domain && !(w->trust_domain = strdup(default_td))) {
		r = -ENOMEM;
		goto out;
	}
	json_t *addrs = json_object_get(o, "addresses");
	if (!json_is_array(addrs) || json_array_size(addrs) == 0 ||
	    json_array_size(addrs) > ZT_MAX_ADDRS) {
		r = fail(err, errlen, -EINVAL, "workloads[%u] (%s/%s): addresses must be a list of 1..%d IPs",
			 idx, w->ns, w->name, ZT_MAX_ADDRS);
		goto out;
	}
	size_t ai;
	json_t *av;
	json_array_foreach(addrs, ai, av)
	{
		if (!json_is_string(av) || zt_ip_parse(json_string_value(av), &w->addrs[ai]) < 0) {
			r = fail(err, errlen, -EINVAL, "workloads[%u] (%s/%s): addresses[%zu] is not an IP",
				 idx, w->ns, w->name, ai);
			goto out;
		}
		w->naddrs++;
	}
	json_t *aps = json_object_get(o, "authorization_policies");
	if (aps && (!json_is_array(aps) || json_array_size(aps) > ZT_MAX_WORKLOAD_POLICIES)) {
		r = fail(err, errlen, -EINVAL,
			 "workloads[%u] (%s/%s): authorization_policies must be a list of at most "
			 "%d names",
			 idx, w->ns, w->name, ZT_MAX_WORKLOAD_POLICIES);
		goto out;
	}
	if (aps && json_array_size(aps) &&
	    !(w->authz_policies = calloc(json_array_size(aps), sizeof(char *)))) {
		r = -ENOMEM;
		goto out;
	}
	json_array_foreach(aps, ai, av) {
		if (!json_is_string(av) || !*json_string_value(av)) {
			r = fail(err, errlen, -EINVAL,
				 "workloads[%u] (%s/%s): authorization_policies[%zu] must be a "
				 "\"ns/name\"",
				 idx, w->ns, w->name, ai);
			goto out;
		}
		if (!(w->authz_policies[ai] = strdup(json_string_value(av)))) {
			r = -ENOMEM;
			goto out;
		}
		w->nauthz_policies++;
	}
	const char *tp = json_string_value(json_object_get(o, "tunnel_protocol"));
	if (!tp || streq(tp, "NONE"))
		w->tunnel = ZT_TUNNEL_NONE;
	else if (streq(tp, "HBONE"))
		w->tunnel = ZT_TUNNEL_HBONE;
	else {
		r = fail(err, errlen, -EINVAL, "workloads[%u] (%s/%s): tunnel_protocol must be HBONE or NONE",
			 idx, w->ns, w->name);
		goto out;
	}
	if (zt_workload_finish(w) < 0) {
		r = fail(err, errlen, -EINVAL, "workloads[%u]: identity %s is not a valid SPIFFE ID", idx,
			 w->spiffe ? w->spiffe : "?");
		goto out;
	}
	*ret = w;
	return 0;
out:
	zt_workload_unref(w);
	return r;
}

static int load_cert(struct zt_state *st, json_t *o, unsigned idx, const char *roots, char *err,
		     size_t errlen)
{
	struct zt_cert *c = &st->certs[idx];
	const char *id = json_string_value(json_object_get(o, "identity"));
	int r;
	if (opt_str(o, "cert_chain", &c->chain_path) < 0 || opt_str(o, "key", &c->key_path) < 0 ||
	    !id || !c->chain_path || !c->key_path)
		return fail(err, errlen, -EINVAL,
			    "certificates[%u]: identity, cert_chain and key are required strings", idx);
	if (ml_spiffe_parse(id, strlen(id), &c->identity) < 0)
		return fail(err, errlen, -EINVAL, "certificates[%u]: '%s' is not a valid SPIFFE ID",
			    idx, id);
	snprintf(c->spiffe, sizeof(c->spiffe), "%s", id);
	char *chain = NULL, *key = NULL;
	if ((r = read_file(c->chain_path, PEM_MAX_BYTES, &chain)) < 0)
		return fail(err, errlen, r, "certificates[%u]: read %s: %s", idx, c->chain_path,
			    strerror(-r));
	if ((r = read_file(c->key_path, PEM_MAX_BYTES, &key)) < 0) {
		free(chain);
		return fail(err, errlen, r, "certificates[%u]: read %s: %s", idx, c->key_path,
			    strerror(-r));
	}
	char why[256] = "";
	c->ctx = ml_tls_ctx_new(chain, key, roots, st->trust_domain, why, sizeof(why));
	size_t klen = strlen(key);
	memset(key, 0, klen); /* private key material: do not leave it in freed memory */
	__asm__ __volatile__("" : : "r"(key) : "memory");
	free(key);
	free(chain);
	if (!c->ctx)
		return fail(err, errlen, -EINVAL, "certificates[%u] (%s): %s", idx, id, why);
	const struct ml_spiffe_id *own = ml_tls_ctx_identity(c->ctx);
	if (!own || !ml_spiffe_eq(own, &c->identity))
		return fail(err, errlen, -EINVAL,
			    "certificates[%u]: %s holds a certificate for another identity", idx,
			    c->chain_path);
	c->not_after = ml_tls_ctx_not_after(c->ctx);
	return 0;
}

static int listen_addr(json_t *listen, const char *key, const char *def, char **ret, char *err,
		       size_t errlen)
{
	int r = listen ? opt_str(listen, key, ret) : 0;
	if (r < 0)
		return fail(err, errlen, r, "listen.%s must be a string \"ip:port\"", key);
	if (!*ret && !(*ret = strdup(def)))
		return -ENOMEM;
	return 0;
}

/* The "xds" object (docs/ztunnel-config.md): the control plane for workloads and certs. */
static int parse_xds(struct zt_state *st, json_t *o, char *err, size_t errlen)
{
	struct zt_xds_config *x = calloc(1, sizeof(*x));
	struct sockaddr_storage ss;
	struct ml_spiffe_id id;
	struct zt_ip ip;
	socklen_t sl;
	int r;

	if (!x)
		return -ENOMEM;
	st->xds = x;
	if (!json_is_object(o))
		return fail(err, errlen, -EINVAL, "xds must be an object");
	if ((r = opt_str(o, "address", &x->address)) < 0 ||
	    (r = opt_str(o, "token_file", &x->token_file)) < 0 ||
	    (r = opt_str(o, "identity", &x->identity)) < 0 ||
	    (r = opt_str(o, "cluster_id", &x->cluster_id)) < 0 ||
	    (r = opt_str(o, "node_ip", &x->node_ip)) < 0)
		return r == -ENOMEM ? r
				    : fail(err, errlen, r,
					   "xds: address, token_file, identity, cluster_id and "
					   "node_ip must be strings");
	if (!x->address || ml_addr_parse(x->address, &ss, &sl) < 0)
		return fail(err, errlen, -EINVAL, "xds.address must be \"ip:port\" (got %s)",
			    x->address ? x->address : "nothing");
	if (!x->token_file || !*x->token_file)
		return fail(err, errlen, -EINVAL, "xds.token_file is required");
	if (!x->node_ip || zt_ip_parse(x->node_ip, &ip) < 0)
		return fail(err, errlen, -EINVAL, "xds.node_ip must be this node's IP (got %s)",
			    x->node_ip ? x->node_ip : "nothing");
	/* Istio's default: istiod runs as istio-system/istiod in the mesh's trust domain. */
	if (!x->identity) {
		char def[ML_SPIFFE_MAX + 1];
		(void)snprintf(def, sizeof(def), "spiffe://%s/ns/istio-system/sa/istiod",
			       st->trust_domain);
		if (!(x->identity = strdup(def)))
			return -ENOMEM;
	}
	if (ml_spiffe_parse(x->identity, strlen(x->identity), &id) < 0 ||
	    !streq(id.td, st->trust_domain))
		return fail(err, errlen, -EINVAL,
			    "xds.identity %s is not a SPIFFE ID in trust domain %s", x->identity,
			    st->trust_domain);
	if (!x->cluster_id && !(x->cluster_id = strdup(st->cluster_id)))
		return -ENOMEM;
	if (!st->root_cert_path)
		return fail(err, errlen, -EINVAL, "root_cert is required with xds");
	if ((r = read_file(st->root_cert_path, PEM_MAX_BYTES, &x->roots_pem)) < 0)
		return fail(err, errlen, r, "read root_cert %s: %s", st->root_cert_path,
			    strerror(-r));
	return 0;
}

int zt_config_load(const char *path, struct zt_state **ret, char *err, size_t errlen)
{
	json_error_t je;
	json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
	char *roots = NULL;
	int r;
	if (!root)
		return fail(err, errlen, -EINVAL, "%s:%d: %s", path, je.line, je.text);
	struct zt_state *st = zt_state_new();
	if (!st) {
		json_decref(root);
		return -ENOMEM;
	}
	if (!json_is_object(root)) {
		r = fail(err, errlen, -EINVAL, "%s: top level must be an object", path);
		goto out;
	}
	if ((r = opt_str(root, "node", &st->node)) < 0 ||
	    (r = opt_str(root, "cluster_id", &st->cluster_id)) < 0 ||
	    (r = opt_str(root, "trust_domain", &st->trust_domain)) < 0 ||
	    (r = opt_str(root, "root_cert", &st->root_cert_path)) < 0) {
		r = fail(err, errlen, r, "%s: node, cluster_id, trust_domain, root_cert must be strings",
			 path);
		goto out;
	}
	if (!st->node) {
		r = fail(err, errlen, -EINVAL, "%s: \"node\" is required", path);
		goto out;
	}
	if ((!st->cluster_id && !(st->cluster_id = strdup("Kubernetes"))) ||
	    (!st->trust_domain && !(st->trust_domain = strdup("cluster.local")))) {
		r = -ENOMEM;
		goto out;
	}
	json_t *listen = json_object_get(root, "listen");
	if ((r = listen_addr(listen, "outbound", "0.0.0.0:15001", &st->listen_outbound, err, errlen)) < 0 ||
	    (r = listen_addr(listen, "inbound", "0.0.0.0:15008", &st->listen_inbound, err, errlen)) < 0 ||
	    (r = listen_addr(listen, "admin", "127.0.0.1:15000", &st->listen_admin, err, errlen)) < 0 ||
	    (r = listen_addr(listen, "metrics", "0.0.0.0:15020", &st->listen_metrics, err, errlen)) < 0 ||
	    (r = listen_addr(listen, "readiness", "0.0.0.0:15021", &st->listen_readiness, err,
			     errlen)) < 0 ||
	    (r = listen_addr(listen, "inbound_plaintext", "0.0.0.0:15006", &st->listen_inbound_plain,
			     err, errlen)) < 0)
		goto out;
	/* off unless asked for, as in Istio */
	if (listen && (r = opt_str(listen, "socks5", &st->listen_socks5)) < 0) {
		r = fail(err, errlen, r, "listen.socks5 must be a string \"ip:port\"");
		goto out;
	}

	json_t *agent = json_object_get(root, "node_agent");
	if (agent && !json_is_null(agent)) {
		if (!json_is_object(agent)) {
			r = fail(err, errlen, -EINVAL, "%s: node_agent must be an object", path);
			goto out;
		}
		st->agent = calloc(1, sizeof(*st->agent));
		if (!st->agent) {
			r = -ENOMEM;
			goto out;
		}
		if ((r = opt_str(agent, "bpf_dir", &st->agent->bpf_dir)) < 0 ||
		    (r = opt_str(agent, "cni_dir", &st->agent->cni_dir)) < 0 ||
		    (r = opt_str(agent, "uplink", &st->agent->uplink)) < 0) {
			r = fail(err, errlen, r, "%s: node_agent.bpf_dir, .cni_dir, .uplink must be strings",
				 path);
			goto out;
		}
		if ((!st->agent->bpf_dir && !(st->agent->bpf_dir = strdup("/sys/fs/bpf/meshlite"))) ||
		    (!st->agent->cni_dir && !(st->agent->cni_dir = strdup("/run/meshlite/cni")))) {
			r = -ENOMEM;
			goto out;
		}
	}

	json_t *xds = json_object_get(root, "xds");
	if (xds && !json_is_null(xds) && (r = parse_xds(st, xds, err, errlen)) < 0) {
		if (r == -ENOMEM)
			(void)fail(err, errlen, r, "out of memory");
		goto out;
	}

	json_t *wls = json_object_get(root, "workloads");
	if (wls && !json_is_array(wls)) {
		r = fail(err, errlen, -EINVAL, "%s: workloads must be a list", path);
		goto out;
	}
	size_t i;
	json_t *v;
	json_array_foreach(wls, i, v)
	{
		struct zt_workload *w = NULL;
		if (!json_is_object(v)) {
			r = fail(err, errlen, -EINVAL, "workloads[%zu] must be an object", i);
			goto out;
		}
		if ((r = parse_workload(v, (unsigned)i, st->trust_domain, &w, err, errlen)) < 0)
			goto out;
		if ((r = zt_state_add_workload(st, w)) < 0) {
			r = fail(err, errlen, r, "workloads[%zu] (%s/%s): %s", i, w->ns, w->name,
				 r == -EEXIST ? "address already used by another workload" : strerror(-r));
			zt_workload_unref(w);
			goto out;
		}
	}

	json_t *pols = json_object_get(root, "policies");
	if (pols && (r = zt_config_policies(st, pols, err, errlen)) < 0) {
		if (r == -ENOMEM)
			(void)fail(err, errlen, r, "out of memory");
		goto out;
	}

	json_t *certs = json_object_get(root, "certificates");
	if (certs && !json_is_array(certs)) {
		r = fail(err, errlen, -EINVAL, "%s: certificates must be a list", path);
		goto out;
	}
	if (certs && json_array_size(certs) > 0) {
		if (!st->root_cert_path) {
			r = fail(err, errlen, -EINVAL, "%s: root_cert is required with certificates", path);
			goto out;
		}
		if ((r = read_file(st->root_cert_path, PEM_MAX_BYTES, &roots)) < 0) {
			r = fail(err, errlen, r, "read root_cert %s: %s", st->root_cert_path, strerror(-r));
			goto out;
		}
		st->certs = calloc(json_array_size(certs), sizeof(*st->certs));
		if (!st->certs) {
			r = -ENOMEM;
			goto out;
		}
		json_array_foreach(certs, i, v)
		{
			st->ncerts = (unsigned)i + 1;
			if (!json_is_object(v)) {
				r = fail(err, errlen, -EINVAL, "certificates[%zu] must be an object", i);
				goto out;
			}
			if ((r = load_cert(st, v, (unsigned)i, roots, err, errlen)) < 0)
				goto out;
		}
	}
	*ret = st;
	st = NULL;
	r = 0;
out:
	free(roots);
	zt_state_free(st);
	json_decref(root);
	return r;
}
