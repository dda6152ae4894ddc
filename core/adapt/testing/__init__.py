"""Test helpers for adapt and for plugin authors: tiny random models, tokenizers and data made on
the fly (no downloads), a runner for the real ``adapt`` command, and contract checks that a
task, method, backend or saver behaves as the core expects.

Use the fixtures with ``pytest_plugins = ["adapt.testing.fixtures"]`` in a root conftest.py.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from adapt.api import Backend, Engine, LoadedModel, Method, Saver, Task

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
TOPIC_WORDS = {
    "sports": ["goal", "match", "team", "score", "coach", "league", "ball", "win"],
    "weather": ["rain", "sunny", "storm", "cloud", "wind", "snow", "forecast", "cold"],
    "food": ["pasta", "bread", "cook", "recipe", "salt", "oven", "dinner", "soup"],
}
FILLER = ["the", "a", "today", "really", "we", "saw", "about", "this", "very", "and", "it", "was", "new", "big"]
PEOPLE = ["alice", "bob", "carol", "dave", "erin", "frank"]
PLACES = ["paris", "rome", "oslo", "lima", "cairo", "quito"]
QUESTION_WORDS = ["where", "who", "does", "live", "lives", "in", "visited", "?", "."]


def vocabulary() -> list[str]:
    """The words of the tiny tokenizer: special tokens, topic, name, place and filler words."""
    words = [w for topic in TOPIC_WORDS.values() for w in topic] + FILLER + PEOPLE + PLACES + QUESTION_WORDS
    return SPECIAL_TOKENS + sorted(set(words)) + [f"w{i}" for i in range(40)]


def make_tokenizer(folder: str | Path) -> Any:
    """A tiny WordPiece (BERT) tokenizer over :func:`vocabulary`, saved to ``folder``."""
    from transformers import BertTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = {word: i for i, word in enumerate(vocabulary())}
    tokenizer = BertTokenizer(vocab=vocab, model_max_length=64,
                              model_input_names=["input_ids", "token_type_ids", "attention_mask"])
    tokenizer.save_pretrained(str(folder))
    return tokenizer


def _save_tiny(folder: str | Path, seed: int, build: Callable[[Any], Any]) -> str:
    """Save the tiny tokenizer and ``build(tokenizer)`` (a random model, seeded) to ``folder``."""
    import torch

    folder = Path(folder)
    tokenizer = make_tokenizer(folder)
    torch.manual_seed(seed)
    build(tokenizer).save_pretrained(str(folder))
    return str(folder)


def tiny_bert(folder: str | Path, seed: int = 0, hidden_size: int = 32, layers: int = 2) -> str:
    """Save a randomly initialised tiny BERT encoder and its tokenizer; return the folder."""
    from transformers import BertConfig, BertModel

    return _save_tiny(folder, seed, lambda tokenizer: BertModel(BertConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, num_hidden_layers=layers, num_attention_heads=2,
        intermediate_size=2 * hidden_size, max_position_embeddings=64, initializer_range=0.2,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)))


def tiny_causal_lm(folder: str | Path, family: str = "gpt2", seed: int = 0) -> str:
    """Save a tiny random GPT-2 or Llama causal LM with the tiny tokenizer; return the folder."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    if family not in ("gpt2", "llama"):
        raise ValueError(f"unknown family {family!r} (gpt2, llama)")

    def build(tokenizer: Any) -> Any:
        ids = {"vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id,
               "bos_token_id": tokenizer.cls_token_id, "eos_token_id": tokenizer.sep_token_id}
        if family == "gpt2":
            return GPT2LMHeadModel(GPT2Config(n_positions=128, n_embd=32, n_layer=2, n_head=2, **ids))
        return LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                            num_attention_heads=2, num_key_value_heads=2,
                                            max_position_embeddings=128, **ids))

    return _save_tiny(folder, seed, build)


def tiny_seq2seq(folder: str | Path, family: str = "t5", seed: int = 0) -> str:
    """Save a tiny random T5 or BART encoder-decoder with the tiny tokenizer; return the folder."""
    from transformers import BartConfig, BartForConditionalGeneration, T5Config, T5ForConditionalGeneration

    if family not in ("t5", "bart"):
        raise ValueError(f"unknown family {family!r} (t5, bart)")

    def build(tokenizer: Any) -> Any:
        ids = {"vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id,
               "eos_token_id": tokenizer.sep_token_id, "decoder_start_token_id": tokenizer.pad_token_id}
        if family == "t5":
            return T5ForConditionalGeneration(T5Config(d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2, **ids))
        return BartForConditionalGeneration(BartConfig(
            d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2,
            encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=128, bos_token_id=tokenizer.cls_token_id,
            forced_eos_token_id=tokenizer.sep_token_id, **ids))

    return _save_tiny(folder, seed, build)


def token_classification_rows(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """NER rows: filler words with people (one or two words: B-PER I-PER) and places (B-LOC)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        tokens, tags = [], []
        for _ in range(rng.randint(4, 8)):
            roll = rng.random()
            if roll < 0.2:
                name = rng.sample(PEOPLE, rng.choice([1, 1, 2]))
                tokens += name
                tags += ["B-PER"] + ["I-PER"] * (len(name) - 1)
            elif roll < 0.35:
                tokens.append(rng.choice(PLACES))
                tags.append("B-LOC")
            else:
                tokens.append(rng.choice(FILLER))
                tags.append("O")
        rows.append({"tokens": tokens, "tags": tags})
    return rows


def question_answering_rows(n: int, seed: int = 0, unanswerable: float = 0.0) -> list[dict[str, Any]]:
    """SQuAD-style rows: where does <person> live? The answer is the place in the context."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        people = rng.sample(PEOPLE, 2)
        places = rng.sample(PLACES, 2)
        filler = " ".join(rng.sample(FILLER, 2))
        context = f"{filler} {people[0]} lives in {places[0]} . {people[1]} visited {places[1]} ."
        if rng.random() < unanswerable:
            other = next(p for p in PEOPLE if p not in people)
            rows.append({"id": str(i), "question": f"where does {other} live ?", "context": context,
                         "answers": {"text": [], "answer_start": []}})
            continue
        start = context.index(f" {places[0]} ") + 1
        rows.append({"id": str(i), "question": f"where does {people[0]} live ?", "context": context,
                     "answers": {"text": [places[0]], "answer_start": [start]}})
    return rows


def seq2seq_rows(n: int, seed: int = 0, kind: str = "summarization") -> list[dict[str, Any]]:
    """summarization: a document -> its two topic words, sorted; translation: words -> code words."""
    rng = random.Random(seed)
    topics = sorted(TOPIC_WORDS)
    dictionary = {w: f"w{i}" for i, w in enumerate(sorted({w for ws in TOPIC_WORDS.values() for w in ws}))}
    rows = []
    for i in range(n):
        topic = topics[i % len(topics)]
        words = rng.sample(TOPIC_WORDS[topic], 2)
        if kind == "translation":
            rows.append({"source": " ".join(words), "target": " ".join(dictionary[w] for w in words)})
        else:
            document = [rng.choice(FILLER) for _ in range(5)] + words
            rng.shuffle(document)
            rows.append({"document": " ".join(document), "summary": " ".join(sorted(words))})
    return rows


def text_generation_rows(n: int, seed: int = 0, kind: str = "text") -> list[dict[str, Any]]:
    """Causal LM rows with a pattern to learn: plain text, prompt / completion, or chat messages."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        person, place = rng.choice(PEOPLE), rng.choice(PLACES)
        if kind == "prompt_completion":
            rows.append({"prompt": f"where does {person} live ?", "completion": f"{person} lives in {place} ."})
        elif kind == "messages":
            rows.append({"messages": [{"role": "user", "content": f"where does {person} live ?"},
                                      {"role": "assistant", "content": f"{person} lives in {place} ."}]})
        else:
            rows.append({"text": f"{person} lives in {place} . {person} visited {rng.choice(PLACES)} ."})
    return rows


def text_classification_rows(n: int, seed: int = 0, multi_label: bool = False) -> list[dict[str, Any]]:
    """Rows a tiny model can learn: each text holds two words of its topic among filler words."""
    rng = random.Random(seed)
    topics = sorted(TOPIC_WORDS)
    rows = []
    for i in range(n):
        chosen = [topics[i % len(topics)]]
        if multi_label and rng.random() < 0.4:
            chosen.append(rng.choice([t for t in topics if t != chosen[0]]))
        words = [rng.choice(FILLER) for _ in range(rng.randint(3, 6))]
        for topic in chosen:
            words += rng.sample(TOPIC_WORDS[topic], 2)
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": sorted(chosen) if multi_label else chosen[0]})
    rng.shuffle(rows)
    return rows


def write_jsonl(path: str | Path, rows: list[dict[str, Any]]) -> str:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return str(path)


def text_classification_data(folder: str | Path, n_train: int = 96, n_eval: int = 24,
                             multi_label: bool = False) -> dict[str, str]:
    """train / validation / test jsonl files for text_classification; returns their paths."""
    folder = Path(folder)
    return {split: write_jsonl(folder / f"{split}.jsonl",
                               text_classification_rows(n, seed=s, multi_label=multi_label))
            for split, n, s in (("train", n_train, 1), ("validation", n_eval, 2), ("test", n_eval, 3))}


def install_fake_plugin(site: str | Path, dist: str, module: str, code: str, version: str = "1.0") -> Path:
    """Install a one-module plugin distribution into ``site`` (a folder to put on PYTHONPATH /
    sys.path) as pip would: the module, and a dist-info with its ``adapt`` entry point."""
    import textwrap

    site = Path(site)
    site.mkdir(parents=True, exist_ok=True)
    (site / f"{module}.py").write_text(textwrap.dedent(code), encoding="utf-8")
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n", encoding="utf-8")
    (info / "entry_points.txt").write_text(f"[adapt]\n{module} = {module}\n", encoding="utf-8")
    return site


# ------------------------------------------------------------------------------------------
# Running the real command


@dataclass
class AdaptResult:
    returncode: int
    stdout: str
    stderr: str
    args: list[str] = field(default_factory=list)

    def json(self) -> Any:
        return json.loads(self.stdout)

    def __str__(self) -> str:
        return f"adapt {' '.join(self.args)} -> {self.returncode}\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}"


def run_adapt(*args: str, cwd: str | Path | None = None, env: dict[str, str] | None = None,
              timeout: float = 600) -> AdaptResult:
    """Run ``adapt ARGS`` in a fresh process (as a user would), single-threaded for parallel tests."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
                "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "adapt", *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)
    return AdaptResult(proc.returncode, proc.stdout, proc.stderr, list(args))


def free_port() -> int:
    """A TCP port free on this machine now (for servers and rendezvous that tests start)."""
    from torch.distributed.elastic.utils.distributed import get_free_port

    return get_free_port()


def resolved(config: dict[str, Any], purpose: str = "train") -> Any:
    """The :class:`adapt.Run` of a run config (a dict, as in a YAML file), resolved against the
    installed plugins as ``adapt train`` resolves it; nothing runs."""
    from adapt.config import parse_config
    from adapt.resolve import resolve

    return resolve(parse_config(config), purpose=purpose)


def adapted_model(config: dict[str, Any]) -> tuple[Any, LoadedModel]:
    """The run of ``config`` and its model, loaded by the task and adapted by the method as
    training would load it (which parameters train, what the method added)."""
    run = resolved(config)
    return run, run.load_adapted(run.model_source(), run.task.inspect_data(run))


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """Every record of a run folder's metrics.jsonl."""
    lines = (Path(run_dir) / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


# ------------------------------------------------------------------------------------------
# Contract checks


def _check_named(obj: Any, base: type) -> None:
    assert isinstance(obj, base), f"{obj!r} is not an adapt.{base.__name__}"
    assert isinstance(obj.name, str) and obj.name.isidentifier(), f"{obj!r}: name must be an identifier"
    assert obj.description, f"{obj!r}: give a description (shown by adapt plugins and the docs)"
    assert isinstance(obj.Params, type) and issubclass(obj.Params, BaseModel), f"{obj!r}: Params must be a pydantic model"
    obj.Params()  # every parameter has a default
    assert obj.Params.model_config.get("extra") == "forbid", f"{obj!r}: Params must forbid unknown keys (subclass adapt.Params)"
    for name, info in obj.Params.model_fields.items():
        assert info.description, f"{obj!r}: parameter {name} has no description"


def check_task(task: Task) -> None:
    """A task is named, documented, on an installed engine whose parameters it has, and lists its metrics."""
    from adapt.plugins import get_registry

    _check_named(task, Task)
    engines = get_registry().objects["engine"]
    assert task.engine in engines, f"{task!r}: engine {task.engine!r} is not installed (engines: {', '.join(engines)})"
    base = engines[task.engine].task_params
    assert issubclass(task.Params, base), f"{task!r}: Params of engine {task.engine} tasks subclass {base.__name__}"
    assert all(isinstance(m, str) for m in task.metrics), f"{task!r}: metrics must be names"
    for hook in ("load_model", "load_data", "predict", "save_model"):
        assert getattr(type(task), hook) is not getattr(Task, hook), f"{task!r}: implement {hook}"


def check_backend(backend: Backend) -> None:
    """A backend is named, documented, launches workers, and names a strategy where it hands one over."""
    _check_named(backend, Backend)
    assert type(backend).launch is not Backend.launch, f"{backend!r}: implement launch"
    if type(backend).parallel is not Backend.parallel:
        assert backend.strategy, f"{backend!r}: parallel() hands over a strategy: name it in `strategy`"


def check_engine(engine: Engine) -> None:
    """An engine is named, documented, trains and evaluates, and says what it reads of its tasks."""
    _check_named(engine, Engine)
    for hook in ("train", "evaluate"):
        assert getattr(type(engine), hook) is not getattr(Engine, hook), f"{engine!r}: implement {hook}"
    assert all(isinstance(s, str) for s in engine.strategies), f"{engine!r}: strategies are names (ddp, fsdp...)"
    assert isinstance(engine.task_params, type) and issubclass(engine.task_params, BaseModel), \
        f"{engine!r}: task_params is the pydantic model its tasks' Params subclass"


def method_run(head_modules: list[str] | None = None) -> Any:
    """The part of a Run a method sees, for testing methods outside a run (``head_modules``:
    the task's head; None lets the method find it)."""
    from types import SimpleNamespace

    return SimpleNamespace(head_modules=None if head_modules is None else list(head_modules), load_options={})


def check_method(method: Method, make_model: Callable[[], tuple[Any, dict[str, Any]]],
                 head_modules: list[str] | None = None, params: BaseModel | None = None,
                 atol: float = 1e-4, steps: int = 8) -> dict[str, Any]:
    """Apply ``method`` to a fresh model from ``make_model()`` (which returns the model and
    forward keyword arguments whose output has ``logits`` or is a tensor) and check that:
    something trains; optimizer steps (each followed by the method's ``after_optimizer_step``, as the
    engines call it) change only trainable parameters and lower a loss; the
    trainable tensors saved and loaded onto a fresh model give the same outputs (how adapt
    saves an unmerged adapter); a merged model gives the adapted model's outputs within
    ``atol`` and holds only the base model's parameters. Returns what it measured."""
    import torch

    from adapt.models import adapter_state

    _check_named(method, Method)
    params = params or method.Params()
    torch.manual_seed(0)
    model, inputs = make_model()
    model = method.apply(model, params, method_run(head_modules))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable, f"{method!r}: no parameter trains after apply"
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = _output(model, inputs).float().pow(2).mean()
        loss.backward()
        optimizer.step()
        method.after_optimizer_step(model, params, len(losses), steps)
        losses.append(float(loss))
    changed = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert changed, f"{method!r}: {steps} optimizer steps changed no parameter"
    assert changed <= trainable, f"{method!r}: frozen parameters changed: {sorted(changed - trainable)[:5]}"
    assert losses[-1] < losses[0], f"{method!r}: the loss did not decrease: {losses}"
    model.eval()
    with torch.no_grad():
        adapted = _output(model, inputs).detach().clone()

    torch.manual_seed(1)
    fresh, _ = make_model()
    fresh = method.apply(fresh, params, method_run(head_modules))
    state = adapter_state(model)
    unknown = set(state) - set(fresh.state_dict())
    assert not unknown, f"{method!r}: re-applying the method does not recreate {sorted(unknown)[:5]}"
    fresh.load_state_dict(state, strict=False)
    fresh.eval()
    with torch.no_grad():
        reload_difference = float((_output(fresh, inputs) - adapted).abs().max())
    assert reload_difference <= 1e-5, f"{method!r}: reloaded adapter outputs differ by {reload_difference}"

    merged = method.merge(model, params)
    difference = None
    if merged is not None:
        merged.eval()
        with torch.no_grad():
            difference = float((_output(merged, inputs) - adapted).abs().max())
        assert difference <= atol, f"{method!r}: merged outputs differ by {difference} (> {atol})"
        base = {n for n, _ in make_model()[0].named_parameters()}
        leftovers = [n for n, _ in merged.named_parameters() if n not in base]
        assert not leftovers, f"{method!r}: merged model holds parameters the base model does not {leftovers[:3]}"
    return {"trainable": sorted(trainable), "changed": sorted(changed), "losses": losses,
            "merge_difference": difference, "reload_difference": reload_difference}


def _output(model: Any, inputs: dict[str, Any]) -> Any:
    out = model(**inputs)
    return out.logits if hasattr(out, "logits") else out


def check_saver(saver: Saver, make_model: Callable[[], tuple[Any, dict[str, Any]]], folder: str | Path,
                processor: Any = None) -> None:
    """Save a model, load it back (into a fresh model of the same kind) and compare outputs."""
    import torch

    _check_named(saver, Saver)
    torch.manual_seed(0)
    model, inputs = make_model()
    model.eval()
    loaded = LoadedModel(model, processor, {})
    saver.check(loaded)
    written = saver.save(loaded, str(folder), run=None)
    assert written and all(Path(p).exists() for p in written), f"{saver!r}: save() must return the paths it wrote"
    torch.manual_seed(1)
    fresh, _ = make_model()
    restored = saver.load(str(folder), like=fresh)
    restored.eval()
    with torch.no_grad():
        assert torch.allclose(_output(model, inputs), _output(restored, inputs), atol=1e-6), \
            f"{saver!r}: the reloaded model gives other outputs"
