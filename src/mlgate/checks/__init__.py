"""Programs the server runs in the sandbox: each reads its inputs from files and writes one result file."""
