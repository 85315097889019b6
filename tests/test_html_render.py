"""report.html without a browser: the escaping of embedded data, the policy's hashes, the view
model of a run folder (cells, the paired sample, trimming), counts reports, `qatcmp view`."""

from __future__ import annotations

import json
import re
import stat
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from html_synthetic import make_run
from qatcmp.cli import main
from qatcmp.report.questions import CONTENT_KEEP, REASONING_KEEP, build_question_rows, trimmed
from qatcmp.report.render.html import csp_hash, render_html, script_json, setup_rows
from qatcmp.report.write import write_html_report
from qatcmp.report import Report, build_counts_report, report_for_run, write_report
from qatcmp.rundir import RunDir, read_jsonl_objects, write_text_atomic


class Page(HTMLParser):
    """The page's elements, scripts and style, as a browser's tokenizer sees them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.scripts: list[tuple[dict, str]] = []
        self.styles: list[str] = []
        self._open: tuple[str, dict] | None = None

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag in ("script", "style"):
            self._open = (tag, dict(attrs))
            (self.scripts if tag == "script" else self.styles).append((dict(attrs), "") if tag == "script" else "")

    def handle_data(self, data):
        if self._open is None:
            return
        if self._open[0] == "script":
            attrs, text = self.scripts[-1]
            self.scripts[-1] = (attrs, text + data)
        else:
            self.styles[-1] += data

    def handle_endtag(self, tag):
        if self._open and tag == self._open[0]:
            self._open = None


def parse(html: str) -> Page:
    page = Page()
    page.feed(html)
    return page


HOSTILE = '</script><img src=x onerror="window.__pwned=1"><!-- \u2028\u2029 \'" & </textarea> <a href="javascript:x()">'


@given(st.text())
@settings(max_examples=300, deadline=None)
def test_script_json_is_inert_and_round_trips(text):
    out = str(script_json({"t": text + HOSTILE}))
    assert not re.search("[<>&'\u2028\u2029]", out)
    assert json.loads(out) == {"t": text + HOSTILE}


def test_script_json_keeps_lone_surrogates_as_escapes():
    out = str(script_json(["\ud800x"]))
    assert out == '["\\ud800x"]' and json.loads(out) == ["\ud800x"]
    out.encode("utf-8")  # writable


@pytest.fixture()
def run(tmp_path):
    return make_run(tmp_path / "run", mmlu_pro=30, humaneval=6, seed=1, reasoning_median=3000).path


def report_of(folder: Path) -> Report:
    return report_for_run(folder, scores=RunDir(folder).read_scores())


def hostile_answers(folder: Path) -> None:
    """The first MMLU-Pro answer of every model, and a question, carry HTML and script."""
    items = list(read_jsonl_objects(folder / "items.jsonl"))
    items[0]["question"] = HOSTILE
    write_text_atomic(folder / "items.jsonl", "".join(json.dumps(i) + "\n" for i in items))
    for path in (folder / "transcripts").glob("*.mmlu_pro.jsonl"):
        records = list(read_jsonl_objects(path))
        records[0]["content"] = HOSTILE + "\nThe answer is (A)."
        write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in records))


def test_page_has_exactly_our_script_and_style_and_their_hashes(run):
    hostile_answers(run)
    report = report_of(run)
    write_report(report, run)
    html = (write_html_report(report, run)).read_text(encoding="utf-8")
    page = parse(html)
    scripts = page.scripts
    assert [a.get("type") for a, _ in scripts] == ["application/json", None]  # the data, then the code
    assert [t for t, _ in page.tags].count("img") == len(report.plots) == 2  # the plots, nothing else
    assert all(attrs["src"].startswith("data:image/png;base64,") for tag, attrs in page.tags if tag == "img")
    assert not any(k.startswith("on") for _, attrs in page.tags for k in attrs)  # no inline handler
    csp = next(a["content"] for t, a in page.tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy")
    assert "default-src 'none'" in csp and "img-src data:" in csp and "unsafe" not in csp
    assert f"script-src {csp_hash(scripts[1][1])};" in csp
    assert f"style-src {csp_hash(page.styles[0])};" in csp
    data = json.loads(scripts[0][1])
    mmlu = data["benchmarks"][0]
    assert mmlu["questions"][0]["text"]["text"] == HOSTILE
    assert mmlu["questions"][0]["answers"]["4bit"][0]["content"]["text"] == HOSTILE + "\nThe answer is (A)."
    # The page's counts of each pair are the report's.
    reported = report.benchmarks[0]
    assert [(p["a"], p["b"], p["a_only"], p["b_only"]) for p in mmlu["pairs"]] == [
        (p.a, p.b, p.a_only, p.b_only) for p in reported.pairs]


def test_rows_pick_the_paired_sample_and_match_the_report(tmp_path):
    folder = make_run(tmp_path / "k2", mmlu_pro=40, humaneval=0, samples=2, seed=3).path
    # A server error on a first sample: the pairing then uses the second.
    scores = list(read_jsonl_objects(folder / "scores.jsonl"))
    first = next(s for s in scores if s["model"] == "6bit" and s["sample"] == 0)
    first.update(status="server_error", correct=False)
    write_text_atomic(folder / "scores.jsonl", "".join(json.dumps(s) + "\n" for s in scores))
    report = report_for_run(folder, scores=RunDir(folder).read_scores())
    rows = build_question_rows(folder)
    questions = rows.benchmarks[0].questions
    second = next(s for s in scores if s["model"] == "6bit" and s["item_id"] == first["item_id"] and s["sample"] == 1)
    chosen = next(q for q in questions if q.id == first["item_id"])
    assert chosen.paired["6bit"] is second["correct"] and len(chosen.answers["6bit"]) == 2
    for pair in report.benchmarks[0].pairs:
        a_only = sum(q.paired[pair.a] is True and q.paired[pair.b] is False for q in questions)
        b_only = sum(q.paired[pair.b] is True and q.paired[pair.a] is False for q in questions)
        assert (a_only, b_only) == (pair.a_only, pair.b_only)


def test_cells_say_right_wrong_truncated_no_answer_error(run):
    scores = list(read_jsonl_objects(run / "scores.jsonl"))
    mmlu = [s for s in scores if s["model"] == "4bit" and s["benchmark"] == "mmlu_pro"]
    mmlu[0].update(status="server_error", correct=False)
    mmlu[1].update(status="no_answer", correct=False, extracted=None)
    mmlu[2].update(truncated=True, correct=False)
    mmlu[3].update(correct=True, truncated=False, status="answered")
    mmlu[4].update(correct=False, truncated=False, status="answered")
    write_text_atomic(run / "scores.jsonl", "".join(json.dumps(s) + "\n" for s in scores if s is not mmlu[5]))
    questions = build_question_rows(run).benchmarks[0].questions
    by_id = {q.id: q.cells["4bit"] for q in questions}
    assert [by_id[s["item_id"]] for s in mmlu[:6]] == ["error", "no_answer", "truncated", "right", "wrong", "missing"]
    assert len(questions) == 30


def test_long_texts_are_trimmed_with_their_length():
    text = "a" * 1000 + "MIDDLE" + "z" * 10_000
    t = trimmed(text, REASONING_KEEP)
    assert t.chars == len(text) and t.omitted == len(text) - sum(REASONING_KEEP)
    assert t.text[: t.at] == text[: REASONING_KEEP[0]] and t.text[t.at:] == text[-REASONING_KEEP[1]:]
    short = trimmed("The answer is (C).", CONTENT_KEEP)
    assert (short.text, short.omitted) == ("The answer is (C).", 0)


def test_counts_report_and_a_setup_part_render(tmp_path):
    spec = "humaneval:6bit=98/100,qat8=90/100"
    assert main(["stats", "--counts", spec, "--out", str(tmp_path)]) == 0
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "6bit vs qat8, HumanEval" in html and 'id="questions"' not in html


def test_the_set_up_part_of_a_run_report_is_rendered(tmp_path):
    from report_runs import make_mmlu_run

    from qatcmp.report import report_for_run

    folder = make_mmlu_run(tmp_path / "run", {"a": lambda item: f"The answer is ({item.answer}).",
                                              "b": lambda item: "The answer is (Z)."}, n=10,
                           max_tokens={"a": 1024, "b": 32768})
    report = report_for_run(folder)
    rows = setup_rows(report)
    assert any(label.endswith("max tokens") and value == "32768" for label, value in rows), rows
    html = render_html(report)
    assert "32768" in html and "1024" in html


def test_stats_writes_report_html(run, capsys):
    # No scores.meta.json: stats scores the synthetic answers for real (HumanEval in the sandbox).
    assert main(["stats", str(run)]) == 0
    assert "report.html" in capsys.readouterr().out
    report = json.loads((run / "report.json").read_text())
    data = json.loads(parse((run / "report.html").read_text(encoding="utf-8")).scripts[0][1])
    assert [p["a_only"] for p in data["benchmarks"][0]["pairs"]] == [p["a_only"] for p in report["benchmarks"][0]["pairs"]]


# --------------------------------------------------------------------------- qatcmp view


def test_view_prints_the_path_without_a_display(run, monkeypatch, capsys):
    write_html_report(report_of(run), run)
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert main(["view", str(run)]) == 0
    assert capsys.readouterr().out.strip() == str((run / "report.html").resolve())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="$BROWSER and DISPLAY as on Linux")
def test_view_opens_the_default_browser(run, monkeypatch, tmp_path, capsys):
    write_html_report(report_of(run), run)
    opened = tmp_path / "opened.txt"
    fake = tmp_path / "fake-browser"
    fake.write_text(f"#!/bin/sh\necho \"$1\" > {opened}\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.setenv("BROWSER", str(fake))  # webbrowser's documented override
    import webbrowser

    monkeypatch.setattr(webbrowser, "_tryorder", None)  # re-read $BROWSER
    monkeypatch.setattr(webbrowser, "_browsers", {})
    assert main(["view", str(run)]) == 0
    assert "Opened" in capsys.readouterr().out
    assert opened.read_text().strip() == (run / "report.html").resolve().as_uri()


def test_view_without_a_report_is_one_clear_error(tmp_path, capsys):
    assert main(["view", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("qatcmp: error:") and "qatcmp stats" in err and len(err.splitlines()) == 1
    assert main(["view", str(tmp_path / "nope")]) == 2
    assert "no such run folder" in capsys.readouterr().err


# --------------------------------------------------------------------------- adaptive runs

HOSTILE_MODELS = ("4bit", '<img src=x onerror="window.__p=1">', "q|8\"'&</td>", "8bit")


class AdaptiveTable(HTMLParser):
    """The rows of the page's decisions table (#adaptive-pairs): attributes and cell texts."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.rows: list[tuple[dict, list[str]]] = []
        self._inside = self._cell = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table" and attrs.get("id") == "adaptive-pairs":
            self._inside = True
        elif self._inside and tag == "tr" and "data-a" in attrs:
            self.rows.append((attrs, []))
        elif self._inside and self.rows and tag in ("td", "th"):
            self._cell = True
            self.rows[-1][1].append("")

    def handle_data(self, data):
        if self._cell:
            self.rows[-1][1][-1] += data

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self._cell = False
        elif tag == "table":
            self._inside = False


@pytest.fixture()
def adaptive_run(tmp_path):
    from html_synthetic import add_adaptive_state

    # One variant far worse, three close (decided equivalent or not within the budget).
    run = make_run(tmp_path / "adaptive", models=HOSTILE_MODELS, mmlu_pro=160, humaneval=0, seed=2, reasoning_median=300,
                   accuracy=dict(zip(HOSTILE_MODELS, (0.4, 0.8, 0.82, 0.8))))
    add_adaptive_state(run, block=20, margin=0.1)
    report = report_of(run.path)
    write_report(report, run.path)
    return run.path


def recomputed_pairs(folder: Path) -> dict[tuple[str, str], dict]:
    """Each pair's counts, difference, e-value and decision point from the raw files (the
    manifest's question order, scores.jsonl), without qatcmp's code."""
    from test_adaptive_run import exact_max_e

    manifest = json.loads((folder / "manifest.json").read_text())
    order = manifest["spec"]["benchmarks"][0]["item_ids"]
    models = list(manifest["spec"]["models"])
    correct = {(s["model"], s["item_id"]): s["correct"] for s in read_jsonl_objects(folder / "scores.jsonl")}
    adaptive = json.loads((folder / "adaptive.json").read_text())
    block, alpha = adaptive["settings"]["block"], adaptive["settings"]["alpha"]
    pairs = [(a, b) for i, a in enumerate(models) for b in models[i + 1:]]
    threshold = len(pairs) / alpha
    out = {}
    for a, b in pairs:
        d = [int(correct[(a, q)]) - int(correct[(b, q)]) for q in order]
        ends = list(range(block, len(order) + 1, block))
        crossed = [k for k in ends if float(exact_max_e([x for x in d[:k] if x])) >= threshold]
        n = crossed[0] if crossed else None
        out[(a, b)] = {"crossed_at": n, "d": d}
    return out


def test_an_adaptive_run_leads_with_its_decisions_equal_to_report_json(adaptive_run):
    from markupsafe import escape
    from test_adaptive_run import exact_max_e

    html = (adaptive_run / "report.html").read_text(encoding="utf-8")
    report = json.loads((adaptive_run / "report.json").read_text())
    state = report["adaptive"]
    assert html.index('id="adaptive"') < html.index('id="summary"') < html.index('id="accuracy"')
    table = AdaptiveTable()
    table.feed(html)
    assert len(table.rows) == len(state["pairs"]) == 6
    recomputed = recomputed_pairs(adaptive_run)
    m = len(state["pairs"])
    for (attrs, cells), pair in zip(table.rows, state["pairs"]):
        # The page's numbers are report.json's, exactly (data attributes) and as shown.
        assert (attrs["data-a"], attrs["data-b"], attrs["data-decision"]) == (pair["a"], pair["b"], pair["decision"])
        assert int(attrs["data-questions"]) == pair["questions_used"]
        for key, value in (("diff", pair["diff"]), ("low", pair["interval"][0]), ("high", pair["interval"][1]),
                           ("e-value", pair["e_value"]), ("p-anytime", pair["p_anytime"])):
            assert float(attrs[f"data-{key}"]) == value, key
        lo, hi = pair["interval"]
        more = "" if pair["decision"] != "undecided" else f"~{pair['more_questions']}" if pair["more_questions"] else "?"
        assert cells == ["MMLU-Pro", f"{pair['a']} vs {pair['b']}", pair["decision"], str(pair["questions_used"]),
                         f"{100 * pair['diff']:+.1f}", f"[{100 * lo:+.1f}, {100 * hi:+.1f}]",
                         f"{pair['e_value']:.3g}", f"{pair['p_anytime']:.3g}", more]
        # ... and the raw scores' (recomputed here): counts, difference, e-value, when decided.
        again = recomputed[(pair["a"], pair["b"])]
        d = again["d"][: pair["questions_used"]]
        assert (pair["a_only"], pair["b_only"]) == (d.count(1), d.count(-1))
        assert pair["diff"] == pytest.approx(sum(d) / len(d))
        e = float(exact_max_e([x for x in d if x]))
        assert pair["e_value"] == pytest.approx(e, rel=1e-9)
        assert pair["p_anytime"] == pytest.approx(min(1.0, m / e), rel=1e-9)
        if pair["decision"] == "different":
            assert again["crossed_at"] == pair["questions_used"]
        else:
            assert again["crossed_at"] is None
        if pair["decision"] == "equivalent":
            margin = state["settings"]["margin"]
            assert -margin < lo and hi < margin
    decisions = {p["decision"] for p in state["pairs"]}
    assert decisions == {"different", "equivalent", "undecided"}  # every kind of verdict is on the page
    undecided = [p for p in state["pairs"] if p["decision"] == "undecided"]
    assert html.count("More questions likely needed.") == len(undecided)
    # The stopping rule is the model's sentence; the fixed-sample tests are labelled.
    assert f'<span id="stopping-rule">{escape(state["stopping_rule"])}</span>' in html
    assert "(fixed-sample)" in html and "are not valid for a design that looked at the data" in html
    assert "Fixed-sample tests: not valid for this design" in html
    assert "Fixed-sample intervals: not valid for this design" in html.split('id="plots"')[1]


def test_the_adaptive_plot_is_embedded_once_and_the_looks_match(adaptive_run):
    import base64

    html = (adaptive_run / "report.html").read_text(encoding="utf-8")
    page = parse(html)
    images = [attrs["src"] for tag, attrs in page.tags if tag == "img"]
    report = json.loads((adaptive_run / "report.json").read_text())
    assert len(images) == len(report["plots"]) == 3  # accuracy, differences, the intervals: each once
    plot = (adaptive_run / "adaptive_intervals.png").read_bytes()
    assert "data:image/png;base64," + base64.b64encode(plot).decode("ascii") in images
    assert html.index(base64.b64encode(plot).decode("ascii")[:200]) < html.index('id="summary"')
    # Block by block: one row per look of each pair, the same looks as the plot's.
    looks = re.findall(r'<table class="numbers looks"[^>]*>(.*?)</table>', html, re.S)
    assert len(looks) == 6
    for body, pair in zip(looks, report["adaptive"]["pairs"]):
        rows = re.findall(r"<tr><td>(\d+)</td><td>(\d+)</td>", body)
        assert [(int(b), int(q)) for b, q in rows] == [(h["block"], h["questions"]) for h in pair["history"]]


def test_hostile_model_names_in_the_adaptive_part_are_text(adaptive_run):
    html = (adaptive_run / "report.html").read_text(encoding="utf-8")
    page = parse(html)
    assert not any(k.startswith("on") for _, attrs in page.tags for k in attrs)
    assert [t for t, _ in page.tags].count("img") == 3
    assert "<img src=x" not in html and "&lt;img src=x onerror=" in html
    assert "q|8&#34;&#39;&amp;&lt;/td&gt;" in html  # the template's escaping, not markdown's
    assert "\\|" not in html.split('id="adaptive"')[1].split("</section>")[0]


def test_an_extended_run_labels_its_fixed_sample_p_values(run):
    report = report_of(run)
    html = render_html(report)
    assert 'id="adaptive"' not in html and "fixed-sample-note" not in html
    report.extensions = [{"questions_before": {"mmlu_pro": 30}, "questions_after": {"mmlu_pro": 60}}]
    html = render_html(report)
    assert 'id="adaptive"' not in html
    note = re.search(r'<p class="warning invalid" id="fixed-sample-note">(.*?)</p>', html, re.S).group(1)
    assert "it was extended: MMLU-Pro 30 → 60" in note and "not valid" in note and "**" not in note
    assert "qatcmp run --until-decided" in note
