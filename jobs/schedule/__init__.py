"""Cron schedules of batch jobs (`refinery schedule`), run by a scheduler inside the cluster.

The logic (fire times, misfire and overlap decisions, the state and its store) is plain Python
that takes the time as an argument and never imports Ray: `cron`, `model`, `store`,
`scheduler`, `export`. Only `actor` touches Ray: a detached actor that ticks the scheduler and
submits through the Jobs API (jobs/submit.py).
"""
