"""The seed tree of a run: one config ``seed`` and its named branches.

Every random draw of a run comes from one of these branches, each a pure
function of the run seed (and of the job and batch, for attacks), so a run is
reproducible and a resumed run draws exactly what an uninterrupted one does:

============== ================================================================
branch          what it seeds
============== ================================================================
``samples``     the random choice of the attacked samples (numpy PCG64(seed))
``batch``       the ``torch.Generator`` of batch ``b`` of job ``j``: the first 8
                bytes of SHA-256(``"seed:job:b"``), so it depends on nothing else
``white_noise`` the uniform-noise images of the white-noise prior (torch, seed)
``perceptual``  the per-class subsample of the perceptual class distance (torch, seed)
``model``       first-use training of ``[model]`` (seed)
``oracle``      first-use training of ``[oracle]`` (seed + 1: a model trained
                separately from a ``[model]`` of the same architecture)
``svae``        first-use training of ``[svae]`` (seed)
``bootstrap``   the report's bootstrap intervals (0: the same for every run)
============== ================================================================

A branch that a table sets explicitly (``[oracle] seed``, ``[svae] seed``)
overrides the derived value.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

BOOTSTRAP_SEED = 0


def batch_seed(seed: int, job_id: str, batch: int) -> int:
    """The generator seed of one batch of one job (stable across runs and resumes)."""
    digest = hashlib.sha256(f"{seed}:{job_id}:{batch}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


@dataclass(frozen=True)
class SeedTree:
    """The named branches of a run seed (see the module docstring)."""

    seed: int

    def samples(self) -> np.random.Generator:
        return np.random.Generator(np.random.PCG64(self.seed))

    def batch(self, job_id: str, batch: int) -> torch.Generator:
        return torch.Generator().manual_seed(batch_seed(self.seed, job_id, batch))

    def white_noise(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed)

    def perceptual(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed)

    def model(self) -> int:
        return self.seed

    def oracle(self, given: int | None = None) -> int:
        return self.seed + 1 if given is None else given

    def svae(self, given: int | None = None) -> int:
        return self.seed if given is None else given

    @staticmethod
    def bootstrap() -> int:
        return BOOTSTRAP_SEED
