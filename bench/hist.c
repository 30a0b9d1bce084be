#include "hist.h"

#include <string.h>

void hist_reset(struct hist *h)
{
	memset(h, 0, sizeof(*h));
	h->min = UINT64_MAX;
}

unsigned hist_bucket_of(uint64_t v)
{
	const uint64_t cap = (UINT64_C(1) << HIST_MAX_BITS) - 1;
	unsigned msb, shift;

	if (v > cap)
		v = cap;
	if (v < 2 * HIST_SUB)
		return (unsigned)v;
	msb = 63u - (unsigned)__builtin_clzll(v);
	/* Keep the top HIST_SUB_BITS + 1 bits: v >> shift is in [32, 64). */
	shift = msb - HIST_SUB_BITS;
	return shift * HIST_SUB + (unsigned)(v >> shift);
}

uint64_t hist_bucket_low(unsigned b)
{
	unsigned shift;

	if (b < 2 * HIST_SUB)
		return b;
	shift = b / HIST_SUB - 1;
	return (uint64_t)(b - shift * HIST_SUB) << shift;
}

static uint64_t bucket_width(unsigned b)
{
	return b < 2 * HIST_SUB ? 1 : UINT64_C(1) << (b / HIST_SUB - 1);
}

void hist_add(struct hist *h, uint64_t v)
{
	h->bucket[hist_bucket_of(v)]++;
	h->count++;
	h->sum += v;
	if (v < h->min)
		h->min = v;
	if (v > h->max)
		h->max = v;
}

uint64_t hist_quantile(const struct hist *h, double q)
{
	uint64_t rank, seen = 0, mid;
	double want;
	unsigned b;

	if (h->count == 0)
		return 0;
	want = q * (double)h->count;
	rank = (uint64_t)want;
	if ((double)rank < want)
		rank++;
	if (rank < 1)
		rank = 1;
	for (b = 0; b < HIST_BUCKETS; b++) {
		seen += h->bucket[b];
		if (seen >= rank)
			break;
	}
	if (b == HIST_BUCKETS)
		return h->max;
	mid = hist_bucket_low(b) + (bucket_width(b) - 1) / 2;
	if (mid < h->min)
		return h->min;
	return mid > h->max ? h->max : mid;
}

void hist_merge(struct hist *dst, const struct hist *src)
{
	if (src->count == 0)
		return;
	for (unsigned b = 0; b < HIST_BUCKETS; b++)
		dst->bucket[b] += src->bucket[b];
	dst->count += src->count;
	dst->sum += src->sum;
	if (src->min < dst->min)
		dst->min = src->min;
	if (src->max > dst->max)
		dst->max = src->max;
}
