from onion.report.paper import *  # noqa  TEMPORARY shim while tests move
