// The aarch64 kernels of gguf_tiles.h (NEON, NEON dotprod): included by it, after the layouts, QRow, Kernels
// and the scalar kernels they fall back to; not a header of its own.
#pragma once

#include <arm_neon.h>
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif

namespace {

inline int8x16_t bcast(const int8_t* q) { return vreinterpretq_s8_s32(vdupq_n_s32(quad(q))); }

inline float32x4_t halves(const uint8_t* p) {
  return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(reinterpret_cast<const uint16_t*>(p))));
}

// Q4_1 (kMin: w = q d + m) and Q4_0 (w = (q - 8) d, no minimum: the -8 taken off in integers, 8 sum(q_x)).
template <bool kMin>
void tile4_neon(const uint8_t* p, const QRow& x, int64_t nb, float* out) {
  constexpr int nib = kMin ? 64 : 32, bytes = kMin ? kTileBytes : kTileBytes40;
  float32x4_t acc[4] = {vdupq_n_f32(0.f), vdupq_n_f32(0.f), vdupq_n_f32(0.f), vdupq_n_f32(0.f)};
  const uint8x16_t mask = vdupq_n_u8(0x0F);
  for (int64_t b = 0; b < nb; ++b, p += bytes) {
    const int8_t* xq = x.q + b * kBlock;
    for (int h = 0; h < 4; ++h) {  // rows 4 h .. 4 h + 3
      int16x8_t sum16 = vdupq_n_s16(0);  // pair sums of 8 products of <= 15 * 127 each: fits int16
      for (int c = 0; c < 4; ++c) {
        const uint8x16_t raw = vld1q_u8(p + nib + 64 * c + 16 * h);
        const int8x16_t lo = vreinterpretq_s8_u8(vandq_u8(raw, mask)), hi = vreinterpretq_s8_u8(vshrq_n_u8(raw, 4));
        const int8x16_t x0 = bcast(xq + 4 * c), x1 = bcast(xq + 16 + 4 * c);
        sum16 = vaddq_s16(sum16, vpaddq_s16(vmull_s8(vget_low_s8(lo), vget_low_s8(x0)),
                                            vmull_s8(vget_high_s8(lo), vget_high_s8(x0))));
        sum16 = vaddq_s16(sum16, vpaddq_s16(vmull_s8(vget_low_s8(hi), vget_low_s8(x1)),
                                            vmull_s8(vget_high_s8(hi), vget_high_s8(x1))));
      }
      int32x4_t dot = vpaddlq_s16(sum16);
      if (!kMin) dot = vaddq_s32(dot, vdupq_n_s32(-8 * x.sum[b]));
      acc[h] = vfmaq_f32(acc[h], vmulq_n_f32(halves(p + 8 * h), x.d[b]), vcvtq_f32_s32(dot));
      if (kMin) acc[h] = vfmaq_n_f32(acc[h], halves(p + 32 + 8 * h), x.s[b]);
    }
  }
  for (int h = 0; h < 4; ++h) vst1q_f32(out + 4 * h, acc[h]);
}

template <bool kMin>
__attribute__((target("arch=armv8.2-a+dotprod"))) void tile4_dotprod(const uint8_t* p, const QRow& x, int64_t nb,
                                                                    float* out) {
  constexpr int nib = kMin ? 64 : 32, bytes = kMin ? kTileBytes : kTileBytes40;
  float32x4_t acc[4] = {vdupq_n_f32(0.f), vdupq_n_f32(0.f), vdupq_n_f32(0.f), vdupq_n_f32(0.f)};
  const uint8x16_t mask = vdupq_n_u8(0x0F);
  for (int64_t b = 0; b < nb; ++b, p += bytes) {
    const int8_t* xq = x.q + b * kBlock;
    for (int h = 0; h < 4; ++h) {
      int32x4_t dot = vdupq_n_s32(kMin ? 0 : -8 * x.sum[b]);
      for (int c = 0; c < 4; ++c) {
        const uint8x16_t raw = vld1q_u8(p + nib + 64 * c + 16 * h);
        dot = vdotq_s32(dot, vreinterpretq_s8_u8(vandq_u8(raw, mask)), bcast(xq + 4 * c));
        dot = vdotq_s32(dot, vreinterpretq_s8_u8(vshrq_n_u8(raw, 4)), bcast(xq + 16 + 4 * c));
      }
      acc[h] = vfmaq_f32(acc[h], vmulq_n_f32(halves(p + 8 * h), x.d[b]), vcvtq_f32_s32(dot));
      if (kMin) acc[h] = vfmaq_n_f32(acc[h], halves(p + 32 + 8 * h), x.s[b]);
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

// The new block types (Q5_0/Q5_1, Q4_K, Q5_K, Q6_K): rows 4 h .. 4 h + 3 of a chunk are 16 bytes, their plane
// bits a 16-bit word; each byte takes its bit (vtst against one bit per byte). Values <= 63 fit int8, so the
// products are signed on both sides.
inline uint8x16_t plane128(const uint8_t* p, uint8_t bit) {
  const uint8x16_t v = vcombine_u8(vdup_n_u8(p[0]), vdup_n_u8(p[1]));
  const uint8x16_t sel = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
  return vandq_u8(vtstq_u8(v, sel), vdupq_n_u8(bit));
}

template <int kPlanes>
inline void chunk128(const uint8_t* nib, const uint8_t* p4, const uint8_t* p5, int c, int h, int8x16_t* lo,
                     int8x16_t* hi) {
  const uint8x16_t raw = vld1q_u8(nib + 64 * c + 16 * h);
  uint8x16_t l = vandq_u8(raw, vdupq_n_u8(0x0F)), u = vshrq_n_u8(raw, 4);
  if (kPlanes >= 1) {
    l = vorrq_u8(l, plane128(p4 + 16 * c + 2 * h, 0x10));
    u = vorrq_u8(u, plane128(p4 + 16 * c + 8 + 2 * h, 0x10));
  }
  if (kPlanes >= 2) {
    l = vorrq_u8(l, plane128(p5 + 16 * c + 2 * h, 0x20));
    u = vorrq_u8(u, plane128(p5 + 16 * c + 8 + 2 * h, 0x20));
  }
  *lo = vreinterpretq_s8_u8(l);
  *hi = vreinterpretq_s8_u8(u);
}

// A chunk's 4 rows x 4 inputs against the broadcast inputs, into int32 per row.
inline int32x4_t dot_neon(int32x4_t acc, int8x16_t q, const int8_t* xq) {
  const int8x16_t x0 = bcast(xq);
  return vpadalq_s16(acc, vpaddq_s16(vmull_s8(vget_low_s8(q), vget_low_s8(x0)),
                                     vmull_s8(vget_high_s8(q), vget_high_s8(x0))));
}

__attribute__((target("arch=armv8.2-a+dotprod"))) inline int32x4_t dot_dp(int32x4_t acc, int8x16_t q,
                                                                         const int8_t* xq) {
  return vdotq_s32(acc, q, bcast(xq));
}

inline int32x4_t u8x4(const uint8_t* p) {
  return vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(vmovl_u8(vcreate_u8(static_cast<uint64_t>(p[0]) |
      (static_cast<uint64_t>(p[1]) << 8) | (static_cast<uint64_t>(p[2]) << 16) | (static_cast<uint64_t>(p[3]) << 24))))));
}

inline int32x4_t s8x4(const uint8_t* p) {
  return vmovl_s16(vget_low_s16(vmovl_s8(vreinterpret_s8_u8(vcreate_u8(static_cast<uint64_t>(p[0]) |
      (static_cast<uint64_t>(p[1]) << 8) | (static_cast<uint64_t>(p[2]) << 16) | (static_cast<uint64_t>(p[3]) << 24))))));
}

#define ES_DOT_KERNELS(SUFFIX, DOT, ATTR)                                                                          \
  ATTR void tile5_##SUFFIX(const uint8_t* p, const QRow& x, int64_t nb, float* out) {                            \
    float32x4_t acc[4] = {vdupq_n_f32(0.f), vdupq_n_f32(0.f), vdupq_n_f32(0.f), vdupq_n_f32(0.f)};              \
    for (int64_t b = 0; b < nb; ++b, p += kTileBytes5) {                                                          \
      const int8_t* xq = x.q + b * kBlock;                                                                        \
      for (int h = 0; h < 4; ++h) {                                                                               \
        int32x4_t dot = vdupq_n_s32(0);                                                                           \
        int8x16_t lo, hi;                                                                                         \
        for (int c = 0; c < 4; ++c) {                                                                             \
          chunk128<1>(p + 64, p + 320, nullptr, c, h, &lo, &hi);                                                  \
          dot = DOT(DOT(dot, lo, xq + 4 * c), hi, xq + 16 + 4 * c);                                               \
        }                                                                                                         \
        acc[h] = vfmaq_f32(acc[h], vmulq_n_f32(halves(p + 8 * h), x.d[b]), vcvtq_f32_s32(dot));                   \
        acc[h] = vfmaq_n_f32(acc[h], halves(p + 32 + 8 * h), x.s[b]);                                             \
      }                                                                                                           \
    }                                                                                                             \
    for (int h = 0; h < 4; ++h) vst1q_f32(out + 4 * h, acc[h]);                                                   \
  }                                                                                                               \
  template <bool kFive>                                                                                           \
  ATTR void tilek_##SUFFIX(const uint8_t* p, const QRow& x, int64_t nsb, float* out) {                           \
    constexpr int rec = kFive ? kRec5K : kRec4K;                                                                  \
    float32x4_t acc[4] = {vdupq_n_f32(0.f), vdupq_n_f32(0.f), vdupq_n_f32(0.f), vdupq_n_f32(0.f)};              \
    for (int64_t sb = 0; sb < nsb; ++sb, p += 64 + 8 * rec) {                                                     \
      for (int h = 0; h < 4; ++h) {                                                                               \
        float32x4_t accs = vdupq_n_f32(0.f), accm = vdupq_n_f32(0.f);                                             \
        for (int j = 0; j < 8; ++j) {                                                                             \
          const int64_t b = sb * 8 + j;                                                                           \
          const uint8_t* r0 = p + 64 + j * rec;                                                                   \
          const int8_t* xq = x.q + b * kBlock;                                                                    \
          int32x4_t dot = vdupq_n_s32(0);                                                                         \
          int8x16_t lo, hi;                                                                                       \
          for (int c = 0; c < 4; ++c) {                                                                           \
            chunk128<kFive ? 1 : 0>(r0 + 32, r0 + 32 + kNib, nullptr, c, h, &lo, &hi);                            \
            dot = DOT(DOT(dot, lo, xq + 4 * c), hi, xq + 16 + 4 * c);                                             \
          }                                                                                                       \
          accs = vfmaq_n_f32(accs, vcvtq_f32_s32(vmulq_s32(dot, u8x4(r0 + 4 * h))), x.d[b]);                      \
          accm = vfmaq_n_f32(accm, vcvtq_f32_s32(u8x4(r0 + 16 + 4 * h)), x.s[b]);                                 \
        }                                                                                                         \
        acc[h] = vfmsq_f32(vfmaq_f32(acc[h], halves(p + 8 * h), accs), halves(p + 32 + 8 * h), accm);             \
      }                                                                                                           \
    }                                                                                                             \
    for (int h = 0; h < 4; ++h) vst1q_f32(out + 4 * h, acc[h]);                                                   \
  }                                                                                                               \
  ATTR void tile6k_##SUFFIX(const uint8_t* p, const QRow& x, int64_t nsb, float* out) {                          \
    float32x4_t acc[4] = {vdupq_n_f32(0.f), vdupq_n_f32(0.f), vdupq_n_f32(0.f), vdupq_n_f32(0.f)};              \
    for (int64_t sb = 0; sb < nsb; ++sb, p += 32 + 8 * kRec6K) {                                                  \
      for (int h = 0; h < 4; ++h) {                                                                               \
        float32x4_t accs = vdupq_n_f32(0.f);                                                                      \
        for (int j = 0; j < 8; ++j) {                                                                             \
          const int64_t b = sb * 8 + j;                                                                           \
          const uint8_t* r0 = p + 32 + j * kRec6K;                                                                \
          const int8_t* xq = x.q + b * kBlock;                                                                    \
          int32x4_t dlo = vdupq_n_s32(-32 * x.sum16[2 * b]), dhi = vdupq_n_s32(-32 * x.sum16[2 * b + 1]);         \
          int8x16_t lo, hi;                                                                                       \
          for (int c = 0; c < 4; ++c) {                                                                           \
            chunk128<2>(r0 + 32, r0 + 32 + kNib, r0 + 32 + kNib + kPlane, c, h, &lo, &hi);                        \
            dlo = DOT(dlo, lo, xq + 4 * c);                                                                       \
            dhi = DOT(dhi, hi, xq + 16 + 4 * c);                                                                  \
          }                                                                                                       \
          const int32x4_t t = vaddq_s32(vmulq_s32(dlo, s8x4(r0 + 4 * h)), vmulq_s32(dhi, s8x4(r0 + 16 + 4 * h))); \
          accs = vfmaq_n_f32(accs, vcvtq_f32_s32(t), x.d[b]);                                                     \
        }                                                                                                         \
        acc[h] = vfmaq_f32(acc[h], halves(p + 8 * h), accs);                                                      \
      }                                                                                                           \
    }                                                                                                             \
    for (int h = 0; h < 4; ++h) vst1q_f32(out + 4 * h, acc[h]);                                                   \
  }

ES_DOT_KERNELS(neon, dot_neon, )
ES_DOT_KERNELS(dotprod, dot_dp, __attribute__((target("arch=armv8.2-a+dotprod"))))

Kernels pick_kernels() {
  const Kernels scalar{SCALAR_KERNELS, "scalar"},
      neon{tile4_neon<false>, tile4_neon<true>, tile80_neon, tile5_neon, tilek_neon<false>, tilek_neon<true>, tile6k_neon, "neon"},
      dotprod{tile4_dotprod<false>, tile4_dotprod<true>, tile80_dotprod, tile5_dotprod, tilek_dotprod<false>, tilek_dotprod<true>, tile6k_dotprod,
              "neon-dotprod"};
  if (forced("scalar")) return scalar;
  if (forced("neon")) return neon;
  return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) ? dotprod : neon;
}

}  // namespace
