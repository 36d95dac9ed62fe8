"""The started server's command-line pieces, folders and logging: which ``vllm serve`` flags
tuner owns or refuses, the model argument, the per-trial run folder and the logging config
that timestamps every server log line."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tuner.core import ConfigError

REFUSED_FLAGS = frozenset(
    {
        "--max-num-batched-tokens",
        "--max-num-seqs",
        "--long-prefill-token-threshold",
        "--enable-chunked-prefill",
        "--no-enable-chunked-prefill",
        "--block-size",
        "--max-model-len",
        "--async-scheduling",
        "--no-async-scheduling",
        "--num-gpu-blocks-override",
    }
)
OWNED_FLAGS = frozenset({"--host", "--port"})
PREFIX_FLAGS = frozenset({"--enable-prefix-caching", "--no-enable-prefix-caching"})
ITERATION_FLAG = "--enable-logging-iteration-details"
DETAILS_FLAG = "--enable-prompt-tokens-details"  # per-request cached tokens in the usage
# Longest run folder: vLLM's socket paths add "/" + a 36-character uuid, within 107 bytes, and
# Python's multiprocessing adds about as much in TMPDIR.
MAX_RUN_DIR = 64
SHOWN_ENV = ("VLLM_", "HF_")  # the environment a trial log's header shows (secrets redacted)
LOG_FORMAT = "%(created).6f %(levelname)s %(process)d [%(filename)s:%(lineno)d] %(message)s"


def flag_name(arg: str) -> str:
    return arg.split("=", 1)[0].replace("_", "-") if arg.startswith("--") else arg


def check_server_args(server_args: Sequence[str]) -> list[str]:
    if isinstance(server_args, (str, bytes)):
        raise ConfigError(
            f"VLLMServerBackend.server_args = {server_args!r}: must be a list of arguments, "
            "e.g. ['--enforce-eager', '--dtype', 'bfloat16']"
        )
    args = [str(a) for a in server_args]
    for a in args:
        name = flag_name(a)
        if name in REFUSED_FLAGS:
            raise ConfigError(
                f"VLLMServerBackend.server_args sets {name}, a ServingConfig knob: set it in the "
                "config (or the SearchSpace base) so that every trial records it"
            )
        if name in OWNED_FLAGS:
            raise ConfigError(
                f"VLLMServerBackend.server_args sets {name}: the backend serves on 127.0.0.1 "
                "and a free port of its choosing; remove it"
            )
    return args


def model_arg(model: str | os.PathLike[str]) -> str:
    text = os.fspath(model)
    if not text:
        raise ConfigError("VLLMServerBackend.model: give a model folder or a hub name")
    path = Path(text).expanduser()
    return str(path.resolve()) if path.exists() else text


def trial_run_dir(workdir: Path, number: int) -> Path:
    """A fresh folder for the trial's TMPDIR and ZMQ sockets: ``workdir/run/trial-NNN``, or a
    short folder in the system temp dir when that path is too long for a Unix socket (vLLM
    binds ``<VLLM_RPC_BASE_PATH>/<uuid4>``, and a socket path holds at most 107 bytes)."""
    folder = workdir / "run" / f"trial-{number:03d}"
    if len(os.fsencode(folder)) <= MAX_RUN_DIR:
        shutil.rmtree(folder, ignore_errors=True)
        folder.parent.mkdir(mode=0o700, exist_ok=True)
        folder.mkdir(mode=0o700)
        return folder
    return Path(tempfile.mkdtemp(prefix=f"tuner-{number:03d}-"))


def logging_setup(env: Mapping[str, str]) -> dict[str, Any]:
    level = env.get("VLLM_LOGGING_LEVEL", os.environ.get("VLLM_LOGGING_LEVEL", "INFO")).upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"tuner": {"format": LOG_FORMAT}},
        "handlers": {
            "tuner": {
                "class": "logging.StreamHandler",
                "formatter": "tuner",
                "level": "DEBUG",
                "stream": "ext://sys.stdout",
            }
        },
        "loggers": {
            "vllm": {"handlers": ["tuner"], "level": level, "propagate": False},
            # the iteration-details lines are INFO: keep them whatever the level
            "vllm.v1.metrics.loggers": {"level": "INFO"},
        },
    }
