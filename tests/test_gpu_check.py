"""The prepared GPU check in its scaled-down CPU version, its projection arithmetic, and the GPU
slot locks that let several jobs share one GPU."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from onion import benchmark, gpu_check
from onion.runtime import claim_gpu, release_gpu_slots

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # compiles every loop of both cells, each kind and rotation: 4-11 minutes on a cold cache
def test_gpu_check_scaled_down_on_cpu(tmp_path):
    out = tmp_path / "gpu-check.json"
    result = gpu_check.run("cpu", sizes=[8], steps=3, jobs=[1, 2], concurrency_size=8,
                           concurrency_steps=10, startup_seconds=1.0, out=str(out),
                           config_path=str(REPO / "config.yaml"), kernels=("nn", "unrolled"))
    assert result["passed"] and json.loads(out.read_text())["passed"]
    loops = {(r["loop"], r["kind"]) for r in result["agreement"] if r["kernel"] == "nn"}
    assert len(loops) == 10 and ("train", "model") in loops and ("probe", "gru_no_input") in loops
    unrolled = {(r["loop"], r["kind"]) for r in result["agreement"] if r["kernel"] == "unrolled"}
    assert unrolled == loops - {("probe", "linear"), ("probe", "mlp"), ("probe", "onion")}
    # the same function on the same device: nn exactly, unrolled to float rounding
    assert all(r["loss_rel_diff"] == 0 and r["grad_rel_diff"] == 0 for r in result["agreement"]
               if r["kernel"] == "nn")
    assert all(r["loss_rel_diff"] < 1e-5 and r["grad_rel_diff"] < 1e-3 for r in result["agreement"])
    # the LSTM's interventions at the first size, both kernels; torch.nn's wait on a GPU (exempt, with why)
    lstm = [(r["kind"], r["kernel"], bool(r["exempt"])) for r in result["sync"] if r["cell"] == "lstm"]
    assert sorted(lstm) == sorted((k, kernel, kernel == "nn") for kernel in ("nn", "unrolled")
                                  for k in ("linear_unigram", "linear_bigram", "onion", "onion_control"))
    # linear DAS with both rotations; only matrix_exp's wait is exempt
    das = {(r["kind"], r["rotation"], r["kernel"], bool(r["exempt"])) for r in result["sync"]
           if r["cell"] == "gru" and r["loop"] == "intervention" and r["kind"].startswith("linear")}
    assert das == {(k, rotation, kernel, rotation == "matrix_exp") for k in ("linear_unigram", "linear_bigram")
                   for rotation in ("matrix_exp", "cayley") for kernel in ("nn", "unrolled")}
    assert all(r["passed"] and r["sync_free"] is None and r["error"] is None for r in result["sync"])
    assert {r["ran"] for r in result["agreement"] + result["sync"] + result["speeds"]} == {"nn", "unrolled (compiled)"}
    assert result["precision"]["tf32"] is False and result["errors"] == [] and result["finished"]
    assert {r["kernel"] for r in result["speeds"]} == {"nn", "unrolled"}
    assert all(r["steps_per_second"] > 0 for r in result["speeds"])
    assert [r["jobs"] for r in result["concurrency"]] == [1, 2]
    assert len(result["concurrency"][1]["per_job_steps_per_second"]) == 2
    for row in result["projection"]:  # 60 models, each trained then analysed
        assert row["critical_path_hours"] <= row["wall_hours"] <= row["job_hours"] * (1 + 1e-9)
        assert row["wall_hours"] >= row["job_hours"] / row["parallel_jobs"] * (1 - 1e-9)


def test_wall_time_simulation_known_answers():
    # one model: training 1, two analyses of 1 each
    assert benchmark.simulate_wall_time([(1.0, [1.0, 1.0])], workers=1) == 3.0
    assert benchmark.simulate_wall_time([(1.0, [1.0, 1.0])], workers=2) == 2.0
    # two models on two slots: A trains 0-2 then analyses 2-3; B trains 0-1 then analyses 1-4
    assert benchmark.simulate_wall_time([(2.0, [1.0]), (1.0, [3.0])], workers=2) == 4.0


def test_speed_interpolation_and_extrapolation():
    speeds = [{"loop": "train", "kind": "model", "size": 64, "steps_per_second": 100.0},
              {"loop": "train", "kind": "model", "size": 256, "steps_per_second": 25.0}]
    assert benchmark.speed_at(speeds, "train", "model", 128) == pytest.approx(50.0)  # log-log
    assert benchmark.speed_at(speeds, "train", "model", 512) == pytest.approx(25.0 / 4)  # N^-2
    assert benchmark.speed_at(speeds, "train", "model", 48) == pytest.approx(100.0)  # held


def test_paper_grid_is_read_from_the_config():
    models, steps = benchmark.paper_grid(str(REPO / "config.yaml"))
    assert len(models) == 60 and {s for _, s, _ in models} == {48, 64, 128, 256, 512, 1024}
    assert steps == {"train": 40000, "intervention": 60000, "probe": 60000}


def test_gpu_slots_spread_jobs_round_robin_and_free_on_exit(tmp_path):
    try:
        assert [claim_gpu(2, tmp_path) for _ in range(3)] == [(0, 0), (1, 1), (2, 0)]
        release_gpu_slots()
        holder = subprocess.Popen(
            [sys.executable, "-c", "import sys, time; from onion.runtime import claim_gpu; "
             f"print(claim_gpu(2, {str(tmp_path)!r}), flush=True); time.sleep(60)"],
            stdout=subprocess.PIPE, text=True)
        assert holder.stdout.readline().strip() == "(0, 0)"  # another job holds slot 0
        assert claim_gpu(2, tmp_path) == (1, 1)
        holder.kill()
        holder.wait()
        time.sleep(0.1)
        assert claim_gpu(2, tmp_path) == (0, 0)  # a killed job's slot is free again
    finally:
        release_gpu_slots()


def test_gpu_check_needs_no_package_beyond_a_pytorch_image():
    """A GPU machine's image has torch, numpy, pyarrow and yaml, but not jsonschema or snakemake."""
    code = ("import sys; sys.modules['jsonschema'] = None; sys.modules['snakemake'] = None; "
            "from onion import benchmark, gpu_check; "
            f"print(len(benchmark.paper_grid({str(REPO / 'config.yaml')!r})[0]))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "60", result.stderr[-2000:]


@pytest.mark.slow  # compiles the loops of both cells with both kernels: minutes on a cold cache
def test_gpu_check_says_when_the_two_sides_disagree(tmp_path, monkeypatch, capsys):
    """The comparison can fail: a device side whose gradients differ (here, the probe loops' second
    computation scaled by 1.5) is reported loop by loop, and the command exits non-zero."""
    real = gpu_check._loss_and_grads

    def device_side_off(loop, kind, setup, device, seed=0, kernel="nn", rotation=None):
        loss, grads = real(loop, kind, setup, device, seed, kernel, rotation)
        if loop == "probe" and not isinstance(device, str):  # the reference side is the string "cpu"
            return loss * 1.5, [g * 1.5 for g in grads]
        return loss, grads

    monkeypatch.setattr(gpu_check, "_loss_and_grads", device_side_off)
    from onion.cli import main
    with pytest.raises(SystemExit) as stop:
        main(["gpu-check", "--device", "cpu", "--sizes", "8", "--checks-only", "--out", str(tmp_path / "g.json")])
    assert stop.value.code == 1
    result = json.loads((tmp_path / "g.json").read_text())
    disagree = {(r["loop"], r["kind"]) for r in result["agreement"] if not r["agree"]}
    assert disagree == {("probe", k) for k in ("linear", "mlp", "onion", "gru_autoregressive", "gru_no_input")}
    err = capsys.readouterr().err
    # the five nn probes, and the two GRU probes again with the unrolled kernel
    assert err.count("<-- DISAGREE") == 7 and "gpu-check FAILED" in err
