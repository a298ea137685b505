import pandas as pd
import pytest

from onion.report import paper
from onion.report.tables import read_metrics, summarize, wide


def test_mean_sd_and_paper_cells():
    results = pd.DataFrame({"variant": ["autoregressive"] * 3 + ["no_input"],
                            "size": [48, 48, 64, 48], "seed": [0, 1, 0, 0],
                            "exact_match": [0.9, 0.8, 0.97, 0.5]})
    summary = summarize(results, ["variant"], "exact_match", paper.BASE_ACCURACY)
    row = summary[(summary["variant"] == "autoregressive") & (summary["size"] == 48)].iloc[0]
    assert row["mean"] == pytest.approx(0.85) and row["sd"] == pytest.approx(0.0707, abs=1e-4)
    assert row["seeds"] == 2 and row["paper_mean"] == 0.95 and row["paper_sd"] == 0.01
    table = wide(summary, ["variant"])
    assert table.loc[table["variant"] == "autoregressive", "N=48"].item() == "0.85 ± 0.07 [2] (0.95 ± 0.01)"
    assert table.loc[table["variant"] == "autoregressive", "N=64"].item() == "0.97 [1] (0.97 ± 0.00)"


def test_unreadable_metrics_file_is_named(tmp_path):
    (tmp_path / "metrics.json").write_text("{not json")
    with pytest.raises(ValueError, match="metrics.json"):
        read_metrics([tmp_path / "metrics.json"])


# The paper's cells at N = 48 and 64, typed from its Tables 2, 4 and 5 (not read from onion.report.paper).
PAPER_INTERVENTIONS = {
    ("autoregressive", "linear_unigram"): {48: (0.00, 0.00), 64: (0.00, 0.00)},
    ("autoregressive", "linear_bigram"): {48: (0.01, 0.00), 64: (0.01, 0.00)},
    ("autoregressive", "onion"): {48: (0.83, 0.03), 64: (0.87, 0.03)},
    ("autoregressive", "onion_control"): {64: (0.21, float("nan"))},  # the text: ≈ 21 %
    ("no_input", "linear_unigram"): {48: (0.06, 0.07), 64: (0.37, 0.17)},
    ("no_input", "linear_bigram"): {48: (0.18, 0.04), 64: (0.95, 0.06)},
    ("no_input", "onion"): {48: (0.24, 0.02), 64: (0.41, 0.04)},
}
PAPER_PROBES = {
    ("linear", "autoregressive"): {48: (0.01, 0.00), 64: (0.01, 0.00)},
    ("linear", "no_input"): {48: (0.31, 0.10), 64: (0.89, 0.05)},
    ("mlp", "autoregressive"): {48: (0.02, 0.00), 64: (0.04, 0.00)},
    ("mlp", "no_input"): {48: (0.53, 0.25), 64: (0.95, 0.04)},
    ("onion", "autoregressive"): {48: (0.92, 0.02), 64: (0.97, 0.01)},
    ("onion", "no_input"): {48: (0.76, 0.08), 64: (0.96, 0.01)},
    ("gru_autoregressive", "autoregressive"): {48: (0.97, 0.01), 64: (0.98, 0.00)},
    ("gru_autoregressive", "no_input"): {48: (0.92, 0.02), 64: (1.00, 0.00)},
    ("gru_no_input", "autoregressive"): {48: (0.10, 0.02), 64: (0.25, 0.08)},
    ("gru_no_input", "no_input"): {48: (0.77, 0.07), 64: (0.98, 0.01)},
}


def _fabricate(root, analysis, kind, variant, size, seed, value, train="0000aaaa"):
    """A result JSON at its keyed path (onion.keys) with exact match `value`."""
    import json
    path = (root / "analyses" / f"cell=gru/variant={variant}/size={size}/seed={seed}/train={train}"
            / f"{analysis}-{kind}-1111bbbb.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"variant": variant, "cell": "gru", "size": size, "seed": seed, "kind": kind,
                                "steps": 6000, "lr": 0.003, "exact_match": value}))
    return path


@pytest.mark.parametrize("analysis, expected", [("intervention", PAPER_INTERVENTIONS), ("probe", PAPER_PROBES)])
def test_tables_2_4_5_put_each_entry_beside_its_paper_cell(tmp_path, analysis, expected):
    """Every (variant, kind, size) gets a value of its own; the table must show it beside the
    paper's cell for that very entry (a swapped variant/kind lookup reads another cell)."""
    from onion.report.tables import run_table_interventions, run_table_probes
    ours = {}
    for i, (key, cells) in enumerate(sorted(expected.items())):
        kind, variant = key if analysis == "probe" else key[::-1]
        for size in (48, 64):
            for seed in (0, 1):
                value = round(0.01 * i + 0.001 * size / 16 + 0.0001 * seed, 5)
                _fabricate(tmp_path, analysis, kind, variant, size, seed, value)
                ours.setdefault((variant, kind, size), []).append(value)
    run = run_table_probes if analysis == "probe" else run_table_interventions
    run([], tmp_path / "t.md", tmp_path / "t.csv", tmp_path / "t.tex", root=tmp_path)
    table = pd.read_csv(tmp_path / "t.csv")
    assert len(table) == len(ours) and (table["seeds"] == 2).all()
    for row in table.itertuples():
        key = (row.kind, row.variant) if analysis == "probe" else (row.variant, row.kind)
        assert row.mean == pytest.approx(sum(ours[(row.variant, row.kind, row.size)]) / 2, abs=1e-4)  # CSV: 4 decimals
        paper_cell = expected[key].get(row.size)
        if paper_cell is None:
            assert row.paper_mean != row.paper_mean, (key, row.size)  # not in the paper: NaN
        else:
            assert row.paper_mean == pytest.approx(paper_cell[0]), (key, row.size)
            assert row.paper_sd == pytest.approx(paper_cell[1], nan_ok=True), (key, row.size)
    if analysis == "intervention":  # the γ = 1 control row, with the paper's ≈ 0.21 at N = 64
        control = table[(table["kind"] == "onion_control") & (table["size"] == 64)]
        assert control["paper_mean"].tolist() == [0.21]
        assert "onion_control" in (tmp_path / "t.md").read_text()


@pytest.mark.parametrize("grid_paths", [True, False])
def test_seeds_are_pooled_per_settings_key_and_the_grids_own_come_first(tmp_path, grid_paths):
    """One entry (autoregressive N = 64 onion intervention) trained with two settings: this grid's
    (2 seeds, 0.85) and another grid's (3 seeds, 0.50). Seeds are never pooled across the keys; the
    grid's own line comes first though it has fewer seeds, and the summary judges it. Without the
    grid's paths (a table over data/ alone) the line with the most seeds comes first, and the summary
    names its keys."""
    from onion.report.summary import claim_small_ar_interventions
    from onion.report.tables import run_table_interventions
    own = [_fabricate(tmp_path, "intervention", "onion", "autoregressive", 64, s, 0.85 + 0.01 * s) for s in (0, 1)]
    for seed in (0, 1, 2):
        _fabricate(tmp_path, "intervention", "onion", "autoregressive", 64, seed, 0.50, train="2222cccc")
    run_table_interventions(own if grid_paths else [], tmp_path / "t.md", tmp_path / "t.csv", tmp_path / "t.tex",
                            root=tmp_path)
    table = pd.read_csv(tmp_path / "t.csv", dtype={"train": str, "settings": str})
    assert table[["train", "seeds"]].values.tolist() == \
        ([["0000aaaa", 2], ["2222cccc", 3]] if grid_paths else [["2222cccc", 3], ["0000aaaa", 2]])
    assert table["mean"].tolist() == pytest.approx([0.855, 0.5] if grid_paths else [0.5, 0.855])
    assert table["grid"].tolist() == ([True, False] if grid_paths else [False, False])
    markdown = (tmp_path / "t.md").read_text()
    assert "train 0000aaaa, 1111bbbb" + (" (this grid)" if grid_paths else "") in markdown
    assert "train 2222cccc, 1111bbbb |" in markdown
    _, evidence = claim_small_ar_interventions(table)
    onion = next(e for e in evidence if e.startswith("onion intervention"))
    if grid_paths:
        assert onion.startswith("onion intervention autoregressive N=64: 0.85 ± 0.01 (2 seeds), needs")
    else:
        assert "0.50 ± 0.00 (3 seeds; other settings than this grid's: train 2222cccc, 1111bbbb)" in onion
