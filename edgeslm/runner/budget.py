"""How long a profile may take, what it tells the host meanwhile, and how busy the machine was.

- `Budget.over()`: the reason to stop measuring early (the time budget is spent, or the host asked to stop
  with a "stop" line on stdin, e.g. on Ctrl-C), else None. The units check it between timed runs and keep
  what they measured: the result is then marked partial, with the reason and the runs it holds.
- `Budget.tick(phase, done, of)`: a progress line on stderr (PROGRESS, then JSON: phase, done, of, elapsed
  and an ETA), at most every `every` seconds and at each new phase; the host shows them.
- `load_sample()` / `load_between()`: the 1-minute load average and the CPU time stolen by a hypervisor,
  read from /proc, so a result says whether the machine had other work.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

PROGRESS = "@edgeslm-progress "
EMULATED_MAX_SECONDS = 600.0  # the budget on an emulated device when none is given: timings there are not latency
STOP = threading.Event()  # set by the stdin watcher when the host sends "stop"


class Budget:
    def __init__(self, max_seconds: float | None, out=None, every: float = 5.0, stop: threading.Event = STOP):
        self.max_seconds = max_seconds if max_seconds and max_seconds > 0 else None
        self.start = time.monotonic()
        self.out, self.every, self.stop = out, every, stop
        self._last, self._phase, self._phase_start = 0.0, None, self.start
        self.stopped: str | None = None  # why measuring ended early, once it has

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def over(self) -> str | None:
        if self.stopped is None:
            if self.stop.is_set():
                self.stopped = "stopped by the host"
            elif self.max_seconds is not None and self.elapsed() >= self.max_seconds:
                self.stopped = f"time budget of {self.max_seconds:g} s spent"
        return self.stopped

    def tick(self, phase: str, done: int, of: int | None = None) -> None:
        now = time.monotonic()
        if phase != self._phase:
            self._phase, self._phase_start, self._last = phase, now, 0.0
        elif now - self._last < self.every and done != of:
            return
        self._last = now
        eta = None
        if of and done:
            eta = (now - self._phase_start) / done * (of - done)
            if self.max_seconds is not None:
                eta = min(eta, max(0.0, self.max_seconds - (now - self.start)))
        line = {"phase": phase, "done": done, "of": of, "elapsed_s": round(now - self.start, 1),
                "eta_s": None if eta is None else round(eta, 1), "budget_s": self.max_seconds}
        try:
            out = self.out or sys.stderr
            out.write(PROGRESS + json.dumps(line) + "\n")
            out.flush()
        except (OSError, ValueError):
            pass

    def partial(self, done: int, planned: int) -> dict | None:
        """The result's `partial` part when measuring ended early, else None."""
        if self.stopped is None:
            return None
        return {"reason": self.stopped, "runs": done, "planned_runs": planned, "max_seconds": self.max_seconds}


def default_max_seconds(given: float | None, emulated: bool) -> float | None:
    """The budget: as given (0 = none), else EMULATED_MAX_SECONDS on an emulated device, else none."""
    if given is not None:
        return given if given > 0 else None
    return EMULATED_MAX_SECONDS if emulated else None


def _cpu_times() -> tuple[int, int, int] | None:
    """(all jiffies, busy jiffies, stolen jiffies) of the machine, from /proc/stat's cpu line."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if len(fields) < 9 or fields[0] != "cpu" or not all(x.isdigit() for x in fields[1:9]):
        return None
    user, nice, system, idle, iowait, irq, softirq, steal = (int(x) for x in fields[1:9])
    return user + nice + system + idle + iowait + irq + softirq + steal, user + nice + system + irq + softirq, steal


def _own_jiffies() -> int | None:
    """This process's CPU time (user + system, all threads) in /proc/stat's units. os.times() (the times system
    call) rather than /proc/self/stat, which qemu-user fills with zeros."""
    try:
        t = os.times()
        return int(round((t.user + t.system) * os.sysconf("SC_CLK_TCK")))
    except (OSError, ValueError, AttributeError):
        return None


def load_sample() -> dict:
    try:
        with open("/proc/loadavg") as f:
            load1 = float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        load1 = None
    return {"loadavg_1m": load1, "cpu": _cpu_times(), "own": _own_jiffies(), "cores": os.cpu_count()}


def load_between(before: dict, after: dict) -> dict:
    """The load part of a result, over the timed runs: the share of the machine's CPU time that other
    processes used (`others_cpu`, 0-1 of all cores) and that a hypervisor stole (`steal`), and the 1-minute
    load averages at both ends (None where /proc does not tell)."""
    others = steal = None
    a, b = before.get("cpu"), after.get("cpu")
    if a and b and b[0] > a[0]:
        total = b[0] - a[0]
        steal = (b[2] - a[2]) / total
        if before.get("own") is not None and after.get("own") is not None:
            others = max(0.0, min(1.0, ((b[1] - a[1]) - (after["own"] - before["own"])) / total))
    return {"others_cpu": others, "steal": steal, "loadavg_1m_before": before.get("loadavg_1m"),
            "loadavg_1m_after": after.get("loadavg_1m"), "cores": before.get("cores")}


BUSY_OTHERS = 0.2  # the machine had other work: other processes used more than 20% of all cores' time
BUSY_STEAL = 0.05  # or a hypervisor took more than 5% of it


def busy(load: dict) -> bool:
    return bool((load.get("others_cpu") is not None and load["others_cpu"] > BUSY_OTHERS)
                or (load.get("steal") is not None and load["steal"] > BUSY_STEAL))
