"""The ways in: the REST API, the web UI, the CLI and the SDK."""
