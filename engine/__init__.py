"""capture-engine: SageMaker data capture to hour-partitioned Arrow and Parquet."""

from engine._version import __version__

__all__ = ["__version__"]
