"""The mailer: campaigns rendered per recipient, tracked as consent allows, sent over SMTP."""
