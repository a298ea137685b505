"""onion.report.paper against an independent copy of the paper's Tables 1-5 (arXiv 2408.10920 v1),
typed here from the paper's tables as text, so that a wrong number in the module fails."""

import re

import pytest

from onion.report import paper

SIZES = (48, 64, 128, 256, 512, 1024)

TABLE_1 = """
Autoregressive | 0.95 ± 0.01 | 0.97 ± 0.00 | 1.00 ± 0.00 | 1.00 ± 0.00 | 1.00 ± 0.00 | 1.00 ± 0.00
No input | 0.88 ± 0.11 | 1.00 ± 0.00 | 1.00 ± 0.00 | 1.00 ± 0.00 | 1.00 ± 0.00 | 1.00 ± 0.00
"""
TABLE_2 = """
Linear unigram | 0.00 ± 0.00 | 0.00 ± 0.00 | 0.01 ± 0.00 | 0.18 ± 0.03 | 0.91 ± 0.08 | 1.00 ± 0.00
Linear bigram | 0.01 ± 0.00 | 0.01 ± 0.00 | 0.54 ± 0.05 | 0.97 ± 0.05 | 1.00 ± 0.00 | 1.00 ± 0.00
Onion | 0.83 ± 0.03 | 0.87 ± 0.03 | 0.89 ± 0.04 | 0.91 ± 0.08 | 0.95 ± 0.01 | 0.94 ± 0.04
"""
TABLE_5 = """
Linear unigram | 0.06 ± 0.07 | 0.37 ± 0.17 | 1.00 ± 0.00 | 1.00 ± 0.00 | 1.00 ± 0.00 | 1.00 ± 0.01
Linear bigram | 0.18 ± 0.04 | 0.95 ± 0.06 | 1.00 ± 0.00 | 1.00 ± 0.00 | 1.00 ± 0.00 | 1.00 ± 0.00
Onion | 0.24 ± 0.02 | 0.41 ± 0.04 | 0.76 ± 0.01 | 0.92 ± 0.01 | 0.96 ± 0.01 | 0.98 ± 0.00
"""
TABLE_4 = """
Linear | AR | 0.01 ± 0.00 | 0.01 ± 0.00 | 0.31 ± 0.03 | 0.89 ± 0.03 | 0.97 ± 0.00 | 0.99 ± 0.01
Linear | No input | 0.31 ± 0.10 | 0.89 ± 0.05 | 0.98 ± 0.02 | 1.00 ± 0.00 | 1.00 ± 0.00 | 1.00 ± 0.00
MLP | AR | 0.02 ± 0.00 | 0.04 ± 0.00 | 0.55 ± 0.04 | 0.98 ± 0.00 | 1.00 ± 0.00 | 1.00 ± 0.00
MLP | No input | 0.53 ± 0.25 | 0.95 ± 0.04 | 1.00 ± 0.00 | 1.00 ± 0.00 | 1.00 ± 0.00 | 1.00 ± 0.00
Onion | AR | 0.92 ± 0.02 | 0.97 ± 0.01 | 1.00 ± 0.00 | 1.00 ± 0.00 | 1.00 ± 0.00 | 1.00 ± 0.00
Onion | No input | 0.76 ± 0.08 | 0.96 ± 0.01 | 1.00 ± 0.00 | 1.00 ± 0.00 | 1.00 ± 0.00 | 1.00 ± 0.00
GRU – AR | AR | 0.97 ± 0.01 | 0.98 ± 0.00 | 1.00 ± 0.00 | 1.00 ± 0.00 | 1.00 ± 0.00 | 1.00 ± 0.00
GRU – AR | No input | 0.92 ± 0.02 | 1.00 ± 0.00 | 1.00 ± 0.00 | 1.00 ± 0.00 | 1.00 ± 0.00 | 1.00 ± 0.00
GRU – no input | AR | 0.10 ± 0.02 | 0.25 ± 0.08 | 0.86 ± 0.01 | 0.99 ± 0.00 | 1.00 ± 0.00 | 1.00 ± 0.00
GRU – no input | No input | 0.77 ± 0.07 | 0.98 ± 0.01 | 1.00 ± 0.00 | 1.00 ± 0.00 | 1.00 ± 0.00 | 1.00 ± 0.00
"""
VARIANT = {"Autoregressive": "autoregressive", "AR": "autoregressive", "No input": "no_input"}
KIND = {"Linear unigram": "linear_unigram", "Linear bigram": "linear_bigram", "Onion": "onion"}
PROBE = {"Linear": "linear", "MLP": "mlp", "Onion": "onion", "GRU – AR": "gru_autoregressive",
         "GRU – no input": "gru_no_input"}


def rows(text):
    """'label | [label |] m ± s | ...' lines -> [(labels, {size: (m, s)})]."""
    out = []
    for line in text.strip().splitlines():
        parts = [p.strip() for p in line.split("|")]
        cells = [tuple(map(float, re.fullmatch(r"([\d.]+) ± ([\d.]+)", c).groups())) for c in parts[-6:]]
        out.append((tuple(parts[:-6]), dict(zip(SIZES, cells))))
    return out


def test_every_number_of_the_module_is_the_papers():
    expected = {("base", VARIANT[v]): cells for (v,), cells in rows(TABLE_1)}
    expected |= {("intervention", "autoregressive", KIND[k]): cells for (k,), cells in rows(TABLE_2)}
    expected |= {("intervention", "no_input", KIND[k]): cells for (k,), cells in rows(TABLE_5)}
    expected |= {("probe", PROBE[p], VARIANT[v]): cells for (p, v), cells in rows(TABLE_4)}
    module = {("base", v): cells for v, cells in paper.BASE_ACCURACY.items()}
    module |= {("intervention", v, k): cells for v, kinds in paper.INTERVENTIONS.items() for k, cells in kinds.items()}
    module |= {("probe", *key): cells for key, cells in paper.PROBES.items()}
    assert len(expected) == 2 + 3 + 3 + 10
    assert module.keys() == expected.keys()
    for key, cells in expected.items():
        assert module[key].keys() == cells.keys(), key
        for size, cell in cells.items():
            assert module[key][size] == pytest.approx(cell), (key, size)
    assert paper.ONION_CONTROL_N64_AR == 0.21 and paper.SEEDS == 5  # the text: ≈ 21 % at N = 64
