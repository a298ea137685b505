"""The lists of names (onion.names) are the only ones: the schema, the CLI, the workflow and the
code agree with them, and the report reads results without PyTorch."""

import subprocess
import sys
from pathlib import Path

import yaml

from onion import names
from onion.cli import build_parser
from onion.config_checks import SCHEMA
from onion.model import GATES

REPO = Path(__file__).resolve().parents[1]


def _enums(node, path=""):
    """{property path: enum} for every enum in the schema (an array's items end in '.items')."""
    if isinstance(node, list):
        return {k: v for i, item in enumerate(node) for k, v in _enums(item, f"{path}.{i}").items()}
    if not isinstance(node, dict):
        return {}
    found = {path: tuple(node["enum"])} if "enum" in node else {}
    for key, value in node.items():
        found.update(_enums(value, f"{path}.{key}"))
    return found


def test_schema_enums_are_the_package_lists():
    schema = yaml.safe_load(SCHEMA.read_text())
    by_name = {}
    for path, enum in _enums(schema).items():  # propertyNames are named by their mapping
        name = path.removesuffix(".items").removesuffix(".propertyNames").rsplit(".", 1)[-1]
        by_name.setdefault(name, set()).add(enum)
    assert by_name.pop("cells") == {names.CELLS}
    assert by_name.pop("variants") == {names.VARIANTS}
    assert by_name.pop("train_sampling") == {names.TRAIN_SAMPLINGS}
    assert by_name.pop("lr_schedule") == {names.LR_SCHEDULES}
    assert by_name.pop("device") == {names.DEVICES}
    assert by_name.pop("das_train") == {names.DAS_TRAIN_SETS}
    assert by_name.pop("replacement") == {names.REPLACEMENTS}
    assert by_name.pop("weight_decay_on") == {names.PROBE_DECAYS}
    assert by_name.pop("kernel") == {names.KERNELS}
    assert by_name.pop("precision") == {names.PRECISIONS}
    assert by_name.pop("rotation") == {names.ROTATIONS}
    assert by_name.pop("interventions_by_kind") == {names.INTERVENTION_KINDS}
    assert by_name.pop("probes_by_kind") == {names.PROBE_KINDS}
    assert not by_name, f"enums without a list in onion.names: {by_name}"


def test_cli_choices_are_the_package_lists():
    sub = build_parser()._subparsers._group_actions[0].choices
    choices = {(cmd, a.dest): tuple(a.choices) for cmd, p in sub.items() for a in p._actions if a.choices}
    assert choices[("train", "cell")] == names.CELLS
    assert choices[("train", "variant")] == names.VARIANTS
    assert choices[("train-intervention", "kind")] == names.INTERVENTION_KINDS
    assert choices[("train-probe", "kind")] == names.PROBE_KINDS


def test_every_cell_has_its_gates_and_linear_kinds_are_intervention_kinds():
    assert tuple(GATES) == names.CELLS
    assert set(names.LINEAR_INTERVENTION_KINDS) <= set(names.INTERVENTION_KINDS)


def test_workflow_wildcards_use_the_package_lists():
    common = (REPO / "workflow/rules/common.smk").read_text()
    assert "from onion.names import" in common
    for listed in ("gru|lstm", "autoregressive|no_input", '"linear_unigram"', '"gru_no_input"'):
        assert listed not in common, f"{listed} is spelled out in common.smk"


def test_tables_and_figures_import_without_pytorch(tmp_path):
    """The report is torch-free: a table is remade on a machine without PyTorch."""
    metrics = tmp_path / "m.json"
    metrics.write_text('{"variant": "autoregressive", "cell": "gru", "size": 48, "seed": 0, '
                       '"exact_match": 0.9}')
    code = ("import sys; sys.modules['torch'] = None; "
            "import onion.report.figures, onion.report.intervention_plots, onion.report.summary, "
            "onion.report.cell_comparison; from onion.cli import main; "
            f"sys.exit(main(['table-base', '--metrics', {str(metrics)!r}, '--md', {str(tmp_path / 't.md')!r}, "
            f"'--csv', {str(tmp_path / 't.csv')!r}, '--tex', {str(tmp_path / 't.tex')!r}]))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "0.90" in (tmp_path / "t.md").read_text()
