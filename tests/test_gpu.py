"""What only a CUDA GPU exercises, for the HF tasks, through the real `adapt` command: mixed
precision, bitsandbytes' CUDA kernels, attention kernels, NCCL under ddp / DeepSpeed, and a real
CUDA out-of-memory. Marked ``gpu``: skipped without CUDA; bench/gpu.sh runs them on a lent GPU.

Tolerances: the same run on the GPU and on the CPU (CUDA hidden) starts from the same weights and
batches, so its first logged loss agrees to 1e-3 (kernels round differently); mixed precision
trains rounded weights, so its test loss is within 5% of the fp32 run's; a saved model reloads to
its own run's test loss within 1e-4 (fp32) or 5e-3 (mixed precision, 4 / 8 bit)."""

from __future__ import annotations

import importlib.util
import json
import random
from pathlib import Path

import pytest
from adapt.testing import make_tokenizer, read_metrics, run_adapt, tiny_bert, write_jsonl

pytestmark = [pytest.mark.gpu, pytest.mark.slow]
# no run tracking, no MLflow model: settings of adapt-mlflow, absent where it is not installed (the GPU check)
QUIET = ["--set", "tracking.enabled=false", "--set", "save_as_mlflow_model=false"] \
    if importlib.util.find_spec("adapt_mlflow") else []
CPU = {"CUDA_VISIBLE_DEVICES": ""}


@pytest.fixture(scope="module")
def bert64(tmp_path_factory: pytest.TempPathFactory) -> str:
    return tiny_bert(tmp_path_factory.mktemp("bert64"), hidden_size=64)


def _train(model: str, data: dict[str, str], out: Path, *extra: str, method: str = "lora",
           env: dict[str, str] | None = None) -> dict:
    """A 3-epoch run whose validation loss must fall; its metrics.json."""
    result = run_adapt("train", "--task", "text_classification", "--method", method, "--model", model,
                       "--train", data["train"], "--validation", data["validation"], "--test", data["test"],
                       "--output", str(out), "--set", "training.num_train_epochs=3", "--set", "training.seed=42",
                       "--set", "training.learning_rate=5e-3", "--set", "training.per_device_train_batch_size=16",
                       "--set", "training.logging_steps=3", "--set", "training.group_by_length=false", *QUIET, *extra,
                       env=env)
    assert result.returncode == 0, result
    losses = [r["eval_loss"] for r in read_metrics(out) if "eval_loss" in r]
    assert len(losses) >= 3 and losses[-1] < losses[0], losses
    return json.loads((out / "metrics.json").read_text())


def _reloads(out: Path, data: dict[str, str], metrics: dict, tolerance: float) -> None:
    evaluated = run_adapt("evaluate", str(out), "--data", data["test"])
    assert evaluated.returncode == 0, evaluated
    assert evaluated.json()["test_loss"] == pytest.approx(metrics["test"]["test_loss"], abs=tolerance)


def _first_loss(out: Path) -> float:
    return next(r["loss"] for r in read_metrics(out) if "loss" in r)


@pytest.fixture(scope="module")
def fp32(bert64: str, text_data: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("fp32") / "run"
    return out, _train(bert64, text_data, out)


def test_fp32_on_the_gpu_matches_the_cpu_and_reloads(fp32, bert64, text_data, tmp_path: Path) -> None:
    out, metrics = fp32
    assert metrics["device"].startswith("cuda:0 (") and metrics["device"].endswith(", fp32"), metrics["device"]
    assert metrics["peak_tensor_memory_mib"] > 0  # torch.cuda.max_memory_allocated, recorded by every GPU run
    cpu = _train(bert64, text_data, tmp_path / "cpu", env=CPU)
    assert cpu["device"] == "cpu, fp32"
    assert _first_loss(out) == pytest.approx(_first_loss(tmp_path / "cpu"), abs=1e-3)
    _reloads(out, text_data, metrics, 1e-4)


@pytest.mark.parametrize(("precision", "name"), [("16", "fp16"), ("bf16", "bf16")])
def test_mixed_precision_trains_like_fp32_and_reloads(precision: str, name: str, fp32, bert64, text_data,
                                                       tmp_path: Path) -> None:
    metrics = _train(bert64, text_data, tmp_path / "run", "--set", f"training.precision={precision}")
    assert metrics["device"].startswith("cuda:0 (") and metrics["device"].endswith(f", {name}"), metrics["device"]
    reference = fp32[1]["test"]["test_loss"]
    assert metrics["test"]["test_loss"] == pytest.approx(reference, rel=0.05)
    _reloads(tmp_path / "run", text_data, metrics, 5e-3)


@pytest.mark.parametrize(("method", "extra"), [("qlora", []), ("qlora", ["--set", "method_params.load_in_8bit=true"]),
                                               ("qdora", []), ("qssf", []),
                                               ("qssf", ["--set", "method_params.load_in_8bit=true"])],
                         ids=["qlora-4bit", "qlora-8bit", "qdora-4bit", "qssf-4bit", "qssf-8bit"])
def test_quantized_methods_train_with_cuda_kernels_and_reload(method: str, extra: list[str], fp32, bert64, text_data,
                                                              tmp_path: Path) -> None:
    metrics = _train(bert64, text_data, tmp_path / "run", *extra, method=method)
    assert metrics["device"].startswith("cuda:0 ("), metrics["device"]
    assert json.loads((tmp_path / "run" / "model" / "adapt.json").read_text())["format"] == "adapter"
    assert metrics["peak_tensor_memory_mib"] > 0
    _reloads(tmp_path / "run", text_data, metrics, 5e-3)  # the base is quantized again on reload


def test_attention_implementations_on_the_gpu(bert64, text_data, tmp_path: Path) -> None:
    """eager and sdpa compute the same model on CUDA; flash_attention_2 trains where flash-attn is
    installed and is one clear error where it is not."""

    losses = {}
    for impl in ("eager", "sdpa"):
        metrics = _train(bert64, text_data, tmp_path / impl, "--set", f"model.attn_implementation={impl}")
        losses[impl] = metrics["test"]["test_loss"]
    assert losses["eager"] == pytest.approx(losses["sdpa"], abs=1e-3), losses
    flash = ["--set", "model.attn_implementation=flash_attention_2", "--set", "training.precision=bf16"]
    if importlib.util.find_spec("flash_attn") is not None:
        metrics = _train(bert64, text_data, tmp_path / "flash", *flash)
        assert metrics["test"]["test_loss"] == pytest.approx(losses["sdpa"], rel=0.05)
    else:
        result = run_adapt("train", "--task", "text_classification", "--method", "lora", "--model", bert64,
                           "--train", text_data["train"], "--output", str(tmp_path / "flash"), *flash, *QUIET)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result
        assert "flash-attn package" in result.stderr


def test_auto_find_batch_size_recovers_from_a_real_cuda_out_of_memory(tmp_path: Path) -> None:
    """A BERT-large-sized layer stack, 512 tokens a row, 64 rows a batch, on a GPU capped at 3 GiB
    (torch.cuda.set_per_process_memory_fraction in the run's process): the first batches raise
    CUDA's out-of-memory error; the Trainer retries smaller until one fits, and the run says so."""
    import torch
    from transformers import BertConfig, BertModel

    if not torch.cuda.is_available():  # a dry run (ADAPT_RUN_GPU_TESTS): on the CPU this batch would take 30 GB
        pytest.skip("needs CUDA: the memory cap is a CUDA allocator setting")
    folder = tmp_path / "bert-wide"
    tokenizer = make_tokenizer(folder)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=1024, num_hidden_layers=8, num_attention_heads=16,
                         intermediate_size=4096, max_position_embeddings=512)).save_pretrained(str(folder))
    words = [w for w in tokenizer.get_vocab() if w.isalpha()]
    rng = random.Random(0)
    train = write_jsonl(tmp_path / "long.jsonl", [{"text": " ".join(rng.choices(words, k=500)), "label": i % 2}
                                                  for i in range(64)])
    cap = tmp_path / "cap"
    cap.mkdir()
    (cap / "sitecustomize.py").write_text(
        "import torch\n"
        f"torch.cuda.set_per_process_memory_fraction({3 * 2**30} / torch.cuda.get_device_properties(0).total_memory)\n")
    import os

    env = {"PYTHONPATH": os.pathsep.join([str(cap), os.environ.get("PYTHONPATH", "")])}
    result = run_adapt("train", "--task", "text_classification", "--method", "lora", "--model", str(folder),
                       "--train", train, "--output", str(tmp_path / "run"), "--set", "training.max_steps=2",
                       "--set", "training.per_device_train_batch_size=64", "--set", "training.auto_find_batch_size=true",
                       "--set", "task_params.max_seq_length=512", "--set", "training.logging_steps=1", *QUIET, env=env)
    assert result.returncode == 0, result
    assert "per_device_train_batch_size 64 did not fit in memory; trained with" in result.stderr, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert 1 <= metrics["train_batch_size"] < 64
    losses = [r["loss"] for r in read_metrics(tmp_path / "run") if "loss" in r]
    assert len(losses) == 2 and all(0 < x < 10 for x in losses), losses


@pytest.mark.xdist_group("distributed")
def test_ddp_over_nccl_with_one_rank(bert64, text_data, tmp_path: Path) -> None:
    """One GPU: one rank over NCCL (several GPUs, and NCCL between them, stay unverified here)."""
    metrics = _train(bert64, text_data, tmp_path / "run", "--backend", "ddp", "--set", "backend_params.nproc_per_node=1")
    assert metrics["device"].startswith("cuda:0 (") and "1 process(es) over nccl" in metrics["device"], metrics["device"]
    _reloads(tmp_path / "run", text_data, metrics, 1e-4)


@pytest.mark.xdist_group("distributed")
@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_zero_over_nccl_with_one_rank(stage: int, bert64, text_data, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    metrics = _train(bert64, text_data, tmp_path / "run", "--backend", "deepspeed",
                     "--set", f"backend_params.deepspeed_stage={stage}", "--set", "backend_params.nproc_per_node=1")
    assert "over nccl" in metrics["device"], metrics["device"]
    _reloads(tmp_path / "run", text_data, metrics, 1e-4)
    saved = load_file(tmp_path / "run" / "saved" / "safetensors" / "model.safetensors")
    assert all(t.numel() > 0 for t in saved.values())  # gathered weights, no ZeRO-3 placeholders
