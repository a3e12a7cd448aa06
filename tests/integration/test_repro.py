"""`effbench repro` end to end on CPU: the speculative-decoding claims (one cheap preset run),
the CLI's table and refusals, and the dashboard's Papers page over the saved table."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from effbench.suite import claim as claim_mod
from effbench.suite import repro
from effbench.suite.cli import main
from effbench.suite.rules import HOLDS, NOT_MEASURABLE

APP = str(Path(__file__).resolve().parents[2] / "dashboards" / "app.py")
CHEAP = ["speculative-lossless", "speculative-tokens-per-step", "speculative-sampling-lossless"]


@pytest.fixture(scope="module")
def decided(tmp_path_factory):
    root = tmp_path_factory.mktemp("repro")
    claims = [claim_mod.get_claim(c) for c in CHEAP]
    results = repro.repro(claims, results=str(root), log=lambda _: None)
    saved = repro.save(repro.table(results), str(root), 0.0)
    return root, {r.claim.id: r for r in results}, saved


@pytest.mark.slow
def test_cheap_claims_run_through_one_normal_run(decided):
    root, results, _ = decided
    runs = list((root / "runs").iterdir())
    assert len(runs) == 1, "the three claims share one preset, run once"
    assert (runs[0] / "records.parquet").exists()
    lossless = results["speculative-lossless"].outcome
    assert lossless.verdict == HOLDS and lossless.measured == 1.0
    formula = results["speculative-tokens-per-step"].outcome
    assert formula.verdict != NOT_MEASURABLE and "(1-a^5)/(1-a)" in formula.detail
    sampled = results["speculative-sampling-lossless"].outcome
    assert sampled.verdict == HOLDS and 0.001 <= sampled.measured <= 1.0
    assert all(r.run_id == runs[0].name for r in results.values())


@pytest.mark.slow
def test_repro_cli_json_and_resume(decided, capsys):
    root, _, _ = decided
    code = main(["repro", "speculative-lossless", "--results", str(root), "--resume",
                 "--format", "json", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0
    rows = json.loads(out[out.index("{"):])["claims"]
    assert rows[0]["claim"] == "speculative-lossless" and rows[0]["verdict"] == HOLDS
    assert len(list((root / "runs").iterdir())) == 1, "--resume reuses the finished run"


def test_repro_cli_refuses_unknown_claims(capsys):
    assert main(["repro", "speculative-losless"]) == 2
    err = capsys.readouterr().err
    assert "unknown claim 'speculative-losless'" in err and "did you mean" in err
    assert main(["repro"]) == 2
    assert "--all" in capsys.readouterr().err


@pytest.mark.slow
def test_papers_page_shows_the_table_and_a_claim_chart(decided):
    root, _, saved = decided
    st.cache_data.clear()
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["results_root"] = str(root)
    at.run()
    at.switch_page("pages/papers.py").run()
    assert not at.exception, at.exception
    at.selectbox(key="table").set_value(saved).run()
    table = at.dataframe[0].value
    assert set(table["claim"]) == set(CHEAP)
    at.selectbox(key="claim").set_value("speculative-tokens-per-step").run()
    assert not at.exception, at.exception
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    names = [trace.get("name") for trace in spec["data"]]
    assert "measured tokens_per_step" in names and "(1 - a^(k+1)) / (1 - a)" in names


def test_papers_page_without_tables_says_how_to_make_one(tmp_path):
    st.cache_data.clear()
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["results_root"] = str(tmp_path)
    at.run()
    at.switch_page("pages/papers.py").run()
    assert not at.exception
    assert any("effbench repro --all" in i.value for i in at.info)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
