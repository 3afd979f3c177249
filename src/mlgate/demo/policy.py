"""The policy the demo adds to the default mlgate.yaml: its endpoints, checks and the drift monitor."""

from __future__ import annotations

MONITOR = "diabetes-drift"

DEMO_POLICY = """
checks:
  model-validation: {data: diabetes-holdout, min: 0.80, max_regression: 0.02}

endpoints:
  staging:
    - name: diabetes
      description: the test endpoint of the outer loop
  production:
    - name: web
      description: diabetes risk for the clinic's web app
      model: diabetes
      strategy: canary
      steps: [10, 50, 100]
      bake_time_s: 3
      slo: {max_error_rate: 0.01, p95_ms: 250, min_requests: 10}
"""


# The demo's monitor: data drift and quality on the last 500 scored rows, every 3 s; two drifted windows in
# a row fire the alert, which retrains on the training data plus the labelled production rows.
MONITOR_POLICY = f"""
monitors:
  - name: {MONITOR}
    endpoint: web
    signals: [data-drift, data-quality, endpoint-performance]
    window: 500 rows
    schedule: 3s
    min_rows: 200
    consecutive: 2
    action: retrain
    retrain: {{data: diabetes-train, include_production_window: false, cooldown_hours: 24}}
"""
