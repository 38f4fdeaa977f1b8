"""Logger set-up (console on the main process, one log file per rank) and the training MetricLogger."""

from __future__ import annotations

import logging
import os
import sys

import dinov2.distributed as distributed

from .helpers import MetricLogger, SmoothedValue

__all__ = ["MetricLogger", "SmoothedValue", "setup_logging"]

_FORMAT = "%(levelname).1s%(asctime)s %(process)s %(name)s %(filename)s:%(lineno)s] %(message)s"
_DATE_FORMAT = "%Y%m%d %H:%M:%S"
_OURS = "_dinov2_handler"  # marks the handlers installed here, so that a second call replaces them


def log_file_path(output: str, rank: int) -> str:
    """``output`` itself if it ends in .txt/.log, else ``output/logs/log.txt``; ``.rank<r>`` appended for r > 0."""
    filename = output if os.path.splitext(output)[-1] in (".txt", ".log") else os.path.join(output, "logs", "log.txt")
    return filename if rank == 0 else f"{filename}.rank{rank}"


def _remove_our_handlers(logger: logging.Logger) -> None:
    for handler in list(logger.handlers):
        if getattr(handler, _OURS, False):
            logger.removeHandler(handler)
            handler.close()


def _add_handler(logger: logging.Logger, handler: logging.Handler) -> None:
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter(fmt=_FORMAT, datefmt=_DATE_FORMAT))
    setattr(handler, _OURS, True)
    logger.addHandler(handler)


def setup_logging(
    output: str | None = None,
    *,
    name: str | None = "dinov2",
    level: int = logging.INFO,
    capture_warnings: bool = True,
) -> logging.Logger:
    """Configure logger ``name``: stdout on the main process, and a file per rank under ``output``.

    ``output``: a ``.txt``/``.log`` file name, or a directory (logs go to ``output/logs/log.txt``; rank r > 0
    writes ``log.txt.rank<r>``). Calling again replaces the handlers installed by the previous call (no
    duplicates). ``capture_warnings`` routes ``warnings.warn`` through the ``py.warnings`` logger, which gets the
    same handlers. Call after the process group exists, so the rank is known. Nothing else (e.g. ``print``) is
    touched.

    Released defaults were ``name=None`` (the root logger) and ``level=DEBUG``; the library logs under
    ``"dinov2"``, so configuring that logger leaves other libraries' logging alone.
    """
    rank = distributed.get_global_rank()
    loggers = [logging.getLogger(name)]
    logging.captureWarnings(capture_warnings)
    _remove_our_handlers(logging.getLogger("py.warnings"))
    if capture_warnings and name != "py.warnings":
        loggers.append(logging.getLogger("py.warnings"))
    for logger in loggers:
        _remove_our_handlers(logger)
        logger.setLevel(level)
        logger.propagate = False
        if distributed.is_main_process():
            _add_handler(logger, logging.StreamHandler(stream=sys.stdout))
        if output:
            filename = log_file_path(output, rank)
            os.makedirs(os.path.dirname(os.path.abspath(filename)), exist_ok=True)
            _add_handler(logger, logging.FileHandler(filename, mode="a"))
    return loggers[0]
