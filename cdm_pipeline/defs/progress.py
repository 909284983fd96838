"""What ``cdm run`` prints while the night runs: one line per finished step, with its time and
the rows its assets hold, so a person can watch a long night move; on a terminal, the step that
runs now (the comparison shards show how far the resolver has come: shard 2 of 4)."""

from __future__ import annotations

import logging
import sys

import dagster as dg
from dagster._core.events import DagsterEventType

PROGRESS_LOGGER = "cdm_progress"


class _StepLines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.rows: dict[str, list[int]] = {}
        # A person watching a terminal: show the step that runs now, overwritten when it ends.
        # Asked once, before any step: while one runs, Dagster tees its output through a pipe.
        self.live = sys.stdout.isatty()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._line(record)
        except Exception:  # a progress line must never break the night
            pass

    def _line(self, record: logging.LogRecord) -> None:
        meta = getattr(record, "dagster_meta", None) or {}
        event = meta.get("dagster_event")
        if event is None or not event.step_key:
            return
        step = event.step_key
        if event.event_type == DagsterEventType.STEP_START:
            if self.live:
                print(f"\r  ...   {step:<58} running", end="", file=sys.stdout, flush=True)
            return
        clear = "\r" + " " * 80 + "\r" if self.live else ""
        if event.is_step_materialization:
            count = event.step_materialization_data.materialization.metadata.get(
                "dagster/row_count"
            )
            if count is not None:
                self.rows.setdefault(step, []).append(int(count.value))
        elif event.event_type == DagsterEventType.STEP_SUCCESS:
            seconds = event.event_specific_data.duration_ms / 1000
            rows = self.rows.pop(step, [])
            held = (
                f"{rows[0]:>12,} rows"
                if len(rows) == 1
                else f"{len(rows)} tables, {', '.join(f'{n:,}' for n in rows)} rows"
                if rows
                else ""
            )
            print(f"{clear}  done  {step:<58} {seconds:7.1f}s {held}", file=sys.stdout, flush=True)
        elif event.event_type == DagsterEventType.STEP_FAILURE:
            print(f"{clear}  FAIL  {step}", file=sys.stdout, flush=True)
        elif event.event_type == DagsterEventType.STEP_SKIPPED:
            print(
                f"{clear}  skip  {step} (a blocking check upstream failed)",
                file=sys.stdout,
                flush=True,
            )


@dg.logger(description="One line per finished step with its time and rows (cdm run).")
def progress_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
    logger = logging.getLogger(PROGRESS_LOGGER)
    logger.setLevel(logging.DEBUG)
    logger.handlers = [_StepLines()]
    logger.propagate = False
    return logger


LOGGERS = {"console": dg.colored_console_logger, PROGRESS_LOGGER: progress_logger}
