// Kernel registration that tolerates a registry which already has the operator: when this library is loaded
// into a process that runs executorch's own Python runtime (the build host's verification), the runtime
// libraries are shared with it (same sonames), and executorch's custom ops library may have registered the
// llama kernels already; registering twice would abort.
#pragma once

#include <executorch/extension/kernel_util/make_boxed_from_unboxed_functor.h>
#include <executorch/runtime/kernel/operator_registry.h>

#define EDGESLM_KERNEL(ns, op_name, func, uid)                                                              \
  static constexpr const char edgeslm_op_##uid[] = #ns "::" op_name;                                      \
  static const bool edgeslm_registered_##uid = [] {                                                        \
    if (::executorch::runtime::registry_has_op_function(edgeslm_op_##uid)) return false;                    \
    return ::executorch::runtime::register_kernel(::executorch::extension::make_boxed_kernel(               \
               edgeslm_op_##uid, EXECUTORCH_FN(func, edgeslm_op_##uid))) == ::executorch::runtime::Error::Ok; \
  }()
