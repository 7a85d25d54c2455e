"""Running experiments: the plan of matrix cells, fingerprints, the notebook context, the runner and its CLI, seed sweeps and the findings page."""
