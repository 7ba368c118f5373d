"""``python -m reliability.unsafe_cli ARGS``: the ``stagehold`` command line on the unsafe engine.

For the negative control only (see ``reliability.unsafe``).
"""

from __future__ import annotations

from reliability import unsafe

unsafe.install()

from bot.cli import run  # noqa: E402  (the engine must be patched before the CLI is built)

if __name__ == "__main__":
    run()
