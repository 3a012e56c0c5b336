"""Results of leading weight-only passes (fine-tuning), cached by content and shared between recipes.

The four BBC topic recipes all start by fine-tuning the same model on the same data; the pruned and
quantized variants need not repeat it. The key hashes the model files, the recipe's model section and
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
    def __init__(self, base: dict, dataset_sha: callable, read: bool = True):
        self.base, self.dataset_sha, self.read = base, dataset_sha, read  # read=False: build --force

    def _prefix(self, passes) -> int:
        """How many leading passes may be cached (weight-only passes, before any compression)."""
        n = 0
        for cfg in passes:
            if not (type(cfg).cacheable and not cfg.compresses):
                break
            n += 1
        return n

    def _key(self, passes, upto: int) -> str:
        chain = []
        for cfg in passes[:upto]:
            data = cfg.model_dump(mode="json")
            name = getattr(cfg, "dataset", None)
            chain.append({"config": data, "data": self.dataset_sha(name)})
        text = json.dumps({**self.base, "passes": chain}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    def restore(self, ctx, passes) -> tuple[int, list]:
        """Load the longest cached prefix into ctx.model; returns (passes done, their facts)."""
        import torch

        if not self.read:
            return 0, []
        for upto in range(self._prefix(passes), 0, -1):
            folder = store_dir() / self._key(passes, upto)
            try:
                meta = json.loads((folder / "meta.json").read_text())
                if sha256_file(folder / "state.pt") != meta["sha256"]:
                    raise ValueError("damaged")
                state = torch.load(folder / "state.pt", weights_only=True)
                ctx.model.hf.load_state_dict(state, strict=True)
            except (OSError, ValueError, KeyError, RuntimeError):
                shutil.rmtree(folder, ignore_errors=True) if folder.exists() else None
                continue
            touch(store_dir(), folder.name)
            ctx.progress(f"passes 0-{upto - 1} ({', '.join(c.type for c in passes[:upto])}) taken from the cache")
            return upto, [{**f, "cached": True} for f in meta["facts"]]
        return 0, []

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
