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
    assert table.loc[table["variant"] == "autoregressive", "N=48"].item() == "0.85 ± 0.07 (0.95 ± 0.01)"
    assert table.loc[table["variant"] == "autoregressive", "N=64"].item() == "0.97 (0.97 ± 0.00)"


def test_unreadable_metrics_file_is_named(tmp_path):
    (tmp_path / "metrics.json").write_text("{not json")
    with pytest.raises(ValueError, match="metrics.json"):
        read_metrics([tmp_path / "metrics.json"])
