"""What the device answers, as typed, versioned records (stdlib only; the runner writes them, the host
reads them back, the reports read the typed objects). Each record names its schema (`edgeslm.<kind>/<major>`)
and is made of typed parts, nested ones included: `from_dict` refuses another kind or major version and a
missing or mistyped part with one line saying which (`latency_ms.p50 is missing`, `flags[2] is not text`),
and keeps keys it does not know (a newer minor version) so that `from_dict(d).to_dict() == d`.

    ProfileResult.from_dict(json.loads(text))   # -> ProfileResult, or ResultError("latency_ms.p50 is missing")
    result.latency_ms.p50, result.build.task     # typed all the way down
    result.to_dict()                             # -> the JSON object the runner writes

The JSON Schemas published for other tools are generated from these records (artifacts/schemas.py).
"""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, field, fields

from edgeslm.contract import PROBE_SCHEMA, PROFILE_SCHEMA, RUNNER_VERSION


class ResultError(ValueError):
    """A record that is not what its schema says (the message names the part)."""


def _number(v) -> bool:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    try:
        float(v)
    except OverflowError:  # an integer too large for a float
        return False
    return True


def _finite(v) -> bool:
    return _number(v) and math.isfinite(float(v))


@dataclass(frozen=True)
class Kind:
    """A JSON value's kind: how to test it, what to call it in an error, its JSON Schema."""
    name: str
    test: object
    json: dict


TEXT = Kind("a string", lambda v: isinstance(v, str), {"type": "string"})
FLAG = Kind("true or false", lambda v: isinstance(v, bool), {"type": "boolean"})
INT = Kind("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool), {"type": "integer"})
NUMBER = Kind("a number", _number, {"type": "number"})  # NaN allowed: a broken model's metric is a result
NONNEG = Kind("a finite number, at least 0", lambda v: _finite(v) and v >= 0, {"type": "number", "minimum": 0})
POSITIVE = Kind("a finite number above 0", lambda v: _finite(v) and v > 0, {"type": "number", "exclusiveMinimum": 0})
OBJECT = Kind("an object", lambda v: isinstance(v, dict), {"type": "object"})
PAIR = Kind("two numbers", lambda v: isinstance(v, list) and len(v) == 2 and all(map(_number, v)),
            {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2})


@dataclass(frozen=True)
class ListOf:
    item: object  # a Kind or a Part class


LIST = ListOf(None)  # a list of anything


def part(kind, default=MISSING, doc: str = ""):
    """A field of a record: its kind (a Kind, a Part class, ListOf(...)), its default (optional parts) and what
    it means (in the JSON Schema)."""
    extra = {} if default is MISSING else {"default": default}
    return field(metadata={"kind": kind, "doc": doc}, **extra)


def _read(kind, v, name: str):
    if isinstance(kind, Kind):
        if not kind.test(v):
            raise ResultError(f"{name} is not {kind.name}")
        return v
    if isinstance(kind, ListOf):
        if not isinstance(v, list):
            raise ResultError(f"{name} is not a list")
        return v if kind.item is None else [_read(kind.item, x, f"{name}[{i}]") for i, x in enumerate(v)]
    if not isinstance(v, dict):
        raise ResultError(f"{name} is not an object")
    return kind.read(v, name + ".")


def _write(v):
    if isinstance(v, Part):
        return v.to_dict()
    if isinstance(v, list):
        return [_write(x) for x in v]
    return v


class Part:
    """A typed JSON object inside a record. Subclasses are dataclasses of `part(...)` fields and `extra`."""

    def to_dict(self) -> dict:
        given = getattr(self, "_given", None)  # read from JSON: an optional part it did not hold stays out
        out = {f.name: _write(getattr(self, f.name)) for f in fields(self)
               if f.name != "extra" and (given is None or f.name in given or getattr(self, f.name) is not None)}
        out.update(self.extra)
        return out

    @classmethod
    def read(cls, data: dict, where: str = ""):
        values = {}
        for f in fields(cls):
            if f.name == "extra":
                continue
            if data.get(f.name) is None:  # missing or null: only an optional part may be
                if f.default is MISSING:
                    raise ResultError(f"{where}{f.name} is missing")
                if f.name in data:
                    values[f.name] = None
                continue
            values[f.name] = _read(f.metadata["kind"], data[f.name], where + f.name)
        known = {f.name for f in fields(cls)} | {"schema"}
        obj = cls(**values, extra={k: v for k, v in data.items() if k not in known})
        obj._given = frozenset(k for k in data if k in known)
        return obj


def extras():
    return field(default_factory=dict, metadata={"kind": None})


class Record(Part):
    SCHEMA = ""  # edgeslm.<kind>/<major>

    def to_dict(self) -> dict:
        return {"schema": self.SCHEMA, **super().to_dict()}

    @classmethod
    def from_dict(cls, data):
        if not isinstance(data, dict):
            raise ResultError(f"not a JSON object (expected {cls.SCHEMA})")
        schema = data.get("schema")
        kind = cls.SCHEMA.rsplit("/", 1)[0]
        if schema != cls.SCHEMA:
            if isinstance(schema, str) and schema.startswith(kind + "/"):
                raise ResultError(f"schema {schema[:60]} was written by another edgeslm version; this one reads "
                                  f"{cls.SCHEMA} (re-run it with this edgeslm)")
            raise ResultError(f"schema {repr(schema)[:60]}, expected {cls.SCHEMA}")
        return cls.read(data)


# -- the parts of a profile result --------------------------------------------------------------------------

@dataclass
class BuildRef(Part):
    recipe: str = part(TEXT)
    target: str = part(TEXT)
    cache_key: str = part(TEXT)
    task: str = part(TEXT, doc="a task in contract.tasks")
    version: str | None = part(TEXT, None, doc="the deployed version profiled (added by the host)")
    verified_against: str | None = part(TEXT, None, doc="what the device's files were checked against (host)")
    extra: dict = extras()


@dataclass
class ArtifactRef(Part):
    name: str = part(TEXT)
    format: str = part(TEXT)
    precision: str = part(TEXT)
    runtime: str = part(TEXT, doc="the runtime and version that ran it on the device")
    file: str | None = part(TEXT, None)
    size: float | None = part(NONNEG, None, doc="bytes: the file and the files it loads beside it")
    extra: dict = extras()


@dataclass
class DeviceRef(Part):
    arch: str = part(TEXT)
    cpu_model: str = part(TEXT)
    cores: int | None = part(INT, None)
    name: str | None = part(TEXT, None, doc="the devices.toml name (added by the host)")
    target: str | None = part(TEXT, None, doc="the device's target in devices.toml (added by the host)")
    kernel: str | None = part(TEXT, None)
    python: str | None = part(TEXT, None)
    runtimes: dict | None = part(OBJECT, None, doc="package: version")
    emulated: str | None = part(TEXT, None, doc="how the device is emulated (qemu...), null on real hardware")
    extra: dict = extras()


@dataclass
class Thermal(Part):
    before: dict = part(OBJECT)
    after: dict = part(OBJECT)
    extra: dict = extras()


@dataclass
class Settings(Part):
    threads: int = part(INT)
    seq_len: int | None = part(INT, None)
    batch_size: int | None = part(INT, None)
    iters: int | None = part(INT, None)
    warmup: int | None = part(INT, None)
    max_context: int | None = part(INT, None, doc="decoders: KV cache positions")
    max_seconds: float | None = part(POSITIVE, None, doc="the time budget of the timed runs (null: none)")
    extra: dict = extras()


@dataclass
class Partial(Part):
    """Measuring ended before the runs asked for: the time budget was spent or the host asked to stop."""
    reason: str = part(TEXT)
    runs: int = part(INT, doc="timed runs the result holds")
    planned_runs: int = part(INT)
    max_seconds: float | None = part(POSITIVE, None)
    extra: dict = extras()


@dataclass
class Load(Part):
    """How busy the machine was over the timed runs (from /proc; null where it does not tell)."""
    others_cpu: float | None = part(NONNEG, None, doc="share of all cores' time used by other processes (0-1)")
    steal: float | None = part(NONNEG, None, doc="share of CPU time a hypervisor took (0-1)")
    loadavg_1m_before: float | None = part(NONNEG, None)
    loadavg_1m_after: float | None = part(NONNEG, None)
    cores: int | None = part(INT, None)
    extra: dict = extras()


@dataclass
class Metric(Part):
    name: str = part(TEXT)
    value: float = part(NUMBER)
    extra: dict = extras()


@dataclass
class Parity(Part):
    """Whether the artifact still computes on the device what PyTorch computed on the build host."""
    passed: bool = part(FLAG)
    metrics: list | None = part(ListOf(Metric), None)
    samples: int | None = part(INT, None, doc="encoders: reference samples compared")
    perplexity_increase: float | None = part(NUMBER, None, doc="decoders: relative, against PyTorch's")
    perplexity: float | None = part(NUMBER, None, doc="decoders")
    perplexity_reference: float | None = part(NUMBER, None, doc="decoders: PyTorch's on the same text")
    top1_agreement: float | None = part(NUMBER, None, doc="decoders: against PyTorch")
    top5_agreement: float | None = part(NUMBER, None, doc="decoders: against PyTorch")
    top1_vs_build_host: float | None = part(NUMBER, None, doc="decoders: against the build host's run")
    positions: int | None = part(INT, None, doc="decoders: teacher-forced positions")
    failed: list | None = part(ListOf(TEXT), None, doc="the checks that failed")
    extra: dict = extras()

    def metric(self, name: str):
        return next((m.value for m in self.metrics or [] if m.name == name), None)


@dataclass
class Latency(Part):
    """Statistics of timed runs, in milliseconds."""
    n: float = part(NONNEG)
    p50: float = part(POSITIVE)
    p90: float = part(NONNEG)
    p99: float = part(NONNEG)
    mean: float = part(NONNEG)
    stdev: float = part(NONNEG)
    cv: float = part(NONNEG, doc="coefficient of variation (stdev / mean)")
    min: float = part(NONNEG)
    max: float = part(NONNEG)
    p10: float | None = part(NONNEG, None)
    extra: dict = extras()


@dataclass
class Memory(Part):
    peak_rss: float = part(NONNEG, doc="KiB")
    rss_before_load: float | None = part(NONNEG, None)
    rss_after_load: float | None = part(NONNEG, None)
    load_increase: float | None = part(NUMBER, None)
    run_increase: float | None = part(NUMBER, None)
    extra: dict = extras()


@dataclass
class TaskScore(Part):
    """An encoder's task metric on (part of) the eval split, scored on the device."""
    metric: str | None = part(TEXT, None)
    value: float | None = part(NUMBER, None)
    rows: int | None = part(INT, None)
    of: int | None = part(INT, None, doc="rows of the whole eval split")
    latency_ms: Latency | None = part(Latency, None)
    host_value: float | None = part(NUMBER, None, doc="the build host's score on the same rows (whole split)")
    batch: int | None = part(INT, None)
    extra: dict = extras()

    @property
    def whole(self) -> bool:
        return self.rows == self.of


@dataclass
class Ttft(Part):
    prompt_tokens: int = part(INT)
    ttft_ms: Latency = part(Latency)
    prefill_tok_s: float = part(NUMBER)
    rss_kb: float | None = part(NONNEG, None)
    extra: dict = extras()


@dataclass
class Decode(Part):
    tok_s: float = part(NUMBER, doc="1000 / median step time")
    tok_s_p10_p90: list = part(PAIR)
    step_ms: Latency | None = part(Latency, None)
    tokens: int | None = part(INT, None, doc="generated")
    after_prompt_tokens: int | None = part(INT, None)
    extra: dict = extras()


@dataclass
class Generation(Part):
    """A decoder's time to first token per prompt length and its decode speed."""
    ttft: list = part(ListOf(Ttft))
    decode: Decode = part(Decode)
    extra: dict = extras()


@dataclass
class ProfileResult(Record):
    """One artifact profiled on one device (`runner profile`): what ran where, whether it still computes
    what PyTorch computed there (`parity`), and its latency and memory with their spread. Encoders add
    `task` (the eval split scored there), decoders `generation` (TTFT per prompt length, decode tok/s);
    a decoder's `latency_ms` is per generated token (`latency_unit`)."""
    SCHEMA = PROFILE_SCHEMA

    started_at: str = part(TEXT)
    build: BuildRef = part(BuildRef)
    artifact: ArtifactRef = part(ArtifactRef)
    device: DeviceRef = part(DeviceRef)
    thermal: Thermal = part(Thermal)
    flags: list = part(ListOf(TEXT))
    settings: Settings = part(Settings)
    parity: Parity = part(Parity)
    latency_ms: Latency = part(Latency)
    memory_kb: Memory = part(Memory)
    samples_ms: list | None = part(ListOf(POSITIVE), None)
    load_ms: float | None = part(NONNEG, None)
    runner_version: str = part(TEXT, RUNNER_VERSION)
    latency_unit: str = part(TEXT, "ms per run")
    task: TaskScore | None = part(TaskScore, None)
    generation: Generation | None = part(Generation, None)
    runtime_import_ms: float | None = part(NONNEG, None)
    first_run_ms: float | None = part(NONNEG, None)
    partial: Partial | None = part(Partial, None, doc="set when measuring ended early; flags then hold 'partial'")
    load: Load | None = part(Load, None, doc="the device's load over the timed runs; 'busy' in flags when high")
    host_load: Load | None = part(Load, None, doc="the host's, when it is another machine (written by the host)")
    extra: dict = extras()


@dataclass
class ProbeThermal(Part):
    temperatures_c: dict = part(OBJECT)
    extra: dict = extras()


@dataclass
class Disk(Part):
    free_bytes: int = part(INT)
    extra: dict = extras()


@dataclass
class ProbeResult(Record):
    """What a device is (`runner probe`): architecture, CPU, memory and disk, the runtimes it imports."""
    SCHEMA = PROBE_SCHEMA

    arch: str = part(TEXT)
    cpu_model: str = part(TEXT)
    os: str = part(TEXT)
    python: str = part(TEXT)
    runtimes: dict = part(OBJECT)
    thermal: ProbeThermal = part(ProbeThermal)
    features: list = part(ListOf(TEXT))
    cores: int | None = part(INT, None)
    kernel: str | None = part(TEXT, None)
    python_executable: str | None = part(TEXT, None)
    mem_total_kb: int | None = part(INT, None)
    mem_available_kb: int | None = part(INT, None)
    disk: Disk | None = part(Disk, None)
    emulated: str | None = part(TEXT, None)
    runner_version: str = part(TEXT, RUNNER_VERSION)
    extra: dict = extras()


RECORDS = (ProfileResult, ProbeResult)
