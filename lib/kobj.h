/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Kubernetes objects from YAML or JSON files: each document becomes a jansson json_t
 * (YAML scalars typed as YAML 1.2 core schema: plain true/false/null/ints/floats typed,
 * quoted scalars always strings). Multi-document YAML ("---") and `kind: List` are
 * flattened. Anchors/aliases, tags other than core ones, duplicate keys, nesting deeper than
 * 64 and documents over 4 MiB are rejected with a message naming the file and line.
 */
#ifndef ML_KOBJ_H
#define ML_KOBJ_H

#include <jansson.h>
#include <stddef.h>

/* Parse @len bytes. On success returns a JSON array of objects (caller json_decref()s).
 * On failure returns NULL and writes a message like "pods.yaml:12: duplicate key 'name'"
 * to @err. @origin names the input in messages. */
json_t *ml_kobj_parse(const char *buf, size_t len, const char *origin, char *err, size_t errlen);
json_t *ml_kobj_load_file(const char *path, char *err, size_t errlen);

/* Accessors: dotted path lookup ("metadata.labels"), NULL if absent or wrong type. */
const char *ml_kobj_str(const json_t *obj, const char *path);
json_t *ml_kobj_get(const json_t *obj, const char *path);
/* metadata.labels[key], NULL if absent */
const char *ml_kobj_label(const json_t *obj, const char *key);

#endif
