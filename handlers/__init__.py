"""Slack adapter: parse payloads into engine commands, render cards, post and update messages.

Listeners acknowledge first, parse (pure), submit to the engine and render; they hold no
business rules: authority, staleness and idempotency are decided by the engine from the ledger.
"""
