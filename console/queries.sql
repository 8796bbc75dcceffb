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
