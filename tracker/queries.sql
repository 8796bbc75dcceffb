-- SQL of the tracker. Every statement is parameterised; names are used from Python as SQL.<name>.

-- name: record_click
-- Consent is read in the same statement that writes the click, so a withdrawal
-- committed before the click is always honoured. Without consent (or after
-- unsubscribing or erasure) the row holds only the link and the time.
WITH target AS (
    SELECT l.id AS link_id, l.url, m.id AS message_id,
           coalesce(r.tracking_consent AND r.unsubscribed_at IS NULL, false) AS consent
    FROM outbox m
    JOIN links l ON l.id = $2 AND l.campaign_id = m.campaign_id
    LEFT JOIN recipients r ON r.id = m.recipient_id
    WHERE m.id = $1
)
INSERT INTO clicks (link_id, message_id, ip, user_agent, kind, bot_reason)
SELECT link_id,
       CASE WHEN consent THEN message_id END,
       CASE WHEN consent THEN $3::inet END,
       CASE WHEN consent THEN $4::text END,
       $5, $6
FROM target
RETURNING (SELECT url FROM target)

-- name: recipient_choices
SELECT id, email, name, format, tracking_consent, unsubscribed_at IS NULL AS subscribed
FROM recipients WHERE id = $1

-- name: lock_recipient
SELECT id, format, tracking_consent, unsubscribed_at IS NULL AS subscribed
FROM recipients WHERE id = $1 FOR UPDATE

-- name: set_format
UPDATE recipients SET format = $2 WHERE id = $1

-- name: set_tracking_consent
UPDATE recipients SET tracking_consent = $2 WHERE id = $1

-- name: set_subscribed
UPDATE recipients SET unsubscribed_at = CASE WHEN $2 THEN NULL ELSE now() END WHERE id = $1

-- name: log_consent_event
INSERT INTO consent_events (recipient_id, kind, value, source) VALUES ($1, $2, $3, $4)

-- name: consent_events_of
SELECT kind, value, source, created_at FROM consent_events WHERE recipient_id = $1 ORDER BY id

-- name: existing_emails
SELECT lower(email) AS email FROM recipients WHERE lower(email) = ANY($1::text[])

-- name: insert_recipient
INSERT INTO recipients (email, name, format, tracking_consent, attributes)
VALUES ($1, $2, $3, $4, $5::jsonb)
ON CONFLICT (lower(email)) DO NOTHING
RETURNING id

-- name: find_recipient_by_email
SELECT id FROM recipients WHERE lower(email) = lower($1)

-- name: anonymise_clicks_of
-- Erasure: clicks stay counted, but no longer point at the person's message.
UPDATE clicks SET message_id = NULL, ip = NULL, user_agent = NULL
WHERE message_id IN (SELECT id FROM outbox WHERE recipient_id = $1)

-- name: anonymise_opens_of
UPDATE opens SET message_id = NULL, ip = NULL, user_agent = NULL
WHERE message_id IN (SELECT id FROM outbox WHERE recipient_id = $1)

-- name: forget_messages_of
-- The server's reply may quote the address; the row itself stays for the counts.
UPDATE outbox SET smtp_reply = NULL, recipient_id = NULL WHERE recipient_id = $1

-- name: delete_recipient
DELETE FROM recipients WHERE id = $1

-- name: campaign_id_by_name
SELECT id FROM campaigns WHERE name = $1

-- name: report_messages
SELECT count(*) FILTER (WHERE status = 'sent') AS sent,
       count(*) FILTER (WHERE status = 'failed') AS failed,
       count(*) FILTER (WHERE status IN ('queued', 'sending', 'deferred')) AS pending,
       count(*) FILTER (WHERE status = 'sent' AND format = 'html') AS html,
       count(*) FILTER (WHERE status = 'sent' AND format = 'text') AS text
FROM outbox WHERE campaign_id = $1

-- name: report_links
-- One row per link; human counts exclude bots; unique = distinct recipients
-- among identified clicks.
SELECT l.id, l.url, l.name,
       count(c.id) FILTER (WHERE c.kind = 'human') AS total,
       count(DISTINCT m.recipient_id) FILTER (WHERE c.kind = 'human') AS "unique",
       count(c.id) FILTER (WHERE c.kind = 'human' AND c.message_id IS NOT NULL) AS identified,
       count(c.id) FILTER (WHERE c.kind = 'human' AND c.message_id IS NULL) AS anonymous,
       count(c.id) FILTER (WHERE c.kind = 'bot') AS bot
FROM links l
LEFT JOIN clicks c ON c.link_id = l.id
LEFT JOIN outbox m ON m.id = c.message_id
WHERE l.campaign_id = $1
GROUP BY l.id
ORDER BY l.id

-- name: report_unique_clickers
SELECT count(DISTINCT m.recipient_id) AS "unique"
FROM clicks c JOIN links l ON l.id = c.link_id JOIN outbox m ON m.id = c.message_id
WHERE l.campaign_id = $1 AND c.kind = 'human'
