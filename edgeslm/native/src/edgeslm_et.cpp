// edgeslm_et: a torch-free ExecuTorch runtime for the device runner, as a C ABI that Python's ctypes
// can call. It links the shared libraries the executorch wheel ships (libexecutorch.so and the XNNPACK,
// optimized and quantized kernel libraries: none of them needs libtorch), so a device needs those
// libraries, numpy and this file, not torch.
//
// Build (x86_64 or aarch64; see Makefile here, run by edgeslm/native/build.py):
//   g++ -O2 -std=c++17 -shared -fPIC edgeslm_et.cpp -I<executorch>/include -L<executorch>/lib
//       -Wl,--no-as-needed -lexecutorch -lexecutorch_backend_xnnpack -lexecutorch_kernels_optimized
//       -lexecutorch_kernels_quantized -lexecutorch_threadpool -Wl,-rpath,'$ORIGIN' -o libedgeslm_et.so
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <cmath>

#include <executorch/extension/kernel_util/make_boxed_from_unboxed_functor.h>
#include <executorch/extension/module/module.h>
#include <executorch/extension/tensor/tensor_ptr.h>
#include <executorch/runtime/core/exec_aten/util/tensor_util.h>
#include <executorch/runtime/kernel/thread_parallel_interface.h>

#include "register_once.h"

namespace executorch::extension::threadpool {
class ThreadPool {
 public:
  size_t get_thread_count() const;
  bool _unsafe_reset_threadpool(uint32_t num_threads);
};
ThreadPool* get_threadpool();
}  // namespace executorch::extension::threadpool

using executorch::aten::ScalarType;
using executorch::extension::TensorPtr;
using executorch::extension::module::Module;
using executorch::runtime::EValue;

namespace {

struct Handle {
  std::unique_ptr<Module> module;
  std::string method;
  std::vector<EValue> outputs;
};

void set_error(char* err, int errlen, const std::string& msg) {
  if (err && errlen > 0) {
    std::snprintf(err, static_cast<size_t>(errlen), "%s", msg.c_str());
  }
}

// dtype codes shared with the Python side (numpy kinds)
ScalarType to_scalar(int code) {
  switch (code) {
    case 0: return ScalarType::Float;
    case 1: return ScalarType::Long;
    case 2: return ScalarType::Int;
    case 3: return ScalarType::Char;
    case 4: return ScalarType::Byte;
    case 5: return ScalarType::Bool;
    case 6: return ScalarType::Half;
    default: return ScalarType::Undefined;
  }
}

int from_scalar(ScalarType t) {
  switch (t) {
    case ScalarType::Float: return 0;
    case ScalarType::Long: return 1;
    case ScalarType::Int: return 2;
    case ScalarType::Char: return 3;
    case ScalarType::Byte: return 4;
    case ScalarType::Bool: return 5;
    case ScalarType::Half: return 6;
    default: return -1;
  }
}

// ------------------------------------------------------------------------------------------------
// The two custom operators of ExecuTorch's fast decoder path (extension/llm/custom_ops), which the
// wheel only ships inside a library that links libtorch. Same schemas, same semantics:
//   llama::update_cache.out(Tensor value, Tensor(a!) cache, SymInt start_pos, *, Tensor(b!) out)
//     value [B, S, H, D] is copied into cache [B, S_max, H, D] at positions start_pos .. start_pos+S-1.
//   llama::custom_sdpa.out(Tensor q, Tensor k, Tensor v, SymInt start_pos, Tensor? attn_mask=None,
//                          float dropout_p=0.0, bool is_causal=False, float? scale=None, *, Tensor(a!) out)
//     q [B, S, Hq, D] attends to k, v [B, S_kv, Hkv, D] (Hq a multiple of Hkv: grouped-query attention);
//     without a mask only the first start_pos+S keys exist, and with is_causal query i sees keys up to
//     start_pos+i; a mask [S, S_kv] (additive float, or bool: true = attend) replaces both.
// float32 only (the decoders are exported with fp32 activations; weights are quantized in XNNPACK).
using executorch::aten::Tensor;
using executorch::runtime::KernelRuntimeContext;
template <typename T>
using Opt = executorch::aten::optional<T>;

// The attention's inner loops, vectorized: 16 independent partial sums need no float reassociation, so
// the compiler vectorizes them as written; on x86 one clone per vector width, chosen at load.
#if defined(__x86_64__)
#define ES_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define ES_CLONES
#endif

ES_CLONES float dot_f32(const float* a, const float* b, int64_t n) {
  float acc[16] = {};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int j = 0; j < 16; ++j) acc[j] += a[i + j] * b[i + j];
  float s = 0.f;
  for (; i < n; ++i) s += a[i] * b[i];
  for (int j = 0; j < 16; ++j) s += acc[j];
  return s;
}

ES_CLONES void axpy_f32(float w, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += w * x[i];
}

Tensor& update_cache_out(KernelRuntimeContext& ctx, const Tensor& value, Tensor& cache, int64_t start_pos,
                         Tensor& out) {
  if (value.dim() != 4 || cache.dim() != 4 || value.size(0) != cache.size(0) || value.size(2) != cache.size(2) ||
      value.size(3) != cache.size(3) || value.element_size() != cache.element_size() || start_pos < 0 ||
      start_pos + value.size(1) > cache.size(1)) {
    ET_LOG(Error, "update_cache: value/cache shapes or start_pos out of range");
    ctx.fail(executorch::runtime::Error::InvalidArgument);
    return out;
  }
  const int64_t row = value.size(2) * value.size(3) * value.element_size();
  const char* src = static_cast<const char*>(value.const_data_ptr());
  char* dst = static_cast<char*>(cache.mutable_data_ptr());
  for (int64_t b = 0; b < value.size(0); ++b) {
    std::memcpy(dst + (b * cache.size(1) + start_pos) * row, src + b * value.size(1) * row,
                static_cast<size_t>(value.size(1) * row));
  }
  return out;
}

Tensor& custom_sdpa_out(KernelRuntimeContext& ctx, const Tensor& q, const Tensor& k, const Tensor& v,
                        int64_t start_pos, const Opt<Tensor>& attn_mask, double dropout_p, bool is_causal,
                        Opt<double> scale, Tensor& out) {
  (void)dropout_p;
  using executorch::aten::ScalarType;
  const bool ok = q.dim() == 4 && k.dim() == 4 && v.dim() == 4 && q.scalar_type() == ScalarType::Float &&
                  k.scalar_type() == ScalarType::Float && v.scalar_type() == ScalarType::Float &&
                  k.size(2) > 0 && q.size(2) % k.size(2) == 0 && q.size(3) == k.size(3) &&
                  v.size(3) == q.size(3) && start_pos >= 0 &&
                  (attn_mask.has_value() || start_pos + q.size(1) <= k.size(1));
  if (!ok || executorch::runtime::resize_tensor(out, q.sizes()) != executorch::runtime::Error::Ok) {
    ET_LOG(Error, "custom_sdpa: unsupported shapes or dtypes (float32 [B, S, H, D] expected)");
    ctx.fail(executorch::runtime::Error::InvalidArgument);
    return out;
  }
  const int64_t B = q.size(0), S = q.size(1), Hq = q.size(2), D = q.size(3);
  const int64_t Skv = k.size(1), Hkv = k.size(2), group = Hq / Hkv;
  const float sc = scale.has_value() ? static_cast<float>(scale.value()) : 1.0f / std::sqrt(static_cast<float>(D));
  const int64_t keys = attn_mask.has_value() ? Skv : start_pos + S;
  const float* qd = q.const_data_ptr<float>();
  const float* kd = k.const_data_ptr<float>();
  const float* vd = v.const_data_ptr<float>();
  float* od = out.mutable_data_ptr<float>();
  const float* mf = nullptr;
  const bool* mb = nullptr;
  if (attn_mask.has_value()) {
    if (attn_mask->scalar_type() == ScalarType::Bool) mb = attn_mask->const_data_ptr<bool>();
    else mf = attn_mask->const_data_ptr<float>();
  }
  auto body = [&](int64_t begin, int64_t end) {
    std::vector<float> p(static_cast<size_t>(keys));
    for (int64_t job = begin; job < end; ++job) {  // job = (b * Hq + h) * S + i
      const int64_t i = job % S, h = (job / S) % Hq, b = job / (S * Hq), hk = h / group;
      const float* qr = qd + ((b * S + i) * Hq + h) * D;
      const int64_t n = (is_causal && !attn_mask.has_value()) ? start_pos + i + 1 : keys;
      float mx = -INFINITY;
      for (int64_t j = 0; j < n; ++j) {
        const float* kr = kd + ((b * Skv + j) * Hkv + hk) * D;
        float s = dot_f32(qr, kr, D) * sc;
        if (mf) s += mf[i * Skv + j];
        if (mb && !mb[i * Skv + j]) s = -INFINITY;
        p[j] = s;
        mx = s > mx ? s : mx;
      }
      float sum = 0.f;
      for (int64_t j = 0; j < n; ++j) {
        p[j] = (mx == -INFINITY) ? 0.f : std::exp(p[j] - mx);
        sum += p[j];
      }
      float* orow = od + ((b * S + i) * Hq + h) * D;
      for (int64_t d = 0; d < D; ++d) orow[d] = 0.f;
      const float inv = sum > 0.f ? 1.f / sum : 0.f;
      for (int64_t j = 0; j < n; ++j) {
        const float w = p[j] * inv;
        const float* vr = vd + ((b * Skv + j) * Hkv + hk) * D;
        axpy_f32(w, vr, orow, D);
      }
    }
  };
  executorch::extension::parallel_for(0, B * Hq * S, 1, body);
  return out;
}

}  // namespace

EDGESLM_KERNEL(llama, "update_cache.out", update_cache_out, update_cache);
EDGESLM_KERNEL(llama, "custom_sdpa.out", custom_sdpa_out, custom_sdpa);

extern "C" {

int es_abi_version() { return 1; }

// 1 when the decoder operators (llama::update_cache, llama::custom_sdpa) are compiled in.
int es_has_decoder_ops() { return 1; }

int es_set_threads(int n) {
  auto* pool = executorch::extension::threadpool::get_threadpool();
  if (pool == nullptr) return -1;
  if (n > 0) pool->_unsafe_reset_threadpool(static_cast<uint32_t>(n));
  return static_cast<int>(pool->get_thread_count());
}

void* es_load(const char* path, const char* method, char* err, int errlen) {
  auto h = std::make_unique<Handle>();
  h->method = method;
  h->module = std::make_unique<Module>(path, Module::LoadMode::Mmap);
  auto e = h->module->load_method(h->method);
  if (e != executorch::runtime::Error::Ok) {
    set_error(err, errlen, "cannot load method '" + h->method + "' of " + path + " (ExecuTorch error " +
                               std::to_string(static_cast<int>(e)) + ")");
    return nullptr;
  }
  return h.release();
}

void es_free(void* handle) { delete static_cast<Handle*>(handle); }

// Run the method on n inputs; input i has dtypes[i], ndims[i] dimensions whose sizes follow in `shapes`.
int es_run(void* handle, int n, void** data, const int* dtypes, const int* ndims, const int64_t* shapes,
           char* err, int errlen) {
  auto* h = static_cast<Handle*>(handle);
  std::vector<TensorPtr> keep;
  std::vector<EValue> inputs;
  const int64_t* s = shapes;
  for (int i = 0; i < n; ++i) {
    std::vector<executorch::aten::SizesType> sizes(s, s + ndims[i]);
    s += ndims[i];
    ScalarType t = to_scalar(dtypes[i]);
    if (t == ScalarType::Undefined) {
      set_error(err, errlen, "input " + std::to_string(i) + ": unsupported dtype");
      return 1;
    }
    keep.push_back(executorch::extension::make_tensor_ptr(std::move(sizes), data[i], {}, {}, t));
    inputs.emplace_back(*keep.back());
  }
  auto r = h->module->execute(h->method, inputs);
  if (!r.ok()) {
    set_error(err, errlen, "method '" + h->method + "' failed (ExecuTorch error " +
                               std::to_string(static_cast<int>(r.error())) + ")");
    return 1;
  }
  h->outputs = std::move(r.get());
  return 0;
}

int es_num_outputs(void* handle) { return static_cast<int>(static_cast<Handle*>(handle)->outputs.size()); }

// Output i of the last run: its data pointer (valid until the next run), dtype code, dims and sizes.
int es_output(void* handle, int i, void** data, int* dtype, int* ndim, int64_t* sizes, int max_dims) {
  auto* h = static_cast<Handle*>(handle);
  if (i < 0 || i >= static_cast<int>(h->outputs.size()) || !h->outputs[i].isTensor()) return 1;
  const auto& t = h->outputs[i].toTensor();
  *data = t.mutable_data_ptr();
  *dtype = from_scalar(t.scalar_type());
  *ndim = static_cast<int>(t.dim());
  if (*ndim > max_dims) return 1;
  for (int d = 0; d < *ndim; ++d) sizes[d] = t.size(d);
  return 0;
}

}  // extern "C"
