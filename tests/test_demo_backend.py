"""The embedded demo/test backend: tiny models built locally, served by the real mlx_lm.server.

Everything here talks to real processes with real requests; nothing is mocked except where a
test needs a missing dependency or a port collision on cue.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import httpx
import pytest

from qatcmp.benchmarks import humaneval, mmlu_pro
from qatcmp.demo import knowledge
from qatcmp.demo import server as server_module
from qatcmp.demo.server import (
    DemoUnavailableError,
    MlxLmServer,
    ServerStartError,
    free_port,
    hub_model_id,
)
from qatcmp.demo.tinymodel import (
    DEMO_VARIANTS,
    LETTER_PROBS,
    LETTERS,
    MARKER_FILE,
    REASONING_TEXT,
    DemoBuildError,
    build_demo_models,
    greedy_letter,
)
from qatcmp.records import HumanEvalItem, MmluProItem

BUILTIN = {item.item_id: item for item in mmlu_pro.load("builtin")[0]}

MMLU_MESSAGES = mmlu_pro.build_messages(
    MmluProItem(
        item_id="70",
        category="physics",
        question="A ball is dropped from rest. Which quantity stays constant while it falls?",
        options=["acceleration", "speed", "momentum", "kinetic energy", "height"],
        answer="A",
    )
)
HUMANEVAL_MESSAGES = humaneval.build_messages(
    HumanEvalItem(
        item_id="HumanEval/53",
        prompt='def add(x: int, y: int):\n    """Add two numbers x and y\n    >>> add(2, 3)\n    5\n    """\n',
        test="def check(candidate):\n    assert candidate(2, 3) == 5\n",
        entry_point="add",
    )
)
ANSWER_PATTERN = "The answer is ({})."


def chat(server: MlxLmServer, variant: str, *, messages=MMLU_MESSAGES, thinking: bool | None = None,
         **params) -> dict:
    body = {"model": server.model_ids[variant], "messages": messages, "max_tokens": 200, **params}
    if thinking is not None:
        body["chat_template_kwargs"] = {"enable_thinking": thinking}
    response = httpx.post(f"{server.base_url}/chat/completions", json=body, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def chat_stream(server: MlxLmServer, variant: str, **params) -> tuple[str, str, str | None, list[str]]:
    """(reasoning, content, finish_reason, kinds of the non-empty deltas in order)"""
    body = {"model": server.model_ids[variant], "messages": MMLU_MESSAGES, "max_tokens": 200,
            "stream": True, **params}
    reasoning, content, finish, kinds = "", "", None, []
    with httpx.stream("POST", f"{server.base_url}/chat/completions", json=body, timeout=60) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[len("data: "):])
            for choice in chunk.get("choices", []):
                delta = choice.get("delta", {})
                if delta.get("reasoning"):
                    reasoning += delta["reasoning"]
                    kinds.append("reasoning")
                if delta.get("content"):
                    content += delta["content"]
                    kinds.append("content")
                finish = choice.get("finish_reason") or finish
    return reasoning, content, finish, kinds


def answer_letter(completion: dict) -> str:
    content = completion["choices"][0]["message"]["content"].strip()
    assert content.startswith("The answer is (") and content.endswith(")."), content
    return content[len("The answer is (")]


# --------------------------------------------------------------------------- building


def test_build_is_cached_and_rebuilds_incomplete_models(tmp_path):
    first = build_demo_models(tmp_path, ["4bit", "8bit"])
    assert first == {"4bit": tmp_path / "4bit", "8bit": tmp_path / "8bit"}
    weights = first["4bit"] / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    config = json.loads((first["4bit"] / "config.json").read_text())
    assert config["model_type"] == "qwen3" and config["quantization"]["bits"] == 4
    assert json.loads((first["8bit"] / "config.json").read_text())["quantization"]["bits"] == 8

    started = time.perf_counter()
    assert build_demo_models(tmp_path, ["4bit", "8bit"]) == first
    assert time.perf_counter() - started < 0.5
    assert weights.stat().st_mtime_ns == stamp  # reused, not rebuilt

    # A marker from another builder version, or a missing file: rebuilt.
    marker = first["4bit"] / MARKER_FILE
    marker.write_text(marker.read_text().replace('"builder": "', '"builder": "old-'))
    (first["8bit"] / "model.safetensors").unlink()
    build_demo_models(tmp_path, ["4bit", "8bit"])
    assert weights.stat().st_mtime_ns != stamp
    assert (first["8bit"] / "model.safetensors").is_file()
    assert '"builder": "old-' not in marker.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["4bit", "8bit"]  # no temp dirs left

    with pytest.raises(DemoBuildError, match="unknown demo variant"):
        build_demo_models(tmp_path, ["3bit"])


def _greedy_walk(model, tokenizer, messages):
    """Greedy decoding in-process: (text, smallest top-2 margin off the letter, the letter's
    distribution over A-J, how far the letters stand above every other token there)."""
    import mlx.core as mx
    import numpy as np
    from mlx_lm.models.cache import make_prompt_cache

    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, enable_thinking=True)
    cache = make_prompt_cache(model)
    tokens, margins, letter_probs, letter_gap = list(prompt), [], None, None
    letter_ids = [tokenizer.convert_tokens_to_ids(letter) for letter in LETTERS]
    step_input = prompt
    for _ in range(40):
        logits = np.array(model(mx.array([step_input]), cache=cache)[0, -1].astype(mx.float32))
        if tokenizer.decode(tokens[-1:]) == " (":
            letter_logits = logits[letter_ids]
            letter_gap = letter_logits.min() - np.delete(logits, letter_ids).max()
            letter_probs = np.exp(letter_logits - letter_logits.max())
            letter_probs /= letter_probs.sum()
            next_token = letter_ids[int(np.argmax(letter_logits))]
        else:
            top = np.sort(logits)[-2:]
            margins.append(top[1] - top[0])
            next_token = int(np.argmax(logits))
        tokens.append(next_token)
        step_input = [next_token]
        if next_token in tokenizer.eos_token_ids:
            break
    return tokenizer.decode(tokens[len(prompt):]), min(margins), letter_probs, letter_gap


def test_quantized_logits_follow_the_designed_chain(demo_models):
    """In-process, through mlx-lm's own loader: after quantization the answer chain ends with
    eos by a wide margin, the letter distribution is each variant's design on a question it does
    not know (one outside the builtin sample, and a builtin one), and a question it knows gets
    its correct letter with probability near 1."""
    import numpy as np
    from mlx_lm import load

    never_known = next(q for q in BUILTIN if not any(knowledge.knows(v, q) for v in DEMO_VARIANTS))
    only_8bit = next(q for q in BUILTIN if knowledge.knows("8bit", q) and not knowledge.knows("6bit", q))
    every_variant = next(q for q in BUILTIN if knowledge.knows("4bit", q))
    for variant in DEMO_VARIANTS:
        model, tokenizer = load(str(demo_models[variant]))
        cases = [(MMLU_MESSAGES, None), (mmlu_pro.build_messages(BUILTIN[never_known]), None),
                 (mmlu_pro.build_messages(BUILTIN[only_8bit]), BUILTIN[only_8bit].answer if variant == "8bit" else None),
                 (mmlu_pro.build_messages(BUILTIN[every_variant]), BUILTIN[every_variant].answer)]
        for messages, known_letter in cases:
            text, margin, letter_probs, letter_gap = _greedy_walk(model, tokenizer, messages)
            letter = known_letter or greedy_letter(variant)
            assert text == (f"<think>{REASONING_TEXT}</think>\n\n{ANSWER_PATTERN.format(letter)}<|im_end|>"), variant
            assert margin > 20 and letter_gap > 20, variant
            if known_letter is None:
                assert np.allclose(letter_probs, LETTER_PROBS[variant], atol=0.003), (variant, letter_probs)
            else:
                assert letter_probs[LETTERS.index(known_letter)] > 0.9999, (variant, letter_probs)


# --------------------------------------------------------------------------- knowledge


def test_memory_strings_occur_in_exactly_their_own_prompt():
    """Recomputed by brute force over the prompts as the benchmark renders them (the builtin
    loader, not the builder's own reading of the file), and over the HumanEval prompts."""
    prompts = {q: mmlu_pro.build_messages(item)[0]["content"] for q, item in BUILTIN.items()}
    code_prompts = [humaneval.build_messages(item)[0]["content"] for item in humaneval.load("builtin")[0]]
    memories = knowledge.memories()
    assert len(memories) >= 0.99 * len(BUILTIN)  # only exact duplicates have none
    assert len({m.item_id for m in memories}) == len(memories)
    for memory in memories:
        holders = [q for q, prompt in prompts.items() if memory.text in prompt]
        assert holders == [memory.item_id], memory
        assert prompts[memory.item_id].count(memory.text) == 1
        assert not any(memory.text in prompt for prompt in code_prompts)
        assert memory.answer == BUILTIN[memory.item_id].answer
    without = set(BUILTIN) - {m.item_id for m in memories}
    for q in without:  # no memory: another question has the same text
        assert any(BUILTIN[q].question == BUILTIN[r].question for r in BUILTIN if r != q), q


def test_known_subsets_are_nested_and_sized_as_designed():
    known = {v: set(knowledge.known_items(v)) for v in DEMO_VARIANTS}
    assert known["4bit"] < known["6bit"] < known["8bit"]
    n = len(BUILTIN)
    for variant, fraction in knowledge.KNOWN_FRACTION.items():
        # A hash is a fair coin per question: within 4 standard deviations of the design.
        assert abs(len(known[variant]) - fraction * n) < 4 * (n * fraction * (1 - fraction)) ** 0.5, variant


def test_the_tokenizer_holds_exactly_the_prompts_memory_token(demo_models):
    """Every builtin prompt, through the chat template of the built model, contains its own
    memory token and no other; a prompt from elsewhere contains none."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(demo_models["8bit"]))

    def tokens(messages) -> list[int]:
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return tokenizer.encode(text, add_special_tokens=False)

    memory_ids = {tokenizer.convert_tokens_to_ids(m.text): m.item_id for m in knowledge.memories()}
    assert len(memory_ids) == len(knowledge.memories())
    for q, item in BUILTIN.items():
        ids = tokens(mmlu_pro.build_messages(item))
        found = [memory_ids[i] for i in ids if i in memory_ids]
        assert found in ([q], []) and (found == [q]) == any(m.item_id == q for m in knowledge.memories())
    custom = tokens(MMLU_MESSAGES)
    assert not set(custom) & set(memory_ids)


def test_missing_mlx_names_the_install_command(monkeypatch, tmp_path):
    real_find_spec = server_module.importlib.util.find_spec
    monkeypatch.setattr(server_module.importlib.util, "find_spec",
                        lambda name, *a: None if name == "mlx_lm" else real_find_spec(name, *a))
    with pytest.raises(DemoUnavailableError, match=r"pip install 'qatcmp\[demo\]'"):
        build_demo_models(tmp_path)
    with pytest.raises(DemoUnavailableError, match=r"pip install 'qatcmp\[demo\]'"):
        MlxLmServer(tmp_path, workdir=tmp_path).start()


def test_free_port_can_be_bound():
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_a_busy_requested_port_fails_at_once(demo_models, tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        server = MlxLmServer(demo_models["4bit"], port=port, workdir=tmp_path)
        with pytest.raises(ServerStartError, match=f"port {port} .* already in use"):
            server.start()
    assert not server.is_running()


# --------------------------------------------------------------------------- serving


@pytest.mark.server
@pytest.mark.parametrize("variant", DEMO_VARIANTS)
def test_reasoning_comes_back_apart_from_content(mlx_servers, variant):
    completion = chat(mlx_servers.multi, variant, temperature=0.0)
    choice = completion["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert choice["message"]["reasoning"] == REASONING_TEXT
    content = choice["message"]["content"]
    assert content == "\n\n" + ANSWER_PATTERN.format(greedy_letter(variant))
    assert "<think>" not in content and "</think>" not in content
    assert completion["model"] == hub_model_id(variant)
    assert completion["usage"]["completion_tokens"] > 20


@pytest.mark.server
def test_streaming_sends_reasoning_deltas_then_content_deltas(mlx_servers):
    reasoning, content, finish, kinds = chat_stream(mlx_servers.multi, "8bit", temperature=0.0)
    assert reasoning == REASONING_TEXT
    assert content.strip() == ANSWER_PATTERN.format(greedy_letter("8bit"))
    assert finish == "stop"
    first_content = kinds.index("content")
    assert kinds[:first_content] == ["reasoning"] * first_content and first_content > 5
    assert set(kinds[first_content:]) == {"content"}


@pytest.mark.server
def test_thinking_off_gives_no_reasoning(mlx_servers):
    message = chat(mlx_servers.multi, "6bit", thinking=False, temperature=0.0)["choices"][0]["message"]
    assert not message.get("reasoning")
    assert message["content"] == ANSWER_PATTERN.format(greedy_letter("6bit"))
    on = chat(mlx_servers.multi, "6bit", thinking=True, temperature=0.0)["choices"][0]["message"]
    assert on["reasoning"] == REASONING_TEXT


@pytest.mark.server
@pytest.mark.parametrize("thinking", [True, False])
def test_humaneval_prompts_get_a_python_block(mlx_servers, thinking):
    choice = chat(mlx_servers.multi, "4bit", messages=HUMANEVAL_MESSAGES, thinking=thinking,
                  temperature=1.0, seed=3)["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert choice["message"]["content"].strip() == "```python\n    return []\n```"
    assert bool(choice["message"].get("reasoning")) is thinking


@pytest.mark.server
@pytest.mark.parametrize("stream", [False, True])
def test_tiny_max_tokens_stops_with_length(mlx_servers, stream):
    if stream:
        reasoning, content, finish, _ = chat_stream(mlx_servers.multi, "4bit", max_tokens=4)
    else:
        choice = chat(mlx_servers.multi, "4bit", max_tokens=4)["choices"][0]
        reasoning, content, finish = (choice["message"].get("reasoning"),
                                      choice["message"]["content"], choice["finish_reason"])
    assert finish == "length"
    assert not content
    assert reasoning and REASONING_TEXT.startswith(reasoning) and reasoning != REASONING_TEXT


@pytest.mark.server
def test_seeded_variants_disagree_on_some_questions_but_not_all(mlx_servers):
    seeds = range(1000, 1020)
    letters = {
        variant: [answer_letter(chat(mlx_servers.multi, variant, temperature=1.0, top_p=0.95,
                                     seed=seed, thinking=False)) for seed in seeds]
        for variant in DEMO_VARIANTS
    }
    per_question = [{letters[v][i] for v in DEMO_VARIANTS} for i in range(len(seeds))]
    assert any(len(answers) > 1 for answers in per_question)
    assert any(len(answers) == 1 for answers in per_question)
    for variant in DEMO_VARIANTS:
        assert len(set(letters[variant])) >= 4, letters[variant]  # sampled, not fixed


@pytest.mark.server
def test_the_same_seed_gives_the_same_answer(mlx_servers):
    def answers() -> list[str]:
        return [answer_letter(chat(mlx_servers.multi, "6bit", temperature=1.0, seed=seed))
                for seed in (1, 2, 3, 4, 5, 6)]

    first = answers()
    assert answers() == first
    assert len(set(first)) > 1


@pytest.mark.server
def test_a_known_question_is_answered_right_and_guessing_is_unchanged_elsewhere(mlx_servers):
    """Through the real server, sampled at temperature 1: 8bit answers a question only it knows
    correctly under every seed; 4bit and 6bit, who do not know it, draw exactly the letters they
    draw on a question from outside the builtin sample with the same seeds (the same
    distribution, and the same random draw)."""
    server = mlx_servers.multi
    question = next(q for q in BUILTIN if knowledge.knows("8bit", q) and not knowledge.knows("6bit", q))
    messages = mmlu_pro.build_messages(BUILTIN[question])
    seeds = range(40, 52)

    def letters(variant, msgs):
        return [answer_letter(chat(server, variant, messages=msgs, temperature=1.0, seed=seed, thinking=False))
                for seed in seeds]

    assert letters("8bit", messages) == [BUILTIN[question].answer] * len(seeds)
    for variant in ("4bit", "6bit"):
        guesses = letters(variant, messages)
        assert guesses == letters(variant, MMLU_MESSAGES), variant
        assert len(set(guesses)) >= 3, guesses  # still a guess, not a fixed letter


@pytest.mark.server
def test_one_server_swaps_between_variant_ids(mlx_servers):
    server = mlx_servers.multi
    listed = {entry["id"] for entry in httpx.get(f"{server.base_url}/models", timeout=10).json()["data"]}
    assert set(server.model_ids.values()) <= listed
    assert server.model_ids == {v: f"qatcmp-demo/tiny-{v}" for v in DEMO_VARIANTS}
    # Temperature 0 on the same prompt: only the resident model decides the letter.
    order = ["4bit", "8bit", "6bit", "4bit", "6bit", "8bit"]
    got = [answer_letter(chat(server, v, temperature=0.0, thinking=False)) for v in order]
    assert got == [greedy_letter(v) for v in order]
    assert len({greedy_letter(v) for v in DEMO_VARIANTS}) == 3


@pytest.mark.server
def test_single_model_server(mlx_servers, demo_models):
    server = mlx_servers.single("8bit")
    (model_id,) = server.model_ids.values()
    assert model_id == str(demo_models["8bit"].resolve())
    listed = [entry["id"] for entry in httpx.get(f"{server.base_url}/models", timeout=10).json()["data"]]
    assert listed == [model_id]
    assert answer_letter(chat(server, "8bit", temperature=0.0)) == greedy_letter("8bit")


def _gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.server
def test_stop_leaves_no_process_behind(mlx_servers, demo_models):
    server = mlx_servers.start({"4bit": demo_models["4bit"]})
    pid = server.pid
    assert os.getpgid(pid) == pid  # its own process group
    assert answer_letter(chat(server, "4bit", temperature=0.0)) == greedy_letter("4bit")
    url = f"{server.base_url}/models"
    server.stop()
    assert _gone(pid)
    assert not server.is_running()
    server.stop()  # twice is fine
    with pytest.raises(httpx.TransportError):
        httpx.get(url, timeout=2)


@pytest.mark.server
def test_context_manager_stops_on_error(demo_models, tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        with MlxLmServer(demo_models["6bit"], workdir=tmp_path) as server:
            pid = server.pid
            raise RuntimeError("boom")
    assert _gone(pid)


@pytest.mark.server
def test_a_server_that_dies_while_starting_is_reported_with_its_log(demo_models, tmp_path, monkeypatch):
    pids = []
    real_spawn = MlxLmServer._spawn

    def spawn(self, hub_cache):
        real_spawn(self, hub_cache)
        pids.append(self.pid)

    monkeypatch.setattr(MlxLmServer, "_spawn", spawn)
    server = MlxLmServer(demo_models["4bit"], workdir=tmp_path, extra_args=["--no-such-option"])
    with pytest.raises(ServerStartError, match="unrecognized arguments: --no-such-option") as failure:
        server.start(timeout=120)
    assert str(tmp_path / "mlx_lm-server.log") in str(failure.value)
    assert "\n" not in str(failure.value)
    assert pids and all(_gone(pid) for pid in pids)


@pytest.mark.server
def test_a_broken_model_is_reported(tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "qwen3"}')
    server = MlxLmServer(broken, workdir=tmp_path / "work")
    with pytest.raises(ServerStartError, match="test completion"):
        server.start(timeout=120)
    assert not server.is_running()


@pytest.mark.server
def test_a_port_taken_after_it_was_chosen_is_retried(demo_models, tmp_path, monkeypatch):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()  # accepts connections but never answers
        taken = busy.getsockname()[1]
        ports = [taken]
        monkeypatch.setattr(server_module, "free_port", lambda: ports.pop() if ports else free_port())
        with MlxLmServer(demo_models["8bit"], workdir=tmp_path) as server:
            assert server.port != taken
            assert answer_letter(chat(server, "8bit", temperature=0.0)) == greedy_letter("8bit")


@pytest.mark.server
def test_interpreter_exit_stops_a_forgotten_server(demo_models, tmp_path):
    """A server nobody stopped (an exception, Ctrl-C in `qatcmp demo`) dies with its parent."""
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from qatcmp.demo.server import MlxLmServer\n"
        f"server = MlxLmServer(Path({str(demo_models['4bit'])!r}), workdir=Path({str(tmp_path)!r}))\n"
        "server.start()\n"
        "print(server.pid, flush=True)\n"
        "sys.exit(0)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    assert _gone(int(done.stdout.split()[-1]))
