"""`python -m mlgate` runs the CLI."""

from mlgate.interfaces.cli.main import main

main()
