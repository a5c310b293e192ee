/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Realistic messages, as istiod-lite and ztunnel exchange them. xcheck.py builds the same
 * ones with python3-protobuf, so any change here needs the same change there.
 */
#ifndef ML_TEST_PB_SAMPLES_H
#define ML_TEST_PB_SAMPLES_H

#include <protobuf-c/protobuf-c.h>

struct pb_sample {
	const char *name;
	/* static storage: never free */
	const ProtobufCMessage *(*build)(void);
};

extern const struct pb_sample pb_samples[];
extern const size_t pb_nsamples;

/* Message types from which every type in proto/ is reachable (see pb_closure()). */
extern const ProtobufCMessageDescriptor *const pb_roots[];
extern const size_t pb_nroots;

#endif
