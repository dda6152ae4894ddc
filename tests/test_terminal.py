"""What a run shows on the terminal, under a pseudo-terminal (progress bars drawn) and under a pipe
(none): adapt's lines whole, never inside a progress bar; the libraries' notices (transformers'
loading report, deprecation warnings) in train.log only, with the one line of them that is the
user's business (newly initialised weights) said by adapt; --verbose shows them."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
NOISE = ("LOAD REPORT", "FutureWarning", "warnings.warn", "Failed to load")


def _args(model: str, data: dict[str, str], out: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "adapt", "train", "--task", "text_classification", "--method", "lora",
            "--model", model, "--train", data["train"], "--test", data["test"], "--output", out,
            "--set", "training.max_steps=4", "--set", "training.logging_steps=2", "--set", "tracking.enabled=false",
            "--set", "save_as_mlflow_model=false", *extra]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
            "COLUMNS": "120"}


def _in_a_terminal(args: list[str], cwd: Path) -> str:
    """stdout and stderr as a terminal shows them: each line's text after its last carriage return."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # 120 columns, as a real one
    proc = subprocess.Popen(args, cwd=cwd, env=_env(), stdin=subprocess.DEVNULL, stdout=follower, stderr=follower)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed: the process ended
            break
        if not chunk:
            break
        chunks.append(chunk)
    assert proc.wait(timeout=300) == 0
    os.close(leader)
    return b"".join(chunks).decode("utf-8", "replace")


def _visible(text: str) -> list[str]:
    return [line.split("\r")[-1].rstrip() for line in text.replace("\r\n", "\n").split("\n")]


def test_a_terminal_shows_whole_adapt_lines_above_the_bars_and_no_library_notices(tiny_bert_dir, text_data,
                                                                                   tmp_path: Path) -> None:
    raw = _in_a_terminal(_args(tiny_bert_dir, text_data, "run"), tmp_path)
    assert "%|" in raw  # progress bars were drawn
    shown = _visible(raw)
    for line in shown:
        assert not ("adapt:" in line and "%|" in line), line  # never a log line inside a bar
        assert not any(noise in line for noise in NOISE), line
    assert any(line.startswith("adapt: step 2: loss=") for line in shown), shown
    assert "adapt: BertForSequenceClassification newly initialised (not in the checkpoint): classifier.bias, " \
           "classifier.weight" in shown
    log = (tmp_path / "run" / "train.log").read_text()
    assert "LOAD REPORT" in log  # what left the terminal is kept in the run's log
    # the end: a table of the test metrics, where the model is and what to do with it (JSON with --json)
    assert '"output"' not in raw and any(line.startswith("test        accuracy") for line in shown), shown
    assert any(line.startswith("split") and line.endswith("baseline (the most frequent class)") for line in shown)
    assert "model     run/model (merged)" in shown and "evaluate  adapt evaluate run --data FILE" in shown


def test_a_pipe_gets_line_based_output_and_verbose_shows_the_libraries(tiny_bert_dir, text_data,
                                                                       tmp_path: Path) -> None:
    result = subprocess.run(_args(tiny_bert_dir, text_data, "run"), cwd=tmp_path, env=_env(), capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stderr and "%|" not in result.stderr, result.stderr  # no bars in a pipe
    lines = result.stderr.splitlines()
    assert all(line.startswith("adapt: ") for line in lines if line.strip()), lines
    assert not any(noise in result.stderr for noise in NOISE), result.stderr
    assert json.loads(result.stdout)["output"] == "run"  # stdout not a terminal: the result as JSON
    verbose = subprocess.run(_args(tiny_bert_dir, text_data, "verbose", "--verbose"), cwd=tmp_path, env=_env(),
                             capture_output=True, text=True, timeout=300)
    assert verbose.returncode == 0, verbose.stderr
    assert "LOAD REPORT" in verbose.stderr
