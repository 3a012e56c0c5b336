// Kernel registration that tolerates a registry which already has the operator: when this library is loaded
// into a process that runs executorch's own Python runtime (the build host's verification), the runtime
// libraries are shared with it (same sonames), and executorch's custom ops library may have registered the
// llama kernels already; registering twice would abort.
#pragma once

#include <executorch/extension/kernel_util/make_boxed_from_unboxed_functor.h>
#include <executorch/runtime/kernel/operator_registry.h>

#include <cstring>

namespace edgeslm {
// registry_has_op_function would log an error for every operator it does not find
inline bool registered(const char* name) {
  for (const auto& k : ::executorch::runtime::get_registered_kernels())
    if (k.name_ != nullptr && std::strcmp(k.name_, name) == 0) return true;
  return false;
}
}  // namespace edgeslm

#define EDGESLM_KERNEL(ns, op_name, func, uid)                                                              \
  static constexpr const char edgeslm_op_##uid[] = #ns "::" op_name;                                      \
  static const bool edgeslm_registered_##uid = [] {                                                        \
    if (::edgeslm::registered(edgeslm_op_##uid)) return false;                                              \
    return ::executorch::runtime::register_kernel(::executorch::extension::make_boxed_kernel(               \
               edgeslm_op_##uid, EXECUTORCH_FN(func, edgeslm_op_##uid))) == ::executorch::runtime::Error::Ok; \
  }()
