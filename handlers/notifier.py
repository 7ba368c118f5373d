"""The notifier: tails the ledger and keeps each execution's Slack thread up to date.

Rules:
* The engine never waits on Slack. The engine listener (``Notifier.__call__``) only marks an
  execution as having news and wakes the planner thread; a periodic sweep finds anything not yet
  delivered (after a restart, a lost wake-up, or appends by another process).
* The planner reads new ledger entries in order and turns each into Slack steps (``Timeline``,
  no I/O of its own): thread replies rendered from that entry, and refreshes of tracked messages (the
  root card, hold cards, the rollback card), which are rendered at delivery time from the latest
  state so a late card never shows something older than what is already known.
* Replicas: a channel's threads are planned and posted only by the replica holding that
  channel's lease (``handlers.channels``), renewed every ``renew_s``; one that loses it stops
  posting there at once, and whoever takes the channel continues from the stored positions.
* Every new message is recorded as an intent before it is posted (``handlers.storage``); an
  intent found on a later attempt (a lost answer, or a process that died) is resolved by reading
  the channel back (``conversations.history``, or ``conversations.replies`` in a thread) for a
  message whose metadata names the execution and reference, so nothing is posted twice.
* Steps go through the per-channel ``Outbox`` (ordered, paced, retried). Delivery is durable:
  the root card's and every posted message's ``ts`` are stored with the thread's delivered ledger
  position (``handlers.storage``), so a restarted bot continues the same thread, edits the same
  cards and does not repeat replies it already posted.
* What is posted: the root card (edited in place); in its thread, preflight results, stage
  transitions, checkpoint evidence at a stage's pass and for samples that did not pass (never
  for every passing sample), hold cards (updated when released, superseded, closed or when
  their evidence goes stale), releases with "n of m", refused attempts, releases not carried
  over, reminders and escalations mentioning who may act, rollbacks, and the final record; with
  the bot's witness key, a signed checkpoint of the ledger head at every hold, every stage passed
  and the end (c2sp.org/tlog-checkpoint, for ``stagehold ledger verify --witness``).
  Evidence folded into a hold card is not posted twice.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.error import URLError

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from execution import events as ev
from execution import policy
from execution.outputs import intervention_packet, state_record
from execution.project import RollbackState, State, apply, project
from handlers import cards
from handlers.cards import Card, code, md, mention, mentions, slack_date
from handlers.channels import ChannelLeases
from handlers.outbox import Operation, Outbox, Permanent, Transient
from handlers.readback import find_posted
from handlers.storage import SlackStore
from ledger.entry import Entry
from ledger.note import Signer
from ledger.sql import SqlLedgerStore
from ledger.witness import sign_checkpoint
from templates import format_value

log = logging.getLogger("stagehold.slack.notifier")

ROOT = "root"
# Slack errors worth retrying even though the HTTP status was 200. The bot not (yet) being in the
# channel is one of them: once someone invites it, the thread arrives whole and in order.
_RETRYABLE_ERRORS = frozenset(
    {
        "ratelimited",
        "internal_error",
        "fatal_error",
        "service_unavailable",
        "request_timeout",
        "not_in_channel",
        "channel_not_found",
    }
)


# ---------------------------------------------------------------- planning (pure)


@dataclass(frozen=True)
class Reply:
    """Post this card once in the thread (``ref`` makes the post idempotent across restarts)."""

    ref: str
    card: Card


@dataclass(frozen=True)
class Refresh:
    """Post or edit the tracked message ``ref`` (``root``, ``hold:H2``, ``rollback:41``)."""

    ref: str


Step = Reply | Refresh


class Timeline:
    """Folds an execution's entries and says which Slack steps each one calls for.

    No I/O of its own: the ledger history it needs for packets and the final record is passed in.
    """

    def __init__(
        self, execution_id: str, history: Callable[[int], Sequence[Entry]], witness: Signer | None = None
    ) -> None:
        # ``history(seq)`` returns the ledger up to ``seq``; packets and the final record are built
        # from it, read only when one is due rather than kept in memory for every execution.
        self.state = State(execution_id)
        self.history = history
        self.witness = witness
        self.last_results: dict[str, list[Mapping[str, Any]]] = {}
        self.rollbacks: dict[str, RollbackState] = {}
        self._rollback_ref: str | None = None

    @property
    def seq(self) -> int:
        return self.state.seq

    def advance(self, entry: Entry, following: Entry | None, *, quiet: bool = False) -> list[Step]:
        """Fold ``entry``; return its steps (none when ``quiet``: catching up on delivered entries)."""
        before = self.state
        after = apply(before, entry)
        self.state = after
        event = ev.event_of(entry)
        self._remember(entry, event)
        steps = [] if quiet or event is None else self._steps(before, after, entry, event, following)
        if not quiet and self.witness is not None and isinstance(event, ev.Witnessed):
            steps.append(self._witnessed(entry, self.witness))
        if after.rollback is not None and self._rollback_ref is not None:
            self.rollbacks[self._rollback_ref] = after.rollback
        return steps

    def _remember(self, entry: Entry, event: ev.Event | None) -> None:
        match event:
            case (
                ev.VerificationSampled(stage=stage, results=results)
                | ev.GateChecked(stage=stage, results=results, purpose=ev.Purpose.RELEASE)
            ):
                self.last_results[stage] = list(results)
            case ev.RollbackStarted():
                self._rollback_ref = f"rollback:{entry.seq}"

    def _reply(self, entry: Entry, card: Card, n: int = 0) -> Reply:
        return Reply(f"entry:{entry.seq}:{n}", cards.marked(self.state, card))

    def _witnessed(self, entry: Entry, witness: Signer) -> Reply:
        # Ed25519 signatures are deterministic: a re-planned step after a restart posts the same note.
        note = sign_checkpoint(witness, entry.execution_id, entry.seq, entry.hash)
        text = f":lock: Signed ledger head at seq {entry.seq} ({md(entry.kind, 60)}); keep it for `stagehold ledger verify --witness`:\n```\n{note}```"
        return Reply(
            f"entry:{entry.seq}:witness",
            cards.marked(self.state, cards.notice(text, fallback=f"signed head {entry.seq}")),
        )

    def _notice(self, entry: Entry, text: str, n: int = 0) -> Reply:
        return self._reply(entry, cards.notice(text, context=slack_date(entry.ts)), n)

    def _steps(self, before: State, after: State, entry: Entry, event: ev.Event, following: Entry | None) -> list[Step]:
        who = entry.actor
        folded_into_hold = following is not None and following.kind == ev.HOLD_OPENED
        match event:
            case ev.ExecutionStarted():
                return [Refresh(ROOT)]
            case ev.ExecutionResumed(owner=owner, reconcile=rec):
                what = (
                    "nothing to reconcile"
                    if not rec
                    else f"the live state of `{md(rec.get('stage'), 80)}` "
                    + ("matches the ledger" if rec.get("matches") else "*does not match* the ledger")
                )
                return [
                    self._notice(entry, f":arrows_counterclockwise: Resumed by {code(owner, 120)}: {what}"),
                    Refresh(ROOT),
                ]
            case ev.GateChecked() as e:
                if folded_into_hold:
                    return []
                return [self._reply(entry, cards.preflight_card(e.stage, e.purpose, e.outcome, list(e.results)))]
            case ev.VerificationSampled() as e:
                # Passing samples stay out of the thread, and a hold card carries its own evidence;
                # a gap that restarted the bake is always shown.
                if not e.gap and (e.outcome == "pass" or folded_into_hold):
                    return []
                card = cards.checkpoint_card(
                    e.stage,
                    list(e.results),
                    passed=False,
                    outcome=e.outcome,
                    consecutive=e.consecutive,
                    required=e.required,
                    reaction=e.reaction,
                    gap=e.gap,
                )
                return [self._reply(entry, card)]
            case ev.StagePassed() as e:
                card = cards.checkpoint_card(
                    e.stage,
                    self.last_results.get(e.stage, []),
                    passed=True,
                    outcome="pass",
                    basis=e.basis,
                    hold=e.hold,
                    consecutive=e.consecutive,
                )
                return [self._reply(entry, card), Refresh(ROOT)]
            case ev.HoldOpened(hold=hold):
                superseded = [Refresh(f"hold:{before.open_hold}")] if before.open_hold else []
                return [*superseded, Refresh(f"hold:{hold}"), Refresh(ROOT)]
            case ev.HoldEvidenceExpired(hold=hold):
                return [Refresh(f"hold:{hold}")]
            case ev.HoldRequested(reason=reason):
                return [
                    self._notice(
                        entry,
                        f":raised_hand: {mention(who)} asked to hold: {md(reason, 600)}. "
                        "The action in flight is resolved first; the hold opens right after.",
                    )
                ]
            case ev.HoldReminded(hold=hold):
                return [self._notice(entry, f":alarm_clock: Reminder: {self._who_may_act(after, hold)}")]
            case ev.HoldEscalated() as e:
                text = (
                    f":rotating_light: Hold {md(e.hold, 20)} expired {slack_date(e.expires_at)} and stays held; "
                    f"escalating to {mentions(e.notify.get('users', ()), e.notify.get('groups', ()))}. "
                    + self._who_may_act(after, e.hold, expiry=False)
                )
                steps: list[Step] = [self._notice(entry, text)]
                packet = intervention_packet(after, self.history(entry.seq))
                if packet is not None:
                    steps.append(self._reply(entry, cards.packet_card(packet), 1))
                return [*steps, Refresh(f"hold:{e.hold}"), Refresh(ROOT)]
            case ev.ReleaseGranted() as e:
                more = "" if e.count >= e.required else f" — {e.required - e.count} more distinct releaser(s) needed"
                text = f":white_check_mark: {mention(who)} released {md(e.hold, 20)} ({e.count} of {e.required}){more}"
                return [Refresh(f"hold:{e.hold}"), self._notice(entry, text), Refresh(ROOT)]
            case ev.HoldReleased(hold=hold):
                return [Refresh(f"hold:{hold}"), Refresh(ROOT)]
            case ev.ReleaseDenied() as e:
                text = f":no_entry: Release of {md(e.hold or '?', 20)} by {mention(who)} refused: {md(e.reason, 1000)}"
                return [self._notice(entry, text)]
            case ev.RollbackDenied(reason=reason):
                return [self._notice(entry, f":no_entry: Rollback by {mention(who)} refused: {md(reason, 1000)}")]
            case ev.HoldDenied(reason=reason):
                return [self._notice(entry, f":no_entry: Hold by {mention(who)} refused: {md(reason, 1000)}")]
            case ev.ReleaseNotCarried() as e:
                return [
                    self._notice(entry, f":arrows_counterclockwise: {md(e.why, 2000)}"),
                    Refresh(f"hold:{e.hold}"),
                ]
            case ev.ActionIntended():
                return [Refresh(ROOT)]
            case ev.ActionSent() as e if e.outcome != ev.SendOutcome.OK:
                text = (
                    f":warning: {md(e.direction, 20)} `{md(e.stage, 80)}` sent: *{md(e.outcome, 20)}* "
                    f"({md(e.detail, 800)}). It is resolved by reading the target back, never by a blind retry."
                )
                return [self._notice(entry, text)]
            case ev.ActionReadBack() as e if e.matches is not True:
                if e.matches is False:
                    text = (
                        f":warning: Read-back of `{md(e.stage, 80)}` does not match: expected "
                        f"{code(e.expect, 400)}, observed {code(e.observed, 400)}"
                    )
                else:
                    text = f":warning: Read-back of `{md(e.stage, 80)}` failed: {md(e.detail, 800)}"
                return [self._notice(entry, text)]
            case ev.ActionResendIntended() as e:
                text = (
                    f":repeat: Re-sending `{md(e.stage, 80)}` once with the same idempotency key: {md(e.reason, 800)}"
                )
                return [self._notice(entry, text)]
            case ev.ActionConfirmed() as e:
                return self._confirmed(after, entry, e)
            case ev.RollbackStarted():
                closed = [Refresh(f"hold:{before.open_hold}")] if before.open_hold else []
                return [*closed, Refresh(f"rollback:{entry.seq}"), Refresh(ROOT)]
            case (
                ev.ExecutionCompleted() | ev.ExecutionRolledBack() | ev.ExecutionNeedsHuman() | ev.ExecutionAbandoned()
            ):
                return self._final(before, after, entry)
        # Repeated or stale clicks (release.ignored, hold.ignored) are answered to the clicker;
        # the ledger keeps the record. Other events change nothing people follow.
        return []

    def _confirmed(self, after: State, entry: Entry, e: ev.ActionConfirmed) -> list[Step]:
        stage = md(e.stage, 80)
        if e.direction == ev.Direction.APPLY:
            radius = after.stage_def(e.index).blast_radius if after.plan else None
            text = (
                f":large_blue_circle: `{stage}` is live (blast radius {format_value(radius)}); "
                f"read back {code(e.observed, 400)}. Verifying."
            )
            return [self._notice(entry, text), Refresh(ROOT)]
        text = f":leftwards_arrow_with_hook: `{stage}` undone and confirmed; read back {code(e.observed, 400)}"
        steps: list[Step] = [self._notice(entry, text)]
        if self._rollback_ref:
            steps.append(Refresh(self._rollback_ref))
        return [*steps, Refresh(ROOT)]

    def _final(self, before: State, after: State, entry: Entry) -> list[Step]:
        steps: list[Step] = []
        if before.open_hold:
            steps.append(Refresh(f"hold:{before.open_hold}"))
        if self._rollback_ref:
            steps.append(Refresh(self._rollback_ref))
        history = self.history(entry.seq)
        packet = intervention_packet(after, history)
        if packet is not None:
            steps.append(self._reply(entry, cards.packet_card(packet), 0))
        steps.append(self._reply(entry, cards.record_card(state_record(after, history)), 1))
        steps.append(Refresh(ROOT))
        return steps

    @staticmethod
    def _who_may_act(state: State, hold_id: str, *, expiry: bool = True) -> str:
        hold = state.holds.get(hold_id)
        if hold is None or state.package is None:
            return f"hold {md(hold_id, 20)}"
        rb = policy.rollback_authority(state)
        text = f"hold {hold.id} is waiting"
        if expiry:
            text += f" and expires {slack_date(hold.expires_at)}"
        if hold.releasable:
            text += (
                f". {mentions(hold.releasers.get('users', ()), hold.releasers.get('groups', ()))} may release "
                f"({len(hold.current_releases())} of {hold.required} so far)"
            )
        return text + f"; {mentions(rb['users'], rb['groups'])} may roll back."

    def render(self, ref: str) -> Card | None:
        """The current rendering of a tracked message (None: nothing to show for it)."""
        state = self.state
        if state.plan is None:
            return None
        if ref == ROOT:
            return cards.root_card(state)
        if ref.startswith("hold:"):
            hold_id = ref.split(":", 1)[1]
            return cards.hold_card(state, hold_id) if hold_id in state.holds else None
        if ref.startswith("rollback:"):
            rb = self.rollbacks.get(ref)
            return cards.rollback_card(state, rb) if rb is not None else None
        return None


# ---------------------------------------------------------------- delivery


@dataclass
class _Thread:
    """An execution's thread as this process knows it: the planner's timeline and what is posted."""

    timeline: Timeline
    channel: str
    root_ts: str | None
    messages: dict[str, str]
    shown: dict[str, str] = field(default_factory=dict)  # ref -> fingerprint last sent
    pending: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    generation: int = 0  # the channel lease's generation this thread was opened under


class Notifier:
    """Engine listener + planner thread + outbox. ``start()`` before use, ``stop()`` to end."""

    def __init__(
        self,
        store: SqlLedgerStore,
        client: WebClient,
        *,
        pace_s: float = 1.0,
        sweep_s: float = 30.0,
        workers: int = 2,
        backoff_base: float = 1.0,
        backoff_cap: float = 60.0,
        witness: Signer | None = None,
        owner: str | None = None,
        lease_ttl_s: float = 10.0,
        renew_s: float = 3.0,
    ) -> None:
        self.store = store
        self.witness = witness  # the bot's key: signed checkpoints at holds, stages passed and the end
        self.client = client
        self.slack = SlackStore(store.engine)
        self.sweep_s = sweep_s
        self.outbox = Outbox(pace_s=pace_s, workers=workers, backoff_base=backoff_base, backoff_cap=backoff_cap)
        self._threads: dict[str, _Thread] = {}
        self._ignored: set[str] = set()
        self._dirty: set[str] = set()
        self._dirty_lock = threading.Lock()
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._running = False
        self._planner: threading.Thread | None = None
        self._sweep_now = True
        self.channels = ChannelLeases(store.engine, owner or f"notifier:{uuid.uuid4().hex[:12]}")
        self.lease_ttl_s = lease_ttl_s
        self.renew_s = renew_s
        self._held: dict[str, float] = {}  # channel -> when its lease lapses (Unix seconds)
        self._generations: dict[str, int] = {}  # channel -> how many times this replica took it
        self._held_lock = threading.Lock()

    # ------------------------------------------------------------ engine listener

    def __call__(self, execution_id: str, entries: Sequence[Entry]) -> None:
        """Called by the engine after every append: note it and return at once."""
        with self._dirty_lock:
            self._dirty.add(execution_id)
            self._idle.clear()
        self._wake.set()

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self._running:
            return
        self._running = True
        self.outbox.start()
        self._planner = threading.Thread(target=self._plan_loop, name="stagehold-slack-planner", daemon=True)
        self._planner.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._running = False
        self._wake.set()
        if self._planner is not None:
            self._planner.join(timeout=timeout)
            self._planner = None
        self.outbox.stop(timeout=timeout)
        for channel in list(self._held):
            try:
                self.channels.release(channel)  # another replica may continue at once
            except Exception:
                log.warning("slack: channel %s not handed back; its lease lapses by itself", channel)
        self._held.clear()

    # ------------------------------------------------------------ channel leases

    def _holds(self, channel: str) -> bool:
        """True if this replica may deliver to ``channel`` now (taking its lease if it is free)."""
        with self._held_lock:
            if self._held.get(channel, 0.0) > time.time() + min(1.0, self.lease_ttl_s / 4):
                return True
        return self._take(channel)

    def _take(self, channel: str) -> bool:
        now = time.time()
        try:
            ready_at = self.channels.take(channel, now, self.lease_ttl_s)
        except Exception as exc:
            log.warning("slack: cannot take channel %s: %s", channel, type(exc).__name__)
            ready_at = None
        with self._held_lock:
            if ready_at is None:
                self._drop(channel)
                return False
            if channel not in self._held:
                self._generations[channel] = self._generations.get(channel, 0) + 1
                # Pacing carries over from whoever posted here last.
                self.outbox.hold_until(channel, max(0.0, ready_at - now))
            self._held[channel] = now + self.lease_ttl_s
        return True

    def _renew(self) -> None:
        for channel in list(self._held):
            self._take(channel)

    def _drop(self, channel: str) -> None:
        """Stop delivering to ``channel``: forget its threads; their queued steps see the new generation."""
        if self._held.pop(channel, None) is None:
            return
        self._generations[channel] = self._generations.get(channel, 0) + 1
        for execution_id in [e for e, t in self._threads.items() if t.channel == channel]:
            del self._threads[execution_id]
        log.warning("slack: no longer delivering to channel %s (lease lost)", channel)

    def _current(self, thread: _Thread) -> bool:
        with self._held_lock:
            return self._generations.get(thread.channel) == thread.generation and thread.channel in self._held

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """For tests and shutdown: wait until everything known is planned and delivered."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            planned = self._idle.wait(timeout=max(0.0, deadline - time.monotonic()))
            if planned and self.outbox.wait_empty(max(0.0, deadline - time.monotonic())):
                with self._dirty_lock:
                    if not self._dirty and self._idle.is_set():
                        return True
            time.sleep(0.01)
        return False

    def stats(self) -> dict[str, int]:
        return {
            "threads": len(self._threads),
            "queued": self.outbox.pending(),
            "delivered": self.outbox.delivered,
            "retried": self.outbox.retried,
            "dropped": self.outbox.dropped,
            "rate_limited": self.outbox.rate_limited,
        }

    # ------------------------------------------------------------ planning

    def _plan_loop(self) -> None:
        next_sweep = 0.0
        next_renew = time.monotonic() + self.renew_s
        while self._running:
            now = time.monotonic()
            if now >= next_renew:
                next_renew = now + self.renew_s
                try:
                    self._renew()
                except Exception:
                    log.exception("slack: renewing channel leases failed")
            if self._sweep_now or now >= next_sweep:
                self._sweep_now = False
                next_sweep = now + self.sweep_s
                try:
                    self._sweep()
                except Exception:
                    log.exception("slack: sweep failed; trying again at the next one")
            with self._dirty_lock:
                dirty, self._dirty = self._dirty, set()
            for execution_id in sorted(dirty):
                try:
                    self._pump(execution_id)
                except Exception:
                    log.exception("slack: planning %s failed; the next sweep retries", execution_id)
            with self._dirty_lock:
                if not self._dirty and not self._sweep_now:
                    self._idle.set()
            self._wake.wait(timeout=max(0.05, min(next_sweep, next_renew) - time.monotonic()))
            self._wake.clear()

    def _sweep(self) -> None:
        """Mark every execution with undelivered entries; forget finished, delivered threads."""
        # A closed execution without a thread finished before any bot knew of it (a command-line
        # rehearsal): it never gets one, so it is not even read (``_open`` would only ignore it).
        heads, closed = self.slack.heads_and_closed()
        known = self.slack.threads()
        marked = set()
        for execution_id, head in heads.items():
            thread = self._threads.get(execution_id)
            if thread is not None:
                if thread.timeline.seq < head:
                    marked.add(execution_id)
                elif thread.timeline.state.terminal and thread.pending == 0:
                    del self._threads[execution_id]
            elif execution_id in known:
                if known[execution_id] < head:
                    marked.add(execution_id)
            elif execution_id not in self._ignored and execution_id not in closed:
                marked.add(execution_id)
        if marked:
            with self._dirty_lock:
                self._dirty |= marked

    def _open(self, execution_id: str) -> tuple[_Thread, list[Entry]] | None:
        info = self.slack.thread(execution_id)
        if info is not None and not self._holds(info.channel):
            return None  # another replica delivers this channel's threads (checked before reading the ledger)
        entries = self.store.read(execution_id)
        started = ev.event_of(entries[0]) if entries else None
        if not isinstance(started, ev.ExecutionStarted):
            return None
        if info is None and not self._holds(started.channel):
            return None
        if info is None:
            if project(execution_id, entries).terminal:
                # It finished before this bot knew of it (e.g. a command-line rehearsal): no thread.
                self._ignored.add(execution_id)
                return None
            info = self.slack.create_thread(execution_id, started.channel)
        timeline = Timeline(execution_id, self._history(execution_id), self.witness)
        for entry in entries[: info.posted_seq]:
            timeline.advance(entry, None, quiet=True)
        thread = _Thread(timeline, info.channel, info.root_ts, self.slack.messages(execution_id))
        with self._held_lock:
            thread.generation = self._generations.get(info.channel, 0)
        self._threads[execution_id] = thread
        return thread, entries[info.posted_seq :]

    def _history(self, execution_id: str) -> Callable[[int], Sequence[Entry]]:
        def read(upto: int) -> Sequence[Entry]:
            return [e for e in self.store.read(execution_id) if e.seq <= upto]

        return read

    def _pump(self, execution_id: str) -> None:
        thread = self._threads.get(execution_id)
        if thread is None:
            if execution_id in self._ignored:
                return
            opened = self._open(execution_id)
            if opened is None:
                return
            thread, new = opened
        else:
            if not self._holds(thread.channel):
                return
            new = self.store.read(execution_id, after_seq=thread.timeline.seq)
        for i, entry in enumerate(new):
            steps = thread.timeline.advance(entry, new[i + 1] if i + 1 < len(new) else None)
            for n, step in enumerate(steps):
                self._enqueue(execution_id, thread, step, entry.seq, last=n == len(steps) - 1)

    def _enqueue(self, execution_id: str, thread: _Thread, step: Step, seq: int, *, last: bool) -> None:
        with thread.lock:
            thread.pending += 1
        # After the last step of an entry is delivered, the thread's delivered position moves to it.
        done_seq = seq if last else None

        def run() -> bool:
            if not self._current(thread):
                return False  # the channel moved to another replica: it continues from the stored position
            if isinstance(step, Reply):
                called = self._post_reply(execution_id, thread, step, seq, done_seq)
            else:
                called = self._refresh(execution_id, thread, step.ref, seq, done_seq)
            if called:
                self.channels.paced(thread.channel, time.time() + self.outbox.pace_s)
            return called

        def done(delivered: bool) -> None:
            with thread.lock:
                thread.pending -= 1

        kind = "reply" if isinstance(step, Reply) else "refresh"
        self.outbox.put(Operation(thread.channel, run, f"{execution_id} {kind} {step.ref} (seq {seq})", done))

    # ------------------------------------------------------------ Slack calls (in outbox workers)

    @staticmethod
    def _metadata(execution_id: str, ref: str, seq: int) -> dict[str, Any]:
        # Message metadata ties every message to the ledger entry that caused it.
        return {"event_type": "stagehold_entry", "event_payload": {"execution": execution_id, "ref": ref, "seq": seq}}

    def _ensure_root(self, execution_id: str, thread: _Thread, seq: int) -> str:
        if thread.root_ts is None:
            self._refresh(execution_id, thread, ROOT, seq, None)
        assert thread.root_ts is not None
        return thread.root_ts

    def _post_reply(self, execution_id: str, thread: _Thread, reply: Reply, seq: int, done_seq: int | None) -> bool:
        if reply.ref in thread.messages:
            if done_seq is not None:
                self.slack.advance(execution_id, done_seq)
            return False  # delivered before a restart
        root = self._ensure_root(execution_id, thread, seq)
        ts = self._post_once(execution_id, thread, reply.ref, reply.card, seq, root)
        thread.messages[reply.ref] = ts
        self.slack.save_message(execution_id, reply.ref, thread.channel, ts, done_seq)
        return True

    def _refresh(self, execution_id: str, thread: _Thread, ref: str, seq: int, done_seq: int | None) -> bool:
        card = thread.timeline.render(ref)
        if card is None:
            return False
        fingerprint = card.fingerprint()
        ts = thread.root_ts if ref == ROOT else thread.messages.get(ref)
        if ts is not None and thread.shown.get(ref) == fingerprint:
            if done_seq is not None:
                self.slack.advance(execution_id, done_seq)
            return False  # already showing exactly this
        if ts is None:
            root = None if ref == ROOT else self._ensure_root(execution_id, thread, seq)
            ts = self._post_once(execution_id, thread, ref, card, seq, root)
            if ref == ROOT:
                thread.root_ts = ts
                self.slack.set_root(execution_id, ts, done_seq or 0)
            else:
                thread.messages[ref] = ts
                self.slack.save_message(execution_id, ref, thread.channel, ts, done_seq)
        else:
            call_web_api(self.client.chat_update, channel=thread.channel, ts=ts, text=card.text, blocks=card.blocks)
            if done_seq is not None:
                self.slack.advance(execution_id, done_seq)
        thread.shown[ref] = fingerprint
        return True

    def _post_once(
        self, execution_id: str, thread: _Thread, ref: str, card: Card, seq: int, thread_ts: str | None
    ) -> str:
        """Post a new message at most once: intent first; an earlier intent is read back from Slack first."""
        earlier = self.slack.intent(execution_id, ref)
        if earlier is not None:
            found = find_posted(self.client, earlier, call_web_api)
            if found is not None:
                log.info("slack: %s %s was already posted (ts %s); not posting again", execution_id, ref, found)
                # It may show an older rendering than the one due now.
                call_web_api(
                    self.client.chat_update, channel=thread.channel, ts=found, text=card.text, blocks=card.blocks
                )
                return found
        else:
            self.slack.intend(execution_id, ref, thread.channel, thread_ts, time.time())
        kwargs: dict[str, Any] = {} if thread_ts is None else {"thread_ts": thread_ts}
        response = call_web_api(
            self.client.chat_postMessage,
            channel=thread.channel,
            text=card.text,
            blocks=card.blocks,
            unfurl_links=False,
            unfurl_media=False,
            metadata=self._metadata(execution_id, ref, seq),
            **kwargs,
        )
        return str(response["ts"])


def call_web_api(method: Callable[..., Any], **kwargs: Any) -> Any:
    """One Web API call, its failure sorted into Transient (retry) or Permanent (drop)."""
    try:
        return method(**kwargs)
    except SlackApiError as exc:
        response = exc.response
        status = getattr(response, "status_code", 0)
        error = response.get("error") if hasattr(response, "get") else None
        if status == 429 or error == "ratelimited":
            headers = getattr(response, "headers", {}) or {}
            retry_after = headers.get("Retry-After") or headers.get("retry-after")
            try:
                wait = float(retry_after) if retry_after is not None else 1.0
            except (TypeError, ValueError):
                wait = 1.0
            raise Transient(f"rate limited (HTTP {status})", retry_after=max(0.0, wait)) from None
        if status >= 500 or error in _RETRYABLE_ERRORS:
            raise Transient(f"Slack answered HTTP {status} {error or ''}".strip()) from None
        raise Permanent(f"Slack refused: {error or status}") from None
    except (TimeoutError, URLError, ConnectionError) as exc:
        raise Transient(f"{type(exc).__name__}: {exc}") from None
