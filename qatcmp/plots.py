"""Compatibility: the plots moved to qatcmp.report.render.png (pure, Report → PNG bytes) and
qatcmp.report.write (the files)."""

from qatcmp.report.render.png import (  # noqa: F401
    ACCURACY_PNG,
    DIFFERENCES_PNG,
    accuracy_figure,
    differences_figure,
    render_png,
)
from qatcmp.report.write import write_plots  # noqa: F401
