"""What the web inbox and the operator console (app/fronts/inbox/) read and make happen.

The inbox reads the sandbox's store across accounts (every message the sandbox accepted, whoever sent
it) and acts for an account through the sandbox backend's own capabilities (`simulate_inbound`,
`simulate_failure`, `resend`), as the sandbox console does for a caller, with a `StoredAccount`: the
account named by its digest, since the inbox never holds a key. Events go to the account's client's
webhook through `Runtime.emit`, as the console's do.

The console reads what the runtime holds: the backends and their circuit state, the webhook outbox's
counts and dead events (with replay). It never reads message text or numbers.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from app import state
from app.access.resolution import Access, ClientEntry
from app.backends import Backend
from app.backends.sandbox import StoredAccount, account_of
from app.errors import UnknownMessage
from app.service import phone_events
from app.service.bridge import Runtime
from app.state.base import Record
from app.state.sandbox import SandboxStore, Via
from app.vocabulary import CredentialSource, ReceivedSms, SentSms

#: how many messages a page lists at most
PAGE = 200
#: how many dead events the console lists at most (the oldest; their count is shown whole)
DEAD_PAGE = 100


@dataclass(frozen=True)
class MessageRow:
    """A sent message as the inbox lists it."""

    guid: str
    account: str
    client: str
    recipient: str
    text: str
    status: str
    device: str
    channel: str
    schedule: int | None
    created_at: int
    sent_at: int | None
    error: str
    attempts: int
    delivered_at: int | None = None


@dataclass(frozen=True)
class ReceivedRow:
    """A received message (a phone's reply) as the inbox lists it."""

    guid: str
    account: str
    client: str
    number: str
    text: str
    channel: str
    device: str
    received_at: int
    alias: str | None


class Inbox:
    """The sandbox's messages for the web inbox, and what its buttons do."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._store: SandboxStore | None = None
        #: {account: client name} and the clients it was made from (remade when the clients file changes)
        self._clients: tuple[list[ClientEntry], dict[str, str]] = ([], {})

    # --- reading -------------------------------------------------------------------------------------

    @property
    def sandbox(self) -> Backend | None:
        """Return the backend that simulates (the sandbox), if any is in use."""
        return next((b for b in self.runtime.backends_in_use() if b.simulates), None)

    @property
    def store(self) -> SandboxStore:
        if self._store is None:
            self._store = state.sandbox_store(self.runtime.settings)
        return self._store

    def messages(
        self, search: str = "", status: str = "", channel: str = "", limit: int = PAGE
    ) -> list[MessageRow]:
        """Return sent messages of every account, newest first, as the filters say."""
        via: Via | None = "sms" if channel == "sms" else "whatsapp" if channel == "whatsapp" else None
        rows = self.store.inbox(search=search.strip(), status=status or None, via=via, limit=limit)
        return [self._message_row(r) for r in rows]

    def received(self, search: str = "", limit: int = PAGE) -> list[ReceivedRow]:
        """Return received messages of every account, newest first."""
        return [
            ReceivedRow(
                guid=r["guid"],
                account=r["account"],
                client=self.client_of(r["account"]),
                number=r["number"],
                text=r["message"],
                channel=r["channel"],
                device=r["device"],
                received_at=r["received_at"],
                alias=r["alias"],
            )
            for r in self.store.inbox_received(search=search.strip(), limit=limit)
        ]

    def message(self, guid: str) -> MessageRow:
        """Return the sent message `guid`, or raise UnknownMessage."""
        record = self.store.sent_message(guid)
        if record is None:
            raise UnknownMessage(f"no sent message has the guid {guid!r}")
        return self._message_row(record)

    def deliveries(self, guid: str) -> list[dict[str, Any]]:
        """Return the webhook events about message `guid`: type, status, attempts, last answer."""
        return [
            {
                "id": e["id"],
                "type": e["type"],
                "client": e["client"],
                "status": e["status"],
                "attempts": e["attempts"],
                "last_error": e["last_error"] or "",
                "created_at": e["created_at"],
                "delivered_at": e["delivered_at"],
            }
            for e in self.runtime.events.about(guid)
        ]

    def sent_log(self, account: str) -> list[SentSms]:
        """Return the account's SMS sent log, as /get_sent_sms/ would (for the phone view)."""
        return self._backend().sent_log(self._as(account))

    def received_sms(self, account: str) -> list[ReceivedSms]:
        """Return the account's received SMS, as /getsms/ would (for the phone view)."""
        return self._backend().received(self._as(account))

    def whatsapp_from(self, account: str, number: str) -> list[Record]:
        """Return the WhatsApp messages the account received from `number`, newest first."""
        return [r for r in self.store.received(account, "whatsapp") if r["number"] == number]

    def extras(self, account: str) -> dict[str, list[dict[str, Any]]]:
        """Return the account's simulated calls, notifications and sandbox e-mail, newest first."""
        store = self.store
        calls = [dict(r) for d in ("missed", "incoming", "outgoing") for r in store.calls(account, d)]
        calls.sort(key=lambda c: c["at"], reverse=True)
        emails = [dict(r) for folder in ("INBOX", "Sent") for r in store.emails(account, "", folder)]
        emails.sort(key=lambda e: e["at"], reverse=True)
        return {
            "calls": calls,
            "notifications": [dict(r) for r in store.notifications(account)],
            "emails": emails,
        }

    def client_of(self, account: str) -> str:
        """Return who sends with the account: a managed client's name, else its key's fingerprint.

        A managed client's account is the one of its upstream key or, when its failover backend is the
        sandbox, of the credential its sends fail over with (as app.access.resolution gives it). The map
        is made once per version of the clients file, not per message listed.
        """
        access = self.runtime.access
        if not access.managed:
            return account[:12]
        entries = _client_entries(access)
        made_from, accounts = self._clients
        if entries != made_from:  # compares the entries themselves first: cheap while the file is the same
            accounts = _accounts_of(entries)
            self._clients = (entries, accounts)
        return accounts.get(account) or account[:12]

    # --- what the buttons make happen ----------------------------------------------------------------

    def reply(
        self, account: str, number: str, text: str, channel: str = "sms", device: str = ""
    ) -> ReceivedSms:
        """Make the account's phone receive `text` from `number` (the recipient replying), then its event."""
        received = self._backend().simulate_inbound(
            self._as(account), number, text, device=device, channel=channel or "sms"
        )
        phone_events.received(self.runtime, self.client_of(account), received, channel)
        return received

    def fail(self, guid: str, error: str = "failed", where: str = "mobile") -> SentSms:
        """Make a sent message fail, then its event, as POST /sandbox/fail does."""
        message = self.message(guid)
        sms = self._backend().simulate_failure(self._as(message.account), guid, error or "failed", where)
        phone_events.failed(self.runtime, message.client, sms)
        return sms

    def deliver(self, guid: str) -> SentSms:
        """Make a sent message delivered, then its event, as POST /sandbox/deliver does."""
        message = self.message(guid)
        sms = self._backend().simulate_delivery(self._as(message.account), guid)
        phone_events.delivered(self.runtime, message.client, sms)
        return sms

    def resend(self, guid: str) -> int:
        """Resend a failed message, as /resend/ (or /WhatsappResend/) does; return its attempt."""
        message = self.message(guid)
        backend, credential = self._backend(), self._as(message.account)
        if message.channel == "WhatsApp":
            return backend.resend_whatsapp(credential, guid).attempt
        return backend.resend(credential, guid).attempt

    # --- the console ---------------------------------------------------------------------------------

    def backends(self) -> list[dict[str, Any]]:
        """Return every backend in use with its capabilities and circuit state."""
        breaker = self.runtime.breaker
        default = self.runtime.settings.backend
        failover = self.runtime.settings.failover_backend
        return [
            {
                "name": b.name,
                "role": "default" if b.name == default else "failover" if b.name == failover else "client's",
                "circuit": breaker.state(b.name),
                "passes_through": b.passes_through,
                "receives_webhooks": b.receives_webhooks,
                "simulates": b.simulates,
            }
            for b in self.runtime.backends_in_use()
        ]

    def queue(self) -> dict[str, int]:
        """Return how many webhook events are pending and dead."""
        counts = self.runtime.events.counts()
        return {"pending": counts.get("pending", 0), "dead": counts.get("dead", 0)}

    def dead_events(self, limit: int = DEAD_PAGE) -> list[dict[str, Any]]:
        """Return up to `limit` dead events, oldest first: id, type, client, attempts, last error.

        Never their data (the message an event carries).
        """
        return [
            {
                "id": e["id"],
                "type": e["type"],
                "client": e["client"],
                "attempts": e["attempts"],
                "last_error": e["last_error"] or "",
                "created_at": e["created_at"],
            }
            for e in self.runtime.events.dead(limit)
        ]

    def replay(self, event_id: str) -> bool:
        """Make a dead event due again and wake the deliverer; False when there is no such dead event."""
        if not self.runtime.events.replay(event_id):
            return False
        self.runtime.deliverer.start()
        self.runtime.deliverer.wake()
        return True

    def signing_key(self) -> str:
        """Return the key the UI's cookies and CSRF tokens are signed with: the bridge's token secret's,
        bound to SMSBRIDGE_UI_PASSWORD, so that changing the password signs everyone out."""
        password = self.runtime.settings.ui_password or ""
        return self.runtime.tokens.label("smsbridge-ui:" + hashlib.sha256(password.encode()).hexdigest())

    # --- helpers -------------------------------------------------------------------------------------

    def _backend(self) -> Backend:
        backend = self.sandbox
        if backend is None:
            raise UnknownMessage("no backend of this bridge simulates messages")
        return backend

    @staticmethod
    def _as(account: str) -> StoredAccount:
        return StoredAccount("", CredentialSource.FORM, operator_held=True, name=account)

    def _message_row(self, r: Record) -> MessageRow:
        via_sms, via_whatsapp = bool(r["via_sms"]), bool(r["via_whatsapp"])
        channel = "SMS + WhatsApp" if via_sms and via_whatsapp else "WhatsApp" if via_whatsapp else "SMS"
        return MessageRow(
            guid=r["guid"],
            account=r["account"],
            client=self.client_of(r["account"]),
            recipient=r["recipient"],
            text=r["message"],
            status=r["status"],
            device=r["sidentifiant"] or "sandbox-phone-1",
            channel=channel,
            schedule=r["schedule_timestamp"],
            created_at=r["created_at"],
            sent_at=r["sent_at"],
            error=r["error_mobile"] or r["error_api"] or "",
            attempts=int(r["attempts"] or 0),
            delivered_at=r["delivered_at"] if "delivered_at" in r.keys() else None,  # noqa: SIM118 (a Row)
        )


def _client_entries(access: Access) -> list[ClientEntry]:
    """The managed clients, as the clients file says now."""
    return access.entries()


def _accounts_of(entries: list[ClientEntry]) -> dict[str, str]:
    """Return {sandbox account: client name} for managed clients: the account of each upstream key, then
    of each sandbox failover's credential (app.access.resolution.Access.principal_for's: the client's
    failover key, else "client:<name>"). An account two clients share goes to the first that has it."""
    accounts: dict[str, str] = {}
    for entry in entries:
        if entry.upstream_key:
            accounts.setdefault(account_of(entry.upstream_key), entry.name)
    for entry in entries:
        if entry.failover_backend == "sandbox":
            accounts.setdefault(account_of(entry.failover_key or f"client:{entry.name}"), entry.name)
    return accounts
