"""SVAE (Type I paper §III-A, Algorithm 1): losses, training, determinism, checkpoints."""

from __future__ import annotations

import json

import pytest
import torch

from labelflip.data import Dataset, load_dataset
from labelflip.errors import LabelflipError
from labelflip.models.svae import (
    SVAEConfig,
    SVAESettings,
    build_svae,
    load_svae,
    save_svae,
    stage1_losses,
    stage2_loss,
    svae_accuracy,
    train_svae,
)

TINY = SVAESettings(
    epochs=2, dis_epochs=1, batch_size=64, lr=1e-3, dis_lr=1e-3, latent_dim=4, hidden=32
)


@pytest.fixture(scope="module")
def digits() -> Dataset:
    ds = load_dataset("digits", "train")
    return Dataset(ds.name, ds.split, ds.x[:256].clone(), ds.y[:256].clone(), ds.class_names)


def _config(ds: Dataset) -> SVAEConfig:
    return SVAEConfig(tuple(ds.input_shape), ds.num_classes, latent_dim=4, hidden=32)


def test_stage1_losses_finite_and_decreasing(digits: Dataset) -> None:
    torch.manual_seed(0)
    svae = build_svae(_config(digits)).train()
    x, y = digits.x[:128], digits.y[:128]
    params = [*svae.encoder.parameters(), *svae.decoder.parameters(), *svae.classifier.parameters()]
    opt = torch.optim.Adam(params, lr=3e-3)
    first = None
    for _ in range(30):
        losses = stage1_losses(svae, x, y, torch.Generator().manual_seed(1))
        assert all(torch.isfinite(v) for v in losses.values())
        assert all(float(losses[k].detach()) > 0 for k in ("kl", "rec", "cls"))
        first = first if first is not None else {k: float(v.detach()) for k, v in losses.items()}
        opt.zero_grad()
        losses["total"].backward()
        opt.step()
    assert float(losses["total"].detach()) < first["total"]
    assert float(losses["cls"].detach()) < first["cls"]


def test_stage2_discriminator_learns(digits: Dataset) -> None:
    torch.manual_seed(0)
    svae = build_svae(_config(digits))
    # make q(z|x) clearly different from N(0, I): shift the means
    with torch.no_grad():
        svae.encoder[1][-1].bias[:4] += 3.0
    enc_before = [p.clone() for p in svae.encoder.parameters()]
    opt = torch.optim.Adam(svae.discriminator.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    first = float(stage2_loss(svae, digits.x[:128], gen).detach())
    for _ in range(40):
        loss = stage2_loss(svae, digits.x[:128], gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < first
    assert all(
        torch.equal(a, b) for a, b in zip(enc_before, svae.encoder.parameters(), strict=True)
    )


def test_train_svae_deterministic_and_rng_untouched(digits: Dataset) -> None:
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    a = train_svae(digits, TINY, progress=False)
    assert torch.equal(torch.random.get_rng_state(), state)
    b = train_svae(digits, TINY, progress=False)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)
    c = train_svae(digits, SVAESettings(**{**TINY.__dict__, "seed": 1}), progress=False)
    assert not torch.equal(a.decoder[0].weight, c.decoder[0].weight)
    x = a.decode(torch.zeros(3, 4)).detach()
    assert x.shape == (3, 1, 8, 8) and float(x.min()) >= 0 and float(x.max()) <= 1
    assert 0.0 <= svae_accuracy(a, digits.x, digits.y) <= 1.0


def test_train_svae_history(digits: Dataset) -> None:
    from labelflip.models.svae import SVAETraining

    rec = SVAETraining()
    train_svae(digits, TINY, progress=False, record=rec)
    assert [(h.stage, h.epoch) for h in rec.history] == [(1, 1), (1, 2), (2, 1)]
    assert rec.history[1].losses["total"] < rec.history[0].losses["total"]


def test_checkpoint_round_trip_and_tamper(digits: Dataset, tmp_path) -> None:
    svae = train_svae(digits, SVAESettings(**{**TINY.__dict__, "epochs": 1}), progress=False)
    path = save_svae(tmp_path / "s", svae, {"dataset": "digits"})
    assert path.name == "s.safetensors"
    loaded, meta = load_svae(tmp_path / "s.safetensors")
    assert meta["training"]["dataset"] == "digits" and loaded.config == svae.config
    for (k, v), (k2, v2) in zip(
        svae.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert k == k2 and torch.equal(v, v2)
    x = digits.x[:5]
    assert torch.equal(svae.encode(x)[0], loaded.encode(x)[0])
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 1
    path.write_bytes(bytes(raw))
    with pytest.raises(LabelflipError, match="SHA-256"):
        load_svae(path)


def test_bad_inputs(digits: Dataset, tmp_path) -> None:
    with pytest.raises(LabelflipError, match="epochs"):
        train_svae(digits, SVAESettings(epochs=0), progress=False)
    with pytest.raises(LabelflipError, match="latent"):
        build_svae(SVAEConfig((1, 8, 8), 10, latent_dim=0))
    with pytest.raises(LabelflipError, match="not found"):
        load_svae(tmp_path / "nope")
    (tmp_path / "x.safetensors").write_bytes(b"0")
    (tmp_path / "x.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(LabelflipError, match="not an SVAE"):
        load_svae(tmp_path / "x")
    svae = build_svae(_config(digits))
    with pytest.raises(LabelflipError, match="input shape"):
        svae.encode(torch.zeros(2, 1, 28, 28))


# ------------------------------------------------------------------ conv SVAE


CONV = SVAESettings(**{**TINY.__dict__, "arch": "conv", "hidden": 32})


def test_conv_svae_shapes_on_any_size() -> None:
    for shape in ((1, 8, 8), (1, 28, 28), (3, 9, 13), (2, 4, 5)):
        cfg = SVAEConfig(shape, 3, latent_dim=5, hidden=16, arch="conv")
        svae = build_svae(cfg)
        assert any(isinstance(m, torch.nn.Conv2d) for m in svae.encoder.modules())
        assert any(isinstance(m, torch.nn.ConvTranspose2d) for m in svae.decoder.modules())
        x = torch.rand(4, *shape)
        mu, logvar = svae.encode(x)
        assert mu.shape == logvar.shape == (4, 5)
        out = svae.decode(mu).detach()
        assert out.shape == (4, *shape)
        assert float(out.min()) >= 0 and float(out.max()) <= 1
        assert svae.classify(mu).shape == (4, 3) and svae.discriminate(mu).shape == (4,)


def test_conv_svae_too_small_or_unknown_arch_is_a_clear_error() -> None:
    with pytest.raises(LabelflipError, match="at least 4x4"):
        build_svae(SVAEConfig((1, 3, 8), 10, arch="conv"))
    build_svae(SVAEConfig((1, 3, 8), 10, latent_dim=2, hidden=8))  # the MLP takes any size
    with pytest.raises(LabelflipError, match="unknown SVAE architecture 'resnet'"):
        build_svae(SVAEConfig((1, 8, 8), 10, arch="resnet"))
    with pytest.raises(LabelflipError, match="unknown SVAE architecture"):
        SVAESettings(arch="resnet").validate()


def test_conv_stage1_losses_finite_and_decreasing(digits: Dataset) -> None:
    torch.manual_seed(0)
    svae = build_svae(SVAEConfig((1, 8, 8), 10, latent_dim=4, hidden=32, arch="conv")).train()
    x, y = digits.x[:128], digits.y[:128]
    params = [*svae.encoder.parameters(), *svae.decoder.parameters(), *svae.classifier.parameters()]
    opt = torch.optim.Adam(params, lr=3e-3)
    history = []
    for _ in range(30):
        losses = stage1_losses(svae, x, y, torch.Generator().manual_seed(1))
        assert all(torch.isfinite(v) for v in losses.values())
        history.append({k: float(v.detach()) for k, v in losses.items()})
        opt.zero_grad()
        losses["total"].backward()
        opt.step()
    assert history[-1]["total"] < 0.9 * history[0]["total"]
    assert history[-1]["rec"] < history[0]["rec"]
    assert history[-1]["cls"] < history[0]["cls"]


def test_train_conv_svae_records_arch_and_round_trips(digits: Dataset, tmp_path) -> None:
    from labelflip.models.svae import SVAETraining

    rec = SVAETraining()
    svae = train_svae(digits, CONV, progress=False, record=rec)
    assert svae.config.arch == "conv"
    assert rec.history[1].losses["total"] < rec.history[0].losses["total"]
    again = train_svae(digits, CONV, progress=False)  # deterministic under the seed
    for va, vb in zip(svae.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(va, vb)
    path = save_svae(tmp_path / "c", svae, {"dataset": "digits"})
    assert json.loads((tmp_path / "c.json").read_text())["config"]["arch"] == "conv"
    loaded, _ = load_svae(path)
    assert loaded.config == svae.config and loaded.config.arch == "conv"
    x = digits.x[:6]
    assert torch.equal(svae.encode(x)[0], loaded.encode(x)[0])
    z = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(svae.decode(z), loaded.decode(z))


def test_sidecar_without_arch_loads_as_mlp(digits: Dataset, tmp_path) -> None:
    mlp = train_svae(digits, SVAESettings(**{**TINY.__dict__, "epochs": 1}), progress=False)
    path = save_svae(tmp_path / "old", mlp)
    side = tmp_path / "old.json"
    meta = json.loads(side.read_text())
    del meta["config"]["arch"]  # as written before the conv SVAE existed
    side.write_text(json.dumps(meta))
    loaded, _ = load_svae(path)
    assert loaded.config.arch == "mlp" and loaded.config == mlp.config
    assert torch.equal(mlp.encode(digits.x[:4])[0], loaded.encode(digits.x[:4])[0])
    # conv weights under an arch-less (hence mlp) sidecar do not fit: a clear error
    conv = build_svae(SVAEConfig((1, 8, 8), 10, latent_dim=4, hidden=32, arch="conv"))
    cpath = save_svae(tmp_path / "conv", conv)
    cside = tmp_path / "conv.json"
    cmeta = json.loads(cside.read_text())
    del cmeta["config"]["arch"]
    cside.write_text(json.dumps(cmeta))
    with pytest.raises(LabelflipError, match="do not fit their config"):
        load_svae(cpath)
