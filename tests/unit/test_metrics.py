"""Property tests of the metrics on synthetic features and images (torchmetrics style)."""

from __future__ import annotations

import importlib
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from fashiongen.errors import ConfigError
from fashiongen.metrics import (
    METRIC_NAME,
    METRIC_VERSION,
    FeatureStats,
    ReferenceStats,
    class_diversity,
    class_histogram,
    class_metrics,
    class_reference,
    conditional_accuracy,
    copy_rate,
    copy_threshold,
    degradations,
    density_coverage,
    entropy_nats,
    evaluate,
    feature_stats,
    fid,
    kid,
    kth_neighbour_distances,
    mean_abs_laplacian,
    mean_pairwise_distance,
    memorisation,
    modes_missing,
    nearest_train_distances,
    neighbour_metrics,
    neighbour_radii,
    neighbours,
    precision_recall,
)
from fashiongen.metrics import cache as stats_cache
from fashiongen.metrics import stats as stats_module
from fashiongen.metrics.conditional import CLASS_DIVERSITY_KEYS
from fashiongen.nets.featnet import FeatNet

# the module, which the package's `evaluate` function shadows as an attribute
evaluate_module = importlib.import_module("fashiongen.metrics.evaluate")

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
needs_fashion = pytest.mark.skipif(
    not (FASHION_DIR / "t10k-images-idx3-ubyte.gz").is_file(), reason="Fashion-MNIST files absent"
)


@pytest.fixture(autouse=True)
def _tmp_cache_one_thread(tmp_path, monkeypatch):
    # one thread: these tensors are small, and extra threads only contend on a shared CPU
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    torch.set_num_threads(1)


def random_spd(rng: np.random.Generator, dim: int) -> np.ndarray:
    a = rng.normal(size=(dim, dim))
    return a @ a.T / dim + 0.1 * np.eye(dim)


def closed_form_fid(mu1, cov1, mu2, cov2) -> float:
    """||mu1-mu2||^2 + Tr(C1 + C2) - 2 Tr((C1 C2)^(1/2)), the trace via eigenvalues of C1 C2."""
    eigenvalues = np.linalg.eigvals(cov1 @ cov2)
    trace_sqrt = np.sqrt(np.clip(eigenvalues.real, 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(cov1) + np.trace(cov2) - 2 * trace_sqrt)


# --- FeatureStats and FID -------------------------------------------------------------------


def test_streaming_stats_equal_batch_stats():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=(1003, 7)) @ rng.normal(size=(7, 7))
    stats = FeatureStats(keep_features=True)
    for start, stop in [(0, 1), (1, 250), (250, 251), (251, 900), (900, 1003)]:
        stats.update(torch.from_numpy(x[start:stop]).float() if start == 1 else x[start:stop])
    mu, cov = stats.compute()
    assert mu.dtype == np.float64 and cov.dtype == np.float64
    np.testing.assert_allclose(mu, x.mean(0), rtol=1e-6)
    np.testing.assert_allclose(cov, np.cov(x, rowvar=False), rtol=1e-5, atol=1e-6)
    assert stats.num_samples == 1003 and stats.features.shape == (1003, 7)


def test_stats_reject_bad_input():
    stats = FeatureStats()
    with pytest.raises(ValueError, match="at least two"):
        stats.compute()
    stats.update(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="feature dim"):
        stats.update(np.zeros((3, 5)))
    with pytest.raises(ValueError, match="not kept"):
        _ = stats.features


def test_fid_of_a_set_against_itself_is_zero():
    x = np.random.default_rng(1).normal(size=(500, 32))
    mu, cov = feature_stats(x)
    assert fid(mu, cov, mu, cov) == pytest.approx(0.0, abs=1e-8)


def test_fid_of_exact_stats_equals_closed_form():
    rng = np.random.default_rng(2)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    cov1, cov2 = random_spd(rng, 6), random_spd(rng, 6)
    assert fid(mu1, cov1, mu2, cov2) == pytest.approx(
        closed_form_fid(mu1, cov1, mu2, cov2), rel=1e-9
    )
    # commuting (diagonal) covariances: sum of (sqrt(a) - sqrt(b))^2
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 9.0])
    expected = 1.0 + sum((math.sqrt(p) - math.sqrt(q)) ** 2 for p, q in zip(a, b, strict=True))
    assert fid(np.zeros(3), np.diag(a), np.array([1.0, 0, 0]), np.diag(b)) == pytest.approx(
        expected, rel=1e-12
    )


def test_fid_of_sampled_gaussians_matches_closed_form():
    rng = np.random.default_rng(3)
    dim, n = 4, 200_000
    mu1, mu2 = rng.normal(size=dim), rng.normal(size=dim)
    cov1, cov2 = random_spd(rng, dim), random_spd(rng, dim)
    stats1, stats2 = FeatureStats(), FeatureStats()
    for stats, mu, cov in [(stats1, mu1, cov1), (stats2, mu2, cov2)]:
        samples = rng.multivariate_normal(mu, cov, size=n)
        for chunk in np.array_split(samples, 7):
            stats.update(chunk)
    expected = closed_form_fid(mu1, cov1, mu2, cov2)
    assert fid(*stats1.compute(), *stats2.compute()) == pytest.approx(expected, rel=0.02, abs=0.01)


def test_fid_survives_singular_covariances():
    x = np.random.default_rng(4).normal(size=(10, 64))  # rank 9 < 64
    y = x + 0.5
    value = fid(*feature_stats(x), *feature_stats(y))
    assert math.isfinite(value) and value == pytest.approx(64 * 0.25, rel=1e-6)


# --- KID ------------------------------------------------------------------------------------


def test_kid_of_identical_distributions_is_near_zero():
    generator = torch.Generator().manual_seed(5)
    a, b = torch.randn(2, 2000, 16, generator=generator)
    mean, std = kid(a, b, num_subsets=20, subset_size=500, generator=generator)
    assert abs(mean) < 3 * std + 1e-3
    shifted, _ = kid(a, b + 0.5, num_subsets=20, subset_size=500, generator=generator)
    assert shifted > 100 * abs(mean)


def test_kid_is_unbiased_for_one_distribution():
    generator = torch.Generator().manual_seed(6)
    estimates = []
    for _ in range(60):
        a, b = torch.randn(2, 60, 5, generator=generator)
        estimates.append(kid(a, b, num_subsets=4, subset_size=60, generator=generator)[0])
    estimates = np.array(estimates)
    standard_error = estimates.std(ddof=1) / math.sqrt(len(estimates))
    assert abs(estimates.mean()) < 4 * standard_error
    assert (estimates < 0).any()  # an unbiased estimator of 0 must go negative


def test_kid_with_given_real_subsets_and_sums_equals_kid_drawing_them():
    generator = torch.Generator().manual_seed(8)
    a, b = torch.randn(60, 6, generator=generator), torch.randn(90, 6, generator=generator)
    drawn = kid(a, b, num_subsets=4, subset_size=40, generator=torch.Generator().manual_seed(1))
    replay = torch.Generator().manual_seed(1)
    subsets = stats_module.kid_subsets(len(b), 4, 40, replay)
    given = kid(
        a,
        b,
        num_subsets=4,
        subset_size=40,
        generator=replay,
        subsets_b=subsets,
        within_b=stats_module.within_kernel_sums(b, subsets),
    )
    assert given == pytest.approx(drawn, rel=1e-12)


def test_kid_separates_distributions_and_caps_subset_size():
    generator = torch.Generator().manual_seed(7)
    a = torch.randn(50, 8, generator=generator)
    b = torch.randn(80, 8, generator=generator) + 1.0
    mean, std = kid(a, b, num_subsets=10, subset_size=1000, generator=generator)
    assert mean > 5 * max(std, 1e-6) and mean > 0.1


# --- precision/recall, density/coverage -----------------------------------------------------


def test_precision_recall_of_identical_sets_is_one():
    x = torch.randn(300, 8, generator=torch.Generator().manual_seed(8))
    assert precision_recall(x, x.clone(), k=3) == (1.0, 1.0)


def test_recall_and_coverage_collapse_for_one_tight_cluster():
    generator = torch.Generator().manual_seed(9)
    real = torch.randn(500, 8, generator=generator)
    fake = real[0] + 1e-3 * torch.randn(500, 8, generator=generator)
    precision, recall = precision_recall(real, fake, k=3)
    density, coverage = density_coverage(real, fake, k=5)
    assert precision > 0.99 and recall < 0.02
    assert coverage < 0.02
    _, full_coverage = density_coverage(real, real.clone(), k=5)
    assert full_coverage == 1.0


def test_density_is_about_one_for_matching_distributions():
    generator = torch.Generator().manual_seed(10)
    real, fake = torch.randn(2, 1000, 4, generator=generator)
    density, coverage = density_coverage(real, fake, k=5)
    assert 0.8 < density < 1.2 and coverage > 0.9


def test_neighbour_metrics_agree_across_chunkings_and_the_fused_pass(monkeypatch):
    generator = torch.Generator().manual_seed(11)
    real, fake = torch.randn(120, 6, generator=generator), torch.randn(90, 6, generator=generator)
    whole = [*precision_recall(real, fake), *density_coverage(real, fake)]
    monkeypatch.setattr(neighbours, "CHUNK_ELEMENTS", 500)
    chunked = [*precision_recall(real, fake), *density_coverage(real, fake)]
    assert chunked == pytest.approx(whole)
    fused = neighbour_metrics(real, fake, k_precision=3, k_density=5)
    assert [fused[key] for key in ("precision", "recall", "density", "coverage")] == pytest.approx(
        whole
    )


def test_neighbour_radii_and_mean_pairwise_distance_match_brute_force(monkeypatch):
    x = torch.randn(70, 5, generator=torch.Generator().manual_seed(18))
    brute = torch.cdist(x.double(), x.double())
    expected_mean = float(brute.sum() / (70 * 69))
    whole = neighbour_radii(x, (5, 3))
    monkeypatch.setattr(neighbours, "CHUNK_ELEMENTS", 300)  # several row chunks
    chunked = neighbour_radii(x, (3, 5))
    for k in (3, 5):
        sorted_rows = brute.sort(1).values[:, k].float()
        torch.testing.assert_close(whole[k], sorted_rows)
        torch.testing.assert_close(chunked[k], sorted_rows)
        torch.testing.assert_close(kth_neighbour_distances(x, k), sorted_rows)
    assert mean_pairwise_distance(x) == pytest.approx(expected_mean, rel=1e-5)
    # identical rows: 0 up to the float32 rounding of cdist's matrix-product form
    assert mean_pairwise_distance(x[:1].repeat(40, 1)) < 1e-3 * expected_mean
    with pytest.raises(ValueError, match="k must be"):
        neighbour_radii(x[:5], (3, 5))
    with pytest.raises(ValueError, match="two samples"):
        mean_pairwise_distance(x[:1])


# --- per-class recall, coverage and spread --------------------------------------------------

NUM_CLASSES = 4
PER_CLASS_KEYS = ("per_class_recall", "per_class_coverage", "intra_class_spread")


def clustered(
    num: int, centres: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features of one Gaussian cluster per class; labels cycle 0, 1, ..., K-1, 0, ..."""
    labels = torch.arange(num) % len(centres)
    return centres[labels] + torch.randn(num, centres.shape[1], generator=generator), labels


def repeated(features: torch.Tensor, labels: torch.Tensor, per_class: int) -> torch.Tensor:
    """Every sample replaced by one of the first `per_class` samples of its class, in turn."""
    firsts = torch.stack(
        [torch.nonzero(labels == c).flatten()[:per_class] for c in range(NUM_CLASSES)]
    )  # (K, per_class) sample indices
    turn = torch.arange(len(labels)) // NUM_CLASSES % per_class  # labels cycle through K
    return features[firsts[labels, turn]]


@pytest.fixture(scope="module")
def per_class_sets() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Real features (300 per class) and samples (100 per class) of one distribution."""
    generator = torch.Generator().manual_seed(17)
    centres = 6 * torch.randn(NUM_CLASSES, 8, generator=generator)
    return {"real": clustered(1200, centres, generator), "fake": clustered(400, centres, generator)}


def per_class(sets, fake: torch.Tensor | None = None, labels: torch.Tensor | None = None) -> dict:
    real, real_labels = sets["real"]
    same, same_labels = sets["fake"]
    return class_diversity(
        real, real_labels, same if fake is None else fake, same_labels if labels is None else labels
    )


def test_per_class_metrics_of_a_set_against_itself_are_one(per_class_sets):
    real, labels = per_class_sets["real"]
    scores = class_diversity(real, labels, real.clone(), labels)
    assert [scores[k] for k in PER_CLASS_KEYS] == [1.0, 1.0, pytest.approx(1.0, abs=1e-6)]
    assert list(scores) == list(CLASS_DIVERSITY_KEYS)
    assert scores["per_class_num_samples"] == scores["per_class_num_real"] == [300] * 4


def test_per_class_metrics_of_one_distribution_match_real_levels(per_class_sets):
    scores = per_class(per_class_sets)
    assert scores["intra_class_spread"] == pytest.approx(1.0, abs=0.05)
    assert all(s == pytest.approx(1.0, abs=0.1) for s in scores["intra_class_spread_by_class"])
    # the real-vs-real level of improved recall at k = 3 and a 1 : 3 size ratio
    assert scores["per_class_recall"] > 0.75 and scores["per_class_coverage"] > 0.6
    assert scores["per_class_recall"] == pytest.approx(np.mean(scores["per_class_recall_by_class"]))


def test_one_repeated_image_per_class_scores_near_zero(per_class_sets):
    fake, labels = per_class_sets["fake"]
    scores = per_class(per_class_sets, repeated(fake, labels, 1))
    assert scores["intra_class_spread"] < 0.01
    assert scores["per_class_recall"] < 0.02 and scores["per_class_coverage"] < 0.05


def test_three_images_per_class_lie_in_between(per_class_sets):
    fake, labels = per_class_sets["fake"]
    one, three, full = (per_class(per_class_sets, repeated(fake, labels, n)) for n in (1, 3, 100))
    # 3 distinct images: 2/3 of the pairs differ, so the spread is about 2/3 of real's
    assert 0.01 < 0.3 < three["intra_class_spread"] < 0.95 < full["intra_class_spread"]
    assert one["per_class_coverage"] < three["per_class_coverage"] < full["per_class_coverage"] / 4
    # exact repeats give the sample balls radius 0, so recall sees almost nothing
    assert three["per_class_recall"] < 0.05 < 0.75 < full["per_class_recall"]


def test_samples_ignoring_their_labels_spread_wider_than_real_classes(per_class_sets):
    fake, labels = per_class_sets["fake"]
    shuffled = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))]
    scores = per_class(per_class_sets, fake, shuffled)
    assert scores["intra_class_spread"] > 2 * per_class(per_class_sets)["intra_class_spread"]


def test_classes_with_too_few_samples_are_none_and_left_out(per_class_sets):
    fake, labels = per_class_sets["fake"]
    six = torch.nonzero(labels == 1).flatten()[:6]  # 6 = k + 1 samples: the fewest scored
    five = torch.nonzero(labels == 3).flatten()[:5]
    keep = torch.cat([torch.nonzero(labels == 0).flatten(), six, five])  # class 2: none
    scores = per_class(per_class_sets, fake[keep], labels[keep])
    assert scores["per_class_num_samples"] == [100, 6, 0, 5]
    assert scores["per_class_min_samples"] == 6
    for key in PER_CLASS_KEYS:
        by_class = scores[f"{key}_by_class"]
        assert by_class[2] is None and by_class[3] is None
        assert by_class[0] is not None and by_class[1] is not None
        assert scores[key] == pytest.approx((by_class[0] + by_class[1]) / 2)
    real, real_labels = per_class_sets["real"]
    nothing = class_diversity(real, real_labels, fake[five], labels[five])
    assert all(nothing[key] is None for key in PER_CLASS_KEYS)
    # a class with samples but too few real images is left out the same way
    few_real = class_diversity(real[:20], real_labels[:20], fake, labels)
    assert few_real["per_class_num_real"] == [5] * 4 and few_real["per_class_recall"] is None


def test_class_reference_holds_within_class_radii_and_spreads(per_class_sets):
    real, labels = per_class_sets["real"]
    radii, spread = class_reference(real, labels, (3, 5), num_classes=6)
    assert spread.dtype == np.float64 and spread.shape == (6,) and np.isnan(spread[4:]).all()
    for c in range(NUM_CLASSES):
        rows = labels == c
        np.testing.assert_allclose(
            radii[5][rows.numpy()], kth_neighbour_distances(real[rows], 5).numpy()
        )
        assert spread[c] == pytest.approx(mean_pairwise_distance(real[rows]))
    cached = class_diversity(
        real, labels, *per_class_sets["fake"], real_class_radii=radii, real_class_spread=spread
    )
    assert cached == per_class(per_class_sets)  # cached statistics change nothing
    # overlapping classes: a point's k-th neighbour within its class lies farther than its
    # k-th neighbour among all points
    mixed = torch.randn(400, 4, generator=torch.Generator().manual_seed(20))
    mixed_labels = torch.arange(400) % NUM_CLASSES
    within, _ = class_reference(mixed, mixed_labels, (3,))
    overall = kth_neighbour_distances(mixed, 3).numpy()
    assert (within[3] >= overall).all() and (within[3] > overall).mean() > 0.9
    rows = (mixed_labels == 2).numpy()
    np.testing.assert_allclose(within[3][rows], kth_neighbour_distances(mixed[rows], 3).numpy())
    with pytest.raises(ValueError, match="non-negative"):
        class_diversity(real, labels, real[:10], torch.full((10,), -1))


# --- class histogram ------------------------------------------------------------------------


def test_entropy_is_max_for_uniform_and_zero_for_one_class():
    assert entropy_nats(np.full(10, 0.1)) == pytest.approx(math.log(10))
    assert entropy_nats(np.eye(10)[3]) == 0.0
    assert modes_missing(np.full(10, 0.1)) == 0
    assert modes_missing(np.eye(10)[3]) == 9


def test_class_metrics_from_logits():
    labels = torch.arange(100) % 10
    logits = torch.nn.functional.one_hot(labels, 10).float()
    logits[:5] = torch.nn.functional.one_hot(torch.full((5,), 9), 10).float()  # 5 wrong
    np.testing.assert_allclose(class_histogram(logits).sum(), 1.0)
    result = class_metrics(logits, labels)
    assert result["conditional_accuracy"] == pytest.approx(0.95)
    assert result["class_entropy_max"] == pytest.approx(math.log(10))
    assert class_metrics(logits)["conditional_accuracy"] is None
    with pytest.raises(ValueError, match="labels"):
        conditional_accuracy(logits, labels[:3])


# --- memorisation ---------------------------------------------------------------------------


def random_images(n: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=generator)


def test_copies_of_training_images_have_distance_zero_and_copy_rate_one(monkeypatch):
    monkeypatch.setattr(memorisation, "CHUNK_ELEMENTS", 4000)  # several chunks
    train, test = random_images(300, 12), random_images(100, 13)
    copies = train[torch.randperm(300, generator=torch.Generator().manual_seed(0))[:50]]
    distances = nearest_train_distances(copies, train)
    assert (distances == 0).all()
    threshold = copy_threshold(nearest_train_distances(test, train))
    assert threshold > 0
    assert copy_rate(distances, threshold) == 1.0
    assert copy_rate(nearest_train_distances(test, train), threshold) == pytest.approx(0.01)


def test_nearest_train_distances_match_brute_force():
    train, samples = random_images(64, 14), random_images(20, 15)
    a = samples.reshape(20, -1).double() / 255
    b = train.reshape(64, -1).double() / 255
    expected = torch.cdist(a, b).min(1).values.numpy()
    np.testing.assert_allclose(nearest_train_distances(samples, train), expected, rtol=1e-6)
    with pytest.raises(ValueError, match="shape"):
        nearest_train_distances(samples[:, :, :14], train)


# --- cache ----------------------------------------------------------------------------------


def test_reference_stats_cache_round_trip(tmp_path):
    rng = np.random.default_rng(16)
    features = rng.normal(size=(40, 5)).astype(np.float32)
    mu, cov = feature_stats(features)
    ref = ReferenceStats(
        "folder:/x y",
        "test",
        "abc123",
        mu,
        cov,
        features,
        {3: rng.random(40).astype(np.float32)},
        0.25,
    )
    path = stats_cache.save_reference_stats(ref)
    assert path.parent == tmp_path / "cache" / "fashiongen" / "stats"
    assert path.name.endswith(f"-abc123-m{METRIC_VERSION}.npz")
    with np.load(path, allow_pickle=False) as data:
        assert "mu" in data.files
    loaded = stats_cache.load_reference_stats("folder:/x y", "test", "abc123", ks=(3,))
    assert loaded is not None and loaded.count == 40 and loaded.laplacian == 0.25
    np.testing.assert_array_equal(loaded.cov, cov)
    np.testing.assert_array_equal(loaded.radii[3], ref.radii[3])
    assert stats_cache.load_reference_stats("folder:/x y", "test", "abc123", ks=(5,)) is None
    assert stats_cache.load_reference_stats("folder:/x y", "test", "other") is None
    path.write_bytes(b"not a zip")
    assert stats_cache.load_reference_stats("folder:/x y", "test", "abc123") is None


def test_reference_cache_is_keyed_by_the_metric_version(tmp_path, monkeypatch):
    rng = np.random.default_rng(17)
    features = rng.normal(size=(20, 4)).astype(np.float32)
    ref = ReferenceStats(
        "synthetic",
        "test",
        "abc",
        *feature_stats(features),
        features,
        {3: rng.random(20).astype(np.float32)},
        0.2,
    )
    path = stats_cache.save_reference_stats(ref)
    old_arrays = ref.to_arrays()  # the current version number inside
    monkeypatch.setattr(stats_cache, "METRIC_VERSION", METRIC_VERSION + 1)
    assert stats_cache.stats_path("synthetic", "test", "abc") != path
    assert stats_cache.load_reference_stats("synthetic", "test", "abc") is None
    stats_cache.save_arrays(stats_cache.stats_path("synthetic", "test", "abc"), old_arrays)
    assert stats_cache.load_reference_stats("synthetic", "test", "abc") is None
    monkeypatch.setattr(stats_cache, "METRIC_VERSION", METRIC_VERSION)
    assert stats_cache.load_reference_stats("synthetic", "test", "abc") is not None


# --- high-frequency diagnostic ----------------------------------------------------------------


def test_mean_abs_laplacian_sees_noise_and_blur():
    assert mean_abs_laplacian(torch.zeros(2, 1, 8, 8, dtype=torch.uint8)) == 0.0
    board = degradations.checkerboard(torch.full((1, 1, 6, 6), 128, dtype=torch.uint8), 0.5)
    assert mean_abs_laplacian(board[:, :, 1:-1, 1:-1].contiguous()) > 1.5  # |4 (+/-0.5)| inside
    generator = torch.Generator().manual_seed(0)
    images = torch.zeros(4, 1, 28, 28, dtype=torch.uint8)
    images[:, :, 6:22, 8:20] = 200  # a bright garment on black
    sharp = mean_abs_laplacian(images)
    assert mean_abs_laplacian(degradations.blur(images, 1.0)) < sharp
    assert mean_abs_laplacian(degradations.gaussian_noise(images, 0.1, generator)) > sharp
    with pytest.raises(TypeError, match="uint8"):
        mean_abs_laplacian(images.float())


# --- evaluate -------------------------------------------------------------------------------


@pytest.fixture
def tiny_featnet() -> FeatNet:
    torch.manual_seed(0)
    return FeatNet(10).eval()


def test_evaluate_on_synthetic_data(tiny_featnet, tmp_path):
    from fashiongen.data import load_dataset

    test = load_dataset("synthetic", "test")
    result = evaluate(
        test.images,
        labels=test.labels,
        dataset="synthetic",
        featnet=tiny_featnet,
        num_kid_subsets=5,
    )
    assert result["num_samples"] == result["ref_count"] == len(test.images)
    assert result["fid"] == pytest.approx(0.0, abs=1e-6)
    assert result["precision"] == result["recall"] == result["coverage"] == 1.0
    assert result["featnet"]["fingerprint"] == tiny_featnet.fingerprint()
    assert (result["metric"]["name"], result["metric"]["version"]) == (METRIC_NAME, METRIC_VERSION)
    assert "texture" in result["metric"]["definition"]
    assert result["metric"]["texture_dim"] == tiny_featnet.texture_dim
    assert result["laplacian_ratio"] == pytest.approx(1.0)
    assert result["laplacian_mean_abs"] == pytest.approx(result["laplacian_mean_abs_real"])
    assert 0 <= result["conditional_accuracy"] <= 1 and result["notes"] == []
    assert result["copy_rate"] < 0.1 and result["nn_train_distance_median"] > 0
    cached = sorted(p.name for p in (tmp_path / "cache" / "fashiongen" / "stats").glob("*.npz"))
    assert len(cached) == 3 and sum("-kid-s0-5x" in name for name in cached) == 1
    again = evaluate(
        test.images,
        labels=test.labels,
        dataset="synthetic",
        featnet=tiny_featnet,
        num_kid_subsets=5,
    )  # real kernel sums from the cache
    assert again["kid_mean"] == pytest.approx(result["kid_mean"], rel=1e-12, abs=1e-15)
    train = load_dataset("synthetic", "train").images[:40]
    copied = evaluate(train, dataset="synthetic", featnet=tiny_featnet, num_kid_subsets=5)
    assert copied["copy_rate"] == 1.0 and copied["nn_train_distance_median"] == 0.0


def test_evaluate_converts_other_shapes_and_rejects_floats(tiny_featnet):
    images = torch.randint(0, 256, (12, 3, 32, 32), dtype=torch.uint8)
    result = evaluate(
        images, dataset="synthetic", featnet=tiny_featnet, num_kid_subsets=2, use_memorisation=False
    )
    assert "converted from 3x32x32" in result["notes"][0] and result["copy_rate"] is None
    with pytest.raises(TypeError, match="to_uint8"):
        evaluate(images.float(), dataset="synthetic", featnet=tiny_featnet)
    with pytest.raises(ConfigError, match="at least"):
        evaluate(images[:3], dataset="synthetic", featnet=tiny_featnet)


def mixing_featnet() -> FeatNet:
    """An untrained featnet whose head is centred on the synthetic features, so that its
    predictions spread over the classes (an untrained one predicts a single class)."""
    from fashiongen.data import load_dataset

    torch.manual_seed(0)
    net = FeatNet(10).eval()
    features = net.features(load_dataset("synthetic", "test").images)
    with torch.no_grad():
        net.head.bias.copy_(-(net.head.weight @ features[:, : net.feature_dim].mean(0)))
    return net


def test_evaluate_scores_each_class_by_requested_else_predicted_class():
    from fashiongen.data import load_dataset

    net, test = mixing_featnet(), load_dataset("synthetic", "test")
    kwargs = {
        "dataset": "synthetic",
        "featnet": net,
        "num_kid_subsets": 2,
        "use_memorisation": False,
    }
    asked = evaluate(test.images, labels=test.labels, **kwargs)
    assert [asked[k] for k in PER_CLASS_KEYS] == [1.0, 1.0, pytest.approx(1.0, abs=1e-6)]
    assert asked["per_class_num_samples"] == [16] * 10 and asked["notes"] == []
    assert len(asked["intra_class_spread_by_class"]) == len(asked["class_names"])
    assert "per_class" in asked["seconds"]
    predicted = torch.bincount(net.logits(test.images).argmax(1), minlength=10).tolist()
    assert predicted != [16] * 10
    unconditional = evaluate(test.images, **kwargs)
    assert unconditional["per_class_num_samples"] == predicted
    assert any("predicts" in note for note in unconditional["notes"])
    scored = [v for v in unconditional["per_class_recall_by_class"] if v is not None]
    assert unconditional["per_class_recall"] == pytest.approx(np.mean(scored))
    assert unconditional["per_class_recall"] < 1.0  # mixed classes no longer match the real
    few = [f"{c} ({n} samples)" for c, n in enumerate(predicted) if n < 6]
    assert all(any(f in note for note in unconditional["notes"]) for f in few)
    with pytest.raises(ConfigError, match=">= 0"):
        evaluate(test.images, labels=test.labels - 1, **kwargs)


def test_old_reference_cache_gains_class_stats_without_recomputing(tiny_featnet, monkeypatch):
    from fashiongen.data import load_dataset

    test = load_dataset("synthetic", "test")
    old = stats_cache.compute_reference_stats(
        test.images, tiny_featnet, dataset="synthetic", split="test"
    )
    assert not old.has_class_stats() and "labels" not in old.to_arrays()
    stats_cache.save_reference_stats(old)

    def recompute(*args, **kwargs):
        raise AssertionError("the cached features should have been kept")

    monkeypatch.setattr(evaluate_module, "compute_reference_stats", recompute)
    ref = evaluate_module.reference_stats("synthetic", "test", tiny_featnet)
    assert ref.has_class_stats((3, 5))
    np.testing.assert_array_equal(ref.features, old.features)
    np.testing.assert_array_equal(ref.labels, test.labels.numpy())
    loaded = stats_cache.load_reference_stats(
        "synthetic", "test", tiny_featnet.fingerprint(), (3, 5)
    )
    assert loaded.has_class_stats((3, 5))
    np.testing.assert_array_equal(loaded.class_radii[3], ref.class_radii[3])
    np.testing.assert_array_equal(loaded.class_spread, ref.class_spread)


def test_single_class_reference_gives_none_and_a_note(tiny_featnet, tmp_path):
    from PIL import Image

    rng = np.random.default_rng(19)
    for split in ("train", "test"):
        folder = tmp_path / "shoes" / split / "shoe"
        folder.mkdir(parents=True)
        for i in range(8):
            Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(
                folder / f"{i}.png"
            )
    images = torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8)
    result = evaluate(
        images,
        dataset=f"folder:{tmp_path / 'shoes'}",
        featnet=tiny_featnet,
        num_kid_subsets=2,
        use_memorisation=False,
    )
    assert all(result[key] is None for key in CLASS_DIVERSITY_KEYS)
    assert any("test split has a single class" in note for note in result["notes"])
    assert result["fid"] is not None and result["recall"] is not None


@pytest.mark.slow
@needs_fashion
def test_evaluate_real_test_split_against_itself():
    from fashiongen.data import load_dataset

    test = load_dataset("fashion-mnist", "test")
    result = evaluate(test.images[:2000], labels=test.labels[:2000], num_kid_subsets=10)
    assert result["fid"] < 5 and result["conditional_accuracy"] > 0.9
    assert result["modes_missing"] == 0
    assert result["copy_rate"] < 0.05


@needs_fashion
def test_fid_rises_with_every_degradation_on_a_small_ladder():
    """Shipped featnet, 500 test images per set against 2000 others: each degradation's
    FID grows with its strength, and its mildest rung is above the real floor."""
    from fashiongen.data import load_dataset
    from fashiongen.nets.featnet import load_featnet

    net, test = load_featnet("fashion-mnist"), load_dataset("fashion-mnist", "test")
    reference = feature_stats(net.features(test.images[:2000]))

    def score(images: torch.Tensor) -> float:
        return fid(*feature_stats(net.features(images)), *reference)

    base = test.images[2000:2500]
    floor = score(test.images[2500:3000])
    ladder = {
        degradations.gaussian_noise: (0.05, 0.1, 0.2),
        degradations.speckle: (0.1, 0.2, 0.4),
        degradations.salt_and_pepper: (0.01, 0.03, 0.1),
        degradations.blur: (0.75, 1.0, 2.0),
        degradations.checkerboard: (0.04, 0.08, 0.16),
        degradations.jpeg: (50, 25, 10),
        degradations.posterise: (4, 3, 2),
        degradations.contrast: (0.9, 0.8, 0.6),
        degradations.brightness: (0.05, 0.1, 0.2),
    }
    for degrade, strengths in ladder.items():
        scores = [score(degrade(base, s, torch.Generator().manual_seed(0))) for s in strengths]
        assert scores[0] > floor and scores == sorted(scores), (degrade.__name__, floor, scores)
