"""The MLflow model a student is registered as: a pyfunc over a Hugging Face model directory.

The directory is stored unchanged under the artifact ``hf_model`` (what vLLM and KServe's Hugging Face
runtime load); ``predict`` also works in-process with transformers, so ``mlflow models serve`` and
``mlflow.pyfunc.load_model`` can use a registered student without kubedistill's own server.
"""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc


class HFChatModel(mlflow.pyfunc.PythonModel):
    """Input: a list of questions (str) or of chat message lists; output: the assistant's answers."""

    def load_context(self, context: Any) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = context.artifacts["hf_model"]
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForCausalLM.from_pretrained(path)
        self.model.eval()

    def predict(self, context: Any, model_input: list[str], params: dict[str, Any] | None = None) -> list[str]:
        import torch

        params = params or {}
        max_new_tokens = int(params.get("max_new_tokens", 256))
        items = model_input
        if hasattr(items, "to_dict"):  # a DataFrame with a "messages" or "prompt" column
            col = "messages" if "messages" in items.columns else items.columns[0]
            items = list(items[col])
        out = []
        for item in items:
            messages = [{"role": "user", "content": item}] if isinstance(item, str) else list(item)
            ids = self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
            )
            with torch.no_grad():
                gen = self.model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False)
            out.append(self.tokenizer.decode(gen[0, ids["input_ids"].shape[1] :], skip_special_tokens=True))
        return out
