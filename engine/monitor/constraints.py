"""`constraints.json` suggested from a baseline profile, in Model Monitor's own format.

Where the sources disagree, the real suggested files win over the documentation: `datatype_check_threshold`
and `domain_content_threshold` are 1.0 (any deviation fires) as the analyzer writes them, not the docs'
0.1; the drift comparison is `Robust` with threshold 0.1 (the analyzer's defaults); the key is
`comparison_method`, not the old docs' misspelt `comparion_method`. A feature's `completeness` is 1.0 when
the baseline had no missing value, else (above 0.2) Deequ's RetainCompletenessRule bound p - 1.96 sqrt(p(1-p)/n).
"""

from __future__ import annotations

import math
from typing import Any

from engine.monitor.profile import FeatureProfile, Profile

__all__ = ["MONITORING_CONFIG", "constraints_document"]

MONITORING_CONFIG: dict[str, Any] = {
    "evaluate_constraints": "Enabled",
    "emit_metrics": "Enabled",
    "datatype_check_threshold": 1.0,
    "domain_content_threshold": 1.0,
    "distribution_constraints": {
        "perform_comparison": "Enabled",
        "comparison_threshold": 0.1,
        "comparison_method": "Robust",
        "categorical_comparison_threshold": 0.1,
        "categorical_drift_method": "LInfinity",
    },
}


def _feature(f: FeatureProfile) -> dict[str, Any]:
    total = f.present + f.missing
    share = f.present / total if total else 0.0
    if 0.2 < share < 1.0:
        # Deequ's RetainCompletenessRule: the lower end of the 95% interval of the baseline's share, so a window
        # drawn from the baseline's distribution does not fire completeness_check half of the time.
        share = max(0.0, share - 1.96 * math.sqrt(share * (1 - share) / total))
    out: dict[str, Any] = {"name": f.name, "inferred_type": f.inferred_type, "completeness": share}
    if f.inferred_type in ("Integral", "Fractional") and f.n:
        out["num_constraints"] = {"is_non_negative": f.minimum >= 0}
    elif f.inferred_type == "String" and f.categories is not None:
        # Deequ's CategoricalRangeRule: low-cardinality strings keep their domain.
        out["string_constraints"] = {"domains": sorted(f.categories)}
    return out


def constraints_document(profile: Profile) -> dict[str, Any]:
    """The suggested constraints.json of a baseline profile."""
    return {
        "version": 0.0,
        "features": [_feature(f) for f in profile.features.values()],
        "monitoring_config": MONITORING_CONFIG,
    }
