"""The ``labelflip`` command.

Every error a user can cause is a :class:`LabelflipError`: the command
prints ``labelflip: error: <one line>`` to stderr and exits with status 1
(status 2 for command-line usage errors, also one line; 130 on Ctrl-C).
Failures of the machine (disk full, read-only directory) are one line too,
and warnings print as one ``labelflip: warning: <text>`` line.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from labelflip._text import slug
from labelflip.errors import LabelflipError, os_error

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPT = 130


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        try:
            return int(args.func(args) or 0)
        except LabelflipError as e:
            print(f"labelflip: error: {e}", file=sys.stderr)
            return EXIT_ERROR
        except KeyboardInterrupt as e:  # a run stopped by Ctrl-C says how to resume
            print(f"labelflip: interrupted{f': {e}' if str(e) else ''}", file=sys.stderr)
            return EXIT_INTERRUPT
        except BrokenPipeError:  # output piped into e.g. `head`, which closed early
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return EXIT_ERROR
        except OSError as e:  # disk full, read-only or vanished files not caught closer by
            where = f"cannot access {e.filename}" if e.filename else "input/output failed"
            print(f"labelflip: error: {os_error(where, e)}", file=sys.stderr)
            return EXIT_ERROR


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    text = " ".join(str(message).split())
    print(f"labelflip: warning: {text}", file=sys.stderr if file is None else file)


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line, like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"labelflip: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    from labelflip import __version__

    parser = _Parser(
        prog="labelflip",
        description="Where do adversarial examples land? Train, attack and analyse label flips.",
    )
    parser.add_argument("--version", action="version", version=f"labelflip {__version__}")
    data_opt = argparse.ArgumentParser(add_help=False)
    data_opt.add_argument(
        "--data-dir",
        metavar="DIR",
        help="dataset directory (default: $LABELFLIP_DATA, else the per-user cache)",
    )
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    p = sub.add_parser(
        "datasets", parents=[data_opt], help="list datasets and whether their files are present"
    )
    p.set_defaults(func=cmd_datasets)

    p = sub.add_parser(
        "models", help="list the registered architectures and their training recipes"
    )
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("train", parents=[data_opt], help="train an architecture on a dataset")
    p.add_argument(
        "--dataset", required=True, help="dataset name, e.g. digits, mnist, imagefolder:PATH"
    )
    p.add_argument("--arch", required=True, help="architecture name or module:function")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float, help="learning rate")
    p.add_argument("--momentum", type=float)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--optimizer", choices=["sgd", "adam"])
    p.add_argument("--schedule", choices=["constant", "cosine"], help="learning-rate schedule")
    p.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="random 4-pixel translation + horizontal flip (default: per architecture)",
    )
    p.add_argument(
        "--val-fraction",
        type=float,
        default=0.1,
        help="share of the training split held out to pick the best epoch (default 0.1)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument(
        "--out", help="checkpoint path (default checkpoints/DATASET-ARCH-seedS.safetensors)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "evaluate",
        parents=[data_opt],
        help="clean accuracy, per-class accuracy and confusion matrix",
    )
    p.add_argument("checkpoint", help="a .safetensors checkpoint with its .json sidecar")
    p.add_argument("--dataset", help="dataset to evaluate on (default: the one it was trained on)")
    p.add_argument("--split", default="test", choices=["train", "test"])
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--csv", help="where to save the confusion matrix (default beside the checkpoint)"
    )
    p.add_argument("--arch", help="module:function of a user model, to trust its code")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "import-weights",
        parents=[data_opt],
        help="turn a foreign PyTorch state dict into a labelflip checkpoint (weights_only load)",
    )
    p.add_argument(
        "weights", help=".pt/.pth state dict (loaded with weights_only=True) or .safetensors"
    )
    p.add_argument("--arch", required=True)
    p.add_argument("--dataset", required=True, help="dataset the weights were trained on")
    p.add_argument(
        "--mean", type=float, nargs="+", help="per-channel normalisation mean the model expects"
    )
    p.add_argument(
        "--std", type=float, nargs="+", help="per-channel normalisation std the model expects"
    )
    p.add_argument("--out", required=True, help="checkpoint path to write")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_import_weights)

    p = sub.add_parser(
        "run",
        help="attack a model with a grid of attacks and report where the examples land",
        description="Run an experiment config (TOML); with no config, the built-in default "
        "(offline: digits, a digits-cnn trained on first use, FGSM, a PGD sweep, DeepFool, C&W).",
    )
    p.add_argument("config", nargs="?", help="TOML config (default: the built-in default)")
    p.add_argument(
        "--resume",
        metavar="RUNDIR",
        help="continue an interrupted run (with its own config; a CONFIG given must match it)",
    )
    p.add_argument("--out", metavar="RUNDIR", help="run directory (default: OUTPUT/NAME-DATE-TIME)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--no-report", action="store_true", help="skip the HTML report at the end")
    p.add_argument(
        "--print-default", action="store_true", help="print the built-in default config and exit"
    )
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("report", help="(re)write the HTML report of a run directory")
    p.add_argument("run_dir", metavar="RUNDIR")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("export", help="export a run's records as CSV or Parquet")
    p.add_argument("run_dir", metavar="RUNDIR")
    p.add_argument("--format", choices=["csv", "parquet"], default="csv")
    p.add_argument("-o", "--out", help="output file (default RUNDIR/records.csv|.parquet)")
    p.set_defaults(func=cmd_export)
    return parser


# ---------------------------------------------------------------- commands


def cmd_datasets(args: argparse.Namespace) -> int:
    from labelflip.data import dataset_statuses, resolve_data_dir

    data_dir = resolve_data_dir(args.data_dir)
    print(f"data directory: {data_dir}")
    rows = []
    for st in dataset_statuses(data_dir):
        shape = "x".join(map(str, st.input_shape)) if st.input_shape else "-"
        names = ", ".join(st.class_names)
        rows.append(
            [
                st.name,
                "yes" if st.present else "no",
                str(st.sizes.get("train", "-")),
                str(st.sizes.get("test", "-")),
                shape,
                f"{len(st.class_names)}: {names if len(names) <= 60 else names[:57] + '...'}",
                str(st.location) if st.location else "(built in)",
                st.note,
            ]
        )
    print_table(
        ["dataset", "present", "train", "test", "shape", "classes", "location", "note"], rows
    )
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from labelflip.models import ARCHITECTURES

    rows = [
        [
            a.name,
            a.description,
            f"{a.recipe.optimizer} lr {a.recipe.lr} bs {a.recipe.batch_size} x{a.recipe.epochs}",
        ]
        for a in ARCHITECTURES.values()
    ]
    rows.append(["module:function", "your own nn.Module factory", "sgd lr 0.01 bs 128 x10"])
    print_table(["architecture", "description", "default recipe"], rows)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from labelflip.models import recipe_for
    from labelflip.models.training import TrainSettings

    device = resolve_device(args.device)
    settings = TrainSettings.from_recipe(
        recipe_for(args.arch),
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
    out = (
        Path(args.out)
        if args.out
        else Path("checkpoints") / f"{slug(args.dataset)}-{slug(args.arch)}-seed{args.seed}"
    )
    from labelflip.models.training import train_and_save

    def banner(train_set, test_set) -> None:
        print(
            f"training {args.arch} on {args.dataset}: {len(train_set)} train images "
            f"({settings.val_fraction:.0%} held out for validation), {len(test_set)} test, "
            f"{settings.epochs} epochs, {settings.optimizer} lr {settings.lr}, "
            f"batch {settings.batch_size}, seed {settings.seed}, {device}",
            file=sys.stderr,
        )

    def log_epoch(st) -> None:
        val = f", validation accuracy {st.val_accuracy:.4f}" if st.val_accuracy is not None else ""
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
    )
    val = f"{result.val_accuracy:.4f}" if result.val_accuracy is not None else "-"
    print(
        f"best epoch {result.best_epoch}/{settings.epochs}: validation accuracy {val}, "
        f"test accuracy {test_acc:.4f} ({result.seconds:.1f} s)"
    )
    print(f"checkpoint: {path}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    import numpy as np

    from labelflip.analysis import confusion_matrix, per_class_accuracy
    from labelflip.data import load_dataset
    from labelflip.models import load_checkpoint
    from labelflip.models.training import predict

    if args.batch_size < 1:
        raise LabelflipError(f"batch size must be >= 1, got {args.batch_size}")
    device = resolve_device(args.device)
    clf, meta = load_checkpoint(args.checkpoint, device=device, trust_code=args.arch)
    name = args.dataset or meta.dataset
    ds = load_dataset(name, args.split, args.data_dir)
    check_fits(clf, ds.input_shape, ds.num_classes, name)
    pred = predict(clf, ds.x, args.batch_size).numpy()
    conf = confusion_matrix(ds.y.numpy(), pred, clf.num_classes)
    acc = float(np.trace(conf) / max(conf.sum(), 1))
    per_class = per_class_accuracy(conf)
    print(f"{meta.architecture} on {name} ({args.split}, {len(ds)} images): accuracy {acc:.4f}")
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

    csv_path = (
        Path(args.csv)
        if args.csv
        else checkpoint_paths(args.checkpoint)[0].with_suffix(
            f".confusion-{slug(name)}-{args.split}.csv"
        )
    )
    write_confusion_csv(csv_path, conf, ds.class_names)
    print(f"\nconfusion matrix saved to {csv_path}")
    return 0


def cmd_import_weights(args: argparse.Namespace) -> int:
    from labelflip.data import load_dataset
    from labelflip.models import CheckpointMeta, build_model, import_state_dict, save_checkpoint
    from labelflip.models.checkpoint import load_state
    from labelflip.models.classifier import Classifier
    from labelflip.models.training import accuracy

    device = resolve_device(args.device)
    state = import_state_dict(args.weights)
    test_set = load_dataset(args.dataset, "test", args.data_dir)
    meta = CheckpointMeta(
        architecture=args.arch,
        dataset=args.dataset,
        class_names=list(test_set.class_names),
        input_shape=list(test_set.input_shape),
        mean=list(args.mean or [0.0]),
        std=list(args.std or [1.0]),
        training={"imported_from": str(args.weights)},
    )
    model = build_model(args.arch, test_set.input_shape, test_set.num_classes)
    load_state(model, state, f"weights {args.weights}", meta)
    clf = Classifier(
        model,
        num_classes=test_set.num_classes,
        class_names=test_set.class_names,
        input_shape=test_set.input_shape,
        mean=meta.mean,
        std=meta.std,
    ).to(device)
    meta.clean_test_accuracy = round(accuracy(clf, test_set.x, test_set.y), 6)
    path = save_checkpoint(args.out, model, meta)
    print(f"imported {args.weights} as {args.arch}: test accuracy {meta.clean_test_accuracy:.4f}")
    print(f"checkpoint: {path}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from labelflip.config import default_config_text, load_config
    from labelflip.runner import new_run_dir, run

    if args.print_default:
        print(default_config_text(), end="")
        return 0
    if args.resume:
        if args.out:
            raise LabelflipError("--resume continues RUNDIR in place; --out does not go with it")
        outcome = run(
            load_config(args.config) if args.config else None,  # must be the run's own config
            resume=Path(args.resume),
            progress=not args.no_progress,
        )
    else:
        cfg = load_config(args.config)
        text = Path(args.config).read_text() if args.config else default_config_text()
        run_dir = Path(args.out) if args.out else new_run_dir(cfg, None)
        outcome = run(
            cfg,
            config_text=text,
            run_dir=run_dir,
            progress=not args.no_progress,
        )
    report = print_summary(outcome.run_dir, write=not args.no_report)
    print(f"run directory: {outcome.run_dir} ({outcome.seconds:.0f} s)")
    if report is not None:
        print(f"report: {report}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    path = print_summary(Path(args.run_dir), write=True)
    print(f"report: {path}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from labelflip.store import RunStore

    run_dir = Path(args.run_dir)
    out = Path(args.out) if args.out else run_dir / f"records.{args.format}"
    with RunStore.open(run_dir) as store:
        if args.format == "csv":
            store.export_csv(out)
        else:
            store.export_parquet(out)
    print(out)
    return 0


def print_summary(run_dir: Path, *, write: bool) -> Path | None:
    """Print the per-job summary table of a run (the report's table, as text)
    and, when ``write``, write the report from the same summary; returns the
    report's path."""
    from labelflip.report import format_table, summarize, write_report
    from labelflip.store import RunStore

    with RunStore.open(run_dir) as store:
        summary = summarize(store)
    print_table(*format_table(summary))
    return write_report(run_dir, summary=summary) if write else None


# ---------------------------------------------------------------- helpers


def resolve_device(name: str):
    """The torch device named ``name`` (``auto``: cuda when available, else cpu)."""
    from labelflip.runner import resolve_device as resolve

    return resolve(name)


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
        w.writerow(["true\\pred", *class_names])
        for name, row in zip(class_names, conf, strict=True):
            w.writerow([name, *(int(v) for v in row)])


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    print(line.rstrip())
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


if __name__ == "__main__":
    sys.exit(main())
