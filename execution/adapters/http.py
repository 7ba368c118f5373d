"""HTTP control-plane adapter: signal reads, actions with idempotency keys, and read-backs.

Rules:
* Nothing raises into the engine: transport errors, bad JSON and wrong shapes come back as data.
* A missing field is *no data* (value None, no error); a failed read is an *error*.
* An action's outcome is ``rejected`` only when the target provably did not apply it (it answered
  4xx/5xx, or the request never left); when it may have been applied (timeout or connection lost
  after sending, 502/503/504 from a gateway) the outcome is ``ambiguous``, to be resolved by read-back.
* An action is ``ok`` when its status is one the plan expects (``expect_status``, default any 2xx)
  and its JSON answer holds ``expect_answer``. A success the plan did not expect is ``ambiguous``.
* Redirects: 307/308 ask for the request to be sent elsewhere, unprocessed, so they are
  ``rejected``; any other 3xx after a write (303 "see other" is how HTML forms answer) means it was
  processed, so it is ``ambiguous`` unless listed. ``redirect: follow`` follows up to five hops,
  only on the same origin (credentials never leave it); a failure after the first answer is
  ``ambiguous``, since the first hop already reached the target. A listed redirect whose
  ``Location`` does not match ``expect_location`` is ``ambiguous``.
* Each role sends only its own credential. Every body and error text is masked before it is
  returned, and the role credentials are scrubbed from them literally as well.

The field helpers here (``select_field``, ``compare_expected``, ``parse_sample_time``) are shared
with the command adapter.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime

import httpx

from execution.adapters.transport import TargetTransport
from execution.conditions import parse_duration
from execution.contract.models import Action, Confirm, HttpAction, Signal, Target
from execution.model import JSON, ActionResult, Clock, Credentials, Evidence, ReadbackResult, Role, TargetAuth
from ledger.masking import MASK, mask

_SNIPPET = 300
# Stands for "the target answered 404" in ``_get_json`` (a document can never be this object).
_ABSENT = object()
# Status codes a gateway returns when it may already have forwarded the request upstream.
_GATEWAY_UNKNOWN = frozenset({502, 503, 504})
# "Send this request to another URI": the target did not process it here.
_RESEND_ELSEWHERE = frozenset({307, 308})
_MAX_REDIRECTS = 5


# ---------------------------------------------------------------- shared helpers


def _refuse_constant(name: str) -> JSON:
    raise ValueError(f"{name} is not a JSON number")


def loads(content: bytes | str) -> JSON:
    """Parse JSON, refusing NaN and Infinity: they have no canonical form in the ledger."""
    return json.loads(content, parse_constant=_refuse_constant)


def select_field(document: JSON, path: str) -> tuple[bool, JSON]:
    """Follow a dotted path (``a.b``, list indexes as ``items.0``); ``(False, None)`` when absent."""
    current: JSON = document
    for part in path.split("."):
        if isinstance(current, Mapping) and part in current:
            current = current[part]
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            return False, None
    return True, current


def same_value(expected: JSON, observed: JSON) -> bool:
    """Equality for read-backs: numbers compare numerically (5 == 5.0), booleans never equal numbers."""
    if isinstance(expected, bool) or isinstance(observed, bool):
        return isinstance(expected, bool) and isinstance(observed, bool) and expected is observed
    if isinstance(expected, (int, float)) and isinstance(observed, (int, float)):
        return float(expected) == float(observed)
    if isinstance(expected, Mapping) and isinstance(observed, Mapping):
        return set(expected) == set(observed) and all(same_value(expected[k], observed[k]) for k in expected)
    if isinstance(expected, list) and isinstance(observed, list):
        return len(expected) == len(observed) and all(same_value(e, o) for e, o in zip(expected, observed, strict=True))
    return bool(expected == observed)


def _as_is(key: str, value: JSON) -> JSON:
    return value


def compare_expected(
    expect: Mapping[str, JSON], observed: JSON, show: Callable[[str, JSON], JSON] = _as_is
) -> list[str]:
    """Every key of ``expect`` (dotted paths allowed) that the observed document does not match.

    ``show(key, value)`` renders values in the descriptions (the adapters pass a masker).
    """
    problems = []
    for key, want in expect.items():
        found, got = select_field(observed, key)
        if not found:
            problems.append(f"{key}: expected {show(key, want)!r}, missing")
        elif not same_value(want, got):
            problems.append(f"{key}: expected {show(key, want)!r}, observed {show(key, got)!r}")
    return problems


def parse_sample_time(raw: JSON) -> datetime:
    """A source timestamp: unix seconds (number or numeric text) or ISO-8601 with a time zone.

    Raises ValueError otherwise: a time that has to be guessed could make stale data look fresh.
    """
    if isinstance(raw, bool):
        raise ValueError("a boolean is not a time")
    if isinstance(raw, str):
        try:
            raw = float(raw)
        except ValueError:
            parsed = datetime.fromisoformat(raw.strip())
            if parsed.tzinfo is None:
                raise ValueError(f"time {raw!r} has no time zone") from None
            return parsed.astimezone(UTC)
    if isinstance(raw, (int, float)) and math.isfinite(raw):
        return datetime.fromtimestamp(raw, UTC)
    raise ValueError(f"{raw!r} is not a time")


def as_count(raw: JSON) -> int | None:
    """A sample count: an integer, or a float with no fractional part; None when it is neither."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float) and raw.is_integer():
        return int(raw)
    return None


class Masker:
    """Masks bodies and texts, and scrubs the known credentials from them literally."""

    def __init__(self, credentials: Credentials, sensitive_fields: Iterable[str] = ()) -> None:
        secrets = {s for s in credentials.secrets() if len(s) >= 4}
        secrets |= {basic_token(a) for a in credentials.targets.values() if a.username is not None}
        self._secrets = sorted(secrets, key=len, reverse=True)
        self._sensitive = tuple(sensitive_fields)

    def _scrub(self, value: JSON) -> JSON:
        if isinstance(value, str):
            for secret in self._secrets:
                value = value.replace(secret, MASK)
            return value
        if isinstance(value, Mapping):
            return {k: self._scrub(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self._scrub(v) for v in value]
        return value

    def body(self, value: JSON) -> JSON:
        return mask(self._scrub(value), self._sensitive)

    def text(self, value: str, limit: int = _SNIPPET) -> str:
        text = str(mask(self._scrub(value), self._sensitive))
        return text if len(text) <= limit else text[:limit] + "…"

    def field(self, key: str, value: JSON) -> JSON:
        """A value masked as if it sat under its own key (``a.token`` → under ``token``)."""
        last = key.rsplit(".", 1)[-1]
        return self.body({last: value})[last]

    def value(self, value: JSON, field: str | None = None) -> JSON:
        """A signal's value read from ``field`` of a document.

        A field that is itself sensitive (a secret name, an account number, a field the plan marks
        sensitive) is masked as it would be inside its document, whatever its type: the value read
        from ``account_number`` is that account number, and reading it out of its document must
        not strip the key that says so. Otherwise numbers stay numbers (mask() would turn a
        13-digit count into text) and strings and structures are masked.
        """
        if field is not None and self._is_sensitive(field):
            return self.field(field, value)
        if isinstance(value, (str, Mapping, list)):
            return self.body(value)
        return value

    def _is_sensitive(self, field: str) -> bool:
        last = field.rsplit(".", 1)[-1]
        probe = "sensitive-probe"
        return bool(self.body({last: probe})[last] != probe)


def basic_token(auth: TargetAuth) -> str:
    """The base64 text of HTTP basic auth (RFC 7617) for a target's username and password."""
    raw = f"{auth.username or ''}:{auth.password or ''}".encode()
    return base64.b64encode(raw).decode("ascii")


def role_name(role: Role) -> str:
    return role.value.removeprefix("role:")


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# ---------------------------------------------------------------- the adapter


class TargetClient:
    """What every HTTP-speaking adapter shares: target URLs from the change package; headers
    carrying the role's own credential (never another role's) or the target's own auth from
    settings; the package's non-secret headers; and a client with the target's TLS settings.

    Rules: a target's auth from settings (bearer or basic) replaces the role credential for that
    target; its secret headers are added after the package's headers and win on the same name;
    ``X-Stagehold-Role`` and ``Idempotency-Key`` are always stagehold's own.
    """

    def __init__(
        self,
        targets: Mapping[str, Target],
        credentials: Credentials,
        client: httpx.Client,
        clock: Clock,
        *,
        read_timeout_s: float = 10.0,
        sensitive_fields: Iterable[str] = (),
    ) -> None:
        self._targets = targets
        self._credentials = credentials
        self._client = client
        self._clock = clock
        self._read_timeout_s = read_timeout_s
        self._mask = Masker(credentials, sensitive_fields)

    def _url(self, target: str, path: str) -> str:
        spec = self._targets.get(target)
        if spec is None or spec.url is None:
            raise LookupError(f"target {target!r} is not in the change package or has no url")
        return spec.url.rstrip("/") + path

    def _client_for(self, target: str) -> httpx.Client:
        """The shared client, or one configured with this target's TLS files."""
        auth = self._credentials.for_target(target)
        tls = auth.tls if auth is not None else None
        if tls is None:
            return self._client
        if not isinstance(self._client, TargetTransport):
            raise LookupError(f"target {target!r} has TLS settings but the client cannot apply them")
        return self._client.with_tls(*tls)

    def _headers(self, role: Role, idempotency_key: str | None = None, target: str | None = None) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        spec = self._targets.get(target) if target is not None else None
        if spec is not None:
            headers.update(spec.headers)
        auth = self._credentials.for_target(target) if target is not None else None
        credential = self._credentials.for_role(role)
        if auth is not None and auth.bearer:
            headers["Authorization"] = f"Bearer {auth.bearer}"
        elif auth is not None and auth.username is not None:
            headers["Authorization"] = f"Basic {basic_token(auth)}"
        elif credential:
            headers["Authorization"] = f"Bearer {credential}"
        if auth is not None:
            headers.update(auth.headers)
        headers["X-Stagehold-Role"] = role_name(role)
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        return headers

    def _timeout(self, duration: str | None) -> float:
        return parse_duration(duration) if duration is not None else self._read_timeout_s


class HttpTargets(TargetClient):
    """Reads, actions and read-backs against HTTP targets named in the change package."""

    def _get_json(
        self,
        target: str,
        path: str,
        role: Role,
        timeout_s: float,
        *,
        absent: JSON = None,
        extra_headers: Mapping[str, str] | None = None,
    ) -> tuple[JSON, str | None]:
        """GET a JSON document: ``(document, None)`` or ``(None, masked error text)``.

        With ``absent`` given, a 404 answers ``(absent, None)``: the target read fine and says
        the document does not exist.
        """
        try:
            url = self._url(target, path)
            client = self._client_for(target)
            headers = {**self._headers(role, target=target), **(extra_headers or {})}
            response = client.get(url, headers=headers, timeout=timeout_s)
        except LookupError as exc:
            return None, self._mask.text(str(exc))
        except Exception as exc:
            return None, self._mask.text(f"GET {target} {path} failed: {_describe(exc)}")
        if absent is not None and response.status_code == 404:
            return absent, None
        if not response.is_success:
            snippet = self._mask.text(response.text)
            return None, f"GET {target} {path} answered HTTP {response.status_code}: {snippet}"
        try:
            return loads(response.content), None
        except ValueError:
            return None, self._mask.text(f"GET {target} {path} did not answer JSON: {response.text}")

    def read(self, name: str, signal: Signal, role: Role) -> Evidence:
        spec = signal.http
        if spec is None:
            return Evidence(name, None, None, "http", error="not an http signal")
        source = self._mask.text(f"http {spec.target} {spec.path} {spec.field}")
        try:
            document, error = self._get_json(spec.target, spec.path, role, self._timeout(spec.timeout))
            now = self._clock()
            if error is not None:
                return Evidence(name, None, None, source, error=error)
            found, value = select_field(document, spec.field)
            if not found:
                return Evidence(name, None, None, source)
            samples: int | None = None
            if spec.samples_field is not None:
                has_samples, raw = select_field(document, spec.samples_field)
                if has_samples:
                    samples = as_count(raw)
                    if samples is None:
                        error = f"samples field {spec.samples_field!r} is not an integer: {raw!r}"
                        return Evidence(name, None, None, source, error=self._mask.text(error))
            sampled_at = now
            if spec.time_field is not None:
                has_time, raw_time = select_field(document, spec.time_field)
                if not has_time:
                    # Without its time the value cannot be judged fresh: no data, not a pass.
                    return Evidence(name, None, None, source, samples=samples)
                try:
                    sampled_at = parse_sample_time(raw_time)
                except (ValueError, OverflowError, OSError) as exc:
                    error = f"time field {spec.time_field!r}: {exc}"
                    return Evidence(name, None, None, source, error=self._mask.text(error))
            return Evidence(name, self._mask.value(value, spec.field), sampled_at, source, samples=samples)
        except Exception as exc:
            return Evidence(name, None, None, source, error=self._mask.text(f"read failed: {_describe(exc)}"))

    def apply(self, action: Action, idempotency_key: str, role: Role, timeout_s: float) -> ActionResult:
        spec = action.http
        if spec is None:
            return ActionResult("rejected", "not an http action; nothing was sent")
        what = f"{spec.method} {spec.target} {spec.path}"
        try:
            client = self._client_for(spec.target)
            headers = {**self._headers(role, idempotency_key, spec.target), **spec.headers}
            body: dict[str, object] = {"data": spec.form} if spec.form is not None else {"json": spec.json_body}
            request = client.build_request(
                spec.method,
                self._url(spec.target, spec.path),
                headers=headers,
                timeout=timeout_s,
                **body,  # type: ignore[arg-type]
            )
        except Exception as exc:
            return ActionResult("rejected", self._mask.text(f"{what} was not sent: {_describe(exc)}"))
        try:
            response = client.send(request)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            detail = f"{what} was not sent: could not reach the target ({_describe(exc)})"
            return ActionResult("rejected", self._mask.text(detail))
        except (httpx.UnsupportedProtocol, httpx.LocalProtocolError) as exc:
            return ActionResult("rejected", self._mask.text(f"{what} was not sent: {_describe(exc)}"))
        except Exception as exc:
            # Sent, or possibly sent, with no answer: only a read-back can tell.
            detail = f"{what} sent, no answer: {_describe(exc)}; outcome unknown"
            return ActionResult("ambiguous", self._mask.text(detail))
        if spec.redirect == "follow":
            try:
                response = self._follow(response, client)
            except Exception as exc:
                detail = f"{what} answered HTTP {response.status_code}; following its redirect failed: {_describe(exc)}"
                return ActionResult("ambiguous", self._mask.text(detail + "; outcome unknown"), response.status_code)
        return self._classify(what, response, spec)

    def _follow(self, response: httpx.Response, client: httpx.Client) -> httpx.Response:
        """Follow same-origin redirects (httpx builds each next request: 303 becomes a GET)."""
        for _ in range(_MAX_REDIRECTS):
            following = response.next_request
            if following is None or _origin(following.url) != _origin(response.request.url):
                return response
            response.close()
            response = client.send(following)
        return response

    def _classify(self, what: str, response: httpx.Response, spec: HttpAction) -> ActionResult:
        status = response.status_code
        try:
            document: JSON = loads(response.content)
            parsed = True
        except ValueError:
            document, parsed = None, False
        body: JSON = self._mask.body(document) if parsed else (self._mask.text(response.text, 2000) or None)
        expected = status in spec.expect_status if spec.expect_status is not None else response.is_success
        if expected:
            location = response.headers.get("location", "")
            pattern = spec.expect_location
            if pattern is not None and 300 <= status < 400 and not re.search(pattern, location):
                where = self._mask.text(location or "(no Location)")
                detail = f"{what} answered HTTP {status} to {where}, which does not match {pattern!r}"
                return ActionResult("ambiguous", detail + "; outcome unknown", status, body)
            if spec.expect_answer:
                problems = (
                    compare_expected(spec.expect_answer, document, self._mask.field)
                    if parsed
                    else ["the answer is not JSON"]
                )
                if problems:
                    detail = f"{what} answered HTTP {status}, but not that it applied: {'; '.join(problems)}"
                    return ActionResult("ambiguous", self._mask.text(detail + "; outcome unknown", 2000), status, body)
            return ActionResult("ok", f"{what} answered HTTP {status}", status, body)
        snippet = self._mask.text(response.text)
        if response.is_redirect:
            where = self._mask.text(response.headers.get("location", "(no Location)"))
            if status in _RESEND_ELSEWHERE:
                detail = f"{what} answered HTTP {status} to {where}: sent elsewhere, not processed here"
                return ActionResult("rejected", detail, status, body)
            detail = f"{what} answered HTTP {status} to {where}: a redirect after a write; outcome unknown"
            return ActionResult("ambiguous", detail, status, body)
        if status in _GATEWAY_UNKNOWN:
            detail = f"{what} answered HTTP {status} from a gateway; it may have been applied: {snippet}"
            return ActionResult("ambiguous", detail, status, body)
        if response.is_success:
            listed = ", ".join(str(c) for c in spec.expect_status or ())
            detail = f"{what} answered HTTP {status}, not one of the expected {listed}; outcome unknown"
            return ActionResult("ambiguous", detail, status, body)
        return ActionResult("rejected", f"{what} refused with HTTP {status}: {snippet}", status, body)

    def read_back(self, confirm: Confirm, role: Role, timeout_s: float) -> ReadbackResult:
        spec = confirm.http
        if spec is None:
            return ReadbackResult(None, None, "not an http read-back")
        try:
            # A 404 for the document an action writes is a definite answer — the action has not
            # created it — not a failed read. Treating it as unreadable held every resume whose
            # first action creates a document and was interrupted before it was sent, though a
            # re-send under the same key is exactly what resolves that case.
            document, error = self._get_json(
                spec.target, spec.path, role, timeout_s, absent=_ABSENT, extra_headers=spec.headers
            )
            if error is not None:
                return ReadbackResult(None, None, error)
            if document is _ABSENT:
                detail = self._mask.text(
                    f"{spec.target} {spec.path}: not found (HTTP 404): the document does not exist"
                )
                return ReadbackResult(False, None, detail)
            observed = self._mask.body(document)
            problems = compare_expected(spec.expect, document, self._mask.field)
            if problems:
                detail = self._mask.text(f"{spec.target} {spec.path}: " + "; ".join(problems), limit=2000)
                return ReadbackResult(False, observed, detail)
            return ReadbackResult(True, observed, f"{spec.target} {spec.path} matches {len(spec.expect)} field(s)")
        except Exception as exc:
            return ReadbackResult(None, None, self._mask.text(f"read-back failed: {_describe(exc)}"))
