-- Fingerprints (tracker.tokens.key_fingerprint, never the keys) of the secret keys in
-- use: which keys trackers verify and which senders sign with, so a sender whose key
-- no tracker verifies (all its links would answer 404) is refused before it sends.
CREATE TABLE key_fingerprints (
    fingerprint text NOT NULL CHECK (fingerprint ~ '^[0-9a-f]{16}$'),
    -- verifies: a tracker (serve, quickstart) accepts tokens signed with it;
    -- signs: a sender (send, worker, quickstart) signed mail with it.
    role        text NOT NULL CHECK (role IN ('verifies', 'signs')),
    first_seen  timestamptz NOT NULL DEFAULT now(),
    -- A tracker records all its keys in one transaction, so they share last_seen: the
    -- keys of the most recently started tracker are those with the latest last_seen.
    last_seen   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (fingerprint, role)
);
