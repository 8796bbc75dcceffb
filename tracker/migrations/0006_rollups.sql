-- Reports read rollups (issue 10): counts kept exact by the writers, never a scan of clicks.
--
-- Part 1: what the outbox records for the console. audience is who the message was queued
-- for (the recipient's format and tracking consent when queued: the denominators of the
-- console's rates); outcome_at is when a message failed or was lost after DATA.
ALTER TABLE outbox
    ADD COLUMN audience   text CHECK (audience IN ('html_consent', 'html_no_consent', 'text')),
    ADD COLUMN outcome_at timestamptz;
-- Messages queued before this migration: the recipient's choices as they stand now (an
-- erased person's message, with nobody to ask, counts as without consent).
UPDATE outbox o SET audience = CASE
        WHEN coalesce(o.format, r.format, 'html') = 'text' THEN 'text'
        WHEN coalesce(r.tracking_consent AND r.unsubscribed_at IS NULL, false) THEN 'html_consent'
        ELSE 'html_no_consent' END
FROM outbox m LEFT JOIN recipients r ON r.id = m.recipient_id
WHERE m.id = o.id;
-- The failures of a campaign, listed without reading its delivered messages.
CREATE INDEX outbox_failures_idx ON outbox (campaign_id, id) WHERE status IN ('failed', 'unknown');
CREATE INDEX campaigns_newest_idx ON campaigns (created_at DESC, id DESC);

-- Part 2: the rollups. Reports read these, never the clicks, opens or outbox rows. They are
-- kept exact by statement-level triggers on clicks, opens and outbox (below): whatever
-- writes those tables (recording a batch, erasure, retention, bot re-marking, a spool
-- replay, a status change of a message) moves the rollups in its own statement, so they
-- cannot drift. One trigger run per statement aggregates the statement's rows (its
-- transition tables) and adds the differences, in key order: two writers of the same rows
-- take their locks in the same order and wait for each other instead of deadlocking.
-- Rows that drop to zero stay (a later click needs them again); readers skip them.
--
-- Not seen by triggers: TRUNCATE and dropping or detaching a partition. Retention drops
-- monthly partitions after uncount_partition() took their rows out of the rollups (in the
-- same transaction); rebuild_rollups() recounts everything from scratch.

-- The template's link a links row belongs to: the first of the rows with the same url, name,
-- purpose and per_message (one per occurrence of a link in a message), as reports group them.
ALTER TABLE links ADD COLUMN group_id bigint;
UPDATE links l SET group_id = g.group_id
FROM (SELECT id, min(id) OVER (PARTITION BY campaign_id, url, name, purpose, per_message)
             AS group_id FROM links) g
WHERE g.id = l.id;
CREATE INDEX links_group_idx ON links (campaign_id, url, name, purpose, per_message, id);

CREATE FUNCTION set_link_group() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.group_id := coalesce(
        (SELECT min(id) FROM links
         WHERE campaign_id = NEW.campaign_id AND url = NEW.url AND name = NEW.name
           AND purpose = NEW.purpose AND per_message = NEW.per_message),
        NEW.id);
    RETURN NEW;
END
$$;
CREATE TRIGGER links_group BEFORE INSERT ON links FOR EACH ROW EXECUTE FUNCTION set_link_group();

-- Clicks per template link, UTC hour, kind and whether the click names a message.
CREATE TABLE click_hours (
    campaign_id bigint NOT NULL,
    hour        timestamptz NOT NULL,
    group_id    bigint NOT NULL,
    kind        text NOT NULL,
    identified  boolean NOT NULL,
    clicks      bigint NOT NULL,
    PRIMARY KEY (campaign_id, hour, group_id, kind, identified)
);
-- The same over all time, with the bot reason ('' for none): what a campaign report reads.
CREATE TABLE click_totals (
    campaign_id bigint NOT NULL,
    group_id    bigint NOT NULL,
    kind        text NOT NULL,
    identified  boolean NOT NULL,
    reason      text NOT NULL,
    clicks      bigint NOT NULL,
    PRIMARY KEY (campaign_id, group_id, kind, identified, reason)
);
-- Identified human clicks per message and template link (group_id 0: all links of the
-- message): unique clickers change exactly when one of these goes from 0 or to 0.
CREATE TABLE message_clicks (
    message_id bigint NOT NULL,
    group_id   bigint NOT NULL,
    clicks     integer NOT NULL,
    PRIMARY KEY (message_id, group_id)
);
-- Unique clickers: messages (so recipients: one message per recipient and campaign) with an
-- identified human click, per template link (group_id 0: on any link of the campaign).
CREATE TABLE clickers (
    campaign_id bigint NOT NULL,
    group_id    bigint NOT NULL,
    clickers    bigint NOT NULL,
    PRIMARY KEY (campaign_id, group_id)
);
CREATE TABLE open_hours (
    campaign_id bigint NOT NULL,
    hour        timestamptz NOT NULL,
    kind        text NOT NULL,
    identified  boolean NOT NULL,
    opens       bigint NOT NULL,
    PRIMARY KEY (campaign_id, hour, kind, identified)
);
-- Identified human opens per message, and the messages with one per campaign.
CREATE TABLE message_opens (
    message_id bigint PRIMARY KEY,
    opens      integer NOT NULL
);
CREATE TABLE openers (
    campaign_id bigint PRIMARY KEY,
    openers     bigint NOT NULL
);
-- Messages per campaign by status, format sent and audience queued ('' for none).
CREATE TABLE outbox_counts (
    campaign_id bigint NOT NULL,
    status      text NOT NULL,
    format      text NOT NULL,
    audience    text NOT NULL,
    messages    bigint NOT NULL,
    PRIMARY KEY (campaign_id, status, format, audience)
);

-- The counting functions, made once per kind of statement from one text each: %1$s is the
-- statement's rows with n = +1 (inserted, or as they are after an update) or -1 (deleted,
-- or as they were before).
DO $migration$
DECLARE
    clicks_sql constant text := $sql$
        INSERT INTO click_hours AS r (campaign_id, hour, group_id, kind, identified, clicks)
        SELECT l.campaign_id, date_trunc('hour', s.clicked_at, 'UTC'), l.group_id, s.kind,
               s.message_id IS NOT NULL, sum(s.n)
        FROM (%1$s) s JOIN links l ON l.id = s.link_id
        GROUP BY 1, 2, 3, 4, 5 HAVING sum(s.n) <> 0 ORDER BY 1, 2, 3, 4, 5
        ON CONFLICT (campaign_id, hour, group_id, kind, identified)
        DO UPDATE SET clicks = r.clicks + excluded.clicks;
        --
        INSERT INTO click_totals AS r (campaign_id, group_id, kind, identified, reason, clicks)
        SELECT l.campaign_id, l.group_id, s.kind, s.message_id IS NOT NULL,
               coalesce(s.bot_reason, ''), sum(s.n)
        FROM (%1$s) s JOIN links l ON l.id = s.link_id
        GROUP BY 1, 2, 3, 4, 5 HAVING sum(s.n) <> 0 ORDER BY 1, 2, 3, 4, 5
        ON CONFLICT (campaign_id, group_id, kind, identified, reason)
        DO UPDATE SET clicks = r.clicks + excluded.clicks;
        --
        WITH d AS (
            SELECT s.message_id, g.group_id, l.campaign_id, sum(s.n) AS n
            FROM (%1$s) s JOIN links l ON l.id = s.link_id
            CROSS JOIN LATERAL (VALUES (l.group_id), (0::bigint)) AS g (group_id)
            WHERE s.kind = 'human' AND s.message_id IS NOT NULL
            GROUP BY 1, 2, 3 HAVING sum(s.n) <> 0
        ), counted AS (
            INSERT INTO message_clicks AS m (message_id, group_id, clicks)
            SELECT message_id, group_id, n FROM d ORDER BY 1, 2
            ON CONFLICT (message_id, group_id) DO UPDATE SET clicks = m.clicks + excluded.clicks
            RETURNING m.message_id, m.group_id, m.clicks
        )
        INSERT INTO clickers AS c (campaign_id, group_id, clickers)
        SELECT d.campaign_id, d.group_id,
               sum((counted.clicks > 0)::int - (counted.clicks - d.n > 0)::int)
        FROM counted JOIN d USING (message_id, group_id)
        GROUP BY 1, 2 HAVING sum((counted.clicks > 0)::int - (counted.clicks - d.n > 0)::int) <> 0
        ORDER BY 1, 2
        ON CONFLICT (campaign_id, group_id) DO UPDATE SET clickers = c.clickers + excluded.clickers;
    $sql$;
    opens_sql constant text := $sql$
        INSERT INTO open_hours AS r (campaign_id, hour, kind, identified, opens)
        SELECT s.campaign_id, date_trunc('hour', s.opened_at, 'UTC'), s.kind,
               s.message_id IS NOT NULL, sum(s.n)
        FROM (%1$s) s
        GROUP BY 1, 2, 3, 4 HAVING sum(s.n) <> 0 ORDER BY 1, 2, 3, 4
        ON CONFLICT (campaign_id, hour, kind, identified) DO UPDATE SET opens = r.opens + excluded.opens;
        --
        WITH d AS (
            SELECT s.message_id, s.campaign_id, sum(s.n) AS n
            FROM (%1$s) s
            WHERE s.kind = 'human' AND s.message_id IS NOT NULL
            GROUP BY 1, 2 HAVING sum(s.n) <> 0
        ), counted AS (
            INSERT INTO message_opens AS m (message_id, opens)
            SELECT message_id, n FROM d ORDER BY 1
            ON CONFLICT (message_id) DO UPDATE SET opens = m.opens + excluded.opens
            RETURNING m.message_id, m.opens
        )
        INSERT INTO openers AS o (campaign_id, openers)
        SELECT d.campaign_id, sum((counted.opens > 0)::int - (counted.opens - d.n > 0)::int)
        FROM counted JOIN d USING (message_id)
        GROUP BY 1 HAVING sum((counted.opens > 0)::int - (counted.opens - d.n > 0)::int) <> 0
        ORDER BY 1
        ON CONFLICT (campaign_id) DO UPDATE SET openers = o.openers + excluded.openers;
    $sql$;
    outbox_sql constant text := $sql$
        INSERT INTO outbox_counts AS r (campaign_id, status, format, audience, messages)
        SELECT s.campaign_id, s.status, coalesce(s.format, ''), coalesce(s.audience, ''), sum(s.n)
        FROM (%1$s) s
        GROUP BY 1, 2, 3, 4 HAVING sum(s.n) <> 0 ORDER BY 1, 2, 3, 4
        ON CONFLICT (campaign_id, status, format, audience)
        DO UPDATE SET messages = r.messages + excluded.messages;
    $sql$;
    columns constant jsonb := jsonb_build_object(
        'clicks', 'link_id, message_id, clicked_at, kind, bot_reason',
        'opens', 'campaign_id, message_id, opened_at, kind',
        'outbox', 'campaign_id, status, format, audience');
    bodies constant jsonb := jsonb_build_object(
        'clicks', clicks_sql, 'opens', opens_sql, 'outbox', outbox_sql);
    tab text;
    op text;
    cols text;
    rows_sql text;
    statement text;
    partition_body text;
BEGIN
    FOREACH tab IN ARRAY ARRAY['clicks', 'opens', 'outbox'] LOOP
        cols := columns ->> tab;
        FOREACH op IN ARRAY ARRAY['insert', 'update', 'delete'] LOOP
            rows_sql := CASE op
                WHEN 'insert' THEN format('SELECT %s, 1 AS n FROM new_rows', cols)
                WHEN 'delete' THEN format('SELECT %s, -1 AS n FROM old_rows', cols)
                ELSE format('SELECT %1$s, 1 AS n FROM new_rows UNION ALL '
                            'SELECT %1$s, -1 AS n FROM old_rows', cols)
            END;
            EXECUTE format(
                'CREATE FUNCTION count_%1$s_%2$s() RETURNS trigger LANGUAGE plpgsql AS %3$L',
                tab, op,
                format('BEGIN %s RETURN NULL; END', format(bodies ->> tab, rows_sql)));
            EXECUTE format(
                'CREATE TRIGGER %1$s_count_%2$s AFTER %3$s ON %1$s REFERENCING %4$s'
                ' FOR EACH STATEMENT EXECUTE FUNCTION count_%1$s_%2$s()',
                tab, op, upper(op),
                CASE op WHEN 'insert' THEN 'NEW TABLE AS new_rows'
                        WHEN 'delete' THEN 'OLD TABLE AS old_rows'
                        ELSE 'OLD TABLE AS old_rows NEW TABLE AS new_rows' END);
        END LOOP;
        CONTINUE WHEN tab = 'outbox';
        -- uncount_clicks(partition) / uncount_opens(partition): as if its rows were deleted.
        partition_body := '';
        FOREACH statement IN ARRAY string_to_array(
                format(bodies ->> tab, format('SELECT %s, -1 AS n FROM %%1$s', cols)),
                '        --') LOOP
            partition_body := partition_body || format('EXECUTE format(%L, part); ', statement);
        END LOOP;
        EXECUTE format(
            'CREATE FUNCTION uncount_%1$s(part regclass) RETURNS void LANGUAGE plpgsql AS %2$L',
            tab, format('BEGIN %s END', partition_body));
    END LOOP;
END
$migration$;

-- Take a partition's rows out of the rollups, before retention drops it (a DROP fires no
-- trigger): its rows are read once and counted as a DELETE would count them.
CREATE FUNCTION uncount_partition(part regclass) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    parent regclass := (SELECT inhparent FROM pg_inherits WHERE inhrelid = part);
BEGIN
    IF parent = 'clicks'::regclass THEN
        PERFORM uncount_clicks(part);
    ELSIF parent = 'opens'::regclass THEN
        PERFORM uncount_opens(part);
    ELSE
        RAISE EXCEPTION '% is no partition of clicks or opens', part;
    END IF;
END
$$;

-- Every rollup recounted from the clicks, opens and outbox rows: what this migration does for
-- the data already there, and a repair should a rollup ever be doubted (`SELECT
-- rebuild_rollups()`; tracker.rollups.rebuild_rollups). Writers wait until it commits.
CREATE FUNCTION rebuild_rollups() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    LOCK TABLE clicks, opens, outbox IN SHARE MODE;
    TRUNCATE click_hours, click_totals, message_clicks, clickers, open_hours, message_opens,
             openers, outbox_counts;
    -- Links written with triggers off, or two occurrences of one link registered at once by
    -- two senders (each saw no group yet): one group again.
    UPDATE links l SET group_id = g.group_id
    FROM (SELECT id, min(id) OVER (PARTITION BY campaign_id, url, name, purpose, per_message)
                 AS group_id FROM links) g
    WHERE g.id = l.id AND l.group_id IS DISTINCT FROM g.group_id;
    INSERT INTO click_hours (campaign_id, hour, group_id, kind, identified, clicks)
    SELECT l.campaign_id, date_trunc('hour', c.clicked_at, 'UTC'), l.group_id, c.kind,
           c.message_id IS NOT NULL, count(*)
    FROM clicks c JOIN links l ON l.id = c.link_id
    GROUP BY 1, 2, 3, 4, 5;
    INSERT INTO click_totals (campaign_id, group_id, kind, identified, reason, clicks)
    SELECT campaign_id, group_id, kind, identified, reason, sum(n) FROM (
        SELECT l.campaign_id, l.group_id, c.kind, c.message_id IS NOT NULL AS identified,
               coalesce(c.bot_reason, '') AS reason, count(*) AS n
        FROM clicks c JOIN links l ON l.id = c.link_id
        GROUP BY c.link_id, 1, 2, 3, 4, 5
    ) per_link GROUP BY 1, 2, 3, 4, 5;
    INSERT INTO message_clicks (message_id, group_id, clicks)
    SELECT c.message_id, g.group_id, count(*)
    FROM clicks c JOIN links l ON l.id = c.link_id
    CROSS JOIN LATERAL (VALUES (l.group_id), (0::bigint)) AS g (group_id)
    WHERE c.kind = 'human' AND c.message_id IS NOT NULL
    GROUP BY 1, 2;
    INSERT INTO clickers (campaign_id, group_id, clickers)
    SELECT l.campaign_id, g.group_id, count(DISTINCT c.message_id)
    FROM clicks c JOIN links l ON l.id = c.link_id
    CROSS JOIN LATERAL (VALUES (l.group_id), (0::bigint)) AS g (group_id)
    WHERE c.kind = 'human' AND c.message_id IS NOT NULL
    GROUP BY 1, 2;
    INSERT INTO open_hours (campaign_id, hour, kind, identified, opens)
    SELECT campaign_id, date_trunc('hour', opened_at, 'UTC'), kind, message_id IS NOT NULL,
           count(*)
    FROM opens GROUP BY 1, 2, 3, 4;
    INSERT INTO message_opens (message_id, opens)
    SELECT message_id, count(*) FROM opens
    WHERE kind = 'human' AND message_id IS NOT NULL GROUP BY 1;
    INSERT INTO openers (campaign_id, openers)
    SELECT campaign_id, count(DISTINCT message_id) FROM opens
    WHERE kind = 'human' AND message_id IS NOT NULL GROUP BY 1;
    INSERT INTO outbox_counts (campaign_id, status, format, audience, messages)
    SELECT campaign_id, status, coalesce(format, ''), coalesce(audience, ''), count(*)
    FROM outbox GROUP BY 1, 2, 3, 4;
END
$$;
SELECT rebuild_rollups();
