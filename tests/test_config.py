"""The run config: TOML parsing, validation errors and grid expansion."""

from __future__ import annotations

import pytest

from labelflip.config import AttackConfig, expand, load_config, parse_config
from labelflip.errors import LabelflipError

BASE = """
name = "t"
[data]
dataset = "digits"
[model]
arch = "digits-cnn"
"""


def _load(tmp_path, text: str):
    p = tmp_path / "c.toml"
    p.write_text(text)
    return load_config(p)


def test_default_config_is_valid_and_offline():
    cfg = load_config()
    assert cfg.data.dataset == "digits" and cfg.model.arch == "digits-cnn"
    names = [j.attack for j in cfg.jobs()]
    assert {"fgsm", "pgd", "deepfool", "cw-l2"} <= set(names)
    assert sum(j.group == "pgd-linf" for j in cfg.jobs()) >= 5


def test_grid_expands_in_key_order_with_sweep_values():
    jobs = expand(AttackConfig("pgd", {"norm": "linf", "eps": [0.01, 0.1], "steps": [10, 20]}))
    assert [j.job_id for j in jobs] == [
        "pgd-linf-eps0.01-steps10",
        "pgd-linf-eps0.01-steps20",
        "pgd-linf-eps0.1-steps10",
        "pgd-linf-eps0.1-steps20",
    ]
    assert all(j.sweep_value is None for j in jobs)  # two grid axes: no single sweep
    one = expand(AttackConfig("pgd", {"norm": "linf", "eps": [0.01, 0.1]}))
    assert [j.sweep_value for j in one] == [0.01, 0.1]
    assert {j.group for j in one} == {"pgd-linf"}
    assert one[1].settings == {"norm": "linf", "eps": 0.1}


def test_duplicate_job_ids_are_made_unique(tmp_path):
    cfg = _load(tmp_path, BASE + '[[attacks]]\nattack = "fgsm"\n[[attacks]]\nattack = "fgsm"\n')
    assert [j.job_id for j in cfg.jobs()] == ["fgsm", "fgsm-2"]


@pytest.mark.parametrize(
    "extra, message",
    [
        ('nmae = "x"\n', "unknown key 'nmae'; did you mean 'name'?"),
        ("seed = 1.5\n", "'seed' must be an integer"),
        ('batch_size = "big"\n', "'batch_size' must be an integer"),
        ("batch_size = 0\n", "batch_size must be >= 1"),
        ('[[attacks]]\nattack = "pgdd"\n', "did you mean 'pgd'"),
        ('[[attacks]]\nattack = "pgd"\nepz = 0.1\n', "did you mean 'eps'"),
        ('[[attacks]]\nattack = "pgd"\neps = "big"\n', "attack #1"),
        ('[[attacks]]\nattack = "pgd"\neps = [0.1, -1.0]\n', "attack #1"),
        ('[[attacks]]\nattack = "pgd"\neps = []\n', "empty list"),
        ("[[attacks]]\neps = 0.1\n", "'attack' (the attack's name) is required"),
    ],
)
def test_bad_configs_give_one_line_errors(tmp_path, extra, message):
    # top-level keys must come before the tables in TOML
    head, tables = ("", extra) if extra.startswith("[[") else (extra, "")
    text = head + BASE + '[[attacks]]\nattack = "fgsm"\n' * (not tables) + tables
    with pytest.raises(LabelflipError) as e:
        _load(tmp_path, text)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    "data, message",
    [
        ({"data": {"dataset": "digits", "split": "val"}}, "split must be 'train' or 'test'"),
        ({"data": {"samples": 0}}, "samples must be >= 1"),
        ({"data": {"selection": "best"}}, "selection must be one of first, random"),
        ({"data": {"start": 5, "stop": 5}}, "0 <= start < stop"),
        ({"model": {}}, "exactly one of 'checkpoint', 'zoo' or 'arch'"),
        ({"model": {"checkpoint": "a", "arch": "b"}}, "exactly one of"),
        ({"model": {"checkpoint": "a", "epochs": 3}}, "only go with 'arch'"),
        ({"model": {"arch": "digits-cnn"}, "attacks": []}, "no [[attacks]] given"),
        ({"name": "a b"}, "name must be"),
        ({"data": "digits"}, "[data] must be a table"),
        ({"attacks": {"attack": "fgsm"}}, "must be a list of [[attacks]] tables"),
    ],
)
def test_bad_mappings(data, message):
    base = {"model": {"arch": "digits-cnn"}, "attacks": [{"attack": "fgsm"}]}
    with pytest.raises(LabelflipError, match=None) as e:
        parse_config({**base, **data})
    assert message in str(e.value)


def test_missing_file_and_bad_toml(tmp_path):
    with pytest.raises(LabelflipError, match="config file not found"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(LabelflipError, match="invalid TOML"):
        _load(tmp_path, "name = \n")
    p = tmp_path / "bin.toml"
    p.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(LabelflipError, match="not a UTF-8 text file"):
        load_config(p)


def test_round_trip_through_json():
    import json

    from labelflip.config import config_from_json

    cfg = load_config()
    again = config_from_json(json.dumps(cfg.to_dict()), "x")
    assert again == cfg
    assert [j.job_id for j in again.jobs()] == [j.job_id for j in cfg.jobs()]


EXAMPLES = sorted((__import__("pathlib").Path(__file__).parents[1] / "examples").glob("*.toml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_are_valid(path):
    cfg = load_config(path)
    if path.name.startswith("labelfool-"):  # the label-space comparisons
        strategies = [j.target["strategy"] for j in cfg.jobs() if j.attack == "labelfool"]
        assert strategies[:4] == ["labelfool", "random", "easiest", "hardest"]
        assert {"fgsm", "deepfool"} <= {j.attack for j in cfg.jobs()}
        assert cfg.similarity.perceptual and cfg.similarity.split == "train"
        return
    if path.name.startswith("jma-"):  # JMA against its comparison attacks, one target each
        jobs = cfg.jobs()
        assert {"jma", "ml-cw"} <= {j.attack for j in jobs}
        targets = [j.target["strategy"] for j in jobs if j.attack == "jma"]
        if cfg.data.dataset == "mnist-grid":
            assert targets == ["flip-bits"] * 3
            assert [j.target["bits"] for j in jobs if j.attack == "jma"] == [1, 2, -1]
        else:
            assert cfg.model.encoding == "ecoc" and targets == ["random"]
            assert {"cw-l2", "deepfool"} <= {j.attack for j in jobs}
        return
    if path.name.startswith("type-i-"):  # Type I next to Type II, judged and detected
        jobs = cfg.jobs()
        assert [j.target["strategy"] for j in jobs if j.attack == "type-i"] == ["next", "next"]
        assert {"latent-type-i", "fgsm", "pgd", "deepfool", "cw-l2"} <= {j.attack for j in jobs}
        assert cfg.oracle is not None and cfg.oracle.arch != cfg.model.arch
        assert cfg.svae is not None and cfg.detect.feature_squeezing
        return
    if path.name.startswith("label-space-"):  # the boundary profile and the minimal attacks
        attacks = [j.attack for j in cfg.jobs()]
        assert attacks.count("boundary-profile") == 1 and "best-of" in attacks
        assert {"deepfool", "superdeepfool", "cw-l2", "fmn", "ddn", "alma"} <= set(attacks)
        return
    eps = [j.sweep_value for j in cfg.jobs() if j.group == "pgd-linf"]
    if path.name.startswith("robust-vs-standard-"):  # a pair: the same attacks on two models
        twin = load_config(path.parent / "robust-vs-standard-mnist.toml")
        assert [j.job_id for j in cfg.jobs()] == [j.job_id for j in twin.jobs()]
        assert cfg.data == twin.data and 0.3 in eps  # the robust model's training eps
        assert {cfg.model.zoo, twin.model.zoo} == {"cw-mnist", "cw-mnist-fgsm-rs"} or cfg == twin
        return
    assert eps == [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0]
    assert {"deepfool", "cw-l2"} <= {j.attack for j in cfg.jobs()}
