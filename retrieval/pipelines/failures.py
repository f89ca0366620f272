"""How the entry points end on a failure: the message for the user, the traceback for the log.

Errors raised on bad input (a missing file, a malformed one, an unknown config choice, a
failed download) carry a message that names the thing and the fix; a traceback above it only
hides it. Those end the process with the message alone; the traceback still goes to the run's
log file, and `HYDRA_FULL_ERROR=1` brings it back to the console.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from retrieval.data.download.transfer import DownloadError
from retrieval.data.sfm.errors import SfmError

# ValueError covers ConfigError, DatasetFormatError, CheckpointError and the registries' unknown
# names; OSError covers missing files and DiskFullError.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, DownloadError, SfmError)


def log_failure(logger: logging.Logger) -> list[Path]:
    """The error being handled, with its traceback, into the file handlers (Hydra's run log)."""
    record = logger.makeRecord(
        logger.name, logging.ERROR, __file__, 0, "the job failed", (), sys.exc_info()
    )
    files = []
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler) and handler.baseFilename != os.devnull:
            handler.handle(record)
            files.append(Path(handler.baseFilename))
    return files


def exit_on_user_error(error: BaseException, logger: logging.Logger) -> None:
    """Log `error`; for bad input end the process with its message (exit 1), else return."""
    logs = log_failure(logger)
    if not isinstance(error, USER_ERRORS) or os.environ.get("HYDRA_FULL_ERROR") == "1":
        return
    where = f" (traceback in {logs[-1]})" if logs else ""
    sys.exit(f"error: {error}{where}")
