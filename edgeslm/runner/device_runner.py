#!/usr/bin/env python3
"""edgeslm device runner: probe a device, manage deployed versions, check and profile a model there.

Runs on the device with Python >= 3.9, the standard library, numpy, and one runtime: onnxruntime for
.onnx; for .pte `executorch.runtime` when installed, else the torch-free `executorch_numpy_runtime`.
It never imports torch itself and nothing from edgeslm: this file is copied to the device as is.

    python3 device_runner.py probe [--workdir DIR]
    python3 device_runner.py hash FILE...
    python3 device_runner.py verify DIR [--manifest-sha256 H]  (sha256 of every file DIR/manifest.json lists;
                                                               with H, that manifest must be the host's)
    python3 device_runner.py status --workdir W RECIPE      (current, previous, versions, staging folders)
    python3 device_runner.py stage --workdir W RECIPE VERSION   (reuse files the device has; list the rest)
    python3 device_runner.py commit --workdir W RECIPE VERSION [--manifest-sha256 H]  (verify, into versions/)
    python3 device_runner.py activate --workdir W RECIPE VERSION  (atomic switch of current; prune)
    python3 device_runner.py rollback --workdir W RECIPE [--expect V] [--manifest-sha256 H]  (verify, switch)
    python3 device_runner.py hold --workdir W RECIPE [--pin V|current] [--owner TEXT] [--expire S] [--wait S]
                                     (deploy lock, or a pin on a version, while heartbeats arrive on stdin)
    python3 device_runner.py break-lock --workdir W RECIPE  (free a stale lock whose holder is gone)
    python3 device_runner.py profile BUILD_DIR --artifact NAME [--threads N --warmup N --iters N
                                     --min-seconds S --seq-len L] [--out RESULT.json --workdir W]

The model folder is <workdir>/<recipe>; RECIPE must be a plain name and VERSION 16 hex digits.

Every command prints one JSON object on stdout; failures exit 1 with {"error": "..."}.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import hashlib
import json
import os
import platform
import re
import shutil
import sys
import time

RUNNER_VERSION = "1"
PROFILE_SCHEMA = "edgeslm.profile/1"
PROBE_SCHEMA = "edgeslm.probe/1"
NOISY_CV = 0.10  # coefficient of variation above which a latency run is flagged noisy


class RunnerError(Exception):
    pass


# ---------------------------------------------------------------------------------------- probe
def _read(path: str, default: str = "") -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return default


def _meminfo() -> dict:
    out = {}
    for line in _read("/proc/meminfo").splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            out[key] = int(parts[0])
    return out


def cpu_model() -> str:
    text = _read("/proc/cpuinfo")
    for key in ("model name", "Model", "Hardware", "CPU part"):
        for line in text.splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def cpu_features() -> list:
    for line in _read("/proc/cpuinfo").splitlines():
        key = line.split(":", 1)[0].strip()
        if key in ("flags", "Features"):
            return sorted(set(line.split(":", 1)[1].split()))
    return []


def thermal() -> dict:
    """CPU temperature (C), frequency (kHz), governor, and Raspberry Pi throttling flags."""
    temps = {}
    base = "/sys/class/thermal"
    if os.path.isdir(base):
        for zone in sorted(os.listdir(base)):
            t = _read(os.path.join(base, zone, "temp"))
            if t.lstrip("-").isdigit():
                temps[_read(os.path.join(base, zone, "type"), zone)] = int(t) / 1000.0
    cpufreq = "/sys/devices/system/cpu/cpu0/cpufreq"
    freq = _read(os.path.join(cpufreq, "scaling_cur_freq"))
    out = {"temperatures_c": temps, "freq_khz": int(freq) if freq.isdigit() else None,
           "governor": _read(os.path.join(cpufreq, "scaling_governor")) or None, "throttled": None}
    vcgencmd = shutil.which("vcgencmd")
    if vcgencmd:
        import subprocess

        try:
            r = subprocess.run([vcgencmd, "get_throttled"], capture_output=True, text=True, timeout=5)
            value = int(r.stdout.strip().split("=")[-1], 16)
            out["throttled"] = {"raw": hex(value), "under_voltage": bool(value & 0x1),
                                "freq_capped": bool(value & 0x2), "throttled_now": bool(value & 0x4),
                                "soft_temp_limit": bool(value & 0x8), "throttled_since_boot": bool(value & 0x40000)}
        except (OSError, ValueError, subprocess.SubprocessError):
            pass
    return out


def runtimes() -> dict:
    """Which runtimes import here, without importing torch unless executorch.runtime is present."""
    import importlib.util

    out = {"numpy": None, "onnxruntime": None, "executorch": None, "psutil": None}
    for name in ("numpy", "onnxruntime", "psutil"):
        if importlib.util.find_spec(name) is not None:
            out[name] = _dist_version(name) or "installed"
    if _has_module("executorch.runtime"):
        out["executorch"] = "executorch.runtime " + (_dist_version("executorch") or "?")
    elif importlib.util.find_spec("executorch_numpy_runtime") is not None:
        out["executorch"] = "executorch-numpy-runtime " + (_dist_version("executorch-numpy-runtime") or "?")
    return out


def _has_module(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _dist_version(name: str):
    try:
        from importlib import metadata
    except ImportError:  # pragma: no cover - Python < 3.8
        return None
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def emulation() -> str | None:
    return os.environ.get("EDGESLM_EMULATED") or None


def probe(workdir: str | None) -> dict:
    mem = _meminfo()
    disk = None
    if workdir:
        path = os.path.expanduser(workdir)
        probe_dir = path
        while not os.path.exists(probe_dir) and os.path.dirname(probe_dir) != probe_dir:
            probe_dir = os.path.dirname(probe_dir)
        st = os.statvfs(probe_dir)
        disk = {"path": path, "free_bytes": st.f_bavail * st.f_frsize, "total_bytes": st.f_blocks * st.f_frsize}
    osr = dict(line.split("=", 1) for line in _read("/etc/os-release").splitlines() if "=" in line)
    return {
        "schema": PROBE_SCHEMA, "runner_version": RUNNER_VERSION,
        "arch": platform.machine(), "cpu_model": cpu_model(), "cores": os.cpu_count(),
        "features": cpu_features(), "kernel": platform.release(),
        "os": osr.get("PRETTY_NAME", "").strip('"') or platform.system(),
        "python": platform.python_version(), "python_executable": sys.executable,
        "mem_total_kb": mem.get("MemTotal"), "mem_available_kb": mem.get("MemAvailable"),
        "disk": disk, "runtimes": runtimes(), "thermal": thermal(), "emulated": emulation(),
    }


# --------------------------------------------------------------------------------- files, versions
# Nothing this runner is given is trusted: not its arguments, not the manifest.json files it reads.
# Every path it builds is a plain name or a plain relative path that resolves inside the model folder
# <workdir>/<recipe>; it deletes only folders of the kinds it makes there (versions/<hex>,
# .staging-<hex>, .trash-*), never anything outside its workdir.
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
VERSION_RE = re.compile(r"^[0-9a-f]{16}$")
OWN_FOLDER_RE = re.compile(r"^(\.staging-[0-9a-f]{16}|\.trash-[0-9a-f]{16}-[0-9]+|[0-9a-f]{16})$")


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def hash_files(paths: list) -> dict:
    return {p: (sha256(p) if os.path.isfile(p) else None) for p in paths}


def _plain_name(value: str, what: str) -> str:
    if not isinstance(value, str) or len(value) > 128 or not NAME_RE.fullmatch(value):
        raise RunnerError(f"refusing {what} {value!r}: not a plain name")
    return value


def _version(value: str) -> str:
    if not isinstance(value, str) or not VERSION_RE.fullmatch(value):
        raise RunnerError(f"refusing version {value!r}: not 16 hex digits")
    return value


def _rel_path(value) -> str:
    """A plain relative POSIX path: no '..', '.', empty parts, leading '/', backslash or NUL."""
    if (not isinstance(value, str) or not value or value.startswith("/") or "\\" in value
            or any(ord(c) < 32 for c in value) or any(p in ("", ".", "..") for p in value.split("/"))):
        raise RunnerError(f"refusing path {value!r}: not a plain relative path")
    return value


def _inside(base: str, rel: str) -> str:
    """BASE/REL, refused unless REL is a plain relative path that resolves inside BASE."""
    path = os.path.join(base, *_rel_path(rel).split("/"))
    root = os.path.realpath(base)
    if not os.path.realpath(path).startswith(root + os.sep):
        raise RunnerError(f"refusing path {rel!r}: it resolves outside {base}")
    return path


def model_dir(workdir: str, recipe: str) -> str:
    """<workdir>/<recipe>, refused unless RECIPE is a plain name and the folder is a real folder there."""
    root = os.path.realpath(os.path.expanduser(workdir))
    path = os.path.join(root, _plain_name(recipe, "recipe name"))
    if os.path.islink(path) or os.path.realpath(path) != path:
        raise RunnerError(f"refusing {path}: it is a symlink (the model folder must be a real folder)")
    return path


def _manifest_files(folder: str) -> list:
    """The file entries of FOLDER/manifest.json, each checked (plain path inside FOLDER, hex sha256)."""
    try:
        with open(os.path.join(folder, "manifest.json")) as f:
            manifest = json.load(f)
    except (OSError, ValueError) as exc:
        raise RunnerError(f"cannot read {folder}/manifest.json: {exc}")
    entries = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(entries, list):
        raise RunnerError(f"{folder}/manifest.json has no list of files")
    out = []
    for e in entries:
        if not (isinstance(e, dict) and isinstance(e.get("sha256"), str) and isinstance(e.get("size"), int)):
            raise RunnerError(f"{folder}/manifest.json has a malformed file entry")
        _rel_path(e.get("path"))
        if e["path"] == "manifest.json":
            raise RunnerError(f"{folder}/manifest.json lists itself")
        out.append(e)
    return out


def verify_dir(folder: str, manifest_sha256: str | None = None) -> dict:
    """sha256 of every file FOLDER/manifest.json lists. With MANIFEST_SHA256 (the host's build), the
    manifest itself must be that build's, so the files are judged against the host's hashes."""
    mpath = os.path.join(folder, "manifest.json")
    if not os.path.isfile(mpath):
        return {"ok": False, "files": 0, "bad": [{"path": "manifest.json", "problem": "missing"}]}
    if manifest_sha256 and sha256(mpath) != manifest_sha256:
        # not the host's build: hash what the device holds so the host can name what differs
        actual = {}
        try:
            for e in _manifest_files(folder):
                try:
                    p = _inside(folder, e["path"])
                    actual[e["path"]] = sha256(p) if os.path.isfile(p) and not os.path.islink(p) else None
                except RunnerError:
                    actual[e["path"]] = None
        except RunnerError:
            pass
        return {"ok": False, "files": 0, "actual": actual, "against": "host build",
                "bad": [{"path": "manifest.json", "problem": "differs from the host's build"}]}
    entries = _manifest_files(folder)
    bad = []
    for entry in entries:
        try:
            p = _inside(folder, entry["path"])
        except RunnerError:
            bad.append({"path": entry["path"], "problem": "resolves outside the version folder"})
            continue
        if not os.path.isfile(p) or os.path.islink(p):
            bad.append({"path": entry["path"], "problem": "missing"})
        elif os.path.getsize(p) != entry["size"] or sha256(p) != entry["sha256"]:
            bad.append({"path": entry["path"], "problem": "checksum mismatch"})
    return {"ok": not bad, "files": len(entries), "bad": bad,
            "against": "host build" if manifest_sha256 else "device manifest"}


def _safe_rmtree(mdir: str, path: str) -> None:
    """Remove a folder this runner made inside MDIR (or MDIR/versions), refusing anything else."""
    parent, name = os.path.split(path)
    real_parent = os.path.realpath(parent)
    if (not OWN_FOLDER_RE.fullmatch(name) or os.path.islink(path)
            or real_parent not in (os.path.realpath(mdir), os.path.join(os.path.realpath(mdir), "versions"))):
        raise RunnerError(f"refusing to delete {path}: not a folder this runner made in {mdir}")
    if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)


def _copy(src: str, dst: str) -> None:
    """A fresh copy (never a hard link: versions must not share inodes, or one corruption hits both)."""
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    tmp = f"{dst}.tmp-{os.getpid()}"
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def _drop_symlinks(folder: str) -> None:
    """A staging folder only ever holds folders and regular files this runner or SFTP wrote."""
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            p = os.path.join(root, name)
            if os.path.islink(p):
                os.unlink(p)


def stage(workdir: str, recipe: str, version: str) -> dict:
    """Prepare .staging-VERSION (which already holds the host's manifest.json): reuse files the device
    has with the same sha256 (copied from current or previous) and list what must be sent. Staging
    folders of other versions are left-overs of failed deploys (we hold the deploy lock): removed."""
    mdir = model_dir(workdir, recipe)
    staging = os.path.join(mdir, ".staging-" + _version(version))
    _prune_staging(mdir, keep=staging)
    _drop_symlinks(staging)
    try:
        entries = _manifest_files(staging)
    except RunnerError:
        _safe_rmtree(mdir, staging)
        raise
    known = {}
    for link in ("current", "previous"):
        v = _link_version(mdir, link)
        if not v:
            continue
        folder = os.path.join(mdir, "versions", v)
        try:
            for e in _manifest_files(folder):
                known.setdefault(e["sha256"], _inside(folder, e["path"]))
        except RunnerError:
            continue
    need, reused, reused_bytes = [], 0, 0
    for e in entries:
        dst = _inside(staging, e["path"])
        if os.path.isfile(dst) and os.path.getsize(dst) == e["size"] and sha256(dst) == e["sha256"]:
            reused += 1
            continue
        src = known.get(e["sha256"])
        if src and os.path.isfile(src) and sha256(src) == e["sha256"]:
            _copy(src, dst)
            reused += 1
            reused_bytes += e["size"]
            continue
        need.append(e["path"])
    st = os.statvfs(staging)
    return {"need": need, "reused": reused, "reused_bytes": reused_bytes,
            "free_bytes": st.f_bavail * st.f_frsize}


def commit(workdir: str, recipe: str, version: str, manifest_sha256: str | None) -> dict:
    """Verify every file of the staged version (against the host's build), then move it into
    versions/ (an atomic rename). A staging folder that fails verification is removed."""
    mdir = model_dir(workdir, recipe)
    staging = os.path.join(mdir, ".staging-" + _version(version))
    _drop_symlinks(staging)
    check = verify_dir(staging, manifest_sha256)
    if not check["ok"]:
        _safe_rmtree(mdir, staging)
        bad = ", ".join(f"{b['path']} ({b['problem']})" for b in check["bad"][:3])
        raise RunnerError(f"staged files failed verification: {bad}; the staging folder was removed")
    versions = os.path.join(mdir, "versions")
    if os.path.islink(versions):
        raise RunnerError(f"refusing {versions}: it is a symlink")
    os.makedirs(versions, exist_ok=True)
    final = os.path.join(versions, version)
    if os.path.lexists(final):
        # a damaged copy of this version (verify failed on it): moved aside, then replaced. If it is the
        # active one, `current` dangles between the two renames; it was already not the build anyway.
        trash = os.path.join(mdir, f".trash-{version}-{os.getpid()}")
        if os.path.islink(final):
            os.unlink(final)
        else:
            os.rename(final, trash)
        os.rename(staging, final)
        _safe_rmtree(mdir, trash)
    else:
        os.rename(staging, final)
    return {"committed": final, "files": check["files"]}


def _switch(link: str, target: str) -> None:
    tmp = f"{link}.tmp-{os.getpid()}"
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(target, tmp)
    os.replace(tmp, link)  # atomic on POSIX: readers see the old or the new version, never neither


def _link_version(mdir: str, name: str):
    """The version `current` or `previous` points to, if it points to versions/<16 hex> (else None)."""
    p = os.path.join(mdir, name)
    if not os.path.islink(p):
        return None
    target = os.readlink(p)
    head, _, v = target.partition("/")
    return v if head == "versions" and VERSION_RE.fullmatch(v) else None


def status(workdir: str, recipe: str) -> dict:
    mdir = model_dir(workdir, recipe)
    versions = os.path.join(mdir, "versions")
    return {"current": _link_version(mdir, "current"), "previous": _link_version(mdir, "previous"),
            "versions": sorted(v for v in (os.listdir(versions) if os.path.isdir(versions) else [])
                               if VERSION_RE.fullmatch(v)),
            "staging": sorted(n for n in os.listdir(mdir) if n.startswith(".staging-"))
            if os.path.isdir(mdir) else []}


def activate(workdir: str, recipe: str, version: str) -> dict:
    """current -> versions/VERSION; the old current becomes previous; older versions are pruned."""
    mdir = model_dir(workdir, recipe)
    target = "versions/" + _version(version)
    if not os.path.isfile(os.path.join(mdir, "versions", version, "manifest.json")):
        raise RunnerError(f"no complete version {version} in {mdir}")
    old = _link_version(mdir, "current")
    if old and old != version:
        _switch(os.path.join(mdir, "previous"), "versions/" + old)
    _switch(os.path.join(mdir, "current"), target)
    prev = _link_version(mdir, "previous")
    pruned = _prune(mdir)
    return {"current": target, "previous": ("versions/" + prev) if prev else None, "pruned": pruned}


def _pin_path(mdir: str, version: str) -> str:
    return os.path.join(mdir, ".pins", version)


def _prune(mdir: str) -> list:
    """Keep current, previous and versions a profile has pinned; remove other versions, staging
    folders of failed deploys and left-over temporary links."""
    import fcntl

    keep = {_link_version(mdir, "current"), _link_version(mdir, "previous")}
    versions = os.path.join(mdir, "versions")
    pruned = []
    for name in sorted(os.listdir(versions)) if os.path.isdir(versions) else []:
        if name in keep or not VERSION_RE.fullmatch(name):
            continue
        pin = _pin_path(mdir, name)
        os.makedirs(os.path.dirname(pin), exist_ok=True)
        fd = os.open(pin, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # a profile is running on it: kept until the next deploy
            try:
                _safe_rmtree(mdir, os.path.join(versions, name))
            except RunnerError:
                continue  # not ours (e.g. a symlink planted there): left alone
            os.unlink(pin)
            pruned.append(name)
        finally:
            os.close(fd)
    _prune_staging(mdir)
    for name in os.listdir(mdir):
        if (name.startswith("current.tmp-") or name.startswith("previous.tmp-")) and os.path.islink(
                os.path.join(mdir, name)):
            os.unlink(os.path.join(mdir, name))
    return pruned


def _prune_staging(mdir: str, keep: str | None = None) -> None:
    for name in os.listdir(mdir) if os.path.isdir(mdir) else []:
        p = os.path.join(mdir, name)
        if p != keep and (name.startswith(".staging-") or name.startswith(".trash-")) and OWN_FOLDER_RE.fullmatch(name):
            try:
                _safe_rmtree(mdir, p)
            except RunnerError:
                pass  # not ours: left alone


def rollback(workdir: str, recipe: str, expect: str | None, manifest_sha256: str | None) -> dict:
    """Switch current back to previous after verifying previous (against the host's build when given,
    else against its own manifest); refuse if it fails."""
    mdir = model_dir(workdir, recipe)
    previous = _link_version(mdir, "previous")
    if not previous or not os.path.isdir(os.path.join(mdir, "versions", previous)):
        raise RunnerError(f"nothing to roll back to in {mdir}: no previous version")
    if expect and previous != expect:
        raise RunnerError(f"previous version changed while rolling back (now {previous}); try again")
    check = verify_dir(os.path.join(mdir, "versions", previous), manifest_sha256)
    if not check["ok"]:
        bad = ", ".join(f"{b['path']} ({b['problem']})" for b in check["bad"][:3])
        raise RunnerError(f"previous version {previous} failed verification against the "
                          f"{check.get('against', 'device manifest')}: {bad}; not switching to it")
    current = _link_version(mdir, "current")
    _switch(os.path.join(mdir, "current"), "versions/" + previous)
    if current:
        _switch(os.path.join(mdir, "previous"), "versions/" + current)
    return {"current": "versions/" + previous, "previous": ("versions/" + current) if current else None,
            "verified_against": check["against"], "files": check["files"]}


# ------------------------------------------------------------------------------ locks and pins
# A deploy holds an exclusive flock on <model>/.deploy.lock; a profile holds a shared flock on
# <model>/.pins/<version> (prune skips pinned versions). Either is held by a `hold` process that the
# host keeps alive with heartbeat lines on its stdin: it exits (and the kernel drops the flock) when
# stdin closes or no heartbeat came for EXPIRE seconds, so a link that went silent frees the device
# even while sshd keeps the session. The lock file says who holds it, since when, last heartbeat.
def _now() -> float:
    return time.time()


def _iso(t: float) -> str:
    return datetime.datetime.fromtimestamp(t).isoformat(timespec="seconds")


def _lock_info(path: str) -> dict:
    text = _read(path)
    try:
        info = json.loads(text)
        if isinstance(info, dict):
            return info
    except ValueError:
        pass
    m = re.match(r"pid (\d+) since (\S+)", text)  # written by runners before heartbeats
    if m:
        try:
            t = datetime.datetime.fromisoformat(m.group(2)).timestamp()
        except ValueError:
            t = 0.0
        return {"pid": int(m.group(1)), "since": t, "heartbeat": t, "expire": 0, "owner": "unknown host"}
    return {}


def _describe(info: dict) -> str:
    if not info:
        return "holder unknown"
    age = _now() - float(info.get("heartbeat") or 0)
    return (f"held by {info.get('owner', 'unknown host')} (device pid {info.get('pid')}) since "
            f"{_iso(float(info.get('since') or 0))}, last heartbeat {age:.0f}s ago")


def _stale(info: dict) -> bool:
    return bool(info) and _now() - float(info.get("heartbeat") or 0) > float(info.get("expire") or 0)


def _write_info(fd: int, info: dict) -> None:
    """One write of a fixed length (JSON padded with spaces), so a reader never sees half a record."""
    data = json.dumps(info).encode()
    data += b" " * max(0, 1024 - len(data))
    os.pwrite(fd, data, 0)
    os.ftruncate(fd, len(data))


def _acquire(path: str, mode: int, wait: float):
    import fcntl

    os.makedirs(os.path.dirname(path), exist_ok=True)
    deadline = _now() + max(0.0, wait)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            st = os.stat(path)  # the file may have been unlinked (pruned) while we waited
            if (st.st_ino, st.st_dev) == (os.fstat(fd).st_ino, os.fstat(fd).st_dev):
                return fd
        except OSError:
            pass
        os.close(fd)
        if _now() >= deadline:
            return None
        time.sleep(0.2)


def hold(workdir: str, recipe: str, pin: str | None, owner: str, expire: float, wait: float) -> int:
    """Hold the deploy lock (or, with PIN, a pin on a version) while heartbeats arrive on stdin."""
    import fcntl
    import select

    mdir = model_dir(workdir, recipe)
    os.makedirs(mdir, exist_ok=True)
    if pin is None:
        path = os.path.join(mdir, ".deploy.lock")
        fd = _acquire(path, fcntl.LOCK_EX, wait)
        if fd is None:
            info = _lock_info(path)
            hint = ("; it looks stale: `edgeslm deploy --break-lock` frees it" if _stale(info) else "")
            print(json.dumps({"error": f"another deploy is in progress on this device ({_describe(info)}){hint}",
                              "holder": info}), flush=True)
            return 1
        since = _now()
        info = {"owner": owner, "pid": os.getpid(), "since": since, "heartbeat": since, "expire": expire}
        _write_info(fd, info)
        answer = {"locked": path, "holder": info}
    else:
        deadline = _now() + max(wait, 30.0)
        while True:
            version = _link_version(mdir, "current") if pin == "current" else _version(pin)
            if not version:
                print(json.dumps({"error": f"nothing deployed in {mdir}"}), flush=True)
                return 1
            fd = _acquire(_pin_path(mdir, version), fcntl.LOCK_SH, max(0.0, deadline - _now()))
            if fd is None:
                print(json.dumps({"error": f"cannot pin version {version} in {mdir}"}), flush=True)
                return 1
            if os.path.isfile(os.path.join(mdir, "versions", version, "manifest.json")):
                break
            os.close(fd)  # pruned between resolving and pinning: resolve again
            if pin != "current" or _now() >= deadline:
                print(json.dumps({"error": f"version {version} is no longer on the device"}), flush=True)
                return 1
        info = None
        answer = {"pinned": version}
    print(json.dumps(answer), flush=True)
    last = _now()
    while True:
        try:
            ready, _, _ = select.select([0], [], [], max(0.05, min(1.0, expire / 4)))
        except (OSError, ValueError, KeyboardInterrupt):
            return 0
        if ready:
            try:
                data = os.read(0, 4096)
            except OSError:
                data = b""
            if not data:
                return 0  # the host closed the session (or it dropped): release
            last = _now()
            if info is not None:
                info["heartbeat"] = last
                _write_info(fd, info)
        elif _now() - last > expire:
            return 3  # no heartbeat: the host is gone or its link went silent; release


def break_lock(workdir: str, recipe: str) -> dict:
    """Free the deploy lock only when its holder is gone or stale (no heartbeat within its expiry) and
    is this runner's `hold` process for this folder; then stop that process."""
    import fcntl
    import signal

    mdir = model_dir(workdir, recipe)
    path = os.path.join(mdir, ".deploy.lock")
    if not os.path.exists(path):
        return {"broken": False, "held": False}
    fd = _acquire(path, fcntl.LOCK_EX, 0)
    if fd is not None:
        os.close(fd)
        return {"broken": False, "held": False}
    info = _lock_info(path)
    if not _stale(info):
        raise RunnerError(f"the deploy lock is {_describe(info)}, within its {info.get('expire')}s expiry: "
                          "that deploy is alive; not breaking it")
    pid = info.get("pid")
    cmdline = _read_bytes(f"/proc/{pid}/cmdline").split(b"\0") if isinstance(pid, int) else []
    args = [a.decode(errors="replace") for a in cmdline]
    paths = {os.path.realpath(os.path.expanduser(a)) for a in args if a[:1] in ("/", "~")}
    root = os.path.dirname(mdir)
    ours = (any(os.path.basename(a).startswith("device_runner") for a in args)
            and any(a in ("hold", "hold-lock") for a in args)
            and (mdir in paths or (root in paths and recipe in args)))
    if not ours:
        raise RunnerError(f"the deploy lock is {_describe(info)}, but process {pid} is not this runner's lock "
                          f"holder for {recipe} ({' '.join(args)[:120] or 'no such process'}); not killing it")
    for sig, grace in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except OSError:
            pass
        fd = _acquire(path, fcntl.LOCK_EX, grace)
        if fd is not None:
            os.close(fd)
            return {"broken": True, "held": True, "holder": info, "signal": int(sig)}
    raise RunnerError(f"could not free the deploy lock ({_describe(info)})")


def _read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


# ------------------------------------------------------------------------------------- profiling
def _status_kb(key: str) -> int | None:
    for line in _read("/proc/self/status").splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return None


def _reset_hwm() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0) so the peak covers only what follows."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def import_runtime(fmt: str):
    """Import the runtime for `fmt` (measured apart from loading the model). Returns (name, loader)."""
    if fmt == "onnx":
        import onnxruntime as ort

        def load_onnx(path, threads, order):
            so = ort.SessionOptions()
            if threads:
                so.intra_op_num_threads = threads
            so.log_severity_level = 3
            sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
            names = [i.name for i in sess.get_inputs()]
            return lambda feeds: sess.run(None, {k: feeds[k] for k in names})[0]

        return "onnxruntime " + (_dist_version("onnxruntime") or "?"), load_onnx
    if fmt == "executorch":
        if _has_module("executorch.runtime"):
            import torch  # the official runtime speaks torch tensors
            from executorch.runtime import Runtime

            try:  # portable quantized kernels (embedding_byte: int8 embedding tables)
                import executorch.kernels.quantized  # noqa: F401
            except (ImportError, OSError):
                pass

            def load_et(path, threads, order):
                if threads:
                    try:
                        from executorch.extension.pybindings import portable_lib

                        portable_lib._unsafe_reset_threadpool(threads)
                    except (ImportError, AttributeError):
                        pass
                method = Runtime.get().load_program(path).load_method("forward")
                return lambda feeds: method.execute([torch.from_numpy(feeds[k]) for k in order])[0].numpy()

            return "executorch.runtime " + (_dist_version("executorch") or "?"), load_et
        if _has_module("executorch_numpy_runtime"):
            import executorch_numpy_runtime as en

            def load_np(path, threads, order):
                method = en.Runtime.get().load_program(path).load_method("forward")
                return lambda feeds: method([feeds[k] for k in order])[0]

            return "executorch-numpy-runtime " + (_dist_version("executorch-numpy-runtime") or "?"), load_np
        raise RunnerError("no ExecuTorch runtime on the device: pip install executorch-numpy-runtime "
                          "(Python >= 3.12, numpy only) or executorch")
    raise RunnerError(f"unknown format {fmt!r}")


class Session:
    """A loaded artifact: call with a dict of numpy arrays, get the first output."""

    def __init__(self, loader, path: str, threads: int, input_order: list):
        self._call = loader(path, threads, list(input_order))

    def __call__(self, feeds: dict):
        import numpy as np

        return np.asarray(self._call(feeds))


# ------------------------------------------------------------------------ output comparison (shared)
# The one implementation of "does this artifact compute what PyTorch computed": the build host
# (edgeslm.verify) and the device (parity below) both call compare_outputs, so they cannot disagree.
LOGIT_TASKS = ("sequence-classification", "fill-mask")
TOP1_MARGIN = 0.1  # top-1 is judged only where PyTorch's top-2 logits differ by at least this (nats;
# 0.1 is a 52.5% / 47.5% split of two classes): near-ties flip legitimately under int8


def output_rows(task: str, out, mask):
    """The vectors that are compared: one per batch row (embedding, classification) or one per real,
    unpadded token position (fill-mask)."""
    import numpy as np

    out = np.asarray(out, dtype=np.float64)
    if task == "fill-mask":
        keep = np.asarray(mask).astype(bool).reshape(-1)
        return out.reshape(-1, out.shape[-1])[keep]
    return out.reshape(-1, out.shape[-1])


def _row_cosines(a, b):
    import numpy as np

    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    dots = (a * b).sum(axis=1)
    both = (na > 0) & (nb > 0)
    out = np.where(both, dots / np.where(both, na * nb, 1.0), 0.0)
    same = (na == 0) & (nb == 0)
    return np.where(same, 1.0, out)


def _softmax(x):
    import numpy as np

    z = x - x.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def centered_cosine(ref, out) -> float:
    """Cosine between the artifact's and PyTorch's deviations from their own mean output over all rows:
    1 when the artifact responds to its inputs as PyTorch does, 0 for a constant (input-independent)
    output, whatever that constant is."""
    import numpy as np

    rc, oc = ref - ref.mean(axis=0), out - out.mean(axis=0)
    d = float(np.linalg.norm(rc) * np.linalg.norm(oc))
    if d == 0.0:
        return 1.0 if not np.any(rc) and not np.any(oc) else 0.0
    return float((rc * oc).sum() / d)


def compare_outputs(task: str, refs: list, outs: list, masks: list, limits: dict) -> dict:
    """Compare an artifact's outputs with PyTorch's over all samples. `limits` holds min_cosine,
    max_abs_error, min_top1_agreement, max_kl, min_centered_cosine and top1_margin (None = report only).
    Returns {"passed", "rows", "metrics": [{name, value, threshold, kind, passed}]}."""
    import numpy as np

    ref_rows, out_rows = [], []
    for ref, out, mask in zip(refs, outs, masks):
        ref, out = np.asarray(ref), np.asarray(out)
        if ref.shape != out.shape:
            raise RunnerError(f"output shape {tuple(out.shape)} differs from PyTorch's {tuple(ref.shape)}")
        ref_rows.append(output_rows(task, ref, mask))
        out_rows.append(output_rows(task, out, mask))
    r, o = np.concatenate(ref_rows), np.concatenate(out_rows)
    if not np.all(np.isfinite(o)):
        bad = int((~np.isfinite(o)).any(axis=1).sum())
        return {"passed": False, "rows": int(len(r)), "metrics": [
            _check("finite_outputs", 1.0 - bad / max(len(o), 1), 1.0, "min")]}
    cos = _row_cosines(r, o)
    metrics = [
        _check("cosine_min", float(cos.min()), limits.get("min_cosine"), "min"),
        _check("cosine_p5", float(np.percentile(cos, 5)), None, "min"),
        _check("cosine_mean", float(cos.mean()), None, "min"),
        _check("max_abs_error", float(np.abs(r - o).max()), limits.get("max_abs_error"), "max"),
    ]
    if len(r) >= 3:
        metrics.append(_check("centered_cosine", centered_cosine(r, o), limits.get("min_centered_cosine"), "min"))
    if task in LOGIT_TASKS:
        pr, po = _softmax(r), _softmax(o)
        kl = (pr * (np.log(np.clip(pr, 1e-30, None)) - np.log(np.clip(po, 1e-30, None)))).sum(axis=1)
        metrics += [_check("kl_max", float(kl.max()), limits.get("max_kl"), "max"),
                    _check("kl_mean", float(kl.mean()), None, "max"),
                    _check("prob_max_abs_error", float(np.abs(pr - po).max()), None, "max")]
        margin = limits.get("top1_margin")
        margin = TOP1_MARGIN if margin is None else margin
        top2 = np.sort(r, axis=1)[:, -2:] if r.shape[1] > 1 else np.concatenate([r, r - np.inf], axis=1)
        clear = (top2[:, 1] - top2[:, 0]) >= margin
        metrics.append(_check("top1_clear_rows", float(clear.sum()), None, "min"))
        if clear.any():
            agree = float((r[clear].argmax(1) == o[clear].argmax(1)).mean())
            metrics.append(_check("top1_agreement", agree, limits.get("min_top1_agreement"), "min"))
    return {"passed": all(m["passed"] is not False for m in metrics), "rows": int(len(r)), "metrics": metrics}


def _check(name: str, value: float, threshold, kind: str) -> dict:
    ok = None if threshold is None else bool(value >= threshold if kind == "min" else value <= threshold)
    return {"name": name, "value": float(value), "threshold": threshold, "kind": kind if threshold is not None
            else "info", "passed": ok}


def nearest_centroid(embeddings, centroids):
    """Class of each (normalised) embedding: the centroid with the highest cosine."""
    import numpy as np

    e = np.asarray(embeddings, dtype=np.float64)
    e = e / np.clip(np.linalg.norm(e, axis=1, keepdims=True), 1e-12, None)
    return (e @ np.asarray(centroids, dtype=np.float64).T).argmax(1)


def task_metric(metric: str, predicted, targets, classes: int) -> dict:
    """Accuracy and macro-F1 of class predictions; `value` is the one `metric` names."""
    import numpy as np

    pred, true = np.asarray(predicted).reshape(-1), np.asarray(targets).reshape(-1)
    acc = float((pred == true).mean()) if true.size else 0.0
    f1s = []
    for k in range(classes):
        tp = int(((pred == k) & (true == k)).sum())
        fp = int(((pred == k) & (true != k)).sum())
        fn = int(((pred != k) & (true == k)).sum())
        if tp + fp + fn:
            f1s.append(2 * tp / (2 * tp + fp + fn))
    macro = float(sum(f1s) / len(f1s)) if f1s else 0.0
    value = acc if metric == "accuracy" else macro
    return {"metric": metric, "value": value, "accuracy": acc, "macro_f1": macro, "n": int(true.size)}


def parity(session: Session, build_dir: str, manifest: dict, artifact: dict) -> dict:
    """Run the stored reference inputs here and compare with eager PyTorch (the same maths and
    thresholds as the build host) and with the build host's own run of this artifact."""
    import numpy as np

    ref = np.load(_inside(build_dir, manifest["reference"]["file"]), allow_pickle=False)
    out_name = manifest["outputs"][0]["name"]
    limits = manifest["reference"].get("thresholds", {})
    refs, outs, masks, host_err = [], [], [], 0.0
    for i in range(manifest["reference"]["samples"]):
        feeds = {spec["name"]: ref[f"input/{i}/{spec['name']}"] for spec in manifest["inputs"]}
        out = session(feeds)
        host = ref[f"host/{artifact['name']}/{i}/{out_name}"]
        if out.shape == host.shape:
            host_err = max(host_err, float(np.max(np.abs(out.astype(np.float64) - host))))
        refs.append(ref[f"output/{i}/{out_name}"])
        outs.append(out)
        masks.append(feeds["attention_mask"])
    result = compare_outputs(manifest["task"], refs, outs, masks, limits)
    result["metrics"].append({"name": "max_abs_diff_vs_build_host", "value": host_err, "threshold": None,
                              "kind": "info", "passed": None})
    return {"passed": result["passed"], "samples": len(refs), "rows": result["rows"],
            "against": "eager-pytorch-fp32", "metrics": result["metrics"]}


def evaluate(session: Session, build_dir: str, manifest: dict, artifact: dict, limit: int | None) -> dict:
    """The task metric measured here: the build's tokenized eval split through this artifact, scored
    with the same maths as on the build host; with the latency of each batch at its real length."""
    import numpy as np

    spec = manifest["reference"].get("eval")
    if not spec:
        raise RunnerError("this build carries no eval set: add [eval] (with on_device = true) to the recipe")
    ref = np.load(_inside(build_dir, manifest["reference"]["file"]), allow_pickle=False)
    rows = int(spec["rows"]) if not limit else min(int(limit), int(spec["rows"]))
    outs, times, lengths, done = [], [], [], 0
    for i in range(int(spec["batches"])):
        feeds = {s["name"]: ref[f"eval/{i}/{s['name']}"] for s in manifest["inputs"]}
        t = time.perf_counter()
        out = session(feeds)
        times.append((time.perf_counter() - t) * 1e3)
        outs.append(np.asarray(out, dtype=np.float64))
        lengths += [int(x) for x in feeds["attention_mask"].sum(-1)]
        done += out.shape[0]
        if done >= rows:
            break
    out = np.concatenate(outs)[:rows]
    if manifest["task"] == "embedding":
        pred = nearest_centroid(out, ref[f"eval/centroids/{artifact['name']}"])
    else:
        pred = out.argmax(-1)
    result = task_metric(spec["metric"], pred, ref["eval/targets"][:rows], int(spec["classes"]))
    host = (artifact.get("task_metric") or {}).get("value")
    result.update({"rows": rows, "of": int(spec["rows"]), "host_value": host if rows == int(spec["rows"]) else None,
                   "latency_ms": stats(times), "batch": int(manifest["shapes"].get("batch_size", 1)),
                   "tokens": {"median": float(np.median(lengths)), "max": int(max(lengths))}})
    return result


def stats(samples_ms: list) -> dict:
    import numpy as np

    a = np.asarray(samples_ms, dtype=np.float64)
    mean = float(a.mean())
    std = float(a.std(ddof=1)) if a.size > 1 else 0.0
    return {"n": int(a.size), "p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)),
            "p99": float(np.percentile(a, 99)), "mean": mean, "stdev": std,
            "cv": std / mean if mean > 0 else 0.0, "min": float(a.min()), "max": float(a.max())}


def profile(build_dir: str, artifact_name: str, threads: int, warmup: int, iters: int,
            min_seconds: float, seq_len: int | None, eval_rows: int | None = None) -> dict:
    """`eval_rows`: None = no task evaluation, 0 = the whole eval split, N = its first N texts."""
    import numpy as np

    if iters < 1 or warmup < 0 or threads < 0 or min_seconds < 0 or (seq_len is not None and seq_len < 1):
        raise RunnerError("--iters must be >= 1; --warmup, --threads and --min-seconds >= 0; --seq-len >= 1")

    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    threads = threads or os.cpu_count() or 1  # explicit, so the result states the threads really used
    with open(os.path.join(build_dir, "manifest.json")) as f:
        manifest = json.load(f)
    artifact = next((a for a in manifest["artifacts"] if a["name"] == artifact_name), None)
    if artifact is None:
        raise RunnerError(f"build has no artifact {artifact_name!r}: "
                          f"{', '.join(a['name'] for a in manifest['artifacts'])}")
    shapes = manifest["shapes"]
    seq = seq_len or shapes["max_seq_len"]
    if not shapes["min_seq_len"] <= seq <= shapes["max_seq_len"]:
        raise RunnerError(f"--seq-len {seq} is outside the model's [{shapes['min_seq_len']}, {shapes['max_seq_len']}]")
    thermal_before = thermal()
    rss_start = _status_kb("VmRSS")
    t0 = time.perf_counter()
    runtime_name, loader = import_runtime(artifact["format"])
    import_ms = (time.perf_counter() - t0) * 1e3
    gc.collect()
    rss_before = _status_kb("VmRSS")
    t0 = time.perf_counter()
    session = Session(loader, _inside(build_dir, artifact["file"]), threads,
                      artifact.get("export", {}).get("input_order") or [i["name"] for i in manifest["inputs"]])
    load_ms = (time.perf_counter() - t0) * 1e3
    rss_loaded = _status_kb("VmRSS")
    hwm_after_load = _status_kb("VmHWM")
    check = parity(session, build_dir, manifest, artifact)
    task = evaluate(session, build_dir, manifest, artifact, eval_rows or None) if eval_rows is not None else None

    # benchmark input: reference sample 0's tokens repeated to `seq` tokens, batch from the manifest
    ref = np.load(_inside(build_dir, manifest["reference"]["file"]), allow_pickle=False)
    batch = shapes.get("batch_size", 1)
    feeds = {}
    for spec in manifest["inputs"]:
        base = ref[f"input/0/{spec['name']}"][0]
        feeds[spec["name"]] = np.ascontiguousarray(np.tile(np.resize(base, seq)[None, :], (batch, 1)).astype(np.int64))
    feeds["attention_mask"][:] = 1
    reset = _reset_hwm()
    first = time.perf_counter()
    session(feeds)
    first_ms = (time.perf_counter() - first) * 1e3
    for _ in range(max(0, warmup - 1)):
        session(feeds)
    samples = []
    t_start = time.perf_counter()
    while len(samples) < iters or (time.perf_counter() - t_start) < min_seconds:
        t = time.perf_counter()
        session(feeds)
        samples.append((time.perf_counter() - t) * 1e3)
        if len(samples) >= 100000:
            break
    hwm_run = _status_kb("VmHWM")
    rss_after = _status_kb("VmRSS")
    thermal_after = thermal()
    lat = stats(samples)
    flags = []
    if lat["cv"] > NOISY_CV:
        flags.append("noisy")
    throttled = any((t.get("throttled") or {}).get("throttled_now") or (t.get("throttled") or {}).get("freq_capped")
                    for t in (thermal_before, thermal_after))
    if throttled:
        flags.append("throttled")
    if emulation():
        flags.append("emulated")
    if not check["passed"]:
        flags.append("parity-failed")
    return {
        "schema": PROFILE_SCHEMA, "runner_version": RUNNER_VERSION, "started_at": started,
        "build": {"recipe": manifest["recipe"]["name"], "target": manifest["target"]["name"],
                  "cache_key": manifest["cache_key"], "task": manifest["task"]},
        "artifact": {"name": artifact["name"], "format": artifact["format"], "file": artifact["file"],
                     "precision": artifact["precision"], "runtime": runtime_name,
                     "size": next((f["size"] for f in manifest["files"] if f["path"] == artifact["file"]), None)},
        "settings": {"threads": threads,
                     "warmup": warmup, "iters": iters, "min_seconds": min_seconds,
                     "seq_len": seq, "batch_size": batch},
        "parity": check,
        "task": task,
        "runtime_import_ms": import_ms, "load_ms": load_ms, "first_run_ms": first_ms,
        "latency_ms": lat, "samples_ms": samples,
        "memory_kb": {"rss_at_start": rss_start, "runtime_import_increase": (rss_before or 0) - (rss_start or 0),
                      "rss_before_load": rss_before, "rss_after_load": rss_loaded,
                      "load_increase": (rss_loaded or 0) - (rss_before or 0),
                      "peak_rss": max(hwm_after_load or 0, hwm_run or 0),
                      "peak_during_runs": hwm_run if reset else None,
                      "run_increase": ((hwm_run or 0) - (rss_loaded or 0)) if reset else None,
                      "rss_after_runs": rss_after},
        "thermal": {"before": thermal_before, "after": thermal_after},
        "device": {"arch": platform.machine(), "cpu_model": cpu_model(), "cores": os.cpu_count(),
                   "kernel": platform.release(), "python": platform.python_version(),
                   "runtimes": runtimes(), "emulated": emulation()},
        "flags": flags,
    }


# -------------------------------------------------------------------------------------------- cli
def _write_result(result: dict, out: str, workdir: str | None) -> dict:
    if workdir:  # results of a deployed model go to <workdir>/<recipe>/results/<plain name>
        root = os.path.realpath(os.path.expanduser(workdir))
        if not os.path.realpath(out).startswith(root + os.sep):
            raise RunnerError(f"refusing --out {out!r}: outside the workdir {root}")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    tmp = f"{out}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(result, f)
    os.replace(tmp, out)
    return {"written": out, "flags": result["flags"], "parity": result["parity"]["passed"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="device_runner.py", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("probe")
    p.add_argument("--workdir")
    p = sub.add_parser("hash")
    p.add_argument("files", nargs="*")
    p = sub.add_parser("verify")
    p.add_argument("dir")
    p.add_argument("--manifest-sha256")
    model_cmds = {}
    for name in ("status", "stage", "commit", "activate", "rollback", "hold", "break-lock"):
        p = model_cmds[name] = sub.add_parser(name)
        p.add_argument("--workdir", required=True)
        p.add_argument("recipe")
        if name in ("stage", "commit", "activate"):
            p.add_argument("version")
    for name in ("commit", "rollback"):
        model_cmds[name].add_argument("--manifest-sha256")
    model_cmds["rollback"].add_argument("--expect", help="the version previous must point to")
    p = model_cmds["hold"]
    p.add_argument("--pin", help="pin this version (or 'current') instead of taking the deploy lock")
    p.add_argument("--owner", default="unknown host")
    p.add_argument("--expire", type=float, default=30.0, help="release after this many seconds without a heartbeat")
    p.add_argument("--wait", type=float, default=0.0, help="wait this long for the lock")
    p = sub.add_parser("profile")
    p.add_argument("build_dir")
    p.add_argument("--artifact", required=True)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--iters", type=int, default=100)
    p.add_argument("--min-seconds", type=float, default=0.0)
    p.add_argument("--seq-len", type=int)
    p.add_argument("--out")
    p.add_argument("--workdir", help="with --out: the result must land inside this workdir")
    p.add_argument("--eval", type=int, default=None, metavar="ROWS",
                   help="also score the build's eval split here (0 = all of it, N = its first N texts)")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "probe":
            result = probe(args.workdir)
        elif args.cmd == "hash":
            result = hash_files(args.files)
        elif args.cmd == "verify":
            result = verify_dir(args.dir, args.manifest_sha256)
        elif args.cmd == "status":
            result = status(args.workdir, args.recipe)
        elif args.cmd == "stage":
            result = stage(args.workdir, args.recipe, args.version)
        elif args.cmd == "commit":
            result = commit(args.workdir, args.recipe, args.version, args.manifest_sha256)
        elif args.cmd == "activate":
            result = activate(args.workdir, args.recipe, args.version)
        elif args.cmd == "rollback":
            result = rollback(args.workdir, args.recipe, args.expect, args.manifest_sha256)
        elif args.cmd == "hold":
            return hold(args.workdir, args.recipe, args.pin, args.owner, args.expire, args.wait)
        elif args.cmd == "break-lock":
            result = break_lock(args.workdir, args.recipe)
        else:
            result = profile(args.build_dir, args.artifact, args.threads, args.warmup, args.iters,
                             args.min_seconds, args.seq_len, args.eval)
            if args.out:
                result = _write_result(result, args.out, args.workdir)
    except RunnerError as exc:
        print(json.dumps({"error": str(exc)}))
        return 1
    except ImportError as exc:
        print(json.dumps({"error": f"missing Python package on the device: {exc.name or exc} "
                                   f"(install it: {sys.executable} -m pip install {_pip_name(exc.name)})"}))
        return 1
    except (OSError, KeyError, TypeError, ValueError) as exc:
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        return 1
    print(json.dumps(result))
    return 0


def _pip_name(module) -> str:
    return {"executorch_numpy_runtime": "executorch-numpy-runtime", None: "numpy"}.get(module, module)


if __name__ == "__main__":
    sys.exit(main())
