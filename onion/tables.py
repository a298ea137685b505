"""Result tables: mean ± s.d. over seeds beside the paper's numbers, as Markdown, CSV and LaTeX."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd


def read_metrics(paths) -> pd.DataFrame:
    """One row per metrics JSON file (its top-level scalar fields)."""
    rows = []
    for path in paths:
        try:
            record = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: unreadable metrics file ({err})") from err
        rows.append({k: v for k, v in record.items() if not isinstance(v, (dict, list))})
    return pd.DataFrame(rows)


def gru_rows(results: pd.DataFrame) -> pd.DataFrame:
    """The rows the paper's tables are about: GRUs (results without a cell are GRUs); the other
    cells go to the cells table."""
    if "cell" not in results:
        return results
    rows = results[results["cell"].fillna("gru") == "gru"]
    if rows.empty:
        raise ValueError("no GRU results among the inputs: the paper's tables are about GRUs")
    return rows


def summarize(results: pd.DataFrame, row_keys: list[str], value: str, paper: dict) -> pd.DataFrame:
    """Tidy summary: one line per (row_keys..., size) with mean, sd, seeds and the paper's cell.

    `paper` maps a row label (a value, or a tuple of values for several row_keys) to {size: (m, sd)}.
    """
    grouped = results.groupby(row_keys + ["size"])[value]
    table = grouped.agg(mean="mean", sd=lambda s: s.std(ddof=1) if len(s) > 1 else float("nan"),
                        seeds="count").reset_index()
    label = table[row_keys].apply(lambda r: tuple(r) if len(row_keys) > 1 else r.iloc[0], axis=1)
    cells = [paper.get(lab, {}).get(int(size)) for lab, size in zip(label, table["size"])]
    table["paper_mean"] = [c[0] if c else float("nan") for c in cells]
    table["paper_sd"] = [c[1] if c else float("nan") for c in cells]
    return table


def _cell(mean, sd, seeds) -> str:
    return f"{mean:.2f}" + (f" ± {sd:.2f}" if seeds > 1 and sd == sd else "")


def _paper_cell(mean, sd) -> str:
    if mean != mean:
        return "–"
    return f"{mean:.2f}" + (f" ± {sd:.2f}" if sd == sd else "")  # the paper gives some without s.d.


def wide(summary: pd.DataFrame, row_keys: list[str]) -> pd.DataFrame:
    """Rows = row_keys, columns = sizes, cells 'ours (paper)'."""
    summary = summary.assign(cell=[
        f"{_cell(m, s, k)} ({_paper_cell(pm, ps)})" for m, s, k, pm, ps in
        zip(summary["mean"], summary["sd"], summary["seeds"], summary["paper_mean"], summary["paper_sd"])])
    table = summary.pivot(index=row_keys, columns="size", values="cell").fillna("")
    table.columns = [f"N={c}" for c in table.columns]
    return table.reset_index()


def to_markdown(table: pd.DataFrame, title: str) -> str:
    header = "| " + " | ".join(table.columns) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False)]
    note = "\nCells: ours, mean ± s.d. over seeds (the paper's value in brackets).\n"
    return "\n".join([f"# {title}", "", header, rule, *body]) + "\n" + note


def to_latex(table: pd.DataFrame, title: str) -> str:
    def esc(text):
        return str(text).replace("_", r"\_").replace("±", r"$\pm$")
    lines = [r"\begin{table}[t]", r"\centering", r"\caption{" + esc(title) + "}",
             r"\begin{tabular}{" + "l" * (table.shape[1]) + "}", r"\toprule",
             " & ".join(esc(c) for c in table.columns) + r" \\", r"\midrule"]
    lines += [" & ".join(esc(v) for v in row) + r" \\" for row in table.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def write_table(summary: pd.DataFrame, row_keys: list[str], title: str, md, csv, tex) -> None:
    """Write the tidy summary as CSV and the wide 'ours (paper)' view as Markdown and LaTeX."""
    summary.to_csv(csv, index=False, float_format="%.4f")
    table = wide(summary, row_keys)
    Path(md).write_text(to_markdown(table, title))
    Path(tex).write_text(to_latex(table, title))
