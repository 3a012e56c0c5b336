// The GGUF tile kernels shared by edgeslm's ExecuTorch operator (gguf_linear.cpp) and its onnxruntime
// custom op (ort_gguf.cpp): the tile layouts of Q4_1 and Q8_0, the Q8_1 activation quantizer and one
// dot-product kernel per block type and instruction set (the SIMD ones in gguf_tiles_x86.h and
// gguf_tiles_arm.h), picked once per library at load (EDGESLM_GGUF_KERNEL forces one instruction set).
// See gguf_linear.cpp.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

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

}  // namespace

#if defined(__x86_64__)
#include "gguf_tiles_x86.h"
#elif defined(__aarch64__)
#include "gguf_tiles_arm.h"
#else
namespace {
Kernels pick_kernels() { return {tile_scalar, tile80_scalar, "scalar"}; }
}  // namespace
#endif

namespace {

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
