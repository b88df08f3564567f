"""Local emulations of what SageMaker does around a model: capture for self-hosted endpoints, batch transform."""

__all__: list[str] = []
