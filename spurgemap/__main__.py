"""`python -m spurgemap` (and `accelerate launch -m spurgemap`) runs the command line."""

from spurgemap.cli.app import run

if __name__ == "__main__":  # Dask's spawned workers import this module as __mp_main__: they must not run it
    run()
