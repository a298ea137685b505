# Figures 2, 4 and 5 of the paper; they read Parquet/JSON only, so rebuilding one retrains nothing.

FIG4_SIZE = config["figures"]["size"] if config["figures"]["size"] in GRU_SIZES else min(GRU_SIZES)


localrules:
    figure_gates,
    figure_probes,
    figure_gates_all_channels,


rule figure_gates:
    input:
        small=f"data/states/{gate_trajectories()['small']}/trajectories.parquet",
        large=f"data/states/{gate_trajectories()['large']}/trajectories.parquet",
    output:
        pdf="data/figures/fig2_gates.pdf",
        png=report(
            "data/figures/fig2_gates.png",
            caption="../report/fig2_gates.rst",
            category="Figures",
            labels={"figure": "Fig. 2", "shows": "input gate 1 − z of the largest and a small GRU"},
        ),
    log:
        "data/logs/figure_gates.log",
    conda:
        "../envs/onion.yaml"
    params:
        channels=config["figures"]["channels"],
        text=settings("extract")["texts"][0],
    shell:
        "python -m onion figure gates --inputs {input.small} {input.large} "
        "--channels {params.channels} --text {params.text} --pdf {output.pdf} --png {output.png} > {log} 2>&1"


rule figure_probes:
    input:
        results=probe_paths("json", variants=[figure_model(FIG4_SIZE)["variant"]], sizes=[FIG4_SIZE], cells=["gru"]),
    output:
        pdf="data/figures/fig4_probes.pdf",
        png=report(
            "data/figures/fig4_probes.png",
            caption="../report/fig4_probes.rst",
            category="Figures",
            labels={"figure": "Fig. 4", "shows": "exact match of the five probes"},
        ),
    log:
        "data/logs/figure_probes.log",
    conda:
        "../envs/onion.yaml"
    params:
        size=FIG4_SIZE,
        variant=figure_model(FIG4_SIZE)["variant"],
    shell:
        "python -m onion figure probes --inputs {input.results} --size {params.size} "
        "--variant {params.variant} --pdf {output.pdf} --png {output.png} > {log} 2>&1"


rule figure_gates_all_channels:
    input:
        f"data/states/{gate_trajectories()['large']}/trajectories.parquet",
    output:
        pdf="data/figures/fig5_gates_all_channels.pdf",
        png=report(
            "data/figures/fig5_gates_all_channels.png",
            caption="../report/fig5_gates_all_channels.rst",
            category="Figures",
            labels={"figure": "Fig. 5", "shows": "input gate 1 − z of every channel of the largest GRU"},
        ),
    log:
        "data/logs/figure_gates_all_channels.log",
    conda:
        "../envs/onion.yaml"
    params:
        text=settings("extract")["texts"][0],
    shell:
        "python -m onion figure gates-all --inputs {input} --text {params.text} "
        "--pdf {output.pdf} --png {output.png} > {log} 2>&1"
