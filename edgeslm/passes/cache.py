"""Results of leading passes (fine-tuning, pruning with its recovery), cached by content and shared between
recipes.

The four BBC topic recipes all start by fine-tuning the same model on the same data, and the pruned and
pruned+int8 variants prune it the same way: none of them repeats what another computed. A pruned state is
loaded into the model after giving it the pruned shapes (passes.prune.fit_to). `remember` keeps a JSON value
computed on a cached prefix (the task metric before compression) so it is computed once per family. The key hashes the model files, the recipe's model section and
input length, the data each pass reads (the content of its splits), the passes' configurations, the tool
versions and edgeslm's own code. An entry is the model's state dict plus what the passes reported; its
sha256 is checked before it is loaded (weights only, no pickled code), and a damaged entry is dropped.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from edgeslm.artifacts.cache import touch
from edgeslm.hashing import cache_home, sha256_file


def store_dir() -> Path:
    return cache_home() / "passes"


class PassCache:
    def __init__(self, base: dict, dataset_sha: callable, read: bool = True, source_sha: callable = str):
        self.base, self.dataset_sha, self.read = base, dataset_sha, read  # read=False: build --force
        self.source_sha = source_sha  # an external teacher's files, by content

    def _prefix(self, passes) -> int:
        """How many leading passes may be cached: those whose config class is cacheable (fine-tuning, and
        pruning with its recovery, whose pruned shapes a restore gives the model back)."""
        n = 0
        for cfg in passes:
            if not type(cfg).cacheable:
                break
            n += 1
        return n

    def _key(self, passes, upto: int) -> str:
        chain = []
        for cfg in passes[:upto]:
            data = cfg.model_dump(mode="json")
            names = [getattr(cfg, "dataset", None)]
            recovery = getattr(cfg, "recovery", None)
            if recovery is not None:
                names.append(getattr(recovery, "dataset", None) or names[0])
            teachers = [t for t in (getattr(cfg, "teacher", None), getattr(recovery, "teacher", None)) if t]
            chain.append({"config": data, "data": [self.dataset_sha(n) for n in names],
                          "teachers": [self.source_sha(t) for t in teachers]})
        text = json.dumps({**self.base, "passes": chain}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    def available(self, passes) -> set[int]:
        """The prefix lengths (> 0) whose result the store holds (not checked yet: `load` checks)."""
        if not self.read:
            return set()
        return {upto for upto in range(1, self._prefix(passes) + 1)
                if (store_dir() / self._key(passes, upto) / "meta.json").is_file()}

    def load(self, ctx, passes, upto: int) -> list | None:
        """Load the result of passes[:upto] into ctx.model (its state checked by sha256 first; a pruned state
        reshapes the model to fit); returns their facts, or None (a damaged entry is dropped)."""
        import torch

        folder = store_dir() / self._key(passes, upto)
        try:
            meta = json.loads((folder / "meta.json").read_text())
            if sha256_file(folder / "state.pt") != meta["sha256"]:
                raise ValueError("damaged")
            state = torch.load(folder / "state.pt", weights_only=True)
        except (OSError, ValueError, KeyError, RuntimeError):
            shutil.rmtree(folder, ignore_errors=True) if folder.exists() else None
            return None
        if any(getattr(c, "compresses", False) for c in passes[:upto]):
            from edgeslm.passes.prune import fit_to

            fit_to(ctx.model.hf, state)
        ctx.model.hf.load_state_dict(state, strict=True)  # checked by sha256: what this code saved
        touch(store_dir(), folder.name)
        ctx.progress(f"passes 0-{upto - 1} ({', '.join(c.type for c in passes[:upto])}) taken from the cache")
        return [{**f, "cached": True} for f in meta["facts"]]

    def restore(self, ctx, passes) -> tuple[int, list]:
        """Load the longest cached prefix into ctx.model; returns (passes done, their facts)."""
        for upto in sorted(self.available(passes), reverse=True):
            facts = self.load(ctx, passes, upto)
            if facts is not None:
                return upto, facts
        return 0, []

    def remember(self, passes, upto: int, name: str, compute):
        """A JSON value computed on the model after passes[:upto] (e.g. the task metric of the model before
        compression), kept beside the cached passes: the variants of a recipe family compute it once."""
        path = store_dir() / "memo" / f"{hashlib.sha256((self._key(passes, upto) + name).encode()).hexdigest()}.json"
        if self.read:
            try:
                return json.loads(path.read_text())["value"]
            except (OSError, ValueError, KeyError):
                pass
        value = compute()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
            tmp.write_text(json.dumps({"value": value}))
            os.replace(tmp, path)
        except (OSError, TypeError, ValueError):
            pass  # not JSON, or a read-only store: computed again next time
        return value

    def keep(self, ctx, passes, index: int) -> None:
        """After pass `index`: store the model if every pass so far may be cached."""
        import torch

        if index >= self._prefix(passes):
            return
        folder = store_dir() / self._key(passes, index + 1)
        if (folder / "meta.json").exists():
            return
        tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        torch.save({k: v.detach().clone() for k, v in ctx.model.hf.state_dict().items()}, tmp / "state.pt")
        facts = [f for f in ctx.facts[: index + 1]]
        (tmp / "meta.json").write_text(json.dumps({"sha256": sha256_file(tmp / "state.pt"), "facts": facts}))
        try:
            os.replace(tmp, folder)
        except OSError:  # another build stored it first
            shutil.rmtree(tmp, ignore_errors=True)
