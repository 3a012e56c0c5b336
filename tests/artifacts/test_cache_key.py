"""Any change to recipe, model files, target or tool versions changes the cache key."""

from edgeslm.artifacts import cache


def test_key_changes_with_every_input():
    base = {"recipe": "r", "target": {"name": "host"}, "model": {"a": "1"}, "tools": {"torch": "2"},
            "edgeslm": ["0.1", "c"]}
    key = cache.cache_key(base)
    assert cache.cache_key(dict(base)) == key
    for part, value in [("recipe", "r2"), ("target", {"name": "rpi4"}), ("model", {"a": "2"}),
                        ("tools", {"torch": "3"}), ("edgeslm", ["0.1", "d"])]:
        assert cache.cache_key({**base, part: value}) != key


def test_tool_versions_do_not_import_torch():

    versions = cache.tool_versions()
    assert versions["torch"].startswith("2.13") and "onnxruntime" in versions



def test_code_that_does_not_shape_files_does_not_change_the_key(tmp_path):
    """Reports, the CLI, deploy and profiling, the transport and the emulator are not build code: a change to
    the HTML report's styling rebuilds nothing; a change to an exporter does."""
    import shutil
    from pathlib import Path

    src = Path(cache.__file__).resolve().parents[1]
    pkg = tmp_path / "edgeslm"
    shutil.copytree(src, pkg, ignore=shutil.ignore_patterns("__pycache__", "prebuilt", "*.so", "*.npz"))
    before = cache.code_hash(root=pkg)
    for rel in ("reports/html.py", "cli/build.py", "profiling/profile.py", "transport/ssh.py", "devtools/structure.py"):
        (pkg / rel).write_text((pkg / rel).read_text() + "\n# edited\n")
    assert cache.code_hash(root=pkg) == before
    (pkg / "formats/onnx/encoder.py").write_text((pkg / "formats/onnx/encoder.py").read_text() + "\n# edited\n")
    assert cache.code_hash(root=pkg) != before
