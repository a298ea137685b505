# Helpers shared by all rules: config validation, the grid, paths, CLI arguments, resources.
import json
import shlex
import sys

from snakemake.utils import validate

from onion import keys
from onion.config_checks import SCHEMA as PACKAGE_SCHEMA
from onion.names import CELLS as CELL_NAMES, INTERVENTION_KINDS, LINEAR_INTERVENTION_KINDS, PROBE_KINDS, VARIANTS


def check_config(config, schema_path):
    """Stop before any job with one line per problem, each naming its config key."""
    from onion.config_checks import check_config as check, grid_overrides

    # CUDA is checked in `onstart` below, once the executor is known: a cluster's login node often
    # has none (the executor is not known yet while the Snakefile is read)
    check(config, schema_path, cuda_available=None)
    overrides = grid_overrides(config)
    if overrides and workflow.is_main_process:
        print(f"grid '{config['grid']}' overrides the top-level settings: " + "; ".join(overrides), file=sys.stderr)


def cuda_is_available():
    import torch

    return torch.cuda.is_available()


SCHEMA = str(PACKAGE_SCHEMA)  # onion/config.schema.yaml, the one check-config reads too
check_config(config, SCHEMA)
validate(config, SCHEMA)


onstart:
    # device=cuda where the jobs run here (not on a cluster): stop before the first job without CUDA
    if workflow.local_exec:
        from onion.config_checks import check_config as check

        check(config, SCHEMA, cuda_available=cuda_is_available)


onerror:
    print(
        "A job failed: its log (data/logs/..., shown above) names the cause. Once it is fixed, run snakemake "
        "again: finished jobs are kept, and training, interventions and probes resume from their last "
        "checkpoint. After a kill, a power loss or a closed terminal, run `snakemake --unlock` first, then "
        "snakemake. A long grid outlives its terminal under `nohup snakemake > run.log 2>&1 &`, tmux or "
        "screen, or with --profile profiles/slurm (docs/cluster.md).",
        file=sys.stderr,
    )


GRID = config["grids"][config["grid"]]
# Every (cell, variant, size, seed) of the grid: the union of its blocks' cross products, in order.
MODELS = list(
    dict.fromkeys(
        (cell, variant, size, seed)
        for block in GRID["models"]
        for cell in block.get("cells", ["gru"])
        for variant in block["variants"]
        for size in block["sizes"]
        for seed in block["seeds"]
    )
)
SIZES = sorted({size for _, _, size, _ in MODELS})
CELLS = sorted({cell for cell, _, _, _ in MODELS})
GRU_SIZES = sorted({size for cell, _, size, _ in MODELS if cell == "gru"}) or SIZES  # the figures'

OTHER_CELLS = [cell for cell in CELLS if cell != "gru"]  # the cells table only where there are some
# Paths name the settings that made an artifact (onion/keys.py): a model's training settings, an
# analysis's own settings, so grids with other settings share data/ without overwriting anything.
MODEL_KEY = keys.MODEL_KEY  # cell=…/variant=…/size=…/seed=…/train=<key>


def settings(section):
    """A config section with the active grid's overrides applied."""
    from onion.config_checks import grid_settings

    return grid_settings(config, section)


TRAIN_KEY = keys.settings_key(settings("train"))  # this grid's models
STATES_KEY = keys.states_key(settings("extract"))  # this grid's stored final states


wildcard_constraints:
    cell="|".join(CELL_NAMES),
    variant="|".join(VARIANTS),
    size=r"\d+",
    seed=r"\d+",
    train=TRAIN_KEY,  # another grid's models are read (tables, summary), never made, by this one
    states=STATES_KEY,
    settings=keys.KEY,


def analysis_key(section, kind):
    """The settings key of one intervention or probe `kind` of this grid (onion/keys.py)."""
    from onion.config_checks import kind_settings

    values = kind_settings(config, section, kind)
    return keys.settings_key(values) if section == "interventions" else keys.probe_key(values, settings("extract"))


def analysis_settings(section):
    """A function of a job's wildcards: its kind's settings of `section` ("interventions" or
    "probes"), the grid's `<section>_by_kind` overrides applied, as one JSON argument. A settings key
    that is not this grid's for that kind is an error (another grid made it, with other settings)."""
    from onion.config_checks import kind_settings

    def params(wildcards):
        key = analysis_key(section, wildcards.kind)
        if wildcards.settings != key:
            raise ValueError(
                f"{section} key {wildcards.settings} of {wildcards.kind} is not grid "
                f"'{config['grid']}''s ({key}): run the grid whose settings made it"
            )
        return as_json_arg(kind_settings(config, section, wildcards.kind))

    return params


def as_json_arg(values):
    """A dict as one shell-quoted JSON argument for `python -m onion`."""
    return shlex.quote(json.dumps(values, sort_keys=True))


def grid_paths(pattern, variants=None, sizes=None, cells=None):
    """`pattern` (with {cell}, {variant}, {size}, {seed}) for every model of the grid, optionally
    only those of the given variants, sizes and cells."""
    return [
        pattern.format(cell=cell, variant=variant, size=size, seed=seed, train=TRAIN_KEY)
        for cell, variant, size, seed in MODELS
        if (variants is None or variant in variants)
        and (sizes is None or size in sizes)
        and (cells is None or cell in cells)
    ]


def uses_cuda():
    """Whether jobs will run on CUDA: decided by `device`, probing torch only for 'auto'."""
    if config["device"] == "auto":
        return cuda_is_available()
    return config["device"] == "cuda"


# --- cluster resources: time limits (minutes) and the GPU request --------------------------------
# Time limits follow the model size, the step count and the device, and grow with Snakemake's
# `attempt`: a job that ran out of time (or was cancelled) asks for twice, then three times, as much
# when it is retried, and resumes from its checkpoint.

GPU_STEPS_PER_SECOND = 100.0  # not measured: a deliberately low guess for one GPU, any N


def cpu_steps_per_second(size):
    """Training steps per second on one CPU thread, a fit that stays below the measured speeds
    (N=48: ~85, N=64: ~62, N=128: ~26, N=1024: ~1). Interventions and probes run 1-2x as fast."""
    return 85.0 * (48 / max(size, 48)) ** 1.5


def steps_runtime(section, base):
    """A `runtime` resource for a job of settings(section)["steps"] steps: `base` minutes (start-up,
    data, evaluation) plus twice the estimated stepping time, times the attempt."""

    def runtime(wildcards, attempt):
        from onion.config_checks import kind_settings

        rate = GPU_STEPS_PER_SECOND if uses_cuda() else cpu_steps_per_second(int(wildcards.size))
        steps = (
            kind_settings(config, section, wildcards.kind)["steps"]
            if "kind" in wildcards.keys()
            else settings(section)["steps"]
        )
        return attempt * int(base + 2 * steps / rate / 60)

    return runtime


def fixed_runtime(minutes):
    """A `runtime` resource of `minutes` on the first attempt, more on each retry."""

    def runtime(wildcards, attempt):
        return attempt * minutes

    return runtime


train_runtime_minutes = steps_runtime("train", base=10)
intervention_runtime_minutes = steps_runtime("interventions", base=10)
probe_runtime_minutes = steps_runtime("probes", base=10)


def gpu_slots(wildcards):
    """1 for a job on CUDA, else 0. Without a scheduler, `--resources gpu_slots=k` runs k such jobs at
    once; each takes the lowest free GPU slot and uses visible GPU slot mod #GPUs (docs/cluster.md)."""
    return 1 if uses_cuda() else 0


def shared_gpu(wildcards):
    """The GPU request of the analysis rules, which the SLURM profile groups per model: a GRES string
    such as "gpu:1" is not added up over a group's members the way the `gpu` count is, so a group
    of 11 analyses asks SLURM for one GPU and its members share it. None (no GPU) on CPU."""
    return "gpu:1" if uses_cuda() else None


def intervention_paths(ext, kinds=None, cells=None):
    """Every intervention output with extension `ext` (json or parquet) over the grid."""
    return [
        path
        for kind in kinds or INTERVENTION_KINDS
        for path in grid_paths(
            f"data/analyses/{MODEL_KEY}/intervention-{kind}-{analysis_key('interventions', kind)}.{ext}",
            cells=cells,
        )
    ]


def probe_paths(ext, kinds=None, variants=None, sizes=None, cells=None):
    """Every probe output with extension `ext` (json or parquet) over the grid."""
    return [
        path
        for kind in kinds or PROBE_KINDS
        for path in grid_paths(
            f"data/analyses/{MODEL_KEY}/probe-{kind}-{analysis_key('probes', kind)}.{ext}", variants, sizes, cells
        )
    ]


def gate_trajectories():
    """Trajectories for the gate figures (Figs. 2 and 5), as the paper draws them: the largest GRU
    beside N = figures.size (64; else the smallest), among this grid's GRUs and those whose trajectories are
    already in data/ (another grid's, say). Autoregressive first, then the smallest seed, then this
    grid's settings. -> {"small": path, "large": path}"""
    from pathlib import Path

    mine = [dict(figure_model(size), mine=True) for size in GRU_SIZES]
    present = [
        dict(keys.model_fields(str(p.parent / "metrics.json")) or {}, mine=False)
        for p in Path("data/states/cell=gru").rglob("trajectories.parquet")
    ]
    found = mine + [m for m in present if m.get("cell") == "gru"]
    sizes = sorted({m["size"] for m in found})
    small = config["figures"]["size"]
    chosen = {"small": small if small in sizes[:-1] else sizes[0], "large": sizes[-1]}
    best = lambda size: min(
        (m for m in found if m["size"] == size),
        key=lambda m: (m["variant"] != "autoregressive", m["seed"], not m["mine"], m["train"]),
    )
    return {which: MODEL_KEY.format(**best(size)) for which, size in chosen.items()}


def figure_model(size):
    """Wildcards of the GRU a single-model figure shows at `size` (the paper's figures are of GRUs):
    autoregressive if the grid has it at that size, then the smallest seed."""
    candidates = [m for m in MODELS if m[2] == size and m[0] == "gru"]
    if not candidates:
        raise ValueError(
            f"grid '{config['grid']}' has no GRU of N={size}: the paper's figures need "
            "one (add gru to a block's cells)"
        )
    cell, variant, _, seed = min(candidates, key=lambda m: (m[1] != "autoregressive", m[1], m[3]))
    return {"cell": cell, "variant": variant, "size": size, "seed": seed, "train": TRAIN_KEY}
