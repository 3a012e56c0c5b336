"""Tiny random-init models of each supported architecture, saved with save_pretrained so the real
loading path is used. Each carries a small WordPiece tokenizer trained on edgeslm's bundled texts."""

from __future__ import annotations

from pathlib import Path

ARCHS = ("bert", "mobilebert", "distilbert", "albert")
ROOT_RECIPES = Path(__file__).resolve().parents[1] / "recipes"


# Topic words (whole tokens of the tiny tokenizer, see make_tokenizer), so a tiny model learns the topics in
# a few epochs.
TOPICS = {
    "money": ["bank", "company", "percent", "bill", "cent", "raised", "year", "month", "report", "shares"],
    "tech": ["processor", "model", "battery", "engine", "power", "faster", "uses", "built", "reset", "security"],
    "culture": ["festival", "film", "summer", "band", "playing", "minutes", "final", "best", "morning", "court"],
}
FILLER = ["the", "a", "and", "with", "after", "this", "over", "from", "more", "when", "while", "that"]


def make_tokenizer(folder: Path):
    """A deterministic WordPiece vocabulary (the `tokenizers` trainer breaks ties differently from run to
    run, which made every tiny model, and so every marginal test figure, differ between sessions): the
    special tokens, every character alone and as a ##suffix, the topic words of `write_dataset`, then the
    most frequent words of the bundled texts, ties broken alphabetically."""
    import collections
    import re

    from transformers import BertTokenizerFast

    from edgeslm.texts import builtin_texts

    texts = builtin_texts("verify_texts") + builtin_texts("calibration_texts")
    words = collections.Counter(w for t in texts for w in re.findall(r"[a-z]+|[0-9]+", t.lower()))
    chars = sorted({c for t in texts for c in t.lower() if not c.isspace()})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + chars + [f"##{c}" for c in chars if c.isalnum()]
    topic = sorted({w for ws in TOPICS.values() for w in ws} | set(FILLER))
    vocab += [w for w in topic if w not in vocab]
    for w, _ in sorted(words.items(), key=lambda kv: (-kv[1], kv[0])):
        if len(vocab) >= 600:
            break
        if w not in vocab:
            vocab.append(w)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    return BertTokenizerFast.from_pretrained(str(folder), do_lower_case=True)


def make_config(arch: str, vocab_size: int, num_labels: int = 3, initializer_range: float = 0.5,
                layers: int = 1):
    import transformers as tf

    # initializer_range 0.5 instead of 0.02: with the default, a tiny random classifier's outputs hardly
    # depend on its input (logits vary by < 1e-3 across texts), so no verification could tell it from a
    # constant; with 0.5 logits vary by 1-3 across texts and most top-2 margins are clear. Masked-LM
    # logits depend on the input through the tied embeddings already, and keep the default.
    # one layer by default (ALBERT two: its shared layer group is applied twice): lowering to XNNPACK costs
    # about 100 ms per graph node; the trainable models keep two (a fine-tuned 1-layer classifier is less
    # sure of itself: fewer rows with a clear top-1 margin for verification to judge)
    common = dict(vocab_size=vocab_size, num_labels=num_labels, max_position_embeddings=256,
                  initializer_range=initializer_range)
    if arch == "bert":
        return tf.BertConfig(hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
                             intermediate_size=64, **common)
    if arch == "mobilebert":
        return tf.MobileBertConfig(hidden_size=64, embedding_size=32, num_hidden_layers=layers,
                                   num_attention_heads=4, intermediate_size=64, intra_bottleneck_size=32,
                                   true_hidden_size=32, num_feedforward_networks=2, **common)
    if arch == "distilbert":
        return tf.DistilBertConfig(dim=32, n_layers=layers, n_heads=4, hidden_dim=64, **common)
    if arch == "albert":
        return tf.AlbertConfig(hidden_size=32, embedding_size=16, num_hidden_layers=2,
                               num_attention_heads=4, intermediate_size=64, **common)
    raise ValueError(arch)


def make_model(arch: str, task: str, folder: Path, initializer_range: float | None = None,
               layers: int = 1) -> Path:
    """Save a tiny `arch` model for `task` (with tokenizer) into `folder`, `layers` deep (ALBERT: always two
    applications of its shared group). Trainable models (for the finetune and prune passes) pass their own
    initializer_range."""
    import torch
    import transformers as tf

    torch.manual_seed(0)
    tok = make_tokenizer(folder)
    if initializer_range is None:
        initializer_range = 0.02 if task == "fill-mask" else 0.5
    cfg = make_config(arch, tok.vocab_size, initializer_range=initializer_range, layers=layers)
    auto = {"embedding": tf.AutoModel, "sequence-classification": tf.AutoModelForSequenceClassification,
            "fill-mask": tf.AutoModelForMaskedLM}[task]
    model = auto.from_config(cfg)
    model.save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return folder


def write_recipe(path: Path, source: Path, task: str, name: str = "tiny", extra: str = "",
                 formats=("onnx", "executorch"), targets=("host",)) -> Path:
    fmts = ", ".join(f'"{f}"' for f in formats)
    tgts = ", ".join(f'"{t}"' for t in targets)
    path.write_text(f'''name = "{name}"
description = "tiny test model"
targets = [{tgts}]

[model]
source = "{source}"
task = "{task}"

[inputs]
min_seq_len = 4
max_seq_len = 64

[export]
formats = [{fmts}]
{extra}
''')
    return path


def write_dataset(folder: Path, per_label: int = 60, fmt: str = "csv", seed: int = 0) -> Path:
    """A small labelled topic dataset a tiny model can learn (keywords per label), in `fmt`:
    csv, tsv, jsonl or folders (one sub-folder per label)."""
    import csv
    import json
    import random

    rng = random.Random(seed)
    rows = []
    for label, words in TOPICS.items():
        for _ in range(per_label):
            n = rng.randint(6, 14)
            text = " ".join(rng.choice(words) if rng.random() < 0.45 else rng.choice(FILLER) for _ in range(n))
            rows.append((text, label))
    rng.shuffle(rows)
    folder.mkdir(parents=True, exist_ok=True)
    if fmt == "folders":
        root = folder / "data"
        for i, (text, label) in enumerate(rows):
            (root / label).mkdir(parents=True, exist_ok=True)
            (root / label / f"{i:04d}.txt").write_text(text + "\n")
        return root
    path = folder / f"data.{fmt}"
    if fmt == "jsonl":
        path.write_text("".join(json.dumps({"text": t, "label": lb}) + "\n" for t, lb in rows))
    else:
        with open(path, "w", newline="") as f:
            w = csv.writer(f, delimiter="," if fmt == "csv" else "\t")
            w.writerow(["text", "label"])
            w.writerows(rows)
    return path


# A [datasets.topics] table and a finetune pass that turn a trainable tiny model into a real classifier
FINETUNE_TOPICS = """
[datasets.topics]
source = "{data}"
[[passes]]
type = "finetune"
epochs = 8
learning_rate = 5e-3
"""


DECODER_FAMILIES = ("llama", "qwen2", "phi3", "phi3-longrope", "gemma2", "mistral", "qwen3", "gemma3", "smollm3",
                    "llama3.2", "phi4-mini")
NEW_FAMILIES = ("qwen3", "gemma3", "smollm3", "llama3.2", "phi4-mini")  # issue 22: what users pick for a Pi today
MODEL_TYPE = {"gemma3": "gemma3_text", "llama3.2": "llama", "phi4-mini": "phi3", "phi3-longrope": "phi3",
              "llama-k": "llama"}
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def make_decoder_tokenizer(folder: Path):
    """A byte-level BPE tokenizer (512 tokens) trained on the bundled texts, with a ChatML template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from edgeslm.texts import builtin_texts

    texts = [t for name in ("verify_texts", "verify_long_texts", "calibration_texts") for t in builtin_texts(name)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=512, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", bos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>", unk_token="<|endoftext|>")
    fast.chat_template = CHATML
    fast.save_pretrained(str(folder))
    return fast


def make_decoder_model(family: str, folder: Path, seed: int = 0) -> Path:
    """A tiny random decoder of `family` (2 layers, hidden 64, grouped-query attention, vocab 512) with a
    trained tokenizer; family quirks kept: Qwen2 QKV bias and tied embeddings, Phi-3 fused projections
    (and long RoPE: "phi3-longrope"), Gemma 2 soft-capping and alternating sliding/global layers, Mistral
    sliding window; Qwen3 q/k norms, Gemma 3 q/k norms with local and global RoPE, SmolLM3 layers without
    RoPE, Llama 3.2 tied embeddings and llama3 RoPE scaling, Phi-4-mini partial rotation (0.75) and tied
    embeddings. Sliding windows (16) are shorter than the tests' contexts, so windowed attention is checked."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    tok = make_decoder_tokenizer(folder)
    base = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=1024, bos_token_id=tok.bos_token_id,
                eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, tie_word_embeddings=False)
    extra = {"qwen2": dict(tie_word_embeddings=True), "gemma2": dict(head_dim=16, sliding_window=16,
                                                                      query_pre_attn_scalar=16),
             "mistral": dict(sliding_window=16),
             "qwen3": dict(head_dim=16, tie_word_embeddings=True),
             "gemma3": dict(head_dim=16, sliding_window=16, query_pre_attn_scalar=16,
                            layer_types=["sliding_attention", "full_attention"]),
             "smollm3": dict(no_rope_layers=[1, 0], tie_word_embeddings=True),  # layer 1 without RoPE
             "llama3.2": dict(tie_word_embeddings=True, rope_parameters={
                 "rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0,
                 "high_freq_factor": 4.0, "original_max_position_embeddings": 64}),
             # head_dim 64 as Phi-4-mini's 128 scaled: 48 rotated dimensions (onnxruntime needs half of them a
             # multiple of 8; a smaller head is refused for ONNX: test_generation)
             "phi4-mini": dict(hidden_size=128, num_attention_heads=2, num_key_value_heads=1,
                               partial_rotary_factor=0.75, tie_word_embeddings=True,
                               original_max_position_embeddings=1024),
             # Phi-3-mini-4k's own layout (original = max positions: short RoPE; a larger original than max
             # would mean the long-RoPE 128k variant, which needs rope scaling factors)
             "phi3": dict(original_max_position_embeddings=1024),
             # every input width a multiple of 256, as the K-quants' super-blocks need
             # (not 512: onnxruntime-genai's builder takes any linear as wide as the vocabulary for the head)
             "llama-k": dict(hidden_size=256, intermediate_size=768),
             # Phi-3 128k's long RoPE, scaled down: the factors switch once a sequence outgrows 64 positions
             "phi3-longrope": dict(original_max_position_embeddings=64, rope_parameters={
                 "rope_type": "longrope", "rope_theta": 10000.0, "original_max_position_embeddings": 64,
                 "long_factor": [1.0 + 0.5 * i for i in range(8)], "short_factor": [1.0 + 0.05 * i for i in range(8)]}),
             }.get(family, {})
    config = AutoConfig.for_model(MODEL_TYPE.get(family, family), **{**base, **extra})
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    # Gemma multiplies its embeddings by sqrt(hidden) (8 here): its table is drawn that much smaller, so that its
    # activations have the other families' scale (as trained Gemma weights do; 8-bit per-token activations then
    # cost it what they cost the others)
    embed_std = 0.4 / (8.0 if family.startswith("gemma") else 1.0)
    with torch.no_grad():  # larger weights than the default init: logits that depend on the text
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.15 if "embed" not in name else embed_std)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.save_pretrained(str(folder))
    return folder


def write_generation_recipe(path: Path, source: Path, name: str = "tinygen", extra: str = "",
                            targets=("host",), context: int = 128, prompt: int = 32,
                            formats=("executorch",)) -> Path:
    tgts = ", ".join(f'"{t}"' for t in targets)
    fmts = ", ".join(f'"{f}"' for f in formats)
    path.write_text(f'''name = "{name}"
description = "tiny test decoder"
targets = [{tgts}]

[model]
source = "{source}"
task = "text-generation"

[export]
formats = [{fmts}]

[generation]
max_context = {context}
max_prompt = {prompt}
max_new_tokens = 8
{extra}
''')
    return path


QUANT_8DA4W = '[[passes]]\ntype = "quantize"\nmethod = "8da4w"\ngroup_size = 32\nembeddings = true\n'


def build_generation(tmp_path: Path, source: Path, name: str, extra: str = "", formats=("executorch", "onnx")):
    """A generation recipe over `source` (write_generation_recipe) built for host into tmp_path/out."""
    from edgeslm.config.catalog import load_target
    from edgeslm.config.recipe import load_recipe
    from edgeslm.pipeline import build, plan

    recipe = load_recipe(write_generation_recipe(tmp_path / f"{name}.toml", source, name=name, extra=extra,
                                                 formats=formats))
    return build(recipe, plan(recipe, [load_target("host")])[0], tmp_path / "out")


def metrics(v) -> dict:
    """A verification's metrics as {name: value}."""
    return {m.name: m.value for m in v.metrics}


def write_gguf(model_folder: Path, path: Path, quant: str = "Q8_0", types: dict | None = None) -> Path:
    """The tiny Llama of `model_folder` as a GGUF file the way llama.cpp's converter writes one: llama
    metadata, byte-level BPE tokenizer with merges and chat template, Q and K rows permuted for
    llama.cpp's RoPE, 2-D weights in `quant` (Q8_0: the grid transformers dequantizes on load), or per
    GGUF tensor name in `types` (any block type, K-quants included: tests/gguf_blocks), as llama-quantize's
    mixes (Q4_K_M...) hold several."""
    import json

    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    cfg = json.loads((model_folder / "config.json").read_text())
    assert cfg["model_type"] == "llama", cfg["model_type"]
    sd = load_file(str(model_folder / "model.safetensors"))
    heads, kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // heads
    theta = cfg.get("rope_theta") or (cfg.get("rope_parameters") or {}).get("rope_theta", 10000.0)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny-llama")
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(heads)
    w.add_head_count_kv(kv)
    w.add_rope_dimension_count(head_dim)
    w.add_rope_freq_base(float(theta))
    w.add_layer_norm_rms_eps(float(cfg["rms_norm_eps"]))
    w.add_vocab_size(cfg["vocab_size"])
    tj = json.loads((model_folder / "tokenizer.json").read_text())
    vocab, special = tj["model"]["vocab"], {t["content"] for t in tj["added_tokens"]}
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv_: kv_[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in tj["model"]["merges"]]
    tc = json.loads((model_folder / "tokenizer_config.json").read_text())
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([3 if t in special else 1 for t in tokens])
    w.add_token_merges(merges)
    w.add_bos_token_id(vocab[tc.get("bos_token") or "<|endoftext|>"])
    w.add_eos_token_id(vocab[tc.get("eos_token") or "<|im_end|>"])
    w.add_pad_token_id(vocab[tc.get("pad_token") or "<|endoftext|>"])
    w.add_chat_template(CHATML)

    def permute(x, n):  # llama.cpp's convert_hf_to_gguf: interleaved RoPE halves
        return x.reshape(n, 2, x.shape[0] // n // 2, *x.shape[1:]).swapaxes(1, 2).reshape(x.shape)

    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}
    parts = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
    qtype = getattr(gguf.GGMLQuantizationType, quant)
    for name, arr in sd.items():
        arr = np.ascontiguousarray(arr.astype(np.float32))
        if name in names:
            out = names[name]
        else:
            _, _, layer, rest = name.split(".", 3)
            part, _, suffix = rest.rpartition(".")
            out = f"blk.{layer}.{parts[part]}.{suffix}"
            if part == "self_attn.q_proj":
                arr = permute(arr, heads)
            elif part == "self_attn.k_proj":
                arr = permute(arr, kv)
        kind = (types or {}).get(out)
        if arr.ndim == 2 and kind is not None:
            from gguf_blocks import encode

            w.add_tensor(out, encode(arr, kind), raw_dtype=getattr(gguf.GGMLQuantizationType, kind))
        elif arr.ndim == 2 and quant == "F16":
            w.add_tensor(out, arr.astype(np.float16))
        elif arr.ndim == 2 and quant != "F32":
            w.add_tensor(out, gguf.quants.quantize(arr, qtype), raw_dtype=qtype)
        else:
            w.add_tensor(out, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
