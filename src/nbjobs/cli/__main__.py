"""`python -m nbjobs.cli`."""

from nbjobs.cli import main

main()
