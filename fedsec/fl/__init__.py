"""The FL simulation: experiments configured from YAML, run round by round into a run
directory, resumable, with the security pipeline injected."""
from .config import ConfigError, ExperimentConfig, load_config, parse_config
from .experiment import Experiment
from .plot import plot_runs
from .run_dir import RunDir, RunDirError
from .runner import resolve_config, run_experiment, summarize

__all__ = ["ConfigError", "ExperimentConfig", "load_config", "parse_config", "Experiment",
           "plot_runs", "RunDir", "RunDirError", "resolve_config", "run_experiment",
           "summarize"]
