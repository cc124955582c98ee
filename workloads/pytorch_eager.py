"""PyTorch, eager training loop (optionally torch.compile)."""
import torch
import torch.nn.functional as F
from torch import nn

from .harness import Implementation as Base, batches
from .models import ADAM


class Implementation(Base):
    framework, api, data_layout = "pytorch", "eager", "NCHW"

    def version(self):
        return torch.__version__

    def configure(self):
        torch.manual_seed(self.spec["seed"])
        threads = self.spec["threads"]
        if threads["intra_op"]:
            torch.set_num_threads(threads["intra_op"])
        if threads["inter_op"]:
            torch.set_num_interop_threads(threads["inter_op"])
        if self.gpu and not torch.cuda.is_available():
            raise RuntimeError("device gpu requested but torch.cuda.is_available() is False")
        self.device = torch.device("cuda" if self.gpu else "cpu")
        torch.backends.cudnn.benchmark = self.gpu
        return {"intra_op_threads": torch.get_num_threads(),
                "inter_op_threads": torch.get_num_interop_threads(),
                "compile": bool(self.spec["options"].get("compile", False)),
                "cudnn_benchmark": torch.backends.cudnn.benchmark}

    def build(self, m):
        (c1, k1), (c2, k2) = m.conv_layers
        h, w, channels = m.input_shape
        self.model = nn.Sequential(
            nn.Conv2d(channels, c1, k1), nn.ReLU(), nn.MaxPool2d(m.pool),
            nn.Conv2d(c1, c2, k2), nn.ReLU(), nn.MaxPool2d(m.pool),
            nn.Flatten(), nn.Linear(m.flatten_size(), m.dense_units), nn.ReLU(),
            nn.Dropout(m.dropout), nn.Linear(m.dense_units, m.classes)).to(self.device)
        for layer in self.model:  # Keras' default init (Glorot uniform, zero bias) everywhere
            if isinstance(layer, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)
        self.optimizer = torch.optim.Adam(
            self.model.parameters(), lr=self.spec["learning_rate"],
            betas=(ADAM["beta_1"], ADAM["beta_2"]), eps=ADAM["epsilon"])
        self.forward = torch.compile(self.model) if self.spec["options"].get("compile") else self.model
        return sum(p.numel() for p in self.model.parameters())

    def _tensors(self, x, y, s):
        return (torch.from_numpy(x[s]).to(self.device, non_blocking=True),
                torch.from_numpy(y[s]).to(self.device, non_blocking=True))

    def train_epoch(self, x, y, batch_size):
        self.model.train()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        for s in batches(len(x), batch_size):
            xb, yb = self._tensors(x, y, s)
            self.optimizer.zero_grad(set_to_none=True)
            logits = self.forward(xb)
            loss = F.cross_entropy(logits, yb)
            loss.backward()
            self.optimizer.step()
            loss_sum += loss.detach() * len(yb)
            correct += (logits.argmax(1) == yb).sum()
        return loss_sum.item() / len(x), correct.item() / len(x)  # .item() synchronises

    @torch.no_grad()
    def evaluate(self, x, y, batch_size):
        self.model.eval()
        loss_sum, correct = 0.0, 0
        for s in batches(len(x), batch_size):
            xb, yb = self._tensors(x, y, s)
            logits = self.forward(xb)
            loss_sum += F.cross_entropy(logits, yb, reduction="sum").item()
            correct += (logits.argmax(1) == yb).sum().item()
        return loss_sum / len(x), correct / len(x)

    @torch.no_grad()
    def logits(self, x):
        self.model.eval()
        return self.forward(torch.from_numpy(x).to(self.device)).cpu().numpy()

    def synchronize(self):
        if self.gpu:
            torch.cuda.synchronize()

    def device_name(self):
        return torch.cuda.get_device_name() if self.gpu else super().device_name()

    def peak_device_memory_mb(self):
        return torch.cuda.max_memory_allocated() / 2**20 if self.gpu else None

    def is_out_of_memory(self, exc):
        return isinstance(exc, torch.cuda.OutOfMemoryError) or super().is_out_of_memory(exc)
