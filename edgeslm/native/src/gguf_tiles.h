// The GGUF tile kernels shared by edgeslm's ExecuTorch operator (gguf_linear.cpp) and its onnxruntime
// custom op (ort_gguf.cpp): the tile layouts of Q4_1, Q8_0, Q5_0/Q5_1 and the K-quants Q4_K, Q5_K, Q6_K (their
// super-blocks of 256 kept, with integer sub-block scales and minimums), the Q8_1 activation quantizer and one
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
constexpr int kSuper = 256;  // the K-quants' super-block
constexpr int kTile = 16;
constexpr int64_t kQ40 = 2;       // GGML_TYPE_Q4_0
constexpr int64_t kQ41 = 3;       // GGML_TYPE_Q4_1
constexpr int64_t kQ50 = 6;       // GGML_TYPE_Q5_0 (packed as Q5_1 with m = -16 d, exact)
constexpr int64_t kQ51 = 7;       // GGML_TYPE_Q5_1
constexpr int64_t kQ80 = 8;       // GGML_TYPE_Q8_0
constexpr int64_t kQ4K = 12;      // GGML_TYPE_Q4_K
constexpr int64_t kQ5K = 13;      // GGML_TYPE_Q5_K
constexpr int64_t kQ6K = 14;      // GGML_TYPE_Q6_K
constexpr int kTileBytes = 320;    // Q4_1, per tile and block: 32 bytes d, 32 bytes m, 256 bytes nibbles
constexpr int kTileBytes80 = 544;  // Q8_0, per tile and block: 32 bytes d, 512 bytes int8 q
constexpr int kTileBytes40 = 288;  // Q4_0, per tile and block: 32 bytes d, 256 bytes nibbles (w = (q - 8) d)
constexpr int kTileBytes5 = 384;   // Q5_0 / Q5_1, per tile and block: Q4_1's 320 bytes, then 64 bytes of bit 4
constexpr int kNib = 256;          // nibbles of 16 rows x 32 inputs: 4 chunks of 64 bytes (Q4_1's layout)
constexpr int kPlane = 64;         // one bit of 16 rows x 32 inputs: per chunk 8 bytes (low nibbles), 8 (high)
constexpr int kRec4K = 32 + kNib;           // Q4_K, per block of 32 in a super-block: 16 sc, 16 m, nibbles
constexpr int kRec5K = kRec4K + kPlane;     // Q5_K: and bit 4
constexpr int kRec6K = 32 + kNib + 2 * kPlane;  // Q6_K: 16 sc (inputs 0..15), 16 sc (16..31), nibbles, bits 4, 5

// Inputs per unit of a type's tiles (a block of 32, or a K-quant's super-block of 256).
inline int64_t unit_inputs(int64_t type) { return type == kQ4K || type == kQ5K || type == kQ6K ? kSuper : kBlock; }

// Bytes per tile and unit of a type gguf_linear runs; 0 for any other.
inline int64_t tile_bytes(int64_t type) {
  switch (type) {
    case kQ40: return kTileBytes40;
    case kQ41: return kTileBytes;
    case kQ80: return kTileBytes80;
    case kQ50: case kQ51: return kTileBytes5;
    case kQ4K: return 64 + 8 * kRec4K;
    case kQ5K: return 64 + 8 * kRec5K;
    case kQ6K: return 32 + 8 * kRec6K;
    default: return 0;
  }
}

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

// One row of x as Q8_1 blocks: 32 int8 values per block, and per block d, s = d * sum(q) and sum(q); sum16:
// the sums of each half block (inputs 0..15, 16..31), for Q6_K's sub-blocks of 16.
struct QRow {
  const int8_t* q;
  const float* d;
  const float* s;
  const int32_t* sum;
  const int32_t* sum16;
};

void quantize_row(const float* x, int64_t k, int8_t* q, float* d, float* s, int32_t* qsum, int32_t* qsum16) {
  for (int64_t b = 0; b < k / kBlock; ++b) {
    const float* xb = x + b * kBlock;
    float amax = 0.f;
    for (int j = 0; j < kBlock; ++j) amax = std::fabs(xb[j]) > amax ? std::fabs(xb[j]) : amax;
    const float db = amax / 127.f, id = db != 0.f ? 1.f / db : 0.f;
    int sum = 0, half = 0;
    for (int j = 0; j < kBlock; ++j) {
      // round half to even without a libm call: |x * id| <= 127, far below 2^22
      const int v = static_cast<int>((xb[j] * id + 12582912.f) - 12582912.f);
      q[b * kBlock + j] = static_cast<int8_t>(v);
      sum += v;
      if (j == 15) half = sum;
    }
    d[b] = db;
    s[b] = db * static_cast<float>(sum);
    qsum[b] = sum;
    qsum16[2 * b] = half;
    qsum16[2 * b + 1] = sum - half;
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

// The integers of one block of 16 rows x 32 inputs: nibbles in Q4_1's chunk layout (byte 4 r + j of chunk c:
// q[r][4 c + j] low, q[r][16 + 4 c + j] high), and up to two bit planes (bit 4, bit 5): per chunk 8 bytes whose
// bit i is that bit of byte i's low value, then 8 for its high value.
inline void block_q(const uint8_t* nib, const uint8_t* p4, const uint8_t* p5, uint8_t q[kTile][kBlock]) {
  for (int c = 0; c < 4; ++c)
    for (int i = 0; i < 64; ++i) {
      const int r = i / 4, j = i % 4;
      int lo = nib[64 * c + i] & 0x0F, hi = nib[64 * c + i] >> 4;
      if (p4 != nullptr) {
        lo |= ((p4[16 * c + i / 8] >> (i % 8)) & 1) << 4;
        hi |= ((p4[16 * c + 8 + i / 8] >> (i % 8)) & 1) << 4;
      }
      if (p5 != nullptr) {
        lo |= ((p5[16 * c + i / 8] >> (i % 8)) & 1) << 5;
        hi |= ((p5[16 * c + 8 + i / 8] >> (i % 8)) & 1) << 5;
      }
      q[r][4 * c + j] = static_cast<uint8_t>(lo);
      q[r][16 + 4 * c + j] = static_cast<uint8_t>(hi);
    }
}

inline float half_at(const uint8_t* p, int r) {
  uint16_t h;
  std::memcpy(&h, p + 2 * r, 2);
  return half_to_float(h);
}

// Q4_0 tile (w = (q - 8) d, q 0..15): 16 fp16 d, then the nibbles in Q4_1's chunk layout; the -8 through the
// activations' block sum, in integers.
void tile40_scalar(const uint8_t* p, const QRow& x, int64_t nb, float* out) {
  float acc[kTile] = {};
  uint8_t q[kTile][kBlock];
  for (int64_t b = 0; b < nb; ++b, p += kTileBytes40) {
    const int8_t* xq = x.q + b * kBlock;
    block_q(p + 32, nullptr, nullptr, q);
    for (int r = 0; r < kTile; ++r) {
      int dot = -8 * x.sum[b];
      for (int j = 0; j < kBlock; ++j) dot += q[r][j] * xq[j];
      acc[r] += half_at(p, r) * x.d[b] * static_cast<float>(dot);
    }
  }
  std::memcpy(out, acc, sizeof(acc));
}

// Q5_0 / Q5_1 tile (w = q d + m, q 0..31): Q4_1's block, then bit 4.
void tile5_scalar(const uint8_t* p, const QRow& x, int64_t nb, float* out) {
  float acc[kTile] = {};
  uint8_t q[kTile][kBlock];
  for (int64_t b = 0; b < nb; ++b, p += kTileBytes5) {
    const int8_t* xq = x.q + b * kBlock;
    block_q(p + 64, p + 320, nullptr, q);
    for (int r = 0; r < kTile; ++r) {
      int dot = 0;
      for (int j = 0; j < kBlock; ++j) dot += q[r][j] * xq[j];
      acc[r] += half_at(p, r) * x.d[b] * static_cast<float>(dot) + half_at(p + 32, r) * x.s[b];
    }
  }
  std::memcpy(out, acc, sizeof(acc));
}

// Q4_K / Q5_K tile, per super-block of 256: 16 fp16 d, 16 fp16 dmin, then 8 records (one per block of 32):
// 16 sc, 16 m (6-bit, unsigned; byte r for row r), the nibbles, and (Q5_K) bit 4. w = d sc q - dmin m.
template <bool kFive>
void tilek_scalar(const uint8_t* p, const QRow& x, int64_t nsb, float* out) {
  float acc[kTile] = {};
  uint8_t q[kTile][kBlock];
  const int rec = kFive ? kRec5K : kRec4K;
  for (int64_t sb = 0; sb < nsb; ++sb, p += 64 + 8 * rec) {
    float accs[kTile] = {}, accm[kTile] = {};
    for (int j = 0; j < 8; ++j) {
      const int64_t b = sb * 8 + j;
      const uint8_t* r0 = p + 64 + j * rec;
      const int8_t* xq = x.q + b * kBlock;
      block_q(r0 + 32, kFive ? r0 + 32 + kNib : nullptr, nullptr, q);
      for (int r = 0; r < kTile; ++r) {
        int dot = 0;
        for (int i = 0; i < kBlock; ++i) dot += q[r][i] * xq[i];
        accs[r] += x.d[b] * static_cast<float>(dot * r0[r]);
        accm[r] += static_cast<float>(r0[16 + r]) * x.s[b];
      }
    }
    for (int r = 0; r < kTile; ++r) acc[r] += half_at(p, r) * accs[r] - half_at(p + 32, r) * accm[r];
  }
  std::memcpy(out, acc, sizeof(acc));
}

// Q6_K tile, per super-block of 256: 16 fp16 d, then 8 records (one per block of 32): 16 int8 sc of inputs
// 0..15, 16 of inputs 16..31, the nibbles, bit 4, bit 5. w = d sc (q - 32), q 0..63.
void tile6k_scalar(const uint8_t* p, const QRow& x, int64_t nsb, float* out) {
  float acc[kTile] = {};
  uint8_t q[kTile][kBlock];
  for (int64_t sb = 0; sb < nsb; ++sb, p += 32 + 8 * kRec6K) {
    float accs[kTile] = {};
    for (int j = 0; j < 8; ++j) {
      const int64_t b = sb * 8 + j;
      const uint8_t* r0 = p + 32 + j * kRec6K;
      const int8_t* xq = x.q + b * kBlock;
      block_q(r0 + 32, r0 + 32 + kNib, r0 + 32 + kNib + kPlane, q);
      for (int r = 0; r < kTile; ++r) {
        int lo = 0, hi = 0;
        for (int i = 0; i < 16; ++i) {
          lo += q[r][i] * xq[i];
          hi += q[r][16 + i] * xq[16 + i];
        }
        const int t = (lo - 32 * x.sum16[2 * b]) * static_cast<int8_t>(r0[r]) +
                      (hi - 32 * x.sum16[2 * b + 1]) * static_cast<int8_t>(r0[16 + r]);
        accs[r] += x.d[b] * static_cast<float>(t);
      }
    }
    for (int r = 0; r < kTile; ++r) acc[r] += half_at(p, r) * accs[r];
  }
  std::memcpy(out, acc, sizeof(acc));
}

using TileFn = void (*)(const uint8_t*, const QRow&, int64_t, float*);
// The kernels of one instruction set: Q4_0, Q4_1, Q8_0, Q5_0/Q5_1, Q4_K, Q5_K, Q6_K, and the set's name (for
// reports and tests).
struct Kernels {
  TileFn q40, q41, q80, q5, q4k, q5k, q6k;
  const char* name;
};

#define SCALAR_KERNELS tile40_scalar, tile_scalar, tile80_scalar, tile5_scalar, tilek_scalar<false>, tilek_scalar<true>, tile6k_scalar

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
Kernels pick_kernels() { return {SCALAR_KERNELS, "scalar"}; }
}  // namespace
#endif

namespace {

const Kernels kKernels = pick_kernels();

// The name of the instruction set this library's kernels use (for reports and tests).
inline const char* tile_kernel_name() { return kKernels.name; }

// One call: x [m, k] float (k a multiple of the type's unit) times the tiles of `type`; out [m, n_tiles * 16].
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
  std::vector<int32_t> sum, sum16;

  void quantize() {
    const int64_t nb = k / kBlock;
    q.resize(static_cast<size_t>(m * k));
    d.resize(static_cast<size_t>(m * nb));
    s.resize(static_cast<size_t>(m * nb));
    sum.resize(static_cast<size_t>(m * nb));
    sum16.resize(static_cast<size_t>(2 * m * nb));
    for (int64_t r = 0; r < m; ++r)
      quantize_row(x + r * k, k, q.data() + r * k, d.data() + r * nb, s.data() + r * nb, sum.data() + r * nb,
                   sum16.data() + 2 * r * nb);
  }

  TileFn kernel() const {
    switch (type) {
      case kQ40: return kKernels.q40;
      case kQ80: return kKernels.q80;
      case kQ50: case kQ51: return kKernels.q5;
      case kQ4K: return kKernels.q4k;
      case kQ5K: return kKernels.q5k;
      case kQ6K: return kKernels.q6k;
      default: return kKernels.q41;
    }
  }

  void tiles(int64_t begin, int64_t end) const {
    const int64_t nb = k / kBlock, units = k / unit_inputs(type), n = n_tiles * kTile,
                  bytes = units * tile_bytes(type);
    const TileFn fn = kernel();
    for (int64_t t = begin; t < end; ++t)  // a tile's weights stay in cache across the rows of x
      for (int64_t r = 0; r < m; ++r)
        fn(w + t * bytes,
           QRow{q.data() + r * k, d.data() + r * nb, s.data() + r * nb, sum.data() + r * nb,
                sum16.data() + 2 * r * nb},
           units, out + r * n + t * kTile);
  }
};

}  // namespace
