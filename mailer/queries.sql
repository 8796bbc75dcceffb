-- SQL of the mailer. Every statement is parameterised; used from Python as SQL.<name>.

-- name: insert_campaign
INSERT INTO campaigns (name, subject_template, from_address, html_template, html_filename,
                       text_template, text_filename)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (name) DO NOTHING
RETURNING id

-- name: campaign_by_name
SELECT * FROM campaigns WHERE name = $1

-- name: subscribed_recipients
SELECT id, email, name, format, tracking_consent, attributes
FROM recipients WHERE unsubscribed_at IS NULL ORDER BY id

-- name: sample_recipients
-- A few recipients to try a template's expressions on (mailer/link_check.py).
SELECT id, email, name, format, tracking_consent, attributes
FROM recipients WHERE unsubscribed_at IS NULL ORDER BY id LIMIT $1

-- name: recipient_by_email
SELECT id, email, name, format, tracking_consent, attributes, unsubscribed_at IS NULL AS subscribed
FROM recipients WHERE lower(email) = lower($1)

-- name: queue_campaign
-- One row per subscribed, not suppressed recipient; the unique key makes re-running a no-op.
-- audience: the format and tracking consent the message was queued with (the console's
-- denominators).
INSERT INTO outbox (campaign_id, recipient_id, audience)
SELECT $1, r.id,
       CASE WHEN r.format = 'text' THEN 'text'
            WHEN r.tracking_consent THEN 'html_consent' ELSE 'html_no_consent' END
FROM recipients r
WHERE r.unsubscribed_at IS NULL
  AND NOT EXISTS (SELECT 1 FROM suppressions s WHERE s.address_hash = suppression_hash(r.email))
ON CONFLICT (campaign_id, recipient_id) DO NOTHING

-- name: claim_messages
-- Queued rows, deferred rows whose time has come, and rows whose sender died
-- (lease expired), of active campaigns ($1 NULL: any campaign), with their recipients.
-- SKIP LOCKED lets several senders share one outbox without ever taking the same row.
-- A message of no campaign (a mailbox link, tracker/mailbox_links.py) goes with any sender:
-- no campaign can hold it, and the person is waiting for it.
-- $4: the sender's cursor, the highest id it claimed so far; it reads on from there (in id
-- order, by an index) and starts again at 0 when nothing is left after it, for rows that came
-- back (deferred, a dead sender's lease). Without it each claim read every due row, or walked
-- the primary key through every row already sent: O(queue) per claim.
WITH mailbox AS (
    SELECT o.id, o.recipient_id FROM outbox o
    WHERE o.campaign_id IS NULL
      AND (o.status = 'queued'
           OR (o.status = 'deferred' AND o.retry_at <= now())
           OR (o.status = 'sending' AND o.lease_until < now()))
    ORDER BY o.id
    LIMIT $2
    FOR UPDATE OF o SKIP LOCKED
), campaign_rows AS (
    SELECT m.id, m.recipient_id
    FROM (SELECT id FROM campaigns
          WHERE status = 'active' AND ($1::bigint IS NULL OR id = $1) ORDER BY id) c
    CROSS JOIN LATERAL (
        SELECT o.id, o.recipient_id FROM outbox o
        WHERE o.campaign_id = c.id AND o.id > $4
          AND (o.status = 'queued'
               OR (o.status = 'deferred' AND o.retry_at <= now())
               OR (o.status = 'sending' AND o.lease_until < now()))
        ORDER BY o.id
        LIMIT $2
        FOR UPDATE OF o SKIP LOCKED
    ) m
    LIMIT $2
), claimed AS (
    UPDATE outbox o
    SET status = 'sending', lease_until = now() + make_interval(secs => $3),
        attempts = o.attempts + 1
    FROM (SELECT id FROM mailbox UNION ALL SELECT id FROM campaign_rows) c
    WHERE o.id = c.id
    RETURNING o.id, o.campaign_id, o.recipient_id, o.attempts, o.mailbox_link_id
)
-- The recipient as they are now (person_id NULL: erased), as recipients_by_ids gives it.
SELECT m.id, m.campaign_id, m.recipient_id, m.attempts, m.mailbox_link_id,
       r.id AS person_id, r.email, r.name, r.format, r.tracking_consent, r.attributes,
       r.unsubscribed_at IS NULL AS subscribed,
       (SELECT s.reason FROM suppressions s WHERE s.address_hash = suppression_hash(r.email))
           AS suppressed
FROM claimed m LEFT JOIN recipients r ON r.id = m.recipient_id
ORDER BY m.id

-- name: extend_leases
UPDATE outbox SET lease_until = now() + make_interval(secs => $2)
WHERE id = ANY($1::bigint[]) AND status = 'sending'

-- name: due_messages
SELECT count(*) FROM outbox o LEFT JOIN campaigns c ON c.id = o.campaign_id
WHERE (c.status = 'active' OR o.campaign_id IS NULL)
  AND ($1::bigint IS NULL OR o.campaign_id = $1 OR o.campaign_id IS NULL)
  AND (o.status = 'queued'
       OR (o.status = 'deferred' AND o.retry_at <= now())
       OR (o.status = 'sending' AND o.lease_until < now()))

-- name: message_of
SELECT id FROM outbox WHERE campaign_id = $1 AND recipient_id = $2

-- name: mark_sent_many
-- Messages the SMTP server accepted, of several senders, in one statement and one commit.
UPDATE outbox o SET status = 'sent', format = m.format, message_header = m.header,
                    smtp_reply = m.reply, sent_at = now(), lease_until = NULL, retry_at = NULL
FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[]) AS m(id, format, header, reply)
WHERE o.id = m.id

-- name: mark_failed
UPDATE outbox SET status = 'failed', smtp_reply = $2, lease_until = NULL, outcome_at = now()
WHERE id = $1

-- name: mark_deferred
UPDATE outbox SET status = 'deferred', smtp_reply = $2, lease_until = NULL,
                  retry_at = now() + make_interval(secs => $3)
WHERE id = $1

-- name: mark_unknown
UPDATE outbox SET status = 'unknown', smtp_reply = $2, lease_until = NULL, outcome_at = now()
WHERE id = $1

-- name: suppress_recipient
-- A hard bounce (5.1.1): the keyed hash only; the server's reply stays with the message.
INSERT INTO suppressions (address_hash, reason)
SELECT suppression_hash(email), 'bounced' FROM recipients WHERE id = $1
ON CONFLICT DO NOTHING

-- name: set_campaign_status
UPDATE campaigns SET status = $2 WHERE name = $1 RETURNING id

-- name: cancel_outbox
UPDATE outbox SET status = 'cancelled', lease_until = NULL
WHERE campaign_id = $1 AND status IN ('queued', 'deferred')

-- name: mark_skipped
UPDATE outbox SET status = 'skipped', smtp_reply = $2, lease_until = NULL WHERE id = $1

-- name: link_ids
SELECT url, name, per_message, occurrence, id FROM links WHERE campaign_id = $1

-- name: upsert_link
INSERT INTO links (campaign_id, url, name, purpose, per_message, occurrence)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (campaign_id, url, name, per_message, occurrence) DO UPDATE SET name = EXCLUDED.name
RETURNING id

-- name: save_message_links
-- The URLs one message's links render to for its recipient alone (tracker/consent.py erases
-- them with the person). Composed again after a deferral: the latest rendering is what was sent.
INSERT INTO message_links (message_id, link_id, url)
SELECT $1, link_id, url FROM unnest($2::bigint[], $3::text[]) AS m(link_id, url)
ON CONFLICT (message_id, link_id) DO UPDATE SET url = EXCLUDED.url

-- name: release_claims
-- Give back rows this sender claimed but never tried (it is stopping on an error).
UPDATE outbox SET status = 'queued', attempts = attempts - 1, lease_until = NULL
WHERE id = ANY($1::bigint[]) AND status = 'sending'

-- name: example_tracked_link
-- For quickstart's hint: a sent HTML message, preferring a recipient who consented.
SELECT m.id AS message_id, l.id AS link_id, l.url, m.recipient_id, r.email
FROM outbox m
JOIN recipients r ON r.id = m.recipient_id
JOIN links l ON l.campaign_id = m.campaign_id AND NOT l.per_message
WHERE m.campaign_id = $1 AND m.status = 'sent' AND m.format = 'html'
ORDER BY r.tracking_consent DESC, m.id, l.id
LIMIT 1

-- name: campaign_by_id
SELECT * FROM campaigns WHERE id = $1

-- name: in_flight_elsewhere
-- Rows of the campaign some sender holds (or held, if it died: the lease will lapse).
SELECT count(*) FROM outbox
WHERE ($1::bigint IS NULL OR campaign_id = $1) AND status = 'sending' AND NOT (id = ANY($2::bigint[]))

-- name: mailbox_link_mail
-- What the message carrying a mailbox link needs (mailer/mailbox_mail.py). Its sender: the
-- From of the last campaign that mailed the person (the address they know us by), else of
-- the newest campaign.
SELECT l.action, l.expires_at, l.used_at IS NOT NULL OR l.expires_at <= now() AS dead,
       coalesce((SELECT c.from_address FROM outbox o JOIN campaigns c ON c.id = o.campaign_id
                 WHERE o.recipient_id = l.recipient_id ORDER BY o.id DESC LIMIT 1),
                (SELECT from_address FROM campaigns ORDER BY id DESC LIMIT 1)) AS sender
FROM mailbox_links l WHERE l.id = $1
