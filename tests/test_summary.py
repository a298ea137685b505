import pandas as pd

from onion.summary import NOT_REPRODUCED, NOT_TESTABLE, PARTLY, REPRODUCED, write_summary


def _table(rows, keys):
    return pd.DataFrame([dict(zip(keys + ["size", "mean", "sd", "seeds", "paper_mean", "paper_sd"], r))
                         for r in rows])


def test_summary_verdicts(tmp_path):
    _table([("autoregressive", 48, 0.93, 0.01, 2, 0.95, 0.01)], ["variant"]).to_csv(tmp_path / "b.csv")
    _table([("autoregressive", "linear_unigram", 48, 0.0, 0.0, 2, 0.0, 0.0),
            ("autoregressive", "linear_bigram", 48, 0.01, 0.0, 2, 0.01, 0.0),
            ("autoregressive", "onion", 48, 0.85, 0.02, 2, 0.83, 0.03),
            ("autoregressive", "onion_control", 48, 0.2, 0.02, 2, float("nan"), float("nan"))],
           ["variant", "kind"]).to_csv(tmp_path / "i.csv")
    _table([("linear", "autoregressive", 48, 0.01, 0.0, 2, 0.01, 0.0),
            ("mlp", "autoregressive", 48, 0.02, 0.0, 2, 0.02, 0.0),
            ("onion", "autoregressive", 48, 0.6, 0.0, 2, 0.92, 0.02),  # fails its >= 0.90 bar
            ("gru_autoregressive", "autoregressive", 48, 0.97, 0.0, 2, 0.97, 0.01),
            ("gru_no_input", "autoregressive", 48, 0.3, 0.0, 2, 0.1, 0.02)],
           ["kind", "variant"]).to_csv(tmp_path / "p.csv")
    text = write_summary(tmp_path / "b.csv", tmp_path / "i.csv", tmp_path / "p.csv", tmp_path / "s.md")
    sections = text.split("## ")[1:]
    assert f"**{REPRODUCED}.**" in sections[0]  # 0.93 is within 0.05 of 0.95
    assert f"**{REPRODUCED}.**" in sections[1] and "onion N=48: 0.85 ± 0.02 (2 seeds)" in sections[1]
    assert f"**{PARTLY}.**" in sections[2] and "no N ≥ 512" in sections[2]
    assert f"**{NOT_REPRODUCED}.**" in sections[3]
    assert f"**{NOT_TESTABLE}.**" in sections[4] and f"**{NOT_TESTABLE}.**" in sections[5]
    assert (tmp_path / "s.md").read_text() == text
