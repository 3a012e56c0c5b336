"""edgeslm's native code on the build host: the runtime folder a device runs decoders (and edgeslm's
onnxruntime ops) in, built per architecture from the C++ in edgeslm/runner/native (runtime_folder.py), and the
onnxruntime C API header that the op library is compiled against (ort_headers.py)."""
