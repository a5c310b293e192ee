// SPDX-License-Identifier: Apache-2.0
/* What a pod's container sees: its environment and its expanded command line. */
#include "lab-internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

void cli_lab_strv_free(char **v)
{
	if (!v)
		return;
	for (char **p = v; *p; p++)
		free(*p);
	free(v);
}

static const char *env_get(char *const *env, const char *name, size_t len)
{
	for (; *env; env++) {
		if (strncmp(*env, name, len) == 0 && (*env)[len] == '=')
			return *env + len + 1;
	}
	return NULL;
}

/* Set NAME=VALUE, replacing an earlier NAME: the kernel keeps duplicates and getenv() would
 * return the first one, while Kubernetes lets a later definition win. */
static int env_set(char ***env, size_t *n, const char *name, const char *value)
{
	size_t len = strlen(name);
	char *kv, **p;

	if (asprintf(&kv, "%s=%s", name, value) < 0)
		return -ENOMEM;
	for (size_t i = 0; i < *n; i++) {
		if (strncmp((*env)[i], name, len) == 0 && (*env)[i][len] == '=') {
			free((*env)[i]);
			(*env)[i] = kv;
			return 0;
		}
	}
	p = realloc(*env, (*n + 2) * sizeof(*p));
	if (!p) {
		free(kv);
		return -ENOMEM;
	}
	p[(*n)++] = kv;
	p[*n] = NULL;
	*env = p;
	return 0;
}

/* Kubernetes' dependent variables: "$(NAME)" becomes NAME's value when NAME is defined and
 * stays as written otherwise; "$$" is a literal "$". */
static char *expand(const char *s, char *const *env)
{
	size_t cap = strlen(s) + 1, len = 0;
	char *out = malloc(cap);

	if (!out)
		return NULL;
	while (*s) {
		const char *val = NULL, *end;
		size_t take = 1, vl;

		if (s[0] == '$' && s[1] == '$') {
			val = "$";
			take = 2;
		} else if (s[0] == '$' && s[1] == '(' && (end = strchr(s + 2, ')')) &&
			   (val = env_get(env, s + 2, (size_t)(end - s - 2)))) {
			take = (size_t)(end - s) + 1;
		}
		vl = val ? strlen(val) : 1;
		if (!val)
			val = s;
		if (len + vl + 1 > cap) {
			char *p;

			cap = (len + vl + 1) * 2;
			p = realloc(out, cap);
			if (!p) {
				free(out);
				return NULL;
			}
			out = p;
		}
		memcpy(out + len, val, vl);
		len += vl;
		s += take;
	}
	out[len] = '\0';
	return out;
}

char **cli_lab_pod_env(const json_t *pod, const json_t *container)
{
	static const char *const passed[] = {"PATH", "HOME", "LANG", "TERM", "TZ"};
	char **env = calloc(1, sizeof(*env));
	const char *ip = cli_js(pod, "ip");
	size_t n = 0, i;
	json_t *e;
	int r = env ? 0 : -ENOMEM;

	/* A container starts from a clean environment; the lab runs host binaries, so the
	 * caller's PATH/HOME/locale come along, then what Kubernetes would set. */
	for (i = 0; r == 0 && i < ARRAY_SIZE(passed); i++) {
		const char *v = getenv(passed[i]);

		if (v)
			r = env_set(&env, &n, passed[i], v);
	}
	if (r == 0 && !getenv("PATH"))
		r = env_set(&env, &n, "PATH",
			    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
	if (r == 0)
		r = env_set(&env, &n, "HOSTNAME", cli_js(pod, "name"));
	if (r == 0)
		r = env_set(&env, &n, "POD_NAME", cli_js(pod, "name"));
	if (r == 0)
		r = env_set(&env, &n, "POD_NAMESPACE", cli_js(pod, "namespace"));
	if (r == 0 && ip)
		r = env_set(&env, &n, "POD_IP", ip);
	json_array_foreach(json_object_get(container, "env"), i, e) {
		const char *name = cli_js(e, "name"), *value = cli_js(e, "value");
		char *v;

		if (r < 0)
			break;
		if (!name)
			continue;
		v = expand(value ? value : "", env);
		r = v ? env_set(&env, &n, name, v) : -ENOMEM;
		free(v);
	}
	if (r < 0) {
		cli_lab_strv_free(env);
		return NULL;
	}
	return env;
}

char **cli_lab_pod_argv(const json_t *container, char *const *env)
{
	json_t *argv = json_object_get(container, "argv"), *a;
	size_t i, n = json_array_size(argv);
	char **v;

	if (n == 0)
		return NULL;
	v = calloc(n + 1, sizeof(*v));
	if (!v)
		return NULL;
	json_array_foreach(argv, i, a) {
		v[i] = expand(json_string_value(a) ? json_string_value(a) : "", env);
		if (!v[i]) {
			cli_lab_strv_free(v);
			return NULL;
		}
	}
	return v;
}
