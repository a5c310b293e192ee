/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Wire format of the generated protobuf-c code for proto/: golden bytes written by hand
 * from Istio's and Envoy's field numbers (so a wrong number in a .proto fails here even
 * though the C and Python code generated from it would agree), round trips of every message
 * type, unknown-field skipping, malformed input and allocation failure.
 */
#include <check.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check_main.h"
#include "fill.h"
#include "samples.h"

#include "authorization.pb-c.h"
#include "ca.pb-c.h"
#include "discovery.pb-c.h"
#include "workload.pb-c.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* For hot loops: Check records every passing ck_assert (a file write each). */
#define CHECK(c)                                                                                   \
	do {                                                                                       \
		if (!(c))                                                                          \
			ck_abort_msg("check failed: %s", #c);                                      \
	} while (0)

static size_t unhex(const char *hex, uint8_t *out, size_t max)
{
	size_t n = 0;
	unsigned v;
	int k;

	while (*hex) {
		if (*hex == ' ') {
			hex++;
			continue;
		}
		ck_assert_int_eq(sscanf(hex, "%2x%n", &v, &k), 1);
		ck_assert_int_eq(k, 2);
		ck_assert_uint_lt(n, max);
		out[n++] = (uint8_t)v;
		hex += 2;
	}
	return n;
}

static const char *tohex(const uint8_t *p, size_t n)
{
	static char s[1024];
	size_t o = 0;
	for (size_t i = 0; i < n && o + 4 < sizeof(s); i++)
		o += (size_t)snprintf(s + o, sizeof(s) - o, "%02x ", p[i]);
	s[o] = '\0';
	return s;
}

/*
 * @m encodes to exactly @hex, and decoding @hex and encoding again gives @hex back (so the
 * decoder put every byte in a known field). Returns the decoded message for field checks;
 * free with protobuf_c_message_free_unpacked(, NULL).
 */
static ProtobufCMessage *golden(const ProtobufCMessage *m, const char *hex)
{
	uint8_t want[512];
	size_t n = unhex(hex, want, sizeof(want)), len;
	uint8_t *got = pb_pack(m, &len);

	ck_assert_msg(len == n && memcmp(got, want, n) == 0, "%s: got %s want %s",
		      m->descriptor->name, tohex(got, len), hex);
	free(got);
	ProtobufCMessage *u = protobuf_c_message_unpack(m->descriptor, NULL, n, want);
	ck_assert_ptr_nonnull(u);
	ck_assert_uint_eq(u->n_unknown_fields, 0);
	got = pb_pack(u, &len);
	ck_assert_msg(len == n && memcmp(got, want, n) == 0, "%s: re-encoded %s",
		      m->descriptor->name, tohex(got, len));
	free(got);
	return u;
}

static void golden_free(const ProtobufCMessage *m, const char *hex)
{
	protobuf_c_message_free_unpacked(golden(m, hex), NULL);
}

static uint8_t ip4[] = { 10, 0, 0, 1 };

START_TEST(test_golden_workload)
{
	Istio__Workload__Workload w = ISTIO__WORKLOAD__WORKLOAD__INIT;

	/* uid is field 20: tag (20 << 3 | 2) = 162 = a2 01 */
	w.uid = "u";
	Istio__Workload__Workload *u = (Istio__Workload__Workload *)golden(&w.base, "a2 01 01 75");
	ck_assert_str_eq(u->uid, "u");
	protobuf_c_message_free_unpacked(&u->base, NULL);
	w.uid = "";

	w.name = "n";
	golden_free(&w.base, "0a 01 6e");
	w.name = "";
	w.namespace_ = "d";
	golden_free(&w.base, "12 01 64");
	w.namespace_ = "";

	ProtobufCBinaryData addr = { sizeof(ip4), ip4 };
	w.n_addresses = 1;
	w.addresses = &addr;
	golden_free(&w.base, "1a 04 0a 00 00 01");
	w.n_addresses = 0;

	w.hostname = "h";
	golden_free(&w.base, "aa 01 01 68"); /* 21 */
	w.hostname = "";
	w.network = "n";
	golden_free(&w.base, "22 01 6e"); /* 4 */
	w.network = "";

	w.tunnel_protocol = ISTIO__WORKLOAD__TUNNEL_PROTOCOL__HBONE;
	golden_free(&w.base, "28 01");
	w.tunnel_protocol = ISTIO__WORKLOAD__TUNNEL_PROTOCOL__LEGACY_ISTIO_MTLS;
	golden_free(&w.base, "28 02");
	w.tunnel_protocol = 0;

	w.trust_domain = "t";
	golden_free(&w.base, "32 01 74"); /* 6 */
	w.trust_domain = "";
	w.service_account = "s";
	golden_free(&w.base, "3a 01 73"); /* 7 */
	w.service_account = "";

	Istio__Workload__GatewayAddress gw = ISTIO__WORKLOAD__GATEWAY_ADDRESS__INIT;
	gw.hbone_mtls_port = 15008; /* varint a0 75 */
	w.waypoint = &gw;
	golden_free(&w.base, "42 03 18 a0 75"); /* 8 */
	w.waypoint = NULL;
	w.network_gateway = &gw;
	golden_free(&w.base, "9a 01 03 18 a0 75"); /* 19 */
	w.network_gateway = NULL;

	w.node = "n";
	golden_free(&w.base, "4a 01 6e"); /* 9 */
	w.node = "";
	w.canonical_name = "c";
	golden_free(&w.base, "52 01 63"); /* 10 */
	w.canonical_name = "";
	w.canonical_revision = "r";
	golden_free(&w.base, "5a 01 72"); /* 11 */
	w.canonical_revision = "";
	w.workload_type = ISTIO__WORKLOAD__WORKLOAD_TYPE__JOB;
	golden_free(&w.base, "60 03"); /* 12 */
	w.workload_type = ISTIO__WORKLOAD__WORKLOAD_TYPE__POD;
	golden_free(&w.base, "60 02");
	w.workload_type = 0;
	w.workload_name = "w";
	golden_free(&w.base, "6a 01 77"); /* 13 */
	w.workload_name = "";
	w.native_tunnel = 1;
	golden_free(&w.base, "70 01"); /* 14 */
	w.native_tunnel = 0;

	Istio__Workload__ApplicationTunnel at = ISTIO__WORKLOAD__APPLICATION_TUNNEL__INIT;
	at.protocol = ISTIO__WORKLOAD__APPLICATION_TUNNEL__PROTOCOL__PROXY;
	at.port = 15088;
	w.application_tunnel = &at;
	golden_free(&w.base, "ba 01 05 08 01 10 f0 75"); /* 23 */
	w.application_tunnel = NULL;

	/* map<string, PortList> services = 22: entry {key=1, value=2} */
	Istio__Workload__Port port = ISTIO__WORKLOAD__PORT__INIT;
	Istio__Workload__Port *ports[] = { &port };
	Istio__Workload__PortList pl = ISTIO__WORKLOAD__PORT_LIST__INIT;
	Istio__Workload__Workload__ServicesEntry e =
		ISTIO__WORKLOAD__WORKLOAD__SERVICES_ENTRY__INIT;
	Istio__Workload__Workload__ServicesEntry *es[] = { &e };
	port.service_port = 80;
	pl.n_ports = 1;
	pl.ports = ports;
	e.key = "k";
	e.value = &pl;
	w.n_services = 1;
	w.services = es;
	golden_free(&w.base, "b2 01 09 0a 01 6b 12 04 0a 02 08 50");
	w.n_services = 0;

	char *pols[] = { "p" };
	w.n_authorization_policies = 1;
	w.authorization_policies = pols;
	golden_free(&w.base, "82 01 01 70"); /* 16 */
	w.n_authorization_policies = 0;

	w.status = ISTIO__WORKLOAD__WORKLOAD_STATUS__UNHEALTHY;
	golden_free(&w.base, "88 01 01"); /* 17 */
	w.status = 0;
	w.cluster_id = "c";
	golden_free(&w.base, "92 01 01 63"); /* 18 */
	w.cluster_id = "";

	Istio__Workload__Locality loc = ISTIO__WORKLOAD__LOCALITY__INIT;
	loc.region = "r";
	loc.zone = "z";
	loc.subzone = "s";
	w.locality = &loc;
	golden_free(&w.base, "c2 01 09 0a 01 72 12 01 7a 1a 01 73"); /* 24 */
	w.locality = NULL;
	w.network_mode = ISTIO__WORKLOAD__NETWORK_MODE__HOST_NETWORK;
	golden_free(&w.base, "c8 01 01"); /* 25 */
	w.network_mode = 0;

	Istio__Workload__Extension ext = ISTIO__WORKLOAD__EXTENSION__INIT;
	Istio__Workload__Extension *exts[] = { &ext };
	Google__Protobuf__Any any = GOOGLE__PROTOBUF__ANY__INIT;
	ext.name = "x";
	any.type_url = "t";
	ext.config = &any;
	w.n_extensions = 1;
	w.extensions = exts;
	golden_free(&w.base, "d2 01 08 0a 01 78 12 03 0a 01 74"); /* 26 */
	w.n_extensions = 0;

	/* capacity = 27 is a UInt32Value: present-but-zero differs from absent */
	Google__Protobuf__UInt32Value cap = GOOGLE__PROTOBUF__UINT32_VALUE__INIT;
	w.capacity = &cap;
	golden_free(&w.base, "da 01 00");
	cap.value = 2;
	golden_free(&w.base, "da 01 02 08 02");
	w.capacity = NULL;

	/* Address: oneof type { workload = 1; service = 2 } */
	Istio__Workload__Address a = ISTIO__WORKLOAD__ADDRESS__INIT;
	Istio__Workload__Service s = ISTIO__WORKLOAD__SERVICE__INIT;
	a.type_case = ISTIO__WORKLOAD__ADDRESS__TYPE_WORKLOAD;
	a.workload = &w;
	golden_free(&a.base, "0a 00");
	a.type_case = ISTIO__WORKLOAD__ADDRESS__TYPE_SERVICE;
	a.service = &s;
	golden_free(&a.base, "12 00");
}
END_TEST

START_TEST(test_golden_service)
{
	Istio__Workload__Service s = ISTIO__WORKLOAD__SERVICE__INIT;

	s.name = "n";
	s.namespace_ = "d";
	s.hostname = "h";
	golden_free(&s.base, "0a 01 6e 12 01 64 1a 01 68");
	s.name = s.namespace_ = s.hostname = "";

	Istio__Workload__NetworkAddress na = ISTIO__WORKLOAD__NETWORK_ADDRESS__INIT;
	Istio__Workload__NetworkAddress *nas[] = { &na };
	na.network = "n";
	na.address = (ProtobufCBinaryData){ sizeof(ip4), ip4 };
	s.n_addresses = 1;
	s.addresses = nas;
	golden_free(&s.base, "22 09 0a 01 6e 12 04 0a 00 00 01");
	/* length = 3 has explicit presence: 0 is sent when set */
	na.has_length_case = ISTIO__WORKLOAD__NETWORK_ADDRESS__HAS_LENGTH_LENGTH;
	na.length = 0;
	golden_free(&s.base, "22 0b 0a 01 6e 12 04 0a 00 00 01 18 00");
	na.length = 24;
	golden_free(&s.base, "22 0b 0a 01 6e 12 04 0a 00 00 01 18 18");
	s.n_addresses = 0;

	Istio__Workload__Port p = ISTIO__WORKLOAD__PORT__INIT;
	Istio__Workload__Port *ps[] = { &p };
	p.service_port = 443;
	p.target_port = 8443;
	p.app_protocol = ISTIO__WORKLOAD__APP_PROTOCOL__GRPC;
	s.n_ports = 1;
	s.ports = ps;
	golden_free(&s.base, "2a 08 08 bb 03 10 fb 41 18 03"); /* 5 */
	s.n_ports = 0;

	char *sans[] = { "x" };
	s.n_subject_alt_names = 1;
	s.subject_alt_names = sans;
	golden_free(&s.base, "32 01 78"); /* 6 */
	s.n_subject_alt_names = 0;

	Istio__Workload__NamespacedHostname nh = ISTIO__WORKLOAD__NAMESPACED_HOSTNAME__INIT;
	Istio__Workload__GatewayAddress gw = ISTIO__WORKLOAD__GATEWAY_ADDRESS__INIT;
	nh.namespace_ = "a";
	nh.hostname = "b";
	gw.destination_case = ISTIO__WORKLOAD__GATEWAY_ADDRESS__DESTINATION_HOSTNAME;
	gw.hostname = &nh;
	s.waypoint = &gw;
	golden_free(&s.base, "3a 08 0a 06 0a 01 61 12 01 62"); /* 7 */
	s.waypoint = NULL;

	Istio__Workload__LoadBalancing lb = ISTIO__WORKLOAD__LOAD_BALANCING__INIT;
	Istio__Workload__LoadBalancing__Scope prefs[] = {
		ISTIO__WORKLOAD__LOAD_BALANCING__SCOPE__NETWORK,
		ISTIO__WORKLOAD__LOAD_BALANCING__SCOPE__REGION,
		ISTIO__WORKLOAD__LOAD_BALANCING__SCOPE__NODE,
	};
	lb.n_routing_preference = 3;
	lb.routing_preference = prefs;
	lb.mode = ISTIO__WORKLOAD__LOAD_BALANCING__MODE__FAILOVER;
	lb.health_policy = ISTIO__WORKLOAD__LOAD_BALANCING__HEALTH_POLICY__ALLOW_ALL;
	s.load_balancing = &lb;
	/* repeated enum: packed in proto3 */
	golden_free(&s.base, "42 09 0a 03 06 01 04 10 02 18 01"); /* 8 */
	lb.mode = ISTIO__WORKLOAD__LOAD_BALANCING__MODE__PASSTHROUGH;
	lb.n_routing_preference = 0;
	lb.health_policy = 0;
	golden_free(&s.base, "42 02 10 03");
	s.load_balancing = NULL;

	s.ip_families = ISTIO__WORKLOAD__IPFAMILIES__DUAL;
	golden_free(&s.base, "48 03"); /* 9 */
	s.ip_families = ISTIO__WORKLOAD__IPFAMILIES__IPV6_ONLY;
	golden_free(&s.base, "48 02");
	s.ip_families = 0;
	s.canonical = 1;
	golden_free(&s.base, "58 01"); /* 11 */
	s.canonical = 0;
	s.ingress_use_waypoint = 1;
	golden_free(&s.base, "60 01"); /* 12 */
	s.ingress_use_waypoint = 0;

	Istio__Workload__WeightedWaypoint ww = ISTIO__WORKLOAD__WEIGHTED_WAYPOINT__INIT;
	Istio__Workload__WeightedWaypoint *wws[] = { &ww };
	gw.destination_case = ISTIO__WORKLOAD__GATEWAY_ADDRESS__DESTINATION__NOT_SET;
	gw.hbone_mtls_port = 1;
	ww.destination = &gw;
	ww.weight = 90;
	s.n_weighted_waypoints = 1;
	s.weighted_waypoints = wws;
	golden_free(&s.base, "6a 06 0a 02 18 01 10 5a"); /* 13 */
	s.n_weighted_waypoints = 0;

	s.visibility = ISTIO__WORKLOAD__SERVICE__VISIBILITY__NAMESPACE;
	golden_free(&s.base, "70 01"); /* 14 */

	/* GatewayAddress.address = 2 */
	Istio__Workload__GatewayAddress gw2 = ISTIO__WORKLOAD__GATEWAY_ADDRESS__INIT;
	Istio__Workload__NetworkAddress na2 = ISTIO__WORKLOAD__NETWORK_ADDRESS__INIT;
	na2.address = (ProtobufCBinaryData){ sizeof(ip4), ip4 };
	gw2.destination_case = ISTIO__WORKLOAD__GATEWAY_ADDRESS__DESTINATION_ADDRESS;
	gw2.address = &na2;
	golden_free(&gw2.base, "12 06 12 04 0a 00 00 01");
}
END_TEST

START_TEST(test_golden_authorization)
{
	Istio__Security__Authorization az = ISTIO__SECURITY__AUTHORIZATION__INIT;
	Istio__Security__Group g = ISTIO__SECURITY__GROUP__INIT;
	Istio__Security__Group *gs[] = { &g };

	az.name = "n";
	az.namespace_ = "d";
	az.scope = ISTIO__SECURITY__SCOPE__WORKLOAD_SELECTOR;
	az.action = ISTIO__SECURITY__ACTION__DENY;
	az.dry_run = 1;
	golden_free(&az.base, "0a 01 6e 12 01 64 18 02 20 01 30 01");
	az.name = az.namespace_ = "";
	az.scope = ISTIO__SECURITY__SCOPE__NAMESPACE;
	az.action = 0;
	az.dry_run = 0;
	golden_free(&az.base, "18 01");
	az.scope = 0;

	/* groups = 5 */
	az.n_groups = 1;
	az.groups = gs;
	golden_free(&az.base, "2a 00");

	Istio__Workload__Extension ext = ISTIO__WORKLOAD__EXTENSION__INIT;
	Istio__Workload__Extension *exts[] = { &ext };
	ext.name = "e";
	az.n_groups = 0;
	az.n_extensions = 1;
	az.extensions = exts;
	golden_free(&az.base, "3a 03 0a 01 65"); /* 7 */

	/* Group.rules = 1, Rules.matches = 2 */
	Istio__Security__Rules r = ISTIO__SECURITY__RULES__INIT;
	Istio__Security__Rules *rs[] = { &r };
	Istio__Security__Match m = ISTIO__SECURITY__MATCH__INIT;
	Istio__Security__Match *ms[] = { &m };
	r.n_matches = 1;
	r.matches = ms;
	g.n_rules = 1;
	g.rules = rs;
	golden_free(&g.base, "0a 02 12 00");

	/* Match, field by field */
	Istio__Security__StringMatch sm = ISTIO__SECURITY__STRING_MATCH__INIT;
	Istio__Security__StringMatch *sms[] = { &sm };
	sm.match_type_case = ISTIO__SECURITY__STRING_MATCH__MATCH_TYPE_EXACT;
	sm.exact = "x";
	static const struct {
		size_t off_n, off_p;
		const char *hex;
	} lists[] = {
		{ offsetof(Istio__Security__Match, n_namespaces),
		  offsetof(Istio__Security__Match, namespaces), "0a 03 0a 01 78" },
		{ offsetof(Istio__Security__Match, n_not_namespaces),
		  offsetof(Istio__Security__Match, not_namespaces), "12 03 0a 01 78" },
		{ offsetof(Istio__Security__Match, n_principals),
		  offsetof(Istio__Security__Match, principals), "1a 03 0a 01 78" },
		{ offsetof(Istio__Security__Match, n_not_principals),
		  offsetof(Istio__Security__Match, not_principals), "22 03 0a 01 78" },
	};
	for (size_t i = 0; i < ARRAY_SIZE(lists); i++) {
		Istio__Security__Match mm = ISTIO__SECURITY__MATCH__INIT;
		*(size_t *)((char *)&mm + lists[i].off_n) = 1;
		*(void **)((char *)&mm + lists[i].off_p) = sms;
		golden_free(&mm.base, lists[i].hex);
	}
	/* StringMatch oneof: exact 1, prefix 2, suffix 3, presence 4 */
	sm.match_type_case = ISTIO__SECURITY__STRING_MATCH__MATCH_TYPE_PREFIX;
	sm.prefix = "p";
	golden_free(&sm.base, "12 01 70");
	sm.match_type_case = ISTIO__SECURITY__STRING_MATCH__MATCH_TYPE_SUFFIX;
	sm.suffix = "s";
	golden_free(&sm.base, "1a 01 73");
	Google__Protobuf__Empty empty = GOOGLE__PROTOBUF__EMPTY__INIT;
	sm.match_type_case = ISTIO__SECURITY__STRING_MATCH__MATCH_TYPE_PRESENCE;
	sm.presence = &empty;
	golden_free(&sm.base, "22 00");

	Istio__Security__Address ad = ISTIO__SECURITY__ADDRESS__INIT;
	Istio__Security__Address *ads[] = { &ad };
	ad.address = (ProtobufCBinaryData){ sizeof(ip4), ip4 };
	ad.length = 8;
	m.n_source_ips = 1;
	m.source_ips = ads;
	golden_free(&m.base, "2a 08 0a 04 0a 00 00 01 10 08"); /* 5 */
	m.n_source_ips = 0;
	m.n_not_source_ips = 1;
	m.not_source_ips = ads;
	golden_free(&m.base, "32 08 0a 04 0a 00 00 01 10 08"); /* 6 */
	m.n_not_source_ips = 0;
	m.n_destination_ips = 1;
	m.destination_ips = ads;
	golden_free(&m.base, "3a 08 0a 04 0a 00 00 01 10 08"); /* 7 */
	m.n_destination_ips = 0;
	m.n_not_destination_ips = 1;
	m.not_destination_ips = ads;
	golden_free(&m.base, "42 08 0a 04 0a 00 00 01 10 08"); /* 8 */
	m.n_not_destination_ips = 0;

	/* ports: packed uint32 */
	uint32_t ports[] = { 80, 443 };
	m.n_destination_ports = 2;
	m.destination_ports = ports;
	golden_free(&m.base, "4a 03 50 bb 03"); /* 9 */
	m.n_destination_ports = 0;
	m.n_not_destination_ports = 1;
	m.not_destination_ports = ports;
	golden_free(&m.base, "52 01 50"); /* 10 */
	m.n_not_destination_ports = 0;

	Istio__Security__ServiceAccountMatch sa = ISTIO__SECURITY__SERVICE_ACCOUNT_MATCH__INIT;
	Istio__Security__ServiceAccountMatch *sas[] = { &sa };
	sa.namespace_ = "n";
	sa.serviceaccount = "s";
	m.n_service_accounts = 1;
	m.service_accounts = sas;
	golden_free(&m.base, "5a 06 0a 01 6e 12 01 73"); /* 11 */
	m.n_service_accounts = 0;
	m.n_not_service_accounts = 1;
	m.not_service_accounts = sas;
	golden_free(&m.base, "62 06 0a 01 6e 12 01 73"); /* 12 */
	m.n_not_service_accounts = 0;
	m.n_extensions = 1;
	m.extensions = exts;
	golden_free(&m.base, "6a 03 0a 01 65"); /* 13 */

	/* an unpacked encoding of a packed field must be accepted too (proto spec) */
	uint8_t unpacked[] = { 0x50, 0x50, 0x50, 0xbb, 0x03 };
	Istio__Security__Match *u =
		istio__security__match__unpack(NULL, sizeof(unpacked), unpacked);
	ck_assert_ptr_nonnull(u);
	ck_assert_uint_eq(u->n_not_destination_ports, 2);
	ck_assert_uint_eq(u->not_destination_ports[0], 80);
	ck_assert_uint_eq(u->not_destination_ports[1], 443);
	istio__security__match__free_unpacked(u, NULL);
}
END_TEST

START_TEST(test_golden_discovery)
{
	Envoy__Service__Discovery__V3__DeltaDiscoveryResponse rsp =
		ENVOY__SERVICE__DISCOVERY__V3__DELTA_DISCOVERY_RESPONSE__INIT;
	char *one[] = { "r" };

	rsp.system_version_info = "v";
	golden_free(&rsp.base, "0a 01 76"); /* 1 */
	rsp.system_version_info = "";
	rsp.type_url = "t";
	golden_free(&rsp.base, "22 01 74"); /* 4 */
	rsp.type_url = "";
	rsp.nonce = "n";
	golden_free(&rsp.base, "2a 01 6e"); /* 5 */
	rsp.nonce = "";
	rsp.n_removed_resources = 1;
	rsp.removed_resources = one;
	golden_free(&rsp.base, "32 01 72"); /* 6 */
	rsp.n_removed_resources = 0;
	Envoy__Config__Core__V3__ControlPlane cp = ENVOY__CONFIG__CORE__V3__CONTROL_PLANE__INIT;
	cp.identifier = "i";
	rsp.control_plane = &cp;
	golden_free(&rsp.base, "3a 03 0a 01 69"); /* 7 */
	rsp.control_plane = NULL;

	Envoy__Service__Discovery__V3__Resource res = ENVOY__SERVICE__DISCOVERY__V3__RESOURCE__INIT;
	Envoy__Service__Discovery__V3__Resource *ress[] = { &res };
	rsp.n_resources = 1;
	rsp.resources = ress;
	golden_free(&rsp.base, "12 00"); /* 2 */

	res.version = "v";
	golden_free(&res.base, "0a 01 76"); /* 1 */
	res.version = "";
	Google__Protobuf__Any any = GOOGLE__PROTOBUF__ANY__INIT;
	uint8_t val[] = { 'v' };
	any.type_url = "t";
	any.value = (ProtobufCBinaryData){ 1, val };
	res.resource = &any;
	golden_free(&res.base, "12 06 0a 01 74 12 01 76"); /* 2, Any{1, 2} */
	res.resource = NULL;
	res.name = "n";
	golden_free(&res.base, "1a 01 6e"); /* 3 */
	res.name = "";
	char *al[] = { "a" };
	res.n_aliases = 1;
	res.aliases = al;
	golden_free(&res.base, "22 01 61"); /* 4 */
	res.n_aliases = 0;
	Google__Protobuf__Duration ttl = GOOGLE__PROTOBUF__DURATION__INIT;
	ttl.seconds = 5;
	ttl.nanos = 1;
	res.ttl = &ttl;
	golden_free(&res.base, "32 04 08 05 10 01"); /* 6 */
	res.ttl = NULL;
	Envoy__Service__Discovery__V3__Resource__CacheControl cc =
		ENVOY__SERVICE__DISCOVERY__V3__RESOURCE__CACHE_CONTROL__INIT;
	cc.do_not_cache = 1;
	res.cache_control = &cc;
	golden_free(&res.base, "3a 02 08 01"); /* 7 */

	Envoy__Service__Discovery__V3__DeltaDiscoveryRequest req =
		ENVOY__SERVICE__DISCOVERY__V3__DELTA_DISCOVERY_REQUEST__INIT;
	Envoy__Config__Core__V3__Node node = ENVOY__CONFIG__CORE__V3__NODE__INIT;
	node.id = "i";
	req.node = &node;
	golden_free(&req.base, "0a 03 0a 01 69"); /* 1 */
	req.node = NULL;
	req.type_url = "t";
	golden_free(&req.base, "12 01 74"); /* 2 */
	req.type_url = "";
	char *sub[] = { "s" }, *unsub[] = { "u" };
	req.n_resource_names_subscribe = 1;
	req.resource_names_subscribe = sub;
	req.n_resource_names_unsubscribe = 1;
	req.resource_names_unsubscribe = unsub;
	golden_free(&req.base, "1a 01 73 22 01 75"); /* 3, 4 */
	req.n_resource_names_subscribe = req.n_resource_names_unsubscribe = 0;
	Envoy__Service__Discovery__V3__DeltaDiscoveryRequest__InitialResourceVersionsEntry iv =
		ENVOY__SERVICE__DISCOVERY__V3__DELTA_DISCOVERY_REQUEST__INITIAL_RESOURCE_VERSIONS_ENTRY__INIT;
	Envoy__Service__Discovery__V3__DeltaDiscoveryRequest__InitialResourceVersionsEntry
		*ivs[] = { &iv };
	iv.key = "a";
	iv.value = "1";
	req.n_initial_resource_versions = 1;
	req.initial_resource_versions = ivs;
	golden_free(&req.base, "2a 06 0a 01 61 12 01 31"); /* 5 */
	req.n_initial_resource_versions = 0;
	req.response_nonce = "n";
	golden_free(&req.base, "32 01 6e"); /* 6 */
	req.response_nonce = "";
	Google__Rpc__Status st = GOOGLE__RPC__STATUS__INIT;
	Google__Protobuf__Any *details[] = { &any };
	st.code = 3;
	st.message = "m";
	req.error_detail = &st;
	golden_free(&req.base, "3a 05 08 03 12 01 6d"); /* 7; Status{code 1, message 2} */
	st.code = 0;
	st.message = "";
	st.n_details = 1;
	st.details = details;
	golden_free(&st.base, "1a 06 0a 01 74 12 01 76"); /* details 3 */
	req.error_detail = NULL;
	Envoy__Service__Discovery__V3__ResourceLocator loc =
		ENVOY__SERVICE__DISCOVERY__V3__RESOURCE_LOCATOR__INIT;
	Envoy__Service__Discovery__V3__ResourceLocator *locs[] = { &loc };
	loc.name = "l";
	req.n_resource_locators_subscribe = 1;
	req.resource_locators_subscribe = locs;
	req.n_resource_locators_unsubscribe = 1;
	req.resource_locators_unsubscribe = locs;
	golden_free(&req.base, "42 03 0a 01 6c 4a 03 0a 01 6c"); /* 8, 9 */

	/* Node */
	node.id = "";
	node.cluster = "c";
	golden_free(&node.base, "12 01 63"); /* 2 */
	node.cluster = "";
	Google__Protobuf__Value v = GOOGLE__PROTOBUF__VALUE__INIT;
	Google__Protobuf__Struct__FieldsEntry fe = GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT;
	Google__Protobuf__Struct__FieldsEntry *fes[] = { &fe };
	Google__Protobuf__Struct md = GOOGLE__PROTOBUF__STRUCT__INIT;
	v.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
	v.string_value = "v";
	fe.key = "k";
	fe.value = &v;
	md.n_fields = 1;
	md.fields = fes;
	node.metadata = &md;
	/* 3: Struct{fields=1 {key=1, value=2 Value{string_value=3}}} */
	golden_free(&node.base, "1a 0a 0a 08 0a 01 6b 12 03 1a 01 76");
	node.metadata = NULL;
	Envoy__Config__Core__V3__Locality el = ENVOY__CONFIG__CORE__V3__LOCALITY__INIT;
	el.sub_zone = "s";
	node.locality = &el;
	golden_free(&node.base, "22 03 1a 01 73"); /* 4; sub_zone 3 */
	node.locality = NULL;
	node.user_agent_name = "u";
	golden_free(&node.base, "32 01 75"); /* 6 */
	node.user_agent_name = "";
	node.user_agent_version_type_case =
		ENVOY__CONFIG__CORE__V3__NODE__USER_AGENT_VERSION_TYPE_USER_AGENT_VERSION;
	node.user_agent_version = "v";
	golden_free(&node.base, "3a 01 76"); /* 7 */
	node.user_agent_version_type_case = 0;
	char *feats[] = { "f" };
	node.n_client_features = 1;
	node.client_features = feats;
	golden_free(&node.base, "52 01 66"); /* 10 */

	/* Value kinds: null 1, number 2 (double), string 3, bool 4, struct 5, list 6 */
	v.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NULL_VALUE;
	v.null_value = 0;
	golden_free(&v.base, "08 00");
	v.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE;
	v.number_value = 1.0;
	golden_free(&v.base, "11 00 00 00 00 00 00 f0 3f");
	v.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE;
	v.bool_value = 1;
	golden_free(&v.base, "20 01");
	Google__Protobuf__ListValue lv = GOOGLE__PROTOBUF__LIST_VALUE__INIT;
	v.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE;
	v.list_value = &lv;
	golden_free(&v.base, "32 00");
}
END_TEST

START_TEST(test_golden_ca)
{
	Istio__V1__Auth__IstioCertificateRequest req =
		ISTIO__V1__AUTH__ISTIO_CERTIFICATE_REQUEST__INIT;
	Google__Protobuf__Struct md = GOOGLE__PROTOBUF__STRUCT__INIT;

	req.csr = "c";
	req.validity_duration = 86400;
	req.metadata = &md;
	golden_free(&req.base, "0a 01 63 18 80 a3 05 22 00");

	Istio__V1__Auth__IstioCertificateResponse rsp =
		ISTIO__V1__AUTH__ISTIO_CERTIFICATE_RESPONSE__INIT;
	char *chain[] = { "a", "b" };
	rsp.n_cert_chain = 2;
	rsp.cert_chain = chain;
	golden_free(&rsp.base, "0a 01 61 0a 01 62");

	/* the wire names of the services */
	ck_assert_str_eq(istio__v1__auth__istio_certificate_service__descriptor.name,
			 "istio.v1.auth.IstioCertificateService");
	ck_assert_str_eq(istio__v1__auth__istio_certificate_service__descriptor.methods[0].name,
			 "CreateCertificate");
	ck_assert_str_eq(
		envoy__service__discovery__v3__aggregated_discovery_service__descriptor.name,
		"envoy.service.discovery.v3.AggregatedDiscoveryService");
	ck_assert_str_eq(
		envoy__service__discovery__v3__aggregated_discovery_service__descriptor.methods[0]
			.name,
		"DeltaAggregatedResources");
	/* type URLs are "type.googleapis.com/" + these */
	ck_assert_str_eq(istio__workload__address__descriptor.name, "istio.workload.Address");
	ck_assert_str_eq(istio__security__authorization__descriptor.name,
			 "istio.security.Authorization");
}
END_TEST

/* Every message type, every oneof member: fill, encode, decode, encode again: same bytes. */
START_TEST(test_roundtrip_all_types)
{
	const ProtobufCMessageDescriptor *all[256];
	size_t n = pb_closure(pb_roots, pb_nroots, all, ARRAY_SIZE(all));

	/* 14 roots reach all 52 types in proto/: workload 14, authorization 7, core 5, status 1,
	 * discovery 7, ca 2, well-known 16; 4 of them map entries. xcheck.py checks from the
	 * Python side that no declared type is missing. */
	ck_assert_uint_eq(n, 52);
	for (size_t i = 0; i < n; i++) {
		for (unsigned v = 0; v < PB_FILL_VARIANTS; v++) {
			ProtobufCMessage *m = pb_fill(all[i], 0, 0, pb_is_map_entry(all[i]), v);
			size_t len, len2;
			uint8_t *a = pb_pack(m, &len);
			ProtobufCMessage *u = protobuf_c_message_unpack(all[i], NULL, len, a);
			ck_assert_msg(u != NULL, "%s", all[i]->name);
			ck_assert_uint_eq(u->n_unknown_fields, 0);
			uint8_t *b = pb_pack(u, &len2);
			ck_assert_msg(len == len2 && memcmp(a, b, len) == 0, "%s/%u", all[i]->name,
				      v);
			/* a message with fields encodes to something */
			ck_assert_msg(all[i]->n_fields == 0 || len > 0, "%s", all[i]->name);
			free(a);
			free(b);
			protobuf_c_message_free_unpacked(m, NULL);
			protobuf_c_message_free_unpacked(u, NULL);
		}
	}
}
END_TEST

START_TEST(test_samples)
{
	for (size_t i = 0; i < pb_nsamples; i++) {
		const ProtobufCMessage *m = pb_samples[i].build();
		ck_assert_ptr_nonnull(m);
		size_t len, len2;
		uint8_t *a = pb_pack(m, &len);
		ProtobufCMessage *u = protobuf_c_message_unpack(m->descriptor, NULL, len, a);
		ck_assert_ptr_nonnull(u);
		uint8_t *b = pb_pack(u, &len2);
		ck_assert_msg(len == len2 && memcmp(a, b, len) == 0, "%s", pb_samples[i].name);
		free(a);
		free(b);
		protobuf_c_message_free_unpacked(u, NULL);
	}

	/* a delta response carries an Address inside an Any, decoded in two steps */
	const ProtobufCMessage *m = pb_samples[6].build();
	ck_assert_str_eq(pb_samples[6].name, "delta_response");
	size_t len;
	uint8_t *a = pb_pack(m, &len);
	Envoy__Service__Discovery__V3__DeltaDiscoveryResponse *rsp =
		envoy__service__discovery__v3__delta_discovery_response__unpack(NULL, len, a);
	ck_assert_ptr_nonnull(rsp);
	ck_assert_uint_eq(rsp->n_resources, 1);
	ck_assert_str_eq(rsp->resources[0]->resource->type_url,
			 "type.googleapis.com/istio.workload.Address");
	Istio__Workload__Address *addr =
		istio__workload__address__unpack(NULL, rsp->resources[0]->resource->value.len,
						 rsp->resources[0]->resource->value.data);
	ck_assert_ptr_nonnull(addr);
	ck_assert_int_eq(addr->type_case, ISTIO__WORKLOAD__ADDRESS__TYPE_SERVICE);
	ck_assert_str_eq(addr->service->hostname, "echo.default.svc.cluster.local");
	ck_assert_uint_eq(addr->service->ports[1]->service_port, 9090);
	istio__workload__address__free_unpacked(addr, NULL);
	envoy__service__discovery__v3__delta_discovery_response__free_unpacked(rsp, NULL);
	free(a);
}
END_TEST

/* A newer istiod sends fields we do not know: they are skipped, not rejected (and kept, so
 * re-encoding passes them on). */
START_TEST(test_unknown_fields)
{
	static const char *hex = "0a 01 6e"			       /* name "n" */
				 "f8 07 05"			       /* 127: varint */
				 "78 01"			       /* 15 (reserved): varint */
				 "a1 06 01 02 03 04 05 06 07 08"       /* 100: fixed64 */
				 "ad 06 01 02 03 04"		       /* 101: fixed32 */
				 "b2 06 03 78 79 7a"		       /* 102: length-delimited */
				 "a2 01 01 75"			       /* uid "u" */
				 "b8 06 ff ff ff ff ff ff ff ff ff 01" /* 103: 10-byte varint */
				 "1a 04 0a 00 00 05"		       /* addresses */
				 "c2 01 05 0a 01 72 40 01" /* locality {region "r", 8: unknown} */
				 "28 07";		   /* tunnel_protocol: unknown enum value */
	uint8_t buf[256];
	size_t n = unhex(hex, buf, sizeof(buf));
	Istio__Workload__Workload *w = istio__workload__workload__unpack(NULL, n, buf);

	ck_assert_ptr_nonnull(w);
	ck_assert_str_eq(w->name, "n");
	ck_assert_str_eq(w->uid, "u");
	ck_assert_uint_eq(w->n_addresses, 1);
	ck_assert_mem_eq(w->addresses[0].data, "\x0a\x00\x00\x05", 4);
	ck_assert_str_eq(w->locality->region, "r");
	ck_assert_uint_eq(w->locality->base.n_unknown_fields, 1);
	/* proto3 enums are open: the value is kept as is, the consumer decides */
	ck_assert_int_eq(w->tunnel_protocol, 7);
	ck_assert_uint_eq(w->base.n_unknown_fields, 6);
	size_t len;
	uint8_t *again = pb_pack(&w->base, &len);
	ck_assert_uint_eq(len, n);
	free(again);
	istio__workload__workload__free_unpacked(w, NULL);

	/* the same inside an Address inside a Resource */
	static const char *addr = "0a 07 a2 01 01 75 f8 07 05";
	n = unhex(addr, buf, sizeof(buf));
	Istio__Workload__Address *a = istio__workload__address__unpack(NULL, n, buf);
	ck_assert_ptr_nonnull(a);
	ck_assert_int_eq(a->type_case, ISTIO__WORKLOAD__ADDRESS__TYPE_WORKLOAD);
	ck_assert_str_eq(a->workload->uid, "u");
	istio__workload__address__free_unpacked(a, NULL);

	/* an unknown oneof member in Address (a future type = 3) leaves type unset */
	static const char *future = "1a 02 08 01";
	n = unhex(future, buf, sizeof(buf));
	a = istio__workload__address__unpack(NULL, n, buf);
	ck_assert_ptr_nonnull(a);
	ck_assert_int_eq(a->type_case, ISTIO__WORKLOAD__ADDRESS__TYPE__NOT_SET);
	istio__workload__address__free_unpacked(a, NULL);
}
END_TEST

START_TEST(test_malformed)
{
	static const struct {
		const char *name;
		const char *hex;
	} bad[] = {
		{ "truncated varint", "28 ff" },
		{ "truncated tag", "a2" },
		{ "length past end", "a2 01 05 75" },
		{ "huge length", "0a ff ff ff ff 0f" },
		{ "11-byte varint", "f8 07 ff ff ff ff ff ff ff ff ff ff 01" },
		{ "wire type 6", "0e" },
		{ "wire type 7", "0f" },
		{ "field number 0", "02 00" },
		{ "truncated fixed64", "a1 06 01 02" },
		{ "truncated submessage", "c2 01 05 0a 01" },
		{ "bad submessage", "c2 01 02 0a 05" },
	};
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		uint8_t buf[64];
		size_t n = unhex(bad[i].hex, buf, sizeof(buf));
		Istio__Workload__Workload *w = istio__workload__workload__unpack(NULL, n, buf);
		ck_assert_msg(w == NULL, "%s accepted", bad[i].name);
	}

	/* every prefix and every single-byte corruption of every sample: no crash, no leak
	 * (ASan), whatever the verdict */
	for (size_t s = 0; s < pb_nsamples; s++) {
		const ProtobufCMessage *m = pb_samples[s].build();
		size_t len;
		uint8_t *a = pb_pack(m, &len);
		for (size_t cut = 0; cut < len; cut++) {
			ProtobufCMessage *u =
				protobuf_c_message_unpack(m->descriptor, NULL, cut, a);
			protobuf_c_message_free_unpacked(u, NULL);
		}
		for (size_t pos = 0; pos < len; pos++) {
			static const uint8_t flips[] = { 0xff, 0x80, 0x01, 0x07 };
			for (size_t f = 0; f < ARRAY_SIZE(flips); f++) {
				a[pos] ^= flips[f];
				ProtobufCMessage *u =
					protobuf_c_message_unpack(m->descriptor, NULL, len, a);
				a[pos] ^= flips[f];
				protobuf_c_message_free_unpacked(u, NULL);
			}
		}
		free(a);
	}
}
END_TEST

struct failing_alloc {
	size_t left; /* allocations that succeed */
};

static void *fail_alloc(void *data, size_t size)
{
	struct failing_alloc *fa = data;
	if (fa->left == 0)
		return NULL;
	fa->left--;
	return malloc(size);
}

static void fail_free(void *data, void *p)
{
	(void)data;
	free(p);
}

/* Fail the i-th allocation of a decode, for every i: NULL and nothing leaked (ASan). */
START_TEST(test_failmalloc)
{
	for (size_t s = 0; s < pb_nsamples; s++) {
		const ProtobufCMessage *m = pb_samples[s].build();
		size_t len;
		uint8_t *a = pb_pack(m, &len);
		bool ok = false;
		for (size_t i = 0; !ok; i++) {
			struct failing_alloc fa = { .left = i };
			ProtobufCAllocator al = { fail_alloc, fail_free, &fa };
			ProtobufCMessage *u = protobuf_c_message_unpack(m->descriptor, &al, len, a);
			CHECK(i < 10000);
			if (!u)
				continue;
			ok = true;
			protobuf_c_message_free_unpacked(u, &al);
		}
		free(a);
	}
}
END_TEST

static Suite *wire_suite(void)
{
	Suite *s = suite_create("proto-wire");
	TCase *tc = tcase_create("golden");
	tcase_add_test(tc, test_golden_workload);
	tcase_add_test(tc, test_golden_service);
	tcase_add_test(tc, test_golden_authorization);
	tcase_add_test(tc, test_golden_discovery);
	tcase_add_test(tc, test_golden_ca);
	suite_add_tcase(s, tc);

	tc = tcase_create("roundtrip");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_roundtrip_all_types);
	tcase_add_test(tc, test_samples);
	tcase_add_test(tc, test_unknown_fields);
	tcase_add_test(tc, test_malformed);
	tcase_add_test(tc, test_failmalloc);
	suite_add_tcase(s, tc);
	return s;
}

ML_CHECK_MAIN(wire_suite)
