# Helpers shared by all rules: config validation, the grid, paths, CLI arguments, resources.
import json
import shlex
import sys

from snakemake.utils import validate


def check_config(config, schema_path):
    """Stop before any job with one line per problem, each naming its config key."""
    from onion.config_checks import check_config as check, grid_overrides

    # CUDA is checked only where the jobs run here; a cluster's login node often has none
    check(config, schema_path, cuda_available=cuda_is_available if workflow.local_exec else None)
    overrides = grid_overrides(config)
    if overrides and workflow.is_main_process:
        print(f"grid '{config['grid']}' overrides the top-level settings: " + "; ".join(overrides),
              file=sys.stderr)


def cuda_is_available():
    import torch

    return torch.cuda.is_available()


SCHEMA = workflow.source_path("../schemas/config.schema.yaml")
check_config(config, SCHEMA)
validate(config, SCHEMA)

GRID = config["grids"][config["grid"]]
# Every (variant, size, seed) of the grid: the union of its blocks' cross products, in order.
MODELS = list(
    dict.fromkeys(
        (variant, size, seed)
        for block in GRID["models"]
        for variant in block["variants"]
        for size in block["sizes"]
        for seed in block["seeds"]
    )
)
SIZES = sorted({size for _, size, _ in MODELS})
MODEL_KEY = "variant={variant}/size={size}/seed={seed}"


wildcard_constraints:
    variant="autoregressive|no_input",
    size=r"\d+",
    seed=r"\d+",


def settings(section):
    """A config section with the active grid's overrides applied."""
    from onion.config_checks import grid_settings

    return grid_settings(config, section)


def as_json_arg(values):
    """A dict as one shell-quoted JSON argument for `python -m onion`."""
    return shlex.quote(json.dumps(values, sort_keys=True))


def grid_paths(pattern, variants=None, sizes=None):
    """`pattern` (with {variant}, {size}, {seed}) for every model of the grid, optionally only
    those of the given variants and sizes."""
    return [
        pattern.format(variant=variant, size=size, seed=seed)
        for variant, size, seed in MODELS
        if (variants is None or variant in variants) and (sizes is None or size in sizes)
    ]


def uses_cuda():
    """Whether jobs will run on CUDA: decided by `device`, probing torch only for 'auto'."""
    if config["device"] == "auto":
        return cuda_is_available()
    return config["device"] == "cuda"


def train_runtime_minutes(wildcards):
    """A generous wall-time request for one training job (CPU speed scales ~ N^2 above N=64)."""
    size = int(wildcards.size)
    steps_per_second = 400.0 if uses_cuda() else max(1.0, 120.0 * (48 / max(size, 48)) ** 2)
    return int(30 + 3 * settings("train")["steps"] / steps_per_second / 60)


INTERVENTION_KINDS = ["linear_unigram", "linear_bigram", "onion", "onion_control"]


def intervention_paths(ext, kinds=None):
    """Every intervention output with extension `ext` (json or parquet) over the grid."""
    return [
        path
        for kind in kinds or INTERVENTION_KINDS
        for path in grid_paths(f"data/analyses/{MODEL_KEY}/intervention-{kind}.{ext}")
    ]


def intervention_runtime_minutes(wildcards):
    """A generous wall-time request for one intervention job (CPU speed scales ~ N^2 above N=64)."""
    size = int(wildcards.size)
    steps_per_second = 300.0 if uses_cuda() else max(1.0, 80.0 * (48 / max(size, 48)) ** 2)
    return int(20 + 3 * settings("interventions")["steps"] / steps_per_second / 60)


PROBE_KINDS = ["linear", "mlp", "onion", "gru_autoregressive", "gru_no_input"]


def probe_paths(ext, kinds=None, variants=None, sizes=None):
    """Every probe output with extension `ext` (json or parquet) over the grid."""
    return [
        path
        for kind in kinds or PROBE_KINDS
        for path in grid_paths(f"data/analyses/{MODEL_KEY}/probe-{kind}.{ext}", variants, sizes)
    ]


def figure_model(size):
    """Wildcards of the model a single-model figure shows at `size`: autoregressive if the grid has
    it at that size, then the smallest seed."""
    candidates = [m for m in MODELS if m[1] == size]
    variant, _, seed = min(candidates, key=lambda m: (m[0] != "autoregressive", m[0], m[2]))
    return {"variant": variant, "size": size, "seed": seed}


def probe_runtime_minutes(wildcards):
    """A generous wall-time request for one probe job (the GRU probes are the slowest)."""
    size = int(wildcards.size)
    steps_per_second = 300.0 if uses_cuda() else max(1.0, 100.0 * (48 / max(size, 48)) ** 2)
    return int(10 + 3 * settings("probes")["steps"] / steps_per_second / 60)
