"""What the build host and the device runner agree on: result schemas, statistics and the maths of
"does this artifact compute what PyTorch computed". Standard library and numpy only (it ships to the
device inside the runner bundle); imported by both sides, so they cannot drift apart."""

RUNNER_VERSION = "1"
# every record edgeslm writes names its schema: edgeslm.<kind>/<major version>
PROFILE_SCHEMA = "edgeslm.profile/1"  # contract.results.ProfileResult
PROBE_SCHEMA = "edgeslm.probe/1"  # contract.results.ProbeResult
MANIFEST_SCHEMA = "edgeslm.manifest/1"  # artifacts.manifest.Manifest (a build folder)
REPORT_SCHEMA = "edgeslm.report/1"  # reports.model
BASELINE_SCHEMA = "edgeslm.baseline/1"  # reports.gate (a saved baseline folder)
NOISY_CV = 0.10  # coefficient of variation above which a latency run is flagged noisy

# Bounds of what the host asks a device for; the CLI refuses more before the device is touched, the runner
# refuses it again (its arguments are input too).
MAX_THREADS = 1024  # more than any CPU edgeslm targets has cores (a 128-core server runs 256 threads); each
# thread costs the runtime a stack and a work buffer (100000 threads: 2.5 GB before the first inference)
MAX_TOKENS = 32768  # the largest KV cache a recipe may ask for (generation.max_context); more cannot be generated
MAX_ITERS = 1_000_000  # measured runs: their samples travel back in the result, which reports read up to 64 MiB
MAX_SEED = 2**64 - 1  # numpy's generator takes any seed from 0; a bound keeps it a plain number everywhere
MAX_TOP_K = 1 << 24  # more than any vocabulary (top-k beyond the vocabulary keeps every token)


def artifact_size(files: list, file: str):
    """Bytes of an artifact: its file plus the files it loads beside it (an ONNX file's external weights,
    `model.onnx.data`). `files` are the manifest's entries (dicts or objects with path and size)."""
    sizes = [(e["path"], e["size"]) if isinstance(e, dict) else (e.path, e.size) for e in files]
    if not any(p == file for p, _ in sizes):
        return None
    return sum(s for p, s in sizes if p == file or p.startswith(file + "."))
