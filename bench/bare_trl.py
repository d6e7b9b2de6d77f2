"""The baseline: the same GRPO job as a plain script calling TRL's GRPOTrainer, as the seed tutorial does.

    python -m bench.bare_trl SPEC.json OUTPUT_DIR

Prints one JSON line: TRL's train_runtime and the seconds from the interpreter's start to the end of training.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

STARTED = time.time()


def main() -> None:
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    spec = json.loads(Path(sys.argv[1]).read_text())
    ideal_length = spec["reward_funcs"][0]["params"]["ideal_length"]

    def length(completions: list[str], **kwargs: Any) -> list[float | None]:  # the seed's reward_len
        return [-float(abs(ideal_length - len(completion))) for completion in completions]

    args = GRPOConfig(
        output_dir=sys.argv[2], bf16=False, use_cpu=True, report_to="none", disable_tqdm=True, **spec["args"]
    )
    trainer = GRPOTrainer(
        model=spec["model"],
        reward_funcs=length,
        args=args,
        train_dataset=Dataset.from_list(spec["train_dataset"]["rows"]),
    )
    result = trainer.train()
    print(json.dumps({"train_runtime": result.metrics["train_runtime"], "since_start": time.time() - STARTED}))


if __name__ == "__main__":
    main()
