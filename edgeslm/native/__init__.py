"""edgeslm's native code on the build host: the C++ of the ExecuTorch shim and the onnxruntime op library with its
build description (src/, src/Makefile), the build that runs it (build.py; for x86_64 and aarch64 when the wheel
is built), the runtime folder a device runs decoders in (runtime_folder.py: the package's prebuilt one, else built
on first use), and the onnxruntime C API header a source checkout compiles the op library against
(ort_headers.py)."""
