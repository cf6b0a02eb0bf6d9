"""The state several hosts share, in PostgreSQL (SMSBRIDGE_STATE_URL=postgresql://...).

One schema for every kind (idempotency keys, mobsms's flags and resends, the webhook outbox), made by the
migrations below, applied once under an advisory lock (app.state.postgres.db.migrate). The columns are
SQLite's, so that a record reads the same whichever engine it comes from.
"""

from __future__ import annotations

SCHEMA = """
CREATE TABLE IF NOT EXISTS idempotency (
    scope text PRIMARY KEY,
    fingerprint text NOT NULL,
    done integer NOT NULL DEFAULT 0,
    status integer,
    content_type text,
    body bytea,
    headers text,
    created_at bigint NOT NULL,
    holder_until double precision
);
CREATE INDEX IF NOT EXISTS idempotency_by_age ON idempotency (created_at);
CREATE TABLE IF NOT EXISTS received_flags (
    account text NOT NULL,
    guid text NOT NULL,
    read integer NOT NULL DEFAULT 0,
    alias text,
    PRIMARY KEY (account, guid)
);
CREATE TABLE IF NOT EXISTS resends (
    account text NOT NULL,
    guid text NOT NULL,
    attempt integer NOT NULL,
    new_guid text NOT NULL,
    created_at bigint NOT NULL,
    PRIMARY KEY (account, guid, attempt)
);
CREATE TABLE IF NOT EXISTS resend_claims (
    account text NOT NULL,
    guid text NOT NULL,
    until double precision NOT NULL,
    PRIMARY KEY (account, guid)
);
CREATE TABLE IF NOT EXISTS webhook_events (
    id text PRIMARY KEY,
    client text NOT NULL,
    type text NOT NULL,
    data text NOT NULL,
    created_at double precision NOT NULL,
    next_attempt_at double precision NOT NULL,
    lease_until double precision NOT NULL DEFAULT 0,
    attempts integer NOT NULL DEFAULT 0,
    status text NOT NULL DEFAULT 'pending',
    last_error text NOT NULL DEFAULT '',
    delivered_at double precision
);
CREATE INDEX IF NOT EXISTS webhook_events_due ON webhook_events (status, next_attempt_at);
CREATE INDEX IF NOT EXISTS webhook_events_delivered ON webhook_events (delivered_at)
    WHERE status = 'delivered';
"""

#: the schema's migrations, oldest first: append, never edit (smsbridge_migrations lists those applied)
#: the sandbox's accounts, phones, sent and received messages
SANDBOX = """
CREATE TABLE IF NOT EXISTS sandbox_accounts (
    account text PRIMARY KEY,
    whatsapp_active integer NOT NULL DEFAULT 1,
    whatsapp_sync_expires bigint NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS sandbox_devices (
    account text NOT NULL,
    sid text NOT NULL,
    label text NOT NULL,
    phone_number text NOT NULL,
    last_seen bigint NOT NULL,
    PRIMARY KEY (account, sid)
);
CREATE TABLE IF NOT EXISTS sandbox_sent (
    seq bigint GENERATED ALWAYS AS IDENTITY,
    guid text PRIMARY KEY,
    account text NOT NULL,
    recipient text NOT NULL,
    message text NOT NULL,
    port text NOT NULL,
    sidentifiant text NOT NULL,
    via_sms integer NOT NULL,
    via_whatsapp integer NOT NULL,
    encrypted integer NOT NULL,
    shorturl integer NOT NULL,
    url_media text NOT NULL,
    schedule_timestamp bigint,
    created_at bigint NOT NULL,
    status text NOT NULL,
    sent_at bigint,
    error_api text NOT NULL DEFAULT '',
    error_mobile text NOT NULL DEFAULT '',
    attempts integer NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS sandbox_sent_account ON sandbox_sent (account, created_at, seq);
CREATE TABLE IF NOT EXISTS sandbox_received (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    guid text NOT NULL UNIQUE,
    account text NOT NULL,
    channel text NOT NULL,
    number text NOT NULL,
    message text NOT NULL,
    received_at bigint NOT NULL,
    device text NOT NULL,
    alias text,
    read integer NOT NULL DEFAULT 0,
    kind text NOT NULL DEFAULT 'text',
    contact text NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS sandbox_received_account ON sandbox_received (account, channel, received_at);
"""
#: the sandbox's delivery reports; its calls, notifications and e-mail (the vendor's other endpoints)
SANDBOX_EXTRAS = """
ALTER TABLE sandbox_sent ADD COLUMN IF NOT EXISTS delivered_at bigint;
CREATE TABLE IF NOT EXISTS sandbox_calls (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    guid text NOT NULL UNIQUE,
    account text NOT NULL,
    direction text NOT NULL,
    number text NOT NULL,
    name text,
    device text NOT NULL,
    at bigint NOT NULL,
    duration integer NOT NULL
);
CREATE INDEX IF NOT EXISTS sandbox_calls_account ON sandbox_calls (account, direction, at);
CREATE TABLE IF NOT EXISTS sandbox_notifications (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account text NOT NULL,
    sid text NOT NULL,
    title text NOT NULL,
    message text NOT NULL,
    type text NOT NULL,
    distributed integer NOT NULL,
    created_at bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS sandbox_notifications_account ON sandbox_notifications (account, created_at);
CREATE TABLE IF NOT EXISTS sandbox_emails (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account text NOT NULL,
    mailbox text NOT NULL,
    folder text NOT NULL,
    sender_name text NOT NULL,
    sender_email text NOT NULL,
    recipient_email text NOT NULL,
    subject text NOT NULL,
    body text NOT NULL,
    at bigint NOT NULL,
    attachment_name text NOT NULL,
    attachment_size integer NOT NULL
);
CREATE INDEX IF NOT EXISTS sandbox_emails_folder ON sandbox_emails (account, mailbox, folder, at);
"""
#: what the web inbox reads often, on indexes: every account's messages newest first (the home page), a
#: message's webhook events (its page, every few seconds: the guid their data names, a column `add` fills,
#: filled here for the events stored before, one by one: data whose JSON jsonb refuses is left without);
#: and smsbridge_lower, the Unicode lower-casing its search uses whatever the database's locale (ICU's
#: root locale where the server has ICU; else the database's own lower)
INBOX = """
CREATE INDEX IF NOT EXISTS sandbox_sent_recent ON sandbox_sent (created_at, seq);
CREATE INDEX IF NOT EXISTS sandbox_received_recent ON sandbox_received (received_at, id);
ALTER TABLE webhook_events ADD COLUMN IF NOT EXISTS guid text;
DO $$
DECLARE
    stored record;
BEGIN
    FOR stored IN SELECT id, data FROM webhook_events WHERE guid IS NULL AND strpos(data, '"guid"') > 0 LOOP
        BEGIN
            UPDATE webhook_events SET guid = stored.data::jsonb ->> 'guid'
                WHERE id = stored.id AND jsonb_typeof(stored.data::jsonb -> 'guid') = 'string';
        EXCEPTION WHEN others THEN
            NULL;
        END;
    END LOOP;
END $$;
CREATE INDEX IF NOT EXISTS webhook_events_guid ON webhook_events (guid, created_at) WHERE guid IS NOT NULL;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_collation WHERE collname = 'und-x-icu') THEN
        CREATE OR REPLACE FUNCTION smsbridge_lower(value text) RETURNS text
            LANGUAGE sql STABLE STRICT PARALLEL SAFE AS 'SELECT lower(value COLLATE "und-x-icu")';
    ELSE
        CREATE OR REPLACE FUNCTION smsbridge_lower(value text) RETURNS text
            LANGUAGE sql STABLE STRICT PARALLEL SAFE AS 'SELECT lower(value)';
    END IF;
END $$;
"""
#: the migrations, oldest first: append, never edit (smsbridge_migrations records those applied)
MIGRATIONS: tuple[str, ...] = (SCHEMA, SANDBOX, SANDBOX_EXTRAS, INBOX)
