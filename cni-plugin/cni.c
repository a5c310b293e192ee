/* SPDX-License-Identifier: Apache-2.0 */
/* CNI protocol: environment, network configuration, result/error/version JSON (cni.h). */
#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cni.h"
#include "podreg.h"

/* CNI_ARGS is set by the runtime; a few keys of a few hundred bytes in practice. */
#define CNI_ARGS_MAX 65536

static const char *const supported_versions[] = { "0.3.1", "0.4.0", "1.0.0" };

bool cni_version_supported(const char *v)
{
	for (size_t i = 0; i < sizeof(supported_versions) / sizeof(supported_versions[0]); i++)
		if (v && !strcmp(v, supported_versions[i]))
			return true;
	return false;
}

/* 0.3.x and 0.4.0 results carry ips[].version; 1.0.0 dropped it. */
static bool version_has_ip_version(const char *v)
{
	return strncmp(v, "0.", 2) == 0;
}

int cni_fail(struct cni_err *err, int code, const char *fmt, ...)
{
	va_list ap;

	err->code = code;
	va_start(ap, fmt);
	(void)vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
	err->details[0] = '\0';
	return -1;
}

/* ---- environment ---- */

static const char *env_get(char *const *envp, const char *key)
{
	size_t n = strlen(key);

	for (; envp && *envp; envp++)
		if (!strncmp(*envp, key, n) && (*envp)[n] == '=')
			return *envp + n + 1;
	return NULL;
}

static int copy_bounded(char *dst, size_t dstlen, const char *src)
{
	size_t n = strnlen(src, dstlen);

	if (n >= dstlen)
		return -ENAMETOOLONG;
	memcpy(dst, src, n + 1);
	return 0;
}

int cni_args_parse(struct cni_env *env, const char *args, struct cni_err *err)
{
	struct {
		const char *key;
		char *dst;
		size_t len;
	} keys[] = {
		{ "K8S_POD_NAMESPACE", env->k8s_ns, sizeof(env->k8s_ns) },
		{ "K8S_POD_NAME", env->k8s_name, sizeof(env->k8s_name) },
		{ "K8S_POD_UID", env->k8s_uid, sizeof(env->k8s_uid) },
	};
	const char *p = args;

	if (!args)
		return 0;
	if (strnlen(args, CNI_ARGS_MAX + 1) > CNI_ARGS_MAX)
		return cni_fail(err, CNI_ERR_INVALID_ENV, "CNI_ARGS is longer than %d bytes",
				CNI_ARGS_MAX);
	while (*p) {
		size_t plen = strcspn(p, ";");
		const char *eq = memchr(p, '=', plen);

		/* the reference library's rule: every pair is exactly KEY=VALUE */
		if (plen == 0 || !eq || eq == p || memchr(eq + 1, '=', plen - (size_t)(eq + 1 - p)))
			return cni_fail(
				err, CNI_ERR_INVALID_ENV,
				"CNI_ARGS: invalid pair \"%.*s\" (expected KEY=VALUE;KEY=VALUE)",
				(int)(plen > 64 ? 64 : plen), p);
		for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
			size_t klen = strlen(keys[i].key), vlen = plen - (size_t)(eq + 1 - p);

			if ((size_t)(eq - p) != klen || memcmp(p, keys[i].key, klen))
				continue;
			if (vlen >= keys[i].len)
				return cni_fail(err, CNI_ERR_INVALID_ENV,
						"CNI_ARGS: %s is longer than %zu bytes",
						keys[i].key, keys[i].len - 1);
			memcpy(keys[i].dst, eq + 1, vlen);
			keys[i].dst[vlen] = '\0';
		}
		p += plen;
		if (*p == ';')
			p++;
	}
	return 0;
}

int cni_env_parse(struct cni_env *ret, char *const *envp, struct cni_err *err)
{
	const char *cmd = env_get(envp, "CNI_COMMAND"), *v;
	bool add_or_check;

	memset(ret, 0, sizeof(*ret));
	if (!cmd || !*cmd)
		return cni_fail(err, CNI_ERR_INVALID_ENV,
				"CNI_COMMAND is not set: meshlite-cni is a CNI plugin, run by a "
				"container runtime with CNI_COMMAND=ADD|DEL|CHECK|VERSION");
	if (!strcmp(cmd, "ADD"))
		ret->cmd = CNI_CMD_ADD;
	else if (!strcmp(cmd, "DEL"))
		ret->cmd = CNI_CMD_DEL;
	else if (!strcmp(cmd, "CHECK"))
		ret->cmd = CNI_CMD_CHECK;
	else if (!strcmp(cmd, "VERSION"))
		ret->cmd = CNI_CMD_VERSION;
	else
		return cni_fail(
			err, CNI_ERR_INVALID_ENV,
			"unknown CNI_COMMAND \"%.32s\" (supported: ADD, DEL, CHECK, VERSION)", cmd);
	if (ret->cmd == CNI_CMD_VERSION)
		return 0;
	add_or_check = ret->cmd != CNI_CMD_DEL;

	v = env_get(envp, "CNI_CONTAINERID");
	if (!v || !*v)
		return cni_fail(err, CNI_ERR_INVALID_ENV, "CNI_CONTAINERID is not set");
	if (!ebpf_podreg_container_id_ok(v))
		return cni_fail(err, CNI_ERR_INVALID_ENV,
				"CNI_CONTAINERID \"%.64s\" is invalid: 1-128 characters of "
				"[A-Za-z0-9_.-], starting with a letter or digit",
				v);
	(void)copy_bounded(ret->container_id, sizeof(ret->container_id), v);

	v = env_get(envp, "CNI_IFNAME");
	if (!v || !*v)
		return cni_fail(err, CNI_ERR_INVALID_ENV, "CNI_IFNAME is not set");
	if (!ebpf_podreg_ifname_ok(v))
		return cni_fail(
			err, CNI_ERR_INVALID_ENV,
			"CNI_IFNAME \"%.32s\" is not a valid interface name (1-15 characters, "
			"no '/', ':' or spaces)",
			v);
	(void)copy_bounded(ret->ifname, sizeof(ret->ifname), v);

	/* DEL must work with the netns already gone, so it may be absent there */
	v = env_get(envp, "CNI_NETNS");
	if (add_or_check && (!v || !*v))
		return cni_fail(err, CNI_ERR_INVALID_ENV, "CNI_NETNS is not set");
	if (v && *v) {
		if (v[0] != '/' || copy_bounded(ret->netns, sizeof(ret->netns), v) < 0) {
			if (add_or_check)
				return cni_fail(err, CNI_ERR_INVALID_ENV,
						"CNI_NETNS \"%.64s\" is not an absolute path", v);
			ret->netns[0] = '\0';
		}
	}
	if (!add_or_check)
		return 0;

	if (cni_args_parse(ret, env_get(envp, "CNI_ARGS"), err) < 0)
		return -1;
	/* the agent keys enrollment on namespace and pod labels: no name, nothing to decide */
	if (!ret->k8s_ns[0] || !ret->k8s_name[0])
		return cni_fail(
			err, CNI_ERR_INVALID_ENV,
			"CNI_ARGS has no %s: meshlite-cni needs the Kubernetes pod "
			"(K8S_POD_NAMESPACE=..;K8S_POD_NAME=..), as kubelet's runtimes pass it",
			!ret->k8s_ns[0] ? "K8S_POD_NAMESPACE" : "K8S_POD_NAME");
	if (!ebpf_podreg_k8s_name_ok(ret->k8s_ns, false))
		return cni_fail(err, CNI_ERR_INVALID_ENV,
				"CNI_ARGS: K8S_POD_NAMESPACE \"%.64s\" is not a DNS-1123 label",
				ret->k8s_ns);
	if (!ebpf_podreg_k8s_name_ok(ret->k8s_name, true))
		return cni_fail(err, CNI_ERR_INVALID_ENV,
				"CNI_ARGS: K8S_POD_NAME \"%.64s\" is not a DNS-1123 subdomain",
				ret->k8s_name);
	if (ret->k8s_uid[0] && !ebpf_podreg_uid_ok(ret->k8s_uid))
		return cni_fail(err, CNI_ERR_INVALID_ENV,
				"CNI_ARGS: K8S_POD_UID \"%.64s\" is not a Kubernetes UID",
				ret->k8s_uid);
	return 0;
}

/* ---- network configuration ---- */

void cni_conf_free(struct cni_conf *c)
{
	if (!c)
		return;
	json_decref(c->root);
	c->root = NULL;
	c->prev = NULL;
}

const char *cni_conf_error_version(const struct cni_conf *c)
{
	return c && c->version[0] ? c->version : CNI_VERSION_CURRENT;
}

/* An optional string key holding an absolute path; @def when absent. */
static int conf_path(json_t *root, const char *key, const char *def, char *dst, size_t len,
		     struct cni_err *err)
{
	json_t *v = json_object_get(root, key);
	const char *s;

	if (!v) {
		(void)copy_bounded(dst, len, def);
		return 0;
	}
	s = json_string_value(v);
	if (!s || s[0] != '/' || json_string_length(v) >= len - 64)
		return cni_fail(err, CNI_ERR_INVALID_CONFIG,
				"network config: \"%s\" must be an absolute path shorter than %zu "
				"bytes",
				key, len - 64);
	for (const char *p = s; *p; p++)
		if ((unsigned char)*p < 0x20)
			return cni_fail(err, CNI_ERR_INVALID_CONFIG,
					"network config: \"%s\" contains control characters", key);
	(void)copy_bounded(dst, len, s);
	return 0;
}

/*
 * The host-side candidates (interfaces without a sandbox) and the pod's addresses (ips of
 * sandbox interfaces, or with no interface index) from @prev.
 */
static int parse_prev(struct cni_conf *c, json_t *prev, struct cni_err *err)
{
	json_t *ifs, *ips, *v, *it;
	bool sandboxed[64] = { false };
	size_t i, nifs = 0;

	if (!json_is_object(prev))
		return cni_fail(err, CNI_ERR_INVALID_CONFIG,
				"network config: \"prevResult\" is not an object");
	v = json_object_get(prev, "cniVersion");
	if (v) {
		if (!json_is_string(v) || !cni_version_supported(json_string_value(v)))
			return cni_fail(err, CNI_ERR_INCOMPATIBLE_VERSION,
					"prevResult has cniVersion \"%.16s\"; meshlite-cni reads "
					"0.3.1, 0.4.0 and 1.0.0 results",
					json_is_string(v) ? json_string_value(v)
							  : "(not a string)");
		(void)copy_bounded(c->prev_version, sizeof(c->prev_version), json_string_value(v));
	} else {
		memcpy(c->prev_version, c->version, sizeof(c->prev_version));
	}

	ifs = json_object_get(prev, "interfaces");
	if (ifs && !json_is_array(ifs))
		return cni_fail(err, CNI_ERR_INVALID_CONFIG,
				"prevResult: \"interfaces\" is not an array");
	if (ifs && json_array_size(ifs) > sizeof(sandboxed) / sizeof(sandboxed[0]))
		return cni_fail(err, CNI_ERR_INVALID_CONFIG, "prevResult: more than %zu interfaces",
				sizeof(sandboxed) / sizeof(sandboxed[0]));
	json_array_foreach(ifs, i, it) {
		json_t *name = json_object_get(it, "name"), *sb = json_object_get(it, "sandbox");

		if (!json_is_object(it) || !json_is_string(name) ||
		    !ebpf_podreg_ifname_ok(json_string_value(name)) || (sb && !json_is_string(sb)))
			return cni_fail(
				err, CNI_ERR_INVALID_CONFIG,
				"prevResult: interfaces[%zu] needs a \"name\" that is a valid "
				"interface name and an optional string \"sandbox\"",
				i);
		nifs++;
		if (sb && json_string_length(sb) > 0) {
			sandboxed[i] = true;
			continue;
		}
		if (c->n_host_ifs == CNI_MAX_HOST_IFS)
			return cni_fail(err, CNI_ERR_INVALID_CONFIG,
					"prevResult: more than %d interfaces without a sandbox",
					CNI_MAX_HOST_IFS);
		(void)copy_bounded(c->host_ifs[c->n_host_ifs++], sizeof(c->host_ifs[0]),
				   json_string_value(name));
	}

	ips = json_object_get(prev, "ips");
	if (ips && !json_is_array(ips))
		return cni_fail(err, CNI_ERR_INVALID_CONFIG, "prevResult: \"ips\" is not an array");
	json_array_foreach(ips, i, it) {
		json_t *addr = json_object_get(it, "address"),
		       *idx = json_object_get(it, "interface");
		const char *s = json_string_value(addr);
		int r;

		if (!json_is_object(it) || !s || !strchr(s, '/'))
			return cni_fail(err, CNI_ERR_INVALID_CONFIG,
					"prevResult: ips[%zu] needs an \"address\" in CIDR form "
					"(\"10.1.0.5/24\")",
					i);
		if (idx) {
			json_int_t n = json_integer_value(idx);

			if (!json_is_integer(idx) || n < 0 || (size_t)n >= nifs)
				return cni_fail(
					err, CNI_ERR_INVALID_CONFIG,
					"prevResult: ips[%zu].interface is not an index into "
					"\"interfaces\" (%zu entries)",
					i, nifs);
			/* an address of a host-side interface is the node's, not the pod's */
			if (!sandboxed[n])
				continue;
		}
		r = ebpf_pod_addrs_add(&c->addrs, s);
		if (r == -E2BIG)
			return cni_fail(
				err, CNI_ERR_POD_ADDRS,
				"prevResult: the pod has more than %d addresses of one family; "
				"meshlite capture supports up to %d IPv4 and %d IPv6 addresses",
				EBPF_CAPTURE_POD_MAX_ADDRS, EBPF_CAPTURE_POD_MAX_ADDRS,
				EBPF_CAPTURE_POD_MAX_ADDRS);
		if (r < 0)
			return cni_fail(
				err, CNI_ERR_INVALID_CONFIG,
				"prevResult: ips[%zu].address \"%.64s\" is not an address a pod "
				"can own (unicast, not loopback or link-local)",
				i, s);
	}
	return 0;
}

int cni_conf_parse(struct cni_conf *ret, const char *buf, size_t len, enum cni_cmd cmd,
		   struct cni_err *err)
{
	json_error_t jerr;
	json_t *v;

	memset(ret, 0, sizeof(*ret));
	if (len > CNI_STDIN_MAX)
		return cni_fail(err, CNI_ERR_DECODE,
				"network config on stdin is longer than %d bytes", CNI_STDIN_MAX);
	/* duplicate keys would make our view and the next plugin's differ */
	ret->root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!ret->root)
		return cni_fail(
			err, CNI_ERR_DECODE,
			"failed to decode the network config on stdin: line %d column %d: %s",
			jerr.line, jerr.column, jerr.text);
	if (!json_is_object(ret->root))
		return cni_fail(err, CNI_ERR_DECODE,
				"failed to decode the network config on stdin: not a JSON object");

	v = json_object_get(ret->root, "cniVersion");
	if (!json_is_string(v))
		return cni_fail(
			err, CNI_ERR_INCOMPATIBLE_VERSION,
			"network config has no string \"cniVersion\"; meshlite-cni supports "
			"0.3.1, 0.4.0 and 1.0.0");
	if (!cni_version_supported(json_string_value(v)))
		return cni_fail(
			err, CNI_ERR_INCOMPATIBLE_VERSION,
			"incompatible CNI version \"%.16s\": meshlite-cni supports 0.3.1, 0.4.0 "
			"and 1.0.0",
			json_string_value(v));
	(void)copy_bounded(ret->version, sizeof(ret->version), json_string_value(v));
	/* CHECK came with 0.4.0: a 0.3.x runtime never sends it (SPEC.md, "CHECK") */
	if (cmd == CNI_CMD_CHECK && !strcmp(ret->version, "0.3.1"))
		return cni_fail(err, CNI_ERR_INCOMPATIBLE_VERSION,
				"config version 0.3.1 does not allow CHECK (needs 0.4.0 or later)");
	if (cmd == CNI_CMD_VERSION)
		return 0;

	if ((v = json_object_get(ret->root, "name")) && !json_is_string(v))
		return cni_fail(err, CNI_ERR_INVALID_CONFIG,
				"network config: \"name\" is not a string");
	if (conf_path(ret->root, "stateDir", EBPF_PODREG_DIR_DEFAULT, ret->state_dir,
		      sizeof(ret->state_dir), err) < 0 ||
	    conf_path(ret->root, "bpfDir", EBPF_PIN_DIR_DEFAULT, ret->bpf_dir, sizeof(ret->bpf_dir),
		      err) < 0 ||
	    conf_path(ret->root, "logFile", "", ret->log_file, sizeof(ret->log_file), err) < 0)
		return -1;
	v = json_object_get(ret->root, "logLevel");
	if (v) {
		const char *s = json_string_value(v);

		if (!s || (strcmp(s, "debug") && strcmp(s, "info") && strcmp(s, "warn") &&
			   strcmp(s, "error")))
			return cni_fail(err, CNI_ERR_INVALID_CONFIG,
					"network config: \"logLevel\" must be debug, info, warn or "
					"error");
		(void)copy_bounded(ret->log_level, sizeof(ret->log_level), s);
	} else {
		(void)copy_bounded(ret->log_level, sizeof(ret->log_level), "info");
	}

	v = json_object_get(ret->root, "prevResult");
	if (v && json_is_null(v))
		v = NULL;
	if (!v) {
		if (cmd == CNI_CMD_DEL)
			return 0;
		return cni_fail(err, CNI_ERR_INVALID_CONFIG,
				"network config has no \"prevResult\": meshlite-cni is a chained "
				"plugin; list it in a .conflist after the plugin that creates the "
				"pod's interface (ptp or bridge)");
	}
	if (parse_prev(ret, v, err) < 0) {
		/* DEL cleans up from the registry file; a bad cached result must not block it */
		if (cmd == CNI_CMD_DEL) {
			memset(&ret->addrs, 0, sizeof(ret->addrs));
			ret->n_host_ifs = 0;
			return 0;
		}
		return -1;
	}
	ret->prev = v;
	if (cmd == CNI_CMD_DEL)
		return 0;
	if (ret->n_host_ifs == 0)
		return cni_fail(
			err, CNI_ERR_INVALID_CONFIG,
			"prevResult lists no host-side interface (one without \"sandbox\"): "
			"chain meshlite-cni after a plugin that creates a veth pair, such as "
			"ptp or bridge");
	if (ret->addrs.n4 + ret->addrs.n6 == 0)
		return cni_fail(
			err, CNI_ERR_INVALID_CONFIG,
			"prevResult lists no IP address of the pod: chain meshlite-cni after "
			"a plugin with IPAM (ptp or bridge with host-local)");
	return 0;
}

/* ---- output ---- */

static char *dump(json_t *o)
{
	char *s = NULL;

	if (o)
		s = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	return s;
}

char *cni_result_dump(const struct cni_conf *c)
{
	json_t *out, *ips, *ip;
	bool want, have;
	size_t i;

	if (!c->prev)
		return NULL;
	if (!strcmp(c->version, c->prev_version))
		return json_dumps(c->prev, JSON_COMPACT);

	/* SPEC.md: a plugin outputs its result in the configuration's version */
	out = json_deep_copy(c->prev);
	if (!out || json_object_set_new(out, "cniVersion", json_string(c->version)) < 0) {
		json_decref(out);
		return NULL;
	}
	want = version_has_ip_version(c->version);
	have = version_has_ip_version(c->prev_version);
	ips = json_object_get(out, "ips");
	if (want != have && json_is_array(ips)) {
		json_array_foreach(ips, i, ip) {
			const char *a = json_string_value(json_object_get(ip, "address"));

			if (!want) {
				(void)json_object_del(ip, "version");
				continue;
			}
			if (!a ||
			    json_object_set_new(ip, "version",
						json_string(strchr(a, ':') ? "6" : "4")) < 0) {
				json_decref(out);
				return NULL;
			}
		}
	}
	return dump(out);
}

/* Messages quote input (env, config): keep them printable ASCII so they always encode. */
static void ascii_copy(char *dst, const char *src, size_t len)
{
	size_t i;

	for (i = 0; i + 1 < len && src[i]; i++)
		dst[i] = (unsigned char)src[i] >= 0x20 && (unsigned char)src[i] < 0x7f ? src[i]
										       : '?';
	dst[i] = '\0';
}

char *cni_err_dump(const struct cni_err *err, const char *version)
{
	char msg[sizeof(err->msg)], details[sizeof(err->details)];
	json_t *o;

	ascii_copy(msg, err->msg, sizeof(msg));
	ascii_copy(details, err->details, sizeof(details));
	o = json_pack("{s:s, s:i, s:s}", "cniVersion", version ? version : CNI_VERSION_CURRENT,
		      "code", err->code, "msg", msg);
	if (o && details[0])
		(void)json_object_set_new(o, "details", json_string(details));
	return dump(o);
}

char *cni_version_dump(void)
{
	json_t *vs = json_array(), *o;

	for (size_t i = 0; vs && i < sizeof(supported_versions) / sizeof(supported_versions[0]);
	     i++)
		(void)json_array_append_new(vs, json_string(supported_versions[i]));
	o = json_pack("{s:s, s:o}", "cniVersion", CNI_VERSION_CURRENT, "supportedVersions", vs);
	return dump(o);
}
