from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def profiled(tiny_builds, tmp_path_factory):
    """Real profile results: the tiny build deployed to `local` and profiled there (fresh subprocess)."""
    import os

    from edgeslm.config.devices import Inventory
    from edgeslm.profiling.deploy import deploy
    from edgeslm.profiling.profile import profile

    out = tmp_path_factory.mktemp("report-results")
    os.environ["EDGESLM_CACHE"] = str(out / "cache")
    device = Inventory().get("local")
    deploy(tiny_builds["v1"], "local", device, log=lambda m: None)
    root = tiny_builds["v1"].parent.parent
    results = profile("local", device, root, iters=60, warmup=5, threads=1, log=lambda m: None)
    return {"build": tiny_builds["v1"], "results": [r["_path"] for r in results], "root": root}
