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
import shlex
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from labelflip._text import csv_cell, slug
from labelflip.errors import LabelflipError, os_error

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPT = 130


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.command_line = shlex.join(["labelflip", *(sys.argv[1:] if argv is None else argv)])
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
        "models",
        help="list the shipped model zoo (clean and robust accuracy), the architectures and "
        "their training recipes",
    )
    p.set_defaults(func=cmd_models)

    p = sub.add_parser(
        "attacks", help="list the attacks with their settings, defaults and constraints"
    )
    p.add_argument(
        "name",
        nargs="?",
        help="one attack (e.g. pgd, foolbox:LinfPGD, torchattacks:APGD): its settings in "
        "detail (default: all attacks)",
    )
    p.set_defaults(func=cmd_attacks)

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
    p.add_argument(
        "--recipe",
        metavar="NAME",
        help="named training recipe of the architecture (see 'labelflip models'; e.g. "
        "cw-paper: C&W's 50 epochs); default: 'default', or for --adversarial the "
        "architecture's fgsm-rs recipe where it has one",
    )
    p.add_argument(
        "--schedule",
        choices=["constant", "cosine", "onecycle"],
        help="learning-rate schedule (onecycle: linear up to --lr over 40%% of the steps, "
        "then down to 0)",
    )
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
    p.add_argument(
        "--encoding",
        choices=["onehot", "ecoc", "multilabel"],
        help="output encoding (JMA §III): onehot (cross-entropy), ecoc (Hadamard codewords, "
        "hinge loss) or multilabel (per-label BCE); default: multilabel for a multi-label "
        "dataset such as mnist-grid, else onehot",
    )
    p.add_argument(
        "--code-length",
        type=int,
        metavar="N",
        help="ECOC codeword length, a power of 2 (default: the smallest >= the classes, 16 for 10)",
    )
    p.add_argument(
        "--svae-arch",
        choices=["mlp", "conv"],
        help="--arch svae only: encoder/decoder networks, MLPs (default) or convolutional",
    )
    p.add_argument(
        "--svae-latent-dim", type=int, metavar="D", help="--arch svae only: latent size (16)"
    )
    p.add_argument(
        "--svae-hidden", type=int, metavar="H", help="--arch svae only: hidden width (256)"
    )
    p.add_argument(
        "--svae-dis-epochs",
        type=int,
        metavar="N",
        help="--arch svae only: discriminator (stage 2) epochs (2)",
    )
    g = p.add_argument_group(
        "adversarial training",
        "Train on adversarial examples made by labelflip's own attacks, with the model in "
        "eval mode (docs/models.md). The kept epoch is the one with the best robust "
        "validation accuracy (PGD-10 on held-out training images).",
    )
    g.add_argument(
        "--adversarial",
        metavar="METHOD",
        help="fgsm-rs (Wong et al. 2020: FGSM from a random start, step 1.25 eps), "
        "pgd (Madry et al. 2018) or trades (Zhang et al. 2019)",
    )
    g.add_argument("--adv-eps", type=float, metavar="EPS", help="the budget (e.g. 0.3 on MNIST)")
    g.add_argument("--adv-norm", metavar="NORM", help="linf (default) or l2")
    g.add_argument(
        "--adv-steps", type=int, metavar="N", help="attack steps (pgd, trades: 10; fgsm-rs: 1)"
    )
    g.add_argument(
        "--adv-step-size",
        type=float,
        metavar="A",
        help="attack step (fgsm-rs: 1.25 eps; pgd, trades: 2.5 eps / steps)",
    )
    g.add_argument("--trades-beta", type=float, metavar="B", help="TRADES's KL weight (6)")
    g.add_argument(
        "--adv-val-samples",
        type=int,
        metavar="N",
        help="held-out training images for the robust validation of each epoch (1000)",
    )
    g.add_argument(
        "--robust-eps",
        type=float,
        metavar="EPS",
        help="measure the robust test accuracy under PGD-40 at EPS after training "
        "(default: --adv-eps when adversarially trained, else none)",
    )
    g.add_argument(
        "--robust-samples",
        type=int,
        metavar="N",
        help="test images for that robust accuracy (default: all)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument(
        "--out",
        help="checkpoint path (default "
        "checkpoints/DATASET-ARCH[-ecoc|-ml][-METHOD]-seedS.safetensors); an interrupted "
        "training keeps its state beside it (OUT.partial.*) and the same command continues it",
    )
    p.add_argument(
        "--restart",
        action="store_true",
        help="discard the state of an interrupted training at --out and start afresh",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "evaluate",
        parents=[data_opt],
        help="clean accuracy, per-class accuracy and confusion matrix "
        "(multi-label: exact-match and per-label accuracy)",
    )
    p.add_argument(
        "checkpoint",
        help="a .safetensors checkpoint with its .json sidecar, or zoo:NAME for a shipped model",
    )
    p.add_argument("--dataset", help="dataset to evaluate on (default: the one it was trained on)")
    p.add_argument("--split", default="test", choices=["train", "test"])
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--csv",
        help="where to save the confusion matrix, or a multi-label model's per-label table "
        "(default beside the checkpoint)",
    )
    p.add_argument("--arch", help="module:function of a user model, to trust its code")
    p.add_argument(
        "--robust-eps",
        type=float,
        metavar="EPS",
        help="also report robust accuracy under labelflip's PGD-40 (random start) at EPS "
        "(default: the training eps of an adversarially trained model; 0: skip)",
    )
    p.add_argument(
        "--robust-norm",
        choices=["linf", "l2"],
        help="norm of that PGD (default: the training norm, else linf)",
    )
    p.add_argument(
        "--robust-samples",
        type=int,
        metavar="N",
        help="first N images of the split for the robust accuracy (default: all)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
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
    p.add_argument(
        "--key-map",
        choices=["none", "auto"],
        default="none",
        help="auto: rename the weights' keys to the architecture's when the tensors line up "
        "one to one in order (same shapes and kinds); none (default): names must match",
    )
    p.add_argument("--out", required=True, help="checkpoint path to write")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_import_weights)

    p = sub.add_parser(
        "run",
        parents=[data_opt],
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
    add_executor_options(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("report", help="(re)write the HTML report of a run directory")
    p.add_argument("run_dir", metavar="RUNDIR")
    p.add_argument(
        "--out",
        metavar="DIR",
        help="folder to write the report into (default RUNDIR/report; e.g. for a run on "
        "read-only media)",
    )
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("export", help="export a run's records as CSV or Parquet")
    p.add_argument("run_dir", metavar="RUNDIR")
    p.add_argument("--format", choices=["csv", "parquet"], default="csv")
    p.add_argument("-o", "--out", help="output file (default RUNDIR/records.csv|.parquet)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "compare",
        help="compare where the same attacks land in two or more runs (HTML page, CSV, JSON)",
        description="Match the jobs of the runs by attack and settings and compare each run "
        "with the first: flip matrices and their difference, s, attractors, a per-class test "
        "of whether the landings differ (chi-square or permutation, corrected for the number "
        "of classes), the correlation of flip rates and, on the samples both attacked, how "
        "often both land in the same class.",
    )
    p.add_argument(
        "run_dirs", metavar="RUNDIR", nargs="+", help="run directories (first: reference)"
    )
    p.add_argument("--out", metavar="DIR", help="output folder (default: compare-A-vs-B beside A)")
    p.add_argument(
        "--alpha", type=float, default=0.05, help="level of the landing tests (default 0.05)"
    )
    p.add_argument(
        "--correction",
        choices=["holm", "bh"],
        default="holm",
        help="multiple-testing correction across classes: holm (family-wise error, the "
        "default) or bh (Benjamini-Hochberg, false discovery rate)",
    )
    p.add_argument(
        "--include-diagonal",
        action="store_true",
        help="test whole rows (failed attacks as one more class), not only where flips land",
    )
    p.set_defaults(func=cmd_compare)
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
                f"{len(st.class_names)}{' labels' if st.multilabel else ''}: "
                f"{names if len(names) <= 60 else names[:57] + '...'}",
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


def cmd_attacks(args: argparse.Namespace) -> int:
    """The registered attacks and their settings, read from the settings
    declarations (type, default, constraint and doc of every field)."""
    from labelflip.attacks import ATTACKS, get_attack
    from labelflip.attacks._registry import SHORTHANDS

    if args.name:
        print_attack(get_attack(args.name), detail=True)
        return 0
    print(
        "attacks (in a config: [[attacks]] attack = NAME, then its settings; a list of "
        "values is a grid; 'labelflip attacks NAME' for one)"
    )
    for name in sorted(ATTACKS):
        print()
        print_attack(ATTACKS[name], detail=False)
    print()
    for prefix, (base, _, library) in SHORTHANDS.items():
        print(f"{prefix}<Attack>: '{base}' with attack = <Attack>, a class of {library}")
    return 0


def print_attack(spec, *, detail: bool) -> None:
    import importlib
    import inspect

    from labelflip.attacks._registry import SHORTHANDS

    print(f"{spec.name}: {spec.description}")
    if not spec.accepts_target:
        targets = "untargeted only"
    elif spec.default_target:
        targets = f"targeted (default target strategy: {spec.default_target})"
    else:
        targets = "untargeted, or targeted with a target strategy"
    facts = [targets, f"models: {', '.join(spec.encodings)}"]
    if spec.kind != "type-ii":
        facts.append(f"kind: {spec.kind}")
    if spec.needs:
        facts.append(f"needs: {', '.join(f'[{n}]' for n in spec.needs)}")
    print("  " + "; ".join(facts))
    if detail:
        doc = inspect.getdoc(spec.impl) or ""
        first = doc.split("\n\n")[0].replace("\n", " ").replace("``", "")
        if first:
            print(f"  {first}")
    rows = [
        [s["name"], s["type"], toml_value(s["default"]), s["constraint"] or "-", s["doc"]]
        for s in spec.describe()
    ]
    if rows:
        header = ["setting", "type", "default", "constraint", "description"]
        print_table(header, rows, indent="  ")
    else:
        print("  no settings")
    for prefix, (_, module, library) in SHORTHANDS.items():
        options = getattr(importlib.import_module(module), "library_options", None)
        if detail and options is not None and spec.name.startswith(prefix):
            print(f"  options: the constructor arguments of the {library} class")
            rows = [[k, toml_value(v)] for k, v in options(spec.name[len(prefix) :])]
            print_table(["option", "default"], rows, indent="    ")


def toml_value(v) -> str:
    """A default as it is written in a config (``none`` for no value)."""
    import dataclasses

    if v is None or v is dataclasses.MISSING:
        return "none" if v is None else "(required)"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + "}"
    return str(v)


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
    from labelflip.models.training import train_and_save

    def banner(train_set, test_set) -> None:
        print(
            f"training {args.arch} on {args.dataset}: {len(train_set)} train images "
            f"({settings.val_fraction:.0%} held out for validation), {len(test_set)} test, "
            f"{encoding or 'onehot'} outputs, recipe {recipe}: "
            f"{settings.epochs} epochs, {settings.optimizer} lr {settings.lr} "
            f"({settings.schedule}), batch {settings.batch_size}, seed {settings.seed}, {device}"
            f"{adversarial_phrase(adversarial)}",
            file=sys.stderr,
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


def adversarial_phrase(adv) -> str:
    """``, adversarial ...`` for the training banner (empty for standard training)."""
    if adv is None:
        return ""
    beta = f", beta {adv.beta:g}" if adv.beta is not None else ""
    return (
        f", adversarial {adv.method} ({adv.norm} eps {adv.eps:g}, {adv.steps} step(s) of "
        f"{adv.step_size:g}{beta})"
    )


def robust_line(r: dict) -> str:
    """One line for a robust-accuracy record (see models.training.robust_test_accuracy)."""
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
        print(
            f"training svae ({settings.arch}) on {args.dataset}: {len(train_set)} train images, "
            f"{len(test_set)} test, "
            f"{settings.epochs}+{settings.dis_epochs} epochs, adam lr {settings.lr}, "
            f"batch {settings.batch_size}, latent {settings.latent_dim}, "
            f"seed {settings.seed}, {device}",
            file=sys.stderr,
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
    if args.checkpoint.startswith("zoo:"):
        from labelflip.models.zoo import zoo_path

        args.checkpoint = str(zoo_path(args.checkpoint[4:]))
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


def evaluate_robust(args: argparse.Namespace, clf, meta, ds) -> dict | None:
    """The robust accuracy ``labelflip evaluate`` reports (or ``None``)."""
    from labelflip.models.training import robust_test_accuracy

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


def cmd_run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from labelflip.config import default_config_text, load_config
    from labelflip.run import new_run_dir, run

    if args.print_default:
        print(default_config_text(), end="")
        return 0
    if args.resume:
        if args.out:
            raise LabelflipError("--resume continues RUNDIR in place; --out does not go with it")
        if args.data_dir:
            raise LabelflipError(
                "--resume continues RUNDIR with its own [data] data_dir; --data-dir does not go "
                "with it (set LABELFLIP_DATA when the run's config has no data_dir)"
            )
        from labelflip.run import stored_config

        given = load_config(args.config) if args.config else None  # must be the run's own config
        with executor_from_args(args, stored_config(Path(args.resume)).executor) as executor:
            outcome = run(
                given, resume=Path(args.resume), progress=not args.no_progress, executor=executor
            )
    else:
        cfg = load_config(args.config)
        if args.data_dir:  # --data-dir overrides [data] data_dir
            cfg = replace(cfg, data=replace(cfg.data, data_dir=args.data_dir))
        text = Path(args.config).read_text() if args.config else default_config_text()
        run_dir = Path(args.out) if args.out else new_run_dir(cfg, None)
        with executor_from_args(args, cfg.executor) as executor:
            outcome = run(
                cfg,
                config_text=text,
                run_dir=run_dir,
                progress=not args.no_progress,
                executor=executor,
            )
    report = print_summary(outcome.run_dir, write=not args.no_report)
    print(f"run directory: {outcome.run_dir} ({outcome.seconds:.0f} s)")
    if report is not None:
        print(f"report: {report}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    path = print_summary(Path(args.run_dir), write=True, out=args.out)
    print(f"report: {path}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from labelflip.store import RunStore

    run_dir = Path(args.run_dir)
    out = Path(args.out) if args.out else run_dir / f"records.{args.format}"
    with RunStore.open(run_dir, read_only=True) as store:
        if args.format == "csv":
            store.export_csv(out)
        else:
            store.export_parquet(out)
    print(out)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from labelflip.report.compare import compare, default_out, format_table, write_comparison

    if len(args.run_dirs) < 2:
        raise LabelflipError(
            f"compare needs at least two run directories, got {len(args.run_dirs)}"
        )
    comparison = compare(
        args.run_dirs,
        alpha=args.alpha,
        correction=args.correction,
        include_diagonal=args.include_diagonal,
    )
    path = write_comparison(comparison, args.out or default_out(args.run_dirs))
    print_table(*format_table(comparison))
    print(f"comparison: {path}")
    return 0


def print_summary(run_dir: Path, *, write: bool, out: str | None = None) -> Path | None:
    """Print the per-job summary table of a run (the report's table, as text)
    and, when ``write``, write the report from the same summary (into ``out``
    if given, else RUNDIR/report); returns the report's path. The run's store
    is only read (opened read-only)."""
    from labelflip.report import format_table, summarize_run, write_report
    from labelflip.report.kinds import table_notes
    from labelflip.store import RunStore

    with RunStore.open(run_dir, read_only=True) as store:
        summary = summarize_run(store)
    print_table(*format_table(summary))
    for note in table_notes(summary.jobs):  # e.g. who judges the Type I rows
        print(note)
    return write_report(run_dir, summary=summary, out=out) if write else None


# ---------------------------------------------------------------- helpers


def add_executor_options(p: argparse.ArgumentParser) -> None:
    """The options of ``labelflip run`` that choose where the attacks run."""
    g = p.add_argument_group(
        "where the attacks run",
        "The local executor (default) runs the jobs in this process. The Ray executor "
        "splits them into shards (one batch of one job each), runs those as Ray tasks and "
        "writes each finished shard into the run here, so the records, --resume and crash "
        "safety are the same (see docs/distributed.md). Needs: pip install 'labelflip[ray]'.",
    )
    g.add_argument(
        "--executor",
        choices=["local", "ray"],
        help="local or ray (default: the config's 'executor', else local)",
    )
    g.add_argument(
        "--address",
        metavar="ADDR",
        help="Ray cluster to join: the address 'ray start --head' printed (HOST:6379), 'auto' "
        "for the one started on this machine, or ray://HOST:10001 "
        "(default: $RAY_ADDRESS, else a local Ray instance started for this run)",
    )
    g.add_argument(
        "--ray-cpus",
        type=int,
        metavar="N",
        help="CPUs of the local Ray instance, i.e. shards run at once (default: all cores)",
    )
    g.add_argument(
        "--max-retries",
        type=int,
        metavar="N",
        help="times a failed shard is submitted again before the run gives up on it and ends "
        "with an error (finished shards are kept; --resume retries the rest) (default 2)",
    )
    g.add_argument(
        "--cpus-per-task",
        type=float,
        metavar="C",
        help="CPUs each shard asks Ray for (its torch threads) (default 1)",
    )
    g.add_argument(
        "--gpus-per-task",
        type=float,
        metavar="G",
        help="GPUs each shard asks Ray for when the device is CUDA; a fraction lets shards "
        "share a GPU (default 1)",
    )


def executor_from_args(args: argparse.Namespace, configured: str):
    """The executor ``labelflip run`` uses, as a context manager:
    ``--executor``, else the config's ``executor``."""
    from labelflip.run.ray import RayOptions, make_executor

    given = {
        k: getattr(args, k)
        for k in ("address", "ray_cpus", "max_retries", "cpus_per_task", "gpus_per_task")
        if getattr(args, k) is not None
    }
    options = RayOptions(**{"num_cpus" if k == "ray_cpus" else k: v for k, v in given.items()})
    flags = ["--" + k.replace("_", "-") for k in given]
    return make_executor(args.executor or configured, options, given=flags)


def resolve_device(name: str):
    """The torch device named ``name`` (``auto``: cuda when available, else cpu)."""
    from labelflip.run import resolve_device as resolve

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
        w.writerow(["true\\pred", *map(csv_cell, class_names)])
        for name, row in zip(class_names, conf, strict=True):
            w.writerow([csv_cell(name), *(int(v) for v in row)])


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]], *, indent: str = "") -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    print(indent + line.rstrip())
    print(indent + "  ".join("-" * w for w in widths))
    for r in rows:
        print(indent + "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


if __name__ == "__main__":
    sys.exit(main())
