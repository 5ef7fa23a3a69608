"""Optional compiled CPU kernels, built on the user's machine by torch's C++ extension loader.

Without this module the engine runs on torch operations alone. On the CPU one
part of a block-Gibbs sweep is still far from the matrix products' speed: the
bulk Bernoulli sampler (:mod:`ebmgraph.sampling`) makes about twenty
element-wise passes per layer, twelve of them for the SplitMix64 words. ``bernoulli_digits.cpp`` fuses the
words, the digit comparison and the tie search into one pass, with the same
arithmetic, so it gives the same units bit for bit and only the speed changes.
On the 2-core development machine (AMD EPYC, AVX-512) it took 0.11 ms for
784,000 float32 units where the torch operations took 0.51 ms.

Loading is opt-in. :func:`load_cpu_kernels` compiles the source with the system
C++ compiler and ninja (the ``kernels`` extra installs ninja) into torch's
extension cache (``TORCH_EXTENSIONS_DIR``, by default
``~/.cache/torch_extensions``). That took about 25 seconds on the development
machine; later processes load the cached build. The command line and the
benchmark call it when the environment variable ``EBMGRAPH_CPU_KERNELS`` is
``1``.

The kernel is built only where torch reports AVX-512. Built for AVX2 on the same
machine it took 3.0 ms for the same draw, slower than the torch operations, so
:func:`load_cpu_kernels` declines on other CPUs.

NOTE: a standalone timing put most of the AVX2 build's time in the comparison
loop reading back the digits just written, not in the 64-bit products. Stalled
store forwarding (8-byte stores read by 32-byte loads) is the likely cause but
was not confirmed, so an AVX2 build might still be made fast.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from types import ModuleType

import torch

__all__ = ["ENVIRONMENT_VARIABLE", "load_cpu_kernels", "load_if_requested", "loaded_kernel", "unload_cpu_kernels"]

logger = logging.getLogger(__name__)

ENVIRONMENT_VARIABLE = "EBMGRAPH_CPU_KERNELS"
"""Set it to ``1`` to make the command line and the benchmark call :func:`load_cpu_kernels`."""

_SOURCE = Path(__file__).with_name("bernoulli_digits.cpp")
_AVX512_FLAGS = ["-mavx512f", "-mavx512dq", "-mavx512bw", "-mavx512vl", "-mavx2", "-mfma"]

_loaded: ModuleType | None = None


def load_cpu_kernels(*, verbose: bool = False) -> bool:
    """Compile (first time) and load the fused Bernoulli kernel; return True if it is in use.

    Returns False, after one warning that gives the reason, when the CPU lacks
    AVX-512 or the build fails (no compiler, no ninja, a read-only cache). The
    sampler then keeps its torch operations, which give the same units.

    Parameters
    ----------
    verbose : bool
        Show the compiler's output.
    """
    global _loaded
    if _loaded is not None:
        return True

    capability = torch.backends.cpu.get_cpu_capability()
    if not capability.startswith("AVX512"):
        logger.warning(
            "ebmgraph's CPU kernel needs AVX-512 and torch reports %s for this CPU; the sampler keeps its torch operations",
            capability,
        )
        return False

    from torch.utils.cpp_extension import load

    logger.info("loading ebmgraph's CPU kernel (the first load compiles it, which takes about half a minute)")
    try:
        _loaded = load(
            name=f"ebmgraph_bernoulli_digits_{capability.lower()}",
            sources=[str(_SOURCE)],
            extra_cflags=["-O3", "-fopenmp", *_AVX512_FLAGS],
            extra_ldflags=["-fopenmp"],
            verbose=verbose,
        )
    except (OSError, RuntimeError, ImportError) as error:
        # The message can carry the whole build log, and its first line names the failure.
        reason = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
        logger.warning(
            "building ebmgraph's CPU kernel failed (%s); the sampler keeps its torch operations. "
            "load_cpu_kernels(verbose=True) shows the compiler's output",
            reason,
        )
        return False
    return True


def load_if_requested() -> bool:
    """Call :func:`load_cpu_kernels` if ``EBMGRAPH_CPU_KERNELS`` is ``1``; return whether the kernel is in use."""
    value = os.environ.get(ENVIRONMENT_VARIABLE, "")
    if value not in ("", "0", "1"):
        raise ValueError(f"{ENVIRONMENT_VARIABLE} must be 0 or 1, got {value!r}")
    return load_cpu_kernels() if value == "1" else _loaded is not None


def loaded_kernel() -> ModuleType | None:
    """Return the loaded kernel module, or None."""
    return _loaded


def unload_cpu_kernels() -> None:
    """Return the sampler to its torch operations (the built module stays cached on disk)."""
    global _loaded
    _loaded = None
