"""The on-device runner: one stdlib + numpy file that ships to the device (see device_runner.py).

It never imports torch or the rest of edgeslm. The host side imports its schema constants from here.
"""

from pathlib import Path

from edgeslm.runner.device_runner import PROBE_SCHEMA, PROFILE_SCHEMA, RUNNER_VERSION  # noqa: F401

RUNNER_PATH = Path(__file__).with_name("device_runner.py")
