"""Monitoring on the engine's tables: what SageMaker Model Monitor's analyzer produced, in its file formats.

The jobs are in `engine.monitor.job` (`run_baseline`, `run_data_quality`, `run_model_quality`, `MonitorOptions`;
model-quality columns in `engine.monitor.quality.QualityOptions`). The pieces, usable on their own: a streaming,
mergeable per-feature profile (`profile_batches`), its ``statistics.json`` (`statistics_document`), suggested
``constraints.json`` (`constraints_document`) and a window's ``constraint_violations.json`` against a baseline
(`violations_document`). Everything the package takes from the rest of the engine is in `engine.monitor.adapter`.
"""

from engine.monitor.constraints import constraints_document
from engine.monitor.profile import FeatureProfile, Profile, profile_batches
from engine.monitor.statistics import statistics_document
from engine.monitor.violations import violations_document

__all__ = [
    "FeatureProfile",
    "Profile",
    "constraints_document",
    "profile_batches",
    "statistics_document",
    "violations_document",
]
