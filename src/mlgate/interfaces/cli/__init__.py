"""The `mlgate` command line: Typer, and a thin client of the REST API except for init, server and stop."""
