-- The whole data model of the foundation: people and their choices, campaigns
-- and their links, the outbox (one row per message), clicks and opens.

CREATE TABLE recipients (
    id               bigserial PRIMARY KEY,
    email            text NOT NULL,
    name             text NOT NULL DEFAULT '',
    format           text NOT NULL DEFAULT 'html' CHECK (format IN ('html', 'text')),
    -- No consent unless the person gave it: the default is "no".
    tracking_consent boolean NOT NULL DEFAULT false,
    unsubscribed_at  timestamptz,
    attributes       jsonb NOT NULL DEFAULT '{}',
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX recipients_email_key ON recipients (lower(email));

-- Append-only proof of consent: what changed, to what, when and through which channel.
CREATE TABLE consent_events (
    id           bigserial PRIMARY KEY,
    recipient_id bigint NOT NULL REFERENCES recipients (id) ON DELETE CASCADE,
    kind         text NOT NULL CHECK (kind IN ('format', 'tracking', 'subscription')),
    value        text NOT NULL,
    source       text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX consent_events_recipient_idx ON consent_events (recipient_id, id);

CREATE TABLE campaigns (
    id               bigserial PRIMARY KEY,
    name             text NOT NULL UNIQUE,
    subject_template text NOT NULL,
    from_address     text NOT NULL,
    html_template    text NOT NULL,
    html_filename    text NOT NULL,
    text_template    text,
    text_filename    text,
    -- Workers deliver only active campaigns; pause keeps the queue, cancel ends it.
    status           text NOT NULL DEFAULT 'active'
                     CHECK (status IN ('active', 'paused', 'cancelled')),
    created_at       timestamptz NOT NULL DEFAULT now()
);

-- Every redirect target comes from here: a link belongs to one campaign.
CREATE TABLE links (
    id          bigserial PRIMARY KEY,
    campaign_id bigint NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    url         text NOT NULL,
    name        text NOT NULL DEFAULT '',
    -- A honeypot link is hidden from people: only scanners follow it.
    purpose     text NOT NULL DEFAULT 'content' CHECK (purpose IN ('content', 'honeypot')),
    UNIQUE (campaign_id, url, name)
);

-- One row per (campaign, recipient): the message. recipient_id becomes NULL on
-- erasure, so old links keep redirecting (anonymously) and counts survive.
CREATE TABLE outbox (
    id             bigserial PRIMARY KEY,
    campaign_id    bigint NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    recipient_id   bigint REFERENCES recipients (id) ON DELETE SET NULL,
    -- unknown: the connection broke after DATA, so the server may have the message
    -- (RFC 1047); it is never resent automatically.
    status         text NOT NULL DEFAULT 'queued'
                   CHECK (status IN ('queued', 'sending', 'sent', 'deferred', 'failed',
                                     'skipped', 'unknown', 'cancelled')),
    format         text CHECK (format IN ('html', 'text')),
    attempts       integer NOT NULL DEFAULT 0,
    lease_until    timestamptz,
    retry_at       timestamptz,
    smtp_reply     text,
    message_header text,
    queued_at      timestamptz NOT NULL DEFAULT now(),
    sent_at        timestamptz,
    UNIQUE (campaign_id, recipient_id)
);
CREATE INDEX outbox_claim_idx ON outbox (campaign_id, id)
    WHERE status IN ('queued', 'sending', 'deferred');

-- Addresses the receiving server said do not exist (5.1.1): no campaign mails them again.
CREATE TABLE suppressions (
    email      text PRIMARY KEY,  -- lower-cased
    reason     text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Clicks and opens are partitioned by month (tracker/partitions.py creates months
-- ahead), so retention can drop or de-identify a whole month at once.
CREATE TABLE clicks (
    id         bigserial,
    link_id    bigint NOT NULL REFERENCES links (id) ON DELETE CASCADE,
    -- NULL for an anonymous click: then no IP and no user agent either.
    message_id bigint REFERENCES outbox (id) ON DELETE SET NULL,
    clicked_at timestamptz NOT NULL DEFAULT now(),
    kind       text NOT NULL DEFAULT 'human' CHECK (kind IN ('human', 'bot')),
    bot_reason text,
    ip         inet,
    user_agent text,
    PRIMARY KEY (id, clicked_at),
    CONSTRAINT anonymous_clicks_hold_nothing_personal
        CHECK (message_id IS NOT NULL OR (ip IS NULL AND user_agent IS NULL))
) PARTITION BY RANGE (clicked_at);
CREATE INDEX clicks_link_idx ON clicks (link_id);
CREATE INDEX clicks_message_idx ON clicks (message_id) WHERE message_id IS NOT NULL;
-- Catches rows outside every monthly partition, so no click is ever refused.
CREATE TABLE clicks_default PARTITION OF clicks DEFAULT;

CREATE TABLE opens (
    id          bigserial,
    campaign_id bigint NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    message_id  bigint REFERENCES outbox (id) ON DELETE SET NULL,
    opened_at   timestamptz NOT NULL DEFAULT now(),
    kind        text NOT NULL DEFAULT 'human' CHECK (kind IN ('human', 'bot')),
    bot_reason  text,
    ip          inet,
    user_agent  text,
    PRIMARY KEY (id, opened_at),
    CONSTRAINT anonymous_opens_hold_nothing_personal
        CHECK (message_id IS NOT NULL OR (ip IS NULL AND user_agent IS NULL))
) PARTITION BY RANGE (opened_at);
CREATE INDEX opens_campaign_idx ON opens (campaign_id);
CREATE INDEX opens_message_idx ON opens (message_id) WHERE message_id IS NOT NULL;
CREATE TABLE opens_default PARTITION OF opens DEFAULT;

-- Spool files (clicks taken while the database was away) already replayed: a file
-- is applied in the same transaction that records its name, so never twice.
CREATE TABLE spool_replays (
    name        text PRIMARY KEY,
    rows        integer NOT NULL,
    replayed_at timestamptz NOT NULL DEFAULT now()
);
