"""Type I attacks (Tang et al.): Algorithm 2, eq. 13 and the oracle judgement,
on the paper's toy idea (§II-A): f1 misses a latent direction that f2 uses."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from labelflip.attacks.type_i import judge, latent_attack, type_i
from labelflip.errors import LabelflipError
from labelflip.models.classifier import Classifier
from labelflip.models.svae import SVAE, SVAEConfig


class _LogitEncoder(nn.Module):
    """Exact inverse of the sigmoid decoder; log σ² = 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = x.flatten(1).clamp(1e-4, 1 - 1e-4)
        return torch.cat([torch.logit(p), torch.zeros_like(p)], 1)


class _Linear(nn.Module):
    def __init__(self, w: list[list[float]], b: list[float]) -> None:
        super().__init__()
        self.w, self.b = torch.tensor(w), torch.tensor(b)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return v.flatten(1) @ self.w.T + self.b


def toy() -> tuple[Classifier, SVAE, Classifier]:
    """2-D latent z, image x = sigmoid(z) of shape (1, 1, 2).

    f2 (SVAE's latent classifier): class 1 iff z1 + z2 > 0 (uses both features);
    f1 (attacked): class 1 iff x1 > 0.5, i.e. z1 > 0 (misses z2);
    oracle: class 1 iff x1 + x2 > 1 (agrees with f2)."""
    svae = SVAE(
        _LogitEncoder(),
        nn.Sigmoid(),
        _Linear([[0.0, 0.0], [1.0, 1.0]], [0.0, 0.0]),
        _Linear([[0.0, 0.0]], [0.0]),
        SVAEConfig((1, 1, 2), 2, latent_dim=2, hidden=1),
    )
    f1 = Classifier(
        _Linear([[0.0, 0.0], [10.0, 0.0]], [0.0, -5.0]), num_classes=2, input_shape=(1, 1, 2)
    )
    oracle = Classifier(
        _Linear([[0.0, 0.0], [10.0, 10.0]], [0.0, -10.0]), num_classes=2, input_shape=(1, 1, 2)
    )
    return f1, svae, oracle


def _x(z: list[list[float]]) -> torch.Tensor:
    return torch.sigmoid(torch.tensor(z)).reshape(-1, 1, 1, 2)


def test_toy_type_i_changes_f2_keeps_f1() -> None:
    f1, svae, oracle = toy()
    x = _x([[2.0, 1.0], [1.5, 2.0], [3.0, 0.5]])
    y = torch.tensor([1, 1, 1])
    assert torch.equal(f1.predict(x), y) and torch.equal(svae.predict(x), y)
    x0 = x.clone()
    res = type_i(f1, svae, x, y, target=0, steps=300, lr=0.05, eta=0.1, k_max=1.0)
    assert torch.equal(x, x0)  # inputs untouched
    assert res.success.all() and res.f1_keeps.all() and res.f2_changed.all()
    assert torch.equal(res.f1_pred, y) and torch.equal(
        res.f2_pred, torch.zeros(3, dtype=torch.long)
    )
    assert bool((res.z[:, 0] > 0).all()) and bool((res.z.sum(1) < 0).all())
    # the change is large (second pixel), not a small perturbation
    assert float((res.x_adv - x).abs().amax()) > 0.3
    j = judge(oracle, f1, res.x_adv, y, res.target)
    assert j.f1_keeps.all() and j.oracle_changed.all() and j.oracle_target.all() and j.success.all()
    assert (res.iterations >= 1).all() and (res.iterations <= 300).all()


def test_untargeted_and_determinism() -> None:
    f1, svae, _ = toy()
    x, y = _x([[2.0, 1.0], [1.0, 1.0]]), torch.tensor([1, 1])
    a = type_i(f1, svae, x, y, steps=200, lr=0.05, eta=0.1, k_max=1.0)
    b = type_i(
        f1,
        svae,
        x,
        y,
        steps=200,
        lr=0.05,
        eta=0.1,
        k_max=1.0,
        generator=torch.Generator().manual_seed(5),
    )
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.iterations, b.iterations)
    assert a.success.all() and (a.target == -1).all()
    # batching does not change a sample's result
    c = type_i(f1, svae, x[:1], y[:1], steps=200, lr=0.05, eta=0.1, k_max=1.0)
    assert torch.allclose(c.z, a.z[:1])


def test_no_gradients_leak_into_models() -> None:
    f1, svae, _ = toy()
    f1.model.w.requires_grad_(True)
    type_i(f1, svae, _x([[2.0, 1.0]]), torch.tensor([1]), target=0, steps=5)
    assert f1.model.w.grad is None


def test_type_i_bad_inputs() -> None:
    f1, svae, _ = toy()
    x, y = _x([[2.0, 1.0]]), torch.tensor([1])
    with pytest.raises(LabelflipError, match="target equals"):
        type_i(f1, svae, x, y, target=1)
    with pytest.raises(LabelflipError, match="steps"):
        type_i(f1, svae, x, y, target=0, steps=0)
    with pytest.raises(LabelflipError, match="lr"):
        type_i(f1, svae, x, y, target=0, lr=-1)
    with pytest.raises(LabelflipError, match="outside"):
        type_i(f1, svae, x, y, target=7)
    with pytest.raises(LabelflipError):
        type_i(f1, svae, x + 2, y, target=0)


def test_latent_attack_eq13() -> None:
    f1, svae, _ = toy()
    z = torch.tensor([[2.0, 1.0], [3.0, -1.0]])
    y = f1.predict(svae.decode(z))
    z0 = z.clone()
    res = latent_attack(f1, svae.decode, z, y, k=1e-2, eps=0.5, steps=300, lr=0.05)
    assert torch.equal(z, z0)
    assert res.success.all() and res.f1_keeps.all() and (res.distance >= 0.5).all()
    again = latent_attack(f1, svae.decode, z, y, k=1e-2, eps=0.5, steps=300, lr=0.05)
    assert torch.equal(res.z_adv, again.z_adv)
    # with the auxiliary classifier f2 and a target, z' also crosses f2's boundary
    tgt = latent_attack(
        f1,
        svae.decode,
        z[:1],
        y[:1],
        k=1.0,
        eps=0.5,
        steps=300,
        lr=0.05,
        aux=svae.classify,
        target=torch.tensor([0]),
    )
    assert tgt.f1_keeps.all() and int(svae.classify(tgt.z_adv).argmax(1)) == 0
    with pytest.raises(LabelflipError, match="auxiliary"):
        latent_attack(f1, svae.decode, z, y, target=torch.tensor([0, 0]))


def test_judge_hand_computed() -> None:
    f1, _, oracle = toy()
    # x1: f1=1, oracle=1; x2: f1=1, oracle=0; x3: f1=0, oracle=0
    x = torch.tensor([[0.9, 0.9], [0.6, 0.1], [0.2, 0.1]]).reshape(-1, 1, 1, 2)
    j = judge(oracle, f1, x, torch.tensor([1, 1, 1]), torch.tensor([0, 0, -1]))
    assert j.f1_keeps.tolist() == [True, True, False]
    assert j.oracle_changed.tolist() == [False, True, True]
    assert j.oracle_target.tolist() == [False, True, False]
    assert j.success.tolist() == [False, True, False]


def test_registered_type_i_returns_an_attack_result_with_type_i_success() -> None:
    """``type-i`` under the attack contract: success means f1 kept y while f2
    moved; attacker_pred is f2's class, transition the latent midpoint."""
    from labelflip.attacks import get_attack, run_attack

    f1, svae, _ = toy()
    x = _x([[2.0, 1.0], [1.5, 2.0], [3.0, 0.5]])
    y = torch.tensor([1, 1, 1])
    settings = {"steps": 300, "lr": 0.05, "eta": 0.1, "k_max": 1.0}
    r = run_attack(
        "type-i", f1, x, y, settings, target=torch.zeros(3, dtype=torch.long),
        resources={"svae": svae},
    )  # fmt: skip
    assert get_attack("type-i").kind == "type-i"
    assert torch.equal(r.adv_pred, y) and torch.equal(r.clean_pred, y)
    assert torch.equal(r.attacker_pred, torch.zeros(3, dtype=torch.long))
    assert r.success.all() and torch.equal(r.target, torch.zeros(3, dtype=torch.long))
    assert r.transition is not None and r.transition.shape == x.shape
    # the transition is the decoded midpoint between the start and the result
    z0, z1 = svae.encode(x)[0], torch.logit(r.x_adv.flatten(1).clamp(1e-4, 1 - 1e-4))
    assert torch.allclose(r.transition.flatten(1), torch.sigmoid(0.5 * (z0 + z1)), atol=1e-3)
    assert (r.l2 > 0.3).all() and (r.forwards == 600).all() and (r.backwards == 300).all()
    cols = r.to_numpy()
    assert cols["attacker_pred"].tolist() == [0, 0, 0]
    # a Type II attack has no attacker verdict: -1 in the records
    t2 = run_attack("fgsm", f1, x, y, {"eps": 0.1})
    assert t2.attacker_pred is None and t2.to_numpy()["attacker_pred"].tolist() == [-1] * 3
    # success is the Type I one: where f1 changed its label, it is a failure
    r2 = run_attack(
        "type-i", f1, x, y, {"steps": 300, "lr": 0.05, "eta": 0.0, "k_max": 0.0},
        target=torch.zeros(3, dtype=torch.long), resources={"svae": svae},
    )  # fmt: skip
    assert torch.equal(r2.success, (r2.adv_pred == y) & (r2.attacker_pred == 0))
    assert not r2.success.all()


def test_registered_type_i_needs_an_svae() -> None:
    from labelflip.attacks import run_attack

    f1, _, _ = toy()
    with pytest.raises(LabelflipError, match=r"needs svae .*\[svae\] table") as e:
        run_attack("type-i", f1, _x([[1.0, 1.0]]), torch.tensor([1]), {"steps": 1})
    assert "\n" not in str(e.value)


def test_registered_latent_type_i_on_the_svae() -> None:
    """``latent-type-i``: eq. 13 on the SVAE, f2 as the auxiliary classifier
    when targeted, judged like ``type-i``."""
    from labelflip.attacks import run_attack

    f1, svae, _ = toy()
    x = _x([[2.0, 1.0]])
    y = torch.tensor([1])
    settings = {"k": 1.0, "eps": 0.5, "steps": 300, "lr": 0.05}
    r = run_attack(
        "latent-type-i", f1, x, y, settings, target=torch.tensor([0]), resources={"svae": svae}
    )
    assert r.success.all() and torch.equal(r.adv_pred, y)
    assert torch.equal(r.attacker_pred, torch.tensor([0]))
    assert r.transition is not None and r.transition.shape == x.shape
    assert (r.iterations == 300).all() and (r.backwards == 300).all()
    # untargeted, nothing pushes f2: z' only moves eps away, f2 stays -> no success
    u = run_attack("latent-type-i", f1, x, y, settings, resources={"svae": svae})
    assert torch.equal(u.adv_pred, y) and torch.equal(u.success, u.attacker_pred != y)


def test_min_confidence_keeps_f1_confident() -> None:
    """With ``min_confidence`` an iterate counts only where f1 gives y at
    least that probability; f1_keeps and success say so too."""
    f1, svae, _ = toy()
    x = _x([[2.0, 1.0], [3.0, 0.5]])
    y = torch.tensor([1, 1])

    def p_y(images: torch.Tensor) -> torch.Tensor:
        return torch.softmax(f1(images), 1)[:, 1]

    assert (p_y(x) > 0.97).all()  # confident at the start
    kw = {"target": 0, "steps": 400, "lr": 0.05, "eta": 0.1, "k_max": 1.0}
    res = type_i(f1, svae, x, y, min_confidence=0.96, **kw)
    assert res.success.all() and (p_y(res.x_adv) >= 0.96).all()
    assert bool((res.z.sum(1) < 0).all())  # f2 moved to the target
    # in this toy f2 only flips once f1 has dropped below 0.97: no iterate counts
    strict = type_i(f1, svae, x, y, min_confidence=0.97, **kw)
    assert torch.equal(strict.f1_pred, y) and not strict.f1_keeps.any()
    assert torch.equal(strict.f1_keeps, p_y(strict.x_adv) >= 0.97)
    assert not strict.success.any()
    # an impossible confidence: no iterate counts, f1_keeps is False though f1's argmax is y
    from labelflip.attacks import run_attack

    r = run_attack(
        "type-i", f1, x[:1], y[:1], {**{k: v for k, v in kw.items() if k != "target"},
        "steps": 5, "min_confidence": 0.999999}, target=torch.tensor([0]),
        resources={"svae": svae},
    )  # fmt: skip
    assert torch.equal(r.adv_pred, y[:1]) and not r.success.any()
    with pytest.raises(LabelflipError, match="min_confidence must be < 1"):
        type_i(f1, svae, x, y, min_confidence=1.0, **kw)
