"""`devices check`: what a device is, what it has, and whether it is the target its entry names."""

from __future__ import annotations

from edgeslm.config.catalog import load_target
from edgeslm.config.devices import Device
from edgeslm.profiling.deploy import checked_probe, open_device
from edgeslm.formats import FORMATS, NUMPY_INSTALL


def check(name: str, device: Device, accept_new_host_key: bool = False) -> dict:
    with open_device(name, device, accept_new_host_key) as dev:
        probe = checked_probe(name, dev.call("probe", "--workdir", dev.workdir))
    target = load_target(device.target).resolved()
    problems, missing = [], []
    if probe["arch"] != target.arch:
        problems.append(f"device is {probe['arch']} but its target {target.name} is {target.arch}")
    absent = [f for f in target.features if f not in probe.get("features", [])]
    if absent:
        problems.append(f"CPU lacks {', '.join(absent)} that target {target.name} assumes")
    runtimes = probe["runtimes"]
    for package, install in [("numpy", NUMPY_INSTALL)] + [(r.package, r.install) for r in FORMATS.values()]:
        if not runtimes.get(package):
            missing.append({"runtime": package, "install": install})
    return {"device": name, "target": target.name, "matches_target": not problems, "problems": problems,
            "missing_runtimes": missing, "probe": probe}
