import sys

from onion.cli import main

sys.exit(main())
