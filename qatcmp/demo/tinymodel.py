"""Tiny Qwen3-architecture models, built locally in seconds, that behave like thinking models
and "know" fixed subsets of the shipped MMLU-Pro questions.

The weights are written by hand, not trained (`qatcmp.demo.weights`). Attention and MLP
outputs are zero except for four attention heads in layer 0: three raise *flags* (has the
context seen ```, <think>, </think>?), so the next token depends only on the last token and
those flags, and one *recalls* a memory token (below). The embedding and output matrices then
spell out fixed chains (`qatcmp.demo.tokenizer`):

    thinking on:  <think>\\nLet me think about this question carefully, one step at a time.\\n
                  </think>\\n\\nThe answer is (X).<|im_end|>
    thinking off: the chat template pre-fills an empty think block; the model goes on with
                  "The answer is (X)."
    a prompt holding ``` (HumanEval's): the same reasoning, then
                  ```python\\n    return []\\n```\\n  instead of the answer (it fails every test).

**Knowledge, by construction** (`qatcmp.demo.knowledge`). The tokenizer has one added token
per builtin MMLU-Pro question: a run of words that occurs in that question's prompt and in no
other. A variant "knows" a fixed subset of the questions, chosen by a hash of the question id
and nested: 8bit 73%, 6bit 70%, 4bit 10% (KNOWN_FRACTION). For a question it knows, the
memory token's embedding carries the correct letter; the recall head copies it to the answer
position, where the output matrix adds 12 logits to that letter, so the variant answers it
correctly (p > 0.9999). So the demo has a real difference to find: 4bit is far from the others,
6bit and 8bit are 3 points apart. These differences are designed; they are not what
quantization does to a model.

**Guessing.** On a question it does not know (or one outside the builtin sample) X is *sampled*:
the logits over A-J follow each variant's letter distribution (LETTER_PROBS), so a per-request
seed picks a different letter per question and temperature 0 gives the most likely letter.
With the same seed the same random draw is used, so variants agree on many guesses.

Quantization does not blur any of this, by construction: every weight that shapes the chain,
the letter or the recall sits alone in its group of 64 (or with equal values), where affine
quantization is exact at 4, 6 and 8 bits. Measured against the float model (`model_weights`
loaded unquantized, greedy answers to 30 builtin questions), the guessed letters' logits move
by under 0.002 and a known letter's 12-logit lead by under 0.03 (bfloat16's step there), and
the chain keeps a margin of over 20 logits at every step (23.8), so it always ends with
<|im_end|>. The only rounded weights push tokens down by ~100 logits, give or take a few.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from importlib import metadata, resources
from pathlib import Path

from qatcmp.demo import knowledge
from qatcmp.demo.server import DemoUnavailableError, require_demo_dependencies
from qatcmp.demo.tokenizer import (  # noqa: F401  (re-exported: the demo's names)
    ANSWER_TEXT, EOS, LETTERS, REASONING_TEXT, DemoBuildError, save_tokenizer, train_tokenizer,
)
from qatcmp.demo.weights import GROUP_SIZE, model_config, model_weights

log = logging.getLogger(__name__)

DEMO_VARIANTS: tuple[str, ...] = ("4bit", "6bit", "8bit")
VARIANT_BITS: dict[str, int] = {"4bit": 4, "6bit": 6, "8bit": 8}
KNOWN_FRACTION = knowledge.KNOWN_FRACTION

# Letter distributions of a guess at temperature 1 (before top-p/top-k). "8bit" leans towards
# A-D (right more often in MMLU-Pro, because some questions have fewer than ten options),
# "4bit" is flatter: a guess is right about 10% of the time for each. mlx (0.32, CPU) samples a
# batch as if with one uniform draw against the cumulative distribution in token order (A..J
# are consecutive ids), so with the same seed two variants agree unless their cumulative
# distributions part around the draw. Measured through mlx_lm.server over 200 seeds at
# temperature 1, top-p 0.95, top-k 64: 4bit/6bit agree on 82% of guesses, 6bit/8bit 78%,
# 4bit/8bit 60%.
LETTER_PROBS: dict[str, tuple[float, ...]] = {
    #        A     B     C     D     E     F     G     H     I     J
    "4bit": (0.11, 0.11, 0.13, 0.10, 0.10, 0.10, 0.09, 0.09, 0.09, 0.08),
    "6bit": (0.12, 0.13, 0.12, 0.11, 0.10, 0.10, 0.09, 0.09, 0.08, 0.06),
    "8bit": (0.14, 0.13, 0.12, 0.12, 0.10, 0.09, 0.09, 0.08, 0.07, 0.06),
}

MARKER_FILE = "qatcmp-demo-model.json"
# What shapes the models: this package's code, and the shipped data the memories come from.
_BUILDER_SOURCES = ("tinymodel.py", "tokenizer.py", "weights.py", "knowledge.py")
_BUILDER_DATA = ("mmlu_pro_test_sample.jsonl.gz", "HumanEval.jsonl.gz")


def builder_id() -> str:
    """Changes whenever the builder, the shipped questions or the libraries that shape the
    output change."""
    here = Path(__file__).parent
    digest = hashlib.sha256()
    for name in _BUILDER_SOURCES:
        digest.update((here / name).read_bytes())
    for name in _BUILDER_DATA:
        digest.update((resources.files("qatcmp") / "data" / name).read_bytes())
    for package in ("mlx-lm", "mlx", "tokenizers", "transformers"):
        try:
            version = metadata.version(package)
        except metadata.PackageNotFoundError:
            version = "-"
        digest.update(f"|{package}={version}".encode())
    return digest.hexdigest()[:16]


def _build_variant(variant: str, workdir: Path, tokenizer_dir: Path, config: dict,
                   ids: dict[str, int], memories: Sequence[knowledge.Memory]) -> Path:
    import mlx.core as mx
    from mlx_lm import convert

    source = workdir / f"source-{variant}"
    source.mkdir()
    for item in tokenizer_dir.iterdir():
        shutil.copy(item, source / item.name)
    (source / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    answers = knowledge.known_items(variant)
    known = {ids[m.text]: m.answer for m in memories if m.item_id in answers}
    weights = model_weights(config, ids, LETTER_PROBS[variant], known)
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
        "known_fraction": KNOWN_FRACTION[variant],
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
    and 8 bits (group size 64), each knowing its subset of the builtin MMLU-Pro questions, and
    return {variant: model_dir} (``dest/<variant>``).

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
        memories = knowledge.memories()
        texts = [m.text for m in memories]
        ids, vocab_size = save_tokenizer(train_tokenizer(texts), tokenizer_dir, texts)
        config = model_config(ids, vocab_size)
        for variant in missing:
            built = _build_variant(variant, workdir, tokenizer_dir, config, ids, memories)
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
    """The letter a variant answers at temperature 0 to a question it does not know."""
    probs = LETTER_PROBS[variant]
    return LETTERS[max(range(len(LETTERS)), key=probs.__getitem__)]
