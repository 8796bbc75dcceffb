-- Consent proof that stands up (issue 11): what the person saw when they chose, under which
-- privacy policy, through which channel; children's erasures counted without the person.

-- Every wording a person was shown when a choice was recorded, kept once, by its SHA-256
-- (of the UTF-8 text). Filled when a wording is first used (tracker/wordings.py); the version
-- counts the wordings of one purpose in the order they were first used. It names nobody,
-- so erasure leaves it: the events that pointed at it are gone with the person.
CREATE TABLE consent_wordings (
    sha256        bytea PRIMARY KEY CHECK (octet_length(sha256) = 32),
    -- What the wording was shown for: 'page:format', 'page:tracking', 'page:subscription',
    -- 'one-click', 'import', 'operator', 'api'.
    purpose       text NOT NULL,
    version       integer NOT NULL CHECK (version > 0),
    text          text NOT NULL,
    first_used_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (purpose, version)
);

-- Events written before this migration keep NULLs here: their wording was not recorded.
ALTER TABLE consent_events
    ADD COLUMN channel text CHECK (channel IN ('page', 'one-click', 'import', 'operator', 'api')),
    ADD COLUMN wording_sha256 bytea REFERENCES consent_wordings (sha256),
    ADD COLUMN policy_url text,
    ADD COLUMN policy_version text,
    -- Who recorded it when it was not the person: 'cli:USER', 'session:ADMIN', 'token:NAME'.
    ADD COLUMN actor text;
UPDATE consent_events SET channel = CASE
    WHEN source = 'preference page' THEN 'page'
    WHEN source = 'one-click unsubscribe' THEN 'one-click'
    WHEN source LIKE 'import:%' THEN 'import'
END;
CREATE INDEX consent_events_wording_idx ON consent_events (wording_sha256);

-- Privacy policy section 7: a child's data is erased at once; the suppression list says why.
ALTER TABLE suppressions DROP CONSTRAINT suppression_hashes_reason_check;
ALTER TABLE suppressions ADD CONSTRAINT suppressions_reason_check
    CHECK (reason IN ('erased', 'bounced', 'complained', 'operator', 'minor'));

-- That an erasure happened, why and on which day, and nothing else: no address, no id, no
-- time finer than a day (which could be matched with another log).
CREATE TABLE erasure_counts (
    day       date NOT NULL,
    reason    text NOT NULL CHECK (reason IN ('request', 'operator', 'minor')),
    erasures  integer NOT NULL CHECK (erasures > 0),
    PRIMARY KEY (day, reason)
);
