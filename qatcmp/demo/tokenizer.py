"""The tiny demo models' tokenizer and the texts it must spell: the answer chains, the chat
template, and one added token per memory string (`qatcmp.demo.knowledge`).

A byte-level BPE is trained locally on a few KB of text (no downloads) so that every piece of
the chains is one token; the memory strings are added tokens, so a prompt that holds one is
split around it before BPE runs, whatever the text around it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from qatcmp.errors import QatcmpError

LETTERS = "ABCDEFGHIJ"


class DemoBuildError(QatcmpError):
    """The demo models could not be built."""


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


# ----------------------------------------------------------------------------- tokenizer


def train_tokenizer(memory_texts: Sequence[str] = ()):
    """The BPE, with the think tags and the memory strings as added tokens."""
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
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in memory_texts])
    return tokenizer


def save_tokenizer(tokenizer, dest: Path, memory_texts: Sequence[str] = ()) -> tuple[dict[str, int], int]:
    """Save it the way transformers (and so mlx-lm) loads it; return the ids of the chain
    tokens and memory strings, and the vocabulary size."""
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
                "(a bug in qatcmp/demo/tokenizer.py)"
            )
        ids[piece] = encoded[0]
    ids["<|endoftext|>"] = vocab["<|endoftext|>"]
    for text in memory_texts:
        ids[text] = vocab[text]
    return ids, len(fast)
