-- Clicks and opens keep their link, message and campaign ids without foreign keys.
--
-- Each check of those keys read and share-locked the parent outbox/links row for
-- every click (a tuple lock, so a write, even to an old message), and cost about
-- as much PostgreSQL time as the rest of writing the click. What they guarded is
-- already true by construction: the recording statements (tracker/queries.sql)
-- insert only (message, link) pairs they have just joined from outbox and links,
-- and campaigns, links and outbox rows are never deleted (erasure anonymises the
-- clicks and opens themselves). tests/test_clicks.py holds the recording
-- statement to that.
ALTER TABLE clicks DROP CONSTRAINT clicks_link_id_fkey;
ALTER TABLE clicks DROP CONSTRAINT clicks_message_id_fkey;
ALTER TABLE opens DROP CONSTRAINT opens_campaign_id_fkey;
ALTER TABLE opens DROP CONSTRAINT opens_message_id_fkey;
