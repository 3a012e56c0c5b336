// The x86 kernels of gguf_tiles.h (AVX512-VNNI, AVX2): included by it, after the layouts, QRow, Kernels and
// the scalar kernels they fall back to; not a header of its own.
#pragma once

#include <immintrin.h>

namespace {

#define X86_AVX2 __attribute__((target("avx2,fma,f16c")))
#define X86_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")))

// Q4_1 (kMin: w = q d + m) and Q4_0 (w = (q - 8) d, no minimum: the -8 taken off in integers, 8 sum(q_x)).
template <bool kMin>
X86_VNNI void tile4_vnni(const uint8_t* p, const QRow& x, int64_t nb, float* out) {
  constexpr int nib = kMin ? 64 : 32, bytes = kMin ? kTileBytes : kTileBytes40;
  __m512 acc = _mm512_setzero_ps();
  const __m512i mask = _mm512_set1_epi8(0x0F);
  for (int64_t b = 0; b < nb; ++b, p += bytes) {
    const int8_t* xq = x.q + b * kBlock;
    __m512i dot = kMin ? _mm512_setzero_si512() : _mm512_set1_epi32(-8 * x.sum[b]);
    for (int c = 0; c < 4; ++c) {
      const __m512i raw = _mm512_loadu_si512(p + nib + 64 * c);
      dot = _mm512_dpbusd_epi32(dot, _mm512_and_si512(raw, mask), _mm512_set1_epi32(quad(xq + 4 * c)));
      dot = _mm512_dpbusd_epi32(dot, _mm512_and_si512(_mm512_srli_epi16(raw, 4), mask),
                                _mm512_set1_epi32(quad(xq + 16 + 4 * c)));
    }
    const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    acc = _mm512_fmadd_ps(_mm512_mul_ps(dw, _mm512_set1_ps(x.d[b])), _mm512_cvtepi32_ps(dot), acc);
    if (kMin) {
      const __m512 mw = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 32)));
      acc = _mm512_fmadd_ps(mw, _mm512_set1_ps(x.s[b]), acc);
    }
  }
  _mm512_storeu_ps(out, acc);
}

// Q8_0: vpdpbusd multiplies unsigned by signed bytes, so q + 128 (q xor 0x80) goes in and 128 sum(q_x), an
// integer, comes off again.
X86_VNNI void tile80_vnni(const uint8_t* p, const QRow& x, int64_t nb, float* out) {
  __m512 acc = _mm512_setzero_ps();
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
  for (int64_t b = 0; b < nb; ++b, p += kTileBytes80) {
    const int8_t* xq = x.q + b * kBlock;
    __m512i dot = _mm512_set1_epi32(-128 * x.sum[b]);
    for (int c = 0; c < 8; ++c) {
      const __m512i raw = _mm512_loadu_si512(p + 32 + 64 * c);
      dot = _mm512_dpbusd_epi32(dot, _mm512_xor_si512(raw, flip), _mm512_set1_epi32(quad(xq + 4 * c)));
    }
    const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    acc = _mm512_fmadd_ps(_mm512_mul_ps(dw, _mm512_set1_ps(x.d[b])), _mm512_cvtepi32_ps(dot), acc);
  }
  _mm512_storeu_ps(out, acc);
}

template <bool kMin>  // Q4_1 / Q4_0, as tile4_vnni
X86_AVX2 void tile4_avx2(const uint8_t* p, const QRow& x, int64_t nb, float* out) {
  constexpr int nib = kMin ? 64 : 32, bytes = kMin ? kTileBytes : kTileBytes40;
  __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
  const __m256i mask = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
  for (int64_t b = 0; b < nb; ++b, p += bytes) {
    const int8_t* xq = x.q + b * kBlock;
    for (int h = 0; h < 2; ++h) {  // rows 8 h .. 8 h + 7
      __m256i sum16 = _mm256_setzero_si256();  // 8 products of <= 15 * 127 * 2 each: fits int16
      for (int c = 0; c < 4; ++c) {
        const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + nib + 64 * c + 32 * h));
        sum16 = _mm256_add_epi16(sum16, _mm256_maddubs_epi16(_mm256_and_si256(raw, mask),
                                                             _mm256_set1_epi32(quad(xq + 4 * c))));
        sum16 = _mm256_add_epi16(sum16, _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(raw, 4), mask),
                                                             _mm256_set1_epi32(quad(xq + 16 + 4 * c))));
      }
      __m256i dot = _mm256_madd_epi16(sum16, ones);
      if (!kMin) dot = _mm256_add_epi32(dot, _mm256_set1_epi32(-8 * x.sum[b]));
      const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16 * h)));
      acc[h] = _mm256_fmadd_ps(_mm256_mul_ps(dw, _mm256_set1_ps(x.d[b])), _mm256_cvtepi32_ps(dot), acc[h]);
      if (kMin) {
        const __m256 mw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 32 + 16 * h)));
        acc[h] = _mm256_fmadd_ps(mw, _mm256_set1_ps(x.s[b]), acc[h]);
      }
    }
  }
  _mm256_storeu_ps(out, acc[0]);
  _mm256_storeu_ps(out + 8, acc[1]);
}

// Q8_0: maddubs multiplies unsigned by signed bytes with int16 pair sums, so |q| goes in and q's sign moves to
// x: pairs of 128 x 127 fit int16 (q = -128 included), widened to int32 after each chunk.
X86_AVX2 void tile80_avx2(const uint8_t* p, const QRow& x, int64_t nb, float* out) {
  __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
  const __m256i ones = _mm256_set1_epi16(1);
  for (int64_t b = 0; b < nb; ++b, p += kTileBytes80) {
    const int8_t* xq = x.q + b * kBlock;
    for (int h = 0; h < 2; ++h) {  // rows 8 h .. 8 h + 7
      __m256i dot = _mm256_setzero_si256();
      for (int c = 0; c < 8; ++c) {
        const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 32 + 64 * c + 32 * h));
        const __m256i pairs = _mm256_maddubs_epi16(_mm256_abs_epi8(raw),
                                                   _mm256_sign_epi8(_mm256_set1_epi32(quad(xq + 4 * c)), raw));
        dot = _mm256_add_epi32(dot, _mm256_madd_epi16(pairs, ones));
      }
      const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16 * h)));
      acc[h] = _mm256_fmadd_ps(_mm256_mul_ps(dw, _mm256_set1_ps(x.d[b])), _mm256_cvtepi32_ps(dot), acc[h]);
    }
  }
  _mm256_storeu_ps(out, acc[0]);
  _mm256_storeu_ps(out + 8, acc[1]);
}

// The new block types (Q5_0/Q5_1, Q4_K, Q5_K, Q6_K) share one loader per instruction set: a chunk's low and
// high values as unsigned bytes, the bit planes' bits moved into bits 4 and 5.
X86_VNNI inline __m512i plane512(const uint8_t* p, __m512i bit) {
  uint64_t m;
  std::memcpy(&m, p, 8);
  return _mm512_maskz_mov_epi8(_cvtu64_mask64(m), bit);
}

template <int kPlanes>
X86_VNNI inline void chunk512(const uint8_t* nib, const uint8_t* p4, const uint8_t* p5, int c, __m512i* lo,
                              __m512i* hi) {
  const __m512i mask = _mm512_set1_epi8(0x0F);
  const __m512i raw = _mm512_loadu_si512(nib + 64 * c);
  *lo = _mm512_and_si512(raw, mask);
  *hi = _mm512_and_si512(_mm512_srli_epi16(raw, 4), mask);
  if (kPlanes >= 1) {
    *lo = _mm512_or_si512(*lo, plane512(p4 + 16 * c, _mm512_set1_epi8(0x10)));
    *hi = _mm512_or_si512(*hi, plane512(p4 + 16 * c + 8, _mm512_set1_epi8(0x10)));
  }
  if (kPlanes >= 2) {
    *lo = _mm512_or_si512(*lo, plane512(p5 + 16 * c, _mm512_set1_epi8(0x20)));
    *hi = _mm512_or_si512(*hi, plane512(p5 + 16 * c + 8, _mm512_set1_epi8(0x20)));
  }
}

X86_VNNI void tile5_vnni(const uint8_t* p, const QRow& x, int64_t nb, float* out) {
  __m512 acc = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; ++b, p += kTileBytes5) {
    const int8_t* xq = x.q + b * kBlock;
    __m512i dot = _mm512_setzero_si512(), lo, hi;
    for (int c = 0; c < 4; ++c) {
      chunk512<1>(p + 64, p + 320, nullptr, c, &lo, &hi);
      dot = _mm512_dpbusd_epi32(dot, lo, _mm512_set1_epi32(quad(xq + 4 * c)));
      dot = _mm512_dpbusd_epi32(dot, hi, _mm512_set1_epi32(quad(xq + 16 + 4 * c)));
    }
    const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    const __m512 mw = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 32)));
    acc = _mm512_fmadd_ps(_mm512_mul_ps(dw, _mm512_set1_ps(x.d[b])), _mm512_cvtepi32_ps(dot), acc);
    acc = _mm512_fmadd_ps(mw, _mm512_set1_ps(x.s[b]), acc);
  }
  _mm512_storeu_ps(out, acc);
}

template <bool kFive>
X86_VNNI void tilek_vnni(const uint8_t* p, const QRow& x, int64_t nsb, float* out) {
  constexpr int rec = kFive ? kRec5K : kRec4K;
  __m512 acc = _mm512_setzero_ps();
  for (int64_t sb = 0; sb < nsb; ++sb, p += 64 + 8 * rec) {
    __m512 accs = _mm512_setzero_ps(), accm = _mm512_setzero_ps();
    for (int j = 0; j < 8; ++j) {
      const int64_t b = sb * 8 + j;
      const uint8_t* r0 = p + 64 + j * rec;
      const int8_t* xq = x.q + b * kBlock;
      __m512i dot = _mm512_setzero_si512(), lo, hi;
      for (int c = 0; c < 4; ++c) {
        chunk512<kFive ? 1 : 0>(r0 + 32, r0 + 32 + kNib, nullptr, c, &lo, &hi);
        dot = _mm512_dpbusd_epi32(dot, lo, _mm512_set1_epi32(quad(xq + 4 * c)));
        dot = _mm512_dpbusd_epi32(dot, hi, _mm512_set1_epi32(quad(xq + 16 + 4 * c)));
      }
      const __m512i sc = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(r0)));
      const __m512i mn = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(r0 + 16)));
      accs = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_mullo_epi32(dot, sc)), _mm512_set1_ps(x.d[b]), accs);
      accm = _mm512_fmadd_ps(_mm512_cvtepi32_ps(mn), _mm512_set1_ps(x.s[b]), accm);
    }
    const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    const __m512 mw = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 32)));
    acc = _mm512_fnmadd_ps(mw, accm, _mm512_fmadd_ps(dw, accs, acc));
  }
  _mm512_storeu_ps(out, acc);
}

X86_VNNI void tile6k_vnni(const uint8_t* p, const QRow& x, int64_t nsb, float* out) {
  __m512 acc = _mm512_setzero_ps();
  for (int64_t sb = 0; sb < nsb; ++sb, p += 32 + 8 * kRec6K) {
    __m512 accs = _mm512_setzero_ps();
    for (int j = 0; j < 8; ++j) {
      const int64_t b = sb * 8 + j;
      const uint8_t* r0 = p + 32 + j * kRec6K;
      const int8_t* xq = x.q + b * kBlock;
      __m512i dlo = _mm512_set1_epi32(-32 * x.sum16[2 * b]), dhi = _mm512_set1_epi32(-32 * x.sum16[2 * b + 1]);
      __m512i lo, hi;
      for (int c = 0; c < 4; ++c) {
        chunk512<2>(r0 + 32, r0 + 32 + kNib, r0 + 32 + kNib + kPlane, c, &lo, &hi);
        dlo = _mm512_dpbusd_epi32(dlo, lo, _mm512_set1_epi32(quad(xq + 4 * c)));
        dhi = _mm512_dpbusd_epi32(dhi, hi, _mm512_set1_epi32(quad(xq + 16 + 4 * c)));
      }
      const __m512i slo = _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(r0)));
      const __m512i shi = _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(r0 + 16)));
      const __m512i t = _mm512_add_epi32(_mm512_mullo_epi32(dlo, slo), _mm512_mullo_epi32(dhi, shi));
      accs = _mm512_fmadd_ps(_mm512_cvtepi32_ps(t), _mm512_set1_ps(x.d[b]), accs);
    }
    acc = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))), accs, acc);
  }
  _mm512_storeu_ps(out, acc);
}

// AVX2: rows 8 h .. 8 h + 7 of a chunk are 32 bytes, their plane bits a 32-bit word; each byte takes its bit
// (shuffle the word's bytes out, test one bit per byte).
X86_AVX2 inline __m256i plane256(const uint8_t* p, __m256i bit) {
  uint32_t m;
  std::memcpy(&m, p, 4);
  const __m256i shuf = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3,
                                        3, 3, 3, 3, 3, 3);
  const __m256i sel = _mm256_set1_epi64x(static_cast<int64_t>(0x8040201008040201ULL));
  const __m256i v = _mm256_and_si256(_mm256_shuffle_epi8(_mm256_set1_epi32(static_cast<int>(m)), shuf), sel);
  return _mm256_and_si256(_mm256_cmpeq_epi8(v, sel), bit);
}

template <int kPlanes>
X86_AVX2 inline void chunk256(const uint8_t* nib, const uint8_t* p4, const uint8_t* p5, int c, int h, __m256i* lo,
                              __m256i* hi) {
  const __m256i mask = _mm256_set1_epi8(0x0F);
  const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(nib + 64 * c + 32 * h));
  *lo = _mm256_and_si256(raw, mask);
  *hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), mask);
  if (kPlanes >= 1) {
    *lo = _mm256_or_si256(*lo, plane256(p4 + 16 * c + 4 * h, _mm256_set1_epi8(0x10)));
    *hi = _mm256_or_si256(*hi, plane256(p4 + 16 * c + 8 + 4 * h, _mm256_set1_epi8(0x10)));
  }
  if (kPlanes >= 2) {
    *lo = _mm256_or_si256(*lo, plane256(p5 + 16 * c + 4 * h, _mm256_set1_epi8(0x20)));
    *hi = _mm256_or_si256(*hi, plane256(p5 + 16 * c + 8 + 4 * h, _mm256_set1_epi8(0x20)));
  }
}

// unsigned values (<= 63) times signed x: pairs fit int16 (2 x 63 x 127), widened to int32 per row
X86_AVX2 inline __m256i dot256(__m256i q, const int8_t* xq) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(q, _mm256_set1_epi32(quad(xq))), _mm256_set1_epi16(1));
}

X86_AVX2 void tile5_avx2(const uint8_t* p, const QRow& x, int64_t nb, float* out) {
  __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
  for (int64_t b = 0; b < nb; ++b, p += kTileBytes5) {
    const int8_t* xq = x.q + b * kBlock;
    for (int h = 0; h < 2; ++h) {
      __m256i dot = _mm256_setzero_si256(), lo, hi;
      for (int c = 0; c < 4; ++c) {
        chunk256<1>(p + 64, p + 320, nullptr, c, h, &lo, &hi);
        dot = _mm256_add_epi32(dot, _mm256_add_epi32(dot256(lo, xq + 4 * c), dot256(hi, xq + 16 + 4 * c)));
      }
      const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16 * h)));
      const __m256 mw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 32 + 16 * h)));
      acc[h] = _mm256_fmadd_ps(_mm256_mul_ps(dw, _mm256_set1_ps(x.d[b])), _mm256_cvtepi32_ps(dot), acc[h]);
      acc[h] = _mm256_fmadd_ps(mw, _mm256_set1_ps(x.s[b]), acc[h]);
    }
  }
  _mm256_storeu_ps(out, acc[0]);
  _mm256_storeu_ps(out + 8, acc[1]);
}

template <bool kFive>
X86_AVX2 void tilek_avx2(const uint8_t* p, const QRow& x, int64_t nsb, float* out) {
  constexpr int rec = kFive ? kRec5K : kRec4K;
  __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
  for (int64_t sb = 0; sb < nsb; ++sb, p += 64 + 8 * rec) {
    for (int h = 0; h < 2; ++h) {
      __m256 accs = _mm256_setzero_ps(), accm = _mm256_setzero_ps();
      for (int j = 0; j < 8; ++j) {
        const int64_t b = sb * 8 + j;
        const uint8_t* r0 = p + 64 + j * rec;
        const int8_t* xq = x.q + b * kBlock;
        __m256i dot = _mm256_setzero_si256(), lo, hi;
        for (int c = 0; c < 4; ++c) {
          chunk256<kFive ? 1 : 0>(r0 + 32, r0 + 32 + kNib, nullptr, c, h, &lo, &hi);
          dot = _mm256_add_epi32(dot, _mm256_add_epi32(dot256(lo, xq + 4 * c), dot256(hi, xq + 16 + 4 * c)));
        }
        const __m256i sc = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(r0 + 8 * h)));
        const __m256i mn = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(r0 + 16 + 8 * h)));
        accs = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_mullo_epi32(dot, sc)), _mm256_set1_ps(x.d[b]), accs);
        accm = _mm256_fmadd_ps(_mm256_cvtepi32_ps(mn), _mm256_set1_ps(x.s[b]), accm);
      }
      const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16 * h)));
      const __m256 mw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 32 + 16 * h)));
      acc[h] = _mm256_fnmadd_ps(mw, accm, _mm256_fmadd_ps(dw, accs, acc[h]));
    }
  }
  _mm256_storeu_ps(out, acc[0]);
  _mm256_storeu_ps(out + 8, acc[1]);
}

X86_AVX2 void tile6k_avx2(const uint8_t* p, const QRow& x, int64_t nsb, float* out) {
  __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
  for (int64_t sb = 0; sb < nsb; ++sb, p += 32 + 8 * kRec6K) {
    for (int h = 0; h < 2; ++h) {
      __m256 accs = _mm256_setzero_ps();
      for (int j = 0; j < 8; ++j) {
        const int64_t b = sb * 8 + j;
        const uint8_t* r0 = p + 32 + j * kRec6K;
        const int8_t* xq = x.q + b * kBlock;
        __m256i dlo = _mm256_set1_epi32(-32 * x.sum16[2 * b]), dhi = _mm256_set1_epi32(-32 * x.sum16[2 * b + 1]);
        __m256i lo, hi;
        for (int c = 0; c < 4; ++c) {
          chunk256<2>(r0 + 32, r0 + 32 + kNib, r0 + 32 + kNib + kPlane, c, h, &lo, &hi);
          dlo = _mm256_add_epi32(dlo, dot256(lo, xq + 4 * c));
          dhi = _mm256_add_epi32(dhi, dot256(hi, xq + 16 + 4 * c));
        }
        const __m256i slo = _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(r0 + 8 * h)));
        const __m256i shi = _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(r0 + 16 + 8 * h)));
        const __m256i t = _mm256_add_epi32(_mm256_mullo_epi32(dlo, slo), _mm256_mullo_epi32(dhi, shi));
        accs = _mm256_fmadd_ps(_mm256_cvtepi32_ps(t), _mm256_set1_ps(x.d[b]), accs);
      }
      acc[h] = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16 * h))), accs,
                               acc[h]);
    }
  }
  _mm256_storeu_ps(out, acc[0]);
  _mm256_storeu_ps(out + 8, acc[1]);
}

Kernels pick_kernels() {
  __builtin_cpu_init();
  const Kernels scalar{SCALAR_KERNELS, "scalar"},
      avx2{tile4_avx2<false>, tile4_avx2<true>, tile80_avx2, tile5_avx2, tilek_avx2<false>, tilek_avx2<true>, tile6k_avx2, "avx2"},
      vnni{tile4_vnni<false>, tile4_vnni<true>, tile80_vnni, tile5_vnni, tilek_vnni<false>, tilek_vnni<true>, tile6k_vnni, "avx512-vnni"};
  if (forced("scalar")) return scalar;
  if (forced("avx2")) return avx2;
  if (__builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512bw"))
    return vnni;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c"))
    return avx2;
  return scalar;
}

}  // namespace
