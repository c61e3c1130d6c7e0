"""`flask --app wsgi doctor`, by topic: relay, database, DNS, send test, command."""
