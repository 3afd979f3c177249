"""The inner loop in dev: data assets, code snapshots and training jobs, and the runner that executes them."""
