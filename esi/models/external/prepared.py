"""An external encoder that takes ECGs in the toolkit's convention and makes its own declared input.

    encoder = PreparedEncoder(module, spec, fs=500)      # module, spec from load_external(kind, path)
    pooled = encoder.encode(x)                           # x (B, 12, T) mV, standard lead order, at 500 Hz
    pooled = encoder.encode(x, fs=100)                   # any other rate: resampled as the encoder declares

Every protocol of `esi.evaluate` reads records as (B, 12, T) millivolts in the standard lead order: frozen
features, fine-tuning (where gradients reach the weights, never the input) and identification. Wrapping the
released module here applies `prepare_input` (rate, filter, window, normalisation, lead order) inside `forward`,
so no protocol can feed it anything else. `random_init` redraws its weights for the random-init twin.
"""

from __future__ import annotations

import torch
from torch import nn

from esi.models.external.inputs import InputSpec, prepare_input
from esi.models.registry import EncoderOutput

# Parameters no layer's reset_parameters() redraws (position embeddings, class/SEP tokens, weight-norm
# factors): drawn N(0, FREE_PARAMETER_STD), the ViT convention of MERL's and ST-MEM's own code.
FREE_PARAMETER_STD = 0.02


def as_output(out) -> EncoderOutput:
    """A module's output as `EncoderOutput`: itself, or a (B, dim) tensor as pooled (tokens = it as one token)."""
    if isinstance(out, EncoderOutput):
        return out
    if torch.is_tensor(out) and out.ndim == 2:
        return EncoderOutput(tokens=out[:, None], pooled=out)
    if isinstance(out, tuple) and len(out) == 2:  # a plain (tokens, pooled) pair
        return EncoderOutput(*out)
    raise TypeError(f"an external encoder must return EncoderOutput(tokens, pooled) or a (batch, dim) tensor, got "
                    f"{type(out).__name__}")


def encode_crops(forward, x: torch.Tensor) -> EncoderOutput:
    """`forward` of (B, crops, leads, T), as ST-MEM's crops and ECG-FM's segments are encoded: each crop on its own,
    tokens concatenated per record, pooled features averaged over the crops."""
    batch, crops = x.shape[:2]
    out = forward(x.flatten(0, 1))
    return EncoderOutput(tokens=out.tokens.reshape(batch, -1, out.tokens.shape[-1]),
                         pooled=out.pooled.reshape(batch, crops, -1).mean(dim=1))


class PreparedEncoder(nn.Module):
    """`net` fed through its `InputSpec`: x (B, 12, T) mV, standard leads, at `fs` -> `EncoderOutput`.

    net: the released encoder (takes the prepared input; returns EncoderOutput or (B, dim) features).
    spec: the input it was trained on.
    fs: the rate of the records it is given when `forward` is called without one.
    """

    def __init__(self, net: nn.Module, spec: InputSpec, fs: float):
        super().__init__()
        self.net = net
        self.spec = spec
        self.fs = float(fs)
        self.dim = int(net.dim) if hasattr(net, "dim") else self._probe_dim()

    def _probe_dim(self) -> int:
        """The feature width of a module that does not declare `dim`: one zero record through it."""
        zeros = torch.zeros(1, 12, int(round(self.fs * (self.spec.window_s or 10.0))))
        with torch.no_grad():
            return int(self.forward(zeros).pooled.shape[-1])

    def prepare(self, x: torch.Tensor, fs: float | None = None) -> torch.Tensor:
        """The net's input made from `x` (B, 12, T) mV at `fs` (default self.fs), on x's device."""
        prepared = prepare_input(x.detach().float().cpu().numpy(), self.fs if fs is None else fs, self.spec)
        return torch.from_numpy(prepared).to(x.device)

    def forward(self, x: torch.Tensor, fs: float | None = None) -> EncoderOutput:
        return as_output(self.net(self.prepare(x, fs)))

    def encode(self, x: torch.Tensor, fs: float | None = None) -> torch.Tensor:
        """Pooled features (B, dim) of `x` (B, 12, T) mV at `fs`."""
        return self.forward(x, fs).pooled


def random_init(module: nn.Module, seed: int) -> nn.Module:
    """Redraw every weight of `module` in place, seeded: each layer's own `reset_parameters()` (BatchNorm also
    resets its running statistics), every parameter no layer resets N(0, FREE_PARAMETER_STD).

    Args:
        module: the architecture (its current weights are discarded).
        seed: seed of the new weights.

    Returns:
        `module`.
    """
    torch.manual_seed(seed)
    reset = set()
    for sub in module.modules():
        if hasattr(sub, "reset_parameters") and not nn.utils.parametrize.is_parametrized(sub):
            sub.reset_parameters()
            reset.update(id(p) for p in sub.parameters(recurse=False))
    with torch.no_grad():
        for parameter in module.parameters():
            if id(parameter) not in reset:
                parameter.normal_(0.0, FREE_PARAMETER_STD)
    return module
