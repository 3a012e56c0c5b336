"""What a device is: CPU, memory, disk, runtimes, thermal state, emulation."""

from __future__ import annotations

import os
import platform
import shutil
import sys

from edgeslm.contract import RUNNER_VERSION
from edgeslm.contract.results import ProbeResult


def read_small(path: str, default: str = "") -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return default


def _meminfo() -> dict:
    out = {}
    for line in read_small("/proc/meminfo").splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            out[key] = int(parts[0])
    return out


def cpu_model() -> str:
    text = read_small("/proc/cpuinfo")
    for key in ("model name", "Model", "Hardware", "CPU part"):
        for line in text.splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def cpu_features() -> list:
    for line in read_small("/proc/cpuinfo").splitlines():
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
            t = read_small(os.path.join(base, zone, "temp"))
            if t.lstrip("-").isdigit():
                temps[read_small(os.path.join(base, zone, "type"), zone)] = int(t) / 1000.0
    cpufreq = "/sys/devices/system/cpu/cpu0/cpufreq"
    freq = read_small(os.path.join(cpufreq, "scaling_cur_freq"))
    out = {"temperatures_c": temps, "freq_khz": int(freq) if freq.isdigit() else None,
           "governor": read_small(os.path.join(cpufreq, "scaling_governor")) or None, "throttled": None}
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
            out[name] = dist_version(name) or "installed"
    if has_module("executorch.runtime"):
        out["executorch"] = "executorch.runtime " + (dist_version("executorch") or "?")
    elif importlib.util.find_spec("executorch_numpy_runtime") is not None:
        out["executorch"] = "executorch-numpy-runtime " + (dist_version("executorch-numpy-runtime") or "?")
    return out


def has_module(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def dist_version(name: str):
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
    osr = dict(line.split("=", 1) for line in read_small("/etc/os-release").splitlines() if "=" in line)
    return ProbeResult.from_dict(dict(  # checked here too: a device never answers what the host would refuse
        schema=ProbeResult.SCHEMA, runner_version=RUNNER_VERSION,
        arch=platform.machine(), cpu_model=cpu_model(), cores=os.cpu_count(),
        features=cpu_features(), kernel=platform.release(),
        os=osr.get("PRETTY_NAME", "").strip('"') or platform.system(),
        python=platform.python_version(), python_executable=sys.executable,
        mem_total_kb=mem.get("MemTotal"), mem_available_kb=mem.get("MemAvailable"),
        disk=disk, runtimes=runtimes(), thermal=thermal(), emulated=emulation(),
    )).to_dict()


def status_kb(key: str) -> int | None:
    for line in read_small("/proc/self/status").splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return None


def reset_hwm() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0) so the peak covers only what follows."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False
