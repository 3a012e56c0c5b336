"""Every config class round-trips through JSON (habit 8)."""

from pathlib import Path

import pytest

from edgeslm.config import catalog
from edgeslm.config.devices import Device, Inventory
from edgeslm.config.passes import PASS_TYPES, CalibrationSpec, TrainingSpec
from edgeslm.config.recipe import Recipe, load_recipe
from edgeslm.config.target import Target

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", sorted((ROOT / "recipes").glob("*.toml")), ids=lambda p: p.stem)
def test_recipe_roundtrip(path):
    r = load_recipe(path).recipe
    assert Recipe.model_validate_json(r.model_dump_json()) == r


@pytest.mark.parametrize("name", catalog.target_names())
def test_target_roundtrip(name):
    t = catalog.load_target(name).resolved()
    assert Target.model_validate_json(t.model_dump_json()) == t


EXAMPLES = {"quantize": dict(method="static-int8", calibration=CalibrationSpec(samples=8)),
            "finetune": dict(epochs=2, distill="teacher"),
            "prune": dict(heads=0.5, ffn=0.25, recovery=TrainingSpec(epochs=1))}


@pytest.mark.parametrize("tag", sorted(PASS_TYPES))
def test_pass_roundtrip(tag):
    cls = PASS_TYPES[tag].variant(EXAMPLES.get(tag, {}))  # quantize: the class its method selects
    cfg = cls(**EXAMPLES.get(tag, {}))
    assert cls.model_validate_json(cfg.model_dump_json()) == cfg
    # and inside a recipe, where the type selects the class
    r = Recipe(name="r", model={"source": "x/y", "task": "sequence-classification"}, passes=(cfg,),
               datasets={"d": {"source": "data.csv"}})
    back = Recipe.model_validate_json(r.model_dump_json())
    assert back == r and type(back.passes[0]) is cls


def test_inventory_roundtrip():
    inv = Inventory(devices={"pi": Device(host="pi.local", target="rpi4", groups=("lab",))})
    assert Inventory.model_validate_json(inv.model_dump_json()) == inv
