"""Resources: what a host has, what a job is given, how it is enforced and measured."""

from nbjobs.resources.allocation import Allocation

__all__ = ["Allocation"]
