-- The suppression list keeps a keyed hash of each address, never the address itself.
--
-- Erased, hard-bounced (5.1.1) and complaining addresses must never be mailed again,
-- even when an old list is imported again, yet erasure must leave nothing that names
-- the person. So the list holds HMAC-SHA256(suppression key, normalised address): it
-- answers "is this address suppressed?" for an address we are given, and cannot be
-- read back into addresses. The key is this deployment's own (created here, kept in
-- the database), so a hash means nothing to anyone without this database, and the same
-- address hashes differently in every deployment.
--
-- The hash is computed in the database (suppression_hash below), so the statements that
-- queue mail stay single statements and there is one implementation of it, not two to
-- keep in step. PostgreSQL has sha256() built in but no hmac() without pgcrypto (not
-- available on the embedded server, and not always installable): HMAC (RFC 2104) is
-- built from sha256() here, with the key's two pads computed once and stored.

-- How an address is compared, everywhere: surrounding whitespace trimmed (the
-- characters Python's str.strip() removes), Unicode NFC, then lower-cased. The whole
-- address is lower-cased, local part too: mail systems treat it case-insensitively in
-- practice, and a false "suppressed" costs a mail where a false "not suppressed" mails
-- someone who asked us never to. Lower-casing uses the built-in pg_c_utf8 collation
-- (Unicode simple case mapping, PostgreSQL 17+): the same on every server, whatever its
-- locale. On an older server, or one not in UTF-8, the database's own lower() is used
-- (and NFC only in UTF-8). The domain is hashed as written: imports accept only ASCII
-- domains, so an internationalised domain is always in its xn-- (A-label) form.
DO $$
DECLARE
    whitespace constant text := U&'\0009\000A\000B\000C\000D\001C\001D\001E\001F\0020\0085\00A0'
        || U&'\1680\2000\2001\2002\2003\2004\2005\2006\2007\2008\2009\200A\2028\2029\202F\205F\3000';
    utf8 constant boolean := pg_encoding_to_char(
        (SELECT encoding FROM pg_database WHERE datname = current_database())) = 'UTF8';
    body text := format('btrim(address, %L)', whitespace);
BEGIN
    IF utf8 THEN
        body := format('normalize(%s, NFC)', body);
    END IF;
    IF utf8 AND current_setting('server_version_num')::int >= 170000 THEN
        body := format('lower(%s COLLATE pg_c_utf8)', body);
    ELSE
        body := format('lower(%s)', body);
    END IF;
    EXECUTE format(
        'CREATE FUNCTION suppression_address(address text) RETURNS text'
        ' LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE RETURN %s', body);
END
$$;

-- HMAC's key XOR a pad byte (0x36 inner, 0x5c outer), for a 64-byte key (SHA-256's block).
CREATE FUNCTION hmac_sha256_pad(key bytea, pad integer) RETURNS bytea
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN (SELECT string_agg(set_byte('\x00'::bytea, 0, get_byte(key, i) # pad), ''::bytea ORDER BY i)
        FROM generate_series(0, 63) AS i);

-- One row: this deployment's suppression key. 64 bytes from four gen_random_uuid() (built
-- in, from the server's strong random source: 488 random bits); created here rather than
-- on first use from Python because the entries kept so far must be hashed by this very
-- migration, and because then every statement can rely on it being there.
CREATE TABLE suppression_key (
    single    boolean PRIMARY KEY DEFAULT true CHECK (single),
    key       bytea NOT NULL CHECK (octet_length(key) = 64),
    inner_pad bytea GENERATED ALWAYS AS (hmac_sha256_pad(key, 54)) STORED,
    outer_pad bytea GENERATED ALWAYS AS (hmac_sha256_pad(key, 92)) STORED,
    created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO suppression_key (key)
SELECT uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid())
       || uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid());

-- Without the key no suppressed address would be recognised again (and a new key cannot
-- recompute hashes of addresses we no longer have): it is never changed or removed.
CREATE FUNCTION refuse_suppression_key_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the suppression key is never changed or removed: without it, erased '
        'and bounced addresses would be mailed again';
END
$$;
CREATE TRIGGER suppression_key_is_kept BEFORE UPDATE OR DELETE ON suppression_key
    FOR EACH ROW EXECUTE FUNCTION refuse_suppression_key_change();
CREATE TRIGGER suppression_key_is_not_truncated BEFORE TRUNCATE ON suppression_key
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_suppression_key_change();

-- HMAC-SHA256(suppression key, UTF-8 of the normalised address): 32 bytes.
CREATE FUNCTION suppression_hash(address text) RETURNS bytea
LANGUAGE sql STABLE STRICT PARALLEL SAFE
RETURN (SELECT sha256(k.outer_pad || sha256(k.inner_pad
                                            || convert_to(suppression_address(address), 'UTF8')))
        FROM suppression_key k);

CREATE TABLE suppression_hashes (
    address_hash bytea PRIMARY KEY CHECK (octet_length(address_hash) = 32),
    -- Why, and nothing more: a bounce's server reply would quote the address.
    reason       text NOT NULL CHECK (reason IN ('erased', 'bounced', 'complained', 'operator')),
    created_at   timestamptz NOT NULL DEFAULT now()
);
-- Every entry so far came from a 5.1.1 bounce (the reason held the server's reply).
INSERT INTO suppression_hashes (address_hash, reason, created_at)
SELECT suppression_hash(email), 'bounced', min(created_at) FROM suppressions GROUP BY 1;
DROP TABLE suppressions;
ALTER TABLE suppression_hashes RENAME TO suppressions;
ALTER INDEX suppression_hashes_pkey RENAME TO suppressions_pkey;
