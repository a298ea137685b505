localrules:
    table_base_accuracy,


rule table_base_accuracy:
    input:
        metrics=grid_paths(f"data/models/{MODEL_KEY}/metrics.json"),
    output:
        md="data/tables/table1_base_accuracy.md",
        csv="data/tables/table1_base_accuracy.csv",
        tex="data/tables/table1_base_accuracy.tex",
    conda:
        "../envs/onion.yaml"
    log:
        "data/logs/table_base_accuracy.log",
    shell:
        "python -m onion table-base --metrics {input.metrics} "
        "--md {output.md} --csv {output.csv} --tex {output.tex} > {log} 2>&1"
