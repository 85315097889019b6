"""The report package's seams: renderers are pure (Report → text/bytes), report.json alone
is enough to render again, and only write.py touches the file system."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from qatcmp.report import build_report_from_scores, load_report, render_json, render_markdown, write_report
from qatcmp.report.render.png import render_png

from test_report_build import MOTIVATING_WRONG, scores_from_wrong

RENDER_DIR = Path(__file__).resolve().parents[1] / "qatcmp" / "report" / "render"


def _report():
    return build_report_from_scores(scores_from_wrong(MOTIVATING_WRONG, 100), source="runs/x")


def test_report_json_alone_renders_the_same_markdown(tmp_path):
    report = _report()
    write_report(report, tmp_path)
    again = load_report((tmp_path / "report.json").read_text(encoding="utf-8"))
    assert render_markdown(again) == (tmp_path / "report.md").read_text(encoding="utf-8")
    assert render_json(again) == (tmp_path / "report.json").read_text(encoding="utf-8")
    assert sorted(again.plots) == sorted(p.name for p in tmp_path.glob("*.png"))


def test_renderers_do_not_change_the_model():
    report = _report()
    before = report.model_dump()
    render_markdown(report)
    render_json(report)
    pngs = render_png(report)
    assert report.model_dump() == before
    assert set(pngs) == {"accuracy.png", "differences.png"}
    assert all(data.startswith(b"\x89PNG") for data in pngs.values())


def test_wording_reads_only_the_model():
    tree = ast.parse((RENDER_DIR.parent / "wording.py").read_text(encoding="utf-8"))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert {name for name in imported if name.startswith("qatcmp")} <= {"qatcmp.report.model"}


@pytest.mark.parametrize("module", sorted(p.name for p in RENDER_DIR.glob("*.py")))
def test_renderers_import_only_the_model_and_shared_formatting(module):
    tree = ast.parse((RENDER_DIR / module).read_text(encoding="utf-8"))
    imported = {
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    } | {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    ours = {name for name in imported if name.startswith("qatcmp") and not name.startswith("qatcmp.report.render.")}
    assert ours <= {"qatcmp.report.model", "qatcmp.report.wording"}, ours
    assert not imported & {"os", "shutil", "tempfile", "qatcmp.rundir"}
    assert "open(" not in (RENDER_DIR / module).read_text(encoding="utf-8")


def test_a_failed_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    from qatcmp.report import write as write_module

    def broken(*_args, **_kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(write_module.os, "replace", broken)
    with pytest.raises(OSError):
        write_module.write_text_atomic(tmp_path / "report.md", "x")
    assert list(tmp_path.iterdir()) == []
