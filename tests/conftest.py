import fcntl
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

ROOT = Path(__file__).resolve().parents[1]


WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")

# Fixtures that build or profile models (minutes on 2 cores): a test that uses one belongs to the slow tier even
# when its file does not say so. `make test-fast` runs the rest (`-m "not slow"`); `make test` runs everything.
HEAVY_FIXTURES = {"tiny_builds", "trainable_model", "decoder_8da4w", "decoder_models", "fp32_builds"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if HEAVY_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def _run_root(tmp_path_factory) -> Path:
    """This run's own temporary root, one for all xdist workers (each worker's base temp is a child)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if WORKER else base


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Tests never touch the user's ~/.cache/edgeslm. The run's xdist workers share one cache, as parallel
    builds on one machine do: a build one worker made (the same recipe, model and target) is another's
    cache hit, and a build under way is waited for (pipeline's per-key lock), not made twice."""
    cache = _run_root(tmp_path_factory) / "edgeslm-cache"
    cache.mkdir(exist_ok=True)
    os.environ["EDGESLM_CACHE"] = str(cache)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    yield


@pytest.fixture(scope="session")
def shared(tmp_path_factory):
    """shared(name, make) -> a folder of this run that every xdist worker sees, made once by `make(folder)`
    (the first worker makes it under a lock, the others wait): inputs such as model folders and recipes
    whose paths are part of a build's cache key, so the workers' builds of them share the cache."""
    root = _run_root(tmp_path_factory) / "shared"
    root.mkdir(exist_ok=True)

    def get(name: str, make) -> Path:
        folder = root / name
        with open(root / f"{name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (root / f"{name}.made").exists():
                folder.mkdir(exist_ok=True)
                make(folder)
                (root / f"{name}.made").touch()
        return folder

    return get


def rotated(items: list) -> list:
    """`items` in an order that differs per xdist worker: workers that need the same builds start on
    different ones (each then takes the others from the shared cache)."""
    k = int(WORKER[2:]) % len(items) if WORKER[2:].isdigit() and items else 0
    return items[k:] + items[:k]


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


@pytest.fixture(scope="session")
def tiny_builds(tmp_path_factory, shared):
    """Two builds of the same tiny model that differ only in a verify threshold (two versions), and v1 for
    rpi4. The model and recipes are shared by the workers, the build folders each worker's own."""
    from edgeslm.config.catalog import load_target
    from edgeslm.config.recipe import load_recipe
    from edgeslm.pipeline import build, plan
    from tiny import make_model, write_recipe

    def make(folder):
        src = make_model("bert", "embedding", folder / "model")
        for variant, extra in (("v1", ""), ("v2", "[verify]\nmin_cosine = 0.999\n")):
            write_recipe(folder / f"{variant}.toml", src, "embedding", name="tinydeploy", extra=extra,
                         targets=("host", "rpi4"))

    inputs = shared("deploy-builds", make)
    root = tmp_path_factory.mktemp("deploy-builds")
    out = {}
    for variant, toml, target, sub in rotated([("v1", "v1", "host", "v1"), ("v2", "v2", "host", "v2"),
                                               ("rpi4", "v1", "rpi4", "arm")]):
        recipe = load_recipe(inputs / f"{toml}.toml")
        out[variant] = build(recipe, plan(recipe, [load_target(target)])[0], root / sub).folder
    return out


@pytest.fixture(scope="session")
def trainable_model(tmp_path_factory):
    """trainable_model(arch) -> folder of a tiny encoder for fine-tuning: fine-tuned on the topics dataset
    it is a small but real classifier. Initializer range 0.1: with the default 0.02 a model this small
    (hidden size 32) often settles with two of the three topics merged (eval accuracy 0.64 for 4 of 6
    training seeds, and on another CPU for the seed the tests use); with 0.1 all six seeds reached 0.97."""
    from tiny import make_model

    made = {}

    def get(arch: str) -> Path:
        if arch not in made:
            made[arch] = make_model(arch, "embedding", tmp_path_factory.mktemp(f"trainable-{arch}"),
                                    initializer_range=0.1, layers=2)
        return made[arch]

    return get


@pytest.fixture(scope="session")
def topics_csv(tmp_path_factory) -> Path:
    from tiny import write_dataset

    return write_dataset(tmp_path_factory.mktemp("topics"), per_label=60)



@pytest.fixture(scope="session")
def decoder_8da4w_recipe(shared) -> Path:
    """A tiny Llama decoder's recipe, both formats, 8da4w (group 32) with int8 embeddings, 128-position
    cache, compression limits loosened for random weights, for host and rpi4 (one build serves both: a
    decoder's artifacts do not depend on the target). Shared by the workers: one build in the run."""
    from tiny import make_decoder_model, write_generation_recipe

    def make(folder):
        src = make_decoder_model("llama", folder / "model")
        extra = ('[[passes]]\ntype = "quantize"\nmethod = "8da4w"\ngroup_size = 32\nembeddings = true\n'
                 "[verify]\nmax_perplexity_increase = 0.5\nmin_top5_agreement = 0.5\n")
        write_generation_recipe(folder / "g.toml", src, name="llama-8da4w", extra=extra, targets=("host", "rpi4"),
                                formats=("executorch", "onnx"))

    return shared("decoder-8da4w", make) / "g.toml"


@pytest.fixture(scope="session")
def decoder_8da4w(tmp_path_factory, decoder_8da4w_recipe):
    """decoder_8da4w_recipe built for the host."""
    from edgeslm.config.catalog import load_target
    from edgeslm.config.recipe import load_recipe
    from edgeslm.pipeline import build, plan

    recipe = load_recipe(decoder_8da4w_recipe)
    return build(recipe, plan(recipe, [load_target("host")])[0], tmp_path_factory.mktemp("decoder-8da4w") / "out")


@pytest.fixture(scope="session")
def decoder_models(shared):
    """decoder_models(family) -> a tiny random decoder of `family` (tiny.make_decoder_model), shared by the
    workers."""
    from tiny import make_decoder_model

    return lambda family: shared(f"decoder-{family}", lambda folder: make_decoder_model(family, folder))


@pytest.fixture(scope="session")
def fp32_builds(tmp_path_factory, decoder_models, shared):
    """fp32_builds(family) -> the family's fp32 build in both formats for the host (160-position cache,
    prompts up to 64 tokens), made on first use; one build per run (the workers share the cache)."""
    from edgeslm.config.catalog import load_target
    from edgeslm.config.recipe import load_recipe
    from edgeslm.pipeline import build, plan
    from tiny import write_generation_recipe

    root, made = tmp_path_factory.mktemp("fp32"), {}

    def get(family):
        if family not in made:
            src = decoder_models(family)
            recipe = shared(f"fp32-{family}-recipe", lambda folder: write_generation_recipe(
                folder / "g.toml", src, name=f"fp32-{family}", context=160, prompt=64,
                formats=("executorch", "onnx"))) / "g.toml"
            loaded = load_recipe(recipe)
            made[family] = build(loaded, plan(loaded, [load_target("host")])[0], root / "out")
        return made[family]

    return get
