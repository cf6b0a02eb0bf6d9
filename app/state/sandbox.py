"""The sandbox's data: its accounts, their phones, the messages they sent and received.

The sandbox backend (app/backends/sandbox.py) keeps the logic (message ids, statuses, WhatsApp rules, what a
tester makes happen); a SandboxStore keeps the rows, in SQLite (sandbox.sqlite3 in the data directory) or
in PostgreSQL, shared by every host. Where two workers or hosts could race, the store decides in one
statement: an account and its first phone are made once, a failed message is resent by one of two resends.

Every method raises app.errors.StorageUnavailable when the store cannot be used: for the sandbox, its store
is the upstream, so nothing was sent or changed.

Records are read by column name. A sent record has: guid, account, recipient, message, port, sidentifiant,
via_sms, via_whatsapp, encrypted, shorturl, url_media (0/1 for the flags), schedule_timestamp, created_at,
status ('pending', 'sent', 'failed'), sent_at, error_api, error_mobile, attempts. A received record has: id,
guid, account, channel ('sms', 'whatsapp'), number, message, received_at, device, alias, read (0/1), kind,
contact. A device record: account, sid, label, phone_number, last_seen. An account record: account,
whatsapp_active (0/1), whatsapp_sync_expires.

A sent record also has delivered_at (set once a delivery report arrives: status 'delivered'). A call record
has: id, guid, account, direction ('missed', 'incoming', 'outgoing'), number, name, device, at, duration. A
notification record: id, account, sid, title, message, type, distributed (0/1), created_at. An e-mail record:
id, account, mailbox ('' for the sandbox's own mailbox, else a digest of its key), folder ('INBOX', 'Sent'),
sender_name, sender_email, recipient_email, subject, body, at, attachment_name, attachment_size.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Literal, TypedDict

from app.state.base import Record

#: a sent message's channel, as the sent log filters it (None: either)
Via = Literal["sms", "whatsapp"]
#: where a simulated failure happened: on the phone (error_mobile) or in the API (error_api)
FailedWhere = Literal["mobile", "api"]


class NewSent(TypedDict):
    """A message accepted for one recipient, as `add_sent` stores it."""

    guid: str
    account: str
    recipient: str
    message: str
    port: str
    sidentifiant: str
    via_sms: int
    via_whatsapp: int
    encrypted: int
    shorturl: int
    url_media: str
    schedule_timestamp: int | None
    created_at: int
    status: str
    sent_at: int | None


class NewReceived(TypedDict):
    """A message a phone received, as `add_received` stores it (read 0, no alias)."""

    guid: str
    account: str
    channel: str
    number: str
    message: str
    received_at: int
    device: str
    kind: str
    contact: str


class NewCall(TypedDict):
    """A call a phone logged, as `add_call` stores it."""

    guid: str
    account: str
    direction: str
    number: str
    name: str | None
    device: str
    at: int
    duration: int


class NewNotification(TypedDict):
    """A notification sent to a phone, as `add_notification` stores it."""

    account: str
    sid: str
    title: str
    message: str
    type: str
    distributed: int
    created_at: int


class NewEmail(TypedDict):
    """An e-mail kept in a mailbox folder, as `add_email` stores it."""

    account: str
    mailbox: str
    folder: str
    sender_name: str
    sender_email: str
    recipient_email: str
    subject: str
    body: str
    at: int
    attachment_name: str
    attachment_size: int


class SandboxStore(abc.ABC):
    """The sandbox's accounts, phones, sent and received messages."""

    # --- accounts ------------------------------------------------------------------------------------

    @abc.abstractmethod
    def account(self, account: str) -> Record | None:
        """Return the account's record, or None if it has never been used."""

    @abc.abstractmethod
    def create_account(self, account: str, first_device: tuple[str, str, str], now: int) -> bool:
        """Make the account with its first phone (sid, label, number); False if it exists already.

        Of several first uses at once, one makes it: the phone is added once, with the account.
        """

    @abc.abstractmethod
    def set_whatsapp_active(self, account: str, active: bool | None) -> None:
        """Switch WhatsApp sending on or off; with None, toggle it (in one statement)."""

    @abc.abstractmethod
    def open_whatsapp_sync(self, account: str, until: int) -> None:
        """Let /getwa/ read the account's WhatsApp messages until `until` (epoch seconds)."""

    # --- phones --------------------------------------------------------------------------------------

    @abc.abstractmethod
    def devices(self, account: str) -> list[Record]:
        """Return the account's phones by sid."""

    @abc.abstractmethod
    def put_device(self, account: str, sid: str, label: str, phone_number: str, last_seen: int) -> None:
        """Add a phone, or replace the one with that sid."""

    @abc.abstractmethod
    def update_device(self, account: str, sid: str, label: str, phone_number: str | None) -> bool:
        """Change a phone's label and, unless None, its number; False if there is no such phone."""

    @abc.abstractmethod
    def delete_device(self, account: str, sid: str) -> bool:
        """Remove a phone and the messages it received (together); False if there is no such phone."""

    # --- sent ----------------------------------------------------------------------------------------

    @abc.abstractmethod
    def add_sent(self, rows: Sequence[NewSent]) -> None:
        """Store the messages of one send (all or none)."""

    @abc.abstractmethod
    def sent(
        self, account: str, *, via: Via | None = None, guid: str | None = None, oldest_first: bool = False
    ) -> list[Record]:
        """Return the account's sent messages (those sent `via` a channel; the one `guid`), newest first.

        Messages of one send keep the order of their recipients (reversed, newest first).
        """

    @abc.abstractmethod
    def delete_sent(self, account: str, guids: Sequence[str]) -> int:
        """Delete these sent messages and return how many there were."""

    @abc.abstractmethod
    def fail_sent(self, account: str, guid: str, error: str, where: FailedWhere) -> bool:
        """Mark a sent message failed with `error` (on the phone or in the API); False if there is none."""

    @abc.abstractmethod
    def resend(self, account: str, guid: str, now: int) -> int | None:
        """Mark a failed message sent again (errors cleared, attempts + 1) and return its attempts.

        None when it is not failed (any more): of two resends at once, one resends, the other gets None.
        """

    # --- received ------------------------------------------------------------------------------------

    @abc.abstractmethod
    def add_received(self, row: NewReceived) -> Record:
        """Store a received message and return its record (with its id)."""

    @abc.abstractmethod
    def received(self, account: str, channel: str) -> list[Record]:
        """Return the account's messages received on `channel`, newest first."""

    @abc.abstractmethod
    def mark_read(self, account: str, guid: str) -> bool:
        """Mark a received message read; False if there is none."""

    @abc.abstractmethod
    def set_alias(self, account: str, guid: str, alias: str | None) -> bool:
        """Set (or with None clear) a received message's alias; False if there is none."""

    # --- delivery reports, calls, notifications, e-mail ----------------------------------------------

    @abc.abstractmethod
    def deliver_sent(self, account: str, guid: str, now: int) -> bool:
        """Mark a sent message delivered at `now`; False unless it is 'sent' (pending, failed, none)."""

    @abc.abstractmethod
    def add_call(self, row: NewCall) -> Record:
        """Store a call and return its record (with its id)."""

    @abc.abstractmethod
    def calls(self, account: str, direction: str) -> list[Record]:
        """Return the account's calls of one direction, newest first."""

    @abc.abstractmethod
    def add_notification(self, row: NewNotification) -> Record:
        """Store a notification and return its record (with its id)."""

    @abc.abstractmethod
    def notifications(self, account: str) -> list[Record]:
        """Return the account's notifications, newest first."""

    @abc.abstractmethod
    def add_email(self, row: NewEmail) -> Record:
        """Store an e-mail in a mailbox folder and return its record (with its id)."""

    @abc.abstractmethod
    def emails(self, account: str, mailbox: str, folder: str) -> list[Record]:
        """Return the e-mail of one folder of one of the account's mailboxes, newest first."""

    def close(self) -> None:  # noqa: B027 (an engine without connections has nothing to close)
        """Close this thread's connections."""

    # --- the web inbox (app/service/inbox.py): every account's messages, read only ------------------

    @abc.abstractmethod
    def inbox(
        self, *, search: str = "", status: str | None = None, via: Via | None = None, limit: int = 100
    ) -> list[Record]:
        """Return up to `limit` sent messages of every account, newest first.

        Only those whose recipient or text holds `search` (as plain text, case-insensitive in Unicode on
        every engine: "émile" finds "Émile"), with that `status`, sent `via` that channel. Read on an index
        of their age: its cost follows `limit`, not the messages kept.
        """

    @abc.abstractmethod
    def sent_message(self, guid: str) -> Record | None:
        """Return the sent message `guid`, whichever account sent it, or None."""

    @abc.abstractmethod
    def inbox_received(self, *, search: str = "", limit: int = 100) -> list[Record]:
        """Return up to `limit` received messages (SMS and WhatsApp) of every account, newest first.

        Only those whose number or text holds `search`, as `inbox` searches.
        """
