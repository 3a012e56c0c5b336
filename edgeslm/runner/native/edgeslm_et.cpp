// edgeslm_et: a torch-free ExecuTorch runtime for the device runner, as a C ABI that Python's ctypes
// can call. It links the shared libraries the executorch wheel ships (libexecutorch.so and the XNNPACK,
// optimized and quantized kernel libraries: none of them needs libtorch), so a device needs those
// libraries, numpy and this file, not torch.
//
// Build (x86_64 or aarch64; see edgeslm/runner/native/build.py):
//   g++ -O2 -std=c++17 -shared -fPIC edgeslm_et.cpp -I<executorch>/include -L<executorch>/lib
//       -Wl,--no-as-needed -lexecutorch -lexecutorch_backend_xnnpack -lexecutorch_kernels_optimized
//       -lexecutorch_kernels_quantized -lexecutorch_threadpool -Wl,-rpath,'$ORIGIN' -o libedgeslm_et.so
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <executorch/extension/module/module.h>
#include <executorch/extension/tensor/tensor_ptr.h>

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

}  // namespace

extern "C" {

int es_abi_version() { return 1; }

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
