"""The ops console: pages and the JSON API on the operators' listener, behind a login.

It reads the tracker's storage and is never imported by the tracker: `fairclick serve`
hands `console.app.install` to the tracker, which calls it when it builds the operators'
listener (tracker/operators.py).
"""
