// edgeslm's onnxruntime custom op library (libedgeslm_ort.so): the same Q4_1 tile kernels as the .pte's
// edgeslm::gguf_linear (gguf_tiles.h), as one node per linear instead of MatMulNBits plus block-sum
// corrections.
//
//   domain "ai.edgeslm", op GgufLinear(x float [..., K], tiles uint8 [N_pad / 16, K / U * B]) -> y float
//   [..., N_pad], N_pad = 16 * tiles.shape[0] (the exporter slices off the padded rows); attribute ggml_type
//   (default 3, Q4_1) names the block type: gguf_tiles.h has each type's unit U (32, or 256 for the K-quants)
//   and bytes B per tile and unit
//
// Loaded with SessionOptions.register_custom_ops_library; it needs onnxruntime >= 1.17 (C API 17:
// KernelContext_ParallelFor runs the tiles on the session's intra-op threads). Built against the C API
// header only (edgeslm.native.ort_headers): nothing of onnxruntime is linked.
#include <onnxruntime_c_api.h>

#include <cstdint>
#include <cstring>
#include <string>

#include "gguf_tiles.h"

namespace {

constexpr uint32_t kApiVersion = 17;
const OrtApi* g_api = nullptr;

OrtStatusPtr fail(const std::string& what) {
  return g_api->CreateStatus(ORT_INVALID_ARGUMENT, ("GgufLinear: " + what).c_str());
}

#define ES_TRY(call)                     \
  do {                                   \
    OrtStatusPtr es_status = (call);     \
    if (es_status != nullptr) return es_status; \
  } while (0)

// The shape of input `i`: dims (up to 8) and their count.
OrtStatusPtr shape_of(const OrtValue* v, int64_t* dims, size_t* rank) {
  OrtTensorTypeAndShapeInfo* info = nullptr;
  ES_TRY(g_api->GetTensorTypeAndShape(v, &info));
  ONNXTensorElementDataType type = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
  OrtStatusPtr st = g_api->GetTensorElementType(info, &type);
  if (st == nullptr) st = g_api->GetDimensionsCount(info, rank);
  if (st == nullptr && *rank > 8) st = fail("x has more than 8 dimensions");
  if (st == nullptr) st = g_api->GetDimensions(info, dims, *rank);
  g_api->ReleaseTensorTypeAndShapeInfo(info);
  return st;
}

void run_tile(void* data, size_t index) {  // ORT calls this once per tile index, on its intra-op threads
  static_cast<const GgufJob*>(data)->tiles(static_cast<int64_t>(index), static_cast<int64_t>(index) + 1);
}

struct Kernel {
  int64_t type = kQ41;
};

OrtStatusPtr ORT_API_CALL compute(void* kernel, OrtKernelContext* ctx) {
  const int64_t type = static_cast<const Kernel*>(kernel)->type;
  const OrtValue* x = nullptr;
  const OrtValue* tiles = nullptr;
  ES_TRY(g_api->KernelContext_GetInput(ctx, 0, &x));
  ES_TRY(g_api->KernelContext_GetInput(ctx, 1, &tiles));
  int64_t xd[8], td[8];
  size_t xr = 0, tr = 0;
  ES_TRY(shape_of(x, xd, &xr));
  ES_TRY(shape_of(tiles, td, &tr));
  const int64_t k = xr > 0 ? xd[xr - 1] : 0;
  const int64_t unit = unit_inputs(type), bytes = tile_bytes(type);
  if (k <= 0 || k % unit != 0 || tr != 2 || td[1] != k / unit * bytes)
    return fail("float32 x [..., K] (K a multiple of " + std::to_string(unit) + ") and tiles uint8 [N/16, K/" +
                std::to_string(unit) + "*" + std::to_string(bytes) + "] of ggml type " + std::to_string(type) +
                " expected, got K=" + std::to_string(k) + " and tiles of " + std::to_string(tr == 2 ? td[1] : -1) +
                " bytes per tile");
  int64_t od[8];
  std::memcpy(od, xd, sizeof(int64_t) * xr);
  od[xr - 1] = td[0] * kTile;
  OrtValue* y = nullptr;
  ES_TRY(g_api->KernelContext_GetOutput(ctx, 0, od, xr, &y));
  void* xp = nullptr;
  void* tp = nullptr;
  void* yp = nullptr;
  ES_TRY(g_api->GetTensorMutableData(const_cast<OrtValue*>(x), &xp));
  ES_TRY(g_api->GetTensorMutableData(const_cast<OrtValue*>(tiles), &tp));
  ES_TRY(g_api->GetTensorMutableData(y, &yp));
  GgufJob job;
  job.type = type;
  job.x = static_cast<const float*>(xp);
  job.m = 1;
  for (size_t i = 0; i + 1 < xr; ++i) job.m *= xd[i];
  job.k = k;
  job.w = static_cast<const uint8_t*>(tp);
  job.n_tiles = td[0];
  job.out = static_cast<float*>(yp);
  if (job.m == 0 || job.n_tiles == 0) return nullptr;
  job.quantize();
  return g_api->KernelContext_ParallelFor(ctx, run_tile, static_cast<size_t>(job.n_tiles), 0, &job);
}

OrtStatusPtr ORT_API_CALL create(const OrtCustomOp*, const OrtApi* api, const OrtKernelInfo* info, void** kernel) {
  *kernel = nullptr;
  int64_t type = kQ41;
  OrtStatusPtr st = api->KernelInfoGetAttribute_int64(info, "ggml_type", &type);
  if (st != nullptr) {  // absent: a graph written before the attribute, Q4_1
    api->ReleaseStatus(st);
    type = kQ41;
  }
  if (tile_bytes(type) == 0) return fail("ggml_type " + std::to_string(type) + " is not a block type edgeslm runs");
  *kernel = new Kernel{type};
  return nullptr;
}
void ORT_API_CALL destroy(void* kernel) { delete static_cast<Kernel*>(kernel); }

const char* ORT_API_CALL name(const OrtCustomOp*) { return "GgufLinear"; }
const char* ORT_API_CALL provider(const OrtCustomOp*) { return "CPUExecutionProvider"; }
ONNXTensorElementDataType ORT_API_CALL input_type(const OrtCustomOp*, size_t i) {
  return i == 0 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT : ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8;
}
size_t ORT_API_CALL inputs(const OrtCustomOp*) { return 2; }
ONNXTensorElementDataType ORT_API_CALL output_type(const OrtCustomOp*, size_t) {
  return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
}
size_t ORT_API_CALL outputs(const OrtCustomOp*) { return 1; }
OrtCustomOpInputOutputCharacteristic ORT_API_CALL required(const OrtCustomOp*, size_t) {
  return INPUT_OUTPUT_REQUIRED;
}
OrtMemType ORT_API_CALL cpu_memory(const OrtCustomOp*, size_t) { return OrtMemTypeDefault; }
int ORT_API_CALL one(const OrtCustomOp*) { return 1; }
int ORT_API_CALL no_end(const OrtCustomOp*) { return 2147483647; }

OrtCustomOp make_op() {
  OrtCustomOp op;
  std::memset(&op, 0, sizeof(op));
  op.version = kApiVersion;
  op.GetName = name;
  op.GetExecutionProviderType = provider;
  op.GetInputType = input_type;
  op.GetInputTypeCount = inputs;
  op.GetOutputType = output_type;
  op.GetOutputTypeCount = outputs;
  op.KernelDestroy = destroy;
  op.GetInputCharacteristic = required;
  op.GetOutputCharacteristic = required;
  op.GetInputMemoryType = cpu_memory;
  op.GetVariadicInputMinArity = one;
  op.GetVariadicInputHomogeneity = one;
  op.GetVariadicOutputMinArity = one;
  op.GetVariadicOutputHomogeneity = one;
  op.CreateKernelV2 = create;
  op.KernelComputeV2 = compute;
  op.GetStartVersion = one;
  op.GetEndVersion = no_end;
  return op;
}

OrtCustomOp g_op = make_op();

}  // namespace

extern "C" {
__attribute__((visibility("default"))) OrtStatus* ORT_API_CALL RegisterCustomOps(OrtSessionOptions* options,
                                                                                  const OrtApiBase* api_base) {
  g_api = api_base->GetApi(kApiVersion);
  if (g_api == nullptr) return nullptr;  // older than 1.17: the session then fails on the unknown op, by name
  OrtCustomOpDomain* domain = nullptr;
  ES_TRY(g_api->CreateCustomOpDomain("ai.edgeslm", &domain));
  ES_TRY(g_api->CustomOpDomain_Add(domain, &g_op));
  return g_api->AddCustomOpDomain(options, domain);  // the domain lives as long as the process
}

// The instruction set of the tile kernels this library runs (for reports and tests).
__attribute__((visibility("default"))) const char* es_gguf_kernel() { return tile_kernel_name(); }
}
