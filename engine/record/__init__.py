"""Run records: schema, run-folder writer, MLflow writer."""

from engine.record.schema import (
    InstanceError,
    InstanceRecord,
    MetricScore,
    ModelIdentity,
    RunCounts,
    RunRecord,
    TrajectoryStep,
)

__all__ = [
    "InstanceError",
    "InstanceRecord",
    "MetricScore",
    "ModelIdentity",
    "RunCounts",
    "RunRecord",
    "TrajectoryStep",
]
