"""Interventions on a frozen repeat model's final state (PAPER.md §4).

counterfactuals: the (base, source, target) data of each kind; das: linear DAS (a rotation and a
learned assignment of its dimensions); onion_intervention: the onion intervention and its γ = 1
control; train: training, evaluation and the job that writes their results.
"""

from onion.interventions.counterfactuals import Counterfactuals, make_counterfactuals
from onion.interventions.das import LinearDAS
from onion.interventions.onion_intervention import OnionIntervention
from onion.interventions.train import (InterventionConfig, eval_counterfactuals, evaluate_intervention,
                                       intervention_step, make_intervention, parameter_table,
                                       run_intervention, targets_for, train_intervention)

__all__ = ["Counterfactuals", "InterventionConfig", "LinearDAS", "OnionIntervention",
           "eval_counterfactuals", "evaluate_intervention", "intervention_step", "make_counterfactuals",
           "make_intervention", "parameter_table", "run_intervention", "targets_for", "train_intervention"]
