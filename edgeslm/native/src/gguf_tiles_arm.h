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

}  // namespace
