"""Batched non-negative quadratic programs by the Sequential Coordinate-wise
Algorithm (SCA) of Franc, Hlaváč & Navara, "Sequential Coordinate-Wise
Algorithm for the Non-negative Least Squares Problem" (CAIP 2005).

JMA's dual problem (JMA paper, eq. 23) is, per sample,

    λ* = argmin_{λ ≥ 0}  ½ λᵀ H λ + bᵀ λ,     H = A (J Jᵀ) Aᵀ  (positive semi-definite).

SCA minimises it exactly along one coordinate at a time, keeping the
gradient ``μ = Hλ + b`` up to date with one column of ``H``:

    λ_k ← max(0, λ_k − μ_k / H_kk),     μ ← μ + (λ_k^new − λ_k^old) H[:, k].

A sweep updates every coordinate once. It stops when the KKT conditions hold
to a tolerance — ``μ_k ≥ −tol`` for every ``k`` and ``|μ_k| ≤ tol`` where
``λ_k > 0`` — or after ``max_sweeps`` sweeps. The tolerance is relative:
``tol = rtol · max(1, max_k |b_k|)`` per problem.

Why hand-written: no maintained library solves a *batch* of small NNLS/QP
problems on the device (``scipy.optimize.nnls`` is one problem at a time on
the CPU); SCA is a dozen lines, its cost grows linearly with the number of
constraints (the reason the JMA paper picks it) and all samples of the active
batch advance together. The tests check it against ``scipy.optimize.nnls``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True, eq=False)
class NNLSResult:
    """``lam`` (B, K); ``sweeps`` run; ``converged`` (B,) bool: KKT within tolerance."""

    lam: torch.Tensor
    sweeps: int
    converged: torch.Tensor


def kkt_violation(lam: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """Largest violation (B,) of the KKT conditions of ``min ½λᵀHλ + bᵀλ, λ ≥ 0``
    given ``λ`` and the gradient ``μ = Hλ + b``."""
    return torch.where(lam > 0, mu.abs(), (-mu).clamp_min(0)).amax(-1)


def sca_nnls(
    h: torch.Tensor, b: torch.Tensor, *, rtol: float = 1e-10, max_sweeps: int = 1000
) -> NNLSResult:
    """Solve ``min_{λ≥0} ½ λᵀ H λ + bᵀ λ`` for a batch: ``h`` (B, K, K)
    symmetric positive semi-definite, ``b`` (B, K). Computed in float64 on the
    device of ``h``; returns ``λ`` in ``b``'s dtype.

    A coordinate with ``H_kk ≤ 0`` (a zero row of ``A J``: that constraint
    cannot be moved) keeps ``λ_k = 0``.
    """
    if h.ndim != 3 or h.shape[1] != h.shape[2] or b.shape != h.shape[:2]:
        raise ValueError(f"need h (B, K, K) and b (B, K), got {tuple(h.shape)}, {tuple(b.shape)}")
    out_dtype = b.dtype
    h = h.double()
    b = b.double()
    bsz, k = b.shape
    lam = torch.zeros_like(b)
    mu = b.clone()
    diag = torch.diagonal(h, dim1=1, dim2=2)
    usable = diag > 0
    inv_diag = torch.where(usable, 1.0 / torch.where(usable, diag, 1.0), 0.0)
    tol = torch.as_tensor(rtol, dtype=b.dtype) * b.abs().amax(-1).clamp_min(1.0)
    mu_masked = torch.where(usable, mu, mu.clamp_min(0))  # unusable coordinates never violate
    if bsz == 0 or k == 0 or bool((kkt_violation(lam, mu_masked) <= tol).all()):
        return NNLSResult(lam.to(out_dtype), 0, torch.ones(bsz, dtype=torch.bool, device=b.device))
    sweeps = 0
    for sweeps in range(1, max_sweeps + 1):  # noqa: B007 - the count is returned
        for j in range(k):
            new = (lam[:, j] - mu[:, j] * inv_diag[:, j]).clamp_min(0)
            step = new - lam[:, j]
            lam[:, j] = new
            mu += step.unsqueeze(1) * h[:, :, j]
        mu_masked = torch.where(usable, mu, mu.clamp_min(0))
        if bool((kkt_violation(lam, mu_masked) <= tol).all()):
            break
    converged = kkt_violation(lam, torch.where(usable, mu, mu.clamp_min(0))) <= tol
    return NNLSResult(lam.to(out_dtype), sweeps, converged)
