-- SQL of the one-time links mailed for download and erasure (tracker/mailbox_links.py).

-- name: lock_person
-- Taken first: two requests of one person count their recent links one after the other.
SELECT email FROM recipients WHERE id = $1 FOR UPDATE

-- name: recent_links
-- The person's links of the last hour, newest first: the rate limit.
SELECT created_at FROM mailbox_links
WHERE recipient_id = $1 AND created_at > now() - interval '1 hour'
ORDER BY created_at DESC

-- name: insert_link
INSERT INTO mailbox_links (recipient_id, action, expires_at)
VALUES ($1, $2, now() + make_interval(mins => $3))
RETURNING id, created_at, expires_at

-- name: queue_link_message
-- The message carrying the link: no campaign, delivered by `send` and `worker` like any other.
INSERT INTO outbox (recipient_id, mailbox_link_id) VALUES ($1, $2)

-- name: link_state
SELECT l.action, l.recipient_id, l.used_at, l.expires_at, l.expires_at <= now() AS expired,
       r.email
FROM mailbox_links l LEFT JOIN recipients r ON r.id = l.recipient_id
WHERE l.id = $1

-- name: use_link
-- The link acts once: only while unused and unexpired, for its own person and action; in
-- the transaction of the download or the erasure, so a failed one leaves it usable.
UPDATE mailbox_links SET used_at = now()
WHERE id = $1 AND recipient_id = $2 AND action = $3 AND used_at IS NULL AND expires_at > now()
RETURNING id
