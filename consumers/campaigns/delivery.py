"""POST one action to its webhook, retrying with exponential backoff and jitter (tenacity).

Retried: connection errors, timeouts, 5xx, 408, 425 and 429 - things that pass. Not retried:
other 4xx and redirects, which a retry cannot fix (a wrong URL, a rejected signature); they
fail at once so the dead-letter topic shows the real reason without a wait.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from consumers.campaigns.actions import Action
from consumers.campaigns.rules import Webhook
from stream.redaction import redact_urls

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({408, 425, 429})


@dataclass(frozen=True, slots=True)
class Delivered:
    attempts: int
    status: int


@dataclass(frozen=True, slots=True)
class Failed:
    attempts: int
    reason: str  # one line, for the dead-letter record


DeliveryResult = Delivered | Failed


class _Transient(Exception):
    """Worth another attempt."""


class _Final(Exception):
    """A retry would get the same answer."""


async def _post_once(client: httpx.AsyncClient, action: Action, hook: Webhook) -> int:
    try:
        response = await client.post(
            hook.url,
            content=action.body,
            headers=dict(action.headers(hook.secret)),
            timeout=hook.timeout_s,
        )
    except httpx.TimeoutException as exc:
        raise _Transient(f"timed out after {hook.timeout_s:g}s ({type(exc).__name__})") from None
    except httpx.TransportError as exc:
        # the message may quote the URL, credentials and query included
        raise _Transient(f"{type(exc).__name__}: {redact_urls(str(exc))[:160]}") from None
    code = response.status_code
    if 200 <= code < 300:
        return code
    if code >= 500 or code in RETRY_STATUSES:
        raise _Transient(f"HTTP {code}")
    raise _Final(f"HTTP {code} (not retried)")


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    log.info("webhook attempt %d failed (%s); retrying", state.attempt_number, exc)


async def deliver(client: httpx.AsyncClient, action: Action, hook: Webhook) -> DeliveryResult:
    """Every attempt sends the same bytes and headers; the outcome says how many were made."""
    retrying = AsyncRetrying(
        stop=stop_after_attempt(hook.retries + 1),
        wait=wait_exponential_jitter(
            initial=hook.backoff_s, max=hook.max_backoff_s, jitter=hook.backoff_s
        ),
        retry=retry_if_exception_type(_Transient),
        before_sleep=_log_retry,
        reraise=True,
    )
    attempts = 0
    try:
        async for attempt in retrying:
            with attempt:
                attempts = attempt.retry_state.attempt_number
                status = await _post_once(client, action, hook)
    except (_Transient, _Final) as exc:
        return Failed(attempts, f"{exc} after {attempts} attempt{'s' if attempts > 1 else ''}")
    return Delivered(attempts, status)
