"""The HTML report's comparison table and plots, and the unit convention both renderers state."""

from __future__ import annotations

import copy
import json
import re

import pytest

from edgeslm.reports import html, markdown
from edgeslm.reports.collect import collect, rows
from edgeslm.reports.gate import compare, parse_fail_on
from edgeslm.reports.model import build_report


@pytest.fixture(scope="module")
def gated(profiled):
    c = collect([profiled["build"]])
    base = rows(c)
    base[0]["size"] = int(base[0]["size"] / 1.05)  # the current one is 5% larger
    comp = compare(rows(c), base, parse_fail_on("latency=+10%,size=+1%,accuracy=-0.5"))
    return json.loads(json.dumps(build_report(c, comp)))


def cells(tr: str, tag: str) -> list[str]:
    return [re.sub("<[^>]+>", "", x) for x in re.findall(f"<{tag}>(.*?)</{tag}>", tr)]


def test_the_comparison_table_has_a_limit_column(gated):
    page = html.render(gated)
    table = page.split("<h2>Comparison with the baseline</h2>", 1)[1].split("</table>", 1)[0]
    trs = re.findall("<tr>(.*?)</tr>", table)
    assert cells(trs[0], "th") == ["result", "metric", "baseline", "current", "change", "limit", "verdict"]
    body = [cells(tr, "td") for tr in trs[1:]]
    checks = [c for row in gated["comparison"]["rows"] for c in row["checks"]]
    assert len(body) == len(checks) == 6
    for got, c in zip(body, checks):
        assert got[1] == c["metric"] and got[4] == markdown.change_cell(c) and got[5] == markdown.limit_cell(c)
    assert [got[5] for got in body[:3]] == ["+10.0%", "+1.0%", "-0.50 pt"]  # as the Markdown table has them
    assert body[1][4] == "+5.0%" and body[1][6] == "regressed"
    md = markdown.render(gated)
    assert "| result | metric | baseline | current | change | limit | verdict |" in md
    assert f"| {gated['results'][0]['key']} | size | " in md and " | +5.0% | +1.0% | **regressed** |" in md


def test_units_are_stated_once_in_both_renderers(gated):
    note = "Sizes in MB (10^6 bytes), memory in MiB (2^20 bytes)."
    assert markdown.render(gated).count(note) == 1 and html.render(gated).count(note) == 1
    r = gated["results"][0]
    assert f"{r['size'] / 1e6:.1f} MB" in markdown.render(gated)
    assert f"{r['peak_rss_kb'] / 1024:.0f} MiB" in html.render(gated)
    assert markdown.value("size", 2_000_000) == "2.0 MB" and markdown.value("rss", 2048) == "2 MiB"


def inside(fig) -> None:
    """Every annotation label lies within its axes' frame once drawn."""
    fig.canvas.draw()
    for ax in fig.axes:
        frame = ax.get_window_extent()
        for t in ax.texts:
            box = t.get_window_extent()
            assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1, \
                (t.get_text(), box, frame)


def spans(lim, values) -> bool:
    """The axis shows at least the data's mean +-10% (within rounding)."""
    mean = sum(values) / len(values)
    return lim[0] <= mean * 0.9 + 1e-9 and lim[1] >= mean * 1.1 - 1e-9


@pytest.fixture()
def close(gated):
    """Two variants 1% apart in size and 0.5% in latency, one on a device with a long name, both far right."""
    a, b = copy.deepcopy(gated["results"])
    for r, size, p50, acc in ((a, 1_000_000, 10.0, 0.90), (b, 1_010_000, 10.05, 0.905)):
        r.update(size=size, flags=[], task={"metric": "accuracy", "host": acc, "device": None,
                                             "device_p50_ms_real_lengths": None})
        r["latency_ms"]["p50"] = p50
    a["device"] = "a-device-with-a-rather-long-name-indeed"
    return [a, b]


def test_plots_do_not_zoom_small_differences_up_and_keep_labels_inside(close):
    fig = html.tradeoff_figure(close)
    ax = fig.axes[0]
    inside(fig)
    assert spans(ax.get_xlim(), [1.0, 1.01]) and spans(ax.get_ylim(), [10.0, 10.05])
    fig = html.accuracy_figure(close)
    inside(fig)
    latency, size = fig.axes
    assert spans(latency.get_xlim(), [10.0, 10.05]) and spans(size.get_xlim(), [1.0, 1.01])
    assert latency.get_ylim()[0] <= 90.25 * 0.9 and latency.get_ylim()[1] <= 100  # slides under 100%, not past it
    assert latency.get_ylim()[1] - latency.get_ylim()[0] >= 0.2 * 90.25 - 1e-9
    spread = copy.deepcopy(close)  # far apart: matplotlib's own limits stand, labels still inside
    spread[1].update(size=30_000_000)
    spread[1]["latency_ms"]["p50"] = 80.0
    fig = html.tradeoff_figure(spread)
    inside(fig)
    assert fig.axes[0].get_xlim()[1] < 40
    assert html.tradeoff_plot(close).startswith("<svg") and html.accuracy_plot(close).startswith("<svg")
