-- SQL of the tracker. Every statement is parameterised; names are used from Python as SQL.<name>.

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

-- name: log_consent_event_with_proof
-- Consent proof (issue 11): what the person was shown ($6, a consent_wordings hash), the
-- privacy policy in force, the channel, and who recorded it when not the person.
INSERT INTO consent_events
    (recipient_id, kind, value, source, channel, wording_sha256, policy_url, policy_version, actor)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)

-- name: consent_history
-- A person's consent events with the wording each refers to (history, data download).
SELECT e.kind, e.value, e.source, e.channel, e.created_at, e.policy_url, e.policy_version,
       e.actor, e.wording_sha256, w.purpose AS wording_purpose, w.version AS wording_version,
       w.text AS wording_text
FROM consent_events e LEFT JOIN consent_wordings w ON w.sha256 = e.wording_sha256
WHERE e.recipient_id = $1
ORDER BY e.id

-- name: wording_known
SELECT true FROM consent_wordings WHERE sha256 = $1

-- name: lock_wordings
-- Held by the first use of a new wording until its transaction ends (tracker/wordings.py).
SELECT pg_advisory_xact_lock($1)

-- name: remember_wording
INSERT INTO consent_wordings (sha256, purpose, version, text)
SELECT $1, $2, coalesce(max(version), 0) + 1, $3 FROM consent_wordings WHERE purpose = $2
ON CONFLICT (sha256) DO NOTHING

-- name: wording_by_hash
SELECT purpose, version, text, first_used_at FROM consent_wordings WHERE sha256 = $1

-- name: count_erasure
-- That an erasure happened, why, and on which day: nothing that names or links to anyone.
INSERT INTO erasure_counts (day, reason, erasures) VALUES (current_date, $1, 1)
ON CONFLICT (day, reason) DO UPDATE SET erasures = erasure_counts.erasures + 1

-- name: log_export
-- An export of identified data outside the console (the person's download, the CLI): into
-- the same log of actions the console writes (console/queries.sql log_action).
INSERT INTO console_actions (actor, action, subject) VALUES ($1, $2, $3)

-- name: existing_emails
SELECT lower(email) AS email FROM recipients WHERE lower(email) = ANY($1::text[])

-- name: insert_recipient
INSERT INTO recipients (email, name, format, tracking_consent, attributes)
VALUES ($1, $2, $3, $4, $5::jsonb)
ON CONFLICT (lower(email)) DO NOTHING
RETURNING id

-- name: find_recipient_by_email
SELECT id FROM recipients WHERE lower(email) = lower($1)

-- name: lock_recipient_for_erasure
-- Taken first, so a change of choices in flight finishes before (or waits for) erasure.
SELECT email FROM recipients WHERE id = $1 FOR UPDATE

-- name: erasure_lock_timeout
-- Click and open writes queue behind an erasure waiting for hold_click_writes: never long.
SET LOCAL lock_timeout = '250ms'

-- name: hold_click_writes
-- Erasure waits for clicks and opens being written to commit (so it anonymises them too)
-- and holds new ones until it commits (they then find nobody to name). SHARE ROW
-- EXCLUSIVE: two erasures take turns instead of deadlocking on their own updates.
LOCK TABLE clicks, opens IN SHARE ROW EXCLUSIVE MODE

-- name: anonymise_clicks_of
-- Erasure: clicks stay counted, but no longer point at the person's message.
UPDATE clicks SET message_id = NULL, ip = NULL, user_agent = NULL
WHERE message_id IN (SELECT id FROM outbox WHERE recipient_id = $1)

-- name: anonymise_opens_of
UPDATE opens SET message_id = NULL, ip = NULL, user_agent = NULL
WHERE message_id IN (SELECT id FROM outbox WHERE recipient_id = $1)

-- name: forget_message_links_of
-- The URLs rendered for the person alone ("?who=their address"): gone with them. The
-- links rows (what the template wrote) stay for the counts.
DELETE FROM message_links WHERE message_id IN (SELECT id FROM outbox WHERE recipient_id = $1)

-- name: forget_messages_of
-- The server's reply may quote the address; the row itself stays for the counts.
UPDATE outbox SET smtp_reply = NULL, recipient_id = NULL WHERE recipient_id = $1

-- name: suppress_erased
-- The keyed hash of the address is all that erasure keeps, so the person is never mailed
-- again; it says "erased" (or "minor": a child's data, erased on discovery) and when,
-- whatever it said before (a bounce, say).
INSERT INTO suppressions (address_hash, reason) VALUES (suppression_hash($1), $2)
ON CONFLICT (address_hash) DO UPDATE SET reason = $2, created_at = now()

-- name: delete_recipient
DELETE FROM recipients WHERE id = $1

-- name: recipient_id_issued
-- Whether the id was ever given to a recipient (ids come from this sequence only): a signed
-- token naming an absent recipient below it is someone erased, above it nobody ever.
SELECT $1::bigint <= coalesce(
    pg_sequence_last_value(pg_get_serial_sequence('recipients', 'id')::regclass), 0)

-- name: personal_recipient
-- personal_*: everything held about one person, for the download on their preference
-- page, read in one read-only snapshot (tracker/personal_data.py). Erasure (above)
-- removes or unlinks all of it.
SELECT email, name, attributes::text AS attributes, format, tracking_consent,
       unsubscribed_at, created_at
FROM recipients WHERE id = $1

-- name: personal_messages
-- A message of no campaign carried a link the person asked for (tracker/mailbox_links.py).
SELECT coalesce(c.name, 'the link to ' || l.action || ' your data you asked for') AS campaign,
       c.from_address AS sender, o.status, o.format, o.attempts,
       o.queued_at, o.sent_at, o.smtp_reply, o.message_header AS message_id
FROM outbox o
LEFT JOIN campaigns c ON c.id = o.campaign_id
LEFT JOIN mailbox_links l ON l.id = o.mailbox_link_id
WHERE o.recipient_id = $1
ORDER BY o.id

-- name: personal_clicks
-- Identified clicks only: an anonymous click names no message, so no person.
SELECT k.clicked_at, c.name AS campaign, coalesce(ml.url, l.url) AS url, l.name AS link_name,
       k.kind, k.bot_reason, host(k.ip) AS ip, k.user_agent
FROM outbox o
JOIN clicks k ON k.message_id = o.id
JOIN links l ON l.id = k.link_id
LEFT JOIN message_links ml ON ml.message_id = o.id AND ml.link_id = l.id
JOIN campaigns c ON c.id = o.campaign_id
WHERE o.recipient_id = $1
ORDER BY k.clicked_at, k.id

-- name: personal_message_links
-- The links of the person's messages that were made for them alone.
SELECT c.name AS campaign, l.url AS written, l.name AS link_name, ml.url
FROM outbox o
JOIN message_links ml ON ml.message_id = o.id
JOIN links l ON l.id = ml.link_id
JOIN campaigns c ON c.id = o.campaign_id
WHERE o.recipient_id = $1
ORDER BY o.id, l.id

-- name: personal_opens
SELECT p.opened_at, c.name AS campaign, p.kind, p.bot_reason, host(p.ip) AS ip, p.user_agent
FROM outbox o
JOIN opens p ON p.message_id = o.id
JOIN campaigns c ON c.id = o.campaign_id
WHERE o.recipient_id = $1
ORDER BY p.opened_at, p.id

-- name: personal_suppression
SELECT s.reason, s.created_at
FROM recipients r JOIN suppressions s ON s.address_hash = suppression_hash(r.email)
WHERE r.id = $1

-- name: suppression_of
-- suppression*: the list of keyed hashes (tracker/suppressions.py); $1 is an address.
SELECT reason, created_at FROM suppressions WHERE address_hash = suppression_hash($1)

-- name: suppress_address
INSERT INTO suppressions (address_hash, reason) VALUES (suppression_hash($1), $2)
ON CONFLICT (address_hash) DO NOTHING
RETURNING true

-- name: lift_suppression
DELETE FROM suppressions WHERE address_hash = suppression_hash($1)
RETURNING reason, created_at

-- name: suppressed_positions
-- The 0-based positions of the suppressed addresses among $1 (an import's rows).
SELECT coalesce(array_agg(a.n - 1), '{}')
FROM unnest($1::text[]) WITH ORDINALITY AS a(email, n)
WHERE EXISTS (SELECT 1 FROM suppressions s WHERE s.address_hash = suppression_hash(a.email))

-- name: record_clicks
-- A batch of clicks in one statement (group commit). Consent is read here, where
-- the rows are written. Rows whose (message, link) pair is not one campaign's are
-- dropped; the ids of the valid ones come back. A click already stored (a replayed
-- batch that was committed after all) is not written twice.
-- IPs come as text: PostgreSQL parses inet faster than the driver encodes it.
--
-- Scanners are judged here too, against every process's clicks (tracker/bots.py, the
-- table scan_window in tracker/migrations/0011_scan_window.sql): the batch's clicks join
-- their messages' rows of the shared window, whose latest versions the upsert locks and
-- returns (a batch of another host writing the same message commits first, or waits);
-- scan_verdicts() judges the messages that may hold a scan: a click is a bot's if it hit
-- the honeypot ($16), lies within $14 s of a honeypot hit ($17), or lies in $12 s holding
-- $13 different links of its message ($18). Earlier clicks the batch shows to be a
-- scanner's come back (remark_at set) for the caller to re-mark (SQL.mark_clicks_bot)
-- after the people in the batch are answered: re-marking them here would cost every batch
-- the rollups' UPDATE trigger (it runs even for no rows), and could not see those another
-- process committed after this statement's snapshot was taken.
-- $5/$6 are the request's own verdict (HEAD, agent); $11 when the detector's clock saw each.
WITH batch AS (
    SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::timestamptz[],
                         $5::text[], $6::text[], $7::text[], $8::text[], $11::float8[])
        AS b(id, message_id, link_id, clicked_at, kind, bot_reason, ip, user_agent, seen)
), valid AS MATERIALIZED (
    SELECT b.id, b.link_id, b.clicked_at, b.ip::inet AS ip, b.user_agent,
           -- Consent as it stood at the click: granted now, and no change of it since
           -- (a spooled click replayed later, or a change racing this very click).
           coalesce(r.tracking_consent AND r.unsubscribed_at IS NULL, false)
           AND NOT EXISTS (SELECT 1 FROM consent_events e
                           WHERE e.recipient_id = r.id AND e.kind IN ('tracking', 'subscription')
                             AND e.created_at > b.clicked_at) AS consent,
           b.message_id,
           b.clicked_at < m.sent_at + make_interval(secs => $9) AS too_soon,
           b.bot_reason, b.seen, l.purpose = 'honeypot' AS honeypot
    FROM batch b
    JOIN outbox m ON m.id = b.message_id
    JOIN links l ON l.id = b.link_id AND l.campaign_id = m.campaign_id
    LEFT JOIN recipients r ON r.id = m.recipient_id
), scan AS (
    -- Rows taken in message order: two batches wait for each other, never deadlock.
    INSERT INTO scan_window AS w (message_id, ids, clicked_at, link_ids, seen, honeypot)
    SELECT message_id, array_agg(id ORDER BY seen), array_agg(clicked_at ORDER BY seen),
           array_agg(link_id ORDER BY seen), array_agg(seen ORDER BY seen),
           array_agg(honeypot ORDER BY seen)
    FROM valid GROUP BY message_id ORDER BY message_id
    ON CONFLICT (message_id) DO UPDATE SET
        touched_at = now(),
        -- The batch's clicks after the row's clicks of the last $14 s (by the time they
        -- were written; the row holds them in that order), the newest $15: a slice.
        (ids, clicked_at, link_ids, seen, honeypot) = (
            SELECT (w.ids || excluded.ids)[k:], (w.clicked_at || excluded.clicked_at)[k:],
                   (w.link_ids || excluded.link_ids)[k:], (w.seen || excluded.seen)[k:],
                   (w.honeypot || excluded.honeypot)[k:]
            FROM (SELECT greatest(
                    cardinality(w.ids) + cardinality(excluded.ids) - $15::int + 1,
                    CASE WHEN w.clicked_at[1] > now() - make_interval(secs => $14::float8) THEN 1
                         ELSE coalesce((SELECT min(i) FROM generate_subscripts(w.clicked_at, 1) i
                                        WHERE w.clicked_at[i]
                                              > now() - make_interval(secs => $14::float8)),
                                       cardinality(w.ids) + 1)
                    END) AS k
                  OFFSET 0) AS first_kept)  -- OFFSET 0: k worked out once, not per column
    RETURNING w.message_id, w.ids, w.clicked_at, w.link_ids, w.seen, w.honeypot
), span AS (
    SELECT message_id, min(seen) FILTER (WHERE NOT honeypot) AS first,
           max(seen) FILTER (WHERE NOT honeypot) AS last,
           array_agg(id) AS new_ids, array_agg(seen) FILTER (WHERE honeypot) AS new_hits
    FROM valid GROUP BY message_id
), verdicts AS MATERIALIZED (
    -- Judged only where there may be something to judge: $13 clicks or a honeypot hit.
    SELECT v.click_id AS id, v.click_at AS clicked_at, v.is_new AS new, v.reason, v.remark
    FROM scan s JOIN span p USING (message_id)
    CROSS JOIN LATERAL scan_verdicts(
        s.ids, s.clicked_at, s.link_ids, s.seen, s.honeypot, p.new_ids, p.first, p.last,
        coalesce(p.new_hits, '{}'), $12::float8, $13::int, $14::float8, $16::text, $17::text,
        $18::text) AS v
    WHERE cardinality(s.ids) >= $13::int OR true = ANY(s.honeypot)
), decided AS MATERIALIZED (
    SELECT v.*, coalesce(v.bot_reason, j.reason, CASE WHEN v.too_soon THEN $10 END) AS why
    FROM valid v LEFT JOIN verdicts j ON j.id = v.id AND j.new
), stored AS (
    INSERT INTO clicks (id, link_id, message_id, clicked_at, kind, bot_reason, ip, user_agent)
    SELECT id, link_id,
           CASE WHEN consent THEN message_id END,
           clicked_at,
           CASE WHEN why IS NULL THEN 'human' ELSE 'bot' END,
           why,
           CASE WHEN consent THEN ip END,
           CASE WHEN consent THEN user_agent END
    FROM decided
    ON CONFLICT DO NOTHING
)
-- The batch's valid clicks (remark_at NULL) with the reason each is a bot's (NULL: a person's),
-- then the earlier clicks to re-mark.
SELECT id, NULL::timestamptz AS remark_at, why AS reason FROM decided
UNION ALL
SELECT id, clicked_at, remark FROM verdicts WHERE NOT new AND remark IS NOT NULL

-- name: record_opens
WITH batch AS (
    SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::timestamptz[], $4::text[], $5::text[],
                         $6::text[], $7::text[])
        AS b(id, message_id, opened_at, kind, bot_reason, ip, user_agent)
), valid AS MATERIALIZED (
    SELECT b.id, b.message_id, b.opened_at, b.kind, b.bot_reason, b.ip::inet AS ip,
           b.user_agent, m.campaign_id,
           coalesce(r.tracking_consent AND r.unsubscribed_at IS NULL, false)
           AND NOT EXISTS (SELECT 1 FROM consent_events e
                           WHERE e.recipient_id = r.id AND e.kind IN ('tracking', 'subscription')
                             AND e.created_at > b.opened_at) AS consent
    FROM batch b
    JOIN outbox m ON m.id = b.message_id
    LEFT JOIN recipients r ON r.id = m.recipient_id
), stored AS (
    INSERT INTO opens (id, campaign_id, message_id, opened_at, kind, bot_reason, ip, user_agent)
    SELECT id, campaign_id, CASE WHEN consent THEN message_id END, opened_at, kind, bot_reason,
           CASE WHEN consent THEN ip END, CASE WHEN consent THEN user_agent END
    FROM valid
    ON CONFLICT DO NOTHING
)
SELECT id FROM valid

-- name: lock_event_tables
-- A transaction that writes clicks and opens in several statements (a spool replay) takes
-- both tables first, in the order erasure (hold_click_writes) does. ROW EXCLUSIVE: writers
-- do not block one another.
LOCK TABLE clicks, opens IN ROW EXCLUSIVE MODE

-- name: mark_clicks_bot
UPDATE clicks SET kind = 'bot', bot_reason = $3
WHERE (id, clicked_at) IN (SELECT * FROM unnest($1::bigint[], $2::timestamptz[]))
  AND kind = 'human'

-- name: sweep_scan_window
-- The scan detector's rows untouched for $1 s go (tracker/app.py, every few seconds): the
-- shared window never keeps a message's clicks longer than about a minute.
DELETE FROM scan_window WHERE touched_at < now() - make_interval(secs => $1)

-- name: forget_scan_window_of
-- Erasure: the scan detector's recent clicks of the person's messages (a minute at most).
DELETE FROM scan_window WHERE message_id IN (SELECT id FROM outbox WHERE recipient_id = $1)

-- name: link_target
SELECT url, campaign_id, purpose = 'honeypot' AS honeypot, per_message FROM links WHERE id = $1

-- name: message_link_url
-- Where a link that is the message's leads for that message (primary key lookup).
SELECT url FROM message_links WHERE message_id = $1 AND link_id = $2

-- name: claim_spool_file
INSERT INTO spool_replays (name, rows) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING name

-- name: deidentify_clicks_before
-- Retention: older clicks stay counted but no longer name a message, network or agent.
UPDATE clicks SET message_id = NULL, ip = NULL, user_agent = NULL
WHERE clicked_at < $1 AND message_id IS NOT NULL

-- name: deidentify_opens_before
UPDATE opens SET message_id = NULL, ip = NULL, user_agent = NULL
WHERE opened_at < $1 AND message_id IS NOT NULL

-- name: monthly_partitions
-- The monthly partitions of a table, with the month each one starts (from its name).
SELECT c.relname AS name, to_date(right(c.relname, 7), 'YYYY_MM') AS month
FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = $1::regclass AND c.relname ~ '_[0-9]{4}_[0-9]{2}$'
ORDER BY month

-- name: forget_month
-- A month of clicks or opens out of the report rollups, before retention drops its partition
-- (tracker/migrations/0006_rollups.sql).
SELECT forget_month($1, $2, $3)

-- name: delete_clicks_before
DELETE FROM clicks WHERE clicked_at < $1

-- name: delete_opens_before
DELETE FROM opens WHERE opened_at < $1

-- name: record_key_fingerprint
INSERT INTO key_fingerprints (fingerprint, role) VALUES ($1, $2)
ON CONFLICT (fingerprint, role) DO UPDATE SET last_seen = now()

-- name: keys_trackers_verify
-- The keys of the most recently started tracker: what the deployment verifies now.
SELECT fingerprint FROM key_fingerprints
WHERE role = 'verifies'
  AND last_seen = (SELECT max(last_seen) FROM key_fingerprints WHERE role = 'verifies')
ORDER BY fingerprint

-- name: recent_signing_keys
SELECT fingerprint, last_seen FROM key_fingerprints
WHERE role = 'signs' AND last_seen > now() - make_interval(days => $1)
ORDER BY last_seen DESC
