// The GGUF tile kernels shared by edgeslm's ExecuTorch operator (gguf_linear.cpp) and its onnxruntime
// custom op (ort_gguf.cpp): the tile layouts of Q4_1 and Q8_0, the Q8_1 activation quantizer and one
// dot-product kernel per block type and instruction set, picked once per library at load
// (EDGESLM_GGUF_KERNEL forces one instruction set). See gguf_linear.cpp.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#elif defined(__aarch64__)
#include <arm_neon.h>
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
#endif

namespace {

constexpr int kBlock = 32;
constexpr int kTile = 16;
constexpr int64_t kQ41 = 3;       // GGML_TYPE_Q4_1
constexpr int64_t kQ80 = 8;       // GGML_TYPE_Q8_0
constexpr int kTileBytes = 320;    // Q4_1, per tile and block: 32 bytes d, 32 bytes m, 256 bytes nibbles
constexpr int kTileBytes80 = 544;  // Q8_0, per tile and block: 32 bytes d, 512 bytes int8 q

// Bytes per tile and block of a type gguf_linear runs; 0 for any other.
inline int64_t tile_bytes(int64_t type) { return type == kQ41 ? kTileBytes : type == kQ80 ? kTileBytes80 : 0; }

float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1F, man = h & 0x3FF, bits;
  if (exp == 0x1F) {
    bits = sign | 0x7F800000 | (man << 13);
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (man << 13);
  } else if (man == 0) {
    bits = sign;
  } else {  // subnormal: normalize
    exp = 113;
    while (!(man & 0x400)) {
      man <<= 1;
      --exp;
    }
    bits = sign | (exp << 23) | ((man & 0x3FF) << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// One row of x as Q8_1 blocks: 32 int8 values per block, and per block d, s = d * sum(q) and sum(q).
struct QRow {
  const int8_t* q;
  const float* d;
  const float* s;
  const int32_t* sum;
};

void quantize_row(const float* x, int64_t k, int8_t* q, float* d, float* s, int32_t* qsum) {
  for (int64_t b = 0; b < k / kBlock; ++b) {
    const float* xb = x + b * kBlock;
    float amax = 0.f;
    for (int j = 0; j < kBlock; ++j) amax = std::fabs(xb[j]) > amax ? std::fabs(xb[j]) : amax;
    const float db = amax / 127.f, id = db != 0.f ? 1.f / db : 0.f;
    int sum = 0;
    for (int j = 0; j < kBlock; ++j) {
      // round half to even without a libm call: |x * id| <= 127, far below 2^22
      const int v = static_cast<int>((xb[j] * id + 12582912.f) - 12582912.f);
      q[b * kBlock + j] = static_cast<int8_t>(v);
      sum += v;
    }
    d[b] = db;
    s[b] = db * static_cast<float>(sum);
    qsum[b] = sum;
  }
}

// A tile's 16 outputs for one row of x: p points at the tile's first block.
void tile_scalar(const uint8_t* p, const QRow& x, int64_t nb, float* out) {
  float acc[kTile] = {};
  for (int64_t b = 0; b < nb; ++b, p += kTileBytes) {
    const int8_t* xq = x.q + b * kBlock;
    for (int r = 0; r < kTile; ++r) {
      int dot = 0;
      for (int c = 0; c < 4; ++c)
        for (int j = 0; j < 4; ++j) {
          const uint8_t v = p[64 + 64 * c + 4 * r + j];
          dot += (v & 0x0F) * xq[4 * c + j] + (v >> 4) * xq[16 + 4 * c + j];
        }
      uint16_t hd, hm;
      std::memcpy(&hd, p + 2 * r, 2);
      std::memcpy(&hm, p + 32 + 2 * r, 2);
      acc[r] += half_to_float(hd) * x.d[b] * static_cast<float>(dot) + half_to_float(hm) * x.s[b];
    }
  }
  std::memcpy(out, acc, sizeof(acc));
}

// The same for a Q8_0 tile: 16 fp16 d, then 8 chunks of 64 bytes whose byte 4 r + j is q[r][4 c + j] (int8).
void tile80_scalar(const uint8_t* p, const QRow& x, int64_t nb, float* out) {
  float acc[kTile] = {};
  for (int64_t b = 0; b < nb; ++b, p += kTileBytes80) {
    const int8_t* xq = x.q + b * kBlock;
    for (int r = 0; r < kTile; ++r) {
      int dot = 0;
      for (int c = 0; c < 8; ++c)
        for (int j = 0; j < 4; ++j) dot += static_cast<int8_t>(p[32 + 64 * c + 4 * r + j]) * xq[4 * c + j];
      uint16_t hd;
      std::memcpy(&hd, p + 2 * r, 2);
      acc[r] += half_to_float(hd) * x.d[b] * static_cast<float>(dot);
    }
  }
  std::memcpy(out, acc, sizeof(acc));
}

using TileFn = void (*)(const uint8_t*, const QRow&, int64_t, float*);
// The kernels of one instruction set: Q4_1, Q8_0, and the set's name (for reports and tests).
struct Kernels {
  TileFn q41, q80;
  const char* name;
};

// EDGESLM_GGUF_KERNEL names a kernel to use instead of the best one (tests run each kernel this CPU has)
bool forced(const char* name) {
  const char* f = std::getenv("EDGESLM_GGUF_KERNEL");
  return f != nullptr && std::strcmp(f, name) == 0;
}

inline int32_t quad(const int8_t* q) {
  int32_t v;
  std::memcpy(&v, q, 4);
  return v;
}

#if defined(__x86_64__)
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

#elif defined(__aarch64__)
inline int8x16_t bcast(const int8_t* q) { return vreinterpretq_s8_s32(vdupq_n_s32(quad(q))); }

inline float32x4_t halves(const uint8_t* p) {
  return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(reinterpret_cast<const uint16_t*>(p))));
}

void tile_neon(const uint8_t* p, const QRow& x, int64_t nb, float* out) {
  float32x4_t acc[4] = {vdupq_n_f32(0.f), vdupq_n_f32(0.f), vdupq_n_f32(0.f), vdupq_n_f32(0.f)};
  const uint8x16_t mask = vdupq_n_u8(0x0F);
  for (int64_t b = 0; b < nb; ++b, p += kTileBytes) {
    const int8_t* xq = x.q + b * kBlock;
    for (int h = 0; h < 4; ++h) {  // rows 4 h .. 4 h + 3
      int16x8_t sum16 = vdupq_n_s16(0);  // pair sums of 8 products of <= 15 * 127 each: fits int16
      for (int c = 0; c < 4; ++c) {
        const uint8x16_t raw = vld1q_u8(p + 64 + 64 * c + 16 * h);
        const int8x16_t lo = vreinterpretq_s8_u8(vandq_u8(raw, mask)), hi = vreinterpretq_s8_u8(vshrq_n_u8(raw, 4));
        const int8x16_t x0 = bcast(xq + 4 * c), x1 = bcast(xq + 16 + 4 * c);
        sum16 = vaddq_s16(sum16, vpaddq_s16(vmull_s8(vget_low_s8(lo), vget_low_s8(x0)),
                                            vmull_s8(vget_high_s8(lo), vget_high_s8(x0))));
        sum16 = vaddq_s16(sum16, vpaddq_s16(vmull_s8(vget_low_s8(hi), vget_low_s8(x1)),
                                            vmull_s8(vget_high_s8(hi), vget_high_s8(x1))));
      }
      const float32x4_t dot = vcvtq_f32_s32(vpaddlq_s16(sum16));
      acc[h] = vfmaq_f32(acc[h], vmulq_n_f32(halves(p + 8 * h), x.d[b]), dot);
      acc[h] = vfmaq_n_f32(acc[h], halves(p + 32 + 8 * h), x.s[b]);
    }
  }
  for (int h = 0; h < 4; ++h) vst1q_f32(out + 4 * h, acc[h]);
}

__attribute__((target("arch=armv8.2-a+dotprod"))) void tile_dotprod(const uint8_t* p, const QRow& x, int64_t nb,
                                                                   float* out) {
  float32x4_t acc[4] = {vdupq_n_f32(0.f), vdupq_n_f32(0.f), vdupq_n_f32(0.f), vdupq_n_f32(0.f)};
  const uint8x16_t mask = vdupq_n_u8(0x0F);
  for (int64_t b = 0; b < nb; ++b, p += kTileBytes) {
    const int8_t* xq = x.q + b * kBlock;
    for (int h = 0; h < 4; ++h) {
      int32x4_t dot = vdupq_n_s32(0);
      for (int c = 0; c < 4; ++c) {
        const uint8x16_t raw = vld1q_u8(p + 64 + 64 * c + 16 * h);
        dot = vdotq_s32(dot, vreinterpretq_s8_u8(vandq_u8(raw, mask)), bcast(xq + 4 * c));
        dot = vdotq_s32(dot, vreinterpretq_s8_u8(vshrq_n_u8(raw, 4)), bcast(xq + 16 + 4 * c));
      }
      acc[h] = vfmaq_f32(acc[h], vmulq_n_f32(halves(p + 8 * h), x.d[b]), vcvtq_f32_s32(dot));
      acc[h] = vfmaq_n_f32(acc[h], halves(p + 32 + 8 * h), x.s[b]);
    }
  }
  for (int h = 0; h < 4; ++h) vst1q_f32(out + 4 * h, acc[h]);
}

// Q8_0: signed bytes on both sides; pairs of 128 x 127 fit int16, widened into int32 after each chunk.
void tile80_neon(const uint8_t* p, const QRow& x, int64_t nb, float* out) {
  float32x4_t acc[4] = {vdupq_n_f32(0.f), vdupq_n_f32(0.f), vdupq_n_f32(0.f), vdupq_n_f32(0.f)};
  for (int64_t b = 0; b < nb; ++b, p += kTileBytes80) {
    const int8_t* xq = x.q + b * kBlock;
    for (int h = 0; h < 4; ++h) {  // rows 4 h .. 4 h + 3
      int32x4_t dot = vdupq_n_s32(0);
      for (int c = 0; c < 8; ++c) {
        const int8x16_t w = vld1q_s8(reinterpret_cast<const int8_t*>(p + 32 + 64 * c + 16 * h));
        const int8x16_t x0 = bcast(xq + 4 * c);
        dot = vpadalq_s16(dot, vpaddq_s16(vmull_s8(vget_low_s8(w), vget_low_s8(x0)),
                                          vmull_s8(vget_high_s8(w), vget_high_s8(x0))));
      }
      acc[h] = vfmaq_f32(acc[h], vmulq_n_f32(halves(p + 8 * h), x.d[b]), vcvtq_f32_s32(dot));
    }
  }
  for (int h = 0; h < 4; ++h) vst1q_f32(out + 4 * h, acc[h]);
}

__attribute__((target("arch=armv8.2-a+dotprod"))) void tile80_dotprod(const uint8_t* p, const QRow& x, int64_t nb,
                                                                     float* out) {
  float32x4_t acc[4] = {vdupq_n_f32(0.f), vdupq_n_f32(0.f), vdupq_n_f32(0.f), vdupq_n_f32(0.f)};
  for (int64_t b = 0; b < nb; ++b, p += kTileBytes80) {
    const int8_t* xq = x.q + b * kBlock;
    for (int h = 0; h < 4; ++h) {
      int32x4_t dot = vdupq_n_s32(0);
      for (int c = 0; c < 8; ++c)
        dot = vdotq_s32(dot, vld1q_s8(reinterpret_cast<const int8_t*>(p + 32 + 64 * c + 16 * h)), bcast(xq + 4 * c));
      acc[h] = vfmaq_f32(acc[h], vmulq_n_f32(halves(p + 8 * h), x.d[b]), vcvtq_f32_s32(dot));
    }
  }
  for (int h = 0; h < 4; ++h) vst1q_f32(out + 4 * h, acc[h]);
}

Kernels pick_kernels() {
  const Kernels scalar{tile_scalar, tile80_scalar, "scalar"}, neon{tile_neon, tile80_neon, "neon"},
      dotprod{tile_dotprod, tile80_dotprod, "neon-dotprod"};
  if (forced("scalar")) return scalar;
  if (forced("neon")) return neon;
  return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) ? dotprod : neon;
}

#else
Kernels pick_kernels() { return {tile_scalar, tile80_scalar, "scalar"}; }
#endif

const Kernels kKernels = pick_kernels();

// The name of the instruction set this library's kernels use (for reports and tests).
inline const char* tile_kernel_name() { return kKernels.name; }

// One call: x [m, k] float (k a multiple of 32) times the tiles of `type` (kQ41 or kQ80); out [m, n_tiles * 16].
// quantize() first (x per row as Q8_1), then tiles(begin, end) for any split of [0, n_tiles) across threads.
struct GgufJob {
  int64_t type = kQ41;
  const float* x = nullptr;
  int64_t m = 0, k = 0;
  const uint8_t* w = nullptr;
  int64_t n_tiles = 0;
  float* out = nullptr;
  std::vector<int8_t> q;
  std::vector<float> d, s;
  std::vector<int32_t> sum;

  void quantize() {
    const int64_t nb = k / kBlock;
    q.resize(static_cast<size_t>(m * k));
    d.resize(static_cast<size_t>(m * nb));
    s.resize(static_cast<size_t>(m * nb));
    sum.resize(static_cast<size_t>(m * nb));
    for (int64_t r = 0; r < m; ++r)
      quantize_row(x + r * k, k, q.data() + r * k, d.data() + r * nb, s.data() + r * nb, sum.data() + r * nb);
  }

  void tiles(int64_t begin, int64_t end) const {
    const int64_t nb = k / kBlock, n = n_tiles * kTile, bytes = nb * tile_bytes(type);
    const TileFn fn = type == kQ80 ? kKernels.q80 : kKernels.q41;
    for (int64_t t = begin; t < end; ++t)  // a tile's weights stay in cache across the rows of x
      for (int64_t r = 0; r < m; ++r)
        fn(w + t * bytes, QRow{q.data() + r * k, d.data() + r * nb, s.data() + r * nb, sum.data() + r * nb}, nb,
           out + r * n + t * kTile);
  }
};

}  // namespace
