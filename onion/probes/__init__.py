"""Probes that read the stored sequence back from the final state h_L (PAPER.md §5).

modules: the five probes; train: training and evaluation on stored states, and the job that writes
their results.
"""

from onion.probes.modules import FlatProbe, GRUProbe, OnionProbe, make_probe
from onion.probes.train import (ProbeConfig, evaluate_probe, make_probe_optimizer, onion_scales,
                                predict_probe, probe_step, run_probe, train_probe)

__all__ = ["FlatProbe", "GRUProbe", "OnionProbe", "ProbeConfig", "evaluate_probe", "make_probe",
           "make_probe_optimizer", "onion_scales", "predict_probe", "probe_step", "run_probe", "train_probe"]

