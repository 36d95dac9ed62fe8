"""GPU: accelerator datasheet figures (memory, bandwidth, FLOP/s, interconnect) and their table."""

from __future__ import annotations

from functools import cache
from typing import Literal

from pydantic import Field

from tuner.core import FrozenModel
from tuner.hardware._names import lookup, normalize

GiB = 1 << 30
GB = 10**9
TB = 10**12
TFLOPS = 10**12


class GPU(FrozenModel):
    """One accelerator. FLOP/s are dense (no structured sparsity) tensor-core peaks.

    ``usable_memory_bytes`` is what the CUDA/HIP runtime reports as total memory (what vLLM
    multiplies by ``gpu_memory_utilization``); it is a little below the datasheet capacity.

    Example:
        >>> GPU.named("NVIDIA H100 80GB HBM3").name
        'H100-SXM-80GB'
    """

    name: str
    """Short canonical name."""
    vendor: Literal["nvidia", "amd"] = "nvidia"
    """Maker (AMD devices report their memory through amdsmi in vLLM)."""
    memory_bytes: int = Field(gt=0)
    """Datasheet memory capacity."""
    usable_memory_bytes: int = Field(gt=0)
    """Total memory as the runtime reports it (``torch.cuda.mem_get_info()[1]``)."""
    hbm_bandwidth: float = Field(gt=0)
    """Peak memory bandwidth, bytes/s."""
    bf16_flops: float = Field(gt=0)
    """Dense BF16/FP16 tensor FLOP/s (FP32 accumulate)."""
    fp8_flops: float | None = Field(default=None, gt=0)
    """Dense FP8 tensor FLOP/s (None where the chip has no FP8 tensor cores)."""
    interconnect: Literal["nvlink", "pcie", "infinity_fabric"] = "pcie"
    """GPU-to-GPU link used by tensor-parallel all-reduce."""
    interconnect_bandwidth: float = Field(gt=0)
    """GPU-to-GPU bandwidth per direction, bytes/s."""
    nvidia_smi_names: tuple[str, ...] = ()
    """Names the driver reports (``nvidia-smi --query-gpu=name``) and short aliases."""

    @classmethod
    def named(cls, name: str) -> GPU:
        """A shipped GPU by nvidia-smi name or short name (``"h100"``, ``"a100-40gb"``).

        Raises:
            ConfigError: The name is unknown; the message lists the closest known names.
        """
        table, names = _table()
        return lookup("GPU", name, table, names)

    @staticmethod
    def known() -> tuple[GPU, ...]:
        """Every shipped GPU."""
        return _GPUS


# Usable memory: the total the CUDA runtime reports, as printed in PyTorch OOM messages
# ("GPU 0 has a total capacity of X GiB") and vLLM logs; approximate to ~0.05 GiB.
_GPUS: tuple[GPU, ...] = (
    GPU(
        name="H100-SXM-80GB",
        memory_bytes=80 * GiB,  # NVIDIA H100 Tensor Core GPU datasheet (SXM5)
        usable_memory_bytes=int(79.19 * GiB),  # PyTorch OOM messages on H100 80GB HBM3
        hbm_bandwidth=3.35 * TB,  # H100 datasheet: 3.35 TB/s
        bf16_flops=989 * TFLOPS,  # H100 datasheet: 1,979 TFLOPS with sparsity -> 989 dense
        fp8_flops=1979 * TFLOPS,  # H100 datasheet: 3,958 TFLOPS with sparsity -> 1,979 dense
        interconnect="nvlink",
        interconnect_bandwidth=450 * GB,  # NVLink 4: 900 GB/s bidirectional
        nvidia_smi_names=("NVIDIA H100 80GB HBM3", "h100", "h100-sxm", "h100-80gb", "h100-sxm5"),
    ),
    GPU(
        name="H100-PCIe-80GB",
        memory_bytes=80 * GiB,  # H100 datasheet (PCIe)
        usable_memory_bytes=int(79.19 * GiB),  # same HBM stack as SXM; assumed equal
        hbm_bandwidth=2.0 * TB,  # H100 datasheet PCIe: 2 TB/s
        bf16_flops=756 * TFLOPS,  # H100 datasheet PCIe: 1,513 sparse -> 756 dense
        fp8_flops=1513 * TFLOPS,  # H100 datasheet PCIe: 3,026 sparse -> 1,513 dense
        interconnect="pcie",
        interconnect_bandwidth=64 * GB,  # PCIe Gen5 x16 (128 GB/s both ways)
        nvidia_smi_names=("NVIDIA H100 PCIe", "h100-pcie"),
    ),
    GPU(
        name="H200-141GB",
        memory_bytes=141 * GB,  # NVIDIA H200 Tensor Core GPU datasheet: 141 GB
        usable_memory_bytes=int(139.81 * GiB),  # PyTorch OOM messages on H200 (approximate)
        hbm_bandwidth=4.8 * TB,  # H200 datasheet: 4.8 TB/s
        bf16_flops=989 * TFLOPS,  # H200 datasheet: 1,979 sparse -> 989 dense
        fp8_flops=1979 * TFLOPS,  # H200 datasheet: 3,958 sparse -> 1,979 dense
        interconnect="nvlink",
        interconnect_bandwidth=450 * GB,  # NVLink 4: 900 GB/s bidirectional
        nvidia_smi_names=("NVIDIA H200", "h200", "h200-sxm"),
    ),
    GPU(
        name="B200-180GB",
        memory_bytes=180 * GB,  # HGX B200 datasheet: 180 GB per GPU
        usable_memory_bytes=int(178.35 * GiB),  # runtime total, approximate
        hbm_bandwidth=8.0 * TB,  # HGX B200 datasheet: 8 TB/s per GPU
        bf16_flops=2250 * TFLOPS,  # HGX B200 datasheet: 4.5 PFLOPS sparse -> 2.25 dense
        fp8_flops=4500 * TFLOPS,  # HGX B200 datasheet: 9 PFLOPS sparse -> 4.5 dense
        interconnect="nvlink",
        interconnect_bandwidth=900 * GB,  # NVLink 5: 1.8 TB/s bidirectional
        nvidia_smi_names=("NVIDIA B200", "b200"),
    ),
    GPU(
        name="A100-SXM-80GB",
        memory_bytes=80 * GiB,  # NVIDIA A100 Tensor Core GPU datasheet
        usable_memory_bytes=int(79.15 * GiB),  # PyTorch OOM messages on A100 80GB
        hbm_bandwidth=2.039 * TB,  # A100 datasheet: 2,039 GB/s (SXM 80GB)
        bf16_flops=312 * TFLOPS,  # A100 datasheet: 312 TFLOPS dense (624 sparse)
        fp8_flops=None,  # Ampere has no FP8 tensor cores
        interconnect="nvlink",
        interconnect_bandwidth=300 * GB,  # NVLink 3: 600 GB/s bidirectional
        nvidia_smi_names=("NVIDIA A100-SXM4-80GB", "a100", "a100-80gb", "a100-sxm-80gb"),
    ),
    GPU(
        name="A100-PCIe-80GB",
        memory_bytes=80 * GiB,  # A100 datasheet (PCIe 80GB)
        usable_memory_bytes=int(79.15 * GiB),  # assumed equal to SXM 80GB
        hbm_bandwidth=1.935 * TB,  # A100 datasheet: 1,935 GB/s (PCIe 80GB)
        bf16_flops=312 * TFLOPS,  # A100 datasheet: 312 TFLOPS dense
        fp8_flops=None,  # Ampere has no FP8 tensor cores
        interconnect="pcie",
        interconnect_bandwidth=32 * GB,  # PCIe Gen4 x16: 64 GB/s bidirectional
        nvidia_smi_names=("NVIDIA A100 80GB PCIe", "a100-pcie", "a100-80gb-pcie"),
    ),
    GPU(
        name="A100-SXM-40GB",
        memory_bytes=40 * GiB,  # A100 datasheet (40GB)
        usable_memory_bytes=int(39.39 * GiB),  # PyTorch OOM messages on A100 40GB
        hbm_bandwidth=1.555 * TB,  # A100 datasheet: 1,555 GB/s (40GB)
        bf16_flops=312 * TFLOPS,  # A100 datasheet: 312 TFLOPS dense
        fp8_flops=None,  # Ampere has no FP8 tensor cores
        interconnect="nvlink",
        interconnect_bandwidth=300 * GB,  # NVLink 3: 600 GB/s bidirectional
        nvidia_smi_names=("NVIDIA A100-SXM4-40GB", "a100-40gb", "a100-sxm-40gb"),
    ),
    GPU(
        name="L40S",
        memory_bytes=48 * GiB,  # NVIDIA L40S datasheet: 48 GB GDDR6
        usable_memory_bytes=int(44.52 * GiB),  # runtime total, approximate (nvidia-smi 46,068 MiB)
        hbm_bandwidth=864 * GB,  # L40S datasheet: 864 GB/s
        bf16_flops=362.05 * TFLOPS,  # L40S datasheet: 733 sparse -> 362 dense
        fp8_flops=733 * TFLOPS,  # L40S datasheet: 1,466 sparse -> 733 dense
        interconnect="pcie",
        interconnect_bandwidth=32 * GB,  # PCIe Gen4 x16
        nvidia_smi_names=("NVIDIA L40S", "l40s"),
    ),
    GPU(
        name="L4",
        memory_bytes=24 * GiB,  # NVIDIA L4 datasheet: 24 GB GDDR6
        usable_memory_bytes=int(22.03 * GiB),  # runtime total, approximate (nvidia-smi 23,034 MiB)
        hbm_bandwidth=300 * GB,  # L4 datasheet: 300 GB/s
        bf16_flops=121 * TFLOPS,  # L4 datasheet: 242 sparse -> 121 dense
        fp8_flops=242.5 * TFLOPS,  # L4 datasheet: 485 sparse -> 242.5 dense
        interconnect="pcie",
        interconnect_bandwidth=32 * GB,  # PCIe Gen4 x16
        nvidia_smi_names=("NVIDIA L4", "l4"),
    ),
    GPU(
        name="A10G",
        memory_bytes=24 * GiB,  # AWS G5 (A10G): 24 GB GDDR6
        usable_memory_bytes=int(22.05 * GiB),  # runtime total, approximate (nvidia-smi 23,028 MiB)
        hbm_bandwidth=600 * GB,  # NVIDIA A10 datasheet: 600 GB/s (A10G is AWS's A10 variant)
        bf16_flops=125 * TFLOPS,  # NVIDIA A10 datasheet: 125 dense (250 sparse); A10G clocks lower
        fp8_flops=None,  # Ampere has no FP8 tensor cores
        interconnect="pcie",
        interconnect_bandwidth=32 * GB,  # PCIe Gen4 x16
        nvidia_smi_names=("NVIDIA A10G", "a10g"),
    ),
    GPU(
        name="RTX-4090",
        memory_bytes=24 * GiB,  # GeForce RTX 4090 spec: 24 GB GDDR6X
        usable_memory_bytes=int(23.64 * GiB),  # PyTorch OOM messages on RTX 4090
        hbm_bandwidth=1008 * GB,  # NVIDIA Ada Lovelace whitepaper: 1,008 GB/s
        bf16_flops=165.2 * TFLOPS,  # Ada whitepaper: 165.2 dense BF16 with FP32 accumulate
        fp8_flops=330.3 * TFLOPS,  # Ada whitepaper: 330.3 dense FP8 (FP32 accumulate: half)
        interconnect="pcie",
        interconnect_bandwidth=32 * GB,  # PCIe Gen4 x16, no NVLink
        nvidia_smi_names=("NVIDIA GeForce RTX 4090", "rtx4090", "4090"),
    ),
    GPU(
        name="RTX-3090",
        memory_bytes=24 * GiB,  # GeForce RTX 3090 spec: 24 GB GDDR6X
        usable_memory_bytes=int(23.58 * GiB),  # vLLM log total_gpu_memory=23.58GiB (vllm#10517)
        hbm_bandwidth=936 * GB,  # NVIDIA Ampere GA102 whitepaper: 936 GB/s
        bf16_flops=71 * TFLOPS,  # GA102 whitepaper: 71 dense FP16 (FP16 accumulate)
        fp8_flops=None,  # Ampere has no FP8 tensor cores
        interconnect="pcie",
        interconnect_bandwidth=32 * GB,  # PCIe Gen4 x16
        nvidia_smi_names=("NVIDIA GeForce RTX 3090", "rtx3090", "3090"),
    ),
    GPU(
        name="MI300X",
        vendor="amd",
        memory_bytes=192 * GB,  # MI300X datasheet: 192 GB
        usable_memory_bytes=int(191.98 * GiB),  # ROCm reports nearly all of it (approximate)
        hbm_bandwidth=5.3 * TB,  # MI300X datasheet: 5.3 TB/s
        bf16_flops=1307.4 * TFLOPS,  # MI300X datasheet: 1,307.4 dense BF16
        fp8_flops=2614.9 * TFLOPS,  # MI300X datasheet: 2,614.9 dense FP8
        interconnect="infinity_fabric",
        interconnect_bandwidth=448 * GB,  # 7 links x 64 GB/s/dir
        nvidia_smi_names=("AMD Instinct MI300X", "mi300x", "mi300"),
    ),
)


@cache
def _table() -> tuple[dict[str, GPU], tuple[str, ...]]:
    table: dict[str, GPU] = {}
    names: list[str] = []
    for gpu in _GPUS:
        for alias in (gpu.name, *gpu.nvidia_smi_names):
            table.setdefault(normalize(alias), gpu)
            names.append(alias)
    return table, tuple(names)
