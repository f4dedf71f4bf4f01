"""Sampling with the onnx backend against eager torch, per thread count, on the zoo models.

    python benchmarks/onnx_vs_torch.py 1 && python benchmarks/onnx_vs_torch.py 2

Images/s of each backend (best of two rounds, the model's own sampling settings; 2048
images a call for the one-pass DCGAN, 64 for the diffusion ones) at the thread count given.
"""

import sys
import time

import torch

from fashiongen.checkpoint import load_model
from fashiongen.export import use_onnx
from fashiongen.generate import generate
from fashiongen.zoo import zoo_path

threads = int(sys.argv[1]) if len(sys.argv) > 1 else torch.get_num_threads()
torch.set_num_threads(threads)
for name in ["dcgan", "ddpm", "hybrid"]:
    eager, checkpoint = load_model(zoo_path(name))
    onnx, _ = load_model(zoo_path(name))
    use_onnx(onnx)
    count = 2048 if name == "dcgan" else 64
    rates: dict[str, list[float]] = {}
    for _ in range(2):
        for backend, model in (("torch", eager), ("onnx", onnx)):
            generate(model, 8, sampling=checkpoint.config.sample)
            started = time.perf_counter()
            generate(model, count, sampling=checkpoint.config.sample)
            rates.setdefault(backend, []).append(count / (time.perf_counter() - started))
    best = {k: round(max(v)) for k, v in rates.items()}
    print(
        f"{threads} thread(s) {name}: {best} images/s, onnx / torch "
        f"{best['onnx'] / best['torch']:.2f}"
    )
