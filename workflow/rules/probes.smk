# Probes on the stored final states (PAPER.md §5) and Table 4.


localrules:
    table_probes,


rule train_probe:
    input:
        states=f"data/states/{MODEL_KEY}/final_states-{STATES_KEY}.parquet",
    output:
        result=f"data/analyses/{MODEL_KEY}/probe-{{kind}}-{{settings}}.json",
        breakdown=f"data/analyses/{MODEL_KEY}/probe-{{kind}}-{{settings}}.parquet",
    log:
        f"data/logs/train_probe/{MODEL_KEY}/{{kind}}-{{settings}}.log",
    benchmark:
        f"data/benchmarks/train_probe/{MODEL_KEY}/{{kind}}-{{settings}}.tsv"
    wildcard_constraints:
        kind="|".join(PROBE_KINDS),
    conda:
        "../envs/onion.yaml"
    threads: config["threads_per_job"]
    resources:
        gres=shared_gpu,  # one GPU per group job (profiles/slurm), shared by its members
        group_slots=1,  # profiles/slurm: a group job runs one member at a time
        gpu_slots=gpu_slots,  # one GPU at home: --resources gpu_slots=k runs k jobs on it
        mem_mb=6000,
        runtime=probe_runtime_minutes,
    params:
        data=as_json_arg(config["data"]),
        probes=analysis_settings("probes"),
        device=config["device"],
        kernel=config["kernel"],
        checkpoint=f"data/checkpoints/{MODEL_KEY}/probe-{{kind}}-{{settings}}.pt",
    shell:
        # The log is appended to (Snakemake itself removes a failed attempt's log before a retry).
        "python -m onion train-probe --kind {wildcards.kind} --data {params.data} "
        "--probes {params.probes} --states {input.states} "
        "--device {params.device} --kernel {params.kernel} --threads {threads} "
        "--checkpoint {params.checkpoint} "
        "--out {output.result} --breakdown {output.breakdown} >> {log} 2>&1"


rule table_probes:
    input:
        results=probe_paths("json", cells=["gru"]),
    output:
        md="data/tables/table4_probes.md",
        csv=report(
            "data/tables/table4_probes.csv",
            caption="../report/table4_probes.rst",
            category="Downloads",
            labels={"table": "Table 4", "format": "CSV"},
        ),
        tex="data/tables/table4_probes.tex",
        html=report(
            "data/tables/table4_probes.html",
            caption="../report/table4_probes.rst",
            category="Tables",
            labels={"table": "Table 4", "shows": "exact match of the probes"},
        ),
    log:
        "data/logs/table_probes.log",
    conda:
        "../envs/onion.yaml"
    shell:
        "python -m onion table-probes --results {input.results} --data-root data "
        "--md {output.md} --csv {output.csv} --tex {output.tex} > {log} 2>&1 && "
        "python -m onion html --md {output.md} --out {output.html} >> {log} 2>&1"
