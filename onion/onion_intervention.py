from onion.interventions.onion_intervention import *  # noqa  TEMPORARY shim while tests move
