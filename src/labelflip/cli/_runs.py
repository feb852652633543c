"""The subcommands about runs: ``datasets``, ``attacks``, ``run``, ``report``,
``export``, ``compare``."""

from __future__ import annotations

import argparse
from pathlib import Path

from labelflip.cli._common import print_table
from labelflip.errors import LabelflipError


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


def cmd_attacks(args: argparse.Namespace) -> int:
    """The registered attacks and their settings, read from the settings
    declarations (type, default, constraint and doc of every field)."""
    from labelflip.attacks import ATTACKS, SHORTHANDS, get_attack

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

    from labelflip.attacks import SHORTHANDS

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
                given,
                resume=Path(args.resume),
                progress=not args.no_progress,
                executor=executor,
                threads=args.threads,
            )
    else:
        cfg = load_config(args.config)
        if args.data_dir:  # --data-dir overrides [data] data_dir
            cfg = replace(cfg, data=replace(cfg.data, data_dir=args.data_dir))
        if args.threads is not None:  # recorded in config.json: --resume keeps it
            cfg = replace(cfg, threads=args.threads)
        text = Path(args.config).read_text() if args.config else default_config_text()
        run_dir = Path(args.out) if args.out else new_run_dir(cfg, None)
        with executor_from_args(args, cfg.executor) as executor:
            outcome = run(
                cfg,
                config_text=text,
                run_dir=run_dir,
                progress=not args.no_progress,
                executor=executor,
                threads=args.threads,
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
    from labelflip.report.summary import invalid_note
    from labelflip.store import RunStore

    with RunStore.open(run_dir, read_only=True) as store:
        summary = summarize_run(store)  # one snapshot of the store
    print_table(*format_table(summary))
    for note in table_notes(summary.jobs):  # e.g. who judges the Type I rows
        print(note)
    invalid = invalid_note(summary)  # records with non-finite logits, left out of the numbers
    if invalid is not None:
        print(invalid)
    return write_report(run_dir, summary=summary, out=out) if write else None


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
