#!/usr/bin/env python
"""report.html size and load time (not a test: it prints figures).

A synthetic run of 3 variants x 1,000 questions (836 MMLU-Pro, repeating the 700 builtin ones
under new ids, and the 164 HumanEval problems), answers with thinking-model lengths
(reasoning drawn log-normally around --reasoning characters, up to 60,000), scores written
directly. Prints the size of report.html (data, plots), the size it would have without
trimming long texts, and, in headless Chromium (Debian's chromium + chromedriver), the time
to DOMContentLoaded, to the first rendered question table, and to open a question view.

    .venv/bin/python bench/bench_html.py [--questions 1000] [--reasoning 4000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import gzip
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from html_browser import chromium, file_url, find_browser  # noqa: E402
from html_synthetic import make_run  # noqa: E402

from qatcmp.report import questions as view_model  # noqa: E402
from qatcmp.report.write import write_html_report  # noqa: E402
from qatcmp.report import report_for_run, write_report  # noqa: E402

MB = 1024 * 1024


def build(folder: Path, questions: int, reasoning: int) -> tuple[Path, float]:
    humaneval = min(164, questions // 6)
    run = make_run(folder, models=("4bit", "6bit", "qat8"), mmlu_pro=questions - humaneval,
                   humaneval=humaneval, seed=11, reasoning_median=reasoning)
    report = report_for_run(run.path, scores=run.read_scores())
    write_report(report, run.path)
    built = time.perf_counter()
    page = write_html_report(report, run.path)
    return page, time.perf_counter() - built


def sizes(page: Path) -> dict[str, float]:
    html = page.read_text(encoding="utf-8")
    start = html.index('id="qdata">') + len('id="qdata">')
    data = html.index("</script>", start) - start
    plots = sum(len(m) for m in re.findall(r"data:image/png;base64,[A-Za-z0-9+/=]*", html))
    transcripts = sum(p.stat().st_size for p in (page.parent / "transcripts").glob("*.jsonl"))
    return {"html": len(html.encode()) / MB, "gzip": len(gzip.compress(html.encode(), 6)) / MB, "data": data / MB, "plots": plots / MB, "transcripts": transcripts / MB}


def untrimmed_size(folder: Path) -> float:
    saved = {k: getattr(view_model, k) for k in ("REASONING_KEEP", "CONTENT_KEEP", "CODE_KEEP", "DETAIL_KEEP", "QUESTION_KEEP")}
    try:
        for key in saved:
            setattr(view_model, key, (10**9, 0))
        from qatcmp.rundir import RunDir

        run = RunDir(folder)
        report = report_for_run(folder, scores=run.read_scores())
        report.plots = []
        page = write_html_report(report, folder)
        return page.stat().st_size / MB
    finally:
        for key, value in saved.items():
            setattr(view_model, key, value)


def load_times(page: Path, repeat: int) -> dict[str, float]:
    figures: dict[str, list[float]] = {"dom": [], "table": [], "view": []}
    with chromium() as driver:
        for _ in range(repeat):
            driver.get("about:blank")
            driver.get(file_url(page))
            timing = driver.execute_script(
                "var nav = performance.getEntriesByType('navigation')[0];"
                "var mark = performance.getEntriesByName('qatcmp-table-rendered')[0];"
                "return [nav.domContentLoadedEventEnd, mark ? mark.startTime : null];")
            figures["dom"].append(timing[0])
            figures["table"].append(timing[1])
            figures["view"].append(driver.execute_script(
                "var t = performance.now(); document.querySelector('#q-table tbody tr').click();"
                "document.querySelectorAll('#qview details').forEach(function (d) { d.open = true; });"
                "document.body.getBoundingClientRect(); return performance.now() - t;"))
    return {k: statistics.median(v) for k, v in figures.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=1000)
    parser.add_argument("--reasoning", type=int, default=4000, help="median reasoning length in characters")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-html-") as tmp:
        folder = Path(tmp) / "run"
        page, render_s = build(folder, args.questions, args.reasoning)
        size = sizes(page)
        print(f"synthetic run: 3 variants x {args.questions} questions, reasoning median {args.reasoning:,} chars")
        print(f"transcripts on disk: {size['transcripts']:.1f} MB")
        print(f"report.html: {size['html']:.2f} MB (question data {size['data']:.2f} MB, plots {size['plots']:.2f} MB); "
              f"rendered and written in {render_s:.2f} s; gzipped (as a .gz/.zip attachment) {size['gzip']:.2f} MB")
        if find_browser() is None:
            print("load time: skipped (no chromium + chromedriver here)")
        else:
            t = load_times(page, args.repeat)
            print(f"headless Chromium, median of {args.repeat}: DOMContentLoaded {t['dom']:.0f} ms, "
                  f"question table rendered {t['table']:.0f} ms, question view opened {t['view']:.0f} ms")
        print(f"without trimming long texts report.html would be {untrimmed_size(folder):.1f} MB (plots left out)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
