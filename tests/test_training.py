"""The training loop's guarantees: exact resume after a SIGKILL with a readable log, atomic checkpoints, sweeps that
survive a failed run, identical weights on every DDP rank, and model choices that do not fit named in the error.

Every run is tiny (24 synthetic 64-pixel images, the smallest trunk, 6 steps an epoch, one thread a process) and the
helpers here (:data:`TINY`, :func:`tiny`, :func:`run_app`, :func:`tiny_checkpoint`) serve ``test_cli.py`` too.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytest
import torch

from bottomup import model as model_module
from bottomup.config import build_method, build_trunk, compose
from bottomup.data import build_dataset
from bottomup.errors import CheckpointError, ConfigError
from bottomup.evaluation import inference
from bottomup.model import autocast_dtype, mixed_precision, precision_description
from bottomup.skeletons import COCO
from bottomup.training import checkpoint
from bottomup.training.trainer import CHECKPOINT, LOG, Trainer, read_log
from bottomup.trunks.base import load_pretrained

# The smallest useful run: 6 optimizer steps an epoch, a metric line every step, evaluation after the last epoch.
TINY = ["trunk=hrnet_w8_small", "method=ae", "data.synthetic.num_train=24", "data.synthetic.num_val=8",
        "data.input_size=64", "batch_size=4", "workers=0", "threads=1", "device=cpu", "log_every=1", "eval_every=0",
        "eval.batch_size=8"]
# Subprocesses start from torch and Hydra imports (a few seconds); this bounds a hung one.
TIMEOUT = 240


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """:data:`TINY` with the synthetic set generated once into a folder of this session (given as ``data.root``, so
    neither the user's cache nor the environment of other tests is touched)."""
    overrides = TINY + [f"data.root={tmp_path_factory.mktemp('cache') / 'synthetic'}"]
    build_dataset(compose("train", overrides).data, "train")
    return overrides


@contextmanager
def own_threads() -> Iterator[None]:
    """Restore torch's thread count afterwards: a Trainer built in this process sets it from ``threads``."""
    threads = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def keep_threads() -> Iterator[None]:
    with own_threads():
        yield


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny: list[str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained checkpoint of the tiny AE model whose decoder keeps no peak (detection threshold 1e9), so
    evaluating it yields zero detections."""
    with own_threads():
        trainer = Trainer(compose("train", tiny + ["method.decoder.detection_threshold=1e9"]),
                          tmp_path_factory.mktemp("checkpoint"))
    return checkpoint.save(trainer.run_dir / CHECKPOINT, trainer.state())


def clean_env() -> dict[str, str]:
    """This process's environment without bottomup's and Hydra's debug switches."""
    return {k: v for k, v in os.environ.items() if k not in ("BOTTOMUP_DEBUG", "HYDRA_FULL_ERROR")}


def run_app(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python -m module args...`` in ``cwd``, its output captured (environment: :func:`clean_env`)."""
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=clean_env(), capture_output=True,
                          text=True, timeout=TIMEOUT)


def equal_states(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[str]:
    """The names of the entries in which two state_dicts differ (exactly: torch.equal)."""
    return sorted(set(a) ^ set(b)) + [k for k in a if k in b and not torch.equal(a[k], b[k])]


# --------------------------------------------------------------------------------------------------------------------
# Killed and resumed


@pytest.fixture(scope="module")
def killed_run(tiny: list[str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A 3-epoch run SIGKILLed as soon as it logs a step of its second epoch and started again, and the same run
    uninterrupted (in this process)."""
    root = tmp_path_factory.mktemp("resume")
    args = [*tiny, "epochs=3"]
    run_dir = root / "killed"
    with open(root / "first.out", "w") as out:
        first = subprocess.Popen([sys.executable, "-m", "bottomup.train", *args, f"hydra.run.dir={run_dir}"],
                                 cwd=root, env=clean_env(), stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + TIMEOUT
        try:
            while not any(e.get("type") == "step" and e["epoch"] >= 1 for e in read_log(run_dir / LOG)):
                assert first.poll() is None, (root / "first.out").read_text()
                assert time.monotonic() < deadline, "the first run never reached its second epoch"
                time.sleep(0.01)
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait()
    log_after_kill = read_log(run_dir / LOG)
    epoch_at_kill = checkpoint.load(run_dir / CHECKPOINT)["epoch"]
    status_at_kill = json.loads((run_dir / "status.json").read_text())
    restart = run_app("bottomup.train", *args, f"hydra.run.dir={run_dir}", cwd=root)
    with own_threads():
        reference = Trainer(compose("train", args), root / "reference")
        reference_metrics = reference.fit()
    return {"run_dir": run_dir, "log_after_kill": log_after_kill, "epoch_at_kill": epoch_at_kill,
            "status_at_kill": status_at_kill, "restart": restart, "reference": reference,
            "reference_metrics": reference_metrics}


def test_killed_run_resumes_from_its_last_checkpoint_with_a_readable_log(killed_run: dict[str, Any]) -> None:
    restart, run_dir, epoch = killed_run["restart"], killed_run["run_dir"], killed_run["epoch_at_kill"]
    # Killed in its second epoch: the checkpoint of the first is there, and the log held steps past it.
    assert epoch >= 1
    # status.json followed the epochs (bottomup.report shows how far a live or dead run got).
    assert killed_run["status_at_kill"] == {"status": "running", "epoch": epoch}
    assert any(e["epoch"] >= epoch for e in killed_run["log_after_kill"])
    assert restart.returncode == 0, restart.stderr
    assert f"resuming at epoch {epoch} on cpu x1 threads, {precision_description(torch.device('cpu'))}; run folder" \
        in restart.stdout
    log = read_log(run_dir / LOG)
    # Every step logged once, in order: the steps of the interrupted epoch were dropped and done again.
    assert [e["step"] for e in log if e["type"] == "step"] == list(range(1, 3 * 6 + 1))
    assert [e["epoch"] for e in log if e["type"] == "eval"] == [2]
    assert json.loads((run_dir / "status.json").read_text())["status"] == "done"


def test_resumed_run_ends_with_the_weights_of_an_uninterrupted_run(killed_run: dict[str, Any]) -> None:
    state = checkpoint.load(killed_run["run_dir"] / CHECKPOINT)
    reference: Trainer = killed_run["reference"]
    assert (state["epoch"], state["step"]) == (reference.epoch, reference.step) == (3, 18)
    assert equal_states(state["model"], reference.model.state_dict()) == []
    metrics = json.loads((killed_run["run_dir"] / "metrics.json").read_text())
    assert metrics["AP"] == killed_run["reference_metrics"]["AP"]


def test_resume_cuts_the_log_back_and_removes_a_partial_checkpoint(tiny: list[str], tmp_path: Path,
                                                                  keep_threads: None) -> None:
    cfg = compose("train", [*tiny, "epochs=2"])
    trainer = Trainer(cfg, tmp_path)
    trainer.epoch, trainer.step = 1, 6
    checkpoint.save(tmp_path / CHECKPOINT, trainer.state())
    kept = [{"type": "step", "epoch": 0, "step": 6}, {"type": "eval", "epoch": 0, "AP": 0.0}]
    repeated = {"type": "step", "epoch": 1, "step": 7}
    # The last line was cut short by the kill, and so was a checkpoint write (its temporary file never renamed).
    (tmp_path / LOG).write_text("".join(json.dumps(e) + "\n" for e in [*kept, repeated]) + '{"type": "step", "ep')
    partial = tmp_path / f".{CHECKPOINT}.0123456789ab.tmp"
    partial.write_bytes(b"PK\x03\x04 cut short")
    assert read_log(tmp_path / LOG) == [*kept, repeated]

    resumed = Trainer(cfg, tmp_path)
    assert resumed.resume()
    assert (resumed.epoch, resumed.step) == (1, 6)
    assert read_log(tmp_path / LOG) == kept
    assert not partial.exists()
    assert checkpoint.load(tmp_path / CHECKPOINT)["epoch"] == 1


def test_fresh_start_drops_the_log_of_a_run_killed_before_its_first_checkpoint(tiny: list[str], tmp_path: Path,
                                                                                keep_threads: None) -> None:
    (tmp_path / LOG).write_text(json.dumps({"type": "step", "epoch": 0, "step": 1}) + '\n{"type": "st')
    trainer = Trainer(compose("train", tiny), tmp_path)
    assert not trainer.resume()
    assert read_log(tmp_path / LOG) == [] and (tmp_path / LOG).read_text() == ""


def test_mixed_precision_is_float16_on_cuda_bfloat16_on_cpus_with_native_bf16_and_float32_elsewhere(
        monkeypatch: pytest.MonkeyPatch) -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert autocast_dtype(cuda) is torch.float16 and precision_description(cuda) == "float16 autocast"
    monkeypatch.setattr(model_module, "cpu_bf16_supported", lambda: True)
    assert autocast_dtype(cpu) is torch.bfloat16 and precision_description(cpu) == "bfloat16 autocast"
    with mixed_precision(cpu):
        assert torch.get_autocast_dtype("cpu") is torch.bfloat16 and torch.is_autocast_enabled("cpu")
    monkeypatch.setattr(model_module, "cpu_bf16_supported", lambda: False)
    assert autocast_dtype(cpu) is None
    assert precision_description(cpu) == "float32 (this CPU has no native bfloat16)"
    with mixed_precision(cpu):
        assert not torch.is_autocast_enabled("cpu")
    for device in (cpu, cuda):
        assert autocast_dtype(device, enabled=False) is None and precision_description(device, False) == "float32"


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_rng_state_restores_from_a_checkpoint_loaded_onto_the_gpu(tmp_path: Path) -> None:
    """A run resumed on a GPU loads its checkpoint there, RNG states included."""
    state = {"model": {}, "config": {}, "skeleton": {}, "rng": checkpoint.rng_state()}
    path = checkpoint.save(tmp_path / "rng.pt", state)
    expected = torch.rand(4), torch.rand(4, device="cuda")
    checkpoint.set_rng_state(checkpoint.load(path, map_location="cuda")["rng"])
    torch.testing.assert_close((torch.rand(4), torch.rand(4, device="cuda")), expected, atol=0, rtol=0)


def test_evaluation_runs_the_network_at_the_trained_size_and_other_scales_at_multiples_of_64() -> None:
    sizes = []

    class Recorder:
        codec = build_method("ae", COCO).codec

        def predict(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            sizes.append(x.shape[-1])
            maps = torch.zeros(x.shape[0], 17, -(-x.shape[-2] // 4), -(-x.shape[-1] // 4))
            return {"heatmaps": maps, "tags": maps}

    out = inference.forward(Recorder(), torch.zeros(2, 3, 160, 160), inference.InferenceOptions(scales=[1.0, 1.5]))
    assert sizes == [160, 256]
    assert out["heatmaps"].shape == (2, 17, 40, 40)


def test_checkpoint_of_another_method_is_not_resumed(tiny: list[str], tmp_path: Path, keep_threads: None) -> None:
    trainer = Trainer(compose("train", tiny), tmp_path)
    checkpoint.save(tmp_path / CHECKPOINT, trainer.state())
    other = Trainer(compose("train", [*tiny, "method=openpose"]), tmp_path)
    with pytest.raises(CheckpointError) as info:
        other.resume()
    assert str(tmp_path / CHECKPOINT) in str(info.value)
    assert "'ae' there, 'openpose' here" in str(info.value)


def test_extending_a_cosine_run_warns_that_the_schedule_changes(tiny: list[str], tmp_path: Path, keep_threads: None,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    cosine = [*tiny, "optim.schedule=cosine"]
    checkpoint.save(tmp_path / CHECKPOINT, Trainer(compose("train", cosine), tmp_path).state())
    assert Trainer(compose("train", cosine), tmp_path).resume()
    assert "warning" not in capsys.readouterr().err
    epochs = int(compose("train", cosine).epochs)
    assert Trainer(compose("train", [*cosine, f"epochs={epochs + 3}"]), tmp_path).resume()
    assert f"trained towards epochs={epochs}; going on to epochs={epochs + 3}" in capsys.readouterr().err


def test_a_run_starts_from_pretrained_trunk_weights_and_resumes_without_them(
        tiny: list[str], tmp_path: Path, keep_threads: None, capsys: pytest.CaptureFixture[str]) -> None:
    torch.manual_seed(123)
    torch.save(build_trunk(compose("train", tiny).trunk).state_dict(), tmp_path / "trunk.pth")
    run = compose("train", [*tiny, f"trunk.pretrained={tmp_path / 'trunk.pth'}", "epochs=1", "eval.max_images=1"])
    Trainer(run, tmp_path / "run").fit()
    assert re.search(r"trunk weights from .*trunk.pth: \d+ tensors loaded, 0 of the trunk's left as initialised",
                     capsys.readouterr().out)
    (tmp_path / "trunk.pth").unlink()  # a resumed run reads its checkpoint, not the starting weights
    again = Trainer(run, tmp_path / "run")
    again.fit()
    assert again.epoch == 1 and "resuming at epoch 1" in capsys.readouterr().out


def test_a_checkpoint_of_this_library_gives_pretrained_trunk_weights(tiny_checkpoint: Path, tiny: list[str]) -> None:
    """Checkpoints hold only what ``torch.load(weights_only=True)`` reads (the RNG states included), so one run's
    checkpoint can start another's trunk."""
    trunk = build_trunk(compose("train", tiny).trunk)
    loaded = load_pretrained(trunk, tiny_checkpoint)
    assert loaded.loaded == len(trunk.state_dict()) and loaded.missing == ()
    saved = checkpoint.load(tiny_checkpoint)["model"]
    assert all(torch.equal(v, saved[f"trunk.{k}"]) for k, v in trunk.state_dict().items())


def test_checkpoint_resumes_under_new_decoder_options(tiny: list[str], tmp_path: Path, keep_threads: None) -> None:
    trainer = Trainer(compose("train", tiny), tmp_path)
    checkpoint.save(tmp_path / CHECKPOINT, trainer.state())
    decoded_otherwise = Trainer(compose("train", [*tiny, "method.decoder.tag_threshold=0.5"]), tmp_path)
    assert decoded_otherwise.resume()
    assert decoded_otherwise.model.codec.decoder.tag_threshold == 0.5


@pytest.mark.parametrize("overrides, mention", [
    (["method=higherhrnet", "method.codec.stride=3"], "even stride"),
    (["method.codec.stride=8"], "stride 8 but the trunk's finest features are at stride 4"),
])
def test_trunk_and_method_that_do_not_fit_name_both(tiny: list[str], tmp_path: Path, keep_threads: None,
                                                    overrides: list[str], mention: str) -> None:
    with pytest.raises(ConfigError) as info:
        Trainer(compose("train", [*tiny, *overrides]), tmp_path)
    message = str(info.value)
    assert "trunk 'hrnet_w8_small'" in message and "method '" in message and mention in message


# --------------------------------------------------------------------------------------------------------------------
# Sweeps and several processes


def test_a_failed_run_does_not_stop_the_sweep(tiny: list[str], tmp_path: Path) -> None:
    # 64 images a batch from a 24-image split fails at once; the run after it must still train.
    args = [a for a in tiny if not a.startswith("batch_size=")]
    result = run_app("bottomup.train", "-m", *args, "epochs=1", "batch_size=64,4",
                     f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    statuses = {json.loads(p.read_text())["status"]: p.parent for p in (tmp_path / "sweep").rglob("status.json")}
    assert set(statuses) == {"failed", "done"}
    failed = json.loads((statuses["failed"] / "status.json").read_text())
    assert failed["error"].startswith("ConfigError") and "batch_size" in failed["error"]
    assert "the sweep goes on" in result.stdout
    assert json.loads((statuses["done"] / "metrics.json").read_text())["steps"] == 6


DDP_DRIVER = '''
"""One rank of a torchrun test: train, then save this rank's weights as rank<N>.pt in OUT."""
import sys

import torch

from bottomup.config import compose
from bottomup.training.distributed import teardown
from bottomup.training.trainer import Trainer

run_dir, out, *overrides = sys.argv[1:]
trainer = Trainer(compose("train", overrides), run_dir)
trainer.fit()
torch.save(trainer.model.state_dict(), f"{out}/rank{trainer.ctx.rank}.pt")
teardown()
'''


def test_two_gloo_processes_keep_identical_weights(tiny: list[str], tmp_path: Path) -> None:
    driver = tmp_path / "driver.py"
    driver.write_text(DDP_DRIVER)
    result = run_app("torch.distributed.run", "--nproc_per_node=2", "--standalone", str(driver),
                     str(tmp_path / "run"), str(tmp_path), *tiny, "epochs=2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert equal_states(*ranks) == []
    # Each rank took half of the 24 images: 3 steps of 4 an epoch, so the checkpoint counts 6 steps, not 12.
    state = checkpoint.load(tmp_path / "run" / CHECKPOINT)
    assert state["step"] == 6
    assert equal_states(state["model"], ranks[0]) == []
