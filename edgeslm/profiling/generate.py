"""`edgeslm run`: a prompt through a deployed text-generation model, the text streamed as the device
produces it. The host tokenizes (the build's tokenizer and chat template) and detokenizes; the device
runs the program and sends token ids, so the device needs no tokenizer library.

The stream is a device answer like any other: each line at most `answers.MAX_LINE` bytes, the whole of it
at most `answers.MAX_STREAM`, every token id an integer in [0, vocab), no more tokens than were asked for,
and the summary line typed; anything else ends the run with one DeviceError line."""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass
from pathlib import Path

from edgeslm.config.devices import Device
from edgeslm.contract.answers import MAX_LINE, MAX_STREAM, AnswerError, check, token_id
from edgeslm.contract.documents import DocumentError, loads
from edgeslm.errors import UserError
from edgeslm.profiling.deploy import HostBuild, device_version, needs_et_runtime, open_device
from edgeslm.profiling.remote import ends_with_host, malformed
from edgeslm.tasks import task_unit
from edgeslm.transport import DeviceError, printable, size_text


def generation_build(folder: Path, artifact: str | None = None) -> tuple[HostBuild, str]:
    """The build in `folder` and the artifact `run` uses (the first by default), refused unless its task
    generates text and it has that artifact."""
    build = HostBuild.load(folder)
    m = build.manifest
    if not task_unit(m.task).generates:
        raise UserError(f"{folder} is a {m.task} build; `edgeslm run` needs a text-generation build")
    names = [a.name for a in m.artifacts]
    artifact = artifact or names[0]
    if artifact not in names:
        raise UserError(f"--artifact {artifact}: {folder} has {', '.join(names)}")
    return build, artifact


@dataclass
class RunRequest:
    """What `run` asks the device for, prepared on the host before anything touches the device: the prompt
    tokenized (a prompt the model cannot hold is refused before a deploy), the tokens to generate, how."""

    folder: Path
    build: HostBuild
    artifact: str
    tokenizer: object
    ids: list
    new_tokens: int
    sample: list  # runner arguments: [] (greedy) or ["--sample", JSON]
    stops: list


def prepare_run(folder: Path, prompt: str, new_tokens: int | None = None, chat: bool | None = None,
                artifact: str | None = None, sampling: dict | None = None) -> RunRequest:
    """Tokenize `prompt` with the build's tokenizer (and chat template) and settle the request. `sampling`:
    overrides of the recipe's [generation] sampling keys (sampling = "greedy" | "sample", temperature, top_k,
    top_p, seed)."""
    from transformers import AutoTokenizer

    from edgeslm.models.causal_lm import prompt_ids

    build, artifact = generation_build(folder, artifact)
    m = build.manifest
    gen = (m.recipe.content or {}).get("generation") or {}
    tok = AutoTokenizer.from_pretrained(str(folder / "tokenizer"))
    ids = prompt_ids(tok, prompt, gen.get("chat_template", True) if chat is None else chat)
    context = int(m.shapes["max_context"])
    if not ids:
        raise UserError("the prompt is no tokens at all; give some text")
    if len(ids) >= context:
        raise UserError(f"the prompt is {len(ids)} tokens; {m.recipe.name} holds {context} in its KV cache "
                        "(shorten the prompt, or build with a larger generation.max_context)")
    n = min(new_tokens or int(gen.get("max_new_tokens", 64)), context - len(ids))
    decoding = {k: gen.get(k, d) for k, d in (("sampling", "greedy"), ("temperature", 0.7), ("top_k", 40),
                                                ("top_p", 0.95), ("seed", 0))}
    decoding.update({k: v for k, v in (sampling or {}).items() if v is not None})
    sample = [] if decoding.pop("sampling") == "greedy" else ["--sample", json.dumps(decoding)]
    stops = [s for s in gen.get("stop", []) if s]
    return RunRequest(folder, build, artifact, tok, ids, n, sample, stops)


def run_prompt(name: str, device: Device, request: RunRequest, threads: int = 0,
               accept_new_host_key: bool = False, emit=print) -> dict:
    """Generate on the device from the deployed version of the request's build (deploy it first).
    `emit(text)` receives each new piece of text. Returns the runner's summary plus the text."""
    m, artifact, folder, tok = request.build.manifest, request.artifact, request.folder, request.tokenizer
    ids, n = request.ids, request.new_tokens
    recipe = m.recipe.name
    with open_device(name, device, accept_new_host_key) as dev:
        with dev.pinned(recipe) as pinned:
            version = device_version(name, pinned)
            if version != m.version:
                raise UserError(f"device {name} runs {recipe} version {version}, not the build's {m.version}; "
                                f"deploy the build first (edgeslm deploy {folder} --device {name})")
            extra = []
            if needs_et_runtime(m, artifact):
                extra = ["--et-runtime", dev.et_runtime(dev.arch(), log=lambda msg: None)]
            vdir = posixpath.join(dev.model_dir(recipe), "versions", version)
            chan = dev.conn.spawn([dev.python, dev.path, "generate", vdir, "--artifact", artifact, "--prompt-ids",
                                   json.dumps(ids), "--new-tokens", str(n), "--threads", str(threads), *extra,
                                   *request.sample, *ends_with_host(device.profile_timeout)],
                                  timeout=device.profile_timeout)
            try:  # a stop string ends the reading early: closing the channel ends the runner too
                out, shown, summary = _stream(chan, tok, request.stops, emit, name, n, _vocab(m, tok))
            finally:
                chan.close()
    if summary is None and not out:
        raise DeviceError(f"device {name}: generate ended without output")
    return {**(summary or {"tokens": out, "stopped": True}), "text": shown, "prompt_tokens": len(ids),
            "version": version, "artifact": artifact}


def _vocab(manifest, tok) -> int:
    """How many token ids the program can produce (its logits' width); the tokenizer's size when the
    manifest does not say."""
    v = (manifest.model or {}).get("vocab_size")
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else len(tok)


def _stream(chan, tok, stops: list[str], emit, name: str, limit: int,
            vocab: int) -> tuple[list[int], str, dict | None]:
    """Read the runner's token lines as they come, show the text (up to a stop string), return the tokens,
    the text shown and the runner's summary line. `limit`: the tokens asked for (--max-new-tokens, within
    the context): a device that sends more is refused, as is a token id outside [0, vocab), a line longer
    than MAX_LINE, a stream longer than MAX_STREAM or a summary that is not typed as the runner writes it."""
    out, shown, summary, total = [], "", None, 0
    while True:
        line = chan.readline(MAX_LINE + 1)
        if not line:
            break
        total += len(line)
        if len(line) > MAX_LINE:
            raise malformed(name, "generate", f"a line longer than {size_text(MAX_LINE)}")
        if total > MAX_STREAM:
            raise malformed(name, "generate", f"more than {size_text(MAX_STREAM)} in all")
        if not line.startswith("{"):
            continue  # not an answer line (a runtime's chatter)
        try:
            d = loads(line, "a line", MAX_LINE)
        except DocumentError as exc:
            raise malformed(name, "generate", exc) from None
        if isinstance(d, dict) and "error" in d:
            raise DeviceError(f"device {name}: generate failed: {printable(d['error'])}")
        if summary is not None:
            raise malformed(name, "generate", "a line after its summary")
        try:
            if isinstance(d, dict) and "token" in d:
                tid = token_id(check("token", d)["token"], vocab)
            else:
                summary = check("generate", d)
                for i, t in enumerate(summary["tokens"]):
                    token_id(t, vocab, f"tokens[{i}]")
                if len(summary["tokens"]) > limit:
                    raise AnswerError(f"tokens holds {len(summary['tokens'])} ids; {limit} were asked for")
                continue
        except AnswerError as exc:
            raise malformed(name, "generate", exc) from None
        if len(out) >= limit:
            raise malformed(name, "generate", f"more tokens than the {limit} asked for")
        out.append(tid)
        text = tok.decode(out, skip_special_tokens=True)
        cut = min((text.find(s) for s in stops if s in text), default=-1)
        if cut >= 0:
            text = text[:cut]
        if text.endswith("\ufffd") and cut < 0:  # a character cut between tokens: wait for the rest
            continue
        if text.startswith(shown) and len(text) > len(shown):
            emit(text[len(shown):])
        shown = text
        if cut >= 0:
            break
    return out, shown, summary
