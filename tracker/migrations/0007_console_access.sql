-- Who may use the ops console and its API. Secrets are stored only as hashes: passwords
-- as argon2id strings, session ids and API tokens as SHA-256 digests (they are long random
-- values, so a fast hash is enough, and a stolen table opens nothing).
CREATE TABLE admins (
    id            bigserial PRIMARY KEY,
    email         text NOT NULL,
    password_hash text NOT NULL,
    role          text NOT NULL DEFAULT 'operator' CHECK (role IN ('viewer', 'operator')),
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX admins_email_key ON admins (lower(email));

CREATE TABLE console_sessions (
    id_hash    bytea PRIMARY KEY,
    admin_id   bigint NOT NULL REFERENCES admins (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
CREATE INDEX console_sessions_admin_idx ON console_sessions (admin_id);

CREATE TABLE api_tokens (
    id           bigserial PRIMARY KEY,
    name         text NOT NULL UNIQUE,
    token_hash   bytea NOT NULL UNIQUE,
    role         text NOT NULL CHECK (role IN ('viewer', 'operator')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz
);

-- What operators did through the console or API that changes or reveals data about people
-- (pause, resume, cancel, erase, exports): who, what, about which campaign or person, when.
-- The subject of an erasure is kept as "recipient #id", never the address.
CREATE TABLE console_actions (
    id         bigserial PRIMARY KEY,
    actor      text NOT NULL,
    action     text NOT NULL,
    subject    text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
