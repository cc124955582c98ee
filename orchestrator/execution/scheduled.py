"""A suite's runs as cluster scheduler jobs (a ScheduledBackend: slurm).

Every run is submitted at once (the scheduler queues and throttles them), then followed:
each run's record (run.json) is written by the host as its job ends, from the scheduler's
final state and what the job left in its run directory, the same RunAttempt.conclude the
direct backends use. Ctrl-C or SIGTERM cancels the suite's jobs, waits for them to stop
(the node stops the run's container at SIGTERM) and records them as interrupted, so
`dlbench run --resume` runs them again. With --detach nothing is followed: the jobs run on
without this process, `dlbench status` tells how far they are, and `--resume` re-attaches
to them (adopted: followed, never submitted twice), gathers, seals, and submits anew the
runs whose jobs were lost (node failure, preemption, cancelled before they started).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from orchestrator.execution.backends.base import ScheduledBackend, Submission

if TYPE_CHECKING:
    from orchestrator.execution.runner import RunAttempt
    from orchestrator.plan.suite import Suite
    from orchestrator.results.directory import ResultsDir

# After a cancel, how long to wait for the jobs to end before recording them anyway: the
# node gets SIGTERM, stops the container (10 s at most) and exits; Slurm's KillWait is 30 s.
CANCEL_WAIT_S = 120


def run_jobs(suite: Suite, backend: ScheduledBackend, results: ResultsDir,
             attempts: list[RunAttempt], adopted: set[str], say: Callable[[str], None]) -> bool:
    """Submit the attempts' runs (but the adopted ones, whose jobs exist) and follow them
    all to their end; False when --detach returned after submitting."""
    by_id = {attempt.run.run_id: attempt for attempt in attempts}
    following: set[str] = set()
    submissions: list[Submission] = []
    for attempt in attempts:
        run = attempt.run
        refusal = attempt.refusal()
        if refusal:
            say(f"[{suite.runs.index(run) + 1}/{len(suite.runs)}] {run.run_id}: "
                f"-> {attempt.finish(*refusal)}")
            continue
        following.add(run.run_id)
        if run.run_id not in adopted:
            submissions.append(Submission(run, attempt.environment, attempt.host_data_dir))
    resubmitted: set[str] = set()
    try:
        if submissions:
            backend.submit(results.path, submissions, say)
        if backend.detach:
            say(f"Detached: {len(submissions)} run(s) submitted; they go on without this terminal. "
                f"Follow them: dlbench status {results.path}; gather them into the report: "
                f"dlbench run --resume {results.path}")
            return False
        for ended in backend.follow(results.path, following, say):
            lost: list[RunAttempt] = []
            for run_id, execution in ended:
                following.discard(run_id)
                outcome = by_id[run_id].conclude(execution)
                if run_id in adopted and run_id not in resubmitted and outcome.startswith("error"):
                    # its job was lost before this resume looked: once more, from an empty directory
                    say(f"    {run_id}: {outcome}; submitting it again")
                    resubmitted.add(run_id)
                    by_id[run_id] = by_id[run_id].again()
                    lost.append(by_id[run_id])
                else:
                    say(f"    {run_id} -> {outcome}")
            if lost:
                backend.submit(results.path, [Submission(a.run, a.environment, a.host_data_dir)
                                              for a in lost], say)
                following.update(a.run.run_id for a in lost)
    except KeyboardInterrupt:
        _cancel_and_record(backend, results, by_id, following, say)
        raise
    return True


def _cancel_and_record(backend: ScheduledBackend, results: ResultsDir,
                       by_id: dict[str, RunAttempt], following: set[str],
                       say: Callable[[str], None]) -> None:
    """Cancel what still runs or waits, and record each run as its job ends (a second
    Ctrl-C records the rest at once: --resume runs them again either way)."""
    cancelled = backend.cancel(results.path, sorted(following))
    say(f"Interrupted: cancelled {len(cancelled)} job(s); waiting for them to stop "
        "(Ctrl-C again to stop waiting)")
    try:
        for ended in backend.follow(results.path, following, say, give_up_after=CANCEL_WAIT_S):
            for run_id, execution in ended:
                following.discard(run_id)
                say(f"    {run_id} -> {by_id[run_id].conclude(execution)}")
    except KeyboardInterrupt:
        pass
    for run_id in sorted(following):  # still ending on its node: resume starts it afresh
        by_id[run_id].finish("error", "interrupted: dlbench cancelled its job, which had not "
                                      "ended yet")
