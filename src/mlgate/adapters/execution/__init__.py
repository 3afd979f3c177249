"""Execution backends: where jobs run. `local` (subprocesses) by default, a fake for tests."""
