"""Tests of the run directory's record store (labelflip.store)."""

from __future__ import annotations

import csv
import dataclasses
import inspect
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import labelflip
from labelflip.errors import LabelflipError
from labelflip.store import OPTIONAL_COLUMNS, RECORD_COLUMNS, SCHEMA_VERSION, Job, RunStore


def expected(j: int, samples, shape=(1, 6, 5)) -> tuple[dict, np.ndarray]:
    """Deterministic records and float32 examples of job number ``j`` (also
    run, via its source, in the writer subprocesses of the SIGKILL test)."""
    s = np.asarray(samples, dtype=np.int64)
    l1 = np.sqrt(s + 0.5 + j)
    l1[s % 7 == 3] = np.nan
    rec = {
        "sample": s,
        "index": 1000 + 3 * s,
        "true": s % 10,
        "clean_pred": (s * 3 + j) % 10,
        "adv_pred": (s * 7 + j) % 10,
        "target": np.where(s % 2 == 0, (s + 1) % 10, -1),
        "success": (s + j) % 3 != 0,
        "l0": s * 11,
        "l1": l1,
        "l2": 1.0 / (s + 1.0 + j),
        "linf": np.float64(np.pi) * s,
        "iterations": s % 13,
        "forwards": s % 5 + 1,
        "backwards": s % 5,
        "seconds": np.full(s.shape, 0.125 * (j + 1)),
    }
    if j % 2 == 0:  # the optional columns: given for even jobs, defaults for odd ones
        rec["oracle_pred"] = (s * 5 + j) % 10
        rec["attacker_pred"] = np.where(s % 3 == 0, -1, (s + 2) % 10)
        rec["squeeze"] = np.where(s % 4 == 1, np.nan, s / 7.0)
    x = np.zeros((len(s), *shape), np.float32)
    for k, i in enumerate(s):
        x[k] = np.random.default_rng([j, int(i)]).standard_normal(shape)
    return rec, x


N_SAMPLES = 600
BATCH = 8

WRITER_SRC = f"""
import sys
import numpy as np
from labelflip.store import RunStore
{inspect.getsource(expected)}
with RunStore.open(sys.argv[1]) as store:
    print("ready", flush=True)
    for j, job in enumerate(store.jobs()):
        if store.job_status(job.job_id) == "done":
            continue
        done = set(store.done_samples(job.job_id).tolist())
        for start in range(0, {N_SAMPLES}, {BATCH}):
            batch = [s for s in range(start, min(start + {BATCH}, {N_SAMPLES})) if s not in done]
            if batch:
                rec, x = expected(j, batch)
                store.write_batch(job.job_id, rec, x_adv=x)
                print("batch", flush=True)
        store.mark_done(job.job_id)
print("finished", flush=True)
"""


def make_job(job_id: str = "pgd-linf-eps0.1", **changes) -> Job:
    fields = dict(
        job_id=job_id,
        attack="pgd",
        settings={"eps": 0.1, "norm": "linf", "steps": 10},
        seed=7,
        model_sha256="ab" * 32,
        versions={"numpy": "2.0", "torch": "2.4"},
        label="PGD L∞ ε=0.1",
        group="pgd-linf",
        sweep_value=0.1,
    )
    fields.update(changes)
    return Job(**fields)


@pytest.fixture
def store(tmp_path: Path):
    with RunStore.create(tmp_path / "run", meta={"dataset": "digits", "split": "test"}) as s:
        yield s


def assert_one_line(exc_info: pytest.ExceptionInfo) -> str:
    message = str(exc_info.value)
    assert message and "\n" not in message
    return message


def assert_records_equal(got: dict, want: dict) -> None:
    n = len(want["sample"])
    for name in RECORD_COLUMNS[1:]:
        value = want[name] if name in want else np.full(n, OPTIONAL_COLUMNS[name])
        np.testing.assert_array_equal(got[name], np.asarray(value), err_msg=name)


# ---------------------------------------------------------------- lifecycle


def test_create_and_open_keep_meta(tmp_path: Path) -> None:
    run = tmp_path / "a" / "run"
    with RunStore.create(run, meta={"dataset": "digits", "bounds": np.array([0.0, 1.0])}) as s:
        s.set_meta("class_names", [str(i) for i in range(10)])
        s.set_meta("dataset", "mnist")  # replaces
        s.set_meta("noise_pred", np.arange(3, dtype=np.int64))
    assert sorted(os.listdir(run)) == ["records.sqlite"]  # no temporary left behind
    with RunStore.open(run) as s:
        assert s.all_meta() == {
            "bounds": [0.0, 1.0],
            "class_names": [str(i) for i in range(10)],
            "dataset": "mnist",
            "noise_pred": [0, 1, 2],
        }
        assert s.meta("split") is None
        assert s.meta("split", "test") == "test"
        with sqlite3.connect(run / "records.sqlite") as con:
            assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_create_refuses_an_existing_store(store: RunStore) -> None:
    with pytest.raises(LabelflipError, match="already holds a run store") as exc:
        RunStore.create(store.run_dir, meta={})
    assert_one_line(exc)
    (store.run_dir / "file").touch()
    with pytest.raises(LabelflipError, match="is a file"):
        RunStore.create(store.run_dir / "file", meta={})


def test_meta_must_be_json(store: RunStore, tmp_path: Path) -> None:
    with pytest.raises(LabelflipError, match="not JSON-serialisable") as exc:
        store.set_meta("x", object())
    assert_one_line(exc)
    with pytest.raises(LabelflipError, match="not JSON-serialisable"):
        RunStore.create(tmp_path / "other", meta={"x": {1, 2}})
    assert not (tmp_path / "other" / "records.sqlite").exists()


def test_open_refuses_what_is_not_a_store(tmp_path: Path) -> None:
    with pytest.raises(LabelflipError, match="does not exist") as exc:
        RunStore.open(tmp_path / "missing")
    assert_one_line(exc)
    with pytest.raises(LabelflipError, match="not a labelflip run directory") as exc:
        RunStore.open(tmp_path)
    assert_one_line(exc)

    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "records.sqlite").write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(LabelflipError, match="not a readable labelflip run store") as exc:
        RunStore.open(garbage)
    assert_one_line(exc)

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    with sqlite3.connect(foreign / "records.sqlite") as con:
        con.execute("CREATE TABLE t (x)")
    con.close()
    before = (foreign / "records.sqlite").read_bytes()
    with pytest.raises(LabelflipError, match="not a labelflip run store") as exc:
        RunStore.open(foreign)
    assert_one_line(exc)
    assert (foreign / "records.sqlite").read_bytes() == before  # left untouched

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "records.sqlite").touch()
    with pytest.raises(LabelflipError, match="not a labelflip run store"):
        RunStore.open(empty)


# ---------------------------------------------------------------- jobs


def test_add_job_is_idempotent_and_refuses_changes(store: RunStore) -> None:
    a, b = make_job("b-first"), make_job("a-second", seed=8, sweep_value=None)
    store.add_job(a)
    store.add_job(b)
    store.add_job(make_job("b-first"))  # identical: no-op
    assert store.jobs() == [a, b]  # insertion order, not alphabetical
    assert store.jobs()[1].sweep_value is None
    for change in (
        {"seed": 8},
        {"settings": {"eps": 0.2, "norm": "linf", "steps": 10}},
        {"model_sha256": "cd" * 32},
        {"versions": {"numpy": "2.1", "torch": "2.4"}},
    ):
        with pytest.raises(LabelflipError, match="different settings for job 'b-first'") as exc:
            store.add_job(make_job("b-first", **change))
        assert next(iter(change)) in assert_one_line(exc)
    assert store.jobs() == [a, b]


def test_add_job_validates(store: RunStore) -> None:
    with pytest.raises(LabelflipError, match="not JSON-serialisable"):
        store.add_job(make_job(settings={"eps": object()}))
    with pytest.raises(LabelflipError, match="seed"):
        store.add_job(make_job(seed="7"))
    with pytest.raises(LabelflipError, match="must not be empty"):
        store.add_job(make_job(""))
    assert store.jobs() == []


def test_job_status(store: RunStore) -> None:
    store.add_job(make_job("j"))
    assert store.job_status("j") == "pending"
    store.mark_done("j")
    assert store.job_status("j") == "done"
    for call in (store.job_status, store.mark_done, store.done_samples):
        with pytest.raises(LabelflipError, match="no job 'nope'"):
            call("nope")


# ---------------------------------------------------------------- records


def test_records_round_trip_with_dtypes(store: RunStore) -> None:
    store.add_job(make_job("first"))
    store.add_job(make_job("second"))
    # Batches arrive out of order; records() sorts by job insertion, then sample.
    rec, _ = expected(1, [5, 2, 9])
    store.write_batch("second", rec)
    rec, _ = expected(0, [4, 6])
    rec["l2"] = np.array([np.inf, -0.0])
    rec["success"] = rec["success"].astype(np.int64)  # 0/1 ints are fine too
    store.write_batch("first", rec)
    rec, _ = expected(0, [1, 0, 3])
    rec["job_id"] = np.array(["first"] * 3)  # optional, must match
    store.write_batch("first", rec)

    got = store.records()
    assert got["job_id"].tolist() == ["first"] * 5 + ["second"] * 3
    assert got["job_id"].dtype.kind == "U"
    assert got["sample"].tolist() == [0, 1, 3, 4, 6, 2, 5, 9]
    for name in RECORD_COLUMNS[1:]:
        want = (
            np.bool_
            if name in ("success", "valid")
            else np.float64
            if name in {"l1", "l2", "linf", "seconds", "squeeze"}
            else np.int64
        )
        assert got[name].dtype == want, name
    first = expected(0, [0, 1, 3, 4, 6])[0]
    first["l2"][3:] = [np.inf, -0.0]
    assert_records_equal(store.records("first"), first)
    assert np.signbit(store.records("first")["l2"][4])
    assert math.isnan(store.records("first")["l1"][2])  # sample 3: NaN survives
    assert_records_equal(store.records("second"), expected(1, [2, 5, 9])[0])
    assert store.done_samples("first").tolist() == [0, 1, 3, 4, 6]
    assert store.done_samples("second").dtype == np.int64


ADDED_BY = {  # the optional record columns each schema version added
    2: ("oracle_pred", "attacker_pred", "squeeze"),
    3: ("valid",),
}


def old_store(tmp_path: Path, version: int) -> tuple[Path, dict]:
    """A store as schema ``version`` wrote it (the later columns dropped),
    holding three records of job ``j``; returns its run directory and them."""
    run = tmp_path / f"v{version}"
    with RunStore.create(run, meta={}) as s:
        s.add_job(make_job("j"))
    later = [name for v, names in ADDED_BY.items() if v > version for name in names]
    with sqlite3.connect(run / "records.sqlite") as con:
        for name in later:
            con.execute(f'ALTER TABLE records DROP COLUMN "{name}"')
        full, _ = expected(0, [0, 1, 2])
        rec = {k: v for k, v in full.items() if k not in later}  # what that version stored
        cols = [c for c in RECORD_COLUMNS[1:] if c in rec]
        rows = [("j", *(np.asarray(rec[c]).tolist()[i] for c in cols)) for i in range(3)]
        quoted = ", ".join(f'"{c}"' for c in cols)
        con.executemany(
            f"INSERT INTO records (job_id, {quoted}) VALUES ({', '.join('?' * (len(cols) + 1))})",
            rows,
        )
        con.execute(f"PRAGMA user_version={version}")
    return run, rec


def test_the_versions_cover_every_optional_column() -> None:
    assert SCHEMA_VERSION == max(ADDED_BY)
    assert {n for names in ADDED_BY.values() for n in names} == set(OPTIONAL_COLUMNS)


@pytest.mark.parametrize("version", [1, 2])
def test_older_store_is_upgraded_in_place(tmp_path: Path, version: int) -> None:
    """A store written by schema version 1 (no oracle/attacker/squeeze
    columns) or 2 (no ``valid``) opens as the current version: old records
    read back with the defaults (valid) and new batches may carry the new
    columns."""
    run, rec = old_store(tmp_path, version)
    with RunStore.open(run) as s:
        assert_records_equal(s.records("j"), rec)
        assert s.records("j")["valid"].all()
        new, _ = expected(0, [3, 4])
        new["valid"] = np.array([True, False])
        s.write_batch("j", new)
        assert_records_equal(
            s.records("j"),
            {
                k: np.concatenate(
                    [
                        np.asarray(rec.get(k, np.full(3, OPTIONAL_COLUMNS.get(k, 0)))),
                        np.asarray(new[k]),
                    ]
                )
                for k in new
            },
        )
    with sqlite3.connect(run / "records.sqlite") as con:
        assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_older_store_reads_read_only_without_upgrade(tmp_path: Path) -> None:
    """Reading commands open stores read-only: a version-2 store (every run
    made before ``valid``) reads as it is, its records valid, and stays version 2."""
    run, rec = old_store(tmp_path, 2)
    with RunStore.open(run, read_only=True) as s:
        got = s.records()
        assert_records_equal(got, rec)
        assert got["valid"].dtype == np.bool_ and got["valid"].all()
    with sqlite3.connect(run / "records.sqlite") as con:
        assert con.execute("PRAGMA user_version").fetchone()[0] == 2
        have = {r[1] for r in con.execute("PRAGMA table_info(records)")}
    assert "valid" not in have


def test_valid_must_be_boolean(store: RunStore) -> None:
    store.add_job(make_job("j"))
    rec, _ = expected(0, [0, 1])
    rec["valid"] = np.array([1, 2])
    with pytest.raises(LabelflipError, match="record column 'valid' must hold 0/1 or booleans"):
        store.write_batch("j", rec)


def test_only_valid_leaves_out_invalid_rows() -> None:
    from labelflip.store import only_valid

    rec = {"sample": np.arange(4), "valid": np.array([True, False, True, False])}
    kept, dropped = only_valid(rec)
    assert dropped == 2 and kept["sample"].tolist() == [0, 2]
    kept, dropped = only_valid({"sample": np.arange(3)})  # no column: all valid
    assert dropped == 0 and kept["sample"].tolist() == [0, 1, 2]


def test_add_jobs_is_one_transaction(store: RunStore) -> None:
    """Many jobs are registered at once; identical ones already there are kept;
    one that differs refuses the whole list (none of it is added)."""
    jobs = [make_job(f"j{i}") for i in range(300)]
    store.add_jobs(jobs[:100])
    store.add_jobs(jobs)  # the first 100 again, identical: kept
    assert [j.job_id for j in store.jobs()] == [j.job_id for j in jobs]
    changed = dataclasses.replace(jobs[5], seed=99)
    with pytest.raises(LabelflipError, match="different settings for job 'j5'"):
        store.add_jobs([make_job("late"), changed])
    assert "late" not in {j.job_id for j in store.jobs()}
    with pytest.raises(LabelflipError, match="job 'x' is given twice"):
        store.add_jobs([make_job("x"), make_job("x")])


def test_snapshot_reads_one_state(tmp_path: Path) -> None:
    """Inside ``snapshot()`` a reader sees the store as it was when the block
    began, whatever a writer commits meanwhile; ``progress()`` counts it."""
    run = tmp_path / "run"
    with RunStore.create(run, meta={}) as writer:
        writer.add_job(make_job("j"))
        writer.write_batch("j", expected(0, [0, 1])[0])
        with RunStore.open(run, read_only=True) as reader:
            with reader.snapshot():
                before = reader.progress()
                writer.write_batch("j", expected(0, [2, 3, 4])[0])
                writer.mark_done("j")
                assert len(reader.records("j")["sample"]) == 2
                assert reader.job_status("j") == "pending"
                assert reader.progress() == before == {"records": 2, "jobs_done": 0}
            assert reader.progress() == {"records": 5, "jobs_done": 1}


def test_records_of_an_empty_store(store: RunStore) -> None:
    got = store.records()
    assert set(got) == set(RECORD_COLUMNS)
    assert all(len(v) == 0 for v in got.values())
    assert got["success"].dtype == np.bool_ and got["l2"].dtype == np.float64


def test_float64_columns_are_bit_exact(store: RunStore) -> None:
    store.add_job(make_job("j"))
    rng = np.random.default_rng(1)
    values = np.concatenate(
        [
            rng.standard_normal(20) * 10.0 ** rng.integers(-300, 300, 20),
            [5e-324, 1.7976931348623157e308, -np.inf, 0.1 + 0.2, -0.0, 0.0, 3.0],
        ]
    )
    rec, _ = expected(0, np.arange(len(values)))
    rec["linf"] = values
    store.write_batch("j", rec)
    np.testing.assert_array_equal(
        store.records("j")["linf"].view(np.uint64), values.view(np.uint64)
    )


def test_adversarials_are_bit_exact_float32(store: RunStore) -> None:
    store.add_job(make_job("j"))
    store.add_job(make_job("no-x"))
    rec, x = expected(0, [10, 11, 12, 13])
    x.reshape(4, -1)[:, :5] = [[np.nan, -0.0, 1e-45, np.inf, 3.4028235e38]] * 4
    store.write_batch("j", rec, x_adv=x)
    store.write_batch("no-x", rec)

    got = store.adversarials("j", [12, 10, 12])
    assert got.dtype == np.float32 and got.shape == (3, 1, 6, 5)
    np.testing.assert_array_equal(got.view(np.uint32), x[[2, 0, 2]].view(np.uint32))
    assert store.adversarials("j", np.array([13])).shape == (1, 1, 6, 5)
    with pytest.raises(LabelflipError, match=r"no stored adversarial example .*\[99\]") as exc:
        store.adversarials("j", [10, 99])
    assert_one_line(exc)
    with pytest.raises(LabelflipError, match="no stored adversarial"):
        store.adversarials("no-x", [10])


def test_duplicate_writes_are_refused_atomically(store: RunStore) -> None:
    store.add_job(make_job("j"))
    rec, x = expected(0, [0, 1, 2])
    store.write_batch("j", rec, x_adv=x)
    rec2, x2 = expected(0, [3, 2, 4])  # 2 exists; 3 and 4 must not be written either
    rec2["l0"] = rec2["l0"] + 1
    with pytest.raises(LabelflipError, match=r"already has records for sample\(s\) \[2\]") as exc:
        store.write_batch("j", rec2, x_adv=x2)
    assert_one_line(exc)
    assert store.done_samples("j").tolist() == [0, 1, 2]
    assert_records_equal(store.records("j"), rec)  # nothing overwritten
    with pytest.raises(LabelflipError, match="no stored adversarial"):
        store.adversarials("j", [3])
    # The store is still usable after a refused batch.
    store.write_batch("j", *expected(0, [3, 4]))
    assert store.done_samples("j").tolist() == [0, 1, 2, 3, 4]


def _bad_batches():
    rec, x = expected(0, [0, 1, 2])

    def changed(**kw):
        out = dict(rec)
        for k, v in kw.items():
            if v is None:
                del out[k]
            else:
                out[k] = v
        return out

    cases = [
        ("missing", changed(l2=None), None, "missing l2"),
        ("extra", changed(foo=np.zeros(3)), None, "unknown foo"),
        ("length", changed(l1=np.zeros(2)), None, "different lengths"),
        ("2d", changed(l0=np.zeros((3, 1))), None, "must be 1-D"),
        ("fraction", changed(true=np.array([0.5, 1, 2])), None, "whole numbers"),
        ("strings", changed(target=np.array(["a", "b", "c"])), None, "integers"),
        ("success", changed(success=np.array([0, 2, 1])), None, "0/1"),
        ("repeat", changed(sample=np.array([1, 1, 2])), None, r"repeats sample\(s\) \[1\]"),
        ("negative", changed(sample=np.array([-1, 0, 1])), None, "negative"),
        ("job_id", changed(job_id=np.array(["j", "k", "j"])), None, "another job_id"),
        ("x_len", rec, x[:2], "one example per record"),
        ("x_dtype", rec, np.array(["a", "b", "c"]), "float array"),
    ]
    return [pytest.param(*case[1:], id=case[0]) for case in cases]


@pytest.mark.parametrize("records, x_adv, match", _bad_batches())
def test_invalid_batches_are_one_line_errors(store, records, x_adv, match) -> None:
    store.add_job(make_job("j"))
    with pytest.raises(LabelflipError, match=match) as exc:
        store.write_batch("j", records, x_adv=x_adv)
    assert_one_line(exc)
    assert len(store.done_samples("j")) == 0


def test_write_to_unknown_job(store: RunStore) -> None:
    with pytest.raises(LabelflipError, match="no job 'ghost'") as exc:
        store.write_batch("ghost", expected(0, [0])[0])
    assert_one_line(exc)


# ---------------------------------------------------------------- export


def _fill_for_export(store: RunStore) -> None:
    store.add_job(make_job("a"))
    store.add_job(make_job("b", attack="fgsm", label="FGSM", group="fgsm", sweep_value=None))
    store.write_batch("b", expected(1, [0, 1])[0])
    store.write_batch("a", expected(0, [2, 3, 4])[0])


def test_export_csv(store: RunStore, tmp_path: Path) -> None:
    _fill_for_export(store)
    out = store.export_csv(tmp_path / "out" / "records.csv")
    assert sorted(os.listdir(tmp_path / "out")) == ["records.csv"]
    with open(out, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == [
        "job_id", "attack", "label", "group", "sweep_value", "dataset", "split",
        *RECORD_COLUMNS[1:],
    ]  # fmt: skip
    assert [r["job_id"] for r in rows] == ["a"] * 3 + ["b"] * 2
    assert {r["dataset"] for r in rows} == {"digits"} and {r["split"] for r in rows} == {"test"}
    assert rows[0]["label"] == "PGD L∞ ε=0.1" and rows[0]["sweep_value"] == "0.1"
    assert rows[3]["attack"] == "fgsm" and rows[3]["sweep_value"] == ""
    recs = store.records()
    for name in RECORD_COLUMNS[1:]:
        col = [r[name] for r in rows]
        if name in ("success", "valid"):
            assert col == [str(int(v)) for v in recs[name]]
        elif recs[name].dtype == np.float64:  # NaN ("none") as an empty cell
            assert [c == "" for c in col] == np.isnan(recs[name]).tolist(), name
            got = np.array([np.nan if c == "" else float(c) for c in col])
            np.testing.assert_array_equal(got, recs[name])
        elif name in NONE_MARKED:  # -1 ("no class") as an empty cell
            assert col == ["" if v == -1 else str(v) for v in recs[name].tolist()], name
        else:
            assert [int(v) for v in col] == recs[name].tolist()
    # the fixture holds each kind of "none": untargeted rows, no oracle, NaN l1
    for name in ("target", "oracle_pred", "attacker_pred", "l1", "squeeze"):
        assert "" in [r[name] for r in rows] and "-1" not in [r[name] for r in rows], name


# The int columns whose -1 means "no class" (untargeted, no oracle, no
# attacker's class, non-finite logits): null when exported.
NONE_MARKED = ("adv_pred", "target", "oracle_pred", "attacker_pred")


def test_export_parquet(store: RunStore, tmp_path: Path) -> None:
    _fill_for_export(store)
    out = store.export_parquet(tmp_path / "records.parquet")
    table = pq.read_table(out)
    got = table.to_pydict()
    recs = store.records()
    assert got["job_id"] == recs["job_id"].tolist()
    assert got["attack"] == ["pgd"] * 3 + ["fgsm"] * 2
    assert got["sweep_value"] == [0.1] * 3 + [None] * 2
    assert got["dataset"] == ["digits"] * 5 and got["split"] == ["test"] * 5
    for name in RECORD_COLUMNS[1:]:
        want = recs[name].tolist()
        if name in NONE_MARKED:
            want = [None if v == -1 else v for v in want]
        elif recs[name].dtype == np.float64:
            want = [None if np.isnan(v) else v for v in want]
        elif name in ("success", "valid"):
            want = [bool(v) for v in want]
        assert got[name] == want, name
    assert None in got["target"] and None in got["oracle_pred"] and None in got["l1"]
    assert str(table.schema.field("success").type) == "bool"
    assert str(table.schema.field("target").type) == "int64"
    assert b"labelflip.jobs" in table.schema.metadata
    # Overwriting is atomic: the old file is replaced, no temporary left.
    store.write_batch("a", expected(0, [5])[0])
    store.export_parquet(out)
    assert pq.read_table(out).num_rows == 6
    assert sorted(os.listdir(tmp_path)) == ["records.parquet", "run"]


# ---------------------------------------------------------------- SIGKILL


def _spawn_writer(run_dir: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(Path(labelflip.__file__).parents[1]))
    return subprocess.Popen(
        [sys.executable, "-c", WRITER_SRC, str(run_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _check_consistent(run_dir: Path, n_jobs: int) -> int:
    """Every batch whole or absent, no duplicates, x_adv with each record; returns rows."""
    total = 0
    with RunStore.open(run_dir) as s:
        jobs = s.jobs()
        assert len(jobs) == n_jobs
        for j, job in enumerate(jobs):
            done = s.done_samples(job.job_id)
            assert np.all(np.diff(done) > 0)  # sorted, no duplicates
            for start in range(0, N_SAMPLES, BATCH):
                k = np.count_nonzero((done >= start) & (done < start + BATCH))
                assert k in (0, min(BATCH, N_SAMPLES - start)), (job.job_id, start, k)
            if s.job_status(job.job_id) == "done":
                assert len(done) == N_SAMPLES
            rec, x = expected(j, done)
            assert_records_equal(s.records(job.job_id), rec)
            if len(done):
                got = s.adversarials(job.job_id, done)
                np.testing.assert_array_equal(got.view(np.uint32), x.view(np.uint32))
            total += len(done)
    with sqlite3.connect(run_dir / RunStore.FILENAME) as con:
        assert con.execute("SELECT COUNT(*) FROM adversarials").fetchone()[0] == total
    con.close()
    return total


def test_sigkill_at_any_moment_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    n_jobs = 3
    with RunStore.create(run_dir, meta={"dataset": "synthetic"}) as s:
        for j in range(n_jobs):
            s.add_job(make_job(f"job{j}", seed=j))
    rng = np.random.default_rng()
    n_batches = n_jobs * -(-N_SAMPLES // BATCH)
    progress = [0]
    for attempt in range(5):
        # Kill after a random number of the writer's batches (none in the first
        # attempt) plus a random delay, so kills land anywhere in a write.
        left = n_batches - progress[-1] // BATCH
        wait_batches = 0 if attempt == 0 else int(rng.integers(1, left // 4 + 2))
        proc = _spawn_writer(run_dir)
        try:
            assert proc.stdout.readline() == "ready\n", proc.stderr.read()
            for _ in range(wait_batches):
                proc.stdout.readline()
            time.sleep(rng.uniform(0.0, 0.005))
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.wait(timeout=30)
            proc.stdout.close()
            proc.stderr.close()
        assert proc.returncode == -signal.SIGKILL
        progress.append(_check_consistent(run_dir, n_jobs))
        assert progress[-1] >= progress[-2]  # committed batches are never lost
    total = n_jobs * N_SAMPLES
    assert sum(0 < p < total for p in progress) >= 3, f"kills missed the writer: {progress}"

    proc = _spawn_writer(run_dir)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out.endswith("finished\n")
    assert _check_consistent(run_dir, n_jobs) == total
    with RunStore.open(run_dir) as s:
        assert [s.job_status(f"job{j}") for j in range(n_jobs)] == ["done"] * n_jobs
        got = s.records()
        assert got["job_id"].tolist() == [
            f"job{j}" for j in range(n_jobs) for _ in range(N_SAMPLES)
        ]
        for j in range(n_jobs):
            assert_records_equal(s.records(f"job{j}"), expected(j, np.arange(N_SAMPLES))[0])
