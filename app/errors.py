"""The bridge's errors: what went wrong, in words a caller understands, independent of any dialect.

Fronts turn these into their dialect (SMSMobileAPI JSON error, SOAP Fault); backends raise them.

    BridgeError
    ├── CallerError                 the request itself is wrong: REST 400, SOAP Client.*
    │   ├── MissingParameter
    │   ├── InvalidParameter
    │   ├── InvalidRecipient
    │   ├── MessageTooLong
    │   ├── UnsupportedByBackend
    │   ├── BodyTooLarge            REST 413
    │   ├── UriTooLong              REST 414
    │   ├── MalformedBody           REST 400: a body whose chunked framing is broken, or cut short
    │   ├── UnknownMessage          REST 404
    │   ├── UnknownDevice           REST 404
    │   ├── NotResendable           REST 409: the message is not in an error state
    │   ├── SyncRequired            REST 409: WhatsApp messages are read after a synchronisation
    │   ├── IdempotencyKeyReused    REST 422: the key came before with other parameters
    │   ├── IdempotencyInFlight     REST 409: the first request with the key has not finished
    │   └── ResendInFlight          REST 409: another resend of the message is under way
    ├── CredentialRefused           the key is unknown or refused: REST 403, SOAP Client.KeyRefused
    ├── NotAllowed                  the key is valid but may not do this: REST 403, SOAP Client.NotAllowed
    ├── RateLimited                 too many requests: REST 429 + Retry-After, SOAP Client.RateLimited
    │   └── UpstreamRateLimited     the backend's own limit
    ├── StorageUnavailable          its own storage failed (locked, disk full): REST 503, nothing sent
    ├── IdempotencyOutcomeUnknown   REST 409: the first request with the key died; check its reference
    └── BackendError                the backend's trouble, not the caller's: SOAP Server.*
        ├── NoDeviceAvailable       no phone can send now (the vendor answers 200)
        ├── BackendUnreachable      nothing reached the backend (refused): safe to try again
        │   ├── BackendDnsFailure       its host name did not resolve
        │   ├── BackendConnectTimeout   it did not accept a connection in time
        │   └── BackendTlsFailure       the TLS handshake failed
        ├── BackendTimeout          it did not answer in time: outcome unknown
        ├── BackendConnectionLost   the connection broke mid-call: outcome unknown
        ├── BackendFailed           it answered with a server error
        └── BackendBadAnswer        it answered JSON of a shape the bridge does not know
            └── BackendBadJson          it answered something that is not JSON, or JSON cut short
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.vocabulary import UpstreamReply


class BridgeError(Exception):
    """Base of every error the bridge reports to a caller."""

    #: stable number in `result.error`; never 0, which means success
    code: int = 1
    #: stable name in `result.error_code` and in SOAP fault codes
    name: str = "error"
    http_status: int = 400
    fault_prefix: str = "Client"
    retry_after: int | None = None
    #: True when the error provably came before anything reached a backend
    nothing_sent: bool = True

    def __init__(self, note: str, *, reference: str | None = None) -> None:
        super().__init__(note)
        self.note = note
        #: an id the caller can use to check the outcome later, when there is one
        self.reference = reference
        #: the upstream's own answer, for a passthrough front to return unchanged
        self.verbatim: UpstreamReply | None = None

    @property
    def fault_code(self) -> str:
        """SOAP 1.1 fault code, `Client.*` or `Server.*`."""
        return f"{self.fault_prefix}.{_camel(self.name)}"


class CallerError(BridgeError):
    """The request is wrong; sending it again unchanged will fail again."""


class MissingParameter(CallerError):
    code, name = 10, "missing_parameter"


class InvalidParameter(CallerError):
    code, name = 11, "invalid_parameter"


class InvalidRecipient(CallerError):
    code, name = 12, "invalid_recipient"


class MessageTooLong(CallerError):
    code, name = 13, "message_too_long"


class UnsupportedByBackend(CallerError):
    code, name = 14, "unsupported_by_backend"


class BodyTooLarge(CallerError):
    code, name, http_status = 15, "body_too_large", 413


class UriTooLong(CallerError):
    code, name, http_status = 24, "uri_too_long", 414


class MalformedBody(CallerError):
    """The body could not be read: its chunked framing is broken, or the client stopped sending it."""

    code, name = 26, "malformed_body"


class UnknownMessage(CallerError):
    code, name, http_status = 16, "unknown_message", 404


class UnknownDevice(CallerError):
    code, name, http_status = 17, "unknown_device", 404


class NotResendable(CallerError):
    code, name, http_status = 18, "not_resendable", 409


class SyncRequired(CallerError):
    code, name, http_status = 19, "sync_required", 409


class IdempotencyKeyReused(CallerError):
    code, name, http_status = 22, "idempotency_key_reused", 422


class IdempotencyInFlight(CallerError):
    code, name, http_status = 23, "idempotency_in_flight", 409


class ResendInFlight(CallerError):
    code, name, http_status = 25, "resend_in_flight", 409


class StorageUnavailable(BridgeError):
    """The bridge's own storage (a locked database, a full disk) failed before anything was sent: retry."""

    code, name, http_status = 42, "storage_unavailable", 503
    fault_prefix = "Server"
    retry_after = 1

    def __init__(self, note: str, *, trouble: str | None = None) -> None:
        super().__init__(note)
        #: what went wrong in a few words (no path, no data), for a log line; the note when not given
        self.trouble = trouble or note


class IdempotencyOutcomeUnknown(BridgeError):
    """The first request with the key stopped (its worker died) before its answer was kept.

    It may have sent: it is never sent again under this key. `reference` (the key, which mobsms
    also keeps as the message's my_id) is how to find out.
    """

    code, name, http_status = 43, "idempotency_outcome_unknown", 409
    fault_prefix = "Server"
    nothing_sent = False
    outcome_unknown = True


class CredentialRefused(BridgeError):
    code, name, http_status = 20, "key_refused", 403


class NotAllowed(BridgeError):
    code, name, http_status = 21, "not_allowed", 403


class RateLimited(BridgeError):
    """Too many requests: the bridge's limit for this client."""

    code, name, http_status = 29, "rate_limited", 429

    def __init__(self, note: str, *, retry_after: int | None = None) -> None:
        super().__init__(note)
        self.retry_after = retry_after


class UpstreamRateLimited(RateLimited):
    """Too many requests: the upstream's own limit."""


class BackendError(BridgeError):
    """The backend's trouble, not the caller's."""

    fault_prefix = "Server"
    http_status = 502
    #: True when the request provably never reached the backend, so that trying again (or another
    #: backend) cannot send an SMS twice
    nothing_sent: bool = False
    #: True when the backend may have acted on the request: the caller must check before repeating it
    outcome_unknown = False


class NoDeviceAvailable(BackendError):
    code, name, http_status = 30, "no_device_available", 200
    nothing_sent = True


class BackendUnreachable(BackendError):
    code, name = 31, "backend_unreachable"
    nothing_sent = True


class BackendDnsFailure(BackendUnreachable):
    code, name = 36, "backend_dns_failure"


class BackendConnectTimeout(BackendUnreachable):
    code, name = 37, "backend_connect_timeout"


class BackendTlsFailure(BackendUnreachable):
    code, name = 38, "backend_tls_failure"


class BackendTimeout(BackendError):
    code, name, http_status = 32, "backend_timeout", 504
    outcome_unknown = True


class BackendConnectionLost(BackendError):
    code, name = 35, "backend_connection_lost"
    outcome_unknown = True


class BackendFailed(BackendError):
    code, name = 33, "backend_failed"
    # A 5xx can come from a proxy after the request went through: the message may have been queued.
    outcome_unknown = True


class BackendBadAnswer(BackendError):
    code, name = 39, "backend_unexpected_answer"
    outcome_unknown = True


class BackendBadJson(BackendBadAnswer):
    code, name = 34, "backend_bad_json"


def _camel(snake: str) -> str:
    return "".join(part.capitalize() for part in snake.split("_"))
