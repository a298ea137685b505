"""Probes that read the stored sequence back from the final state h_L (PAPER.md §5).

modules: the five probes; train: training and evaluation on stored states, and the job that writes
their results.
"""

from onion.probes.modules import FlatProbe, GRUProbe, OnionProbe, make_probe
from onion.probes.train import (ProbeConfig, evaluate_probe, make_probe_optimizer, predict_probe,
                                probe_step, run_probe, train_probe)

__all__ = ["FlatProbe", "GRUProbe", "OnionProbe", "ProbeConfig", "evaluate_probe", "make_probe",
           "make_probe_optimizer", "predict_probe", "probe_step", "run_probe", "train_probe"]

# TEMPORARY while tests move
from onion.names import PROBE_KINDS as KINDS  # noqa
from onion.probes.train import batch_indices, onion_scales  # noqa
