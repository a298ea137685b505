"""Command line: `python -m onion <command>`; the workflow's rules call these commands.

Each command parses its arguments and calls one `run_*` function that lives beside the science it
runs. Imports are made inside the commands, so that tables and figures never import PyTorch.
"""

from __future__ import annotations

import argparse
import json
import sys

from onion.names import CELLS, DEVICES, INTERVENTION_KINDS, KERNELS, PRECISIONS, PROBE_KINDS, VARIANTS


def _json_arg(text: str) -> dict:
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON: {err}") from err


def _config(cls, values: dict, where: str):
    """A frozen config dataclass from a JSON argument, naming unknown keys."""
    from onion.config import from_dict
    return from_dict(cls, values, where)


def _device(args):
    """The job's device after pinning its threads (one per job when jobs share the cores)."""
    from onion.runtime import resolve_device, set_threads
    set_threads(args.threads)
    return resolve_device(args.device)


def _data(args):
    from onion.config import DataConfig
    return _config(DataConfig, args.data, "data")


def cmd_make_dataset(args) -> None:
    from onion.data import run_make_dataset
    run_make_dataset(_data(args), args.train, args.valid, args.das_valid, args.das_train)


def cmd_train(args) -> None:
    from onion.config import TrainConfig
    from onion.training import run_training
    run_training(args.cell, args.variant, args.size, args.seed, _data(args),
                 _config(TrainConfig, args.train, "train"), args.train_data,
                 args.valid_data, args.model, args.metrics, _device(args), args.checkpoint, args.kernel)


def cmd_train_intervention(args) -> None:
    from onion.interventions import InterventionConfig, run_intervention
    run_intervention(args.kind, args.variant, args.size, args.seed, _data(args),
                     _config(InterventionConfig, args.interventions, "interventions"),
                     args.model, args.train_data, args.valid_data, args.out, args.parameters,
                     _device(args), args.checkpoint, args.das_train_data, args.das_valid_data, args.kernel)


def cmd_extract_trajectories(args) -> None:
    from onion.extract import ExtractConfig, run_extract_trajectories
    run_extract_trajectories(args.model, args.valid_data, args.out, args.variant, args.size, args.seed,
                             _data(args), _config(ExtractConfig, args.extract, "extract"),
                             _device(args))


def cmd_extract_states(args) -> None:
    from onion.extract import ExtractConfig, run_extract_states
    run_extract_states(args.model, args.train_data, args.valid_data, args.out, args.variant, args.size,
                       args.seed, _data(args), _config(ExtractConfig, args.extract, "extract"),
                       _device(args))


def cmd_train_probe(args) -> None:
    from onion.probes import ProbeConfig, run_probe
    run_probe(args.kind, args.states, args.out, args.breakdown, _data(args),
              _config(ProbeConfig, args.probes, "probes"), _device(args), args.checkpoint,
              args.eval_every, args.kernel)


def cmd_table(args) -> None:
    from onion.report import tables
    run = {"base": tables.run_table_base, "interventions": tables.run_table_interventions,
           "probes": tables.run_table_probes}[args.table]
    run(args.inputs, args.md, args.csv, args.tex, args.data_root)


def cmd_table_cells(args) -> None:
    from onion.report.cell_comparison import run_table_cells
    run_table_cells(args.metrics, args.interventions, args.probes, args.md, args.csv, args.tex,
                    args.signature)


def cmd_summary(args) -> None:
    from onion.report.summary import run_summary
    run_summary(args.base, args.interventions, args.probes, args.out, args.append, args.settings, args.gates)


def cmd_figure(args) -> None:
    from onion.report.figures import run_figure
    run_figure(args.figure, args.inputs, [args.pdf, args.png], args.channels, args.size, args.variant,
               args.text)


def cmd_figure_interventions(args) -> None:
    from onion.report.intervention_plots import run_figure_interventions
    run_figure_interventions(args.figure, args.parameters, args.out, args.max_length)


def cmd_html(args) -> None:
    from onion.report.html import run_html
    run_html(args.md, args.out, args.verdicts)


def cmd_check_config(args) -> None:
    from onion.config_checks import SCHEMA, run_check_config
    run_check_config(args.files, args.schema or SCHEMA)


def cmd_migrate_layout(args) -> None:
    from onion.files import run_migrate_layout
    run_migrate_layout(args.data_dir)


def cmd_benchmark_training(args) -> None:
    from onion.benchmark import run_benchmark_training
    run_benchmark_training(args.sizes, args.steps, _device(args), args.rounds, args.out, args.cells,
                           args.precisions, args.das)


def cmd_gpu_check(args) -> None:
    from onion import benchmark, gpu_check
    from onion.runtime import set_float32_precision, set_threads
    if args.worker:  # one of the concurrent training jobs the benchmark starts
        set_float32_precision(args.tf32)
        print(json.dumps(benchmark.worker(args.sizes[0], args.steps, args.device, args.start_at)))
        return
    set_threads(args.threads)
    result = gpu_check.run_gpu_check(args.device, args.out, args.config, args.checks_only, args.tf32, sizes=args.sizes,
                                     steps=args.steps, jobs=args.jobs, concurrency_size=args.concurrency_size,
                                     concurrency_steps=args.concurrency_steps,
                                     startup_seconds=args.startup_seconds)
    if not result["passed"]:
        raise SystemExit(1)


def _add(sub, name: str, func, help: str, *arguments: str, configs: tuple = (), device: bool = False,
         model: bool = False, table: bool = False, **options) -> argparse.ArgumentParser:
    """A subcommand: `arguments` are required options ('--out'), `configs` config sections given
    as JSON ('data' -> --data '{...}'); `device`, `model` and `table` add those groups."""
    p = sub.add_parser(name, help=help)
    for section in configs:
        p.add_argument(f"--{section}", type=_json_arg, default={}, help=f"{section} config as JSON")
    for arg in arguments:
        p.add_argument(arg, required=True)
    if model:  # which trained model a job is about
        p.add_argument("--variant", default="autoregressive", choices=VARIANTS)
        p.add_argument("--size", type=int, required=True)
        p.add_argument("--seed", type=int, default=0)
    if device:
        p.add_argument("--device", default="auto", help=", ".join(DEVICES))
        p.add_argument("--threads", type=int, default=None, help="PyTorch threads")
    if table:  # where a table goes
        for fmt in ("--md", "--csv", "--tex"):
            p.add_argument(fmt, required=True)
    for arg, kwargs in options.items():
        p.add_argument("--" + arg.replace("_", "-"), **kwargs)
    p.set_defaults(func=func)
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m onion", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    checkpoint = {"default": None, "help": "resumable checkpoint path"}
    kernel = {"default": "auto", "choices": KERNELS, "help": "recurrent loops: torch.nn's layers, unrolled (compiled), auto"}
    _add(sub, "make-dataset", cmd_make_dataset, "generate the train and validation sets", "--train",
         "--valid", "--das-valid", "--das-train", configs=("data",))
    p = _add(sub, "train", cmd_train, "train one repeat model (GRU, LSTM or tanh RNN) and evaluate it",
             "--train-data", "--valid-data", "--model", "--metrics", configs=("data", "train"), model=True,
             device=True, checkpoint=checkpoint, kernel=kernel)
    p.add_argument("--cell", default="gru", choices=CELLS, help="the recurrent cell (the paper: gru)")
    p = _add(sub, "train-intervention", cmd_train_intervention, "train and evaluate one intervention on a "
             "frozen model", "--model", "--train-data", "--valid-data", "--out", "--parameters",
             configs=("data", "interventions"), model=True, device=True, checkpoint=checkpoint, kernel=kernel,
             das_train_data={"help": "training set of linear DAS (make-dataset --das-train)"},
             das_valid_data={"help": "validation set of linear DAS (make-dataset --das-valid)"})
    p.add_argument("--kind", required=True, choices=INTERVENTION_KINDS)
    _add(sub, "extract-trajectories", cmd_extract_trajectories, "per-step hidden states and gates to "
         "Parquet", "--model", "--valid-data", "--out", configs=("data", "extract"), model=True, device=True)
    _add(sub, "extract-states", cmd_extract_states, "final states of train and valid sequences to Parquet",
         "--model", "--train-data", "--valid-data", "--out", configs=("data", "extract"), model=True,
         device=True)
    p = _add(sub, "train-probe", cmd_train_probe, "train and evaluate one probe on stored final states",
             "--states", "--out", "--breakdown", configs=("data", "probes"), device=True, checkpoint=checkpoint, kernel=kernel,
             eval_every={"type": int, "default": 0, "help": "log held-out accuracy every n steps"})
    p.add_argument("--kind", required=True, choices=PROBE_KINDS)
    for table, what in (("base", "Tables 1/3 from metrics files"),
                        ("interventions", "Tables 2/5 from intervention JSON files"),
                        ("probes", "Table 4 from probe JSON files")):
        p = _add(sub, f"table-{table}", cmd_table, what, table=True)
        p.add_argument("--metrics" if table == "base" else "--results", dest="inputs", nargs="+",
                       required=True)
        p.add_argument("--data-root", default=None, help="also every result present under this data "
                       "folder (the workflow passes data)")
        p.set_defaults(table=table)
    p = _add(sub, "table-cells", cmd_table_cells, "every intervention and probe per recurrent cell, and the "
             "onion signature per cell", "--signature", table=True)
    for arg in ("--metrics", "--interventions", "--probes"):
        p.add_argument(arg, nargs="+", required=True)
    _add(sub, "summary", cmd_summary, "one page: which of the paper's claims this run reproduced",
         "--base", "--interventions", "--probes", "--out",
         append={"nargs": "*", "default": [], "help": "Markdown sections to add at the end"},
         gates={"nargs": 2, "default": (), "help": "trajectories of the small and the large GRU (claim 6)"},
         settings={"type": _json_arg, "default": {}, "help": "the run's data, train, interventions, "
                   "probes and extract settings as JSON (for the differences from the authors)"})
    p = _add(sub, "figure", cmd_figure, "Fig. 2 (gates), Fig. 5 (gates-all) or Fig. 4 (probes)", "--pdf",
             "--png", inputs={"nargs": "+", "required": True},
             channels={"type": int, "default": 64}, size={"type": int, "default": 64},
             variant={"default": "autoregressive", "choices": VARIANTS},
             text={"default": "ab1cadf2", "help": "gates: the input shown (one of extract.texts)"})
    p.add_argument("figure", choices=["gates", "gates-all", "probes"])
    p = _add(sub, "figure-interventions", cmd_figure_interventions, "a figure from intervention parameter "
             "files", "--out", parameters={"nargs": "+", "required": True},
             max_length={"type": int, "default": 9})
    p.add_argument("figure", choices=["onion-scales", "onion-scales-cells", "das-budget"])
    _add(sub, "html", cmd_html, "a Markdown page (the summary, a table) as HTML for the report", "--md", "--out",
         verdicts={"default": None, "help": "also the summary page's verdicts alone, as HTML, here"})
    p = _add(sub, "check-config", cmd_check_config, "check config files as the workflow would",
             schema={"default": None, "help": "a JSON schema (default: the package's config.schema.yaml)"})
    p.add_argument("files", nargs="+", help="config.yaml, then any --configfile files, merged in order")
    p = _add(sub, "migrate-layout", cmd_migrate_layout, "move a data folder of an older layout "
             "(before settings keys or cell=) to keyed paths: finished artifacts are kept, checkpoints removed")
    p.add_argument("data_dir", nargs="?", default="data")
    p = _add(sub, "benchmark-training", cmd_benchmark_training, "training steps/s of torch.nn's layer on "
             "packed batches and of the unrolled kernel", device=True, sizes={"type": int, "nargs": "+", "default": [48, 64, 128]},
             cells={"nargs": "+", "default": ["gru"], "choices": CELLS},
             precisions={"nargs": "+", "default": ["fp32"], "choices": PRECISIONS,
                         "help": "the unrolled kernel's, each timed against nn (fp32)"},
             das={"action": "store_true", "help": "linear unigram DAS instead of training: steps/s per "
                  "rotation and precision, and the rotation's share of a step"},
             steps={"type": int, "default": 200}, rounds={"type": int, "default": 4}, out={"default": None})
    p.set_defaults(device="cpu", threads=1)
    p = _add(sub, "gpu-check", cmd_gpu_check, "the CUDA path against the CPU, then its speed and the paper "
             "grid's projected wall time (scaled down on a CPU)", device=True,
             sizes={"type": int, "nargs": "+", "default": None}, steps={"type": int, "default": None},
             jobs={"type": int, "nargs": "+", "default": None},
             concurrency_size={"type": int, "default": None}, concurrency_steps={"type": int, "default": None},
             startup_seconds={"type": float, "default": None}, config={"default": "config.yaml"},
             out={"default": "gpu-check.json"},
             checks_only={"action": "store_true", "help": "the checks without the benchmark"},
             tf32={"action": "store_true", "help": "TensorFloat-32 in cuBLAS and cuDNN (default: FP32 pinned)"},
             worker={"action": "store_true", "help": argparse.SUPPRESS},
             start_at={"type": float, "default": 0.0, "help": argparse.SUPPRESS})
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, RuntimeError, OSError) as err:  # OSError: a file that cannot be read or written
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0
