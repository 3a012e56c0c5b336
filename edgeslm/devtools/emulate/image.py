"""The emulated device's image: an aarch64 root filesystem, qemu-aarch64, the device's Python packages, and
the wrappers that run them (see edgeslm.devtools.emulate)."""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from edgeslm.errors import UserError

RECIPE_VERSION = 1
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
ROOTFS_SUITE = "trixie"
ROOTFS_PACKAGES = ("python3.13", "libstdc++6", "libgcc-s1", "coreutils")
QEMU_SUITE = "bookworm-backports"
QEMU_PACKAGE = "qemu-user"
PYTHON_VERSION = "3.13"
WHEELS = ("numpy", "onnxruntime", "executorch-numpy-runtime", "psutil")
# pip does not widen manylinux tags for a foreign --platform: list every glibc up to trixie's 2.41
PLATFORMS = ("manylinux2014_aarch64",) + tuple(f"manylinux_2_{m}_aarch64" for m in range(41, 16, -1))
SSHD = "/usr/sbin/sshd"
SFTP_SERVERS = ("/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server",
                "/usr/lib/ssh/sftp-server", "/usr/libexec/sftp-server")
WRAPPED = {"uname": "usr/bin/uname", "nproc": "usr/bin/nproc", "arch": "usr/bin/arch"}
MARKER = "etc/edgeslm-emulated"
SMOKE = ("import platform, numpy, onnxruntime, executorch_numpy_runtime, psutil; "
         "assert platform.machine() == 'aarch64', platform.machine(); "
         "onnxruntime.SessionOptions(); print(numpy.__version__, onnxruntime.__version__)")


class EmulatorError(UserError):
    """The emulated device could not be built or started; the message says which step and why."""


def _recipe() -> dict:
    return {"version": RECIPE_VERSION, "rootfs": [ROOTFS_SUITE, "arm64", *ROOTFS_PACKAGES],
            "qemu": [QEMU_SUITE, QEMU_PACKAGE], "python": PYTHON_VERSION, "wheels": list(WHEELS)}


@dataclass(frozen=True)
class Image:
    """A built image: `rootfs` (aarch64 Debian files), `site` (aarch64 site-packages), `qemu`."""

    root: Path
    info: dict = field(default_factory=dict, compare=False)

    @property
    def rootfs(self) -> Path:
        return self.root / "rootfs"

    @property
    def site(self) -> Path:
        return self.root / "site-packages"

    @property
    def qemu(self) -> Path:
        return self.root / "qemu-aarch64"

    @property
    def python(self) -> Path:
        return self.rootfs / "usr" / "bin" / f"python{PYTHON_VERSION}"

    def env(self, cpu: str) -> dict[str, str]:
        """Environment for the emulated python (used by the wrappers and the build's smoke test)."""
        return {"QEMU_CPU": cpu, "EDGESLM_EMULATED": f"qemu-aarch64:{cpu}",
                "PYTHONHOME": str(self.rootfs / "usr"), "PYTHONPATH": str(self.site),
                "PYTHONNOUSERSITE": "1"}


# ---------------------------------------------------------------------------------------------
# building the image


def ensure_image(cache_dir: Path, cpu: str = "cortex-a72", say=None) -> Image:
    """The image under `cache_dir`, built on first use (about a minute and ~300 MB), else < 1 s.

    Safe to call from several processes at once: one builds under a lock, the others wait and reuse
    it. A build goes to a temporary folder and is renamed into place only after a smoke test (the
    emulated python imports numpy, onnxruntime, executorch_numpy_runtime and psutil with QEMU_CPU=cpu),
    so an interrupted build leaves nothing half-made behind. `say(line)` hears each step of a build.
    """
    cache_dir = Path(cache_dir).expanduser().absolute()
    recipe = _recipe()
    name = f"aarch64-{ROOTFS_SUITE}-py{PYTHON_VERSION}-v{RECIPE_VERSION}"
    final = cache_dir / name
    image = _load(final, recipe)
    if image is not None and Path(SSHD).exists():
        return image
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _ensure_sshd()
        image = _load(final, recipe)
        if image is not None:
            return image
        for stale in cache_dir.glob(".build-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if final.exists():
            shutil.rmtree(final)
        build = Path(tempfile.mkdtemp(prefix=".build-", dir=cache_dir))
        try:
            info = _build(build, cpu, say or (lambda line: None))
            info["recipe"] = recipe
            (build / "STAMP.json").write_text(json.dumps(info, indent=1) + "\n")
            build.rename(final)
        finally:
            shutil.rmtree(build, ignore_errors=True)
        return Image(final, info)


def _load(root: Path, recipe: dict) -> Image | None:
    try:
        info = json.loads((root / "STAMP.json").read_text())
    except (OSError, ValueError):
        return None
    image = Image(root, info)
    if info.get("recipe") != recipe or not (image.qemu.exists() and image.python.exists()):
        return None
    return image


def run_step(cmd: list[str], what: str, **kw) -> subprocess.CompletedProcess:
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, **kw)
    except FileNotFoundError as e:
        raise EmulatorError(f"emulated device: {what}: '{cmd[0]}' not found ({e})") from None
    if res.returncode != 0:
        tail = "\n".join((res.stdout + res.stderr).strip().splitlines()[-15:])
        raise EmulatorError(f"emulated device: {what} failed (exit {res.returncode}): "
                            f"{shlex.join(cmd)}\n{tail}")
    return res


def _ensure_sshd() -> None:
    if Path(SSHD).exists():
        return
    if os.geteuid() != 0:
        raise EmulatorError(f"emulated device: {SSHD} is missing; install it with "
                            "`sudo apt-get install -y --no-install-recommends openssh-server`")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    run_step(["apt-get", "install", "-y", "--no-install-recommends", "openssh-server"],
         "installing openssh-server on the host", env=env)


def debian_mirror(sources: Path = Path("/etc/apt")) -> str:
    """The Debian archive this machine's APT takes its packages from (its sources, deb822 or one-line), which the
    private setups below use for other suites and architectures; $EDGESLM_DEBIAN_MIRROR overrides it."""
    import re

    own = os.environ.get("EDGESLM_DEBIAN_MIRROR")
    if own:
        return own
    files = sorted((sources / "sources.list.d").glob("*.sources")) + [sources / "sources.list"]
    files += sorted((sources / "sources.list.d").glob("*.list"))
    for f in files:
        try:
            text = f.read_text(errors="replace")
        except OSError:
            continue
        for uri in re.findall(r"^URIs:\s*(\S+)", text, re.M) + re.findall(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)", text, re.M):
            if uri.rstrip("/").endswith("/debian"):
                return uri.rstrip("/")
    raise RuntimeError("no Debian archive in this machine's APT sources (/etc/apt); set EDGESLM_DEBIAN_MIRROR to one")


def private_apt(workdir: Path, arch: str, suite: str) -> tuple[list[str], dict[str, str]]:
    """A private APT setup (own arch, lists, cache, sources; no system config) -> (argv, env)."""
    for sub in ("state/lists/partial", "cache/archives/partial", "etc/apt.conf.d",
                "etc/sources.list.d", "etc/preferences.d"):
        (workdir / sub).mkdir(parents=True, exist_ok=True)
    (workdir / "state" / "status").touch()
    (workdir / "etc" / "sources.list").write_text(
        f"deb [arch={arch} signed-by={KEYRING}] {debian_mirror()} {suite} main\n")
    d = workdir
    conf = f"""\
APT::Architecture "{arch}";
APT::Architectures {{ "{arch}"; }};
APT::Install-Recommends "false";
APT::Sandbox::User "{'root' if os.geteuid() == 0 else getpass.getuser()}";
Dir::State "{d}/state";
Dir::State::status "{d}/state/status";
Dir::Cache "{d}/cache";
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
Dir::Etc "{d}/etc";
Dir::Etc::main "{d}/etc/apt.conf";
Dir::Etc::Parts "{d}/etc/apt.conf.d";
Dir::Etc::SourceList "{d}/etc/sources.list";
Dir::Etc::SourceParts "{d}/etc/sources.list.d";
Dir::Etc::Preferences "{d}/etc/preferences";
Dir::Etc::PreferencesParts "{d}/etc/preferences.d";
Dir::Etc::TrustedParts "/etc/apt/trusted.gpg.d";
Dir::Log "{d}/log";
Acquire::Languages "none";
Acquire::Check-Valid-Until "false";
Acquire::Retries "3";
Debug::NoLocking "true";
"""
    (d / "apt.conf").write_text(conf)
    (d / "etc" / "apt.conf").touch()
    env = {k: v for k, v in os.environ.items() if not k.startswith("APT_")}
    env.update(APT_CONFIG=str(d / "apt.conf"), DEBIAN_FRONTEND="noninteractive", LC_ALL="C")
    return ["apt-get", "-q", "-o", "APT::Get::Assume-Yes=true"], env


def _fetch_rootfs_debs(work: Path) -> list[Path]:
    apt, env = private_apt(work, "arm64", ROOTFS_SUITE)
    run_step(apt + ["update"], f"apt-get update ({ROOTFS_SUITE} arm64)", env=env)
    run_step(apt + ["install", "--download-only", *ROOTFS_PACKAGES],
         f"downloading {ROOTFS_SUITE} arm64 packages", env=env)
    return sorted((work / "cache" / "archives").glob("*.deb"))


def _fetch_qemu(work: Path, dest: Path) -> str:
    apt, env = private_apt(work, "amd64", QEMU_SUITE)
    run_step(apt + ["update"], f"apt-get update ({QEMU_SUITE})", env=env)
    (work / "dl").mkdir()
    run_step(apt + ["download", f"{QEMU_PACKAGE}/{QEMU_SUITE}"], f"downloading {QEMU_PACKAGE}",
         env=env, cwd=work / "dl")
    deb = next((work / "dl").glob("*.deb"))
    out = work / "x"
    out.mkdir()
    tar = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    run_step(["tar", "-x", "-C", str(out), "./usr/bin/qemu-aarch64"], "extracting qemu-aarch64",
         stdin=tar.stdout)
    tar.wait()
    shutil.move(str(out / "usr" / "bin" / "qemu-aarch64"), dest)
    dest.chmod(0o755)
    return deb.name


def _pip_wheels(site: Path) -> None:
    cmd = [sys.executable, "-m", "pip", "install", "--target", str(site), "--only-binary=:all:",
           "--python-version", PYTHON_VERSION, "--implementation", "cp", "--no-compile",
           "--disable-pip-version-check", "--no-warn-script-location", "--progress-bar", "off", "-q"]
    for p in PLATFORMS:
        cmd += ["--platform", p]
    if sys.version_info[:2] != tuple(map(int, PYTHON_VERSION.split("."))):
        cmd.append("--ignore-requires-python")
    run_step(cmd + list(WHEELS), "pip install of aarch64 wheels")
    shutil.rmtree(site / "bin", ignore_errors=True)  # host-python console scripts: useless here


def _extract(debs: list[Path], rootfs: Path) -> None:
    rootfs.mkdir()
    for deb in debs:
        run_step(["dpkg-deb", "-x", str(deb), str(rootfs)], f"extracting {deb.name}")
    # trixie is merged-/usr: the loader is looked up as /lib/ld-linux-aarch64.so.1
    for top in ("bin", "sbin", "lib"):
        link, target = rootfs / top, rootfs / "usr" / top
        if link.is_dir() and not link.is_symlink():
            shutil.copytree(link, target, symlinks=True, dirs_exist_ok=True)
            shutil.rmtree(link)
        if not link.exists():
            link.symlink_to(f"usr/{top}")
    # Paths that exist in ROOTFS shadow the host's for emulated programs. Shadow the host's python
    # dist-packages folders and its x86 ld.so.cache (an empty cache file is ignored by the loader).
    for sub in ("usr/lib/python3/dist-packages", f"usr/local/lib/python{PYTHON_VERSION}/dist-packages"):
        (rootfs / sub).mkdir(parents=True, exist_ok=True)
    (rootfs / "etc" / "ld.so.cache").write_bytes(b"")
    (rootfs / MARKER).write_text("qemu-aarch64\n")


def _du(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, f)).st_blocks * 512
    return total


def _build(build: Path, cpu: str, say) -> dict:
    t0 = time.monotonic()

    def step(n: int, what: str) -> None:
        say(f"emulated image [{n}/3] {what} ({time.monotonic() - t0:.0f} s so far; the first build takes ~1 min)")

    image = Image(build)
    work = build / "work"
    (work / "arm64").mkdir(parents=True)
    (work / "qemu").mkdir()
    step(1, "downloading Debian arm64 packages, qemu-user and aarch64 wheels (~300 MB)")
    with ThreadPoolExecutor(3) as pool:  # three downloads, mostly network-bound
        debs = pool.submit(_fetch_rootfs_debs, work / "arm64")
        qemu = pool.submit(_fetch_qemu, work / "qemu", image.qemu)
        wheels = pool.submit(_pip_wheels, image.site)
        debs, qemu_deb, _ = debs.result(), qemu.result(), wheels.result()
    step(2, f"extracting {len(debs)} packages")
    _extract(debs, image.rootfs)
    shutil.rmtree(work)
    step(3, "smoke test: the emulated python imports numpy, onnxruntime and the ExecuTorch runtime")
    # Smoke test; bytecode writing is on, so the imports the device needs leave their .pyc behind.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "QEMU_"))}
    env.update(image.env(cpu))
    t1 = time.monotonic()
    res = run_step([str(image.qemu), "-L", str(image.rootfs), str(image.python), "-c", SMOKE],
               "smoke test of the emulated python", env=env)
    numpy_v, ort_v = res.stdout.split()[-2:]
    return {"built": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "build_seconds": round(time.monotonic() - t0, 1),
            "smoke_seconds": round(time.monotonic() - t1, 1), "size_bytes": _du(build),
            "debs": [d.name for d in debs], "qemu_deb": qemu_deb,
            "versions": {"numpy": numpy_v, "onnxruntime": ort_v}, "cpu_tested": cpu}


# ---------------------------------------------------------------------------------------------
# running a device


def write_script(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


def wrappers(image: Image, bindir: Path, cpu: str) -> Path:
    bindir.mkdir(parents=True, exist_ok=True)
    q = shlex.quote
    env = image.env(cpu)
    head = (f"#!/bin/sh\n# edgeslm emulated aarch64 ({cpu}): generated by edgeslm.emulate\n"
            f"export QEMU_CPU={q(cpu)} EDGESLM_EMULATED={q(env['EDGESLM_EMULATED'])}\n")
    python = bindir / "python3"
    # -0 makes argv[0] (hence sys.executable) this wrapper, so the emulated python can start itself.
    write_script(python, head + (
        f"export PYTHONHOME={q(env['PYTHONHOME'])} PYTHONNOUSERSITE=1\n"
        "unset PYTHONDONTWRITEBYTECODE PYTHONSTARTUP\n"
        f'case ":${{PYTHONPATH:-}}:" in *:{q(str(image.site))}:*) ;; '
        f'*) PYTHONPATH="${{PYTHONPATH:+$PYTHONPATH:}}"{q(str(image.site))} ;; esac\n'
        "export PYTHONPATH\n"
        f'case ":$PATH:" in *:{q(str(bindir))}:*) ;; *) PATH={q(str(bindir))}:"$PATH"; export PATH ;; esac\n'
        f'exec {q(str(image.qemu))} -L {q(str(image.rootfs))} -0 {q(str(python))} '
        f'{q(str(image.python))} "$@"\n'))
    for alias in ("python", f"python{PYTHON_VERSION}"):
        link = bindir / alias
        if not link.is_symlink():
            link.symlink_to("python3")
    for name, rel in WRAPPED.items():
        write_script(bindir / name, head + f'exec {q(str(image.qemu))} -L {q(str(image.rootfs))} '
                      f'{q(str(image.rootfs / rel))} "$@"\n')
    return python
