/* SPDX-License-Identifier: Apache-2.0 */
#include "samples.h"

#include "authorization.pb-c.h"
#include "ca.pb-c.h"
#include "discovery.pb-c.h"
#include "workload.pb-c.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))
#define TYPE_ADDRESS "type.googleapis.com/istio.workload.Address"

static uint8_t ip_pod[] = { 10, 244, 1, 5 };
static uint8_t ip_waypoint[] = { 10, 244, 1, 9 };
static uint8_t ip_vip[] = { 10, 96, 0, 10 };
static uint8_t ip_v6[] = { 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0a };

static const ProtobufCMessage *workload_address(void)
{
	static Istio__Workload__Port port = ISTIO__WORKLOAD__PORT__INIT;
	static Istio__Workload__Port *ports[] = { &port };
	static Istio__Workload__PortList plist = ISTIO__WORKLOAD__PORT_LIST__INIT;
	static Istio__Workload__Workload__ServicesEntry svc =
		ISTIO__WORKLOAD__WORKLOAD__SERVICES_ENTRY__INIT;
	static Istio__Workload__Workload__ServicesEntry *svcs[] = { &svc };
	static ProtobufCBinaryData addrs[2];
	static char *policies[] = { "default/allow-sleep" };
	static Istio__Workload__NetworkAddress wp_addr = ISTIO__WORKLOAD__NETWORK_ADDRESS__INIT;
	static Istio__Workload__GatewayAddress wp = ISTIO__WORKLOAD__GATEWAY_ADDRESS__INIT;
	static Istio__Workload__Locality loc = ISTIO__WORKLOAD__LOCALITY__INIT;
	static Google__Protobuf__UInt32Value cap = GOOGLE__PROTOBUF__UINT32_VALUE__INIT;
	static Istio__Workload__Workload w = ISTIO__WORKLOAD__WORKLOAD__INIT;
	static Istio__Workload__Address a = ISTIO__WORKLOAD__ADDRESS__INIT;

	port.service_port = 80;
	port.target_port = 8080;
	port.app_protocol = ISTIO__WORKLOAD__APP_PROTOCOL__HTTP11;
	plist.n_ports = N(ports);
	plist.ports = ports;
	svc.key = "default/echo.default.svc.cluster.local";
	svc.value = &plist;
	addrs[0] = (ProtobufCBinaryData){ sizeof(ip_pod), ip_pod };
	addrs[1] = (ProtobufCBinaryData){ sizeof(ip_v6), ip_v6 };
	wp_addr.address = (ProtobufCBinaryData){ sizeof(ip_waypoint), ip_waypoint };
	wp.destination_case = ISTIO__WORKLOAD__GATEWAY_ADDRESS__DESTINATION_ADDRESS;
	wp.address = &wp_addr;
	wp.hbone_mtls_port = 15008;
	loc.region = "eu-west1";
	loc.zone = "eu-west1-b";
	cap.value = 2;

	w.uid = "Kubernetes//Pod/default/echo-5d8f7-abcde";
	w.name = "echo-5d8f7-abcde";
	w.namespace_ = "default";
	w.n_addresses = N(addrs);
	w.addresses = addrs;
	w.tunnel_protocol = ISTIO__WORKLOAD__TUNNEL_PROTOCOL__HBONE;
	w.trust_domain = "cluster.local";
	w.service_account = "echo";
	w.waypoint = &wp;
	w.node = "node-1";
	w.canonical_name = "echo";
	w.canonical_revision = "v1";
	w.workload_type = ISTIO__WORKLOAD__WORKLOAD_TYPE__POD;
	w.workload_name = "echo";
	w.n_services = N(svcs);
	w.services = svcs;
	w.n_authorization_policies = N(policies);
	w.authorization_policies = policies;
	w.status = ISTIO__WORKLOAD__WORKLOAD_STATUS__HEALTHY;
	w.cluster_id = "Kubernetes";
	w.locality = &loc;
	w.capacity = &cap;
	a.type_case = ISTIO__WORKLOAD__ADDRESS__TYPE_WORKLOAD;
	a.workload = &w;
	return &a.base;
}

static const ProtobufCMessage *service_address(void)
{
	static Istio__Workload__NetworkAddress vip = ISTIO__WORKLOAD__NETWORK_ADDRESS__INIT;
	static Istio__Workload__NetworkAddress *vips[] = { &vip };
	static Istio__Workload__Port p1 = ISTIO__WORKLOAD__PORT__INIT;
	static Istio__Workload__Port p2 = ISTIO__WORKLOAD__PORT__INIT;
	static Istio__Workload__Port *ports[] = { &p1, &p2 };
	static Istio__Workload__LoadBalancing__Scope prefs[] = {
		ISTIO__WORKLOAD__LOAD_BALANCING__SCOPE__NETWORK,
		ISTIO__WORKLOAD__LOAD_BALANCING__SCOPE__REGION,
		ISTIO__WORKLOAD__LOAD_BALANCING__SCOPE__ZONE,
	};
	static Istio__Workload__LoadBalancing lb = ISTIO__WORKLOAD__LOAD_BALANCING__INIT;
	static Istio__Workload__NamespacedHostname wp_host =
		ISTIO__WORKLOAD__NAMESPACED_HOSTNAME__INIT;
	static Istio__Workload__GatewayAddress wp = ISTIO__WORKLOAD__GATEWAY_ADDRESS__INIT;
	static Istio__Workload__Service s = ISTIO__WORKLOAD__SERVICE__INIT;
	static Istio__Workload__Address a = ISTIO__WORKLOAD__ADDRESS__INIT;

	vip.address = (ProtobufCBinaryData){ sizeof(ip_vip), ip_vip };
	p1.service_port = 80;
	p1.target_port = 8080;
	p1.app_protocol = ISTIO__WORKLOAD__APP_PROTOCOL__HTTP2;
	p2.service_port = 9090;
	lb.n_routing_preference = N(prefs);
	lb.routing_preference = prefs;
	lb.mode = ISTIO__WORKLOAD__LOAD_BALANCING__MODE__FAILOVER;
	wp_host.namespace_ = "default";
	wp_host.hostname = "waypoint.default.svc.cluster.local";
	wp.destination_case = ISTIO__WORKLOAD__GATEWAY_ADDRESS__DESTINATION_HOSTNAME;
	wp.hostname = &wp_host;
	wp.hbone_mtls_port = 15008;

	s.name = "echo";
	s.namespace_ = "default";
	s.hostname = "echo.default.svc.cluster.local";
	s.n_addresses = N(vips);
	s.addresses = vips;
	s.n_ports = N(ports);
	s.ports = ports;
	s.waypoint = &wp;
	s.load_balancing = &lb;
	s.ip_families = ISTIO__WORKLOAD__IPFAMILIES__IPV4_ONLY;
	a.type_case = ISTIO__WORKLOAD__ADDRESS__TYPE_SERVICE;
	a.service = &s;
	return &a.base;
}

static const ProtobufCMessage *authz_allow(void)
{
	static Istio__Security__StringMatch principal = ISTIO__SECURITY__STRING_MATCH__INIT;
	static Istio__Security__StringMatch *principals[] = { &principal };
	static Istio__Security__StringMatch ns = ISTIO__SECURITY__STRING_MATCH__INIT;
	static Istio__Security__StringMatch *nss[] = { &ns };
	static Istio__Security__Address src = ISTIO__SECURITY__ADDRESS__INIT;
	static Istio__Security__Address *srcs[] = { &src };
	static uint32_t not_ports[] = { 9090, 15000 };
	static Istio__Security__ServiceAccountMatch sa =
		ISTIO__SECURITY__SERVICE_ACCOUNT_MATCH__INIT;
	static Istio__Security__ServiceAccountMatch *sas[] = { &sa };
	static Istio__Security__Match m = ISTIO__SECURITY__MATCH__INIT;
	static Istio__Security__Match *ms[] = { &m };
	static Istio__Security__Rules rules = ISTIO__SECURITY__RULES__INIT;
	static Istio__Security__Rules *ruless[] = { &rules };
	static Istio__Security__Group g = ISTIO__SECURITY__GROUP__INIT;
	static Istio__Security__Group *gs[] = { &g };
	static Istio__Security__Authorization az = ISTIO__SECURITY__AUTHORIZATION__INIT;
	static uint8_t net[] = { 10, 0, 0, 0 };

	principal.match_type_case = ISTIO__SECURITY__STRING_MATCH__MATCH_TYPE_EXACT;
	principal.exact = "cluster.local/ns/default/sa/sleep";
	ns.match_type_case = ISTIO__SECURITY__STRING_MATCH__MATCH_TYPE_PREFIX;
	ns.prefix = "prod-";
	src.address = (ProtobufCBinaryData){ sizeof(net), net };
	src.length = 8;
	sa.namespace_ = "default";
	sa.serviceaccount = "sleep";
	m.n_principals = N(principals);
	m.principals = principals;
	m.n_namespaces = N(nss);
	m.namespaces = nss;
	m.n_source_ips = N(srcs);
	m.source_ips = srcs;
	m.n_not_destination_ports = N(not_ports);
	m.not_destination_ports = not_ports;
	m.n_service_accounts = N(sas);
	m.service_accounts = sas;
	rules.n_matches = N(ms);
	rules.matches = ms;
	g.n_rules = N(ruless);
	g.rules = ruless;
	az.name = "allow-sleep";
	az.namespace_ = "default";
	az.scope = ISTIO__SECURITY__SCOPE__WORKLOAD_SELECTOR;
	az.action = ISTIO__SECURITY__ACTION__ALLOW;
	az.n_groups = N(gs);
	az.groups = gs;
	return &az.base;
}

/* PeerAuthentication STRICT as istiod compiles it: DENY notPrincipals presence. */
static const ProtobufCMessage *authz_strict(void)
{
	static Google__Protobuf__Empty empty = GOOGLE__PROTOBUF__EMPTY__INIT;
	static Istio__Security__StringMatch presence = ISTIO__SECURITY__STRING_MATCH__INIT;
	static Istio__Security__StringMatch *ps[] = { &presence };
	static Istio__Security__Match m = ISTIO__SECURITY__MATCH__INIT;
	static Istio__Security__Match *ms[] = { &m };
	static Istio__Security__Rules rules = ISTIO__SECURITY__RULES__INIT;
	static Istio__Security__Rules *ruless[] = { &rules };
	static Istio__Security__Group g = ISTIO__SECURITY__GROUP__INIT;
	static Istio__Security__Group *gs[] = { &g };
	static Istio__Security__Authorization az = ISTIO__SECURITY__AUTHORIZATION__INIT;

	presence.match_type_case = ISTIO__SECURITY__STRING_MATCH__MATCH_TYPE_PRESENCE;
	presence.presence = &empty;
	m.n_not_principals = N(ps);
	m.not_principals = ps;
	rules.n_matches = N(ms);
	rules.matches = ms;
	g.n_rules = N(ruless);
	g.rules = ruless;
	az.name = "istio_converted_peer_authentication_default";
	az.namespace_ = "istio-system";
	az.scope = ISTIO__SECURITY__SCOPE__GLOBAL;
	az.action = ISTIO__SECURITY__ACTION__DENY;
	az.n_groups = N(gs);
	az.groups = gs;
	return &az.base;
}

static Google__Protobuf__Value *str_value(Google__Protobuf__Value *v, char *s)
{
	v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
	v->string_value = s;
	return v;
}

static const ProtobufCMessage *delta_request(void)
{
	static Google__Protobuf__Value v1 = GOOGLE__PROTOBUF__VALUE__INIT;
	static Google__Protobuf__Value v2 = GOOGLE__PROTOBUF__VALUE__INIT;
	static Google__Protobuf__Struct__FieldsEntry e1 =
		GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT;
	static Google__Protobuf__Struct__FieldsEntry e2 =
		GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT;
	/* sorted by key: deterministic serializers sort map keys */
	static Google__Protobuf__Struct__FieldsEntry *es[] = { &e1, &e2 };
	static Google__Protobuf__Struct md = GOOGLE__PROTOBUF__STRUCT__INIT;
	static Envoy__Config__Core__V3__Node node = ENVOY__CONFIG__CORE__V3__NODE__INIT;
	static char *sub[] = { "*" };
	static Envoy__Service__Discovery__V3__DeltaDiscoveryRequest__InitialResourceVersionsEntry iv =
		ENVOY__SERVICE__DISCOVERY__V3__DELTA_DISCOVERY_REQUEST__INITIAL_RESOURCE_VERSIONS_ENTRY__INIT;
	static Envoy__Service__Discovery__V3__DeltaDiscoveryRequest__InitialResourceVersionsEntry
		*ivs[] = { &iv };
	static Envoy__Service__Discovery__V3__DeltaDiscoveryRequest r =
		ENVOY__SERVICE__DISCOVERY__V3__DELTA_DISCOVERY_REQUEST__INIT;

	e1.key = "NAME";
	e1.value = str_value(&v1, "ztunnel-x7k2p");
	e2.key = "NAMESPACE";
	e2.value = str_value(&v2, "istio-system");
	md.n_fields = N(es);
	md.fields = es;
	node.id = "ztunnel~10.244.1.2~ztunnel-x7k2p.istio-system~istio-system.svc.cluster.local";
	node.metadata = &md;
	iv.key = "Kubernetes//Pod/default/echo-5d8f7-abcde";
	iv.value = "1";
	r.node = &node;
	r.type_url = TYPE_ADDRESS;
	r.n_resource_names_subscribe = N(sub);
	r.resource_names_subscribe = sub;
	r.n_initial_resource_versions = N(ivs);
	r.initial_resource_versions = ivs;
	return &r.base;
}

static const ProtobufCMessage *delta_nack(void)
{
	static Google__Rpc__Status st = GOOGLE__RPC__STATUS__INIT;
	static Envoy__Service__Discovery__V3__DeltaDiscoveryRequest r =
		ENVOY__SERVICE__DISCOVERY__V3__DELTA_DISCOVERY_REQUEST__INIT;

	st.code = 3; /* INVALID_ARGUMENT */
	st.message = "default/bad: unknown address family";
	r.type_url = TYPE_ADDRESS;
	r.response_nonce = "7f3a";
	r.error_detail = &st;
	return &r.base;
}

static const ProtobufCMessage *delta_response(void)
{
	static uint8_t packed[256];
	static Google__Protobuf__Any any = GOOGLE__PROTOBUF__ANY__INIT;
	static char *aliases[] = { "/10.96.0.10" };
	static Envoy__Service__Discovery__V3__Resource res =
		ENVOY__SERVICE__DISCOVERY__V3__RESOURCE__INIT;
	static Envoy__Service__Discovery__V3__Resource *ress[] = { &res };
	static char *removed[] = { "default/old.default.svc.cluster.local" };
	static Envoy__Config__Core__V3__ControlPlane cp =
		ENVOY__CONFIG__CORE__V3__CONTROL_PLANE__INIT;
	static Envoy__Service__Discovery__V3__DeltaDiscoveryResponse r =
		ENVOY__SERVICE__DISCOVERY__V3__DELTA_DISCOVERY_RESPONSE__INIT;
	const ProtobufCMessage *svc = service_address();

	if (protobuf_c_message_get_packed_size(svc) > sizeof(packed))
		return NULL;
	any.type_url = TYPE_ADDRESS;
	any.value = (ProtobufCBinaryData){ protobuf_c_message_pack(svc, packed), packed };
	res.name = "default/echo.default.svc.cluster.local";
	res.version = "3";
	res.resource = &any;
	res.n_aliases = N(aliases);
	res.aliases = aliases;
	cp.identifier = "istiod-lite";
	r.system_version_info = "2026-01-01T00:00:00Z/3";
	r.n_resources = N(ress);
	r.resources = ress;
	r.type_url = TYPE_ADDRESS;
	r.nonce = "7f3a";
	r.n_removed_resources = N(removed);
	r.removed_resources = removed;
	r.control_plane = &cp;
	return &r.base;
}

static const ProtobufCMessage *csr_request(void)
{
	static Google__Protobuf__Value v = GOOGLE__PROTOBUF__VALUE__INIT;
	static Google__Protobuf__Struct__FieldsEntry e =
		GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT;
	static Google__Protobuf__Struct__FieldsEntry *es[] = { &e };
	static Google__Protobuf__Struct md = GOOGLE__PROTOBUF__STRUCT__INIT;
	static Istio__V1__Auth__IstioCertificateRequest r =
		ISTIO__V1__AUTH__ISTIO_CERTIFICATE_REQUEST__INIT;

	e.key = "ImpersonatedIdentity";
	e.value = str_value(&v, "spiffe://cluster.local/ns/default/sa/echo");
	md.n_fields = N(es);
	md.fields = es;
	r.csr = "-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n";
	r.validity_duration = 86400;
	r.metadata = &md;
	return &r.base;
}

static const ProtobufCMessage *csr_response(void)
{
	static char *chain[] = {
		"-----BEGIN CERTIFICATE-----\nleaf\n-----END CERTIFICATE-----\n",
		"-----BEGIN CERTIFICATE-----\nroot\n-----END CERTIFICATE-----\n",
	};
	static Istio__V1__Auth__IstioCertificateResponse r =
		ISTIO__V1__AUTH__ISTIO_CERTIFICATE_RESPONSE__INIT;

	r.n_cert_chain = N(chain);
	r.cert_chain = chain;
	return &r.base;
}

const struct pb_sample pb_samples[] = {
	{ "workload", workload_address },     { "service", service_address },
	{ "authz_allow", authz_allow },	      { "authz_strict", authz_strict },
	{ "delta_request", delta_request },   { "delta_nack", delta_nack },
	{ "delta_response", delta_response }, { "csr_request", csr_request },
	{ "csr_response", csr_response },
};
const size_t pb_nsamples = N(pb_samples);

const ProtobufCMessageDescriptor *const pb_roots[] = {
	&istio__workload__address__descriptor,
	&istio__security__authorization__descriptor,
	&envoy__service__discovery__v3__delta_discovery_request__descriptor,
	&envoy__service__discovery__v3__delta_discovery_response__descriptor,
	&istio__v1__auth__istio_certificate_request__descriptor,
	&istio__v1__auth__istio_certificate_response__descriptor,
	/* the wrappers nothing of ours uses but UInt32Value */
	&google__protobuf__double_value__descriptor,
	&google__protobuf__float_value__descriptor,
	&google__protobuf__int64_value__descriptor,
	&google__protobuf__uint64_value__descriptor,
	&google__protobuf__int32_value__descriptor,
	&google__protobuf__bool_value__descriptor,
	&google__protobuf__string_value__descriptor,
	&google__protobuf__bytes_value__descriptor,
};
const size_t pb_nroots = N(pb_roots);
