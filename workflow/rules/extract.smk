# Hidden states and gates of each trained model to Parquet (PAPER.md §3, §5, §6); schemas in docs/artifacts.md.


rule extract_trajectories:
    input:
        model=f"data/models/{MODEL_KEY}/model.pt",
        valid=rules.make_dataset.output.valid,
    output:
        f"data/states/{MODEL_KEY}/trajectories.parquet",
    log:
        f"data/logs/extract_trajectories/{MODEL_KEY}.log",
    benchmark:
        f"data/benchmarks/extract_trajectories/{MODEL_KEY}.tsv"
    conda:
        "../envs/onion.yaml"
    threads: config["threads_per_job"]
    resources:
        gres=shared_gpu,  # one GPU per group job (profiles/slurm), shared by its members
        group_slots=1,  # profiles/slurm: a group job runs one member at a time
        gpu_slots=gpu_slots,  # one GPU at home: --resources gpu_slots=k runs k jobs on it
        mem_mb=2000,
        runtime=fixed_runtime(10),
    params:
        data=as_json_arg(config["data"]),
        extract=as_json_arg({k: v for k, v in settings("extract").items() if k != "n_train_states"}),
        device=config["device"],
    shell:
        "python -m onion extract-trajectories --data {params.data} --extract {params.extract} "
        "--model {input.model} --valid-data {input.valid} "
        "--variant {wildcards.variant} --size {wildcards.size} --seed {wildcards.seed} "
        "--device {params.device} --threads {threads} --out {output} > {log} 2>&1"


rule extract_final_states:
    input:
        model=f"data/models/{MODEL_KEY}/model.pt",
        train=rules.make_dataset.output.train,
        valid=rules.make_dataset.output.valid,
    output:
        f"data/states/{MODEL_KEY}/final_states-{{states}}.parquet",
    log:
        f"data/logs/extract_final_states/{MODEL_KEY}/{{states}}.log",
    benchmark:
        f"data/benchmarks/extract_final_states/{MODEL_KEY}/{{states}}.tsv"
    conda:
        "../envs/onion.yaml"
    threads: config["threads_per_job"]
    resources:
        gres=shared_gpu,  # one GPU per group job (profiles/slurm), shared by its members
        group_slots=1,  # profiles/slurm: a group job runs one member at a time
        gpu_slots=gpu_slots,  # one GPU at home: --resources gpu_slots=k runs k jobs on it
        mem_mb=8000,
        runtime=fixed_runtime(30),
    params:
        data=as_json_arg(config["data"]),
        extract=as_json_arg({k: v for k, v in settings("extract").items() if k in ("n_train_states", "batch_size")}),
        device=config["device"],
    shell:
        "python -m onion extract-states --data {params.data} --extract {params.extract} "
        "--model {input.model} --train-data {input.train} --valid-data {input.valid} "
        "--variant {wildcards.variant} --size {wildcards.size} --seed {wildcards.seed} "
        "--device {params.device} --threads {threads} --out {output} > {log} 2>&1"
