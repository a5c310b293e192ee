/* SPDX-License-Identifier: Apache-2.0 */
/*
 * meshlite-cni's protocol side, free of side effects so it can be unit-tested: the CNI_*
 * environment, the network configuration on stdin (with prevResult), and the JSON the
 * plugin prints (result, error, version). CNI spec 1.0.0, also accepting 0.3.1 and 0.4.0
 * configurations. The kernel side (map, tc, registry) is in plugin.c.
 */
#ifndef CNI_H
#define CNI_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "capture.h"

/* The spec's error codes (SPEC.md "Error"), then ours (100+, see README.md). */
enum cni_code {
	CNI_ERR_INCOMPATIBLE_VERSION = 1,
	CNI_ERR_UNSUPPORTED_FIELD = 2,
	CNI_ERR_UNKNOWN_CONTAINER = 3,
	CNI_ERR_INVALID_ENV = 4,
	CNI_ERR_IO = 5,
	CNI_ERR_DECODE = 6,
	CNI_ERR_INVALID_CONFIG = 7,
	CNI_ERR_TRY_AGAIN = 11,
	CNI_ERR_HOST_IF = 100,	  /* the pod's host-side interface is missing or ambiguous */
	CNI_ERR_ENROLL_MAP = 101, /* the node's enrollment map cannot be used */
	CNI_ERR_CAPTURE = 102,	  /* the capture program cannot be attached (or is not) */
	CNI_ERR_REGISTRY = 103,	  /* the pod's registry file cannot be written (or is wrong) */
	CNI_ERR_POD_ADDRS = 104,  /* the pod's addresses cannot be captured */
};

/* Every CNI verb the spec defines; STATUS and GC (1.1) are refused as unknown. */
enum cni_cmd {
	CNI_CMD_ADD,
	CNI_CMD_DEL,
	CNI_CMD_CHECK,
	CNI_CMD_VERSION,
};

/* Standard input is refused beyond this (the spec sets no limit; a config is a few KiB). */
#define CNI_STDIN_MAX (1024 * 1024)
/* The versions we accept, oldest first; the newest is the one we speak. */
#define CNI_VERSION_CURRENT "1.0.0"
/* Interfaces without "sandbox" we look at in a prevResult (bridge lists two). */
#define CNI_MAX_HOST_IFS 8

struct cni_err {
	int code;
	char msg[512];
	char details[1024];
};

struct cni_env {
	enum cni_cmd cmd;
	char container_id[129];
	char netns[PATH_MAX]; /* empty if unset (allowed for DEL) */
	char ifname[16];
	/* from CNI_ARGS; required for ADD and CHECK, ignored for DEL */
	char k8s_ns[64];
	char k8s_name[254];
	char k8s_uid[64]; /* empty if the runtime passed none */
};

struct cni_conf {
	json_t *root;	 /* the whole network configuration, owned */
	json_t *prev;	 /* root's "prevResult", or NULL */
	char version[8]; /* "cniVersion", one of the supported versions */
	char prev_version[8];
	char state_dir[PATH_MAX]; /* "stateDir" or EBPF_PODREG_DIR_DEFAULT */
	char bpf_dir[PATH_MAX];	  /* "bpfDir" or EBPF_PIN_DIR_DEFAULT */
	char log_file[PATH_MAX];  /* "logFile" or empty */
	char log_level[8];	  /* "logLevel" or "info" */
	/* prevResult's interfaces without a sandbox: the host-side candidates, in order */
	unsigned int n_host_ifs;
	char host_ifs[CNI_MAX_HOST_IFS][16];
	/* prevResult's ips that belong to the pod (those of sandbox interfaces) */
	struct ebpf_pod_addrs addrs;
};

/* Fill @err (code, msg, no details) and return -1, so callers can "return cni_fail(...)". */
int cni_fail(struct cni_err *err, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/*
 * Read the CNI_* variables from @envp ("KEY=VALUE" strings, NULL-terminated, like environ)
 * and validate what @ret->cmd needs. Returns 0 or -1 with @err set (code 4).
 */
int cni_env_parse(struct cni_env *ret, char *const *envp, struct cni_err *err);

/*
 * CNI_ARGS "K=V;K=V": take K8S_POD_NAMESPACE, K8S_POD_NAME and K8S_POD_UID into @env
 * (other keys are ignored). Returns 0 or -1 with @err set (code 4).
 */
int cni_args_parse(struct cni_env *env, const char *args, struct cni_err *err);

/*
 * Parse the network configuration @buf of @len bytes for @cmd into @ret: decoding (code 6),
 * version (code 1), our keys and prevResult (code 7; prevResult is required for ADD and
 * CHECK and ignored when malformed for DEL). Free with cni_conf_free() in all cases.
 */
int cni_conf_parse(struct cni_conf *ret, const char *buf, size_t len, enum cni_cmd cmd,
		   struct cni_err *err);
void cni_conf_free(struct cni_conf *c);

/* The version to put in an error: the config's cniVersion if parsed and supported, else ours. */
const char *cni_conf_error_version(const struct cni_conf *c);

/*
 * ADD's output: prevResult, converted to the configuration's cniVersion when it was
 * written in another one (0.3.1/0.4.0 ips carry "version", 1.0.0 ones do not). Caller
 * frees. NULL on allocation failure.
 */
char *cni_result_dump(const struct cni_conf *c);
/* {"cniVersion":@version,"code":..,"msg":..,"details":..}; caller frees. */
char *cni_err_dump(const struct cni_err *err, const char *version);
/* VERSION's output; caller frees. */
char *cni_version_dump(void);

bool cni_version_supported(const char *v);

#endif
