"""Start-up: `adapt --help` and `adapt plugins` with every pack installed, against `python -c pass`.

    .venv/bin/python bench/startup.py [--repeat 10]

Goal: under 0.5 s each. Results go to bench/results/startup.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def wall(command: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    adapt = [sys.executable, "-m", "adapt"]
    results = {"python -c pass": wall([sys.executable, "-c", "pass"], args.repeat),
               "adapt --help": wall([*adapt, "--help"], args.repeat),
               "adapt plugins": wall([*adapt, "plugins"], args.repeat)}
    base = results["python -c pass"]
    for name, seconds in results.items():
        print(f"{name:<16} {seconds:6.3f} s  {seconds / base:5.1f}x python  {'ok' if seconds < 0.5 else 'OVER 0.5 s'}")
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "startup.json").write_text(json.dumps({"median_seconds": results, "repeat": args.repeat}, indent=2) + "\n")


if __name__ == "__main__":
    main()
