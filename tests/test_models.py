"""Architectures, the Classifier wrapper, and checkpoint I/O."""

from __future__ import annotations

import json
import pickle
import warnings

import pytest
import torch
from torch import nn

from labelflip.errors import LabelflipError
from labelflip.models import (
    ARCHITECTURES,
    CheckpointMeta,
    Classifier,
    build_model,
    import_state_dict,
    load_checkpoint,
    read_meta,
    save_checkpoint,
)
from labelflip.models.checkpoint import checkpoint_paths


@pytest.mark.parametrize(
    "arch,shape",
    [
        ("cw-mnist", (1, 28, 28)),
        ("cw-mnist", (3, 32, 32)),
        ("cw-cifar", (3, 32, 32)),
        ("cw-cifar", (1, 28, 28)),
        ("preact-resnet18", (3, 32, 32)),
        ("preact-resnet18", (1, 28, 28)),
        ("digits-cnn", (1, 8, 8)),
        ("digits-cnn", (3, 32, 32)),
        ("mlp-mnist", (1, 28, 28)),
        ("mlp-mnist", (1, 8, 8)),
    ],
)
def test_every_architecture_fits_any_dataset_shape(arch, shape):
    model = build_model(arch, shape, 7).eval()
    out = model(torch.rand(2, *shape))
    assert out.shape == (2, 7)


def test_registry_lists_the_reference_architectures():
    assert set(ARCHITECTURES) == {
        "cw-mnist",
        "cw-cifar",
        "preact-resnet18",
        "digits-cnn",
        "mlp-mnist",
    }


def test_cw_mnist_matches_carlini_wagner_table_1():
    model = build_model("cw-mnist", (1, 28, 28), 10)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    fcs = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [c.out_channels for c in convs] == [32, 32, 64, 64]
    assert all(c.kernel_size == (3, 3) for c in convs)
    assert [f.out_features for f in fcs] == [200, 200, 10]
    assert fcs[0].in_features == 64 * 4 * 4
    assert sum(isinstance(m, nn.Dropout) and m.p == 0.5 for m in model.modules()) == 1
    # conv: 320 + 9248 + 18496 + 36928; fc: 205000 + 40200 + 2010 (hand-computed)
    assert sum(p.numel() for p in model.parameters()) == 312_202


def test_cw_cifar_layer_widths():
    model = build_model("cw-cifar", (3, 32, 32), 10)
    convs = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
    fcs = [m.out_features for m in model.modules() if isinstance(m, nn.Linear)]
    assert convs == [64, 64, 128, 128] and fcs == [256, 256, 10]


def test_preact_resnet18_has_18_weight_layers():
    model = build_model("preact-resnet18", (3, 32, 32), 10)
    convs3 = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(convs3) + len(linears) == 18  # stem + 16 block convs + fc; 1x1 shortcuts excluded


def test_too_small_input_is_a_clear_error():
    with pytest.raises(LabelflipError, match="at least 12x12"):
        build_model("cw-mnist", (1, 8, 8), 10)


def test_unknown_architecture_suggests_a_name():
    with pytest.raises(LabelflipError, match="did you mean 'cw-mnist'"):
        build_model("cw-mnsit", (1, 28, 28), 10)


# ------------------------------------------------------------------ Classifier


class Identity(nn.Module):
    def forward(self, x):
        return x.flatten(1)


def test_classifier_normalises_inside():
    clf = Classifier(
        Identity(), num_classes=2, input_shape=(2, 1, 1), mean=[0.5, 0.25], std=[0.5, 0.25]
    )
    x = torch.tensor([[[[1.0]], [[0.5]]]])
    assert torch.allclose(clf(x), torch.tensor([[1.0, 1.0]]))


def test_classifier_gradients_are_in_input_units():
    clf = Classifier(Identity(), num_classes=1, input_shape=(1, 1, 1), mean=[0.5], std=[0.25])
    x = torch.tensor([[[[0.75]]]], requires_grad=True)
    clf(x).sum().backward()
    assert x.grad.item() == pytest.approx(4.0)


def test_classifier_bounds_and_nan_checks():
    clf = Classifier(Identity(), num_classes=1, input_shape=(1, 1, 1), bounds=(0, 1))
    clf.check_inputs(torch.tensor([[[[0.0]]], [[[1.0]]]]))
    with pytest.raises(LabelflipError, match=r"outside the model's bounds \[0, 1\]"):
        clf.check_inputs(torch.tensor([[[[1.5]]]]))
    with pytest.raises(LabelflipError, match="NaN"):
        clf.check_inputs(torch.tensor([[[[float("nan")]]]]))
    assert clf.clip(torch.tensor([-1.0, 0.5, 2.0])).tolist() == [0.0, 0.5, 1.0]
    with pytest.raises(LabelflipError, match="lower < upper"):
        Classifier(Identity(), num_classes=1, bounds=(1, 0))


def test_classifier_rejects_wrong_input_shape():
    clf = Classifier(Identity(), num_classes=1, input_shape=(1, 28, 28))
    with pytest.raises(LabelflipError, match=r"input shape \(3, 32, 32\) does not match"):
        clf(torch.zeros(1, 3, 32, 32))


def test_classifier_forces_eval_mode():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 3))
    clf = Classifier(model, num_classes=3, input_shape=(1, 2, 2))
    x = torch.rand(5, 1, 2, 2)
    assert torch.equal(clf(x), clf(x))  # dropout off
    with pytest.warns(UserWarning, match="stays in eval mode"):
        clf.train()
    assert not clf.training and not model.training
    model.train()  # somebody flips the inner model
    with pytest.warns(UserWarning, match="switched to eval"):
        a = clf(x)
    assert not model.training and torch.equal(a, clf(x))


def test_classifier_class_names_must_match_count():
    with pytest.raises(LabelflipError, match="3 class names"):
        Classifier(Identity(), num_classes=2, class_names=["a", "b", "c"])
    assert Classifier(Identity(), num_classes=2).class_names == ("0", "1")


# ------------------------------------------------------------------ checkpoints


def _meta(arch="digits-cnn", shape=(1, 8, 8), k=10) -> CheckpointMeta:
    return CheckpointMeta(
        architecture=arch,
        dataset="digits",
        class_names=[str(i) for i in range(k)],
        input_shape=list(shape),
        mean=[0.3],
        std=[0.4],
        clean_test_accuracy=0.5,
        seed=3,
    )


def _saved(tmp_path, arch="digits-cnn", shape=(1, 8, 8)):
    torch.manual_seed(0)
    model = build_model(arch, shape, 10).eval()
    path = save_checkpoint(tmp_path / "m", model, _meta(arch, shape))
    return model, path


def test_checkpoint_round_trip(tmp_path):
    model, path = _saved(tmp_path)
    assert path.name == "m.safetensors" and (tmp_path / "m.json").is_file()
    clf, meta = load_checkpoint(path)
    x = torch.rand(4, 1, 8, 8)
    expected = model((x - 0.3) / 0.4)
    assert torch.allclose(clf(x), expected, atol=1e-6)
    assert meta.seed == 3 and meta.clean_test_accuracy == 0.5
    assert meta.versions["torch"] == torch.__version__
    assert len(meta.weights_sha256) == 64
    # the stem and the sidecar name load the same checkpoint
    assert load_checkpoint(tmp_path / "m")[1].weights_sha256 == meta.weights_sha256
    assert read_meta(tmp_path / "m.json").architecture == "digits-cnn"


def test_modified_weights_fail_the_hash_check(tmp_path):
    _, path = _saved(tmp_path)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(LabelflipError, match="do not match the SHA-256"):
        load_checkpoint(path)


def test_checkpoint_for_another_architecture_is_refused(tmp_path):
    _, path = _saved(tmp_path)
    sidecar = checkpoint_paths(path)[1]
    meta = json.loads(sidecar.read_text())
    meta["architecture"] = "cw-mnist"
    meta["input_shape"] = [1, 28, 28]
    sidecar.write_text(json.dumps(meta))
    with pytest.raises(LabelflipError, match="does not fit architecture 'cw-mnist'"):
        load_checkpoint(path)


def test_checkpoint_with_other_class_count_is_refused(tmp_path):
    _, path = _saved(tmp_path)
    sidecar = checkpoint_paths(path)[1]
    meta = json.loads(sidecar.read_text())
    meta["class_names"] = ["a", "b", "c"]
    sidecar.write_text(json.dumps(meta))
    with pytest.raises(LabelflipError, match="3 classes"):
        load_checkpoint(path)


def test_missing_or_broken_sidecar(tmp_path):
    _, path = _saved(tmp_path)
    sidecar = checkpoint_paths(path)[1]
    sidecar.write_text("{not json")
    with pytest.raises(LabelflipError, match="not valid JSON"):
        load_checkpoint(path)
    sidecar.unlink()
    with pytest.raises(LabelflipError, match="sidecar not found"):
        load_checkpoint(path)


def test_pickle_checkpoint_is_refused_with_a_hint(tmp_path):
    p = tmp_path / "model.pt"
    torch.save(build_model("digits-cnn", (1, 8, 8), 10).state_dict(), p)
    with pytest.raises(LabelflipError, match="import-weights"):
        load_checkpoint(p)


class _Evil:
    marker = ""

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_import_refuses_a_pickle_that_would_run_code(tmp_path):
    marker = tmp_path / "pwned"
    evil = _Evil()
    evil.marker = str(marker)
    p = tmp_path / "evil.pt"
    with open(p, "wb") as f:
        pickle.dump({"conv.weight": evil}, f)
    with pytest.raises(LabelflipError, match="refusing to load"):
        import_state_dict(p)
    assert not marker.exists()
    # the same payload inside torch.save's zip container is refused too
    p2 = tmp_path / "evil2.pt"
    torch.save({"w": evil}, p2)
    marker.unlink(missing_ok=True)
    with pytest.raises(LabelflipError, match="refusing to load"):
        import_state_dict(p2)
    assert not marker.exists()


def test_import_unwraps_common_containers(tmp_path):
    model = build_model("digits-cnn", (1, 8, 8), 10)
    sd = model.state_dict()
    p = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3}, p)
    loaded = import_state_dict(p)
    assert set(loaded) == set(sd) and all(torch.equal(loaded[k], sd[k]) for k in sd)


USER_MODULE = """
from torch import nn

def build(input_shape, num_classes):
    c, h, w = input_shape
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, num_classes))

def not_a_model():
    return 42
"""


def test_user_model_module_function(tmp_path, monkeypatch):
    (tmp_path / "my_models.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    model = build_model("my_models:build", (1, 8, 8), 4)
    assert model(torch.rand(3, 1, 8, 8)).shape == (3, 4)
    with pytest.raises(LabelflipError, match="not an nn.Module"):
        build_model("my_models:not_a_model", (1, 8, 8), 4)
    with pytest.raises(LabelflipError, match="cannot import user model"):
        build_model("my_models:missing", (1, 8, 8), 4)
    meta = _meta("my_models:build", (1, 8, 8), 4)
    path = save_checkpoint(tmp_path / "user", model, meta)
    with pytest.raises(LabelflipError, match="pass --arch my_models:build"):
        load_checkpoint(path)
    clf, _ = load_checkpoint(path, trust_code="my_models:build")
    assert clf.num_classes == 4


def test_save_is_atomic_no_temp_files_left(tmp_path):
    _saved(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.safetensors"]


def test_no_warnings_on_normal_use(tmp_path):
    _, path = _saved(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clf, _ = load_checkpoint(path)
        clf(torch.rand(1, 1, 8, 8))
