"""Slack adapter: parse payloads into engine commands, render cards, post and update messages.

Listeners acknowledge first, parse (pure), submit to the engine and render; they hold no
business rules: authority, staleness and idempotency are decided by the engine from the ledger.

Modules: ``ids`` (action ids, button values), ``parse`` (payloads -> commands, pure),
``blockkit`` (Block Kit limits), ``cards`` (Jinja2 -> Block Kit), ``commands`` and ``actions``
(Bolt listeners), ``answers`` (ephemeral answers), ``directory`` (user groups), ``packages``
(find a change package), ``notifier`` + ``outbox`` + ``storage`` (the thread, delivered in order),
``services`` (what listeners are given).
"""
