"""Build the demo's train / validation / test splits from source/<label>.txt (one text per line).

Deterministic (fixed seed), stratified: per label 60% train, 15% validation, 25% test.
Run from anywhere: python examples/demo/make_splits.py
"""

import json
import random
from pathlib import Path

HERE = Path(__file__).parent


def main() -> None:
    rng = random.Random(7)
    splits: dict[str, list[dict[str, str]]] = {"train": [], "validation": [], "test": []}
    for source in sorted((HERE / "source").glob("*.txt")):
        texts = [line.strip() for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
        rng.shuffle(texts)
        n_train, n_val = round(0.6 * len(texts)), round(0.15 * len(texts))
        parts = {"train": texts[:n_train], "validation": texts[n_train:n_train + n_val],
                 "test": texts[n_train + n_val:]}
        for split, rows in parts.items():
            splits[split].extend({"text": text, "label": source.stem} for text in rows)
    (HERE / "data").mkdir(exist_ok=True)
    for split, rows in splits.items():
        rng.shuffle(rows)
        path = HERE / "data" / f"{split}.jsonl"
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
        print(f"{path}: {len(rows)} rows")


if __name__ == "__main__":
    main()
