"""Family 6: secrets — card numbers, tokens and passwords fed through every input, found nowhere.

Each trial draws a fresh corpus — card numbers (Luhn-valid, plain, spaced, dashed, as a JSON
number), IBANs, Slack tokens, bearer and basic credentials, ``password=``/``api_key`` style
assignments, passwords in URLs, private-key blocks, account numbers under the plan's sensitive
fields, and the role credentials themselves — and runs one execution against a sandbox that leaks
them everywhere a control plane can:

* signal values (text, a card-length number, a nested object) and signal errors (an HTTP 500 and
  a Prometheus error whose text carries secrets);
* the response to an action (echoing the caller's Authorization header), the document a read-back
  sees, and a rejected rollback's error body;
* the reasons people type: a manual hold and a rollback order.

The execution opens a manual hold (released), applies its stage, holds on the leaky evidence, is
ordered to roll back, and ends needing a human when the rollback is refused. Then every output is
searched for every secret: the ledger's stored rows, ``stagehold ledger export``, the state
record, the intervention packet (JSON and Markdown), every Slack card the notifier's timeline
renders (replies and tracked messages, plus the status, record and packet cards), the rehearsal
console and everything logged. Masked forms (first 6 and last 4 digits of a card, the last 4 of an
account, ``***``) are allowed; anything more is a leak.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import logging
import random
import re
import secrets
import sqlite3
import string
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bot.bootstrap import http_client
from bot.cli import main as cli_main
from bot.console import ConsolePrinter
from execution.contract import LoadedChange
from execution.model import Credentials, Role
from execution.outputs import intervention_packet, state_record
from execution.project import State
from execution.sandbox import Sandbox, _Reply
from execution.transitions import Phase
from ledger.chain import verify_chain
from ledger.sql import SqlLedgerStore
from reliability import plans, rig
from reliability.harness import FamilyResult, Recorder, Size
from templates import render

INVARIANTS = [
    "no secret unmasked in the ledger, exports, state record, packets (JSON, Markdown), Slack cards, console or logs",
    "the leaky execution still ends where it should (needs a human) with a verifying chain",
]


# ---------------------------------------------------------------- the corpus


def _luhn(prefix: str, length: int, rng: random.Random) -> str:
    digits = prefix + "".join(rng.choices(string.digits, k=length - len(prefix) - 1))
    total = 0
    for i, d in enumerate(reversed(digits)):
        n = int(d)
        if i % 2 == 0:
            n = n * 2 - 9 if n * 2 > 9 else n * 2
        total += n
    return digits + str((10 - total % 10) % 10)


def _alnum(rng: random.Random, n: int) -> str:
    return "".join(rng.choices(string.ascii_letters + string.digits, k=n))


@dataclass
class Secret:
    kind: str
    text: str  # as fed in
    needles: list[str]  # what must not appear anywhere
    digits: str = ""  # for cards: the number; its middle must not appear in any digit run
    # Free text can carry it. An account number is a secret only by where it sits (a field the
    # plan marks sensitive); in free text twelve digits are indistinguishable from any other
    # number, so it is fed under its key only.
    in_text: bool = True


@dataclass
class Corpus:
    items: list[Secret] = field(default_factory=list)
    card_number: int = 0
    account: str = ""
    tokens: dict[str, str] = field(default_factory=dict)

    def pick(self, rng: random.Random, k: int = 3) -> str:
        texts = [s.text for s in self.items if s.in_text]
        return "; ".join(rng.sample(texts, min(k, len(texts))))

    def all_text(self) -> str:
        return " | ".join(s.text for s in self.items if s.in_text)


def corpus(rng: random.Random) -> Corpus:
    c = Corpus()

    def card(prefix: str, length: int, fmt: str) -> None:
        number = _luhn(prefix, length, rng)
        if fmt == "spaced":
            shown = " ".join(number[i : i + 4] for i in range(0, len(number), 4))
        elif fmt == "dashed":
            shown = "-".join(number[i : i + 4] for i in range(0, len(number), 4))
        else:
            shown = number
        c.items.append(Secret(f"card ({fmt})", shown, [number, shown], digits=number))

    card(rng.choice(["4", "51", "55"]), 16, "plain")
    card(rng.choice(["4", "52"]), 16, "spaced")
    card(rng.choice(["4", "53"]), 16, "dashed")
    card(rng.choice(["34", "37"]), 15, "plain")
    number = _luhn("4", 16, rng)
    c.card_number = int(number)
    c.items.append(Secret("card (JSON number)", number, [number], digits=number))
    iban_digits = "".join(rng.choices(string.digits, k=18))
    iban = f"DE{rng.randint(10, 99)}{iban_digits}"
    c.items.append(Secret("IBAN", iban, [iban, iban[4:-4]]))
    slack = f"xoxb-{rng.randint(10**11, 10**12)}-{rng.randint(10**11, 10**12)}-{_alnum(rng, 24)}"
    c.items.append(Secret("Slack token", slack, [slack, slack.split("-")[-1]]))
    bearer = _alnum(rng, 32)
    c.items.append(Secret("bearer token", f"Authorization: Bearer {bearer}", [bearer]))
    basic = base64.b64encode(f"svc:{_alnum(rng, 14)}".encode()).decode()
    c.items.append(Secret("basic credential", f"authorization: Basic {basic}", [basic]))
    pw = _alnum(rng, 18)
    c.items.append(Secret("password assignment", f"password={pw}", [pw]))
    pw2 = _alnum(rng, 18)
    c.items.append(Secret("DB_PASSWORD", f"DB_PASSWORD: {pw2}", [pw2]))
    key = _alnum(rng, 24)
    c.items.append(Secret("api key (JSON text)", f'"api_key": "{key}"', [key]))
    access = _alnum(rng, 20)
    c.items.append(Secret("access token", f"access_token={access}", [access]))
    url_pw = _alnum(rng, 16)
    c.items.append(Secret("password in a URL", f"postgres://svc:{url_pw}@db.internal:5432/payments", [url_pw]))
    body = base64.b64encode(rng.randbytes(48)).decode()
    pem = f"-----BEGIN PRIVATE KEY-----\n{body}\n-----END PRIVATE KEY-----"
    c.items.append(Secret("private key", pem, [body, body[:24]]))
    c.account = "".join(rng.choices(string.digits, k=12))
    c.items.append(Secret("account number (sensitive field)", c.account, [c.account, c.account[:-4]], in_text=False))
    for role in ("executor", "rollback", "preflight", "verifier"):
        c.tokens[role] = f"cred-{role}-{secrets.token_hex(12)}"
    return c


# ---------------------------------------------------------------- the leaky control plane


class LeakySandbox(Sandbox):
    """The sandbox, except that some paths answer with the corpus in every shape they can."""

    def __init__(self, corpus: Corpus, rng: random.Random, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.corpus = corpus
        self.rng = rng

    def _respond(self, method: str, target: str, headers: Mapping[str, str], raw: bytes) -> _Reply:
        path = urlsplit(target).path
        c = self.corpus
        if path == "/leaky/signal" and method == "GET":
            return _Reply(
                200,
                {
                    "text": "note: " + c.all_text(),
                    "number": c.card_number,
                    "nested": {"token": c.tokens["verifier"], "detail": c.pick(self.rng), "pan": c.items[0].text},
                    "account_number": c.account,
                    "ok": True,
                },
            )
        if path == "/leaky/broken" and method == "GET":
            return _Reply(500, f"upstream failure: {c.all_text()}", "text/plain")
        if path == "/api/v1/query" and "leaky" in target + raw.decode(errors="replace"):
            return _Reply(422, {"status": "error", "errorType": "bad_data", "error": "query failed: " + c.all_text()})
        if path == "/leaky/doc" and method == "GET":
            doc = self.state("/leaky/doc") or {}
            return _Reply(
                200, {**doc, "debug": c.all_text(), "owner": {"pan": c.items[1].text, "iban": c.items[5].text}}
            )
        if path == "/leaky/doc":
            reply = super()._respond(method, target, headers, raw)
            body = dict(reply.body) if isinstance(reply.body, dict) else {"body": reply.body}
            body["echo"] = headers.get("authorization", "")
            body["debug"] = c.all_text()
            return _Reply(reply.status, body)
        if path == "/leaky/reject" and method == "GET":
            return _Reply(200, {"mode": "on", "why": c.all_text(), "auth_seen": c.tokens["rollback"]})
        if path == "/leaky/reject":
            return _Reply(409, f"refused for {headers.get('authorization', '')}: {c.all_text()}", "text/plain")
        return super()._respond(method, target, headers, raw)


def _plan() -> dict[str, Any]:
    plan = plans.plan("leak-drill", [], light=True)

    def http(path: str, fld: str) -> dict[str, Any]:
        return {"http": {"target": plans.TARGET, "path": path, "field": fld}, "max_age": "10m"}

    plan["signals"].update(
        {
            "leak_text": http("/leaky/signal", "text"),
            "leak_number": http("/leaky/signal", "number"),
            "leak_nested": http("/leaky/signal", "nested"),
            "leak_account": http("/leaky/signal", "account_number"),
            "leak_broken": http("/leaky/broken", "x"),
            "leak_prom": {"prometheus": {"target": "metrics", "query": "leaky_metric"}, "max_age": "10m"},
        }
    )
    stage = plans.stage(
        "s1",
        5,
        "/leaky/doc",
        {"mode": "on"},
        None,
        preflight=False,
        on={"hold": "hold", "fail": "hold", "no_data": "hold", "stale": "hold", "error": "hold"},
    )
    stage["verify"]["checks"] = [
        {"signal": name, "pass": "== 0"}
        for name in ("leak_text", "leak_number", "leak_nested", "leak_account", "leak_broken", "leak_prom")
    ]
    stage["rollback"] = {
        "action": {"http": {"target": plans.TARGET, "method": "PUT", "path": "/leaky/reject", "json": {"mode": "off"}}},
        "confirm": {"http": {"target": plans.TARGET, "path": "/leaky/reject", "expect": {"mode": "off"}}},
    }
    plan["stages"] = [stage]
    return plan


# ---------------------------------------------------------------- one trial


def _cards(entries: list[Any], store: SqlLedgerStore) -> list[tuple[str, str]]:
    from handlers import cards
    from handlers.notifier import Refresh, Reply, Timeline

    eid = entries[0].execution_id
    timeline = Timeline(eid, lambda upto: [e for e in entries if e.seq <= upto])
    out: list[tuple[str, str]] = []
    for i, entry in enumerate(entries):
        following = entries[i + 1] if i + 1 < len(entries) else None
        for step in timeline.advance(entry, following):
            if isinstance(step, Reply):
                out.append((f"Slack reply {step.ref}", step.card.fingerprint()))
            elif isinstance(step, Refresh):
                card = timeline.render(step.ref)
                if card is not None:
                    out.append((f"Slack card {step.ref}", card.fingerprint()))
    state = timeline.state
    out.append(("Slack status card", cards.status_card(state, entries[-1].hash).fingerprint()))
    out.append(("Slack record card", cards.record_card(state_record(state, entries)).fingerprint()))
    packet = intervention_packet(state, entries)
    if packet is not None:
        out.append(("Slack packet card", cards.packet_card(packet).fingerprint()))
    return out


def _drive(engine: Any, eid: str, clock: rig.Clock, until: Any) -> State:
    for _ in range(400):
        wake = engine.tick(eid)
        state: State = engine.load(eid)
        if state.terminal or state.phase == Phase.HOLDING or until(state):
            return state
        if wake is not None:
            clock.now = max(clock.now, wake)
        else:
            clock.advance(1)
    final: State = engine.load(eid)
    return final


def _trial(
    n: int, change: LoadedChange, workdir: Path, rng: random.Random, rec: Recorder, counts: dict[str, int]
) -> None:
    c = corpus(rng)
    name = f"secrets-{n:04d}"
    db = workdir / f"ledger-{n}.db"
    url = f"sqlite:///{db}"
    store = SqlLedgerStore(url)
    client = http_client(10.0)
    console = io.StringIO()
    logs = io.StringIO()
    handler = logging.StreamHandler(logs)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    sandbox = LeakySandbox(c, rng, tokens=dict(c.tokens)).start()
    creds = Credentials({Role(f"role:{k}"): v for k, v in c.tokens.items()})
    try:
        clock = rig.Clock()
        engine = rig.engine_for(
            store, sandbox.url, client, clock, credentials=creds, listeners=[ConsolePrinter(console)]
        )
        eid = f"CHG-LEAK-{n:04d}"
        engine.start(change, "U05OPS", mode="rehearsal", speed=1.0, execution_id=eid)
        reason = f"hold: {c.pick(rng, 4)}"
        engine.hold(eid, "U06SRE", reason)
        state = engine.load(eid)
        if state.hold is not None:
            engine.release(eid, state.hold.id, state.hold.evidence_version, "U01DANA")
        state = _drive(engine, eid, clock, lambda s: False)
        engine.rollback(eid, "U03RESP", f"rolling back because {c.pick(rng, 4)}")
        state = _drive(engine, eid, clock, lambda s: False)
        entries = store.read(eid)
        if state.status() != "needs_human" or not verify_chain(entries, eid).ok:
            rec.add(name, "ends as it should", f"ended {state.status()} ({state.outcome_reason or state.hold})")
        outputs: list[tuple[str, str]] = []
        with sqlite3.connect(db) as conn:
            rows = conn.execute("SELECT * FROM stagehold_ledger").fetchall()
        outputs.append(("ledger rows", "\n".join(map(str, rows))))
        export = io.StringIO()
        with contextlib.redirect_stdout(export), contextlib.redirect_stderr(export):
            cli_main(["ledger", "export", eid, "--db", url])
        outputs.append(("ledger export", export.getvalue()))
        outputs.append(("state record", json.dumps(state_record(state, entries), ensure_ascii=False)))
        packet = intervention_packet(state, entries)
        if packet is not None:
            outputs.append(("packet JSON", json.dumps(packet, ensure_ascii=False)))
            outputs.append(("packet Markdown", render("packet.md.j2", packet=packet)))
        outputs += _cards(entries, store)
        outputs.append(("console", console.getvalue()))
        outputs.append(("logs", logs.getvalue()))
        # The corpus must have reached the outputs at all (masked), or finding nothing proves nothing.
        masked_cards = [s.digits[:6] + "*" * (len(s.digits) - 10) + s.digits[-4:] for s in c.items if s.digits]
        missing = [m for m in masked_cards if m not in outputs[0][1]]
        if missing:
            rec.add(name, "ends as it should", f"masked cards {missing} never reached the ledger: nothing was tested")
        counts["outputs searched"] += len(outputs)
        counts["secrets fed"] += len(c.items) + len(c.tokens)
        for where, text in outputs:
            for found in _leaks(c, text):
                rec.add(name, "no secret unmasked", f"{found} in {where}")
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        sandbox.stop()
        client.close()
        store.close()


def _short(c: Corpus, rng: random.Random) -> str:
    """A reason a person could type on one line: two secrets, no private-key block."""
    texts = [s.text for s in c.items if s.in_text and "\n" not in s.text]
    return "rolling back: " + "; ".join(rng.sample(texts, 2))


def _slack_trial(n: int, workdir: Path, rng: random.Random, rec: Recorder, counts: dict[str, int]) -> None:
    """The same corpus through the running bot: slash commands, a rollback form, posted cards, uploads."""
    from handlers import ids
    from reliability.deliveries import INITIATOR, _Bench, _wait

    c = corpus(rng)
    name = f"secrets-slack-{n:03d}"
    logs = io.StringIO()
    handler = logging.StreamHandler(logs)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    creds = Credentials({Role(f"role:{k}"): v for k, v in c.tokens.items()})
    bench = _Bench(workdir / f"slack-{n}", LeakySandbox(c, rng, tokens=dict(c.tokens)), creds)
    try:
        change_id = f"CHG-LEAKS{n:03d}"
        plans.write_change(bench.packages / change_id.lower(), plans.package(change_id), _plan())
        engine = bench.bot.engine
        bench.post(bench.slash(f"start {change_id}", INITIATOR), int(time.time()))
        eid = _wait(lambda: engine.find(change_id), 20, "the start")[0]
        _wait(lambda: engine.load(eid).phase == Phase.HOLDING, 30, "the evidence hold")
        bench.post(bench.slash(f"hold {change_id} {_short(c, rng)}", "U06SRE"), int(time.time()))
        card, value = bench.hold_card(eid, engine.load(eid).open_hold or "H1")
        opened = len(bench.fake.calls_of("views.open"))
        bench.post(bench.click(value, "U03RESP", card, ids.ROLLBACK_ACTION), int(time.time()))
        calls = _wait(lambda: bench.fake.calls_of("views.open")[opened:], 15, "the rollback form")
        view = calls[0].params.get("view")
        view = json.loads(view) if isinstance(view, str) else dict(view or {})
        bench.post(bench.submit(view, "U03RESP", _short(c, rng)), int(time.time()))
        final = _wait(lambda: (lambda s: s if s.terminal else None)(engine.load(eid)), 30, "the end")
        if final.status() != "needs_human":
            rec.add(name, "ends as it should", f"ended {final.status()}")
        if not any(e.kind == "rollback.started" and e.actor == "U03RESP" for e in engine.entries(eid)):
            rec.add(name, "ends as it should", "the rollback form did not start the rollback: its reason went nowhere")
        bench.post(bench.slash(f"status {change_id} public", "U06SRE"), int(time.time()))
        bench.post(bench.slash(f"ledger {change_id}", "U06SRE"), int(time.time()))
        bench.bot.notifier.wait_idle(15)
        time.sleep(0.3)
        outputs = [
            ("Slack Web API calls", json.dumps([c.params for c in bench.fake.all_calls()], default=str)),
            ("Slack response_url answers", json.dumps(bench.fake.responses, default=str)),
            ("Slack uploads", "\n".join(b.decode(errors="replace") for b in bench.fake.uploads.values())),
            ("logs", logs.getvalue()),
        ]
        if not bench.fake.uploads:
            rec.add(name, "ends as it should", "the ledger export was not uploaded: nothing to search there")
        counts["outputs searched"] += len(outputs)
        counts["secrets fed"] += len(c.items) + len(c.tokens)
        counts["Slack executions"] += 1
        for where, text in outputs:
            for found in _leaks(c, text):
                rec.add(name, "no secret unmasked", f"{found} in {where}")
    except TimeoutError as exc:
        rec.add(name, "ends as it should", str(exc))
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        bench.stop()


_DIGIT_RUN = re.compile(r"\d(?:[ -]?\d)+")
# SHA-256 digests (entry hashes, plan digests) are hex; about one in five has a run of ten or more
# digits, so a card's six middle digits turn up in one by chance every few hundred runs. They are
# computed from masked data and cannot carry a secret: leave them out of the middle-digit search.
_HEX_DIGEST = re.compile(r"(?<![0-9A-Za-z])[0-9a-f]{64}(?![0-9A-Za-z])")


def _leaks(c: Corpus, text: str) -> list[str]:
    found = []
    for s in c.items:
        for needle in s.needles:
            if needle and needle in text:
                i = text.index(needle)
                found.append(f"{s.kind} {needle[:12]}… (…{text[max(0, i - 40) : i + len(needle) + 20]!r}…)")
                break
        if s.digits:
            middle = s.digits[6:-4]
            for run in _DIGIT_RUN.findall(_HEX_DIGEST.sub(" ", text)):
                if middle in re.sub(r"\D", "", run):
                    found.append(f"{s.kind}: middle digits visible in {run!r}")
                    break
    for role, token in c.tokens.items():
        if token in text:
            found.append(f"{role} credential")
    return found


class _Counts(dict[str, int]):
    def __missing__(self, key: str) -> int:
        return 0


def run(size: Size, workdir: Path) -> list[FamilyResult]:
    started = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    change = plans.write_and_load(workdir / "change", plans.package("CHG-LEAK"), _plan())
    rng = random.Random(size.seed)
    rec = Recorder()
    counts: dict[str, int] = _Counts()
    trials = size.pick(8, 100)
    for n in range(1, trials + 1):
        _trial(n, change, workdir, rng, rec, counts)
        rec.trial_done()
    for n in range(1, size.pick(1, 6) + 1):
        _slack_trial(n, workdir, rng, rec, counts)
        rec.trial_done()
    notes = [
        f"{counts['secrets fed']:,} secrets fed ({len(corpus(random.Random(0)).items)} kinds per trial plus four role "
        f"credentials), {counts['outputs searched']:,} outputs searched",
        "kinds: " + ", ".join(sorted({s.kind for s in corpus(random.Random(0)).items})) + ", role credentials",
        "inputs: signal values (text, number, nested object, sensitive field), an HTTP 500 body, a Prometheus error, "
        "an action's response echoing its Authorization header, a read-back document, a refused rollback's body, "
        "a manual hold reason, a rollback reason",
        f"{counts['Slack executions']} of the executions run through the bot itself (fake Slack, real HTTP endpoint): "
        "a /stagehold hold with secrets, a Rollback click and its form with secrets as the reason, /stagehold status "
        "public and /stagehold ledger; every Web API call, response_url answer, uploaded export and log line searched",
    ]
    return [rec.result("secrets", "Secrets", "executions", INVARIANTS, notes, size, started)]
