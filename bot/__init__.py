"""Process entry and wiring: the only package that reads settings, the clock and the environment."""
