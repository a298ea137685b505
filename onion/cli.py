"""Command line: `python -m onion <command>`; the workflow's rules call these commands."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch

from onion import paper
from onion.config import DataConfig, TrainConfig, from_dict
from onion.files import write_json, write_parquet
from onion.runtime import log, resolve_device, set_threads


def _json_arg(text: str) -> dict:
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON: {err}") from err


def cmd_make_dataset(args) -> None:
    from onion.data import length_mix, make_das_valid, make_datasets, write_sequences
    cfg = from_dict(DataConfig, args.data, "data")
    log(f"generating datasets: {cfg}")
    train, valid = make_datasets(cfg)
    das_valid = make_das_valid(cfg, train, valid)
    write_sequences(args.valid, valid)
    write_sequences(args.das_valid, das_valid)
    write_sequences(args.train, train)
    mix = ", ".join(f"{k}: {100 * v:.2f}%" for k, v in length_mix(train, cfg).items())
    log(f"training length mix ({cfg.train_sampling}): {mix}")
    log(f"wrote {len(train)} training sequences to {args.train}, {len(valid)} to {args.valid} and "
        f"{len(das_valid)} of length {cfg.das_length} to {args.das_valid}")


def cmd_train(args) -> None:
    from onion.data import read_sequences
    from onion.evaluation import evaluate_model
    from onion.model import RepeatRNN, save_model
    from onion.training import train_model
    set_threads(args.threads)
    device = resolve_device(args.device)
    data_cfg = from_dict(DataConfig, args.data, "data")
    train_cfg = from_dict(TrainConfig, args.train, "train")
    train = read_sequences(args.train_data, data_cfg.max_length)
    valid = read_sequences(args.valid_data, data_cfg.max_length)
    log(f"training {args.variant} {args.cell} N={args.size} seed={args.seed} on {device} "
        f"({torch.get_num_threads()} threads): {train_cfg}")
    torch.manual_seed(args.seed)
    model = RepeatRNN(data_cfg.n_symbols, args.size, args.variant, args.cell)
    record = train_model(model, train, valid, train_cfg, args.seed, device, args.checkpoint)
    metrics = evaluate_model(model, valid, device)
    log(f"validation exact match {metrics['exact_match']:.4f} "
        f"({record['steps_per_second']:.1f} steps/s this run)")
    save_model(model, args.model)
    write_json(args.metrics, {"variant": args.variant, "cell": args.cell, "size": args.size,
                              "seed": args.seed,
                              "device": str(device), **metrics, "training": record,
                              "config": dataclasses.asdict(train_cfg)})
    if args.checkpoint:
        Path(args.checkpoint).unlink(missing_ok=True)


def cmd_table_base(args) -> None:
    from onion.tables import gru_rows, read_metrics, summarize, write_table
    results = gru_rows(read_metrics(args.metrics))
    summary = summarize(results, ["variant"], "exact_match", paper.BASE_ACCURACY)
    write_table(summary, ["variant"], "Tables 1 and 3: exact-match accuracy of the trained GRUs",
                args.md, args.csv, args.tex)
    log(f"wrote {args.md}, {args.csv}, {args.tex} from {len(results)} models")


def cmd_summary(args) -> None:
    from onion.summary import write_summary
    write_summary(args.base, args.interventions, args.probes, args.out, args.append)
    log(f"wrote {args.out}")


def cmd_check_config(args) -> None:
    from onion.config_checks import check_config, load_yaml, merge
    config = {}
    for path in args.files:
        config = merge(config, load_yaml(path))
    check_config(config, args.schema, cuda_available=torch.cuda.is_available)
    log(f"{' + '.join(args.files)}: valid")


def cmd_benchmark_training(args) -> None:
    from onion.benchmark import benchmark_training
    set_threads(args.threads)
    results = benchmark_training(args.sizes, args.steps, resolve_device(args.device), args.rounds)
    if args.out:
        results.to_csv(args.out, index=False)
    print(results.to_string(index=False))


def cmd_gpu_check(args) -> None:
    from onion import gpu_check
    cuda = torch.cuda.is_available() and args.device != "cpu"
    defaults = {"sizes": [64, 1024], "steps": 200, "jobs": [1, 4, 8], "concurrency_size": 64,
                "concurrency_steps": 2000, "startup_seconds": 40.0} if cuda else \
        {"sizes": [16, 32], "steps": 5, "jobs": [1, 2], "concurrency_size": 16,
         "concurrency_steps": 20, "startup_seconds": 15.0}  # the scaled-down CPU version
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.worker:
        print(json.dumps(gpu_check.worker(args.sizes[0], args.steps, args.device, args.start_at)))
        return
    set_threads(args.threads)
    result = gpu_check.run(args.device, args.sizes, args.steps, args.jobs, args.concurrency_size,
                           args.concurrency_steps, args.startup_seconds, args.out, args.config)
    for row in result["agreement"]:
        log(f"N={row['size']} {row['loop']} {row['kind']}: loss {row['cpu_loss']:.5f} (CPU) vs "
            f"{row['device_loss']:.5f}; gradients differ by {row['grad_rel_diff']:.1e} relative"
            f"{'' if row['agree'] else '  <-- DISAGREE'}")
    for row in result["sync"]:
        if row["sync_free"] is False:
            log(f"N={row['size']} {row['loop']} {row['kind']}: a step waits for the GPU: {row['error']}")
    log(f"gpu-check {'passed' if result['passed'] else 'FAILED'} on {result['device_name']} in "
        f"{result['seconds']:.0f} s; results in {args.out}")
    if not result["passed"]:
        raise SystemExit(1)


def cmd_train_intervention(args) -> None:
    from onion.data import read_sequences
    from onion.interventions import (InterventionConfig, eval_counterfactuals, evaluate_intervention,
                                     parameter_table, train_intervention)
    set_threads(args.threads)
    device = resolve_device(args.device)
    data_cfg = from_dict(DataConfig, args.data, "data")
    cfg = from_dict(InterventionConfig, args.interventions, "interventions")
    linear = args.kind.startswith("linear")
    if linear and not args.das_valid_data:
        raise ValueError(f"--das-valid-data is required for the {args.kind} intervention")
    model = _load_checked_model(args, device)
    train = read_sequences(args.train_data, data_cfg.max_length)
    valid = read_sequences(args.valid_data, data_cfg.max_length)
    log(f"training the {args.kind} intervention on {args.variant} N={args.size} seed={args.seed} "
        f"on {device} ({torch.get_num_threads()} threads): {cfg}")
    intervention, record = train_intervention(model, args.kind, train, cfg, args.seed, device,
                                              data_cfg.max_length, args.checkpoint,
                                              das_length=data_cfg.das_length if linear else None)
    if linear:  # the authors' dedicated length-9 set (a different seed), not the general one
        valid = read_sequences(args.das_valid_data, data_cfg.max_length)
    cf = eval_counterfactuals(args.kind, valid, args.seed, data_cfg.n_symbols)
    metrics = evaluate_intervention(model, intervention, cf, device)
    log(f"{args.kind}: exact match {metrics['exact_match']:.4f} on {metrics['n']} held-out "
        f"counterfactuals ({record['steps_per_second']:.1f} steps/s this run)")
    write_parquet(parameter_table(intervention, args.kind, args.variant, args.size, args.seed, model.cell),
                  args.parameters)
    write_json(args.out, {"variant": args.variant, "cell": model.cell, "size": args.size,
                          "seed": args.seed, "kind": args.kind, "steps": cfg.steps, "lr": cfg.lr, "device": str(device),
                          **metrics,
                          "config": dataclasses.asdict(cfg), "training": record})


def cmd_table_interventions(args) -> None:
    import pandas as pd
    from onion.counterfactuals import KINDS
    from onion.tables import gru_rows, read_metrics, summarize, write_table
    results = gru_rows(read_metrics(args.results))
    rows = {(variant, kind): cells for variant, kinds in paper.INTERVENTIONS.items()
            for kind, cells in kinds.items()}
    rows[("autoregressive", "onion_control")] = {64: (paper.ONION_CONTROL_N64_AR, float("nan"))}
    summary = summarize(results, ["variant", "kind"], "exact_match", rows)
    summary["kind"] = pd.Categorical(summary["kind"], categories=KINDS, ordered=True)  # paper's order
    summary = summary.sort_values(["variant", "kind", "size"])
    if "lr" not in results:
        results["lr"] = float("nan")
    runs = results[["steps", "lr"]].drop_duplicates().sort_values(["steps", "lr"])
    steps = ", ".join(f"{s} steps at lr {lr:g}" for s, lr in runs.itertuples(index=False))
    write_table(summary, ["variant", "kind"], "Tables 2 (autoregressive) and 5 (no input): exact match "
                f"of interventions on the final state ({steps}; the paper: 60000 steps at lr 0.001)",
                args.md, args.csv, args.tex)
    log(f"wrote {args.md}, {args.csv}, {args.tex} from {len(results)} interventions")


def cmd_figure_interventions(args) -> None:
    from onion import intervention_plots
    if args.figure == "onion-scales-cells":
        intervention_plots.plot_onion_scales(args.parameters, args.out, args.max_length, panels="cell")
    else:
        plot = {"onion-scales": intervention_plots.plot_onion_scales,
                "das-budget": intervention_plots.plot_das_budget}[args.figure]
        plot(args.parameters, args.out, args.max_length)
    log(f"wrote {args.out}")


def cmd_table_cells(args) -> None:
    from onion.cells import cells_table, signature, signature_markdown, write_cells_table
    from onion.tables import read_metrics
    table = cells_table(read_metrics(args.metrics), read_metrics(args.interventions),
                        read_metrics(args.probes))
    write_cells_table(table, args.md, args.csv, args.tex)
    verdicts = signature(table)
    Path(args.signature).write_text(signature_markdown(verdicts))
    for v in verdicts:
        log(f"{v['cell']} {v['variant']} N={v['size']}: {v['verdict']}")
    log(f"wrote {args.md}, {args.csv}, {args.tex}, {args.signature}")


def _model_keys(args) -> dict:
    return {"variant": args.variant, "size": args.size, "seed": args.seed}


def _load_checked_model(args, device):
    from onion.model import load_model
    model = load_model(args.model, device)
    if (model.variant, model.hidden_size) != (args.variant, args.size):
        raise ValueError(f"{args.model}: a {model.variant} N={model.hidden_size} model, "
                         f"not {args.variant} N={args.size}")
    return model


def cmd_extract_trajectories(args) -> None:
    import time
    from onion.data import read_sequences
    from onion.extract import ExtractConfig, trajectories_table, trajectory_examples
    set_threads(args.threads)
    device = resolve_device(args.device)
    data_cfg = from_dict(DataConfig, args.data, "data")
    cfg = from_dict(ExtractConfig, args.extract, "extract")
    began = time.perf_counter()
    model = _load_checked_model(args, device)
    valid = read_sequences(args.valid_data, data_cfg.max_length)
    examples = trajectory_examples(cfg, valid, data_cfg.n_symbols)
    table = trajectories_table(model, examples, args.variant, args.size, args.seed)
    write_parquet(table, args.out)
    log(f"wrote {table.num_rows} steps of {len(examples)} examples to {args.out} "
        f"({Path(args.out).stat().st_size / 1e6:.2f} MB, {time.perf_counter() - began:.1f} s)")


def cmd_extract_states(args) -> None:
    import time
    from onion.data import SequenceSet, read_sequences
    import numpy as np
    from onion.extract import ExtractConfig, states_table, vectors
    from onion.runtime import NonFiniteError
    set_threads(args.threads)
    device = resolve_device(args.device)
    data_cfg = from_dict(DataConfig, args.data, "data")
    cfg = from_dict(ExtractConfig, args.extract, "extract")
    began = time.perf_counter()
    model = _load_checked_model(args, device)
    train = read_sequences(args.train_data, data_cfg.max_length)
    if cfg.n_train_states > len(train):
        log(f"extract.n_train_states={cfg.n_train_states} exceeds the {len(train)} sequences of "
            f"{args.train_data}: using all of them")
    train = SequenceSet(train.tokens[:cfg.n_train_states], train.lengths[:cfg.n_train_states])
    valid = read_sequences(args.valid_data, data_cfg.max_length)
    table = states_table(model, {"train": train, "valid": valid}, device, args.variant, args.size,
                         args.seed, cfg.batch_size)
    if not np.isfinite(vectors(table, "h")).all():
        raise NonFiniteError(f"{args.model}: the model produced NaN/Inf final states; nothing written")
    write_parquet(table, args.out)
    log(f"wrote final states of {len(train)} train and {len(valid)} valid sequences to {args.out} "
        f"({Path(args.out).stat().st_size / 1e6:.2f} MB, {time.perf_counter() - began:.1f} s)")


def cmd_train_probe(args) -> None:
    from onion.extract import read_states
    from onion.probes import ProbeConfig, breakdown_table, evaluate_probe, onion_scales, train_probe
    set_threads(args.threads)
    device = resolve_device(args.device)
    data_cfg = from_dict(DataConfig, args.data, "data")
    cfg = from_dict(ProbeConfig, args.probes, "probes")
    h, train, keys = read_states(args.states, "train", data_cfg.max_length)
    h_valid, valid, _ = read_states(args.states, "valid", data_cfg.max_length)
    log(f"training the {args.kind} probe on {len(train)} states of {keys} on {device} "
        f"({torch.get_num_threads()} threads): {cfg}")
    probe, record = train_probe(args.kind, h, train, data_cfg.n_symbols, cfg, keys["seed"], device,
                                args.checkpoint, eval_every=args.eval_every, valid=(h_valid, valid))
    metrics = evaluate_probe(probe, h_valid, valid, device)
    log(f"{args.kind} probe: exact match {metrics['exact_match']:.4f} on {metrics['n']} held-out states")
    extra = {"scales": onion_scales(probe)} if args.kind == "onion" else {}
    write_parquet(breakdown_table(metrics, args.kind, **keys), args.breakdown)
    write_json(args.out, {**keys, "kind": args.kind, "steps": cfg.steps, "lr": cfg.lr,
                          "lr_schedule": cfg.lr_schedule, "n_train_states": len(train),
                          "device": str(device), **metrics, "config": dataclasses.asdict(cfg),
                          "training": record, **extra})


def cmd_table_probes(args) -> None:
    import pandas as pd
    from onion.probes import KINDS
    from onion.tables import gru_rows, read_metrics, summarize, write_table
    results = gru_rows(read_metrics(args.results))
    rows = {(kind, variant): cells for (kind, variant), cells in paper.PROBES.items()}
    summary = summarize(results, ["kind", "variant"], "exact_match", rows)
    summary["kind"] = pd.Categorical(summary["kind"], categories=KINDS, ordered=True)  # paper's order
    summary = summary.sort_values(["kind", "variant", "size"])
    for column, default in (("lr", float("nan")), ("lr_schedule", "constant")):
        if column not in results:
            results[column] = default
    runs = results[["steps", "lr", "lr_schedule"]].drop_duplicates().sort_values(["steps", "lr"])
    settings = ", ".join(f"{s} steps, {sched} lr from {lr:g}" for s, lr, sched in runs.itertuples(index=False))
    write_table(summary, ["kind", "variant"], "Table 4: exact match of probes on the final state "
                f"({settings}; the paper: 60000 steps, constant lr 0.001)", args.md, args.csv, args.tex)
    log(f"wrote {args.md}, {args.csv}, {args.tex} from {len(results)} probes")


def cmd_figure(args) -> None:
    from onion import figures
    from onion.tables import read_metrics
    outputs = [args.pdf, args.png]
    if args.figure == "gates":
        figures.figure_gates(args.inputs[-1], args.inputs[0], outputs, args.channels)
    elif args.figure == "gates-all":
        figures.figure_all_channels(args.inputs[0], outputs)
    else:
        figures.figure_probes(read_metrics(args.inputs), outputs, args.size, args.variant)
    log(f"wrote {args.pdf} and {args.png}")


def _add_probe_commands(sub) -> None:
    def model_args(p):
        p.add_argument("--data", type=_json_arg, default={}, help="data config as JSON")
        p.add_argument("--extract", type=_json_arg, default={}, help="extract config as JSON")
        p.add_argument("--model", required=True, help="the trained model.pt")
        p.add_argument("--valid-data", required=True)
        _model_job_args(p)
        p.add_argument("--out", required=True, help="output Parquet")

    p = sub.add_parser("extract-trajectories", help="per-step hidden states and gates to Parquet")
    model_args(p)
    p.set_defaults(func=cmd_extract_trajectories)

    p = sub.add_parser("extract-states", help="final states h_L of train and valid sequences to Parquet")
    model_args(p)
    p.add_argument("--train-data", required=True)
    p.set_defaults(func=cmd_extract_states)

    p = sub.add_parser("train-probe", help="train and evaluate one probe on stored final states")
    p.add_argument("--kind", required=True,
                   choices=["linear", "mlp", "onion", "gru_autoregressive", "gru_no_input"])
    p.add_argument("--data", type=_json_arg, default={}, help="data config as JSON")
    p.add_argument("--probes", type=_json_arg, default={}, help="probe config as JSON")
    p.add_argument("--states", required=True, help="final_states.parquet from extract-states")
    p.add_argument("--eval-every", type=int, default=0, help="log held-out accuracy every n steps")
    _device_args(p)
    p.add_argument("--checkpoint", default=None, help="resumable checkpoint path")
    p.add_argument("--out", required=True, help="output accuracy JSON")
    p.add_argument("--breakdown", required=True, help="output Parquet: per-position/length accuracy")
    p.set_defaults(func=cmd_train_probe)

    p = sub.add_parser("table-probes", help="Table 4 from probe JSON files")
    p.add_argument("--results", nargs="+", required=True)
    _table_args(p)
    p.set_defaults(func=cmd_table_probes)

    p = sub.add_parser("figure", help="Fig. 2 (gates), Fig. 5 (gates-all) or Fig. 4 (probes)")
    p.add_argument("figure", choices=["gates", "gates-all", "probes"])
    p.add_argument("--inputs", nargs="+", required=True,
                   help="trajectories.parquet (gates: smallest then largest model) or probe JSONs")
    p.add_argument("--channels", type=int, default=64, help="gates: channels of the largest model")
    p.add_argument("--size", type=int, default=64, help="probes: model size")
    p.add_argument("--variant", default="autoregressive", help="probes: model variant")
    p.add_argument("--pdf", required=True)
    p.add_argument("--png", required=True)
    p.set_defaults(func=cmd_figure)


def _model_key_args(p) -> None:
    """--variant, --size, --seed: which trained model a job is about."""
    p.add_argument("--variant", default="autoregressive")
    p.add_argument("--size", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)


def _device_args(p) -> None:
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--threads", type=int, default=None, help="PyTorch threads")


def _model_job_args(p) -> None:
    _model_key_args(p)
    _device_args(p)


def _table_args(p) -> None:
    """Where a table goes: Markdown, CSV and LaTeX."""
    p.add_argument("--md", required=True)
    p.add_argument("--csv", required=True)
    p.add_argument("--tex", required=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m onion", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("make-dataset", help="generate the train and validation sets")
    p.add_argument("--data", type=_json_arg, default={}, help="data config as JSON")
    p.add_argument("--train", required=True)
    p.add_argument("--valid", required=True)
    p.add_argument("--das-valid", required=True, help="the linear-DAS validation set (data.das_length)")
    p.set_defaults(func=cmd_make_dataset)

    p = sub.add_parser("train", help="train one repeat model (GRU, LSTM or tanh RNN) and evaluate it")
    p.add_argument("--cell", default="gru", choices=["gru", "lstm", "rnn_tanh"],
                   help="the recurrent cell (the paper: gru)")
    p.add_argument("--data", type=_json_arg, default={}, help="data config as JSON")
    p.add_argument("--train", type=_json_arg, default={}, help="training config as JSON")
    p.add_argument("--train-data", required=True)
    p.add_argument("--valid-data", required=True)
    _model_job_args(p)
    p.add_argument("--checkpoint", default=None, help="resumable checkpoint path")
    p.add_argument("--model", required=True, help="output model.pt")
    p.add_argument("--metrics", required=True, help="output metrics.json")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("table-base", help="Tables 1/3 from metrics files")
    p.add_argument("--metrics", nargs="+", required=True)
    _table_args(p)
    p.set_defaults(func=cmd_table_base)

    p = sub.add_parser("summary", help="one page: which of the paper's claims this run reproduced")
    p.add_argument("--base", required=True, help="table1_base_accuracy.csv")
    p.add_argument("--interventions", required=True, help="table2_interventions.csv")
    p.add_argument("--probes", required=True, help="table4_probes.csv")
    p.add_argument("--append", nargs="*", default=[],
                   help="Markdown sections to add at the end (the cells' onion signature)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("check-config", help="check config files as the workflow would, naming lines")
    p.add_argument("files", nargs="+", help="config.yaml, then any --configfile files, merged in order")
    p.add_argument("--schema", default="workflow/schemas/config.schema.yaml")
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("benchmark-training", help="steps/s of our loop vs a pack_padded_sequence loop")
    p.add_argument("--sizes", type=int, nargs="+", default=[48, 64, 128])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=4, help="alternations of the two loops per size")
    p.add_argument("--out", default=None)
    p.set_defaults(func=cmd_benchmark_training)

    p = sub.add_parser("gpu-check", help="the CUDA path against the CPU, its speed, 1-8 jobs per GPU, and "
                                         "the paper grid's projected wall time (scaled down on a CPU)")
    p.add_argument("--device", default="auto")
    p.add_argument("--sizes", type=int, nargs="+", default=None, help="default: 64 1024 (CPU: 16 32)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per loop (default 200, CPU 5)")
    p.add_argument("--jobs", type=int, nargs="+", default=None, help="concurrent jobs (default 1 4 8)")
    p.add_argument("--concurrency-size", type=int, default=None)
    p.add_argument("--concurrency-steps", type=int, default=None)
    p.add_argument("--startup-seconds", type=float, default=None,
                   help="time the concurrent jobs get to start before they train together")
    p.add_argument("--threads", type=int, default=None, help="PyTorch threads of the CPU side")
    p.add_argument("--config", default="config.yaml", help="where the paper grid is defined")
    p.add_argument("--out", default="gpu-check.json")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--start-at", type=float, default=0.0, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_gpu_check)

    p = sub.add_parser("train-intervention", help="train and evaluate one intervention on a frozen GRU")
    p.add_argument("--kind", required=True,
                   choices=["linear_unigram", "linear_bigram", "onion", "onion_control"])
    p.add_argument("--data", type=_json_arg, default={}, help="data config as JSON")
    p.add_argument("--interventions", type=_json_arg, default={}, help="intervention config as JSON")
    p.add_argument("--model", required=True, help="the trained model.pt (kept frozen)")
    p.add_argument("--train-data", required=True)
    p.add_argument("--valid-data", required=True, help="validation set of the onion kinds")
    p.add_argument("--das-valid-data", help="validation set of linear DAS (make-dataset --das-valid)")
    _model_job_args(p)
    p.add_argument("--checkpoint", default=None, help="resumable checkpoint path")
    p.add_argument("--out", required=True, help="output accuracy JSON")
    p.add_argument("--parameters", required=True, help="output Parquet of learned parameters")
    p.set_defaults(func=cmd_train_intervention)

    p = sub.add_parser("table-interventions", help="Tables 2/5 from intervention JSON files")
    p.add_argument("--results", nargs="+", required=True)
    _table_args(p)
    p.set_defaults(func=cmd_table_interventions)

    p = sub.add_parser("figure-interventions", help="a figure from intervention parameter files")
    p.add_argument("figure", choices=["onion-scales", "onion-scales-cells", "das-budget"])
    p.add_argument("--parameters", nargs="+", required=True)
    p.add_argument("--max-length", type=int, default=9)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_figure_interventions)

    p = sub.add_parser("table-cells", help="every intervention and probe per recurrent cell, and the "
                                           "onion signature per cell")
    p.add_argument("--metrics", nargs="+", required=True, help="the models' metrics.json")
    p.add_argument("--interventions", nargs="+", required=True, help="intervention-*.json")
    p.add_argument("--probes", nargs="+", required=True, help="probe-*.json")
    _table_args(p)
    p.add_argument("--signature", required=True, help="output Markdown: the verdict per cell")
    p.set_defaults(func=cmd_table_cells)
    _add_probe_commands(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0
