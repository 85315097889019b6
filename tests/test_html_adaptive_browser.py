"""report.html of a real adaptive run (`qatcmp run --until-decided` against the known-answers
server, then `qatcmp stats`) in headless Chromium: the page leads with the anytime-valid
decisions, each number on it equals report.json's, and report.json's are recomputed here from
the raw transcripts; the interval plot is shown, the fixed-sample tests are labelled."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from html_browser import browser, find_browser, open_page  # noqa: F401  (browser: a fixture)
from known_answers_server import KnownAnswersServer
from qatcmp.cli import main
from test_adaptive_run import BUDGET, RULES, SEED, check_against_transcripts, command, config_text

pytestmark = pytest.mark.skipif(find_browser() is None,
                                reason="no chromium + chromedriver here (apt-get install chromium chromium-driver)")
pytest.importorskip("selenium")
from selenium.webdriver.common.by import By  # noqa: E402

ARTIFACTS = Path(__file__).parent / "artifacts"


@pytest.fixture(scope="module")
def adaptive_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("adaptive-html") / "run"
    with KnownAnswersServer(RULES, run_seed=SEED) as server:
        config = out.parent / "servers.yaml"
        config.write_text(config_text(server.base_url))
        assert main(command(config, out)) == 0
    assert main(["stats", str(out)]) == 0
    return out


def test_the_page_leads_with_the_decisions_of_report_json(adaptive_run, browser):
    driver = browser
    report = json.loads((adaptive_run / "report.json").read_text())
    state = report["adaptive"]
    check_against_transcripts(adaptive_run, state)  # report.json's numbers, from the raw transcripts
    open_page(driver, adaptive_run / "report.html")
    sections = [s.get_attribute("id") for s in driver.find_elements(By.CSS_SELECTOR, "main > section")]
    assert sections[:2] == ["adaptive", "summary"]
    rows = driver.find_elements(By.CSS_SELECTOR, "#adaptive-pairs tbody tr")
    assert len(rows) == len(state["pairs"]) == 3
    for row, pair in zip(rows, state["pairs"]):
        cells = [c.text for c in row.find_elements(By.CSS_SELECTOR, "th, td")]
        lo, hi = pair["interval"]
        assert cells[:8] == ["MMLU-Pro", f"{pair['a']} vs {pair['b']}", pair["decision"], str(pair["questions_used"]),
                             f"{100 * pair['diff']:+.1f}", f"[{100 * lo:+.1f}, {100 * hi:+.1f}]",
                             f"{pair['e_value']:.3g}", f"{pair['p_anytime']:.3g}"]
        exact = driver.execute_script(
            "var d = arguments[0].dataset; return [Number(d.diff), Number(d.low), Number(d.high),"
            " Number(d.eValue), Number(d.pAnytime), Number(d.questions)];", row)
        assert exact == [pair["diff"], lo, hi, pair["e_value"], pair["p_anytime"], pair["questions_used"]]
        if pair["decision"] == "undecided":
            assert pair["questions_used"] == BUDGET
    different = [p for p in state["pairs"] if p["decision"] == "different"]
    assert len(different) == 2 and all(p["b"] == "bad" for p in different)
    sentences = driver.find_element(By.CSS_SELECTOR, "#adaptive .adaptive-sentences").text
    for pair in different:
        assert f"{pair['a']} vs {pair['b']}, MMLU-Pro" in sentences
        assert f"different, decided after {pair['questions_used']} questions" in sentences
    assert driver.find_element(By.ID, "stopping-rule").text == state["stopping_rule"]
    note = driver.find_element(By.ID, "fixed-sample-note")
    assert note.is_displayed() and "not valid for a design that looked at the data" in note.text
    # The interval plot is there and decoded (an embedded PNG, no request).
    plot = driver.find_element(By.CSS_SELECTOR, "#adaptive-plot img")
    assert driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", plot) > 300
    # Block by block, collapsed until asked for: one row per look.
    looks = driver.find_element(By.ID, "adaptive-looks")
    assert looks.get_attribute("open") is None
    looks.find_element(By.TAG_NAME, "summary").click()
    tables = looks.find_elements(By.CSS_SELECTOR, "table.looks")
    for table, pair in zip(tables, state["pairs"]):
        got = [[c.text for c in r.find_elements(By.TAG_NAME, "td")][:2] for r in table.find_elements(By.CSS_SELECTOR, "tbody tr")]
        assert got == [[str(h["block"]), str(h["questions"])] for h in pair["history"]]
    assert [e for e in driver.get_log("browser") if e["level"] == "SEVERE"] == []
    resources = driver.execute_script("return performance.getEntriesByType('resource').map(function (e) { return e.name; })")
    assert [r for r in resources if not r.startswith("data:")] == []
    ARTIFACTS.mkdir(exist_ok=True)
    driver.set_window_size(1400, 2000)
    driver.execute_script("window.scrollTo(0, 0)")
    shot = ARTIFACTS / "report_html_adaptive.png"
    assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000


def test_hostile_variant_names_show_as_text_and_run_nothing(tmp_path, browser):
    from html_synthetic import add_adaptive_state, make_run
    from qatcmp.report import report_for_run, write_report

    names = ("4bit", '<img src=x onerror="window.__pwned=1">', "<script>window.__pwned=2</script>|q8")
    run = make_run(tmp_path / "run", models=names, mmlu_pro=60, humaneval=0, seed=2, reasoning_median=200,
                   accuracy=dict(zip(names, (0.4, 0.8, 0.82))))
    add_adaptive_state(run, block=20, margin=0.1)
    write_report(report_for_run(run.path, scores=run.read_scores()), run.path)
    open_page(browser, run.path / "report.html")
    browser.get_log("browser")
    heads = [h.text for h in browser.find_elements(By.CSS_SELECTOR, "#adaptive-pairs tbody th")]
    assert heads == [f"{a} vs {b}" for i, a in enumerate(names) for b in names[i + 1:]]
    assert browser.find_element(By.ID, "adaptive").text.count(names[1]) >= 3  # table, sentences, looks
    assert len(browser.find_elements(By.CSS_SELECTOR, "#adaptive img")) == 1  # the plot only
    assert browser.execute_script("return document.querySelectorAll('[onerror], main script').length") == 0
    assert browser.execute_script("return window.__pwned") is None
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []
