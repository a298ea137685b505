# onion: from generated data to every table and figure (see README.md).
import os
import sys

from snakemake.utils import min_version

min_version("9.0")


from onion.config_checks import load_yaml

# The defaults sit beside this Snakefile, so `--directory elsewhere` needs no copy of them.
DEFAULTS = os.path.join(workflow.basedir, "config.yaml")
load_yaml(DEFAULTS)  # a syntax error names file and line (Snakemake's own message does not)


if workflow.is_main_process:  # artifacts of an older layout: say how to keep them
    from onion.files import old_layout_paths, unkeyed_paths

    _old = old_layout_paths("data") or unkeyed_paths("data")  # reads only: a dry run changes nothing
    if _old:
        sys.exit(
            f"error: {len(_old)} artifacts in data/ use an older layout (e.g. {_old[0]}; today models "
            "sit under cell=…/variant=…/size=…/seed=…/train=<settings key>/); run `python -m onion "
            "migrate-layout data` once to move them (nothing is retrained), then run snakemake again"
        )


configfile: DEFAULTS


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/interventions.smk"
include: "workflow/rules/extract.smk"
include: "workflow/rules/probes.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/report.smk"


# Tables, figures, the summary and the named targets run on the submitting machine, never as
# cluster jobs; the heavy rules carry their own mem_mb and runtime (workflow/rules/common.smk).
localrules:
    all,
    datasets,
    models,
    tables,
    interventions,
    states,
    probes,
    figures,


rule all:
    default_target: True
    input:
        rules.table_base_accuracy.output,
        rules.table_interventions.output,
        rules.figure_onion_scales.output,
        rules.figure_das_budget.output,
        rules.table_probes.output,
        rules.figure_gates.output,
        rules.figure_probes.output,
        rules.figure_gates_all_channels.output,
        rules.write_summary.output,
        rules.table_cells.output if OTHER_CELLS else [],
        rules.figure_onion_scales_cells.output if OTHER_CELLS else [],
        # every other cell's own gates, step by step (the GRU's are in the figures)
        grid_paths(f"data/states/{MODEL_KEY}/trajectories.parquet", cells=OTHER_CELLS),


rule datasets:
    input:
        rules.make_dataset.output,


rule models:
    input:
        grid_paths(f"data/models/{MODEL_KEY}/metrics.json"),


rule tables:
    input:
        rules.table_base_accuracy.output,
        rules.table_interventions.output,
        rules.table_probes.output,


rule interventions:
    input:
        rules.table_interventions.output,
        rules.figure_onion_scales.output,
        rules.figure_das_budget.output,


rule states:
    input:
        grid_paths(f"data/states/{MODEL_KEY}/final_states-{STATES_KEY}.parquet"),
        grid_paths(f"data/states/{MODEL_KEY}/trajectories.parquet"),


rule probes:
    input:
        rules.table_probes.output,
        rules.figure_probes.output,


rule figures:
    input:
        rules.figure_gates.output,
        rules.figure_probes.output,
        rules.figure_gates_all_channels.output,
