"""The run directory's crash-safe record store.

A run directory holds ``records.sqlite``: free-form run metadata (resolved
config, class names, dataset, split, bounds, ...), a job table (attack,
settings, seed, model hash, library versions) and one record per sample and
job, optionally with the adversarial example as float32.

Every :meth:`RunStore.write_batch` is one SQLite transaction (WAL journal,
``synchronous=FULL``): a process killed at any moment leaves each batch
either fully stored or absent, so a resumed run writes exactly the samples
:meth:`RunStore.done_samples` does not list.

>>> store = RunStore.create("runs/demo", meta={"dataset": "digits"})   # doctest: +SKIP
>>> store.add_job(job)                                                  # doctest: +SKIP
>>> store.write_batch(job.job_id, columns, x_adv=x_adv)                 # doctest: +SKIP
>>> store.export_parquet("runs/demo/records.parquet")                   # doctest: +SKIP
"""

from labelflip.store._runstore import SCHEMA_VERSION, Job, RunStore
from labelflip.store.rundir import (
    CONFIG_JSON,
    CONFIG_TOML,
    GALLERY_DIR,
    REPORT_DIR,
    RunDir,
    new_run_path,
)
from labelflip.store.schema import (
    COLUMNS,
    OPTIONAL_COLUMNS,
    RECORD_COLUMNS,
    only_valid,
    record_columns,
)

__all__ = [
    "COLUMNS",
    "CONFIG_JSON",
    "CONFIG_TOML",
    "GALLERY_DIR",
    "OPTIONAL_COLUMNS",
    "RECORD_COLUMNS",
    "REPORT_DIR",
    "SCHEMA_VERSION",
    "Job",
    "RunDir",
    "RunStore",
    "new_run_path",
    "only_valid",
    "record_columns",
]
