/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Reflection helpers over protobuf-c descriptors for the wire tests.
 *
 * pb_fill() sets every field of a message to a value derived only from the field's number,
 * its depth and its position, so that an independent implementation of the same rule (the
 * Python one in xcheck.py, built on python3-protobuf's descriptors) produces the same
 * message. Rule (keep both in sync):
 *   seed = number*1000 + depth*100 + sid*10 + k   (k = element index, sid = the message's
 *                                                  own index in its parent's repeated field)
 *   signed ints -seed, unsigned seed, float seed+0.5, double seed+0.25, bool true,
 *   enum the largest value, string "f<number>d<depth>s<sid>k<k>",
 *   bytes {number, depth, sid, k, 0xff}, repeated: 2 elements,
 *   message: filled at depth+1 if depth+1 <= PB_FILL_DEPTH, else unset -- except a oneof
 *   member or a map value, which is set to an empty message,
 *   oneof: only its member number (variant mod members), counting in field-number order,
 *   so that running variants 0..PB_FILL_VARIANTS-1 sets every member of every oneof once.
 */
#ifndef ML_TEST_PB_FILL_H
#define ML_TEST_PB_FILL_H

#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>

#define PB_FILL_DEPTH 3
#define PB_FILL_VARIANTS 6 /* members of the largest oneof (Value.kind) */

/* malloc'ed like protobuf_c_message_unpack() output: free with
 * protobuf_c_message_free_unpacked(m, NULL). */
ProtobufCMessage *pb_fill(const ProtobufCMessageDescriptor *desc, unsigned depth, unsigned sid,
			  bool map_entry, unsigned variant);

/* protoc-c has no map type: a map is a repeated message named <Field>Entry {key=1; value=2}. */
bool pb_is_map_entry(const ProtobufCMessageDescriptor *desc);

/* Every message type reachable from @roots through message fields (roots included), each
 * once; returns the count (at most @max). */
size_t pb_closure(const ProtobufCMessageDescriptor *const *roots, size_t nroots,
		  const ProtobufCMessageDescriptor **out, size_t max);

/* Packs into a malloc'ed buffer; *ret_len gets the size. */
uint8_t *pb_pack(const ProtobufCMessage *m, size_t *ret_len);

#endif
