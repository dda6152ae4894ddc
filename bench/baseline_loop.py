"""The physical limit beside bench/baseline_trainer.py: the same LoRA fine-tune of the demo (model,
tokenization, batches of 16, AdamW 2e-3 with a linear schedule, gradient clipping 1.0, steps) as a
bare PyTorch loop: forward, backward, optimizer step, nothing else. bench/overhead.py times it as
its third column.

    python bench/baseline_loop.py MODEL TRAIN_JSONL MAX_STEPS
"""

from __future__ import annotations

import json
import sys
import time

import torch
import transformers
from datasets import load_dataset
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding


def main() -> None:
    model_path, train_path, max_steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
    transformers.set_seed(42)
    table = load_dataset("json", data_files=train_path, split="train")
    labels = sorted(set(table["label"]))
    index = {n: i for i, n in enumerate(labels)}
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=len(labels))
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.1, target_modules=["query", "value"],
                                             modules_to_save=["classifier"], bias="none"))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # where the Trainer would put it
    model.to(device)

    def encode(batch: dict) -> dict:
        out = tokenizer(batch["text"], truncation=True, max_length=64)
        out["labels"] = [index[v] for v in batch["label"]]
        return out

    train = table.map(encode, batched=True, remove_columns=table.column_names)
    loader = torch.utils.data.DataLoader(train, batch_size=16, shuffle=True, collate_fn=DataCollatorWithPadding(tokenizer),
                                         generator=torch.Generator().manual_seed(42))
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=2e-3, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / max_steps)
    model.train()
    losses, step = [], 0
    start = time.perf_counter()
    while step < max_steps:
        for batch in loader:
            loss = model(**batch.to(device)).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            step += 1
            if step == max_steps:
                break
    runtime = time.perf_counter() - start
    print("RESULT " + json.dumps({"train_loss": sum(losses) / len(losses), "train_runtime": runtime}))


if __name__ == "__main__":
    main()
