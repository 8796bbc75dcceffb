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
