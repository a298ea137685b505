localrules:
    table_base_accuracy,
    table_cells,
    figure_onion_scales_cells,
    write_summary,


rule table_base_accuracy:
    input:
        metrics=grid_paths(f"data/models/{MODEL_KEY}/metrics.json", cells=["gru"]),
    output:
        md="data/tables/table1_base_accuracy.md",
        csv=report(
            "data/tables/table1_base_accuracy.csv",
            caption="../report/table1_base_accuracy.rst",
            category="Downloads",
            labels={"table": "Tables 1 and 3", "format": "CSV"},
        ),
        tex="data/tables/table1_base_accuracy.tex",
        html=report(
            "data/tables/table1_base_accuracy.html",
            caption="../report/table1_base_accuracy.rst",
            category="Tables",
            labels={"table": "Tables 1 and 3", "shows": "exact match of the trained GRUs"},
        ),
    log:
        "data/logs/table_base_accuracy.log",
    conda:
        "../envs/onion.yaml"
    shell:
        "python -m onion table-base --metrics {input.metrics} --data-root data "
        "--md {output.md} --csv {output.csv} --tex {output.tex} > {log} 2>&1 && "
        "python -m onion html --md {output.md} --out {output.html} >> {log} 2>&1"


rule write_summary:
    input:
        base=rules.table_base_accuracy.output.csv,
        interventions=rules.table_interventions.output.csv,
        probes=rules.table_probes.output.csv,
        figure=rules.figure_gates.output.pdf,
        gates=rules.figure_gates.input,
        cells="data/tables/cells_signature.md" if OTHER_CELLS else [],
    output:
        md="data/summary.md",
        html=report(
            "data/summary.html",
            caption="../report/summary.rst",
            category="Summary",
            labels={"page": "summary", "shows": "which of the paper's claims this run reproduced"},
        ),
        verdicts="data/summary_verdicts.html",  # the verdicts alone: the report's opening page shows them
    log:
        "data/logs/write_summary.log",
    conda:
        "../envs/onion.yaml"
    params:
        settings=as_json_arg(
            {s: settings(s) for s in ("train", "interventions", "probes", "extract")}
            | {f"{s}_by_kind": GRID.get(f"{s}_by_kind", {}) for s in ("interventions", "probes")}
            | {"data": config["data"], "grids": {name: {"models": g["models"]} for name, g in config["grids"].items()}}
        ),
    shell:
        "python -m onion summary --base {input.base} --interventions {input.interventions} "
        "--probes {input.probes} --append {input.cells} --settings {params.settings} "
        "--gates {input.gates} "
        "--out {output.md} > {log} 2>&1 && "
        "python -m onion html --md {output.md} --out {output.html} --verdicts {output.verdicts} >> {log} 2>&1"


# Beyond the paper: every recurrent cell of the grid side by side (only where the grid has a cell
# other than the GRU).
rule table_cells:
    input:
        metrics=grid_paths(f"data/models/{MODEL_KEY}/metrics.json"),
        interventions=intervention_paths("json"),
        probes=probe_paths("json"),
    output:
        md="data/tables/table_cells.md",
        csv=report(
            "data/tables/table_cells.csv",
            caption="../report/table_cells.rst",
            category="Downloads",
            labels={"table": "recurrent cells", "format": "CSV"},
        ),
        tex="data/tables/table_cells.tex",
        html=report(
            "data/tables/table_cells.html",
            caption="../report/table_cells.rst",
            category="Tables",
            labels={"table": "recurrent cells (beyond the paper)", "shows": "every method per cell"},
        ),
        signature="data/tables/cells_signature.md",
    log:
        "data/logs/table_cells.log",
    conda:
        "../envs/onion.yaml"
    shell:
        "python -m onion table-cells --metrics {input.metrics} --interventions {input.interventions} "
        "--probes {input.probes} --md {output.md} --csv {output.csv} --tex {output.tex} "
        "--signature {output.signature} > {log} 2>&1 && "
        "python -m onion html --md {output.md} --out {output.html} >> {log} 2>&1"


rule figure_onion_scales_cells:
    input:
        parameters=intervention_paths("parquet", kinds=["onion"]),
    output:
        report(
            "data/figures/intervention_onion_scales_cells.pdf",
            caption="../report/intervention_onion_scales_cells.rst",
            category="Interventions",
            labels={"figure": "onion scales per cell", "shows": "learned scale |s_j| per position, per cell"},
        ),
    log:
        "data/logs/figure_onion_scales_cells.log",
    conda:
        "../envs/onion.yaml"
    params:
        max_length=config["data"]["max_length"],
    shell:
        "python -m onion figure-interventions onion-scales-cells --parameters {input.parameters} "
        "--max-length {params.max_length} --out {output} > {log} 2>&1"
