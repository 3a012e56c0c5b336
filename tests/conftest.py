import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Tests never touch the user's ~/.cache/edgeslm."""
    os.environ["EDGESLM_CACHE"] = str(tmp_path_factory.mktemp("edgeslm-cache"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    yield


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """tiny_model(arch, task) -> folder, built once per session."""
    from tiny import make_model

    made = {}

    def get(arch: str, task: str) -> Path:
        if (arch, task) not in made:
            made[arch, task] = make_model(arch, task, tmp_path_factory.mktemp(f"{arch}-{task}"))
        return made[arch, task]

    return get
