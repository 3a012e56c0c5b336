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

