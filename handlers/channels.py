"""Which replica delivers to which Slack channel: a lease per channel, in the ledger's database.

Rules:
* A channel's threads are planned and posted by one replica at a time, the holder of the
  channel's row in ``stagehold_slack_channel``. That keeps every thread in ledger order and lets
  the one holder pace the channel (Slack allows about one message a second per channel).
* Taking and renewing are one conditional ``UPDATE ... WHERE owner = me OR expires_at <= now``:
  the database's row lock decides between replicas racing for a lapsed channel, and the rows
  changed (0 or 1) says who won. No consensus of our own, no broker.
* ``ready_at`` is the pacing across replicas: the holder writes when the channel may next be
  posted to, and a replica taking the channel over waits until then.
* A holder that cannot renew (the database gone, or another replica took the channel after a
  pause) stops delivering to that channel at once; the new holder continues from the thread's
  delivered ledger position, and a post whose outcome was not recorded is read back from Slack
  before it is ever posted again (``handlers.storage`` intents).
"""

from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, Session, SQLModel


class SlackChannelRow(SQLModel, table=True):
    __tablename__ = "stagehold_slack_channel"

    channel: str = Field(primary_key=True, max_length=40)
    owner: str = Field(default="", max_length=200)
    expires_at: float = 0.0  # Unix seconds
    ready_at: float = 0.0  # Unix seconds: no post to this channel before then


class ChannelLeases:
    def __init__(self, engine: Engine, owner: str) -> None:
        self.engine = engine
        self.owner = owner
        SQLModel.metadata.create_all(engine, tables=[SQLModel.metadata.tables[SlackChannelRow.__tablename__]])

    def take(self, channel: str, now: float, ttl_s: float) -> float | None:
        """Take or renew ``channel`` until ``now + ttl_s``; its ``ready_at`` if this replica holds it, else None."""
        self._ensure(channel)
        table = SQLModel.metadata.tables[SlackChannelRow.__tablename__]
        with self.engine.begin() as connection:
            changed = connection.execute(
                update(table)
                .where(
                    table.c.channel == channel,
                    (table.c.owner == self.owner) | (table.c.expires_at <= now),
                )
                .values(owner=self.owner, expires_at=now + ttl_s)
                .returning(table.c.ready_at)
            ).first()
        return float(changed[0]) if changed is not None else None

    def paced(self, channel: str, ready_at: float) -> None:
        """Record when the channel may next be posted to (only while this replica holds it)."""
        table = SQLModel.metadata.tables[SlackChannelRow.__tablename__]
        with self.engine.begin() as connection:
            connection.execute(
                update(table).where(table.c.channel == channel, table.c.owner == self.owner).values(ready_at=ready_at)
            )

    def release(self, channel: str) -> None:
        """Hand the channel back so another replica may take it at once."""
        table = SQLModel.metadata.tables[SlackChannelRow.__tablename__]
        with self.engine.begin() as connection:
            connection.execute(
                update(table).where(table.c.channel == channel, table.c.owner == self.owner).values(expires_at=0.0)
            )

    def _ensure(self, channel: str) -> None:
        with Session(self.engine) as session:
            if session.get(SlackChannelRow, channel) is not None:
                return
            session.add(SlackChannelRow(channel=channel))
            try:
                session.commit()
            except IntegrityError:
                session.rollback()  # another replica created it first
