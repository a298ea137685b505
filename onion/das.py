from onion.interventions.das import *  # noqa  TEMPORARY shim while tests move
