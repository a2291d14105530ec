"""timm's generic model contract for every registered ``*_dcls`` and ``*_dc`` model.

The checks of timm's ``tests/test_models.py`` that timm's own ConvNeXt and ResNet pass:
TorchScript, FX forward and backward (timm's ``_create_fx_model``), ``features_only`` (hooks and
FX), ``forward_intermediates``; plus ``torch.jit.trace`` in every conv_algorithm, with the saved
file loaded back.

The small sizes (and the ``_dc`` controls, plain timm models) get every check on a 32x32 input.
The big DCLS sizes differ from the small ones only in depths and widths (data, not code: each
family's sizes are built by one function), and one forward pass of one of them takes seconds on
a 2-core CPU; they get one slow test each, with scripting, FX and tracing checked against the
eager outputs.
"""

import copy
import io
import pickle

import pytest
import timm
import torch
from timm.layers import get_notrace_functions, get_notrace_modules, set_layer_config
from timm.models import FeatureInfo
from timm.utils import ModelEmaV3
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

import dcls
import models  # noqa: F401  (registers the models)
from dcls.algorithms import auto

OUR_MODELS = sorted(set(timm.list_models("*_dcls")) | set(timm.list_models("*_dc")))
SMALL = [
    "test_convnext_dcls",  # ConvNeXt blocks with Linear MLPs (as tiny .. large)
    "convnext_atto_dcls",  # ConvNeXt blocks with conv MLPs (as femto, pico, nano)
    "test_resnet_dcls",
    "convnext_tiny_dc",
    "resnet50_dc",
]
BIG = [name for name in OUR_MODELS if name not in SMALL]
INPUT = (3, 32, 32)
TRACER_KWARGS = {  # what timm's tests pass to torchvision's feature extraction
    "leaf_modules": get_notrace_modules(),
    "autowrap_functions": get_notrace_functions(),
    "param_shapes_constant": True,
}


def test_every_model_is_checked():
    assert set(SMALL) <= set(OUR_MODELS) and set(SMALL) | set(BIG) == set(OUR_MODELS)
    for family in ("convnext", "resnet"):  # every family and variant has a small model here
        for variant in ("_dcls", "_dc"):
            assert any(family in n and n.endswith(variant) for n in SMALL), (family, variant)


def _use_triton_interpreter(algorithm: str, monkeypatch) -> None:
    """Triton kernels run on CPU tensors in Triton's interpreter when there is no GPU."""
    if algorithm == "triton" and not torch.cuda.is_available():
        monkeypatch.setenv("TRITON_INTERPRET", "1")


def _create(name: str, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model(name, **kwargs)


def _is_dcls(name: str) -> bool:
    return name.endswith("_dcls")


def _fx_model(model: torch.nn.Module, train: bool = False, **tracer_kwargs) -> torch.nn.Module:
    """timm's ``_create_fx_model``: a feature extractor returning the graph's last node(s)."""
    kwargs = {**TRACER_KWARGS, **tracer_kwargs}
    train_nodes, eval_nodes = get_graph_node_names(model, tracer_kwargs=kwargs)
    return create_feature_extractor(
        model,
        train_return_nodes=[train_nodes[-1]],
        eval_return_nodes=[eval_nodes[-1]],
        tracer_kwargs=kwargs,
    )


def _output(fx_model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    (output,) = fx_model(x).values()
    return output


def _round_trip(scripted: torch.jit.ScriptModule) -> torch.jit.ScriptModule:
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    buffer.seek(0)
    return torch.jit.load(buffer)


def _check_script_fx_trace(model: torch.nn.Module) -> None:
    """Scripted, FX-traced and traced (then saved and loaded) copies give the eager outputs."""
    model.eval()
    x, other = torch.randn(1, *INPUT), torch.randn(1, *INPUT)
    with torch.no_grad():
        expected = model(other)
        scripted = _round_trip(torch.jit.script(model))
        torch.testing.assert_close(scripted(other), expected)
        fx_outputs = _output(_fx_model(model), other)
        assert torch.equal(fx_outputs, expected)
        traced = _round_trip(torch.jit.trace(model, x, check_trace=False))
        torch.testing.assert_close(traced(other), expected)


@pytest.mark.parametrize("name", SMALL)
def test_torchscript(name):
    with set_layer_config(scriptable=True):
        model = _create(name).eval()
    x = torch.randn(1, *INPUT)
    scripted = torch.jit.script(model)
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(scripted(x), expected)
        torch.testing.assert_close(_round_trip(scripted)(x), expected)


@pytest.mark.parametrize("name", SMALL)
def test_fx_forward(name):
    model = _create(name).eval()
    x = torch.randn(1, *INPUT)
    with torch.no_grad():
        expected = model(x)
        outputs = _output(_fx_model(model), x)
    assert torch.equal(outputs, expected)  # the same operations: bit for bit


def _check_fx_backward(model: torch.nn.Module, **tracer_kwargs) -> None:
    count = sum(p.numel() for p in model.parameters())
    fx_model = _fx_model(model.train(), train=True, **tracer_kwargs)
    outputs = _output(fx_model, torch.randn(2, *INPUT))
    outputs.mean().backward()
    missing = [n for n, p in fx_model.named_parameters() if p.grad is None]
    assert not missing
    assert sum(p.grad.numel() for p in fx_model.parameters()) == count


@pytest.mark.parametrize("name", SMALL)
def test_fx_backward_reaches_every_parameter(name):
    _check_fx_backward(_create(name, num_classes=42))


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("test_convnext_dcls", {}),
        ("test_resnet_dcls", {"kernel_count": 5, "share_positions": True}),
    ],
)
def test_fx_backward_with_dcls_layers_as_leaves_keeps_shared_positions(name, kwargs):
    # A leaf is copied into the GraphModule as a whole: its shared positions come with it.
    model = _create(name, num_classes=42, **kwargs)
    assert any(isinstance(m, dcls.DclsPositions) for m in model.modules())
    leaves = [*get_notrace_modules(), dcls.Dcls1d, dcls.Dcls2d, dcls.Dcls3d]
    _check_fx_backward(model, leaf_modules=leaves)


@pytest.mark.parametrize("name", SMALL)
def test_features_only_with_hooks_and_fx(name):
    model = _create(name, features_only=True).eval()
    fx_model = _create(name, features_only=True, feature_cls="fx").eval()  # same seed, weights
    x = torch.randn(1, *INPUT)
    with torch.no_grad():
        features, fx_features = model(x), fx_model(x)
    assert len(features) == len(fx_features) == len(model.feature_info.channels())
    for feature, fx_feature, channels, reduction in zip(
        features,
        fx_features,
        model.feature_info.channels(),
        model.feature_info.reduction(),
        strict=True,
    ):
        assert feature.shape == (1, channels, INPUT[1] // reduction, INPUT[2] // reduction)
        assert torch.equal(feature, fx_feature)


@pytest.mark.parametrize("name", SMALL)
def test_forward_intermediates(name):
    model = _create(name).eval()
    with torch.no_grad():  # weights unlike a fresh seeded model's: the features must load them
        for parameter in model.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    info = FeatureInfo(model.feature_info, len(model.feature_info))
    x = torch.randn(1, *INPUT)
    with torch.inference_mode():
        output, intermediates = model.forward_intermediates(x)
        torch.testing.assert_close(output, model.forward_features(x))
    assert [t.shape[1] for t in intermediates] == info.channels()
    assert [INPUT[1] // t.shape[2] for t in intermediates] == info.reduction()
    features = _create(name, features_only=True).eval()
    weights = model.state_dict()  # FeatureListNet flattens top-level names: stages_0 <- stages.0
    features.load_state_dict(
        {k: weights[k if k in weights else k.replace("_", ".", 1)] for k in features.state_dict()}
    )
    with torch.inference_mode():
        for intermediate, feature in zip(intermediates, features(x), strict=True):
            torch.testing.assert_close(intermediate, feature)


def _algorithms(name: str) -> list[str]:
    """The conv_algorithms a model accepts (ResNet's strided, dense conv2 allow no fft/split)."""
    if not _is_dcls(name):
        return ["none"]
    return list(dcls.CONV_ALGORITHMS) if "convnext" in name else ["direct", "channels_last", "auto"]


@pytest.mark.parametrize(
    ("name", "algorithm"),
    # the Triton kernels run interpreted on a CPU: on the smallest model only
    [(n, a) for n in SMALL for a in _algorithms(n) if a != "triton" or n == "test_convnext_dcls"],
    ids=str,
)
def test_jit_trace_in_every_conv_algorithm(name, algorithm, monkeypatch):
    _use_triton_interpreter(algorithm, monkeypatch)  # the eager reference runs the kernel
    kwargs = {} if algorithm == "none" else {"conv_algorithm": algorithm}
    if algorithm == "triton" and not torch.cuda.is_available():
        # the interpreter's time grows with the taps each program loops over: at most 16 here
        # instead of 104 (the kernel sizes' own checks are tests/dcls/test_triton.py's)
        kwargs |= {"kernel_count": 4, "dilated_kernel_size": 5}
    model = _create(name, **kwargs).eval()
    x, other = torch.randn(1, *INPUT), torch.randn(1, *INPUT)
    with torch.no_grad():
        with monkeypatch.context() as patch:  # "auto" traces "direct": no timed trial
            patch.setattr(auto, "_time_candidates", lambda *a: pytest.fail("no trial"))
            traced = torch.jit.trace(model, x, check_trace=False)  # the check runs eagerly
        loaded = _round_trip(traced)  # no Python call left in the graph (split's Function)
        torch.testing.assert_close(loaded(other), model(other))
    assert "prim::PythonOp" not in str(traced.inlined_graph)


@pytest.mark.slow
@pytest.mark.parametrize("name", BIG)
def test_big_sizes_script_fx_and_trace(name):
    kwargs = {"conv_algorithm": "auto"} if _is_dcls(name) else {}
    _check_script_fx_trace(_create(name, **kwargs))


# What worked before shared positions became submodules of their layers, and must keep working.


def _shared_model() -> torch.nn.Module:
    return _create("test_convnext_dcls", num_classes=5, version="gauss").eval()


def _assert_shared_in(model: torch.nn.Module) -> None:
    for stage in model.stages:
        for block in stage.blocks:
            assert block.conv_dw.shared_positions is stage.dcls_positions


def test_state_dict_keys_are_the_checkpoint_format():
    model = _shared_model()
    keys = list(model.state_dict())
    assert not [k for k in keys if "shared_positions" in k]
    assert [k for k in keys if k.endswith((".P", ".SIG"))] == [
        f"stages.{i}.dcls_positions.{name}" for i in range(4) for name in ("P", "SIG")
    ]
    names = [n for n, _ in model.named_parameters() if n.endswith((".P", ".SIG"))]
    assert names == [k for k in keys if k.endswith((".P", ".SIG"))]


def test_strict_state_dict_round_trip():
    source, target = _shared_model(), _create("test_convnext_dcls", num_classes=5, version="gauss")
    with torch.no_grad():
        for module in source.modules():
            if isinstance(module, dcls.DclsPositions):
                module.P.uniform_(-3, 3)
    target.load_state_dict(source.state_dict(), strict=True)
    _assert_shared_in(target)
    x = torch.randn(2, *INPUT)
    torch.testing.assert_close(target.eval()(x), source(x))
    missing = {k: v for k, v in source.state_dict().items() if k != "stages.1.dcls_positions.P"}
    result = target.load_state_dict(missing, strict=False)
    assert result.missing_keys == ["stages.1.dcls_positions.P"] and not result.unexpected_keys


def test_assign_load_keeps_the_sharing():
    source = _shared_model()
    with torch.device("meta"):
        target = _create("test_convnext_dcls", num_classes=5, version="gauss")
    target.load_state_dict(source.state_dict(), assign=True)
    _assert_shared_in(target)
    x = torch.randn(2, *INPUT)
    torch.testing.assert_close(target.eval()(x), source(x))


def test_deepcopy_pickle_and_ema_keep_the_sharing():
    model = _shared_model()
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        _assert_shared_in(clone)
        assert clone.stages[0].dcls_positions.P is not model.stages[0].dcls_positions.P
    ema = ModelEmaV3(model, decay=0.5)
    with torch.no_grad():
        model.stages[2].dcls_positions.P.add_(1.0)
    ema.update(model)
    _assert_shared_in(ema.module)
    shared = ema.module.stages[2].dcls_positions.P
    torch.testing.assert_close(shared, model.stages[2].dcls_positions.P - 0.5)


def test_torch_export_and_freeze_then_script():
    model = _shared_model()
    x = torch.randn(2, *INPUT)
    expected = model(x)
    exported = torch.export.export(model, (x,))
    torch.testing.assert_close(exported.module()(x), expected)
    frozen = dcls.freeze(model)
    assert not any(isinstance(m, (dcls.Dcls2d, dcls.DclsPositions)) for m in frozen.modules())
    torch.testing.assert_close(_round_trip(torch.jit.script(frozen))(x), expected)


# "triton" compiles without graph breaks at the layer level (tests/dcls/test_algorithms.py); a
# whole model through Triton's CPU interpreter takes minutes.
@pytest.mark.parametrize("algorithm", [a for a in dcls.CONV_ALGORITHMS if a != "triton"])
def test_compile_fullgraph_in_every_algorithm(algorithm):
    model = _create("test_convnext_dcls", num_classes=5, conv_algorithm=algorithm)
    x = torch.randn(2, *INPUT, requires_grad=True)
    expected = model(x)
    expected.square().sum().backward()
    eager_grads = [x.grad.clone()] + [p.grad.clone() for p in model.parameters()]
    x.grad = None
    model.zero_grad(set_to_none=True)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    out = compiled(x)
    torch.testing.assert_close(out, expected)
    out.square().sum().backward()  # the compiled backward: the same gradients as eager
    grads = [x.grad] + [p.grad for p in model.parameters()]
    for grad, eager in zip(grads, eager_grads, strict=True):
        torch.testing.assert_close(grad, eager, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_compile_with_inductor():
    model = _shared_model()
    x = torch.randn(2, *INPUT)
    compiled = torch.compile(model, fullgraph=True)
    torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-5)
