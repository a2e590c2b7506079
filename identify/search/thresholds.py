"""Open-set thresholds: the cosine score above which a probe is taken to be a gallery subject,
for a target false-accept rate, from the checkpoint's calibration or the operator's override."""

from __future__ import annotations

import math
from typing import Any

from identify.settings import Settings


class ThresholdError(ValueError):
    """No threshold can be had for the FAR asked: the model is uncalibrated at that FAR."""


def threshold(
    metadata: dict[str, Any],
    *,
    masked: bool,
    far: float | None = None,
    settings: Settings | None = None,
) -> float:
    """The cosine threshold for normal or masked probes at ``far`` (default: the settings'
    CQAFACE_FAR).

    The settings' CQAFACE_THRESHOLD / CQAFACE_MASKED_THRESHOLD win over the checkpoint's
    ``metadata["thresholds"][normal|masked][str(far)]`` (written by `cqaface eval calibrate`).
    """
    settings = settings or Settings()
    override = settings.threshold_override(masked)
    if override is not None:
        return override
    far = settings.far if far is None else far
    kind = "masked" if masked else "normal"
    table = (metadata.get("thresholds") or {}).get(kind) or {}
    for key, value in table.items():
        try:
            if math.isclose(float(key), far, rel_tol=1e-6):
                return float(value)
        except (TypeError, ValueError):
            continue
    calibrated = ", ".join(sorted(table)) or "none"
    variable = "CQAFACE_MASKED_THRESHOLD" if masked else "CQAFACE_THRESHOLD"
    raise ThresholdError(
        f"the model has no {kind}-probe threshold at FAR {far:g} (calibrated: {calibrated}); "
        f"set CQAFACE_FAR to a calibrated value, set {variable}, or run "
        "`cqaface eval calibrate --write`"
    )
