-- SQL of the reports (tracker/reports.py). Used from Python as REPORTS.<name>.

-- name: campaign_by_name
SELECT id, name, status, created_at FROM campaigns WHERE name = $1

-- name: campaign_page
-- Newest first; the id breaks ties of campaigns created in one transaction.
SELECT id, name, status, created_at, count(*) OVER () AS total
FROM campaigns ORDER BY created_at DESC, id DESC LIMIT $1 OFFSET $2

-- name: campaign_count
SELECT count(*) FROM campaigns

-- name: outbox_counts
-- Messages of the campaigns $1 by status, format sent and audience queued.
SELECT campaign_id, status, format, audience, count(*) AS messages
FROM outbox WHERE campaign_id = ANY($1::bigint[])
GROUP BY 1, 2, 3, 4

-- name: campaign_clicks
-- Clicks of the campaigns $1: human (identified, anonymous), bot, and unique clickers.
SELECT l.campaign_id,
       count(*) FILTER (WHERE c.kind = 'human') AS human,
       count(*) FILTER (WHERE c.kind = 'human' AND c.message_id IS NOT NULL) AS identified,
       count(*) FILTER (WHERE c.kind = 'human' AND c.message_id IS NULL) AS anonymous,
       count(*) FILTER (WHERE c.kind = 'bot') AS bot,
       count(DISTINCT c.message_id) FILTER (WHERE c.kind = 'human') AS "unique"
FROM clicks c JOIN links l ON l.id = c.link_id
WHERE l.campaign_id = ANY($1::bigint[])
GROUP BY 1

-- name: link_counts
-- One row per link of the template (the links rows of one written link, one per occurrence
-- in a message, count together). unique: distinct messages (so recipients: one message per
-- recipient and campaign) among identified human clicks.
WITH link_groups AS (
    SELECT id, min(id) OVER (PARTITION BY url, name, purpose, per_message) AS group_id
    FROM links WHERE campaign_id = $1
), counts AS (
    SELECT g.group_id,
           count(c.id) FILTER (WHERE c.kind = 'human') AS total,
           count(DISTINCT c.message_id) FILTER (WHERE c.kind = 'human') AS "unique",
           count(c.id) FILTER (WHERE c.kind = 'human' AND c.message_id IS NOT NULL) AS identified,
           count(c.id) FILTER (WHERE c.kind = 'human' AND c.message_id IS NULL) AS anonymous,
           count(c.id) FILTER (WHERE c.kind = 'bot') AS bot
    FROM link_groups g LEFT JOIN clicks c ON c.link_id = g.id
    GROUP BY g.group_id
)
SELECT l.id, l.url, l.name, l.purpose, l.per_message,
       k.total, k."unique", k.identified, k.anonymous, k.bot
FROM counts k JOIN links l ON l.id = k.group_id
ORDER BY l.id

-- name: bot_reasons
SELECT coalesce(c.bot_reason, 'not recorded') AS reason, count(*) AS clicks
FROM clicks c JOIN links l ON l.id = c.link_id
WHERE l.campaign_id = $1 AND c.kind = 'bot'
GROUP BY 1
ORDER BY 2 DESC, 1

-- name: opens
SELECT count(*) FILTER (WHERE kind = 'human') AS total,
       count(DISTINCT message_id) FILTER (WHERE kind = 'human') AS "unique",
       count(*) FILTER (WHERE kind = 'human' AND message_id IS NOT NULL) AS identified,
       count(*) FILTER (WHERE kind = 'human' AND message_id IS NULL) AS anonymous,
       count(*) FILTER (WHERE kind = 'bot') AS bot
FROM opens WHERE campaign_id = $1

-- name: activity_range
-- The first and last hour with a click or an open of the campaign.
SELECT min(at), max(at) FROM (
    SELECT c.clicked_at AS at FROM clicks c JOIN links l ON l.id = c.link_id
    WHERE l.campaign_id = $1
    UNION ALL
    SELECT opened_at FROM opens WHERE campaign_id = $1
) a

-- name: series
-- Clicks and opens of campaign $1 per bucket ($2: 'hour' or 'day', UTC) from $3 to $4.
WITH buckets AS (
    SELECT generate_series($3::timestamptz, $4::timestamptz, ('1 ' || $2)::interval) AS at
), clicked AS (
    SELECT date_trunc($2, c.clicked_at, 'UTC') AS at,
           count(*) FILTER (WHERE c.kind = 'human') AS clicks_human,
           count(*) FILTER (WHERE c.kind = 'bot') AS clicks_bot,
           count(*) FILTER (WHERE c.kind = 'human' AND c.message_id IS NOT NULL) AS identified,
           count(*) FILTER (WHERE c.kind = 'human' AND c.message_id IS NULL) AS anonymous
    FROM clicks c JOIN links l ON l.id = c.link_id
    WHERE l.campaign_id = $1 AND c.clicked_at >= $3
      AND c.clicked_at < $4::timestamptz + ('1 ' || $2)::interval
    GROUP BY 1
), opened AS (
    SELECT date_trunc($2, opened_at, 'UTC') AS at,
           count(*) FILTER (WHERE kind = 'human') AS opens_human,
           count(*) FILTER (WHERE kind = 'bot') AS opens_bot
    FROM opens
    WHERE campaign_id = $1 AND opened_at >= $3
      AND opened_at < $4::timestamptz + ('1 ' || $2)::interval
    GROUP BY 1
)
SELECT b.at, coalesce(c.clicks_human, 0) AS clicks_human, coalesce(c.clicks_bot, 0) AS clicks_bot,
       coalesce(c.identified, 0) AS identified, coalesce(c.anonymous, 0) AS anonymous,
       coalesce(o.opens_human, 0) AS opens_human, coalesce(o.opens_bot, 0) AS opens_bot
FROM buckets b LEFT JOIN clicked c ON c.at = b.at LEFT JOIN opened o ON o.at = b.at
ORDER BY b.at

-- name: failures_by_reply
-- Failed and lost (unknown) messages of campaign $1 grouped by the server's reply as stored
-- (NULL once the recipient was erased: the reply may have quoted the address).
SELECT smtp_reply AS reply, count(*) AS messages
FROM outbox WHERE campaign_id = $1 AND status IN ('failed', 'unknown')
GROUP BY 1 ORDER BY 2 DESC, 1 NULLS LAST

-- name: failed_messages
SELECT r.email, o.status, o.smtp_reply AS reply, o.attempts, o.outcome_at AS at
FROM outbox o LEFT JOIN recipients r ON r.id = o.recipient_id
WHERE o.campaign_id = $1 AND o.status IN ('failed', 'unknown')
ORDER BY o.id
LIMIT $2 OFFSET $3
