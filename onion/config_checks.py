"""Checks of a workflow config (config.yaml plus overrides) before any job starts.

The JSON schema (config.schema.yaml beside this file) checks each value alone; these functions add
what it cannot say: integers that are not floats, finite numbers, and rules across keys. Each
problem is one line that names its config key.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

from onion.data import ALPHABET
from onion.names import INTERVENTION_KINDS

SCHEMA = Path(__file__).with_name("config.schema.yaml")  # package data; the workflow reads it too


def _strict_validator(schema: dict):
    """Draft 2020-12, except that 300.0 is not an integer (PyTorch wants an int step count)."""
    import jsonschema  # here, not at the top: `gpu-check` reads the grid on machines without it
    base = jsonschema.Draft202012Validator
    types = base.TYPE_CHECKER.redefine(
        "integer", lambda _, value: isinstance(value, int) and not isinstance(value, bool))
    return jsonschema.validators.extend(base, type_checker=types)(schema)


def schema_problems(config: dict, schema: dict) -> list[str]:
    problems = []
    for error in _strict_validator(schema).iter_errors(config):
        key = ".".join(str(p) for p in error.absolute_path) or "(top level)"
        problems.append(f"config key '{key}': {error.message}")
    return problems


def nonfinite_problems(value, key: str = "") -> list[str]:
    """Every NaN or infinite number in a nested config (YAML's .nan and .inf)."""
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in nonfinite_problems(v, f"{key}.{k}" if key else str(k))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in nonfinite_problems(v, f"{key}.{i}")]
    if isinstance(value, float) and not math.isfinite(value):
        return [f"config key '{key}': {value} is not a finite number"]
    return []


def grid_settings(config: dict, section: str) -> dict:
    """A config section with the active grid's overrides applied."""
    return {**config.get(section, {}), **config["grids"][config["grid"]].get(section, {})}


def kind_settings(config: dict, section: str, kind: str) -> dict:
    """The settings of one intervention or probe `kind` ("interventions" or "probes" section): the
    grid's settings with its `<section>_by_kind` overrides for that kind applied."""
    by_kind = config["grids"][config["grid"]].get(f"{section}_by_kind", {})
    return {**grid_settings(config, section), **by_kind.get(kind, {})}


def _data_problems(data: dict) -> list[str]:
    problems = []
    low, high, n_symbols = data["min_length"], data["max_length"], data["n_symbols"]
    if low > high:
        return ["config keys 'data.min_length' and 'data.max_length': min_length exceeds max_length"]
    das = data.get("das_length", 9)
    if not low <= das <= high:
        problems.append(f"config key 'data.das_length': {das} is outside the sequence lengths "
                        f"{low}..{high} (data.min_length..data.max_length)")
    spaces = {k: n_symbols ** k for k in range(low, high + 1)}
    capacity = sum(int(data["max_valid_fraction"] * s) for s in spaces.values())
    if data["n_valid"] > capacity:
        problems.append(f"config key 'data.n_valid': {data['n_valid']} exceeds the {capacity} sequences "
                        f"that data.max_valid_fraction={data['max_valid_fraction']} allows")
    elif data.get("train_sampling", "distinct") == "distinct" and \
            data["n_train"] > sum(spaces.values()) - data["n_valid"]:
        problems.append(f"config key 'data.n_train': {data['n_train']} distinct sequences do not exist "
                        f"outside the validation set ({sum(spaces.values()) - data['n_valid']} do); "
                        "lower it or set data.train_sampling: iid")
    if low <= das <= high and data.get("n_das_valid", 5000) > spaces[das] * 0.5:
        problems.append(f"config key 'data.n_das_valid': {data.get('n_das_valid', 5000)} is more than "
                        f"half of the {spaces[das]} sequences of length {das}")
    elif low <= das <= high and data.get("das_train", "own") == "own" and \
            data.get("n_das_train", 1_000_000) > spaces[das] - data.get("n_das_valid", 5000):
        problems.append(f"config key 'data.n_das_train': {data.get('n_das_train', 1_000_000)} distinct "
                        f"sequences of length {das} do not exist outside the linear-DAS validation set "
                        "(lower it, or set data.das_train: model_train)")
    return problems


def _extract_problems(extract: dict, data: dict) -> list[str]:
    problems = []
    vocabulary = ALPHABET[:data["n_symbols"]]
    for i, text in enumerate(extract.get("texts", ["ab1cadf2"])):
        key = f"config key 'extract.texts.{i}'"
        outside = sorted(set(text) - set(vocabulary))
        if outside:
            problems.append(f"{key}: {text!r} has symbols {outside} outside the {data['n_symbols']}-symbol "
                            f"vocabulary {vocabulary!r} (data.n_symbols)")
        if not data["min_length"] <= len(text) <= data["max_length"]:
            problems.append(f"{key}: {text!r} has length {len(text)}, outside "
                            f"data.min_length..data.max_length ({data['min_length']}..{data['max_length']})")
    return problems


def _precision_problems(config: dict, cuda_available: Callable[[], bool] | None) -> list[str]:
    """bf16 runs only in the unrolled kernel: kernel nn, or auto where jobs run on CUDA (device cuda,
    or auto with CUDA found), would run torch.nn's fp32 layers. Each job checks it again at its start."""
    kernel, device = config["kernel"], config.get("device", "auto")
    on_cuda = device == "cuda" or (device == "auto" and cuda_available is not None and cuda_available())
    if kernel == "unrolled" or (kernel == "auto" and not on_cuda):
        return []
    where = f"kernel {kernel}" + (" on CUDA" if kernel == "auto" else "")
    kinds = [k for k in INTERVENTION_KINDS if kind_settings(config, "interventions", k).get("precision") == "bf16"]
    asked = {"train.precision": grid_settings(config, "train").get("precision") == "bf16",
             "interventions.precision": bool(kinds)}
    return [f"config key '{key}': bf16{' (' + ', '.join(kinds) + ')' if key == 'interventions.precision' else ''} "
            f"runs only in the unrolled kernel, but {where} runs torch.nn's layers in fp32 "
            f"(set kernel: unrolled, or {key}: fp32)" for key, bf16 in asked.items() if bf16]


def cross_field_problems(config: dict, cuda_available: Callable[[], bool] | None = None) -> list[str]:
    """Rules across keys, on the active grid's settings."""
    problems = _data_problems(config["data"])
    problems += _extract_problems(grid_settings(config, "extract"), config["data"])
    problems += _precision_problems(config, cuda_available)
    if config.get("device") == "cuda" and cuda_available is not None and not cuda_available():
        problems.append("config key 'device': cuda requested, but PyTorch finds no CUDA device here "
                        "(use device: auto or cpu)")
    return problems


def config_problems(config: dict, schema: dict,
                    cuda_available: Callable[[], bool] | None = None) -> list[str]:
    """Every problem of a workflow config, one line each; cross-field rules only once the schema
    and finiteness checks pass (they assume well-typed values)."""
    problems = schema_problems(config, schema) + nonfinite_problems(config)
    if problems:
        return sorted(set(problems))
    if config["grid"] not in config["grids"]:
        return [f"config key 'grid': {config['grid']!r} is not one of the grids defined under 'grids' "
                f"({', '.join(config['grids'])})"]
    return cross_field_problems(config, cuda_available)


def check_config(config: dict, schema_path, cuda_available: Callable[[], bool] | None = None) -> None:
    """Raise ValueError listing every problem of `config` against the schema file and the rules."""
    import yaml
    with open(schema_path) as f:
        schema = yaml.safe_load(f)
    problems = config_problems(config, schema, cuda_available)
    if problems:
        raise ValueError("invalid configuration:\n" + "\n".join(f"  {p}" for p in problems))


def grid_overrides(config: dict) -> list[str]:
    """One line per value of a top-level section that the active grid replaces."""
    grid = config["grids"][config["grid"]]
    lines = []
    for section in ("train", "interventions", "extract", "probes"):
        for key, value in grid.get(section, {}).items():
            top = config.get(section, {}).get(key)
            if top != value:
                lines.append(f"{section}.{key} = {value!r} (grid '{config['grid']}'; top level: {top!r})")
        for kind, values in grid.get(f"{section}_by_kind", {}).items():
            lines += [f"{section}[{kind}].{key} = {value!r} (grid '{config['grid']}', {kind} only)"
                      for key, value in values.items()]
    return lines


def load_yaml(path) -> dict:
    """A YAML config file as a dict; a syntax error names the file, line and column."""
    import yaml
    try:
        with open(path, encoding="utf-8") as f:
            value = yaml.safe_load(f)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark else str(path)
        raise ValueError(f"{where}: not valid YAML ({err.problem or err.context})") from err
    if value is not None and not isinstance(value, dict):
        raise ValueError(f"{path}: a config file must hold a mapping of keys at the top level")
    return value or {}


def merge(base: dict, override: dict) -> dict:
    """Snakemake's --configfile merge: nested mappings merge, everything else is replaced."""
    merged = dict(base)
    for key, value in override.items():
        merged[key] = merge(merged[key], value) if isinstance(value, dict) and \
            isinstance(merged.get(key), dict) else value
    return merged


def run_check_config(files: list, schema_path) -> None:
    """The check-config command: `files` merged in order (config.yaml, then --configfile files),
    checked as the workflow checks them, CUDA included."""
    from onion.log import log

    def cuda_available() -> bool:
        import torch
        return torch.cuda.is_available()

    config = {}
    for path in files:
        config = merge(config, load_yaml(path))
    check_config(config, schema_path, cuda_available=cuda_available)
    log(f"{' + '.join(map(str, files))}: valid")
