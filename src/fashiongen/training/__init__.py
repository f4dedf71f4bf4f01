"""Training: the one loop every family shares (`loop`), and its rooms: the training state,
checkpoints, rollback and the resume rule (`state`), the EMA (`ema`), the learning-rate
schedule (`schedule`), metrics and the progress bar (`log`), grids, evaluation and figures
(`outputs`), and the run folder's lock (`run_folder`).

`train(cfg, ...)` is the entry point; `fashiongen.api.train` wraps it for presets and tables.
"""

from fashiongen.training.loop import TrainResult, resolve_run_name, train

__all__ = ["TrainResult", "resolve_run_name", "train"]
