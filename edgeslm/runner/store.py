"""Deployed versions on the device: checked names and paths, staging, commit, atomic switch, rollback, prune."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil

from edgeslm.runner.errors import RunnerError


# Nothing this runner is given is trusted: not its arguments, not the manifest.json files it reads.
# Every path it builds is a plain name or a plain relative path that resolves inside the model folder
# <workdir>/<recipe>; it deletes only folders of the kinds it makes there (versions/<hex>,
# .staging-<hex>, .trash-*), never anything outside its workdir.
# The commands that change a model folder under the deploy lock (stage, commit, activate, rollback) take
# `guard`, a check run with that folder before each change (runner.locks.guard: this deploy still holds
# the lock); it raises RunnerError when the lock was lost, and then nothing is changed.
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


def checked_version(value: str) -> str:
    if not isinstance(value, str) or not VERSION_RE.fullmatch(value):
        raise RunnerError(f"refusing version {value!r}: not 16 hex digits")
    return value


def _rel_path(value) -> str:
    """A plain relative POSIX path: no '..', '.', empty parts, leading '/', backslash or NUL."""
    if (not isinstance(value, str) or not value or value.startswith("/") or "\\" in value
            or any(ord(c) < 32 for c in value) or any(p in ("", ".", "..") for p in value.split("/"))):
        raise RunnerError(f"refusing path {value!r}: not a plain relative path")
    return value


def inside(base: str, rel: str) -> str:
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
                    p = inside(folder, e["path"])
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
            p = inside(folder, entry["path"])
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


def stage(workdir: str, recipe: str, version: str, guard) -> dict:
    """Prepare .staging-VERSION (which already holds the host's manifest.json): reuse files the device
    has with the same sha256 (copied from current or previous) and list what must be sent. Staging
    folders of other versions are left-overs of failed deploys (we hold the deploy lock): removed."""
    mdir = model_dir(workdir, recipe)
    staging = os.path.join(mdir, ".staging-" + checked_version(version))
    guard(mdir)
    _prune_staging(mdir, keep=staging)
    _drop_symlinks(staging)
    try:
        entries = _manifest_files(staging)
    except RunnerError:
        _safe_rmtree(mdir, staging)
        raise
    known = {}
    for link in ("current", "previous"):
        v = link_version(mdir, link)
        if not v:
            continue
        folder = os.path.join(mdir, "versions", v)
        try:
            for e in _manifest_files(folder):
                known.setdefault(e["sha256"], inside(folder, e["path"]))
        except RunnerError:
            continue
    need, reused, reused_bytes = [], 0, 0
    for e in entries:
        dst = inside(staging, e["path"])
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


def commit(workdir: str, recipe: str, version: str, manifest_sha256: str | None, guard) -> dict:
    """Verify every file of the staged version (against the host's build), then move it into
    versions/ (an atomic rename). A staging folder that fails verification is removed."""
    mdir = model_dir(workdir, recipe)
    staging = os.path.join(mdir, ".staging-" + checked_version(version))
    guard(mdir)
    _drop_symlinks(staging)
    check = verify_dir(staging, manifest_sha256)
    guard(mdir)  # hashing takes a while: still ours?
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


def link_version(mdir: str, name: str):
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
    return {"current": link_version(mdir, "current"), "previous": link_version(mdir, "previous"),
            "versions": sorted(v for v in (os.listdir(versions) if os.path.isdir(versions) else [])
                               if VERSION_RE.fullmatch(v)),
            "staging": sorted(n for n in os.listdir(mdir) if n.startswith(".staging-"))
            if os.path.isdir(mdir) else []}


def activate(workdir: str, recipe: str, version: str, guard) -> dict:
    """current -> versions/VERSION; the old current becomes previous; older versions are pruned."""
    mdir = model_dir(workdir, recipe)
    target = "versions/" + checked_version(version)
    if not os.path.isfile(os.path.join(mdir, "versions", version, "manifest.json")):
        raise RunnerError(f"no complete version {version} in {mdir}")
    guard(mdir)
    old = link_version(mdir, "current")
    if old and old != version:
        _switch(os.path.join(mdir, "previous"), "versions/" + old)
    _switch(os.path.join(mdir, "current"), target)
    prev = link_version(mdir, "previous")
    pruned = _prune(mdir)
    return {"current": target, "previous": ("versions/" + prev) if prev else None, "pruned": pruned}


def pin_path(mdir: str, version: str) -> str:
    return os.path.join(mdir, ".pins", version)


def _prune(mdir: str) -> list:
    """Keep current, previous and versions a profile has pinned; remove other versions, staging
    folders of failed deploys and left-over temporary links."""
    import fcntl

    keep = {link_version(mdir, "current"), link_version(mdir, "previous")}
    versions = os.path.join(mdir, "versions")
    pruned = []
    for name in sorted(os.listdir(versions)) if os.path.isdir(versions) else []:
        if name in keep or not VERSION_RE.fullmatch(name):
            continue
        pin = pin_path(mdir, name)
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


def rollback(workdir: str, recipe: str, expect: str | None, manifest_sha256: str | None, guard) -> dict:
    """Switch current back to previous after verifying previous (against the host's build when given,
    else against its own manifest); refuse if it fails."""
    mdir = model_dir(workdir, recipe)
    guard(mdir)
    previous = link_version(mdir, "previous")
    if not previous or not os.path.isdir(os.path.join(mdir, "versions", previous)):
        raise RunnerError(f"nothing to roll back to in {mdir}: no previous version")
    if expect and previous != expect:
        raise RunnerError(f"previous version changed while rolling back (now {previous}); try again")
    check = verify_dir(os.path.join(mdir, "versions", previous), manifest_sha256)
    if not check["ok"]:
        bad = ", ".join(f"{b['path']} ({b['problem']})" for b in check["bad"][:3])
        raise RunnerError(f"previous version {previous} failed verification against the "
                          f"{check.get('against', 'device manifest')}: {bad}; not switching to it")
    guard(mdir)  # verifying takes a while: still ours?
    current = link_version(mdir, "current")
    _switch(os.path.join(mdir, "current"), "versions/" + previous)
    if current:
        _switch(os.path.join(mdir, "previous"), "versions/" + current)
    return {"current": "versions/" + previous, "previous": ("versions/" + current) if current else None,
            "verified_against": check["against"], "files": check["files"]}
