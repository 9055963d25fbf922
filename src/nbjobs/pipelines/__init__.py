"""Groups of jobs: pipelines (tasks with dependencies and results passed down), sweeps, batches, schedules.

The pure rules live in `nbjobs.scheduler.dag` and `nbjobs.scheduler.firing`; this
package checks requests, stores groups, and holds jobs back until they may run
(`gate.QueueGate`, called by the dispatcher before the queue policy decides).
"""
