"""An independent in-test reference: ONNX Runtime in-process, tokenize -> run -> masked mean -> L2.

Deliberately shares no code with the appliance's pipeline.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer


class Reference:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.config = json.loads((folder / "config.json").read_text())
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])
        self.inputs = {i.name for i in self.session.get_inputs()}
        self.output = "text_embeds" if "task_id" in self.inputs else "last_hidden_state"

    def instruction(self, task: str | None) -> str:
        return self.config.get("task_instructions", {}).get(task, "") if task else ""

    def ids(self, text: str, task: str | None = None, *, instructions: bool = True) -> list[int]:
        prefix = self.instruction(task) if instructions else ""
        return list(self.tokenizer.encode(prefix + text).ids)

    def hidden(self, ids: list[int], task: str | None) -> np.ndarray:
        feed = {"input_ids": np.array([ids], np.int64), "attention_mask": np.ones((1, len(ids)), np.int64)}
        if "task_id" in self.inputs:
            feed["task_id"] = np.array(self.config["lora_adaptations"].index(task), np.int64)
        if "token_type_ids" in self.inputs:
            feed["token_type_ids"] = np.zeros((1, len(ids)), np.int64)
        return self.session.run([self.output], feed)[0][0].astype(np.float64)

    def raw(self, text: str, task: str | None = None, *, instructions: bool = True) -> np.ndarray:
        """Mean over the (unpadded) sequence, before normalization."""
        return self.hidden(self.ids(text, task, instructions=instructions), task).mean(axis=0)

    def embed(self, text: str, task: str | None = None, *, dimensions: int | None = None,
              instructions: bool = True) -> np.ndarray:
        vector = self.raw(text, task, instructions=instructions)
        if dimensions is not None:
            vector = vector[:dimensions]
        return vector / np.linalg.norm(vector)
