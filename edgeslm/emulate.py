"""An emulated aarch64 "device" reachable over SSH on loopback, for users without a Pi and for CI.

Two steps:

    image = ensure_image(cache_dir)                     # builds once (~1 min), then < 1 s
    with start_device(image, workdir, port, authorized_keys) as dev:
        ...  # ssh -p dev.port USER@127.0.0.1 'uname -m'  ->  aarch64

How it works. `ensure_image` assembles under `cache_dir` an aarch64 root filesystem from Debian
trixie arm64 packages (python3.13, libstdc++, coreutils; fetched with a *private* APT configuration,
the system's APT setup is never touched), aarch64 wheels of numpy / onnxruntime /
executorch-numpy-runtime / psutil installed with `pip --target --platform manylinux..._aarch64`, and
the statically linked `qemu-aarch64` taken out of Debian bookworm-backports' `qemu-user` .deb.

`start_device` runs the host's own `/usr/sbin/sshd` on 127.0.0.1 with a config of its own. Every
SSH session goes through a ForceCommand script that puts wrappers named python3 / uname / nproc /
arch first in PATH; each wrapper runs the aarch64 program under `qemu-aarch64 -L ROOTFS`. The
emulated processes see the host's file system (qemu only redirects paths that exist inside ROOTFS),
so a file pushed over SFTP to /tmp/x is /tmp/x for the emulated python too. SFTP is served by the
host's sftp-server.

Sessions carry `EDGESLM_EMULATED=qemu-aarch64:<cpu>` and the emulated python can also read
`/etc/edgeslm-emulated` (it exists only inside ROOTFS), so the on-device runner labels its timings
as emulated. Emulation is 20-170x slower than the real thing: use it to prove that ARM artifacts
load and give the right answers, never for latency.

Limits: the emulated python's `sys.executable` is the wrapper (a host shell script), so
`subprocess.run([sys.executable, ...])` works, but aarch64 binaries other than the wrapped ones
cannot be exec'd directly (no binfmt_misc is registered; host x86 programs run natively).
Only stdlib is imported here; the build shells out to apt-get, dpkg-deb, pip and ssh-keygen.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from edgeslm.errors import UserError

RECIPE_VERSION = 1
DEBIAN_MIRROR = "http://deb.debian.org/debian"
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


def ensure_image(cache_dir: Path, cpu: str = "cortex-a72") -> Image:
    """The image under `cache_dir`, built on first use (about a minute and ~300 MB), else < 1 s.

    Safe to call from several processes at once: one builds under a lock, the others wait and reuse
    it. A build goes to a temporary folder and is renamed into place only after a smoke test (the
    emulated python imports numpy, onnxruntime, executorch_numpy_runtime and psutil with QEMU_CPU=cpu),
    so an interrupted build leaves nothing half-made behind.
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
            info = _build(build, cpu)
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


def _run(cmd: list[str], what: str, **kw) -> subprocess.CompletedProcess:
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
    _run(["apt-get", "install", "-y", "--no-install-recommends", "openssh-server"],
         "installing openssh-server on the host", env=env)


def _apt(workdir: Path, arch: str, suite: str) -> tuple[list[str], dict[str, str]]:
    """A private APT setup (own arch, lists, cache, sources; no system config) -> (argv, env)."""
    for sub in ("state/lists/partial", "cache/archives/partial", "etc/apt.conf.d",
                "etc/sources.list.d", "etc/preferences.d"):
        (workdir / sub).mkdir(parents=True, exist_ok=True)
    (workdir / "state" / "status").touch()
    (workdir / "etc" / "sources.list").write_text(
        f"deb [arch={arch} signed-by={KEYRING}] {DEBIAN_MIRROR} {suite} main\n")
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
    apt, env = _apt(work, "arm64", ROOTFS_SUITE)
    _run(apt + ["update"], f"apt-get update ({ROOTFS_SUITE} arm64)", env=env)
    _run(apt + ["install", "--download-only", *ROOTFS_PACKAGES],
         f"downloading {ROOTFS_SUITE} arm64 packages", env=env)
    return sorted((work / "cache" / "archives").glob("*.deb"))


def _fetch_qemu(work: Path, dest: Path) -> str:
    apt, env = _apt(work, "amd64", QEMU_SUITE)
    _run(apt + ["update"], f"apt-get update ({QEMU_SUITE})", env=env)
    (work / "dl").mkdir()
    _run(apt + ["download", f"{QEMU_PACKAGE}/{QEMU_SUITE}"], f"downloading {QEMU_PACKAGE}",
         env=env, cwd=work / "dl")
    deb = next((work / "dl").glob("*.deb"))
    out = work / "x"
    out.mkdir()
    tar = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    _run(["tar", "-x", "-C", str(out), "./usr/bin/qemu-aarch64"], "extracting qemu-aarch64",
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
    _run(cmd + list(WHEELS), "pip install of aarch64 wheels")
    shutil.rmtree(site / "bin", ignore_errors=True)  # host-python console scripts: useless here


def _extract(debs: list[Path], rootfs: Path) -> None:
    rootfs.mkdir()
    for deb in debs:
        _run(["dpkg-deb", "-x", str(deb), str(rootfs)], f"extracting {deb.name}")
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


def _build(build: Path, cpu: str) -> dict:
    t0 = time.monotonic()
    image = Image(build)
    work = build / "work"
    (work / "arm64").mkdir(parents=True)
    (work / "qemu").mkdir()
    with ThreadPoolExecutor(3) as pool:  # three downloads, mostly network-bound
        debs = pool.submit(_fetch_rootfs_debs, work / "arm64")
        qemu = pool.submit(_fetch_qemu, work / "qemu", image.qemu)
        wheels = pool.submit(_pip_wheels, image.site)
        debs, qemu_deb, _ = debs.result(), qemu.result(), wheels.result()
    _extract(debs, image.rootfs)
    shutil.rmtree(work)
    # Smoke test; bytecode writing is on, so the imports the device needs leave their .pyc behind.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "QEMU_"))}
    env.update(image.env(cpu))
    t1 = time.monotonic()
    res = _run([str(image.qemu), "-L", str(image.rootfs), str(image.python), "-c", SMOKE],
               "smoke test of the emulated python", env=env)
    numpy_v, ort_v = res.stdout.split()[-2:]
    return {"built": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "build_seconds": round(time.monotonic() - t0, 1),
            "smoke_seconds": round(time.monotonic() - t1, 1), "size_bytes": _du(build),
            "debs": [d.name for d in debs], "qemu_deb": qemu_deb,
            "versions": {"numpy": numpy_v, "onnxruntime": ort_v}, "cpu_tested": cpu}


# ---------------------------------------------------------------------------------------------
# running a device


def _write_script(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


def _wrappers(image: Image, bindir: Path, cpu: str) -> Path:
    bindir.mkdir(parents=True, exist_ok=True)
    q = shlex.quote
    env = image.env(cpu)
    head = (f"#!/bin/sh\n# edgeslm emulated aarch64 ({cpu}): generated by edgeslm.emulate\n"
            f"export QEMU_CPU={q(cpu)} EDGESLM_EMULATED={q(env['EDGESLM_EMULATED'])}\n")
    python = bindir / "python3"
    # -0 makes argv[0] (hence sys.executable) this wrapper, so the emulated python can start itself.
    _write_script(python, head + (
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
        _write_script(bindir / name, head + f'exec {q(str(image.qemu))} -L {q(str(image.rootfs))} '
                      f'{q(str(image.rootfs / rel))} "$@"\n')
    return python


class EmulatedDevice:
    """A running emulated device: an sshd on 127.0.0.1:`port` whose sessions run as aarch64."""

    def __init__(self, proc: subprocess.Popen, port: int, user: str, host_public_key_line: str,
                 python_path: Path, workdir: Path, cpu: str, log: Path):
        self.proc, self.port, self.user = proc, port, user
        self.host = "127.0.0.1"
        self.host_public_key_line = host_public_key_line
        self.python_path, self.workdir, self.cpu, self.log = python_path, workdir, cpu, log

    @property
    def pid(self) -> int:
        return self.proc.pid

    def write_known_hosts(self, path: Path) -> Path:
        path = Path(path)
        path.write_text(self.host_public_key_line + "\n")
        return path

    def stop(self, timeout: float = 5.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> EmulatedDevice:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.proc.poll() is None else f"stopped ({self.proc.returncode})"
        return f"<EmulatedDevice aarch64/{self.cpu} {self.user}@{self.host}:{self.port} {state}>"


def start_device(image: Image, workdir: Path, port: int, authorized_keys: Path,
                 host_key: Path | None = None, cpu: str = "cortex-a72",
                 user: str | None = None, timeout: float = 10.0) -> EmulatedDevice:
    """Start a host sshd on 127.0.0.1:`port` whose sessions run as an aarch64 `cpu` machine.

    `workdir` receives the sshd config, its host key (generated unless `host_key` is given), log,
    pid file, the session script and the wrappers (bin/python3, uname, nproc, arch). Only `user`
    (default: the current user) may log in, with a key from `authorized_keys`.
    """
    workdir = Path(workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    authorized_keys = Path(authorized_keys).absolute()
    user = user or getpass.getuser()
    if not authorized_keys.is_file():
        raise EmulatorError(f"emulated device: authorized keys file {authorized_keys} does not exist")
    if not Path(SSHD).exists():
        raise EmulatorError(f"emulated device: {SSHD} is missing (ensure_image installs it as root, or "
                            "`apt-get install -y --no-install-recommends openssh-server`)")
    sftp = next((p for p in SFTP_SERVERS if Path(p).exists()), None)
    if sftp is None:
        raise EmulatorError("emulated device: no sftp-server found (tried " + ", ".join(SFTP_SERVERS)
                            + "); install openssh-sftp-server")
    if host_key is None:
        host_key = workdir / "ssh_host_ed25519_key"
        if not host_key.exists():
            _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgeslm-emulated",
                  "-f", str(host_key)], "generating the host key")
    host_key = Path(host_key).absolute()
    pub = _run(["ssh-keygen", "-y", "-f", str(host_key)], "reading the host public key").stdout.split()
    host_line = f"[127.0.0.1]:{port} {pub[0]} {pub[1]}"

    python = _wrappers(image, workdir / "bin", cpu)
    q = shlex.quote
    session = workdir / "session"
    _write_script(session, f"""#!/bin/sh
# ForceCommand of the emulated device: wrappers first in PATH, sftp to the host's sftp-server.
PATH={q(str(workdir / 'bin'))}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH QEMU_CPU={q(cpu)} EDGESLM_EMULATED={q('qemu-aarch64:' + cpu)}
unset PYTHONDONTWRITEBYTECODE
case "${{SSH_ORIGINAL_COMMAND:-}}" in
  "") exec /bin/bash --noprofile --norc -i ;;
  internal-sftp|*/sftp-server|sftp-server) exec {q(sftp)} ;;
  *) exec /bin/bash --noprofile --norc -c "$SSH_ORIGINAL_COMMAND" ;;
esac
""")
    pidfile, log, conf = workdir / "sshd.pid", workdir / "sshd.log", workdir / "sshd_config"
    # SHLVL=1 stops the login shell that runs ForceCommand from sourcing ~/.bashrc (bash does that
    # for ssh commands at shell level 1): a bashrc may print (breaking sftp) or rewrite PATH.
    conf.write_text(f"""\
# edgeslm emulated aarch64 device ({cpu}); generated by edgeslm.emulate
Port {port}
ListenAddress 127.0.0.1
AddressFamily inet
HostKey {host_key}
PidFile {pidfile}
AuthorizedKeysFile {authorized_keys}
AllowUsers {user}
AuthenticationMethods publickey
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
UseDNS no
PrintMotd no
PrintLastLog no
X11Forwarding no
AllowAgentForwarding no
AllowTcpForwarding no
PermitTunnel no
MaxStartups 64:30:128
MaxSessions 64
SetEnv SHLVL=1 QEMU_CPU={cpu} EDGESLM_EMULATED=qemu-aarch64:{cpu}
Subsystem sftp {sftp}
ForceCommand {session}
""")
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation directory
    _run([SSHD, "-t", "-f", str(conf)], "checking the sshd config")
    with open(log, "wb") as logf:
        proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(conf)], stdin=subprocess.DEVNULL,
                                stdout=logf, stderr=logf, start_new_session=True)
    device = EmulatedDevice(proc, port, user, host_line, python, workdir, cpu, log)
    deadline = time.monotonic() + timeout
    while b"Server listening" not in log.read_bytes():
        if proc.poll() is not None or time.monotonic() > deadline:
            device.stop()
            raise EmulatorError(f"emulated device: sshd on 127.0.0.1:{port} did not start "
                                f"(exit {proc.returncode}); log {log}:\n"
                                + log.read_text(errors="replace")[-2000:])
        time.sleep(0.02)
    return device


# Named devices for `edgeslm devices emulate start|stop`: each keeps its key pair, host key, known_hosts,
# sshd state and pid under <home>/devices/<name>.
EMULATED_TARGET = {"cortex-a72": "rpi4", "cortex-a76": "rpi5"}


def _state(name: str, home: Path | None) -> Path:
    """A named device's folder under <home>/devices: the name cannot lead out of it."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name) or ".." in name:
        raise EmulatorError(f"emulated device name {name!r}: use letters, digits, '-', '_' and '.' (e.g. pi4-emulated)")
    return (home or emulate_home()) / "devices" / name


def emulate_home() -> Path:
    from edgeslm.hashing import cache_home

    return Path(os.environ.get("EDGESLM_EMULATE_CACHE", cache_home() / "emulate"))


def start_named(name: str, cpu: str = "cortex-a72", port: int = 0, home: Path | None = None) -> tuple[int, int, str]:
    """Build the image if needed (first time ~20 s, ~230 MB), (re)start device `name`; returns (its sshd's
    pid, its port, its devices.toml entry)."""
    import socket

    home = home or emulate_home()
    state = _state(name, home)
    state.mkdir(parents=True, exist_ok=True)
    stop_named(name, home)
    if not (state / "id_ed25519").exists():
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"edgeslm-{name}", "-f", str(state / "id_ed25519")],
             "generating the device's login key")
    if not port:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    image = ensure_image(home, cpu=cpu)
    dev = start_device(image, state / "sshd", port, state / "id_ed25519.pub", cpu=cpu)
    dev.write_known_hosts(state / "known_hosts")
    (state / "pid").write_text(str(dev.pid))
    entry = (f'\n[devices.{name}]  # emulated {cpu}: functional checks only, timings are not device latency\n'
             f'host = "127.0.0.1"\nport = {port}\nuser = "{dev.user}"\nidentity_file = "{state / "id_ed25519"}"\n'
             f'known_hosts = "{state / "known_hosts"}"\ntarget = "{EMULATED_TARGET[cpu]}"\n'
             f'workdir = "{state / "device-home"}"\npython = "python3"\nconnect_timeout = 20\n')
    return dev.pid, port, entry


def stop_named(name: str, home: Path | None = None) -> bool:
    """Stop device `name` if its recorded process is still the sshd started for it (a pid reused by another
    process since is left alone). True if one was stopped."""
    state = _state(name, home)
    try:
        pid = int((state / "pid").read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        (state / "pid").unlink(missing_ok=True)
        return False
    (state / "pid").unlink(missing_ok=True)
    if not any(str((state / "sshd").absolute()).encode() in part for part in cmdline):
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except OSError:
        return False
    return True
