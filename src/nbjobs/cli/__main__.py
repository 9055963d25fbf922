"""`python -m nbjobs.cli`."""

from nbjobs.cli import entry

entry()
