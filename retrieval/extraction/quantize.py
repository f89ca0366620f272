"""Int8 inference on CPUs: post-training static quantisation of a backbone's trunk.

Where bf16 does not pay on a CPU (`auto` measures it: on one machine without AMX oneDNN's
AVX-512 BF16 convolutions ran slower than fp32), int8 can: AVX-512 VNNI multiplies four int8
pairs per lane per instruction, and a
quantised ResNet50 extracts 3.8x faster than our fp32 path at 1024 px on two cores (5.2x the
one-image fp32 reference; bench/suite.py --int8). Unlike the other speed-ups this one changes
the descriptors beyond round-off, so it is opt-in (`extract.precision=int8`) and its cost is
measured: the cosine of int8 to fp32 descriptors and the mAP it moves (README, performance).

Only the trunk is quantised; pooling, whitening and normalisation stay in fp32. Activation
ranges come from a calibration pass over a few of the images being described, so every
extraction calibrates on its own image list (deterministic: the same list gives the same
descriptors). Built on torch's FX graph-mode quantisation, run by oneDNN.
"""

from __future__ import annotations

import copy
import warnings
from collections import OrderedDict
from collections.abc import Iterable

import torch
from torch import fx, nn

# oneDNN rather than fbgemm: on EfficientNet-Lite0 fbgemm's int8 depthwise convolutions ran 4x
# slower than fp32, oneDNN's 1.9x faster; on ResNet50 both are equal. oneDNN uses 8-bit activations.
ENGINE = "onednn"
ACTIVATION_LEVELS = 255
# Per-shape copies of a quantised trunk kept at most (`PerShapeCopies`): a ResNet50's ~25 MB each.
SHAPE_COPIES = 12

# Calibration images per extraction: ImageNet Lite0 on 100 UKBench photos, cosine to fp32
# mean / min 0.9856 / 0.941 calibrating on 1 of them, 0.9879 / 0.964 on 8, the same on 32.
CALIBRATION_IMAGES = 8


class CalibrationError(RuntimeError):
    """The trunk could not be quantised (no calibration data, untraceable forward)."""


def quantize_trunk(trunk: nn.Module, calibration: Iterable[torch.Tensor]) -> nn.Module:
    """An int8 copy of `trunk` (fp32 in, fp32 out), its ranges observed on `calibration` batches.

    BatchNorms may be folded already (`inference.fold_batchnorm`) or not (the quantiser fuses
    them with their convolutions); modules that define ``plain_equivalent()`` (TensorFlow-"SAME"
    convolutions) are swapped for standard layers first so that the quantiser recognises them.
    """
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    if ENGINE not in torch.backends.quantized.supported_engines:
        raise CalibrationError(f"this torch build has no {ENGINE} int8 engine; use fp32")

    batches = iter(calibration)
    first = next(batches, None)
    if first is None:
        raise CalibrationError("int8 quantisation needs at least one calibration image")
    model = _with_plain_layers(copy.deepcopy(trunk).eval().cpu())
    torch.backends.quantized.engine = ENGINE
    with warnings.catch_warnings():
        # torch marks FX quantisation as moving to torchao; it is what torch itself ships here.
        warnings.simplefilter("ignore")
        try:
            clamped = convs_into_relu6(model)
            observed = prepare_fx(model, get_default_qconfig_mapping(ENGINE), (first,))
        except Exception as err:  # mostly fx.proxy.TraceError: control flow on a traced value
            raise CalibrationError(
                f"cannot quantise {type(trunk).__name__} to int8 (its forward must trace with "
                f"torch.fx: {err}); use extract.precision=fp32"
            ) from err
        _observe_relu6_range(observed, clamped)
        with torch.inference_mode():
            observed(first)
            for batch in batches:
                observed(batch)
        return PerShapeCopies(convert_fx(observed))


class PerShapeCopies(nn.Module):
    """Runs each input shape on its own copy of a quantised module.

    oneDNN's int8 convolution keeps its fast path (a prepared primitive) for the first input
    shape it meets only; every other shape was re-planned on each call, and multi-scale
    extraction ran at half the fp32 speed. A copy per shape (weights repacked once, ~0.1 s for
    a ResNet50) keeps every shape on the fast path; the least recently used copy goes first.
    """

    def __init__(self, quantized: nn.Module, capacity: int = SHAPE_COPIES) -> None:
        super().__init__()
        self.quantized = quantized
        self.capacity = capacity
        self._copies: OrderedDict[tuple, nn.Module] = OrderedDict()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        key = (tuple(x.shape), x.is_contiguous(memory_format=torch.channels_last))
        module = self._copies.pop(key, None)
        if module is None:
            module = self.quantized if not self._copies else copy.deepcopy(self.quantized)
            while len(self._copies) >= self.capacity:
                self._copies.popitem(last=False)
        self._copies[key] = module
        return module(x)


def convs_into_relu6(module: nn.Module) -> set[str]:
    """Names of the convolutions whose output goes straight (Identities aside) into a ReLU6."""
    graph = fx.symbolic_trace(module).graph
    modules = dict(module.named_modules())

    def feeds_relu6(node: fx.Node) -> bool:
        while len(node.users) == 1:
            (node,) = node.users
            layer = modules.get(node.target) if node.op == "call_module" else None
            if isinstance(layer, nn.ReLU6):
                return True
            if not isinstance(layer, nn.Identity):
                return False
        return False

    return {
        node.target
        for node in graph.nodes
        if node.op == "call_module"
        and isinstance(modules[node.target], nn.Conv2d)
        and feeds_relu6(node)
    }


def _observe_relu6_range(observed: fx.GraphModule, convs: set[str]) -> None:
    """Quantise the outputs of `convs` on [0, 6], the range the ReLU6 after them leaves.

    The quantiser observes a convolution's output before its ReLU6 (the two do not fuse), so
    its scale would span the pre-activation range (-27..31 in Lite0's stem): ten times coarser
    than needed, and the descriptors fell to cosine 0.87. Fixed [0, 6] is TFLite's fused
    conv+ReLU6 and lifted them to 0.98-0.99. Only the output observer changes, not the input's.
    """
    from torch.ao.quantization import FixedQParamsObserver

    for node in observed.graph.nodes:
        if node.op != "call_module" or node.target not in convs or len(node.users) != 1:
            continue
        (user,) = node.users
        if user.op == "call_module" and "activation_post_process" in str(user.target):
            fixed = FixedQParamsObserver(
                scale=6.0 / ACTIVATION_LEVELS,
                zero_point=0,
                dtype=torch.quint8,
                quant_min=0,
                quant_max=ACTIVATION_LEVELS,
            )
            setattr(observed, user.target, fixed)


def _with_plain_layers(module: nn.Module) -> nn.Module:
    """`module` with every child that has a ``plain_equivalent()`` replaced by it, in place."""
    for name, child in module.named_children():
        if hasattr(child, "plain_equivalent"):
            setattr(module, name, child.plain_equivalent())
        else:
            _with_plain_layers(child)
    return module
