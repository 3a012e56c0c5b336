"""`edgeslm cache list|prune`: entries edgeslm made are listed and removed by age or size, least recently
used first; nothing it did not make is ever touched, and an entry a build holds is kept."""

from __future__ import annotations

import json
import os
import time

from click.testing import CliRunner

from edgeslm.cli import main


def _build_entry(store, key, recipe="r", size=1000, used=None):
    d = store / key
    (d / "profiles").mkdir(parents=True)
    (d / "manifest.json").write_text(json.dumps({"cache_key": key, "recipe": {"name": recipe},
                                                 "target": {"name": "rpi4"}, "task": "embedding"}))
    (d / "model.onnx").write_bytes(b"x" * size)
    for f in d.iterdir():
        if f.is_file():
            os.chmod(f, 0o444)  # store entries are read-only copies
    if used is not None:
        (store / ".used").mkdir(exist_ok=True)
        (store / ".used" / key).touch()
        os.utime(store / ".used" / key, (used, used))
    return d


def test_list_and_prune_only_what_edgeslm_made(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGESLM_CACHE", str(tmp_path / "cache"))
    builds, passes = tmp_path / "cache" / "builds", tmp_path / "cache" / "passes"
    now = time.time()
    old = _build_entry(builds, "a" * 64, "old", 5000, used=now - 40 * 86400)
    mid = _build_entry(builds, "b" * 64, "mid", 3000, used=now - 5 * 86400)
    new = _build_entry(builds, "c" * 64, "new", 2000, used=now)
    (passes / ("d" * 64)).mkdir(parents=True)
    (passes / ("d" * 64) / "meta.json").write_text(json.dumps({"sha256": "0", "facts": [{"type": "finetune"}]}))
    (passes / ("d" * 64) / "state.pt").write_bytes(b"w" * 100)
    (passes / ".used").mkdir()
    (passes / ".used" / ("d" * 64)).touch()
    os.utime(passes / ".used" / ("d" * 64), (now - 10 * 86400,) * 2)
    strangers = [builds / ("e" * 64), builds / "notes.txt", builds / ("f" * 64)]
    strangers[0].mkdir()  # a key-named folder without a manifest
    strangers[1].write_text("mine")
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "manifest.json").write_text(json.dumps({"cache_key": "f" * 64}))
    strangers[2].symlink_to(outside)  # a link that looks like an entry
    wrong = _build_entry(builds, "9" * 64)
    (wrong / "manifest.json").chmod(0o644)
    (wrong / "manifest.json").write_text(json.dumps({"cache_key": "0" * 64}))  # names another key
    strangers.append(wrong)

    cli = CliRunner()
    r = cli.invoke(main, ["cache", "list", "--json"])
    assert r.exit_code == 0, r.output
    listed = json.loads(r.output)
    assert {e["what"].split()[0] for e in listed["entries"]} == {"old", "mid", "new", "cached"}
    assert set(listed["not_edgeslm"]) == {str(p) for p in strangers}

    r = cli.invoke(main, ["cache", "prune", "--older-than", "30d", "--dry-run"])
    assert "would remove build aaaaaaaaaaaa (old for rpi4" in r.output and old.exists()
    r = cli.invoke(main, ["cache", "prune", "--older-than", "30d"])
    assert r.exit_code == 0 and not old.exists() and mid.exists(), r.output
    r = cli.invoke(main, ["cache", "prune", "--max-size", "2.2kB"])  # least recently used first: the pass, then mid
    assert r.exit_code == 0 and not mid.exists() and new.exists() and not (passes / ("d" * 64)).exists(), r.output

    import fcntl

    from edgeslm.runner.locks import acquire

    fd = acquire(str(builds / ".locks" / f"{'c' * 64}.lock"), fcntl.LOCK_EX, 0)  # a build holds it
    try:
        r = cli.invoke(main, ["cache", "prune", "--all"])
    finally:
        os.close(fd)
    assert "kept build cccccccccccc (new for rpi4 (embedding)): a build is using it right now" in r.output
    assert new.exists()
    r = cli.invoke(main, ["cache", "prune", "--all"])
    assert r.exit_code == 0 and not new.exists()
    assert all(p.exists() or p.is_symlink() for p in strangers) and (outside / "manifest.json").exists()
    assert (builds / "notes.txt").read_text() == "mine"


def test_prune_needs_a_rule_and_readable_figures(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGESLM_CACHE", str(tmp_path))
    cli = CliRunner()
    r = cli.invoke(main, ["cache", "prune"])
    assert r.exit_code == 2 and "--older-than AGE, --max-size SIZE or --all" in r.output
    r = cli.invoke(main, ["cache", "prune", "--older-than", "soon"])
    assert r.exit_code == 2 and "'soon' is not an age such as 30d" in r.output
    r = cli.invoke(main, ["cache", "prune", "--max-size", "big"])
    assert r.exit_code == 2 and "'big' is not a size" in r.output
