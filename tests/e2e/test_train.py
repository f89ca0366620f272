"""End-to-end training on a tiny synthetic world: outputs, resume, DDP mining, labelled data."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from retrieval.checkpoint import CheckpointError, load_checkpoint
from retrieval.data.epoch_tuples import EpochTuples
from retrieval.models.net import build_net

ROOT = Path(__file__).resolve().parents[2]
TINY_JOB = ["debug=tiny", "trainer.max_epochs=1", "logger=[]"]


def test_training_writes_checkpoints_tuples_and_figures(tmp_path, train_job):
    results = train_job(tmp_path, "trainer.max_epochs=2", "evaluate_before=true")
    for stage in ("before", "after"):
        assert 0 < results[stage]["M/mAP"] <= 100 and "H/mP@10" in results[stage]
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert Path(results["best_checkpoint"]).is_file()
    for epoch in range(2):
        tuples = EpochTuples.load(tmp_path / "tuples" / f"train_epoch{epoch:03d}.npz")
        assert tuples.negatives.shape == (6, 2)
    net = load_checkpoint(results["model"])
    assert net.meta["backbone"] == "efficientnet_lite0" and net.meta["out_dim"] == 1280
    # BatchNorm stayed frozen: its running statistics are still the pretrained ones.
    pretrained = build_net("efficientnet_lite0", "gem", weights="imagenet").state_dict()
    for name, value in net.state_dict().items():
        if "running_" in name:
            torch.testing.assert_close(value, pretrained[name], msg=name)
    metrics = (tmp_path / "csv").rglob("metrics.csv")
    header = next(metrics).read_text().splitlines()[0]
    for key in ("train/loss", "val/M/mAP", "train/mining_mean_neg_dist", "train/gem_p"):
        assert key in header


LR = 5e-6


def test_resume_mines_and_trains_like_an_uninterrupted_run(tmp_path, train_job):
    straight = train_job(tmp_path / "straight", "trainer.max_epochs=2", f"optimizer.lr={LR}")
    train_job(tmp_path / "killed", "trainer.max_epochs=1", f"optimizer.lr={LR}")
    last = tmp_path / "killed" / "checkpoints" / "last.ckpt"
    resumed = train_job(
        tmp_path / "resumed", "trainer.max_epochs=2", f"optimizer.lr={LR}", f"ckpt_path={last}"
    )
    a = EpochTuples.load(tmp_path / "straight" / "tuples" / "train_epoch001.npz")
    b = EpochTuples.load(tmp_path / "resumed" / "tuples" / "train_epoch001.npz")
    np.testing.assert_array_equal(a.negatives, b.negatives)
    np.testing.assert_allclose(a.neg_sims, b.neg_sims, rtol=1e-5, atol=1e-6)
    net_a, net_b = load_checkpoint(straight["model"]), load_checkpoint(resumed["model"])
    for (name, pa), pb in zip(net_a.state_dict().items(), net_b.state_dict().values(), strict=True):
        # CPU conv backward is not bit-reproducible and Adam turns a near-zero gradient's sign
        # into a full step of size lr: allow a few such steps, far below any real drift.
        torch.testing.assert_close(pa, pb, rtol=0, atol=4 * LR, msg=name)


class Payload:
    """Unpickling this runs code: it writes a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def test_resume_from_a_hostile_checkpoint_never_runs_its_code(tmp_path, train_job, monkeypatch):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # torch's default is no guard
    marker, hostile = tmp_path / "pwned", tmp_path / "last.ckpt"
    torch.save({"state_dict": {}, "epoch": Payload(marker)}, hostile)
    with pytest.raises(CheckpointError, match=f"Checkpoint {hostile} holds pickled objects"):
        train_job(tmp_path / "run", f"ckpt_path={hostile}")
    assert not marker.exists(), "the checkpoint's pickled code ran"


def test_int8_mining_finds_the_fp32_hard_negatives(tmp_path, train_job):
    """Epoch 0 mines with the untrained network: int8 and fp32 must pick nearly the same tuples."""
    tuples = {}
    for precision in ("fp32", "int8"):
        run = tmp_path / precision
        train_job(run, "trainer.max_epochs=1", f"extract.precision={precision}")
        tuples[precision] = EpochTuples.load(run / "tuples" / "train_epoch000.npz")
    np.testing.assert_array_equal(tuples["int8"].query, tuples["fp32"].query)
    # As sets per query: near-ties among the hardest may swap places between precisions.
    shared = [
        len(set(a) & set(b)) / len(a)
        for a, b in zip(tuples["int8"].negatives, tuples["fp32"].negatives, strict=True)
    ]
    assert np.mean(shared) >= 0.75, f"only {np.mean(shared):.0%} of the hard negatives agree"


def test_invalid_mining_setup_fails_before_training(tmp_path, train_job):
    with pytest.raises(ValueError, match="data.nnum"):
        train_job(tmp_path, "data.nnum=8")  # 8 training landmarks: 7 others at most


def run_train_py(run_dir: Path, *overrides: str, timeout: int = 600):
    """`python train.py OVERRIDES` in its own process, writing into run_dir."""
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *overrides, f"hydra.run.dir={run_dir}"],
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        cwd=run_dir.parent,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_ddp_on_two_cpu_processes_mines_the_single_process_tuples(tmp_path):
    for name, extra in (("single", []), ("ddp", ["trainer=ddp_cpu"])):
        done = run_train_py(tmp_path / name, *TINY_JOB, *extra)
        assert done.returncode == 0, done.stderr[-3000:]
    single = EpochTuples.load(tmp_path / "single" / "tuples" / "train_epoch000.npz")
    ddp = EpochTuples.load(tmp_path / "ddp" / "tuples" / "train_epoch000.npz")
    np.testing.assert_array_equal(single.query, ddp.query)
    np.testing.assert_array_equal(single.negatives, ddp.negatives)
    np.testing.assert_allclose(single.neg_sims, ddp.neg_sims, rtol=1e-4, atol=1e-5)


def test_labelled_folder_trains_with_the_same_mining(tmp_path, train_job):
    shared = ROOT.parent / "shared" / "data" / "coil100_15deg"
    if not (shared / "groundtruth.csv").is_file():
        pytest.skip(f"real photos not found in {shared} (the shared data folder is absent)")
    rows = [line.split(",") for line in (shared / "groundtruth.csv").read_text().splitlines()[1:]]
    chosen = [(path, obj) for path, obj, angle in rows if int(obj) <= 9 and int(angle) % 60 == 0]
    folder = tmp_path / "coil"
    folder.mkdir()
    (folder / "groundtruth.csv").write_text(
        "path,object_id\n" + "".join(f"{shared / path},{obj}\n" for path, obj in chosen)
    )
    results = train_job(  # the labelled-photos recipe (augmented), scaled down
        tmp_path / "run",
        "experiment=labelled_photos",
        f"data.root={folder}",
        "data.train_classes=4",
        "data.qsize=8",
        "data.poolsize=16",
        "data.nnum=2",
        "data.batch_size=4",
        "data.image_size=64",
        "data.test_image_size=64",
        "data.num_workers=0",
        "trainer.max_epochs=1",
        "evaluate_before=true",
        world=False,
    )
    assert results["benchmark"] == "labels-test"
    assert 0 < results["before"]["mAP"] <= 100 and 1 <= results["after"]["N-S"] <= 4
    tuples = EpochTuples.load(tmp_path / "run" / "tuples" / "train_epoch000.npz")
    assert len(tuples) == 8  # 4 train objects x 6 views: every image is a query


@pytest.mark.parametrize("strategy", ["random_topk_inliers", "hardest"])
def test_geometry_aware_positives_come_from_the_sidecar(
    tmp_path, strategy, train_job, train_config
):
    from retrieval.data import formats
    from retrieval.pipelines.sources import data_root

    train_job(tmp_path, f"data.positives={strategy}", "trainer.max_epochs=1")
    cfg = train_config("debug=tiny")
    sfm = formats.sfm_dir(data_root(cfg), "synthetic-sfm")
    candidates = formats.read_positives_sidecar(sfm / "synthetic-sfm-positives.npz")
    tuples = EpochTuples.load(tmp_path / "tuples" / "train_epoch000.npz")
    for query, positive in zip(tuples.query, tuples.positive, strict=True):
        assert positive in [image for image, _ in candidates[int(query)]]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[Path, str]:
    """One tiny train.py run at the default logging interval: its directory and its output."""
    run_dir = tmp_path_factory.mktemp("tiny_run")
    overrides = ["trainer.log_every_n_steps=50", "logger=[csv]", "evaluate_before=true"]
    done = run_train_py(run_dir, "debug=tiny", "trainer.max_epochs=1", *overrides)
    assert done.returncode == 0, done.stderr[-3000:]
    return run_dir, done.stdout + done.stderr


def test_a_run_shows_its_mining_and_evaluation_stages(tiny_run):
    run_dir, output = tiny_run
    log = (run_dir / "train.log").read_text()
    for stage in ("mined train tuples", "mined val tuples", "evaluated synthetic-rox"):
        assert stage in log, stage
        assert "images/s" in log.split(stage, 1)[1].splitlines()[0]
    for bar in ("mining train", "mining val", "synthetic-rox database", "synthetic-rox queries"):
        assert bar in output, bar  # the extraction bars, on stderr


def test_short_runs_log_the_loss_and_gem_p_per_epoch(tiny_run):
    run_dir, _ = tiny_run
    (metrics,) = (run_dir / "csv").rglob("metrics.csv")
    rows = metrics.read_text().splitlines()
    header = rows[0].split(",")
    epoch_rows = [dict(zip(header, row.split(","), strict=True)) for row in rows[1:]]
    for key in ("train/loss", "train/gem_p"):
        assert key in header and any(row[key] for row in epoch_rows), key


def test_a_run_prints_neither_the_litlogger_tip_nor_the_pytree_warning(tiny_run):
    _, output = tiny_run
    assert "litlogger" not in output and "_pytree" not in output
    assert "GPU available" in output  # Lightning's other messages stay


def test_a_failed_run_leaves_its_error_in_the_run_log(tmp_path):
    done = run_train_py(tmp_path, *TINY_JOB, "data.nnum=8", timeout=300)
    assert done.returncode == 1
    assert "error: " in done.stderr and "data.nnum" in done.stderr  # the message alone
    assert "Traceback" not in done.stderr
    log = (tmp_path / "train.log").read_text()
    assert "Traceback" in log and "data.nnum" in log
