"""The ``adapt`` command line. Heavy libraries load only inside the commands that train or
predict, so ``adapt --help`` and ``adapt plugins`` stay fast with every pack installed."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from adapt.errors import AdaptError, ConfigError

app = typer.Typer(help="Adapt pretrained models to tasks with parameter-efficient methods.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
config_app = typer.Typer(help="Show and check run configs.", no_args_is_help=True)
app.add_typer(config_app, name="config")

SET_HELP = "Override any config key: --set training.learning_rate=1e-4 (repeatable)."


@contextlib.contextmanager
def _results_to_stdout() -> Iterator[None]:
    """While a command works, whatever libraries print (DeepSpeed logs to stdout when imported)
    goes to stderr, so that stdout carries only the command's result (JSON, predictions)."""
    with contextlib.redirect_stdout(sys.stderr):
        yield


def _build_config(config: Path | None, flags: dict[str, Any], overrides: list[str]) -> tuple[Any, str | None]:
    from adapt.config import build_config

    return build_config(config, flags, overrides), str(config) if config else None


ConfigOption = Annotated[Path | None, typer.Option("--config", "-c", help="Run config YAML.")]
TaskOption = Annotated[str | None, typer.Option("--task", help="Task name (sets `task`).")]
MethodOption = Annotated[str | None, typer.Option("--method", help="Method name (sets `method`).")]
BackendOption = Annotated[str | None, typer.Option("--backend", help="Backend name (sets `backend`).")]
ModelOption = Annotated[str | None, typer.Option("--model", help="Model folder, hub id or name (sets `model.path`).")]
TrainOption = Annotated[str | None, typer.Option("--train", help="Training data (sets `data.train`).")]
ValidationOption = Annotated[str | None, typer.Option("--validation", help="Validation data (sets `data.validation`).")]
TestOption = Annotated[str | None, typer.Option("--test", help="Test data (sets `data.test`).")]
OutputOption = Annotated[str | None, typer.Option("--output", "-o", help="Run folder (sets `output`).")]
SaverOption = Annotated[list[str], typer.Option("--saver", help="Saver name (sets `savers`; repeatable).")]
SetOption = Annotated[list[str], typer.Option("--set", help=SET_HELP)]
JsonOption = Annotated[bool, typer.Option("--json", help="The result as JSON on stdout (what a pipe or a file gets "
                                          "anyway; a terminal gets a short table).")]
VerboseOption = Annotated[bool, typer.Option("--verbose", help="Show the libraries' notices (transformers' loading "
                                             "report, deprecation warnings) on the terminal too, not only in train.log.")]


def _run_flags(**flags: Any) -> dict[str, Any]:
    """The direct flags of train / plan as dotted config keys."""
    keys = {"model": "model.path", "train_data": "data.train", "validation": "data.validation",
            "test": "data.test", "saver": "savers"}
    return {keys.get(name, name): (value or None) if name == "saver" else value for name, value in flags.items()}


@app.command()
def train(config: ConfigOption = None, task: TaskOption = None, method: MethodOption = None,
          backend: BackendOption = None, model: ModelOption = None, train_data: TrainOption = None,
          validation: ValidationOption = None, test: TestOption = None, output: OutputOption = None,
          saver: SaverOption = [], set_: SetOption = [],  # noqa: B006 - typer reads the defaults
          verbose: VerboseOption = False, as_json: JsonOption = False) -> None:
    """Fine-tune a model: config file, flags and --set overrides, in that order of precedence."""
    if verbose:
        from adapt.logs import VERBOSE_ENV

        os.environ[VERBOSE_ENV] = "1"  # this process and the workers a backend starts
    flags = _run_flags(task=task, method=method, backend=backend, model=model, train_data=train_data,
                       validation=validation, test=test, output=output, saver=saver)
    cfg, source = _build_config(config, flags, set_)
    from adapt.lifecycle import train as run_train
    from adapt.resolve import resolve

    run = resolve(cfg, source=source, purpose="train")
    with _results_to_stdout():
        metrics = run_train(run)
    if run.launched:  # a distributed worker: the launching command prints the result
        return
    summary = {k: metrics[k] for k in ("test", "validation") if k in metrics}
    if as_json or not sys.stdout.isatty():
        typer.echo(json.dumps({"output": str(run.output_dir), **summary}, indent=2, default=str))
    else:
        typer.echo(_run_summary(run, summary, metrics.get("baseline") or {}))


def _run_summary(run: Any, summary: dict[str, Any], baseline: dict[str, Any]) -> str:
    """The end of a run on a terminal: its metrics per split (beside a trivial predictor's where the
    task has one), where the model and the savers' files are, and the commands that use them."""
    names = [*run.task.metrics[:4], "loss"]
    rows = [(split, name, value, (baseline.get(split) or {}).get(prefix + name))
            for split, prefix in (("validation", "eval_"), ("test", "test_"))
            for name in names if isinstance(value := (summary.get(split) or {}).get(prefix + name), (int, float))]
    head = f"{'split':<12}{'metric':<30}{'value':<10}" + ("baseline (the most frequent class)" if baseline else "")
    lines = [head, *(f"{s:<12}{n:<30}{v:<10.4f}" + (f"{b:.4f}" if b is not None else "") for s, n, v, b in rows)] \
        if rows else ["no validation or test data: see metrics.jsonl for the training losses"]
    model = run.path("model")
    info = model / "adapt.json"
    fmt = json.loads(info.read_text())["format"] if info.is_file() else "?"
    lines += ["", f"model     {model} ({'merged' if fmt == 'native' else fmt})"]
    lines += [f"saved     {run.path('saved') / saver.name} ({saver.name})" for saver in run.savers]
    out = run.output_dir
    lines += [f"evaluate  adapt evaluate {out} --data FILE", f"predict   adapt predict {out} --data FILE"]
    if any(saver.name == "mlflow" for saver in run.savers):
        lines.append(f"serve     mlflow models serve -m {run.path('saved') / 'mlflow'} --env-manager local")
    return "\n".join(lines)


@app.command()
def plan(config: ConfigOption = None, task: TaskOption = None, method: MethodOption = None,
         backend: BackendOption = None, model: ModelOption = None, train_data: TrainOption = None,
         set_: SetOption = []) -> None:  # noqa: B006 - typer reads the defaults
    """Without training: trainable / total parameters, memory of weights + gradients + optimizer
    state, and the number of steps of a run."""
    flags = _run_flags(task=task, method=method, backend=backend, model=model, train_data=train_data)
    cfg, source = _build_config(config, flags, set_)
    from adapt.logs import setup_logging
    from adapt.plan import plan as make_plan
    from adapt.resolve import resolve

    setup_logging()
    with _results_to_stdout():
        result = make_plan(resolve(cfg, source=source, purpose="train"))
    mib = {k.replace("_bytes", "_mib"): round(v / 2**20, 3) for k, v in result.items() if k.endswith("_bytes")}
    typer.echo(json.dumps({**result, **mib}, indent=2))


RunArgument = Annotated[Path, typer.Argument(help="A run folder (or its model/ folder) written by adapt train.")]
DataOption = Annotated[str, typer.Option("--data", "-d", help="Data file (same formats as training data).")]


@app.command()
def evaluate(model: RunArgument, data: DataOption, set_: SetOption = [],  # noqa: B006 - typer reads the defaults
             output: Annotated[Path | None, typer.Option("--output", "-o", help="Also write the metrics to this JSON file.")] = None,
             results: Annotated[Path | None, typer.Option("--results", help="Write an evaluation folder here: metrics.json, "
                                                          "predictions.jsonl, pictures/ (a confusion matrix...).")] = None,
             ) -> None:
    """Metrics of a trained model on a data file."""
    from adapt.lifecycle import evaluate as evaluate_saved
    from adapt.logs import setup_logging

    setup_logging()
    with _results_to_stdout():
        metrics = evaluate_saved(model, data, set_, results)
    text = json.dumps(metrics, indent=2, default=str)
    if output:
        output.write_text(text + "\n", encoding="utf-8")
    typer.echo(text)


@app.command()
def predict(model: RunArgument, data: DataOption, set_: SetOption = [],  # noqa: B006 - typer reads the defaults
            output: Annotated[Path | None, typer.Option("--output", "-o", help="Write predictions (JSON lines) here, not to stdout.")] = None,
            ) -> None:
    """Predictions of a trained model, one JSON line per input row."""
    from adapt.lifecycle import predict as predict_saved

    with _results_to_stdout():
        rows = predict_saved(model, data, set_)
    lines = "".join(json.dumps(row, default=str) + "\n" for row in rows)
    if output:
        output.write_text(lines, encoding="utf-8")
        typer.echo(f"{len(rows)} predictions written to {output}", err=True)
    else:
        sys.stdout.write(lines)


@app.command()
def compare(runs: Annotated[list[Path], typer.Argument(help="Run folders written by adapt train (one task).")],
            output: Annotated[Path | None, typer.Option("--output", "-o", help="Also write compare.md and "
                                                        "compare.html (curves overlaid) into this folder.")] = None,
            as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Runs side by side: test metric, trainable %, s/step, peak memory, adapter size; the best of each."""
    from adapt.compare import compare as compare_runs
    from adapt.compare import markdown, page

    report = compare_runs(runs)
    text = markdown(report)
    if output:
        if output.exists() and not output.is_dir():
            raise ConfigError(f"--output: {output} is a file; give a folder for compare.md and compare.html")
        output.mkdir(parents=True, exist_ok=True)
        (output / "compare.md").write_text(text, encoding="utf-8")
        (output / "compare.html").write_text(page(report), encoding="utf-8")
        typer.echo(f"wrote {output / 'compare.md'} and {output / 'compare.html'}", err=True)
    if as_json:
        typer.echo(json.dumps({k: v for k, v in report.items()}, indent=2, default=str))
    else:
        typer.echo(text)


@app.command()
def sweep(methods: Annotated[str, typer.Option("--methods", help="Methods to run, comma-separated: lora,dora,ssf,ia3.")],
          learning_rates: Annotated[str | None, typer.Option(
              "--learning-rates", help="A grid, comma-separated (each method runs at each); default: each "
                                       "method's own default learning rate.")] = None,
          config: ConfigOption = None, task: TaskOption = None, model: ModelOption = None,
          train_data: TrainOption = None, validation: ValidationOption = None, test: TestOption = None,
          output: Annotated[Path, typer.Option("--output", "-o", help="Folder of the runs and the report.")] = Path("runs/sweep"),
          set_: SetOption = []) -> None:  # noqa: B006 - typer reads the defaults
    """One config trained with several methods, then compared (adapt compare's report in --output)."""
    from adapt.compare import markdown
    from adapt.compare import sweep as sweep_runs
    from adapt.plugins import get_registry

    names = [m.strip() for m in methods.split(",") if m.strip()]
    try:
        rates: list[float | None] = [float(r) for r in learning_rates.split(",")] if learning_rates else [None]
    except ValueError:
        raise ConfigError(f"--learning-rates: {learning_rates!r} is not a comma-separated list of numbers") from None
    known = get_registry().names("method")
    unknown = [m for m in names if m not in known]
    if unknown or not names:
        raise ConfigError(f"--methods: {', '.join(unknown) or 'none given'} not installed (methods: {', '.join(known)})")
    flags = _run_flags(task=task, model=model, train_data=train_data, validation=validation, test=test)
    for name in names:  # the whole config is checked for every method before anything trains
        _build_config(config, {**flags, "method": name}, set_)
    args = [*(["--config", str(config)] if config else []),
            *(x for flag, value in (("--task", task), ("--model", model), ("--train", train_data),
                                    ("--validation", validation), ("--test", test)) if value for x in (flag, value)),
            *(x for assignment in set_ for x in ("--set", assignment))]
    report = sweep_runs(args, names, rates, output)
    typer.echo(markdown(report))
    typer.echo(f"report: {output / 'compare.md'}, {output / 'compare.html'}", err=True)


@app.command()
def plugins(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Installed packs: distribution, version, what each registers, and load errors."""
    from adapt.plugins import KINDS, get_registry

    registry = get_registry()
    infos = list(registry.plugins.values())
    if as_json:
        typer.echo(json.dumps([p.as_dict() for p in infos], indent=2))
        return
    for info in infos:
        version = f" {info.version}" if info.version else ""
        typer.echo(f"{info.name} ({info.distribution or 'unknown distribution'}{version})")
        for kind in (*KINDS, "config"):
            names = info.registered.get(kind)
            if names:
                typer.echo(f"  {'config keys' if kind == 'config' else kind + 's'}: {', '.join(names)}")
        for error in info.errors:
            typer.echo(f"  ERROR: {error}")


@config_app.command("show")
def config_show(
    task: str = typer.Option(..., help="Task name."),
    method: str = typer.Option("full", help="Method name."),
    backend: str = typer.Option("single", help="Backend name."),
    model: str = typer.Option(None, help="Model (name, path or hub id): picks the method's defaults for its kind."),
) -> None:
    """Print a complete, commented YAML config with every parameter and its default (adapt's
    choices for this task, method and model marked, with why)."""
    from adapt.confdoc import show_config
    from adapt.plugins import get_registry

    registry = get_registry()
    typer.echo(show_config(registry.get("task", task), registry.get("method", method),
                           registry.get("backend", backend), model), nl=False)


@config_app.command("validate")
def config_validate(
    file: Path = typer.Argument(..., help="Run config YAML."),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
) -> None:
    """Check a run config without running anything: its keys and plugin sections, and every
    combination the engine and backend would refuse before training."""
    cfg, source = _build_config(file, {}, set_)
    from adapt.lifecycle import validate
    from adapt.resolve import resolve

    run = resolve(cfg, source=source, purpose="validate")
    with _results_to_stdout():
        machine = validate(run)
    typer.echo(f"{file}: valid (task {run.task.name}, method {run.method.name}, backend "
               f"{run.backend.name}, savers {', '.join(s.name for s in run.savers)})")
    for reason in machine:
        typer.echo(f"note: valid, but this machine would refuse it: {reason}", err=True)


@config_app.command("import")
def config_import(
    file: Path = typer.Argument(..., help="Azure ML component parameters or a nyuntam adapt config (YAML or JSON)."),
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the adapt config here (default: stdout).")] = None,
) -> None:
    """Convert Azure ML fine-tune parameters or a nyuntam adapt YAML into an adapt run config;
    every key that cannot be mapped is reported on stderr."""
    import yaml

    from adapt.config import read_yaml
    from adapt.migrate import import_config

    config, messages = import_config(read_yaml(file))
    for message in messages:
        typer.echo(f"note: {message}", err=True)
    text = f"# imported from {file} by adapt config import\n" + yaml.safe_dump(config, sort_keys=False)
    if output:
        output.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {output} ({len(messages)} note(s))", err=True)
    else:
        typer.echo(text, nl=False)


_commands_added = False


def add_plugin_commands() -> None:
    """Let installed packs add sub-commands (``adapt_register_commands``); a pack that fails is
    reported by ``adapt plugins``, never breaks the command line."""
    global _commands_added
    if _commands_added:
        return
    _commands_added = True
    from adapt.plugins import get_registry

    get_registry().pm.hook.adapt_register_commands(cli=app)


def main() -> None:
    """Entry point: user errors print one message and exit 2, without a traceback."""
    try:
        add_plugin_commands()
        app()
    except AdaptError as exc:
        typer.echo(f"error: {exc}", err=True)
        _leave(exc.exit_code)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        _leave(130)
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            _leave(exc.code or 0)
        raise
    _leave(0)


def _leave(code: int) -> None:
    """End the process without the interpreter's module teardown, which takes 1.5-2 s once torch
    and transformers are loaded: wait for running threads, run the exit handlers (log handlers,
    trackers, temporary folders), flush, then exit with ``code``."""
    import atexit
    import os
    import threading

    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
