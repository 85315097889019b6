"""The embedded demo/test backend: tiny models built locally, served by the real mlx_lm.server.

``build_demo_models`` writes the models (hand-built; each knows a fixed subset of the builtin
MMLU-Pro questions, see ``qatcmp.demo.knowledge``); ``MlxLmServer`` runs mlx-lm's OpenAI-compatible server
over them. Both need the optional dependencies: ``pip install 'qatcmp[demo]'``.
"""

from qatcmp.demo.server import MlxLmServer, ServerStartError, free_port
from qatcmp.demo.tinymodel import DEMO_VARIANTS, build_demo_models

__all__ = ["DEMO_VARIANTS", "MlxLmServer", "ServerStartError", "build_demo_models", "free_port"]
