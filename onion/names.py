"""The names the package, the CLI, the workflow and the config schema share, listed once.

Torch-free, so the Snakefile and the report can import it. tests/test_names.py checks that the
schema's enums equal these lists.
"""

VARIANTS = ("autoregressive", "no_input")  # decoder inputs after SOS: previous token, or none
CELLS = ("gru", "lstm", "rnn_tanh")  # recurrent cells (the paper: gru)
INTERVENTION_KINDS = ("linear_unigram", "linear_bigram", "onion", "onion_control")  # paper's order
ONION_INTERVENTION_KINDS = ("onion", "onion_control")  # the learned scale, and its γ = 1 control
PROBE_KINDS = ("linear", "mlp", "onion", "gru_autoregressive", "gru_no_input")  # paper's order
GRU_PROBE_KINDS = ("gru_autoregressive", "gru_no_input")  # a fresh GRU decoder started from h_L
LINEAR_INTERVENTION_KINDS = ("linear_unigram", "linear_bigram")  # trained on length-9 targets
TRAIN_SAMPLINGS = ("distinct", "iid")  # training set: distinct sequences (authors) or with repeats
DAS_TRAIN_SETS = ("own", "model_train")  # linear DAS's targets: its own set (authors) or the model's
REPLACEMENTS = ("any", "different")  # counterfactual tokens: uniform (authors) or never the original
PROBE_DECAYS = ("all", "matrices")  # probe weight decay on every parameter (authors) or matrices only
LR_SCHEDULES = ("constant", "cosine")
KERNELS = ("auto", "nn", "unrolled")  # how recurrent loops run: torch.nn's layers, onion.model.unrolled, or by device
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16")  # the unrolled kernel's recurrent product: fp32, or bf16 inputs (opt-in)
ROTATIONS = ("matrix_exp", "cayley")  # linear DAS's orthogonal map: torch's orthogonal(), or Cayley
