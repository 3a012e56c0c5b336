"""edgeslm device runner: probe a device, manage deployed versions, check and profile a model there.

Runs on the device with Python >= 3.9, the standard library, numpy, and one runtime: onnxruntime for
.onnx; for .pte `executorch.runtime` when installed, else the torch-free `executorch_numpy_runtime`.
It never imports torch, nor anything of edgeslm but `edgeslm.contract` and `edgeslm.runner`, which ship to
the device as one zip file (see edgeslm.runner.bundle).

    python3 runner.pyz probe [--workdir DIR]
    python3 runner.pyz hash FILE...
    python3 runner.pyz verify DIR [--manifest-sha256 H]  (sha256 of every file DIR/manifest.json lists;
                                                               with H, that manifest must be the host's)
    python3 runner.pyz status --workdir W RECIPE      (current, previous, versions, staging folders)
    python3 runner.pyz stage --workdir W RECIPE VERSION --lock T  (reuse files the device has; list the rest)
    python3 runner.pyz commit --workdir W RECIPE VERSION --lock T [--manifest-sha256 H]  (verify, into versions/)
    python3 runner.pyz activate --workdir W RECIPE VERSION --lock T  (atomic switch of current; prune)
    python3 runner.pyz rollback --workdir W RECIPE --lock T [--expect V] [--manifest-sha256 H]  (verify, switch)
    python3 runner.pyz hold --workdir W RECIPE [--pin V|current] [--owner TEXT] [--expire S] [--wait S]
                                     (deploy lock, or a pin on a version, while heartbeats arrive on stdin;
                                     the lock's answer carries the token T that the four commands above
                                     need: they change nothing unless that hold still holds the lock)
    python3 runner.pyz break-lock --workdir W RECIPE  (free a stale lock whose holder is gone)
    python3 runner.pyz profile BUILD_DIR --artifact NAME [--threads N --warmup N --iters N
                                     --min-seconds S --seq-len L] [--out RESULT.json --workdir W]
                                     [--deadline S] [--stop-on-eof]  (also for generate: end with the host)

The model folder is <workdir>/<recipe>; RECIPE must be a plain name and VERSION 16 hex digits.

Every command prints one JSON object on stdout; failures exit 1 with {"error": "..."}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from edgeslm.contract import MAX_ITERS, MAX_SEED, MAX_THREADS, MAX_TOKENS, MAX_TOP_K
from edgeslm.runner.errors import RunnerError
from edgeslm.runner.facts import probe
from edgeslm.runner.locks import break_lock, guard, hold
from edgeslm.runner.profile import profile
from edgeslm.runner.store import activate, commit, hash_files, rollback, stage, status, verify_dir


def _write_result(result: dict, out: str, workdir: str | None) -> dict:
    if workdir:  # results of a deployed model go to <workdir>/<recipe>/results/<plain name>
        root = os.path.realpath(os.path.expanduser(workdir))
        if not os.path.realpath(out).startswith(root + os.sep):
            raise RunnerError(f"refusing --out {out!r}: outside the workdir {root}")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    tmp = f"{out}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(result, f)
    os.replace(tmp, out)
    return {"written": out, "flags": result["flags"], "parity": result["parity"]["passed"]}


def _watchdog(deadline: float | None, stop_on_eof: bool) -> None:
    """A long command (profile, generate) ends with its host: when the host is killed or its link drops, the
    SSH session closes this process's stdin (no terminal, so no hangup signal reaches it), and a host that
    gave up waiting has passed its own timeout, which it gives as the deadline. Either way the command
    prints an error line (if anyone still reads it) and exits 124; what it was writing stays a temporary
    file beside its target."""
    import threading

    def end(why: str) -> None:
        try:
            sys.stdout.write(json.dumps({"error": why}) + "\n")
            sys.stdout.flush()
        except (OSError, ValueError):
            pass
        finally:
            os._exit(124)

    if deadline and deadline > 0:
        timer = threading.Timer(deadline, end, (f"stopped: --deadline {deadline:g}s passed",))
        timer.daemon = True
        timer.start()
    if stop_on_eof:
        def watch() -> None:
            from edgeslm.runner.budget import STOP

            try:
                while True:
                    block = os.read(0, 4096)
                    if not block:
                        break
                    if b"stop" in block:  # the host asks to end measuring now and keep what was measured
                        STOP.set()
            except OSError:
                pass
            end("stopped: the host's session ended (stdin closed)")

        threading.Thread(target=watch, name="stdin-watch", daemon=True).start()


def _lengths(text: str) -> tuple:
    """A comma-separated list of prompt lengths, each in [1, MAX_TOKENS], at most 16 of them."""
    try:
        values = tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a comma-separated list of integers") from None
    if not values or len(values) > 16 or not all(1 <= v <= MAX_TOKENS for v in values):
        raise argparse.ArgumentTypeError(f"give 1 to 16 lengths, each in [1, {MAX_TOKENS}]")
    return values


def _bounded(lo: int, hi: int):
    """An argparse type: a whole number in [lo, hi] (the host checks these too; the runner's arguments are
    input all the same: 100000 threads would take gigabytes before the first inference)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a whole number") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{value} is outside [{lo}, {hi}]")
        return value

    return parse


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="runner.pyz", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("probe")
    p.add_argument("--workdir")
    p = sub.add_parser("hash")
    p.add_argument("files", nargs="*")
    p = sub.add_parser("verify")
    p.add_argument("dir")
    p.add_argument("--manifest-sha256")
    model_cmds = {}
    for name in ("status", "stage", "commit", "activate", "rollback", "hold", "break-lock"):
        p = model_cmds[name] = sub.add_parser(name)
        p.add_argument("--workdir", required=True)
        p.add_argument("recipe")
        if name in ("stage", "commit", "activate"):
            p.add_argument("version")
    for name in ("commit", "rollback"):
        model_cmds[name].add_argument("--manifest-sha256")
    for name in ("stage", "commit", "activate", "rollback"):
        model_cmds[name].add_argument("--lock", metavar="TOKEN", help="the deploy lock's token (from `hold`)")
    model_cmds["rollback"].add_argument("--expect", help="the version previous must point to")
    p = model_cmds["hold"]
    p.add_argument("--pin", help="pin this version (or 'current') instead of taking the deploy lock")
    p.add_argument("--owner", default="unknown host")
    p.add_argument("--expire", type=float, default=30.0, help="release after this many seconds without a heartbeat")
    p.add_argument("--wait", type=float, default=0.0, help="wait this long for the lock")
    p = sub.add_parser("profile")
    p.add_argument("build_dir")
    p.add_argument("--artifact", required=True)
    p.add_argument("--threads", type=_bounded(0, MAX_THREADS), default=0)
    p.add_argument("--warmup", type=_bounded(0, MAX_ITERS), default=10)
    p.add_argument("--iters", type=_bounded(1, MAX_ITERS), default=100)
    p.add_argument("--min-seconds", type=float, default=0.0)
    p.add_argument("--max-seconds", type=float, default=None,
                   help="time budget: end the timed runs when it is spent and mark the result partial (0: none; "
                        "default: none, 600 on an emulated device)")
    p.add_argument("--seq-len", type=int)
    p.add_argument("--out")
    p.add_argument("--workdir", help="with --out: the result must land inside this workdir")
    p.add_argument("--eval", type=int, default=None, metavar="ROWS",
                   help="also score the build's eval split here (0 = all of it, N = its first N texts)")
    p.add_argument("--new-tokens", type=_bounded(1, MAX_TOKENS), default=64, help="text-generation: decode steps timed")
    p.add_argument("--prompt-lengths", type=_lengths, default=None, metavar="N,N,...",
                   help="text-generation: prompt lengths whose time to first token is measured (default: 32,128,512 "
                        "where they fit the cache)")
    p.add_argument("--et-runtime", metavar="DIR",
                   help="run .pte files with libedgeslm_et.so from DIR (torch-free; default: $EDGESLM_ET_RUNTIME)")
    p = sub.add_parser("generate", help="greedy tokens for a prompt, one JSON line per token as it comes")
    p.add_argument("build_dir")
    p.add_argument("--artifact", default="executorch")
    p.add_argument("--prompt-ids", required=True, help="JSON list of token ids (the host tokenizes)")
    p.add_argument("--new-tokens", type=_bounded(1, MAX_TOKENS), default=64)
    p.add_argument("--threads", type=_bounded(0, MAX_THREADS), default=0)
    p.add_argument("--et-runtime", metavar="DIR")
    p.add_argument("--sample", metavar="JSON", help='sampling instead of greedy: {"temperature": t, "top_k": k, '
                   '"top_p": p, "seed": s}')
    p = sub.add_parser("serve-steps", help="teacher-forced steps for the host's eval: logits per request line")
    p.add_argument("build_dir")
    p.add_argument("--artifact", required=True)
    p.add_argument("--threads", type=_bounded(0, MAX_THREADS), default=0)
    p.add_argument("--et-runtime", metavar="DIR")
    for p in (sub.choices["profile"], sub.choices["generate"]):
        p.add_argument("--deadline", type=float, metavar="S", help="end with an error after S seconds")
        p.add_argument("--stop-on-eof", action="store_true",
                       help="end when stdin closes: the host's session is gone (the host keeps it open)")
    args = ap.parse_args(argv)
    if getattr(args, "deadline", None) or getattr(args, "stop_on_eof", False):
        _watchdog(args.deadline, args.stop_on_eof)
    try:
        if args.cmd == "probe":
            result = probe(args.workdir)
        elif args.cmd == "hash":
            result = hash_files(args.files)
        elif args.cmd == "verify":
            result = verify_dir(args.dir, args.manifest_sha256)
        elif args.cmd == "status":
            result = status(args.workdir, args.recipe)
        elif args.cmd == "stage":
            result = stage(args.workdir, args.recipe, args.version, guard(args.lock))
        elif args.cmd == "commit":
            result = commit(args.workdir, args.recipe, args.version, args.manifest_sha256, guard(args.lock))
        elif args.cmd == "activate":
            result = activate(args.workdir, args.recipe, args.version, guard(args.lock))
        elif args.cmd == "rollback":
            result = rollback(args.workdir, args.recipe, args.expect, args.manifest_sha256, guard(args.lock))
        elif args.cmd == "hold":
            return hold(args.workdir, args.recipe, args.pin, args.owner, args.expire, args.wait)
        elif args.cmd == "break-lock":
            result = break_lock(args.workdir, args.recipe)
        elif args.cmd == "serve-steps":
            from edgeslm.runner.generation import serve_steps

            return serve_steps(args.build_dir, args.artifact, args.threads or os.cpu_count() or 1, args.et_runtime)
        elif args.cmd == "generate":
            from edgeslm.runner.generation import generate

            try:
                ids = json.loads(args.prompt_ids)
            except ValueError:
                raise RunnerError("--prompt-ids must be a JSON list of token ids") from None
            if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
                raise RunnerError("--prompt-ids must be a JSON list of token ids")
            sampling = None
            if args.sample:
                try:
                    sampling = json.loads(args.sample)
                    sampling = {"temperature": float(sampling["temperature"]), "top_k": int(sampling["top_k"]),
                                "top_p": float(sampling["top_p"]), "seed": int(sampling["seed"])}
                except (ValueError, KeyError, TypeError):
                    raise RunnerError("--sample must be JSON with temperature, top_k, top_p and seed") from None
                if not (0 < sampling["temperature"] < float("inf") and 0 < sampling["top_p"] <= 1
                        and 0 <= sampling["top_k"] <= MAX_TOP_K and 0 <= sampling["seed"] <= MAX_SEED):
                    raise RunnerError(f"--sample: 0 < temperature (finite), 0 < top_p <= 1, 0 <= top_k <= {MAX_TOP_K}, "
                                      f"0 <= seed <= {MAX_SEED}")
            result = generate(args.build_dir, args.artifact, ids, args.new_tokens,
                              args.threads or os.cpu_count() or 1, args.et_runtime, sampling=sampling)
        else:
            result = profile(args.build_dir, args.artifact, args.threads, args.warmup, args.iters,
                             args.min_seconds, args.seq_len, args.eval, args.et_runtime, args.new_tokens,
                             args.prompt_lengths, args.max_seconds)
            if args.out:
                result = _write_result(result, args.out, args.workdir)
    except RunnerError as exc:
        print(json.dumps({"error": str(exc)}))
        return 1
    except ImportError as exc:
        print(json.dumps({"error": f"missing Python package on the device: {exc.name or exc} "
                                   f"(install it: {sys.executable} -m pip install {_pip_name(exc.name)})"}))
        return 1
    except (OSError, KeyError, TypeError, ValueError) as exc:
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        return 1
    print(json.dumps(result))
    return 0


def _pip_name(module) -> str:
    return {"executorch_numpy_runtime": "executorch-numpy-runtime", None: "numpy"}.get(module, module)
