"""The paper's reported numbers (arXiv 2408.10920 v1; mean ± 1 s.d. over 5 runs), for comparison.

Each table maps a row label to {size: (mean, sd)}.
"""

SIZES = (48, 64, 128, 256, 512, 1024)


def _row(*cells):
    return dict(zip(SIZES, cells))


# Tables 1 and 3: exact-match accuracy of the trained GRUs.
BASE_ACCURACY = {
    "autoregressive": _row((0.95, 0.01), (0.97, 0.00), (1.00, 0.00), (1.00, 0.00), (1.00, 0.00), (1.00, 0.00)),
    "no_input": _row((0.88, 0.11), (1.00, 0.00), (1.00, 0.00), (1.00, 0.00), (1.00, 0.00), (1.00, 0.00)),
}

# Table 2 (autoregressive GRUs) and Table 5 (no-input GRUs): interventions.
INTERVENTIONS = {
    "autoregressive": {
        "linear_unigram": _row((0.00, 0.00), (0.00, 0.00), (0.01, 0.00), (0.18, 0.03), (0.91, 0.08), (1.00, 0.00)),
        "linear_bigram": _row((0.01, 0.00), (0.01, 0.00), (0.54, 0.05), (0.97, 0.05), (1.00, 0.00), (1.00, 0.00)),
        "onion": _row((0.83, 0.03), (0.87, 0.03), (0.89, 0.04), (0.91, 0.08), (0.95, 0.01), (0.94, 0.04)),
    },
    "no_input": {
        "linear_unigram": _row((0.06, 0.07), (0.37, 0.17), (1.00, 0.00), (1.00, 0.00), (1.00, 0.00), (1.00, 0.01)),
        "linear_bigram": _row((0.18, 0.04), (0.95, 0.06), (1.00, 0.00), (1.00, 0.00), (1.00, 0.00), (1.00, 0.00)),
        "onion": _row((0.24, 0.02), (0.41, 0.04), (0.76, 0.01), (0.92, 0.01), (0.96, 0.01), (0.98, 0.00)),
    },
}

# The γ = 1, β = 0 control is reported in the text only: ≈ 0.21 for N = 64 autoregressive.
ONION_CONTROL_N64_AR = 0.21

# Table 4: probes on the final state h_L; keys are (probe, variant of the probed GRU).
PROBES = {
    ("linear", "autoregressive"): _row((0.01, 0.00), (0.01, 0.00), (0.31, 0.03), (0.89, 0.03), (0.97, 0.00), (0.99, 0.01)),
    ("linear", "no_input"): _row((0.31, 0.10), (0.89, 0.05), (0.98, 0.02), (1.00, 0.00), (1.00, 0.00), (1.00, 0.00)),
    ("mlp", "autoregressive"): _row((0.02, 0.00), (0.04, 0.00), (0.55, 0.04), (0.98, 0.00), (1.00, 0.00), (1.00, 0.00)),
    ("mlp", "no_input"): _row((0.53, 0.25), (0.95, 0.04), (1.00, 0.00), (1.00, 0.00), (1.00, 0.00), (1.00, 0.00)),
    ("onion", "autoregressive"): _row((0.92, 0.02), (0.97, 0.01), (1.00, 0.00), (1.00, 0.00), (1.00, 0.00), (1.00, 0.00)),
    ("onion", "no_input"): _row((0.76, 0.08), (0.96, 0.01), (1.00, 0.00), (1.00, 0.00), (1.00, 0.00), (1.00, 0.00)),
    ("gru_autoregressive", "autoregressive"): _row((0.97, 0.01), (0.98, 0.00), (1.00, 0.00), (1.00, 0.00), (1.00, 0.00), (1.00, 0.00)),
    ("gru_autoregressive", "no_input"): _row((0.92, 0.02), (1.00, 0.00), (1.00, 0.00), (1.00, 0.00), (1.00, 0.00), (1.00, 0.00)),
    ("gru_no_input", "autoregressive"): _row((0.10, 0.02), (0.25, 0.08), (0.86, 0.01), (0.99, 0.00), (1.00, 0.00), (1.00, 0.00)),
    ("gru_no_input", "no_input"): _row((0.77, 0.07), (0.98, 0.01), (1.00, 0.00), (1.00, 0.00), (1.00, 0.00), (1.00, 0.00)),
}

# The authors' settings (their code, PAPER.md §2-5) that a run's config may depart from; the summary
# page lists each departure. Keys are config sections and keys.
AUTHORS_SETTINGS = {
    "data": {"n_symbols": 30, "min_length": 2, "max_length": 9, "n_train": 1_000_000, "n_valid": 5_000,
             "train_sampling": "distinct", "das_length": 9, "n_das_valid": 5_000, "das_train": "own",
             "n_das_train": 1_000_000},
    "train": {"steps": 40_000, "batch_size": 256, "lr": 1e-3, "weight_decay": 0.1},
    "interventions": {"steps": 60_000, "batch_size": 256, "lr": 1e-3, "weight_decay": 0.1,
                      "replacement": "any"},
    "probes": {"steps": 60_000, "batch_size": 256, "lr": 1e-3, "weight_decay": 0.1,
               "lr_schedule": "constant", "weight_decay_on": "all"},
    "extract": {"n_train_states": 1_000_000},  # their probes stream the whole training set
}
SEEDS = 5  # runs per table entry
