"""The MLflow model a distilled RV / CD reward model is registered as (a pyfunc over its directory).

Registered by :func:`kubedistill.registry.register_reward_model`; ``mlflow.pyfunc.load_model`` gives a
scorer whose ``predict`` takes rows ``{problem, cot}`` and returns scores in [0, 1].
"""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc


class RewardScorerModel(mlflow.pyfunc.PythonModel):
    """A distilled RV / CD reward model: input rows ``{problem, cot}`` (a DataFrame or a list of dicts);
    output the predicted score in [0, 1] (judge score / 9) per row."""

    def load_context(self, context: Any) -> None:
        from kubedistill.train.reward_model import load_scorer

        self.scorer = load_scorer(context.artifacts["hf_model"])

    def predict(self, context: Any, model_input: Any, params: dict[str, Any] | None = None) -> list[float]:
        rows = model_input.to_dict("records") if hasattr(model_input, "to_dict") else list(model_input)
        return self.scorer.score_many([str(r["problem"]) for r in rows], [str(r["cot"]) for r in rows])
