"""The tiny demo models' weights, written by hand (see `qatcmp.demo.tinymodel` for the design).

Attention and MLP outputs are zero except for four attention heads in layer 0: three raise
*flags* (has the context seen ```, <think>, </think>?), and one *recalls*: its key is high only
on a memory token (`qatcmp.demo.knowledge`) and its value is that question's correct letter,
so from there on the residual stream holds the letter's "known" direction. The embedding and
output matrices spell the chains, and at the answer letter the output matrix adds
KNOWN_LOGIT to the known letter. Without a memory token in the context every score is 0 and
every value 0, so the recall head writes exactly nothing and the letter follows LETTER_PROBS.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from qatcmp.demo.tokenizer import (
    ANSWER_CHAIN, ANSWER_END, BRANCHES, CODE_CHAIN, EOS, FLAG_MARKERS, LETTERS, THINK_CHAIN, DemoBuildError,
)

GROUP_SIZE = 64

HIDDEN = 128
HEAD_DIM = 32
N_HEADS = 4
N_KV_HEADS = 2
INTERMEDIATE = 256
N_LAYERS = 2

# Residual-stream layout. Group 0 (dims 0-63): one dimension per chain token, and the known
# letter written by the recall head (alone in its group in the output matrix's letter rows).
# Group 1: flags written by attention, the "letter time" dimension, the memory tokens' letter
# (read by the recall head's key and value) and a constant.
FLAG_DIMS = {"code": 64, "open": 65, "close": 66}
PICK_DIM = 67
KNOWN_DIMS = range(48, 48 + len(LETTERS))  # written by the recall head
MEMORY_DIMS = range(80, 80 + len(LETTERS))  # a memory token's embedding: its letter
CONST_DIM = 127
FLAG_VALUE = 0.25  # small, so raised flags hardly change the RMS norm (the logit scale)

CHAIN_LOGIT = 90.0  # logit of the next token of a chain
BRANCH_STEP = 25.0  # each lower-priority successor of a branch
SUPPRESS = 120.0  # how far a raised flag pushes down the tokens it rules out
FALLBACK_EOS = 15.0  # eos logit everywhere, so an unknown state ends the answer
KNOWN_VALUE = FLAG_VALUE  # the recall head's output: small, like the flags
KNOWN_LOGIT = 12.0  # added to the known letter: p(other letters) ~ 1e-5, far below the chain
MARKER_SCORE_NORM = 4.0  # k_norm weight: attention score 4*sqrt(32) ~ 23 on marker tokens


def transitions() -> dict[str, list[tuple[str, float, str | None]]]:
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


def model_config(ids: dict[str, int], vocab_size: int) -> dict:
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


def model_weights(config: dict, ids: Mapping[str, int], letter_probs: Sequence[float],
                  known: Mapping[int, str] = {}):  # noqa: B006  (read only)
    """The hand-written weights, as {name: mx.array} for mlx_lm's Qwen3 Model. ``known``:
    {memory token id: the letter the model answers when that token is in the prompt}."""
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

    steps = transitions()
    states = sorted(set(steps) | {" ("} | {m for ms in FLAG_MARKERS.values() for m in ms})
    if len(states) > KNOWN_DIMS.start:
        raise DemoBuildError("demo chain: more chain tokens than dimensions before the known letter's")
    dim = {state: number for number, state in enumerate(states)}

    # Embeddings: a one-hot for chain tokens, a constant for every token.
    emb = w["model.embed_tokens.weight"]
    emb[:, CONST_DIM] = 1.0
    for state, number in dim.items():
        emb[ids[state], number] = 1.0
    emb[ids[" ("], PICK_DIM] = 1.0
    for token, letter in known.items():  # a memory token: its letter (and the constant)
        emb[token, MEMORY_DIMS[LETTERS.index(letter)]] = 1.0

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

    # The recall head (query head 3, on kv head 1 with the "close" flag, in other dims): the
    # same constant query, a key on every memory token (the ten letter dims, equal weights),
    # and a value that copies the token's letter into value dims 1-10. Softmax on one key
    # scoring ~23 among a few thousand scoring 0 reads that value to within 1e-6; with no
    # memory token every value is exactly 0. o_proj writes it to the known-letter dims.
    q_head, kv_head, qk_dim = 3, 1, 14
    w[attn + "q_proj.weight"][q_head * HEAD_DIM + qk_dim, CONST_DIM] = 1.0 / unit
    for number, (memory_dim, known_dim) in enumerate(zip(MEMORY_DIMS, KNOWN_DIMS)):
        w[attn + "k_proj.weight"][kv_head * HEAD_DIM + qk_dim, memory_dim] = 1.0 / unit
        w[attn + "v_proj.weight"][kv_head * HEAD_DIM + 1 + number, memory_dim] = 1.0 / unit
        w[attn + "o_proj.weight"][known_dim, q_head * HEAD_DIM + 1 + number] = KNOWN_VALUE

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
    # The known letter: KNOWN_LOGIT more for it, read from its known dim (alone in group 0 of
    # the letter's row). There the residual also holds that dim; elsewhere the letter gains
    # about as much, far below the chain's next token.
    known_unit = math.sqrt(HIDDEN / (3 + 2 * FLAG_VALUE**2 + KNOWN_VALUE**2))
    for letter, known_dim in zip(LETTERS, KNOWN_DIMS):
        out[ids[letter], known_dim] = KNOWN_LOGIT / (KNOWN_VALUE * known_unit)

    weights = {name: mx.array(value) for name, value in w.items()}
    model.load_weights(list(weights.items()), strict=True)
    return dict(tree_flatten(model.parameters()))
