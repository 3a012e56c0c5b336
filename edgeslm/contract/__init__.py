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


def artifact_size(files: list, file: str):
    """Bytes of an artifact: its file plus the files it loads beside it (an ONNX file's external weights,
    `model.onnx.data`). `files` are the manifest's entries (dicts or objects with path and size)."""
    sizes = [(e["path"], e["size"]) if isinstance(e, dict) else (e.path, e.size) for e in files]
    if not any(p == file for p, _ in sizes):
        return None
    return sum(s for p, s in sizes if p == file or p.startswith(file + "."))
