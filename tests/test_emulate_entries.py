"""`devices emulate start --add-to FILE` writes its entry in place, however often it runs; `stop` takes it
out; a user's own entry of that name is never touched; ./devices.local.toml is read beside ./devices.toml."""

from __future__ import annotations

import tomllib

import pytest
from click.testing import CliRunner

from edgeslm.cli import main
from edgeslm.devtools.emulate import EmulatorError
from edgeslm.devtools.emulate.entries import put_entry, remove_entry


def _entry(port: int, name: str = "pi4-emulated") -> str:
    return (f'\n[devices.{name}]  # emulated cortex-a72: functional checks only, timings are not device latency\n'
            f'host = "127.0.0.1"\nport = {port}\ntarget = "rpi4"\n')


USER = '# my lab\n[devices.pi5]\nhost = "pi5.local"\ntarget = "rpi5"\ngroups = ["lab"]\n'


def test_start_twice_updates_the_entry_in_place_and_stop_takes_it_out(tmp_path):
    f = tmp_path / "devices.local.toml"
    f.write_text(USER)
    assert put_entry(f, "pi4-emulated", _entry(2201)) == "added"
    assert put_entry(f, "pi4-emulated", _entry(2202)) == "updated"
    doc = tomllib.loads(f.read_text())
    assert doc["devices"]["pi4-emulated"]["port"] == 2202 and f.read_text().count("[devices.pi4-emulated]") == 1
    assert doc["devices"]["pi5"]["host"] == "pi5.local"
    assert remove_entry(f, "pi4-emulated") and not remove_entry(f, "pi4-emulated")
    assert f.read_text() == USER  # byte for byte what the user had


def test_an_entry_between_tables_and_duplicates_from_older_versions_are_replaced(tmp_path):
    f = tmp_path / "devices.toml"
    f.write_text(_entry(1) + "\n" + USER + _entry(2))  # what two appends of an older edgeslm left: unreadable
    assert put_entry(f, "pi4-emulated", _entry(3)) == "updated"
    doc = tomllib.loads(f.read_text())
    assert doc["devices"]["pi4-emulated"]["port"] == 3 and doc["devices"]["pi5"]["groups"] == ["lab"]


def test_a_users_entry_of_that_name_is_refused_and_left_alone(tmp_path):
    f = tmp_path / "devices.toml"
    mine = '[devices.pi4-emulated]\nhost = "10.0.0.9"\n'
    f.write_text(mine)
    with pytest.raises(EmulatorError, match=r"devices.toml already has a \[devices.pi4-emulated\] that .* did not write"):
        put_entry(f, "pi4-emulated", _entry(1))
    assert not remove_entry(f, "pi4-emulated")
    assert f.read_text() == mine
    (tmp_path / "dir").mkdir()
    with pytest.raises(EmulatorError, match="not a regular file"):
        put_entry(tmp_path / "dir", "pi4-emulated", _entry(1))


def test_devices_local_toml_is_read_beside_devices_toml(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EDGESLM_DEVICES", raising=False)
    (tmp_path / "devices.toml").write_text(USER)
    put_entry(tmp_path / "devices.local.toml", "pi4-emulated", _entry(2201))
    r = CliRunner().invoke(main, ["devices", "list"])
    assert r.exit_code == 0 and "pi4-emulated" in r.output and "pi5" in r.output, r.output
    (tmp_path / "devices.local.toml").write_text(USER.replace("# my lab\n", ""))
    r = CliRunner().invoke(main, ["devices", "list"])
    assert r.exit_code == 2 and "devices.local.toml" in r.output and "devices.pi5" in r.output \
        and "is also in devices.toml" in r.output, r.output
