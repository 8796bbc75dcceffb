-- The scan detector's memory, shared by every tracker process and host (issue 12).
--
-- Scanners fetch every link of a message in a moment, and follow the hidden honeypot link
-- people never see (tracker/bots.py). Judging that needs the recent clicks of each message,
-- wherever they arrived: with `serve --workers N` or several hosts on one database, a burst
-- split between processes went unseen when each process remembered only its own clicks.
--
-- Why it names messages, and how long: an anonymous click (no consent) is stored as link
-- and time only, yet the earlier clicks of a burst must be re-marked as a bot's, so this
-- table ties a click's key to its message. It is used for this judgement only (never read
-- by reports, exports or the console), and holds about a minute (65 s at most):
--   * every batch that touches a message's row drops its clicks older than 60 s
--     (HONEYPOT_SECONDS: the widest window judged);
--   * every tracker process deletes the rows untouched for 60 s, every 5 s
--     (tracker/app.py), so no click stays here more than 65 s;
--   * erasure deletes the rows of the person's messages (tracker/consent.py);
--   * UNLOGGED: never in the WAL, backups or replicas, and emptied by crash recovery.
-- Written only by the statement that records a batch of clicks (tracker/queries.sql
-- record_clicks), which judges the batch against it in the same statement: one round trip,
-- and two hosts writing clicks of one message take turns on its row (INSERT ... ON CONFLICT
-- DO UPDATE locks it and reads its latest version), so neither misses the other's clicks.
CREATE UNLOGGED TABLE scan_window (
    message_id    bigint PRIMARY KEY,
    touched_at    timestamptz NOT NULL DEFAULT now(),
    -- The message's recent clicks, in arrival order (at most REMEMBERED_CLICKS): each
    -- click's key in clicks (id, clicked_at), its link, when the detector's clock saw it
    -- (seconds; the wall clock in production, so that hosts compare) and whether it hit
    -- the honeypot link.
    ids           bigint[] NOT NULL,
    clicked_at    timestamptz[] NOT NULL,
    link_ids      bigint[] NOT NULL,
    seen          float8[] NOT NULL,
    honeypot      boolean[] NOT NULL
) WITH (fillfactor = 50);  -- room on the page: a batch's update of a row stays HOT

-- The verdicts on one message's clicks in the window (its arrays, as record_clicks has just
-- written them), given the batch's clicks of it (new_ids, their first and last time on the
-- detector's clock, and when among them the honeypot was hit). A function, called only for
-- messages with something to judge, so that the recording statement's plan stays small
-- for the batches (nearly all) that have nothing to judge. For each click of the window:
-- reason, why it is a scanner's (the honeypot link itself; within honeypot_seconds of a
-- hit; or in a window of burst_seconds, ending at or after one of the batch's clicks,
-- that holds burst_links different links); remark, why an earlier click is to be
-- re-marked for what the batch shows (a new hit near it, or such a burst).
CREATE FUNCTION scan_verdicts(
    ids bigint[], clicked_at timestamptz[], link_ids bigint[], seen float8[], honeypot boolean[],
    new_ids bigint[], first float8, last float8, new_hits float8[],
    burst_seconds float8, burst_links int, honeypot_seconds float8,
    honeypot_reason text, after_honeypot_reason text, burst_reason text
) RETURNS TABLE (click_id bigint, click_at timestamptz, is_new boolean, reason text, remark text)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    hits float8[] := ARRAY(SELECT h.t FROM unnest(seen, honeypot) AS h(t, hit) WHERE h.hit);
    bursts float8[] := ARRAY(
        SELECT d.t FROM unnest(link_ids, seen, honeypot) AS d(l, t, hit)
        WHERE NOT d.hit AND d.t BETWEEN first AND last + burst_seconds
          AND (SELECT count(DISTINCT x.l) FROM unnest(link_ids, seen, honeypot) AS x(l, t, hit)
               WHERE NOT x.hit AND x.t BETWEEN d.t - burst_seconds AND d.t) >= burst_links);
BEGIN
    IF cardinality(hits) = 0 AND cardinality(bursts) = 0 THEN
        RETURN;
    END IF;
    RETURN QUERY
    SELECT e.id, e.at, e.id = ANY(new_ids),
           CASE WHEN e.hit THEN honeypot_reason
                WHEN EXISTS (SELECT 1 FROM unnest(hits) t WHERE abs(t - e.t) <= honeypot_seconds)
                THEN after_honeypot_reason
                WHEN EXISTS (SELECT 1 FROM unnest(bursts) t WHERE e.t BETWEEN t - burst_seconds AND t)
                THEN burst_reason
           END,
           CASE WHEN EXISTS (SELECT 1 FROM unnest(new_hits) t
                             WHERE abs(t - e.t) <= honeypot_seconds)
                THEN after_honeypot_reason
                WHEN EXISTS (SELECT 1 FROM unnest(bursts) t WHERE e.t BETWEEN t - burst_seconds AND t)
                THEN burst_reason
           END
    FROM unnest(ids, clicked_at, seen, honeypot) AS e(id, at, t, hit);
END
$$;
