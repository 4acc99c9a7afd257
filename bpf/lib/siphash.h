/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * lib/siphash.h - SipHash-2-4 (kg_siphash), the MAC of spa knocks and of their timestamp windows'
 * tags. Arithmetic only: it uses no map, no helper and nothing of knock.h. src/knock/siphash.ts
 * computes the same in user space.
 */
#ifndef KNOCKGATE_LIB_SIPHASH_H
#define KNOCKGATE_LIB_SIPHASH_H

#include <linux/types.h>
#include <bpf/bpf_helpers.h>

#define KG_ROTL(x, b) (((x) << (b)) | ((x) >> (64 - (b))))
#define KG_SIPROUND                                                                              \
	do {                                                                                     \
		v0 += v1; v1 = KG_ROTL(v1, 13); v1 ^= v0; v0 = KG_ROTL(v0, 32);                  \
		v2 += v3; v3 = KG_ROTL(v3, 16); v3 ^= v2;                                        \
		v0 += v3; v3 = KG_ROTL(v3, 21); v3 ^= v0;                                        \
		v2 += v1; v1 = KG_ROTL(v1, 17); v1 ^= v2; v2 = KG_ROTL(v2, 32);                  \
	} while (0)

/*
 * SipHash-2-4 (Aumasson and Bernstein, reference implementation's byte order) of a `len`-byte
 * message (a constant multiple of 8) held as little-endian 64-bit words, under the 128-bit key
 * k[0] || k[1] (little-endian words). The final block holds only the length.
 */
static __always_inline __u64 kg_siphash(const __u64 *key, const __u64 *m, const int len)
{
	__u64 v0 = key[0] ^ 0x736f6d6570736575ULL;
	__u64 v1 = key[1] ^ 0x646f72616e646f6dULL;
	__u64 v2 = key[0] ^ 0x6c7967656e657261ULL;
	__u64 v3 = key[1] ^ 0x7465646279746573ULL;
	__u64 b = (__u64)len << 56;
	int i;

#pragma unroll
	for (i = 0; i < len / 8; i++) {
		v3 ^= m[i];
		KG_SIPROUND;
		KG_SIPROUND;
		v0 ^= m[i];
	}
	v3 ^= b;
	KG_SIPROUND;
	KG_SIPROUND;
	v0 ^= b;
	v2 ^= 0xff;
	KG_SIPROUND;
	KG_SIPROUND;
	KG_SIPROUND;
	KG_SIPROUND;
	return v0 ^ v1 ^ v2 ^ v3;
}

#endif /* KNOCKGATE_LIB_SIPHASH_H */
