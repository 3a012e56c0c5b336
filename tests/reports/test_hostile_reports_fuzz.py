"""Property-based: whatever lies in a build folder or a baseline folder, `report` ends with 0, 1 or 2 (never
70, never a hang), and every result file it could not read is named. Documents are random JSON (wrong
types, huge numbers, NaN, schema strings of other versions), random bytes, JSON nested thousands of levels
deep, and real manifests and profile results with random parts replaced, removed or buried deep.
`parse_fail_on` fed random text raises nothing but UserError."""

from __future__ import annotations

import copy
import json
import signal
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeslm.cli import main
from edgeslm.config.thresholds import parse_fail_on
from edgeslm.errors import UserError, EdgeSLMError
from edgeslm.reports.collect import BASELINE_MARKER, collect

SCHEMAS = ["edgeslm.manifest/1", "edgeslm.manifest/9", "edgeslm.manifest/", "edgeslm.profile/1", "edgeslm.profile/2",
           "edgeslm.profile/1.1", "edgeslm.report/1", "edgeslm.report/4", "edgeslm.baseline/1", "edgeslm.baseline/3",
           "edgeslm.probe/1", "other/1", "", "edgeslm"]
KEYS = ["schema", "build", "device", "artifact", "latency_ms", "samples_ms", "memory_kb", "parity", "flags",
        "settings", "task", "generation", "recipe", "target", "cache_key", "artifacts", "files", "name", "p50",
        "cv", "n", "peak_rss", "passed", "metrics", "value", "started_at", "size", "sha256", "content", "gate",
        "fail_on", "ttft", "decode", "tok_s", "runtimes", "emulated"]
SETTINGS = settings(max_examples=120, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                           HealthCheck.data_too_large])

scalars = (st.none() | st.booleans() | st.integers(min_value=-(10**400), max_value=10**400)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12) | st.sampled_from(SCHEMAS))
values = st.recursive(scalars, lambda kids: st.lists(kids, max_size=4)
                      | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), kids, max_size=5), max_leaves=24)


numbers = (st.floats(allow_nan=True, allow_infinity=True) | st.integers(min_value=-(10**400), max_value=10**400)
           | st.sampled_from([0, -1, 1e-300, 1e308, 2**63, float("nan")]))


def deep(n: int, inner: str = "1") -> str:
    return "[" * n + inner + "]" * n


@st.composite
def mutated(draw, doc):
    """`doc` with 1-3 random parts replaced by random values, removed, or buried deep."""
    doc = copy.deepcopy(doc)
    for _ in range(draw(st.integers(1, 3))):
        parent, key, node = None, None, doc
        for _ in range(draw(st.integers(1, 5))):
            if not isinstance(node, (dict, list)) or not node:
                break
            k = draw(st.sampled_from(sorted(node) if isinstance(node, dict) else list(range(len(node)))))
            parent, key, node = node, k, node[k]
        if parent is None:
            continue
        action = draw(st.sampled_from(["tweak", "tweak", "tweak", "replace", "delete", "bury"]))
        if action == "tweak":  # a value of the same JSON type: a document that may still pass its checks
            parent[key] = draw(numbers if isinstance(node, (int, float)) and not isinstance(node, bool) else
                               st.text(max_size=30) if isinstance(node, str) else
                               st.lists(numbers | st.text(max_size=5), max_size=5) if isinstance(node, list) else values)
        elif action == "delete":
            del parent[key]
        elif action == "bury":
            for _ in range(draw(st.integers(1, 80))):
                node = [node]
            parent[key] = node
        else:
            parent[key] = draw(values)
    return doc


def documents(real: list[dict]):
    """Bytes of a hostile document: mutated real ones, random JSON with a schema, raw bytes, deep nesting."""
    dumped = st.builds(lambda v: json.dumps(v).encode(), st.one_of(*[mutated(d) for d in real]))
    claimed = st.builds(lambda s, v: json.dumps({"schema": s, **(v if isinstance(v, dict) else {"x": v})}).encode(),
                        st.sampled_from(SCHEMAS), values)
    return st.one_of(dumped, dumped, dumped, dumped, claimed, st.builds(lambda v: json.dumps(v).encode(), values), st.binary(max_size=64),
                     st.integers(1, 6000).map(lambda n: deep(n).encode()),
                     st.integers(1, 3000).map(lambda n: ('{"schema": "edgeslm.profile/1", "build": '
                                                         + deep(n, "{}") + "}").encode()))


@contextmanager
def no_hang(seconds: int = 60):
    def fail(*_):
        raise TimeoutError(f"report took more than {seconds}s: a hang")

    old = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def report(*args):
    with no_hang():
        r = CliRunner().invoke(main, [str(a) for a in args])
    assert r.exit_code in (0, 1, 2), r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert "internal error" not in r.output and "Traceback" not in r.output, r.output
    if r.exit_code == 2:
        assert r.stderr.strip().splitlines()[-1].startswith("error: "), r.output
    return r


def named(r, files: list[str], side: str = ""):
    """Every unreadable file of a successful report is named on stderr."""
    if r.exit_code in (0, 1):
        for f in files:
            assert f"warning: skipped {side}{f}: " in r.stderr, (f, r.stderr)


@pytest.fixture(scope="module")
def real(profiled):
    build = profiled["build"]
    profiles = sorted((build / "profiles").rglob("*.json"))[:2]
    return {"manifest": (build / "manifest.json").read_bytes(), "profiles": [p.read_bytes() for p in profiles]}


def build_folder(root: Path, real: dict, manifest: bytes, hostile: bytes | None) -> tuple[Path, list[Path]]:
    folder = root / "build"
    (folder / "profiles" / "local").mkdir(parents=True)
    (folder / "manifest.json").write_bytes(manifest)
    for i, p in enumerate(real["profiles"]):
        (folder / "profiles" / "local" / f"good-{i}.json").write_bytes(p)
    written = [folder / "manifest.json"]
    if hostile is not None:
        (folder / "profiles" / "local" / "hostile.json").write_bytes(hostile)
        written.append(folder / "profiles" / "local" / "hostile.json")
    return folder, written


def unreadable(folder: Path, written: list[Path]) -> list[str] | None:
    """The files of `written` collect skips, or None when collect refuses the folder as a whole."""
    try:
        c = collect([folder])
    except UserError:
        return None
    skipped = [s["file"] for s in c.skipped]
    for f in written:  # each is either reported or skipped: never dropped silently
        assert str(f) in c.sources or str(f) in skipped, f
    return skipped


def test_hostile_results_in_a_build_folder(real):
    docs = [json.loads(real["manifest"]), *[json.loads(p) for p in real["profiles"]]]

    @SETTINGS
    @given(manifest=st.one_of(st.just(real["manifest"]), documents(docs[:1])), hostile=documents(docs[1:]),
           fmt=st.sampled_from(["md", "json"]))
    def check(manifest, hostile, fmt):
        with tempfile.TemporaryDirectory() as tmp:
            folder, written = build_folder(Path(tmp), real, manifest, hostile)
            skipped = unreadable(folder, written)
            r = report("report", folder, "--format", fmt)
            if skipped is None:
                assert r.exit_code == 2
            else:
                assert r.exit_code == 0, r.output
                named(r, skipped)
                if fmt == "json":
                    assert sorted(s["file"] for s in json.loads(r.stdout)["skipped"]) == sorted(skipped)
            for f in written:  # a file named on the command line: read, or an error naming it
                r = report("report", f)
                if r.exit_code == 2:
                    assert f.name in r.stderr, r.stderr

    check()


def test_hostile_baseline_folders(real, profiled, tmp_path):
    docs = [json.loads(p) for p in real["profiles"]]
    marker = json.dumps({"schema": "edgeslm.baseline/1", "files": 3}).encode()
    current = profiled["build"]
    markers = st.integers(0, 5).flatmap(lambda i: documents([json.loads(marker)]) if i == 0 else st.just(marker))

    @SETTINGS
    @given(hostile=documents(docs), marker=markers,
           fail_on=st.sampled_from(["latency=+10%", "size=+1%,accuracy=-0.5", "rss=+5%"]))
    def check(hostile, marker, fail_on):
        with tempfile.TemporaryDirectory() as tmp:
            base = Path(tmp) / "baseline"
            base.mkdir()
            (base / BASELINE_MARKER).write_bytes(marker)
            (base / "manifest-0.json").write_bytes(real["manifest"])
            for i, p in enumerate(real["profiles"]):
                (base / f"profile-good-{i}.json").write_bytes(p)
            (base / "profile-hostile.json").write_bytes(hostile)
            try:
                skipped = [s["file"] for s in collect([base]).skipped]
            except EdgeSLMError:
                skipped = None
            r = report("report", current, "--baseline", base, "--fail-on", fail_on)
            if skipped is None:
                assert r.exit_code == 2
            else:
                named(r, skipped, "baseline ")
                if skipped and r.exit_code in (0, 1):
                    assert "on partial data" in r.stdout and "baseline result skipped" in r.stdout, r.stdout

    check()


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(st.one_of(st.text(max_size=60),
                 st.lists(st.sampled_from(["latency", "rss", "size", "accuracy", "=", "+", "-", "%", ",", ".", "1",
                                           "0", "9" * 400, " ", "e5", "nan", "inf", "\u0663", "\x00"]),
                          max_size=14).map("".join)))
def test_parse_fail_on_raises_only_user_errors(spec):
    try:
        limits = parse_fail_on(spec)
    except UserError as exc:
        assert str(exc).startswith("--fail-on: ") and "\n" not in str(exc)
        return
    assert limits and all(isinstance(v, float) for v in limits.values())
    assert all(v >= 0 for k, v in limits.items() if k != "accuracy") and limits.get("accuracy", 0) <= 0
