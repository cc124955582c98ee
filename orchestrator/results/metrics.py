"""The metrics a reader compares: one row per metric, and everything that shows one loops
over this table (summary.json, statistics over repeats, groups and `dlbench compare`, the
report's columns and best marks, summary.csv).

Adding a metric: the workload writes it (workloads/harness.py), the metrics schema admits
it (contract/schemas/metrics.schema.json), and one row here says where it sits and which
views show it. Nothing else needs an edit.

Pure data and lookups: never reads a file, computes a statistic or renders anything.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    key: str                    # its summary.json key, summary.csv column and statistics name
    path: tuple[str, ...]       # where it sits in metrics.json
    label: str                  # as a column heading, without its unit
    unit: str = ""
    higher_is_better: bool | None = None  # None: a description (a count), not a figure of merit
    digits: int = 2             # decimals shown for a float (integers show all their digits)
    statistics_digits: int | None = None  # decimals in the statistics table, when they differ
    fraction: bool = False      # a share between 0 and 1: `dlbench compare` keeps its digits
    headline: bool = False      # listed first wherever metrics are compared (statistics, compare)
    # Which views show it
    summary: bool = True        # a key of each successful run's entry in summary.json
    column: bool = False        # a column of the report's summary table and a leading summary.csv column
    best: bool = False          # the report marks the best value of its column
    statistics: bool = False    # described over repeats, warned about, compared framework vs framework
    compare: bool = False       # a key metric of groups and `dlbench compare`

    def __post_init__(self):
        if self.higher_is_better is None and (self.best or self.statistics or self.compare):
            raise ValueError(f"metric {self.key}: best, statistics and compare need higher_is_better")
        if self.best and not self.column:
            raise ValueError(f"metric {self.key}: a best mark needs a column to mark")
        if self.column and not self.summary:
            raise ValueError(f"metric {self.key}: a summary.csv column is read from summary.json")

    @property
    def heading(self) -> str:
        """'Throughput (img/s)': a column heading."""
        return f"{self.label} ({self.unit})" if self.unit else self.label

    @property
    def phrase(self) -> str:
        """'throughput (img/s)': the heading inside a sentence or a table row."""
        text = self.heading
        return text if text[1:2].isupper() else text[:1].lower() + text[1:]  # GPU stays GPU

    @property
    def digits_over_repeats(self) -> int:
        return self.digits if self.statistics_digits is None else self.statistics_digits

    def value(self, metrics: dict | None):
        """Its value in a metrics.json document; None where absent."""
        value = metrics
        for key in self.path:
            if not isinstance(value, dict):
                return None
            value = value.get(key)
        return value


# Rows in the order of the report's summary columns and of summary.csv.
METRICS: tuple[Metric, ...] = (
    Metric("parameters", ("model", "parameters"), "Parameters", column=True),
    Metric("train_total_s", ("timing", "train_total_s"), "Train time", "s", higher_is_better=False,
           column=True, best=True, statistics=True, compare=True),
    Metric("images_per_s", ("timing", "images_per_s"), "Throughput", "img/s", higher_is_better=True,
           digits=0, headline=True, column=True, best=True, statistics=True, compare=True),
    # the median of timed windows of K steps inside the epochs (workloads/harness.py StepWindows):
    # no epoch start-up, no tail batch, no evaluation in it
    Metric("steady_images_per_s", ("steady_state", "images_per_s_median"), "Steady-state throughput",
           "img/s", higher_is_better=True, digits=0, column=True, best=True, statistics=True,
           compare=True),
    Metric("steady_window_cv", ("steady_state", "images_per_s_cv"), "Window CV", digits=3),
    Metric("first_step_s", ("timing", "first_step_s"), "First step", "s", higher_is_better=False,
           digits=3, column=True),
    # sub-second evaluations: the spread over repeats needs a third decimal
    Metric("test_s", ("timing", "test_s"), "Test time", "s", higher_is_better=False, statistics_digits=3,
           column=True, best=True, statistics=True, compare=True),
    Metric("test_accuracy", ("test", "accuracy"), "Test accuracy", higher_is_better=True, digits=4,
           fraction=True, column=True, best=True, statistics=True, compare=True),
    # the lines on this workload's path (workloads/loc.py: one rule for every framework)
    Metric("lines_of_code", ("lines_of_code",), "Lines of code", higher_is_better=False,
           column=True, best=True),
    Metric("lines_of_code_file", ("lines_of_code_file",), "Lines of code, whole file"),
    Metric("startup_s", ("timing", "startup_s"), "Process start → harness", "s", higher_is_better=False,
           digits=3),
)


# The views, read from METRICS when called (so a test may patch the table).

def metric_named(key: str) -> Metric:
    for metric in METRICS:
        if metric.key == key:
            return metric
    raise KeyError(f"no metric {key!r} in orchestrator.results.metrics.METRICS")


def summary_metrics() -> list[Metric]:
    return [m for m in METRICS if m.summary]


def column_metrics() -> list[Metric]:
    return [m for m in METRICS if m.column]


def best_metrics() -> list[Metric]:
    return [m for m in METRICS if m.best]


def _headline_first(chosen: list[Metric]) -> list[Metric]:
    return [m for m in chosen if m.headline] + [m for m in chosen if not m.headline]


def statistics_metrics() -> list[Metric]:
    return _headline_first([m for m in METRICS if m.statistics])


def compared_metrics() -> list[Metric]:
    return _headline_first([m for m in METRICS if m.compare])
