"""Logger set-up (console on the main process, one log file per rank) and the training MetricLogger."""

from __future__ import annotations

import logging
import os
import sys

import dinov2.distributed as distributed

from .helpers import MetricLogger, SmoothedValue

__all__ = ["MetricLogger", "SmoothedValue", "log_uncaught_exceptions", "setup_logging"]

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


def _log_to_files(logger_name: str | None, exc_type, exc, tb) -> None:
    """Write an uncaught exception (with its traceback) to the log files installed here for ``logger_name``."""
    logger = logging.getLogger(logger_name)
    record = logger.makeRecord(logger.name, logging.ERROR, "", 0, "uncaught exception", (), (exc_type, exc, tb))
    for handler in logger.handlers:
        if getattr(handler, _OURS, False) and isinstance(handler, logging.FileHandler):
            handler.handle(record)


def log_uncaught_exceptions(name: str | None = "dinov2") -> None:
    """Make an exception that ends the process also go, with its traceback, to the log files of logger ``name``.

    Chains ``sys.excepthook`` (which still prints to stderr), so errors raised after a run's set-up are kept in
    the run's folder next to its log (the console may be a lost SLURM or terminal stream). Installed once per
    process; :func:`setup_logging` calls it, so every command that sets up logging gets it.
    """
    previous = sys.excepthook
    if getattr(previous, _OURS, None) == name:
        return

    def hook(exc_type, exc, tb) -> None:
        if not issubclass(exc_type, KeyboardInterrupt):
            _log_to_files(name, exc_type, exc, tb)
        previous(exc_type, exc, tb)

    setattr(hook, _OURS, name)
    sys.excepthook = hook


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
    same handlers. Call after the process group exists, so the rank is known. An exception that ends the process
    is also written to the log files (:func:`log_uncaught_exceptions`). Nothing else (e.g. ``print``) is touched.

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
    log_uncaught_exceptions(name)
    return loggers[0]
