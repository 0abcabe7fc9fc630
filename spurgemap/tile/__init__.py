"""`spurgemap tile`: orthomosaics + surveyed plots -> a labelled, plot-aligned tile set."""

from spurgemap.tile.stage import TileInputs, TileResult, run_tile

__all__ = ["TileInputs", "TileResult", "run_tile"]
