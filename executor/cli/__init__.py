"""The `dagrelay` command line (typer + rich); `main.main` is the console script."""
