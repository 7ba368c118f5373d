"""Where each execution's Slack thread lives, stored beside the ledger in the same database.

Rules:
* ``stagehold_slack_thread``: one row per execution — its channel, the root card's ``ts`` and
  ``posted_seq``, the ledger position up to which every Slack message is delivered. A restarted
  bot reads these and continues the same thread, editing the same root card.
* ``stagehold_slack_message``: one row per message stagehold posted in a thread, keyed by a
  reference (``hold:H3``, ``rollback:41``, ``entry:17:0``), so a card is edited rather than posted
  twice, and a reply delivered before a crash is not posted again after it.
* ``stagehold_slack_intent``: a message about to be posted (the root card, a reply, a tracked
  card), written before the post and removed in the transaction that records its ``ts``. One left
  behind means a post whose outcome is unknown (a process died, or Slack's answer was lost): the
  notifier reads the channel back for a message carrying that execution and reference in its
  metadata before it ever posts again.
* These tables are delivery bookkeeping, not history: the ledger stays the only record of what
  happened, and nothing here is read by the engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import inspect
from sqlalchemy.engine import Engine
from sqlmodel import Field, Session, SQLModel, col, select

from ledger import registry
from ledger.sql import execution_heads, heads_and_closed, registry_installed


class SlackThreadRow(SQLModel, table=True):
    __tablename__ = "stagehold_slack_thread"

    execution_id: str = Field(primary_key=True, max_length=200)
    channel: str = Field(max_length=40)
    root_ts: str | None = Field(default=None, max_length=40)
    posted_seq: int = 0


class SlackMessageRow(SQLModel, table=True):
    __tablename__ = "stagehold_slack_message"

    execution_id: str = Field(primary_key=True, max_length=200)
    ref: str = Field(primary_key=True, max_length=100)
    channel: str = Field(max_length=40)
    ts: str = Field(max_length=40)


class SlackIntentRow(SQLModel, table=True):
    __tablename__ = "stagehold_slack_intent"

    execution_id: str = Field(primary_key=True, max_length=200)
    ref: str = Field(primary_key=True, max_length=100)
    channel: str = Field(max_length=40)
    thread_ts: str | None = Field(default=None, max_length=40)
    posted_after: float  # Unix seconds just before the first attempt: where to read back from


@dataclass(frozen=True)
class Intent:
    execution_id: str
    ref: str
    channel: str
    thread_ts: str | None
    posted_after: float


@dataclass(frozen=True)
class ThreadInfo:
    execution_id: str
    channel: str
    root_ts: str | None
    posted_seq: int


class SlackStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        tables = [
            SQLModel.metadata.tables[SlackThreadRow.__tablename__],
            SQLModel.metadata.tables[SlackMessageRow.__tablename__],
            SQLModel.metadata.tables[SlackIntentRow.__tablename__],
        ]
        SQLModel.metadata.create_all(engine, tables=tables)
        with engine.connect() as conn:
            # The ledger store installs the registry when it opens, before the bot builds this.
            self._registered = registry_installed(conn)

    def thread(self, execution_id: str) -> ThreadInfo | None:
        with Session(self.engine) as session:
            row = session.get(SlackThreadRow, execution_id)
            return ThreadInfo(row.execution_id, row.channel, row.root_ts, row.posted_seq) if row else None

    def create_thread(self, execution_id: str, channel: str) -> ThreadInfo:
        with Session(self.engine) as session, session.begin():
            row = session.get(SlackThreadRow, execution_id)
            if row is None:
                row = SlackThreadRow(execution_id=execution_id, channel=channel)
                session.add(row)
                session.flush()
            return ThreadInfo(row.execution_id, row.channel, row.root_ts, row.posted_seq)

    def threads(self) -> dict[str, int]:
        """Every known thread and its delivered ledger position."""
        with Session(self.engine) as session:
            return {r.execution_id: r.posted_seq for r in session.exec(select(SlackThreadRow)).all()}

    def intend(self, execution_id: str, ref: str, channel: str, thread_ts: str | None, now: float) -> Intent:
        """Record a post about to be made; an earlier intent for the same message is kept (and returned)."""
        with Session(self.engine) as session, session.begin():
            row = session.get(SlackIntentRow, (execution_id, ref))
            if row is None:
                row = SlackIntentRow(
                    execution_id=execution_id, ref=ref, channel=channel, thread_ts=thread_ts, posted_after=now
                )
                session.add(row)
                session.flush()
            return Intent(row.execution_id, row.ref, row.channel, row.thread_ts, row.posted_after)

    def intent(self, execution_id: str, ref: str) -> Intent | None:
        with Session(self.engine) as session:
            row = session.get(SlackIntentRow, (execution_id, ref))
            return Intent(row.execution_id, row.ref, row.channel, row.thread_ts, row.posted_after) if row else None

    def forget_intent(self, execution_id: str, ref: str) -> None:
        """The read-back found no such message: the next attempt posts it."""
        with Session(self.engine) as session, session.begin():
            row = session.get(SlackIntentRow, (execution_id, ref))
            if row is not None:
                session.delete(row)

    def set_root(self, execution_id: str, ts: str, seq: int) -> None:
        with Session(self.engine) as session, session.begin():
            row = session.get(SlackThreadRow, execution_id)
            if row is not None:
                row.root_ts = ts
                row.posted_seq = max(row.posted_seq, seq)
            intent = session.get(SlackIntentRow, (execution_id, "root"))
            if intent is not None:
                session.delete(intent)

    def advance(self, execution_id: str, seq: int) -> None:
        with Session(self.engine) as session, session.begin():
            row = session.get(SlackThreadRow, execution_id)
            if row is not None and seq > row.posted_seq:
                row.posted_seq = seq

    def messages(self, execution_id: str) -> dict[str, str]:
        with Session(self.engine) as session:
            rows = session.exec(select(SlackMessageRow).where(SlackMessageRow.execution_id == execution_id)).all()
            return {r.ref: r.ts for r in rows}

    def save_message(self, execution_id: str, ref: str, channel: str, ts: str, seq: int | None) -> None:
        """Remember a posted message and, in the same transaction, how far the thread got."""
        with Session(self.engine) as session, session.begin():
            if session.get(SlackMessageRow, (execution_id, ref)) is None:
                session.add(SlackMessageRow(execution_id=execution_id, ref=ref, channel=channel, ts=ts))
            intent = session.get(SlackIntentRow, (execution_id, ref))
            if intent is not None:
                session.delete(intent)
            if seq is not None:
                row = session.get(SlackThreadRow, execution_id)
                if row is not None and seq > row.posted_seq:
                    row.posted_seq = seq

    def undelivered(self) -> int:
        """Ledger entries not yet delivered, summed over every thread (the durable Slack backlog)."""
        heads = self.heads()
        return sum(max(0, heads.get(eid, 0) - posted) for eid, posted in self.threads().items())

    def hold_card_times(self) -> dict[tuple[str, str], datetime]:
        return hold_card_times(self.engine)

    def heads(self) -> dict[str, int]:
        """The last ledger seq of every execution, in one query."""
        return execution_heads(self.engine, self._registered)

    def heads_and_closed(self) -> tuple[dict[str, int], frozenset[str]]:
        """``heads()``, and which of those executions the registry knows are closed (none without it)."""
        return heads_and_closed(self.engine, registry.HEADS if self._registered else registry.LEDGER_HEADS)


def hold_card_times(engine: Engine) -> dict[tuple[str, str], datetime]:
    """When Slack received each hold card, by (execution, hold): a message's ``ts`` is its post time.

    Read-only: a database the bot never posted from has no such table, and gets an empty answer
    rather than a new table.
    """
    if not inspect(engine).has_table(SlackMessageRow.__tablename__):
        return {}
    with Session(engine) as session:
        rows = session.exec(select(SlackMessageRow).where(col(SlackMessageRow.ref).startswith("hold:"))).all()
    out: dict[tuple[str, str], datetime] = {}
    for row in rows:
        try:
            out[(row.execution_id, row.ref.removeprefix("hold:"))] = datetime.fromtimestamp(float(row.ts), UTC)
        except (ValueError, OverflowError, OSError):
            continue  # not a Slack timestamp: the review falls back to the hold's opening
    return out
