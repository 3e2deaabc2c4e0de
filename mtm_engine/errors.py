"""The engine's error types: a user error carries a one-line message that says how to fix it.

Front ends catch `MtmError` in one place and print `error: <message>`; anything else is a bug
and keeps its traceback.
"""

import re


class MtmError(Exception):
    """A user-facing error: bad input, missing file, unknown name."""


class ConfigError(MtmError):
    """The experiment spec is malformed or names something unknown."""


class DataError(MtmError):
    """A dataset cannot be found, read or downloaded."""


class ModelError(MtmError):
    """A backbone or its weights cannot be built or loaded."""


class OutOfMemory(MtmError):
    """A run needed more memory than its device has."""


def out_of_memory(exc: BaseException, gpu_share: float | None = None) -> OutOfMemory | None:
    """The one-line error for an allocation failure, or None if `exc` is something else.
    CUDA raises torch.OutOfMemoryError; the CPU allocator raises a plain RuntimeError
    ("DefaultCPUAllocator: can't allocate memory"), so the message is what tells them apart. gpu_share: the
    share of a GPU the run had, where it shares the GPU with other queued runs."""
    text = str(exc)
    if not (isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError"
            or "can't allocate memory" in text or "out of memory" in text.lower()):
        return None
    # CPU: "you tried to allocate 41472000 bytes."; CUDA: "Tried to allocate 20.00 MiB."
    wanted = re.search(r"tried to allocate ([\d.]+ ?\w+)", text, re.IGNORECASE)
    detail = f" (tried to allocate {wanted.group(1)})" if wanted else ""
    shared = (f"; this run had {gpu_share:.0%} of a GPU it shares with other queued runs: start the queue "
              f"with fewer runs per GPU (--per-gpu)") if gpu_share is not None and gpu_share < 1 else ""
    return OutOfMemory(f"out of memory{detail}; lower train.batch_size, eval.centre_samples or model.dim, "
                       f"or use a smaller backbone{shared}")
