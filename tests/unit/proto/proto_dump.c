/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Prints the C encoding of every message type (filled by pb_fill) and of every sample, one
 * per line, for xcheck.py to compare with python3-protobuf's:
 *   fill <variant> <full.type.Name> <hex>
 *   sample <name> <full.type.Name> <hex>
 */
#include <stdio.h>
#include <stdlib.h>

#include "fill.h"
#include "samples.h"

static void put_hex(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		printf("%02x", p[i]);
	if (n == 0)
		printf("-");
	printf("\n");
}

int main(void)
{
	const ProtobufCMessageDescriptor *all[256];
	size_t n = pb_closure(pb_roots, pb_nroots, all, 256);

	for (size_t i = 0; i < n; i++) {
		if (pb_is_map_entry(all[i]))
			continue;
		for (unsigned v = 0; v < PB_FILL_VARIANTS; v++) {
			ProtobufCMessage *m = pb_fill(all[i], 0, 0, false, v);
			size_t len;
			uint8_t *buf = pb_pack(m, &len);
			printf("fill %u %s ", v, all[i]->name);
			put_hex(buf, len);
			free(buf);
			protobuf_c_message_free_unpacked(m, NULL);
		}
	}
	for (size_t i = 0; i < pb_nsamples; i++) {
		const ProtobufCMessage *m = pb_samples[i].build();
		if (!m)
			return EXIT_FAILURE;
		size_t len;
		uint8_t *buf = pb_pack(m, &len);
		printf("sample %s %s ", pb_samples[i].name, m->descriptor->name);
		put_hex(buf, len);
		free(buf);
	}
	return fflush(stdout) == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
