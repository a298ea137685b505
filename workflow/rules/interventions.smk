# Interventions on the frozen models' final state (PAPER.md §4): Tables 2 and 5 and two figures.


localrules:
    table_interventions,
    figure_onion_scales,
    figure_das_budget,


rule train_intervention:
    input:
        model=f"data/models/{MODEL_KEY}/model.pt",
        train=rules.make_dataset.output.train,
        valid=rules.make_dataset.output.valid,
        das_valid=rules.make_dataset.output.das_valid,
        das_train=rules.make_dataset.output.das_train,
    output:
        result=f"data/analyses/{MODEL_KEY}/intervention-{{kind}}-{{settings}}.json",
        parameters=f"data/analyses/{MODEL_KEY}/intervention-{{kind}}-{{settings}}.parquet",
    log:
        f"data/logs/train_intervention/{MODEL_KEY}/{{kind}}-{{settings}}.log",
    benchmark:
        f"data/benchmarks/train_intervention/{MODEL_KEY}/{{kind}}-{{settings}}.tsv"
    wildcard_constraints:
        kind="|".join(INTERVENTION_KINDS),
    conda:
        "../envs/onion.yaml"
    threads: config["threads_per_job"]
    resources:
        gres=shared_gpu,  # one GPU per group job (profiles/slurm), shared by its members
        group_slots=1,  # profiles/slurm: a group job runs one member at a time
        gpu_slots=gpu_slots,  # one GPU at home: --resources gpu_slots=k runs k jobs on it
        mem_mb=4000,
        runtime=intervention_runtime_minutes,
    params:
        data=as_json_arg(config["data"]),
        interventions=analysis_settings("interventions"),
        device=config["device"],
        kernel=config["kernel"],
        checkpoint=f"data/checkpoints/{MODEL_KEY}/intervention-{{kind}}-{{settings}}.pt",
    shell:
        # The log is appended to (Snakemake itself removes a failed attempt's log before a retry).
        "python -m onion train-intervention --kind {wildcards.kind} --data {params.data} "
        "--interventions {params.interventions} --model {input.model} "
        "--train-data {input.train} --valid-data {input.valid} --das-valid-data {input.das_valid} "
        "--das-train-data {input.das_train} "
        "--variant {wildcards.variant} --size {wildcards.size} --seed {wildcards.seed} "
        "--device {params.device} --kernel {params.kernel} --threads {threads} "
        "--checkpoint {params.checkpoint} "
        "--out {output.result} --parameters {output.parameters} >> {log} 2>&1"


rule table_interventions:
    input:
        results=intervention_paths("json", cells=["gru"]),
    output:
        md="data/tables/table2_interventions.md",
        csv=report(
            "data/tables/table2_interventions.csv",
            caption="../report/table2_interventions.rst",
            category="Downloads",
            labels={"table": "Tables 2 and 5", "format": "CSV"},
        ),
        tex="data/tables/table2_interventions.tex",
        html=report(
            "data/tables/table2_interventions.html",
            caption="../report/table2_interventions.rst",
            category="Tables",
            labels={"table": "Tables 2 and 5", "shows": "exact match of the interventions"},
        ),
    log:
        "data/logs/table_interventions.log",
    conda:
        "../envs/onion.yaml"
    shell:
        "python -m onion table-interventions --results {input.results} --data-root data "
        "--md {output.md} --csv {output.csv} --tex {output.tex} > {log} 2>&1 && "
        "python -m onion html --md {output.md} --out {output.html} >> {log} 2>&1"


rule figure_onion_scales:
    input:
        parameters=intervention_paths("parquet", kinds=["onion"], cells=["gru"]),
    output:
        report(
            "data/figures/intervention_onion_scales.pdf",
            caption="../report/intervention_onion_scales.rst",
            category="Interventions",
            labels={"figure": "onion scales", "shows": "learned scale |s_j| per position"},
        ),
    log:
        "data/logs/figure_onion_scales.log",
    conda:
        "../envs/onion.yaml"
    params:
        max_length=config["data"]["max_length"],
    shell:
        "python -m onion figure-interventions onion-scales --parameters {input.parameters} "
        "--max-length {params.max_length} --out {output} > {log} 2>&1"


rule figure_das_budget:
    input:
        parameters=intervention_paths("parquet", kinds=LINEAR_INTERVENTION_KINDS, cells=["gru"]),
    output:
        report(
            "data/figures/intervention_das_budget.pdf",
            caption="../report/intervention_das_budget.rst",
            category="Interventions",
            labels={"figure": "DAS budget", "shows": "rotated dimensions per position or bigram"},
        ),
    log:
        "data/logs/figure_das_budget.log",
    conda:
        "../envs/onion.yaml"
    params:
        max_length=config["data"]["max_length"],
    shell:
        "python -m onion figure-interventions das-budget --parameters {input.parameters} "
        "--max-length {params.max_length} --out {output} > {log} 2>&1"
