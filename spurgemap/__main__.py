"""`python -m spurgemap` (and `accelerate launch -m spurgemap`) runs the command line."""

from spurgemap.cli.app import run

run()
