localrules:
    table_base_accuracy,
    write_summary,


rule table_base_accuracy:
    input:
        metrics=grid_paths(f"data/models/{MODEL_KEY}/metrics.json"),
    output:
        md="data/tables/table1_base_accuracy.md",
        csv=report(
            "data/tables/table1_base_accuracy.csv", caption="../report/table1_base_accuracy.rst", category="Tables"
        ),
        tex="data/tables/table1_base_accuracy.tex",
    conda:
        "../envs/onion.yaml"
    log:
        "data/logs/table_base_accuracy.log",
    shell:
        "python -m onion table-base --metrics {input.metrics} "
        "--md {output.md} --csv {output.csv} --tex {output.tex} > {log} 2>&1"


rule write_summary:
    input:
        base=rules.table_base_accuracy.output.csv,
        interventions=rules.table_interventions.output.csv,
        probes=rules.table_probes.output.csv,
        figure=rules.figure_gates.output.pdf,
    output:
        report("data/summary.md", caption="../report/summary.rst", category="Summary"),
    conda:
        "../envs/onion.yaml"
    log:
        "data/logs/write_summary.log",
    shell:
        "python -m onion summary --base {input.base} --interventions {input.interventions} "
        "--probes {input.probes} --out {output} > {log} 2>&1"
