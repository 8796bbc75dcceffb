-- Failed console logins, counted per account and per client address, in the database so
-- that every process of `serve --workers N` and every host behind a load balancer agree.
-- The subject is a SHA-256 digest of 'account:EMAIL' or 'address:IP': a mistyped or
-- guessed address is not kept readable.
CREATE TABLE console_login_failures (
    subject        bytea PRIMARY KEY,
    failures       integer NOT NULL,
    last_failed_at timestamptz NOT NULL,
    blocked_until  timestamptz NOT NULL
);

-- One-time login links (`fairclick quickstart`): the token's SHA-256 only; used once.
CREATE TABLE console_login_links (
    token_hash bytea PRIMARY KEY,
    admin_id   bigint NOT NULL REFERENCES admins (id) ON DELETE CASCADE,
    expires_at timestamptz NOT NULL
);
CREATE INDEX console_login_links_admin_idx ON console_login_links (admin_id);
