"""Throughput and model size: no "auto" trial inside the timed rounds, and the MACs of a DCLS
model whatever algorithm it runs."""

import pytest
import timm
import torch

import dcls
import models  # noqa: F401  (registers the DCLS variants)
from dcls.algorithms import auto
from engine.evaluation import throughput


@pytest.mark.parametrize("train", [False, True])
def test_no_auto_trial_runs_inside_a_timed_round(monkeypatch, train):
    """ConvNeXt's DCLS layers reach their re-check (:data:`RECHECK_AFTER` calls) within a few
    steps: it must fall in the warm-up, not in the rounds whose median is the result; and only
    the timed batch's problems are trialled (no extra forward to count the classes)."""
    monkeypatch.setattr(auto, "RECHECK_AFTER", 4)
    dcls.algorithms.clear_auto_cache()
    timing, trials = {"on": False}, []
    original_trial, original_time = auto._trial, throughput.time_interleaved

    def trial(*args, **kwargs):
        trials.append(timing["on"])
        return original_trial(*args, **kwargs)

    def timed(*args, **kwargs):
        timing["on"] = True
        try:
            return original_time(*args, **kwargs)
        finally:
            timing["on"] = False

    monkeypatch.setattr(auto, "_trial", trial)
    monkeypatch.setattr(throughput, "time_interleaved", timed)
    model = timm.create_model("test_convnext_dcls", conv_algorithm="auto").eval()
    spec = throughput.StepSpec(2, 32, torch.device("cpu"), train=train)
    rates = throughput.measure_throughput({"dcls": model}, spec, warmup=1, steps=3, rounds=3)
    assert rates["dcls"] > 0
    assert trials and not any(trials)  # first and second trials, all before the timing
    assert "?" not in dcls.algorithms.auto_summary()  # every choice final
    problems = dcls.algorithms.auto_cache()
    assert problems and {key.input.shape[0] for key in problems} == {2}
    assert {key.need_grad for key in problems} == {train}


def test_macs_count_the_dense_convolution_whatever_the_algorithm():
    def build(algorithm):
        return lambda: timm.create_model("test_convnext_dcls", conv_algorithm=algorithm)

    direct = throughput.params_and_macs(build("direct"), 64)
    assert throughput.params_and_macs(build("fft"), 64) == direct
    assert throughput.params_and_macs(build("auto"), 64) == direct


def test_busy_times_count_each_kernel_once_and_no_waits():
    """An operator's self device time repeats its kernels' (profiler events of their own): only
    the device events count, and not the user annotations' ranges; the host's time leaves out
    its waits for the device."""
    from types import SimpleNamespace

    cpu, cuda = torch.autograd.DeviceType.CPU, torch.autograd.DeviceType.CUDA

    def event(key, device_type, device_us, host_us=0.0, annotation=False):
        return SimpleNamespace(
            key=key,
            device_type=device_type,
            self_device_time_total=device_us,
            self_cpu_time_total=host_us,
            is_user_annotation=annotation,
        )

    events = [
        event("aten::conv2d", cpu, 300.0, host_us=20.0),  # the time of the kernel below
        event("conv_kernel", cuda, 300.0),  # its kernel
        event("other_kernel", cuda, 50.0),  # another kernel
        event("step", cuda, 1000.0, annotation=True),  # a range around both
        event("cudaDeviceSynchronize", cpu, 0.0, host_us=900.0),  # the host waiting
    ]
    assert throughput.device_busy_us(events) == 350.0
    assert throughput.host_busy_us(events) == 20.0  # work, not the wait for the device


def test_a_model_without_classifier_is_timed_too():
    """``num_classes=0``: the pooled features are the output; a training step still runs."""
    model = timm.create_model("test_convnext", num_classes=0)
    spec = throughput.StepSpec(2, 32, torch.device("cpu"), train=True)
    rates = throughput.measure_throughput({"features": model}, spec, warmup=1, steps=1, rounds=1)
    assert rates["features"] > 0


def test_a_failed_measurement_leaves_the_model_and_cudnn_benchmark_as_they_were(monkeypatch):
    """``evaluate_throughput`` moved the model to the CPU and set ``cudnn.benchmark`` for the
    whole process; a measurement that raised left the model there (it set benchmark anyway)."""
    moves = []
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))
    original_to = model.to
    monkeypatch.setattr(model, "to", lambda *a, **k: moves.append(a) or original_to(*a, **k))

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(throughput, "measure_throughput", out_of_memory)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    cfg = {"baseline": None, "batch_size": 2, "warmup": 1, "steps": 1, "rounds": 1, "train": False}
    with pytest.raises(RuntimeError, match="out of memory"):
        throughput.evaluate_throughput(
            model, "mine", cfg, 16, torch.device("cuda"), amp_dtype=None, channels_last=False
        )
    assert torch.backends.cudnn.benchmark is False
    assert moves == [("cpu",), (torch.device("cpu"),)]  # off the device, then home again


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"batch_size": 0}, "batch_size must be >= 1, got 0"),
        ({"resolution": 0}, "resolution must be >= 1, got 0"),
        ({"optimizer": "lamb"}, r"optimizer must be one of \['adamw', 'sgd'\], got 'lamb'"),
    ],
)
def test_a_step_spec_names_the_bad_value(changes, message):
    values = {"batch_size": 2, "resolution": 32, "device": torch.device("cpu")} | changes
    with pytest.raises(ValueError, match=message):
        throughput.StepSpec(**values)
