"""The runner's one error: a refusal or failure reported to the host as {"error": ...}."""


class RunnerError(Exception):
    pass
