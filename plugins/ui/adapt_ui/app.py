"""The web app: a Gradio Blocks page with four tabs (Train, Runs, Compare, Try). Gradio is the
convention of ML tools' local UIs (LlamaBoard's too); its page, fonts and scripts are served from
the installed package, so it works offline, and analytics are switched off before it loads."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402 - after analytics are off
from adapt import get_registry  # noqa: E402

from adapt_ui import jobs  # noqa: E402

SECTIONS = {"method_params": "Method parameters", "task_params": "Task parameters",
            "backend_params": "Backend parameters", "training": "Training", "data": "Data settings",
            "model": "Model settings"}
DEFAULT_HINT = "empty: the default"


def _element_id(key: str) -> str:
    return "field-" + key.replace(".", "-").replace("_", "-")


def _component(field: jobs.Field) -> Any:
    """The form component of one field, showing its default and help."""
    info = field.help + ("" if field.kind == "bool" else f" (default: {jobs.text_value(field.default) or 'none'})")
    name = field.key.split(".", 1)[1]
    if field.kind == "bool":
        return gr.Checkbox(value=bool(field.default), label=name, info=field.help, elem_id=_element_id(field.key))
    if field.kind == "choice":
        return gr.Dropdown(field.choices, value=str(field.default) if field.default is not None else None, label=name,
                           info=info, elem_id=_element_id(field.key), allow_custom_value=False)
    return gr.Textbox(value="", placeholder=jobs.text_value(field.default) or DEFAULT_HINT, label=name, info=info,
                      elem_id=_element_id(field.key), max_lines=1)


def build(runs_root: Path) -> gr.Blocks:
    """The app for the run folders under ``runs_root`` (where new runs go too)."""
    registry = get_registry()
    tasks, methods, backends = (registry.names(kind) for kind in ("task", "method", "backend"))
    running: dict[str, jobs.Job] = {}  # runs this app started, by name (one local user)
    scratch = Path(tempfile.mkdtemp(prefix="adapt-ui-"))

    def run_names() -> list[str]:
        return [r["name"] for r in jobs.list_runs(runs_root)]

    with gr.Blocks(title="adapt", analytics_enabled=False) as app:
        gr.Markdown(f"## adapt\nRuns in `{runs_root}`. Every action here runs the `adapt` command "
                    "(train, plan, compare, predict), as a terminal would.")
        current = gr.State("")
        with gr.Tab("Train", id="train"), gr.Row():
            with gr.Column():
                with gr.Row():
                    task = gr.Dropdown(tasks, value=tasks[0] if tasks else None, label="Task", elem_id="task")
                    method = gr.Dropdown(methods, value="lora" if "lora" in methods else methods[0], label="Method",
                                         elem_id="method")
                    backend = gr.Dropdown(backends, value="single", label="Backend", elem_id="backend")
                model = gr.Textbox(label="Model", info="A local folder, a hub id or a model name the task knows.",
                                   elem_id="model", max_lines=1)
                train = gr.Textbox(label="Training data", info="A file or folder on this machine.",
                                   elem_id="train-data", max_lines=1)
                with gr.Row():
                    validation = gr.Textbox(label="Validation data", info="Optional.", elem_id="validation-data",
                                            max_lines=1)
                    test = gr.Textbox(label="Test data", info="Optional; evaluated after training.",
                                      elem_id="test-data", max_lines=1)
                name = gr.Textbox(label="Run name", placeholder="empty: task-method-time",
                                  info=f"The run's folder under {runs_root}.", elem_id="run-name", max_lines=1)
                extra = gr.Textbox(label="Other settings", lines=2, elem_id="extra",
                                   info="key=value lines, as --set takes them (training.warmup_steps=0.1).")
                parameters_at = gr.Column()
            with gr.Column():
                with gr.Row():
                    plan_button = gr.Button("Plan", elem_id="plan-button")
                    start_button = gr.Button("Start", variant="primary", elem_id="start-button")
                    stop_button = gr.Button("Stop (saves a checkpoint)", variant="stop", elem_id="stop-button")
                message = gr.Markdown(elem_id="message")
                status = gr.Textbox(label="Status", elem_id="status", interactive=False)
                curves = gr.Image(label="Curves", type="filepath", elem_id="curves", interactive=False)
                log = gr.Textbox(label="Log", lines=14, max_lines=14, autoscroll=True, elem_id="log",
                                 interactive=False)
                plan_out = gr.Code(language="json", label="adapt plan", elem_id="plan")

            with parameters_at:
                @gr.render(inputs=[task, method, backend])
                def parameters(task_name: str, method_name: str, backend_name: str) -> None:
                    """The chosen plugins' parameters and the core sections, each field with its default."""
                    components: list[tuple[str, Any]] = []
                    for section, fields in jobs.form_fields(task_name, method_name, backend_name).items():
                        with gr.Accordion(SECTIONS[section], open=section == "method_params"):
                            components.extend((field.key, _component(field)) for field in fields)
                    keys = [k for k, _ in components]
                    form = [task, method, backend, model, train, validation, test, extra, *(c for _, c in components)]

                    def config_of(values: tuple[Any, ...]) -> dict[str, Any]:
                        t, m, b, mdl, tr, va, te, ex, *rest = values
                        return jobs.build_config(t, m, mdl, tr, va, te, dict(zip(keys, rest, strict=True)), ex, b)

                    def on_plan(*values: Any) -> tuple[str, str]:
                        try:
                            return "", jobs.plan(config_of(values))
                        except ValueError as exc:
                            return f"**{exc}**", ""

                    def on_start(run_name: str, *values: Any) -> tuple[str, str]:
                        try:
                            job = jobs.start(runs_root, config_of(values), run_name)
                        except ValueError as exc:
                            return f"**{exc}**", ""
                        running[job.name] = job
                        return f"started **{job.name}** into `{job.output}`", job.name

                    plan_button.click(on_plan, form, [message, plan_out])
                    start_button.click(on_start, [name, *form], [message, current])

            def refresh(job_name: str) -> tuple[str, str, Any]:
                job = running.get(job_name)
                if job is None:
                    return "no run started", "", None
                picture = jobs.curves(job.output, scratch / f"{job.name}-curves.png")
                return f"{job.name}: {job.status()}", job.log(), picture

            def on_stop(job_name: str) -> str:
                job = running.get(job_name)
                if job is None or not job.running():
                    return "no run is running"
                job.stop()
                return f"stopping **{job.name}**: it saves a checkpoint, then exits"

            gr.Timer(1.0).tick(refresh, current, [status, log, curves])
            stop_button.click(on_stop, current, message)

        with gr.Tab("Runs", id="runs") as runs_tab:
            with gr.Row():
                chosen = gr.Dropdown(run_names(), label="Run", elem_id="run-choice")
                reload_button = gr.Button("Refresh", elem_id="runs-refresh")
            table = gr.Dataframe(headers=["name", "task", "method", "state", "metric"], interactive=False,
                                 elem_id="runs-table")
            metrics = gr.Code(language="json", label="metrics.json", elem_id="run-metrics")
            gallery = gr.Gallery(label="Pictures", elem_id="run-pictures", columns=2, height="auto")
            config = gr.Code(language="yaml", label="config.yaml", elem_id="run-config")
            with gr.Accordion("Tracked runs (the MLflow store of adapt runs)", open=False, elem_id="tracked"):
                tracked_note = gr.Markdown(elem_id="tracked-note")
                tracked = gr.Dataframe(headers=list(jobs.TRACKED_COLUMNS), interactive=False, elem_id="tracked-table")

            def on_reload() -> tuple[Any, Any, Any, str]:
                found = jobs.list_runs(runs_root)
                rows = [[r[k] for k in ("name", "task", "method", "state", "metric")] for r in found]
                in_store, note = jobs.tracked_runs()
                return gr.update(choices=[r["name"] for r in found]), rows, in_store, note

            def on_choose(run_name: str) -> tuple[str, list[str], str]:
                folder = runs_root / (run_name or "")
                if not run_name or not folder.is_dir():
                    return "", [], ""
                metrics_file, config_file = folder / "metrics.json", folder / "config.yaml"
                return (metrics_file.read_text(encoding="utf-8") if metrics_file.is_file() else "{}",
                        jobs.pictures(folder),
                        config_file.read_text(encoding="utf-8") if config_file.is_file() else "")

            reload_button.click(on_reload, None, [chosen, table, tracked, tracked_note])
            chosen.change(on_choose, chosen, [metrics, gallery, config])
            runs_tab.select(on_reload, None, [chosen, table, tracked, tracked_note])

        with gr.Tab("Compare", id="compare") as compare_tab:
            several = gr.Dropdown(run_names(), multiselect=True, label="Runs (one task)", elem_id="compare-choice")
            compare_button = gr.Button("Compare", elem_id="compare-button")
            comparison = gr.Markdown(elem_id="comparison")
            compare_button.click(lambda names: jobs.compare([str(runs_root / n) for n in names or []]),
                                 several, comparison)
            compare_tab.select(lambda: gr.update(choices=run_names()), None, several)

        with gr.Tab("Try", id="try") as try_tab:
            trained = gr.Dropdown(run_names(), label="Finished run", elem_id="try-choice")
            with gr.Row():
                with gr.Column():
                    text = gr.Textbox(label="Text (or a JSON row)", lines=3, elem_id="try-text")
                    text_button = gr.Button("Predict", elem_id="try-text-button")
                with gr.Column():
                    image = gr.Image(label="Image", type="filepath", elem_id="try-image")
                    image_button = gr.Button("Predict on the image", elem_id="try-image-button")
            drawn = gr.Image(label="Predictions drawn", type="filepath", interactive=False, elem_id="try-drawn")
            prediction = gr.Code(language="json", label="Prediction", elem_id="try-prediction")

            def show(rows: list[dict[str, Any]] | str) -> str:
                return rows if isinstance(rows, str) else json.dumps(rows, indent=2, default=str)

            def on_text(run_name: str, value: str) -> str:
                if not run_name:
                    return "choose a finished run"
                return show(jobs.predict_text(runs_root / run_name, value))

            def on_image(run_name: str, path: str | None) -> tuple[str, str | None]:
                if not run_name or not path:
                    return "choose a finished run and an image", None
                rows, picture = jobs.predict_image(runs_root / run_name, path, scratch / "drawn")
                return show(rows), picture

            text_button.click(on_text, [trained, text], prediction)
            image_button.click(on_image, [trained, image], [prediction, drawn])
            try_tab.select(lambda: gr.update(choices=[r["name"] for r in jobs.list_runs(runs_root)
                                                      if r["state"] == "finished"]), None, trained)
    return app
