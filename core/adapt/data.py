"""Reading tabular data files (jsonl, json, csv, tsv, parquet, MLTable folders) through
``datasets``, with errors that name the file, the row and the column."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from adapt.errors import DataError

if TYPE_CHECKING:
    import datasets

FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".tsv": "csv", ".parquet": "parquet"}
MLTABLE_READERS = {"read_json_lines": "json", "read_delimited": "csv", "read_parquet": "parquet"}


def _mltable_files(folder: Path) -> tuple[str, list[str], dict[str, Any]]:
    spec_path = folder / "MLTable"
    try:
        spec = yaml.safe_load(spec_path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise DataError(f"{spec_path}: not valid YAML: {exc}") from None
    builder, options = None, {}
    for step in spec.get("transformations") or []:
        name = next(iter(step)) if isinstance(step, dict) else step
        if name in MLTABLE_READERS:
            builder = MLTABLE_READERS[name]
            args = step[name] if isinstance(step, dict) and isinstance(step[name], dict) else {}
            if builder == "csv" and args.get("delimiter"):
                options["sep"] = args["delimiter"]
    files: list[str] = []
    for entry in spec.get("paths") or []:
        if "file" in entry:
            files.append(str((folder / entry["file"]).resolve()))
        elif "folder" in entry:
            files.extend(str(p) for p in sorted((folder / entry["folder"]).iterdir()) if p.is_file())
        elif "pattern" in entry:
            files.extend(str(p) for p in sorted(folder.glob(entry["pattern"])))
    if not files:
        raise DataError(f"{spec_path}: its `paths` name no data file")
    if builder is None:
        suffix = Path(files[0]).suffix.lower()
        if suffix not in FORMATS:
            raise DataError(f"{spec_path}: no read_json_lines / read_delimited / read_parquet "
                            f"transformation and no known file extension on {files[0]}")
        builder = FORMATS[suffix]
        if suffix == ".tsv":
            options["sep"] = "\t"
    return builder, files, options


def _find_bad_json_line(path: Path) -> str:
    with path.open(encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                try:
                    json.loads(line)
                except json.JSONDecodeError as exc:
                    return f"line {number} is not valid JSON ({exc.msg})"
    return "it could not be parsed as JSON lines or a JSON list of records"


def read_table(path: str | Path, split: str = "data") -> datasets.Dataset:
    """Read one data file or MLTable folder into a ``datasets.Dataset``."""
    import datasets

    path = Path(path)
    if not path.exists():
        raise DataError(f"{split} data {path} does not exist")
    if path.is_dir():
        if not (path / "MLTable").is_file():
            raise DataError(f"{split} data {path} is a folder without an MLTable file; give a "
                            f"data file ({', '.join(FORMATS)}) or an MLTable folder")
        builder, files, options = _mltable_files(path)
    else:
        suffix = path.suffix.lower()
        if suffix not in FORMATS:
            raise DataError(f"{split} data {path}: unsupported file type {suffix or '(none)'}; "
                            f"use one of {', '.join(FORMATS)} or an MLTable folder")
        if path.stat().st_size == 0:
            raise DataError(f"{split} data {path} is empty")
        builder, files = FORMATS[suffix], [str(path)]
        options = {"sep": "\t"} if suffix == ".tsv" else {}
    datasets.disable_progress_bars()
    verbosity = datasets.logging.get_verbosity()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)  # its "Failed to load JSON": adapt says what failed
    try:
        table = datasets.load_dataset(builder, data_files=files, split="train", **options)
    except Exception as exc:  # datasets raises many kinds; all mean "cannot read this file"
        detail = _find_bad_json_line(Path(files[0])) if builder == "json" else str(exc).splitlines()[0]
        raise DataError(f"{split} data {path} could not be read: {detail}") from None
    finally:
        datasets.logging.set_verbosity(verbosity)
    if len(table) == 0:
        raise DataError(f"{split} data {path} holds no rows")
    return table


def require_columns(table: datasets.Dataset, columns: Iterable[str | None], path: str | Path,
                    split: str = "data") -> None:
    """Fail with the missing column's name, the parameter that names it, and the columns found."""
    missing = [c for c in columns if c and c not in table.column_names]
    if missing:
        raise DataError(f"{split} data {path}: missing column(s) {', '.join(missing)} "
                        f"(found: {', '.join(table.column_names)}); name yours in task_params")


def split_off(rows: Any, fraction: float, seed: int) -> tuple[Any, Any]:
    """Carve a validation split off the training rows (a ``datasets.Dataset`` or a list) with
    datasets' seeded shuffle; the same rows go either way for both kinds."""
    import datasets

    if isinstance(rows, datasets.Dataset):
        parts = rows.train_test_split(test_size=fraction, seed=seed)
        return parts["train"], parts["test"]
    parts = datasets.Dataset.from_dict({"i": list(range(len(rows)))}).train_test_split(test_size=fraction, seed=seed)
    return [rows[i] for i in parts["train"]["i"]], [rows[i] for i in parts["test"]["i"]]
