// edgeslm::gguf_linear: y = x W^T with W a GGUF file's own grid, as llama.cpp runs it, rearranged in tiles of
// 16 output rows for SIMD: Q4_1 (w = q d + m per block of 32 weights, q in 0..15, d and m fp16), Q8_0 (w = q d,
// q int8), Q5_0 / Q5_1 (Q4_1's tile plus a plane of bit 4), and the K-quants Q4_K / Q5_K (w = d sc q - dmin m,
// integer sc and m per 32 in super-blocks of 256) and Q6_K (w = d sc (q - 32), int8 sc per 16); gguf_tiles.h
// has their layouts.
//
//   edgeslm::gguf_linear.out(Tensor x, Tensor tiles, int ggml_type, *, Tensor(a!) out) -> Tensor(a!)
//     x      float32 [..., K], K a multiple of 32
//     tiles  uint8 [N / 16, K / 32 * B]: for each tile of 16 rows and block of 32 inputs, B bytes:
//            Q4_1 (ggml_type 3, B = 320): 16 fp16 d, 16 fp16 m, then 4 chunks of 64 bytes; byte 4 r + j of
//              chunk c holds q[r][4 c + j] in its low nibble and q[r][16 + 4 c + j] in its high one
//            Q8_0 (ggml_type 8, B = 544): 16 fp16 d, then 8 chunks of 64 bytes; byte 4 r + j of chunk c
//              holds q[r][4 c + j] (r: row in the tile, j: 0..3)
//     out    float32 [..., N]
//
// x is quantized per block of 32 as llama.cpp's Q8_1: d_x = max|x| / 127, q_x = round(x / d_x), and the
// block sum s_x = d_x * sum(q_x) comes from the same integers, so one block adds
//   d_w d_x sum(q_w q_x) + m_w s_x          (m_w = 0 for Q8_0)
// to each output: integer dot products of 16 rows (AVX512-VNNI), 8 (AVX2) or 4 (NEON, with or without
// dotprod) at a time against four broadcast inputs; scalar elsewhere. The Python reference
// (edgeslm/generation/gguf_op.py) computes the same quantities in float.
#include <cstdint>

#include <executorch/extension/kernel_util/make_boxed_from_unboxed_functor.h>
#include <executorch/runtime/core/exec_aten/util/tensor_util.h>
#include <executorch/runtime/kernel/thread_parallel_interface.h>

#include "gguf_tiles.h"
#include "register_once.h"

namespace {

using executorch::aten::ScalarType;
using executorch::aten::Tensor;
using executorch::runtime::KernelRuntimeContext;

Tensor& gguf_linear_out(KernelRuntimeContext& ctx, const Tensor& x, const Tensor& tiles, int64_t ggml_type,
                        Tensor& out) {
  const int64_t k = x.dim() > 0 ? x.size(x.dim() - 1) : 0;
  const int64_t bytes = tile_bytes(ggml_type), unit = unit_inputs(ggml_type);
  const bool ok = bytes > 0 && x.scalar_type() == ScalarType::Float && tiles.dim() == 2 &&
                  tiles.scalar_type() == ScalarType::Byte && out.scalar_type() == ScalarType::Float && k > 0 &&
                  k % unit == 0 && tiles.size(1) == k / unit * bytes && x.dim() <= 8;
  executorch::aten::SizesType sizes[8];
  for (int64_t i = 0; ok && i < x.dim(); ++i) sizes[i] = static_cast<executorch::aten::SizesType>(x.size(i));
  if (ok) sizes[x.dim() - 1] = static_cast<executorch::aten::SizesType>(tiles.size(0) * kTile);
  if (!ok || executorch::runtime::resize_tensor(out, {sizes, static_cast<size_t>(x.dim())}) !=
                 executorch::runtime::Error::Ok) {
    ET_LOG(Error, "gguf_linear: float32 x [..., K] and tiles uint8 [N/16, K/U*B] of ggml type 2 (Q4_0, U = 32, "
                  "B = 288), 3 (Q4_1, U = 32, "
                  "B = 320), 6/7 (Q5_0/Q5_1, U = 32, B = 384), 8 (Q8_0, U = 32, B = 544), 12 (Q4_K, U = 256, "
                  "B = 2368), 13 (Q5_K, U = 256, B = 2880) or 14 (Q6_K, U = 256, B = 3360) expected");
    ctx.fail(executorch::runtime::Error::InvalidArgument);
    return out;
  }
  GgufJob job;
  job.type = ggml_type;
  job.x = x.const_data_ptr<float>();
  job.m = x.numel() / k;
  job.k = k;
  job.w = tiles.const_data_ptr<uint8_t>();
  job.n_tiles = tiles.size(0);
  job.out = out.mutable_data_ptr<float>();
  job.quantize();
  executorch::extension::parallel_for(0, job.n_tiles, 1, [&](int64_t begin, int64_t end) { job.tiles(begin, end); });
  return out;
}

}  // namespace

EDGESLM_KERNEL(edgeslm, "gguf_linear.out", gguf_linear_out, gguf_linear);

extern "C" {
// The instruction set this machine runs gguf_linear's kernels with (for reports and tests).
const char* es_gguf_kernel() {
  return tile_kernel_name();
}
}
