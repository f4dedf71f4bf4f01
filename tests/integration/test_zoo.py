"""Every shipped zoo model loads offline, samples, and scores the FID its manifest records,
in the current metric space."""

import pytest

from fashiongen.cli import main
from fashiongen.metrics import METRIC_NAME, METRIC_VERSION
from fashiongen.zoo import available, manifest
from fashiongen.zoo.release import check_fid

pytestmark = pytest.mark.slow
ZOO = sorted(available())
RELATIVE_TOLERANCE = 0.05  # CPU sampling is deterministic; this absorbs BLAS differences


def test_a_zoo_ships():
    assert ZOO, "the package ships no zoo models"


@pytest.mark.parametrize("name", ZOO)
def test_manifest_numbers_are_of_the_current_metric(name):
    recorded = manifest()[name].get("metric", {})
    assert (recorded.get("name"), recorded.get("version")) == (METRIC_NAME, METRIC_VERSION), (
        f"{name}: re-score with benchmarks/rescore_zoo.py"
    )


@pytest.mark.parametrize("name", ZOO)
def test_zoo_model_matches_its_manifest(name):
    expected = manifest()[name]["fid_check"]
    measured = check_fid(name, expected["num_samples"], expected["seed"])
    assert measured == pytest.approx(expected["fid"], rel=RELATIVE_TOLERANCE)


def few_steps(name: str) -> list[str]:
    """`--steps 4` for a model that samples in steps (asking a GAN for steps is an error)."""
    from fashiongen.checkpoint import load_model
    from fashiongen.zoo import zoo_path

    model, _ = load_model(zoo_path(name), with_guide=False)
    return ["--steps", "4"] if "num_steps" in model.sampling_fields else []


@pytest.mark.parametrize("name", ZOO)
def test_sample_from_the_zoo_by_name(name, tmp_path):
    assert (
        main(
            [
                "sample",
                "--model",
                name,
                "--num-samples",
                "8",
                *few_steps(name),
                "--out",
                str(tmp_path / "g.png"),
            ]
        )
        == 0
    )
    assert (tmp_path / "g.png").stat().st_size > 0
