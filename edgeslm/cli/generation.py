"""Commands for text-generation builds: `run` on a device, `eval` on the user's own text (and the decoder profile
print)."""

from __future__ import annotations

from pathlib import Path

import click

from edgeslm.cli.app import main
from edgeslm.cli.options import accept_option, build_for, devices_option, figure, inventory, json_option
from edgeslm.cli.options import MAX_SEED, MAX_TOKENS, MAX_TOP_K, FiniteFloatRange, check_prompt, threads_option
from edgeslm.config.devices import LOCAL

MIN_WINDOW = 8  # tokens: a window scores at least 3


@main.command()
@click.argument("build_or_recipe")
@click.argument("prompt")
@click.option("--device", "-d", "name", default=LOCAL, show_default=True, help="Device name.")
@click.option("--max-new-tokens", type=click.IntRange(1, MAX_TOKENS), default=None,
              help="Tokens to generate at most (default: the recipe's generation.max_new_tokens).")
@click.option("--chat/--no-chat", default=None, help="Wrap the prompt in the model's chat template "
              "(default: the recipe's generation.chat_template).")
@threads_option("Threads (default: the device target's threads; 0 = all cores)")
@click.option("--sample/--greedy", "sample", default=None, help="Sample (temperature / top-k / top-p) or take "
              "the most likely token (default: the recipe's generation.sampling).")
@click.option("--temperature", type=FiniteFloatRange(min=0, min_open=True, max=10), default=None,
              help="Sampling temperature (default: the recipe's).")
@click.option("--top-k", type=click.IntRange(0, MAX_TOP_K), default=None, help="Sample among the k most likely (0 = all).")
@click.option("--top-p", type=FiniteFloatRange(min=0, min_open=True, max=1), default=None,
              help="Sample within the smallest set reaching this probability.")
@click.option("--seed", type=click.IntRange(0, MAX_SEED), default=None,
              help="Sampling seed (the same seed gives the same text).")
@click.option("--artifact", default=None, help="Which of the build's artifacts runs (executorch or onnx; "
              "default: the first of the recipe's formats).")
@click.option("-o", "--out", type=click.Path(path_type=Path), default=Path("build"), show_default=True,
              help="Build folder root: a recipe given here is built into <out>/<recipe>/<target>.")
@devices_option
@accept_option
def run(build_or_recipe, prompt, name, max_new_tokens, chat, threads, sample, temperature, top_k, top_p, seed,
        artifact, out, devices_file, accept_new_host_key) -> None:
    """Generate text from PROMPT with a text-generation build on a device, streamed as it comes (greedy or
    sampled, as the recipe's [generation] says unless overridden here). The build is deployed first when the
    device does not run it yet. Every argument is checked before anything touches the device."""
    import time

    from edgeslm.profiling.deploy import deploy as run_deploy
    from edgeslm.profiling.generate import generation_build, prepare_run, run_prompt

    started = time.monotonic()  # what the user waits: resolving, checking, connecting, deploying included
    check_prompt(prompt)
    inv, file = inventory(devices_file)
    device = inv.get(name, file)
    folder = build_for(build_or_recipe, device.target, out)
    generation_build(folder, artifact)  # refused before anything is deployed
    sampling = {"sampling": None if sample is None else ("sample" if sample else "greedy"),
                "temperature": temperature, "top_k": top_k, "top_p": top_p, "seed": seed}
    request = prepare_run(folder, prompt, max_new_tokens, chat, artifact, sampling)  # a prompt too long: here
    if threads is None:
        from edgeslm.config.catalog import load_target

        threads = load_target(device.target).threads
    run_deploy(folder, name, device, accept_new_host_key, log=lambda m: click.echo(f"  {m}", err=True))

    first_text = []

    def emit(text: str) -> None:
        if not first_text and text:
            first_text.append(time.monotonic() - started)
        click.echo(text, nl=False)

    r = run_prompt(name, device, request, threads, accept_new_host_key, emit=emit)
    click.echo()
    rate = f", {r['decode_tok_s']:.1f} tok/s" if r.get("decode_tok_s") else ""
    ttft = (f"time to first token {r['ttft_ms']:.0f} ms on the device" if r.get("ttft_ms") is not None
            else "no tokens")
    if first_text:  # the device's figure is not what the user waited for: say both
        ttft += f", first text here {first_text[0]:.1f} s after the command started"
    dec = r.get("decoding") or {}
    how = "greedy" if dec.get("sampling", "greedy") == "greedy" else (
        f"sampled: temperature {dec['temperature']}, top-k {dec['top_k']}, top-p {dec['top_p']}, seed {dec['seed']}")
    click.echo(f"[{name}, {r['artifact']}, {how}: {len(r.get('tokens', []))} tokens after a {r['prompt_tokens']}-token prompt; {ttft}{rate}"
               f"{'; stopped' if r.get('stopped') else ''}]", err=True)


def print_generation(r, path) -> None:
    """A decoder's profile result (contract.results.ProfileResult): the check, TTFT per prompt length, decode
    speed, memory."""
    g, mem, a, d, c = r.generation, r.memory_kb, r.artifact, r.device, r.parity
    emu = " EMULATED: timings are not device latency" if d.emulated else ""
    click.echo(f"{d.name} ({d.arch}, {d.cpu_model}){emu}: {r.build.recipe} {a.name} [{a.precision}, {a.runtime}]")
    click.echo(f"  check on device: {'pass' if c.passed else 'FAIL ' + ', '.join(c.failed or [])} (teacher-forced, "
               f"{c.positions} positions: top-1 {figure(c.top1_agreement, '.3f')} / top-5 {figure(c.top5_agreement, '.3f')} "
               f"vs PyTorch, top-1 {figure(c.top1_vs_build_host, '.3f')} vs the build host's run; perplexity "
               f"{figure(c.perplexity, '.4g')} vs PyTorch {figure(c.perplexity_reference, '.4g')}, "
               f"{figure(c.perplexity_increase, '+.1%')})")
    for t in g.ttft:
        s = t.ttft_ms
        click.echo(f"  prompt {t.prompt_tokens:>4} tokens: time to first token p50 {s.p50:.1f} ms "
                   f"(p10-p90 {figure(s.p10, '.1f')}-{s.p90:.1f}, {s.n} runs), prefill {t.prefill_tok_s:.0f} tok/s, "
                   f"RSS {figure(t.rss_kb and t.rss_kb / 1024, '.0f')} MiB")
    dec = g.decode
    st = dec.step_ms
    click.echo(f"  decode: {dec.tok_s:.1f} tok/s (p10-p90 {dec.tok_s_p10_p90[0]:.1f}-{dec.tok_s_p10_p90[1]:.1f}; "
               f"step p50 {figure(st and st.p50, '.2f')} ms, CV {figure(st and st.cv * 100, '.1f')}%, {dec.tokens} tokens "
               f"after {dec.after_prompt_tokens}, threads {r.settings.threads})")
    click.echo(f"  load {figure(r.load_ms, '.0f')} ms; peak RSS {mem.peak_rss / 1024:.0f} MiB (after load "
               f"{figure(mem.rss_after_load and mem.rss_after_load / 1024, '.0f')} MiB, KV cache "
               f"{r.settings.max_context} positions)")
    if r.flags:
        click.echo(f"  flags: {', '.join(r.flags)}")
    click.echo(f"  result: {path}")


@main.command("eval")
@click.argument("build", type=click.Path(path_type=Path))
@click.option("--text", "text_file", type=click.Path(path_type=Path), required=True,
              help="A UTF-8 text file of your own (held out from the build) to score on.")
@click.option("--artifact", "artifacts", multiple=True, help="Which of the build's artifacts (repeatable; default: all).")
@click.option("--context", type=click.IntRange(MIN_WINDOW, MAX_TOKENS), default=None,
              help="Window length in tokens: each window's first half is the prompt, its second half is scored "
                   "(default: 512, or the build's KV cache when shorter).")
@click.option("--source", default=None, help="The model the build was made from, when its recipe's model.source "
              "cannot be found from here (a folder, a .gguf file or a hub id).")
@click.option("-d", "--device", "name", default=None,
              help="Score the files on this device (deployed first when it does not run the build); default: here.")
@threads_option("Inference threads on the device (default: all its cores)")
@devices_option
@accept_option
@json_option
def eval_text(build, text_file, artifacts, context, source, name, threads, devices_file, accept_new_host_key,
              as_json) -> None:
    """Score a text-generation BUILD on your own text against the model it was made from, as llama.cpp's
    llama-perplexity --kl-divergence does: perplexity of each file and of the source (with standard errors), the
    change, KL divergence (mean, p99, max), top-1 and top-5 agreement. The files run as on the device, in a
    process without torch: here, or with --device on the device itself (the host sends each window's tokens
    and compares the logits the device computes with the source's)."""
    import json

    from edgeslm.pipeline.text_eval import evaluate

    log = (lambda m: None) if as_json else (lambda m: click.echo(f"  {m}", err=True))
    open_steps = None
    if name is not None:
        from edgeslm.profiling.deploy import deploy as run_deploy
        from edgeslm.profiling.device_eval import device_steps

        inv, file = inventory(devices_file)
        device = inv.get(name, file)
        run_deploy(build, name, device, accept_new_host_key, log=log)
        open_steps = device_steps(name, device, threads or 0, accept_new_host_key)
    r = evaluate(build, text_file, artifacts, context, source, log=log, open_steps=open_steps)
    if as_json:
        click.echo(json.dumps(r, indent=2))
        return
    click.echo(f"{r['build']['recipe']} ({r['build']['target']}) on {r['where']}: {r['windows']} window(s) of up to "
               f"{r['window']} tokens of {r['text']} ({r['text_tokens']} tokens; second halves scored) against "
               f"{r['source']}")
    click.echo(f"{'artifact':<12} {'tokens':>6} {'perplexity':>18} {'source':>18} {'change':>17} {'KL mean':>9} "
               f"{'KL p99':>8} {'KL max':>8} {'top-1':>6} {'top-5':>6}")
    for name, a in r["artifacts"].items():
        ppl = f"{a['perplexity']:.4g} ± {a['perplexity_se']:.2g}"
        src = f"{a['source_perplexity']:.4g} ± {a['source_perplexity_se']:.2g}"
        change = f"{a['perplexity_change']:+.2%} ± {a['perplexity_change_se']:.2%}"
        click.echo(f"{name:<12} {a['tokens']:>6} {ppl:>18} {src:>18} {change:>17} {a['kl_mean']:>9.5f} "
                   f"{a['kl_p99']:>8.4f} {a['kl_max']:>8.4f} {a['top1_agreement']:>6.3f} {a['top5_agreement']:>6.3f}")
