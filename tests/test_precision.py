"""Mixed precision in the unrolled kernel (train.precision, interventions.precision): bf16 rounds the
inputs of the recurrent product h·W_hhᵀ and nothing else. Against the fp32 path: the same loss and
gradients to a bf16 tolerance, bf16 where it belongs and nowhere else (forward and backward), fp32
unchanged, and no job runs fp32 under bf16's name."""

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from onion.config import DataConfig, TrainConfig, identity_settings
from onion.config_checks import cross_field_problems, load_yaml
from onion.data import make_datasets, random_sequences
from onion.interventions import InterventionConfig, intervention_step, make_intervention, train_intervention
from onion.model import RepeatRNN
from onion.model import unrolled
from onion.training import make_optimizer, packed_batches, train_model, training_kernel, unrolled_batch_loss

REPO = Path(__file__).resolve().parents[1]
VIEWS = {"t", "transpose", "permute", "view", "_unsafe_view", "expand", "detach", "alias", "as_strided",
         "slice", "split", "chunk", "unbind", "select"}


class DtypeLog(TorchDispatchMode):
    """Every ATen call (forward and backward) that touches a bf16 tensor: its name."""

    def __init__(self):
        super().__init__()
        self.bf16_ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        tensors = [t for t in torch.utils._pytree.tree_leaves((args, kwargs, out)) if isinstance(t, torch.Tensor)]
        if any(t.dtype == torch.bfloat16 for t in tensors):
            self.bf16_ops.append(func.overloadpacket.__name__)
        return out


def _batch(model: RepeatRNN, n: int = 48, seed: int = 0):
    data = random_sequences(np.random.default_rng(seed), n, DataConfig())
    return packed_batches(model, data, "cpu")(np.arange(n))


def _loss_and_grads(model: RepeatRNN, batch, precision: str):
    loss = unrolled_batch_loss(model, unrolled.packed_loss, *batch, precision=precision)
    return loss, torch.autograd.grad(loss, list(model.parameters()))


@pytest.mark.parametrize("cell", ["gru", "lstm", "rnn_tanh"])
def test_bf16_loss_and_gradients_are_fp32s_to_bf16_tolerance(cell):
    """bf16 has 8 significant bits (relative rounding 2^-9 = 0.002): over a batch of sequences of up
    to 18 steps the loss and every gradient stay within 1 % (in norm) of fp32's (measured: 0.01-0.3 %
    at N = 64), and differ from them by far more than fp32 rounding."""
    torch.manual_seed(0)
    model = RepeatRNN(30, 64, cell=cell)
    batch = _batch(model)
    loss32, grads32 = _loss_and_grads(model, batch, "fp32")
    loss16, grads16 = _loss_and_grads(model, batch, "bf16")
    torch.testing.assert_close(loss16, loss32, rtol=2e-3, atol=0)
    errors = {name: ((a - b).norm() / b.norm()).item()
              for (name, _), a, b in zip(model.named_parameters(), grads16, grads32)}
    assert all(g.dtype == torch.float32 for g in grads16)
    assert max(errors.values()) < 0.01, errors
    assert errors["rnn.weight_hh_l0"] > 1e-4, errors  # the product did run in bf16


@pytest.mark.parametrize("cell", ["gru", "lstm", "rnn_tanh"])
def test_bf16_touches_only_the_recurrent_products_inputs(cell):
    """Forward and backward: every operation on a bf16 tensor is a cast, a view or the matrix
    product, and the product runs in bf16 at every step. So the state and the gate arithmetic are
    fp32, and W_hh's gradient is summed over the steps in fp32 (a cast hoisted out of the loop would
    sum it in bf16: an `add` on bf16 tensors)."""
    torch.manual_seed(0)
    model = RepeatRNN(30, 16, cell=cell)
    batch = _batch(model)
    with DtypeLog() as log:
        _loss_and_grads(model, batch, "bf16")
    steps = len(batch[2])
    assert set(log.bf16_ops) <= {"mm", "_to_copy"} | VIEWS, sorted(set(log.bf16_ops) - VIEWS)
    # per step: the forward product; backward dW_hh and dh (none for the constant zero start)
    assert log.bf16_ops.count("mm") == 3 * steps - 1
    assert log.bf16_ops.count("_to_copy") >= 3 * steps  # h, W_hh in; the product out
    with DtypeLog() as log:
        _loss_and_grads(model, batch, "fp32")
    assert log.bf16_ops == []


def test_fp32_is_the_path_as_before():
    """precision fp32 (the default) computes b_hh + h W_hhᵀ with the one addmm it always did:
    the same numbers bit for bit as the default call and as the bare addmm."""
    torch.manual_seed(0)
    model = RepeatRNN(30, 16)
    batch = _batch(model)
    loss_default = unrolled_batch_loss(model, unrolled.packed_loss, *batch)
    loss_fp32, _ = _loss_and_grads(model, batch, "fp32")
    assert torch.equal(loss_default, loss_fp32)
    h, w, b = torch.randn(5, 16), model.rnn.weight_hh_l0, model.rnn.bias_hh_l0
    assert torch.equal(unrolled.hidden_gates(h, w, b), torch.addmm(b, h, w.T))
    assert TrainConfig().precision == "fp32" and InterventionConfig().precision == "fp32"


@pytest.mark.slow  # compiles the bf16 training step: a minute or more on a cold cache
def test_compiled_bf16_training_matches_eager_bf16_and_learns():
    cfg = DataConfig(n_symbols=5, min_length=2, max_length=3, n_train=120, n_valid=20, das_length=3,
                     n_das_valid=10, n_das_train=20)
    train, valid = make_datasets(cfg)
    torch.manual_seed(0)
    model = RepeatRNN(5, 8)
    batch = packed_batches(model, train, "cpu")(np.arange(16))
    weight_hh = model.rnn.weight_hh_l0

    def gradient(loss, precision):  # of W_hh
        return torch.autograd.grad(unrolled_batch_loss(model, loss, *batch, precision=precision), weight_hh)[0]

    def error(a, b):
        return ((a - b).norm() / b.norm()).item()

    eager = gradient(unrolled.packed_loss, "bf16")
    assert error(gradient(unrolled.compiled_loss(), "bf16"), eager) < 1e-4  # measured: 0
    assert error(gradient(unrolled.packed_loss, "fp32"), eager) > 1e-3  # measured: 0.0026
    trained = {}
    for precision in ("fp32", "bf16"):  # from the same start: the setting reaches train_model's steps
        copy = RepeatRNN(5, 8)
        copy.load_state_dict(model.state_dict())
        record = train_model(copy, train, valid, TrainConfig(steps=150, batch_size=16, lr=0.01, log_every=50,
                                                             eval_every=0, precision=precision), 0, "cpu",
                             kernel="unrolled")
        assert record["finished"] and record["final_loss"] < 1.0
        trained[precision] = copy.rnn.weight_hh_l0.detach()
    assert trained["bf16"].dtype == torch.float32 and not torch.equal(trained["bf16"], trained["fp32"])


def test_a_bf16_intervention_step_updates_as_the_fp32_one():
    """The frozen model's encoder and decoder in bf16: the loss and the updated intervention
    parameters within bf16 tolerance of fp32's."""
    torch.manual_seed(3)
    model = RepeatRNN(30, 32)
    for p in model.parameters():
        p.requires_grad_(False)
    data = random_sequences(np.random.default_rng(0), 64, DataConfig(), length=9)
    tokens, lengths = torch.as_tensor(data.tokens), torch.as_tensor(data.lengths)
    results = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        runner = unrolled.UnrolledRepeatModel(model, compile=False, precision=precision)
        intervention = make_intervention("linear_unigram", 30, 32, 9)
        optimizer = make_optimizer(intervention.parameters(), InterventionConfig(lr=0.01))
        loss = intervention_step(runner, intervention, optimizer, "linear_unigram", tokens, lengths, 32, 0, 0)
        results[precision] = (loss, [p.detach().clone() for p in intervention.parameters()])
    torch.testing.assert_close(results["bf16"][0], results["fp32"][0], rtol=5e-3, atol=0)
    for a, b in zip(results["bf16"][1], results["fp32"][1]):
        torch.testing.assert_close(a, b, rtol=0, atol=2e-3)  # Adam's first step moves each entry by lr


def test_bf16_never_runs_as_fp32():
    """torch.nn's layers run fp32 only: bf16 with kernel nn, or auto on CUDA, stops the job at its
    start and the workflow before any job, naming the setting."""
    model = RepeatRNN(30, 8)
    train = random_sequences(np.random.default_rng(0), 64, DataConfig())
    optimizer = make_optimizer(model.parameters(), TrainConfig())
    with pytest.raises(ValueError, match=r"train\.precision: bf16 runs only in the unrolled kernel"):
        training_kernel("nn", model, optimizer, train, "cpu", "bf16")
    with pytest.raises(ValueError, match=r"train\.precision: bf16.*kernel auto on cuda"):
        training_kernel("auto", model, optimizer, train, "cuda", "bf16")
    with pytest.raises(ValueError, match=r"train\.precision: bf16"):
        train_model(model, train, train, TrainConfig(steps=1, precision="bf16"), 0, "cpu", kernel="nn")
    with pytest.raises(ValueError, match=r"interventions\.precision: bf16"):
        unrolled.frozen_runner(model, "nn", "cpu", "bf16")
    with pytest.raises(ValueError, match=r"interventions\.precision: bf16"):  # the setting reaches the job
        train_intervention(model, "onion", train, InterventionConfig(steps=1, precision="bf16"), 0, "cpu", 9,
                           kernel="nn")
    assert isinstance(unrolled.frozen_runner(model, "unrolled", "cpu", "bf16"), unrolled.UnrolledRepeatModel)
    with pytest.raises(ValueError, match="train.precision must be one of"):
        TrainConfig(precision="fp16")
    config = load_yaml(REPO / "config.yaml")
    config["kernel"], config["train"]["precision"] = "nn", "bf16"
    config["grids"]["default"]["interventions_by_kind"]["linear_bigram"]["precision"] = "bf16"
    problems = cross_field_problems(config)
    assert [p.split(":")[0] for p in problems] == ["config key 'train.precision'",
                                                   "config key 'interventions.precision'"]
    assert "(linear_bigram)" in problems[1]
    config["kernel"] = "auto"
    assert cross_field_problems(config) == [] and len(cross_field_problems(config, lambda: True)) == 2
    config["kernel"] = "unrolled"
    assert cross_field_problems(config, lambda: True) == []


def test_a_top_level_bf16_survives_the_grids_overrides():
    """The schema has no `default:` for precision: Snakemake's validate would write it into each
    grid's `interventions` override, where fp32 would replace a top-level bf16."""
    from snakemake.utils import validate
    config = load_yaml(REPO / "config.yaml")
    config["interventions"]["precision"] = "bf16"
    validate(config, str(REPO / "onion/config.schema.yaml"))
    assert "precision" not in config["grids"]["default"]["interventions"]


def test_checkpoints_made_before_the_settings_existed_still_resume():
    """fp32 and matrix_exp leave a checkpoint's identity as it was; other values enter it."""
    assert "precision" not in identity_settings(TrainConfig())
    assert identity_settings(TrainConfig(precision="bf16"))["precision"] == "bf16"
    assert not {"precision", "rotation"} & set(identity_settings(InterventionConfig()))
    assert identity_settings(InterventionConfig(rotation="cayley"))["rotation"] == "cayley"


@pytest.mark.slow  # compiles fp32 and bf16 training and two DAS rotations: minutes on a cold cache
def test_benchmark_times_bf16_against_nn_and_das_per_rotation(capsys, tmp_path):
    """benchmark-training --precisions fp32 bf16: one row per size with both unrolled precisions
    against nn; --das: linear unigram DAS per rotation, and R's share of a step."""
    from onion.cli import main
    assert main(["benchmark-training", "--sizes", "8", "--steps", "2", "--rounds", "1",
                 "--precisions", "fp32", "bf16", "--out", str(tmp_path / "t.csv")]) == 0
    header = (tmp_path / "t.csv").read_text().splitlines()[0].split(",")
    assert {"nn_steps_per_s", "unrolled_steps_per_s", "unrolled_bf16_steps_per_s", "speedup",
            "unrolled_bf16_speedup", "unrolled_bf16_compile_s"} <= set(header)
    assert main(["benchmark-training", "--das", "--sizes", "8", "--steps", "2", "--rounds", "1",
                 "--out", str(tmp_path / "d.csv")]) == 0
    rows = (tmp_path / "d.csv").read_text().splitlines()
    assert rows[0] == "size,rotation,precision,threads,steps,steps_per_s,fixed_R_steps_per_s,rotation_share"
    assert [r.split(",")[1] for r in rows[1:]] == ["matrix_exp", "cayley"]
    capsys.readouterr()
