"""known_hosts, read line by line: what paramiko's loader does not understand is skipped with a warning
instead of ending the run, and `@revoked` keys are refused.

Understood: comments and blank lines, comma-separated host patterns with `*`/`?` wildcards and `!`
negation, `[host]:port`, hashed hosts (`|1|salt|hash`), and the `@revoked` marker (the key is refused
for every host, even with --accept-new-host-key). Skipped with a warning: `@cert-authority` lines
(certificates are not supported), unknown markers, key types paramiko cannot load, malformed lines.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("edgeslm.transport")
_warned: set[str] = set()  # each skipped line is reported once per run, not once per connection


@dataclass
class KnownHosts:
    path: Path
    entries: list = field(default_factory=list)  # (patterns, key)
    revoked: list = field(default_factory=list)  # keys
    warnings: list[str] = field(default_factory=list)

    def keys_for(self, lookup_name: str) -> list:
        """Keys trusted for `host` (port 22) or `[host]:port`, revoked ones left out."""
        return [k for patterns, k in self.entries if _matches(patterns, lookup_name) and not self.is_revoked(k)]

    def is_revoked(self, key) -> bool:
        return any(r.get_name() == key.get_name() and r.asbytes() == key.asbytes() for r in self.revoked)


def lookup_name(hostname: str, port: int) -> str:
    """How OpenSSH (and paramiko) name a host in known_hosts."""
    return hostname if port == 22 else f"[{hostname}]:{port}"


class KnownHostsError(Exception):
    """The known_hosts file is there but cannot be read as one: a folder, a FIFO, unreadable, too large."""


def load(path: Path, warn=None) -> KnownHosts:
    """Parse `path` (absent = empty). Each skipped line is reported once through `warn` (default: the
    `edgeslm.transport` logger, which the CLI prints to stderr). A path that is there but not a readable
    regular file (a folder, a FIFO that would hang the read) is a KnownHostsError naming it: connecting
    without its keys would only end in a misleading "unknown host key"."""
    from edgeslm.inputs import InputError, read_file

    warn = warn or log.warning
    kh = KnownHosts(path)
    if not path.exists() and not path.is_symlink():
        return kh
    try:
        lines = read_file(path, "known_hosts").decode("utf-8", errors="replace").splitlines()
    except InputError as exc:
        raise KnownHostsError(f"{exc.path}: {exc.problem}") from None
    for n, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        problem = _parse_line(kh, line)
        if problem:
            kh.warnings.append(f"{path}:{n}: {problem}; line skipped")
            if kh.warnings[-1] not in _warned:
                _warned.add(kh.warnings[-1])
                warn(kh.warnings[-1])
    return kh


def _parse_line(kh: KnownHosts, line: str) -> str | None:
    marker = None
    fields = line.split()
    if fields[0].startswith("@"):
        marker, fields = fields[0], fields[1:]
        if marker == "@cert-authority":
            return "@cert-authority (host certificates) is not supported by edgeslm"
        if marker != "@revoked":
            return f"unknown marker {marker}"
    if len(fields) < 3:
        return "malformed (expected: hosts key-type base64-key)"
    patterns, key_type, data = fields[0], fields[1], fields[2]
    key = _key(key_type, data)
    if isinstance(key, str):
        return key
    if marker == "@revoked":
        kh.revoked.append(key)
    else:
        kh.entries.append((patterns.split(","), key))
    return None


def _key(key_type: str, data: str):
    import paramiko

    try:
        blob = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return "malformed (the key is not valid base64)"
    try:
        return paramiko.PKey.from_type_string(key_type, blob)
    except paramiko.UnknownKeyType:
        return f"key type {key_type} is not supported"
    except Exception:  # noqa: BLE001 - any parse failure of a key blob is a malformed line
        return f"malformed {key_type} key"


def _matches(patterns: list[str], name: str) -> bool:
    hit = False
    for p in patterns:
        negate = p.startswith("!")
        if negate:
            p = p[1:]
        if p.startswith("|1|"):
            ok = _hashed_match(p, name)
        else:
            ok = _glob(p, name)
        if ok and negate:
            return False
        hit = hit or ok
    return hit


def _glob(pattern: str, name: str) -> bool:
    """OpenSSH patterns: `*` and `?` are wildcards, everything else (`[`, `]` included) is literal."""
    rx = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(rx, name, re.IGNORECASE) is not None


def _hashed_match(pattern: str, name: str) -> bool:
    try:
        _, _, salt, digest = pattern.split("|")
        mac = hmac.new(base64.b64decode(salt), name.encode(), hashlib.sha1).digest()
        return hmac.compare_digest(base64.b64encode(mac).decode(), digest)
    except (ValueError, binascii.Error):
        return False
