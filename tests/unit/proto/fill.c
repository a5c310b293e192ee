/* SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fill.h"

static void *xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);
	if (!p)
		abort();
	return p;
}

bool pb_is_map_entry(const ProtobufCMessageDescriptor *desc)
{
	size_t n = strlen(desc->short_name);
	return n > 5 && strcmp(desc->short_name + n - 5, "Entry") == 0 && desc->n_fields == 2 &&
	       desc->fields[0].id == 1 && desc->fields[1].id == 2;
}

static size_t type_size(ProtobufCType t)
{
	switch (t) {
	case PROTOBUF_C_TYPE_INT32:
	case PROTOBUF_C_TYPE_SINT32:
	case PROTOBUF_C_TYPE_SFIXED32:
	case PROTOBUF_C_TYPE_UINT32:
	case PROTOBUF_C_TYPE_FIXED32:
		return 4;
	case PROTOBUF_C_TYPE_INT64:
	case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_SFIXED64:
	case PROTOBUF_C_TYPE_UINT64:
	case PROTOBUF_C_TYPE_FIXED64:
		return 8;
	case PROTOBUF_C_TYPE_FLOAT:
		return sizeof(float);
	case PROTOBUF_C_TYPE_DOUBLE:
		return sizeof(double);
	case PROTOBUF_C_TYPE_BOOL:
		return sizeof(protobuf_c_boolean);
	case PROTOBUF_C_TYPE_ENUM:
		return sizeof(int);
	case PROTOBUF_C_TYPE_STRING:
		return sizeof(char *);
	case PROTOBUF_C_TYPE_BYTES:
		return sizeof(ProtobufCBinaryData);
	case PROTOBUF_C_TYPE_MESSAGE:
		return sizeof(ProtobufCMessage *);
	}
	abort();
}

static int enum_max(const ProtobufCEnumDescriptor *e)
{
	int v = e->values[0].value;
	for (unsigned i = 1; i < e->n_values; i++)
		if (e->values[i].value > v)
			v = e->values[i].value;
	return v;
}

/* Stores field @f's value for element @k at @p (the field or array slot). A message beyond
 * PB_FILL_DEPTH is stored empty; callers skip the fields that must stay unset instead. */
static void set_value(const ProtobufCFieldDescriptor *f, void *p, unsigned depth, unsigned sid,
		      unsigned k, unsigned variant)
{
	unsigned seed = f->id * 1000 + depth * 100 + sid * 10 + k;

	switch (f->type) {
	case PROTOBUF_C_TYPE_INT32:
	case PROTOBUF_C_TYPE_SINT32:
	case PROTOBUF_C_TYPE_SFIXED32:
		*(int32_t *)p = -(int32_t)seed;
		break;
	case PROTOBUF_C_TYPE_UINT32:
	case PROTOBUF_C_TYPE_FIXED32:
		*(uint32_t *)p = seed;
		break;
	case PROTOBUF_C_TYPE_INT64:
	case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_SFIXED64:
		*(int64_t *)p = -(int64_t)seed;
		break;
	case PROTOBUF_C_TYPE_UINT64:
	case PROTOBUF_C_TYPE_FIXED64:
		*(uint64_t *)p = seed;
		break;
	case PROTOBUF_C_TYPE_FLOAT:
		*(float *)p = (float)seed + 0.5f;
		break;
	case PROTOBUF_C_TYPE_DOUBLE:
		*(double *)p = seed + 0.25;
		break;
	case PROTOBUF_C_TYPE_BOOL:
		*(protobuf_c_boolean *)p = 1;
		break;
	case PROTOBUF_C_TYPE_ENUM:
		*(int *)p = enum_max(f->descriptor);
		break;
	case PROTOBUF_C_TYPE_STRING: {
		char *s = xcalloc(1, 48);
		(void)snprintf(s, 48, "f%ud%us%uk%u", f->id, depth, sid, k);
		*(char **)p = s;
		break;
	}
	case PROTOBUF_C_TYPE_BYTES: {
		ProtobufCBinaryData *b = p;
		b->len = 5;
		b->data = xcalloc(1, 5);
		b->data[0] = (uint8_t)f->id;
		b->data[1] = (uint8_t)depth;
		b->data[2] = (uint8_t)sid;
		b->data[3] = (uint8_t)k;
		b->data[4] = 0xff;
		break;
	}
	case PROTOBUF_C_TYPE_MESSAGE: {
		const ProtobufCMessageDescriptor *d = f->descriptor;
		ProtobufCMessage *m;
		if (depth + 1 <= PB_FILL_DEPTH) {
			m = pb_fill(d, depth + 1, k, pb_is_map_entry(d), variant);
		} else {
			m = xcalloc(1, d->sizeof_message);
			d->message_init(m);
		}
		*(ProtobufCMessage **)p = m;
		break;
	}
	}
}

static int cmp_id(const void *a, const void *b)
{
	const ProtobufCFieldDescriptor *const *x = a, *const *y = b;
	return (int)(*x)->id - (int)(*y)->id;
}

/* How many members @f's oneof has, and @f's index among them in field-number order. */
static unsigned oneof_pos(const ProtobufCFieldDescriptor *const *fs, unsigned n,
			  const ProtobufCFieldDescriptor *f, unsigned *ret_index)
{
	unsigned count = 0;
	for (unsigned i = 0; i < n; i++) {
		if (!(fs[i]->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) ||
		    fs[i]->quantifier_offset != f->quantifier_offset)
			continue;
		if (fs[i] == f)
			*ret_index = count;
		count++;
	}
	return count;
}

ProtobufCMessage *pb_fill(const ProtobufCMessageDescriptor *desc, unsigned depth, unsigned sid,
			  bool map_entry, unsigned variant)
{
	ProtobufCMessage *m = xcalloc(1, desc->sizeof_message);
	const ProtobufCFieldDescriptor **fs = xcalloc(desc->n_fields, sizeof(*fs));
	uint8_t *base = (uint8_t *)m;

	desc->message_init(m);
	for (unsigned i = 0; i < desc->n_fields; i++)
		fs[i] = &desc->fields[i];
	qsort(fs, desc->n_fields, sizeof(*fs), cmp_id);

	for (unsigned i = 0; i < desc->n_fields; i++) {
		const ProtobufCFieldDescriptor *f = fs[i];
		bool is_msg = f->type == PROTOBUF_C_TYPE_MESSAGE;
		bool deep = depth + 1 > PB_FILL_DEPTH;

		if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
			unsigned idx = 0, n = oneof_pos(fs, desc->n_fields, f, &idx);
			if (idx != variant % n)
				continue;
			*(uint32_t *)(base + f->quantifier_offset) = f->id;
			set_value(f, base + f->offset, depth, sid, 0, variant);
			continue;
		}
		if (f->label == PROTOBUF_C_LABEL_REPEATED) {
			if (is_msg && deep)
				continue;
			size_t sz = type_size(f->type);
			uint8_t *arr = xcalloc(2, sz);
			for (unsigned k = 0; k < 2; k++)
				set_value(f, arr + k * sz, depth, sid, k, variant);
			*(size_t *)(base + f->quantifier_offset) = 2;
			*(void **)(base + f->offset) = arr;
			continue;
		}
		/* singular: a map value is always present (C++ and Python always write it) */
		if (is_msg && deep && !(map_entry && f->id == 2))
			continue;
		if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->quantifier_offset && !is_msg &&
		    f->type != PROTOBUF_C_TYPE_STRING)
			*(protobuf_c_boolean *)(base + f->quantifier_offset) = 1;
		set_value(f, base + f->offset, depth, sid, 0, variant);
	}
	free(fs);
	return m;
}

size_t pb_closure(const ProtobufCMessageDescriptor *const *roots, size_t nroots,
		  const ProtobufCMessageDescriptor **out, size_t max)
{
	size_t n = 0;

	for (size_t i = 0; i < nroots && n < max; i++) {
		bool have = false;
		for (size_t j = 0; j < n; j++)
			have |= out[j] == roots[i];
		if (!have)
			out[n++] = roots[i];
	}
	/* breadth-first: out[] is the queue */
	for (size_t q = 0; q < n; q++) {
		const ProtobufCMessageDescriptor *d = out[q];
		for (unsigned i = 0; i < d->n_fields; i++) {
			if (d->fields[i].type != PROTOBUF_C_TYPE_MESSAGE)
				continue;
			const ProtobufCMessageDescriptor *sub = d->fields[i].descriptor;
			bool have = false;
			for (size_t j = 0; j < n; j++)
				have |= out[j] == sub;
			if (!have && n < max)
				out[n++] = sub;
		}
	}
	return n;
}

uint8_t *pb_pack(const ProtobufCMessage *m, size_t *ret_len)
{
	size_t len = protobuf_c_message_get_packed_size(m);
	uint8_t *buf = xcalloc(1, len);
	size_t w = protobuf_c_message_pack(m, buf);
	if (w != len)
		abort();
	*ret_len = len;
	return buf;
}
