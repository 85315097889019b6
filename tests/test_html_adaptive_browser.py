"""report.html of a real adaptive run (`qatcmp run --until-decided` against the known-answers
server, then `qatcmp stats`) in headless Chromium: the page leads with the anytime-valid
decisions, each number on it equals report.json's, and report.json's are recomputed here from
the raw transcripts; the interval plot is shown, the fixed-sample tests are labelled."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from html_browser import chromium, file_url, find_browser
from known_answers_server import KnownAnswersServer
from qatcmp.cli import main
from test_adaptive_run import BUDGET, RULES, SEED, check_against_transcripts, command, config_text

pytestmark = pytest.mark.skipif(find_browser() is None,
                                reason="no chromium + chromedriver here (apt-get install chromium chromium-driver)")
pytest.importorskip("selenium")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

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


def test_the_page_leads_with_the_decisions_of_report_json(adaptive_run):
    report = json.loads((adaptive_run / "report.json").read_text())
    state = report["adaptive"]
    check_against_transcripts(adaptive_run, state)  # report.json's numbers, from the raw transcripts
    with chromium() as driver:
        driver.get(file_url(adaptive_run / "report.html"))
        WebDriverWait(driver, 20).until(lambda d: d.execute_script("return document.readyState === 'complete'"))
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
