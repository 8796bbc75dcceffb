"""The mailer's named SQL blocks (mailer/queries.sql)."""

from tracker.queries import load_queries

SQL = load_queries("mailer")
