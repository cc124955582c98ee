"""The bare training loop harness_overhead.py compares the harness against: the same
framework file's model and training step, the same data and order, no harness around
it (no spec checks, events, Clock, metrics file). Prints one JSON line.

Run inside a framework image (or a local venv) as:  python bare_loop.py SPEC.json
"""
import importlib
import json
import sys
import time

import numpy as np

from contract.models import MODELS
from contract.registry import IMPLEMENTATIONS
from workloads import data


def main(spec_path: str) -> None:
    with open(spec_path, encoding="utf-8") as fh:
        spec = json.load(fh)
    spec.setdefault("threads", {"intra_op": None, "inter_op": None})
    spec.setdefault("options", {})
    impl = importlib.import_module(IMPLEMENTATIONS[(spec["framework"], spec["api"])]).Implementation(spec)
    impl.configure()
    ds = spec["dataset"]
    x, y = data.load_split(ds["path"], ds.get("train_split", "train"), ds.get("train_limit"))
    if impl.data_layout == "NCHW":
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    bs, n = spec["batch_size"], len(x)
    impl.build(MODELS[spec["workload"]])
    warm = min(spec.get("warmup_steps", 3) * bs, n)   # the same warm-up steps the harness takes
    impl.train_epoch(x[:bs], y[:bs], bs)
    impl.train_epoch(x[bs:warm], y[bs:warm], bs)
    train_s = 0.0
    for epoch in range(1, spec["epochs"] + 1):
        order = np.random.default_rng(spec["seed"] + epoch).permutation(n)
        xe, ye = x[order], y[order]
        start = time.perf_counter()
        impl.train_epoch(xe, ye, bs)
        train_s += time.perf_counter() - start
    print(json.dumps({"images_per_s": n * spec["epochs"] / train_s, "train_s": train_s}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
