"""PyTorch, eager training loop (optionally torch.compile); data-parallel: DistributedDataParallel
in workers started by torchrun (gloo on CPU, NCCL on GPU)."""
import datetime

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from contract.models import ADAM, EMBEDDING_INIT_RANGE, LSTM_FORGET_BIAS, RecurrentSpec

from .harness import Implementation as Base
from .harness import Unsupported, batches

AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}  # mixed policies; fp32/tf32: none


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


# A rank that lost its peers raises after this (the launcher stops it long before)
COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=10)


class Implementation(Base):
    framework, api, data_layout = "pytorch", "eager", "NCHW"
    optimizers = ("adam", "sgd")

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
        if self.gpu and self.world.parallel:  # one GPU per worker, in local rank order
            self.device = torch.device("cuda", self.world.local_rank)
            torch.cuda.set_device(self.device)
        torch.backends.cudnn.benchmark = self.gpu
        self._apply_precision()
        options = {"intra_op_threads": torch.get_num_threads(),
                   "inter_op_threads": torch.get_num_interop_threads(),
                   "compile": bool(self.spec["options"].get("compile", False)),
                   "cudnn_benchmark": torch.backends.cudnn.benchmark}
        if self.world.parallel:  # rendezvous from torchrun's (or srun's) environment
            backend = "nccl" if self.gpu else "gloo"
            dist.init_process_group(backend, init_method=f"tcp://{self.world.coordinator}",
                                    rank=self.world.rank, world_size=self.world.size,
                                    timeout=COLLECTIVE_TIMEOUT)
            options["parallel"] = {"mechanism": "DistributedDataParallel", "backend": backend,
                                   "bucket_cap_mb": 25, "gradient_as_bucket_view": True}
        if isinstance(self.model_spec, RecurrentSpec):
            # nn.LSTM is one fused op: cuDNN's kernel on GPU, oneDNN's on CPU (float32)
            onednn = torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled
            options["lstm_kernel"] = "cudnn" if self.gpu else "onednn" if onednn else "aten"
            if options["compile"]:  # dynamo does not trace nn.LSTM (allow_rnn off): it
                # skips the whole forward. Turned on, it unrolls the 150 steps: ~5 min to
                # compile and half the fused op's speed on CPU, so it stays off.
                options["compile_effect"] = "none: dynamo runs the LSTM model eagerly"
        return options

    def _apply_precision(self):
        # the legacy TF32 switches only: once the new fp32_precision API has set a flag,
        # torch 2.13 raises on reading these
        tf32 = self.precision == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        torch.set_float32_matmul_precision("high" if tf32 else "highest")
        self.amp_dtype = AUTOCAST.get(self.precision)
        if self.gpu and self.amp_dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
            raise Unsupported(f"torch {torch.__version__} has no bfloat16 on {torch.cuda.get_device_name()}")
        if self.amp_dtype and not self.gpu and isinstance(self.model_spec, RecurrentSpec) and \
                not torch.ops.mkldnn._is_mkldnn_bf16_supported():  # the conv net runs (emulated)
            raise Unsupported("oneDNN has no bfloat16 LSTM primitive on this CPU (no AVX512 / AMX)")
        # dynamic loss scaling for float16 only; disabled, scale/step/update are pass-throughs
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype or torch.bfloat16,
                              enabled=self.amp_dtype is not None)

    def precision_settings(self):
        return {"matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
                "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
                "float32_matmul_precision": torch.get_float32_matmul_precision(),
                "autocast_dtype": str(self.amp_dtype).removeprefix("torch.") if self.amp_dtype else None,
                "grad_scaler_enabled": self.scaler.is_enabled(),
                "parameter_dtype": str(next(self.model.parameters()).dtype).removeprefix("torch."),
                # false: bfloat16 convolutions and matmuls run emulated (slower than float32)
                "native_bf16": torch.cuda.is_bf16_supported(including_emulation=False) if self.gpu
                else torch.ops.mkldnn._is_mkldnn_bf16_supported()}

    def gpu_libraries(self):
        return {"cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version()}

    device_memory_kind = ("allocator peak: torch.cuda.max_memory_allocated (excludes the caching "
                          "allocator's reserve and the CUDA context)")

    def build(self, m):
        model = _Recurrent(m) if isinstance(m, RecurrentSpec) else _conv_net(m)
        self.model = model.to(self.device)
        _keras_init(self.model)
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        if self.spec["optimizer"] == "sgd":
            self.optimizer = torch.optim.SGD(trainable, lr=self.spec["learning_rate"])
        else:
            self.optimizer = torch.optim.Adam(
                trainable, lr=self.spec["learning_rate"],
                betas=(ADAM["beta_1"], ADAM["beta_2"]), eps=ADAM["epsilon"])
        compiled = self.spec["options"].get("compile")
        self.forward = self.eval_forward = torch.compile(self.model) if compiled else self.model
        if self.world.parallel:
            # DDP broadcasts rank 0's weights, then averages gradients across ranks in
            # buckets during backward; evaluation uses the bare model (no collective)
            self.ddp = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.gpu else None,
                bucket_cap_mb=25, gradient_as_bucket_view=True)
            self.forward = torch.compile(self.ddp) if compiled else self.ddp
        return sum(p.numel() for p in trainable)

    def _tensors(self, x, y, s):
        return (torch.from_numpy(x[s]).to(self.device, non_blocking=True),
                torch.from_numpy(y[s]).to(self.device, non_blocking=True))

    def train_epoch(self, x, y, batch_size):
        self.model.train()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        for s in self.train_batches(len(x), batch_size):
            xb, yb = self._tensors(x, y, s)
            self.optimizer.zero_grad(set_to_none=True)
            with self._autocast():
                logits = self.forward(xb)
                loss = F.cross_entropy(logits.float(), yb)  # softmax and loss in float32
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            loss_sum += loss.detach() * len(yb)
            correct += (logits.argmax(1) == yb).sum()
        return loss_sum.item() / len(x), correct.item() / len(x)  # .item() synchronises

    @torch.no_grad()
    def evaluate(self, x, y, batch_size):
        self.model.eval()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        for s in batches(len(x), batch_size):
            xb, yb = self._tensors(x, y, s)
            with self._autocast():
                logits = self.eval_forward(xb).float()
            loss_sum += F.cross_entropy(logits, yb, reduction="sum")
            correct += (logits.argmax(1) == yb).sum()
        return loss_sum.item() / len(x), correct.item() / len(x)  # one transfer (and wait)

    @torch.no_grad()
    def logits(self, x):
        self.model.eval()
        with self._autocast():
            return self.eval_forward(torch.from_numpy(x).to(self.device)).float().cpu().numpy()

    def synchronize(self):
        if self.gpu:
            torch.cuda.synchronize()

    def barrier(self):
        if self.world.parallel:
            dist.barrier()

    def communication(self):
        # DDP's reducer times its all-reduces on sampled iterations (the first ten, then
        # every 100th): their mean times the timed steps estimates the total
        data = self.ddp._get_ddp_logging_data()
        mean_ns = data.get("avg_backward_comm_time")
        return {"time_s": mean_ns * self.step_windows.steps_total / 1e9 if mean_ns else None,
                "source": "DDP logging data: avg_backward_comm_time (sampled iterations) x "
                          "timed steps; overlaps backward compute"}

    def device_name(self):
        return torch.cuda.get_device_name() if self.gpu else super().device_name()

    def peak_device_memory_mb(self):
        return torch.cuda.max_memory_allocated() / 2**20 if self.gpu else None

    def is_out_of_memory(self, exc):
        return isinstance(exc, torch.cuda.OutOfMemoryError) or super().is_out_of_memory(exc)
