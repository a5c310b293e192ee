/* SPDX-License-Identifier: Apache-2.0 */
/* WDS decoding: istio.workload.Address bytes -> ztunnel workloads, with validation. */
#include <check.h>

#include "check_main.h"
#include "common.h"
#include "wds.h"
#include "workload.pb-c.h"

static uint8_t buf[4096];

static size_t pack_workload(Istio__Workload__Workload *w)
{
	Istio__Workload__Address a = ISTIO__WORKLOAD__ADDRESS__INIT;
	a.type_case = ISTIO__WORKLOAD__ADDRESS__TYPE_WORKLOAD;
	a.workload = w;
	ck_assert_uint_le(istio__workload__address__get_packed_size(&a), sizeof(buf));
	return istio__workload__address__pack(&a, buf);
}

START_TEST(test_workload)
{
	Istio__Workload__Workload w = ISTIO__WORKLOAD__WORKLOAD__INIT;
	uint8_t ip4[4] = { 10, 244, 1, 2 }, ip6[16] = { 0xfd, 0, [15] = 2 };
	ProtobufCBinaryData addrs[2] = { { 4, ip4 }, { 16, ip6 } };
	w.uid = "Kubernetes//Pod/demo/client";
	w.name = "client";
	w.namespace_ = "demo";
	w.n_addresses = 2;
	w.addresses = addrs;
	w.tunnel_protocol = ISTIO__WORKLOAD__TUNNEL_PROTOCOL__HBONE;
	w.service_account = "client";
	w.node = "node-1";
	w.workload_type = ISTIO__WORKLOAD__WORKLOAD_TYPE__DEPLOYMENT;
	w.workload_name = "client";
	w.canonical_name = "client";
	w.canonical_revision = "v1";
	char *pols[] = { "demo/allow-client", "", "istio-system/global" };
	w.n_authorization_policies = 3;
	w.authorization_policies = pols;
	size_t n = pack_workload(&w);
	struct zt_workload *out = NULL;
	char err[256] = "";
	ck_assert_int_eq(zt_wds_decode(buf, n, &out, err, sizeof(err)), ZT_WDS_WORKLOAD);
	ck_assert_str_eq(out->uid, "Kubernetes//Pod/demo/client");
	ck_assert_str_eq(out->spiffe, "spiffe://cluster.local/ns/demo/sa/client");
	ck_assert_int_eq(out->tunnel, ZT_TUNNEL_HBONE);
	ck_assert_uint_eq(out->naddrs, 2);
	ck_assert_int_eq(out->addrs[0].family, AF_INET);
	ck_assert_int_eq(out->addrs[1].family, AF_INET6);
	ck_assert_str_eq(out->node, "node-1");
	ck_assert_str_eq(out->workload_type, "deployment");
	ck_assert_str_eq(out->canonical_revision, "v1");
	ck_assert_ptr_null(out->cluster_id); /* unset stays unset */
	ck_assert_uint_eq(out->nauthz_policies, 2); /* an empty name names nothing */
	ck_assert_str_eq(out->authz_policies[0], "demo/allow-client");
	ck_assert_str_eq(out->authz_policies[1], "istio-system/global");
	zt_workload_unref(out);
	w.n_authorization_policies = 0;

	/* Istio defaults: empty service account = default; LEGACY_ISTIO_MTLS is never sent */
	w.service_account = "";
	w.trust_domain = "";
	w.tunnel_protocol = ISTIO__WORKLOAD__TUNNEL_PROTOCOL__LEGACY_ISTIO_MTLS;
	n = pack_workload(&w);
	ck_assert_int_eq(zt_wds_decode(buf, n, &out, err, sizeof(err)), ZT_WDS_WORKLOAD);
	ck_assert_str_eq(out->spiffe, "spiffe://cluster.local/ns/demo/sa/default");
	ck_assert_int_eq(out->tunnel, ZT_TUNNEL_NONE);
	zt_workload_unref(out);
}
END_TEST

START_TEST(test_bad)
{
	Istio__Workload__Workload w = ISTIO__WORKLOAD__WORKLOAD__INIT;
	uint8_t ip5[5] = { 1, 2, 3, 4, 5 }, ip4[4] = { 1, 2, 3, 4 };
	ProtobufCBinaryData bad[1] = { { 5, ip5 } };
	ProtobufCBinaryData many[5] = { { 4, ip4 }, { 4, ip4 }, { 4, ip4 }, { 4, ip4 }, { 4, ip4 } };
	struct zt_workload *out = NULL;
	char err[256];

	w.uid = "u";
	w.name = "n";
	w.namespace_ = "ns";
	w.n_addresses = 1;
	w.addresses = bad;
	size_t n = pack_workload(&w);
	ck_assert_int_eq(zt_wds_decode(buf, n, &out, err, sizeof(err)), -EINVAL);
	ck_assert_msg(strstr(err, "5 bytes") != NULL, "%s", err);

	w.addresses = many;
	w.n_addresses = 5;
	n = pack_workload(&w);
	ck_assert_int_eq(zt_wds_decode(buf, n, &out, err, sizeof(err)), -EINVAL);

	w.n_addresses = 1;
	w.uid = "";
	n = pack_workload(&w);
	ck_assert_int_eq(zt_wds_decode(buf, n, &out, err, sizeof(err)), -EINVAL);
	ck_assert_msg(strstr(err, "uid") != NULL, "%s", err);

	char longname[1100], *lp[1] = { longname };
	memset(longname, 'a', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	w.uid = "u";
	w.n_authorization_policies = 1;
	w.authorization_policies = lp;
	n = pack_workload(&w);
	ck_assert_int_eq(zt_wds_decode(buf, n, &out, err, sizeof(err)), -EINVAL);
	ck_assert_msg(strstr(err, "authorization_policies[0]") != NULL, "%s", err);
	w.n_authorization_policies = 0;

	w.namespace_ = "Bad NS";
	n = pack_workload(&w);
	ck_assert_int_eq(zt_wds_decode(buf, n, &out, err, sizeof(err)), -EINVAL);
	ck_assert_msg(strstr(err, "SPIFFE") != NULL, "%s", err);

	const uint8_t garbage[] = { 0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f };
	ck_assert_int_eq(zt_wds_decode(garbage, sizeof(garbage), &out, err, sizeof(err)), -EINVAL);
	ck_assert_int_eq(zt_wds_decode(buf, 0, &out, err, sizeof(err)), -EINVAL); /* empty oneof */
	ck_assert_ptr_null(out);

	/* every truncation of a valid resource fails cleanly or decodes, never crashes */
	w.namespace_ = "ns";
	w.addresses = many;
	n = pack_workload(&w);
	for (size_t k = 0; k < n; k++) {
		int r = zt_wds_decode(buf, k, &out, err, sizeof(err));
		if (r == ZT_WDS_WORKLOAD)
			out = zt_workload_unref(out);
	}
}
END_TEST

START_TEST(test_service)
{
	Istio__Workload__Service s = ISTIO__WORKLOAD__SERVICE__INIT;
	Istio__Workload__Address a = ISTIO__WORKLOAD__ADDRESS__INIT;
	s.name = "web";
	s.namespace_ = "demo";
	s.hostname = "web.demo.svc.cluster.local";
	a.type_case = ISTIO__WORKLOAD__ADDRESS__TYPE_SERVICE;
	a.service = &s;
	size_t n = istio__workload__address__pack(&a, buf);
	struct zt_workload *out = NULL;
	char err[64];
	ck_assert_int_eq(zt_wds_decode(buf, n, &out, err, sizeof(err)), ZT_WDS_SERVICE);
	ck_assert_ptr_null(out);
}
END_TEST

static Suite *wds_suite(void)
{
	Suite *s = suite_create("wds");
	TCase *tc = tcase_create("core");
	tcase_add_test(tc, test_workload);
	tcase_add_test(tc, test_bad);
	tcase_add_test(tc, test_service);
	suite_add_tcase(s, tc);
	return s;
}

ML_CHECK_MAIN(wds_suite)
