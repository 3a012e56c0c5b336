from __future__ import annotations

from pathlib import Path

import pytest

GOLDEN = Path(__file__).resolve().parent / "golden"


@pytest.fixture(scope="module")
def profiled(tmp_path_factory):
    """Profile results as a real run wrote them: the tiny encoder build (ONNX and .pte) deployed to `local` and
    profiled there (60 runs, 1 thread), its manifest and both results committed under golden/ (the build's
    model files left out: a report reads the manifest and the results). A copy per test module.
    tests/profiling makes such results afresh; the report tests read these."""
    import shutil

    root = tmp_path_factory.mktemp("report-results") / "builds"
    shutil.copytree(GOLDEN, root)
    build = root / "tinydeploy" / "host"
    return {"build": build, "results": sorted((build / "profiles").rglob("*.json")), "root": root}
