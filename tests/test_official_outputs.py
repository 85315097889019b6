"""scripts/check_official_outputs.py on every TIGER-Lab file shipped in tests/data: `official`
mode reproduces the published `pred` wherever a rule decided, and the check can fail."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data"
PUBLISHED = sorted(DATA.glob("tiger_lab_mmlu_pro_*.zip"))
QWEN = DATA / "tiger_lab_mmlu_pro_qwen1_5_7b_chat_bold.zip"


def run_check(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "check_official_outputs.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_the_check_passes_on_every_shipped_published_file() -> None:
    assert len(PUBLISHED) >= 5 and QWEN in PUBLISHED
    done = run_check(*PUBLISHED)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("official mode:") == len(PUBLISHED)
    assert "OK: every letter a rule decided agrees with the published pred" in done.stdout
    # Rule counts, and how each rule's letters compare with pred. The Llama-3.1 run had the
    # whole cascade, so its rule-3 letters are compared too (and agree).
    llama31 = done.stdout.split("tiger_lab_mmlu_pro_llama3_1_8b_sample.zip")[1].split(".zip")[0]
    assert re.search(r"rule 1 \(answer is\)\s+200 .* pred equal 200, different 0, null 0", llama31)
    assert re.search(r"rule 3 \(last letter\)\s+50 .* pred equal 50, different 0, null 0", llama31)
    qwen = done.stdout.split(QWEN.name)[1].split(".zip")[0]
    assert re.search(r"rule 1 \(answer is\)\s+28 .* different 0", qwen)
    assert re.search(r"rule 2 \(answer:\)\s+25 ", qwen)


def test_stripping_bold_first_does_not_reproduce_the_published_pred() -> None:
    # Only TIGER-Lab's newest script removes "**": the run that produced these preds did not,
    # so "the answer is **(B)**" had no rule-1 match there and pred stayed null.
    done = run_check("--mode", "official-strip", QWEN)
    assert done.returncode == 1 and "FAILED" in done.stdout
    assert re.search(r"rule 1 \(answer is\)\s+170 .* different 142", done.stdout)


def test_the_check_fails_on_a_pred_it_does_not_reproduce(tmp_path: Path) -> None:
    sample = DATA / "tiger_lab_mmlu_pro_llama3_1_8b_sample.zip"
    with zipfile.ZipFile(sample) as archive:
        rows = json.loads(archive.read(archive.namelist()[0]))
    changed = next(r for r in rows if re.search(r"answer is \(?[A-J]\)?", r["generated_text"]))
    changed["pred"] = "J" if changed["pred"] != "J" else "A"
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(rows))
    done = run_check(edited)
    assert done.returncode == 1
    assert f"{changed['question_id']} (answer_is): qatcmp" in done.stdout
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    done = run_check(bad)
    assert done.returncode == 2 and "error:" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("path", PUBLISHED, ids=[p.name for p in PUBLISHED])
def test_shipped_files_are_small(path: Path) -> None:
    assert path.stat().st_size < 300_000


def test_default_changes_only_add_answers_on_the_shipped_outputs() -> None:
    """scripts/compare_extraction.py against `default` as it was before the conclusions were
    added: on real answers a letter may only be found where none was (each one printed for
    judging), never lost or replaced."""
    baseline = "d2a2e66"
    if subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", f"{baseline}^{{commit}}"],
                      capture_output=True).returncode != 0:
        pytest.skip(f"git history without {baseline} (a shallow clone)")
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "compare_extraction.py"), "--baseline", baseline,
                           "--samples", "100", *map(str, PUBLISHED)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    kinds = re.findall(r"^  (found|lost|changed) by (\w+)\s+(\d+)$", done.stdout, re.MULTILINE)
    assert kinds and {kind for kind, _, _ in kinds} == {"found"}
    examples = re.findall(r"^    \d+: None -> ([A-J]) ", done.stdout, re.MULTILINE)
    assert len(examples) == sum(int(n) for _, _, n in kinds) >= 3
