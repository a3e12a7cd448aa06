"""A level's artifacts folder and the serving timelines file format."""

import math
from types import SimpleNamespace

import pyarrow.parquet as pq
import pytest

from effbench.suite import artifacts
from effbench.suite.serving_metrics import (
    TIMELINES_SCHEMA,
    RequestTimeline,
    load_timelines,
    serving_summary,
    write_timelines,
)


def test_case_folder_paths_are_relative_to_the_run_and_never_reused(tmp_path):
    folder = artifacts.CaseArtifacts(tmp_path, 7)
    path, rel = folder.path("serving_timelines.parquet")
    assert rel == "artifacts/0007/serving_timelines.parquet"
    assert path == tmp_path / rel and path.parent.is_dir()
    path.write_bytes(b"attempt 1")
    again, rel2 = folder.path("serving_timelines.parquet")  # a re-measured case
    assert rel2 == "artifacts/0007/serving_timelines-2.parquet" and not again.exists()
    same, _ = folder.path("serving_timelines.parquet", fresh=False)
    assert same == path


def test_for_case_is_none_without_a_runner():
    assert artifacts.for_case(SimpleNamespace(memo={})) is None
    assert artifacts.for_case(object()) is None
    folder = artifacts.CaseArtifacts("r", 0)
    assert artifacts.for_case(SimpleNamespace(memo={artifacts.KEY: folder})) is folder


# odd floats on purpose: the file must hand back exactly these bits
RUN = [
    RequestTimeline(0.0, ((0.1 + 0.2, 1), (0.7000000000000001, 3), (1.1, 1)), prompt_tokens=10),
    RequestTimeline(0.2, ((0.4, 2),), prompt_tokens=5),
    RequestTimeline(0.5, (), prompt_tokens=4, finished=False),
]


def test_timelines_round_trip_bit_for_bit(tmp_path):
    path = write_timelines(tmp_path / "t.parquet", RUN, ids=[3, 1, 2],
                           metadata={"case_id": "serving:x"})
    back = load_timelines(path)
    assert back == RUN  # dataclass equality: every float identical
    table = pq.read_table(path)
    assert table.column("request").to_pylist() == [3, 1, 2]
    assert table.column("output_tokens").to_pylist() == [5, 2, 0]
    meta = table.schema.metadata
    assert meta[b"effbench.schema"].decode() == TIMELINES_SCHEMA
    assert meta[b"case_id"] == b"serving:x"
    a, b = serving_summary(RUN), serving_summary(back)
    for name in ("ttft", "tpot", "itl", "e2e"):
        va, vb = a[name]["values"], b[name]["values"]
        assert all(x == y or (math.isnan(x) and math.isnan(y)) for x, y in zip(va, vb))


def test_load_refuses_another_file(tmp_path):
    import pyarrow as pa

    other = tmp_path / "other.parquet"
    pq.write_table(pa.table({"x": [1]}), other)
    with pytest.raises(ValueError, match="not a serving timelines file"):
        load_timelines(other)
    with pytest.raises(ValueError, match="ids"):
        write_timelines(tmp_path / "bad.parquet", RUN, ids=[0])
