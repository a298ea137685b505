from onion.report.summary import *  # noqa  TEMPORARY shim while tests move
from onion.report.summary import _checks, _row  # noqa
