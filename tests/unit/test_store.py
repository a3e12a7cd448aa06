"""Results store: journal durability and resume, Parquet round trip, listing, SQL, bad files."""

from __future__ import annotations

import json
import math
import re
import warnings
from dataclasses import replace
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from effbench.suite.errors import StoreError
from effbench.suite.records import Record
from effbench.suite.store import (
    JOURNAL,
    MANIFEST,
    PARQUET,
    RunStore,
    StoreWarning,
    frame_to_records,
    latest_run,
    list_runs,
    load_records,
    new_run_id,
    query,
    resolve_run,
)


def rec(run_id: str, case_id: str, metric: str = "latency", value: float = 0.0012, **kw) -> Record:
    fields = dict(
        run_id=run_id,
        case_id=case_id,
        technique="dense",
        family="attention",
        level="kernel",
        params={"window": 64},
        workload="prefill-256",
        device="cpu",
        metric=metric,
        value=value,
        unit="s",
        direction="lower",
        samples=(0.0011, 0.0012, 0.0013),
        stats={"median": 0.0012, "ci_low": 0.0011, "ci_high": 0.0013, "n": 3, "rel_ci": 0.08},
    )
    fields.update(kw)
    return Record(**fields)


def case(store: RunStore, case_id: str, **kw) -> list[Record]:
    """Two records (latency and memory) of one case."""
    return [
        rec(store.run_id, case_id, **kw),
        rec(store.run_id, case_id, metric="peak_memory", value=2048.0, unit="B", **kw),
    ]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "results"


def test_run_id_is_sortable_and_readable() -> None:
    run_id = new_run_id("Smoke Test!")
    assert re.fullmatch(r"\d{8}-\d{6}-smoke-test-[0-9a-f]{4}", run_id)


def test_create_writes_manifest_and_empty_journal(root: Path) -> None:
    store = RunStore.create(root, "smoke", {"device": "cpu", "preset": "smoke"})
    assert store.run_dir == root / "runs" / store.run_id
    manifest = json.loads((store.run_dir / MANIFEST).read_text())
    assert manifest["run_id"] == store.run_id
    assert manifest["name"] == "smoke"
    assert manifest["config"] == {"device": "cpu", "preset": "smoke"}
    assert manifest["finished"] is None
    for key in ("git", "host", "python", "packages", "cuda", "started", "command"):
        assert key in manifest
    assert (store.run_dir / JOURNAL).read_bytes() == b""
    assert store.completed_cases() == set()


def test_append_and_reopen(root: Path) -> None:
    store = RunStore.create(root, "smoke", {})
    store.append(case(store, "c1"))
    store.append(case(store, "c2"))
    lines = (store.run_dir / JOURNAL).read_text().splitlines()
    assert len(lines) == 4 and all(json.loads(line) for line in lines)
    reopened = RunStore.open(root, store.run_id)
    assert reopened == store
    assert reopened.completed_cases() == {"c1", "c2"}
    assert reopened.records() == case(store, "c1") + case(store, "c2")


def test_append_rejects_records_of_another_run(root: Path) -> None:
    store = RunStore.create(root, "smoke", {})
    with pytest.raises(ValueError, match="other-run"):
        store.append([rec("other-run", "c1")])


def _cut_points(data: bytes) -> dict[str, tuple[int, set[str]]]:
    ends = [i + 1 for i, b in enumerate(data) if b == ord("\n")]  # 4 line ends: c1 c1 c2 c2
    return {
        "mid-last-line": (ends[2] + 10, {"c1"}),
        "after-half-a-case": (ends[2], {"c1"}),
        "mid-first-case": (ends[0] + 5, set()),
        "intact": (ends[3], {"c1", "c2"}),
    }


@pytest.mark.parametrize("cut", ["mid-last-line", "after-half-a-case", "mid-first-case", "intact"])
def test_resume_after_kill(root: Path, cut: str) -> None:
    store = RunStore.create(root, "smoke", {})
    store.append(case(store, "c1"))
    store.append(case(store, "c2"))
    journal = store.run_dir / JOURNAL
    data = journal.read_bytes()
    size, expected = _cut_points(data)[cut]
    journal.write_bytes(data[:size])  # what a kill mid-write leaves behind

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StoreWarning)
        resumed = RunStore.open(root, store.run_id)
    assert resumed.completed_cases() == expected

    for case_id in ("c1", "c2"):  # the runner re-runs what is not complete
        if case_id not in expected:
            resumed.append(case(resumed, case_id))
    assert resumed.completed_cases() == {"c1", "c2"}
    assert resumed.records() == case(store, "c1") + case(store, "c2")
    for line in journal.read_text().splitlines():
        json.loads(line)  # the torn line was cut off, not glued to the next batch


def test_torn_line_is_reported_on_resume(root: Path) -> None:
    store = RunStore.create(root, "smoke", {})
    store.append(case(store, "c1"))
    journal = store.run_dir / JOURNAL
    journal.write_bytes(journal.read_bytes()[:-7])
    with pytest.warns(StoreWarning, match=re.escape(str(journal))):
        RunStore.open(root, store.run_id)


def test_damaged_line_inside_journal_is_named_and_skipped(root: Path) -> None:
    store = RunStore.create(root, "smoke", {})
    store.append([rec(store.run_id, "c1")])
    journal = store.run_dir / JOURNAL
    with open(journal, "ab") as f:
        f.write(b"{not json\n")
    store.append([rec(store.run_id, "c2")])
    with pytest.warns(StoreWarning, match=re.escape(f"{journal}:2")):
        assert store.completed_cases() == {"c1", "c2"}


def test_finalize_parquet_round_trip(root: Path) -> None:
    store = RunStore.create(root, "smoke", {})
    records = case(store, "c1") + [
        rec(store.run_id, "c2", value=math.nan, status="failed", error="RuntimeError: boom")
    ]
    store.append(records[:2])
    store.append(records[2:])
    manifest = store.finalize()

    assert manifest["finished"] is not None
    assert manifest["counts"] == {"cases": 2, "ok": 1, "failed": 1, "skipped": 0, "records": 3}
    assert json.loads((store.run_dir / MANIFEST).read_text())["counts"] == manifest["counts"]

    table = pq.read_table(store.run_dir / PARQUET)
    assert table.num_rows == 3
    for col in ("median", "ci_low", "ci_high", "n", "params", "stats", "samples"):
        assert col in table.column_names
    df = load_records(store.run_dir)
    assert list(df["median"]) == [0.0012] * 3 and list(df["n"]) == [3] * 3
    assert json.loads(df["params"][0]) == {"window": 64}

    back = frame_to_records(df)
    assert back[:2] == records[:2]
    assert math.isnan(back[2].value)  # NaN != NaN: compare the rest
    assert replace(back[2], value=0.0) == replace(records[2], value=0.0)


def test_append_after_finalize_drops_stale_parquet(root: Path) -> None:
    store = RunStore.create(root, "smoke", {})
    store.append(case(store, "c1"))
    store.finalize()
    resumed = RunStore.open(root, "latest")
    resumed.append(case(resumed, "c2"))
    assert not (store.run_dir / PARQUET).exists()
    assert store.manifest()["finished"] is None
    assert set(load_records(store.run_dir)["case_id"]) == {"c1", "c2"}


def test_load_records_reads_unfinalised_journal(root: Path) -> None:
    store = RunStore.create(root, "smoke", {})
    store.append(case(store, "c1"))
    df = load_records(store.run_dir)
    assert len(df) == 2 and set(df["metric"]) == {"latency", "peak_memory"}


def _runs(root: Path, names: list[str], finalize: list[bool]) -> list[RunStore]:
    stores = []
    for i, (name, fin) in enumerate(zip(names, finalize)):
        store = RunStore.create(root, name, {"device": "cpu"})
        for j in range(i + 1):
            store.append(case(store, f"c{j}", technique=f"t{i}"))
        if fin:
            store.finalize()
        stores.append(store)
    return stores


def test_list_runs_newest_first(root: Path) -> None:
    stores = _runs(root, ["a", "b", "c"], [True, False, True])
    runs = list_runs(root)
    assert list(runs["run_id"]) == [s.run_id for s in reversed(stores)]
    assert list(runs["name"]) == ["c", "b", "a"]
    assert list(runs["n_cases"]) == [3, 2, 1]
    assert list(runs["n_failed"]) == [0, 0, 0]
    assert list(runs["state"]) == ["finished", "incomplete", "finished"]
    assert runs["finished"].isna().tolist() == [False, True, False]
    assert set(runs["device"]) == {"cpu"}
    assert latest_run(root) == stores[-1].run_dir


def test_list_runs_of_empty_root(root: Path) -> None:
    assert list_runs(root).empty
    assert latest_run(root) is None


def test_resolve_run(root: Path) -> None:
    a, b = _runs(root, ["alpha", "beta"], [False, False])
    assert resolve_run(root, "latest") == b.run_dir
    assert resolve_run(root, a.run_id) == a.run_dir
    assert resolve_run(root, a.run_id[:-2]) == a.run_dir
    assert resolve_run(root, str(a.run_dir)) == a.run_dir
    with pytest.raises(StoreError, match=re.escape(b.run_id)) as err:
        resolve_run(root, "nope")
    assert "\n" not in str(err.value) and a.run_id in str(err.value)
    with pytest.raises(StoreError, match="ambiguous"):
        resolve_run(root, a.run_id[:4])


def test_query_across_runs(root: Path) -> None:
    _runs(root, ["a", "b", "c"], [True, False, True])  # t0: 1 case, t1: 2 (journal), t2: 3
    df = query(
        root,
        "SELECT technique, median(value) AS m, count(DISTINCT case_id) AS cases "
        "FROM records WHERE metric = 'latency' GROUP BY 1 ORDER BY 1",
    )
    assert list(df["technique"]) == ["t0", "t1", "t2"]
    assert list(df["cases"]) == [1, 2, 3]
    assert list(df["m"]) == pytest.approx([0.0012] * 3)
    total = query(root, "SELECT count(*) AS n, max(n) AS max_n FROM records")
    assert total["n"][0] == 12 and total["max_n"][0] == 3


def test_query_of_empty_root_and_bad_sql(root: Path) -> None:
    assert query(root, "SELECT count(*) AS n FROM records")["n"][0] == 0
    with pytest.raises(StoreError, match="query failed"):
        query(root, "SELECT nope FROM records")


def test_unwritable_root_is_one_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    bad_root = blocker / "results"
    with pytest.raises(StoreError, match="is not writable") as err:
        RunStore.create(bad_root, "smoke", {})
    message = str(err.value)
    assert str(bad_root) in message and "\n" not in message


def test_corrupt_parquet_is_named_and_others_still_list(root: Path) -> None:
    good, bad = _runs(root, ["good", "bad"], [True, True])
    parquet = bad.run_dir / PARQUET
    parquet.write_bytes(b"PAR1 this is not parquet")
    with pytest.warns(StoreWarning, match=re.escape(str(parquet))):
        runs = list_runs(root)
    states = dict(zip(runs["run_id"], runs["state"]))
    assert states == {good.run_id: "finished", bad.run_id: "corrupt"}

    with pytest.warns(StoreWarning, match=re.escape(str(parquet))):
        df = load_records(bad.run_dir)  # falls back to the journal
    assert len(df) == 4
    with pytest.warns(StoreWarning, match=re.escape(str(parquet))):
        n = query(root, "SELECT count(*) AS n FROM records")["n"][0]
    assert n == 2 + 4


def test_corrupt_manifest_is_named_and_others_still_list(root: Path) -> None:
    good, bad = _runs(root, ["good", "bad"], [True, False])
    manifest = bad.run_dir / MANIFEST
    manifest.write_text("{not json")
    with pytest.warns(StoreWarning, match=re.escape(str(manifest))):
        runs = list_runs(root)
    assert len(runs) == 2
    assert runs.set_index("run_id").loc[good.run_id, "state"] == "finished"
    assert runs.set_index("run_id").loc[bad.run_id, "state"] == "corrupt"
    with pytest.raises(StoreError, match=re.escape(str(manifest))):
        RunStore.open(root, bad.run_id)
