rule make_dataset:
    output:
        train="data/datasets/train.parquet",
        valid="data/datasets/valid.parquet",
        das_valid="data/datasets/das_valid.parquet",
        das_train="data/datasets/das_train.parquet",
    log:
        "data/logs/make_dataset.log",
    benchmark:
        "data/benchmarks/make_dataset.tsv"
    conda:
        "../envs/onion.yaml"
    resources:
        mem_mb=4000,
        runtime=fixed_runtime(30),
    params:
        data=as_json_arg(config["data"]),
    shell:
        "python -m onion make-dataset --data {params.data} "
        "--train {output.train} --valid {output.valid} --das-valid {output.das_valid} "
        "--das-train {output.das_train} > {log} 2>&1"
