"""Where the JSON Schemas of the two documents live (loaded by each side's validator)."""
from __future__ import annotations

import json
import os

METRICS_SCHEMA_VERSION = 2  # metrics.json: 2 added `parallel` and hyperparameters.dropout
SCHEMA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "schemas")


def schema_path(name: str) -> str:
    """`spec` or `metrics` -> the path of its schema file."""
    return os.path.join(SCHEMA_DIR, f"{name}.schema.json")


def load_schema(name: str) -> dict:
    with open(schema_path(name), encoding="utf-8") as fh:
        return json.load(fh)
