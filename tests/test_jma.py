"""JMA (JMA paper §V, Algorithm 1): the batched SCA solver against
scipy.optimize.nnls, the constraint matrices on hand-made examples, the
one-shot minimal-norm step on affine models (one-hot, ECOC, multi-label)
against independent references, output encodings, and JMA on a trained model."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.optimize as so
import torch
from torch import nn

from labelflip.attacks import get_attack, jma, run_attack
from labelflip.attacks._nnls import kkt_violation, sca_nnls
from labelflip.attacks.jma import constraints, jma_step, output_jacobian
from labelflip.data import load_dataset
from labelflip.errors import LabelflipError
from labelflip.models import Classifier, OutputEncoding, hadamard_codebook, recipe_for
from labelflip.models.encoding import bits_to_index, index_to_bits, label_set_name
from labelflip.models.training import TrainSettings, train

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------ SCA vs scipy


@pytest.mark.parametrize("k,m,seed", [(3, 5, 0), (9, 20, 1), (15, 15, 2), (16, 40, 3)])
def test_batched_sca_equals_scipy_nnls(k, m, seed):
    """min ‖Mλ − v‖, λ ≥ 0 is the QP ½λᵀ(MᵀM)λ − (Mᵀv)ᵀλ: the batched SCA
    solution equals scipy's active-set NNLS to 1e-6 on every problem."""
    g = torch.Generator().manual_seed(seed)
    batch = 64
    mat = torch.randn(batch, m, k, generator=g, dtype=torch.float64)
    v = torch.randn(batch, m, generator=g, dtype=torch.float64) * 3
    h = mat.transpose(1, 2) @ mat
    b = -(mat.transpose(1, 2) @ v.unsqueeze(-1)).squeeze(-1)
    res = sca_nnls(h, b, rtol=1e-12, max_sweeps=20000)
    ref = np.stack([so.nnls(mat[i].numpy(), v[i].numpy(), maxiter=1000)[0] for i in range(batch)])
    assert bool(res.converged.all())
    np.testing.assert_allclose(res.lam.numpy(), ref, atol=1e-6, rtol=0)
    assert (ref == 0).any() and (ref > 0).any()  # both active and inactive constraints occur


def test_sca_trivial_and_degenerate_problems():
    # b >= 0: λ = 0 is optimal, no sweep needed
    h = torch.eye(3).expand(2, 3, 3).clone()
    res = sca_nnls(h, torch.tensor([[1.0, 0.0, 2.0], [0.5, 0.5, 0.5]]))
    assert res.sweeps == 0 and bool((res.lam == 0).all())
    # a zero row/column (a constraint the Jacobian cannot move) keeps λ_k = 0
    h = torch.tensor([[[2.0, 0.0], [0.0, 0.0]]])
    res = sca_nnls(h, torch.tensor([[-4.0, -1.0]]))
    torch.testing.assert_close(res.lam, torch.tensor([[2.0, 0.0]]))
    # by hand: H = [[2, 1], [1, 2]], b = [-3, 0]: λ = [1.5, 0], μ = [0, 1.5]
    res = sca_nnls(torch.tensor([[[2.0, 1.0], [1.0, 2.0]]]), torch.tensor([[-3.0, 0.0]]))
    torch.testing.assert_close(res.lam, torch.tensor([[1.5, 0.0]]))
    mu = torch.tensor([[0.0, 1.5]])
    assert float(kkt_violation(res.lam, mu)) == 0.0


# ------------------------------------------------------------ constraints by hand


def test_constraints_one_hot_by_hand():
    z = torch.tensor([[1.0, 3.0, 2.0]])
    a, b = constraints(OutputEncoding.onehot(3), z, torch.tensor([2]))
    # rows e_i - e_t for i = 0, 1; b_i = z_t - z_i
    torch.testing.assert_close(a, torch.tensor([[[1.0, 0.0, -1.0], [0.0, 1.0, -1.0]]]))
    torch.testing.assert_close(b, torch.tensor([[1.0, -1.0]]))


def test_constraints_ecoc_by_hand():
    codebook = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, -1.0, 1.0, -1.0], [1.0, 1.0, -1.0, -1.0]])
    z = torch.tensor([[0.5, -1.0, 2.0, 0.0]])
    a, b = constraints(OutputEncoding.ecoc(codebook), z, torch.tensor([1]))
    # z·c = [1.5, 3.5, -2.5]; rows c_0 - c_1, c_2 - c_1; b = [3.5 - 1.5, 3.5 + 2.5]
    torch.testing.assert_close(a, torch.tensor([[[0.0, 2.0, 0.0, 2.0], [0.0, 2.0, -2.0, 0.0]]]))
    torch.testing.assert_close(b, torch.tensor([[2.0, 6.0]]))


def test_constraints_multilabel_by_hand():
    z = torch.tensor([[0.5, -1.0, 2.0]])
    target = bits_to_index(torch.tensor([[1, 1, 0]]))  # labels 0 and 1 present, 2 absent
    a, b = constraints(OutputEncoding.multilabel(3), z, target)
    # s = [+1, +1, -1]; M = diag(-s); e = z * s  (eq. 27-28)
    torch.testing.assert_close(a, torch.diag(torch.tensor([-1.0, -1.0, 1.0])).unsqueeze(0))
    torch.testing.assert_close(b, torch.tensor([[0.5, -1.0, -2.0]]))


# ------------------------------------------------------------------- encodings


def test_hadamard_codebook_and_ecoc_decoding():
    c = hadamard_codebook(10)
    assert c.shape == (10, 16)
    assert bool((c[0] == 1).all())  # first Sylvester row
    torch.testing.assert_close(c @ c.T, 16 * torch.eye(10))  # pairwise orthogonal
    enc = OutputEncoding.ecoc(c)
    assert (enc.num_classes, enc.num_outputs) == (10, 16)
    z = 3.0 * c[[4, 7]]  # logits aligned with codewords 4 and 7
    assert enc.decode(enc.scores(z)).tolist() == [4, 7]
    torch.testing.assert_close(enc.code(torch.tensor([7])), c[[7]])
    with pytest.raises(LabelflipError, match="distinct"):
        OutputEncoding.ecoc(torch.ones(2, 4))
    with pytest.raises(LabelflipError, match="-1 or \\+1"):
        OutputEncoding.ecoc(torch.tensor([[1.0, 0.0], [1.0, -1.0]]))


def test_multilabel_bitmasks_and_names():
    bits = torch.tensor([[1, 0, 1, 0], [0, 0, 0, 0], [1, 1, 1, 1]])
    idx = bits_to_index(bits)
    assert idx.tolist() == [5, 0, 15]
    torch.testing.assert_close(index_to_bits(idx, 4), bits)
    assert label_set_name(5, ["a", "b", "c", "d"]) == "a+c"
    assert label_set_name(0, ["a", "b"]) == "∅"
    enc = OutputEncoding.multilabel(4)
    assert enc.num_classes == 16
    assert enc.decode(torch.tensor([[0.1, -2.0, 3.0, 0.0]])).tolist() == [5]  # z > 0 only
    torch.testing.assert_close(enc.code(torch.tensor([5])), torch.tensor([[1.0, -1, 1, -1]]))


def test_classifier_with_encodings():
    torch.manual_seed(0)
    c = hadamard_codebook(3, 4)
    net = nn.Sequential(nn.Flatten(), nn.Linear(6, 4))
    clf = Classifier(net, num_classes=3, input_shape=(1, 2, 3), encoding=OutputEncoding.ecoc(c))
    x = torch.rand(5, 1, 2, 3)
    z = clf.outputs(x)
    torch.testing.assert_close(clf(x), torch.tanh(z) @ c.T)
    assert clf.predict(x).tolist() == (torch.tanh(z) @ c.T).argmax(1).tolist()
    ml = Classifier(
        net,
        num_classes=4,
        class_names=list("abcd"),
        input_shape=(1, 2, 3),
        encoding=OutputEncoding.multilabel(4),
    )
    assert ml.num_classes == 16 and ml.label_names == tuple("abcd")
    assert ml.class_names[5] == "a+c" and len(ml.class_names) == 16
    assert ml.predict(x).tolist() == bits_to_index(net(x) > 0).tolist()
    with pytest.raises(LabelflipError, match="encoding has 3 classes"):
        Classifier(net, num_classes=4, encoding=OutputEncoding.ecoc(c))


def test_attacks_on_class_scores_refuse_multilabel_models():
    net = nn.Sequential(nn.Flatten(), nn.Linear(6, 4))
    ml = Classifier(
        net, num_classes=4, input_shape=(1, 2, 3), encoding=OutputEncoding.multilabel(4)
    )
    x = torch.rand(2, 1, 2, 3)
    with pytest.raises(LabelflipError, match="multi-label"):
        run_attack("pgd", ml, x, torch.tensor([1, 2]), {"eps": 0.1})


# ------------------------------------------------------------- affine models


def _affine(weight: torch.Tensor, bias: torch.Tensor, encoding: OutputEncoding) -> Classifier:
    n, d = weight.shape
    lin = nn.Linear(d, n).double()
    with torch.no_grad():
        lin.weight.copy_(weight)
        lin.bias.copy_(bias)
    named = n if encoding.kind != "ecoc" else encoding.num_classes
    clf = Classifier(
        nn.Sequential(nn.Flatten(), lin),
        num_classes=named,
        input_shape=(1, 1, d),
        bounds=(-50, 50),
        encoding=encoding,
    )
    return clf.double()


def _min_norm_reference(w: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """min ‖δ‖² s.t. A W δ ≤ b, by scipy's SLSQP (an independent solver)."""
    aw = a @ w
    res = so.minimize(
        lambda v: v @ v,
        np.zeros(w.shape[1]),
        jac=lambda v: 2 * v,
        method="SLSQP",
        constraints=[{"type": "ineq", "fun": lambda v: b - aw @ v, "jac": lambda v: -aw}],
        options={"ftol": 1e-14, "maxiter": 500},
    )
    assert res.success, res.message
    return res.x


@pytest.mark.parametrize("kind", ["onehot", "ecoc", "multilabel"])
def test_one_shot_step_is_the_minimal_norm_perturbation(kind):
    """On an affine model the linearisation is exact: δ* = −JᵀAᵀλ* is the
    minimal-norm perturbation into the (linear) target region (eq. 20–24),
    equal to an independent QP solution, and JMA reaches the target in the
    first loop with δ* (up to the binary search's resolution)."""
    g = torch.Generator().manual_seed({"onehot": 0, "ecoc": 1, "multilabel": 2}[kind])
    d = 30
    if kind == "ecoc":
        enc = OutputEncoding.ecoc(hadamard_codebook(6, 8))
    elif kind == "multilabel":
        enc = OutputEncoding.multilabel(5)
    else:
        enc = OutputEncoding.onehot(6)
    n = enc.num_outputs
    w = torch.randn(n, d, generator=g, dtype=torch.float64)
    bias = torch.randn(n, generator=g, dtype=torch.float64)
    clf = _affine(w, bias, enc)
    x = torch.randn(4, 1, 1, d, generator=g, dtype=torch.float64)
    y = clf.predict(x)
    if kind == "multilabel":
        target = y ^ torch.tensor([0b00101, 0b11000, 0b00001, 0b11111])
    else:
        target = (y + torch.tensor([1, 2, 3, 4])) % enc.num_classes
    z, jac = output_jacobian(clf, x)
    torch.testing.assert_close(jac, w.expand(4, n, d))
    delta = jma_step(enc, z, jac, target, rtol=1e-14, max_sweeps=100000)
    a, b = constraints(enc, z, target)
    for i in range(4):
        ref = _min_norm_reference(w.numpy(), a[i].numpy(), b[i].numpy())
        np.testing.assert_allclose(delta[i].numpy(), ref, rtol=0, atol=1e-6 * np.linalg.norm(ref))
    # the whole attack: one loop (with a margin of 1e-9), then the binary search
    # shrinks the step back onto the boundary: δ*
    res = jma(
        clf,
        x,
        y,
        target=target,
        binary_steps=40,
        max_iterations=60,
        margin=1e-9,
        sca_rtol=1e-14,
        sca_max_sweeps=100000,
    )
    assert bool(res.success.all())
    if kind == "ecoc":
        return  # the decision argmax tanh(z)ᵀc is not linear even when z is
    assert res.iterations.tolist() == [40] * 4  # (v - 1) + n_bs with v = 1
    got = (res.x_adv - x).flatten(1)
    rel = (got - delta).norm(dim=1) / delta.norm(dim=1)
    assert float(rel.max()) < 1e-4


def test_jma_needs_targets_and_exits_for_samples_already_at_target():
    enc = OutputEncoding.onehot(3)
    clf = _affine(torch.eye(3, 4, dtype=torch.float64), torch.zeros(3, dtype=torch.float64), enc)
    x = torch.tensor([[3.0, 0.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0]], dtype=torch.float64)
    x = x.view(2, 1, 1, 4)
    y = clf.predict(x)
    with pytest.raises(LabelflipError, match="targeted"):
        jma(clf, x, y)
    res = jma(clf, x, y, target=torch.tensor([0, 2]))
    assert res.success.tolist() == [True, True]
    assert res.iterations[0] == 0 and bool((res.x_adv[0] == x[0]).all())
    assert res.iterations[1] > 0
    assert bool((x[1] == torch.tensor([0.0, 2.0, 0.0, 0.0]).view(1, 1, 4)).all())  # untouched


def test_registry_entry():
    spec = get_attack("jma")
    assert spec.default_target == "random"
    assert set(spec.encodings) == {"onehot", "ecoc", "multilabel"}
    with pytest.raises(LabelflipError, match="binary_steps"):
        run_attack("jma", None, None, None, {"binary_steps": 10, "max_iterations": 10})


# ---------------------------------------------------------------- trained model


@pytest.fixture(scope="module")
def digits_model() -> Classifier:
    train_set = load_dataset("digits", "train")
    settings = TrainSettings.from_recipe(recipe_for("digits-cnn"), epochs=5)
    return train("digits-cnn", train_set, settings, progress=False).classifier


def test_jma_reaches_random_targets_on_a_trained_model(digits_model):
    test_set = load_dataset("digits", "test")
    x, y = test_set.x[:120], test_set.y[:120]
    g = torch.Generator().manual_seed(0)
    target = (y + torch.randint(1, 10, (120,), generator=g)) % 10
    res = jma(digits_model, x, y, target=target, eps=0.5)
    assert float(res.success.double().mean()) == 1.0
    again = jma(digits_model, x, y, target=target, eps=0.5)
    assert torch.equal(res.x_adv, again.x_adv)
    # every sample: iterations = (v - 1) + 6 >= 6, Jacobian passes = 10 per loop
    assert int(res.iterations.min()) >= 6
    assert bool((res.backwards % 10 == 0).all())
    # the binary search keeps points close to the boundary: smaller than the one-shot step
    ok = res.success
    assert float(res.l2[ok].median()) < 2.0
