"""Which policy environment governs each stage: read from policy data (promotion.governs), so a
promotion to prod is judged by prod's policy whoever runs it and whatever --env they pass."""

from __future__ import annotations

import json
from pathlib import Path


def governing_environments(policy_root: Path) -> dict[str, str]:
    """stage -> environment. A stage claimed by two environments is a configuration error."""
    out: dict[str, str] = {}
    for f in sorted((policy_root / "data").glob("*.json")):
        for env, sections in json.loads(f.read_text()).items():
            for stage in sections.get("promotion", {}).get("governs", []):
                if stage in out and out[stage] != env:
                    raise ValueError(f"stage {stage!r} is governed by both {out[stage]} and {env} "
                                     f"(policies/data/*.json: promotion.governs)")
                out[stage] = env
    return out

