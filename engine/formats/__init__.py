"""The wire formats of SageMaker's capture, batch transform and ground truth, in one place for writers and readers."""

__all__: list[str] = []
