"""A framework file for tests: numpy only, it records every batch it is called with (and
each device synchronisation) so a test can compare what the warm-up saw with the timed
region. Registered in place of a real framework by monkeypatching the registry."""
import numpy as np

from workloads.harness import Implementation as Base
from workloads.harness import batches

# ("train" | "eval", batch size) per batch, ("train_call" | "eval_call", its batch sizes) per
# call (a call's shape: Keras traces a length that is a multiple of the batch apart from one
# that is not) and ("sync",), in call order
CALLS: list[tuple] = []


class Implementation(Base):
    framework, api = "pytorch", "eager"

    def version(self):
        return "0-recording"

    def configure(self):
        return {"recording": True}

    def build(self, model):
        self.classes = model.classes
        return model.parameters

    device_memory_kind = "recorded: a fixed figure"

    def peak_device_memory_mb(self):
        return 123.0

    def train_epoch(self, x, y, batch_size):
        if self.spec["options"].get("raise"):  # how each framework words a device OOM
            raise RuntimeError(self.spec["options"]["raise"])
        sizes = []
        for s in self.train_batches(len(x), batch_size):
            CALLS.append(("train", len(x[s])))
            sizes.append(len(x[s]))
        CALLS.append(("train_call", tuple(sorted(set(sizes)))))
        return 1.0, 0.5

    def evaluate(self, x, y, batch_size):
        sizes = []
        for s in batches(len(x), batch_size):
            CALLS.append(("eval", len(x[s])))
            sizes.append(len(x[s]))
        CALLS.append(("eval_call", tuple(sorted(set(sizes)))))
        return 1.0, 0.5

    def logits(self, x):
        return np.zeros((len(x), self.classes))

    def synchronize(self):
        CALLS.append(("sync",))
