-- SQL of the reports (tracker/reports.py). Used from Python as REPORTS.<name>. They read the
-- rollups of tracker/migrations/0006_rollups.sql and small tables only: a campaign's links,
-- its row, its failed messages (a partial index).

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
SELECT campaign_id, status, nullif(format, '') AS format, nullif(audience, '') AS audience,
       messages
FROM outbox_counts WHERE campaign_id = ANY($1::bigint[]) AND messages <> 0

-- name: campaign_clicks
-- Clicks of the campaigns $1: human (identified, anonymous), bot, and unique clickers.
SELECT t.campaign_id,
       coalesce(sum(t.clicks) FILTER (WHERE t.kind = 'human'), 0)::bigint AS human,
       coalesce(sum(t.clicks) FILTER (WHERE t.kind = 'human' AND t.identified), 0)::bigint AS identified,
       coalesce(sum(t.clicks) FILTER (WHERE t.kind = 'human' AND NOT t.identified), 0)::bigint
           AS anonymous,
       coalesce(sum(t.clicks) FILTER (WHERE t.kind = 'bot'), 0)::bigint AS bot,
       coalesce((SELECT u.clickers FROM clickers u
                 WHERE u.campaign_id = t.campaign_id AND u.group_id = 0), 0)::bigint AS "unique"
FROM click_totals t
WHERE t.campaign_id = ANY($1::bigint[])
GROUP BY t.campaign_id

-- name: link_counts
-- One row per link of the template (the links rows of one written link, one per occurrence
-- in a message, count together, under the first). unique: distinct messages (so recipients:
-- one message per recipient and campaign) among identified human clicks.
WITH counts AS (
    SELECT group_id,
           sum(clicks) FILTER (WHERE kind = 'human') AS total,
           sum(clicks) FILTER (WHERE kind = 'human' AND identified) AS identified,
           sum(clicks) FILTER (WHERE kind = 'human' AND NOT identified) AS anonymous,
           sum(clicks) FILTER (WHERE kind = 'bot') AS bot
    FROM click_totals WHERE campaign_id = $1
    GROUP BY group_id
)
SELECT l.id, l.url, l.name, l.purpose, l.per_message,
       coalesce(k.total, 0)::bigint AS total, coalesce(u.clickers, 0)::bigint AS "unique",
       coalesce(k.identified, 0)::bigint AS identified, coalesce(k.anonymous, 0)::bigint AS anonymous,
       coalesce(k.bot, 0)::bigint AS bot
FROM links l
LEFT JOIN counts k ON k.group_id = l.id
LEFT JOIN clickers u ON u.campaign_id = $1 AND u.group_id = l.id
WHERE l.campaign_id = $1 AND l.id = l.group_id
ORDER BY l.id

-- name: bot_reasons
-- Bot clicks by why they were taken for a machine's; a row from before reasons were kept
-- has none.
SELECT coalesce(nullif(reason, ''), 'not recorded') AS reason, sum(clicks)::bigint AS clicks
FROM click_totals WHERE campaign_id = $1 AND kind = 'bot'
GROUP BY 1 HAVING sum(clicks) <> 0
ORDER BY 2 DESC, 1

-- name: opens
SELECT coalesce(sum(opens) FILTER (WHERE kind = 'human'), 0)::bigint AS total,
       coalesce((SELECT openers FROM openers WHERE campaign_id = $1), 0)::bigint AS "unique",
       coalesce(sum(opens) FILTER (WHERE kind = 'human' AND identified), 0)::bigint AS identified,
       coalesce(sum(opens) FILTER (WHERE kind = 'human' AND NOT identified), 0)::bigint AS anonymous,
       coalesce(sum(opens) FILTER (WHERE kind = 'bot'), 0)::bigint AS bot
FROM open_hours WHERE campaign_id = $1

-- name: activity_range
-- The first and last hour with a click or an open of the campaign.
SELECT min(hour), max(hour) FROM (
    (SELECT hour FROM click_hours WHERE campaign_id = $1 AND clicks <> 0 ORDER BY hour LIMIT 1)
    UNION ALL
    (SELECT hour FROM click_hours WHERE campaign_id = $1 AND clicks <> 0
     ORDER BY hour DESC LIMIT 1)
    UNION ALL
    (SELECT hour FROM open_hours WHERE campaign_id = $1 AND opens <> 0 ORDER BY hour LIMIT 1)
    UNION ALL
    (SELECT hour FROM open_hours WHERE campaign_id = $1 AND opens <> 0
     ORDER BY hour DESC LIMIT 1)
) a

-- name: series
-- Clicks and opens of campaign $1 per bucket ($2: 'hour' or 'day', UTC) from $3 to $4.
-- date_bin from a UTC midnight: UTC hours and days (cheaper than date_trunc with a zone).
WITH buckets AS (
    SELECT generate_series($3::timestamptz, $4::timestamptz, ('1 ' || $2)::interval) AS at
), clicked AS (
    SELECT date_bin(('1 ' || $2)::interval, hour, '2000-01-01 00:00+00') AS at,
           sum(clicks) FILTER (WHERE kind = 'human') AS clicks_human,
           sum(clicks) FILTER (WHERE kind = 'bot') AS clicks_bot,
           sum(clicks) FILTER (WHERE kind = 'human' AND identified) AS identified,
           sum(clicks) FILTER (WHERE kind = 'human' AND NOT identified) AS anonymous
    FROM click_hours
    WHERE campaign_id = $1 AND hour >= $3 AND hour < $4::timestamptz + ('1 ' || $2)::interval
    GROUP BY 1
), opened AS (
    SELECT date_bin(('1 ' || $2)::interval, hour, '2000-01-01 00:00+00') AS at,
           sum(opens) FILTER (WHERE kind = 'human') AS opens_human,
           sum(opens) FILTER (WHERE kind = 'bot') AS opens_bot
    FROM open_hours
    WHERE campaign_id = $1 AND hour >= $3 AND hour < $4::timestamptz + ('1 ' || $2)::interval
    GROUP BY 1
)
SELECT b.at, coalesce(c.clicks_human, 0)::bigint AS clicks_human, coalesce(c.clicks_bot, 0)::bigint AS clicks_bot,
       coalesce(c.identified, 0)::bigint AS identified, coalesce(c.anonymous, 0)::bigint AS anonymous,
       coalesce(o.opens_human, 0)::bigint AS opens_human, coalesce(o.opens_bot, 0)::bigint AS opens_bot
FROM buckets b LEFT JOIN clicked c ON c.at = b.at LEFT JOIN opened o ON o.at = b.at
ORDER BY b.at

-- name: failures_by_reply
-- Failed and lost (unknown) messages of campaign $1 grouped by the server's reply as stored
-- (NULL once the recipient was erased: the reply may have quoted the address).
SELECT smtp_reply AS reply, count(*) AS messages
FROM outbox WHERE campaign_id = $1 AND status IN ('failed', 'unknown')
GROUP BY 1 ORDER BY 2 DESC, 1 NULLS LAST

-- name: failed_messages
-- A failure names its recipient only while their consent to be mailed stands (subscribed):
-- this list leaves the database (pages, CSV, API, CLI), and an unsubscribed person's
-- address is no longer ours to hand on (privacy policy section 5, onward transfer).
SELECT CASE WHEN r.unsubscribed_at IS NULL THEN r.email END AS email, o.status, o.smtp_reply AS reply, o.attempts, o.outcome_at AS at
FROM outbox o LEFT JOIN recipients r ON r.id = o.recipient_id
WHERE o.campaign_id = $1 AND o.status IN ('failed', 'unknown')
ORDER BY o.id
LIMIT $2 OFFSET $3
