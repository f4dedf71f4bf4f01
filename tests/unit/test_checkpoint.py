import os
import pickle

import pytest
import torch

from fashiongen.checkpoint import (
    STATE_FILE,
    WEIGHTS_FILE,
    load_checkpoint,
    load_model,
    load_training_state,
    save_checkpoint,
)
from fashiongen.errors import CheckpointError
from fashiongen.models import build_model


def _model(cfg):
    torch.manual_seed(0)
    return build_model(cfg.model, (1, 28, 28))


def test_round_trip_reproduces_samples(make_config, tmp_path):
    cfg = make_config()
    model = _model(cfg)
    folder = save_checkpoint(
        tmp_path / "ck", model=model, config=cfg, step=3, state={"step": 3, "x": torch.ones(2)}
    )
    assert sorted(p.name for p in folder.iterdir()) == [STATE_FILE, WEIGHTS_FILE]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temp files left"
    loaded, checkpoint = load_model(folder, use_ema=False)
    assert checkpoint.step == 3 and checkpoint.config == cfg
    a = model.eval().sample(4, generator=torch.Generator().manual_seed(1))
    b = loaded.sample(4, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    _, state = load_checkpoint(folder, with_state=True)
    assert state["step"] == 3


def test_ema_weights_are_used_for_sampling(make_config, tmp_path):
    cfg = make_config()
    model = _model(cfg)
    ema = {
        k: torch.zeros_like(v)
        for k, v in model.state_dict().items()
        if k.startswith("generator.") and v.is_floating_point()
    }
    save_checkpoint(tmp_path / "ck", model=model, config=cfg, step=1, ema=ema)
    with_ema, _ = load_model(tmp_path / "ck")
    raw, _ = load_model(tmp_path / "ck", use_ema=False)
    assert all((p == 0).all() for p in with_ema.generator.parameters())
    assert not all((p == 0).all() for p in raw.generator.parameters())


def test_overwrite_is_atomic_and_refuses_nonfinite(make_config, tmp_path):
    cfg = make_config()
    model = _model(cfg)
    save_checkpoint(tmp_path / "ck", model=model, config=cfg, step=1)
    with torch.no_grad():
        next(model.generator.parameters())[0] = float("nan")
    with pytest.raises(CheckpointError, match="non-finite"):
        save_checkpoint(tmp_path / "ck", model=model, config=cfg, step=2)
    assert load_checkpoint(tmp_path / "ck")[0].step == 1, "the good checkpoint survived"


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_weights_name_the_file(make_config, tmp_path, damage):
    cfg = make_config()
    folder = save_checkpoint(tmp_path / "ck", model=_model(cfg), config=cfg, step=1)
    path = folder / WEIGHTS_FILE
    data = path.read_bytes()
    path.write_bytes(
        {"truncate": data[: len(data) // 2], "garbage": os.urandom(500), "empty": b""}[damage]
    )
    with pytest.raises(CheckpointError, match=str(path).replace(".", r"\.")):
        load_checkpoint(folder)


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch PWNED_BY_PICKLE",))


def test_malicious_training_state_never_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / STATE_FILE
    path.write_bytes(pickle.dumps({"step": 1, "evil": _Payload()}))
    with pytest.raises(CheckpointError, match="unreadable or unsafe"):
        load_training_state(path)
    assert not (tmp_path / "PWNED_BY_PICKLE").exists()


def test_foreign_shape_is_a_clear_error(make_config, tmp_path):
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    cfg = make_config()
    folder = save_checkpoint(
        tmp_path / "ck", model=build_model(cfg.model, (3, 32, 32)), config=cfg, step=1
    )
    path = folder / WEIGHTS_FILE
    with safe_open(path, "pt") as f:
        metadata = f.metadata()
    metadata["image_shape"] = json.dumps([1, 28, 28])  # header says 28x28, weights are 32x32
    save_file(load_file(path), path, metadata=metadata)
    with pytest.raises(CheckpointError, match="does not fit a dcgan"):
        load_model(folder)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_model(tmp_path / "nothing")


def test_written_files_get_the_usual_permissions(make_config, tmp_path):
    import stat

    from fashiongen.files import write_text_atomic

    write_text_atomic(tmp_path / "a.txt", "x")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o666 & ~mask
    cfg = make_config()
    folder = save_checkpoint(tmp_path / "ck", model=_model(cfg), config=cfg, step=1)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o777 & ~mask


def test_sampling_only_files_may_lack_the_adversary_but_nothing_else(make_config, tmp_path):
    from fashiongen.zoo.release import export

    cfg = make_config(model={"name": "dcgan", "g_width": 8, "d_width": 8})
    model = _model(cfg)
    save_checkpoint(tmp_path / "ck", model=model, config=cfg, step=1)
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    path = export(tmp_path / "ck", "tiny", {}, zoo_dir=zoo)
    from safetensors.torch import load_file

    assert not any("discriminator" in k for k in load_file(path))
    loaded, _ = load_model(path)
    a = model.eval().sample(2, generator=torch.Generator().manual_seed(0))
    b = loaded.sample(2, generator=torch.Generator().manual_seed(0))
    assert (a - b).abs().max() < 1e-2  # float16 storage
