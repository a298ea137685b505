rule train_model:
    input:
        train=rules.make_dataset.output.train,
        valid=rules.make_dataset.output.valid,
    output:
        model=f"data/models/{MODEL_KEY}/model.pt",
        metrics=f"data/models/{MODEL_KEY}/metrics.json",
    log:
        f"data/logs/train_model/{MODEL_KEY}.log",
    benchmark:
        f"data/benchmarks/train_model/{MODEL_KEY}.tsv"
    conda:
        "../envs/onion.yaml"
    threads: config["threads_per_job"]
    resources:
        gpu=1 if uses_cuda() else 0,  # sbatch --gpus=1
        gpu_slots=gpu_slots,  # one GPU at home: --resources gpu_slots=k runs k jobs on it
        mem_mb=6000,
        runtime=train_runtime_minutes,
    params:
        data=as_json_arg(config["data"]),
        train=as_json_arg(settings("train")),
        device=config["device"],
        kernel=config["kernel"],
        checkpoint=f"data/checkpoints/{MODEL_KEY}/train.pt",
    shell:
        # The log is appended to, so a job resumed in the same attempt (a rerun of Snakemake)
        # shows the interrupted run too; Snakemake itself removes a failed attempt's log on retry.
        "python -m onion train --cell {wildcards.cell} --data {params.data} --train {params.train} "
        "--train-data {input.train} --valid-data {input.valid} "
        "--variant {wildcards.variant} --size {wildcards.size} --seed {wildcards.seed} "
        "--device {params.device} --kernel {params.kernel} --threads {threads} "
        "--checkpoint {params.checkpoint} "
        "--model {output.model} --metrics {output.metrics} >> {log} 2>&1"
