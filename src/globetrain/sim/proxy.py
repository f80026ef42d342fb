"""The proxy task's models for every simulated device, trained in one batch.

Thousands of devices each running their own inner steps one model at a time would cost
seconds of Python per simulated round. Here the parameters of all devices live stacked
in a few tensors (``[devices, *shape]``), and the inner SGD steps of any set of devices
run as batched matrix products (``torch.bmm``) with the MLP's backward pass written out.
Each device still has its own model: an ``nn.Module`` whose one parameter is a view of its
row of the stacked tensor, handed to that device's own ``SyncLoop`` (which updates it in
place when it rebases onto a new global model).

A device's parameters are one flat vector (the layers are views into it): the sync loop and
the codec then handle one tensor per device and round instead of one per layer. The codec
selects top-k over all tensors of a payload together anyway, so what is sent is nearly the
same (only the codec's choice to send a tiny bias dense is lost); what changes is the
per-tensor Python overhead, which dominated a 1000-device run (six small tensors cost six
encode and decode calls, measured at ~1.4 ms each). Transfer sizes are unaffected: they
come from the real video model's shapes.

The task is ``globetrain.sync.proxy_task.ProxyTask`` (generated Gaussian-mixture classes,
the MLP it builds); inputs are standardised by the training set's standard deviation
(the task's raw inputs have a standard deviation of ~3, which makes SGD on batches of a
few clips unstable). Its shards (IID or by class) give each device its own data.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from torch import nn

from globetrain.errors import ConfigError
from globetrain.sync.proxy_task import ProxyTask, ProxyTaskConfig


class DeviceModel(nn.Module):
    """One device's MLP: its parameters are one flat view of its row of the bank."""

    def __init__(self, flat: torch.Tensor) -> None:
        super().__init__()
        self.weights = nn.ParameterList([nn.Parameter(flat)])


class ProxyBank:
    """Stacked MLPs of ``devices`` devices on one generated task."""

    def __init__(
        self,
        config: ProxyTaskConfig,
        devices: int,
        *,
        partition: Literal["iid", "by-class"] = "iid",
        classes_per_device: int = 3,
        inner_lr: float = 0.1,
        inner_momentum: float = 0.0,
        seed: int = 0,
    ) -> None:
        task = ProxyTask(config)
        linears = _linear_layers(task.build_model())
        self.config = config
        self.devices = devices
        self.inner_lr = float(inner_lr)
        self.inner_momentum = float(inner_momentum)
        scale = float(task.train_x.std())
        # In place: the task is ours alone, and its training set can be gigabytes.
        self.train_x = task.train_x.div_(scale)
        self.train_y = task.train_y
        self.test_x = task.test_x.div_(scale)
        self.test_y = task.test_y
        shards = task.shards(devices, partition=partition, classes_per_worker=classes_per_device, seed=seed)
        sizes = [len(shard) for shard in shards]
        if min(sizes) == 0:
            raise ConfigError(
                f"proxy task: {devices} devices leave some with no training samples; raise "
                f"proxy.train_samples (now {config.train_samples})"
            )
        width = max(sizes)
        self.shard_index = torch.zeros(devices, width, dtype=torch.long)
        for row, shard in enumerate(shards):
            self.shard_index[row, : len(shard)] = shard
        self.shard_size = torch.tensor(sizes, dtype=torch.float64)
        initial = []
        for linear in linears:
            initial += [linear.weight.detach().clone(), linear.bias.detach().clone()]
        self.layer_shapes = [tuple(t.shape) for t in initial]
        flat_initial = torch.cat([t.reshape(-1) for t in initial])
        # What the sync loop and the codec see: one flat vector per device.
        self.shapes = [tuple(flat_initial.shape)]
        self.initial = [flat_initial]
        self.flat = flat_initial.unsqueeze(0).repeat(devices, 1).contiguous()
        self.flat_momentum = torch.zeros_like(self.flat) if self.inner_momentum > 0 else None
        self.generator = torch.Generator().manual_seed(seed * 1_000_003 + 17)
        self._models: dict[int, DeviceModel] = {}
        self._ones: torch.Tensor | None = None
        self.steps_run = 0

    @property
    def parameter_count(self) -> int:
        return sum(math.prod(shape) for shape in self.layer_shapes)

    @property
    def stacked(self) -> list[torch.Tensor]:
        """Every device's layers, ``[devices, *shape]`` each (views of the flat rows)."""
        return self.layers(self.flat)

    def layers(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """The layers' weights and biases as views of flat parameters (``[..., P]``)."""
        views, offset = [], 0
        lead = tuple(flat.shape[:-1])
        for shape in self.layer_shapes:
            size = math.prod(shape)
            views.append(flat[..., offset : offset + size].view(*lead, *shape))
            offset += size
        return views

    def description(self) -> str:
        c = self.config
        return (
            f"MLP {c.features}-{c.hidden}-{c.hidden}-{c.classes} ({self.parameter_count} parameters) on "
            f"ProxyTask(classes={c.classes}, features={c.features}, clusters_per_class={c.clusters_per_class}, "
            f"cluster_spread={c.cluster_spread}, train_samples={c.train_samples}, seed={c.seed}); "
            f"inner SGD lr={self.inner_lr}, momentum={self.inner_momentum}"
        )

    def model(self, device: int) -> DeviceModel:
        """The device's module (parameters alias its stacked row); made once per device."""
        if device not in self._models:
            self._models[device] = DeviceModel(self.flat[device])
        return self._models[device]

    def reset_optimizer(self, device: int) -> None:
        """A restarted device process has no inner-optimizer state."""
        if self.flat_momentum is not None:
            self.flat_momentum[device].zero_()

    # -- training ----------------------------------------------------------------------------

    @torch.no_grad()
    def train(self, devices: np.ndarray, steps: np.ndarray, batch_size: int) -> None:
        """Run ``steps[i]`` inner SGD steps of ``batch_size`` samples on device ``devices[i]``."""
        keep = steps > 0
        devices, steps = np.asarray(devices)[keep], np.asarray(steps)[keep]
        if len(devices) == 0:
            return
        order = np.argsort(-steps, kind="stable")
        devices, steps = devices[order], steps[order]
        index = torch.from_numpy(devices.astype(np.int64))
        work_flat = self.flat.index_select(0, index)
        work = self.layers(work_flat)
        velocity_flat = self.flat_momentum.index_select(0, index) if self.flat_momentum is not None else None
        velocity = self.layers(velocity_flat) if velocity_flat is not None else None
        # Devices are sorted by steps, most first: step k trains the first active[k] of them.
        active = np.searchsorted(-steps, -np.arange(int(steps[0])), side="left")
        for count in active:
            count = int(count)
            rows = index[:count]
            gradients = self._gradients([t[:count] for t in work], rows, batch_size)
            if velocity is None:
                for parameter, gradient in zip(work, gradients):
                    parameter[:count].sub_(gradient, alpha=self.inner_lr)
            else:
                for parameter, buffer, gradient in zip(work, velocity, gradients):
                    buffer[:count].mul_(self.inner_momentum).add_(gradient)
                    parameter[:count].sub_(buffer[:count], alpha=self.inner_lr)
            self.steps_run += count
        self.flat.index_copy_(0, index, work_flat)
        if velocity_flat is not None and self.flat_momentum is not None:
            self.flat_momentum.index_copy_(0, index, velocity_flat)

    def _gradients(self, params: list[torch.Tensor], rows: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
        """Per-device gradients of the mean cross-entropy of one batch each (MLP with ReLU)."""
        count = len(rows)
        draws = torch.rand(count, batch_size, generator=self.generator, dtype=torch.float64)
        positions = (draws * self.shard_size[rows].unsqueeze(1)).long()
        positions += (rows * self.shard_index.shape[1]).unsqueeze(1)
        samples = self.shard_index.view(-1).index_select(0, positions.view(-1))
        inputs = self.train_x.index_select(0, samples).view(count, batch_size, -1)
        labels = self.train_y.index_select(0, samples).view(count, batch_size)
        layers = len(params) // 2
        activations = [inputs]
        pre_activations = []
        hidden = inputs
        for layer in range(layers):
            weight, bias = params[2 * layer], params[2 * layer + 1]
            output = torch.baddbmm(bias.unsqueeze(1), hidden, weight.transpose(1, 2))
            if layer < layers - 1:
                pre_activations.append(output)
                hidden = torch.relu(output)
                activations.append(hidden)
            else:
                hidden = output
        delta = torch.softmax(hidden, dim=2)
        delta.scatter_add_(2, labels.unsqueeze(2), self._minus_ones(count, batch_size))
        delta.div_(batch_size)
        gradients: list[torch.Tensor] = [torch.empty(0)] * len(params)
        for layer in range(layers - 1, -1, -1):
            weight = params[2 * layer]
            gradients[2 * layer] = torch.bmm(delta.transpose(1, 2), activations[layer])
            gradients[2 * layer + 1] = delta.sum(dim=1)
            if layer > 0:
                delta = torch.ops.aten.threshold_backward(torch.bmm(delta, weight), pre_activations[layer - 1], 0)
        return gradients

    def _minus_ones(self, count: int, batch_size: int) -> torch.Tensor:
        if self._ones is None or self._ones.shape[0] < count or self._ones.shape[1] != batch_size:
            self._ones = torch.full((max(count, self.devices), batch_size, 1), -1.0)
        return self._ones[:count]

    # -- evaluation --------------------------------------------------------------------------

    @torch.no_grad()
    def accuracy(self, params: list[torch.Tensor]) -> float:
        """Accuracy (fraction) of a model with these (flat) parameters on the held-out set."""
        (flat,) = params
        params = self.layers(flat)
        hidden = self.test_x
        layers = len(params) // 2
        for layer in range(layers):
            hidden = torch.addmm(params[2 * layer + 1], hidden, params[2 * layer].t())
            if layer < layers - 1:
                hidden = torch.relu(hidden)
        return float((hidden.argmax(dim=1) == self.test_y).float().mean())


def _linear_layers(model: nn.Module) -> list[nn.Linear]:
    """The MLP's linear layers, checking it is Linear (ReLU Linear)* as the batched step assumes."""
    modules = list(model.children()) if isinstance(model, nn.Sequential) else []
    linears = [m for m in modules if isinstance(m, nn.Linear)]
    expected = []
    for position in range(len(linears)):
        expected.append(nn.Linear)
        if position < len(linears) - 1:
            expected.append(nn.ReLU)
    if not linears or [type(m) for m in modules] != expected or any(m.bias is None for m in linears):
        raise ConfigError(
            "the proxy task's model is no longer an MLP of Linear layers with biases and ReLUs between them; "
            "globetrain.sim.proxy's batched step must be updated to match ProxyTask.build_model"
        )
    return linears
