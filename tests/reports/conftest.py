from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def profiled(tiny_builds, tmp_path_factory):
    """Real profile results: the tiny build deployed to `local` and profiled there (fresh subprocess).
    A copy of the build in its own folder: other tests profile `tiny_builds` too (with fewer iterations),
    and a report collects every result stored beside a build."""
    import os
    import shutil

    from edgeslm.config.devices import Inventory
    from edgeslm.profiling.deploy import deploy
    from edgeslm.profiling.profile import RESULT_DIR, profile

    out = tmp_path_factory.mktemp("report-results")
    os.environ["EDGESLM_CACHE"] = str(out / "cache")
    device = Inventory().get("local")
    given = tiny_builds["v1"]
    root = out / "builds"
    shutil.copytree(given.parent.parent, root, ignore=shutil.ignore_patterns(RESULT_DIR))
    build = root / given.relative_to(given.parent.parent)
    deploy(build, "local", device, log=lambda m: None)
    results = profile("local", device, root, iters=60, warmup=5, threads=1, log=lambda m: None)
    return {"build": build, "results": [r["_path"] for r in results], "root": root}
