"""Real-data training and models that carry their coded aperture: the CAVE split, scene selection, tiles, masks."""
import contextlib
import io
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import spectral_prior as sp
from spectral_prior import cassi, cli
from spectral_prior.training import stages, trainer
from spectral_prior.data import CAVE_SPLIT, CassiBatches, CubeFolder, SceneTiles, scene_names
from spectral_prior.evaluation import evaluate
from spectral_prior.models import check_mask, resolve_model_mask
from spectral_prior.saving.format import MASK_FILE, mask_sha256
from spectral_prior.saving.load import load_saved_mask
from spectral_prior.training import TrainConfig, train

TINY_PRIOR = {"prior_dim": 16, "hfe_dim": 8, "hfe_depth": 1, "denoiser_hidden": 32, "denoiser_depth": 1}


def _cube_folder(root: Path, names: dict[str, int]) -> Path:
    """``name -> size`` cubes of 28 bands as .npy files ([H, W, 28]; sizes above 28 so the layout is clear)."""
    root.mkdir(parents=True, exist_ok=True)
    for index, (name, size) in enumerate(names.items()):
        np.save(root / f"{name}.npy", np.random.default_rng(index).random((size, size, 28)).astype(np.float32))
    return root


def _run(command: str, *argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.main([command, *map(str, argv)])
    return status, out.getvalue(), err.getvalue()


# -- the split and scene selection --------------------------------------------------------------------------------


def test_the_cave_split_is_the_shared_data_readme_split(shared_data):
    assert len(CAVE_SPLIT["train"]) == 12 and len(CAVE_SPLIT["test"]) == 4
    assert not set(CAVE_SPLIT["train"]) & set(CAVE_SPLIT["test"])
    folder = CubeFolder(shared_data / "cave")
    assert sorted(folder.names) == sorted(CAVE_SPLIT["train"] + CAVE_SPLIT["test"])
    readme = (shared_data / "README.md").read_text()
    assert "test**: balloons, chart_and_stuffed_toy, feathers, oil_painting" in readme


def test_the_test_protocol_is_16_quadrants_of_the_real_test_scenes(shared_data):
    tiles = SceneTiles(CubeFolder(shared_data / "cave", scenes=CAVE_SPLIT["test"]), 256)
    assert len(tiles) == 16
    cube, name = tiles[5]
    assert name == "chart_and_stuffed_toy@0,256" and cube.shape == (28, 256, 256)
    whole, _ = CubeFolder(shared_data / "cave", scenes=["chart_and_stuffed_toy"])[0]
    assert torch.equal(cube, whole[:, :256, 256:])


def test_scenes_are_selected_by_name_in_order_and_missing_names_are_named(tmp_path):
    root = _cube_folder(tmp_path / "cubes", {"a_ms": 30, "b": 30, "c": 30})
    assert CubeFolder(root, scenes=["c", "a"]).names == ["c", "a"]  # "_ms" (CAVE's folder suffix) is optional
    with pytest.raises(ValueError, match=r"scenes \['zebra'\] are not in .*it holds \['a', 'b', 'c'\]"):
        CubeFolder(root, scenes=["a", "zebra"])
    with pytest.raises(ValueError, match="scenes is empty"):
        CubeFolder(root, scenes=[])
    with pytest.raises(TypeError, match="list of names"):
        CubeFolder(root, scenes="a")


def test_a_float16_cache_returns_the_same_values_on_every_read(tmp_path):
    folder = CubeFolder(_cube_folder(tmp_path / "cubes", {"a": 30}), cache=True, cache_dtype=torch.float16)
    first, second = folder[0][0], folder[0][0]
    assert first.dtype == torch.float32 and torch.equal(first, second)
    assert folder._cache[0].dtype == torch.float16


def test_tiles_grid_and_centre_and_too_small_scenes(tmp_path):
    folder = CubeFolder(_cube_folder(tmp_path / "cubes", {"a": 40, "b": 30}))
    grid = SceneTiles(folder, 20)
    assert [name for _, name in (grid[i] for i in range(len(grid)))] == ["a@0,0", "a@0,20", "a@20,0", "a@20,20", "b@0,0"]
    centre = SceneTiles(folder, 16, grid=False)
    assert torch.equal(centre[0][0], folder[0][0][:, 12:28, 12:28])
    with pytest.raises(ValueError, match=r"scene 'b' \(30x30\) is smaller than the tile size 32"):
        SceneTiles(folder, 32)


def test_data_scenes_forms(tmp_path):
    assert scene_names("cave-train") == list(CAVE_SPLIT["train"])
    assert scene_names("a, b") == ["a", "b"]
    split = tmp_path / "split.txt"
    split.write_text("# train scenes\nbeads\n\ncd\n")
    assert scene_names(str(split)) == ["beads", "cd"]
    assert scene_names(None) is None


# -- training on a folder -----------------------------------------------------------------------------------------


def _folder_run(tmp_path: Path, **changes) -> TrainConfig:
    data = _cube_folder(tmp_path / "cubes", {"a": 48, "b": 48, "held_out": 48})
    mask = tmp_path / "mask.npy"
    np.save(mask, (np.random.default_rng(0).random((64, 64)) > 0.5).astype(np.float32))
    settings = dict(
        backbone="mst_s", stage="baseline", output=str(tmp_path / "run"), data=str(data), data_scenes="a,b",
        mask=str(mask), steps=2, batch=2, crop=32, val_scenes=2, val_every=0, checkpoint_every=2,
        random_mask_crop=True, prior=TINY_PRIOR,
    )
    return TrainConfig(**{**settings, **changes})


def test_a_folder_run_trains_on_the_named_scenes_and_validates_on_their_centres(tmp_path, monkeypatch):
    config = _folder_run(tmp_path)
    seen = {}
    original = trainer.evaluate

    def spy(model, scenes, mask2d, **kwargs):
        seen["names"] = [scenes[i][1] for i in range(len(scenes))]
        seen["teacher"] = kwargs.get("teacher")
        return original(model, scenes, mask2d, **kwargs)

    monkeypatch.setattr(trainer, "evaluate", spy)
    final = train(config, progress=False)
    assert seen == {"names": ["a@8,8", "b@8,8"], "teacher": False}  # train scenes only, never 'held_out'
    card = (final / "README.md").read_text()
    assert "scenes a, b" in card and "mask.npy" in card and str(tmp_path) not in card

    saved = load_saved_mask(final)
    assert torch.equal(saved, cassi.load_mask(config.mask))
    entry = json.loads((final / "config.json").read_text())["mask"]
    assert entry == {"file": MASK_FILE, "shape": [64, 64], "sha256": mask_sha256(saved), "source": "mask.npy"}


def test_stage1_validates_through_its_teacher(tmp_path, monkeypatch):
    calls = []
    original = trainer.evaluate
    monkeypatch.setattr(trainer, "evaluate", lambda *a, **k: calls.append(k["teacher"]) or original(*a, **k))
    train(_folder_run(tmp_path, stage="stage1"), progress=False)
    assert calls == [True]


def test_evaluate_with_teacher_uses_the_ground_truth(tmp_path):
    model = sp.inject_prior(sp.adapters.mst_s(), "mst", prior=sp.SpectralDiffusionPrior(sp.PriorConfig(**TINY_PRIOR)))
    with torch.no_grad():
        for spim in sp.get_injector(model).spims.values():
            for p in spim.parameters():
                p.normal_(0, 0.5)
    scenes = [torch.rand(28, 32, 32)]
    mask = cassi.random_mask(32, seed=1)
    settings = dict(input_setting="H", mask_setting="Phi")
    student = evaluate(model, scenes, mask, **settings)[0]["psnr"]
    teacher = evaluate(model, scenes, mask, teacher=True, **settings)[0]["psnr"]
    assert teacher != student


def test_prior_lr_gives_the_added_parameters_their_own_rate(tmp_path):
    config = _folder_run(tmp_path, stage="stage1", lr=1e-6, prior_lr=1e-3)
    model = stages.build_model(config)
    groups = stages.parameter_groups(stages.trainable_parameters(model, "stage1"), model, config)
    added = {id(p) for p in sp.get_injector(model).parameters()}
    assert [g["lr"] for g in groups] == [1e-6, 1e-3]
    assert all(id(p) not in added for p in groups[0]["params"]) and all(id(p) in added for p in groups[1]["params"])


# -- masks travel with models -------------------------------------------------------------------------------------


@pytest.fixture
def saved_with_mask(tmp_path) -> tuple[Path, torch.Tensor]:
    mask = cassi.random_mask(48, seed=3)
    folder = sp.save_backbone(tmp_path / "model", sp.adapters.mst_s(), name="mst_s", mask=mask, mask_source="random 48x48")
    return folder, mask


def test_a_saved_mask_is_used_when_none_is_given_and_others_warn(saved_with_mask):
    folder, mask = saved_with_mask
    assert torch.equal(resolve_model_mask(folder), mask)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(resolve_model_mask(folder, mask.clone()), mask)
    with pytest.warns(UserWarning, match=r"trained with another coded aperture \(48x48.*than the one given \(64x64"):
        resolve_model_mask(folder, cassi.random_mask(64, seed=3))
    with pytest.warns(UserWarning, match="To score simulated data, leave the mask out"):
        check_mask(cassi.random_mask(48, seed=4), mask, model="m")


def test_a_model_without_a_mask_needs_one(tmp_path):
    folder = sp.save_backbone(tmp_path / "bare", sp.adapters.mst_s(), name="mst_s")
    with pytest.raises(ValueError, match=r"records no coded aperture: give the mask option"):
        resolve_model_mask(folder)
    status, _, err = _run("eval", "--checkpoint", folder, "--data", "procedural", "--scenes", "1", "--size", "32",
                          "--output", tmp_path / "out", "--quiet")
    assert status == 2 and "records no coded aperture" in err


def test_a_damaged_mask_file_is_refused(saved_with_mask):
    folder, _ = saved_with_mask
    from spectral_prior.io import save_tensors

    save_tensors({"mask": torch.zeros(48, 48)}, folder / MASK_FILE)
    with pytest.raises(ValueError, match="does not match the hash"):
        load_saved_mask(folder)


def test_eval_uses_the_model_mask_by_default(saved_with_mask, tmp_path):
    folder, _ = saved_with_mask
    status, out, err = _run("eval", "--checkpoint", folder, "--data", "procedural", "--scenes", "1", "--size", "32",
                            "--output", tmp_path / "out", "--quiet")
    assert status == 0, err
    report = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert report["mask"] == f"the mask saved with {folder}"


def test_a_scene_smaller_than_the_crop_is_named(tmp_path):
    config = _folder_run(tmp_path)
    _cube_folder(Path(config.data), {"a": 48, "b": 48, "held_out": 48, "tiny": 30})
    with pytest.raises(ValueError, match=r"scene 'tiny' \(30x30\) is smaller than the tile size 32"):
        train(TrainConfig(**{**config.__dict__, "data_scenes": "tiny", "val_scenes": 1}), progress=False)
    batches = CassiBatches(CubeFolder(config.data, scenes=["tiny"]), cassi.load_mask(config.mask), crop=32, batch=2)
    with pytest.raises(ValueError, match=r"scene 'tiny' \(30x30\) is smaller than the crop \(32x32\)"):
        batches.batch_at(0)


# -- loading that says what it does -------------------------------------------------------------------------------


def test_a_saved_injection_records_its_layers_and_backbone_loading_is_explicit(caplog):
    import logging

    torch.manual_seed(3)
    mine = sp.adapters.mst_s()
    before = {k: v.clone() for k, v in mine.state_dict().items()}
    kept = sp.inject_prior(mine, prior="mst_s-sdp", load_backbone=False)  # layers read from the saved folder
    assert sp.get_injector(kept).targets == sp.get_injector(sp.load_model("mst_s-sdp")).targets
    assert all(torch.equal(v, before[k]) for k, v in kept.state_dict().items() if k in before)

    with caplog.at_level(logging.INFO, logger="spectral_prior"):
        loaded = sp.inject_prior(sp.adapters.mst_s(), prior="mst_s-sdp")
    assert "loaded the backbone weights saved in" in caplog.text
    reference = sp.load_model("mst_s-sdp").state_dict()
    assert all(torch.equal(v, reference[k]) for k, v in loaded.state_dict().items())


def test_loading_refuses_typos_and_contradictions():
    with pytest.raises(TypeError, match=r"inject_prior\(\) got unexpected keyword arguments 'chanels' \(did you mean 'channels'\?\)"):
        sp.inject_prior(sp.adapters.mst_s(), "mst", prior="mst_s-sdp", chanels=99)
    with pytest.raises(TypeError, match=r"load_model\(\) got unexpected keyword arguments 'revison' \(did you mean 'revision'\?\)"):
        sp.load_model("mst_s-sdp", revison="v1")
    with pytest.raises(ValueError, match=r"channels= disagrees with the injection saved in .*: 99 given, 28 saved"):
        sp.inject_prior(sp.adapters.mst_s(), "mst", prior="mst_s-sdp", channels=99)
    with pytest.raises(TypeError, match=r"needs layers="):
        sp.inject_prior(sp.adapters.mst_s(), prior_dim=8)


def test_a_prior_saved_without_its_backbone_refuses_another_variant(tmp_path):
    model = sp.inject_prior(sp.adapters.mst_s(), "mst", prior=sp.SpectralDiffusionPrior(sp.PriorConfig(**TINY_PRIOR)))
    sp.get_injector(model).save_pretrained(tmp_path / "prior-only")  # no backbone weights
    assert sp.inject_prior(sp.adapters.mst_s(), prior=tmp_path / "prior-only")  # the same variant loads
    with pytest.raises(ValueError, match=r"trained with a MST of [\d,]+ parameters, but this model is a MST of [\d,]+"):
        sp.inject_prior(sp.adapters.mst_l(), prior=tmp_path / "prior-only")


def test_reconstruct_with_the_model_mask_names_it_when_the_measurement_does_not_fit(shared_data, tmp_path):
    status, _, err = _run("reconstruct", "--checkpoint", "bisrnet-sdp", "--measurement",
                          shared_data / "real_measurements" / "scene1.mat", "--output", tmp_path / "out")
    assert status == 2 and "the 256x256 mask needs 256x310" in err and "the mask saved with bisrnet-sdp" in err
