"""``symtool plot``: figures of the fixtures' reports are written, non-blank and stable."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from symtool.cli.app import app
from symtool.report import figure_parts, figures_align, plot, schema

pytest.importorskip("matplotlib")

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "fixtures"
runner = CliRunner()


def _invoke(*args: str, input: str | None = None):
    return runner.invoke(app, list(args), input=input, env={"COLUMNS": "200"})


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One report of each kind from the fixtures (few checkpoints), saved as files."""
    folder = tmp_path_factory.mktemp("reports")
    matrices = folder / "matrices.safetensors"
    runs = {
        "align": [
            "align", str(FIX / "mlp_wd"), "--last", "3", "--null-samples", "4",
            "--bootstrap", "10", "--save-matrices", str(matrices),
        ],
        "symmetry": ["symmetry", str(FIX / "mlp_wd"), "--last", "3"],
        "ode": ["ode", str(FIX / "rnn"), "--last", "2"],
    }  # fmt: skip
    out: dict[str, Any] = {"matrices": matrices}
    for kind, args in runs.items():
        result = _invoke(*args, "-f", "json")
        assert result.exit_code == 0, result.stderr
        report = schema.validate_text(result.stdout)
        path = folder / f"{kind}.json"
        path.write_text(result.stdout, encoding="utf-8")
        out[kind] = (path, report)
    return out


def _pixels(path: Path) -> np.ndarray:
    from matplotlib.image import imread

    return imread(str(path))[..., :3]


def _assert_real_figure(path: Path) -> None:
    size = path.stat().st_size
    assert 5_000 < size < 2_000_000, size
    px = _pixels(path)
    assert px.shape[0] > 200 and px.shape[1] > 600
    ink = (px < 0.95).any(axis=-1).mean()  # share of pixels that are not (near) white
    assert 0.02 < ink < 0.6, ink
    colours = np.unique((px * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 20  # lines, bands and text, not a flat image


CASES = [
    ("align", "relations"),
    ("align", "kappa"),
    ("align", "pah"),
    ("symmetry", "ranks"),
    ("symmetry", "spectra"),
    ("ode", "stability"),
    ("ode", "lyapunov"),
]


@pytest.mark.parametrize(("kind", "figure"), CASES, ids=[f"{k}-{f}" for k, f in CASES])
def test_every_figure_is_drawn(reports: dict, tmp_path: Path, kind: str, figure: str) -> None:
    path, _ = reports[kind]
    out = tmp_path / f"{kind}-{figure}.png"
    result = _invoke("plot", str(path), "-o", str(out), "--kind", figure)
    assert result.exit_code == 0, result.stderr
    assert f"wrote {out}" in result.stderr
    _assert_real_figure(out)


def test_figure_kinds_cover_every_report_kind() -> None:
    assert plot.figure_kinds("align")[0] == "relations"
    assert plot.figure_kinds("symmetry")[0] == "ranks"
    assert plot.figure_kinds("ode")[0] == "stability"


def test_all_puts_every_figure_on_one_page(reports: dict, tmp_path: Path) -> None:
    path, _ = reports["align"]
    one, page = tmp_path / "one.png", tmp_path / "page.png"
    assert _invoke("plot", str(path), "-o", str(one)).exit_code == 0
    assert _invoke("plot", str(path), "-o", str(page), "--kind", "all").exit_code == 0
    _assert_real_figure(page)
    assert _pixels(page).shape[0] > 1.5 * _pixels(one).shape[0]


@pytest.mark.parametrize("suffix", [".svg", ".png", ".pdf"])
def test_output_is_deterministic(reports: dict, tmp_path: Path, suffix: str) -> None:
    path, report = reports["symmetry"]
    a, b = tmp_path / f"a{suffix}", tmp_path / f"b{suffix}"
    plot.plot_report(report, a, options=figure_parts.PlotOptions(title=path.name))
    plot.plot_report(report, b, options=figure_parts.PlotOptions(title=path.name))
    assert a.read_bytes() == b.read_bytes() and a.stat().st_size > 5_000
    if suffix == ".svg":
        text = a.read_text(encoding="utf-8")
        assert "<dc:date>" not in text and "<svg" in text


def test_pah_points_are_the_points_the_report_fitted(reports: dict) -> None:
    """Least squares on the recomputed eigenpairs gives back the report's κ and intercept."""
    _, report = reports["align"]
    entry = report["checkpoints"][-1]
    floor = report["provenance"]["settings"]["pah_floor"]
    checked = 0
    for layer in entry["layers"]:
        for fid, fit in layer["pah"]["fits"].items():
            if fit["kappa"] is None:
                continue
            target, reference = fid.split("~")
            z, m = figures_align.pah_points(
                reports["matrices"], entry["step"], layer["name"], target, reference, floor=floor
            )
            assert len(z) == fit["n_kept"]
            slope, intercept = np.polyfit(np.log(z), np.log(m), 1)
            assert slope == pytest.approx(fit["kappa"], abs=1e-8)
            assert intercept == pytest.approx(fit["intercept"], abs=1e-8)
            checked += 1
    assert checked >= 12


def test_pah_figure_with_matrices(reports: dict, tmp_path: Path) -> None:
    path, _ = reports["align"]
    out = tmp_path / "pah.png"
    result = _invoke(
        "plot", str(path), "-o", str(out), "--kind", "pah", "--matrices",
        str(reports["matrices"]), "--layer", "[24]", "--step", "12800",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    _assert_real_figure(out)
    missing = _invoke(
        "plot", str(path), "-o", str(out), "--kind", "pah", "--matrices",
        str(tmp_path / "none.safetensors"),
    )  # fmt: skip
    assert missing.exit_code == 2 and "--matrices" in missing.stderr


def test_pah_figure_of_a_report_without_fits_says_why(reports: dict, tmp_path: Path) -> None:
    """No κ to draw (align --no-pah, or every fit of a layer undefined): the panels say so
    instead of crashing on empty log axes (it was exit 3)."""
    import copy
    import json

    _, report = reports["align"]
    bare = copy.deepcopy(report)
    for e in bare["checkpoints"]:
        for layer in e["layers"]:
            layer["pah"] = None
    src = tmp_path / "nopah.json"
    src.write_text(json.dumps(bare), encoding="utf-8")
    for kind in ("pah", "all"):
        out = tmp_path / f"{kind}.png"
        result = _invoke("plot", str(src), "-o", str(out), "--kind", kind)
        assert result.exit_code == 0, result.stderr
        _assert_real_figure(out)
    # the panels carry the reason instead of a fitted line
    from matplotlib.figure import Figure

    fig = Figure()
    figures_align.align_pah(fig, bare, figure_parts.PlotOptions())
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert texts and all("PAH not in this report" in t for t in texts)


def test_plot_reads_stdin(reports: dict, tmp_path: Path) -> None:
    path, _ = reports["ode"]
    out = tmp_path / "ode.svg"
    result = _invoke("plot", "-", "-o", str(out), input=path.read_text(encoding="utf-8"))
    assert result.exit_code == 0, result.stderr
    assert out.read_text(encoding="utf-8").count("<path") > 50


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["-o", "x.jpg"], "-o must end in .png, .svg, .pdf"),
        (["-o", "x.png", "--kind", "ranks"], "--kind for align reports must be one of"),
        (["-o", "x.png", "--layer", "fc*"], "matches no layer"),
        (["-o", "x.png", "--kind", "pah", "--step", "all"], "not a single checkpoint"),
        (["-o", "x.png", "--kind", "pah", "--step", "7"], "no checkpoint at step 7"),
    ],
)
def test_plot_exit_2(reports: dict, tmp_path: Path, args: list[str], needle: str) -> None:
    path, _ = reports["align"]
    args = [str(tmp_path / a) if a.startswith("x.") else a for a in args]
    result = _invoke("plot", str(path), *args)
    assert result.exit_code == 2
    assert needle in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_missing_matplotlib_is_one_line_and_exit_2(
    reports: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    path, _ = reports["align"]
    out = tmp_path / "x.png"
    result = _invoke("plot", str(path), "-o", str(out))
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "symtool: error: plotting needs matplotlib: pip install 'symtool[plot]'"
    )
    assert not out.exists()


def test_readme_example_is_shipped() -> None:
    png = ROOT / "docs" / "img" / "align_mlp_wd.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert 20_000 < png.stat().st_size < 200_000
    _assert_real_figure(png)


def test_nan_gaps_for_null_values() -> None:
    assert math.isnan(figure_parts.as_float(None)) and figure_parts.as_float(2) == 2.0
    assert math.isnan(figure_parts.as_float(True))


# --- readable figures (issue 15): short names, symlog steps, explained gaps -------------


def test_short_names_drop_the_common_prefix() -> None:
    names = [
        "transformer.h.0.attn.c_attn", "transformer.h.0.mlp.c_proj", "transformer.h.1.mlp.c_fc"
    ]
    shown, prefix = figure_parts.short_names(names)
    assert prefix == "transformer.h."
    assert shown == {n: n.removeprefix(prefix) for n in names}
    assert figure_parts.short_names(["model.fc"]) == ({"model.fc": "fc"}, "model.")
    assert figure_parts.short_names(["a", "b"]) == ({"a": "a", "b": "b"}, "")
    assert figure_parts.short_names(["x.a", "x"])[0] == {"x.a": "x.a", "x": "x"}


@pytest.mark.parametrize(
    ("steps", "scale"),
    [([0, 10, 50], "symlog"), ([0, 10, 100, 1000], "symlog"), ([0, 100, 200, 300], "linear"),
     ([100, 200, 300], "linear"), ([1, 2, 3, 4], "linear")],
)
def test_steps_go_symlog_when_they_span_a_decade_or_bunch(steps: list[int], scale: str) -> None:
    from matplotlib.figure import Figure

    ax = Figure().subplots()
    figure_parts.step_axis(ax, [float(s) for s in steps], label=True)
    assert ax.get_xscale() == scale
    if scale == "symlog":
        assert [t.get_text() for t in ax.get_xticklabels()] == [str(s) for s in steps]
        assert "symlog" in ax.get_xlabel()


def _with_failures(report: dict) -> dict:
    """The align report with two α and one κ of one checkpoint's first layer undefined."""
    import copy

    r = copy.deepcopy(report)
    ok = [e for e in r["checkpoints"] if e["status"] == "ok"]
    layer = ok[1]["layers"][0]
    for rid in ("f-RGA", "f-RWA"):
        layer["relations"][rid].update(alpha=None, null_mean=None, null_std=None, z=None,
                                       holds=None, reason="failed: H_a: eigh failed (test)")
    layer["pah"]["fits"]["H_a~Z_a"].update(kappa=None, ci_low=None, ci_high=None,
                                            reason="failed: H_a: eigh failed (test)")
    return r


@pytest.mark.parametrize("figure", ["relations", "kappa"])
def test_failed_values_are_marked_and_explained(reports: dict, figure: str) -> None:
    from matplotlib.figure import Figure

    report = _with_failures(reports["align"][1])
    fig = Figure(layout="constrained")
    build = {"relations": figures_align.align_relations, "kappa": figures_align.align_kappa}
    build[figure](fig, report, figure_parts.PlotOptions())
    title = fig.legends[0].get_title().get_text()
    step = [e for e in report["checkpoints"] if e["status"] == "ok"][1]["step"]
    assert "× [1] undefined: failed: H_a: eigh failed (test)" in title
    if figure == "relations":
        assert f"f-RGA @ {step}" in title and f"f-RWA @ {step}" in title
    else:
        assert f"κ(H_a~Z_a) @ {step}" in title
    crosses = [
        line for ax in fig.axes for line in ax.get_lines()
        if line.get_marker() == "x" and line.get_color() == "#d62728"
    ]
    assert len(crosses) == (2 if figure == "relations" else 1)
    assert all(list(c.get_xdata()) == [float(step)] for c in crosses)


def test_long_layer_names_wrap_at_a_dot_after_the_block_index() -> None:
    """Vertical axis labels of long names take two lines, cut after the block index, so
    they do not run into the neighbouring panel; short names and indices stay as they are."""
    from symtool.report.figure_parts import layer_label

    assert layer_label("transformer.h.0.attn.c_attn") == "transformer.h.0\n.attn.c_attn"
    assert layer_label("model.layers.11.mlp.down_proj") == "model.layers.11\n.mlp.down_proj"
    assert layer_label("layer4.1.conv2") == "layer4.1.conv2"
    assert layer_label("6") == "layer 6"
