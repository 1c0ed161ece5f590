"""evaluate stage: per-pair scores, reference rows, summary, bad outputs, LPIPS n/a, MLflow runs."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient
from PIL import Image

from evaluation.metrics import Scorer
from evaluation.references import reference_outputs
from evaluation.weights import FOUND_FILE, WEIGHTS, ScorerWeights
from methods.encoder import random_encoder
from methods.image import resize_to_edge
from pipeline import cli, scoring
from pipeline.config import Params, load_params
from pipeline.io import ImageError, list_images, read_image
from pipeline.stages import evaluate
from tests.evaluation.reference_ports import ChannelStats, naive_frechet, port_art_fid

CONTENTS = {"c1": (40, 30), "c2": (34, 44)}
STYLES = {"s1": (36, 36), "s2": (50, 28)}


def save(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def noise(size: tuple[int, int], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)


@pytest.fixture
def layout(tmp_path: Path) -> dict[str, Path]:
    """test content/style folders and two methods' outputs: `copy` (output = content) and `noisy`."""
    dirs = {"content": tmp_path / "content", "style": tmp_path / "style", "outputs": tmp_path / "outputs"}
    for i, (name, size) in enumerate(CONTENTS.items()):
        save(dirs["content"] / f"{name}.png", noise(size, i))
    for i, (name, size) in enumerate(STYLES.items()):
        save(dirs["style"] / f"{name}.png", noise(size, 10 + i))
    for method in ("copy", "noisy"):
        rows = []
        for c, size in CONTENTS.items():
            for s in STYLES:
                arr = np.asarray(Image.open(dirs["content"] / f"{c}.png")) if method == "copy" else noise(size, 99)
                save(dirs["outputs"] / method / f"{c}__{s}.png", arr)
                rows.append({"file": f"{c}__{s}.png", "seconds": 2.0, "peak_mem_mb": 100.0})
        pd.DataFrame(rows).to_csv(dirs["outputs"] / method / "timing.csv", index=False)
    (dirs["outputs"] / "unfinished").mkdir()  # no timing.csv: not a finished stylize stage, ignored
    return dirs


@pytest.fixture
def params(repo_root: Path) -> Params:
    return load_params(repo_root / "params.yaml")


@pytest.fixture(scope="module")
def scorer() -> Scorer:
    encoder = random_encoder(seed=0)
    return Scorer(encoder, encoder, encoder, lpips_model=None)


def run(params, layout, out, scorer=None):
    return evaluate.run(params, layout["outputs"], layout["content"], layout["style"], out, scorer=scorer)


def test_scores_every_pair_with_reference_rows(tmp_path, layout, params, scorer):
    result = run(params, layout, tmp_path / "metrics", scorer)
    per_pair = pd.read_csv(tmp_path / "metrics" / "per_pair.csv")
    assert tuple(per_pair.columns) == evaluate.PAIR_FIELDS
    assert sorted(per_pair["method"].unique()) == ["blur", "copy", "grey", "identity", "noisy", "style_copy"]
    assert len(per_pair) == 4 * 6
    identity = per_pair[per_pair["method"] == "identity"]
    assert (identity["content_loss"] == 0).all()
    assert np.allclose(identity["ssim"], 1.0, atol=1e-6)
    copy = per_pair[per_pair["method"] == "copy"].reset_index(drop=True)
    assert np.allclose(copy["content_loss"], 0.0)  # PNG round trip of an 8-bit image is exact
    assert (per_pair[per_pair["method"] == "noisy"]["ssim"] < 0.2).all()
    assert (copy["seconds"] == 2.0).all()
    assert per_pair.loc[per_pair["method"] == "identity", "seconds"].isna().all()
    grey = per_pair[per_pair["method"] == "grey"]
    assert (grey["ssim"] < 0.1).all()  # a flat image keeps no structure
    # the DVC metrics file: one number per method and headline metric (+ fid_imagenet, artfid), nothing else
    on_disk = json.loads((tmp_path / "metrics" / "summary.json").read_text())
    assert set(on_disk) == {"blur", "copy", "grey", "identity", "noisy", "style_copy"}
    assert set(on_disk["noisy"]) == {*evaluate.HEADLINE, "seconds", "fid_imagenet", "artfid"}
    assert all(v is None or isinstance(v, float) for row in on_disk.values() for v in row.values())
    assert on_disk["copy"]["seconds"] == 2.0
    assert on_disk["noisy"]["fid_imagenet"] is None  # no scorer weights given: n/a, never a random network
    assert on_disk["noisy"]["artfid"] is None
    noisy = per_pair[per_pair["method"] == "noisy"]
    assert on_disk["noisy"]["style_gram"] == pytest.approx(noisy["style_gram"].mean(), rel=1e-5)
    scoring = json.loads((tmp_path / "metrics" / "scoring.json").read_text())
    assert scoring["metrics"]["ssim"]["higher_is_better"] is True
    assert scoring["metrics"]["style_gram_relu3_1"]["normalisation"]
    assert scoring["lpips"].startswith("n/a")
    assert scoring["fid_imagenet"].startswith("n/a: fid_inception is absent: no scorer weights folder given")
    assert scoring["artfid"].startswith("n/a: art_inception is absent")
    assert "fid" not in scoring
    statistics = json.loads((tmp_path / "metrics" / "statistics.json").read_text())
    assert statistics["pairs"] == 4
    assert statistics == json.loads(json.dumps({k: result[k] for k in statistics}))
    stats = statistics["methods"]["noisy"]["style_gram"]
    assert stats["ci_low"] <= stats["mean"] <= stats["ci_high"]
    assert stats["n"] == 4
    assert statistics["methods"]["copy"]["lpips"]["n"] == 0
    # 2 contents x 2 styles, below the minimum grid (5 x 5 in params.yaml): no star for anyone
    assert (statistics["contents"], statistics["styles"]) == (2, 2)
    assert (statistics["min_contents"], statistics["min_styles"]) == (5, 5)
    assert statistics["multiple_comparisons"] == {"method": "holm", "pairs_per_metric": 1}  # copy - noisy
    assert statistics["ranking"]["ssim"] == {"best": None, "status": "too few pairs to rank"}
    assert statistics["ranking"]["lpips"]["status"] == "nothing to compare"  # n/a for every method
    assert all(r["best"] is None for r in statistics["ranking"].values())
    paired = pd.read_csv(tmp_path / "metrics" / "paired.csv")
    row = paired[(paired["metric"] == "ssim") & (paired["method_a"] == "copy") & (paired["method_b"] == "noisy")]
    assert len(row) == 1
    expected = (per_pair[per_pair["method"] == "copy"]["ssim"].to_numpy() - noisy["ssim"].to_numpy()).mean()
    assert float(row["mean_diff"].iloc[0]) == pytest.approx(expected, rel=1e-6)
    # the copy is far better than noise on SSIM in every cell: the unadjusted CI excludes 0 and the test alone
    # (one competing pair: Holm changes nothing) is far below 0.05 -- yet 2 x 2 marks nothing
    assert bool(row["excludes_zero"].iloc[0])
    assert float(row["p_holm"].iloc[0]) == float(row["p_value"].iloc[0]) < 0.01
    assert not paired["significant"].any()
    references = paired["method_a"].isin(evaluate.REFERENCE_ROWS) | paired["method_b"].isin(evaluate.REFERENCE_ROWS)
    assert paired.loc[references, "p_holm"].isna().all()  # reference rows are outside the Holm family
    assert paired.loc[~references, "p_holm"].notna().any()


def test_missing_pair_names_the_file(tmp_path, layout, params, scorer):
    run(params, layout, tmp_path / "metrics", scorer)
    before = {p.name: p.read_bytes() for p in (tmp_path / "metrics").iterdir()}
    (layout["outputs"] / "noisy" / "c2__s1.png").unlink()
    with pytest.raises(evaluate.EvaluateError, match=r"noisy/c2__s1\.png: missing output"):
        run(params, layout, tmp_path / "metrics", scorer)
    assert {p.name: p.read_bytes() for p in (tmp_path / "metrics").iterdir()} == before


def test_size_mismatch_names_the_file(tmp_path, layout, params, scorer):
    save(layout["outputs"] / "copy" / "c1__s2.png", noise((20, 20), 5))
    with pytest.raises(evaluate.EvaluateError, match=r"copy/c1__s2\.png: 20x20 but content c1\.png is 40x30"):
        run(params, layout, tmp_path / "metrics", scorer)
    assert not (tmp_path / "metrics").exists()


def test_unreadable_output_names_the_file(tmp_path, layout, params, scorer):
    (layout["outputs"] / "noisy" / "c1__s1.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(ImageError, match=r"noisy/c1__s1\.png"):
        run(params, layout, tmp_path / "metrics", scorer)


def test_no_outputs_at_all(tmp_path, params, scorer):
    with pytest.raises(evaluate.EvaluateError, match="no outputs folder"):
        evaluate.run(params, tmp_path / "none", tmp_path, tmp_path, tmp_path / "m", scorer=scorer)


def write_found(folder: Path, weights: dict[str, dict]) -> Path:
    """A scorer-weights folder whose found.json lists ``weights`` (the rest absent, "offline")."""
    folder.mkdir(parents=True, exist_ok=True)
    doc = {name: weights.get(name, {"file": None, "sha256": None, "reason": "offline"}) for name in WEIGHTS}
    (folder / FOUND_FILE).write_text(json.dumps({"weights": doc}))
    return folder


def test_missing_lpips_weights_give_nan_and_one_warning(tmp_path, layout, params, caplog):
    # found.json lists the AlexNet file, but it is gone: LPIPS is n/a, naming the file
    weights = write_found(tmp_path / "scorer", {"lpips_alexnet": {"file": "alexnet-owt-7be5be79.pth", "sha256": "0"}})
    with caplog.at_level(logging.WARNING):
        result = evaluate.run(  # real caffe scorer
            params, layout["outputs"], layout["content"], layout["style"], tmp_path / "metrics", weights_dir=weights
        )
    warnings = [r for r in caplog.records if "lpips is n/a" in r.getMessage()]
    assert len(warnings) == 1
    assert "alexnet-owt-7be5be79.pth is listed in found.json but missing" in warnings[0].getMessage()
    per_pair = pd.read_csv(tmp_path / "metrics" / "per_pair.csv")
    assert per_pair["lpips"].isna().all()
    assert per_pair["ssim"].notna().all()
    assert result["scoring"]["lpips"].startswith("n/a: LPIPS's AlexNet weights are absent")
    assert result["scoring"]["weights"]["weights"]["art_inception"]["reason"] == "offline"  # found.json, as it was
    assert result["scoring"]["artfid"] == "n/a: art_inception is absent: offline"
    assert result["scoring"]["metrics"]["cfsd"]["network"].startswith("caffe")  # auto without torchvision's VGG-19
    assert result["methods"]["identity"]["content_loss"]["mean"] == 0.0
    assert math.isclose(result["methods"]["identity"]["ssim"]["mean"], 1.0, abs_tol=1e-6)


def test_cli_logs_one_run_per_method(tmp_path, layout, repo_root, monkeypatch):
    raw = yaml.safe_load((repo_root / "params.yaml").read_text())
    raw["evaluate"].update(bootstrap=200)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'store.db'}")
    code = cli.main(
        [
            "evaluate",
            "--params",
            str(tmp_path / "params.yaml"),
            "--outputs",
            str(layout["outputs"]),
            "--content",
            str(layout["content"]),
            "--style",
            str(layout["style"]),
            "--out",
            str(tmp_path / "metrics"),
            "--weights",
            str(tmp_path / "no-scorer-weights"),
        ]
    )
    assert code == 0
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'store.db'}")
    exp = client.get_experiment_by_name(raw["tracking"]["experiment"])
    runs = client.search_runs([exp.experiment_id])
    assert sorted(r.data.tags["method"] for r in runs) == ["blur", "copy", "grey", "identity", "noisy", "style_copy"]
    for r in runs:
        assert r.data.tags["stage"] == "evaluate"
        assert "ssim_mean" in r.data.metrics
        assert "lpips_mean" not in r.data.metrics  # n/a is not logged as a number
        assert [a.path for a in client.list_artifacts(r.info.run_id)] == ["per_pair.csv"]


def test_the_real_scorer_orders_the_reference_rows_sensibly(repo_root, params, tmp_path):
    """On a real photo and painting: a blurred photo keeps more of its structure than a flat grey image, which keeps
    more than nothing; the painting itself matches the style best (the per-filter network once broke the first)."""
    scorer, _ = scoring.build_scorer(params)  # no scorer weights: LPIPS n/a, CFSD on caffe
    content = resize_to_edge(read_image(list_images(repo_root / "data/sample/content")[0]), 128)
    style = resize_to_edge(read_image(list_images(repo_root / "data/sample/style")[0]), 128)
    scores = {k: scorer.score(v, content, style) for k, v in reference_outputs(content, style).items()}
    assert scores["identity"]["content_loss"] == 0.0
    assert scores["blur"]["content_loss"] < scores["grey"]["content_loss"]
    assert scores["blur"]["ssim"] > scores["grey"]["ssim"]
    for metric in ("style_gram", "style_meanstd", "color_hist"):
        assert scores["style_copy"][metric] < min(scores[k][metric] for k in ("identity", "grey", "blur"))


def _frechet(a: np.ndarray, b: np.ndarray) -> float:
    """Naive FID of two (N, D) feature sets (sample covariances, ddof 1)."""
    return naive_frechet(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))


class Squared(ChannelStats):
    """Another tiny extractor standing in for the art Inception, so that the two FIDs are told apart (scaled: the
    FIDs of these noise images are small, and ArtFID would round them away)."""

    def forward(self, x):
        return super().forward(x.pow(2)) * 100


def fake_weights(tmp_path: Path, *names: str) -> ScorerWeights:
    paths = {}
    for name in names:
        paths[name] = tmp_path / f"{name}.pth"
        paths[name].write_bytes(b"stand-in")
    return ScorerWeights(paths, {n: "offline" for n in WEIGHTS if n not in names}, {})


def test_fids_pair_each_output_with_its_own_style_image_as_styleid(tmp_path, layout, params, monkeypatch):
    """StyleID duplicates the style images to match the stylized ones (README "Evaluation"), so the style set of a
    2 x 2 grid is [s1, s2, s1, s2], not [s1, s2]; the outputs stream through the networks in content-major order.
    fid_imagenet runs on the ImageNet Inception, artfid on the art Inception, as art-fid computes it."""
    monkeypatch.setattr(evaluate, "load_inception", lambda path: ChannelStats())
    monkeypatch.setattr(evaluate, "load_art_inception", lambda path: Squared())
    per_pair = pd.DataFrame({"method": ["noisy"] * 4 + ["copy"] * 4, "lpips": [0.5] * 4 + [0.25] * 4})
    weights = fake_weights(tmp_path, "fid_inception", "art_inception")
    scores, notes = evaluate.distribution_scores(
        params, ["copy", "noisy"], layout["outputs"], layout["content"], layout["style"], per_pair, "cpu", weights
    )
    assert notes == {"fid_imagenet": "available", "artfid": "available"}

    def feats(paths, net):
        return np.concatenate([net(read_image(p)).double().numpy() for p in paths])

    styles = [layout["style"] / f"{s}.png" for s in STYLES]
    per_pair_styles = [s for _ in CONTENTS for s in styles]
    for method, lpips_mean in (("noisy", 0.5), ("copy", 0.25)):
        outputs = [layout["outputs"] / method / f"{c}__{s}.png" for c in CONTENTS for s in STYLES]
        expected = _frechet(feats(outputs, ChannelStats()), feats(per_pair_styles, ChannelStats()))
        assert scores[method]["fid_imagenet"] == pytest.approx(expected, rel=1e-6)
        once = _frechet(feats(outputs, ChannelStats()), feats(styles, ChannelStats()))
        assert scores[method]["fid_imagenet"] != pytest.approx(once, rel=1e-3)  # not each style once
        art = port_art_fid(feats(outputs, Squared()), feats(per_pair_styles, Squared()), np.full(4, lpips_mean))
        assert scores[method]["artfid"] == pytest.approx(art, rel=1e-6)
        assert scores[method]["artfid"] != pytest.approx((1 + lpips_mean) * (1 + expected), rel=1e-3)  # other net
    identity = [layout["content"] / f"{c}.png" for c in CONTENTS for _ in STYLES]  # reference rows too
    assert scores["identity"]["fid_imagenet"] == pytest.approx(
        _frechet(feats(identity, ChannelStats()), feats(per_pair_styles, ChannelStats())), rel=1e-6
    )


def test_artfid_is_na_without_the_art_inception_or_without_lpips(tmp_path, layout, params, monkeypatch):
    monkeypatch.setattr(evaluate, "load_inception", lambda path: ChannelStats())
    monkeypatch.setattr(evaluate, "load_art_inception", lambda path: Squared())
    per_pair = pd.DataFrame({"method": ["noisy"] * 4 + ["copy"] * 4, "lpips": [0.5] * 8})
    args = (params, ["copy", "noisy"], layout["outputs"], layout["content"], layout["style"])
    scores, notes = evaluate.distribution_scores(*args, per_pair, "cpu", fake_weights(tmp_path, "fid_inception"))
    assert notes == {"fid_imagenet": "available", "artfid": "n/a: art_inception is absent: offline"}
    assert scores["noisy"]["fid_imagenet"] is not None
    assert all(row["artfid"] is None for row in scores.values())  # never (1 + LPIPS)(1 + ImageNet FID)
    no_lpips = per_pair.assign(lpips=np.nan)
    weights = fake_weights(tmp_path, "fid_inception", "art_inception")
    scores, notes = evaluate.distribution_scores(*args, no_lpips, "cpu", weights)
    assert notes["artfid"] == "n/a: LPIPS is n/a (ArtFID's content term)"
    assert all(row["artfid"] is None for row in scores.values())
