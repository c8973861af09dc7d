"""How the command line reports failures: one line ``xpnn: error: ...`` in flag terms.

``describe(exc, hint)`` turns an exception into ``(exit_code, message)``, or None for
an exception that is a bug (shown with its traceback). Library messages raised by
xpnn's own code name Python keywords (``batch_size=None``, ``download=True``); they
are rewritten into the flags a command-line user typed (``--batch-size full``,
``--no-download``). Accelerator errors are recognised by class name and module, so
neither torch nor cupy is imported here.
"""

from __future__ import annotations

import re

#: exit codes (also in ``xpnn.cli.main``'s docstring)
EXIT_FAILED = 1  # the run or check failed: divergence, out of memory, I/O, a GPU error
EXIT_USAGE = 2  # bad flags or values, missing backend or data files
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)
EXIT_BROKEN_PIPE = 141  # the reader of stdout went away (128 + SIGPIPE), e.g. `| head -1`
EXIT_STDOUT = 74  # stdout could not be written (EX_IOERR): e.g. `> /dev/full`; the run went on
# SIGTERM and SIGHUP end a run like Ctrl-C, with 128 + their number (143, 129)


class CLIError(ValueError):
    """A bad flag value or combination found after parsing: exit code 2, one line even
    with XPNN_DEBUG=1. A ValueError, so that code calling helpers such as
    ``xpnn.dist.cli.dist_setup`` directly can catch it as one."""


#: library wording -> flag wording, applied in order (first the longer patterns)
_KEYWORD_TO_FLAG = [
    (r"\bbatch_size=None\b", "--batch-size full"),
    (r"\bbatch_size\b", "--batch-size"),
    (r"\b[Cc]all with download=True\b", "run without --no-download"),
    (r"\b[Ll]oad with download=True\b", "Run without --no-download"),
    (r"\bdownload=True\b", "no --no-download"),
    (r"\bno path= given\b", "no --data-dir given"),
    (r"\bpass path=", "pass --data-dir"),
    (r"\bpath=", "--data-dir "),
    (r"\bdtype=['\"]?(float32|float64)['\"]?", r"--dtype \1"),
    (r"\bdtype must", "--dtype must"),
    (r"\bgradient=['\"]?(backprop|numerical)['\"]?", r"--gradient \1"),
    (r"\bcompile=True\b", "--compile"),
    (r"\bclasses=", "--classes "),
    (r"^size must", "--image-size must"),
    (r"\bn_samples\b", "--samples"),
    (r"\bnoise must", "--noise must"),
    (r"\beval_every\b", "--eval-every"),
    (r"\biters=", "--iters "),
    (r"\bepochs=", "--epochs "),
    (r"\biters\b(?= must)", "--iters"),
    (r"\bepochs\b(?= must)", "--epochs"),
    (r"\bseed\b", "--seed"),
    (r"\blr=", "--lr "),
    (r"\bweight_decay\b", "--weight-decay"),
    (r"\bweight_init\b", "--weight-init"),
    (r"^h must", "--h must"),
    (r"^atol must", "--atol must"),
    (r"\bh \(the finite-difference step\)", "--h (the finite-difference step)"),
]
_KEYWORD_TO_FLAG = [(re.compile(p), r) for p, r in _KEYWORD_TO_FLAG]


def in_flag_terms(message: str) -> str:
    """Rewrite a library message's keyword names into the command line's flags."""
    for pattern, replacement in _KEYWORD_TO_FLAG:
        message = pattern.sub(replacement, message)
    return message


def one_line(exc: BaseException, limit: int | None = None) -> str:
    """The exception's message on one line (its class name when it has none)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if limit is not None and len(text) > limit:
        text = text[: limit - 3].rstrip() + "..."
    return text


def _raised_by_xpnn(exc: BaseException) -> bool:
    """True when the innermost frame of the traceback is xpnn code."""
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return str(tb.tb_frame.f_globals.get("__name__", "")).startswith("xpnn")


def _classes(exc: BaseException):
    """(module, name) of the exception's class and its bases."""
    return [(getattr(c, "__module__", ""), c.__name__) for c in type(exc).__mro__]


def is_gpu_out_of_memory(exc: BaseException) -> bool:
    """torch.cuda.OutOfMemoryError (torch.OutOfMemoryError), cupy's OutOfMemoryError,
    or a CUDA runtime error whose code is cudaErrorMemoryAllocation."""
    for module, name in _classes(exc):
        if name == "OutOfMemoryError" and module.split(".")[0] in ("torch", "cupy"):
            return True
    return is_cuda_runtime_error(exc) and "cudaErrorMemoryAllocation" in str(exc)


def is_cuda_runtime_error(exc: BaseException) -> bool:
    """cupy.cuda.runtime.CUDARuntimeError (defined in cupy_backends.cuda.api.runtime)."""
    return any(
        name == "CUDARuntimeError" and module.split(".")[0] in ("cupy", "cupy_backends")
        for module, name in _classes(exc)
    )


def is_host_out_of_memory(exc: BaseException) -> bool:
    """MemoryError (NumPy's 'Unable to allocate ...'), or torch's CPU allocator failure,
    which is a plain RuntimeError."""
    if isinstance(exc, MemoryError):
        return True
    return isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc)


def is_broken_pool(exc: BaseException) -> bool:
    """concurrent.futures' BrokenExecutor (BrokenProcessPool: a worker process of
    ``--workers`` died, e.g. killed or out of memory)."""
    from concurrent.futures import BrokenExecutor

    return isinstance(exc, BrokenExecutor)


GPU_HINT = "try a smaller --batch-size or --hidden, --dtype float32, or another --device"


def describe(exc: BaseException, memory_hint: str | None = None):
    """``(exit_code, message)`` for an error xpnn reports in one line, None for a bug.

    ``memory_hint`` says what the run was estimated to need and which flag drives it;
    it is added to out-of-memory messages.
    """
    from ..training import TrainingDivergedError

    if isinstance(exc, CLIError):
        return EXIT_USAGE, one_line(exc)
    if is_gpu_out_of_memory(exc):
        text = f"the GPU ran out of memory ({one_line(exc, 160)}); {GPU_HINT}"
        if memory_hint:
            text += f" ({memory_hint})"
        return EXIT_FAILED, text
    if is_cuda_runtime_error(exc):
        return EXIT_FAILED, (
            f"CUDA runtime error ({one_line(exc, 160)}); check --device and the CUDA "
            f"driver, or run on --backend numpy"
        )
    if is_broken_pool(exc):
        return EXIT_FAILED, (
            f"a --workers process ended abruptly (killed, or out of memory?); the run "
            f"stopped ({type(exc).__name__})")
    if is_host_out_of_memory(exc):
        text = f"out of memory ({one_line(exc, 160)})"
        text += f"; {memory_hint}" if memory_hint else "; try a smaller --hidden or --batch-size"
        return EXIT_FAILED, text + ", or --dtype float32"
    message = one_line(exc)
    if _raised_by_xpnn(exc) or isinstance(exc, TrainingDivergedError):
        message = in_flag_terms(message)
    if isinstance(exc, TrainingDivergedError):
        return EXIT_FAILED, message  # the flags were well-formed; the run failed
    if isinstance(exc, (ValueError, TypeError, ImportError, FileNotFoundError)):
        return EXIT_USAGE, message  # bad values, missing backend or data files
    if isinstance(exc, OSError):
        return EXIT_FAILED, message  # cannot write the output folder, disk full, ...
    return None
