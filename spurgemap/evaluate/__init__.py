"""`spurgemap evaluate`: the DA-Fusion few-shot experiment (methods x k x seeds)."""

from spurgemap.evaluate.stage import EvaluateInputs, EvaluateResult, run_evaluate

__all__ = ["EvaluateInputs", "EvaluateResult", "run_evaluate"]
