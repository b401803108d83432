"""Keep a CPU model's linear weights in fp16 and decode with them: ~2x fewer bytes per token.

Decoding one token reads every weight once, so on CPU it is bound by memory bandwidth, not by
arithmetic. Measured on SmolLM2-135M (1 thread, this 2-core machine): 61 ms per token with fp32
weights, 29 ms with fp16 weights; the greedy output was identical and the mean KL divergence of
the next-token distributions 1e-5 (its weights come from a Q4_1 GGUF, which fp16 holds almost
exactly). A full fp16 model would be 4x *slower* at prefill (CPU fp16 GEMM is slow), so only
the weights are halved: steps of a few tokens multiply in fp16, longer inputs (the prompt)
up-cast the weights to fp32 for the product. Activations, norms and the KV cache stay fp32.

Not for every model: an activation above 65504 entering a linear layer would overflow in fp16.
The ``local:smollm2`` model uses it by default; ``hf:`` models opt in (see local_loading).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: steps feeding at most this many tokens multiply in fp16 (measured crossover: 4-8 rows)
HALF_MAX_ROWS = 4


class HalfWeightLinear(nn.Module):
    """A linear layer holding fp16 weights; see the module docstring for when it multiplies how."""

    weight_half: torch.Tensor  # a registered buffer (Module.__getattr__ would type it loosely)

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        self.register_buffer("weight_half", linear.weight.detach().to(torch.float16))
        self.bias = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // x.shape[-1]
        if rows <= HALF_MAX_ROWS:
            out = F.linear(x.to(torch.float16), self.weight_half).to(x.dtype)
        else:
            out = F.linear(x, self.weight_half.to(x.dtype))
        return out if self.bias is None else out + self.bias


def halve_linear_weights(model: nn.Module) -> int:
    """Replace every ``nn.Linear`` of ``model`` in place; returns how many were replaced.

    A tied output layer stops being tied (the embedding keeps its fp32 table), which is fine
    for inference; the model must not be trained or saved afterwards. The tensors left (the
    embedding, norms) are copied so nothing references the checkpoint's memory map any more:
    otherwise the whole fp32 file stays mapped and resident next to the fp16 copies
    (SmolLM2 after one call: 1.4 GB RSS instead of 1.0 GB).
    """
    replaced = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.Linear):
                setattr(module, name, HalfWeightLinear(child))
                replaced += 1
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.dtype != torch.float16:
                tensor.data = tensor.data.clone()
    return replaced
