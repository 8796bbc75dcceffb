-- Links that carry personal data belong to the message (issue 9, item 5).
--
-- A template link whose href reads anything about the recipient (say
-- "?who={{ recipient.email|urlencode }}") renders to a different URL for each
-- person. Its `links` row now holds only what the template wrote (per_message),
-- and the URL rendered for one message is kept in message_links, which erasure
-- deletes with the person. occurrence tells apart the renderings of one written
-- link inside one message (a link in a {% for %} loop): the click token still
-- carries only (message id, link id).
ALTER TABLE links
    ADD COLUMN per_message boolean NOT NULL DEFAULT false,
    ADD COLUMN occurrence  integer NOT NULL DEFAULT 0;
ALTER TABLE links DROP CONSTRAINT links_campaign_id_url_name_key;
ALTER TABLE links ADD CONSTRAINT links_campaign_id_url_name_key
    UNIQUE (campaign_id, url, name, per_message, occurrence);

CREATE TABLE message_links (
    message_id bigint NOT NULL REFERENCES outbox (id) ON DELETE CASCADE,
    link_id    bigint NOT NULL REFERENCES links (id) ON DELETE CASCADE,
    url        text NOT NULL,  -- the redirect target of this message's click on the link
    PRIMARY KEY (message_id, link_id)
);
