"""Use cases: each owns its transaction boundary and writes its audit entries."""
