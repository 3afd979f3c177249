"""Signed webhooks: POST the delivery's JSON to a configured URL; `verify_signature` is what receivers check it with.

The body is the outbox row's payload plus `delivery_id`: event type, request, model, links and a
Slack-compatible `text`. Headers:

    X-Mlgate-Event      request.opened, ...
    X-Mlgate-Delivery   the delivery id: the same on every retry, so a receiver can drop repeats
    X-Mlgate-Timestamp  seconds since the epoch, when this attempt was signed
    X-Mlgate-Signature  sha256=<hex HMAC-SHA256 of f"{timestamp}.{body}" keyed with the webhook's secret>

The secret comes from the server's environment (`secret_env` names the variable). The URL itself can
be a credential (Slack's are), so errors name only its scheme and host.

The URL's host is resolved before each attempt and every address it resolves to must be public or in
`notifications.webhook_private_networks` (`domain.network_targets`); the request then goes to the
address that was checked (the name kept in `Host` and, over TLS, in SNI and the certificate check), so
a name that resolves differently a moment later cannot send it elsewhere.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

import mlgate
from mlgate.adapters.notify.base import WEBHOOK, Delivery, UndeliverableError
from mlgate.config import WebhookConfig
from mlgate.domain import network_targets
from mlgate.domain.network_targets import Network
from mlgate.errors import BackendError, ConfigError

DEFAULT_TIMEOUT = httpx.Timeout(15.0, connect=5.0)
DEFAULT_TOLERANCE_S = 300  # how old (or how far in the future) a signed timestamp a receiver accepts
SIGNATURE_PREFIX = "sha256="
MAX_ERROR_BODY = 200


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The `X-Mlgate-Signature` value for `body` sent at `timestamp`."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return SIGNATURE_PREFIX + digest


def verify_signature(
    secret: str,
    timestamp: str,
    body: bytes | str,
    header: str,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    *,
    now: float | None = None,
) -> bool:
    """Whether a received webhook is genuine: `header` is X-Mlgate-Signature, `timestamp` is
    X-Mlgate-Timestamp and `body` the raw request body, exactly as received (not re-serialized JSON).

    A timestamp further than `tolerance_s` from now is refused, so a captured request cannot be
    replayed later; within the window, drop repeats by X-Mlgate-Delivery.
    """
    try:
        sent_at = int(timestamp)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - sent_at) > tolerance_s:
        return False
    if not header.startswith(SIGNATURE_PREFIX):
        return False
    raw = body.encode() if isinstance(body, str) else body
    return hmac.compare_digest(sign(secret, timestamp, raw), header)


def encode(delivery: Delivery) -> bytes:
    """The request body: the payload and the delivery id, as compact UTF-8 JSON."""
    document = {**delivery.payload, "delivery_id": delivery.delivery_id}
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def _where(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def _secret(hook: WebhookConfig) -> str | None:
    if hook.secret_env is None:
        return None  # an unsigned hook (Slack's incoming webhooks check nothing but their URL)
    secret = os.environ.get(hook.secret_env)
    if not secret:
        raise ConfigError(
            f"webhook '{hook.name}': secret_env names {hook.secret_env}, which is not set in the server's environment"
        )
    return secret


@dataclass(frozen=True)
class Target:
    """Where an attempt goes: the URL once per checked address (in the resolver's order, tried in turn),
    the name for `Host`, and over TLS for SNI and the certificate check."""

    urls: tuple[str, ...]
    host_header: str
    sni_hostname: str | None


def _checked_addresses(hook: WebhookConfig, allowed: Sequence[Network]) -> list[network_targets.Address]:
    parts = urlsplit(hook.url)
    host = parts.hostname or ""
    try:
        found = socket.getaddrinfo(host, parts.port or 443, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise BackendError(f"webhook '{hook.name}' at {_where(hook.url)}: cannot resolve {host}: {exc}") from exc
    checked: list[network_targets.Address] = []
    for info in found:
        address = network_targets.literal(str(info[4][0]).partition("%")[0])  # an IPv6 zone id dropped
        if address is None:
            raise UndeliverableError(f"webhook '{hook.name}' refused: {host} resolves to {info[4][0]!r}")
        problem = network_targets.refusal(address, allowed)
        if problem:
            raise UndeliverableError(f"webhook '{hook.name}' refused: {host} resolves to {problem}")
        checked.append(address)
    return checked


def resolve_target(hook: WebhookConfig, allowed: Sequence[Network]) -> Target:
    """The hook's URL pinned to the addresses its host resolves to, once every one of them is allowed;
    raises UndeliverableError naming a refused address, BackendError when the name does not resolve."""
    parts = urlsplit(hook.url)
    urls = []
    for address in dict.fromkeys(_checked_addresses(hook, allowed)):
        shown = f"[{address}]" if address.version == 6 else str(address)
        urls.append(parts._replace(netloc=f"{shown}:{parts.port}" if parts.port else shown).geturl())
    sni = parts.hostname if parts.scheme == "https" else None
    return Target(tuple(urls), parts.netloc.rpartition("@")[2], sni)


def _post(client: httpx.Client, target: Target, body: bytes, headers: dict[str, str]) -> httpx.Response:
    """POST to the target's addresses in turn until one accepts the connection."""
    extensions = {"sni_hostname": target.sni_hostname} if target.sni_hostname else None
    for url in target.urls[:-1]:
        try:
            return client.post(url, content=body, headers=headers, extensions=extensions)
        except httpx.ConnectError:
            continue
    return client.post(target.urls[-1], content=body, headers=headers, extensions=extensions)


def post_webhook(
    hook: WebhookConfig, delivery: Delivery, *, client: httpx.Client, allowed: Sequence[Network] = ()
) -> None:
    """Send one delivery to an allowed address (`resolve_target`); raises BackendError unless the receiver
    answered 2xx."""
    target = resolve_target(hook, allowed)
    secret = _secret(hook)
    body = encode(delivery)
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": f"mlgate/{mlgate.__version__}",
        "X-Mlgate-Event": delivery.event,
        "X-Mlgate-Delivery": delivery.delivery_id,
        "X-Mlgate-Timestamp": timestamp,
        "Host": target.host_header,
    }
    if secret is not None:
        headers["X-Mlgate-Signature"] = sign(secret, timestamp, body)
    where = _where(hook.url)
    try:
        response = _post(client, target, body, headers)
    except httpx.HTTPError as exc:  # refused, unreachable, timed out, TLS failed
        raise BackendError(f"webhook '{hook.name}' at {where} unreachable: {type(exc).__name__}: {exc}") from exc
    if not response.is_success:  # a redirect counts as a failure too: the signed request went nowhere
        excerpt = response.text[:MAX_ERROR_BODY].strip()
        raise BackendError(
            f"webhook '{hook.name}' at {where} answered {response.status_code}" + (f": {excerpt}" if excerpt else ""),
            details={"status": response.status_code},
        )


class WebhookChannel:
    name = WEBHOOK

    def __init__(
        self,
        hooks: Sequence[WebhookConfig],
        *,
        private_networks: Sequence[str] = (),
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
    ) -> None:
        self.hooks = {hook.name: hook for hook in hooks}
        self._allowed = [network_targets.parse_network(text) for text in private_networks]
        self._timeout = timeout
        self._client: httpx.Client | None = None

    def send(self, delivery: Delivery) -> None:
        hook = self.hooks.get(delivery.recipient)
        if hook is None:
            raise UndeliverableError(
                f"no webhook named '{delivery.recipient}' in notifications.webhooks any more",
                details={"webhook": delivery.recipient},
            )
        if self._client is None:
            self._client = httpx.Client(timeout=self._timeout, follow_redirects=False)
        post_webhook(hook, delivery, client=self._client, allowed=self._allowed)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
