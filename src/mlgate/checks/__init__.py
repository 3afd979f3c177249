"""Check programs the server runs as jobs: each reads its inputs from files and writes a JSON result."""
