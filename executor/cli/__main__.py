"""`python -m executor.cli`: the `dagrelay` command without the console script."""

from executor.cli.main import main

main()
