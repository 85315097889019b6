"""report.html in a real headless browser (Debian's chromium + chromedriver, via Selenium),
opened from file:// as a person would: a real demo run (run → score → stats against the real
mlx-lm server), the question table's counts against report.json, the question view, filters,
search, keyboard navigation; and a copy of that run whose answers carry script and HTML
payloads, which must show as text, run nothing and request nothing."""

from __future__ import annotations

import asyncio
import http.server
import json
import shutil
import threading
from collections import defaultdict
from pathlib import Path

import pytest

from html_browser import browser, file_url, find_browser, open_page  # noqa: F401  (browser: a fixture)
from qatcmp.cli import main
from qatcmp.config import parse_config
from qatcmp.rundir import RunDir, object_sha256, read_jsonl_objects, write_text_atomic
from qatcmp.runner import Runner
from qatcmp.selection import plan_benchmarks

pytestmark = [
    pytest.mark.server,
    pytest.mark.skipif(find_browser() is None, reason="no chromium + chromedriver here (apt-get install chromium chromium-driver)"),
]
pytest.importorskip("selenium")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

ARTIFACTS = Path(__file__).parent / "artifacts"


def config_text(base_url: str, variants: dict[str, str]) -> str:
    lines = ["servers:", "  - name: mlx", f"    base_url: {base_url}", "    max_concurrency: 4",
             "defaults:", "  sampling: {temperature: 1.0, top_p: 1.0, max_tokens: 256}", "models:"]
    for variant, model_id in variants.items():
        lines += [f"  - name: {variant}", "    server: mlx", f"    model: {model_id}"]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def demo_run(mlx_servers, tmp_path_factory) -> Path:
    server = mlx_servers.multi
    config = parse_config(config_text(server.base_url, server.model_ids))
    plans = plan_benchmarks({"mmlu_pro": 30, "humaneval": 3}, {"mmlu_pro": "builtin", "humaneval": "builtin"}, seed=5)
    out = tmp_path_factory.mktemp("html") / "run"
    summary = asyncio.run(Runner(config, config.models, plans, run_dir=out, seed=5, samples=1).execute())
    assert summary.exit_code == 0
    assert main(["stats", str(out)]) == 0  # scores first, then report.md/json/html
    assert (out / "report.html").is_file()
    return out


def choose(driver, element_id: str, *, value: str | None = None, text: str | None = None) -> None:
    select = Select(driver.find_element(By.ID, element_id))
    if value is not None:
        select.select_by_value(value)
    else:
        select.select_by_visible_text(text)


def shown(driver) -> int:
    return int(driver.find_element(By.ID, "q-count").get_attribute("data-shown"))


def rows(driver) -> list:
    return driver.find_elements(By.CSS_SELECTOR, "#q-table tbody tr")


def severe_console(driver) -> list[dict]:
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def reset(driver, bench_index: int) -> None:
    choose(driver, "f-bench", value=str(bench_index))
    choose(driver, "f-cat", value="")
    choose(driver, "f-pair", value="")
    choose(driver, "f-rel", value="all")
    search = driver.find_element(By.ID, "f-search")
    search.clear()
    if driver.find_element(By.ID, "f-trunc").is_selected():
        driver.find_element(By.ID, "f-trunc").click()


# --------------------------------------------------------------------------- the real run


def test_disagreement_counts_equal_report_json(demo_run, browser):
    report = json.loads((demo_run / "report.json").read_text())
    open_page(browser, demo_run / "report.html")
    checked = 0
    for index, bench in enumerate(report["benchmarks"]):
        reset(browser, index)
        assert shown(browser) == len([i for i in RunDir(demo_run).read_items() if i.benchmark == bench["benchmark"]])
        for pair_index, pair in enumerate(bench["pairs"]):
            choose(browser, "f-pair", value=str(pair_index))
            choose(browser, "f-rel", value="disagree")
            assert shown(browser) == pair["a_only"] + pair["b_only"], (bench["benchmark"], pair["a"], pair["b"])
            assert len(rows(browser)) == shown(browser)
            choose(browser, "f-rel", value="a_only")
            assert shown(browser) == pair["a_only"]
            choose(browser, "f-rel", value="b_only")
            assert shown(browser) == pair["b_only"]
            counts = browser.find_element(By.ID, "q-pair-counts")
            assert (int(counts.get_attribute("data-a-only")), int(counts.get_attribute("data-b-only"))) == (
                pair["a_only"], pair["b_only"])
            checked += 1
    assert checked == 6  # 3 pairs on each of the two benchmarks
    # A fixed run: no adaptive part, and its fixed-sample tests are not labelled invalid.
    assert browser.find_elements(By.ID, "adaptive") == [] and browser.find_elements(By.ID, "fixed-sample-note") == []
    assert any(p["a_only"] + p["b_only"] for b in report["benchmarks"] for p in b["pairs"]), "no disagreement at all"
    assert severe_console(browser) == []


def test_question_view_shows_every_variant_answer(demo_run, browser):
    run = RunDir(demo_run)
    transcripts = {(t.model, t.benchmark, t.item_id): t for t in run.read_transcripts()}
    scores = {(s.model, s.benchmark, s.item_id): s for s in run.read_scores()}
    items = {(i.benchmark, i.item_id): i for i in run.read_items()}
    open_page(browser, demo_run / "report.html")
    for index, benchmark in enumerate(["mmlu_pro", "humaneval"]):
        reset(browser, index)
        rows(browser)[0].click()
        view = browser.find_element(By.ID, "qview")
        assert view.is_displayed()
        item_id = view.get_attribute("data-id")
        item = items[(benchmark, item_id)]
        columns = view.find_elements(By.CSS_SELECTOR, ".answers .column")
        assert [c.get_attribute("data-model") for c in columns] == ["4bit", "6bit", "8bit"]
        for column in columns:
            model = column.get_attribute("data-model")
            transcript, score = transcripts[(model, benchmark, item_id)], scores[(model, benchmark, item_id)]
            texts = [p.get_attribute("textContent") for p in column.find_elements(By.CSS_SELECTOR, "pre.text")]
            assert transcript.content in texts  # the final answer, verbatim
            facts = column.find_element(By.CSS_SELECTOR, "dl.facts").text
            assert f"how\n{score.extraction_rule}" in facts and f"tokens\n{transcript.usage.completion_tokens}" in facts
            assert f"finish reason\n{transcript.finish_reason}" in facts
            if benchmark == "mmlu_pro":
                assert f"extracted\n{score.extracted}" in facts
            else:
                assert f"sandbox\n{score.status}" in facts
                assert any(score.extracted.endswith(text) and text.strip() for text in texts)  # the code that ran
            reasoning = column.find_element(By.CSS_SELECTOR, "details.reasoning")
            assert reasoning.get_attribute("open") is None  # collapsed
            reasoning.find_element(By.TAG_NAME, "summary").click()
            assert reasoning.find_element(By.TAG_NAME, "pre").text.strip() == transcript.reasoning.strip()
        question = view.find_element(By.CSS_SELECTOR, "pre.text").get_attribute("textContent")
        if benchmark == "mmlu_pro":
            assert question == item.question
            gold = view.find_element(By.CSS_SELECTOR, "ol.options li.gold").text
            assert gold.startswith(f"{item.answer}. {item.options[ord(item.answer) - 65]}")
        else:
            assert question == item.prompt


def test_filters_search_sort_and_keyboard(demo_run, browser):
    run = RunDir(demo_run)
    mmlu = [i for i in run.read_items() if i.benchmark == "mmlu_pro"]
    open_page(browser, demo_run / "report.html")
    reset(browser, 0)
    by_category = defaultdict(list)
    for item in mmlu:
        by_category[item.category].append(item.item_id)
    category, ids = max(by_category.items(), key=lambda kv: len(kv[1]))
    choose(browser, "f-cat", value=category)
    assert shown(browser) == len(ids)
    assert sorted(r.get_attribute("data-id") for r in rows(browser)) == sorted(ids)
    choose(browser, "f-cat", value="")

    target = mmlu[len(mmlu) // 2]
    needle = max(target.question.split(), key=len)  # a word of one question
    expected = [i.item_id for i in mmlu if needle.lower() in "\n".join([i.item_id, i.category, i.question, *i.options]).lower()]
    transcripts = [t for t in run.read_transcripts() if t.benchmark == "mmlu_pro"]
    expected = sorted(set(expected) | {t.item_id for t in transcripts if needle.lower() in (t.content or "").lower()})
    browser.find_element(By.ID, "f-search").send_keys(needle)
    assert target.item_id in expected
    assert sorted(r.get_attribute("data-id") for r in rows(browser)) == expected
    browser.find_element(By.ID, "f-search").clear()
    browser.find_element(By.ID, "f-search").send_keys("no question says this: zqxwv")
    assert shown(browser) == 0
    browser.find_element(By.ID, "f-search").clear()
    browser.execute_script("document.getElementById('f-search').dispatchEvent(new Event('input'))")
    assert shown(browser) == len(mmlu)

    choose(browser, "f-sort", value="latency")
    latencies = [float(r.find_elements(By.TAG_NAME, "td")[-1].text) for r in rows(browser)]
    assert latencies == sorted(latencies, reverse=True) and len(set(latencies)) > 1
    choose(browser, "f-sort", value="order")
    assert [r.get_attribute("data-id") for r in rows(browser)] == [i.item_id for i in mmlu]

    # Keyboard: n / p walk the disagreements of the chosen pair, Escape closes.
    report = json.loads((demo_run / "report.json").read_text())
    pair_index, pair = max(enumerate(report["benchmarks"][0]["pairs"]), key=lambda x: x[1]["a_only"] + x[1]["b_only"])
    choose(browser, "f-pair", value=str(pair_index))
    disagreeing = [r.get_attribute("data-id") for r in rows(browser) if "disagree" in r.get_attribute("class")]
    assert len(disagreeing) == pair["a_only"] + pair["b_only"] >= 1
    body = browser.find_element(By.TAG_NAME, "body")
    seen = []
    for _ in disagreeing:
        body.send_keys("n")
        seen.append(browser.find_element(By.ID, "qview").get_attribute("data-id"))
    assert seen == disagreeing
    if len(disagreeing) > 1:
        body.send_keys("p")
        assert browser.find_element(By.ID, "qview").get_attribute("data-id") == disagreeing[-2]
    body.send_keys("\ue00c")  # Escape
    assert not browser.find_element(By.ID, "qview").is_displayed()
    assert severe_console(browser) == []


def test_screenshot_artefact(demo_run, browser):
    ARTIFACTS.mkdir(exist_ok=True)
    open_page(browser, demo_run / "report.html")
    reset(browser, 0)
    choose(browser, "f-rel", value="disagree")
    rows(browser)[0].click()
    browser.set_window_size(1400, 2400)
    top = ARTIFACTS / "report_html_top.png"
    browser.execute_script("window.scrollTo(0, 0)")
    assert browser.save_screenshot(str(top))
    view = ARTIFACTS / "report_html_question_view.png"
    browser.execute_script("document.getElementById('questions').scrollIntoView()")
    assert browser.save_screenshot(str(view))
    browser.set_window_size(1400, 1000)
    assert top.stat().st_size > 10_000 and view.stat().st_size > 10_000
    print(f"screenshots: {top} {view}")


# --------------------------------------------------------------------------- hostile answers


class Listener(http.server.BaseHTTPRequestHandler):
    """Records any request at all: the page must never make one."""

    seen: list[str] = []

    def do_GET(self):  # noqa: N802
        Listener.seen.append(self.path)
        self.send_response(200)
        self.end_headers()

    do_POST = do_GET

    def log_message(self, *args):
        pass


@pytest.fixture()
def listener():
    Listener.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Listener)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def payload(base: str) -> str:
    return (
        f'</script><img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'
        f'</textarea></pre></style><svg onload="window.__pwned=3"></svg>'
        f'<a href="javascript:window.__pwned=4">click me</a> <div onmouseover="window.__pwned=5">hover me</div>'
        f'<img src="{base}/img.png"><link rel="stylesheet" href="{base}/x.css">'
        f'<iframe src="{base}/frame"></iframe><meta http-equiv="refresh" content="0;url={base}/refresh">'
        f"<!-- \u2028\u2029 \"' & --> {{{{ 7*7 }}}} ${{7*7}}"
    )


@pytest.fixture()
def hostile_run(demo_run, tmp_path, listener) -> tuple[Path, str, str]:
    """A copy of the real run whose first MMLU-Pro question, its answers and reasoning carry
    the payload, and two answers hit the token budget; then `qatcmp stats` on it."""
    out = tmp_path / "hostile"
    shutil.copytree(demo_run, out)
    text = payload(listener)
    items = list(read_jsonl_objects(out / "items.jsonl"))
    target = next(i for i in items if i["benchmark"] == "mmlu_pro")
    target["question"] = "Which is inert? " + text
    target["options"][1] = text
    target["category"] = "cat " + text
    write_text_atomic(out / "items.jsonl", "".join(json.dumps(i) + "\n" for i in items))
    # A hostile dataset, not an edit after the run: the manifest's item hashes say so.
    rd = RunDir(out)
    manifest = rd.read_manifest()
    manifest.item_hashes.setdefault("mmlu_pro", {})[target["item_id"]] = object_sha256(target)
    rd.write_manifest(manifest)
    for model in ("4bit", "6bit", "8bit"):
        path = out / "transcripts" / f"{model}.mmlu_pro.jsonl"
        records = list(read_jsonl_objects(path))
        for record in records:
            if record["item_id"] == target["item_id"]:
                record["content"] = text + "\nThe answer is (B)."
                record["reasoning"] = "thinking " + text
        if model == "6bit":
            for record in records[1:3]:
                record["finish_reason"] = "length"
        write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in records))
    assert main(["stats", str(out)]) == 0  # re-scores the changed transcripts
    return out, target["item_id"], text


def test_payloads_render_as_text_and_nothing_runs_or_leaves(hostile_run, browser, listener):
    run, item_id, text = hostile_run
    html = (run / "report.html").read_text(encoding="utf-8")
    assert "<img src=x" not in html and "window.__pwned" in html  # in the data, escaped
    open_page(browser, run / "report.html")
    browser.get_log("browser")  # drop what came before
    reset(browser, 0)
    # The category filter's option is the payload, as text.
    assert any(o.get_attribute("value") == "cat " + text for o in browser.find_elements(By.CSS_SELECTOR, "#f-cat option"))
    browser.find_element(By.ID, "f-search").send_keys("window.__pwned")
    assert [r.get_attribute("data-id") for r in rows(browser)] == [item_id]
    rows(browser)[0].click()
    view = browser.find_element(By.ID, "qview")
    for summary in view.find_elements(By.CSS_SELECTOR, "details.reasoning summary"):
        summary.click()
    from selenium.webdriver.common.action_chains import ActionChains

    for pre in view.find_elements(By.CSS_SELECTOR, "pre.text"):
        ActionChains(browser).move_to_element(pre).click(pre).perform()  # hover and click the "links"
    texts = [p.get_attribute("textContent") for p in view.find_elements(By.CSS_SELECTOR, "pre.text")]
    assert "Which is inert? " + text in texts
    assert texts.count(text + "\nThe answer is (B).") == 3 and texts.count("thinking " + text) == 3
    assert view.find_element(By.CSS_SELECTOR, "ol.options").text.count("click me") == 1
    injected = browser.execute_script(
        "return document.querySelectorAll('main img:not(#plots img), main svg, main a, main iframe, main link,"
        " main script, body meta, [onerror], [onload], [onmouseover]').length")
    assert injected == 0
    assert browser.execute_script("return window.__pwned") is None
    assert browser.current_url == file_url(run / "report.html")

    # Truncated filter: the two answers changed to finish_reason "length".
    browser.find_element(By.ID, "f-search").clear()
    browser.execute_script("document.getElementById('f-search').dispatchEvent(new Event('input'))")
    browser.find_element(By.ID, "f-trunc").click()
    truncated_ids = {s.item_id for s in RunDir(run).read_scores() if s.truncated and s.benchmark == "mmlu_pro"}
    assert len(truncated_ids) == 2 and {r.get_attribute("data-id") for r in rows(browser)} == truncated_ids

    assert severe_console(browser) == []  # no script error, no refused load so far

    # Nothing was fetched while the page was used (data: plots aside).
    resources = browser.execute_script(
        "return performance.getEntriesByType('resource').map(function (e) { return e.name; })")
    assert [r for r in resources if not r.startswith("data:")] == []

    # The policy itself is in force: an inline script added later and a fetch are blocked.
    browser.execute_script(
        "var s = document.createElement('script'); s.textContent = 'window.__probe = 1'; document.body.appendChild(s);"
        f"fetch('{listener}/fetch').catch(function () {{ window.__fetchBlocked = true; }});"
        f"var i = new Image(); i.src = '{listener}/probe.png'; document.body.appendChild(i);")
    WebDriverWait(browser, 5).until(lambda d: d.execute_script("return window.__fetchBlocked === true"))
    assert browser.execute_script("return window.__probe") is None
    violations = [e["message"] for e in browser.get_log("browser") if "Content Security Policy" in e["message"]]
    assert len(violations) >= 2, violations  # the probes, refused by the policy (and only they)
    assert all("/fetch" in v or "/probe.png" in v or "inline script" in v for v in violations), violations
    assert Listener.seen == []
