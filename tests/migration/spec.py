"""The parameters of the five documents of the systems adapt replaces (../shared/spec/ in the
project's workspace, not in this repository): their names, defaults and allowed values, parsed
from each document's own layout. ``python tests/migration/spec.py FOLDER`` writes the table that
tests/test_migrate_spec.py reads (spec_parameters.json), so a fresh clone tests the same rows."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

TABLE = Path(__file__).with_name("spec_parameters.json")
FILES = ("text-classification-finetune.md", "question-answering-finetune.md", "finetune-pipeline.md",
         "image-classification-finetune.md", "adapt-algorithms.md")


def _value(text: str) -> str | None:
    text = text.strip().strip("`").strip()
    return None if text in ("", "-") else text


def _enum(text: str) -> list[str]:
    inside = re.search(r"\[(.*?)\]", text)
    if not inside:
        return []
    return [part.strip().strip("'\"`") for part in inside.group(1).split(",") if part.strip()]


def _markdown_tables(text: str) -> dict[str, dict]:
    """Azure ML component docs: | Name | Description | Type | Default | Optional | Enum |."""
    out: dict[str, dict] = {}
    header: list[str] | None = None
    for line in text.splitlines():
        if not line.lstrip().startswith("|"):
            header = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] == "Name":
            header = cells
        elif header and cells and not set(cells[0]) <= {"-", " "} and cells[0]:
            row = dict(zip(header, cells, strict=False))
            out[cells[0]] = {"default": _value(row.get("Default", "")), "enum": _enum(row.get("Enum", ""))}
    return out


def _bullets(text: str) -> dict[str, dict]:
    """The finetune pipeline: ``- _name_ (type, optional, default: X)`` and the lines under it."""
    out: dict[str, dict] = {}
    lines = text.splitlines()
    for i, line in enumerate(lines):
        found = re.match(r"^-\s+_?([a-z][a-z0-9_]*?)_?\s+\(([^)]*)\)", line.strip())
        if not found:
            continue
        name, spec = found.group(1), found.group(2)
        default = re.search(r"default:\s*([^,)]+)", spec)
        body = []
        for following in lines[i + 1:]:
            if following.strip().startswith(("- ", "-  ", "#")):
                break
            body.append(following)
        body_text = " ".join(body)
        out[name] = {"default": _value(default.group(1).strip('"')) if default else None,
                     "enum": _enum(spec.split("allowed_values:", 1)[1]) if "allowed_values" in spec
                     else (_enum(body_text.split("one of", 1)[1]) if "one of" in body_text else [])}
    return out


def _numbered(text: str) -> dict[str, dict]:
    """The image component: ``N. _name_ (type, ...)``, then "The default value is X" and "It could
    be one of [...]" in its paragraph."""
    out: dict[str, dict] = {}
    blocks = re.split(r"\n(?=\d+\. _)", text)
    for block in blocks:
        found = re.match(r"\d+\. _([a-z0-9_]+)_", block)
        if not found:
            continue
        block = block.split("\n# ", 1)[0]
        default = re.search(r'default value is "?([^".\s]+(?:\.\d+)?)"?', block)
        out[found.group(1)] = {"default": _value(default.group(1)) if default else None,
                               "enum": _enum(block.split("one of", 1)[1]) if "one of" in block else []}
    return out


def _heading(lines: list[str], before: int) -> str:
    """The section of a nyuntam table: the nearest short line above it that is no row, list item
    or argument line."""
    for line in reversed(lines[:before]):
        text = line.strip()
        if text and "|" not in text and len(text) < 60 and not text.startswith(("Argument", "-", "*")) \
                and not text.endswith("supports"):
            return text
    return ""


def _nyuntam(text: str) -> dict[str, dict]:
    """nyuntam adapt's document: rows ``name |`` then ``type | default | description |`` (a cell
    may run over several lines), one table per section (a method, the common training
    parameters, DDP, FSDP, a task)."""
    out: dict[str, dict] = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if not (lines[i].strip().startswith("Parameter") and "|" in lines[i]):
            i += 1
            continue
        section = _heading(lines, i)
        i += 2  # the header and its ---|--- line
        while i < len(lines):
            found = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)\s*\|\s*$", lines[i].strip())
            if not found:
                break
            cell, i = lines[i + 1].strip() if i + 1 < len(lines) else "", i + 2
            while not cell.endswith("|") and i < len(lines):
                cell, i = f"{cell} {lines[i].strip()}", i + 1
            cells = [c.strip() for c in cell.split("|")]
            default = cells[1] if len(cells) > 2 else ""
            if len(default) > 30 and " " in default:  # a row whose default cell holds its description
                default = ""
            out.setdefault(section, {})[found.group(1)] = {"default": _value(default.strip("'\"")), "enum": []}
    return out


def parse(folder: Path) -> dict[str, dict]:
    text = {name: (folder / name).read_text(encoding="utf-8") for name in FILES}
    return {
        "text-classification-finetune.md": _markdown_tables(text["text-classification-finetune.md"]),
        "question-answering-finetune.md": _markdown_tables(text["question-answering-finetune.md"]),
        "finetune-pipeline.md": _bullets(text["finetune-pipeline.md"]),
        "image-classification-finetune.md": _numbered(text["image-classification-finetune.md"]),
        "adapt-algorithms.md": _nyuntam(text["adapt-algorithms.md"]),
    }


if __name__ == "__main__":
    TABLE.write_text(json.dumps(parse(Path(sys.argv[1])), indent=1, sort_keys=True) + "\n", encoding="utf-8")
