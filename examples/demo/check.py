"""Print the demo's test metrics beside the majority-class baseline; fail unless clearly better."""

import json
import sys
from collections import Counter
from pathlib import Path

run = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/demo")
metrics = json.loads((run / "test_metrics.json").read_text())
labels = [json.loads(line)["label"] for line in Path("examples/demo/data/test.jsonl").read_text().splitlines()]
baseline = Counter(labels).most_common(1)[0][1] / len(labels)
accuracy = metrics["test_accuracy"]
print(f"demo test accuracy {accuracy:.3f} (f1_macro {metrics['test_f1_macro']:.3f}) "
      f"vs majority-class baseline {baseline:.3f} on {len(labels)} test texts")
sys.exit(0 if accuracy >= baseline + 0.3 else 1)
