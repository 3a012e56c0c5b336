"""What the device answers, as typed, versioned records (stdlib only; the runner writes them, the host
reads them back). Each record names its schema (`edgeslm.<kind>/<major>`); `from_dict` refuses another
kind or major version and a missing or mistyped part with one line saying which, and keeps keys it does
not know (a newer minor version) so that `from_dict(d).to_dict() == d`.

    ProfileResult.from_dict(json.loads(text))   # -> ProfileResult, or ResultError("latency_ms.p50 is missing")
    result.to_dict()                             # -> the JSON object the runner writes
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields

from edgeslm.contract import PROBE_SCHEMA, PROFILE_SCHEMA, RUNNER_VERSION

NUMBER = (int, float)


class ResultError(ValueError):
    """A record that is not what its schema says (the message names the part)."""


def part(kind, *keys, default=MISSING):
    """A field of a record: its JSON type, the keys it must hold (dicts; a key or (key, type)), and its default
    (optional parts)."""
    extra = {} if default is MISSING else {"default": default}
    return field(metadata={"kind": kind, "keys": keys}, **extra)


class Record:
    SCHEMA = ""  # edgeslm.<kind>/<major>

    def to_dict(self) -> dict:
        out = {"schema": self.SCHEMA}
        out.update({f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"})
        out.update(self.extra)
        return out

    @classmethod
    def from_dict(cls, data) -> "Record":
        if not isinstance(data, dict):
            raise ResultError(f"not a JSON object (expected {cls.SCHEMA})")
        schema = data.get("schema")
        kind = cls.SCHEMA.rsplit("/", 1)[0]
        if schema != cls.SCHEMA:
            if isinstance(schema, str) and schema.startswith(kind + "/"):
                raise ResultError(f"schema {schema} was written by another edgeslm version; this one reads "
                                  f"{cls.SCHEMA} (re-run it with this edgeslm)")
            raise ResultError(f"schema {schema!r}, expected {cls.SCHEMA}")
        values = {}
        for f in fields(cls):
            if f.name == "extra":
                continue
            kind_, keys = f.metadata["kind"], f.metadata["keys"]
            if f.name not in data:
                if f.default is MISSING:
                    raise ResultError(f"{f.name} is missing")
                continue
            v = data[f.name]
            if v is None and f.default is None:
                values[f.name] = v
                continue
            if not isinstance(v, kind_) or isinstance(v, bool) and kind_ is NUMBER:
                name = kind_.__name__ if isinstance(kind_, type) else "number"
                raise ResultError(f"{f.name} is not a {name}")
            for key in keys:
                key, inner = key if isinstance(key, tuple) else (key, None)
                if key not in v:
                    raise ResultError(f"{f.name}.{key} is missing")
                if inner is not None and (not isinstance(v[key], inner) or
                                          isinstance(v[key], bool) and inner is not bool):
                    name = inner.__name__ if isinstance(inner, type) else "number"
                    raise ResultError(f"{f.name}.{key} is not a {name}")
            values[f.name] = v
        known = {f.name for f in fields(cls)} | {"schema"}
        return cls(**values, extra={k: v for k, v in data.items() if k not in known})


@dataclass
class ProfileResult(Record):
    """One artifact profiled on one device (`runner profile`): what ran where, whether it still computes
    what PyTorch computed there (`parity`), and its latency and memory with their spread. Encoders add
    `task` (the eval split scored there), decoders `generation` (TTFT per prompt length, decode tok/s);
    a decoder's `latency_ms` is per generated token (`latency_unit`)."""
    SCHEMA = PROFILE_SCHEMA

    started_at: str = part(str)
    build: dict = part(dict, "recipe", "target", "cache_key", "task")
    artifact: dict = part(dict, "name", "format", "precision", "runtime")
    device: dict = part(dict, "arch", "cores")
    thermal: dict = part(dict, "before", "after")
    flags: list = part(list)
    settings: dict = part(dict, "threads")
    parity: dict = part(dict, ("passed", bool))
    latency_ms: dict = part(dict, ("p50", NUMBER), ("cv", NUMBER))
    memory_kb: dict = part(dict, "peak_rss")
    samples_ms: list = part(list, default=None)
    load_ms: float = part(NUMBER, default=None)
    runner_version: str = part(str, default=RUNNER_VERSION)
    latency_unit: str = part(str, default="ms per run")
    task: dict | None = part(dict, "metric", "value", default=None)
    generation: dict | None = part(dict, "ttft", "decode", default=None)
    runtime_import_ms: float | None = part(NUMBER, default=None)
    first_run_ms: float | None = part(NUMBER, default=None)
    extra: dict = field(default_factory=dict)


@dataclass
class ProbeResult(Record):
    """What a device is (`runner probe`): architecture, CPU, memory and disk, the runtimes it imports."""
    SCHEMA = PROBE_SCHEMA

    arch: str = part(str)
    cpu_model: str = part(str)
    os: str = part(str)
    python: str = part(str)
    runtimes: dict = part(dict)
    thermal: dict = part(dict, ("temperatures_c", dict))
    features: list = part(list)
    cores: int | None = part(int, default=None)
    kernel: str | None = part(str, default=None)
    python_executable: str | None = part(str, default=None)
    mem_total_kb: int | None = part(int, default=None)
    mem_available_kb: int | None = part(int, default=None)
    disk: dict | None = part(dict, ("free_bytes", int), default=None)
    emulated: str | None = part(str, default=None)
    runner_version: str = part(str, default=RUNNER_VERSION)
    extra: dict = field(default_factory=dict)


RECORDS = (ProfileResult, ProbeResult)
