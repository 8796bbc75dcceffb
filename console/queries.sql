-- SQL of the ops console's access control and its log of actions.

-- name: principal_by_token
UPDATE api_tokens SET last_used_at = now()
WHERE token_hash = $1
RETURNING name, role

-- name: insert_api_token
INSERT INTO api_tokens (name, token_hash, role) VALUES ($1, $2, $3)
ON CONFLICT (name) DO NOTHING
RETURNING id

-- name: log_action
INSERT INTO console_actions (actor, action, subject) VALUES ($1, $2, $3)

-- name: principal_by_session
-- An expired session is refused and deleted by the request that presents it.
WITH expired AS (
    DELETE FROM console_sessions WHERE id_hash = $1 AND expires_at <= now()
)
SELECT a.email, a.role
FROM console_sessions s JOIN admins a ON a.id = s.admin_id
WHERE s.id_hash = $1 AND s.expires_at > now()

-- name: admin_for_login
SELECT id, email, role, password_hash FROM admins WHERE lower(email) = lower($1)

-- name: update_password_hash
UPDATE admins SET password_hash = $2 WHERE id = $1

-- name: insert_session
INSERT INTO console_sessions (id_hash, admin_id, expires_at)
VALUES ($1, $2, now() + make_interval(secs => $3))

-- name: delete_session
DELETE FROM console_sessions WHERE id_hash = $1

-- name: delete_expired_sessions
DELETE FROM console_sessions WHERE expires_at <= now()

-- name: count_login_attempt
-- Counted before the password is checked, under the row's lock: concurrent tries are
-- counted one after the other, and none slips past a block another has just set. A
-- blocked try changes nothing; tries further apart than $2 seconds start the count again.
INSERT INTO console_login_failures AS f (subject, failures, last_failed_at, blocked_until)
VALUES ($1, 1, now(), now())
ON CONFLICT (subject) DO UPDATE SET
    failures = CASE
        WHEN f.blocked_until > now() THEN f.failures
        WHEN f.last_failed_at < now() - make_interval(secs => $2) THEN 1
        ELSE f.failures + 1
    END,
    last_failed_at = CASE WHEN f.blocked_until > now() THEN f.last_failed_at ELSE now() END
RETURNING failures, extract(epoch FROM blocked_until - now())::float8 AS wait

-- name: block_login
UPDATE console_login_failures
SET blocked_until = now() + make_interval(secs => $2)
WHERE subject = $1

-- name: uncount_login_attempt
UPDATE console_login_failures SET failures = greatest(failures - 1, 0) WHERE subject = $1

-- name: forget_login_failures
DELETE FROM console_login_failures WHERE subject = $1

-- name: forget_old_login_failures
DELETE FROM console_login_failures
WHERE last_failed_at < now() - make_interval(secs => $1) AND blocked_until < now()

-- name: insert_login_link
INSERT INTO console_login_links (token_hash, admin_id, expires_at)
VALUES ($1, $2, now() + make_interval(secs => $3))

-- name: use_login_link
-- Used once: the row goes whether or not it is still valid.
DELETE FROM console_login_links
WHERE token_hash = $1
RETURNING admin_id, expires_at > now() AS valid

-- name: admin_by_id
SELECT id, email, role FROM admins WHERE id = $1

-- name: insert_admin
INSERT INTO admins (email, password_hash, role) VALUES ($1, $2, $3)
ON CONFLICT (lower(email)) DO NOTHING
RETURNING id

-- name: reset_admin
UPDATE admins SET password_hash = $2, role = coalesce($3, role)
WHERE lower(email) = lower($1)
RETURNING id, role

-- name: end_sessions_of_admin
DELETE FROM console_sessions WHERE admin_id = $1

-- name: delete_admin
DELETE FROM admins WHERE lower(email) = lower($1) RETURNING id

-- name: list_admins
SELECT a.email, a.role, a.created_at,
       (SELECT count(*) FROM console_sessions s
        WHERE s.admin_id = a.id AND s.expires_at > now()) AS sessions
FROM admins a ORDER BY lower(a.email)

-- name: list_api_tokens
SELECT name, role, created_at, last_used_at FROM api_tokens ORDER BY name

-- name: delete_api_token
DELETE FROM api_tokens WHERE name = $1 RETURNING id

-- name: delete_expired_login_links
DELETE FROM console_login_links WHERE expires_at <= now()
