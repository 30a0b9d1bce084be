/*
 * hist — a latency histogram in fixed memory. Log-linear buckets: values
 * below 64 ns get one bucket each; above, every power of two is split into
 * 32 equal buckets, so a bucket is at most 1/32 (about 3%) of its value
 * wide and a reported percentile is within about 1.6% of the truth.
 * Recording is a few instructions and never allocates.
 */
#ifndef RIO_BENCH_HIST_H
#define RIO_BENCH_HIST_H

#include <stdint.h>

#define HIST_SUB_BITS 5
#define HIST_SUB (1u << HIST_SUB_BITS)
/* Values at or above 2^40 ns (about 18 minutes) land in the last bucket. */
#define HIST_MAX_BITS 40
#define HIST_BUCKETS ((HIST_MAX_BITS - HIST_SUB_BITS + 1) * HIST_SUB)

struct hist {
	uint64_t count;
	uint64_t sum;
	uint64_t min;
	uint64_t max;
	uint64_t bucket[HIST_BUCKETS];
};

void hist_reset(struct hist *h);
void hist_add(struct hist *h, uint64_t v);

/* Add every sample of `src` to `dst`. */
void hist_merge(struct hist *dst, const struct hist *src);

/*
 * The value at quantile q (0 < q <= 1): the middle of the bucket holding
 * the ceil(q * count)-th smallest sample, clamped to [min, max]. 0 when
 * the histogram is empty.
 */
uint64_t hist_quantile(const struct hist *h, double q);

/* Exposed for the self-check: which bucket holds v, and where it starts. */
unsigned hist_bucket_of(uint64_t v);
uint64_t hist_bucket_low(unsigned b);

#endif
