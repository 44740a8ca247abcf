"""The two-stage recipe: stages, freezing, checkpoints, resume after a kill, torchrun/DDP and bad inputs."""
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tolerance import assert_close
import spectral_prior as sp
from spectral_prior.training import checkpoints, stages, trainer
from spectral_prior.io import load_tensors
from spectral_prior.training import TrainConfig, latest_checkpoint, train

TINY_PRIOR = {"prior_dim": 16, "hfe_dim": 8, "hfe_depth": 1, "denoiser_hidden": 32, "denoiser_depth": 1}


def tiny(tmp_path: Path, **changes) -> TrainConfig:
    """A run small enough for a unit test: 32x32 crops of 64x64 procedural scenes."""
    settings = dict(
        backbone="mst_s", stage="stage1", output=str(tmp_path / "run"), steps=3, batch=2, crop=32, scenes=4,
        scene_size=64, mask_size=64, val_scenes=1, val_every=0, checkpoint_every=2, prior=TINY_PRIOR,
    )
    return TrainConfig(**{**settings, **changes})


def tiny_flags(output: Path, *extra: str) -> list:
    flags = [
        "train", "--backbone", "mst_s", "--batch", "2", "--crop", "32", "--scenes", "4", "--scene-size", "64",
        "--mask-size", "64", "--val-scenes", "1", "--val-every", "0", "--prior-dim", "16", "--hfe-dim", "8",
        "--hfe-depth", "1", "--denoiser-hidden", "32", "--denoiser-depth", "1", "--output", str(output), "--quiet",
    ]
    return flags + list(extra)


def weights(folder: Path) -> dict:
    tensors = load_tensors(folder / "backbone.safetensors")
    if (folder / "model.safetensors").is_file():
        tensors.update({f"prior:{k}": v for k, v in load_tensors(folder / "model.safetensors").items()})
    return tensors


def changed(before: dict, after: dict) -> set:
    return {name for name in before if not torch.equal(before[name], after[name])}


@pytest.fixture(scope="module")
def stage1_final(tmp_path_factory) -> Path:
    return train(tiny(tmp_path_factory.mktemp("stage1")), progress=False)


def test_baseline_stage1_stage2a_stage2b_then_load(tmp_path, stage1_final):
    baseline = train(tiny(tmp_path / "b", stage="baseline"), progress=False)
    assert json.loads((baseline / "config.json").read_text())["kind"] == "backbone"
    a = train(tiny(tmp_path / "a", stage="stage2a", init=str(stage1_final)), progress=False)
    b = train(tiny(tmp_path / "b2", stage="stage2b", init=str(a)), progress=False)

    h, phi = torch.rand(1, 28, 32, 32), torch.rand(1, 28, 32, 86)
    for final in (baseline, stage1_final, a, b):
        model = sp.load_model(final)
        assert torch.isfinite(model(h, phi)).all()
    log = [json.loads(line) for line in (tmp_path / "b2" / "run" / "log.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in log] == [1, 2, 3]
    assert {"rmse", "l1", "lr", "samples_per_second"} <= set(log[0]) and "val_psnr" in log[-1]


def test_each_stage_trains_only_its_parts(tmp_path, stage1_final):
    start = weights(stage1_final)
    a = weights(train(tiny(tmp_path / "a", stage="stage2a", init=str(stage1_final)), progress=False))
    moved = changed(start, a)
    assert moved and all("prior.student." in n or "prior.diffusion." in n for n in moved)

    b = weights(train(tiny(tmp_path / "b", stage="stage2b", init=str(stage1_final)), progress=False))
    moved = changed(start, b)
    assert not any("teacher_hfe" in n for n in moved)
    assert any(not n.startswith("prior:") for n in moved) and any("spims." in n for n in moved)

    one_step = weights(train(tiny(tmp_path / "s1", steps=1), progress=False))  # same seed: same initial weights
    two_steps = weights(train(tiny(tmp_path / "s2", steps=2), progress=False))
    moved = changed(one_step, two_steps)
    assert any("teacher_hfe" in n for n in moved) and any("spims." in n for n in moved)
    assert not any("prior.student." in n or "prior.diffusion." in n for n in moved)


def test_ema_weights_are_what_is_saved(tmp_path):
    plain = weights(train(tiny(tmp_path / "p", stage="baseline"), progress=False))
    averaged = weights(train(tiny(tmp_path / "e", stage="baseline", ema=0.9), progress=False))
    assert changed(plain, averaged)


def test_checkpoints_are_atomic_and_only_the_latest_is_kept(tmp_path, monkeypatch):
    config = tiny(tmp_path, stage="baseline", steps=4, checkpoint_every=2)
    real_save, calls = torch.save, []

    def save_then_fail(*args, **kwargs):  # the second checkpoint dies half-way through its files
        calls.append(1)
        if len(calls) > 1:
            raise OSError("disk full")
        real_save(*args, **kwargs)

    monkeypatch.setattr(checkpoints.torch, "save", save_then_fail)
    with pytest.raises(OSError, match="disk full"):
        train(config, progress=False)
    folder = latest_checkpoint(config.output)
    assert folder.name == "step-0000002"  # the last complete one
    assert sorted(p.name for p in folder.parent.iterdir()) == ["latest.json", "step-0000002"]
    assert not (Path(config.output) / "final").exists()

    monkeypatch.setattr(checkpoints.torch, "save", real_save)
    train(config, resume=True, progress=False)
    assert sorted(p.name for p in folder.parent.iterdir()) == ["latest.json", "step-0000004"]


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_weights(tmp_path):
    """SIGKILL a CLI run after its first checkpoint; --resume must end where an uninterrupted run ends."""
    command = [sys.executable, "-m", "spectral_prior.cli"]
    flags = ["--stage", "stage1", "--steps", "24", "--checkpoint-every", "4"]
    reference = tmp_path / "reference"
    subprocess.run(command + tiny_flags(reference, *flags), check=True, capture_output=True)

    interrupted = tmp_path / "interrupted"
    process = subprocess.Popen(command + tiny_flags(interrupted, *flags), stderr=subprocess.DEVNULL)
    pointer = interrupted / "checkpoints" / "latest.json"
    deadline = time.monotonic() + 120
    while not pointer.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (interrupted / "final").exists(), "the run finished before it could be killed"
    killed_at = json.loads(pointer.read_text())["step"]
    assert 4 <= killed_at < 24

    done = subprocess.run(command + tiny_flags(interrupted, "--resume"), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    expected, resumed = weights(reference / "final"), weights(interrupted / "final")
    assert expected.keys() == resumed.keys()
    assert not changed(expected, resumed)
    steps = [json.loads(line)["step"] for line in (interrupted / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 25))


def _torchrun(args: list, cwd: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "spectral_prior.cli", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["stage1", "stage2b"])
def test_torchrun_two_processes_match_one_process(tmp_path, stage, stage1_final):
    extra = ["--stage", stage, "--steps", "3"] + (["--init", str(stage1_final)] if stage == "stage2b" else [])
    distributed = _torchrun(tiny_flags(tmp_path / "ddp", *extra), tmp_path)
    assert distributed.returncode == 0, distributed.stderr[-3000:]
    single = subprocess.run([sys.executable, "-m", "spectral_prior.cli", *tiny_flags(tmp_path / "one", *extra)],
                            capture_output=True, text=True)
    assert single.returncode == 0, single.stderr
    one, two = weights(tmp_path / "one" / "final"), weights(tmp_path / "ddp" / "final")
    if stage == "stage2b":
        assert changed(weights(stage1_final), one)  # the comparison is about trained weights
    for name in one:
        assert_close(two[name], one[name], name=f"torchrun 2 processes vs 1, {stage}", rtol=1e-4, atol=1e-5)
    log = lambda run: [json.loads(line) for line in (tmp_path / run / "log.jsonl").read_text().splitlines()]
    for a, b in zip(log("one"), log("ddp")):
        assert a["rmse"] == pytest.approx(b["rmse"], rel=1e-4)


def test_bad_inputs_are_clear_errors(tmp_path, stage1_final):
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        (dict(data=str(tmp_path / "missing")), FileNotFoundError, "cube folder not found"),
        (dict(data=str(empty)), ValueError, "no cubes in"),
        (dict(mask_size=16), ValueError, r"mask \(16x16\) is smaller than the crop \(32x32\)"),
        (dict(stage="stage2a"), ValueError, "starts from the previous stage"),
        (dict(backbone="mst_xl"), ValueError, "unknown backbone 'mst_xl'"),
        (dict(backbone="bisrnet", stage="stage2b", init=str(stage1_final)), ValueError, "holds a 'mst_s' checkpoint"),
        (dict(stage="baseline", init=str(stage1_final)), ValueError, "injected model"),
        (dict(prior={"width": 3}), ValueError, "unknown prior fields"),
        (dict(val_every=-1), ValueError, r"val_every must be 0 \(validate only at the end\) or positive, got -1"),
        (dict(lr=-1.0), ValueError, "lr must be a positive, finite learning rate, got -1.0"),
        (dict(lr=float("nan")), ValueError, "lr must be a positive, finite learning rate, got nan"),
        (dict(prior_lr=0.0), ValueError, "prior_lr must be a positive, finite learning rate, got 0.0"),
        (dict(position="inside"), ValueError, "unknown position 'inside'; use output or input"),
    ]
    for changes, error, message in cases:
        with pytest.raises(error, match=message):
            train(tiny(tmp_path / "bad", **changes), progress=False)


def test_cube_folder_with_wrong_bands_fails_with_the_file_named(tmp_path):
    data = tmp_path / "cubes"
    data.mkdir()
    np.save(data / "scene.npy", np.random.rand(64, 64, 31).astype("float32"))
    with pytest.raises(ValueError, match="scene.npy"):
        train(tiny(tmp_path, stage="baseline", data=str(data)), progress=False)


def test_output_holding_a_run_needs_resume_and_the_same_settings(tmp_path):
    config = tiny(tmp_path, stage="baseline", steps=2)
    train(config, progress=False)
    with pytest.raises(ValueError, match=r"already holds a run: resume it \(the resume option\)"):
        train(config, progress=False)
    with pytest.raises(ValueError, match=r"crop: 32 -> 48"):
        train(dataclasses.replace(config, crop=48), resume=True, progress=False)
    assert train(config, resume=True, progress=False).is_dir()  # finished run: nothing more to do


def test_cli_errors_are_one_line(tmp_path, capsys):
    from spectral_prior.cli import main

    assert main(tiny_flags(tmp_path, "--stage", "stage2b")) == 2
    err = capsys.readouterr().err
    assert err.startswith("spectral-prior train: error:") and "init" in err and "Traceback" not in err
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_stage_all_runs_three_stages_and_resumes_from_the_output_alone(tmp_path, capsys):
    from spectral_prior.cli import main

    output = tmp_path / "all"
    assert main(tiny_flags(output, "--stage", "all", "--steps", "2", "--distill-steps", "1")) == 0
    assert sorted(p.name for p in output.iterdir()) == ["final", "stage1", "stage2a", "stage2b"]
    assert json.loads((output / "final" / "config.json").read_text())["backbone"]["name"] == "mst_s"
    assert main(["train", "--stage", "all", "--distill-steps", "1", "--output", str(output), "--resume", "--quiet"]) == 0
    assert capsys.readouterr().out.strip().endswith(f"saved {output / 'final'}: the fine-tuned model, for eval and reconstruct")



def test_stage1_with_a_layers_regex_modulates_those_blocks(tmp_path):
    final = train(tiny(tmp_path, steps=1, layers=r"(?:.+\.)?(?:bottleneck|decoder_layers\.\d+\.2)"), progress=False)
    assert sp.get_injector(sp.load_model(final)).targets == ["bottleneck", "decoder_layers.0.2", "decoder_layers.1.2"]


def test_stage1_position_puts_the_spims_on_the_blocks_inputs(tmp_path):
    final = train(tiny(tmp_path, steps=1, layers=r"(?:.+\.)?bottleneck", position="input"), progress=False)
    assert sp.get_injector(sp.load_model(final)).positions == {"bottleneck": "input"}


def test_resume_finds_the_run_in_the_folder_or_refuses(tmp_path, capsys):
    from spectral_prior.cli import main

    output = tmp_path / "all"
    assert main(tiny_flags(output, "--stage", "all", "--steps", "2", "--distill-steps", "1")) == 0
    # README's own form: the folder alone; the run is a --stage all run with its own settings (no defaults)
    assert main(["train", "--output", str(output), "--resume", "--quiet"]) == 0
    assert capsys.readouterr().out.strip().endswith(f"saved {output / 'final'}: the fine-tuned model, for eval and reconstruct")
    assert not (output / "train_config.json").exists() and not (output / "checkpoints").exists()

    assert main(["train", "--output", str(output), "--stage", "stage1", "--resume", "--quiet"]) == 2
    assert "holds a --stage all run, not a --stage stage1 one" in capsys.readouterr().err
    for nothing in (tmp_path / "missing", tmp_path):
        assert main(["train", "--output", str(nothing), "--resume", "--quiet"]) == 2
        err = capsys.readouterr().err
        assert f"nothing to resume in {nothing}" in err and "Traceback" not in err
    assert not (tmp_path / "missing").exists()


@pytest.mark.slow
def test_compile_runs_the_training_network_through_torch_compile(tmp_path, monkeypatch):
    """--compile hands the network to torch.compile; the run then ends where the eager run ends (float rounding)."""
    compiled, real_compile = [], torch.compile

    def compile_for_test(network, **kwargs):  # aot_eager traces forward and backward like inductor, compiles nothing
        compiled.append(type(network).__name__)
        return real_compile(network, backend="aot_eager", **kwargs)

    eager = train(tiny(tmp_path / "eager", steps=2), progress=False)
    monkeypatch.setattr(checkpoints.torch, "compile", compile_for_test)
    with_compile = train(tiny(tmp_path / "compiled", steps=2, compile=True), progress=False)
    assert compiled == ["MST"]
    expected, got = weights(eager), weights(with_compile)
    for name in expected:
        assert_close(got[name], expected[name], name="compile vs eager, 2 training steps", rtol=1e-4, atol=1e-5)


def test_frozen_binary_weights_keep_their_signs_while_the_rest_trains(tmp_path):
    from spectral_prior.adapters.bisrnet import HardBinaryConv

    model = sp.adapters.bisrnet()
    latent = {f"{name}.weight" for name, m in model.named_modules() if isinstance(m, HardBinaryConv)}
    assert len(latent) == 59
    full_precision = {"fution.weight", "conv_in.weight", "body.0.embedding.move0.k", "body.0.embedding.relu.pr_prelu.weight"}
    settings = dict(backbone="bisrnet", freeze_binary=True, lr=1e-3, steps=2, checkpoint_every=2)
    for stage in ("baseline", "stage1"):  # both arms of a comparison train the same parts
        config = tiny(tmp_path / stage, stage=stage, **settings)
        start = stages.build_model(config).state_dict()  # the run's seeded initial weights
        after = weights(train(config, progress=False))
        assert not changed({k: start[k] for k in latent}, after), "a latent binary weight moved"
        assert changed({k: start[k] for k in full_precision}, after) == full_precision
    with pytest.raises(ValueError, match="freeze_binary: MST has no binarised convolutions"):
        train(tiny(tmp_path / "mst", stage="baseline", freeze_binary=True), progress=False)


def test_binary_lr_gives_the_latent_binary_weights_their_own_rate(tmp_path):
    from spectral_prior.adapters.bisrnet import latent_binary_weights

    config = tiny(tmp_path, backbone="bisrnet", lr=2e-5, prior_lr=2e-4, binary_lr=1e-6)
    model = stages.build_model(config)
    trainable = stages.trainable_parameters(model, "stage1")
    groups = {group["lr"]: {id(p) for p in group["params"]} for group in stages.parameter_groups(trainable, model, config)}
    latent = {id(p) for p in latent_binary_weights(model)}
    injected = {id(p) for p in sp.get_injector(model).parameters()} & {id(p) for p in trainable}
    assert groups[1e-6] == latent and groups[2e-4] == injected
    assert groups[2e-5] == {id(p) for p in trainable} - latent - injected and groups[2e-5]
    with pytest.raises(ValueError, match="binary_lr=1e-06 trains the binary weights that freeze_binary keeps fixed"):
        tiny(tmp_path, backbone="bisrnet", binary_lr=1e-6, freeze_binary=True)
    with pytest.raises(ValueError, match="binary_lr must be a positive, finite learning rate, got 0.0"):
        tiny(tmp_path, backbone="bisrnet", binary_lr=0.0)
    with pytest.raises(ValueError, match="binary_lr: MST has no binarised convolutions"):
        train(tiny(tmp_path / "mst", stage="baseline", binary_lr=1e-6), progress=False)


def test_warmup_ramps_the_rate_then_the_schedule_follows(tmp_path):
    output = tmp_path / "run"
    train(tiny(output, stage="baseline", steps=6, warmup=3, schedule="cosine", lr=1e-3), progress=False)
    rates = [json.loads(line)["lr"] for line in (output / "run" / "log.jsonl").read_text().splitlines()]
    # linear from lr / 3 at step 0 to lr at step 3, then the cosine over the 3 steps left, down to 1e-6
    assert rates[:3] == pytest.approx([1e-3 * 5 / 9, 1e-3 * 7 / 9, 1e-3])
    assert rates[2] > rates[3] > rates[4] > rates[5] and rates[5] == pytest.approx(1e-6)
    with pytest.raises(ValueError, match=r"warmup must be in \[0, steps\) = \[0, 6\), got 6"):
        tiny(tmp_path, steps=6, warmup=6)
    with pytest.raises(ValueError, match="unknown precision 'fp16'; use auto, bf16, fp32"):
        tiny(tmp_path, precision="fp16")


def test_bf16_precision_trains_on_cpu(tmp_path):
    final = train(tiny(tmp_path, precision="bf16"), progress=False)
    assert all(torch.isfinite(t).all() for t in weights(final).values())


def test_a_run_saved_before_new_settings_existed_still_resumes(tmp_path):
    config = tiny(tmp_path, stage="baseline", steps=4, checkpoint_every=2)
    output = Path(config.output)
    train(dataclasses.replace(config, steps=2), progress=False)
    saved = json.loads((output / "train_config.json").read_text())
    for new in ("freeze_binary", "warmup", "precision"):
        del saved[new]
    saved.update(amp=True, steps=4)  # as release 0.1 wrote it
    (output / "train_config.json").write_text(json.dumps(saved))
    shutil.rmtree(output / "final")
    train(config, resume=True, progress=False)
    assert json.loads((output / "log.jsonl").read_text().splitlines()[-1])["step"] == 4


def test_stage2a_never_runs_the_backbone(tmp_path, stage1_final, monkeypatch):
    from spectral_prior.adapters.mst import MST

    def refuse(*args, **kwargs):
        raise AssertionError("stage 2a ran the backbone")

    monkeypatch.setattr(MST, "forward", refuse)
    monkeypatch.setattr(trainer.Trainer, "validate", lambda self: float("nan"))  # validation runs the model
    final = train(tiny(tmp_path, stage="stage2a", init=str(stage1_final), steps=2), progress=False)
    assert (final / "model.safetensors").is_file()


def test_training_leaves_the_callers_random_state_alone(tmp_path):
    import numpy as np

    torch.manual_seed(123)
    np.random.seed(123)
    expected_torch, expected_numpy = torch.rand(3), np.random.rand(3)
    torch.manual_seed(123)
    np.random.seed(123)
    train(tiny(tmp_path, stage="baseline", steps=1), progress=False)
    assert torch.equal(torch.rand(3), expected_torch) and np.array_equal(np.random.rand(3), expected_numpy)


def test_a_folder_holding_cave_test_scenes_is_trained_on_only_when_they_are_named(tmp_path):
    data = tmp_path / "cave"
    data.mkdir()
    for name in ("beads", "feathers"):
        np.save(data / f"{name}.npy", np.random.rand(64, 64, 28).astype("float32"))
    with pytest.raises(ValueError, match=r"holds CAVE's test scenes \['feathers'\].*data_scenes='cave-train'"):
        train(tiny(tmp_path / "all", stage="baseline", data=str(data), steps=1), progress=False)
    assert not (tmp_path / "all" / "final").exists()
    named = train(tiny(tmp_path / "named", stage="baseline", data=str(data), data_scenes="beads", steps=1), progress=False)
    assert named.is_dir()


def test_train_without_stage_runs_the_whole_recipe_and_says_what_each_stage_leaves(tmp_path, capsys, stage1_final):
    from spectral_prior.cli import main

    output = tmp_path / "recipe"
    assert main(tiny_flags(output, "--steps", "1", "--distill-steps", "1")) == 0
    assert sorted(p.name for p in output.iterdir()) == ["final", "stage1", "stage2a", "stage2b"]
    assert capsys.readouterr().out.strip() == f"saved {output / 'final'}: the fine-tuned model, for eval and reconstruct"
    assert main(tiny_flags(tmp_path / "s1", "--stage", "stage1", "--steps", "1")) == 0
    out = capsys.readouterr().out
    assert "whose measurement-only prior is untrained: continue with --stage stage2a --init" in out


def test_loading_a_stage1_model_warns_that_its_student_is_untrained(stage1_final):
    with pytest.warns(UserWarning, match="is the end of training stage 1: its measurement-only prior has not been"):
        sp.load_model(stage1_final)


def test_ctrl_c_is_one_line_naming_where_the_run_resumes(tmp_path, capsys, monkeypatch):
    from spectral_prior.cli import main

    def interrupt(self):
        raise KeyboardInterrupt

    output = tmp_path / "run"
    flags = tiny_flags(output, "--stage", "baseline", "--steps", "3", "--checkpoint-every", "2")
    monkeypatch.setattr(trainer.Trainer, "_save_final", interrupt)
    assert main(flags) == 130
    checkpoint = latest_checkpoint(output).relative_to(output)
    assert capsys.readouterr().err == (f"spectral-prior train: interrupted: the run in {output} resumes from its "
                                       f"checkpoint {checkpoint} with --resume --output {output}\n")
    monkeypatch.undo()
    assert main(["train", "--output", str(output), "--resume", "--quiet"]) == 0


class _Stop(Exception):
    pass


def _run_until_first_checkpoint(config: TrainConfig, monkeypatch) -> Path:
    """Train ``config`` and stop right after its first checkpoint, as a killed run does."""
    original = trainer.Trainer.save_checkpoint

    def save_then_stop(self, step):
        original(self, step)
        raise _Stop

    with monkeypatch.context() as patch:
        patch.setattr(trainer.Trainer, "save_checkpoint", save_then_stop)
        with pytest.raises(_Stop):
            train(config, progress=False)
    return latest_checkpoint(config.output) / "state.pt"


def test_a_run_saved_before_a_new_setting_and_before_versioned_state_resumes(tmp_path, monkeypatch):
    """An older release wrote neither ``warmup`` / ``ema`` (settings added since, with defaults) nor a state version:
    its run resumes, and ends with the weights of an uninterrupted run."""
    reference = train(tiny(tmp_path / "reference", stage="baseline", steps=4), progress=False)
    config = tiny(tmp_path / "old", stage="baseline", steps=4)
    state_file = _run_until_first_checkpoint(config, monkeypatch)
    output = Path(config.output)
    settings = json.loads((output / "train_config.json").read_text())
    for added in ("warmup", "ema"):
        del settings[added]
    (output / "train_config.json").write_text(json.dumps(settings))
    state = torch.load(state_file, weights_only=False)
    del state["version"]
    for added in ("warmup", "ema"):
        del state["config"][added]
    torch.save(state, state_file)

    resumed = train(config, resume=True, progress=False)
    assert weights(resumed).keys() == weights(reference).keys()
    for name, value in weights(reference).items():
        assert torch.equal(weights(resumed)[name], value), name


def test_a_run_state_of_a_newer_release_is_refused(tmp_path, monkeypatch):
    config = tiny(tmp_path, stage="baseline", steps=4)
    state_file = _run_until_first_checkpoint(config, monkeypatch)
    state = torch.load(state_file, weights_only=False)
    torch.save({**state, "version": checkpoints.RUN_STATE_VERSION + 1}, state_file)
    with pytest.raises(ValueError, match="written by a newer spectral-prior .*upgrade with pip install -U"):
        train(config, resume=True, progress=False)


class _RunsOnLoad:
    """An object whose unpickling would call a function: what a tampered state.pt could hold."""

    def __reduce__(self):
        return (print, ("code from state.pt ran",))


def test_a_run_state_holding_code_is_refused_without_running_it(tmp_path, monkeypatch, capsys):
    config = tiny(tmp_path, stage="baseline", steps=4)
    state_file = _run_until_first_checkpoint(config, monkeypatch)
    state = torch.load(state_file, weights_only=False)
    torch.save({**state, "payload": _RunsOnLoad()}, state_file)
    with pytest.raises(ValueError, match="state.pt holds Python objects a training state does not have"):
        train(config, resume=True, progress=False)
    assert "code from state.pt ran" not in capsys.readouterr().out
