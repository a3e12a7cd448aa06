"""RAPL sysfs reader against a real directory tree built in a temp folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from effbench.profilers.rapl import RAPL, NullRAPL, delta_uj, open_rapl

RANGE = 262_143_328_850


def zone(root: Path, name: str, label: str, energy: int | None, rng: int = RANGE) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "name").write_text(label + "\n")
    (d / "max_energy_range_uj").write_text(f"{rng}\n")
    if energy is not None:
        (d / "energy_uj").write_text(f"{energy}\n")
    return d


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    zone(tmp_path, "intel-rapl:0", "package-0", 1_000_000)
    zone(tmp_path, "intel-rapl:0:0", "dram", 500_000)
    zone(tmp_path, "intel-rapl:1", "package-1", 2_000_000)
    (tmp_path / "intel-rapl").mkdir()  # the control-type directory, not a zone
    return tmp_path


def test_zones_named_from_name_files(tree: Path) -> None:
    rapl = RAPL(tree)
    assert [z.key for z in rapl.zones()] == ["package-0", "package-0/dram", "package-1"]
    assert rapl.available() == (True, "")
    assert rapl.read_uj() == {"package-0": 1_000_000, "package-0/dram": 500_000,
                              "package-1": 2_000_000}


def test_delta_in_joules_with_wraparound(tree: Path) -> None:
    rapl = RAPL(tree)
    a = rapl.read_uj()
    (tree / "intel-rapl:0" / "energy_uj").write_text("3500000\n")
    (tree / "intel-rapl:0:0" / "energy_uj").write_text("600000\n")
    (tree / "intel-rapl:1" / "energy_uj").write_text("1000000\n")  # wrapped
    d = rapl.delta_j(a, rapl.read_uj())
    assert d["package-0"] == pytest.approx(2.5)
    assert d["package-0/dram"] == pytest.approx(0.1)
    assert d["package-1"] == pytest.approx((RANGE - 1_000_000) / 1e6)


def test_delta_uj_wrap() -> None:
    assert delta_uj(90, 10, 100) == 20
    assert delta_uj(10, 90, 100) == 80


def test_not_exposed(tmp_path: Path) -> None:
    ok, why = RAPL(tmp_path / "nope").available()
    assert not ok and why.startswith("RAPL not exposed by this kernel")
    assert isinstance(open_rapl(tmp_path), NullRAPL)
    assert open_rapl(tmp_path).read_uj() == {}


def test_missing_energy_file(tmp_path: Path) -> None:
    zone(tmp_path, "intel-rapl:0", "package-0", None)
    ok, why = RAPL(tmp_path).available()
    assert not ok and why.startswith("energy_uj missing")


def test_unreadable_energy_file(tmp_path: Path) -> None:
    d = zone(tmp_path, "intel-rapl:0", "package-0", None)
    (d / "energy_uj").mkdir()  # reads fail like a file we may not open
    ok, why = RAPL(tmp_path).available()
    assert not ok and why.startswith("cannot read energy_uj")


def test_permission_denied(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = Path.read_text

    def deny(self: Path, *a, **k) -> str:
        if self.name == "energy_uj":
            raise PermissionError(13, "Permission denied")
        return real(self, *a, **k)

    monkeypatch.setattr(Path, "read_text", deny)  # tests run as root: chmod would not block
    ok, why = RAPL(tree).available()
    assert not ok and why.startswith("permission denied reading energy_uj")
