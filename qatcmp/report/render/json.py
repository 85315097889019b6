"""report.json: the report model as JSON. Pure: Report → text; Report.model_validate_json
reads it back, so any format can be rendered again from this file alone."""

from __future__ import annotations

import json

from qatcmp.report.model import Report


def render_json(report: Report) -> str:
    return json.dumps(report.model_dump(mode="json"), indent=2, ensure_ascii=False) + "\n"


def load_report(text: str) -> Report:
    """A report.json read back into the model (raises pydantic's ValidationError)."""
    return Report.model_validate_json(text)
