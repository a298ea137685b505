from onion.interventions.counterfactuals import *  # noqa  TEMPORARY shim while tests move
