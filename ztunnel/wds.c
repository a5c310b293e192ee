/* SPDX-License-Identifier: Apache-2.0 */
#include <stdarg.h>
#include <stdio.h>

#include "common.h"
#include "wds.h"
#include "workload.pb-c.h"

static int fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

/* protobuf-c gives "" for unset strings; the model uses NULL for "not set". */
static int dup_opt(const char *s, char **ret)
{
	*ret = NULL;
	if (!s || !*s)
		return 0;
	if (strlen(s) > 1024)
		return -EINVAL;
	*ret = strdup(s);
	return *ret ? 0 : -ENOMEM;
}

static const char *workload_type_name(Istio__Workload__WorkloadType t)
{
	switch (t) {
	case ISTIO__WORKLOAD__WORKLOAD_TYPE__DEPLOYMENT:
		return "deployment";
	case ISTIO__WORKLOAD__WORKLOAD_TYPE__CRONJOB:
		return "cronjob";
	case ISTIO__WORKLOAD__WORKLOAD_TYPE__JOB:
		return "job";
	default:
		return "pod";
	}
}

static int convert(const Istio__Workload__Workload *pw, struct zt_workload **ret, char *err,
		   size_t errlen)
{
	if (!pw->uid || !*pw->uid)
		return fail(err, errlen, "workload without a uid");
	if (!pw->name || !*pw->name || !pw->namespace_ || !*pw->namespace_)
		return fail(err, errlen, "workload %s: name and namespace are required", pw->uid);
	if (pw->n_addresses > ZT_MAX_ADDRS)
		return fail(err, errlen, "workload %s: %zu addresses, at most %d", pw->uid,
			    pw->n_addresses, ZT_MAX_ADDRS);
	struct zt_workload *w = zt_workload_new();
	if (!w)
		return -ENOMEM;
	int r = 0;
	for (size_t i = 0; i < pw->n_addresses; i++) {
		const ProtobufCBinaryData *a = &pw->addresses[i];
		if (a->len != 4 && a->len != 16) {
			r = fail(err, errlen, "workload %s: addresses[%zu] is %zu bytes, want 4 or 16",
				 pw->uid, i, a->len);
			goto out;
		}
		w->addrs[i].family = a->len == 4 ? AF_INET : AF_INET6;
		memcpy(w->addrs[i].addr, a->data, a->len);
		w->naddrs++;
	}
	if ((r = dup_opt(pw->uid, &w->uid)) < 0 || (r = dup_opt(pw->name, &w->name)) < 0 ||
	    (r = dup_opt(pw->namespace_, &w->ns)) < 0 || (r = dup_opt(pw->node, &w->node)) < 0 ||
	    (r = dup_opt(pw->cluster_id, &w->cluster_id)) < 0 ||
	    (r = dup_opt(pw->workload_name, &w->workload_name)) < 0 ||
	    (r = dup_opt(pw->canonical_name, &w->canonical_name)) < 0 ||
	    (r = dup_opt(pw->canonical_revision, &w->canonical_revision)) < 0) {
		r = r == -ENOMEM ? r : fail(err, errlen, "workload %s: a string field is too long", pw->uid);
		goto out;
	}
	/* Istio: empty trust domain means cluster.local, empty service account "default". */
	if ((r = dup_opt(pw->trust_domain && *pw->trust_domain ? pw->trust_domain : "cluster.local",
			 &w->trust_domain)) < 0 ||
	    (r = dup_opt(pw->service_account && *pw->service_account ? pw->service_account : "default",
			 &w->service_account)) < 0 ||
	    (r = dup_opt(workload_type_name(pw->workload_type), &w->workload_type)) < 0)
		goto out;
	if (pw->n_authorization_policies > ZT_MAX_WORKLOAD_POLICIES) {
		r = fail(err, errlen, "workload %s: %zu authorization_policies, at most %d",
			 pw->uid, pw->n_authorization_policies, ZT_MAX_WORKLOAD_POLICIES);
		goto out;
	}
	if (pw->n_authorization_policies) {
		w->authz_policies = calloc(pw->n_authorization_policies, sizeof(char *));
		if (!w->authz_policies) {
			r = -ENOMEM;
			goto out;
		}
	}
	for (size_t i = 0; i < pw->n_authorization_policies; i++) {
		r = dup_opt(pw->authorization_policies[i], &w->authz_policies[w->nauthz_policies]);
		if (r < 0) {
			r = r == -ENOMEM
				    ? r
				    : fail(err, errlen,
					   "workload %s: authorization_policies[%zu] is too long",
					   pw->uid, i);
			goto out;
		}
		if (w->authz_policies[w->nauthz_policies])
			w->nauthz_policies++; /* an empty name names nothing */
	}
	switch (pw->tunnel_protocol) {
	case ISTIO__WORKLOAD__TUNNEL_PROTOCOL__HBONE:
		w->tunnel = ZT_TUNNEL_HBONE;
		break;
	case ISTIO__WORKLOAD__TUNNEL_PROTOCOL__NONE:
		w->tunnel = ZT_TUNNEL_NONE;
		break;
	default:
		/* LEGACY_ISTIO_MTLS or unknown: we never send those, so plain TCP (as Istio) */
		w->tunnel = ZT_TUNNEL_NONE;
		break;
	}
	if (zt_workload_finish(w) < 0) {
		r = fail(err, errlen, "workload %s: identity %s is not a valid SPIFFE ID", pw->uid,
			 w->spiffe ? w->spiffe : "?");
		goto out;
	}
	*ret = w;
	return 0;
out:
	zt_workload_unref(w);
	return r;
}

int zt_wds_decode(const uint8_t *p, size_t len, struct zt_workload **ret, char *err, size_t errlen)
{
	if (len > ZT_WDS_MAX_RESOURCE)
		return fail(err, errlen, "resource of %zu bytes is over the %u-byte limit", len,
			    ZT_WDS_MAX_RESOURCE);
	Istio__Workload__Address *a = istio__workload__address__unpack(NULL, len, p);
	if (!a)
		return fail(err, errlen, "not a valid istio.workload.Address");
	int r;
	switch (a->type_case) {
	case ISTIO__WORKLOAD__ADDRESS__TYPE_WORKLOAD:
		r = convert(a->workload, ret, err, errlen);
		if (r == 0)
			r = ZT_WDS_WORKLOAD;
		break;
	case ISTIO__WORKLOAD__ADDRESS__TYPE_SERVICE:
		r = ZT_WDS_SERVICE;
		break;
	default:
		r = fail(err, errlen, "Address with neither a workload nor a service");
		break;
	}
	istio__workload__address__free_unpacked(a, NULL);
	return r;
}
