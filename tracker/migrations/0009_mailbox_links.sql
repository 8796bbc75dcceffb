-- Download and erase need proof that the person owns the mailbox (issue 11).
--
-- The preference link (/p/TOKEN) is in every message, so anyone a message was forwarded to
-- can open it. Its two irreversible or revealing actions, downloading and erasing the data,
-- instead mail a one-time link to the address: a row here, named by a signed token of its
-- own purpose (tracker/tokens.py), valid 30 minutes, used at most once. The message that
-- carries it goes through the outbox like any other, as a message of no campaign.

CREATE TABLE mailbox_links (
    id           bigserial PRIMARY KEY,
    -- NULL once the person is erased: the link then says so, and names nobody.
    recipient_id bigint REFERENCES recipients (id) ON DELETE SET NULL,
    action       text NOT NULL CHECK (action IN ('download', 'erase')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    -- Set in the same transaction as the download or the erasure, only while it is NULL
    -- and the link unexpired: a link acts once.
    used_at      timestamptz
);
-- The rate limit reads a person's links of the last hour.
CREATE INDEX mailbox_links_recipient_idx ON mailbox_links (recipient_id, created_at);

-- A message is a campaign's or carries a mailbox link, never both: no campaign pauses,
-- tracks or counts it.
ALTER TABLE outbox
    ALTER COLUMN campaign_id DROP NOT NULL,
    ADD COLUMN mailbox_link_id bigint UNIQUE REFERENCES mailbox_links (id) ON DELETE CASCADE,
    ADD CONSTRAINT outbox_campaign_or_mailbox_link
        CHECK ((campaign_id IS NULL) <> (mailbox_link_id IS NULL));

-- The rollups (0006) count messages per campaign: a message of no campaign is in no report.
-- Dropped here, where every writer of outbox_counts passes (the statement triggers on
-- outbox and rebuild_rollups()), rather than in each of them.
CREATE FUNCTION outbox_counts_of_campaigns_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.campaign_id IS NULL THEN
        RETURN NULL;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER outbox_counts_of_campaigns_only BEFORE INSERT ON outbox_counts
    FOR EACH ROW EXECUTE FUNCTION outbox_counts_of_campaigns_only();
