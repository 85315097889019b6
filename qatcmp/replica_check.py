"""Do the replicas of a variant serve the same thing? Compare what each server said about
itself (``ServerInfo``): oMLX's version (``/api/status``) and the variant's model sizes and
source (``/v1/models/status``). Servers that report nothing are not compared (mlx-lm, vLLM):
there is nothing to compare, and that is not a difference."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from qatcmp.records import ServerInfo

# Fields of a /v1/models/status entry that must agree between replicas of one variant (its
# path on each machine may differ legitimately). Any field whose name holds "size" counts too.
IDENTITY_FIELDS = ("source_repo_id", "max_context_window")
ID_FIELDS = ("id", "model_id", "model", "name", "model_alias")
MAX_ENTRIES = 10_000  # a hostile status page does not make this loop forever


def replica_differences(variant: str, model_id: str, infos: Mapping[str, ServerInfo]) -> list[str]:
    """One warning per way the replicas (server name -> info) of a variant differ."""
    warnings = []
    versions = {name: info.version for name, info in infos.items() if info.version is not None}
    if len(set(versions.values())) > 1:
        warnings.append(f"variant '{variant}': its servers run different oMLX versions ({_listing(versions)}); "
                        "they may not answer alike")
    identities = {name: ident for name, info in infos.items() if (ident := model_identity(info.model_status, model_id))}
    fields = sorted({key for ident in identities.values() for key in ident})
    for key in fields:
        values = {name: ident.get(key) for name, ident in identities.items()}
        if len({repr(v) for v in values.values()}) > 1:
            warnings.append(f"variant '{variant}': its servers report different {key} for '{model_id}' "
                            f"({_listing(values)}); check they serve the same weights")
    return warnings


def model_identity(status: Any, model_id: str) -> dict[str, Any]:
    """The identity fields of ``model_id``'s entry in a /v1/models/status answer, whatever its
    shape (a list of entries, under "models"/"data", or a mapping keyed by model id)."""
    entry = model_entry(status, model_id)
    if not isinstance(entry, dict):
        return {}
    return {k: v for k, v in entry.items()
            if isinstance(k, str) and (k in IDENTITY_FIELDS or "size" in k.lower())
            and isinstance(v, (str, int, float, bool)) and len(str(v)) <= 200}


def model_entry(status: Any, model_id: str) -> Any:
    """``model_id``'s entry in a /v1/models/status answer (any of the shapes above), or None."""
    if not isinstance(status, dict):
        return None
    if isinstance(status.get(model_id), dict):
        return status[model_id]
    for key in ("models", "data"):
        entries = status.get(key)
        if isinstance(entries, dict) and isinstance(entries.get(model_id), dict):
            return entries[model_id]
        if isinstance(entries, list):
            for entry in entries[:MAX_ENTRIES]:
                if isinstance(entry, dict) and any(entry.get(f) == model_id for f in ID_FIELDS):
                    return entry
    return None


def _listing(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{name}: {str(value)[:60]}" for name, value in values.items())
