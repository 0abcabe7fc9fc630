"""`spurgemap train`: a classifier validated on held-out sites, saved as one bundle."""

from spurgemap.train.stage import TrainInputs, TrainResult, run_train

__all__ = ["TrainInputs", "TrainResult", "run_train"]
