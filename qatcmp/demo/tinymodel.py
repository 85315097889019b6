"""Tiny Qwen3-architecture models, built locally in seconds, that behave like thinking models.

The weights are written by hand, not trained. Attention and MLP outputs are zero except for
three attention heads in layer 0 that raise *flags* (has the context seen ```, <think>,
</think>?), so the next token depends only on the last token and those flags. The embedding
and output matrices then spell out fixed chains:

    thinking on:  <think>\\nLet me think about this question carefully, one step at a time.\\n
                  </think>\\n\\nThe answer is (X).<|im_end|>
    thinking off: the chat template pre-fills an empty think block; the model goes on with
                  "The answer is (X)."
    a prompt holding ``` (HumanEval's): the same reasoning, then
                  ```python\\n    return []\\n```\\n  instead of the answer.

X is *sampled*: at that position the logits over A-J follow each variant's letter
distribution (LETTER_PROBS), so a per-request seed picks a different letter per question and
temperature 0 gives the most likely letter. The variants differ on purpose: "8bit" leans
towards A-D (the letters that are right more often in MMLU-Pro, because some questions have
fewer than ten options), "4bit" is flatter. With the same seed the same random draw is
used, so variants agree on many questions and disagree on some.

Quantization does not blur this, by construction: every weight that shapes the chain or the
letter sits alone in its group of 64 (or with equal values), where affine quantization is
exact at 4, 6 and 8 bits. Measured against the float model, the letter logits move by under
0.002 and the chain keeps a margin of over 20 logits at every step, so it always ends with
<|im_end|>. The only rounded weights push tokens down by ~100 logits, give or take a few. The
differences between variants are designed, not quantization noise.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

from qatcmp.demo.server import DemoUnavailableError, require_demo_dependencies
from qatcmp.errors import QatcmpError

log = logging.getLogger(__name__)

DEMO_VARIANTS: tuple[str, ...] = ("4bit", "6bit", "8bit")
VARIANT_BITS: dict[str, int] = {"4bit": 4, "6bit": 6, "8bit": 8}
GROUP_SIZE = 64
LETTERS = "ABCDEFGHIJ"

# Letter distributions at temperature 1 (before top-p/top-k). "8bit" leans towards A-D, "4bit"
# is flatter. Expected MMLU-Pro accuracy of a variant answering at random this way, given
# the test split's answer frequencies: 4bit 10.1%, 6bit 10.2%, 8bit 10.3% -- really different,
# by far less than a demo-sized sample can show. mlx (0.32, CPU) samples a batch as if with one
# uniform draw against the cumulative distribution in token order (A..J are consecutive ids),
# so with the same seed two variants agree unless their cumulative distributions part around
# the draw. Measured through mlx_lm.server over 200 seeds at temperature 1, top-p 0.95,
# top-k 64: 4bit/6bit agree on 82% of questions, 6bit/8bit 78%, 4bit/8bit 60%.
LETTER_PROBS: dict[str, tuple[float, ...]] = {
    #        A     B     C     D     E     F     G     H     I     J
    "4bit": (0.11, 0.11, 0.13, 0.10, 0.10, 0.10, 0.09, 0.09, 0.09, 0.08),
    "6bit": (0.12, 0.13, 0.12, 0.11, 0.10, 0.10, 0.09, 0.09, 0.08, 0.06),
    "8bit": (0.14, 0.13, 0.12, 0.12, 0.10, 0.09, 0.09, 0.08, 0.07, 0.06),
}

MARKER_FILE = "qatcmp-demo-model.json"

# ----------------------------------------------------------------------------- text

EOS = "<|im_end|>"
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
THINK_TOKENS = ["<think>", "</think>"]

# Each string below must be one token of the trained tokenizer (checked when building).
THINK_CHAIN = [
    "<think>", "\n", "Let", " me", " think", " about", " this", " question", " carefully", ",",
    " one", " step", " at", " a", " time", ".\n", "</think>", "\n\n",
]
ANSWER_CHAIN = ["The", " answer", " is", " ("]  # then a letter, then ANSWER_END
ANSWER_END = [").", EOS]
CODE_CHAIN = ["```", "python", "\n", "   ", " return", " []\n", "```\n", EOS]

REASONING_TEXT = "".join(THINK_CHAIN[1:-2])  # what a server returns as the reasoning
ANSWER_TEXT = "".join(ANSWER_CHAIN) + "{letter}" + ANSWER_END[0]
CODE_TEXT = "".join(CODE_CHAIN[:-1])  # "```python\n    return []\n```\n"

# Tokens with several successors, highest priority first, each with the flag that rules it out.
# A flag can only *suppress* a token (logits are additive), so every successor but the last
# must be one that is never wanted while its flag is raised.
BRANCHES: dict[str, list[tuple[str, str | None]]] = {
    "\n": [("<think>", "open"), ("Let", "close"), ("   ", None)],
    "\n\n": [("The", "code"), ("```", None)],
}
# Flag -> tokens whose presence anywhere in the context raises it.
FLAG_MARKERS: dict[str, list[str]] = {
    "code": ["```", "```\n"],
    "open": ["<think>"],
    "close": ["</think>"],
}

# Qwen3's template, reduced to what a benchmark sends (system/user/assistant turns).
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- set content = message.content if message.content is string else '' %}"
    "{%- if message.role == 'assistant' and '</think>' in content %}"
    "{%- set content = content.split('</think>')[-1].lstrip('\\n') %}"
    "{%- endif %}"
    "{{- '<|im_start|>' + message.role + '\\n' + content + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}"
    "{%- endif %}"
    "{%- endif %}"
)

# Qwen2/3's pre-tokenizer: punctuation keeps its trailing newlines (".\n", "```\n").
PRETOKENIZE_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

_TRAINING_TEXT = """\
The following are multiple choice questions (with answers) about physics. Think step by step
and then output the answer in the format of "The answer is (X)" at the end.

Question: Which of the following is the best answer to this question?
Options: A. one
B. two
C. three
D. four
E. five
F. six
G. seven
H. eight
I. nine
J. ten
Answer: Let's think step by step.

Complete the following Python function. Reply with the complete function, signature and any
imports or helper functions it needs included, in a single ```python code block.

```python
from typing import List


def has_close_elements(numbers: List[float], threshold: float) -> bool:
    \"\"\" Check if in given list of numbers, are any two numbers closer to each other than
    given threshold.
    >>> has_close_elements([1.0, 2.0, 3.0], 0.5)
    False
    \"\"\"
    for idx, elem in enumerate(numbers):
        for idx2, elem2 in enumerate(numbers):
            if idx != idx2:
                distance = abs(elem - elem2)
                if distance < threshold:
                    return True
    return False
```
"""

# ----------------------------------------------------------------------------- weights

HIDDEN = 128
HEAD_DIM = 32
N_HEADS = 4
N_KV_HEADS = 2
INTERMEDIATE = 256
N_LAYERS = 2

# Residual-stream layout. Group 0 (dims 0-63): one dimension per chain token. Group 1: flags
# written by attention, the "letter time" dimension and a constant.
FLAG_DIMS = {"code": 64, "open": 65, "close": 66}
PICK_DIM = 67
CONST_DIM = 127
FLAG_VALUE = 0.25  # small, so raised flags hardly change the RMS norm (the logit scale)

CHAIN_LOGIT = 90.0  # logit of the next token of a chain
BRANCH_STEP = 25.0  # each lower-priority successor of a branch
SUPPRESS = 120.0  # how far a raised flag pushes down the tokens it rules out
FALLBACK_EOS = 15.0  # eos logit everywhere, so an unknown state ends the answer
MARKER_SCORE_NORM = 4.0  # k_norm weight: attention score 4*sqrt(32) ~ 23 on marker tokens


class DemoBuildError(QatcmpError):
    """The demo models could not be built."""


def builder_id() -> str:
    """Changes whenever this file or the libraries that shape the output change."""
    digest = hashlib.sha256(Path(__file__).read_bytes())
    for package in ("mlx-lm", "mlx", "tokenizers", "transformers"):
        try:
            version = metadata.version(package)
        except metadata.PackageNotFoundError:
            version = "-"
        digest.update(f"|{package}={version}".encode())
    return digest.hexdigest()[:16]


def _train_tokenizer():
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from tokenizers import AddedToken

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1024,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    chain_texts = [
        "<think>" + REASONING_TEXT + "</think>\n\n" + ANSWER_TEXT.format(letter=letter) + EOS
        for letter in LETTERS
    ] + ["\n\n" + CODE_TEXT]
    corpus = [_TRAINING_TEXT] * 4 + chain_texts * 3
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in THINK_TOKENS])
    return tokenizer


def _save_tokenizer(tokenizer, dest: Path) -> tuple[dict[str, int], int]:
    """Save it the way transformers (and so mlx-lm) loads it; return the ids of the chain
    tokens and the vocabulary size."""
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=None,
        eos_token=EOS,
        pad_token="<|endoftext|>",
        unk_token=None,
        additional_special_tokens=["<|im_start|>"],
        model_max_length=40960,
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(str(dest))
    vocab = fast.get_vocab()
    ids: dict[str, int] = {}
    for piece in set(THINK_CHAIN + ANSWER_CHAIN + ANSWER_END + CODE_CHAIN + list(LETTERS)):
        encoded = fast.encode(piece, add_special_tokens=False)
        if len(encoded) != 1:
            raise DemoBuildError(
                f"demo tokenizer: {piece!r} is {len(encoded)} tokens, not one "
                "(a bug in qatcmp/demo/tinymodel.py)"
            )
        ids[piece] = encoded[0]
    ids["<|endoftext|>"] = vocab["<|endoftext|>"]
    return ids, len(fast)


def _transitions() -> dict[str, list[tuple[str, float, str | None]]]:
    """state token -> [(next token, logit, suppressing flag)] for every deterministic step."""
    steps: dict[str, list[tuple[str, float, str | None]]] = {}

    def chain(pieces: list[str]) -> None:
        for here, nxt in zip(pieces, pieces[1:]):
            if here in BRANCHES:
                continue
            if here in steps and steps[here][0][0] != nxt:
                raise DemoBuildError(f"demo chain: {here!r} has two successors")
            steps[here] = [(nxt, CHAIN_LOGIT, None)]

    chain(THINK_CHAIN + ANSWER_CHAIN)
    chain(["\n\n"] + CODE_CHAIN)
    for letter in LETTERS:
        chain([letter] + ANSWER_END)
    for here, successors in BRANCHES.items():
        steps[here] = [
            (nxt, CHAIN_LOGIT - rank * BRANCH_STEP, flag)
            for rank, (nxt, flag) in enumerate(successors)
        ]
    return steps


def _config(ids: dict[str, int], vocab_size: int) -> dict:
    return {
        "architectures": ["Qwen3ForCausalLM"],
        "model_type": "qwen3",
        "hidden_size": HIDDEN,
        "num_hidden_layers": N_LAYERS,
        "intermediate_size": INTERMEDIATE,
        "num_attention_heads": N_HEADS,
        "num_key_value_heads": N_KV_HEADS,
        "head_dim": HEAD_DIM,
        "hidden_act": "silu",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000,
        "rope_scaling": None,
        "max_position_embeddings": 40960,
        "tie_word_embeddings": False,
        "vocab_size": vocab_size,
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids[EOS],
        "torch_dtype": "bfloat16",
        "use_cache": True,
    }


def _weights(config: dict, ids: dict[str, int], letter_probs: Sequence[float]):
    """The hand-written weights, as {name: mx.array} for mlx_lm's Qwen3 Model."""
    import mlx.core as mx
    import numpy as np
    from mlx.utils import tree_flatten
    from mlx_lm.models.qwen3 import Model, ModelArgs

    model = Model(ModelArgs.from_dict(config))
    shapes = {name: value.shape for name, value in tree_flatten(model.parameters())}
    w = {
        name: (np.ones if name.endswith("norm.weight") else np.zeros)(shape, np.float32)
        for name, shape in shapes.items()
    }

    steps = _transitions()
    states = sorted(set(steps) | {" ("} | {m for ms in FLAG_MARKERS.values() for m in ms})
    if len(states) > GROUP_SIZE:
        raise DemoBuildError("demo chain: more chain tokens than one quantization group")
    dim = {state: number for number, state in enumerate(states)}

    # Embeddings: a one-hot for chain tokens, a constant for every token.
    emb = w["model.embed_tokens.weight"]
    emb[:, CONST_DIM] = 1.0
    for state, number in dim.items():
        emb[ids[state], number] = 1.0
    emb[ids[" ("], PICK_DIM] = 1.0

    # Layer 0 attention: query head -> (kv head, key/query dim, value dim) per flag. A constant
    # query meets a key that is non-zero only on marker tokens; q_norm/k_norm scale them, so
    # markers score ~23 and everything else 0: the head reads ~1.0 once any marker is in the
    # context and exactly 0.0 before. Dims 14/15 rotate slowest under RoPE.
    heads = {"code": (0, 0, 15, 0), "open": (1, 0, 14, 1), "close": (2, 1, 15, 0)}
    attn = "model.layers.0.self_attn."
    unit = math.sqrt(HIDDEN / 2)  # input_layernorm output of a one-hot + constant embedding
    for flag, (q_head, kv_head, qk_dim, v_dim) in heads.items():
        w[attn + "q_proj.weight"][q_head * HEAD_DIM + qk_dim, CONST_DIM] = 1.0 / unit
        for marker in FLAG_MARKERS[flag]:
            w[attn + "k_proj.weight"][kv_head * HEAD_DIM + qk_dim, dim[marker]] = 1.0 / unit
            w[attn + "v_proj.weight"][kv_head * HEAD_DIM + v_dim, dim[marker]] = 1.0 / unit
        w[attn + "o_proj.weight"][FLAG_DIMS[flag], q_head * HEAD_DIM + v_dim] = FLAG_VALUE
    w[attn + "k_norm.weight"][:] = MARKER_SCORE_NORM

    # Output: logit = row . RMSNorm(residual). A chain token's residual normalizes to `unit`
    # in its own dimension; flags to FLAG_VALUE * unit.
    out = w["lm_head.weight"]
    for state, successors in steps.items():
        for nxt, logit, flag in successors:
            out[ids[nxt], dim[state]] = logit / unit
            if flag is not None:
                out[ids[nxt], FLAG_DIMS[flag]] = -SUPPRESS / (FLAG_VALUE * unit)
    out[ids[EOS], CONST_DIM] = FALLBACK_EOS / unit

    # The letter. At " (" the pick dimension pushes every other token down by SUPPRESS and
    # carries the variant's centred log-probabilities for A-J, so the letter logits sit near 0,
    # where bfloat16 is precise (near CHAIN_LOGIT its step is 0.5). There the residual holds
    # the one-hot, the pick dim, the constant and the open/close flags.
    letter_unit = math.sqrt(HIDDEN / (3 + 2 * FLAG_VALUE**2))
    out[:, PICK_DIM] = -SUPPRESS / letter_unit
    logp = np.log(np.asarray(letter_probs, np.float64))
    logp -= logp.mean()
    for letter, value in zip(LETTERS, logp):
        out[ids[letter], PICK_DIM] = float(value) / letter_unit

    weights = {name: mx.array(value) for name, value in w.items()}
    model.load_weights(list(weights.items()), strict=True)
    return dict(tree_flatten(model.parameters()))


def _build_variant(variant: str, workdir: Path, tokenizer_dir: Path, config: dict,
                   ids: dict[str, int]) -> Path:
    import mlx.core as mx
    from mlx_lm import convert

    source = workdir / f"source-{variant}"
    source.mkdir()
    for item in tokenizer_dir.iterdir():
        shutil.copy(item, source / item.name)
    (source / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    weights = _weights(config, ids, LETTER_PROBS[variant])
    mx.save_safetensors(str(source / "model.safetensors"), weights, metadata={"format": "mlx"})

    target = workdir / variant
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        convert(
            str(source),
            mlx_path=str(target),
            quantize=True,
            q_bits=VARIANT_BITS[variant],
            q_group_size=GROUP_SIZE,
        )
    log.debug("mlx_lm convert %s: %s", variant, captured.getvalue().strip())
    shutil.rmtree(source)
    return target


def _marker(variant: str, build: str) -> dict:
    return {
        "builder": build,
        "variant": variant,
        "bits": VARIANT_BITS[variant],
        "group_size": GROUP_SIZE,
        "letter_probs": list(LETTER_PROBS[variant]),
    }


def _is_complete(model_dir: Path, variant: str, build: str) -> bool:
    try:
        marker = json.loads((model_dir / MARKER_FILE).read_text())
    except (OSError, ValueError):
        return False
    return marker == _marker(variant, build) and all(
        (model_dir / name).is_file()
        for name in ("config.json", "model.safetensors", "tokenizer.json")
    )


def build_demo_models(dest: Path, variants: Sequence[str] = DEMO_VARIANTS) -> dict[str, Path]:
    """Build tiny Qwen3-architecture models locally (no downloads), quantized by mlx-lm to 4, 6
    and 8 bits (group size 64), and return {variant: model_dir} (``dest/<variant>``).

    Idempotent and cached: a model directory whose marker file names this builder's id is
    reused; anything else is rebuilt in a temporary directory under ``dest`` and renamed into
    place, so a reader never sees a half-written model.
    """
    require_demo_dependencies()
    unknown = [v for v in variants if v not in VARIANT_BITS]
    if unknown:
        raise DemoBuildError(
            f"unknown demo variant(s) {', '.join(unknown)}; choose from {', '.join(DEMO_VARIANTS)}"
        )
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    build = builder_id()
    result = {variant: dest / variant for variant in variants}
    missing = [v for v in variants if not _is_complete(result[v], v, build)]
    if not missing:
        log.debug("demo models in %s are up to date (builder %s)", dest, build)
        return result

    try:
        import mlx.core  # noqa: F401  (a broken or CPU-less mlx fails here, not halfway)
        import mlx_lm  # noqa: F401
    except ImportError as exc:
        raise DemoUnavailableError(
            f"the demo backend cannot import mlx / mlx-lm ({exc}): pip install 'qatcmp[demo]'"
        ) from None
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=".building-", dir=dest) as tmp:
        workdir = Path(tmp)
        tokenizer_dir = workdir / "tokenizer"
        tokenizer_dir.mkdir()
        ids, vocab_size = _save_tokenizer(_train_tokenizer(), tokenizer_dir)
        config = _config(ids, vocab_size)
        for variant in missing:
            built = _build_variant(variant, workdir, tokenizer_dir, config, ids)
            (built / MARKER_FILE).write_text(json.dumps(_marker(variant, build), indent=2) + "\n")
            _move_into_place(built, result[variant], variant, build)
    log.info(
        "built demo models %s in %s in %.1f s",
        ", ".join(missing), dest, time.perf_counter() - started,
    )
    return result


def _move_into_place(built: Path, final: Path, variant: str, build: str) -> None:
    stale = None
    if final.exists():
        stale = final.with_name(f".stale-{final.name}-{os.getpid()}-{time.monotonic_ns()}")
        os.rename(final, stale)
    try:
        os.rename(built, final)
    except OSError:
        # Another process put a model there first; keep it if it is complete.
        if not _is_complete(final, variant, build):
            raise
    if stale is not None:
        shutil.rmtree(stale, ignore_errors=True)


def greedy_letter(variant: str) -> str:
    """The letter a variant answers at temperature 0."""
    probs = LETTER_PROBS[variant]
    return LETTERS[max(range(len(LETTERS)), key=probs.__getitem__)]
