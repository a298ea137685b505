#!/usr/bin/env bash
# Run by Snakemake once, inside the new conda environment (onion.yaml): installs the onion package
# from the checkout whose Snakefile runs (ONION_SOURCE, set by the Snakefile), editable, so that the
# jobs run the code of the workflow that calls them.
set -euo pipefail
python -m pip install --no-deps --editable "${ONION_SOURCE:?the Snakefile sets ONION_SOURCE}"
