-- SQL of the console's JSON API (console/api.py).

-- name: recipient_by_address
-- The one person with exactly this address (as the mailer matches one: case-insensitive),
-- in the shape of console/recipients.py's search results. Never a pattern: no LIKE.
SELECT id, email, name, format, tracking_consent, unsubscribed_at IS NULL AS subscribed,
       created_at
FROM recipients WHERE lower(email) = lower($1)
