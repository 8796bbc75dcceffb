"""The fairclick tracker: redirects, preferences, reports and the data they own."""
