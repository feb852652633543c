"""``labelflip import-weights``: ``--key-map auto`` (a state dict of the same
network under other names imports with identical logits; ambiguous maps are
refused with both key lists), the normalisation line, and the refusal of a
pickled model."""

from __future__ import annotations

import re
from collections import OrderedDict

import pytest
import torch
from test_cli import assert_one_line_error, run_cli
from torch import nn

from labelflip.data import load_dataset
from labelflip.errors import LabelflipError
from labelflip.models import build_model, load_checkpoint
from labelflip.models.checkpoint import map_state_keys

# our digits-cnn keys -> the names a hand-written net would give them
DIGITS_NAMES = {
    "features.0": "conv1",
    "features.2": "conv2",
    "classifier.1": "fc1",
    "classifier.4": "fc2",
}


def _renamed(state: dict, names: dict) -> OrderedDict:
    out = OrderedDict()
    for k, v in state.items():
        module, _, kind = k.rpartition(".")
        out[f"{names[module]}.{kind}"] = v.clone()
    return out


@pytest.fixture(scope="module")
def digits_cnn():
    torch.manual_seed(0)
    return build_model("digits-cnn", (1, 8, 8), 10).eval()


def test_renamed_state_dict_imports_with_identical_logits(digits_cnn, tmp_path):
    pt = tmp_path / "net.pt"
    torch.save(_renamed(digits_cnn.state_dict(), DIGITS_NAMES), pt)
    out = tmp_path / "imported"
    proc = run_cli("import-weights", pt, "--arch", "digits-cnn", "--dataset", "digits",
                   "--key-map", "auto", "--out", out)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "key map: 8 of 8 keys renamed in order" in proc.stdout
    assert "conv1.weight -> features.0.weight" in proc.stdout
    clf, meta = load_checkpoint(out.with_suffix(".safetensors"))
    x = load_dataset("digits", "test").x[:64]
    with torch.no_grad():
        # no --mean/--std: the identity normalisation, so the raw net's logits
        assert meta.mean == [0.0] and meta.std == [1.0]
        assert torch.equal(clf(x), digits_cnn(x))


def test_without_key_map_the_error_suggests_it(digits_cnn, tmp_path):
    pt = tmp_path / "net.pt"
    torch.save(_renamed(digits_cnn.state_dict(), DIGITS_NAMES), pt)
    proc = run_cli("import-weights", pt, "--arch", "digits-cnn", "--dataset", "digits",
                   "--out", tmp_path / "x")  # fmt: skip
    assert_one_line_error(proc, "Missing key(s)", "--key-map auto")


def test_ambiguous_map_is_refused_with_both_key_lists(digits_cnn, tmp_path):
    state = _renamed(digits_cnn.state_dict(), DIGITS_NAMES)
    del state["fc2.bias"]
    pt = tmp_path / "net.pt"
    torch.save(state, pt)
    proc = run_cli("import-weights", pt, "--arch", "digits-cnn", "--dataset", "digits",
                   "--key-map", "auto", "--out", tmp_path / "x")  # fmt: skip
    assert_one_line_error(
        proc,
        "one to one in order (7 tensors against 8)",
        "conv1.weight [32,1,3,3]",  # theirs
        "features.0.weight [32,1,3,3]",  # ours
    )
    assert not (tmp_path / "x.safetensors").exists()


@pytest.mark.parametrize("mean,std,fragments", [
    ([], [], ["mean [0.0], std [1.0] (none given: raw [0, 1] inputs)", "pass its --mean"]),
    (["0.5"], ["0.25"], ["mean [0.5], std [0.25] (from --mean and --std)"]),
])  # fmt: skip
def test_the_normalisation_assumed_is_printed(digits_cnn, tmp_path, mean, std, fragments):
    pt = tmp_path / "net.pt"
    torch.save(digits_cnn.state_dict(), pt)
    flags = ([["--mean", *mean]] if mean else []) + ([["--std", *std]] if std else [])
    proc = run_cli("import-weights", pt, "--arch", "digits-cnn", "--dataset", "digits",
                   *sum(flags, []), "--out", tmp_path / "x")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (line,) = [ln for ln in proc.stdout.splitlines() if ln.startswith("normalisation:")]
    for fragment in fragments:
        assert fragment in line
    if mean:
        assert "--mean M" not in line  # nothing left to suggest


class _Pickled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(2, 2)


def test_a_pickled_model_is_refused_with_the_fix(tmp_path):
    pt = tmp_path / "model.pt"
    torch.save(_Pickled(), pt)
    proc = run_cli("import-weights", pt, "--arch", "digits-cnn", "--dataset", "digits",
                   "--out", tmp_path / "x")  # fmt: skip
    assert_one_line_error(proc, "refusing to load", "save `model.state_dict()` instead")


# ------------------------------------------------------------- map_state_keys


def _cw_mnist_names(state: dict) -> OrderedDict:
    """The C&W MNIST net as its authors' code names it: conv1..conv4, fc1..fc3."""
    modules = list(dict.fromkeys(k.rpartition(".")[0] for k in state))
    names = [f"conv{i}" for i in range(1, 5)] + [f"fc{i}" for i in range(1, 4)]
    return _renamed(state, dict(zip(modules, names, strict=True)))


def test_cw_mnist_net_saved_as_conv_fc_maps_in_order():
    torch.manual_seed(1)
    ours = build_model("cw-mnist", (1, 28, 28), 10).eval()
    theirs = _cw_mnist_names(ours.state_dict())
    assert list(theirs)[:2] == ["conv1.weight", "conv1.bias"] and "fc3.bias" in theirs
    fresh = build_model("cw-mnist", (1, 28, 28), 10).eval()
    mapped, renamed = map_state_keys(theirs, fresh.state_dict(), what="w", arch="cw-mnist")
    assert len(renamed) == 14 and renamed[0] == ("conv1.weight", "features.0.weight")
    fresh.load_state_dict(mapped, strict=True)
    x = torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(fresh(x), ours(x))


def test_matching_keys_are_left_alone(digits_cnn):
    state = digits_cnn.state_dict()
    mapped, renamed = map_state_keys(state, state, what="w", arch="digits-cnn")
    assert renamed == [] and list(mapped) == list(state)
    shuffled = OrderedDict(reversed(list(state.items())))  # the names decide, not the order
    mapped, renamed = map_state_keys(shuffled, state, what="w", arch="digits-cnn")
    assert renamed == [] and all(mapped[k] is state[k] for k in state)


def _tensors(spec: list[tuple[str, tuple[int, ...]]]) -> OrderedDict:
    return OrderedDict((k, torch.zeros(shape)) for k, shape in spec)


@pytest.mark.parametrize(
    "theirs,match",
    [
        # a batch norm saved in alphabetical order: the shapes line up, the kinds do not
        (
            [("bn.bias", (4,)), ("bn.running_mean", (4,)), ("bn.running_var", (4,)),
             ("bn.weight", (4,)), ("lin.weight", (3, 4))],
            "'bn.bias' is a bias and pairs with 'norm.weight', a weight",
        ),
        # the layers in another order
        (
            [("fc.weight", (3, 4)), ("bn.weight", (4,)), ("bn.bias", (4,)),
             ("bn.running_mean", (4,)), ("bn.running_var", (4,))],
            "'fc.weight' [3,4] pairs with 'norm.weight' [4]",
        ),
        (
            [("bn.weight", (4,)), ("bn.bias", (4,)), ("bn.running_mean", (4,)),
             ("bn.running_var", (4,)), ("fc.bias", (3, 4))],
            "'fc.bias' is a bias and pairs with 'lin.weight', a weight",
        ),
        ([("w", (4,))] * 1, "1 tensors against 5"),
    ],
)  # fmt: skip
def test_ambiguous_maps_are_refused(theirs, match):
    ours = _tensors([("norm.weight", (4,)), ("norm.bias", (4,)), ("norm.running_mean", (4,)),
                     ("norm.running_var", (4,)), ("lin.weight", (3, 4))])  # fmt: skip
    with pytest.raises(LabelflipError, match=re.escape(match)) as info:
        map_state_keys(_tensors(theirs), ours, what="weights x.pt", arch="net")
    message = str(info.value)
    assert "\n" not in message
    assert "weights x.pt has" in message and "'net' has 5 (norm.weight [4]" in message


def test_a_name_of_ours_paired_with_another_is_refused():
    ours = _tensors([("a.weight", (2, 2)), ("b.weight", (2, 2))])
    theirs = _tensors([("b.weight", (2, 2)), ("c.weight", (2, 2))])
    with pytest.raises(LabelflipError, match="'b.weight' is a name of 'net' but pairs with"):
        map_state_keys(theirs, ours, what="w", arch="net")
    # names without a kind map by shape and order alone
    mapped, _ = map_state_keys(_tensors([("w1", (2, 2)), ("w2", (2, 2))]), ours, what="w", arch="n")
    assert list(mapped) == ["a.weight", "b.weight"]
