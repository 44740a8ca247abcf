"""`spectral-prior eval` and spectral_prior.evaluate: the toolbox's simulation test protocol, reports and figures."""
import contextlib
import csv
import io
import json
import math

import pytest
import torch
from PIL import Image

import spectral_prior as sp
from spectral_prior import cassi, cli
from spectral_prior.adapters import backbone_preset, create_backbone
from spectral_prior.data import ProceduralCubes
from spectral_prior.evaluation import center_crop, evaluate, format_table, size_multiple

PROCEDURAL = ["--data", "procedural", "--scenes", "2", "--size", "64", "--seed", "3"]
SCENES = [*PROCEDURAL, "--mask", "random", "--mask-size", "64"]


def _eval(*argv):
    """Run `spectral-prior eval ARGV`; returns (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.main(["eval", *map(str, argv)])
    return status, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def baselines(tmp_path_factory):
    """Two saved bare MST-S runs with different weights."""
    root = tmp_path_factory.mktemp("runs")
    torch.manual_seed(1)
    first = sp.save_backbone(root / "first", create_backbone("mst_s"), name="mst_s")
    second = sp.save_backbone(root / "second", create_backbone("mst_s"), name="mst_s")
    return first, second


@pytest.fixture(scope="module")
def procedural_run(baselines, tmp_path_factory):
    """One eval of two procedural scenes with a comparison and figures, shared by the report tests."""
    out = tmp_path_factory.mktemp("eval")
    first, second = baselines
    status, stdout, stderr = _eval(
        "--checkpoint", first, *SCENES, "--compare", second, "--output", out, "--figures", out / "figures", "--quiet"
    )
    assert status == 0, stderr
    return {"out": out, "stdout": stdout, "json": json.loads((out / "metrics.json").read_text())}


def test_markdown_table_matches_the_json(procedural_run, baselines):
    report, stdout = procedural_run["json"], procedural_run["stdout"]
    assert f"## {baselines[0]} (mst_s)" in stdout and f"## {baselines[1]} (mst_s)" in stdout
    assert "| scene | PSNR (dB) | SSIM | SAM (deg) |" in stdout
    for scene in report["scenes"]:
        assert f"| {scene['name']} | {scene['psnr']:.2f} | {scene['ssim']:.4f} | {scene['sam']:.2f} |" in stdout
    mean = report["mean"]
    assert f"| **mean** | {mean['psnr']:.2f} | {mean['ssim']:.4f} | {mean['sam']:.2f} |" in stdout


def test_json_and_csv_agree(procedural_run, baselines):
    report = procedural_run["json"]
    assert report["checkpoint"] == str(baselines[0]) and report["backbone"] == "mst_s"
    assert report["mask"] == "random binary: 64x64, seed 3"
    assert report["data"] == "procedural: 2 scenes of 64x64, seed 3"
    assert [s["name"] for s in report["scenes"]] == ["scene_000", "scene_001"]
    for metric in ("psnr", "ssim", "sam"):
        assert report["mean"][metric] == pytest.approx(sum(s[metric] for s in report["scenes"]) / 2)
    (compared,) = report["compare"]
    assert compared["checkpoint"] == str(baselines[1])
    assert compared["scenes"] != report["scenes"]  # another model, other scores

    with open(procedural_run["out"] / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["model"], r["scene"]) for r in rows] == [
        (str(baselines[0]), "scene_000"), (str(baselines[0]), "scene_001"),
        (str(baselines[1]), "scene_000"), (str(baselines[1]), "scene_001"),
    ]
    for row, scene in zip(rows, report["scenes"] + compared["scenes"]):
        assert (int(row["height"]), int(row["width"])) == (64, 64)
        assert all(float(row[m]) == scene[m] for m in ("psnr", "ssim", "sam"))


def test_cli_agrees_with_the_library_in_batches(procedural_run, baselines):
    preset = backbone_preset("mst_s")
    results = evaluate(
        sp.load_model(baselines[0]), ProceduralCubes(2, size=64, seed=3), cassi.random_mask(64, seed=3),
        input_setting=preset.input_setting, mask_setting=preset.mask_setting, batch_size=2, return_cubes=True,
    )
    for result, scene in zip(results, procedural_run["json"]["scenes"]):
        assert result["name"] == scene["name"]
        for metric in ("psnr", "ssim", "sam"):
            assert result[metric] == pytest.approx(scene[metric], rel=1e-4)
        assert result["reconstruction"].shape == result["ground_truth"].shape == (28, 64, 64)
    assert format_table(results).count("\n") == 4  # header, rule, two scenes, mean


def test_figures_are_pngs(procedural_run):
    figures = sorted((procedural_run["out"] / "figures").iterdir())
    assert [f.name for f in figures] == ["scene_000.png", "scene_001.png"]
    for figure in figures:
        with Image.open(figure) as image:
            assert image.format == "PNG" and min(image.size) >= 300


def test_cave_cubes_and_a_size_off_the_multiple(shared_data, tmp_path):
    data = tmp_path / "cave"
    data.mkdir()
    for name in ("cave_toy_150.mat", "cave_balloons_100.mat"):  # 150 is not a multiple of 4: MST needs one
        (data / name).symlink_to(shared_data / "cubes" / name)
    status, stdout, stderr = _eval(
        "--backbone", "mst_s", "--random-weights", "--data", data, "--mask", shared_data / "mask_256.mat", "--output",
        tmp_path / "out",
        "--quiet",
    )
    assert status == 0, stderr
    scenes = json.loads((tmp_path / "out" / "metrics.json").read_text())["scenes"]
    assert [(s["name"], s["height"], s["width"]) for s in scenes] == [
        ("cave_balloons_100", 100, 100), ("cave_toy_150", 148, 148)
    ]
    assert all(math.isfinite(s[m]) for s in scenes for m in ("psnr", "ssim", "sam"))
    assert "## untrained mst_s" in stdout


def test_size_multiple_and_center_crop():
    assert size_multiple(create_backbone("mst_s")) == 4
    assert size_multiple(create_backbone("bisrnet")) == 1
    cube = torch.arange(7 * 10.0).reshape(1, 7, 10)
    assert torch.equal(center_crop(cube, 4), cube[:, 1:5, 1:9])
    assert torch.equal(center_crop(cube, 1), cube)


def _bad_inputs(tmp_path, baselines):
    """Case name -> (eval arguments, what the error message must say)."""
    empty = tmp_path / "empty"
    empty.mkdir()
    fresh = ["--backbone", "mst_s", "--random-weights"]
    small_mask = ["--mask", "random", "--mask-size", "32"]
    return {
        "missing data folder": ([*fresh, "--data", tmp_path / "nope", "--mask", "random"], "cube folder not found"),
        "empty data folder": ([*fresh, "--data", empty, "--mask", "random"], "no cubes in"),
        "mask smaller than the scenes": (
            [*fresh, *PROCEDURAL, *small_mask],
            "mask (32x32) is smaller than scene 'scene_000' (64x64): pass --tiles 32 to score it in 32x32 tiles",
        ),
        "a model compared with itself": (
            ["--checkpoint", baselines[0], *SCENES, "--compare", baselines[1], baselines[0]],
            f"--checkpoint and --compare name {baselines[0]} more than once: name each model once",
        ),
        "missing mask": ([*fresh, *PROCEDURAL, "--mask", tmp_path / "mask.mat"], "mask file not found"),
        "unknown backbone": (["--backbone", "mst_xl", "--random-weights", *SCENES], "no backbone 'mst_xl'; known backbones"),
        "untrained weights": (["--backbone", "mst_s", *SCENES], "no --checkpoint: the mst_s would run with random weights"),
        "device without CUDA": (["--checkpoint", baselines[0], *SCENES, "--device", "cuda"], "CUDA is not available"),
        "unknown device": (["--checkpoint", baselines[0], *SCENES, "--device", "tpu"], "unknown device 'tpu'"),
        "checkpoint of another backbone": (
            ["--checkpoint", baselines[0], "--backbone", "bisrnet", *SCENES],
            "holds a 'mst_s' checkpoint, but backbone='bisrnet'",
        ),
        "no model": ([*SCENES, "--random-weights"], "pass --checkpoint, --backbone, or both"),
    }


@pytest.mark.parametrize(
    "case",
    ["missing data folder", "empty data folder", "mask smaller than the scenes", "a model compared with itself",
     "missing mask", "unknown backbone",
     "checkpoint of another backbone", "no model", "untrained weights", "device without CUDA", "unknown device"],
)
def test_bad_inputs_are_one_line_errors(case, tmp_path, baselines):
    if case == "device without CUDA" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    argv, message = _bad_inputs(tmp_path, baselines)[case]
    status, _, stderr = _eval(*argv, "--output", tmp_path / "out", "--quiet")
    assert status == 2
    assert stderr.startswith("spectral-prior eval: error: ") and stderr.count("\n") == 1, stderr
    assert message in stderr
    assert "Traceback" not in stderr and not (tmp_path / "out" / "metrics.json").exists()


def test_an_output_that_is_a_file_fails_before_any_compute(tmp_path, baselines):
    (tmp_path / "out").write_text("")
    status, _, stderr = _eval("--checkpoint", baselines[0], *SCENES, "--output", tmp_path / "out", "--quiet")
    assert status == 2 and f"--output '{tmp_path / 'out'}' is a file, not a folder" in stderr


def test_tiles_score_each_scene_in_its_quadrants(baselines, tmp_path):
    """--tiles 32 on 64x64 scenes with a 32x32 mask: four tiles per scene, named by their corner, as SceneTiles."""
    status, stdout, stderr = _eval("--checkpoint", baselines[0], *PROCEDURAL, "--mask", "random", "--mask-size", "32",
                                   "--tiles", "32", "--output", tmp_path, "--quiet")
    assert status == 0, stderr
    report = json.loads((tmp_path / "metrics.json").read_text())
    names = [scene["name"] for scene in report["scenes"]]
    assert names == [f"scene_00{s}@{top},{left}" for s in (0, 1) for top in (0, 32) for left in (0, 32)]
    assert report["data"].endswith("in 32x32 tiles")
    model = sp.load_model(baselines[0])
    tiles = sp.data.SceneTiles(ProceduralCubes(2, size=64, seed=3), 32)
    expected = evaluate(model, tiles, cassi.random_mask(32, seed=3), input_setting="H", mask_setting="Phi")
    assert [r["psnr"] for r in report["scenes"]] == pytest.approx([r["psnr"] for r in expected], abs=1e-6)
