"""The command line: every subcommand and its options (argparse only)."""

from __future__ import annotations

import argparse
from typing import NoReturn

from labelflip.cli._models import (
    cmd_evaluate,
    cmd_import_weights,
    cmd_models,
    cmd_train,
)
from labelflip.cli._runs import (
    cmd_attacks,
    cmd_compare,
    cmd_datasets,
    cmd_export,
    cmd_report,
    cmd_run,
)

EXIT_USAGE = 2


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
        "--adv-eps-ramp",
        type=float,
        metavar="EPOCHS",
        help="grow the training eps (and step) linearly from 0 over the first EPOCHS epochs "
        "(default 0: the full eps from the start)",
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
    p.add_argument(
        "--threads",
        type=_thread_count,
        metavar="N",
        help="torch CPU threads for the run, overriding the config's 'threads' (default: "
        "OMP_NUM_THREADS if set, else 1 on a CPU; more only pays on an otherwise idle CPU; "
        "records are reproducible for a given count)",
    )
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


def _thread_count(text: str) -> int:
    """``--threads``: an integer in [1, 1024] (argparse's one-line usage error otherwise)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if not 1 <= value <= 1024:
        raise argparse.ArgumentTypeError(f"must be >= 1 and <= 1,024, got {value}")
    return value


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
