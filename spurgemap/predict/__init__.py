"""`spurgemap predict`: whole orthomosaics in, presence maps for QGIS out."""

from spurgemap.predict.stage import PredictInputs, PredictResult, run_predict

__all__ = ["PredictInputs", "PredictResult", "run_predict"]
