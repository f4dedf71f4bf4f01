"""Distillation: the segment walkers, the student's targets, `fashiongen distill` end to end."""

from __future__ import annotations

import dataclasses
import json
import math
from functools import partial

import pytest
import torch
from safetensors.torch import load_file

from fashiongen import zoo
from fashiongen.checkpoint import load_model
from fashiongen.cli import main
from fashiongen.config import SampleConfig, TrainConfig
from fashiongen.errors import ConfigError
from fashiongen.models.base import Student
from fashiongen.models.ddpm import DDPM, DDPMConfig
from fashiongen.models.distilled import Distilled, DistilledConfig, student_config
from fashiongen.samplers import WALKS, ddim, ddim_walk, dpmpp_2m, get_walk, timesteps
from fashiongen.samplers.schedules import NoiseSchedule
from fashiongen.web.studio import zoo_models
from fashiongen.zoo import release
from tiny_runs import sets

TINY = {"base_width": 8, "num_levels": 2}
TEACHER_SAMPLING = SampleConfig(sampler="dpmpp_2m", num_steps=8, guidance_scale=2.0)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def linear_denoiser(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """An x0 prediction that depends on x_t and t, so every step matters."""
    return torch.tanh(x_t * (1 + t[:, None, None, None].float() / 1000))


@pytest.mark.parametrize(("num_steps", "steps"), [(20, 4), (20, 2), (20, 1), (8, 4), (1000, 8)])
def test_student_grid_lies_on_the_teachers(num_steps, steps):
    schedule = NoiseSchedule("cosine", 1000)
    teacher, student = timesteps(schedule, num_steps), timesteps(schedule, steps)
    per_step = num_steps // steps
    assert student == teacher[::per_step]


def test_walking_the_whole_grid_is_the_sampler():
    schedule = NoiseSchedule("cosine", 1000)
    x = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    grid = timesteps(schedule, 6)
    for sampler, walk in ((ddim, "ddim"), (dpmpp_2m, "dpmpp_2m")):
        whole = sampler(linear_denoiser, x, schedule, num_steps=6)
        assert torch.equal(get_walk(walk)(linear_denoiser, x, schedule, grid, -1), whole)
    assert set(WALKS) == {"ancestral", "ddim", "dpmpp_2m"}


def test_ddim_walks_compose_over_segments():
    """DDIM is one-step, so walking [t0 .. t3) then [t3 .. clean] is walking the grid."""
    schedule = NoiseSchedule("cosine", 1000)
    x = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    grid = timesteps(schedule, 6)
    middle = ddim_walk(linear_denoiser, x, schedule, grid[:3], grid[3])
    composed = ddim_walk(linear_denoiser, middle, schedule, grid[3:], -1)
    whole = ddim_walk(linear_denoiser, x, schedule, grid, -1)
    torch.testing.assert_close(composed, whole)


def tiny_student(steps: int = 2, num_classes: int = 10, **changes: object) -> Distilled:
    torch.manual_seed(0)
    teacher = DDPMConfig(**TINY, num_classes=num_classes)
    config = student_config(teacher, TEACHER_SAMPLING, steps=steps, source="unused")
    return Distilled(dataclasses.replace(config, **changes), (1, 28, 28))


def test_student_config_copies_the_teachers_network_and_sampling():
    config = tiny_student(steps=4).config
    assert (config.base_width, config.num_levels, config.num_classes) == (8, 2, 10)
    assert (config.teacher_sampler, config.teacher_steps, config.teacher_guidance) == (
        "dpmpp_2m",
        8,
        2.0,
    )
    unconditional = student_config(DDPMConfig(**TINY), TEACHER_SAMPLING, steps=2, source="unused")
    assert unconditional.teacher_guidance == 1.0  # no guidance without classes
    with pytest.raises(ConfigError, match="multiple of model.steps"):
        DistilledConfig(steps=3, teacher_steps=20)


def test_segment_target_is_the_x0_of_one_ddim_step():
    model = tiny_student()
    schedule = model.schedule
    x_t = torch.randn(3, 1, 28, 28)
    x_end = torch.randn(3, 1, 28, 28)
    t, t_end = 999, 499
    x0 = model._ddim_x0(x_t, x_end, t, t_end)
    stepped = ddim_walk(lambda x, _t: x0, x_t, schedule, [t], t_end)
    torch.testing.assert_close(stepped, x_end, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(model._ddim_step(x_t, x0, t, t_end), stepped)


def test_student_samples_in_its_k_calls_without_a_doubled_batch():
    model = tiny_student(steps=2)
    batches = []
    model.net.register_forward_hook(lambda _m, args, _out: batches.append(args[0].shape[0]))
    images = model.sample(3, generator=torch.Generator().manual_seed(0))
    assert images.shape == (3, 1, 28, 28)
    assert batches == [3, 3]  # two calls, no guidance's second half
    assert model.num_network_evaluations(SampleConfig(num_steps=50)) == 2
    assert model.default_sampling().num_steps == 2
    assert isinstance(model, Student)


def test_student_refuses_to_refine():
    model = tiny_student()
    with pytest.raises(ConfigError, match="pure noise only"):
        model.refine(torch.zeros(1, 1, 28, 28), 400, labels=torch.tensor([0]))


def test_teacher_is_frozen_and_left_out_of_sampling():
    model = tiny_student()
    assert not any(p.requires_grad for p in model.teacher.parameters())
    optimizer = model.make_optimizers(TrainConfig())["net"]
    assert {id(p) for g in optimizer.param_groups for p in g["params"]} == {
        id(p) for p in model.net.parameters()
    }
    assert not model.needed_for_sampling("teacher.net.head.weight")


def test_adopting_a_teacher_copies_its_weights_and_refuses_another_network():
    student = tiny_student()
    torch.manual_seed(1)
    teacher = DDPM(DDPMConfig(**TINY, num_classes=10), (1, 28, 28))
    student.adopt_teacher(teacher)
    for name, value in teacher.net.state_dict().items():
        assert torch.equal(student.net.state_dict()[name], value)
        assert torch.equal(student.teacher.net.state_dict()[name], value)
    wider = DDPM(DDPMConfig(base_width=16, num_classes=10), (1, 28, 28))
    with pytest.raises(ConfigError, match="not the network"):
        student.adopt_teacher(wider)


def test_a_student_can_start_from_another_students_weights():
    student = tiny_student()
    torch.manual_seed(1)
    teacher = DDPM(DDPMConfig(**TINY, num_classes=10), (1, 28, 28))
    start = tiny_student()
    with torch.no_grad():
        for p in start.net.parameters():
            p.add_(1.0)
    student.adopt_teacher(teacher, start)
    for name, value in start.net.state_dict().items():
        assert torch.equal(student.net.state_dict()[name], value)
        assert torch.equal(student.teacher.net.state_dict()[name], teacher.net.state_dict()[name])
    wider = DDPM(DDPMConfig(base_width=16, num_classes=10), (1, 28, 28))
    with pytest.raises(ConfigError, match="the start .* is not the network"):
        student.adopt_teacher(teacher, wider)


def test_the_adversarial_term_scores_exactly_what_the_student_samples():
    student = tiny_student(steps=2)
    with torch.no_grad():  # a trained-looking network: no zero-initialised output layer
        for p in student.net.parameters():
            p.add_(torch.randn_like(p), alpha=0.1)
    z = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 3, 7, 9])
    with torch.no_grad():
        sampled = student.generate_from_latents(z, labels=labels)
    scored = student._images_with_grad(z.clone().requires_grad_(), labels)
    torch.testing.assert_close(scored.clamp(-1, 1), sampled)
    first_layer = next(student.net.parameters())
    (grad,) = torch.autograd.grad(scored.sum(), [first_layer])
    assert grad.abs().sum() > 0  # differentiable through the network calls


def test_adversarial_distillation_trains_a_discriminator_beside_the_regression():
    plain = tiny_student(steps=2)
    assert not hasattr(plain, "discriminator")
    assert set(plain.make_optimizers(TrainConfig())) == {"net"}
    student = tiny_student(steps=2, adversarial_weight=0.1)
    optimizers = student.make_optimizers(TrainConfig(lr=1e-3))
    assert set(optimizers) == {"net", "discriminator"}
    d_keys = [k for k in student.state_dict() if k.startswith("discriminator.")]
    assert d_keys and not any(student.needed_for_sampling(k) for k in d_keys)
    net_before = {k: v.clone() for k, v in student.net.state_dict().items()}
    d_before = {k: v.clone() for k, v in student.discriminator.state_dict().items()}
    gen = torch.Generator().manual_seed(0)
    batch = (torch.rand(8, 1, 28, 28, generator=gen) * 2 - 1, torch.arange(8) % 10)
    keys = {"loss", "g_loss", "d_loss", "d_real", "d_fake_accuracy", "r1_penalty", "r2_penalty"}
    for step in range(5):
        losses = student.train_step(batch, optimizers)
        assert set(losses) == keys
        assert all(math.isfinite(v) for v in losses.values())
        assert (losses["r1_penalty"] > 0) == (step % 4 == 0)  # lazy R1, every 4th D step
    assert all(p.requires_grad for p in student.discriminator.parameters())  # thawed again
    changed = [k for k, v in student.net.state_dict().items() if not torch.equal(v, net_before[k])]
    assert changed and any(
        not torch.equal(v, d_before[k]) for k, v in student.discriminator.state_dict().items()
    )


@pytest.mark.parametrize("inputs", ["teacher_path", "student_path", "noised_data"])
def test_distillation_brings_the_student_to_the_teachers_images(inputs):
    """A hundred steps: the student's 1-call images from fixed noise move towards the
    teacher's 8-step guided ones from the same noise."""
    student = tiny_student(steps=1, student_inputs=inputs)
    with torch.no_grad():  # a teacher with some structure: perturbed weights
        for p in student.teacher.net.parameters():
            p.add_(torch.randn_like(p), alpha=0.1)
    student.adopt_teacher(student.teacher)
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(16, 1, 28, 28, generator=gen)
    labels = torch.arange(16) % 10
    teacher_sample = partial(
        student.teacher.generate_from_latents, labels=labels, sampling=TEACHER_SAMPLING
    )
    with torch.no_grad():
        target = teacher_sample(z)

    def gap() -> float:
        with torch.no_grad():
            return float((student.generate_from_latents(z, labels=labels) - target).pow(2).mean())

    before = gap()
    optimizer = torch.optim.Adam(student.net.parameters(), lr=1e-3)
    x0 = torch.rand(32, 1, 28, 28, generator=gen) * 2 - 1
    for _ in range(100):
        student.train_step((x0, torch.arange(32) % 10), {"net": optimizer})
    after = gap()
    assert after < 0.7 * before, (before, after)
    assert math.isfinite(after)


# ---------------------------------------------------------------- the command


TINY_DDPM = sets(
    "model.base_width=8",
    "model.num_classes=10",
    "sample.sampler=dpmpp_2m",
    "sample.num_steps=4",
    "sample.guidance_scale=1.5",
    "train.batch_size=16",
    "train.num_grid_samples=10",
    "train.use_tensorboard=false",
)
TINY_DISTILL = sets(
    "train.batch_size=16",
    "train.num_grid_samples=10",
    "train.use_tensorboard=false",
    "train.checkpoint_every_n_steps=2",
    "train.lr_schedule=constant",  # max_steps=2 then 4 would change a cosine's length
)


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher") / "run"
    args = ["train", "--model", "ddpm", *TINY_DDPM, "--data", "synthetic"]
    assert main([*args, "--max-steps", "2", "--out", str(out), "--no-progress"]) == 0
    return out


def distill(teacher, out, *extra):
    args = ["distill", str(teacher), "--steps", "2", "--out", str(out), *TINY_DISTILL]
    return main([*args, "--no-progress", *extra])


def test_distill_trains_a_student_every_command_samples(teacher_run, tmp_path, capsys):
    assert distill(teacher_run, tmp_path / "student", "--max-steps", "2") == 0
    assert "distilled" in capsys.readouterr().out
    model, checkpoint = load_model(tmp_path / "student")
    assert isinstance(model, Distilled)
    assert checkpoint.config.model.teacher == str(teacher_run.resolve())
    assert (checkpoint.config.sample.sampler, checkpoint.config.sample.num_steps) == ("ddim", 2)
    assert checkpoint.config.data.name == "synthetic"  # the teacher's data
    out = tmp_path / "images.npz"
    assert main(["sample", str(tmp_path / "student"), "--num-samples", "4", "--out", str(out)]) == 0
    assert out.exists()


@pytest.mark.parametrize("adversarial", [[], sets("model.adversarial_weight=0.1")])
def test_distill_resumes_exactly(teacher_run, tmp_path, adversarial):
    assert distill(teacher_run, tmp_path / "whole", "--max-steps", "4", *adversarial) == 0
    assert distill(teacher_run, tmp_path / "split", "--max-steps", "2", *adversarial) == 0
    resume = ["distill", "--out", str(tmp_path / "split"), "--resume", "--no-progress"]
    assert main([*resume, *TINY_DISTILL, "--max-steps", "3"]) == 0  # the run's own teacher
    assert distill(teacher_run, tmp_path / "split", "--resume", "--max-steps", "4") == 0
    whole = load_file(next((tmp_path / "whole" / "final").glob("*.safetensors")))
    split = load_file(next((tmp_path / "split" / "final").glob("*.safetensors")))
    assert whole.keys() == split.keys()
    assert any(name.startswith("discriminator.") for name in whole) == bool(adversarial)
    for name, tensor in whole.items():
        assert torch.equal(tensor, split[name]), name


def test_distill_starts_from_another_student(teacher_run, tmp_path):
    assert distill(teacher_run, tmp_path / "first", "--max-steps", "2") == 0
    start = sets(f"model.start_from={tmp_path / 'first'}", "train.lr=1e-9")  # one tiny step
    assert distill(teacher_run, tmp_path / "second", "--max-steps", "1", *start) == 0
    (first, _), (teacher, _) = load_model(tmp_path / "first"), load_model(teacher_run)
    second, checkpoint = load_model(tmp_path / "second")
    assert checkpoint.config.model.start_from == str(tmp_path / "first")
    weights = {name: second.net.state_dict()[name] for name in first.net.state_dict()}
    gap = {
        name: (weights[name] - value).abs().max() for name, value in first.net.state_dict().items()
    }
    moved = max(
        (first.net.state_dict()[k] - v).abs().max() for k, v in teacher.net.state_dict().items()
    )
    assert max(gap.values()) < 1e-6 < moved  # the first student's weights, not the teacher's


def test_distill_resume_refuses_another_teacher_or_step_count(teacher_run, tmp_path, capsys):
    assert distill(teacher_run, tmp_path / "run", "--max-steps", "1") == 0
    resume = ["distill", "--out", str(tmp_path / "run"), "--resume", "--no-progress"]
    assert main([*resume, "ddpm"]) == 2
    assert f"distils {teacher_run.resolve()}, not ddpm: drop TEACHER" in capsys.readouterr().err
    assert main([*resume, "--steps", "4"]) == 2
    assert "distils to 2 network calls, not --steps 4" in capsys.readouterr().err
    assert main(["distill", "--out", str(tmp_path / "other"), "--no-progress"]) == 2
    assert "distill needs TEACHER" in capsys.readouterr().err


def test_distill_refuses_what_it_cannot_distil(teacher_run, tmp_path, capsys):
    gan = tmp_path / "gan"
    assert main(["train", "--model", "dcgan", *sets("train.compile=false", "model.g_width=8",
                 "model.d_width=8", "model.latent_dim=8", "train.batch_size=16",
                 "train.num_grid_samples=10", "train.use_tensorboard=false"),
                 "--data", "synthetic", "--max-steps", "1", "--out", str(gan),
                 "--no-progress"]) == 0  # fmt: skip
    capsys.readouterr()
    assert distill(gan, tmp_path / "s1") == 2
    assert "needs a DDPM" in capsys.readouterr().err
    assert main(["distill", str(teacher_run), "--steps", "3", "--out", str(tmp_path / "s2")]) == 2
    assert "must divide" in capsys.readouterr().err
    assert not (tmp_path / "s1").exists() and not (tmp_path / "s2").exists()


# ---------------------------------------------------------------- the zoo's fast versions


@pytest.fixture
def tiny_zoo(teacher_run, tmp_path_factory, monkeypatch):
    """A zoo of a tiny `ddpm` and its student `ddpm-fast` (marked as its fast version)."""
    student = tmp_path_factory.mktemp("student") / "run"
    assert distill(teacher_run, student, "--max-steps", "1") == 0
    zoo_dir = tmp_path_factory.mktemp("zoo")
    monkeypatch.setattr(zoo, "ZOO_DIR", zoo_dir)
    monkeypatch.setattr(zoo, "MANIFEST", zoo_dir / "manifest.json")
    release.export(teacher_run, "ddpm", {}, zoo_dir=zoo_dir)
    release.export(student, "ddpm-fast", {"fast_version_of": "ddpm"}, zoo_dir=zoo_dir)
    return zoo_dir


def test_fast_versions_are_the_pages_default_and_synths_sampler(tiny_zoo, tmp_path, capsys):
    assert zoo.fast_version("ddpm") == "ddpm-fast"
    assert zoo.fast_version("ddpm-fast") is None
    assert list(zoo_models())[0] == "ddpm-fast"  # the web page's first model
    model, _ = load_model(zoo.zoo_path("ddpm-fast"))
    assert isinstance(model, Distilled)  # loads without the teacher's weights
    capsys.readouterr()
    args = ["synth", "--model", "ddpm", "--num-samples", "12", "--format", "npz"]
    assert main([*args, "--out", str(tmp_path / "fast")]) == 0
    assert "sampling ddpm-fast, the distilled ddpm" in capsys.readouterr().out
    assert main([*args, "--out", str(tmp_path / "full"), "--no-fast"]) == 0
    assert "sampling ddpm-fast" not in capsys.readouterr().out
    written = {
        kind: json.loads((tmp_path / kind / "synth.json").read_text())["family"]
        for kind in ("fast", "full")
    }
    assert written == {"fast": "distilled", "full": "ddpm"}


@pytest.mark.parametrize("kind", ["zoo", "checkpoint"])
def test_distill_reads_a_zoo_name_and_a_checkpoint_file(kind, teacher_run, tmp_path):
    """As every command that reads a model (a run folder: the tests above)."""
    teacher = "ddpm" if kind == "zoo" else teacher_run / "final" / "weights.safetensors"
    args = ["--max-steps", "1", "--set", "train.batch_size=2", "--steps", "1"]
    assert distill(teacher, tmp_path / "student", *args) == 0
    model, checkpoint = load_model(tmp_path / "student")
    assert isinstance(model, Distilled) and model.config.steps == 1
    assert checkpoint.config.model.teacher == ("ddpm" if kind == "zoo" else str(teacher.resolve()))


def test_a_student_teaches_as_it_samples():
    """Halving a student: its teacher module runs without the DDPM's clamp, as it sampled."""
    four = tiny_student(steps=4).config
    two = student_config(four, SampleConfig(sampler="ddim", num_steps=4), steps=2, source="x")
    assert (two.teacher_steps, two.teacher_sampler, two.teacher_clips_x0) == (4, "ddim", False)
    assert Distilled(two, (1, 28, 28)).teacher.clip_x0 is False
    assert tiny_student().teacher.clip_x0 is True
