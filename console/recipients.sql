-- SQL of the console's recipient pages and API lookups (console/recipients.py).

-- name: search_recipients
-- $1: the searched text, lower-cased. strpos, not LIKE: a "%" or "_" typed in the box is
-- looked for as itself, with nothing to escape. Addresses that begin with it come first.
SELECT id, email, name, format, tracking_consent, unsubscribed_at IS NULL AS subscribed,
       created_at, count(*) OVER () AS total
FROM recipients
WHERE strpos(lower(email), $1) > 0
ORDER BY strpos(lower(email), $1) = 1 DESC, lower(email), id
LIMIT $2 OFFSET $3

-- name: count_recipients_matching
SELECT count(*) FROM recipients WHERE strpos(lower(email), $1) > 0

-- name: recipient_by_id
SELECT id, email, name, format, tracking_consent, unsubscribed_at, created_at,
       attributes::text AS attributes
FROM recipients WHERE id = $1

-- name: recipient_consent_events
-- With their proof (issue 11): channel, actor, the wording's version, the policy's version.
SELECT e.kind, e.value, e.source, e.created_at, e.channel, e.actor, e.policy_version,
       w.purpose AS wording_purpose, w.version AS wording_version
FROM consent_events e LEFT JOIN consent_wordings w ON w.sha256 = e.wording_sha256
WHERE e.recipient_id = $1 ORDER BY e.id

-- name: recipient_messages
-- A message of no campaign carried a download or erase link the person asked for.
SELECT coalesce(c.name, '(' || l.action || ' link the person asked for)') AS campaign,
       o.status, o.format, o.attempts, o.queued_at, o.sent_at, o.smtp_reply
FROM outbox o
LEFT JOIN campaigns c ON c.id = o.campaign_id
LEFT JOIN mailbox_links l ON l.id = o.mailbox_link_id
WHERE o.recipient_id = $1
ORDER BY o.id DESC
LIMIT $2

-- name: recipient_message_count
SELECT count(*) FROM outbox WHERE recipient_id = $1

-- name: recipient_clicks
-- Identified clicks only: a click row names a message only if the person had consented at
-- the moment of the click (the click path decides it as it writes the row); anonymous
-- clicks name nobody and cannot be shown here. And only while that consent stands (tracking
-- granted, subscribed): shown to operators, they leave the person's hands, which a withdrawal
-- forbids (privacy policy section 5); the person's own download still has them. Latest first.
SELECT k.clicked_at, c.name AS campaign, l.name AS link_name, coalesce(ml.url, l.url) AS url,
       k.kind, k.bot_reason, k.user_agent
FROM recipients r
JOIN outbox o ON o.recipient_id = r.id
JOIN clicks k ON k.message_id = o.id
JOIN links l ON l.id = k.link_id
LEFT JOIN message_links ml ON ml.message_id = o.id AND ml.link_id = l.id
JOIN campaigns c ON c.id = o.campaign_id
WHERE r.id = $1 AND r.tracking_consent AND r.unsubscribed_at IS NULL
ORDER BY k.clicked_at DESC, k.id DESC
LIMIT $2

-- name: recipient_click_count
SELECT count(*)
FROM recipients r JOIN outbox o ON o.recipient_id = r.id JOIN clicks k ON k.message_id = o.id
WHERE r.id = $1 AND r.tracking_consent AND r.unsubscribed_at IS NULL

-- name: recipient_id_by_email
SELECT id FROM recipients WHERE lower(email) = lower($1)
