"""Adapters to live systems. Every failure comes back as data (Evidence.error, ActionResult,
ReadbackResult), never as an exception into the engine."""
