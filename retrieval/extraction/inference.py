"""Inference-time speed-ups of a network: precision per device, BatchNorm folding, compilation.

All of them but int8 leave the descriptors equal up to float round-off: `auto` picks bf16 only
where it measured descriptors at cosine >= 0.9999 to fp32 (`precision_probe`); a forced bf16/fp16
stays at cosine >= 0.99 (tested). int8 (`quantize`, CPUs only, opt-in) trades a measured bit of
accuracy for ~3-4x on ResNet-class trunks. `inference_copy` never touches the network it is
given, so mining in the middle of a training run neither changes the trained weights nor their
memory format.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterable

import torch
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from retrieval.extraction import precision_probe

logger = logging.getLogger(__name__)

# The dtype each precision runs the float parts of a network in (autocast); int8 quantises the
# trunk and keeps everything around it in fp32.
PRECISIONS = {
    "fp32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "int8": torch.float32,
}
KINDS = ("inference", "training")
# The probe's input per kind of work: (batch, height, width), a mid-size photo for extraction and
# a pair of cirtorch-size training images (362 px) for a training step.
PROBE_INPUT = {"inference": (1, 384, 512), "training": (2, 272, 362)}


def resolve_device(name: str) -> torch.device:
    """The device `name` stands for: 'auto' picks CUDA when present."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_precision(
    precision: str,
    device: str | torch.device,
    net: nn.Module | None = None,
    kind: str = "inference",
    timer: precision_probe.Timer | None = None,
) -> str:
    """The precision `auto` stands for on `device`, or `precision` itself, validated.

    auto on a CPU is measured, not read from CPU flags (`precision_probe`): `net` (or, without
    one, a few representative convolutions) runs in fp32 and in bf16 autocast, `kind` of work
    (inference, or a training step's forward + backward); bf16 is chosen when it is at least 1.1x
    faster and its descriptors stay at cosine >= 0.9999 to fp32's, else fp32. CPUs with fast
    bf16 kernels (AMX; on some machines AVX-512 BF16 alone) get bf16, others fp32, and a trunk
    that drifts in bf16 (EfficientNet-Lite0) stays fp32 everywhere. The decision is cached per
    machine, torch version, thread count and trunk family; `timer` replaces the wall clock (tests).
    On CUDA GPUs auto is bf16 where supported, else fp16 (tensor cores).
    """
    if precision == "auto":
        return auto_decision(device, net, kind, timer).precision
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}; got {kind!r}")
    if precision not in PRECISIONS:
        raise ValueError(
            f"precision must be one of auto, {', '.join(PRECISIONS)}; got {precision!r}"
        )
    if precision == "int8" and torch.device(device).type != "cpu":
        raise ValueError(
            f"precision int8 runs on CPUs only, not on {device}; use bf16, fp16 or auto there"
        )
    return precision


def auto_decision(
    device: str | torch.device,
    net: nn.Module | None = None,
    kind: str = "inference",
    timer: precision_probe.Timer | None = None,
    remeasure: bool = False,
) -> precision_probe.Decision:
    """What `auto` stands for on `device` for `kind` work of `net`, and why (resolve_precision);
    `remeasure` replaces a cached CPU decision by a new measurement."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}; got {kind!r}")
    device = torch.device(device)
    if device.type == "cuda":
        bf16 = torch.cuda.is_bf16_supported()
        why = "CUDA GPU with bf16" if bf16 else "CUDA GPU without bf16"
        return precision_probe.Decision("bf16" if bf16 else "fp16", f"{why} (tensor cores)")
    if device.type != "cpu":
        return precision_probe.Decision("fp32", f"no measured half precision on {device.type}")
    return precision_probe.measured_precision(
        precision_probe.machine_key(device, _family(net), kind),
        lambda: probe_runs(net if net is not None else representative_convs(), device, kind),
        timer or precision_probe.wall_timer(device),
        remeasure=remeasure,
    )


def _family(net: nn.Module | None) -> str:
    """The trunk a decision holds for: the backbone's name in `meta`, else the class name."""
    if net is None:
        return "convs"
    meta = getattr(net, "meta", None)
    if isinstance(meta, dict) and "backbone" in meta:
        return str(meta["backbone"])
    return type(net).__name__


def representative_convs() -> nn.Module:
    """ResNet-like convolutions (stem, 3x3, 1x1 expansions) with a global mean: `auto` without a
    network."""
    with torch.random.fork_rng(devices=[]):  # fixed weights, the caller's random state untouched
        torch.manual_seed(0)
        return _convs()


def _convs() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 64, 7, stride=2, padding=3),
        nn.ReLU(),
        nn.Conv2d(64, 64, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(64, 256, 1),
        nn.ReLU(),
        nn.Conv2d(256, 128, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(128, 512, 1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )


def probe_runs(
    net: nn.Module, device: str | torch.device, kind: str
) -> dict[str, Callable[[], torch.Tensor]]:
    """precision -> one call of `kind` work on a copy of `net` (NHWC, as our fast paths run).

    inference: an `inference_copy` (BatchNorm folded) on one mid-size image, no grad; training:
    a train-mode copy with BatchNorm frozen, forward + backward on two training-size images.
    """
    device = torch.device(device)
    batch, height, width = PROBE_INPUT[kind]
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, height, width, generator=generator).to(device)
    x = x.contiguous(memory_format=torch.channels_last)
    if kind == "inference":
        model = inference_copy(net, device, channels_last=True)
    else:
        model = copy.deepcopy(net).to(device).to(memory_format=torch.channels_last).train()
        for m in model.modules():  # frozen as in training (freeze_bn): statistics not updated
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()

    def call(dtype: torch.dtype) -> torch.Tensor:
        grad = torch.enable_grad() if kind == "training" else torch.inference_mode()
        with grad, torch.autocast(device.type, dtype, enabled=dtype != torch.float32):
            out = model(x)
        if kind == "training":
            out.float().square().sum().backward()
            model.zero_grad(set_to_none=True)
        return out.detach().float()

    return {name: (lambda dtype=PRECISIONS[name]: call(dtype)) for name in ("fp32", "bf16")}


class _ConvLeafTracer(fx.Tracer):
    """Traces a network keeping every Conv2d (and subclasses with their own padding) as a leaf."""

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return isinstance(module, nn.Conv2d) or super().is_leaf_module(module, qualified_name)


def conv_bn_pairs(module: nn.Module) -> list[tuple[str, str]]:
    """(conv, bn) module names where the BatchNorm reads only that convolution's output.

    Found on the traced graph, so any architecture qualifies whose forward traces; modules
    called more than once are left out (folding them would change the other call sites).
    """
    graph = _ConvLeafTracer().trace(module)
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    modules = dict(module.named_modules())
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules[node.target], nn.BatchNorm2d):
            continue
        source = node.args[0]
        if (
            isinstance(source, fx.Node)
            and source.op == "call_module"
            and isinstance(modules[source.target], nn.Conv2d)
            and len(source.users) == 1
            and calls[source.target] == 1
            and calls[node.target] == 1
        ):
            pairs.append((source.target, node.target))
    return pairs


def fold_batchnorm(module: nn.Module) -> int:
    """Fold eval-mode BatchNorms into the convolutions before them, in place; returns how many.

    The BatchNorm becomes an Identity: one memory pass less per layer at inference. A module
    whose forward cannot be traced is left as it is.
    """
    try:
        pairs = conv_bn_pairs(module)
    except (fx.proxy.TraceError, TypeError, NotImplementedError) as err:
        logger.debug("not folding BatchNorm of %s: %s", type(module).__name__, err)
        return 0
    modules = dict(module.named_modules())
    for conv_name, bn_name in pairs:
        conv, bn = modules[conv_name], modules[bn_name]
        conv.weight, conv.bias = fuse_conv_bn_weights(
            conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias
        )
        parent_name, _, attr = bn_name.rpartition(".")
        setattr(module.get_submodule(parent_name), attr, nn.Identity())
    return len(pairs)


def inference_copy(
    net: nn.Module,
    device: str | torch.device = "cpu",
    channels_last: bool = False,
    fold_bn: bool = True,
    compile: bool = False,
    calibration: Callable[[], Iterable[torch.Tensor]] | None = None,
) -> nn.Module:
    """An eval-mode copy of `net` on `device`, BatchNorm folded, optionally compiled or int8.

    With `calibration` (a function giving normalised image batches) the trunk is quantised to
    int8 with activation ranges observed on those batches (`retrieval.extraction.quantize`).
    """
    if calibration is not None and (compile or torch.device(device).type != "cpu"):
        raise ValueError("int8 runs on CPU and without compile; set compile=false for int8")
    if getattr(net, "inference_settings", (False,) * 5)[4]:
        raise ValueError(
            "this network is an int8 inference copy already; make other copies from the float "
            "network it was made from"
        )
    fast = copy.deepcopy(net).eval().requires_grad_(False)
    if fold_bn and hasattr(fast, "backbone"):
        fold_batchnorm(fast.backbone.features)
    if calibration is not None:
        from retrieval.extraction.quantize import quantize_trunk

        fast.backbone.features = quantize_trunk(fast.backbone.features, calibration())
    fast = fast.to(device)
    if channels_last:
        fast = fast.to(memory_format=torch.channels_last)
    if compile:
        # Freezing folds the (now constant) weights into the graph and prepacks them for oneDNN;
        # dynamic shapes after the first size change: one recompilation, not one per image size.
        fast.backbone.features = torch.compile(
            fast.backbone.features, dynamic=None, options={"freezing": True}
        )
    # What the copy was made for, so that `prepared` can hand it out again instead of re-copying.
    fast.inference_settings = _settings_key(
        device, channels_last, fold_bn, compile, calibration is not None
    )
    return fast


def _settings_key(
    device: str | torch.device, channels_last: bool, fold_bn: bool, compile: bool, int8: bool
) -> tuple:
    return (torch.device(device), bool(channels_last), bool(fold_bn), bool(compile), bool(int8))


def prepared(
    net: nn.Module,
    device: str | torch.device = "cpu",
    channels_last: bool = False,
    fold_bn: bool = True,
    compile: bool = False,
    calibration: Callable[[], Iterable[torch.Tensor]] | None = None,
) -> nn.Module:
    """`net` itself when it is an `inference_copy` made with these settings, else such a copy.

    A caller that extracts many times with one network (a search server answering queries)
    makes the copy once and passes it in; everyone else gets a fresh copy per extraction. An
    int8 copy is handed out again as it is: its calibration stays the one it was made with.
    """
    key = _settings_key(device, channels_last, fold_bn, compile, calibration is not None)
    if getattr(net, "inference_settings", None) == key:
        return net
    return inference_copy(net, device, channels_last, fold_bn, compile, calibration)
