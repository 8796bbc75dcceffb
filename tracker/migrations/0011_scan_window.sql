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
-- by reports, exports or the console), and holds a minute at most:
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
