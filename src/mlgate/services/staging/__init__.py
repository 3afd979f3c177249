"""The outer loop in staging: the checks a candidate must pass (lint, unit tests, model validation, endpoint
tests) before its gate B request can be decided."""
