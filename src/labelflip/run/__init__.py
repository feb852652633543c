"""Running an experiment: a typed plan (:mod:`~labelflip.run.plan`), the seed
tree (:mod:`~labelflip.run.seeds`), the batch step beneath every executor
(:mod:`~labelflip.run.step`), the executors and their shared commit loop
(:mod:`~labelflip.run.executors`, :mod:`~labelflip.run.ray`), and the thin
orchestrator (:func:`run`)."""

from labelflip.run.executors import Executor, LocalExecutor, Shard, pending_batches
from labelflip.run.orchestrate import RunOutcome, new_run_dir, run
from labelflip.run.plan import (
    Inputs,
    RunPlan,
    prepare,
    resolve_device,
    select_samples,
    stored_config,
)
from labelflip.run.seeds import SeedTree, batch_seed
from labelflip.run.step import BatchOutput, Judges, PlannedJob, attack_batch, plan_job

__all__ = [
    "BatchOutput",
    "Executor",
    "Inputs",
    "Judges",
    "LocalExecutor",
    "PlannedJob",
    "RunOutcome",
    "RunPlan",
    "SeedTree",
    "Shard",
    "attack_batch",
    "batch_seed",
    "new_run_dir",
    "pending_batches",
    "plan_job",
    "prepare",
    "resolve_device",
    "run",
    "select_samples",
    "stored_config",
]
