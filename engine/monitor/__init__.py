"""Monitoring on the engine's tables: what SageMaker Model Monitor's analyzer produced, in its file formats.

So far: a streaming, mergeable per-feature profile (`profile_batches`) and its ``statistics.json``
document (`statistics_document`). Constraints, violations, CloudWatch metrics and model quality build
on these.
"""

from engine.monitor.profile import FeatureProfile, Profile, profile_batches
from engine.monitor.statistics import statistics_document

__all__ = ["FeatureProfile", "Profile", "profile_batches", "statistics_document"]
