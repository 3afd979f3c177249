"""The serving host: the scoring hot path of one environment, kept lean.

Run as ``python -m mlgate.serving --state-dir DIR --port N``. The control plane pushes a deployment spec
to ``PUT /admin/spec``; the host verifies each model folder's digest, loads and warms up the models, then
swaps the new spec in atomically. Scoring speaks MLflow's ``/invocations`` payloads and the Open Inference
Protocol v2. Nothing here imports FastAPI, pandas or MLflow at import time.
"""
