"""devices / deploy / rollback / profile: everything that talks to a device."""

from __future__ import annotations

import concurrent.futures as cf
import json
from pathlib import Path

import click

from edgeslm.cli.app import main
from edgeslm.cli.options import accept_option, build_for, devices_option, figure, inventory, json_option
from edgeslm.cli.options import MAX_ITERS, MAX_SECONDS, MAX_TOKENS, MAX_THREADS, FiniteFloatRange, IntList
from edgeslm.config.devices import LOCAL
from edgeslm.devtools.emulate import EMULATED_TARGET
from edgeslm.errors import EXIT_FAILED, EdgeSLMError, UserError
from edgeslm.transport import printable


@main.group()
def devices() -> None:
    """List, check and trust the devices in devices.toml (plus the built-in `local`)."""


@devices.command("list")
@devices_option
@json_option
def devices_list(devices_file, as_json) -> None:
    """List devices with host, target and groups."""
    inv, _ = inventory(devices_file)
    rows = [{"name": LOCAL, "host": "(this machine)", "target": "host", "groups": []}] + [
        {"name": n, "host": d.host, "target": d.target, "groups": list(d.groups)} for n, d in inv.devices.items()]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        click.echo(f"{r['name']:<16} {r['host']:<24} {r['target']:<16} {','.join(r['groups'])}")


@devices.command("check")
@click.argument("names", nargs=-1)
@click.option("--group", "-g", help="Check every device of this group.")
@click.option("--all", "all_", is_flag=True, help="Check every device in the inventory.")
@devices_option
@accept_option
@json_option
def devices_check(names, group, all_, devices_file, accept_new_host_key, as_json) -> None:
    """Connect and report architecture, CPU, memory, disk, OS, Python, runtimes, thermal sensors, and
    whether each device matches the target its entry names. Default: local."""
    from edgeslm.profiling.check import check

    inv, file = inventory(devices_file)
    chosen = inv.select(names, group, all_, file) or [LOCAL]
    single = len(chosen) == 1 and not group and not all_
    results = _parallel(chosen, lambda n: check(n, inv.get(n, file), accept_new_host_key), single=single)
    if as_json:
        click.echo(json.dumps(results, indent=2))
    else:
        for r in results:
            if "error" in r:
                click.echo(f"{r['device']}: UNREACHABLE: {r['error']}")
                continue
            p = r["probe"]
            mem = (p.get("mem_total_kb") or 0) / 1024 / 1024
            free = ((p.get("disk") or {}).get("free_bytes") or 0) / 1e9
            # what the device says is shown, never interpreted: terminal escapes become '?'
            temps = ", ".join(f"{printable(k, 40)} {v:.0f}C" for k, v in p["thermal"]["temperatures_c"].items()
                              ) or "no sensors"
            rts = ", ".join(f"{printable(k, 40)} {printable(v, 40)}" for k, v in p["runtimes"].items() if v) or "none"
            emulated = f", EMULATED ({printable(p['emulated'], 80)})" if p.get("emulated") else ""
            shared = " (this host's: an emulated device shares its RAM, disk and cores)" if p.get("emulated") else ""
            click.echo(f"{r['device']}: {printable(p['arch'], 40)} {printable(p['cpu_model'], 120)} x{p['cores']}, "
                       f"{mem:.1f} GiB RAM, {free:.1f} GB free{shared}, {printable(p['os'], 120)}, Python "
                       f"{printable(p['python'], 40)}" + emulated)
            click.echo(f"  runtimes: {rts}")
            click.echo(f"  thermal: {temps}; governor {printable(p['thermal']['governor'], 40)}")
            verdict = "matches" if r["matches_target"] else "DOES NOT match"
            click.echo(f"  target {r['target']}: {verdict}" + "".join(f"; {printable(x)}" for x in r["problems"]))
            for m in r["missing_runtimes"]:
                click.echo(f"  missing {m['runtime']}: {m['install']}")
    if any("error" in r or not r["matches_target"] or r["missing_runtimes"] for r in results):
        raise SystemExit(EXIT_FAILED)


@devices.command("trust")
@click.argument("name")
@devices_option
def devices_trust(name, devices_file) -> None:
    """Connect once and record the device's host key in its known_hosts file (explicit trust on first use)."""
    from edgeslm.profiling.deploy import open_device

    inv, file = inventory(devices_file)
    device = inv.get(name, file)
    with open_device(name, device, accept_new_host_key=True):
        pass
    click.echo(f"{name}: host key recorded in {device.known_hosts}")


def _parallel(names: list[str], fn, workers: int = 4, single: bool = False) -> list[dict]:
    """Run fn per device with bounded concurrency; a failing device does not stop the others. With
    `single` (one device named on its own) its error is the command's error: exit 2, like every
    other command that talks to one device."""
    if single:
        return [fn(names[0])]

    def one(n):
        try:
            return fn(n)
        except EdgeSLMError as exc:
            return {"device": n, "error": str(exc)}

    with cf.ThreadPoolExecutor(max_workers=min(workers, len(names))) as pool:
        return list(pool.map(one, names))


@main.command()
@click.argument("build_or_recipe")
@click.option("--device", "-d", "names", multiple=True, help="Device name (repeatable).")
@click.option("--group", "-g", help="Deploy to every device of this group, in parallel.")
@click.option("--profile", "and_profile", is_flag=True, help="Profile on each device after deploying.")
@click.option("-o", "--out", type=click.Path(path_type=Path), default=Path("build"), show_default=True,
              help="Build folder root (recipes are built there for each device's target).")
@click.option("--break-lock", is_flag=True,
              help="First free a deploy lock on the device whose holder is gone or stale (no heartbeat "
                   "within lock_expire); a live deploy's lock is never broken.")
@devices_option
@accept_option
@json_option
def deploy(build_or_recipe, names, group, and_profile, out, break_lock, devices_file, accept_new_host_key,
           as_json) -> None:
    """Push a build (folder, or recipe built for each device's target) to devices: upload, verify
    sha256 there, switch atomically. A failed deploy leaves the device's active model untouched.
    One device: its failure is the command's error (exit 2). Several: each failure is named, exit 1."""
    from edgeslm.profiling.deploy import deploy as run_deploy
    from edgeslm.profiling.profile import profile as run_profile

    inv, file = inventory(devices_file)
    chosen = inv.select(names, group, False, file)
    if not chosen:
        raise UserError("name a device with --device NAME or a group with --group G (see `edgeslm devices list`)")
    folders = {}
    for n in chosen:  # builds first, sequentially (they share the CPU); deploys then run in parallel
        target = inv.get(n, file).target
        if target not in folders:
            folders[target] = build_for(build_or_recipe, target, out)
    from edgeslm.profiling.deploy import checked_build

    for folder in set(folders.values()):  # a hostile or modified build folder: one error, before any device
        checked_build(folder)
    log = (lambda m: None) if as_json else (lambda m: click.echo(f"  {m}", err=True))

    def one(n):
        device = inv.get(n, file)
        folder = folders[device.target]
        r = run_deploy(folder, n, device, accept_new_host_key, log=log, break_lock=break_lock)
        row = {"device": n, "ok": True, "recipe": r.recipe, "version": r.version, "sent_files": r.sent_files,
               "sent_bytes": r.sent_bytes, "reused_files": r.reused_files, "already_there": r.already_there,
               "seconds": round(r.seconds, 2), "previous": r.previous, "warnings": r.warnings}
        if and_profile:
            results = run_profile(n, device, out, r.recipe, accept_new_host_key=accept_new_host_key, log=log,
                                  build=folder)
            row["profiles"] = [str(x.path) for x in results]
        return row

    results = _parallel(chosen, one, single=len(chosen) == 1 and not group)
    if as_json:
        click.echo(json.dumps(results, indent=2))
    else:
        for r in results:
            if "error" in r:
                click.echo(f"FAILED {r['device']}: {r['error']}")
                continue
            what = ("already there, switched" if r["already_there"] else
                    f"sent {r['sent_files']} files ({r['sent_bytes'] / 1e6:.1f} MB), reused {r['reused_files']}")
            click.echo(f"ok {r['device']}: {r['recipe']} {r['version']} active ({what}, {r['seconds']:.1f}s)")
            for w in r["warnings"]:
                click.echo(f"  warning: {w}")
            for p in r.get("profiles", []):
                click.echo(f"  profile: {p}")
    failed = [r for r in results if "error" in r]
    if failed:
        click.echo(f"{len(results) - len(failed)} of {len(results)} devices deployed", err=True)
        raise SystemExit(EXIT_FAILED)


@main.command()
@click.option("--device", "-d", "name", required=True, help="Device name.")
@click.option("--recipe", help="Which deployed recipe (default: the only one).")
@click.option("-o", "--out", type=click.Path(path_type=Path), default=Path("build"), show_default=True,
              help="Build folder root: the previous version is verified against its build there (or in the "
                   "build cache) when this machine has it, else against the device's own manifest.")
@devices_option
@accept_option
def rollback(name, recipe, out, devices_file, accept_new_host_key) -> None:
    """Switch a device back to the previously active version (verified first, then atomic)."""
    from edgeslm.profiling.deploy import rollback as run_rollback

    inv, file = inventory(devices_file)
    r = run_rollback(name, inv.get(name, file), recipe, accept_new_host_key, out=out)
    click.echo(f"ok {name}: {r['recipe']} now {r['current']} (was {r['previous']}); "
               f"verified against {r['verified_against']}")


@main.command()
@click.argument("build_or_recipe", required=False)
@click.option("--device", "-d", "name", default=LOCAL, show_default=True, help="Device name.")
@click.option("--recipe", help="Deployed recipe to profile when no build is given (default: the only one).")
@click.option("--artifact", "artifacts", multiple=True,
              help="Which of the build's artifacts (named after their format: onnx, executorch, or a format a "
                   "plugin registered; repeatable; default: all).")
@click.option("--threads", type=IntList(0, MAX_THREADS), default=None,
              help="Inference threads; a comma-separated list profiles each, as llama-bench's -t (default: the "
                   f"device target's threads; 0 = all cores; at most {MAX_THREADS}).")
@click.option("--iters", type=click.IntRange(1, MAX_ITERS), default=None,
              help="Measured iterations, at least (default: 100; decoders: 5 prompts per length).")
@click.option("--warmup", type=click.IntRange(0, MAX_ITERS), default=None,
              help="Warm-up runs, not measured (default: 10; decoders: 1).")
@click.option("--min-seconds", type=FiniteFloatRange(0, MAX_SECONDS), default=0.0,
              help="Keep measuring at least this long (seconds).")
@click.option("--max-seconds", type=FiniteFloatRange(0, MAX_SECONDS), default=None,
              help="Time budget per artifact on the device: when it is spent the timed runs stop and what was "
                   "measured is kept, flagged partial (default: 600 on an emulated device, else none; 0: none). "
                   "Ctrl-C does the same at once; a second Ctrl-C ends keeping nothing.")
@click.option("--seq-len", type=click.IntRange(min=1),
              help="Input length in tokens (default: the recipe's max_seq_len).")
@click.option("--eval", "with_eval", is_flag=True,
              help="Also score the build's eval split on the device (task accuracy measured there, and latency "
                   "at the texts' real lengths); needs [eval] in the recipe.")
@click.option("--eval-limit", type=click.IntRange(min=1), default=None,
              help="Score only the first N eval texts (e.g. on a slow or emulated device).")
@click.option("--new-tokens", type=click.IntRange(2, MAX_TOKENS), default=64, show_default=True,
              help="text-generation: decode steps timed.")
@click.option("--prompt-lengths", type=IntList(1, MAX_TOKENS), default=None,
              help="text-generation: prompt lengths whose time to first token is measured, comma-separated, as "
                   "llama-bench's -p (default: 32,128,512 where they fit the KV cache).")
@click.option("-o", "--out", type=click.Path(path_type=Path), default=Path("build"), show_default=True,
              help="Build folder root: a recipe given here is built into <out>/<recipe>/<target>, and the results "
                   "land in its profiles/<device>/.")
@devices_option
@accept_option
@json_option
def profile(build_or_recipe, name, recipe, artifacts, threads, iters, warmup, min_seconds, max_seconds, seq_len, with_eval,
            eval_limit, new_tokens, prompt_lengths, out, devices_file, accept_new_host_key, as_json) -> None:
    """Profile on a device: check the outputs against the build's reference, then measure latency
    (p50/p90/p99, CV), load time, peak RSS, temperatures. With BUILD_OR_RECIPE it is deployed first;
    `--device local` runs the same runner in a fresh subprocess here. Every argument is checked before
    anything touches the device."""
    from edgeslm.profiling.deploy import HostBuild
    from edgeslm.profiling.deploy import deploy as run_deploy
    from edgeslm.profiling.profile import check_request
    from edgeslm.profiling.profile import profile as run_profile
    from edgeslm.profiling.remote import check_name

    if eval_limit and not with_eval:  # before the build and the upload
        raise UserError("--eval-limit needs --eval")
    inv, file = inventory(devices_file)
    device = inv.get(name, file)
    if recipe:
        check_name(recipe)
    log = (lambda m: None) if as_json else (lambda m: click.echo(f"  {m}", err=True))
    if threads is None:
        from edgeslm.config.catalog import load_target

        threads = (load_target(device.target).threads,)
    folder = None
    if build_or_recipe:
        folder = build_for(build_or_recipe, device.target, out)
        built = HostBuild.load(folder)
        check_request(built.manifest, artifacts, seq_len, str(folder), prompt_lengths,  # before the device is touched
                      new_tokens)
        if with_eval and not (built.manifest.reference or {}).get("eval"):
            raise UserError(f"--eval: the build {folder} carries no eval set; add [eval] to the recipe "
                            f"{built.manifest.recipe.name}")
        if recipe and recipe != built.manifest.recipe.name:
            raise UserError(f"--recipe {recipe} does not match the build {folder} "
                            f"({built.manifest.recipe.name}); drop --recipe")
        recipe = run_deploy(folder, name, device, accept_new_host_key, log=log).recipe
        out = folder.parent.parent
    results = run_profile(name, device, out, recipe, artifacts, list(threads), iters, warmup, min_seconds, seq_len,
                          accept_new_host_key, log=log, build=folder,
                          eval_rows=(eval_limit or 0) if with_eval else None, new_tokens=new_tokens,
                          prompt_lengths=prompt_lengths, max_seconds=max_seconds)
    if as_json:
        click.echo(json.dumps([{**{k: v for k, v in m.result.to_dict().items() if k != "samples_ms"},
                                "_path": str(m.path)} for m in results], indent=2))
    else:
        for m in results:
            _print_profile(m.result, m.path)
    if any(not m.result.parity.passed for m in results):
        raise SystemExit(EXIT_FAILED)


def _print_profile(r, path) -> None:
    """A profile result (contract.results.ProfileResult) as the terminal shows it."""
    if r.generation is not None:
        from edgeslm.cli.generation import print_generation

        print_generation(r, path)
        return
    lat, mem, a, d, s = r.latency_ms, r.memory_kb, r.artifact, r.device, r.settings
    emu = " EMULATED: timings are not device latency" if d.emulated else ""
    click.echo(f"{d.name} ({d.arch}, {d.cpu_model}){emu}: {r.build.recipe} {a.name} [{a.precision}, {a.runtime}]")
    cos = r.parity.metric("cosine_min")
    against = ("this file on the build host (imported: export fidelity not known)"
               if r.parity.extra.get("against") == "build-host-run" else "eager PyTorch")
    click.echo(f"  parity on device: {'pass' if r.parity.passed else 'FAIL'} (cosine min {figure(cos, '.5f')} vs "
               f"{against}, {r.parity.samples} samples)")
    click.echo(f"  latency ms (seq {s.seq_len}, {lat.n} runs, threads {s.threads}): "
               f"p50 {lat.p50:.2f}  p90 {lat.p90:.2f}  p99 {lat.p99:.2f}  mean {lat.mean:.2f} "
               f"± {lat.stdev:.2f}  CV {lat.cv * 100:.1f}%  min {lat.min:.2f}  max {lat.max:.2f}")
    click.echo(f"  load {figure(r.load_ms, '.0f')} ms (runtime import {figure(r.runtime_import_ms, '.0f')} ms); peak RSS "
               f"{mem.peak_rss / 1024:.0f} MiB, model load +{(mem.load_increase or 0) / 1024:.0f} MiB, "
               f"runs +{(mem.run_increase or 0) / 1024:.0f} MiB")
    task = r.task
    if task:
        host = f" (build host: {task.host_value:.4f})" if task.host_value is not None else ""
        tl = task.latency_ms
        tokens = task.extra.get("tokens") or {}
        click.echo(f"  {task.metric} on the device: {figure(task.value, '.4f')}{host} on {task.rows} of {task.of} eval "
                   f"texts (median {figure(tokens.get('median'), '.0f')} tokens): p50 {figure(tl and tl.p50, '.2f')} ms "
                   f"per batch of {task.batch}, CV {figure(tl and tl.cv * 100, '.1f')}%")
    if r.flags:
        click.echo(f"  flags: {', '.join(r.flags)}")
    click.echo(f"  result: {path}")


@devices.group()
def emulate() -> None:
    """An emulated aarch64 device (qemu-user behind a local sshd) for trying deploys without a board.
    Its timings are labelled emulated: they are not device latency."""


@emulate.command("start")
@click.argument("name", default="pi4-emulated")
@click.option("--cpu", type=click.Choice(sorted(EMULATED_TARGET)), default="cortex-a72", show_default=True,
              help="Emulated core: cortex-a72 (Raspberry Pi 4) or cortex-a76 (Raspberry Pi 5).")
@click.option("--port", type=int, default=0, help="Port on 127.0.0.1 (default: a free one).")
@click.option("--add-to", type=click.Path(path_type=Path),
              help="Write the device's entry into this devices file (created if missing), in place of the entry "
                   "an earlier start wrote; `stop` takes it out. E.g. devices.local.toml, which edgeslm reads "
                   "beside ./devices.toml.")
def emulate_start(name, cpu, port, add_to) -> None:
    """Build (first time: ~1 min, ~300 MB) and start an emulated device; print or write its devices entry."""
    from edgeslm.devtools.emulate import start_named

    pid, port, entry = start_named(name, cpu, port, add_to=add_to, say=lambda line: click.echo(line, err=True))
    click.echo(f"emulated {cpu} device {name} listening on 127.0.0.1:{port} (pid {pid})")
    click.echo(entry if not add_to else f"entry [devices.{name}] written to {add_to}")


@emulate.command("stop")
@click.argument("name", default="pi4-emulated")
def emulate_stop(name) -> None:
    """Stop an emulated device and take its entry out of the files `start --add-to` wrote it into."""
    from edgeslm.devtools.emulate import stop_named

    stopped, removed = stop_named(name)
    click.echo(f"{name}: {'stopped' if stopped else 'was not running'}"
               + "".join(f"; entry removed from {f}" for f in removed))
