"""The package's structure as its imports draw it: rooms (subpackages and top-level modules of edgeslm),
arrows between them, floors (the longest chain of arrows below a room), import circles, arrows that run up
against the intended layering, imports of another module's private names, and files over the size limit.

    python -m edgeslm.devtools.structure            # the figures and every finding
    python -m edgeslm.devtools.structure --json     # the same as JSON

Every import counts, also one inside a function (a lazy import is still a dependency). Standard library
only; it reads the source as text and imports nothing of edgeslm.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]
MAX_LINES = 400

# The intended layering, top to bottom: a room may import rooms of its own layer or below, never above.
LAYERS = [
    ["cli"],
    ["pipeline"],
    ["reports"],
    ["profiling", "devtools"],
    ["transport"],
    ["tasks"],
    ["formats", "evaluate"],
    ["verify"],
    ["passes"],
    ["native"],
    ["models", "datasets", "texts"],
    ["artifacts"],
    ["config"],
    ["runner"],
    ["contract", "errors", "hashing", "inputs", "data"],
]

def modules(root: Path = PACKAGE) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under the package."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def room_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(mods: dict[str, Path]) -> tuple[dict[str, set[str]], list[tuple[str, str, str]]]:
    """(module -> the edgeslm modules it imports, [(module, imported module, private name)])."""
    edges: dict[str, set[str]] = {}
    private = []
    for name, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        found, aliases = set(), {}  # aliases: a local name bound to an edgeslm module -> that module
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "edgeslm":
                        found.add(_known(alias.name, mods))
                        if alias.asname:
                            aliases[alias.asname] = _known(alias.name, mods)
            elif isinstance(node, ast.ImportFrom):
                target = _resolve(name, path.name == "__init__.py", node)
                if target.split(".")[0] != "edgeslm":
                    continue
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    if sub in mods:  # `from edgeslm.x import module`
                        found.add(sub)
                        aliases[alias.asname or alias.name] = sub
                        continue
                    found.add(_known(target, mods))
                    if alias.name.startswith("_") and not alias.name.startswith("__") and _known(target, mods) != name:
                        private.append((name, target, alias.name))
        for node in ast.walk(tree):  # `module._name` on a module imported by name
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and node.attr.startswith("_") and not node.attr.startswith("__") and aliases[node.value.id] != name):
                private.append((name, aliases[node.value.id], node.attr))
        found.discard(name)
        found.discard("")
        edges[name] = found
    return edges, private


def _known(name: str, mods: dict[str, Path]) -> str:
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one node (Tarjan, iterative)."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]
    for start in edges:
        if start in index:
            continue
        work = [(start, iter(sorted(edges.get(start, ()))))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on.add(start)
        while work:
            node, it = work[-1]
            nxt = next(it, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter[0]
                    counter[0] += 1
                    stack.append(nxt)
                    on.add(nxt)
                    work.append((nxt, iter(sorted(edges.get(nxt, ())))))
                elif nxt in on:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    group.append(w)
                    if w == node:
                        break
                if len(group) > 1:
                    out.append(sorted(group))
    return out


def floors(arrows: dict[str, set[str]]) -> dict[str, int]:
    """Floor of each room: 1 + the highest floor below it (rooms in one circle share a floor)."""
    groups = {n: frozenset([n]) for n in arrows}
    for group in cycles(arrows):
        for n in group:
            groups[n] = frozenset(group)
    memo: dict[frozenset, int] = {}

    def height(group: frozenset) -> int:
        if group not in memo:
            memo[group] = 0  # a guard; circles are condensed, so this is not read back
            below = {groups[m] for n in group for m in arrows.get(n, ()) if groups[m] != group}
            memo[group] = 1 + max((height(g) for g in below), default=0)
        return memo[group]

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    return {n: height(groups[n]) for n in arrows}


def survey(root: Path = PACKAGE) -> dict:
    mods = modules(root)
    edges, private = imports(mods)
    arrows: dict[str, set[str]] = {}
    for m, targets in edges.items():
        a = room_of(m)
        if a is None:
            continue
        arrows.setdefault(a, set())
        for t in targets:
            b = room_of(t)
            if b is not None and b != a:
                arrows[a].add(b)
    for targets in list(arrows.values()):
        for b in targets:
            arrows.setdefault(b, set())
    layer = {room: i for i, rooms in enumerate(LAYERS) for room in rooms}
    up = sorted((a, b) for a, targets in arrows.items() for b in targets
                if a in layer and b in layer and layer[b] < layer[a])
    unplaced = sorted(r for r in arrows if r not in layer)
    fl = floors(arrows)
    long_files = sorted((str(p.relative_to(root.parent)), n) for p in mods.values()
                        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES)
    return {
        "rooms": len(arrows), "floors": max(fl.values(), default=0),
        "arrows": sum(len(t) for t in arrows.values()),
        "module_circles": cycles(edges), "room_circles": cycles(arrows),
        "upward": [f"{a} -> {b}" for a, b in up], "unplaced_rooms": unplaced,
        "private_imports": [f"{m} imports {n} from {t}" for m, t, n in sorted(private)],
        "files_over_limit": [f"{p} ({n} lines)" for p, n in long_files],
        "floor_of": dict(sorted(fl.items(), key=lambda kv: (-kv[1], kv[0]))),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    s = survey()
    if args.json:
        print(json.dumps(s, indent=1))
        return 0
    print(f"{s['rooms']} rooms on {s['floors']} floors, {s['arrows']} arrows")
    for key in ("module_circles", "room_circles", "upward", "unplaced_rooms", "private_imports", "files_over_limit"):
        print(f"{key.replace('_', ' ')}: {len(s[key])}")
        for item in s[key]:
            print(f"  {' <-> '.join(item) if isinstance(item, list) else item}")
    by_floor: dict[int, list[str]] = {}
    for room, f in s["floor_of"].items():
        by_floor.setdefault(f, []).append(room)
    for f in sorted(by_floor, reverse=True):
        print(f"floor {f}: {', '.join(sorted(by_floor[f]))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
