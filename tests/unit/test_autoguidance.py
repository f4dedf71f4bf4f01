"""Autoguidance: the denoiser combination, a DDPM's guide, and `sample --guide` end to end."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

import fashiongen
from fashiongen import editing
from fashiongen.checkpoint import attach_guide, load_checkpoint, load_model, save_checkpoint
from fashiongen.cli import main
from fashiongen.config import (
    DEFAULT_GUIDE_SCALE,
    RunConfig,
    SampleConfig,
    config_from_dict,
    config_to_dict,
)
from fashiongen.errors import ConfigError, FashiongenError
from fashiongen.models import build_model
from fashiongen.models.ddpm import DDPM, DDPMConfig
from fashiongen.models.distilled import Distilled, student_config
from fashiongen.models.gan import GANConfig
from fashiongen.samplers.guided import autoguided
from fashiongen.training import loop

TINY = {"base_width": 8, "num_levels": 2, "num_classes": 3}
SAMPLING = SampleConfig(sampler="ddim", num_steps=3, guidance_scale=1.5)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def tiny_ddpm(seed: int, **changes: object) -> DDPM:
    """A tiny DDPM whose weights (zero-initialised output layers too) differ by seed."""
    torch.manual_seed(seed)
    model = DDPM(DDPMConfig(**{**TINY, **changes}), (1, 28, 28)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def draw(model: DDPM, sampling: SampleConfig, seed: int = 0) -> torch.Tensor:
    labels = torch.tensor([0, 1, 2, 0])
    return model.sample(
        4, labels=labels, generator=torch.Generator().manual_seed(seed), sampling=sampling
    )


def test_autoguided_extrapolates_from_the_guide_and_clamps():
    x, t = torch.zeros(1, 1, 2, 2), torch.zeros(1, dtype=torch.long)
    good, bad = (
        (lambda *_: torch.full((1, 1, 2, 2), 0.3)),
        (lambda *_: torch.full((1, 1, 2, 2), 0.1)),
    )
    torch.testing.assert_close(autoguided(good, bad, 1.0)(x, t), torch.full((1, 1, 2, 2), 0.3))
    torch.testing.assert_close(autoguided(good, bad, 2.5)(x, t), torch.full((1, 1, 2, 2), 0.6))
    assert autoguided(good, bad, 10.0)(x, t).max() == 1.0  # 2.1 clamped
    assert autoguided(good, bad, 10.0, clip=False)(x, t).max() > 2


def test_guided_sampling_calls_both_networks_and_moves_the_images():
    model, guide = tiny_ddpm(0), tiny_ddpm(1)
    plain = draw(model, SAMPLING)
    model.set_guide(guide)
    assert torch.equal(draw(model, SAMPLING), plain)  # guide_scale 1: the guide is not used
    calls = {"model": 0, "guide": 0}
    for name, net in (("model", model.net), ("guide", guide.net)):
        net.register_forward_hook(lambda *_, n=name: calls.__setitem__(n, calls[n] + 1))
    guided = dataclasses.replace(SAMPLING, guide_scale=2.0)
    images = draw(model, guided)
    assert calls == {"model": 3, "guide": 3}  # one call each a step, CFG's halves batched
    assert model.num_network_evaluations(guided) == 6
    assert model.num_network_evaluations(SAMPLING) == 3
    assert (images - plain).abs().mean() > 1e-3
    assert images.min() >= -1 and images.max() <= 1


def test_guided_sampling_is_the_combined_denoiser_under_the_sampler():
    from functools import partial

    from fashiongen.samplers import ddim

    model, guide = tiny_ddpm(0), tiny_ddpm(1)
    model.set_guide(guide)
    labels = torch.tensor([0, 1, 2, 0])
    x_t = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    sampling = dataclasses.replace(SAMPLING, guide_scale=2.0)
    ours = model.generate_from_latents(x_t, labels=labels, sampling=sampling)
    denoise = autoguided(
        partial(model.denoise, labels=labels, guidance_scale=1.5),
        partial(guide.denoise, labels=labels, guidance_scale=1.5),
        2.0,
    )
    expected = ddim(denoise, x_t, model.schedule, num_steps=3).clamp(-1, 1)
    torch.testing.assert_close(ours, expected)


def test_the_guide_is_no_part_of_the_models_weights():
    model = tiny_ddpm(0)
    keys = set(model.state_dict())
    model.set_guide(tiny_ddpm(1))
    assert set(model.state_dict()) == keys
    assert not any(p is q for p in model.parameters() for q in model.guide.parameters())
    model.set_guide(None)
    assert model.guide is None


def test_a_guide_scale_without_a_guide_is_one_line():
    with pytest.raises(ConfigError, match="no guide"):
        draw(tiny_ddpm(0), dataclasses.replace(SAMPLING, guide_scale=2.0))


@pytest.mark.parametrize(
    ("guide", "problem"),
    [
        (lambda: tiny_ddpm(1, num_classes=0), "number of classes"),
        (lambda: tiny_ddpm(1, schedule="linear"), "noise schedule"),
        (lambda: DDPM(DDPMConfig(**TINY), (1, 32, 32)), "image shape"),
        (lambda: tiny_ddpm(1, t_max=500), "t <= 500"),
        (lambda: build_model(GANConfig(name="gan"), (1, 28, 28)), "must be a DDPM"),
    ],
)
def test_an_unfit_guide_is_refused(guide, problem):
    with pytest.raises(ConfigError, match=problem):
        tiny_ddpm(0).set_guide(guide())


def test_a_student_takes_no_guide():
    config = student_config(DDPMConfig(**TINY), SAMPLING, steps=1, source="unused")
    with pytest.raises(ConfigError, match="takes no guide"):
        Distilled(config, (1, 28, 28)).set_guide(tiny_ddpm(1))


def test_the_guide_fields_are_written_only_when_set():
    assert "guide" not in config_to_dict(SAMPLING)
    assert "guide_scale" not in config_to_dict(SAMPLING)
    named = dataclasses.replace(SAMPLING, guide="early", guide_scale=2.0)
    assert config_to_dict(named)["guide"] == "early"
    with pytest.raises(ConfigError, match="guide_scale"):
        SampleConfig(guide_scale=-1)


# ---------------------------------------------------------------- checkpoints, CLI, API


@pytest.fixture
def checkpoints(tmp_path):
    """A tiny DDPM, its weaker guide, and the DDPM again naming that guide in its settings."""
    main_model, guide = tiny_ddpm(0), tiny_ddpm(1)
    config = RunConfig(model=main_model.config, sample=SAMPLING)
    paths = {
        "main": save_checkpoint(tmp_path / "main", model=main_model, config=config, step=4),
        "guide": save_checkpoint(tmp_path / "guide", model=guide, config=config, step=1),
    }
    sampling = dataclasses.replace(SAMPLING, guide=str(paths["guide"]), guide_scale=2.0)
    named = dataclasses.replace(config, sample=sampling)
    paths["named"] = save_checkpoint(tmp_path / "named", model=main_model, config=named, step=4)
    return paths


def test_a_checkpoint_naming_its_guide_samples_guided(checkpoints):
    model, checkpoint = load_model(checkpoints["named"])
    assert model.guide is not None
    plain, _ = load_model(checkpoints["main"])
    manual, _ = load_model(checkpoints["main"])
    attach_guide(manual, checkpoints["guide"])
    sampling = checkpoint.config.sample
    assert torch.equal(draw(model, sampling), draw(manual, sampling))
    assert not torch.equal(draw(model, sampling), draw(plain, SAMPLING))
    unguided, _ = load_model(checkpoints["named"], with_guide=False)
    assert unguided.guide is None


def test_a_missing_guide_is_named(checkpoints, tmp_path):
    model, _ = load_model(checkpoints["main"])
    config = RunConfig(model=model.config, sample=dataclasses.replace(SAMPLING, guide="nowhere/x"))
    folder = save_checkpoint(tmp_path / "lost", model=model, config=config, step=1)
    with pytest.raises(FashiongenError, match="its guide 'nowhere/x'"):
        load_model(folder)


def test_sample_guide_on_the_command_line(checkpoints, tmp_path, capsys):
    def sample(out, *extra):
        args = ["sample", str(checkpoints["main"]), "--num-samples", "4", "--out", str(out)]
        return main([*args, *extra])

    assert sample(tmp_path / "plain.npz") == 0
    assert sample(tmp_path / "guided.npz", "--guide", str(checkpoints["guide"])) == 0
    assert sample(tmp_path / "named.npz", "--guide-scale", "2") == 2  # no guide to use
    assert "no guide" in capsys.readouterr().err
    assert not (tmp_path / "named.npz").exists()
    plain, guided = (np.load(tmp_path / f"{n}.npz")["images"] for n in ("plain", "guided"))
    assert (plain != guided).any()
    # --guide alone takes the default scale; the same as loading a checkpoint naming it
    assert DEFAULT_GUIDE_SCALE != 1
    assert main(["sample", str(checkpoints["named"]), "--num-samples", "4",
                 "--out", str(tmp_path / "from-settings.npz")]) == 0  # fmt: skip
    assert (np.load(tmp_path / "from-settings.npz")["images"] == guided).all()


def test_eval_samples_with_the_settings_and_guide_it_is_given(
    checkpoints, tmp_path, capsys, fake_featnet
):
    def evaluate(source, name, *extra):
        out = tmp_path / f"{name}.json"
        args = ["eval", str(source), "--num-samples", "8", "--data", "synthetic"]
        code = main([*args, "--json", str(out), *extra])
        return code, json.loads(out.read_text()) if code == 0 else None

    code, plain = evaluate(checkpoints["main"], "plain")
    assert code == 0 and plain["source"]["sampling"]["guide_scale"] == 1
    code, guided = evaluate(
        checkpoints["main"], "guided", "--steps", "2", "--guide", str(checkpoints["guide"])
    )
    assert code == 0
    assert guided["source"]["sampling"]["num_steps"] == 2
    assert guided["source"]["sampling"]["guide_scale"] == DEFAULT_GUIDE_SCALE
    assert "autoguidance" in guided["source"]["sampler"]
    assert guided["fid"] != plain["fid"]
    assert main(["sample", str(checkpoints["main"]), "--num-samples", "4",
                 "--out", str(tmp_path / "s.npz")]) == 0  # fmt: skip
    capsys.readouterr()
    assert evaluate(tmp_path / "s.npz", "file", "--steps", "2")[0] == 2
    assert "sample set: sampling settings apply to a checkpoint" in capsys.readouterr().err


def test_sample_guide_refuses_a_model_that_takes_none(tmp_path, checkpoints, capsys):
    gan = build_model(GANConfig(name="gan", num_classes=3), (1, 28, 28))
    folder = save_checkpoint(
        tmp_path / "gan", model=gan, config=RunConfig(model=gan.config), step=1
    )
    args = ["sample", str(folder), "--out", str(tmp_path / "x.png")]
    assert main([*args, "--guide", str(checkpoints["guide"])]) == 2
    assert "takes no guide" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()
    # nor a setting it would ignore
    assert main([*args, "--steps", "4"]) == 2
    assert "a gan model does not use sample.num_steps" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_the_api_loads_a_guide(checkpoints):
    guided = fashiongen.load(checkpoints["main"], guide=checkpoints["guide"])
    assert guided.sampling.guide_scale == DEFAULT_GUIDE_SCALE
    plain = fashiongen.load(checkpoints["main"])
    a = guided.sample(4, classes=[0, 1, 2, 0]).images
    assert (a != plain.sample(4, classes=[0, 1, 2, 0]).images).any()
    assert (guided.sample(4, classes=[0, 1, 2, 0], guide_scale=1).images
            == plain.sample(4, classes=[0, 1, 2, 0]).images).all()  # fmt: skip


# ---------------------------------------------------------------- a run's own guide

TINY_RUN = [
    "--model", "ddpm", "--data", "synthetic", "--no-progress",
    *[arg for o in ("model.base_width=8", "model.num_classes=10", "sample.sampler=ddim",
                    "sample.num_steps=3", "sample.guide_scale=2", "train.keep_guide_at=0.5",
                    "train.batch_size=16", "train.num_grid_samples=10",
                    "train.use_tensorboard=false", "train.checkpoint_every_n_steps=1",
                    "train.keep_checkpoints=10", "train.ema_decay=0.9",
                    "train.use_ema_warmup=true")
      for arg in ("--set", o)],
]  # fmt: skip


def train_tiny(out, *extra) -> int:
    return main(["train", *TINY_RUN, "--out", str(out), *extra])


@pytest.fixture(scope="module")
def guided_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("guided") / "run"
    assert train_tiny(out, "--max-steps", "4") == 0
    return out


def test_a_run_keeps_its_guide_halfway_and_samples_with_it(guided_run, tmp_path):
    from safetensors.torch import load_file

    from fashiongen.checkpoint import load_checkpoint

    early, _ = load_checkpoint(guided_run / "checkpoints" / "step_0000001")
    assert not early.guide  # a quarter of the way: no guide yet
    halfway, _ = load_checkpoint(guided_run / "checkpoints" / "step_0000002")
    final, _ = load_checkpoint(guided_run)
    assert halfway.guide and final.guide.keys() == halfway.guide.keys()
    for key, tensor in final.guide.items():
        assert torch.equal(tensor, halfway.guide[key]), key  # frozen after step 2
    # the guide is the sampling (EMA) weights of step 2
    for key, tensor in halfway.ema.items():
        assert torch.equal(halfway.guide[key], tensor), key
    assert any(not torch.equal(final.ema[k], final.guide[k]) for k in final.ema)
    model, checkpoint = load_model(guided_run)
    assert model.guide is not None and model.has_own_guide
    assert model.num_network_evaluations(checkpoint.config.sample) == 6
    out = tmp_path / "x.npz"
    assert main(["sample", str(guided_run), "--num-samples", "4", "--out", str(out)]) == 0
    plain = tmp_path / "plain.npz"
    assert main(["sample", str(guided_run), "--num-samples", "4", "--guide-scale", "1",
                 "--out", str(plain)]) == 0  # fmt: skip
    assert (np.load(out)["images"] != np.load(plain)["images"]).any()
    assert len(load_file(guided_run / "final" / "weights.safetensors")) > len(final.weights)


def stop_after(steps: int) -> type:
    """A stop request (Ctrl-C) that arrives after `steps` steps."""

    class Stop(loop._StopRequest):
        reads = 0

        @property
        def signal(self):
            self.reads += 1
            return 2 if self.reads > steps else None

        @signal.setter
        def signal(self, value):
            pass

    return Stop


@pytest.mark.parametrize("split_at", [1, 3])  # before and after the guide is kept
def test_a_run_with_a_guide_resumes_exactly(guided_run, tmp_path, split_at, monkeypatch):
    from fashiongen.checkpoint import load_checkpoint

    split = tmp_path / "split"
    with monkeypatch.context() as patch:
        patch.setattr(loop, "_StopRequest", stop_after(split_at))
        assert train_tiny(split, "--max-steps", "4") == 130  # interrupted, checkpointed
    assert main(["train", "--resume", "--out", str(split), "--max-steps", "4",
                 "--no-progress"]) == 0  # fmt: skip
    whole, _ = load_checkpoint(guided_run)
    resumed, _ = load_checkpoint(split)
    for part in ("weights", "ema", "guide"):
        a, b = getattr(whole, part), getattr(resumed, part)
        assert a.keys() == b.keys(), part
        for key in a:
            assert torch.equal(a[key], b[key]), (part, key)


def test_keep_guide_at_is_refused_for_a_family_without_guidance(tmp_path, capsys):
    args = ["train", "--model", "vae", "--data", "synthetic", "--max-steps", "1",
            "--no-progress", "--out", str(tmp_path / "vae"), "--set", "train.keep_guide_at=0.5",
            "--set", "train.use_tensorboard=false"]  # fmt: skip
    assert main(args) == 2
    assert "keep_guide_at" in capsys.readouterr().err


def test_a_guided_teacher_is_distilled_with_its_guide(guided_run, tmp_path):
    from fashiongen.samplers import timesteps

    tiny = ["--set", "train.batch_size=16", "--set", "train.num_grid_samples=10",
            "--set", "train.use_tensorboard=false"]  # fmt: skip
    out = str(tmp_path / "student")
    args = ["distill", str(guided_run), "--steps", "3", "--out", out, "--max-steps", "1", *tiny]
    args.append("--no-progress")
    assert main(args) == 0
    student, checkpoint = load_model(tmp_path / "student")
    assert checkpoint.config.model.teacher_guide_scale == 2
    assert student.guide is None and checkpoint.config.sample.guide_scale == 1  # folded in
    teacher, own = load_model(guided_run)
    frozen = student.teacher_guide.net.state_dict()
    for key, tensor in teacher.guide.net.state_dict().items():
        assert torch.equal(frozen[key], tensor), key
    # the student learns the teacher's autoguided sampler, walked over the teacher's grid
    x = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([1, 2])
    walked = student._teacher_walk(labels)(x, ts=timesteps(student.schedule, 3), t_end=-1)
    expected = teacher.generate_from_latents(x, labels=labels, sampling=own.config.sample)
    torch.testing.assert_close(walked.clamp(-1, 1), expected)


def test_the_guide_waits_for_the_ema_to_forget_the_initial_weights(tmp_path):
    from fashiongen.checkpoint import load_checkpoint

    out = tmp_path / "run"  # EMA 0.99 without warm-up: 4 steps leave 96% of the initial weights
    assert train_tiny(out, "--max-steps", "4", "--set", "train.use_ema_warmup=false",
                      "--set", "train.ema_decay=0.99") == 0  # fmt: skip
    halfway, _ = load_checkpoint(out / "checkpoints" / "step_0000002")
    final, _ = load_checkpoint(out)
    assert not halfway.guide
    for key, tensor in final.ema.items():  # kept at the end: the final sampling weights
        assert torch.equal(final.guide[key], tensor), key


def test_the_generation_graph_holds_the_autoguidance(guided_run, tmp_path):
    import onnxruntime

    assert main(["export", str(guided_run), "--out", str(tmp_path / "onnx")]) == 0
    session = onnxruntime.InferenceSession(
        str(tmp_path / "onnx" / "generate-3steps.onnx"), providers=["CPUExecutionProvider"]
    )
    assert session.get_modelmeta().custom_metadata_map["guide_scale"] == "2.0"
    model, checkpoint = load_model(guided_run)
    noise = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 4, 9])
    (image,) = session.run(None, {"noise": noise.numpy(), "class_label": labels.numpy()})
    expected = model.generate_from_latents(noise, labels=labels, sampling=checkpoint.config.sample)
    plain = dataclasses.replace(checkpoint.config.sample, guide_scale=1.0)
    unguided = model.generate_from_latents(noise, labels=labels, sampling=plain)
    np.testing.assert_allclose(image, expected.numpy(), atol=1e-4)
    assert np.abs(image - unguided.numpy()).max() > 1e-3


def test_a_zoo_export_gives_a_run_its_own_earlier_weights_as_guide(tmp_path):
    from fashiongen.checkpoint import load_checkpoint
    from fashiongen.zoo.release import export

    run = tmp_path / "run"
    assert train_tiny(run, "--max-steps", "3", "--set", "train.keep_guide_at=0",
                      "--set", "sample.guide_scale=1") == 0  # fmt: skip
    early = run / "checkpoints" / "step_0000001"
    file = export(run, "tiny", {}, tmp_path, guide_from=early,
                  overrides=["sample.guide_scale=2.5"])  # fmt: skip
    model, checkpoint = load_model(file)
    assert checkpoint.config.sample.guide_scale == 2.5 and model.has_own_guide
    step1, _ = load_checkpoint(early)
    for key, tensor in model.guide.state_dict().items():  # float16 in the zoo file
        torch.testing.assert_close(
            tensor, step1.ema.get(key, step1.weights[key]), atol=1e-3, rtol=1e-3
        )


def test_an_edit_is_autoguided_where_the_model_carries_a_guide():
    """The default edit sampling asks for autoguidance: the guide is called when attached,
    and a model without one refines with classifier-free guidance alone, not an error."""
    model, guide = tiny_ddpm(0), tiny_ddpm(1)
    x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    labels = torch.tensor([0, 1])
    assert editing.DEFAULT_EDIT_SAMPLING.guide_scale != 1

    def refined() -> torch.Tensor:
        return editing.refine(model, x, 0.5, labels=labels, generator=torch.Generator())

    unguided = refined()
    calls = []
    guide.net.register_forward_hook(lambda *_: calls.append(1))
    model.set_guide(guide)
    guided = refined()
    assert calls and not torch.allclose(guided, unguided)


# --------------------------------------------------------------- a hybrid's refiner's guide


@pytest.fixture(scope="module")
def tiny_dcgan(tmp_path_factory):
    from tiny_runs import THREE_STEPS

    out = tmp_path_factory.mktemp("draft") / "dcgan"
    assert main(["train", "--model", "dcgan", *THREE_STEPS, "--set", "model.num_classes=10",
                 "--out", str(out)]) == 0  # fmt: skip
    return out


def test_a_combined_hybrid_refines_with_the_ddpms_guide(guided_run, tiny_dcgan, tmp_path):
    hybrid_dir = tmp_path / "hybrid"
    args = ["combine", str(tiny_dcgan), str(guided_run), "--strength", "0.5", "--steps", "3"]
    assert main([*args, "--out", str(hybrid_dir)]) == 0
    hybrid, checkpoint = load_model(hybrid_dir)
    ddpm, ddpm_checkpoint = load_model(guided_run)
    assert hybrid.has_own_guide and checkpoint.config.sample.guide_scale == 2.0
    for key, tensor in ddpm.guide.state_dict().items():  # the DDPM's own guide, kept
        assert torch.equal(hybrid.guide.state_dict()[key], tensor), key
    sampling = checkpoint.config.sample
    assert hybrid.num_network_evaluations(sampling) == 1 + 2 * 3
    calls = []
    hybrid.guide.net.register_forward_hook(lambda *_: calls.append(1))
    z = torch.randn(3, *hybrid.latent_shape, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 4, 9])

    def refined(sampling: SampleConfig) -> torch.Tensor:
        return hybrid.generate_from_latents(
            z, labels=labels, generator=torch.Generator().manual_seed(1), sampling=sampling
        )

    guided = refined(sampling)
    assert len(calls) == 3
    unguided = refined(dataclasses.replace(sampling, guide_scale=1.0))
    assert len(calls) == 3 and (guided - unguided).abs().max() > 1e-3
    assert main([*args, "--guide-scale", "3", "--guidance-scale", "1.75",
                 "--out", str(tmp_path / "h3")]) == 0  # fmt: skip
    chosen = load_model(tmp_path / "h3")[1].config.sample
    assert (chosen.guide_scale, chosen.guidance_scale) == (3.0, 1.75)
    assert sampling.guidance_scale == ddpm_checkpoint.config.sample.guidance_scale
    out = tmp_path / "plain.npz"  # the command line turns it off as for a DDPM
    assert main(["sample", str(hybrid_dir), "--num-samples", "2", "--guide-scale", "1",
                 "--out", str(out)]) == 0  # fmt: skip


def test_a_hybrids_generation_graph_holds_its_refiners_autoguidance(
    guided_run, tiny_dcgan, tmp_path, monkeypatch
):
    import onnxruntime

    hybrid_dir = tmp_path / "hybrid"
    assert main(["combine", str(tiny_dcgan), str(guided_run), "--strength", "0.5",
                 "--steps", "3", "--guide-scale", "3", "--out", str(hybrid_dir)]) == 0  # fmt: skip
    assert main(["export", str(hybrid_dir), "--out", str(tmp_path / "onnx")]) == 0
    session = onnxruntime.InferenceSession(
        str(tmp_path / "onnx" / "generate-3steps.onnx"), providers=["CPUExecutionProvider"]
    )
    assert session.get_modelmeta().custom_metadata_map["guide_scale"] == "3.0"
    hybrid, checkpoint = load_model(hybrid_dir)
    seeded = torch.Generator().manual_seed(0)
    z = torch.randn(3, *hybrid.latent_shape, generator=seeded)
    draft_noise = torch.randn(3, 1, 28, 28, generator=seeded)
    labels = torch.tensor([0, 4, 9])
    feeds = {"z": z.numpy(), "class_label": labels.numpy(), "draft_noise": draft_noise.numpy()}
    (image,) = session.run(None, feeds)
    monkeypatch.setattr(hybrid.refiner, "randn", lambda *shape, generator=None: draft_noise)

    def refined(sampling: SampleConfig) -> np.ndarray:
        return (
            hybrid.generate_from_latents(z, labels=labels, sampling=sampling).clamp(-1, 1).numpy()
        )

    np.testing.assert_allclose(image, refined(checkpoint.config.sample), atol=1e-4)
    unguided = refined(dataclasses.replace(checkpoint.config.sample, guide_scale=1.0))
    assert np.abs(image - unguided).max() > 1e-3


def test_a_guide_scale_for_a_refiner_without_a_guide_is_refused(tiny_dcgan, tmp_path, capsys):
    ddpm = tmp_path / "ddpm"
    model = tiny_ddpm(0, num_classes=10)
    config = dataclasses.replace(RunConfig(), model=model.config)
    extra = json.loads(load_checkpoint(tiny_dcgan)[0].metadata["extra"])  # the same classes
    save_checkpoint(ddpm, model=model, config=config, step=0, extra=extra)
    out = tmp_path / "hybrid"
    args = ["combine", str(tiny_dcgan), str(ddpm), "--guide-scale", "3", "--out", str(out)]
    assert main(args) == 2
    assert "no guide" in capsys.readouterr().err and not out.exists()


def test_a_hybrid_keeps_its_refiners_part_of_a_whole_state_dict():
    torch.manual_seed(0)
    config = config_from_dict(
        {
            "model": {
                "name": "hybrid",
                "gan": {"name": "dcgan", "g_width": 8, "d_width": 8},
                "refiner": {"base_width": 8},
            }
        }  # fmt: skip
    ).model
    hybrid = build_model(config, (1, 28, 28))
    hybrid.keep_guide(hybrid.state_dict())  # what train.keep_guide_at hands it
    assert hybrid.has_own_guide
    kept = hybrid.own_guide_weights()
    assert kept.keys() == hybrid.refiner.state_dict().keys()
    for key, tensor in hybrid.refiner.state_dict().items():
        assert torch.equal(kept[key], tensor), key
    again = build_model(config, (1, 28, 28))
    again.keep_guide(kept)  # what a checkpoint's guide gives back
    for key, tensor in again.own_guide_weights().items():
        assert torch.equal(kept[key], tensor), key


def test_a_hybrid_run_keeps_its_refiners_guide(tmp_path):
    from tiny_runs import sets

    out = tmp_path / "run"
    tiny = sets("model.gan.g_width=8", "model.gan.d_width=8",
                "model.refiner.base_width=8", "train.compile=false", "train.batch_size=16",
                "train.num_grid_samples=10", "train.use_tensorboard=false",
                "train.checkpoint_every_n_steps=1", "train.keep_checkpoints=10",
                "train.keep_guide_at=0.5", "train.ema_decay=0.9", "train.use_ema_warmup=true",
                "sample.num_steps=2",
                "sample.guide_scale=2")  # fmt: skip
    args = ["train", "--model", "hybrid", "--data", "synthetic", "--no-progress", *tiny]
    assert main([*args, "--max-steps", "4", "--out", str(out)]) == 0
    halfway, _ = load_checkpoint(out / "checkpoints" / "step_0000002")
    final, _ = load_checkpoint(out)
    refiner_ema = {k.removeprefix("refiner."): v for k, v in halfway.ema.items()
                   if k.startswith("refiner.")}  # fmt: skip
    assert refiner_ema and final.guide.keys() >= refiner_ema.keys()
    for key, tensor in refiner_ema.items():  # the refiner's sampling weights of step 2
        assert torch.equal(final.guide[key], tensor), key
    model, _ = load_model(out)
    assert model.has_own_guide
    assert main(["sample", str(out), "--num-samples", "2", "--out", str(tmp_path / "x.png")]) == 0
