"""The torchattacks adapter (``torchattacks`` / ``torchattacks:<Attack>``):
identical to torchattacks run directly on the same model, inputs and seed;
pass counts against the algorithm and against an independent count of the
model's calls; targets (and torchattacks' targeted-FAB row mix-up worked
around); determinism without touching the global RNG; one-line errors; the
install hint. The property table in test_attacks.py covers it too."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from labelflip.attacks import get_attack, run_attack
from labelflip.data import load_dataset
from labelflip.errors import LabelflipError
from labelflip.models import Classifier, recipe_for
from labelflip.models.training import TrainSettings, train

ta = pytest.importorskip(
    "torchattacks", reason="torchattacks not installed (pip install --no-deps torchattacks)"
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup():
    train_set = load_dataset("digits", "train")
    test_set = load_dataset("digits", "test")
    settings = TrainSettings.from_recipe(recipe_for("digits-cnn"), epochs=5)
    clf = train("digits-cnn", train_set, settings, progress=False).classifier
    return clf, test_set.x[:40].clone(), test_set.y[:40].clone()


def _gen(seed: int = 1) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _seed(seed: int = 1) -> int:
    """The adapter's documented rule: one draw of the generator is the seed."""
    return int(torch.randint(2**62, (1,), generator=_gen(seed)))


def _direct(clf, x, y, attack, eps, options, seed):
    """torchattacks itself, on the same Classifier (which takes [0, 1] inputs
    and normalises inside), seeded the same way."""
    kwargs = dict(options)
    if eps is not None:
        kwargs["eps"] = eps
    if attack in ("APGDT", "FAB", "AutoAttack"):
        kwargs["n_classes"] = clf.num_classes
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return getattr(ta, attack)(clf, seed=seed, **kwargs)(x, y)


@pytest.mark.parametrize(
    "attack,eps,options",
    [
        ("APGD", 0.1, {"steps": 10}),
        ("APGD", 1.0, {"norm": "L2", "steps": 10, "loss": "dlr"}),
        ("APGDT", 0.1, {"steps": 10}),
        ("FAB", 0.3, {"steps": 10}),
        ("FAB", 1.5, {"norm": "L2", "steps": 10}),
        ("Square", 0.1, {"n_queries": 100}),
        ("AutoAttack", 0.3, {}),
    ],
)
def test_equals_torchattacks_run_directly(setup, attack, eps, options):
    clf, x, y = setup
    s = {"eps": eps, "options": options}
    r = run_attack(f"torchattacks:{attack}", clf, x, y, s, generator=_gen())
    direct = _direct(clf, x, y, attack, eps, options, _seed())
    assert torch.equal(r.x_adv, direct)
    with torch.no_grad():
        assert torch.equal(r.success, clf(direct).argmax(1) != y)
    # every one of these attacks keeps to its budget
    norm = r.l2 if options.get("norm") == "L2" else r.linf
    assert float(norm.max()) <= eps + 1e-6
    assert r.iterations.tolist() == [0] * len(x)  # torchattacks does not report them


def test_shorthand_equals_the_attack_setting(setup):
    clf, x, y = setup
    a = run_attack("torchattacks:Square", clf, x, y, {"eps": 0.1, "options": {"n_queries": 20}})
    b = run_attack(
        "torchattacks", clf, x, y, {"attack": "Square", "eps": 0.1, "options": {"n_queries": 20}}
    )
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.forwards, b.forwards)
    assert get_attack("torchattacks:Square").default_settings().attack == "Square"


def test_generator_drives_the_randomness_and_the_global_rng_is_untouched(setup):
    clf, x, y = setup
    s = {"eps": 0.1, "options": {"n_queries": 30}}
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a = run_attack("torchattacks:Square", clf, x, y, s, generator=_gen(1))
    b = run_attack("torchattacks:Square", clf, x, y, s, generator=_gen(1))
    c = run_attack("torchattacks:Square", clf, x, y, s, generator=_gen(2))
    assert torch.equal(torch.random.get_rng_state(), before)
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.forwards, b.forwards)
    assert not torch.equal(a.x_adv, c.x_adv)


# ------------------------------------------------------------------ pass counts


class _RowCounter:
    """Counts the rows of every call of a module (a forward hook): the total
    number of sample-forwards, independent of the adapter's own wrapper."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.rows = 0
        self.handle = module.register_forward_hook(self)

    def __call__(self, module, inputs, output) -> None:
        self.rows += len(inputs[0])


def test_apgd_counts_follow_the_algorithm(setup):
    # APGD (Croce & Hein 2020, Algorithm 1) as torchattacks runs it: one
    # evaluation of the batch to find the correctly classified samples, then
    # for those one gradient at the start and one per step; samples the model
    # already gets wrong are not attacked.
    clf, x, y = setup
    steps = 7
    r = run_attack("torchattacks:APGD", clf, x, y, {"eps": 0.1, "options": {"steps": steps}})
    correct = r.clean_pred == y
    assert (~correct).any()  # the batch has both kinds
    expected_fw = torch.where(correct, 2 + steps, 1)
    expected_bw = torch.where(correct, 1 + steps, 0)
    assert torch.equal(r.forwards, expected_fw) and torch.equal(r.backwards, expected_bw)


@pytest.mark.parametrize(
    "attack,settings",
    [
        ("Square", {"eps": 0.1, "options": {"n_queries": 100}}),
        ("FAB", {"eps": 0.3, "options": {"steps": 10}}),
        ("AutoAttack", {"eps": 0.2}),
    ],
)
def test_counts_add_up_to_the_model_calls(setup, attack, settings):
    # these attacks call the model on shrinking sub-batches; each row is
    # attributed to one sample, so the totals equal the rows the model saw
    clf, x, y = setup
    hook = _RowCounter(clf.model)
    try:
        r = run_attack(f"torchattacks:{attack}", clf, x, y, settings)
    finally:
        hook.handle.remove()
    clean_and_adv = 2 * len(x)  # finalize's own evaluations are not attack work
    assert int(r.forwards.sum()) == hook.rows - clean_and_adv
    assert (r.backwards <= r.forwards).all()
    if attack == "Square":  # gradient-free
        assert int(r.backwards.sum()) == 0
    # a sample fooled early stops being queried: fewer passes than one still resisting
    fooled, resisting = r.forwards[r.success], r.forwards[~r.success & (r.clean_pred == y)]
    if len(fooled) and len(resisting):
        assert fooled.float().mean() < resisting.float().mean()


def test_attribution_of_rows_to_samples(setup):
    from labelflip.attacks.torchattacks_adapter import _CountingModel

    clf, x, _ = setup
    fw, bw = torch.zeros(len(x), dtype=torch.long), torch.zeros(len(x), dtype=torch.long)
    counter = _CountingModel(clf, x, fw, bw)
    rows = torch.tensor([3, 5, 17, 39])
    noise = 0.1 * (2 * torch.rand(4, *x.shape[1:], generator=_gen(4)) - 1)
    assert torch.equal(counter.origins((x[rows] + noise).clamp(0, 1)), rows)
    # duplicates: the row goes to one of them, the total stays right
    dup = torch.cat([x[:3], x[:1]])
    counter = _CountingModel(clf, dup, torch.zeros(4, dtype=torch.long), bw[:4].clone())
    assert counter.origins(dup[1:3]).tolist() == [1, 2]
    assert int(counter.origins(dup[:1])) in (0, 3)


# ---------------------------------------------------------------------- targets


def test_untargeted_attacks_refuse_a_target(setup):
    clf, x, y = setup
    with pytest.raises(LabelflipError, match="APGD does not support a target") as info:
        run_attack("torchattacks:APGD", clf, x, y, {"eps": 0.1}, target=(y + 1) % 10)
    assert "\n" not in str(info.value)


def test_targeted_fab_runs_on_the_correctly_classified_samples(setup):
    # torchattacks' targeted FAB indexes the full batch's targets with the
    # positions of its correctly classified sub-batch; run directly on a batch
    # with misclassified samples it aims at the wrong targets (chance level)
    clf, x, y = setup
    wrong = y.clone()
    wrong[:5] = (clf.predict(x[:5]) + 1) % 10  # the model disagrees with these labels
    target = (wrong + 1 + torch.randint(0, 9, y.shape, generator=_gen(3))) % 10
    s = {"eps": 1.0, "options": {"steps": 20}}
    r = run_attack("torchattacks:FAB", clf, x, wrong, s, target=target)
    assert torch.equal(r.x_adv[:5], x[:5])  # returned unchanged
    assert r.success[5:].float().mean() > 0.35  # chance is ~0.1-0.2
    with pytest.raises(LabelflipError, match="n_restarts = 1"):
        run_attack("torchattacks:FAB", clf, x, y, {"options": {"n_restarts": 2}}, target=target)


# ----------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "name,settings,match",
    [
        ("torchattacks:APDG", {}, "unknown torchattacks attack 'APDG'; did you mean 'APGD'"),
        ("torchattacks", {"attack": "Sqare"}, "did you mean 'Square'"),
        ("torchattacks:APGD", {"options": {"step": 3}}, "unknown option 'step'.*'steps'"),
        ("torchattacks:APGD", {"options": {"seed": 3}}, "'seed' is set by labelflip"),
        ("torchattacks:FAB", {"options": {"n_classes": 3}}, "'n_classes' is set by labelflip"),
        ("torchattacks:APGD", {"options": {"eps": 0.1}}, "use the eps setting"),
        ("torchattacks:DeepFool", {"eps": 0.1}, "DeepFool takes no eps"),
        ("torchattacks:APGD", {"eps": -0.1}, "eps must be >= 0"),
        ("torchattacks:APGD", {"options": [1]}, "must be a mapping"),
    ],
)
def test_bad_settings_raise_one_line(name, settings, match):
    with pytest.raises(LabelflipError, match=match) as info:
        get_attack(name).settings(settings)
    assert "\n" not in str(info.value)


def test_bad_models_and_inputs(setup):
    clf, x, y = setup
    wide = Classifier(clf.model, num_classes=10, input_shape=(1, 8, 8), bounds=(-1, 1))
    with pytest.raises(LabelflipError, match=r"inputs in \[0, 1\]"):
        run_attack("torchattacks:APGD", wide, x, y)
    with pytest.raises(LabelflipError, match="exceeds the input range"):
        run_attack("torchattacks:APGD", clf, x, y, {"eps": 1.5})
    with pytest.raises(LabelflipError, match="APGD failed: AssertionError"):
        run_attack("torchattacks:APGD", clf, x, y, {"options": {"norm": "L1"}})


def test_missing_torchattacks_gives_the_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchattacks", None)
    with pytest.raises(LabelflipError, match="pip install --no-deps torchattacks") as info:
        get_attack("torchattacks").settings({"attack": "APGD"})
    assert "\n" not in str(info.value)


def test_torchattacks_imports_without_torchvision():
    # torchattacks declares torchvision but is installed with --no-deps: it
    # must import (and attack) with torchvision unavailable
    code = (
        "import sys; sys.modules['torchvision'] = None; import torch, torchattacks; "
        "m = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3)); "
        "torchattacks.APGD(m, steps=2)(torch.rand(2, 1, 2, 2), torch.tensor([0, 1]))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
