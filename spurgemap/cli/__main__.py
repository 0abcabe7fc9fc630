"""`python -m spurgemap.cli` (and `accelerate launch -m spurgemap.cli`) runs the command line; it lives in the
CLI package so that no library module imports the CLI."""

from spurgemap.cli.app import run

if __name__ == "__main__":  # Dask's spawned workers import this module as __mp_main__: they must not run it
    run()
