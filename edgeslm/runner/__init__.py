"""The on-device runner (stdlib + numpy + a runtime). It imports nothing of edgeslm but itself and
`edgeslm.contract`; both ship to the device as one zip file (see bundle.py, `RUNNER_PATH`)."""


def __getattr__(name: str):
    if name == "RUNNER_PATH":  # built on first use, on the host only
        from edgeslm.runner.bundle import runner_path

        return runner_path()
    raise AttributeError(name)
