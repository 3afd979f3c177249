"""The ways in: REST API, CLI, SDK (and later the web UI)."""
