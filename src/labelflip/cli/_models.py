"""The subcommands about models: ``models``, ``train``, ``evaluate``, ``import-weights``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from labelflip._text import csv_cell, slug
from labelflip.cli._common import print_table, resolve_device
from labelflip.errors import LabelflipError


def cmd_models(args: argparse.Namespace) -> int:
    from labelflip.models import ARCHITECTURES
    from labelflip.models.registry import USER_RECIPE, recipe_for, recipe_names
    from labelflip.models.zoo import ZOO

    def pct(v) -> str:
        return "-" if v is None else f"{100 * v:.2f} %"

    rows = []
    for r in ZOO.rows():
        rt = r["robust_test"]
        robust = (
            f"{pct(rt['accuracy'])} (PGD-{rt['steps']} {rt['norm']} eps {rt['eps']:g}, "
            f"{rt['samples']} images)"
            if rt
            else "-"
        )
        rows.append([r["name"], r["dataset"], r["training"], pct(r["clean_test_accuracy"]), robust])
    print("model zoo (shipped; in a config: [model] zoo = NAME; in Python: load_zoo(NAME))")
    print_table(["zoo model", "dataset", "training", "clean test", "robust test"], rows)

    def recipe_text(r) -> str:
        return f"{r.optimizer} lr {r.lr:g} ({r.schedule}) bs {r.batch_size} x{r.epochs}"

    rows = []
    for a in ARCHITECTURES.values():
        for i, name in enumerate(recipe_names(a.name)):
            first = i == 0
            rows.append(
                [
                    a.name if first else "",
                    a.description if first else "",
                    name,
                    recipe_text(recipe_for(a.name, name)),
                ]
            )
    rows.append(
        ["module:function", "your own nn.Module factory", "default", recipe_text(USER_RECIPE)]
    )
    print("\narchitectures (labelflip train --arch NAME [--recipe RECIPE])")
    print_table(["architecture", "description", "recipe", "settings"], rows)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from labelflip.models.adversarial import adversarial_from_options
    from labelflip.models.registry import recipe_for, recipe_name
    from labelflip.models.training import TrainSettings

    device = resolve_device(args.device)
    if args.arch == "svae":
        return _train_svae(args, device)
    svae_only = {
        "--svae-arch": args.svae_arch,
        "--svae-latent-dim": args.svae_latent_dim,
        "--svae-hidden": args.svae_hidden,
        "--svae-dis-epochs": args.svae_dis_epochs,
    }
    given_svae = [k for k, v in svae_only.items() if v is not None]
    if given_svae:
        verb = "applies" if len(given_svae) == 1 else "apply"
        raise LabelflipError(f"{'/'.join(given_svae)} {verb} only to --arch svae")
    adversarial = adversarial_from_options(
        args.adversarial,
        eps=args.adv_eps,
        norm=args.adv_norm,
        steps=args.adv_steps,
        step_size=args.adv_step_size,
        beta=args.trades_beta,
        val_samples=args.adv_val_samples,
        eps_ramp=args.adv_eps_ramp,
    )
    is_adv = adversarial is not None
    recipe = recipe_name(args.arch, args.recipe, adversarial=is_adv)
    settings = TrainSettings.from_recipe(
        recipe_for(args.arch, args.recipe, adversarial=is_adv),
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        momentum=args.momentum,
        weight_decay=args.weight_decay,
        optimizer=args.optimizer,
        schedule=args.schedule,
        augment=args.augment,
        val_fraction=args.val_fraction,
        seed=args.seed,
    )
    settings.validate()
    encoding = check_train_encoding(args.dataset, args.encoding, args.code_length)
    suffix = encoding_suffix(encoding, args.code_length)
    if adversarial is not None:
        suffix += f"-{adversarial.method}"
    default_name = f"{slug(args.dataset)}-{slug(args.arch)}{suffix}-seed{args.seed}"
    out = Path(args.out) if args.out else Path("checkpoints") / default_name
    from labelflip.models.fit import train_and_save

    def banner(train_set, test_set) -> None:
        _training_banner(
            f"{args.arch} on {args.dataset}: {len(train_set)} train images "
            f"({settings.val_fraction:.0%} held out for validation), {len(test_set)} test, "
            f"{encoding or 'onehot'} outputs, recipe {recipe}: "
            f"{settings.epochs} epochs, {settings.optimizer} lr {settings.lr} "
            f"({settings.schedule}), batch {settings.batch_size}",
            settings.seed,
            device,
            adversarial_phrase(adversarial),
        )

    def log_epoch(st) -> None:
        val = f", validation accuracy {st.val_accuracy:.4f}" if st.val_accuracy is not None else ""
        if st.train_label_accuracy is not None:
            val += f", per-label train {st.train_label_accuracy:.4f}"
        if st.val_label_accuracy is not None:
            val += f" / validation {st.val_label_accuracy:.4f}"
        if st.robust_val_accuracy is not None:
            val += f", robust validation accuracy {st.robust_val_accuracy:.4f}"
        print(
            f"epoch {st.epoch}/{settings.epochs}: loss {st.loss:.4f}, "
            f"train accuracy {st.train_accuracy:.4f}{val} ({st.seconds:.1f} s)",
            file=sys.stderr,
        )

    path, result, test_acc = train_and_save(
        args.arch,
        args.dataset,
        settings,
        out,
        data_dir=args.data_dir,
        device=device,
        progress=not args.no_progress,
        on_epoch=log_epoch if args.no_progress else None,
        on_start=banner,
        encoding=encoding,
        code_length=args.code_length,
        adversarial=adversarial,
        recipe=recipe,
        command=args.command_line,
        robust_eps=args.robust_eps,
        robust_samples=args.robust_samples,
        restart=args.restart,
    )
    val = f"{result.val_accuracy:.4f}" if result.val_accuracy is not None else "-"
    if result.robust_val_accuracy is not None:
        val += f" (robust {result.robust_val_accuracy:.4f})"
    labels = (
        f", per-label test accuracy {result.test_label_accuracy:.4f}"
        if result.test_label_accuracy is not None
        else ""
    )
    exact = "exact-match " if result.test_label_accuracy is not None else ""
    print(
        f"best epoch {result.best_epoch}/{settings.epochs}: validation accuracy {val}, "
        f"{exact}test accuracy {test_acc:.4f}{labels} ({result.seconds:.1f} s)"
    )
    if result.robust_test is not None:
        print(robust_line(result.robust_test))
    print(f"checkpoint: {path}")
    return 0


def _training_banner(what: str, seed: int, device: object, tail: str = "") -> None:
    """The line ``labelflip train`` prints (on stderr) before the first epoch."""
    print(f"training {what}, seed {seed}, {device}{tail}", file=sys.stderr)


def adversarial_phrase(adv) -> str:
    """``, adversarial ...`` for the training banner (empty for standard training)."""
    if adv is None:
        return ""
    beta = f", beta {adv.beta:g}" if adv.beta is not None else ""
    return (
        f", adversarial {adv.method} ({adv.norm} eps {adv.eps:g}, {adv.steps} step(s) of "
        f"{adv.step_size:g}{beta}"
        f"{f', eps ramped up over {adv.eps_ramp:g} epochs' if adv.eps_ramp else ''})"
    )


def robust_line(r: dict) -> str:
    """One line for a robust-accuracy record (see models.fit.robust_test_accuracy)."""
    return (
        f"robust accuracy {r['accuracy']:.4f} under PGD-{r['steps']} ({r['norm']} eps "
        f"{r['eps']:g}, step {r['step_size']:g}, random start) on {r['samples']} test images "
        f"(clean {r['clean_accuracy']:.4f} on them; {r['seconds']:.0f} s)"
    )


def _train_svae(args: argparse.Namespace, device) -> int:
    """``labelflip train --arch svae``: the SVAE of the Type I attack paper
    (Algorithm 1), saved with :func:`labelflip.models.svae.save_svae`."""
    from labelflip.models.svae import SVAESettings, train_and_save_svae

    if args.encoding or args.code_length:
        raise LabelflipError("--encoding/--code-length do not apply to --arch svae")
    given = {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "arch": args.svae_arch,
        "latent_dim": args.svae_latent_dim,
        "hidden": args.svae_hidden,
        "dis_epochs": args.svae_dis_epochs,
    }
    settings = SVAESettings(seed=args.seed, **{k: v for k, v in given.items() if v is not None})
    settings.validate()
    out = (
        Path(args.out)
        if args.out
        else Path("checkpoints")
        / (f"{slug(args.dataset)}-svae{'-conv' if settings.arch == 'conv' else ''}-seed{args.seed}")
    )

    def banner(train_set, test_set) -> None:
        _training_banner(
            f"svae ({settings.arch}) on {args.dataset}: {len(train_set)} train images, "
            f"{len(test_set)} test, {settings.epochs}+{settings.dis_epochs} epochs, "
            f"adam lr {settings.lr}, batch {settings.batch_size}, latent {settings.latent_dim}",
            settings.seed,
            device,
        )

    def log_epoch(st) -> None:
        losses = ", ".join(f"{k} {v:.4f}" for k, v in st.losses.items())
        acc = (
            f", f2 train accuracy {st.train_accuracy:.4f}" if st.train_accuracy is not None else ""
        )
        print(
            f"stage {st.stage} epoch {st.epoch}: {losses}{acc} ({st.seconds:.1f} s)",
            file=sys.stderr,
        )

    path, test_acc = train_and_save_svae(
        args.dataset,
        settings,
        out,
        data_dir=args.data_dir,
        device=device,
        progress=not args.no_progress,
        on_epoch=log_epoch if args.no_progress else None,
        on_start=banner,
    )
    print(f"svae f2 test accuracy {test_acc:.4f}")
    print(f"checkpoint: {path}")
    return 0


def check_train_encoding(dataset: str, encoding: str | None, code_length: int | None) -> str | None:
    """The encoding to train with, checked against the dataset's kind before
    any data is loaded: a multi-label dataset trains only as ``multilabel``
    (implied), a single-label one never; ``--code-length`` needs ``ecoc``."""
    from labelflip.data import IMAGEFOLDER_PREFIX, REGISTRY

    source = None if dataset.startswith(IMAGEFOLDER_PREFIX) else REGISTRY.get(dataset)
    multilabel = bool(getattr(source, "multilabel", False))
    if multilabel and encoding not in (None, "multilabel"):
        raise LabelflipError(
            f"dataset '{dataset}' is multi-label: it trains with --encoding multilabel "
            f"(implied), not {encoding}"
        )
    if source is not None and not multilabel and encoding == "multilabel":
        raise LabelflipError(
            f"--encoding multilabel needs a multi-label dataset (e.g. mnist-grid); "
            f"'{dataset}' has one class per image"
        )
    if code_length is not None and encoding != "ecoc":
        raise LabelflipError("--code-length only goes with --encoding ecoc")
    return "multilabel" if multilabel else encoding


def encoding_suffix(encoding: str | None, code_length: int | None = None) -> str:
    """The part of a default checkpoint name that tells the encoding: ``""``
    for one-hot, ``-ecoc`` (``-ecocN`` for an explicit code length), ``-ml``."""
    if encoding == "ecoc":
        return f"-ecoc{code_length}" if code_length is not None else "-ecoc"
    if encoding == "multilabel":
        return "-ml"
    return ""


def cmd_evaluate(args: argparse.Namespace) -> int:
    import numpy as np

    from labelflip.analysis import confusion_matrix, per_class_accuracy
    from labelflip.data import load_dataset
    from labelflip.models import load_checkpoint
    from labelflip.models.training import predict

    if args.batch_size < 1:
        raise LabelflipError(f"batch size must be >= 1, got {args.batch_size}")
    device = resolve_device(args.device)
    zoo_name = args.checkpoint[4:] if args.checkpoint.startswith("zoo:") else None
    if zoo_name is not None:
        from labelflip.models.zoo import zoo_path

        args.checkpoint = str(zoo_path(zoo_name))
    clf, meta = load_checkpoint(args.checkpoint, device=device, trust_code=args.arch)
    name = args.dataset or meta.dataset
    ds = load_dataset(name, args.split, args.data_dir)
    if clf.multilabel != ds.multilabel:
        kinds = ("multi-label", "single-label")
        raise LabelflipError(
            f"model is {kinds[not clf.multilabel]} but dataset '{name}' is "
            f"{kinds[not ds.multilabel]}"
        )
    check_fits(clf, ds.input_shape, ds.num_classes, name)
    if clf.multilabel:
        return evaluate_multilabel(args, clf, meta, ds, name)
    pred = predict(clf, ds.x, args.batch_size).numpy()
    conf = confusion_matrix(ds.y.numpy(), pred, clf.num_classes)
    acc = float(np.trace(conf) / max(conf.sum(), 1))
    per_class = per_class_accuracy(conf)
    print(f"{meta.architecture} on {name} ({args.split}, {len(ds)} images): accuracy {acc:.4f}")
    robust = evaluate_robust(args, clf, meta, ds)
    if robust is not None:
        print(robust_line(robust).replace(" test images", f" {args.split} images"))
    print_table(
        ["class", "n", "accuracy"],
        [[c, str(int(conf[i].sum())), f"{per_class[i]:.4f}"] for i, c in enumerate(ds.class_names)],
    )
    print("\nconfusion matrix (rows: true class, columns: predicted class)")
    short = [str(i) for i in range(clf.num_classes)]
    print_table(
        ["true\\pred", *short],
        [[f"{i} {c}", *map(str, conf[i])] for i, c in enumerate(ds.class_names)],
    )
    from labelflip.models.checkpoint import checkpoint_paths

    suffix = f".confusion-{slug(name)}-{args.split}.csv"
    if args.csv:
        csv_path = Path(args.csv)
    elif zoo_name is not None:  # here, never into the installed package
        csv_path = Path.cwd() / f"{zoo_name}{suffix}"
    else:
        csv_path = checkpoint_paths(args.checkpoint)[0].with_suffix(suffix)
    write_confusion_csv(csv_path, conf, ds.class_names)
    print(f"\nconfusion matrix saved to {csv_path}")
    return 0


def evaluate_robust(args: argparse.Namespace, clf, meta, ds) -> dict | None:
    """The robust accuracy ``labelflip evaluate`` reports (or ``None``)."""
    from labelflip.models.fit import robust_test_accuracy

    adv = meta.training.get("adversarial") if isinstance(meta.training, dict) else None
    eps = args.robust_eps if args.robust_eps is not None else (adv or {}).get("eps")
    if not eps:
        return None
    if eps < 0:
        raise LabelflipError(f"--robust-eps must be >= 0, got {eps}")
    if args.robust_samples is not None and args.robust_samples < 1:
        raise LabelflipError(f"--robust-samples must be >= 1, got {args.robust_samples}")
    norm = args.robust_norm or (adv or {}).get("norm", "linf")
    return robust_test_accuracy(
        clf,
        ds,
        eps=eps,
        norm=norm,
        samples=args.robust_samples,
        progress=not args.no_progress,
        batch_size=args.batch_size,
    )


def evaluate_multilabel(args: argparse.Namespace, clf, meta, ds, name: str) -> int:
    """``labelflip evaluate`` for a multi-label model (JMA §III-C): exact-match
    accuracy of the label vector and, per label, accuracy, precision and
    recall (saved as CSV instead of a confusion matrix)."""
    import csv

    from labelflip.models.checkpoint import checkpoint_paths
    from labelflip.models.encoding import index_to_bits
    from labelflip.models.training import per_label_accuracy, predict

    pred = predict(clf, ds.x, args.batch_size)
    n = clf.num_outputs
    exact = float((pred == ds.y).double().mean()) if len(ds) else float("nan")
    per_label = per_label_accuracy(pred, ds.y, n)
    truth, said = index_to_bits(ds.y, n).bool(), index_to_bits(pred, n).bool()
    hits = (truth & said).sum(0)
    rows = []
    for j, label in enumerate(ds.class_names):
        present, predicted = int(truth[:, j].sum()), int(said[:, j].sum())
        precision = int(hits[j]) / predicted if predicted else float("nan")
        recall = int(hits[j]) / present if present else float("nan")
        rows.append([label, present, predicted, float(per_label[j]), precision, recall])
    print(
        f"{meta.architecture} on {name} ({args.split}, {len(ds)} images, {n} labels): "
        f"exact-match accuracy {exact:.4f}, per-label accuracy {float(per_label.mean()):.4f}"
    )
    print_table(
        ["label", "present", "predicted", "accuracy", "precision", "recall"],
        [[r[0], str(r[1]), str(r[2]), *(f"{v:.4f}" for v in r[3:])] for r in rows],
    )
    csv_path = (
        Path(args.csv)
        if args.csv
        else checkpoint_paths(args.checkpoint)[0].with_suffix(
            f".labels-{slug(name)}-{args.split}.csv"
        )
    )
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["label", "present", "predicted", "accuracy", "precision", "recall"])
        w.writerows([[csv_cell(r[0]), *r[1:]] for r in rows])
    print(f"\nper-label accuracy saved to {csv_path}")
    return 0


def cmd_import_weights(args: argparse.Namespace) -> int:
    from labelflip.data import load_dataset
    from labelflip.models import CheckpointMeta, build_model, import_state_dict, save_checkpoint
    from labelflip.models.checkpoint import load_state, map_state_keys
    from labelflip.models.classifier import Classifier
    from labelflip.models.training import accuracy, resolve_encoding

    device = resolve_device(args.device)
    state = import_state_dict(args.weights)
    test_set = load_dataset(args.dataset, "test", args.data_dir)
    encoding = resolve_encoding(None, test_set)  # one-hot, or multi-label for such a dataset
    meta = CheckpointMeta(
        architecture=args.arch,
        dataset=args.dataset,
        class_names=list(test_set.class_names),
        input_shape=list(test_set.input_shape),
        mean=list(args.mean or [0.0]),
        std=list(args.std or [1.0]),
        training={"imported_from": str(args.weights)},
        encoding=encoding.to_dict(),
    )
    model = build_model(args.arch, test_set.input_shape, encoding.num_outputs)
    what = f"weights {args.weights}"
    if args.key_map == "auto":
        state, renamed = map_state_keys(state, model.state_dict(), what=what, arch=args.arch)
        if renamed:
            print(f"key map: {len(renamed)} of {len(state)} keys renamed in order")
            for old, new in renamed:
                print(f"  {old} -> {new}")
    try:
        load_state(model, state, what, meta)
    except LabelflipError as e:
        if args.key_map == "none" and set(state) != set(model.state_dict()):
            raise LabelflipError(f"{e} (if only the names differ: --key-map auto)") from None
        raise
    print(normalisation_line(args.mean, args.std, meta))
    clf = Classifier(
        model,
        num_classes=test_set.num_labels,
        class_names=test_set.class_names,
        input_shape=test_set.input_shape,
        mean=meta.mean,
        std=meta.std,
        encoding=encoding,
    ).to(device)
    meta.clean_test_accuracy = round(accuracy(clf, test_set.x, test_set.y), 6)
    path = save_checkpoint(args.out, model, meta)
    print(f"imported {args.weights} as {args.arch}: test accuracy {meta.clean_test_accuracy:.4f}")
    print(f"checkpoint: {path}")
    return 0


def normalisation_line(mean, std, meta) -> str:
    """Which normalisation an import assumed, and the flags that change it."""
    given = [flag for flag, v in (("--mean", mean), ("--std", std)) if v]
    told = f"from {' and '.join(given)}" if given else "none given: raw [0, 1] inputs"
    line = f"normalisation: mean {meta.mean}, std {meta.std} ({told})"
    if len(given) < 2:
        line += (
            "; if the model was trained on normalised inputs, pass its "
            "--mean M [M ...] --std S [S ...]"
        )
    return line


def check_fits(clf, input_shape: tuple[int, ...], num_classes: int, dataset: str) -> None:
    if clf.input_shape is not None and tuple(clf.input_shape) != tuple(input_shape):
        raise LabelflipError(
            f"model expects inputs of shape {tuple(clf.input_shape)} but dataset '{dataset}' "
            f"has {tuple(input_shape)}"
        )
    if clf.num_classes != num_classes:
        raise LabelflipError(
            f"model has {clf.num_classes} classes but dataset '{dataset}' has {num_classes}"
        )


def write_confusion_csv(path: Path, conf, class_names: Sequence[str]) -> None:
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["true\\pred", *map(csv_cell, class_names)])
        for name, row in zip(class_names, conf, strict=True):
            w.writerow([csv_cell(name), *(int(v) for v in row)])
