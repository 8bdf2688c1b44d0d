"""Offline evaluation: the fused model against its baselines, with a report.

from recsys.evaluation import EvaluationConfig, evaluate
result = evaluate(engine, Path("reports"), EvaluationConfig(split="temporal"))
"""

from recsys.evaluation.run import EvaluationConfig, EvaluationResult, evaluate

__all__ = ["EvaluationConfig", "EvaluationResult", "evaluate"]
