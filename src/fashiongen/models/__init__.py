"""The registry of model families: a plain dict, greppable, no import-time magic."""

from fashiongen.config import ModelConfig, set_model_registry
from fashiongen.models.base import Family, ImageShape
from fashiongen.models.dcgan import DCGAN
from fashiongen.models.ddpm import DDPM
from fashiongen.models.distilled import Distilled
from fashiongen.models.gan import GAN
from fashiongen.models.hybrid import Hybrid
from fashiongen.models.vae import VAE

MODELS: dict[str, type[Family]] = {
    "dcgan": DCGAN,
    "ddpm": DDPM,
    "distilled": Distilled,
    "gan": GAN,
    "hybrid": Hybrid,
    "vae": VAE,
}
set_model_registry(MODELS)  # config.py resolves [model] tables through it, never importing us


def build_model(config: ModelConfig, image_shape: ImageShape) -> Family:
    """Instantiate the family named by `config.name` for images of `image_shape` (C, H, W)."""
    return MODELS[config.name](config, image_shape)
