/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Metrics registry with Prometheus text exposition (format 0.0.4).
 * A family has a name, help, type and a fixed list of label names; a series is one set of
 * label values. Series are created on first use and live as long as the registry (their
 * pointers stay valid), up to a per-family cap (default 10000) after which further new label
 * sets are folded into one overflow series whose label values are all "overflow" (counted in
 * ml_metrics_overflows()). Single-threaded: the owner's event loop is the only writer.
 * Label values are escaped on output (\\, \", \n).
 */
#ifndef ML_METRICS_H
#define ML_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

enum ml_metric_type { ML_COUNTER, ML_GAUGE, ML_HISTOGRAM };

struct ml_metrics;
struct ml_family;
struct ml_series;

struct ml_metrics *ml_metrics_new(void);
struct ml_metrics *ml_metrics_free(struct ml_metrics *m);

/* @buckets: for histograms only, ascending upper bounds (the +Inf bucket is implicit). */
struct ml_family *ml_family_new(struct ml_metrics *m, const char *name, const char *help,
				enum ml_metric_type type, const char *const *label_names,
				unsigned nlabels, const double *buckets, unsigned nbuckets);
void ml_family_set_cap(struct ml_family *f, unsigned max_series);
/* Find or create the series with these label values (NULL or "" values print "unknown"). */
struct ml_series *ml_series_get(struct ml_family *f, const char *const *label_values);

void ml_counter_add(struct ml_series *s, uint64_t v);
void ml_gauge_set(struct ml_series *s, double v);
void ml_gauge_add(struct ml_series *s, double v);
void ml_histogram_observe(struct ml_series *s, double v);
double ml_series_value(const struct ml_series *s); /* counter/gauge value, histogram count */
/* Summed over every series of @f: counter/gauge values, histogram counts (for dashboards). */
double ml_family_sum(const struct ml_family *f);
/* Histogram @f summed over its series: @ret_counts gets min(nbuckets + 1, @max)
 * non-cumulative counts (the last is +Inf) and *@ret_bounds the nbuckets upper bounds.
 * Returns nbuckets + 1, or -EINVAL when @f is not a histogram. */
int ml_family_buckets(const struct ml_family *f, const double **ret_bounds, uint64_t *ret_counts,
		      unsigned max);

uint64_t ml_metrics_overflows(const struct ml_metrics *m);
/* Appends the whole registry in Prometheus text format. */
int ml_metrics_render(const struct ml_metrics *m, struct ml_buf *out);

#endif
