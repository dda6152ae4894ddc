"""The hand-written baselines bench/overhead.py runs beside `adapt train`.

    python bench/baseline_trainer.py MODEL TRAIN_JSONL OUTPUT MAX_STEPS
    python bench/baseline_trainer.py --example MODEL TRAIN VALIDATION TEST OUTPUT

The first is what a user would write without adapt for the demo's LoRA run (HF Trainer + peft, the
same model, data, tokenization, steps and seed as adapt's like-for-like run). The second is the
script a user copies from HF's text-classification example with peft's LoRA added: the example's
documented settings (max_seq_length 128, batches of 32, 3 epochs, dynamic padding, evaluation at
the end, checkpoints every 500 steps), LoRA r 8 / alpha 16 / dropout 0.1 on query and value with
the learning rate of peft's sequence-classification example (3e-4), and the test metric reported.
"""

from __future__ import annotations

import json
import sys

import torch
import transformers
from datasets import load_dataset
from peft import LoraConfig, get_peft_model
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
)


def example(model_path: str, train_path: str, validation_path: str, test_path: str, output: str) -> None:
    """HF's text-classification example + peft's LoRA, as a user writes it (see the module docstring)."""
    import numpy as np

    transformers.set_seed(42)
    splits = load_dataset("json", data_files={"train": train_path, "validation": validation_path, "test": test_path})
    labels = sorted(set(splits["train"]["label"]))
    index = {n: i for i, n in enumerate(labels)}
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForSequenceClassification.from_pretrained(
        model_path, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=index)
    model = get_peft_model(model, LoraConfig(task_type="SEQ_CLS", r=8, lora_alpha=16, lora_dropout=0.1,
                                             target_modules=["query", "value"]))

    def encode(batch: dict) -> dict:
        out = tokenizer(batch["text"], truncation=True, max_length=128)
        out["label"] = [index[v] for v in batch["label"]]
        return out

    data = splits.map(encode, batched=True, remove_columns=["text"])

    def accuracy(prediction: transformers.EvalPrediction) -> dict:
        return {"accuracy": float((np.argmax(prediction.predictions, axis=1) == prediction.label_ids).mean())}

    args = TrainingArguments(output_dir=f"{output}/checkpoints", per_device_train_batch_size=32, learning_rate=3e-4,
                             num_train_epochs=3, seed=42, report_to="none", use_cpu=not torch.cuda.is_available())
    trainer = Trainer(model=model, args=args, train_dataset=data["train"], eval_dataset=data["validation"],
                      data_collator=DataCollatorWithPadding(tokenizer), processing_class=tokenizer,
                      compute_metrics=accuracy)
    result = trainer.train()
    trainer.evaluate()
    test = trainer.predict(data["test"], metric_key_prefix="test").metrics
    trainer.model.merge_and_unload().save_pretrained(f"{output}/model")
    tokenizer.save_pretrained(f"{output}/model")
    print("RESULT " + json.dumps({"train_loss": result.training_loss, "train_runtime": result.metrics["train_runtime"],
                                  "test_accuracy": test["test_accuracy"]}))


def main() -> None:
    if sys.argv[1] == "--example":
        example(*sys.argv[2:7])
        return
    model_path, train_path, output, max_steps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    transformers.set_seed(42)
    table = load_dataset("json", data_files=train_path, split="train")
    labels = sorted(set(table["label"]))
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForSequenceClassification.from_pretrained(
        model_path, num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={n: i for i, n in enumerate(labels)}, problem_type="single_label_classification",
        ignore_mismatched_sizes=True)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.1, target_modules=["query", "value"],
                                             modules_to_save=["classifier"], bias="none"))
    index = {n: i for i, n in enumerate(labels)}

    def encode(batch: dict) -> dict:
        out = tokenizer(batch["text"], truncation=True, max_length=64)
        out["labels"] = [index[v] for v in batch["label"]]
        return out

    train = table.map(encode, batched=True, remove_columns=table.column_names)
    args = TrainingArguments(output_dir=f"{output}/checkpoints", max_steps=max_steps, per_device_train_batch_size=16,
                             learning_rate=2e-3, optim="adamw_torch", lr_scheduler_type="linear", seed=42,
                             logging_steps=5, save_strategy="no", eval_strategy="no", report_to="none",
                             use_cpu=not torch.cuda.is_available(), label_names=["labels"])
    trainer = Trainer(model=model, args=args, train_dataset=train, data_collator=DataCollatorWithPadding(tokenizer),
                      processing_class=tokenizer)
    result = trainer.train()
    merged = trainer.model.merge_and_unload()
    merged.save_pretrained(f"{output}/model")
    tokenizer.save_pretrained(f"{output}/model")
    print("RESULT " + json.dumps({"train_loss": result.training_loss, "train_runtime": result.metrics["train_runtime"]}))


if __name__ == "__main__":
    main()
