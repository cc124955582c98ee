"""PyTorch, eager training loop (optionally torch.compile)."""

import torch
import torch.nn.functional as F
from torch import nn

from contract.models import ADAM, EMBEDDING_INIT_RANGE, LSTM_FORGET_BIAS, RecurrentSpec

from .harness import Implementation as Base
from .harness import batches


def _conv_net(m):
    layers = []
    for block, convs in m.block_layers():
        for c_in, filters, kernel in convs:
            layers += [nn.Conv2d(c_in, filters, kernel, padding=block.padding), nn.ReLU()]
        layers.append(nn.MaxPool2d(block.pool))
        if block.dropout:
            layers.append(nn.Dropout(block.dropout))
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(m.flatten_size(), m.dense_units),
                         nn.ReLU(), nn.Dropout(m.dropout), nn.Linear(m.dense_units, m.classes))


class _Recurrent(nn.Module):
    """Embedding -> LSTM, its last hidden state -> Dense."""

    def __init__(self, m):
        super().__init__()
        self.embedding = nn.Embedding(m.vocab_size, m.embedding_dim)
        self.lstm = nn.LSTM(m.embedding_dim, m.hidden_units, batch_first=True)
        self.dense = nn.Linear(m.hidden_units, m.classes)

    def forward(self, tokens):
        _, (h_n, _) = self.lstm(self.embedding(tokens))
        return self.dense(h_n[-1])


@torch.no_grad()
def _keras_init(model):
    """Keras' default initialisation (see models.py), layer by layer."""
    for layer in model.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
        elif isinstance(layer, nn.Embedding):
            nn.init.uniform_(layer.weight, -EMBEDDING_INIT_RANGE, EMBEDDING_INIT_RANGE)
        elif isinstance(layer, nn.LSTM):
            h = layer.hidden_size
            # weight_ih is Keras' (E, 4H) kernel transposed: same fans, same Glorot range
            nn.init.xavier_uniform_(layer.weight_ih_l0)
            nn.init.orthogonal_(layer.weight_hh_l0)
            # gates i, f, g, o as in Keras. cuDNN's second bias stays zero and untrained,
            # so bias_ih alone is Keras' bias and the trainable count matches the spec
            layer.bias_ih_l0.zero_()[h:2 * h] = LSTM_FORGET_BIAS
            layer.bias_hh_l0.zero_().requires_grad_(False)


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
        options = {"intra_op_threads": torch.get_num_threads(),
                   "inter_op_threads": torch.get_num_interop_threads(),
                   "compile": bool(self.spec["options"].get("compile", False)),
                   "cudnn_benchmark": torch.backends.cudnn.benchmark}
        if isinstance(self.model_spec, RecurrentSpec):
            # nn.LSTM is one fused op: cuDNN's kernel on GPU, oneDNN's on CPU (float32)
            onednn = torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled
            options["lstm_kernel"] = "cudnn" if self.gpu else "onednn" if onednn else "aten"
            if options["compile"]:  # dynamo does not trace nn.LSTM (allow_rnn off): it
                # skips the whole forward. Turned on, it unrolls the 150 steps: ~5 min to
                # compile and half the fused op's speed on CPU, so it stays off.
                options["compile_effect"] = "none: dynamo runs the LSTM model eagerly"
        return options

    def build(self, m):
        model = _Recurrent(m) if isinstance(m, RecurrentSpec) else _conv_net(m)
        self.model = model.to(self.device)
        _keras_init(self.model)
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(
            trainable, lr=self.spec["learning_rate"],
            betas=(ADAM["beta_1"], ADAM["beta_2"]), eps=ADAM["epsilon"])
        self.forward = torch.compile(self.model) if self.spec["options"].get("compile") else self.model
        return sum(p.numel() for p in trainable)

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
