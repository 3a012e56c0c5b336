// The x86 kernels of gguf_tiles.h (AVX512-VNNI, AVX2): included by it, after the layouts, QRow, Kernels and
// the scalar kernels they fall back to; not a header of its own.
#pragma once

#include <immintrin.h>

namespace {

#define X86_AVX2 __attribute__((target("avx2,fma,f16c")))
#define X86_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")))

X86_VNNI void tile_vnni(const uint8_t* p, const QRow& x, int64_t nb, float* out) {
  __m512 acc = _mm512_setzero_ps();
  const __m512i mask = _mm512_set1_epi8(0x0F);
  for (int64_t b = 0; b < nb; ++b, p += kTileBytes) {
    const int8_t* xq = x.q + b * kBlock;
    __m512i dot = _mm512_setzero_si512();
    for (int c = 0; c < 4; ++c) {
      const __m512i raw = _mm512_loadu_si512(p + 64 + 64 * c);
      dot = _mm512_dpbusd_epi32(dot, _mm512_and_si512(raw, mask), _mm512_set1_epi32(quad(xq + 4 * c)));
      dot = _mm512_dpbusd_epi32(dot, _mm512_and_si512(_mm512_srli_epi16(raw, 4), mask),
                                _mm512_set1_epi32(quad(xq + 16 + 4 * c)));
    }
    const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    const __m512 mw = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 32)));
    acc = _mm512_fmadd_ps(_mm512_mul_ps(dw, _mm512_set1_ps(x.d[b])), _mm512_cvtepi32_ps(dot), acc);
    acc = _mm512_fmadd_ps(mw, _mm512_set1_ps(x.s[b]), acc);
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

X86_AVX2 void tile_avx2(const uint8_t* p, const QRow& x, int64_t nb, float* out) {
  __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
  const __m256i mask = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
  for (int64_t b = 0; b < nb; ++b, p += kTileBytes) {
    const int8_t* xq = x.q + b * kBlock;
    for (int h = 0; h < 2; ++h) {  // rows 8 h .. 8 h + 7
      __m256i sum16 = _mm256_setzero_si256();  // 8 products of <= 15 * 127 * 2 each: fits int16
      for (int c = 0; c < 4; ++c) {
        const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 64 + 64 * c + 32 * h));
        sum16 = _mm256_add_epi16(sum16, _mm256_maddubs_epi16(_mm256_and_si256(raw, mask),
                                                             _mm256_set1_epi32(quad(xq + 4 * c))));
        sum16 = _mm256_add_epi16(sum16, _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(raw, 4), mask),
                                                             _mm256_set1_epi32(quad(xq + 16 + 4 * c))));
      }
      const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16 * h)));
      const __m256 mw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 32 + 16 * h)));
      acc[h] = _mm256_fmadd_ps(_mm256_mul_ps(dw, _mm256_set1_ps(x.d[b])),
                               _mm256_cvtepi32_ps(_mm256_madd_epi16(sum16, ones)), acc[h]);
      acc[h] = _mm256_fmadd_ps(mw, _mm256_set1_ps(x.s[b]), acc[h]);
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

Kernels pick_kernels() {
  __builtin_cpu_init();
  const Kernels scalar{tile_scalar, tile80_scalar, "scalar"}, avx2{tile_avx2, tile80_avx2, "avx2"},
      vnni{tile_vnni, tile80_vnni, "avx512-vnni"};
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
