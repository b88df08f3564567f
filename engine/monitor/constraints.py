"""`constraints.json` suggested from a baseline profile, in Model Monitor's own format.

Where the sources disagree, the real suggested files win over the documentation: `datatype_check_threshold`
and `domain_content_threshold` are 1.0 (any deviation fires) as the analyzer writes them, not the docs'
0.1; the drift comparison is `Robust` with threshold 0.1 (the analyzer's defaults); the key is
`comparison_method`, not the old docs' misspelt `comparion_method`.
"""

from __future__ import annotations

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
    out: dict[str, Any] = {
        "name": f.name,
        "inferred_type": f.inferred_type,
        "completeness": f.present / total if total else 0.0,
    }
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
