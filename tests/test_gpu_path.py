"""The GPU path's host-side mechanisms, checked on a CPU (issue 34): the GRU probes' packing plan
made on the host, gpu-check's JSON written as it goes and on failure, non-finite numbers as
disagreement, the checked GPU given to the concurrency workers, `cuda:N` checked, compile fallbacks
reported, FP32 pinned, checkpoints tied to their device type, Adam's step counters left on the CPU,
the LSTM rows, and per-step uploads through pinned memory."""

import json
import math

import numpy as np
import pytest
import torch

from onion import benchmark, gpu_check, runtime
from onion.benchmark import make_setup
from onion.config import DataConfig
from onion.data import random_sequences
from onion.loop import apply_update, each_step, optimise
from onion.probes import ProbeConfig, make_probe, make_probe_optimizer, probe_step
from onion.probes.train import probe_batches


def _quick_run(tmp_path, **overrides):
    """gpu-check's checks at N = 8 with torch.nn's layers only (no compilation): seconds."""
    settings = dict(sizes=[8], steps=2, jobs=[1], concurrency_size=8, concurrency_steps=5, startup_seconds=0.0,
                    out=str(tmp_path / "g.json"), config_path=str(tmp_path / "none.yaml"), checks_only=True,
                    kernels=("nn",))
    return gpu_check.run("cpu", **{**settings, **overrides})


@pytest.fixture
def fp32_after():
    """Whatever a test sets, the process goes back to FP32 (the default) afterwards."""
    yield
    runtime.set_float32_precision(False)


# --- 1: the unrolled GRU probes' packing plan --------------------------------------------------

@pytest.mark.parametrize("kind", ["gru_autoregressive", "gru_no_input"])
def test_unrolled_gru_probe_steps_without_reading_lengths(kind):
    """With the plan probe_batches makes on the host from the stored lengths, a step never reads
    the batch's lengths (here on the meta device, which cannot be read), and its loss and
    gradients are bit for bit those of the plan made from the lengths themselves."""
    torch.manual_seed(0)
    data = random_sequences(np.random.default_rng(0), 300, DataConfig())
    states = torch.randn(300, 16)
    tokens, lengths = torch.as_tensor(data.tokens), torch.as_tensor(data.lengths)
    probe = make_probe(kind, 16, 30, 9)
    probe.unroll(compile=False)
    step, (idx, plan) = next(probe_batches(probe, data.lengths, 64, 0, "cpu")(3, 5))
    assert step == 3 and plan is not None
    ours = probe.loss(states[idx], tokens[idx], torch.empty(64, dtype=torch.long, device="meta"), plan)
    theirs = probe.loss(states[idx], tokens[idx], lengths[idx])
    assert torch.equal(ours, theirs)
    grads = [torch.autograd.grad(loss, list(probe.parameters()), allow_unused=True) for loss in (ours, theirs)]
    assert all(a is b is None or torch.equal(a, b) for a, b in zip(*grads))
    optimizer = make_probe_optimizer(probe, ProbeConfig())
    meta = torch.empty(64, dtype=torch.long, device="meta")
    assert torch.isfinite(probe_step(probe, optimizer, states[idx], tokens[idx], meta, 1e-3, plan))
    flat = make_probe("linear", 16, 30, 9)  # other probes get no plan
    assert next(probe_batches(flat, data.lengths, 64, 0, "cpu")(0, 1))[1][1] is None


# --- 3 and 5: the JSON, as it goes, on failure, non-finite values -------------------------------

def test_gpu_check_writes_its_json_as_it_goes_and_after_a_failure(tmp_path, monkeypatch):
    out = tmp_path / "g.json"
    seen = {}

    def speeds_fail(*args, **kwargs):
        seen.update(json.loads(out.read_text()))  # what is on disk when the benchmark starts
        raise RuntimeError("out of memory (injected)")

    on_disk = {"agreement": [], "sync": []}  # rows on disk as each row starts

    def spy(name):
        real = getattr(gpu_check, f"{name}_row")

        def row(*args, **kwargs):
            on_disk[name].append(len(json.loads(out.read_text())[name]) if out.exists() else None)
            return real(*args, **kwargs)
        return row

    for name in on_disk:
        monkeypatch.setattr(gpu_check, f"{name}_row", spy(name))
    monkeypatch.setattr(benchmark, "measure_speeds", speeds_fail)
    monkeypatch.setattr(benchmark, "measure_concurrency", lambda *a, **k: 1 / 0)
    result = _quick_run(tmp_path, checks_only=False)
    # the GRU: training, unigram and bigram DAS with two rotations each, onion, control, five probes; the LSTM: 4
    assert on_disk == {"agreement": list(range(16)), "sync": list(range(16))}
    assert len(seen["agreement"]) == len(seen["sync"]) == 16 and seen["passed"] is False
    written = json.loads(out.read_text())
    assert written["passed"] is False and written["finished"] is True
    assert [e["stage"] for e in written["errors"]] == ["N=8 nn speeds", "concurrency"]
    assert "out of memory (injected)" in written["errors"][0]["error"]
    assert "ZeroDivisionError" in written["errors"][1]["error"]
    assert all(r["agree"] for r in written["agreement"]) and result["errors"] == written["errors"]


def test_a_nan_gradient_is_disagreement_and_is_written_as_nan(tmp_path, monkeypatch):
    real = gpu_check._loss_and_grads

    def nan_on_device(loop, kind, setup, device, seed=0, kernel="nn", rotation=None):
        loss, grads = real(loop, kind, setup, device, seed, kernel, rotation)
        if loop == "probe" and kind == "mlp" and not isinstance(device, str):
            grads[-1] = grads[-1].clone()
            grads[-1][0] = float("nan")  # the last gradient: Python's max would drop it
        return loss, grads

    monkeypatch.setattr(gpu_check, "_loss_and_grads", nan_on_device)
    result = _quick_run(tmp_path)
    bad = [r for r in result["agreement"] if not r["agree"]]
    assert [(r["loop"], r["kind"]) for r in bad] == [("probe", "mlp")] and math.isnan(bad[0]["grad_rel_diff"])
    assert not result["passed"]
    written = json.loads((tmp_path / "g.json").read_text())
    assert [r["grad_rel_diff"] for r in written["agreement"] if r["kind"] == "mlp"] == ["nan"]
    assert gpu_check.json_ready({"a": [float("inf"), -float("inf"), 1.0]}) == {"a": ["inf", "-inf", 1.0]}


def test_a_failed_concurrency_worker_says_why():
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        benchmark.measure_concurrency(8, 2, "cuda:3", [1], 0.0)


# --- 4 and 6: which GPU ------------------------------------------------------------------------

def _two_gpus(monkeypatch, tmp_path):
    chosen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    monkeypatch.setenv("ONION_GPU_SLOT_DIR", str(tmp_path / "slots"))
    return chosen


def test_cuda_index_is_checked_against_the_visible_gpus(tmp_path, monkeypatch, capsys, fp32_after):
    chosen = _two_gpus(monkeypatch, tmp_path)
    assert runtime.resolve_device("cuda:1") == torch.device("cuda", 1) and chosen == [1]
    assert not (tmp_path / "slots").exists()  # an explicit GPU takes no slot
    for name in ("cuda:2", "cuda:-1", "cuda:x"):
        with pytest.raises(ValueError, match=f"{name!r}: no such GPU; 2 visible"):
            runtime.resolve_device(name)
    from onion.cli import main
    with pytest.raises(SystemExit) as stop:
        main(["gpu-check", "--device", "cuda:2", "--checks-only", "--out", str(tmp_path / "g.json")])
    assert stop.value.code == 1
    written = json.loads((tmp_path / "g.json").read_text())
    assert "'cuda:2': no such GPU; 2 visible" in written["errors"][0]["error"] and not written["passed"]
    assert "no such GPU" in capsys.readouterr().err


def test_concurrency_workers_get_the_checked_gpu(tmp_path, monkeypatch):
    asked = []
    monkeypatch.setattr(gpu_check, "resolve_device", lambda name: torch.device("cuda", 1))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: "a GPU")
    monkeypatch.setattr(benchmark, "measure_concurrency", lambda size, steps, device, *rest: asked.append(device) or [])
    result = _quick_run(tmp_path, sizes=[], checks_only=False)
    assert asked == ["cuda:1"] and result["device"] == "cuda:1"


# --- 7: which kernel ran -----------------------------------------------------------------------

def test_a_compile_fallback_is_reported_and_never_passes(tmp_path, no_compiler):
    result = _quick_run(tmp_path, kernels=("unrolled",))
    assert result["agreement"] and all(r["agree"] for r in result["agreement"])  # eager computes the same
    assert all(r["ran"].startswith("unrolled (eager after a torch.compile failure: ") for r in result["agreement"])
    assert all(not r["passed"] and "fell back to eager" in r["error"] for r in result["sync"])
    assert not result["passed"]
    rows = benchmark.measure_speeds(make_setup(8), "cpu", 2, warmup=1, kernel="unrolled")
    assert all("eager" in r["ran"] for r in rows) and len(rows) == 7


# --- 8: FP32 pinned, TF32 explicit --------------------------------------------------------------

def test_fp32_is_pinned_and_tf32_is_an_explicit_choice(tmp_path, fp32_after):
    torch.backends.cudnn.allow_tf32 = True  # PyTorch's own default: TF32 in cuDNN's GRU
    runtime.resolve_device("cpu")
    fp32 = {"tf32": False, "torch.backends.cuda.matmul.allow_tf32": False,
            "torch.backends.cudnn.allow_tf32": False, "float32_matmul_precision": "highest"}
    assert runtime.precision_settings() == fp32
    assert _quick_run(tmp_path, sizes=[])["precision"] == fp32
    tf32 = _quick_run(tmp_path, sizes=[], tf32=True)["precision"]
    assert tf32 == {"tf32": True, "torch.backends.cuda.matmul.allow_tf32": True,
                    "torch.backends.cudnn.allow_tf32": True, "float32_matmul_precision": "high"}
    assert json.loads((tmp_path / "g.json").read_text())["precision"] == tf32


# --- 9 and 10: checkpoints ---------------------------------------------------------------------

def _optimise(module, optimizer, device, path, steps=4, stop_after=None):
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))

    def update(step, _):
        return apply_update(optimizer, module(x).square().mean())

    return optimise(module, optimizer, ProbeConfig(steps=steps, checkpoint_every=2, log_every=2), update, each_step,
                    key="module", identity={"what": "a test"}, device=device, label="step", cause="",
                    checkpoint_path=path, stop_after=stop_after)


def test_a_checkpoint_resumes_on_its_own_device_type_only(tmp_path, capsys):
    """The random draws of an intervention are made on its device: a CPU checkpoint is never
    continued on a GPU (here the meta device stands for one), nor the reverse."""
    path = tmp_path / "ck.pt"
    module = torch.nn.Linear(4, 1)
    _optimise(module, torch.optim.AdamW(module.parameters()), "cpu", path, stop_after=2)
    assert torch.load(path, weights_only=False)["identity"]["device type"] == "cpu"
    record = _optimise(module, torch.optim.AdamW(module.parameters()), "meta", path, stop_after=2)
    assert record["resumed_from"] == 0 and "(device type differ)" in capsys.readouterr().err
    record = _optimise(module, torch.optim.AdamW(module.parameters()), "cpu", path)
    assert record["resumed_from"] == 0  # the meta run's checkpoint is not the CPU's either
    state = torch.load(path, weights_only=False)  # a checkpoint from before device types: a CPU's
    del state["identity"]["device type"]
    state["step"] = 2
    torch.save(state, path)
    assert _optimise(module, torch.optim.AdamW(module.parameters()), "cpu", path)["resumed_from"] == 2


def test_a_resumed_adamw_keeps_its_step_counters_on_the_cpu(tmp_path):
    """A fresh non-fused AdamW keeps `step` on the CPU (on a GPU, Adam would otherwise read it back
    every step). After a resume on another device (meta, standing for a GPU: the checkpoint made
    and loaded there), `step` is still on the CPU and the moments are with the parameters."""
    path = tmp_path / "ck.pt"
    module = torch.nn.Linear(4, 1)
    _optimise(module, torch.optim.AdamW(module.parameters()), "meta", path)  # computed on the CPU
    module = torch.nn.Linear(4, 1, device="meta")
    optimizer = torch.optim.AdamW(module.parameters())
    assert _optimise(module, optimizer, "meta", path)["resumed_from"] == 4  # finished: loaded, no step
    state = optimizer.state[module.weight]
    assert state["step"].device.type == "cpu" and state["step"].item() == 4
    assert state["exp_avg"].device.type == "meta"


# --- 11: the LSTM rows -------------------------------------------------------------------------

def test_gpu_check_has_lstm_intervention_rows_and_says_which_waits_are_exempt(tmp_path):
    """torch.nn's LSTM reads lengths back at every encode, linear DAS's matrix_exp rotation reads a
    norm back: on a GPU their steps wait (exempt, the reason in each row); nothing else may wait."""
    result = _quick_run(tmp_path)
    lstm = [r for r in result["sync"] if r["cell"] == "lstm"]
    assert [(r["kind"], r["rotation"]) for r in lstm] == [("linear_unigram", "cayley"), ("linear_bigram", "cayley"),
                                                          ("onion", None), ("onion_control", None)]
    assert all(r["loop"] == "intervention" and r["passed"] and "reads the lengths back" in r["exempt"] for r in lstm)
    assert {(r["cell"], r["kind"]) for r in result["agreement"] if r["cell"] == "lstm"} == \
        {("lstm", r["kind"]) for r in lstm}
    das = {(r["kind"], r["rotation"]): r["exempt"] for r in result["sync"] if r["cell"] == "gru" and r["rotation"]}
    assert sorted(das) == [(k, rotation) for k in ("linear_bigram", "linear_unigram") for rotation in ("cayley", "matrix_exp")]
    assert all(("matrix exponential" in (reason or "")) == (rotation == "matrix_exp") for (_, rotation), reason in das.items())
    assert not [r for r in result["sync"] if r["exempt"] and r["cell"] == "gru" and r["rotation"] != "matrix_exp"]
    assert gpu_check.sync_exemption("lstm", "intervention", "onion", "unrolled") is None
    assert gpu_check.sync_exemption("lstm", "intervention", "linear_bigram", "unrolled", "cayley") is None
    assert gpu_check.sync_exemption("gru", "intervention", "linear_bigram", "unrolled", "cayley") is None


# --- 12: pinned uploads ------------------------------------------------------------------------

def test_upload_pins_host_memory_only_for_a_gpu(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: calls.append("pin") or self.clone())
    real_to = torch.Tensor.to
    monkeypatch.setattr(torch.Tensor, "to", lambda self, device, non_blocking=False:
                        calls.append((str(device), non_blocking)) or real_to(self, "cpu"))
    host = torch.arange(3)
    runtime.upload(host, "cuda:0")
    assert calls == ["pin", ("cuda:0", True)]
    calls.clear()
    runtime.upload(host, "cpu")
    assert calls == [("cpu", True)]  # on the CPU: nothing pinned, the tensor itself


def test_every_per_step_upload_goes_through_upload(monkeypatch):
    from onion.interventions import counterfactuals, make_counterfactuals
    from onion.model import RepeatRNN
    from onion.probes import modules
    from onion.probes import train as probe_train
    from onion import training
    uploads = []

    def spy(tensor, device):
        uploads.append(tensor.shape)
        return runtime.upload(tensor, device)

    for module in (training, probe_train, modules, counterfactuals):
        monkeypatch.setattr(module, "upload", spy)
    data = random_sequences(np.random.default_rng(0), 64, DataConfig())
    training.packed_batches(RepeatRNN(30, 8), data, "cpu")(np.arange(16))
    assert len(uploads) == 1  # the batch's positions
    probe = make_probe("gru_no_input", 8, 30, 9)
    probe.unroll(compile=False)
    next(probe_batches(probe, data.lengths, 16, 0, "cpu")(0, 1))
    assert len(uploads) == 4  # the indices of a chunk of steps, the plan's order and positions
    cf = make_counterfactuals("onion", torch.as_tensor(data.tokens), torch.as_tensor(data.lengths),
                              torch.Generator().manual_seed(0), 30)
    cf.to("cpu")
    assert len(uploads) == 4 + 5  # every field but the absent source


def test_the_training_record_names_the_machine(tmp_path):
    """Runs of the same code can round differently on other CPUs: every record says what ran it."""
    module = torch.nn.Linear(4, 1)
    record = _optimise(module, torch.optim.AdamW(module.parameters()), "cpu", tmp_path / "ck.pt")
    assert record["machine"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert record["machine"]["torch"] == torch.__version__ and record["machine"]["cpu"]
    assert "gpu" not in record["machine"]
