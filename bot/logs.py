"""How ``stagehold serve`` logs: readable lines by default, one JSON object a line as an option.

``STAGEHOLD_LOG_FORMAT=json`` is for log pipelines that index fields: each record carries
``ts`` (UTC, ISO 8601), ``level``, ``logger``, ``message`` and, for an exception, ``exc``, plus
the replica's lease owner name so lines from several replicas can be told apart.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FORMATS = ("text", "json")


class JsonFormatter(logging.Formatter):
    def __init__(self, replica: str = "") -> None:
        super().__init__()
        self.replica = replica

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self.replica:
            out["replica"] = self.replica
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def configure(fmt: str, replica: str = "") -> None:
    """Warnings and up from libraries, info and up from stagehold, to stderr in ``fmt``."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter(replica) if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("stagehold").setLevel(logging.INFO)
