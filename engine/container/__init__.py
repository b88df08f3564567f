"""SageMaker Processing and Model Monitor's bring-your-own-container contract around the engine's jobs.

`run_container` reads the Model Monitor environment (`load_config`: variables and
``/opt/ml/config/processingjobconfig.json``), decodes what ``dataset_source`` holds, runs the baseline, data
or model quality job and writes the status to ``/opt/ml/output/message``. Every ``/opt/ml`` path comes from
`MlPaths` (`ml_paths`), re-rooted by ``CAPTURE_ENGINE_OPT_ML``.
"""

from engine.container.config import TRIGGERS, ContainerConfig, DatasetFormat, load_config, model_monitor_environment
from engine.container.entry import ContainerOutcome, run_container, write_message
from engine.container.paths import ROOT_ENV, MlPaths, ml_paths

__all__ = [
    "ROOT_ENV",
    "TRIGGERS",
    "ContainerConfig",
    "ContainerOutcome",
    "DatasetFormat",
    "MlPaths",
    "load_config",
    "ml_paths",
    "model_monitor_environment",
    "run_container",
    "write_message",
]
